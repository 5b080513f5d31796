//! Rate limits, login lock-outs and the answer cache shared through a real Redis server: two
//! `RedisState`s stand for two replicas.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bunko_core::cache::Cache;
use bunko_core::limits::{LoginThrottle, Quota, RateLimiter};
use bunko_store::shared::RedisState;
use std::time::Duration;

async fn pair() -> Option<(RedisState, RedisState)> {
    let (url, prefix) = bunko_store::testing::redis_url()?;
    Some((
        RedisState::connect(&url, &prefix).await.unwrap(),
        RedisState::connect(&url, &prefix).await.unwrap(),
    ))
}

#[tokio::test]
async fn two_replicas_share_one_rate_budget() {
    let Some((a, b)) = pair().await else { return };
    let q = Quota {
        per_second: 2.0,
        burst: 4,
    };
    let mut remaining = Vec::new();
    for i in 0..4 {
        let r = if i % 2 == 0 { &a } else { &b };
        let d = RateLimiter::check(r, "ip:203.0.113.7", q).await;
        assert!(d.allowed, "request {i}");
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, vec![3, 2, 1, 0]);
    // The fifth, on either replica, is refused until one token is back (1/rate = 500 ms).
    let d = RateLimiter::check(&a, "ip:203.0.113.7", q).await;
    assert!(!d.allowed);
    assert!(
        d.retry_after > Duration::from_millis(300) && d.retry_after <= Duration::from_millis(500),
        "{d:?}"
    );
    assert!(!RateLimiter::check(&b, "ip:203.0.113.7", q).await.allowed);
    assert!(
        RateLimiter::check(&b, "ip:198.51.100.1", q).await.allowed,
        "keys are independent"
    );
    tokio::time::sleep(Duration::from_millis(520)).await;
    assert!(
        RateLimiter::check(&b, "ip:203.0.113.7", q).await.allowed,
        "refilled"
    );
}

#[tokio::test]
async fn lockouts_follow_the_account_across_replicas() {
    let Some((a, b)) = pair().await else { return };
    let a = a.with_lockout(2, Duration::from_millis(300), Duration::from_secs(2));
    let b = b.with_lockout(2, Duration::from_millis(300), Duration::from_secs(2));
    let key = "acct:someone@example.org";
    assert_eq!(a.failure(key).await, None);
    assert_eq!(b.failure(key).await, None);
    assert!(LoginThrottle::check(&a, key).await.is_ok());
    assert_eq!(a.failure(key).await, Some(Duration::from_millis(300)));
    let wait = LoginThrottle::check(&b, key).await.unwrap_err();
    assert!(
        wait <= Duration::from_millis(300) && wait > Duration::from_millis(200),
        "{wait:?}"
    );
    assert_eq!(
        b.failure(key).await,
        Some(Duration::from_millis(600)),
        "doubles"
    );
    b.success(key).await;
    assert!(
        LoginThrottle::check(&a, key).await.is_ok(),
        "a success clears it everywhere"
    );
    assert_eq!(a.failure(key).await, None, "and the count starts over");
}

#[tokio::test]
async fn the_answer_cache_is_shared_and_expires() {
    let Some((a, b)) = pair().await else { return };
    a.put("k1", b"answer".to_vec(), Duration::from_millis(300))
        .await;
    assert_eq!(b.get("k1").await, Some(b"answer".to_vec()));
    assert_eq!(b.get("missing").await, None);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(a.get("k1").await, None);
}

#[tokio::test]
async fn a_wrong_password_fails_at_connect() {
    let Some((url, prefix)) = bunko_store::testing::redis_url() else {
        return;
    };
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').unwrap().1;
    let wrong = format!("{scheme}://:not-the-password@{host}");
    let err = RedisState::connect(&wrong, &prefix).await.err().unwrap();
    assert!(err.to_string().to_lowercase().contains("redis"), "{err}");
}

/// Redis goes away mid-flight: limits are still enforced (per process), lock-outs too, the
/// cache misses, and nothing errors.
#[tokio::test]
async fn without_redis_limits_fall_back_to_this_process() {
    let Some(redis_server) = which("redis-server") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed"
        );
        eprintln!("SKIPPED: redis-server not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(redis_server)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut state = None;
    for _ in 0..50 {
        if let Ok(s) = RedisState::connect(&url, "x:").await {
            state = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = state.expect("the private redis-server starts");
    s.put("c", b"v".to_vec(), Duration::from_secs(60)).await;
    assert_eq!(s.get("c").await, Some(b"v".to_vec()));
    child.kill().unwrap();
    child.wait().unwrap();
    let q = Quota {
        per_second: 0.01,
        burst: 2,
    };
    assert!(RateLimiter::check(&s, "k", q).await.allowed);
    assert!(RateLimiter::check(&s, "k", q).await.allowed);
    assert!(
        !RateLimiter::check(&s, "k", q).await.allowed,
        "still limited, by this process"
    );

    assert_eq!(s.get("c").await, None, "the cache misses");
    let s = s.with_lockout(1, Duration::from_secs(1), Duration::from_secs(5));
    assert_eq!(s.failure("acct:x").await, None);
    assert!(s.failure("acct:x").await.is_some());
    assert!(LoginThrottle::check(&s, "acct:x").await.is_err());
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}
