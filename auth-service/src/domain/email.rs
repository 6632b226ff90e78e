//! A plausible email address: one `@`, a non-empty local part, a dotted domain, no spaces.
//! Whether it receives mail is a question only sending mail can answer.

use std::fmt;

use super::Invalid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        let invalid = || Invalid(format!("{s:?} is not a valid email address"));
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
}
