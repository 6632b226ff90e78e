//! An email address, checked for shape (delivery is not our business).

use super::Invalid;

/// `local@domain` with a dotted domain; at most 254 characters. Kept as entered; uniqueness
/// compares [`Email::folded`], so `Ann@Example.com` and `ann@example.com` are the same person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_CHARS: usize = 254;

    pub fn parse(email: String) -> Result<Self, Invalid> {
        let email = email.trim();
        let invalid = || Invalid(format!("{email:?} is not a valid email address"));
        if email.chars().count() > Self::MAX_CHARS {
            // Never echo an oversized value: it would only bloat the error (and its headers).
            return Err(Invalid(format!(
                "email must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if email.is_empty() {
            return Err(invalid());
        }
        let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"@\"(),:;<>[\\]".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.chars().count() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !(local_ok && domain_ok) {
            return Err(invalid());
        }
        Ok(Self(email.to_owned()))
    }

    /// The form uniqueness is enforced on (a unique index in both stores).
    pub fn folded(&self) -> String {
        self.0.to_lowercase()
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "ann@example.com",
            "Ann.Smith+persons@mail.example.co.uk",
            "  bob@example.org ",
            "jürgen@müller.de",
        ] {
            assert!(Email::parse(ok.into()).is_ok(), "{ok}");
        }
        assert_eq!(
            Email::parse("Ann@Example.COM".into()).unwrap().folded(),
            "ann@example.com"
        );
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "ann smith@example.com",
            "ann@exa mple.com",
            "ann@-example.com",
            "ann@example..com",
            ".ann@example.com",
            "an..n@example.com",
            "ann\t@example.com",
        ] {
            assert!(Email::parse(bad.into()).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(long).is_err());
    }
}
