//! Job queue throughput through the real worker, on the embedded SQLite store and — when
//! `BUNKO_TEST_PG_URL` names a PostgreSQL server (`scripts/services start`) — on PostgreSQL,
//! side by side: enqueue rate, then lease + run (`system.noop`) + complete with 1 and 4
//! concurrent jobs, and on PostgreSQL two "replicas" (two pools, 4 workers each).
//! Usage: cargo run --release -p bunko-bench --bin bench-jobs -- [JOBS]

#![allow(clippy::print_stdout)] // benchmark output

use bunko_core::jobs::{JobState, NewJob, Registry, Worker, WorkerConfig};
use bunko_core::metrics::Metrics;
use bunko_core::ports::{JobQueue, MetaStore};
use bunko_core::tasks::Tasks;
use bunko_store::sqlite::SqliteStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5000);
    println!(
        "| backend | processes × workers | jobs | enqueue jobs/s | lease+run+complete jobs/s | sequential lease+complete jobs/s |"
    );
    println!("|---|---|---|---|---|---|");
    for concurrency in [1usize, 4] {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn MetaStore> =
            Arc::new(SqliteStore::open(&dir.path().join("bunko.db")).await?);
        run("SQLite", vec![store], concurrency, n).await?;
    }
    if std::env::var_os("BUNKO_TEST_PG_URL").is_some() {
        for (processes, concurrency) in [(1usize, 1usize), (1, 4), (2, 4)] {
            let Some(db) = bunko_store::testing::PgDatabase::create().await else {
                break;
            };
            let mut stores: Vec<Arc<dyn MetaStore>> = Vec::new();
            for _ in 0..processes {
                stores.push(Arc::new(
                    bunko_store::postgres::PgStore::open(&db.url, "bench", 10).await?,
                ));
            }
            run("PostgreSQL 18", stores, concurrency, n).await?;
        }
    } else {
        println!("(PostgreSQL skipped: BUNKO_TEST_PG_URL is not set — scripts/services start)");
    }
    Ok(())
}

/// One row: `stores` stand for processes sharing the queue (each with its own worker).
async fn run(
    backend: &str,
    stores: Vec<Arc<dyn MetaStore>>,
    concurrency: usize,
    n: usize,
) -> anyhow::Result<()> {
    let store = stores[0].clone();
    let t = Instant::now();
    for i in 0..n {
        store
            .enqueue(NewJob::new(
                "default",
                "system.noop",
                serde_json::json!({ "i": i }),
            ))
            .await?;
    }
    let enqueue_rate = n as f64 / t.elapsed().as_secs_f64();

    let tasks = Tasks::new();
    let t = Instant::now();
    for s in &stores {
        let config = WorkerConfig {
            lease_ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(5),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            queues: vec![("default".into(), concurrency)],
        };
        Worker::new(
            s.clone(),
            Arc::new(Registry::builtin()),
            config,
            Arc::new(Metrics::new("bench", "bench")),
        )
        .start(&tasks);
    }
    loop {
        let done: i64 = store
            .job_counts()
            .await?
            .iter()
            .filter(|(_, s, _)| *s == JobState::Succeeded)
            .map(|c| c.2)
            .sum();
        if done as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let run_rate = n as f64 / t.elapsed().as_secs_f64();
    tasks.begin_shutdown();
    tasks.wait().await;

    // The store alone: one task leasing and completing as fast as it can.
    let m = n.min(2000);
    for i in 0..m {
        store
            .enqueue(NewJob::new(
                "raw",
                "system.noop",
                serde_json::json!({ "i": i }),
            ))
            .await?;
    }
    let t = Instant::now();
    let q: &dyn JobQueue = store.as_ref();
    while let Some(j) = q.lease("raw", "bench", Duration::from_secs(60)).await? {
        q.complete(j.id, "bench", None).await?;
    }
    let raw_rate = m as f64 / t.elapsed().as_secs_f64();
    println!(
        "| {backend} | {} × {concurrency} | {n} | {enqueue_rate:.0} | {run_rate:.0} | {raw_rate:.0} |",
        stores.len()
    );
    for s in &stores {
        s.close().await;
    }
    Ok(())
}
