//! The provider adapters and the router against a stand-in upstream that replays the recorded
//! wire formats in `fixtures/` — and misbehaves on purpose: 429 with Retry-After, 5xx, refused
//! connections, no first token in time, streams cut in the middle, malformed JSON, the wrong
//! content type, a 10 MB SSE line, a full concurrency bound and an open breaker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use bunko_core::config::Config;
use bunko_core::llm::{ChatEvent, ChatRequest, Message, ProviderErrorKind, Role, Usage};
use bunko_llm::gateway::{Gateway, GatewayError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    extra_headers: Vec<(String, String)>,
    /// Pieces of the body, each after a delay.
    pieces: Vec<(Duration, Vec<u8>)>,
}

fn reply(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        status,
        content_type,
        extra_headers: Vec::new(),
        pieces: vec![(Duration::ZERO, body)],
    }
}

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: String,
    body: serde_json::Value,
}

/// A one-file HTTP/1.1 server: each connection takes the next scripted reply (the last one
/// repeats), answers with `Connection: close` and the body until close.
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn upstream(script: Vec<Reply>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = s2.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                let (head_end, len) = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let body = serde_json::from_slice(&buf[head_end..]).unwrap_or_default();
                seen.lock().unwrap().push(Seen {
                    path,
                    headers: head.to_ascii_lowercase(),
                    body,
                });
                let r = {
                    let mut s = script.lock().unwrap();
                    if s.len() > 1 {
                        s.pop_front().unwrap()
                    } else {
                        s.front().unwrap().clone()
                    }
                };
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\nconnection: close\r\n",
                    r.status, r.content_type
                );
                for (k, v) in &r.extra_headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for (delay, piece) in r.pieces {
                    tokio::time::sleep(delay).await;
                    if sock.write_all(&piece).await.is_err() {
                        return;
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    Upstream { url, seen }
}

fn config(toml_text: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bunko.toml");
    std::fs::write(&p, toml_text).unwrap();
    let (c, _) = Config::load(Some(&p), Vec::new(), &Default::default()).unwrap();
    let problems: Vec<_> = c
        .check()
        .into_iter()
        .filter(|p| p.key.starts_with("models") || p.key.starts_with("providers"))
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    c
}

/// One provider `up` of `kind` at `url` and alias `m` → it, with optional extra TOML.
fn one(kind: &str, url: &str, extra: &str) -> Gateway {
    let base = if kind == "openai" {
        format!("{url}/v1")
    } else {
        url.to_owned()
    };
    Gateway::new(&config(&format!(
        "[[providers]]\nname = \"up\"\ntype = \"{kind}\"\nbase_url = \"{base}\"\napi_key = \"sk-test-123\"\n{extra}\n[[models]]\nalias = \"m\"\nprovider = \"up\"\nmodel = \"upstream-model\"\ncontext_window = 1000\n"
    )))
    .unwrap()
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message {
                role: Role::System,
                content: "Be brief.".into(),
            },
            Message {
                role: Role::User,
                content: text.into(),
            },
        ],
        max_tokens: Some(50),
        temperature: Some(0.0),
        ..Default::default()
    }
}

async fn collect(
    s: &mut bunko_llm::gateway::GatewayStream,
) -> (String, Option<Usage>, Option<String>) {
    let mut text = String::new();
    loop {
        match s.next().await {
            Some(Ok(ChatEvent::Delta(t))) => text.push_str(&t),
            Some(Ok(ChatEvent::Done { usage, .. })) => return (text, usage, None),
            Some(Err(e)) => return (text, None, Some(e.message)),
            None => return (text, None, Some("ended without Done".into())),
        }
    }
}

#[tokio::test]
async fn openai_json_and_sse_as_documented() {
    let up = upstream(vec![
        reply(200, "application/json", fixture("openai_chat.json")),
        reply(200, "text/event-stream", fixture("openai_stream.sse")),
        reply(200, "application/json", fixture("openai_embeddings.json")),
    ])
    .await;
    let g = one("openai", &up.url, "");
    let (r, served) = g.chat("m", &ask("hi")).await.unwrap();
    assert_eq!(r.text, "Hello! How can I assist you today?");
    assert_eq!(
        r.usage,
        Some(Usage {
            input_tokens: 19,
            output_tokens: 10
        })
    );
    assert_eq!((served.provider.as_str(), served.attempts), ("up", 1));
    let (mut s, _) = g.chat_stream("m", &ask("hi")).await.unwrap();
    let (text, usage, err) = collect(&mut s).await;
    assert_eq!((text.as_str(), err), ("Hello 世界", None));
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: 9,
            output_tokens: 3
        })
    );
    let ((vecs, tokens), _) = g.embed("m", &["a".into(), "b".into()]).await.unwrap();
    assert_eq!(vecs[1], vec![0.5, -0.25, 0.125], "sorted by index");
    assert_eq!(tokens, Some(8));
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert!(
        seen[0]
            .headers
            .contains("authorization: bearer sk-test-123")
    );
    assert_eq!(seen[0].body["model"], "upstream-model");
    assert_eq!(seen[0].body["messages"][0]["role"], "system");
    assert_eq!(seen[1].body["stream"], true);
    assert_eq!(seen[1].body["stream_options"]["include_usage"], true);
    assert_eq!(seen[2].path, "/v1/embeddings");
}

#[tokio::test]
async fn ollama_json_and_ndjson_as_documented() {
    let up = upstream(vec![
        reply(
            200,
            "application/json; charset=utf-8",
            fixture("ollama_chat.json"),
        ),
        reply(200, "application/x-ndjson", fixture("ollama_stream.ndjson")),
        reply(200, "application/json", fixture("ollama_embed.json")),
    ])
    .await;
    let g = one("ollama", &up.url, "");
    let (r, _) = g.chat("m", &ask("hi")).await.unwrap();
    assert_eq!(r.text, "Hello! How are you today?");
    assert_eq!(r.usage.map(|u| u.output_tokens), Some(298));
    let (mut s, _) = g.chat_stream("m", &ask("hi")).await.unwrap();
    let (text, usage, err) = collect(&mut s).await;
    assert_eq!((text.as_str(), err), ("The sky is blue.", None));
    assert_eq!(usage.map(|u| u.input_tokens), Some(26));
    let ((vecs, _), _) = g.embed("m", &["a".into(), "b".into()]).await.unwrap();
    assert_eq!(vecs.len(), 2);
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/api/chat");
    assert_eq!(seen[0].body["stream"], false);
    assert_eq!(seen[0].body["options"]["num_predict"], 50);
    assert_eq!(seen[2].path, "/api/embed");
}

#[tokio::test]
async fn anthropic_json_and_typed_sse_as_documented() {
    let up = upstream(vec![
        reply(200, "application/json", fixture("anthropic_messages.json")),
        reply(
            200,
            "text/event-stream; charset=utf-8",
            fixture("anthropic_stream.sse"),
        ),
    ])
    .await;
    let g = one("anthropic", &up.url, "");
    let (r, _) = g.chat("m", &ask("hi")).await.unwrap();
    assert_eq!(r.text, "Hi! My name is Claude.");
    assert_eq!(
        r.usage,
        Some(Usage {
            input_tokens: 2095,
            output_tokens: 503
        })
    );
    let (mut s, _) = g.chat_stream("m", &ask("hi")).await.unwrap();
    let (text, usage, err) = collect(&mut s).await;
    assert_eq!((text.as_str(), err), ("Hello!", None));
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: 25,
            output_tokens: 15
        })
    );
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/v1/messages");
    assert!(seen[0].headers.contains("x-api-key: sk-test-123"));
    assert!(seen[0].headers.contains("anthropic-version: 2023-06-01"));
    assert!(!seen[0].headers.contains("authorization"));
    assert_eq!(seen[0].body["system"], "Be brief.");
    assert_eq!(seen[0].body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(seen[0].body["max_tokens"], 50);
}

#[tokio::test]
async fn retries_a_429_after_its_retry_after() {
    let mut limited = reply(
        429,
        "application/json",
        br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#.to_vec(),
    );
    limited
        .extra_headers
        .push(("retry-after".into(), "1".into()));
    let up = upstream(vec![
        limited,
        reply(200, "application/json", fixture("openai_chat.json")),
    ])
    .await;
    let g = one("openai", &up.url, "");
    let t = Instant::now();
    let (r, served) = g.chat("m", &ask("hi")).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(served.attempts, 2);
    assert!(r.text.starts_with("Hello"));
}

/// Two providers: `a` misbehaves as scripted, `b` answers; alias `m` → a, falling back to `n` → b.
async fn with_fallback(bad: Vec<Reply>, extra: &str) -> (Gateway, Upstream, Upstream) {
    let a = upstream(bad).await;
    let b = upstream(vec![reply(
        200,
        "text/event-stream",
        fixture("openai_stream.sse"),
    )])
    .await;
    let g = Gateway::new(&config(&format!(
        "[[providers]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"{}/v1\"\nretries = 1\n{extra}\n\
         [[providers]]\nname = \"b\"\ntype = \"openai\"\nbase_url = \"{}/v1\"\n\
         [[models]]\nalias = \"m\"\nprovider = \"a\"\nmodel = \"x\"\nfallbacks = [\"n\"]\n\
         [[models]]\nalias = \"n\"\nprovider = \"b\"\nmodel = \"y\"\n",
        a.url, b.url
    )))
    .unwrap();
    (g, a, b)
}

#[tokio::test]
async fn falls_back_on_5xx_refused_connections_and_missing_first_tokens() {
    // 503 twice (one retry), then the fallback answers.
    let (g, a, _) = with_fallback(
        vec![reply(
            503,
            "application/json",
            br#"{"error":{"message":"overloaded"}}"#.to_vec(),
        )],
        "",
    )
    .await;
    let (mut s, served) = g.chat_stream("m", &ask("hi")).await.unwrap();
    assert_eq!(served.alias.alias, "n");
    assert_eq!(served.fell_back_from, vec!["m"]);
    assert_eq!(served.attempts, 3);
    assert_eq!(collect(&mut s).await.0, "Hello 世界");
    assert_eq!(a.seen.lock().unwrap().len(), 2);

    // Connection refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let b = upstream(vec![reply(
        200,
        "application/json",
        fixture("openai_chat.json"),
    )])
    .await;
    let g = Gateway::new(&config(&format!(
        "[[providers]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"{dead}/v1\"\nretries = 0\n\
         [[providers]]\nname = \"b\"\ntype = \"openai\"\nbase_url = \"{}/v1\"\n\
         [[models]]\nalias = \"m\"\nprovider = \"a\"\nmodel = \"x\"\nfallbacks = [\"n\"]\n\
         [[models]]\nalias = \"n\"\nprovider = \"b\"\nmodel = \"y\"\n",
        b.url
    )))
    .unwrap();
    let (_, served) = g.chat("m", &ask("hi")).await.unwrap();
    assert_eq!(served.alias.alias, "n");

    // No first token within the provider's limit.
    let mut slow = reply(200, "text/event-stream", fixture("openai_stream.sse"));
    slow.pieces[0].0 = Duration::from_secs(5);
    let (g, _, _) = with_fallback(vec![slow], "first_token_timeout_ms = 300").await;
    let t = Instant::now();
    let (mut s, served) = g.chat_stream("m", &ask("hi")).await.unwrap();
    assert_eq!(served.alias.alias, "n");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(collect(&mut s).await.0, "Hello 世界");
}

#[tokio::test]
async fn broken_answers_are_clean_errors() {
    // Malformed JSON, wrong content type, a 10 MB SSE line.
    for (r, want) in [
        (
            reply(200, "application/json", b"{\"choices\": [".to_vec()),
            "malformed JSON",
        ),
        (
            reply(200, "text/html", b"<html>proxy login</html>".to_vec()),
            "content type",
        ),
    ] {
        let up = upstream(vec![r]).await;
        let g = one("openai", &up.url, "");
        match g.chat("m", &ask("hi")).await {
            Err(GatewayError::Provider(e)) => {
                assert_eq!(e.kind, ProviderErrorKind::BadResponse);
                assert!(e.message.contains(want), "{}", e.message);
            }
            other => panic!("{:?}", other.map(|r| r.0)),
        }
    }
    let mut huge = b"data: ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 10 << 20));
    huge.extend(b"\n\n");
    let up = upstream(vec![reply(200, "text/event-stream", huge)]).await;
    let g = one("openai", &up.url, "");
    match g.chat_stream("m", &ask("hi")).await {
        Err(GatewayError::Provider(e)) => assert!(e.message.contains("line over"), "{}", e.message),
        Ok(_) => panic!("a 10 MB line was accepted"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_ends_with_an_error() {
    let full = fixture("openai_stream.sse");
    let cut = full[..full.len() / 2].to_vec();
    let up = upstream(vec![reply(200, "text/event-stream", cut)]).await;
    let g = one("openai", &up.url, "");
    let (mut s, _) = g.chat_stream("m", &ask("hi")).await.unwrap();
    let (_, _, err) = collect(&mut s).await;
    assert!(err.unwrap_or_default().contains("ended before"));
}

#[tokio::test]
async fn unknown_models_long_prompts_and_refusals_do_not_fall_back() {
    let up = upstream(vec![reply(
        400,
        "application/json",
        br#"{"error":{"message":"Invalid value for 'messages'","type":"invalid_request_error"}}"#
            .to_vec(),
    )])
    .await;
    let g = one("openai", &up.url, "");
    assert!(matches!(
        g.chat("nope", &ask("hi")).await,
        Err(GatewayError::UnknownModel(_))
    ));
    let long = "word ".repeat(2000);
    assert!(matches!(
        g.chat("m", &ask(&long)).await,
        Err(GatewayError::ContextTooLong { window: 1000, .. })
    ));
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "refused before the upstream"
    );
    match g.chat("m", &ask("hi")).await {
        Err(GatewayError::Provider(e)) => {
            assert_eq!(e.kind, ProviderErrorKind::Rejected);
            assert_eq!(e.status, Some(400));
            assert!(e.message.contains("Invalid value"), "{}", e.message);
        }
        other => panic!("{:?}", other.map(|r| r.0)),
    }
    assert_eq!(up.seen.lock().unwrap().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn the_breaker_opens_and_the_bound_refuses() {
    let up = upstream(vec![reply(500, "application/json", b"{}".to_vec())]).await;
    let g = one(
        "openai",
        &up.url,
        "retries = 0\nbreaker_failures = 2\nbreaker_cooldown_secs = 60",
    );
    for _ in 0..2 {
        assert!(g.chat("m", &ask("hi")).await.is_err());
    }
    match g.chat("m", &ask("hi")).await {
        Err(GatewayError::Provider(e)) => assert_eq!(e.kind, ProviderErrorKind::Overloaded),
        other => panic!("{:?}", other.map(|r| r.0)),
    }
    assert_eq!(
        up.seen.lock().unwrap().len(),
        2,
        "an open breaker sends nothing"
    );

    // max_concurrent = 1: a second request while one is in flight is refused at once.
    let mut slow = reply(200, "application/json", fixture("openai_chat.json"));
    slow.pieces[0].0 = Duration::from_millis(800);
    let up = upstream(vec![slow]).await;
    let g = Arc::new(one("openai", &up.url, "max_concurrent = 1"));
    let g2 = g.clone();
    let first = tokio::spawn(async move { g2.chat("m", &ask("hi")).await.map(|r| r.0.text) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    match g.chat("m", &ask("hi")).await {
        Err(GatewayError::Provider(e)) => {
            assert_eq!(e.kind, ProviderErrorKind::Overloaded);
            assert!(e.retry_after.is_some());
        }
        other => panic!("{:?}", other.map(|r| r.0)),
    }
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test]
async fn the_local_alias_always_exists_and_says_when_no_model_is_configured() {
    let g = Gateway::new(&config("[local]\ngenerator = \"none\"\n")).unwrap();
    assert!(g.alias("local").is_some());
    match g.chat("local", &ask("hi")).await {
        Err(GatewayError::Provider(e)) => {
            assert_eq!(e.kind, ProviderErrorKind::Unavailable);
            assert!(e.message.contains("no embedded chat model"), "{e}");
        }
        other => panic!("{:?}", other.map(|r| r.0)),
    }
}
