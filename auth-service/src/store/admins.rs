//! Admin changes to an account (its roles, its disabled flag), each decided in one transaction
//! that admin changes take one at a time. Inside it the caller must still be an enabled admin,
//! and the change must leave at least one enabled admin: two admins demoting (or disabling) each
//! other at once cannot both succeed, and no change leaves the service without an admin.
//!
//! Admin changes are serialised on PostgreSQL by a transaction-scoped advisory lock taken
//! first (every replica takes the same one), and on SQLite by `BEGIN IMMEDIATE`, which takes the
//! database's write lock before the first read. Either way every read in the transaction sees
//! every admin change committed before it.

use sqlx::{Postgres, Sqlite, Transaction};
use token::Role;

use super::{
    DELETE_ROLES, INSERT_ROLE, PgStore, SqliteStore, Store, StoreError, error::failed,
    find_user_sql, insert_roles, rows::UserRow, sessions::SET_DISABLED,
};
use crate::domain::{User, UserId};

/// The key of the advisory lock every admin change holds on PostgreSQL ("admins" in ASCII).
const ADMINS_LOCK: i64 = 0x6164_6d69_6e73;

/// Whether `$1` is an enabled account holding the admin role.
const IS_ENABLED_ADMIN: &str = "SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id \
     WHERE u.id = $1 AND r.role = 'admin' AND u.disabled_at IS NULL";
/// Whether an enabled admin other than `$1` exists.
const OTHER_ENABLED_ADMIN: &str = "SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id \
     WHERE u.id <> $1 AND r.role = 'admin' AND u.disabled_at IS NULL LIMIT 1";

/// What an admin asks to change.
#[derive(Clone, Copy, Debug)]
pub enum AdminChange<'a> {
    /// Replace the account's roles with these.
    Roles(&'a [Role]),
    /// Disable the account from this time (Unix seconds), or enable it with `None`.
    Disabled(Option<i64>),
}

/// What became of an admin change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminChangeOutcome {
    /// Written: the account as it is now, and as it was just before, both read in the
    /// transaction that changed it (boxed: the other outcomes carry nothing).
    Changed { before: Box<User>, after: Box<User> },
    /// No account has that id.
    NotFound,
    /// The caller is no longer an enabled admin (demoted or disabled meanwhile).
    CallerNotAdmin,
    /// The account is the last enabled admin, and the change would take that away.
    LastAdmin,
}

impl SqliteStore {
    async fn begin_admin_change(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("failed to begin an admin change"))
    }
}

impl PgStore {
    async fn begin_admin_change(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(failed("failed to begin an admin change"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ADMINS_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(failed("failed to lock admin changes"))?;
        Ok(tx)
    }
}

impl Store {
    /// Applies `change` to account `target` on behalf of admin `caller`, under the rules in
    /// this module's comment. Nothing is written unless the outcome is `Changed`.
    pub async fn change_as_admin(
        &self,
        caller: UserId,
        target: UserId,
        change: AdminChange<'_>,
    ) -> Result<AdminChangeOutcome, StoreError> {
        let sql = find_user_sql();
        on_backend!(self, db => {
            let mut tx = db.begin_admin_change().await?;
            let caller_is_admin = sqlx::query(IS_ENABLED_ADMIN)
                .bind(db.id(caller))
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed("failed to check the caller's role"))?
                .is_some();
            if !caller_is_admin {
                return Ok(AdminChangeOutcome::CallerNotAdmin);
            }
            let before = sqlx::query_as::<_, UserRow>(&sql)
                .bind(db.id(target))
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed("failed to look up user"))?;
            let Some(before) = before.map(UserRow::into_user).transpose()? else {
                return Ok(AdminChangeOutcome::NotFound);
            };
            let removes_an_admin = before.roles.contains(&Role::Admin)
                && !before.disabled
                && match change {
                    AdminChange::Roles(roles) => !roles.contains(&Role::Admin),
                    AdminChange::Disabled(at) => at.is_some(),
                };
            if removes_an_admin {
                let other_admin = sqlx::query(OTHER_ENABLED_ADMIN)
                    .bind(db.id(target))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed("failed to count admins"))?
                    .is_some();
                if !other_admin {
                    return Ok(AdminChangeOutcome::LastAdmin);
                }
            }
            match change {
                AdminChange::Roles(roles) => {
                    sqlx::query(DELETE_ROLES)
                        .bind(db.id(target))
                        .execute(&mut *tx)
                        .await
                        .map_err(failed("failed to clear roles"))?;
                    insert_roles(&mut tx, INSERT_ROLE, db.id(target), roles).await?;
                }
                AdminChange::Disabled(at) => {
                    sqlx::query(SET_DISABLED)
                        .bind(at)
                        .bind(db.id(target))
                        .execute(&mut *tx)
                        .await
                        .map_err(failed("failed to disable user"))?;
                }
            }
            let after = sqlx::query_as::<_, UserRow>(&sql)
                .bind(db.id(target))
                .fetch_one(&mut *tx)
                .await
                .map_err(failed("failed to look up user"))?
                .into_user()?;
            tx.commit()
                .await
                .map_err(failed("failed to commit an admin change"))?;
            Ok(AdminChangeOutcome::Changed {
                before: Box::new(before),
                after: Box::new(after),
            })
        })
    }
}
