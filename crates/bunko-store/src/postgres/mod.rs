//! The PostgreSQL adapter, for stateless replicas: one connection pool shared by every
//! process, the same schema as SQLite's (ids and JSON as text compared byte-wise, times as
//! integer milliseconds) so the row mappers in `rows` serve both, and the job queue leased
//! with `FOR UPDATE SKIP LOCKED` so any number of workers take each job once.

mod answers;
mod documents;
mod identity;
mod jobs;
mod maintenance;
mod migrate;
mod projects;
mod schedules;
pub mod search;
mod sources;
mod usage;

use crate::OpenError;
use async_trait::async_trait;
use bunko_core::ports::{MetaStore, SettingsQueries, StoreError, StoreResult};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use migrate::latest;

pub struct PgStore {
    pool: PgPool,
    /// The URL without its password, for messages.
    name: String,
}

/// Advisory-lock keys (one namespace: 'bunk').
pub(crate) const LOCK_MIGRATE: i64 = 0x6275_6e6b_0001;
pub(crate) const LOCK_SYNC: i64 = 0x6275_6e6b_0002;

impl PgStore {
    /// Connects (`postgres://user:pass@host:port/db?sslmode=…`) and brings the schema up to
    /// date; `max_connections` bounds this process's share of the server.
    pub async fn open(url: &str, redacted: &str, max_connections: u32) -> Result<Self, OpenError> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| OpenError::Io {
            path: redacted.into(),
            detail: format!("not a valid PostgreSQL URL: {e}"),
        })?;
        let opts = opts.application_name("bunko");
        let io = |e: sqlx::Error| OpenError::Io {
            path: redacted.into(),
            detail: e.to_string(),
        };
        // One direct attempt first: a wrong host, port, password or database fails at once
        // with the server's reason instead of after the pool's retries.
        sqlx::PgConnection::connect_with(&opts)
            .await
            .map_err(io)?
            .close()
            .await
            .map_err(io)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(io)?;
        migrate::run(&pool, redacted).await?;
        Ok(Self {
            pool,
            name: redacted.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The search index on this store's connection pool (`search.backend = "postgres"`), so a
    /// process keeps to `database.max_connections` whatever it uses the database for.
    pub async fn search(&self, vectors: Option<(usize, &str)>) -> StoreResult<search::PgSearch> {
        search::PgSearch::with_pool(self.pool.clone(), vectors).await
    }

    /// The schema version applied (for `bunko migrate` output).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(version), 0) FROM bunko_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)
    }
}

/// Maps constraint violations to port errors — unique → `Conflict(conflict)`, foreign key →
/// `NotFound(missing)` — and anything else as [`db_err`] does.
pub(crate) fn constraint_err(
    e: sqlx::Error,
    conflict: impl FnOnce() -> String,
    missing: &str,
) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(conflict()),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::NotFound(missing.to_owned())
        }
        _ => db_err(e),
    }
}

/// Maps a driver error to a port error; the message is for the log only. Lost connections,
/// a full pool, a server shutting down or a serialization conflict are `Unavailable` (the
/// caller may retry); anything else is a backend error.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(d)
            if d.code().is_some_and(|c| {
                // 40001 serialization failure, 40P01 deadlock, 57P01 admin shutdown,
                // 53300 too many connections, 08xxx connection exceptions
                c == "40001" || c == "40P01" || c == "57P01" || c == "53300" || c.starts_with("08")
            }) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

#[async_trait]
impl SettingsQueries for PgStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(bunko_core::ids::now_ms())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .bind(bunko_core::ids::now_ms())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl MetaStore for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn snapshot_into(&self, _path: &Path) -> StoreResult<()> {
        Err(StoreError::InvalidState(
            "bunko backup copies the embedded SQLite database; a PostgreSQL database is backed \
             up with PostgreSQL's own tools (pg_dump, or continuous archiving) — see \
             docs/operations/runbook.md"
                .into(),
        ))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
