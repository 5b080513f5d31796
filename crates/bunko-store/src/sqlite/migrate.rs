//! Embedded migrations. Applied at start (and by `bunko migrate`), each in its own
//! transaction. A database whose schema is newer than this binary, or that belongs to another
//! application, is refused — never silently recreated.

use super::{APPLICATION_ID, classify_open_error};
use crate::OpenError;
use sqlx::SqlitePool;
use std::path::Path;

/// (version, name, SQL). Append only; never edit a released migration.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "identity",
        include_str!("../../migrations/sqlite/0002_identity.sql"),
    ),
    (
        3,
        "documents",
        include_str!("../../migrations/sqlite/0003_documents.sql"),
    ),
    (
        4,
        "usage",
        include_str!("../../migrations/sqlite/0004_usage.sql"),
    ),
    (
        5,
        "answers",
        include_str!("../../migrations/sqlite/0005_answers.sql"),
    ),
    (
        6,
        "schedules",
        include_str!("../../migrations/sqlite/0006_schedules.sql"),
    ),
    (
        7,
        "sources",
        include_str!("../../migrations/sqlite/0007_sources.sql"),
    ),
];

/// Must equal [`APPLICATION_ID`] (checked by a test).
const SET_APPLICATION_ID: &str = "PRAGMA application_id = 1651863147";

pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

pub async fn run(pool: &SqlitePool, path: &Path) -> Result<(), OpenError> {
    let err = |e: sqlx::Error| classify_open_error(path, e);
    // Reading the schema touches every page header SQLite needs: corruption shows up here.
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    let app_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    if tables > 0 && app_id != APPLICATION_ID {
        return Err(OpenError::NotBunko {
            path: path.into(),
            found: app_id,
        });
    }
    if tables == 0 {
        sqlx::query(SET_APPLICATION_ID)
            .execute(pool)
            .await
            .map_err(err)?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bunko_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT",
    )
    .execute(pool)
    .await
    .map_err(err)?;
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM bunko_migrations")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    if current > latest() {
        return Err(OpenError::NewerSchema {
            path: path.into(),
            found: current,
            supported: latest(),
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let mut tx = pool.begin().await.map_err(err)?;
        sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query("INSERT INTO bunko_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(bunko_core::ids::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn application_id_pragma_matches_constant() {
        assert!(super::SET_APPLICATION_ID.ends_with(&super::APPLICATION_ID.to_string()));
    }
}
