//! The gateway end to end: a live `bunko serve` configured with a stand-in OpenAI-compatible
//! upstream (replaying the recorded wire format from bunko-llm's fixtures) and a dead one, driven
//! by the official `openai` Python SDK, plus the error shapes and metrics.

use crate::it::support::{Server, client, require_tool, text};
use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use std::time::Duration;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../bunko-llm/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// An OpenAI-compatible upstream answering every chat with the recorded JSON or SSE fixture.
async fn stand_in() -> String {
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
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn config(upstream: &str) -> String {
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
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR")))
            .env("BUNKO_URL", url)
            .env("BUNKO_TOKEN", token)
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_ollama_sdk_works_against_bunko() {
    if !python_module("ollama") {
        return;
    }
    let upstream = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bunko.toml"), config(&upstream)).unwrap();
    let s = Server::start_in(
        dir.path(),
        &dir.path().join("data"),
        &[],
        &[("BUNKO__LOCAL__EMBEDDER", "none")],
    );
    run_sdk(&s, "ollama_client.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_against_bunko() {
    if !python_module("openai") {
        return;
    }
    let upstream = stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bunko.toml"), config(&upstream)).unwrap();
    let s = Server::start_in(
        dir.path(),
        &dir.path().join("data"),
        &[],
        &[("BUNKO__LOCAL__EMBEDDER", "none")],
    );
    run_sdk(&s, "openai_client.py").await;

    // Metrics: requests, tokens and cost by alias; the upstream's key never in the logs.
    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bunko.toml"), config(&upstream)).unwrap();
    let s = Server::start_in(
        dir.path(),
        &dir.path().join("data"),
        &[],
        &[("BUNKO__LOCAL__EMBEDDER", "none")],
    );
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
            r#"{"model": "local", "messages": [{"role": "user", "content": "x"}]}"#,
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
