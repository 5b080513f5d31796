//! The gateway benchmark's two halves (bench/gateway.py drives them):
//!
//! - `bench-gateway mock ADDR [CHUNK_DELAY_MS]`: a stand-in OpenAI-compatible upstream that
//!   answers `/v1/chat/completions` at once, as JSON or as an SSE stream of 8 chunks + usage +
//!   `[DONE]` (each chunk after CHUNK_DELAY_MS, default 0), in the recorded wire format.
//! - `bench-gateway load URL TOKEN MODEL RPS SECS json|stream`: an open-loop load generator —
//!   requests start on a fixed schedule whatever the answers do, and latency is measured from
//!   the scheduled start (no coordinated omission). Prints one JSON line: sent, ok, errors,
//!   achieved rate, latency p50/p90/p99/max in ms.
//! - `bench-gateway streams URL TOKEN MODEL N SECS`: N clients each streaming answers back to
//!   back for SECS; a stream that goes 10 s without a byte counts as stalled. Prints one JSON
//!   line: streams finished, errors, stalled.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WORDS: [&str; 8] = [
    "Hello", " from", " the", " stand", "-in", " up", "stream", ".",
];

fn chunk(id: &str, delta: &str) -> String {
    format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_bench\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    )
}

async fn chat(body: axum::body::Bytes, delay: Duration) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = "chatcmpl-bench";
    if v["stream"] == true {
        let mut parts = vec![chunk(id, r#"{"role":"assistant","content":""}"#)];
        for w in WORDS {
            parts.push(chunk(id, &format!("{{\"content\":\"{w}\"}}")));
        }
        parts.push(format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n"
        ));
        parts.push(format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":8,\"total_tokens\":20}}}}\n\n"
        ));
        parts.push("data: [DONE]\n\n".to_owned());
        let stream = futures_util::stream::unfold(parts.into_iter(), move |mut it| async move {
            let next = it.next()?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::convert::Infallible>(next), it))
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let text: String = WORDS.concat();
    let body = serde_json::json!({
        "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
        "system_fingerprint": "fp_bench"
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn mock(addr: &str, delay: Duration) -> anyhow::Result<()> {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |b: axum::body::Bytes| chat(b, delay)),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn request(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    model: &str,
    stream: bool,
) -> reqwest::RequestBuilder {
    let mut body = serde_json::json!({
        "model": model, "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "temperature": 0.7,
    });
    if stream {
        body["stream"] = true.into();
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    c.post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .header("cache-control", "no-cache")
        .json(&body)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn load(args: &[String]) -> anyhow::Result<()> {
    let [url, token, model, rps, secs, mode] = args else {
        anyhow::bail!("usage: bench-gateway load URL TOKEN MODEL RPS SECS json|stream");
    };
    let rps: f64 = rps.parse()?;
    let secs: f64 = secs.parse()?;
    let stream = mode == "stream";
    let c = client();
    let n = (rps * secs) as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<f64, String>>();
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rps);
        tokio::time::sleep_until(at).await;
        let req = request(&c, url, token, model, stream);
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = async {
                let res = req.send().await.map_err(|e| e.to_string())?;
                let status = res.status();
                let body = res.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{status}"));
                }
                if stream && !body.ends_with(b"data: [DONE]\n\n") {
                    return Err("stream without [DONE]".into());
                }
                Ok(())
            }
            .await;
            let ms = at.elapsed().as_secs_f64() * 1000.0;
            let _ = tx.send(r.map(|()| ms));
        });
    }
    drop(tx);
    let mut lat = Vec::with_capacity(n as usize);
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    while let Some(r) = rx.recv().await {
        match r {
            Ok(ms) => lat.push(ms),
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "sent": n, "ok": lat.len(), "errors": errors, "achieved_rps": n as f64 / elapsed,
            "p50_ms": pct(&lat, 0.5), "p90_ms": pct(&lat, 0.9), "p99_ms": pct(&lat, 0.99),
            "max_ms": lat.last().copied().unwrap_or(f64::NAN),
        })
    );
    Ok(())
}

async fn streams(args: &[String]) -> anyhow::Result<()> {
    let [url, token, model, n, secs] = args else {
        anyhow::bail!("usage: bench-gateway streams URL TOKEN MODEL N SECS");
    };
    let n: usize = n.parse()?;
    let until = Instant::now() + Duration::from_secs_f64(secs.parse()?);
    let c = client();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stalled = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (c, url, token, model) = (c.clone(), url.clone(), token.clone(), model.clone());
        let (done, errors, stalled) = (done.clone(), errors.clone(), stalled.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let r = async {
                    let mut res = request(&c, &url, &token, &model, true)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if !res.status().is_success() {
                        return Err(res.status().to_string());
                    }
                    let mut tail = Vec::new();
                    loop {
                        match tokio::time::timeout(Duration::from_secs(10), res.chunk()).await {
                            Err(_) => return Err("stalled".to_owned()),
                            Ok(Err(e)) => return Err(e.to_string()),
                            Ok(Ok(None)) => break,
                            Ok(Ok(Some(b))) => {
                                tail.extend_from_slice(&b);
                                let keep = tail.len().saturating_sub(32);
                                tail.drain(..keep);
                            }
                        }
                    }
                    if tail.ends_with(b"data: [DONE]\n\n") {
                        Ok(())
                    } else {
                        Err("no [DONE]".to_owned())
                    }
                }
                .await;
                match r {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e == "stalled" => stalled.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "{}",
        serde_json::json!({
            "clients": n, "streams_finished": done.load(Ordering::Relaxed),
            "errors": errors.load(Ordering::Relaxed), "stalled": stalled.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mock") => {
            let delay = args.get(2).map_or(Ok(0), |d| d.parse())?;
            mock(
                args.get(1).map_or("127.0.0.1:9999", String::as_str),
                Duration::from_millis(delay),
            )
            .await
        }
        Some("load") => load(&args[1..]).await,
        Some("streams") => streams(&args[1..]).await,
        _ => anyhow::bail!("usage: bench-gateway mock|load|streams …"),
    }
}
