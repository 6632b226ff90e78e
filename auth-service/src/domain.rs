//! The account model: parsed, valid values only. Nothing here knows about gRPC or SQL.

mod email;
mod password;
mod service_account;
mod user;
mod username;

pub use email::Email;
pub use password::Password;
pub use service_account::{
    ClientId, ClientSecret, MAX_CLIENT_SECRET, NewServiceAccount, ServiceAccount,
    ServiceAccountName, ServiceAccountSecrets, service_account_roles,
};
pub use user::{NewUser, User, UserId, roles_with_user};
pub use username::Username;

/// Why a value was refused; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
