//! The gateway end to end: a live `bunko serve` configured with a stand-in OpenAI-compatible
//! upstream (replaying the recorded wire format from bunko-llm's fixtures) and a dead one, driven
//! by the official `openai` Python SDK, plus the error shapes and metrics.

use crate::it::support::{Server, client, model_installed, require_tool, text};
use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../bunko-llm/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// An OpenAI-compatible upstream answering every chat with the recorded JSON or SSE fixture.
pub async fn stand_in() -> String {
    stand_in_counting().await.0
}

/// [`stand_in`], and the number of chat requests it has had.
async fn stand_in_counting() -> (String, Arc<AtomicUsize>) {
    let chats = Arc::new(AtomicUsize::new(0));
    let counter = chats.clone();
    async fn chat(body: axum::body::Bytes) -> Response {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let (ct, body) = if v["stream"] == true {
            ("text/event-stream", fixture("openai_stream.sse"))
        } else {
            ("application/json", fixture("openai_chat.json"))
        };
        Response::builder()
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    }
    async fn embeddings() -> Response {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(fixture("openai_embeddings.json")))
            .unwrap()
    }
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(move |b: axum::body::Bytes| {
                counter.fetch_add(1, Ordering::SeqCst);
                chat(b)
            }),
        )
        .route("/v1/embeddings", post(embeddings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, chats)
}

/// `bunko serve` in a fresh directory with `bunko.toml` = `cfg` (no embedder).
fn serve(cfg: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bunko.toml"), cfg).unwrap();
    let s = Server::start_in(
        dir.path(),
        &dir.path().join("data"),
        &[],
        &[("BUNKO__LOCAL__EMBEDDER", "none")],
    );
    (s, dir)
}

pub fn config(upstream: &str) -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    format!(
        r#"
[[providers]]
name = "lab"
type = "openai"
base_url = "{upstream}/v1"
api_key = "sk-upstream-secret-123"

[[providers]]
name = "gone"
type = "openai"
base_url = "{dead_url}/v1"
retries = 0

[[models]]
alias = "fast"
provider = "lab"
model = "gpt-4o-mini"
context_window = 128000
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60

[[models]]
alias = "down"
provider = "gone"
model = "x"
fallbacks = ["fast"]

[[models]]
alias = "dead"
provider = "gone"
model = "x"
"#
    )
}

/// Whether python3 can import `module`; otherwise a printed reason (a failure in CI, where
/// ./scripts/test installs it).
fn python_module(module: &str) -> bool {
    if require_tool("python3").is_none() {
        return false;
    }
    let probe = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .unwrap();
    if !probe.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the {module} SDK is missing; ./scripts/test installs it"
        );
        eprintln!("SKIPPED: the {module} Python SDK is not installed (./scripts/test installs it)");
        return false;
    }
    true
}

/// Runs one SDK script against the server; it prints `ALL OK` when every check passed.
async fn run_sdk(s: &Server, script: &'static str) {
    let token = s.token();
    let url = format!("http://{}", s.addr);
    // The embedded model too, when it is installed (in CI it must be).
    let local = model_installed("gemma-3-270m");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR")))
            .env("BUNKO_URL", url)
            .env("BUNKO_TOKEN", token)
            .env("BUNKO_LOCAL_MODEL", if local { "1" } else { "0" })
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{script}:\n{stdout}\n{}",
        text(&out.stderr)
    );
    assert_eq!(stdout.contains("by the embedded model"), local, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_ollama_sdk_works_against_bunko() {
    if !python_module("ollama") {
        return;
    }
    let upstream = stand_in().await;
    let (s, _dir) = serve(&config(&upstream));
    run_sdk(&s, "ollama_client.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_against_bunko() {
    if !python_module("openai") {
        return;
    }
    let upstream = stand_in().await;
    let (s, _dir) = serve(&config(&upstream));
    run_sdk(&s, "openai_client.py").await;

    // Metrics: requests, tokens and cost by alias; the upstream's key never in the logs.
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"bunko_llm_requests_total{model="fast",outcome="ok",provider="lab"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"bunko_llm_tokens_total{direction="output",model="fast"}"#));
    assert!(metrics.contains(r#"bunko_llm_cost_usd_total{model="fast"}"#));
    assert!(metrics.contains("bunko_llm_breaker_state{provider=\"gone\"}"));
    assert!(metrics.contains("bunko_gateway_overhead_seconds_count"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = s.logs();
    assert!(logs.contains("gateway call"));
    assert!(
        !logs.contains("sk-upstream-secret-123"),
        "the upstream key leaked"
    );
}

/// Errors on `/v1/` paths are OpenAI's shape, whatever made them (auth, JSON, the gateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_paths_answer_errors_in_openai_shape() {
    let upstream = stand_in().await;
    let (s, _dir) = serve(&config(&upstream));
    let c = client();
    let r = c.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["code"], "unauthenticated");
    let token = s.token();
    for (body, status, code) in [
        ("{not json", 400, "malformed_json"),
        (r#"{"model": 5, "messages": []}"#, 422, "invalid_body"),
        (
            r#"{"model": "fast", "messages": [{"role": "wizard", "content": "x"}]}"#,
            422,
            "invalid_body",
        ),
        (
            r#"{"model": "nope", "messages": [{"role": "user", "content": "x"}]}"#,
            404,
            "model_not_found",
        ),
        (
            r#"{"model": "dead", "messages": [{"role": "user", "content": "x"}]}"#,
            502,
            "upstream_unavailable",
        ),
    ] {
        let r = c
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        assert!(v["error"]["message"].is_string());
    }
    // A prompt over the alias's context window is refused before the upstream.
    let long = "word ".repeat(200_000);
    let body =
        serde_json::json!({"model": "fast", "messages": [{"role": "user", "content": long}]});
    let r = c
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
}

/// The exact-match cache: a repeated temperature-0 answer comes from the cache (the upstream
/// sees one request), `cache-control: no-cache` and other temperatures go upstream, streams
/// are never cached; the metric counts hits, misses and bypasses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temperature_zero_answers_are_cached_unless_opted_out() {
    let (upstream, chats) = stand_in_counting().await;
    let (s, _dir) = serve(&config(&upstream));
    let c = client();
    let token = s.token();
    let ask = |temperature: f64, stream: bool, no_cache: bool| {
        let mut r = c
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "model": "fast", "stream": stream, "temperature": temperature,
                "messages": [{"role": "user", "content": "Say hello"}],
            }));
        if no_cache {
            r = r.header(header::CACHE_CONTROL, "no-cache");
        }
        r.send()
    };
    let first: serde_json::Value = ask(0.0, false, false).await.unwrap().json().await.unwrap();
    assert_eq!(chats.load(Ordering::SeqCst), 1);
    let again: serde_json::Value = ask(0.0, false, false).await.unwrap().json().await.unwrap();
    assert_eq!(chats.load(Ordering::SeqCst), 1, "served from the cache");
    assert_eq!(
        again["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(again["usage"], first["usage"]);
    // The same request with different whitespace in its JSON is the same request.
    let r = c
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{ "messages" : [ {"content":"Say hello","role":"user"} ], "temperature":0, "model":"fast" }"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(chats.load(Ordering::SeqCst), 1, "normalised key");
    assert_eq!(ask(0.0, false, true).await.unwrap().status(), 200);
    assert_eq!(chats.load(Ordering::SeqCst), 2, "no-cache goes upstream");
    assert_eq!(ask(0.7, false, false).await.unwrap().status(), 200);
    assert_eq!(
        chats.load(Ordering::SeqCst),
        3,
        "only temperature 0 is cached"
    );
    for _ in 0..2 {
        let body = ask(0.0, true, false).await.unwrap().text().await.unwrap();
        assert!(body.trim_end().ends_with("data: [DONE]"));
    }
    assert_eq!(chats.load(Ordering::SeqCst), 5, "streams are not cached");
    let m = s.metrics().await;
    for (result, n) in [("hit", 2), ("miss", 1), ("bypass", 1)] {
        let line = format!("bunko_llm_cache_requests_total{{result=\"{result}\"}} {n}");
        assert!(m.contains(&line), "{line} in\n{m}");
    }
}

/// Quotas: a soft limit warns in a header, a used-up budget refuses with 429 `quota_exceeded`
/// and Retry-After; a stream that crosses the budget finishes and the next call is refused.
/// Every call lands in the usage ledger, which /api/v1/usage totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_warn_then_refuse_and_the_ledger_totals_every_call() {
    let upstream = stand_in().await;
    let cfg = format!(
        "{}\n[gateway]\nledger_flush_ms = 50\n\n[[gateway.quotas]]\nscope = \"user\"\nid = \"*\"\ntokens_per_day = 20\nrequests_per_min = 100\nsoft_ratio = 0.5\n",
        config(&upstream)
    );
    let (s, _dir) = serve(&cfg);
    let c = client();
    let token = s.token();
    let ask = |stream: bool| {
        c.post(s.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "model": "fast", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .send()
    };
    // 1: a stream (9 + 3 tokens upstream) — under every limit, finishes whole.
    let r = ask(true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-bunko-quota-warning").is_none());
    let body = r.text().await.unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    // 2: 12 of 20 tokens used (≥ the soft 50 %): answered, with a warning.
    let r = ask(false).await.unwrap();
    assert_eq!(r.status(), 200);
    let warning = r.headers()["x-bunko-quota-warning"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(warning.contains("user:tokens_per_day:60%"), "{warning}");
    // 3: 41 tokens used: refused until the UTC day ends.
    let r = ask(false).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_401).contains(&retry), "{retry}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens_per_day")
    );

    // The ledger (written in batches every 50 ms) has both answered calls.
    let mut report = serde_json::Value::Null;
    for _ in 0..50 {
        report = c
            .get(s.url("/api/v1/usage?group_by=model"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if report["totals"][0]["requests"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = &report["totals"][0];
    assert_eq!(row["group"], "fast", "{report}");
    assert_eq!(row["requests"], 2, "{report}");
    assert_eq!(row["input_tokens"], 9 + 19);
    assert_eq!(row["output_tokens"], 3 + 10);
    let cost = row["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (28.0 * 0.15 + 13.0 * 0.60) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(report["visibility"], "all");
    let bad = c
        .get(s.url("/api/v1/usage?group_by=colour"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
}

/// A client that goes away mid-stream cancels the upstream call (its connection is closed),
/// and the call is counted as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_cancels_the_upstream_stream() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Closed(Arc<AtomicBool>);
    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    // An upstream that sends one chunk every 100 ms for a minute.
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let flag = flag.clone();
            async move {
                let guard = Closed(flag);
                let chunks = futures_util::stream::unfold((0u32, guard), |(i, g)| async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if i >= 600 {
                        return None;
                    }
                    let line = format!(
                        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}},\"finish_reason\":null}}]}}\n\n"
                    );
                    Some((Ok::<_, std::convert::Infallible>(line), (i + 1, g)))
                });
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(chunks))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (s, _dir) = serve(&config(&upstream));
    let token = s.token();
    let mut r = client()
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "model": "fast", "stream": true,
            "messages": [{"role": "user", "content": "count"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: "));
    assert!(!closed.load(Ordering::SeqCst));
    drop(r);
    let mut waited = 0;
    while !closed.load(Ordering::SeqCst) && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(
        closed.load(Ordering::SeqCst),
        "the upstream stream was still open 5 s after the client left"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            r#"bunko_llm_requests_total{model="fast",outcome="cancelled",provider="lab"} 1"#
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("bunko_llm_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
