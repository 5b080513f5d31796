//! What sharing costs: one rate-limit decision, one lock-out check, one answer-cache read and
//! one gateway quota admission (a user rule and a key rule), in-process and through Redis (`BUNKO_TEST_REDIS_URL`, e.g. from `scripts/services start`),
//! side by side, sequential calls, p50/p99.
//! Usage: cargo run --release -p bunko-bench --bin bench-shared -- [CALLS]

#![allow(clippy::print_stdout)] // benchmark output

use bunko_core::cache::{Cache, MemoryCache};
use bunko_core::config::{QuotaConfig, QuotaScope};
use bunko_core::limits::{InProcessLimiter, InProcessThrottle, LoginThrottle, Quota, RateLimiter};
use bunko_server::quota::{Now, Quotas, Subjects};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn time<F, Fut>(n: usize, mut f: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut us = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    (pct(&mut us, 0.5), pct(&mut us, 0.99))
}

async fn row(
    name: &str,
    n: usize,
    limiter: &dyn RateLimiter,
    throttle: &dyn LoginThrottle,
    cache: &dyn Cache,
    quotas: &Quotas,
) {
    let q = Quota {
        per_second: 1e6,
        burst: 1000,
    };
    let (l50, l99) = time(n, |i| async move {
        let _ = limiter
            .check(&format!("ip:10.0.{}.{}", i % 250, i % 7), q)
            .await;
    })
    .await;
    let (t50, t99) = time(n, |i| async move {
        let _ = throttle
            .check(&format!("acct:user{}@example.org", i % 100))
            .await;
    })
    .await;
    cache
        .put("answer", vec![7u8; 2048], Duration::from_secs(600))
        .await;
    let (c50, c99) = time(n, |_| async move {
        let _ = cache.get("answer").await;
    })
    .await;
    let (q50, q99) = time(n, |i| async move {
        let who = Subjects {
            user: format!("u{}", i % 100),
            user_email: format!("user{}@example.org", i % 100),
            key: Some(format!("k{}", i % 300)),
            project: None,
        };
        let _ = quotas.admit(&who, Now::current()).await;
    })
    .await;
    println!(
        "| {name} | {l50:.1} / {l99:.1} | {t50:.1} / {t99:.1} | {c50:.1} / {c99:.1} | {q50:.1} / {q99:.1} |"
    );
}

/// A user rule and a key rule, each limiting requests, tokens and cost.
fn quota_rules() -> Vec<QuotaConfig> {
    [QuotaScope::User, QuotaScope::Key]
        .into_iter()
        .map(|scope| QuotaConfig {
            scope,
            id: "*".into(),
            requests_per_min: Some(1_000_000),
            tokens_per_min: Some(1_000_000_000),
            tokens_per_day: Some(1_000_000_000),
            cost_per_month_usd: Some(1e9),
            soft_ratio: 0.8,
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    println!(
        "| where | rate-limit check µs p50 / p99 | lock-out check µs p50 / p99 | cache read (2 KiB) µs p50 / p99 | quota admission µs p50 / p99 |"
    );
    println!("|---|---|---|---|---|");
    let (l, t, c) = (
        InProcessLimiter::default(),
        InProcessThrottle::default(),
        MemoryCache::new(1000),
    );
    row("in-process", n, &l, &t, &c, &Quotas::new(quota_rules())).await;
    match std::env::var("BUNKO_TEST_REDIS_URL") {
        Ok(url) => {
            let r = Arc::new(bunko_store::shared::RedisState::connect(&url, "bench:").await?);
            // The ledger the shared counters are seeded from (once, at the first admission).
            let dir = tempfile::tempdir()?;
            let ledger = bunko_store::sqlite::SqliteStore::open(&dir.path().join("b.db")).await?;
            let quotas = Quotas::new(quota_rules()).shared(r.clone(), Arc::new(ledger));
            row(
                "Redis 7 (loopback)",
                n,
                r.as_ref(),
                r.as_ref(),
                r.as_ref(),
                &quotas,
            )
            .await;
        }
        Err(_) => {
            println!("(Redis skipped: BUNKO_TEST_REDIS_URL is not set — scripts/services start)")
        }
    }
    Ok(())
}
