//! An email address, by the one rule every service shares (the `email` crate).

use std::fmt;

use super::Invalid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        email::check(s)
            .map(|address| Self(address.to_owned()))
            .map_err(|e| Invalid(e.to_string()))
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
    fn a_refusal_does_not_repeat_the_address() {
        let refusal = Email::parse("<svg/onload=alert(1)>@ex.com").unwrap_err().0;
        assert_eq!(refusal, "not a valid email address");
        assert_eq!(Email::parse(" a@b.co ").unwrap().as_ref(), "a@b.co");
    }
}
