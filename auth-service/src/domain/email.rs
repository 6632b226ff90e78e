//! A plausible email address: one `@`, a local part of RFC 5322 `atext` characters and dots, a
//! dotted domain of letters, digits and `-`. Whether it receives mail is a question only
//! sending mail can answer.
//!
//! The local part is stricter than RFC 5322: no quoted strings, comments, spaces or
//! `<>()[]\,;:"`. Addresses end up in HTML, logs and mail headers, and those characters are the
//! ones that break out of them (`<svg/onload=…>@ex.com`); real mailboxes do not need them.

use std::fmt;

use super::Invalid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        // The refusal does not repeat the address: it is attacker-chosen and may be hostile.
        let invalid = || Invalid("not a valid email address".to_owned());
        if s.len() > 254 {
            return Err(Invalid("email must be at most 254 characters".to_owned()));
        }
        // Case-insensitive uniqueness must mean the same on SQLite (whose lower() folds ASCII
        // only) and PostgreSQL, so addresses are ASCII.
        if !s.is_ascii() {
            return Err(Invalid("email must be plain ASCII".to_owned()));
        }
        let (local, domain) = s.split_once('@').ok_or_else(invalid)?;
        let plausible = !local.is_empty()
            && local.len() <= 64
            && local.chars().all(is_local_char)
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plausible {
            return Err(invalid());
        }
        Ok(Self(s.to_owned()))
    }
}

/// RFC 5322 `atext` plus the dot: letters, digits and ``!#$%&'*+/=?^_`{|}~-``.
fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c)
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@b.co",
            "first.last+tag@example.org",
            "x@sub-domain.example.com",
            "o'brien@example.ie",
            "a!#$%&'*+/=?^_`{|}~-z@example.com",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_implausible_addresses() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@b..com",
            "a@b.com.",
            "a@exa_mple.com",
            "jürgen@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
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
            let refusal = Email::parse(bad).unwrap_err().0;
            assert_eq!(refusal, "not a valid email address", "{bad:?}");
        }
    }
}
