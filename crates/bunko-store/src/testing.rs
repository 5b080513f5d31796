//! Test support: a fresh PostgreSQL database per test on the server `scripts/services start`
//! runs (its URL in `BUNKO_TEST_PG_URL`). Without that variable a test prints why it did not
//! run — and fails in CI, where `scripts/test` always starts the server.

#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::print_stderr
)]

use crate::postgres::PgStore;
use bunko_core::ports::MetaStore;
use sqlx::Connection;
use std::sync::Arc;

/// None, with why a test did not run — or a failure in CI, where `scripts/test` always starts
/// the servers.
fn not_running<T>(var: &str, server: &str) -> Option<T> {
    let why = format!(
        "{var} is not set: start {server} with `scripts/services start` and \
         `source /tmp/bunko-services/env` (scripts/test does both)"
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// The admin URL of the test server, or None with a printed reason (a panic in CI).
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("BUNKO_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => not_running("BUNKO_TEST_PG_URL", "PostgreSQL"),
    }
}

/// A database of its own, dropped when this is dropped.
pub struct PgDatabase {
    admin: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// Creates an empty database on the test server (None: see [`pg_admin_url`]).
    pub async fn create() -> Option<Self> {
        let admin = pg_admin_url()?;
        let name = format!("bunko_t_{}", bunko_core::ids::new_id().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL server");
        // Audited: the name is made above from a UUID.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside any async context guarantee: a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    // Audited: the name is made from a UUID.
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A migrated store on a database of its own, for the contract suite.
pub async fn pg_fresh() -> Option<(Arc<dyn MetaStore>, PgDatabase)> {
    let db = PgDatabase::create().await?;
    let store = PgStore::open(&db.url, &db.name, 5)
        .await
        .expect("open the test database");
    Some((Arc::new(store), db))
}

/// The S3 stand-in `scripts/services start` runs (moto, signatures checked), with a key
/// prefix of the test's own; None with a printed reason (a panic in CI) when it is not there.
pub fn s3_config() -> Option<crate::s3::S3Config> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        var("BUNKO_TEST_S3_ENDPOINT"),
        var("BUNKO_TEST_S3_BUCKET"),
        var("BUNKO_TEST_S3_KEY_ID"),
        var("BUNKO_TEST_S3_SECRET"),
    ) {
        (Some(endpoint), Some(bucket), Some(key), Some(secret)) => Some(crate::s3::S3Config {
            bucket,
            // No `/` in the test prefix: moto's signature check mis-encodes one in a listing's
            // query (boto3's own ListObjectsV2 fails there too); real S3 takes it.
            prefix: format!("t-{}-", bunko_core::ids::new_id().simple()),
            region: "us-east-1".into(),
            endpoint: Some(endpoint),
            access_key_id: key,
            secret_access_key: secret,
        }),
        _ => not_running("BUNKO_TEST_S3_*", "the S3 stand-in"),
    }
}

/// The Redis server `scripts/services start` runs (password set, no persistence) and a key
/// prefix of the test's own; None with a printed reason (a panic in CI) when it is not there.
pub fn redis_url() -> Option<(String, String)> {
    match std::env::var("BUNKO_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some((u, format!("t{}:", bunko_core::ids::new_id().simple()))),
        _ => not_running("BUNKO_TEST_REDIS_URL", "Redis"),
    }
}
