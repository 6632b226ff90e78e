//! A username: 3 to 32 characters of `[A-Za-z0-9_.-]`.

use std::fmt;

use super::Invalid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let len = s.chars().count();
        if !(3..=32).contains(&len) {
            return Err(Invalid(format!(
                "username must be 3 to 32 characters, got {len}"
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(Invalid(format!(
                "username may only contain letters, digits, '_', '.' and '-', found {c:?}"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Username;

    #[test]
    fn accepts_names_of_the_allowed_alphabet_and_length() {
        for ok in ["bob", "alice.smith", "a_b-c.9", &"x".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_short_long_and_odd_characters() {
        for bad in [
            "",
            "ab",
            &"x".repeat(33),
            "has space",
            "émile",
            "a/b",
            "bob\0",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }
}
