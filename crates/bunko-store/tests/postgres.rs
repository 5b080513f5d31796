//! The port contract suite on a real PostgreSQL server (see `scripts/services`), one fresh
//! database per test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod contract {
    bunko_store::contract_tests!(bunko_store::testing::pg_fresh());
}

/// What only a shared server can show: several processes (here, several pools — each replica
/// has its own) starting, migrating and leasing at the same time.
mod replicas {
    use bunko_core::jobs::NewJob;
    use bunko_core::ports::{JobQueue, MetaStore};
    use bunko_store::OpenError;
    use bunko_store::postgres::PgStore;
    use bunko_store::testing::PgDatabase;
    use serde_json::json;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_migrate_once_and_lease_each_job_once() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        // Four replicas open the empty database at once: one migrates, the others wait.
        let opens = (0..4).map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::open(&url, "test", 4).await })
        });
        let mut stores: Vec<Arc<PgStore>> = Vec::new();
        for h in opens {
            stores.push(Arc::new(h.await.unwrap().expect("every replica opens")));
        }
        assert_eq!(
            stores[0].schema_version().await.unwrap(),
            bunko_store::postgres::latest()
        );
        for i in 0..200 {
            stores[i % 4]
                .enqueue(NewJob::new("work", "k", json!({ "i": i })))
                .await
                .unwrap();
        }
        // Each replica runs three workers that lease until the queue is empty.
        let mut workers = Vec::new();
        for (r, s) in stores.iter().enumerate() {
            for w in 0..3 {
                let s = s.clone();
                workers.push(tokio::spawn(async move {
                    let me = format!("r{r}w{w}");
                    let mut got = Vec::new();
                    while let Some(j) = s.lease("work", &me, Duration::from_secs(30)).await.unwrap()
                    {
                        assert!(s.complete(j.id, &me, None).await.unwrap());
                        got.push(j.id);
                    }
                    got
                }));
            }
        }
        let mut seen = HashSet::new();
        let mut per_worker = Vec::new();
        for w in workers {
            let got = w.await.unwrap();
            per_worker.push(got.len());
            for id in got {
                assert!(seen.insert(id), "job {id} leased twice");
            }
        }
        assert_eq!(seen.len(), 200, "every job leased once");
        assert!(
            per_worker.iter().filter(|n| **n > 0).count() > 1,
            "the work was shared: {per_worker:?}"
        );
        for s in &stores {
            s.close().await;
        }
    }

    #[tokio::test]
    async fn another_applications_database_is_refused_and_left_alone() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id int primary key, total numeric)")
            .execute(&pool)
            .await
            .unwrap();
        let err = PgStore::open(&db.url, "theirs", 2).await.err().unwrap();
        assert!(err.to_string().contains("none of bunko's"), "{err}");
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(tables, 1, "nothing was created");
        pool.close().await;
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        let s = PgStore::open(&db.url, "db", 2).await.unwrap();
        s.close().await;
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(
            "INSERT INTO bunko_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let err = PgStore::open(&db.url, "db", 2).await.err().unwrap();
        assert!(
            matches!(err, OpenError::NewerSchema { found: 999, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        // A port nothing listens on (the test server's port + 1 is not used by the suite).
        let err = PgStore::open(
            "postgres://bunko@127.0.0.1:1/bunko",
            "postgres://bunko@127.0.0.1:1/bunko",
            2,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(err, OpenError::Io { .. }) && err.to_string().contains("127.0.0.1:1"),
            "{err}"
        );
    }
}
