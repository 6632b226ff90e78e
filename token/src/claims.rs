//! The claims inside every access token.

use serde::{Deserialize, Serialize};

use crate::Role;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique per token, so a single token can be revoked.
    pub jti: String,
    /// Roles this version knows; a role name it does not know (issued by a newer auth-service
    /// during a rolling upgrade) is left out rather than failing the whole token, which can only
    /// grant less, never more.
    #[serde(deserialize_with = "known_roles")]
    pub roles: Vec<Role>,
    pub username: String,
    /// The session (one per sign-in) the token belongs to, so ending the session revokes it.
    /// Absent in tokens that belong to no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

fn known_roles<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Role>, D::Error> {
    let names = Vec::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    Ok(names
        .iter()
        .filter_map(|name| Role::ALL.into_iter().find(|role| role.as_str() == name))
        .collect())
}

impl Claims {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn has_any_role(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has_role(*r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_this_version_does_not_know_is_left_out_not_fatal() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "iss": "i", "aud": "a", "sub": "s", "iat": 1, "nbf": 1, "exp": 2, "jti": "j",
            "roles": ["user", "auditor", "moderator", "ROLE_ADMIN"], "username": "u",
        }))
        .unwrap();
        assert_eq!(claims.roles, [Role::User, Role::Moderator]);
    }

    #[test]
    fn roles_must_still_be_a_list_of_names() {
        for roles in [
            serde_json::json!("admin"),
            serde_json::json!([1]),
            serde_json::Value::Null,
        ] {
            let claims = serde_json::from_value::<Claims>(serde_json::json!({
                "iss": "i", "aud": "a", "sub": "s", "iat": 1, "nbf": 1, "exp": 2, "jti": "j",
                "roles": roles, "username": "u",
            }));
            assert!(claims.is_err(), "{roles} was accepted");
        }
    }
}
