//! A new password: 8 to 128 characters. Never printed.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::Invalid;

pub struct Password(SecretString);

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;

    pub fn parse(s: SecretString) -> Result<Self, Invalid> {
        let len = s.expose_secret().chars().count();
        if len < Self::MIN {
            return Err(Invalid(format!(
                "password must be at least {} characters",
                Self::MIN
            )));
        }
        if len > Self::MAX {
            return Err(Invalid(format!(
                "password must be at most {} characters",
                Self::MAX
            )));
        }
        Ok(Self(s))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::Password;

    #[test]
    fn enforces_length_bounds() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("x".repeat(128).into()).is_ok());
        assert!(Password::parse("x".repeat(129).into()).is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let p = Password::parse("correct horse".into()).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
