//! The SQLite adapter: WAL mode, one writer connection (SQLite allows one writer at a time; a
//! single connection makes that explicit and avoids lock upgrades), a small reader pool, and
//! a busy timeout so a CLI command and a server can share the file.

mod answers;
mod documents;
mod identity;
mod jobs;
mod maintenance;
pub(crate) mod migrate;
mod projects;
mod schedules;
mod sources;
mod usage;

use crate::OpenError;
use async_trait::async_trait;
use bunko_core::ports::{MetaStore, SettingsQueries, StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// 'bunk' — written to the database header so a foreign SQLite file is never mistaken for ours.
pub const APPLICATION_ID: i64 = 0x6275_6e6b;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        check_header(path)?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let io = |e: sqlx::Error| classify_open_error(path, e);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await
            .map_err(io)?;
        migrate::run(&writer, path).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await
            .map_err(io)?;
        Ok(Self {
            writer,
            reader,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version applied (for `bunko migrate` output).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(version), 0) FROM bunko_migrations")
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)
    }
}

/// Opens a database file read-only, without migrating it (a backup's copy): its schema version
/// and the result of `PRAGMA integrity_check` ("ok" when sound).
pub async fn inspect(path: &Path) -> Result<(i64, String), String> {
    check_header(path).map_err(|e| e.to_string())?;
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| format!("does not open: {e}"))?;
    let out = async {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("integrity check: {e}"))?;
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM bunko_migrations")
                .fetch_one(&pool)
                .await
                .map_err(|e| format!("not a bunko database: {e}"))?;
        Ok((version, check))
    }
    .await;
    pool.close().await;
    out
}

/// A file that exists and is not empty must start with the SQLite header; anything else is
/// refused before SQLite gets a chance to treat it as something to overwrite.
fn check_header(path: &Path) -> Result<(), OpenError> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(OpenError::Io {
                path: path.into(),
                detail: e.to_string(),
            });
        }
    };
    let mut header = [0u8; 16];
    match f.read(&mut header) {
        Ok(0) => Ok(()),
        Ok(n) if n == 16 && &header == b"SQLite format 3\0" => Ok(()),
        Ok(_) => Err(OpenError::Corrupt {
            path: path.into(),
            detail: "the file header is not SQLite's".into(),
        }),
        Err(e) => Err(OpenError::Io {
            path: path.into(),
            detail: e.to_string(),
        }),
    }
}

pub(crate) fn classify_open_error(path: &Path, e: sqlx::Error) -> OpenError {
    let msg = e.to_string();
    if msg.contains("not a database") || msg.contains("malformed") || msg.contains("corrupt") {
        OpenError::Corrupt {
            path: path.into(),
            detail: msg,
        }
    } else {
        OpenError::Io {
            path: path.into(),
            detail: msg,
        }
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

/// Maps a driver error to a port error; the message is for the log only.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(d)
            if d.message().contains("locked") || d.message().contains("busy") =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

#[async_trait]
impl SettingsQueries for SqliteStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)
    }

    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(bunko_core::ids::now_ms())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .bind(bunko_core::ids::now_ms())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn snapshot_into(&self, path: &Path) -> StoreResult<()> {
        // One read transaction on a reader connection: writers go on (WAL).
        let target = path
            .to_str()
            .ok_or_else(|| StoreError::Backend(format!("{} is not UTF-8", path.display())))?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
