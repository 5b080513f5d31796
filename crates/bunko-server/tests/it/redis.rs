//! Two `bunko serve` processes sharing Redis (`redis.url`): a login lock-out earned on one is
//! in force on the other, and so is a rate limit; with PostgreSQL as well, a gateway quota is
//! one budget for both.

use crate::it::support::{Server, client};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockouts_and_rate_limits_hold_across_servers() {
    let Some((url, prefix)) = bunko_store::testing::redis_url() else {
        return;
    };
    let env = [
        ("BUNKO__REDIS__URL", url.as_str()),
        ("BUNKO__REDIS__PREFIX", prefix.as_str()),
        ("BUNKO__LOCAL__EMBEDDER", "none"),
        ("BUNKO__LIMITS__ENABLED", "true"),
        (
            "BUNKO__LIMITS__CLASSES__AUTH",
            "{ per_second = 0.02, burst = 10 }",
        ),
    ];
    let a = Server::start(&[], &env);
    let b = Server::start(&[], &env);
    let login = |s: &Server, pw: &str| {
        client()
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"email": "mallory@example.org", "password": pw}))
            .send()
    };
    // Five free failures, spread over both servers; the sixth locks the account everywhere.
    for i in 0..6 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = login(s, "guess").await.unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = login(&b, "guess again").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "login_locked", "{body}");

    // (The failures also locked this client address, as lock-outs count per address too.)
    // The sign-in routes' budget for this address (10 at once, then one per 50 s) is one
    // budget for both servers: 7 requests spent above, 3 left in all — not 3 on each.
    let mut passed = 0;
    for i in 0..8 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = client()
            .post(s.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": "not-a-token"}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert_eq!(r.headers()["ratelimit-remaining"], "0");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], "rate_limited", "{body}");
            continue;
        }
        assert!(r.status().is_client_error(), "{}", r.status());
        passed += 1;
    }
    assert_eq!(passed, 3, "the two servers drew on one budget");
}

/// A daily token budget of 40 (each call of the stand-in upstream costs 29 tokens): with the
/// counters in Redis, the second server's call sees the first one's tokens and the third call
/// is refused — on either server. A third server whose Redis counters are empty (another key
/// prefix: as if Redis had lost its data) seeds them from the usage ledger in PostgreSQL and
/// refuses as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_quota_is_one_budget_across_servers() {
    let Some((url, prefix)) = bunko_store::testing::redis_url() else {
        return;
    };
    let Some(db) = bunko_store::testing::PgDatabase::create().await else {
        return;
    };
    let upstream = crate::it::gateway::stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bunko.toml"),
        format!(
            "{}\n[gateway]\nledger_flush_ms = 50\n\n[[gateway.quotas]]\nscope = \"user\"\nid = \"*\"\ntokens_per_day = 40\nsoft_ratio = 0.5\n",
            crate::it::gateway::config(&upstream)
        ),
    )
    .unwrap();
    let start = |name: &str, prefix: &str| {
        let env = [
            ("BUNKO__DATABASE__URL", db.url.as_str()),
            ("BUNKO__REDIS__URL", url.as_str()),
            ("BUNKO__REDIS__PREFIX", prefix),
            (
                "BUNKO__AUTH__JWT_SECRET",
                "a-shared-signing-key-for-the-replicas-0123456789",
            ),
            ("BUNKO__LOCAL__EMBEDDER", "none"),
        ];
        Server::start_in(dir.path(), &dir.path().join(name), &[], &env)
    };
    let a = start("a", &prefix);
    let token = a.token();
    let b = start("b", &prefix);
    let ask = |s: &Server| {
        client()
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let r = ask(&a).await.unwrap();
    assert_eq!(r.status(), 200, "{}\n{}", r.text().await.unwrap(), a.logs());
    // A call's tokens are added to the shared counters in the background, after the answer.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = ask(&b).await.unwrap();
    assert_eq!(r.status(), 200);
    let warning = r.headers()["x-bunko-quota-warning"].to_str().unwrap();
    assert!(
        warning.starts_with("user:tokens_per_day:7"),
        "the second server saw the first one's 29 tokens: {warning}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for s in [&a, &b] {
        let r = ask(s).await.unwrap();
        assert_eq!(r.status(), 429, "58 of 40 tokens used");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("tokens_per_day = 40 is used up (58)"),
            "{v}"
        );
    }
    // The ledger is written every 50 ms; then a server with empty counters seeds them from it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let fresh = format!("{prefix}lost:");
    let c = start("c", &fresh);
    let r = ask(&c).await.unwrap();
    assert_eq!(r.status(), 429, "seeded from the ledger");
    assert!(
        c.logs()
            .contains("seeded the shared quota counters from the usage ledger"),
        "{}",
        c.logs()
    );
}
