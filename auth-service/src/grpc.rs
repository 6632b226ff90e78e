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
    domain::{
        ClientId, Email, Invalid, Password, ServiceAccount, ServiceAccountName, User, UserId,
        Username,
    },
    error::Error,
    feed::Feed,
    metrics::{ClientGrants, SignIns},
    refresh_token::RefreshToken,
    service_accounts::{DEFAULT_SECRET_OVERLAP, MAX_SECRET_OVERLAP},
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
            ("CreateServiceAccount", Access::AnyRole(ADMIN)),
            ("ListServiceAccounts", Access::AnyRole(ADMIN)),
            ("SetServiceAccountDisabled", Access::AnyRole(ADMIN)),
            ("DeleteServiceAccount", Access::AnyRole(ADMIN)),
            ("RotateServiceAccountSecret", Access::AnyRole(ADMIN)),
            // The caller authenticates with a client id and secret in the request, not a token.
            ("IssueClientToken", Access::Public),
            ("IntrospectToken", Access::Public),
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
    client_grants: ClientGrants,
    feed: Feed,
}

impl AuthGrpc {
    pub fn new(accounts: Arc<Accounts>, feed: Feed) -> Self {
        Self {
            accounts,
            sign_ins: SignIns::new(),
            client_grants: ClientGrants::new(),
            feed,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid(_) | Error::CredentialsMissing | Error::InvalidScope => {
                Status::invalid_argument(message)
            }
            Error::InvalidCredentials
            | Error::RefreshRefused
            | Error::InvalidAccessToken
            | Error::InvalidClient => Status::unauthenticated(message),
            Error::UsernameTaken | Error::EmailTaken | Error::ServiceAccountNameTaken => {
                Status::already_exists(message)
            }
            Error::CannotGrantRoles
            | Error::NotAdmin
            | Error::AccountDisabled
            | Error::WrongCurrentPassword
            | Error::NotForServiceAccounts(_) => Status::permission_denied(message),
            Error::AccountGone
            | Error::UserNotFound(_)
            | Error::SessionNotFound
            | Error::ServiceAccountNotFound(_) => Status::not_found(message),
            Error::KeyPending(_) => Status::already_exists(message),
            Error::CannotDropOwnAdmin
            | Error::CannotDisableSelf
            | Error::LastAdmin
            | Error::BootstrapNameTaken(_)
            | Error::KeysDoNotRotate => Status::failed_precondition(message),
            Error::Busy => Status::resource_exhausted(message),
            // The delay rides in the standard details, where gRPC clients and the gateway look.
            Error::SignInThrottled(retry_after)
            | Error::SignUpThrottled(retry_after)
            | Error::ClientThrottled(retry_after) => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
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

/// The caller of a call only a user can make (a profile, a password, sessions): a service
/// account's token is refused with PERMISSION_DENIED saying what it cannot do.
fn user_caller<'r, T>(request: &'r Request<T>, action: &'static str) -> Result<&'r Claims, Status> {
    let claims = signed_in(request)?;
    if claims.is_service_account() {
        return Err(Error::NotForServiceAccounts(action).into());
    }
    Ok(claims)
}

/// A list request's page: the id it starts after and its size (0 is the default, more than the
/// maximum is the maximum). The caller reads one row more, which tells whether another page
/// follows.
fn page(token: &str, size: i32) -> Result<(Option<uuid::Uuid>, u32), Status> {
    let limit = match size {
        0 => DEFAULT_PAGE_SIZE,
        n if n < 0 => {
            let invalid = Invalid("page_size must not be negative".to_owned());
            return Err(Error::from(invalid).into());
        }
        n => (n as u32).min(MAX_PAGE_SIZE),
    };
    Ok((decode_page_token(token).map_err(Error::from)?, limit))
}

/// Cuts `rows` (read with one extra) to the page and returns the token of the next page, empty
/// on the last.
fn next_page_token<T>(rows: &mut Vec<T>, limit: u32, id: impl Fn(&T) -> uuid::Uuid) -> String {
    if rows.len() <= limit as usize {
        return String::new();
    }
    rows.truncate(limit as usize);
    rows.last()
        .map(|row| encode_page_token(id(row)))
        .unwrap_or_default()
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

fn service_account_to_pb(account: ServiceAccount) -> pb::ServiceAccount {
    let now = token::unix_now();
    pb::ServiceAccount {
        client_id: account.id.to_string(),
        name: account.name,
        roles: account
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        created_at: Some(timestamp(account.created_at)),
        disabled: account.disabled,
        secret_created_at: Some(timestamp(account.secret_created_at)),
        // Only while the rotated-out secret still works.
        previous_secret_expires_at: account
            .previous_secret_expires_at
            .filter(|&until| until > now)
            .map(timestamp),
    }
}

/// How long a rotated-out secret keeps working: unset is the default, 0 none at all.
fn secret_overlap(requested: Option<i64>) -> Result<std::time::Duration, Invalid> {
    let Some(seconds) = requested else {
        return Ok(DEFAULT_SECRET_OVERLAP);
    };
    let max = MAX_SECRET_OVERLAP.as_secs();
    match u64::try_from(seconds) {
        Err(_) => Err(Invalid("overlap_seconds must not be negative".to_owned())),
        Ok(s) if s > max => Err(Invalid(format!(
            "overlap_seconds must be at most {max} (30 days)"
        ))),
        Ok(s) => Ok(std::time::Duration::from_secs(s)),
    }
}

fn client_id(text: &str) -> Result<ClientId, Status> {
    Ok(text.parse().map_err(Error::from)?)
}

/// The claims of an active token as `ValidateToken` and `IntrospectToken` answer them; only
/// `active = false` for any other.
fn token_info(claims: Option<Claims>) -> pb::ValidateTokenResponse {
    let Some(c) = claims else {
        return pb::ValidateTokenResponse::default();
    };
    pb::ValidateTokenResponse {
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
        client_id: c.client_id.unwrap_or_default(),
    }
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
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let roles = parse_roles(&req.roles).map_err(Error::from)?;
        let name = ServiceAccountName::parse(&req.name).map_err(Error::from)?;
        let (account, secret) = self
            .accounts
            .create_service_account(&caller, name, roles)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateServiceAccountResponse {
            service_account: Some(service_account_to_pb(account)),
            client_secret: secret.expose().to_owned(),
        }))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let (after, limit) = page(&req.page_token, req.page_size)?;
        let mut accounts = self
            .accounts
            .list_service_accounts(&caller, after.map(ClientId), limit + 1)
            .await
            .map_err(status)?;
        let next_page_token = next_page_token(&mut accounts, limit, |a| a.id.0);
        Ok(Response::new(pb::ListServiceAccountsResponse {
            service_accounts: accounts.into_iter().map(service_account_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn set_service_account_disabled(
        &self,
        request: Request<pb::SetServiceAccountDisabledRequest>,
    ) -> Result<Response<pb::SetServiceAccountDisabledResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let id = client_id(&req.client_id)?;
        let account = self
            .accounts
            .set_service_account_disabled(&caller, id, req.disabled)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SetServiceAccountDisabledResponse {
            service_account: Some(service_account_to_pb(account)),
        }))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let id = client_id(&request.into_inner().client_id)?;
        self.accounts
            .delete_service_account(&caller, id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteServiceAccountResponse {}))
    }

    async fn rotate_service_account_secret(
        &self,
        request: Request<pb::RotateServiceAccountSecretRequest>,
    ) -> Result<Response<pb::RotateServiceAccountSecretResponse>, Status> {
        let caller = signed_in(&request)?.clone();
        let req = request.into_inner();
        let id = client_id(&req.client_id)?;
        let overlap = secret_overlap(req.overlap_seconds).map_err(Error::from)?;
        let (account, secret) = self
            .accounts
            .rotate_service_account_secret(&caller, id, overlap)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RotateServiceAccountSecretResponse {
            service_account: Some(service_account_to_pb(account)),
            client_secret: secret.expose().to_owned(),
        }))
    }

    async fn issue_client_token(
        &self,
        request: Request<pb::IssueClientTokenRequest>,
    ) -> Result<Response<pb::IssueClientTokenResponse>, Status> {
        let origin = origin(&request);
        let req = request.into_inner();
        let result = self
            .accounts
            .issue_client_token(&req.client_id, &req.client_secret, &req.scope, &origin)
            .await;
        self.client_grants.record(&result);
        let token = result.map_err(status)?;
        let claims = &token.access.claims;
        Ok(Response::new(pb::IssueClientTokenResponse {
            token_type: "Bearer".to_owned(),
            expires_in: claims.exp - claims.iat,
            expires_at: Some(timestamp(claims.exp)),
            scope: token
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            access_token: token.access.token,
        }))
    }

    async fn introspect_token(
        &self,
        request: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let origin = origin(&request);
        let req = request.into_inner();
        let claims = self
            .accounts
            .introspect(
                &req.client_id,
                &req.client_secret,
                req.token.trim(),
                &origin,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(token_info(claims)))
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
            .me(user_caller(&request, "read a user profile")?)
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
        let (after, limit) = page(&req.page_token, req.page_size)?;
        let mut users = self
            .accounts
            .list_users(&caller, after.map(UserId), limit + 1)
            .await
            .map_err(status)?;
        let next_page_token = next_page_token(&mut users, limit, |u| u.id.0);
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
        let req = request.into_inner();
        match (req.user_id.is_empty(), req.client_id.is_empty()) {
            (false, true) => {
                let id: UserId = req.user_id.parse().map_err(Error::from)?;
                self.accounts.clear_sign_in_throttle(&caller, id).await
            }
            (true, false) => {
                let id = client_id(&req.client_id)?;
                self.accounts.clear_client_throttle(&caller, id).await
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of user_id and client_id",
                ));
            }
        }
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
        let caller = user_caller(&request, "change a password")?.clone();
        let origin = origin(&request);
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
                &origin,
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
        Ok(Response::new(token_info(claims)))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = user_caller(&request, "list sessions: service accounts have none")?.clone();
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
        let caller = user_caller(&request, "end sessions: service accounts have none")?.clone();
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

/// Page tokens are opaque to clients: the last id seen (a user's or a service account's),
/// base64url-encoded.
fn encode_page_token(id: uuid::Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_page_token(token: &str) -> Result<Option<uuid::Uuid>, Invalid> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Invalid("page_token is not valid".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let uuid = uuid::Uuid::from_slice(&bytes).map_err(|_| invalid())?;
    Ok(Some(uuid))
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
        let id = UserId::new().0;
        assert_eq!(decode_page_token(&encode_page_token(id)).unwrap(), Some(id));
        assert_eq!(decode_page_token("").unwrap(), None);
        assert!(decode_page_token("!!").is_err());
        assert!(decode_page_token("AAAA").is_err());
    }
}
