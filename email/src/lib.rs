//! The one rule for an email address, used by every service that accepts one: one `@`, a local
//! part of RFC 5322 `atext` characters and single dots, a dotted domain of labels made of
//! letters, digits and inner `-`. Whether it receives mail is a question only sending mail can
//! answer.
//!
//! Stricter than RFC 5322 on purpose: no quoted strings, comments, spaces or
//! `<>()[]\,;:"` in the local part, because addresses end up in HTML, logs and mail headers and
//! those are the characters that break out of them (`<svg/onload=…>@ex.com`); and ASCII only, so
//! that case-insensitive uniqueness means the same on SQLite (whose `lower()` folds ASCII only)
//! and PostgreSQL. Refusals never repeat the address: it is chosen by whoever sent it.

/// The longest address (RFC 5321's path limit less the brackets).
pub const MAX_LEN: usize = 254;
/// The longest local part (RFC 5321).
pub const MAX_LOCAL_LEN: usize = 64;
/// The longest domain label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email must be at most 254 characters")]
    TooLong,
    #[error("email must be plain ASCII")]
    NotAscii,
    #[error("not a valid email address")]
    Malformed,
}

/// `address` without surrounding whitespace, if it is a plausible email address.
pub fn check(address: &str) -> Result<&str, EmailError> {
    let address = address.trim();
    if address.len() > MAX_LEN {
        return Err(EmailError::TooLong);
    }
    if !address.is_ascii() {
        return Err(EmailError::NotAscii);
    }
    let (local, domain) = address.split_once('@').ok_or(EmailError::Malformed)?;
    if local_ok(local) && domain_ok(domain) {
        Ok(address)
    } else {
        Err(EmailError::Malformed)
    }
}

fn local_ok(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(is_local_char)
}

/// RFC 5322 `atext` plus the dot: letters, digits and ``!#$%&'*+/=?^_`{|}~-``.
fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c)
}

fn domain_ok(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@b.co",
            "ann@example.com",
            "first.last+tag@example.org",
            "Ann.Smith+persons@mail.example.co.uk",
            "x@sub-domain.example.com",
            "o'brien@example.ie",
            "a!#$%&'*+/=?^_`{|}~-z@example.com",
        ] {
            assert_eq!(check(ok), Ok(ok), "{ok}");
        }
        assert_eq!(check("  bob@example.org "), Ok("bob@example.org"));
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "ann@exa mple.com",
            "a@.com",
            "a@b..com",
            "a@b.com.",
            "a@exa_mple.com",
            "ann@-example.com",
            "ann@example-.com",
            ".ann@example.com",
            "ann.@example.com",
            "an..n@example.com",
            "ann\t@example.com",
        ] {
            assert_eq!(check(bad), Err(EmailError::Malformed), "{bad:?}");
        }
        let label = format!("a@{}.com", "b".repeat(MAX_LABEL_LEN + 1));
        assert_eq!(check(&label), Err(EmailError::Malformed));
        let local = format!("{}@example.com", "a".repeat(MAX_LOCAL_LEN + 1));
        assert_eq!(check(&local), Err(EmailError::Malformed));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(check(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn non_ascii_addresses_are_refused() {
        for bad in ["jürgen@example.com", "jurgen@müller.de"] {
            assert_eq!(check(bad), Err(EmailError::NotAscii), "{bad:?}");
        }
    }

    #[test]
    fn markup_quotes_and_separators_in_the_local_part_are_refused_without_echo() {
        for bad in [
            "<svg/onload=alert(1)>@ex.com",
            "\"quoted\"@example.com",
            "a(comment)@example.com",
            "a,b@example.com",
            "a;b@example.com",
            "a:b@example.com",
            "a[b]@example.com",
            "a\\b@example.com",
        ] {
            let refusal = check(bad).unwrap_err();
            assert_eq!(refusal.to_string(), "not a valid email address", "{bad:?}");
        }
    }
}
