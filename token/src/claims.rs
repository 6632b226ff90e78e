//! The claims inside every access token.

use serde::{Deserialize, Serialize};

use crate::Role;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user's id, or `sa:` and the client id for a service account's token.
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
    /// The service account (OAuth 2.0 client) a token of the client-credentials grant was
    /// issued to; absent in a user's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// What a service account's `sub` starts with, before its client id. No user id (a UUID) does.
pub const SERVICE_ACCOUNT_PREFIX: &str = "sa:";

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

    /// Whether the token was issued to a service account rather than a user: it has a
    /// `client_id` claim or a `sa:` subject (either is enough, so neither can be left out to
    /// pass as a user).
    pub fn is_service_account(&self) -> bool {
        self.client_id.is_some() || self.sub.starts_with(SERVICE_ACCOUNT_PREFIX)
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
    fn a_service_accounts_claims_say_so_and_a_users_do_not() {
        let user: Claims = serde_json::from_value(serde_json::json!({
            "iss": "i", "aud": "a", "sub": "0190c2a4-7e1c-7000-8000-000000000001", "iat": 1,
            "nbf": 1, "exp": 2, "jti": "j", "roles": ["user"], "username": "u",
        }))
        .unwrap();
        assert_eq!(user.client_id, None);
        assert!(!user.is_service_account());
        // Absent, not null, in a user's token: older verifiers see the claims they knew.
        assert!(
            serde_json::to_value(&user)
                .unwrap()
                .get("client_id")
                .is_none()
        );

        let id = "0190c2a4-7e1c-7000-8000-000000000002";
        let service = Claims {
            sub: format!("{SERVICE_ACCOUNT_PREFIX}{id}"),
            client_id: Some(id.to_owned()),
            ..user.clone()
        };
        assert!(service.is_service_account());
        let json = serde_json::to_value(&service).unwrap();
        assert_eq!(json["client_id"], id);
        assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), service);
        // Either mark alone is enough.
        assert!(
            Claims {
                client_id: None,
                ..service.clone()
            }
            .is_service_account()
        );
        assert!(
            Claims {
                sub: user.sub.clone(),
                ..service
            }
            .is_service_account()
        );
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
