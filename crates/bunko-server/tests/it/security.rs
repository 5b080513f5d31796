//! Attacks and abuse, in-process: forged tokens, disabled users, refresh replay, malformed
//! headers, injection strings, path traversal, CORS, rate-limit exactness, login lock-out.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bunko_core::auth::TokenSigner;
use bunko_core::config::{Config, RateConfig};
use bunko_core::secret::Secret;
use bunko_server::app::{AppState, Runtime, router};
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    router: Router,
    state: AppState,
    email: String,
    password: String,
    _dir: tempfile::TempDir,
}

async fn app_with(f: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.search.dictionary_cache = crate::it::support::DICT_CACHE.into();
    f(&mut config);
    let rt = Runtime::start(config, false).await.unwrap();
    let (email, password) = rt.new_admin.clone().unwrap();
    App {
        router: router(rt.state.clone()),
        state: rt.state,
        email,
        password,
        _dir: dir,
    }
}

struct Res {
    status: u16,
    headers: axum::http::HeaderMap,
    json: Value,
}

impl App {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let res = self
            .router
            .clone()
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        Res {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// The status of `GET /api/v1/auth/me` with this bearer token.
    async fn me(&self, token: &str) -> u16 {
        self.call("GET", "/api/v1/auth/me", Some(token), None)
            .await
            .status
    }

    async fn login(&self, email: &str, password: &str) -> Res {
        self.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    async fn admin_tokens(&self) -> (String, String) {
        let r = self.login(&self.email, &self.password).await;
        assert_eq!(r.status, 200, "{}", r.json);
        (
            r.json["access_token"].as_str().unwrap().into(),
            r.json["refresh_token"].as_str().unwrap().into(),
        )
    }

    fn signing_key(&self) -> String {
        std::fs::read_to_string(self.state.config.data_dir.join("jwt-secret"))
            .unwrap()
            .trim()
            .into()
    }
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_refused() {
    let a = app_with(|_| {}).await;
    let (good, _) = a.admin_tokens().await;
    assert_eq!(a.me(&good).await, 200);
    let c = claims_of(&good);
    let sub = c["sub"].as_str().unwrap().parse().unwrap();
    let sid = c["sid"].as_str().unwrap().parse().unwrap();
    let body = B64.encode(c.to_string());
    let none = format!("{}.{body}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#));
    let none_no_dot = format!("{}.{body}", B64.encode(r#"{"alg":"none"}"#));
    let wrong_key = TokenSigner::new(Secret::new("z".repeat(40)))
        .unwrap()
        .issue(sub, sid, c["iat"].as_i64().unwrap())
        .0;
    let ours = TokenSigner::new(Secret::new(a.signing_key())).unwrap();
    let expired = ours.issue(sub, sid, c["iat"].as_i64().unwrap() - 3600).0;
    let future = ours.issue(sub, sid, c["iat"].as_i64().unwrap() + 3600).0;
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut evil = c.clone();
    evil["exp"] = json!(c["exp"].as_i64().unwrap() + 86_400);
    parts[1] = B64.encode(evil.to_string());
    let tampered = parts.join(".");
    let hs512 = {
        let mut p: Vec<String> = good.split('.').map(str::to_owned).collect();
        p[0] = B64.encode(r#"{"alg":"HS512","typ":"JWT"}"#);
        p.join(".")
    };
    let unknown_session = ours
        .issue(sub, uuid::Uuid::now_v7(), c["iat"].as_i64().unwrap())
        .0;
    let unknown_user = ours
        .issue(uuid::Uuid::now_v7(), sid, c["iat"].as_i64().unwrap())
        .0;
    for (name, t) in [
        ("alg none", none),
        ("alg none without signature", none_no_dot),
        ("wrong key", wrong_key),
        ("expired", expired),
        ("not yet valid", future),
        ("tampered claims", tampered),
        ("other algorithm", hs512),
        ("unknown session", unknown_session),
        ("unknown user", unknown_user),
    ] {
        let r = a.call("GET", "/api/v1/auth/me", Some(&t), None).await;
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (401, Some("invalid_token")),
            "{name}: {}",
            r.json
        );
    }
}

#[tokio::test]
async fn malformed_authorization_headers() {
    let a = app_with(|_| {}).await;
    let long = format!("Bearer {}", "a".repeat(5000));
    for h in [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Basic YWRtaW46YWRtaW4=",
        "Token abc",
        "bearer",
        long.as_str(),
        "Bearer bko_key_",
        "Bearer \u{7f}",
    ] {
        let req = Request::get("/api/v1/auth/me")
            .header("authorization", h)
            .body(Body::empty());
        let Ok(req) = req else { continue };
        let res = a.router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 401, "{h:?}");
    }
    let req = Request::get("/api/v1/auth/me")
        .header(
            "authorization",
            header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(a.router.clone().oneshot(req).await.unwrap().status(), 401);
}

#[tokio::test]
async fn disabling_a_user_stops_their_tokens_and_keys_at_once() {
    let a = app_with(|_| {}).await;
    let (admin, _) = a.admin_tokens().await;
    let r = a
        .call(
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some(json!({"email": "u@x.org", "password": "a long enough password"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = a.login("u@x.org", "a long enough password").await;
    let user_token = r.json["access_token"].as_str().unwrap().to_owned();
    let refresh = r.json["refresh_token"].as_str().unwrap().to_owned();
    let r = a
        .call(
            "POST",
            "/api/v1/keys",
            Some(&user_token),
            Some(json!({"name": "k", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let key = r.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(a.me(&key).await, 200);
    let r = a
        .call(
            "PATCH",
            "/api/v1/users/u@x.org",
            Some(&admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    for t in [&user_token, &key] {
        let r = a.call("GET", "/api/v1/auth/me", Some(t), None).await;
        assert_eq!(r.status, 401, "{}", r.json);
    }
    let r = a
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = a.login("u@x.org", "a long enough password").await;
    assert_eq!(
        r.json["code"], "invalid_credentials",
        "a disabled user cannot log in"
    );
    // Re-enabling brings the key back (it was never revoked) but not the ended session.
    a.call(
        "PATCH",
        "/api/v1/users/u@x.org",
        Some(&admin),
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(a.me(&key).await, 200);
    assert_eq!(a.me(&user_token).await, 401);
    // Revoking the key stops it.
    let id = a.call("GET", "/api/v1/keys", Some(&admin), None).await.json["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        a.call("DELETE", &format!("/api/v1/keys/{id}"), Some(&admin), None)
            .await
            .status,
        204
    );
    assert_eq!(a.me(&key).await, 401);
    assert_eq!(
        a.call(
            "PATCH",
            "/api/v1/users/u@x.org",
            Some(&admin),
            Some(json!({"role": "root"}))
        )
        .await
        .status,
        422
    );
}

#[tokio::test]
async fn refresh_rotation_and_replay() {
    let a = app_with(|_| {}).await;
    let (access, r1) = a.admin_tokens().await;
    let r = a
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!(r.status, 200);
    let (access2, r2) = (
        r.json["access_token"].as_str().unwrap().to_owned(),
        r.json["refresh_token"].as_str().unwrap().to_owned(),
    );
    assert_ne!(r1, r2);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 900);
    // Replaying the first token: the whole family dies, including the newest tokens.
    let r = a
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let r = a
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": r2})),
        )
        .await;
    assert_eq!(r.status, 401);
    for t in [&access, &access2] {
        assert_eq!(a.me(t).await, 401);
    }
    let (admin, _) = a.admin_tokens().await;
    let audit = a
        .call(
            "GET",
            "/api/v1/audit?event=refresh.reuse",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        audit.json["items"].as_array().unwrap().len(),
        1,
        "{}",
        audit.json
    );
    // Logout ends the session.
    let (t, rt) = a.admin_tokens().await;
    assert_eq!(
        a.call("POST", "/api/v1/auth/logout", Some(&t), None)
            .await
            .status,
        204
    );
    assert_eq!(a.me(&t).await, 401);
    assert_eq!(
        a.call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": rt}))
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn login_does_not_reveal_accounts_and_locks_out() {
    let a = app_with(|c| c.limits.enabled = false).await;
    let real = a.login(&a.email, "wrong password here").await;
    let ghost = a.login("nobody@nowhere.org", "wrong password here").await;
    assert_eq!(
        (real.status, &real.json["code"], &real.json["detail"]),
        (ghost.status, &ghost.json["code"], &ghost.json["detail"])
    );
    assert_eq!(real.status, 401);
    // Five failures are free (two used above for this address); the next ones lock.
    for _ in 0..3 {
        assert_eq!(a.login(&a.email, "wrong password here").await.status, 401);
    }
    let locked = a.login(&a.email, "wrong password here").await;
    assert_eq!(
        (locked.status, locked.json["code"].as_str()),
        (401, Some("invalid_credentials")),
        "this failure starts the lock"
    );
    let r = a.login(&a.email, &a.password).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (429, Some("login_locked")),
        "even the right password waits"
    );
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let ghost = a.login("nobody@nowhere.org", "x").await;
    assert_eq!(
        ghost.status, 429,
        "the address is locked too, whatever the account"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = a.login(&a.email, &a.password).await;
    assert_eq!(r.status, 200, "the lock expires: {}", r.json);
    let token = r.json["access_token"].as_str().unwrap().to_owned();
    let audit = a
        .call(
            "GET",
            "/api/v1/audit?event=login.lockout",
            Some(&token),
            None,
        )
        .await;
    assert!(
        !audit.json["items"].as_array().unwrap().is_empty(),
        "{}",
        audit.json
    );
    let fails = a
        .call(
            "GET",
            "/api/v1/audit?event=login&outcome=failure",
            Some(&token),
            None,
        )
        .await;
    assert!(fails.json["items"].as_array().unwrap().len() >= 5);
}

#[tokio::test]
async fn rate_limits_are_exact() {
    let a = app_with(|c| {
        c.limits.classes.insert(
            "default".into(),
            RateConfig {
                per_second: 0.01,
                burst: 5,
            },
        );
    })
    .await;
    let (t, _) = a.admin_tokens().await;
    for i in 0..5 {
        let r = a.call("GET", "/api/v1/auth/me", Some(&t), None).await;
        assert_eq!(r.status, 200, "request {} of the burst", i + 1);
        assert_eq!(r.headers["ratelimit-limit"], "5");
        assert_eq!(
            r.headers["ratelimit-remaining"],
            (4 - i).to_string().as_str()
        );
    }
    let r = a.call("GET", "/api/v1/auth/me", Some(&t), None).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((90..=101).contains(&retry), "{retry}");
    assert_eq!(
        a.call("GET", "/healthz", None, None).await.status,
        200,
        "probes are never limited"
    );
    let m = a.call("GET", "/metrics", None, None).await;
    let _ = m;
    let text = String::from_utf8(
        axum::body::to_bytes(
            a.router
                .clone()
                .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
                .await
                .unwrap()
                .into_body(),
            usize::MAX,
        )
        .await
        .unwrap()
        .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("bunko_ratelimit_rejections_total{class=\"default\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn injection_strings_and_traversal_are_just_data() {
    let a = app_with(|c| c.limits.enabled = false).await;
    let (t, _) = a.admin_tokens().await;
    let nasty = [
        "'; DROP TABLE projects; --",
        "\" OR 1=1 --",
        "Robert'); DELETE FROM users;--",
        "{\"$gt\": \"\"}",
        "../../../../etc/passwd",
        "..\\..\\windows\\system32",
        "%2e%2e%2f%2e%2e%2f",
        "<script>alert(1)</script>",
        "\u{0000}nul",
        "名前に'引用符\"",
    ];
    for n in nasty {
        let r = a
            .call(
                "POST",
                "/api/v1/projects",
                Some(&t),
                Some(json!({"name": n, "description": n})),
            )
            .await;
        assert!(
            r.status == 201 || r.status == 409 || r.status == 422,
            "{n:?}: {} {}",
            r.status,
            r.json
        );
        if r.status == 201 {
            let slug = r.json["slug"].as_str().unwrap();
            assert!(
                slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{slug}"
            );
            assert_eq!(r.json["name"], n.trim(), "stored as given");
        }
        let r = a
            .call(
                "POST",
                "/api/v1/users",
                Some(&t),
                Some(json!({"email": format!("{n}@x.org"), "display_name": n})),
            )
            .await;
        assert!(r.status < 500, "{n:?}: {}", r.json);
        let r = a.login(n, n).await;
        assert!(matches!(r.status, 401 | 422 | 429), "{n:?}: {}", r.json);
        let r = a
            .call(
                "POST",
                "/api/v1/keys",
                Some(&t),
                Some(json!({"name": n, "scopes": [n]})),
            )
            .await;
        assert_eq!(r.status, 422, "{n:?}");
    }
    for path in [
        "/api/v1/projects/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/projects/%27%20OR%201%3D1",
        "/api/v1/users/%27%20OR%20%271%27%3D%271",
        "/docs/..%2F..%2FCargo.toml",
        "/docs/../../etc/passwd",
    ] {
        let r = a.call("GET", path, Some(&t), None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.json);
    }
    let list = a
        .call("GET", "/api/v1/projects?limit=100", Some(&t), None)
        .await;
    assert!(
        list.json["items"].as_array().unwrap().len() >= 5,
        "tables intact"
    );
    assert_eq!(
        a.call("GET", "/api/v1/users", Some(&t), None).await.status,
        200
    );
}

#[tokio::test]
async fn cors_only_for_allowed_origins_and_security_headers_everywhere() {
    let a =
        app_with(|c| c.server.cors_allowed_origins = vec!["https://app.example.org".into()]).await;
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/api/v1/projects")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let ok = a
        .router
        .clone()
        .oneshot(preflight("https://app.example.org"))
        .await
        .unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.org"
    );
    let evil = a
        .router
        .clone()
        .oneshot(preflight("https://evil.example.com"))
        .await
        .unwrap();
    assert!(
        !evil.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        evil.headers()
    );
    let off = app_with(|_| {}).await;
    let r = off
        .router
        .clone()
        .oneshot(preflight("https://app.example.org"))
        .await
        .unwrap();
    assert!(
        !r.headers().contains_key("access-control-allow-origin"),
        "CORS is off by default"
    );
    for (path, status) in [("/healthz", 200), ("/nope", 404), ("/api/v1/users", 401)] {
        let r = a.call("GET", path, None, None).await;
        assert_eq!(r.status, status);
        for h in [
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
            "permissions-policy",
            "cross-origin-opener-policy",
            "content-security-policy",
        ] {
            assert!(r.headers.contains_key(h), "{path} lacks {h}");
        }
        assert!(
            r.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}

#[tokio::test]
async fn failed_logins_do_not_flush_the_credential_cache() {
    let a = app_with(|c| c.limits.enabled = false).await;
    let (token, _) = a.admin_tokens().await;
    let acc = &a.state.accounts;
    assert!(acc.authenticate(&token).await.is_ok(), "now cached");
    // Change the user behind the server's back: only the cache still says yes.
    let admin = acc.user(&a.email).await.unwrap();
    a.state
        .store
        .set_user_status(admin.id, bunko_core::identity::UserStatus::Disabled)
        .await
        .unwrap();
    let _ = a.login("attacker@example.org", "wrong password").await;
    let _ = a
        .call("GET", "/api/v1/users", Some("bko_key_bogus"), None)
        .await;
    assert!(
        acc.authenticate(&token).await.is_ok(),
        "a failed login or bad key must not flush the cache"
    );
    // Changes made through the service flush it at once.
    acc.invalidate();
    assert!(
        acc.authenticate(&token).await.is_err(),
        "after invalidation the store is asked again"
    );
}
