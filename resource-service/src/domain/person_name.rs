//! A person's display name.

use super::Invalid;

/// 1 to 100 characters after trimming, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(name: String) -> Result<Self, Invalid> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err(Invalid("name must not be empty".into()));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(Invalid(format!(
                "name must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Invalid("name must not contain control characters".into()));
        }
        // Already trimmed (every name read back from the store): kept without a copy.
        if trimmed.len() == name.len() {
            return Ok(Self(name));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The form the name filter matches against: lower-cased in Rust, so SQLite and PostgreSQL
    /// fold case the same way, beyond ASCII too.
    pub fn folded(&self) -> String {
        self.0.to_lowercase()
    }
}

impl AsRef<str> for PersonName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_of_one_to_a_hundred_characters() {
        assert!(PersonName::parse("A".into()).is_ok());
        assert!(PersonName::parse("é".repeat(100)).is_ok());
        assert_eq!(
            PersonName::parse("  Ann Smith ".into()).unwrap().as_ref(),
            "Ann Smith"
        );
    }

    #[test]
    fn refuses_empty_long_and_control_names() {
        assert!(PersonName::parse(String::new()).is_err());
        assert!(PersonName::parse("   ".into()).is_err());
        assert!(PersonName::parse("a".repeat(101)).is_err());
        assert!(PersonName::parse("Ann\u{0}Smith".into()).is_err());
        assert!(PersonName::parse("Ann\nSmith".into()).is_err());
    }
}
