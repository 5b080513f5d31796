//! Rate limits, login lock-outs and the answer cache shared through a real Redis server: two
//! `RedisState`s stand for two replicas.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bunko_core::cache::Cache;
use bunko_core::limits::{
    LoginThrottle, Quota, QuotaAdmission, QuotaCounters, QuotaSubject, QuotaUsage, QuotaWindows,
    RateLimiter,
};
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

fn windows(minute: i64) -> QuotaWindows {
    QuotaWindows {
        minute,
        day: 20_000,
        month: 671,
        now_ms: 20_000 * 86_400_000,
        day_end_ms: 20_001 * 86_400_000,
        month_end_ms: 20_010 * 86_400_000,
    }
}

/// Gateway quota counters: nothing is decided before the day is seeded from the ledger; the
/// seed only ever raises a counter; both replicas count against one budget, atomically (a
/// refused call counts nothing); a new minute resets the request rate but not the day.
#[tokio::test]
async fn two_replicas_share_the_quota_counters() {
    let Some((a, b)) = pair().await else { return };
    let w = windows(28_800_000);
    let ada = QuotaSubject {
        id: "user:ada".into(),
        limits: [Some(4.0), None, Some(100.0), Some(1.0)],
    };
    let key = QuotaSubject {
        id: "key:k1".into(),
        limits: [None, None, None, None],
    };
    let both = [ada.clone(), key.clone()];
    assert_eq!(a.admit(&both, w).await, Some(QuotaAdmission::Unseeded));
    // The ledger says ada used 60 tokens today and $0.25 this month.
    a.seed(w, &[("user:ada".into(), 60, 0.25)]).await;
    // A replica seeding later with older figures lowers nothing.
    b.seed(w, &[("user:ada".into(), 10, 0.0)]).await;
    let first = a.admit(&both, w).await.unwrap();
    let used = |requests, day_tokens, month_cost| QuotaUsage {
        requests,
        minute_tokens: 0,
        day_tokens,
        month_cost,
    };
    assert_eq!(
        first,
        QuotaAdmission::Admitted(vec![used(0, 60, 0.25), used(0, 0, 0.0)])
    );
    // Four requests a minute between the two replicas, then refused on either.
    for (i, r) in [&b, &a, &b].into_iter().enumerate() {
        let d = r.admit(&both, w).await.unwrap();
        assert!(
            matches!(d, QuotaAdmission::Admitted(_)),
            "request {i}: {d:?}"
        );
    }
    for r in [&a, &b] {
        assert_eq!(
            r.admit(&both, w).await.unwrap(),
            QuotaAdmission::Refused(vec![used(4, 60, 0.25), used(4, 0, 0.0)]),
            "the refused calls counted nothing"
        );
    }
    // The key alone (no limits) still passes; a call's tokens and cost land on every subject.
    assert!(matches!(
        b.admit(std::slice::from_ref(&key), w).await,
        Some(QuotaAdmission::Admitted(_))
    ));
    a.charge(&["user:ada".into(), "key:k1".into()], w, 45, 0.5)
        .await;
    // Next minute: the rate is fresh, but the day's 105 tokens are over the budget of 100.
    let next = windows(w.minute + 1);
    assert_eq!(
        b.admit(std::slice::from_ref(&ada), next).await,
        Some(QuotaAdmission::Refused(vec![used(0, 105, 0.75)]))
    );
    let QuotaAdmission::Admitted(k) = a.admit(std::slice::from_ref(&key), next).await.unwrap()
    else {
        panic!("the key has no limits")
    };
    assert_eq!(k, vec![used(0, 45, 0.5)]);
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
    let (mut child, port) = private_redis(&redis_server, dir.path(), &["--port"]);
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

/// `rediss://`: a real redis-server serving TLS only, its certificate signed by a private CA
/// (made with the `openssl` tool). Trusting that CA (`redis.ca_file`) connects and shares
/// state; without it — the system's roots — the connection is refused at start.
#[tokio::test]
async fn tls_with_a_private_certificate_authority() {
    let (Some(redis_server), Some(openssl)) = (which("redis-server"), which("openssl")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server and openssl are needed"
        );
        eprintln!("SKIPPED: redis-server or openssl not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec[..],
        &[
            "-days",
            "2",
            "-subj",
            "/CN=bunko test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec[..],
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
    ]
    .concat());
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let (mut child, port) = private_redis(
        &redis_server,
        d,
        &[
            "--tls-cert-file",
            "cert.pem",
            "--tls-key-file",
            "key.pem",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--port",
            "0",
            "--tls-port",
        ],
    );
    let url = format!("rediss://localhost:{port}/0");
    let ca = std::fs::read(d.join("ca.pem")).unwrap();
    let mut pair = None;
    for _ in 0..50 {
        if let Ok(a) = RedisState::connect_with_ca(&url, "tls:", Some(ca.clone())).await {
            let b = RedisState::connect_with_ca(&url, "tls:", Some(ca.clone()))
                .await
                .unwrap();
            pair = Some((a, b));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b) = pair.expect("the TLS redis-server accepts a client trusting its CA");
    a.put("k", b"over tls".to_vec(), Duration::from_secs(60))
        .await;
    assert_eq!(b.get("k").await, Some(b"over tls".to_vec()));
    let err = RedisState::connect(&url, "tls:").await.err();
    child.kill().unwrap();
    child.wait().unwrap();
    let err = err.expect("a certificate from an unknown authority is refused");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

/// A redis-server of the test's own in `dir`, without persistence, listening on a free
/// loopback port given as the value of the last of `args` (`--port`, or `--tls-port`).
fn private_redis(
    bin: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> (std::process::Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(bin)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(args)
        .arg(port.to_string())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}
