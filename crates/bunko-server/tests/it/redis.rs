//! Two `bunko serve` processes sharing Redis (`redis.url`): a login lock-out earned on one is
//! in force on the other, and so is a rate limit.

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
