//! The `auth.v1.AuthService` handlers: proto in, domain call, proto or status out.

use std::sync::Arc;

use authn::{Access, Policy};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use proto::auth::v1::{
    self as pb,
    auth_service_server::{AuthService, SERVICE_NAME},
};
use secrecy::SecretString;
use token::{Claims, Role};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    accounts::{Accounts, ClientInfo, SignUp},
    domain::{Email, Invalid, Password, User, UserId, Username},
    error::Error,
    feed::Feed,
    metrics::SignIns,
    refresh_token::RefreshToken,
    sessions::SignOutBy,
    throttle::Origin,
};

/// Who may call each RPC. Enforced by `authn::AuthnLayer` before any handler runs; a test
/// fails if an RPC is missing here.
pub fn policy() -> Policy {
    const ADMIN: &[Role] = &[Role::Admin];
    Policy::new(
        SERVICE_NAME,
        &[
            ("SignUp", Access::OptionalToken),
            ("SignIn", Access::Public),
            ("GetMe", Access::SignedIn),
            ("GetJwks", Access::Public),
            ("ListUsers", Access::AnyRole(ADMIN)),
            ("SetUserRoles", Access::AnyRole(ADMIN)),
            ("RotateSigningKey", Access::AnyRole(ADMIN)),
            ("Refresh", Access::Public),
            // The handler verifies the access token itself: an expired one may still sign out.
            ("SignOut", Access::Public),
            ("ChangePassword", Access::SignedIn),
            ("ValidateToken", Access::SignedIn),
            // Another user's sessions need the admin role: a rule of the request, in the handler.
            ("ListSessions", Access::SignedIn),
            ("EndSession", Access::SignedIn),
            ("SetUserDisabled", Access::AnyRole(ADMIN)),
            ("ClearSignInThrottle", Access::AnyRole(ADMIN)),
            // Public like the JWKS: verifiers have no identity of their own yet, and the feed
            // reveals only opaque ids of access already taken back (ARCHITECTURE.md).
            ("WatchRevocations", Access::Public),
        ],
    )
}

/// How long verifiers may cache the JWKS. Keys are published well before they sign, so a
/// verifier that refreshes this often always knows the next key in time.
const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;

pub struct AuthGrpc {
    accounts: Arc<Accounts>,
    sign_ins: SignIns,
    feed: Feed,
}

impl AuthGrpc {
    pub fn new(accounts: Arc<Accounts>, feed: Feed) -> Self {
        Self {
            accounts,
            sign_ins: SignIns::new(),
            feed,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid(_) | Error::CredentialsMissing => Status::invalid_argument(message),
            Error::InvalidCredentials | Error::RefreshRefused | Error::InvalidAccessToken => {
                Status::unauthenticated(message)
            }
            Error::UsernameTaken | Error::EmailTaken => Status::already_exists(message),
            Error::CannotGrantRoles
            | Error::NotAdmin
            | Error::AccountDisabled
            | Error::WrongCurrentPassword => Status::permission_denied(message),
            Error::AccountGone | Error::UserNotFound(_) | Error::SessionNotFound => {
                Status::not_found(message)
            }
            Error::KeyPending(_) => Status::already_exists(message),
            Error::CannotDropOwnAdmin
            | Error::CannotDisableSelf
            | Error::BootstrapNameTaken(_)
            | Error::KeysDoNotRotate => Status::failed_precondition(message),
            Error::Busy => Status::resource_exhausted(message),
            // The delay rides in the standard details, where gRPC clients and the gateway look.
            Error::SignInThrottled(retry_after) | Error::SignUpThrottled(retry_after) => {
                Status::with_error_details(
                    Code::ResourceExhausted,
                    message,
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )
            }
            Error::StoreUnavailable(_) => Status::unavailable(message),
            Error::Unexpected(_) => Status::internal("internal error"),
        }
    }
}

/// Logs what the client will not see, then converts.
fn status(e: Error) -> Status {
    match &e {
        Error::Unexpected(cause) => tracing::error!(error.cause_chain = ?cause, "request failed"),
        Error::StoreUnavailable(cause) => {
            tracing::warn!(error.cause_chain = ?cause, "the database is unavailable");
        }
        _ => {}
    }
    e.into()
}

/// The client's address (from the client address layer) and the request id (from the request
/// id layer, which always sets one).
fn origin<T>(request: &Request<T>) -> Origin {
    Origin {
        address: request
            .extensions()
            .get::<telemetry::ClientAddress>()
            .map(|c| c.0),
        request_id: request
            .metadata()
            .get(telemetry::REQUEST_ID.as_str())
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    }
}

fn caller<T>(request: &Request<T>) -> Option<&Claims> {
    request.extensions().get::<Arc<Claims>>().map(Arc::as_ref)
}

/// The policy guarantees a verified caller for signed-in methods; this turns a broken
/// guarantee into an error rather than a panic.
fn signed_in<T>(request: &Request<T>) -> Result<&Claims, Status> {
    caller(request).ok_or_else(|| Status::unauthenticated("missing access token"))
}

/// More roles than exist, with room for `ROLE_*` spellings and repeats. A list beyond this is
/// not a mistake but an attempt to make the server parse a huge message, so it is refused
/// before any name is looked at.
const MAX_ROLES: usize = 8;

/// The longest role name repeated back in an error; longer ones are hostile or garbage.
const MAX_ECHOED_ROLE: usize = 32;

fn parse_roles(names: &[String]) -> Result<Vec<Role>, Invalid> {
    if names.len() > MAX_ROLES {
        return Err(Invalid(format!("at most {MAX_ROLES} roles may be given")));
    }
    names
        .iter()
        .map(|n| {
            n.parse::<Role>().map_err(|e| {
                let plain = n.len() <= MAX_ECHOED_ROLE && n.chars().all(|c| c.is_ascii_graphic());
                if plain {
                    Invalid(e.to_string())
                } else {
                    Invalid("unknown role: expected one of user, moderator, admin".to_owned())
                }
            })
        })
        .collect()
}

fn to_pb(user: User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        username: user.username,
        email: user.email,
        roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        created_at: Some(prost_types::Timestamp {
            seconds: user.created_at,
            nanos: 0,
        }),
        disabled: user.disabled,
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    type WatchRevocationsStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::RevocationBatch, Status>>;

    async fn create_service_account(
        &self,
        _: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        Err(Status::unimplemented("service accounts are not built yet"))
    }
    async fn list_service_accounts(
        &self,
        _: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        Err(Status::unimplemented("service accounts are not built yet"))
    }
    async fn set_service_account_disabled(
        &self,
        _: Request<pb::SetServiceAccountDisabledRequest>,
    ) -> Result<Response<pb::SetServiceAccountDisabledResponse>, Status> {
        Err(Status::unimplemented("service accounts are not built yet"))
    }
    async fn delete_service_account(
        &self,
        _: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        Err(Status::unimplemented("service accounts are not built yet"))
    }
    async fn rotate_service_account_secret(
        &self,
        _: Request<pb::RotateServiceAccountSecretRequest>,
    ) -> Result<Response<pb::RotateServiceAccountSecretResponse>, Status> {
        Err(Status::unimplemented("service accounts are not built yet"))
    }
    async fn issue_client_token(
        &self,
        _: Request<pb::IssueClientTokenRequest>,
    ) -> Result<Response<pb::IssueClientTokenResponse>, Status> {
        Err(Status::unimplemented("service accounts are not built yet"))
    }
    async fn introspect_token(
        &self,
        _: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        Err(Status::unimplemented("service accounts are not built yet"))
    }

    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        let caller = caller(&request).cloned();
        let origin = origin(&request);
        let req = request.into_inner();
        // Roles first: an oversized list is refused before any other work.
        let roles = parse_roles(&req.roles).map_err(Error::from)?;
        let sign_up = SignUp {
            username: Username::parse(&req.username).map_err(Error::from)?,
            email: Email::parse(&req.email).map_err(Error::from)?,
            password: Password::parse(SecretString::from(req.password)).map_err(Error::from)?,
            roles,
        };
        let user = self
            .accounts
            .sign_up(sign_up, caller.as_ref(), &origin)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SignUpResponse {
            user: Some(to_pb(user)),
        }))
    }

    async fn sign_in(
        &self,
        request: Request<pb::SignInRequest>,
    ) -> Result<Response<pb::SignInResponse>, Status> {
        let info = client_info(&request);
        let origin = origin(&request);
        let req = request.into_inner();
        let result = self
            .accounts
            .sign_in(&req.login, SecretString::from(req.password), info, &origin)
            .await;
        self.sign_ins.record(&result);
        let (user, tokens) = result.map_err(status)?;
        Ok(Response::new(pb::SignInResponse {
            access_token: tokens.access.token,
            token_type: "Bearer".to_owned(),
            expires_in: tokens.access.claims.exp - tokens.access.claims.iat,
            expires_at: Some(timestamp(tokens.access.claims.exp)),
            user: Some(to_pb(user)),
            refresh_token: tokens.refresh.expose().to_owned(),
            refresh_expires_at: Some(timestamp(tokens.refresh_expires_at)),
        }))
    }

    async fn get_me(
        &self,
        request: Request<pb::GetMeRequest>,
    ) -> Result<Response<pb::GetMeResponse>, Status> {
        let user = self
            .accounts
            .me(signed_in(&request)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(to_pb(user)),
        }))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let ring = self.accounts.keys();
        let keys = ring
            .current()
            .jwks
            .iter()
            .map(authn::jwk_to_proto)
            .collect();
        Ok(Response::new(pb::GetJwksResponse {
            keys,
            max_age_seconds: ring.rotation().jwks_max_age().as_secs() as i64,
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let limit = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                let invalid = Invalid("page_size must not be negative".to_owned());
                return Err(Error::from(invalid).into());
            }
            n => (n as u32).min(MAX_PAGE_SIZE),
        };
        let after = decode_page_token(&req.page_token).map_err(Error::from)?;
        // One extra row tells whether another page follows.
        let mut users = self
            .accounts
            .list_users(&caller, after, limit + 1)
            .await
            .map_err(status)?;
        let next_page_token = if users.len() > limit as usize {
            users.truncate(limit as usize);
            users
                .last()
                .map(|u| encode_page_token(u.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        // Like every admin call: the role as the database holds it now, not as the token says.
        self.accounts.require_admin(&caller).await.map_err(status)?;
        let pending = self
            .accounts
            .keys()
            .rotate()
            .await
            .map_err(|e| status(e.into()))?;
        tracing::info!(admin = %caller.sub, kid = %pending.kid, activates_at = pending.activates_at, "signing key rotation requested");
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid: pending.kid,
            activates_at: Some(prost_types::Timestamp {
                seconds: pending.activates_at,
                nanos: 0,
            }),
        }))
    }

    async fn set_user_roles(
        &self,
        request: Request<pb::SetUserRolesRequest>,
    ) -> Result<Response<pb::SetUserRolesResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let roles = parse_roles(&req.roles).map_err(Error::from)?;
        let id: UserId = req.user_id.parse().map_err(Error::from)?;
        let user = self
            .accounts
            .set_roles(&caller, id, roles)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetUserRolesResponse {
            user: Some(to_pb(user)),
        }))
    }

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let after = request.into_inner().after;
        Ok(Response::new(self.feed.watch(after)))
    }

    async fn clear_sign_in_throttle(
        &self,
        request: Request<pb::ClearSignInThrottleRequest>,
    ) -> Result<Response<pb::ClearSignInThrottleResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let id: UserId = request.into_inner().user_id.parse().map_err(Error::from)?;
        self.accounts
            .clear_sign_in_throttle(&caller, id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ClearSignInThrottleResponse {}))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let info = client_info(&request);
        let req = request.into_inner();
        let tokens = self
            .accounts
            .refresh(req.refresh_token, info)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RefreshResponse {
            access_token: tokens.access.token,
            token_type: "Bearer".to_owned(),
            expires_in: tokens.access.claims.exp - tokens.access.claims.iat,
            expires_at: Some(timestamp(tokens.access.claims.exp)),
            refresh_token: tokens.refresh.expose().to_owned(),
            refresh_expires_at: Some(timestamp(tokens.refresh_expires_at)),
        }))
    }

    async fn sign_out(
        &self,
        request: Request<pb::SignOutRequest>,
    ) -> Result<Response<pb::SignOutResponse>, Status> {
        // The policy lets this through without a token check: an expired access token may
        // still end its session, so the handler verifies it (all but the expiry) itself.
        let headers = request.metadata().clone().into_headers();
        let req = request.into_inner();
        let by = match req.refresh_token.filter(|t| !t.trim().is_empty()) {
            Some(token) => SignOutBy::RefreshToken(RefreshToken::from_client(token)),
            None => match authn::bearer_token(&headers) {
                Ok(Some(token)) => SignOutBy::AccessToken(token),
                Ok(None) => {
                    return Err(Status::unauthenticated(
                        "an access token or a refresh token is required",
                    ));
                }
                Err(message) => return Err(Status::unauthenticated(message)),
            },
        };
        self.accounts.sign_out(by, req.all).await.map_err(status)?;
        Ok(Response::new(pb::SignOutResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let client = origin(&request).client();
        let req = request.into_inner();
        if req.current_password.is_empty() {
            let invalid = Invalid("current_password is required".to_owned());
            return Err(Error::from(invalid).into());
        }
        let new = Password::parse(SecretString::from(req.new_password)).map_err(Error::from)?;
        self.accounts
            .change_password(
                &caller,
                SecretString::from(req.current_password),
                new,
                client,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let req = request.into_inner();
        let claims = self
            .accounts
            .validate(req.token.trim())
            .await
            .map_err(status)?;
        let Some(c) = claims else {
            return Ok(Response::new(pb::ValidateTokenResponse::default()));
        };
        Ok(Response::new(pb::ValidateTokenResponse {
            active: true,
            roles: c.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            sub: c.sub,
            username: c.username,
            iss: c.iss,
            aud: c.aud,
            iat: c.iat,
            nbf: c.nbf,
            exp: c.exp,
            jti: c.jti,
            sid: c.sid.unwrap_or_default(),
            token_type: "Bearer".to_owned(),
            client_id: String::new(),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let target = optional_user_id(&req.user_id)?;
        let sessions = self
            .accounts
            .list_sessions(&caller, target)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| pb::Session {
                    current: caller.sid.as_deref() == Some(s.id.as_str()),
                    id: s.id,
                    client_address: s.client_address,
                    user_agent: s.user_agent,
                    created_at: Some(timestamp(s.created_at)),
                    last_used_at: Some(timestamp(s.last_used_at)),
                })
                .collect(),
        }))
    }

    async fn end_session(
        &self,
        request: Request<pb::EndSessionRequest>,
    ) -> Result<Response<pb::EndSessionResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let target = optional_user_id(&req.user_id)?;
        let session_id = req.session_id.trim();
        if session_id.is_empty() {
            let invalid = Invalid("session_id is required".to_owned());
            return Err(Error::from(invalid).into());
        }
        self.accounts
            .end_session(&caller, target, session_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::EndSessionResponse {}))
    }

    async fn set_user_disabled(
        &self,
        request: Request<pb::SetUserDisabledRequest>,
    ) -> Result<Response<pb::SetUserDisabledResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let id: UserId = req.user_id.parse().map_err(Error::from)?;
        let user = self
            .accounts
            .set_disabled(&caller, id, req.disabled)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetUserDisabledResponse {
            user: Some(to_pb(user)),
        }))
    }
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn optional_user_id(text: &str) -> Result<Option<UserId>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(text.parse().map_err(Error::from)?))
}

/// The longest metadata value read as a user agent; `sessions.rs` keeps less.
const MAX_USER_AGENT_METADATA: usize = 1024;

/// The caller's address (as the client-address layer decided) and user agent: what the gateway
/// forwarded in `x-client-user-agent`, else the call's own `user-agent`.
fn client_info<T>(request: &Request<T>) -> ClientInfo {
    let user_agent = ["x-client-user-agent", "user-agent"]
        .into_iter()
        .filter_map(|key| request.metadata().get(key)?.to_str().ok())
        .map(str::trim)
        .find(|v| !v.is_empty() && v.len() <= MAX_USER_AGENT_METADATA)
        .unwrap_or_default()
        .to_owned();
    ClientInfo {
        address: request
            .extensions()
            .get::<telemetry::ClientAddress>()
            .map(|c| c.0),
        user_agent,
    }
}

/// Page tokens are opaque to clients: the last id seen, base64url-encoded.
fn encode_page_token(id: UserId) -> String {
    URL_SAFE_NO_PAD.encode(id.0.as_bytes())
}

fn decode_page_token(token: &str) -> Result<Option<UserId>, Invalid> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Invalid("page_token is not valid".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let uuid = uuid::Uuid::from_slice(&bytes).map_err(|_| invalid())?;
    Ok(Some(UserId(uuid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_has_an_access_rule() {
        assert_eq!(policy().problems(SERVICE_NAME), Vec::<String>::new());
    }

    #[test]
    fn a_database_outage_is_unavailable_with_a_retry_hint() {
        let status = Status::from(Error::StoreUnavailable(anyhow::anyhow!(
            "connection refused"
        )));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "the database is unavailable; retry shortly"
        );
    }

    #[test]
    fn session_errors_map_to_codes_that_reveal_nothing_about_a_refresh_token() {
        let refused = Status::from(Error::RefreshRefused);
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(refused.message(), "refresh token is invalid or expired");
        for (error, code) in [
            (Error::NotAdmin, tonic::Code::PermissionDenied),
            (Error::AccountDisabled, tonic::Code::PermissionDenied),
            (Error::WrongCurrentPassword, tonic::Code::PermissionDenied),
            (Error::CannotDisableSelf, tonic::Code::FailedPrecondition),
            (Error::SessionNotFound, tonic::Code::NotFound),
            (Error::InvalidAccessToken, tonic::Code::Unauthenticated),
        ] {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn unexpected_errors_reveal_nothing() {
        let status = Status::from(Error::Unexpected(anyhow::anyhow!("disk on fire")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn more_roles_than_the_bound_are_refused_before_any_is_parsed() {
        let many = vec!["no-such-role".to_owned(); MAX_ROLES + 1];
        assert_eq!(
            parse_roles(&many).unwrap_err().0,
            format!("at most {MAX_ROLES} roles may be given")
        );
        let repeats = vec!["user".to_owned(); MAX_ROLES];
        assert!(parse_roles(&repeats).is_ok());
    }

    #[test]
    fn a_long_or_odd_unknown_role_is_not_repeated_in_the_error() {
        for hostile in ["x".repeat(10_000), "<script>".to_owned() + " x"] {
            let message = parse_roles(std::slice::from_ref(&hostile)).unwrap_err().0;
            assert!(message.starts_with("unknown role"), "{message}");
            assert!(!message.contains(&hostile), "{message}");
        }
        assert!(
            parse_roles(&["root".to_owned()])
                .unwrap_err()
                .0
                .contains("root")
        );
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let id = UserId::new();
        assert_eq!(decode_page_token(&encode_page_token(id)).unwrap(), Some(id));
        assert_eq!(decode_page_token("").unwrap(), None);
        assert!(decode_page_token("!!").is_err());
        assert!(decode_page_token("AAAA").is_err());
    }
}
