//! Job queue throughput on the embedded SQLite store, through the real worker:
//!   enqueue rate, then lease + run (`system.noop`) + complete with 1 and 4 concurrent jobs.
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
        "| workers | jobs | enqueue jobs/s | lease+run+complete jobs/s | sequential lease+complete jobs/s |"
    );
    println!("|---|---|---|---|---|");
    for concurrency in [1usize, 4] {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn MetaStore> =
            Arc::new(SqliteStore::open(&dir.path().join("bunko.db")).await?);

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
        let config = WorkerConfig {
            lease_ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(5),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            queues: vec![("default".into(), concurrency)],
        };
        let worker = Worker::new(
            store.clone(),
            Arc::new(Registry::builtin()),
            config,
            Arc::new(Metrics::new("bench", "bench")),
        );
        let t = Instant::now();
        worker.start(&tasks);
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
        println!("| {concurrency} | {n} | {enqueue_rate:.0} | {run_rate:.0} | {raw_rate:.0} |");
    }
    Ok(())
}
