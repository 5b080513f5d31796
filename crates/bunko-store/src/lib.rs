//! bunko-store: adapters for the `MetaStore` and `JobQueue` ports of bunko-core. SQLite (WAL,
//! one writer connection) is the embedded default; PostgreSQL serves several processes; the
//! backend is chosen from the database URL's scheme. Depends on bunko-core only; knows
//! nothing of HTTP.

pub mod blobs;
pub mod postgres;
mod rows;
pub mod s3;
pub mod shared;
pub mod sqlite;

/// Compiled always (it is small) so other crates and backends can run it from their tests.
#[doc(hidden)]
pub mod contract;

/// Test support (fresh PostgreSQL databases); compiled always so other crates' tests use it.
#[doc(hidden)]
pub mod testing;

use bunko_core::config::DatabaseUrl;
use bunko_core::ports::MetaStore;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the store could not be opened. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{path} is not a readable SQLite database ({detail}); bunko will not overwrite it. \
         Restore it from a backup, or move it away to start empty"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path} is a SQLite database but not bunko's (application_id {found:#x}); \
         point data_dir or database.url elsewhere"
    )]
    NotBunko { path: PathBuf, found: i64 },
    #[error(
        "{path} has schema version {found}, newer than this bunko knows ({supported}); \
         it was written by a newer bunko — run that version, or restore a backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("cannot open database {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Backend(String),
}

/// Opens the store the URL names and brings its schema up to date. `max_connections` bounds a
/// PostgreSQL pool (SQLite has one writer and a few readers).
pub async fn open(
    url: &DatabaseUrl,
    max_connections: u32,
) -> Result<Arc<dyn MetaStore>, OpenError> {
    Ok(open_parts(url, max_connections).await?.0)
}

/// [`open`], and the PostgreSQL store itself when the URL names one (what else uses the
/// database — the search index — shares its pool).
pub async fn open_parts(
    url: &DatabaseUrl,
    max_connections: u32,
) -> Result<(Arc<dyn MetaStore>, Option<Arc<postgres::PgStore>>), OpenError> {
    match url.scheme() {
        "sqlite" => {
            let path = url.expose().trim_start_matches("sqlite://");
            let store = sqlite::SqliteStore::open(std::path::Path::new(path)).await?;
            Ok((Arc::new(store), None))
        }
        "postgres" | "postgresql" => {
            let store = Arc::new(
                postgres::PgStore::open(url.expose(), &url.redacted(), max_connections).await?,
            );
            Ok((store.clone(), Some(store)))
        }
        _ => Err(OpenError::UnsupportedUrl(url.redacted())),
    }
}
