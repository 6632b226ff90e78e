//! Service accounts and the hashes of their secrets.

use uuid::Uuid;

use super::{
    Store, StoreError,
    error::{failed, insert_service_account_failed},
    insert_roles,
    rows::{ServiceAccountRow, ServiceAccountSecretsRow},
};
use crate::domain::{ClientId, NewServiceAccount, ServiceAccount, ServiceAccountSecrets};

/// Roles come back as one comma-separated column so an account is one row.
const COLUMNS: &str = "CAST(a.id AS TEXT) AS id, a.name, a.created_at, a.disabled_at, \
     a.secret_created_at, a.previous_secret_expires_at, (SELECT string_agg(role, ',') \
     FROM service_account_roles r WHERE r.service_account_id = a.id) AS roles";
const INSERT: &str = "INSERT INTO service_accounts \
     (id, name, secret_hash, secret_created_at, created_at) VALUES ($1, $2, $3, $4, $4)";
const INSERT_ROLE: &str = "INSERT INTO service_account_roles (service_account_id, role) \
     VALUES ($1, $2) ON CONFLICT (service_account_id, role) DO NOTHING";
const SET_DISABLED: &str = "UPDATE service_accounts SET disabled_at = $1 WHERE id = $2";
const DELETE: &str = "DELETE FROM service_accounts WHERE id = $1";
/// The current secret becomes the previous one while an overlap is asked for (`$3`, when it
/// ends); without one the previous secret is forgotten at once. Every right-hand side reads the
/// row as it was before the update.
const ROTATE: &str = "UPDATE service_accounts SET \
     previous_secret_hash = CASE WHEN $3 IS NULL THEN NULL ELSE secret_hash END, \
     previous_secret_expires_at = $3, secret_hash = $1, secret_created_at = $2 WHERE id = $4";
/// The latest time before which a subject's tokens are void.
const REVOKED_THROUGH: &str =
    "SELECT MAX(not_before) FROM revocations WHERE kind = 'user' AND subject = $1";

fn find_sql() -> String {
    format!(
        "SELECT {COLUMNS}, a.secret_hash, a.previous_secret_hash FROM service_accounts a \
         WHERE a.id = $1"
    )
}

fn list_sql() -> String {
    format!("SELECT {COLUMNS} FROM service_accounts a WHERE a.id > $1 ORDER BY a.id LIMIT $2")
}

impl Store {
    /// Inserts the account and its roles in one transaction. The name's uniqueness is decided
    /// by the database's unique index.
    pub async fn insert_service_account(
        &self,
        account: &NewServiceAccount,
    ) -> Result<ServiceAccount, StoreError> {
        on_backend!(self, db => {
            let mut tx = db.pool.begin().await.map_err(failed("failed to begin"))?;
            sqlx::query(INSERT)
                .bind(db.id(account.id))
                .bind(account.name.as_ref())
                .bind(account.secret_hash.as_slice())
                .bind(account.created_at)
                .execute(&mut *tx)
                .await
                .map_err(insert_service_account_failed)?;
            insert_roles(&mut tx, INSERT_ROLE, db.id(account.id), &account.roles).await?;
            tx.commit()
                .await
                .map_err(failed("failed to commit service account"))?;
        });
        let mut roles = account.roles.clone();
        roles.sort();
        Ok(ServiceAccount {
            id: account.id,
            name: account.name.to_string(),
            roles,
            created_at: account.created_at,
            disabled: false,
            secret_created_at: account.created_at,
            previous_secret_expires_at: None,
        })
    }

    /// The account with the hashes of its secrets: one row, one round trip.
    pub async fn find_service_account(
        &self,
        id: ClientId,
    ) -> Result<Option<ServiceAccountSecrets>, StoreError> {
        let sql = find_sql();
        let row = on_backend!(self, db => {
            sqlx::query_as::<_, ServiceAccountSecretsRow>(&sql)
                .bind(db.id(id))
                .fetch_optional(&db.pool)
                .await
        })
        .map_err(failed("failed to look up service account"))?;
        Ok(row
            .map(ServiceAccountSecretsRow::into_secrets)
            .transpose()?)
    }

    /// Up to `limit` accounts with ids greater than `after`, in id (creation) order.
    pub async fn list_service_accounts(
        &self,
        after: Option<ClientId>,
        limit: u32,
    ) -> Result<Vec<ServiceAccount>, StoreError> {
        // The nil UUID sorts before every id `ClientId::new` makes, as a UUID and as text.
        let after = after.unwrap_or(ClientId(Uuid::nil()));
        let sql = list_sql();
        let rows = on_backend!(self, db => {
            sqlx::query_as::<_, ServiceAccountRow>(&sql)
                .bind(db.id(after))
                .bind(i64::from(limit))
                .fetch_all(&db.pool)
                .await
        })
        .map_err(failed("failed to list service accounts"))?;
        Ok(rows
            .into_iter()
            .map(ServiceAccountRow::into_account)
            .collect::<anyhow::Result<_>>()?)
    }

    /// Sets (Unix seconds) or clears the disabled mark; `false` if there is no such account.
    pub async fn set_service_account_disabled(
        &self,
        id: ClientId,
        disabled_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let changed = on_backend!(self, db => {
            sqlx::query(SET_DISABLED)
                .bind(disabled_at)
                .bind(db.id(id))
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to disable service account"))?;
        Ok(changed == 1)
    }

    /// Deletes the account and its roles; `false` if there was none.
    pub async fn delete_service_account(&self, id: ClientId) -> Result<bool, StoreError> {
        let deleted = on_backend!(self, db => {
            sqlx::query(DELETE)
                .bind(db.id(id))
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to delete service account"))?;
        Ok(deleted == 1)
    }

    /// Replaces the secret's hash; the old one keeps working until `previous_expires_at` when
    /// given. `false` if there is no such account.
    pub async fn rotate_service_account_secret(
        &self,
        id: ClientId,
        secret_hash: &[u8],
        now: i64,
        previous_expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let changed = on_backend!(self, db => {
            sqlx::query(ROTATE)
                .bind(secret_hash)
                .bind(now)
                .bind(previous_expires_at)
                .bind(db.id(id))
                .execute(&db.pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(failed("failed to rotate the service account secret"))?;
        Ok(changed == 1)
    }

    /// The latest `not_before` of the user-level revocations of `subject` still stored: tokens
    /// issued at or before it are refused.
    pub async fn revoked_through(&self, subject: &str) -> Result<Option<i64>, StoreError> {
        on_backend!(self, db => {
            sqlx::query_scalar::<_, Option<i64>>(REVOKED_THROUGH)
                .bind(subject)
                .fetch_one(&db.pool)
                .await
        })
        .map_err(failed("failed to read revocations"))
    }
}
