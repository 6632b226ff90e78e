//! A new password, in the spirit of NIST SP 800-63B: 8 to 128 characters, no control
//! characters, and not one that attackers try first. No composition rules: length and the
//! blocklist protect better, and rules only push people toward `Password1!`. Never printed,
//! and never echoed in an error.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::Invalid;

pub struct Password(SecretString);

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;

    pub fn parse(s: SecretString) -> Result<Self, Invalid> {
        let p = s.expose_secret();
        let len = p.chars().count();
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
        // NUL, newlines and escapes cannot be typed on a sign-in form; they only show up when a
        // client is broken or probing, and some stores and terminals mangle them.
        if p.chars().any(char::is_control) {
            return Err(Invalid(
                "password must not contain control characters".to_owned(),
            ));
        }
        if is_common(p) {
            return Err(Invalid(
                "password is too common; choose a longer, less predictable one".to_owned(),
            ));
        }
        Ok(Self(s))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// Among the ~100k most common passwords (the `passwords` crate's table, compiled in), in any
/// letter case, or one character repeated: the first guesses of any attacker.
fn is_common(p: &str) -> bool {
    let mut chars = p.chars();
    let repeated = chars.next().is_some_and(|first| chars.all(|c| c == first));
    repeated
        || passwords::analyzer::is_common_password(p)
        || passwords::analyzer::is_common_password(p.to_lowercase())
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::Password;

    fn refusal(p: &str) -> String {
        Password::parse(p.into()).unwrap_err().0
    }

    #[test]
    fn enforces_length_bounds() {
        assert!(Password::parse("fjq3-kx9".chars().take(7).collect::<String>().into()).is_err());
        assert!(Password::parse("fjq3-kx9".into()).is_ok());
        let max = "fjq3-kx9".repeat(16);
        assert!(Password::parse(max.clone().into()).is_ok());
        assert!(Password::parse(format!("{max}x").into()).is_err());
    }

    #[test]
    fn common_passwords_are_refused_in_any_case_without_being_echoed() {
        for common in ["password", "12345678", "qwertyuiop", "PassWord", "iloveyou"] {
            let message = refusal(common);
            assert!(message.contains("too common"), "{common}: {message}");
        }
        assert!(!refusal("qwertyuiop").contains("qwerty"));
    }

    #[test]
    fn one_character_repeated_is_refused_as_too_common() {
        for repeated in ["aaaaaaaa", "zzzzzzzzzzzz", "éééééééé", &"x".repeat(128)] {
            assert!(refusal(repeated).contains("too common"), "{repeated}");
        }
    }

    #[test]
    fn control_characters_are_refused() {
        for control in [
            "\0\0\0\0\0\0\0\0",
            "correct\nhorse battery",
            "tab\there-is-long",
        ] {
            assert_eq!(
                refusal(control),
                "password must not contain control characters"
            );
        }
    }

    #[test]
    fn the_passwords_the_workspace_tests_use_are_accepted() {
        for ok in [
            "correct horse",
            "correct horse battery",
            "correct horse battery staple",
            "long enough password",
            "a-long-enough-password",
            "admin-password-1",
            "the-first-admins-password",
            "pw-67e55044-10b1-426f-9247-bb680e5fe0c8",
            "s3cr3t-p@ss",
        ] {
            assert!(Password::parse(ok.into()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let p = Password::parse("correct horse".into()).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
