//! A person's age in years.

use super::Invalid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age(u8);

impl Age {
    pub const MAX: i32 = 150;

    pub fn parse(age: i32) -> Result<Self, Invalid> {
        match u8::try_from(age) {
            Ok(a) if age <= Self::MAX => Ok(Self(a)),
            _ => Err(Invalid(format!(
                "age must be between 0 and {}, got {age}",
                Self::MAX
            ))),
        }
    }

    pub fn get(self) -> i32 {
        i32::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_zero_to_a_hundred_and_fifty() {
        assert_eq!(Age::parse(0).unwrap().get(), 0);
        assert_eq!(Age::parse(150).unwrap().get(), 150);
    }

    #[test]
    fn refuses_negative_and_implausible_ages() {
        assert!(Age::parse(-1).is_err());
        assert!(Age::parse(151).is_err());
        assert!(Age::parse(256).is_err());
        assert!(Age::parse(i32::MAX).is_err());
    }
}
