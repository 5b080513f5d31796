//! `POST /api/v1/ask` against a scripted stand-in model (OpenAI wire format, JSON and SSE)
//! that reads the numbered passages in its prompt and answers with good, unsupported and
//! impossible citations; and once against the real embedded model.
#![allow(clippy::unwrap_used)]

use crate::it::documents::{Docs, file, ids, start};
use crate::it::support::model_installed;
use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How the stand-in answers.
#[derive(Clone, Copy, PartialEq)]
pub enum Script {
    /// Cites the passage about tesseract correctly, another one for a sentence it does not
    /// support, and [0] and [999]; streamed three characters per event.
    Mixed,
    /// Streams half an answer, then drops the connection.
    CutMidStream,
    /// A fluent answer with no citation at all.
    Uncited,
    /// Every request fails with 500.
    Down,
}

/// The passage numbers in the prompt (`[n] Title (p. …)` header lines, each followed by its
/// text) whose text contains `needle`, and the others.
fn numbers(prompt: &str, needle: &str) -> (Vec<usize>, Vec<usize>) {
    let mut blocks: Vec<(usize, String)> = Vec::new();
    for line in prompt.lines() {
        let header = line
            .strip_prefix('[')
            .and_then(|r| r.split_once("] "))
            .and_then(|(n, _)| n.parse::<usize>().ok());
        match (header, blocks.last_mut()) {
            (Some(n), _) => blocks.push((n, String::new())),
            (None, Some(b)) if !line.starts_with("Question:") => b.1.push_str(line),
            _ => {}
        }
    }
    let (with, without): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|b| b.1.contains(needle));
    (
        with.into_iter().map(|b| b.0).collect(),
        without.into_iter().map(|b| b.0).collect(),
    )
}

/// Every request the stand-in received (nextest runs each test in its own process).
static REQUESTS: std::sync::Mutex<Vec<Value>> = std::sync::Mutex::new(Vec::new());

async fn stand_in(script: Script) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let chat = move |body: axum::body::Bytes| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let v: Value = serde_json::from_slice(&body).unwrap();
            REQUESTS.lock().unwrap().push(v.clone());
            if script == Script::Down {
                return Response::builder()
                    .status(500)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        r#"{"error": {"message": "down", "type": "server_error"}}"#,
                    ))
                    .unwrap();
            }
            let prompt: String = v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["content"].as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n\n");
            let (good, other) = numbers(&prompt, "tesseract");
            let g = good.first().copied().unwrap_or(1);
            let o = other.first().copied().unwrap_or(2);
            let answer = if script == Script::Uncited {
                "Scanned pages are read by a program.".to_owned()
            } else {
                format!(
                    "Scanned pages are read by tesseract [{g}]. Tesseract recognises Japanese and \
                     English text [{o}]. Nothing else is known [0][999]."
                )
            };
            let usage = json!({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150});
            if v["stream"] != true {
                let body = json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "finish_reason": "stop"}],
                    "usage": usage,
                });
                return Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap();
            }
            let chars: Vec<char> = answer.chars().collect();
            let mut events: Vec<String> = chars
                .chunks(3)
                .map(|c| {
                    let t: String = c.iter().collect();
                    format!(
                        "data: {}\n\n",
                        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                               "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]})
                    )
                })
                .collect();
            if script == Script::CutMidStream {
                events.truncate(events.len() / 2);
            } else {
                events.push(format!(
                    "data: {}\n\n",
                    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                ));
                events.push(format!(
                    "data: {}\n\n",
                    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [], "usage": usage})
                ));
                events.push("data: [DONE]\n\n".into());
            }
            let stream = futures_util::stream::iter(
                events.into_iter().map(Ok::<_, std::convert::Infallible>),
            );
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    };
    let app = Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

const ASK: &str = r#"{"question": "Which program reads scanned pages?"}"#;
const ASK_STREAMED: &str = r#"{"question": "Which program reads scanned pages?", "stream": true}"#;
pub const OCR: &str =
    "# OCR\n\nScanned pages are read by tesseract, which recognises Japanese and English text.\n";
const HOURS: &str = "# Opening hours\n\nThe reading room opens at nine and closes at five. Scanned pages can be requested at the desk.\n";

/// Points `rag.model` at an OpenAI-compatible stand-in at `url` (alias `scripted`).
pub fn use_stand_in(c: &mut bunko_core::config::Config, url: &str) {
    c.providers = vec![
        serde_json::from_value(json!({
            "name": "stand-in", "type": "openai", "base_url": format!("{url}/v1"), "retries": 0,
        }))
        .unwrap(),
    ];
    c.models = vec![
        serde_json::from_value(json!({
            "alias": "scripted", "provider": "stand-in", "model": "m", "context_window": 8000,
        }))
        .unwrap(),
    ];
    c.rag.model = "scripted".into();
}

/// A server whose `rag.model` is an alias to the stand-in, with the two documents ready.
pub async fn setup(script: Script) -> (Docs, Arc<AtomicUsize>, Vec<String>) {
    let (url, calls) = stand_in(script).await;
    let d = start(|c| use_stand_in(c, &url)).await;
    let up = d
        .upload(&[
            file("ocr.md", OCR.as_bytes().to_vec()),
            file("hours.md", HOURS.as_bytes().to_vec()),
        ])
        .await;
    assert_eq!(up.status, 202);
    let docs = ids(&up.json());
    for doc in d.settle(&docs, Duration::from_secs(60)).await {
        assert_eq!(doc["status"], "ready", "{doc}");
    }
    (d, calls, docs)
}

fn citation(v: &Value, n: u64) -> &Value {
    v["citations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["n"] == n)
        .unwrap_or_else(|| panic!("no citation [{n}] in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cite_numbered_passages_and_the_check_flags_bad_citations() {
    let (d, calls, docs) = setup(Script::Mixed).await;
    let r = d.post_json("/api/v1/ask", ASK).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(v["not_found"], false);
    assert_eq!(v["extractive"], false);
    assert_eq!(v["model"], "scripted");
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{v}");
    let ocr = sources
        .iter()
        .find(|s| s["text"].as_str().unwrap().contains("tesseract"))
        .unwrap();
    let hours = sources.iter().find(|s| s != &ocr).unwrap();
    assert!(docs.contains(&ocr["document_id"].as_str().unwrap().to_owned()));
    assert_eq!(ocr["page"], 1);
    assert!(ocr["span"][1].as_u64().unwrap() > ocr["span"][0].as_u64().unwrap());
    let (g, o) = (ocr["n"].as_u64().unwrap(), hours["n"].as_u64().unwrap());
    // No marker outside the sources reaches the reader.
    let answer = v["answer"].as_str().unwrap();
    assert!(answer.contains(&format!("tesseract [{g}]")), "{answer}");
    assert!(
        !answer.contains("[0]") && !answer.contains("[999]"),
        "{answer}"
    );
    // The good citation is kept; the other passage does not support its sentence; the
    // impossible ones are reported.
    assert_eq!(citation(&v, g)["kept"], true, "{v}");
    assert!(citation(&v, g)["support"].as_f64().unwrap() > 0.6);
    assert_eq!(citation(&v, o)["kept"], false, "{v}");
    assert!(citation(&v, o)["reason"].is_string());
    for n in [0, 999] {
        assert_eq!(citation(&v, n)["kept"], false);
    }
    assert_eq!(v["usage"]["input_tokens"], 120);
    assert_eq!(v["usage"]["output_tokens"], 30);
    let m = d.state.metrics.render();
    for line in [
        r#"bunko_rag_citations_total{outcome="supported"} 1"#,
        r#"bunko_rag_citations_total{outcome="unsupported"} 1"#,
        r#"bunko_rag_citations_total{outcome="invalid"} 2"#,
        r#"bunko_rag_answers_total{kind="generated"} 1"#,
        r#"bunko_llm_requests_total{model="scripted",outcome="ok",provider="stand-in"} 1"#,
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
}

/// Parses an SSE body into (event, data) pairs.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let mut name = String::new();
            let mut data = String::new();
            for line in b.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (name, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_sends_sources_deltas_citations_and_done_in_order() {
    let (d, _calls, _) = setup(Script::Mixed).await;
    let whole = d.post_json("/api/v1/ask", ASK).await.json();
    let r = d.post_json("/api/v1/ask", ASK_STREAMED).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/event-stream");
    let ev = events(&r.body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"sources"));
    assert_eq!(
        &names[names.len() - 2..],
        ["citations", "done"],
        "{names:?}"
    );
    assert!(names[1..names.len() - 2].iter().all(|n| *n == "delta"));
    assert!(names.len() > 10, "small deltas: {names:?}");
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    // Markers split across deltas ("[99", "9]") were still caught.
    assert_eq!(text, whole["answer"].as_str().unwrap());
    assert_eq!(ev[0].1["sources"], whole["sources"]);
    assert_eq!(ev[names.len() - 2].1["citations"], whole["citations"]);
    let done = &ev[names.len() - 1].1;
    assert_eq!(done["incomplete"], false);
    assert_eq!(done["usage"]["output_tokens"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failing_mid_stream_marks_the_answer_incomplete() {
    let (d, _calls, _) = setup(Script::CutMidStream).await;
    let r = d.post_json("/api/v1/ask", ASK_STREAMED).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[names.len() - 3..],
        ["citations", "error", "done"],
        "{names:?}"
    );
    assert_eq!(ev[names.len() - 1].1["incomplete"], true);
    assert!(names.contains(&"delta"));
    let m = d.state.metrics.render();
    assert!(
        m.contains(r#"bunko_rag_answers_total{kind="failed"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"bunko_llm_requests_total{model="scripted",outcome="error",provider="stand-in"} 1"#
        ),
        "the failed call is accounted: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_relevant_passage_answers_not_found_without_calling_the_model() {
    let (d, calls, _) = setup(Script::Mixed).await;
    for body in [
        r#"{"question": "What is the boiling point of mercury?"}"#.to_owned(),
        // A document that is not ready (or does not exist) holds nothing to answer from.
        format!(
            r#"{{"question": "Which program reads scanned pages?", "documents": ["{}"]}}"#,
            uuid::Uuid::now_v7()
        ),
        r#"{"question": "何で読むのか", "language": "ja"}"#.to_owned(),
    ] {
        let r = d.post_json("/api/v1/ask", &body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["not_found"], true, "{body}: {v}");
        assert!(v["sources"].as_array().unwrap().is_empty());
    }
    let ja = d
        .post_json("/api/v1/ask", r#"{"question": "水銀の沸点は何度ですか"}"#)
        .await
        .json();
    assert_eq!(ja["answer"], "文書にはこの質問への答えが含まれていません。");
    assert_eq!(ja["language"], "ja");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the model was not called");
    let s = d
        .post_json(
            "/api/v1/ask",
            r#"{"question": "What is the boiling point of mercury?", "stream": true}"#,
        )
        .await;
    let names: Vec<String> = events(&s.body).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["sources", "delta", "citations", "done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_questions_get_stable_codes() {
    let (d, calls, _) = setup(Script::Mixed).await;
    let long = format!(r#"{{"question": "{}"}}"#, "why ".repeat(5_000));
    for (body, status, code) in [
        (r#"{"question": "   "}"#.to_owned(), 400, "query_empty"),
        (long, 422, "invalid_input"),
        (
            r#"{"question": "x", "k": 0}"#.to_owned(),
            422,
            "invalid_input",
        ),
        (
            r#"{"question": "x", "language": "fr"}"#.to_owned(),
            422,
            "invalid_input",
        ),
        (
            r#"{"question": "x", "model": "nope"}"#.to_owned(),
            404,
            "model_not_found",
        ),
        (
            r#"{"question": "x", "projects": ["no-such-project"]}"#.to_owned(),
            404,
            "not_found",
        ),
        (
            r#"{"question": "x", "projects": []}"#.to_owned(),
            422,
            "invalid_input",
        ),
        (r#"{"question": 5}"#.to_owned(), 422, "invalid_body"),
        (
            r#"{"question": "x", "wizard": true}"#.to_owned(),
            422,
            "invalid_body",
        ),
        (r#"{"question": "x""#.to_owned(), 400, "malformed_json"),
        (
            r#"{"question": "x", "filters": {"language": 7}}"#.to_owned(),
            400,
            "invalid_filter",
        ),
    ] {
        let r = d.post_json("/api/v1/ask", &body).await;
        assert_eq!(r.code(status), code, "{body}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// The real embedded model (Gemma 3 270M, a base model) over the same documents: whatever it
/// writes, no marker outside the sources reaches the reader, and an answer without a valid
/// citation becomes an extractive one that cites the passages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_model_answers_with_checked_or_extractive_citations() {
    if !model_installed("gemma-3-270m") {
        return;
    }
    let (d, calls, _) = setup(Script::Mixed).await;
    let r = d
        .post_json(
            "/api/v1/ask",
            r#"{"question": "Which program reads scanned pages?", "model": "local", "max_tokens": 48}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the stand-in was not asked"
    );
    assert_eq!(v["model"], "local");
    let k = v["sources"].as_array().unwrap().len();
    assert!(k >= 1);
    let answer = v["answer"].as_str().unwrap();
    assert!(!answer.trim().is_empty());
    let (_, f) = bunko_core::rag::MarkerFilter::whole(k, answer);
    assert!(
        f.removed.is_empty(),
        "an invalid marker reached the reader: {answer}"
    );
    if v["extractive"] == true {
        assert!(answer.contains("[1]"), "{answer}");
    } else {
        assert!(!f.cited.is_empty(), "a generated answer cites: {answer}");
    }
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_carries_the_conversation_and_only_its_owner_may_continue_it() {
    let (d, calls, _) = setup(Script::Mixed).await;
    let first = d.post_json("/api/v1/ask", ASK).await.json();
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    let first_answer = first["answer"].as_str().unwrap();
    let follow = format!(
        r#"{{"question": "And which languages does it recognise?", "conversation_id": "{id}", "stream": true}}"#
    );
    let r = d.post_json("/api/v1/ask", &follow).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    assert_eq!(ev[0].1["conversation_id"], id.as_str());
    assert_eq!(ev.last().unwrap().1["conversation_id"], id.as_str());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The model saw the earlier turn: the question, then the answer without its markers.
    let sent = REQUESTS.lock().unwrap().last().cloned().unwrap();
    let messages = sent["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{sent}");
    assert_eq!(messages[1]["content"], "Which program reads scanned pages?");
    let earlier = messages[2]["content"].as_str().unwrap();
    assert!(
        earlier.starts_with("Scanned pages are read by tesseract"),
        "{earlier}"
    );
    assert!(
        !earlier.contains('['),
        "old markers are taken out: {earlier}"
    );
    assert!(first_answer.contains('['));
    // A new question starts a new conversation.
    let other = d.post_json("/api/v1/ask", ASK).await.json();
    assert_ne!(other["conversation_id"], id.as_str());
    let turns = d
        .state
        .store
        .conversation_turns(uuid::Uuid::parse_str(&id).unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1].question, "And which languages does it recognise?");
    // Someone else's conversation, or one that never was: 404, and no model call.
    let papers = d.state.store.get_project("papers").await.unwrap().unwrap();
    let tok = d
        .member(
            "m@x.org",
            Some((papers.id, bunko_core::identity::ProjectRole::Viewer)),
        )
        .await;
    let r = d.json_as(&tok, "POST", "/api/v1/ask", &follow).await;
    assert_eq!(r.code(404), "not_found");
    let r = d
        .post_json(
            "/api/v1/ask",
            &format!(
                r#"{{"question": "x", "conversation_id": "{}"}}"#,
                uuid::Uuid::now_v7()
            ),
        )
        .await;
    assert_eq!(r.code(404), "not_found");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A caller without access to a project named in the request gets 404 and nothing is
/// retrieved from it; with no project of their own, nothing is searched at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_the_caller_cannot_see_is_not_found_and_not_searched() {
    let (d, calls, _) = setup(Script::Mixed).await;
    let tok = d.member("outsider@x.org", None).await;
    let r = d
        .json_as(
            &tok,
            "POST",
            "/api/v1/ask",
            r#"{"question": "Which program reads scanned pages?", "projects": ["papers"]}"#,
        )
        .await;
    assert_eq!(r.code(404), "not_found");
    let r = d.json_as(&tok, "POST", "/api/v1/ask", ASK).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["not_found"], true, "{v}");
    assert!(v["sources"].as_array().unwrap().is_empty());
    // A project with no documents, and a document still being processed: no answer to find,
    // and the latter is named in a warning.
    bunko_core::projects::create(d.state.store.as_ref(), "Empty", None)
        .await
        .unwrap();
    let r = d
        .post_json(
            "/api/v1/ask",
            r#"{"question": "Which program reads scanned pages?", "projects": ["empty"]}"#,
        )
        .await;
    assert_eq!(r.json()["not_found"], true);
    let pending = d.pending_document("00").await;
    let r = d
        .post_json(
            "/api/v1/ask",
            &format!(
                r#"{{"question": "Which program reads scanned pages?", "documents": ["{}"]}}"#,
                pending.id
            ),
        )
        .await;
    let v = r.json();
    assert_eq!(v["not_found"], true, "{v}");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not searched yet"),
        "{v}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A used-up token budget refuses the next question with 429 `quota_exceeded`, after the
/// first answer was recorded in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_quota_refuses_the_next_question() {
    let (url, calls) = stand_in(Script::Mixed).await;
    let d = start(|c| {
        use_stand_in(c, &url);
        c.gateway.ledger_flush_ms = 50;
        c.gateway.quotas = vec![
            serde_json::from_value(json!({
                "scope": "user", "id": "*", "tokens_per_day": 100,
            }))
            .unwrap(),
        ];
    })
    .await;
    let up = d.upload(&[file("ocr.md", OCR.as_bytes().to_vec())]).await;
    d.settle(&ids(&up.json()), Duration::from_secs(60)).await;
    let r = d.post_json("/api/v1/ask", ASK).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = d.post_json("/api/v1/ask", ASK_STREAMED).await;
    assert_eq!(r.code(429), "quota_exceeded");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the model was not called again"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let totals = d
        .state
        .store
        .usage_totals(bunko_core::ports::UsageGroup::Model, 0, i64::MAX, None)
        .await
        .unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0].input_tokens, totals[0].output_tokens), (120, 30));
}

/// A chat model's answer that cites nothing is passed on, but flagged: no citation, and a
/// warning saying the answer cites no source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_citing_nothing_is_flagged() {
    let (d, calls, _) = setup(Script::Uncited).await;
    let v = d.post_json("/api/v1/ask", ASK).await.json();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(v["answer"], "Scanned pages are read by a program.");
    assert_eq!(v["extractive"], false);
    assert!(v["citations"].as_array().unwrap().is_empty());
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("cites no source")),
        "{v}"
    );
    let r = d.post_json("/api/v1/ask", ASK_STREAMED).await;
    let ev = events(&r.body);
    let done = &ev.last().unwrap().1;
    assert!(
        done["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("cites no source")),
        "{done}"
    );
}

/// The model down before it answers anything: a whole answer is 502; a streamed one has
/// already sent its sources, so it goes on with the passages' own sentences, an `error`
/// event and `incomplete: true` — and the failed call is accounted either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_down_before_answering_still_streams_the_sources_first() {
    let (d, calls, _) = setup(Script::Down).await;
    let r = d.post_json("/api/v1/ask", ASK).await;
    assert_eq!(r.code(502), "upstream_unavailable");
    let r = d.post_json("/api/v1/ask", ASK_STREAMED).await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sources", "replace", "citations", "error", "done"]);
    assert_eq!(ev[3].1["code"], "upstream_unavailable");
    let done = &ev[4].1;
    assert_eq!(done["incomplete"], true);
    assert_eq!(done["extractive"], true);
    assert!(ev[1].1["text"].as_str().unwrap().contains("tesseract"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let m = d.state.metrics.render();
    assert!(
        m.contains(r#"bunko_rag_answers_total{kind="failed"} 2"#),
        "{m}"
    );
}
