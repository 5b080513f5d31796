//! The HTTP contract, in-process: problem+json for every error, auth by default, bounded
//! metric labels, request ids and trace context, panics contained.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use bunko_core::config::Config;
use bunko_server::app::{AppState, Runtime, router_with};
use serde_json::Value;
use tower::ServiceExt;

struct App {
    router: Router,
    state: AppState,
    token: String,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    app_with_embedder("none").await
}

async fn app_with_embedder(embedder: &str) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.search.dictionary_cache = crate::it::support::DICT_CACHE.into();
    config.local.embedder = embedder.to_owned();
    config.server.body_limit_bytes = 4096;
    config.server.request_timeout_secs = 1;
    let rt = Runtime::start(config, false).await.unwrap();
    let (email, password) = rt.new_admin.clone().unwrap();
    let token = rt
        .state
        .accounts
        .login(&email, &password, &Default::default())
        .await
        .unwrap()
        .access_token;
    let extra = Router::new()
        .route(
            "/api/v1/test/panic",
            get(|| async {
                let fail = true;
                if fail {
                    panic!("secret internals: /etc/shadow");
                }
                "unreachable"
            }),
        )
        .route(
            "/api/v1/test/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                "late"
            }),
        );
    App {
        router: router_with(rt.state.clone(), extra),
        state: rt.state,
        token,
        _dir: dir,
    }
}

struct Res {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Res {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the problem+json shape and returns the code.
    fn problem(&self, status: u16) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let v = self.json();
        for k in ["type", "title", "status", "detail", "code", "request_id"] {
            assert!(v.get(k).is_some(), "problem lacks {k}: {v}");
        }
        assert_eq!(v["status"], status);
        assert_eq!(
            v["request_id"].as_str().unwrap(),
            self.headers["x-request-id"].to_str().unwrap()
        );
        v["code"].as_str().unwrap().to_owned()
    }
}

impl App {
    async fn send(&self, req: Request<Body>) -> Res {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Res {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Res {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    async fn get_authed(&self, path: &str) -> Res {
        self.send(
            Request::get(path)
                .header("authorization", format!("Bearer {}", self.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post_json(&self, path: &str, ct: Option<&str>, body: impl Into<Body>) -> Res {
        let mut b = Request::post(path).header("authorization", format!("Bearer {}", self.token));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        self.send(b.body(body.into()).unwrap()).await
    }
}

#[tokio::test]
async fn public_routes_answer_without_credentials() {
    let a = app().await;
    assert_eq!(a.get("/healthz").await.json()["status"], "ok");
    let r = a.get("/readyz").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["components"]["database"]["status"], "up");
    assert_eq!(v["components"]["worker"]["status"], "disabled");
    let m = a.get("/metrics").await;
    assert!(
        m.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(String::from_utf8_lossy(&m.body).contains("bunko_build_info{"));
    assert_eq!(
        a.get("/openapi.json").await.json()["openapi"]
            .as_str()
            .unwrap()
            .chars()
            .next(),
        Some('3')
    );
    let docs = a.get("/docs").await;
    assert_eq!(docs.status, 200);
    assert!(String::from_utf8_lossy(&docs.body).contains("/docs/docs.js"));
    assert_eq!(a.get("/docs/docs.js").await.status, 200);
    assert_eq!(a.get("/").await.status, StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn docs_load_nothing_from_other_hosts() {
    let a = app().await;
    for path in ["/docs", "/docs/docs.js", "/docs/docs.css"] {
        let body = String::from_utf8(a.get(path).await.body).unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path} loads remote assets"
        );
    }
}

#[tokio::test]
async fn every_documented_private_route_denies_without_credentials() {
    let a = app().await;
    let spec = a.get("/openapi.json").await.json();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "0190a0a0-0000-7000-8000-000000000000")
                .replace("{project}", "x")
                .replace("{user}", "x");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let r = a.send(req).await;
            if bunko_server::routes::is_public(path) {
                assert_ne!(r.status, 401, "{method} {path} is public");
            } else {
                assert_eq!(r.problem(401), "unauthenticated", "{method} {path}");
                assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} private operations documented");
}

#[tokio::test]
async fn bad_credentials_are_invalid_token() {
    let a = app().await;
    for auth in [
        "Bearer nope",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "bko_admin_x",
    ] {
        let r = a
            .send(
                Request::get("/api/v1/jobs")
                    .header("authorization", auth)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.problem(401), "invalid_token", "{auth}");
    }
    assert_eq!(a.get_authed("/api/v1/jobs").await.status, 200);
}

#[tokio::test]
async fn error_statuses_are_problems_with_stable_codes() {
    let a = app().await;
    assert_eq!(
        a.get("/no/such/route").await.problem(404),
        "route_not_found"
    );
    let r = a
        .send(Request::delete("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.problem(405), "method_not_allowed");
    let r = a
        .post_json("/api/v1/projects", Some("application/json"), "{\"name\": ")
        .await;
    assert_eq!(r.problem(400), "malformed_json");
    let r = a
        .post_json("/api/v1/projects", Some("text/plain"), "{\"name\":\"x\"}")
        .await;
    assert_eq!(r.problem(415), "unsupported_media_type");
    let r = a
        .post_json("/api/v1/projects", None, "{\"name\":\"x\"}")
        .await;
    assert_eq!(r.problem(415), "unsupported_media_type");
    let r = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": 42}",
        )
        .await;
    assert_eq!(r.problem(422), "invalid_body");
    assert!(r.json()["detail"].as_str().unwrap().contains("name"));
    let r = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"nmae\": \"x\"}",
        )
        .await;
    assert_eq!(r.problem(422), "invalid_body");
    let r = a
        .post_json("/api/v1/projects", Some("application/json"), "[1,2]")
        .await;
    assert_eq!(r.problem(422), "invalid_body");
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(10_000));
    let r = a
        .post_json("/api/v1/projects", Some("application/json"), big)
        .await;
    assert_eq!(r.problem(413), "payload_too_large");
    let r = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": \"   \"}",
        )
        .await;
    assert_eq!(r.problem(422), "invalid_input");
    let r = a.get_authed("/api/v1/jobs/not-a-uuid").await;
    assert_eq!(r.problem(404), "not_found");
    let r = a
        .get_authed("/api/v1/jobs/0190a0a0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(r.problem(404), "not_found");
    let r = a.get_authed("/api/v1/projects/nope").await;
    assert_eq!(r.problem(404), "not_found");
    let r = a.get_authed("/api/v1/jobs?limit=0").await;
    assert_eq!(r.problem(400), "invalid_query");
    let r = a.get_authed("/api/v1/jobs?limit=many").await;
    assert_eq!(r.problem(400), "invalid_query");
    let r = a.get_authed("/api/v1/jobs?state=exploded").await;
    assert_eq!(r.problem(400), "invalid_query");
    let r = a.get_authed("/api/v1/jobs?cursor=garbage").await;
    assert_eq!(r.problem(400), "invalid_query");
    let r = a
        .post_json(
            "/api/v1/jobs",
            Some("application/json"),
            "{\"kind\": \"rm.rf\"}",
        )
        .await;
    assert_eq!(r.problem(422), "unknown_job_kind");
    let r = a
        .post_json(
            "/api/v1/jobs",
            Some("application/json"),
            "{\"kind\": \"system.noop\", \"max_attempts\": 0}",
        )
        .await;
    assert_eq!(r.problem(422), "invalid_input");
    let r = a
        .post_json(
            "/api/v1/jobs/0190a0a0-0000-7000-8000-000000000000/retry",
            None,
            "",
        )
        .await;
    assert_eq!(r.problem(404), "not_found");
    let r = a.get_authed("/api/v1/test/slow").await;
    assert_eq!(r.problem(408), "request_timeout");
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_serving_goes_on() {
    let a = app().await;
    let r = a.get_authed("/api/v1/test/panic").await;
    assert_eq!(r.problem(500), "internal");
    assert!(
        !String::from_utf8_lossy(&r.body).contains("shadow"),
        "internals leaked"
    );
    assert_eq!(a.get("/healthz").await.status, 200);
    assert_eq!(a.get_authed("/api/v1/jobs").await.status, 200);
}

#[tokio::test]
async fn request_id_and_trace_context() {
    let a = app().await;
    let r = a
        .send(
            Request::get("/healthz")
                .header("x-request-id", "my-req-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "my-req-42");
    let r = a
        .send(
            Request::get("/healthz")
                .header("x-request-id", "bad id with spaces")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_ne!(r.headers["x-request-id"], "bad id with spaces");
    assert_eq!(r.headers["x-request-id"].len(), 36);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = a
        .send(
            Request::get("/healthz")
                .header("traceparent", tp)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let out = r.headers["traceparent"].to_str().unwrap();
    assert!(
        out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && !out.contains("00f067aa0ba902b7"),
        "{out}"
    );
    let r = a.get("/healthz").await;
    assert_eq!(r.headers["traceparent"].len(), 55);
}

#[tokio::test]
async fn metric_labels_never_carry_request_data() {
    let a = app().await;
    a.get("/secret-path-abc123?token=zzz").await;
    a.get_authed("/api/v1/jobs/0190a0a0-1111-7000-8000-000000000000")
        .await;
    a.get_authed("/api/v1/projects/planted-slug-xyz").await;
    a.send(
        Request::builder()
            .method("BREW")
            .uri("/healthz")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let text = String::from_utf8(a.get("/metrics").await.body).unwrap();
    for leaked in [
        "secret-path-abc123",
        "zzz",
        "0190a0a0-1111",
        "planted-slug-xyz",
        "BREW",
    ] {
        assert!(!text.contains(leaked), "{leaked} leaked into metrics");
    }
    assert!(text.contains("route=\"/api/v1/jobs/{id}\""), "{text}");
    assert!(text.contains("route=\"/api/v1/projects/{project}\""));
    assert!(text.contains("route=\"unmatched\""));
    assert!(text.contains("method=\"other\""));
}

#[tokio::test]
async fn job_queue_depth_is_exported_per_queue_and_state() {
    let a = app().await;
    for _ in 0..3 {
        let r = a
            .post_json(
                "/api/v1/jobs",
                Some("application/json"),
                "{\"kind\": \"system.noop\"}",
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let text = String::from_utf8(a.get("/metrics").await.body).unwrap();
    assert!(
        text.contains("bunko_jobs{queue=\"default\",state=\"queued\"} 3"),
        "{text}"
    );
    assert!(text.contains("bunko_jobs{queue=\"default\",state=\"dead\"} 0"));
}

#[tokio::test]
async fn projects_by_id_or_slug_with_pagination_and_conflicts() {
    let a = app().await;
    let r = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": \"Labour Law 2026\", \"description\": \"労働法\"}",
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let p = r.json();
    assert_eq!(p["slug"], "labour-law-2026");
    let by_slug = a
        .get_authed("/api/v1/projects/labour-law-2026")
        .await
        .json();
    let by_id = a
        .get_authed(&format!("/api/v1/projects/{}", p["id"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(by_slug, by_id);
    assert_eq!(by_id["description"], "労働法");
    let r = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": \"labour law 2026\"}",
        )
        .await;
    assert_eq!(r.problem(409), "conflict");
    let r = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": \"判例集\"}",
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.json()["slug"].as_str().unwrap().starts_with("project-"));
    for i in 0..3 {
        a.post_json(
            "/api/v1/projects",
            Some("application/json"),
            format!("{{\"name\": \"p{i}\"}}"),
        )
        .await;
    }
    let page1 = a.get_authed("/api/v1/projects?limit=2").await.json();
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = a
        .get_authed(&format!("/api/v1/projects?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let a = app().await;
    let r = a
        .send(
            Request::get("/openapi.json")
                .header("accept-encoding", "gzip")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.headers[header::CONTENT_ENCODING], "gzip");
    let r = a.get("/openapi.json").await;
    assert!(!r.headers.contains_key(header::CONTENT_ENCODING));
}

#[tokio::test]
async fn readiness_is_503_while_draining() {
    let a = app().await;
    a.state.set_draining();
    let r = a.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["components"]["server"]["status"], "draining");
    assert_eq!(
        a.get("/healthz").await.status,
        200,
        "still alive while draining"
    );
}

#[tokio::test]
async fn every_error_code_is_documented() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/api/errors.md"
    ))
    .unwrap();
    for code in bunko_core::Code::ALL {
        let row = format!("| `{}` | {} |", code.as_str(), code.status());
        assert!(
            doc.contains(&row),
            "docs/api/errors.md lacks the row starting {row}"
        );
    }
}

/// The real embedder (multilingual-e5-small): an English query finds a Japanese chunk through
/// the vector half, which keyword search alone cannot; hybrid carries both ranks.
#[tokio::test]
async fn hybrid_search_fuses_keyword_and_vector_halves() {
    if !crate::it::support::model_installed("multilingual-e5-small") {
        return;
    }
    let a = app_with_embedder("multilingual-e5-small").await;
    let p = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": \"Laws\"}",
        )
        .await
        .json();
    let pid = p["id"].as_str().unwrap().to_owned();
    let chunks = [
        (
            "j1",
            "労働基準法",
            "使用者は、労働時間が六時間を超える場合には少なくとも四十五分の休憩時間を労働時間の途中に与えなければならない。",
        ),
        (
            "e1",
            "Cooking",
            "Whisk the eggs with sugar, then bake the cake for twenty minutes.",
        ),
        (
            "e2",
            "Rest breaks",
            "Employers must give workers a rest break during the working day.",
        ),
    ];
    let ready = a.state.vector.get().unwrap();
    for (id, title, text) in chunks {
        a.state.keyword.upsert(id, &pid, title, text).unwrap();
        let e = ready.encoder.embed(
            &[&bunko_server::embedder::passage_text(title, text)],
            bunko_embed::Role::Passage,
        );
        ready.index.upsert(&pid, id, e.get(0)).unwrap();
    }
    a.state.keyword.commit().unwrap();
    let v = a
        .get_authed(
            "/api/v1/search?q=rest%20break%20during%20working%20hours&project=laws&mode=vector",
        )
        .await
        .json();
    assert_eq!(v["legs"]["vector"]["status"], "ok", "{v}");
    assert_eq!(v["legs"]["keyword"]["status"], "skipped");
    let ids: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], "e1", "the cake recipe is least related: {v}");
    assert!(
        ids[..2].contains(&"j1"),
        "the Japanese statute is found from English: {v}"
    );
    assert_eq!(
        v["results"][0]["title"].as_str().map(|t| !t.is_empty()),
        Some(true)
    );

    let v = a
        .get_authed("/api/v1/search?q=%E4%BC%91%E6%86%A9%E6%99%82%E9%96%93&project=laws")
        .await
        .json();
    assert_eq!(v["mode"], "hybrid");
    assert_eq!(v["legs"]["keyword"]["hits"], 1, "{v}");
    assert_eq!(v["legs"]["vector"]["hits"], 3, "{v}");
    let top = &v["results"][0];
    assert_eq!(top["id"], "j1", "{v}");
    assert_eq!(top["keyword_rank"], 1);
    assert_eq!(top["vector_rank"], 1);
    let fused = top["fused_score"].as_f64().unwrap();
    assert!(
        (fused - 2.0 / 61.0).abs() < 1e-9,
        "rank 1 in both halves: {fused}"
    );
    let only_vector = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "e2")
        .unwrap();
    assert!(only_vector["keyword_rank"].is_null() && only_vector["vector_rank"].is_number());
    assert!(v["warnings"].as_array().unwrap().is_empty(), "{v}");

    // A 10,000-character query: cut, with a warning, not refused.
    let long = "rest%20".repeat(2000);
    let v = a
        .get_authed(&format!("/api/v1/search?q={long}&project=laws&mode=vector"))
        .await
        .json();
    assert!(!v["warnings"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["legs"]["vector"]["status"], "ok");
}

#[tokio::test]
async fn search_finds_only_visible_projects_and_reports_its_legs() {
    let a = app().await;
    let p = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": \"Laws\"}",
        )
        .await
        .json();
    let q = a
        .post_json(
            "/api/v1/projects",
            Some("application/json"),
            "{\"name\": \"Other\"}",
        )
        .await
        .json();
    let (pid, qid) = (
        p["id"].as_str().unwrap().to_owned(),
        q["id"].as_str().unwrap().to_owned(),
    );
    let ix = &a.state.keyword;
    ix.upsert(
        "c1",
        &pid,
        "労働基準法",
        "使用者は、労働者に休憩時間を与えなければならない。",
    )
    .unwrap();
    ix.upsert(
        "c2",
        &pid,
        "Working hours",
        "Employers shall give workers rest periods.",
    )
    .unwrap();
    ix.upsert("c3", &qid, "休憩", "別プロジェクトの休憩時間")
        .unwrap();
    ix.commit().unwrap();
    let r = a
        .get_authed("/api/v1/search?q=%E4%BC%91%E6%86%A9%E6%99%82%E9%96%93&project=laws")
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let ids: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["c1"], "{v}");
    assert!(v["results"][0]["snippet"].as_str().unwrap().contains("<b>"));
    assert_eq!(v["legs"]["keyword"]["hits"], 1);
    assert_eq!(
        v["legs"]["vector"]["status"], "unavailable",
        "an empty half is reported"
    );
    assert!(
        v["legs"]["vector"]["reason"]
            .as_str()
            .unwrap()
            .contains("local.embedder"),
        "{v}"
    );
    assert!(!v["warnings"].as_array().unwrap().is_empty());
    // Without a project: every project the caller may search (the admin sees both).
    let v = a
        .get_authed("/api/v1/search?q=%E4%BC%91%E6%86%A9&mode=keyword")
        .await
        .json();
    assert_eq!(v["results"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["warnings"].as_array().unwrap().is_empty(),
        "keyword mode asked for: no warning"
    );
    let v = a
        .post_json(
            "/api/v1/search",
            Some("application/json"),
            "{\"q\": \"rest periods\", \"project\": \"laws\"}",
        )
        .await
        .json();
    assert_eq!(v["results"][0]["id"], "c2", "{v}");
    // Bad input.
    assert_eq!(
        a.get_authed("/api/v1/search?q=%20%20").await.problem(400),
        "query_empty"
    );
    assert_eq!(
        a.get_authed("/api/v1/search").await.problem(400),
        "query_empty"
    );
    assert_eq!(
        a.get_authed("/api/v1/search?q=x&k=0").await.problem(400),
        "invalid_query"
    );
    assert_eq!(
        a.get_authed("/api/v1/search?q=x&k=101").await.problem(400),
        "invalid_query"
    );
    assert_eq!(
        a.get_authed("/api/v1/search?q=x&mode=psychic")
            .await
            .problem(400),
        "invalid_query"
    );
    assert_eq!(
        a.get_authed("/api/v1/search?q=x&project=nope")
            .await
            .problem(404),
        "not_found"
    );
    for odd in [
        "%21%21%21",
        "%F0%9F%8E%89%F0%9F%8E%89",
        "%1B%5B31m",
        "Debian%20%E3%81%AE%20package",
    ] {
        let r = a.get_authed(&format!("/api/v1/search?q={odd}")).await;
        assert_eq!(r.status, 200, "{odd}: {}", String::from_utf8_lossy(&r.body));
    }
    let long = "%E6%A4%9C".repeat(2_000);
    let v = a
        .get_authed(&format!("/api/v1/search?q={long}"))
        .await
        .json();
    assert!(
        v["warnings"][0].as_str().unwrap().contains("first 1000"),
        "{v}"
    );
}

#[tokio::test]
async fn openapi_parameters_are_where_the_routes_take_them() {
    let a = app().await;
    let spec = a.get("/openapi.json").await.json();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (name, loc) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
                let in_template = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    loc == "path",
                    in_template,
                    "{method} {path}: parameter `{name}` documented in {loc}"
                );
                if loc == "query" {
                    assert_ne!(
                        p["required"], true,
                        "{method} {path}: query parameter `{name}` is optional in code"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 15, "{checked}");
}

/// Every schema in the OpenAPI document is valid 3.1: in particular no tuple-style
/// `items: [..]` (what a Rust tuple derives to), which validators reject.
#[tokio::test]
async fn openapi_schemas_have_no_tuple_items() {
    fn walk(v: &Value, at: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "items" && x.is_array() {
                        bad.push(format!("{at}/items"));
                    }
                    walk(x, &format!("{at}/{k}"), bad);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}/{i}"), bad);
                }
            }
            _ => {}
        }
    }
    let a = app().await;
    let spec = a.get("/openapi.json").await.json();
    let mut bad = Vec::new();
    walk(&spec, "", &mut bad);
    assert!(bad.is_empty(), "tuple-style items at: {bad:?}");
}
