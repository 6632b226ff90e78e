//! The three roles of the tutorials, as a closed set.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Moderator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Moderator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role {0:?}: expected one of user, moderator, admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Accepts `admin` and the tutorials' `ROLE_ADMIN`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        let name = name.strip_prefix("role_").unwrap_or(&name);
        match name {
            "user" => Ok(Role::User),
            "moderator" | "mod" => Ok(Role::Moderator),
            "admin" => Ok(Role::Admin),
            _ => Err(UnknownRole(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_tutorial_spellings() {
        assert_eq!("admin".parse(), Ok(Role::Admin));
        assert_eq!("ROLE_MODERATOR".parse(), Ok(Role::Moderator));
        assert_eq!(" User ".parse(), Ok(Role::User));
    }

    #[test]
    fn rejects_unknown_names() {
        assert!("root".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
        assert!("role_".parse::<Role>().is_err());
    }
}
