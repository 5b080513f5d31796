//! Embedded migrations for PostgreSQL, numbered as SQLite's so both report the same schema
//! version. Replicas starting together take an advisory lock: one migrates, the others wait
//! and find nothing left to do. A database with other tables and none of bunko's, or with a
//! newer schema, is refused — never changed.

use super::LOCK_MIGRATE;
use crate::OpenError;
use sqlx::PgPool;

/// (version, name, SQL). Append only; never edit a released migration.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "identity",
        include_str!("../../migrations/postgres/0002_identity.sql"),
    ),
    (
        3,
        "documents",
        include_str!("../../migrations/postgres/0003_documents.sql"),
    ),
    (
        4,
        "usage",
        include_str!("../../migrations/postgres/0004_usage.sql"),
    ),
    (
        5,
        "answers",
        include_str!("../../migrations/postgres/0005_answers.sql"),
    ),
    (
        6,
        "schedules",
        include_str!("../../migrations/postgres/0006_schedules.sql"),
    ),
    (
        7,
        "sources",
        include_str!("../../migrations/postgres/0007_sources.sql"),
    ),
];

pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

pub async fn run(pool: &PgPool, name: &str) -> Result<(), OpenError> {
    let err = |e: sqlx::Error| OpenError::Io {
        path: name.into(),
        detail: e.to_string(),
    };
    // One connection holds the session lock for the whole run.
    let mut conn = pool.acquire().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_MIGRATE)
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    let out = apply(&mut conn, name).await;
    let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_MIGRATE)
        .execute(&mut *conn)
        .await;
    out?;
    unlock.map_err(err)?;
    Ok(())
}

async fn apply(conn: &mut sqlx::PgConnection, name: &str) -> Result<(), OpenError> {
    let err = |e: sqlx::Error| OpenError::Io {
        path: name.into(),
        detail: e.to_string(),
    };
    let ours: bool = sqlx::query_scalar("SELECT to_regclass('bunko_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
    if !ours {
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
        if tables > 0 {
            return Err(OpenError::Backend(format!(
                "{name} holds {tables} table(s) and none of bunko's; bunko will not write into \
                 another application's schema — point database.url at an empty database"
            )));
        }
        sqlx::query(
            "CREATE TABLE bunko_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await
        .map_err(err)?;
    }
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM bunko_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
    if current > latest() {
        return Err(OpenError::NewerSchema {
            path: name.into(),
            found: current,
            supported: latest(),
        });
    }
    for (version, mname, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(err)?;
        sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query("INSERT INTO bunko_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(mname)
            .bind(bunko_core::ids::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        tracing::info!(version, name = mname, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_know_the_same_migrations() {
        let pg: Vec<_> = super::MIGRATIONS.iter().map(|m| (m.0, m.1)).collect();
        let lite: Vec<_> = crate::sqlite::migrate::MIGRATIONS
            .iter()
            .map(|m| (m.0, m.1))
            .collect();
        assert_eq!(pg, lite);
    }
}
