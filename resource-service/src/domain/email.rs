//! An email address, by the one rule every service shares (the `email` crate).

use super::Invalid;

/// A plausible address, kept as entered (less surrounding whitespace); uniqueness
/// compares [`Email::folded`], so `Ann@Example.com` and `ann@example.com` are the same person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// By the one rule every service shares (the `email` crate); the refusal never repeats the
    /// address.
    pub fn parse(address: String) -> Result<Self, Invalid> {
        email::check(&address)
            .map(|address| Self(address.to_owned()))
            .map_err(|e| Invalid(e.to_string()))
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
    fn uniqueness_folds_case_and_refusals_do_not_repeat_the_address() {
        assert_eq!(
            Email::parse("Ann@Example.COM".into()).unwrap().folded(),
            "ann@example.com"
        );
        let refusal = Email::parse("<svg/onload=alert(1)>@ex.com".into()).unwrap_err();
        assert_eq!(refusal.0, "not a valid email address");
    }
}
