//! Cost of authentication + rate limiting per request, in-process through the whole HTTP
//! stack (no network): a no-op route called with a JWT, with an API key, and a public
//! route of the same shape with no credentials. Also the argon2id cost of one login, for an
//! existing and an unknown account.
//! Usage: cargo run --release -p bunko-bench --bin bench-auth -- [REQUESTS]

#![allow(clippy::print_stdout)] // benchmark output

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use bunko_core::accounts::ClientInfo;
use bunko_core::config::Config;
use bunko_core::identity::Scope;
use bunko_server::app::{Runtime, router_with};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

async fn run(
    app: &Router,
    path: &str,
    token: Option<&str>,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Body::empty())?;
        let t = Instant::now();
        let res = app.clone().oneshot(req).await?;
        let _ = axum::body::to_bytes(res.into_body(), usize::MAX).await;
        out.push(t.elapsed());
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let m_kib: Option<u32> = std::env::var("BENCH_ARGON_M_KIB")
        .ok()
        .and_then(|v| v.parse().ok());
    let t: Option<u32> = std::env::var("BENCH_ARGON_T")
        .ok()
        .and_then(|v| v.parse().ok());
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    if let Some(m) = m_kib {
        config.auth.password_memory_kib = m;
    }
    if let Some(t) = t {
        config.auth.password_iterations = t;
    }
    let cost_label = format!(
        "m={} MiB, t={}, p=1",
        config.auth.password_memory_kib / 1024,
        config.auth.password_iterations
    );
    config.limits.enabled = true;
    config.limits.classes.insert(
        "default".into(),
        bunko_core::config::RateConfig {
            per_second: 1e9,
            burst: 1_000_000_000,
        },
    );
    let rt = Runtime::start(config, false)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let (email, password) = rt
        .new_admin
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no admin"))?;
    let acc = rt.state.accounts.clone();
    let c = ClientInfo::default();
    let jwt = acc.login(&email, &password, &c).await?.access_token;
    let admin = acc.user(&email).await?;
    let (_, key) = acc
        .create_key(None, &admin, "bench", vec![Scope::Read], None, None, &c)
        .await?;
    // The same trivial handler, once behind auth + rate limit, once public (/healthz).
    let extra = Router::new().route(
        "/api/v1/bench/noop",
        get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    );
    let app = router_with(rt.state.clone(), extra);
    for (path, tok) in [
        ("/healthz", None),
        ("/api/v1/bench/noop", Some(jwt.as_str())),
        ("/api/v1/bench/noop", Some(key.as_str())),
    ] {
        run(&app, path, tok, 500).await?; // warm-up
    }
    let mut public = run(&app, "/healthz", None, n).await?;
    let mut with_jwt = run(&app, "/api/v1/bench/noop", Some(&jwt), n).await?;
    let mut with_key = run(&app, "/api/v1/bench/noop", Some(&key), n).await?;
    // Cache misses: every credential checked against the store (first use, or after a change).
    let mut miss = Vec::with_capacity(n / 10);
    for _ in 0..n / 10 {
        acc.invalidate();
        miss.extend(run(&app, "/api/v1/bench/noop", Some(&jwt), 1).await?);
    }
    let (p50, p99) = (pct(&mut public, 0.5), pct(&mut public, 0.99));
    println!(
        "| request ({n} sequential, in-process) | p50 µs | p99 µs | added p50 µs | added p99 µs |"
    );
    println!("|---|---|---|---|---|");
    println!("| public route, no credentials | {p50:.1} | {p99:.1} | — | — |");
    for (name, v) in [
        (
            "no-op route, JWT (verify + session lookup) + rate limit",
            &mut with_jwt,
        ),
        (
            "no-op route, API key (hash + key lookup) + rate limit",
            &mut with_key,
        ),
        (
            "no-op route, JWT, cache miss (session + user read from SQLite)",
            &mut miss,
        ),
    ] {
        let (a, b) = (pct(v, 0.5), pct(v, 0.99));
        println!(
            "| {name} | {a:.1} | {b:.1} | {:.1} | {:.1} |",
            a - p50,
            b - p99
        );
    }
    let mut ok = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        acc.login(&email, &password, &c).await?;
        ok.push(t.elapsed());
        let t = Instant::now();
        let ghost = format!("nobody-{}@example.org", ok.len());
        let _ = acc
            .login(
                &ghost,
                "wrong password",
                &ClientInfo {
                    ip: Some(format!("10.0.0.{}", ok.len())),
                    user_agent: None,
                },
            )
            .await;
        unknown.push(t.elapsed());
    }
    println!();
    println!("| login (argon2id {cost_label}) | median ms | max ms |");
    println!("|---|---|---|");
    let ms = |v: &mut Vec<Duration>| (pct(v, 0.5) / 1000.0, pct(v, 1.0) / 1000.0);
    let (a, b) = ms(&mut ok);
    println!("| existing account, right password | {a:.1} | {b:.1} |");
    let (a, b) = ms(&mut unknown);
    println!("| unknown account (dummy verification) | {a:.1} | {b:.1} |");
    Ok(())
}
