//! The account model: parsed, valid values only. Nothing here knows about gRPC or SQL.

mod email;
mod password;
mod user;
mod username;

pub use email::Email;
pub use password::Password;
pub use user::{NewUser, User, UserId, roles_with_user};
pub use username::Username;
