//! The port contract suites and the worker, on a real SQLite file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use bunko_core::ports::MetaStore;
use bunko_store::sqlite::SqliteStore;

use std::sync::Arc;

async fn fresh() -> (Arc<dyn MetaStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bunko.db"))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

mod contract {
    use super::fresh;
    bunko_store::contract_tests!(async { Some(fresh().await) });
}

mod open {
    use bunko_core::ports::MetaStore;
    use bunko_store::OpenError;
    use bunko_store::sqlite::SqliteStore;

    #[tokio::test]
    async fn corrupt_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bunko.db");
        std::fs::write(&path, b"this is not a database, but it is somebody's data").unwrap();
        let err = SqliteStore::open(&path).await.err().unwrap();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("will not overwrite"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"this is not a database, but it is somebody's data"
        );
    }

    #[tokio::test]
    async fn damaged_sqlite_pages_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bunko.db");
        let s = SqliteStore::open(&path).await.unwrap();
        s.close().await; // checkpoints the WAL into the main file
        drop(s);
        // Keep the header, scribble over the schema page.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.len() >= 4096,
            "the schema must be in the main file, not only in the WAL"
        );
        for b in bytes.iter_mut().skip(100).take(3000) {
            *b = 0xAB;
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = std::fs::remove_file(dir.path().join("bunko.db-wal"));
        let err = SqliteStore::open(&path).await.err().unwrap();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bunko.db");
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.schema_version().await.unwrap(), 7);
        drop(s);
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("INSERT INTO bunko_migrations VALUES (999, 'from the future', 0)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let err = SqliteStore::open(&path).await.err().unwrap();
        assert!(
            matches!(
                err,
                OpenError::NewerSchema {
                    found: 999,
                    supported: 7,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn foreign_sqlite_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (x TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let err = SqliteStore::open(&path).await.err().unwrap();
        assert!(matches!(err, OpenError::NotBunko { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn reopening_keeps_data() {
        use bunko_core::ports::SettingsQueries;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bunko.db");
        let s = SqliteStore::open(&path).await.unwrap();
        s.put_setting("k", "v").await.unwrap();
        drop(s);
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
    }
}

mod worker {
    use super::fresh;
    use async_trait::async_trait;
    use bunko_core::Code;
    use bunko_core::jobs::{
        JobContext, JobFailure, JobHandler, JobState, NewJob, Registry, Worker, WorkerConfig,
    };
    use bunko_core::metrics::Metrics;
    use bunko_core::ports::MetaStore;
    use bunko_core::tasks::Tasks;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;
    use uuid::Uuid;

    struct Panics;
    #[async_trait]
    impl JobHandler for Panics {
        async fn run(&self, _: JobContext) -> Result<Option<serde_json::Value>, JobFailure> {
            panic!("the handler exploded on purpose");
        }
    }

    /// Fails the first `n` attempts, then succeeds.
    struct Flaky(AtomicU32, u32);
    #[async_trait]
    impl JobHandler for Flaky {
        async fn run(&self, _: JobContext) -> Result<Option<serde_json::Value>, JobFailure> {
            let seen = self.0.fetch_add(1, Ordering::SeqCst);
            if seen < self.1 {
                Err(JobFailure::retryable(
                    Code::JobFailed,
                    format!("transient failure {seen}"),
                ))
            } else {
                Ok(Some(json!({"after": seen})))
            }
        }
    }

    fn config() -> WorkerConfig {
        WorkerConfig {
            lease_ttl: Duration::from_secs(2),
            poll_interval: Duration::from_millis(20),
            backoff_base: Duration::from_millis(30),
            backoff_max: Duration::from_millis(100),
            queues: vec![("default".into(), 2)],
        }
    }

    async fn wait_for(
        store: &Arc<dyn MetaStore>,
        id: Uuid,
        state: JobState,
    ) -> bunko_core::jobs::JobRecord {
        for _ in 0..300 {
            let j = store.get_job(id).await.unwrap().unwrap();
            if j.state == state {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "job {id} never reached {state:?}: {:?}",
            store.get_job(id).await.unwrap()
        );
    }

    fn start(store: &Arc<dyn MetaStore>, registry: Registry) -> (Arc<Worker>, Tasks) {
        let tasks = Tasks::new();
        let w = Worker::new(
            store.clone(),
            Arc::new(registry),
            config(),
            Arc::new(Metrics::new("t", "t")),
        );
        w.start(&tasks);
        (w, tasks)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_fails_the_job_and_the_worker_lives_on() {
        let (store, _d) = fresh().await;
        let mut reg = Registry::builtin();
        reg.register("test.panic", "default", Arc::new(Panics));
        let (_w, tasks) = start(&store, reg);
        let bad = store
            .enqueue(NewJob {
                max_attempts: 1,
                ..NewJob::new("default", "test.panic", json!({}))
            })
            .await
            .unwrap();
        let dead = wait_for(&store, bad.id, JobState::Dead).await;
        assert_eq!(dead.last_error_code.as_deref(), Some("job_panicked"));
        assert!(
            dead.last_error
                .unwrap()
                .contains("the handler exploded on purpose")
        );
        let good = store
            .enqueue(NewJob::new("default", "system.noop", json!({"x": 1})))
            .await
            .unwrap();
        let ok = wait_for(&store, good.id, JobState::Succeeded).await;
        assert_eq!(ok.result, Some(json!({"x": 1})));
        tasks.begin_shutdown();
        tasks.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_failures_are_retried_with_backoff() {
        let (store, _d) = fresh().await;
        let mut reg = Registry::builtin();
        reg.register(
            "test.flaky",
            "default",
            Arc::new(Flaky(AtomicU32::new(0), 2)),
        );
        let (_w, tasks) = start(&store, reg);
        let j = store
            .enqueue(NewJob::new("default", "test.flaky", json!({})))
            .await
            .unwrap();
        let done = wait_for(&store, j.id, JobState::Succeeded).await;
        assert_eq!(done.attempts, 3);
        assert_eq!(done.result, Some(json!({"after": 2})));
        tasks.begin_shutdown();
        tasks.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_payload_and_unknown_kind_die_at_once() {
        let (store, _d) = fresh().await;
        let (_w, tasks) = start(&store, Registry::builtin());
        let a = store
            .enqueue(NewJob::new(
                "default",
                "system.sleep",
                json!({"ms": "soon"}),
            ))
            .await
            .unwrap();
        let b = store
            .enqueue(NewJob::new("default", "no.such.kind", json!({})))
            .await
            .unwrap();
        let a = wait_for(&store, a.id, JobState::Dead).await;
        let b = wait_for(&store, b.id, JobState::Dead).await;
        assert_eq!(
            (a.attempts, a.last_error_code.as_deref()),
            (1, Some("invalid_input"))
        );
        assert_eq!(
            (b.attempts, b.last_error_code.as_deref()),
            (1, Some("unknown_job_kind"))
        );
        tasks.begin_shutdown();
        tasks.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_a_running_job_stops_it() {
        let (store, _d) = fresh().await;
        let tasks = Tasks::new();
        let cfg = WorkerConfig {
            lease_ttl: Duration::from_millis(600),
            ..config()
        };
        let w = Worker::new(
            store.clone(),
            Arc::new(Registry::builtin()),
            cfg,
            Arc::new(Metrics::new("t", "t")),
        );
        w.start(&tasks);
        let j = store
            .enqueue(NewJob::new("default", "system.sleep", json!({"ms": 60000})))
            .await
            .unwrap();
        wait_for(&store, j.id, JobState::Running).await;
        store.cancel(j.id).await.unwrap();
        let rec = wait_for(&store, j.id, JobState::Cancelled).await;
        assert!(rec.finished_at_ms.is_some());
        tasks.begin_shutdown();
        tasks.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hard_stop_releases_running_jobs_for_another_worker() {
        let (store, _d) = fresh().await;
        let (w, tasks) = start(&store, Registry::builtin());
        let j = store
            .enqueue(NewJob::new("default", "system.sleep", json!({"ms": 60000})))
            .await
            .unwrap();
        wait_for(&store, j.id, JobState::Running).await;
        tasks.begin_shutdown();
        w.hard_stop();
        tasks.wait().await;
        let rec = store.get_job(j.id).await.unwrap().unwrap();
        assert_eq!((rec.state, rec.attempts), (JobState::Queued, 0));
    }
}

mod audit_append_only {
    use bunko_core::ports::{AuditEvent, AuditQueries};
    use bunko_store::sqlite::SqliteStore;

    #[tokio::test]
    async fn rows_cannot_be_changed_or_deleted_outside_retention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bunko.db");
        let s = SqliteStore::open(&path).await.unwrap();
        s.append_audit(AuditEvent {
            event: "login".into(),
            outcome: "failure".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let upd = sqlx::query("UPDATE audit_log SET outcome = 'success'")
            .execute(&pool)
            .await;
        assert!(upd.unwrap_err().to_string().contains("append-only"));
        let del = sqlx::query("DELETE FROM audit_log").execute(&pool).await;
        assert!(del.unwrap_err().to_string().contains("retention"));
    }
}
