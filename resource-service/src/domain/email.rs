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
        match email::check(&address) {
            // Already without surrounding whitespace: kept as it came, without a copy.
            Ok(checked) if checked.len() == address.len() => Ok(Self(address)),
            Ok(checked) => Ok(Self(checked.to_owned())),
            Err(e) => Err(Invalid(e.to_string())),
        }
    }

    /// An address read back from our own store, which holds only addresses that passed
    /// [`Email::parse`] on the way in (both stores write through it): not checked again on
    /// every read.
    pub fn stored(address: String) -> Self {
        Self(address)
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

    #[test]
    fn surrounding_whitespace_is_dropped() {
        assert_eq!(
            Email::parse(" ann@example.com\n".into()).unwrap().as_ref(),
            "ann@example.com"
        );
        assert_eq!(
            Email::parse("ann@example.com".into()).unwrap().as_ref(),
            "ann@example.com"
        );
    }
}
