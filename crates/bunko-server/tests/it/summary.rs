//! Document summaries: the `document.summarize` job against a scripted stand-in model (OpenAI
//! wire format) that summarises each part and then the whole, citing parts — including one
//! that does not exist. A failing model leaves the previous summary as it was.
#![allow(clippy::unwrap_used)]

use crate::it::documents::{Docs, file, ids, start};
use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use bunko_core::jobs::JobState;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct StandIn {
    url: String,
    calls: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
    /// Every system prompt seen (the language of the instructions).
    prompts: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn stand_in() -> StandIn {
    let calls = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(AtomicBool::new(false));
    let prompts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, f, p) = (calls.clone(), fail.clone(), prompts.clone());
    let chat = move |body: axum::body::Bytes| {
        c.fetch_add(1, Ordering::SeqCst);
        let failing = f.load(Ordering::SeqCst);
        let p = p.clone();
        async move {
            if failing {
                return Response::builder()
                    .status(500)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        r#"{"error": {"message": "down", "type": "server_error"}}"#,
                    ))
                    .unwrap();
            }
            let v: Value = serde_json::from_slice(&body).unwrap();
            let messages = v["messages"].as_array().unwrap();
            p.lock()
                .unwrap()
                .push(messages[0]["content"].as_str().unwrap().to_owned());
            let user = messages.last().unwrap()["content"].as_str().unwrap();
            let answer = if user.contains("Part summaries:") || user.contains("部分要約:") {
                // Reduce: cite the parts about each topic, and one part that does not exist.
                let part = |needle: &str| {
                    user.lines()
                        .find(|l| l.starts_with('[') && l.contains(needle))
                        .and_then(|l| l[1..].split(']').next())
                        .unwrap_or("1")
                        .to_owned()
                };
                format!(
                    "Scanned pages are read by tesseract, which recognises Japanese and English \
                     text [{}]. The reading room opens at nine and closes at five in the evening \
                     [{}]. It also covers something else entirely [7].",
                    part("tesseract"),
                    part("reading room")
                )
            } else {
                // Map: the part's first sentence on its topic, as a summary would put it.
                let first = user
                    .split(". ")
                    .find(|s| {
                        s.contains("tesseract")
                            || s.contains("reading room")
                            || s.contains("閲覧室")
                    })
                    .unwrap_or("nothing")
                    .rsplit('\n')
                    .next()
                    .unwrap_or("");
                format!("This part says that {}.", first.trim())
            };
            let body = json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        }
    };
    let app = Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    StandIn {
        url,
        calls,
        fail,
        prompts,
    }
}

async fn setup() -> (Docs, StandIn) {
    let s = stand_in().await;
    let url = s.url.clone();
    let d = start(move |c| {
        crate::it::ask::use_stand_in(c, &url);
        c.rag.summary_part_tokens = 200;
        c.jobs.backoff_base_ms = 20;
        c.jobs.backoff_max_ms = 50;
    })
    .await;
    (d, s)
}

/// A document long enough for several parts: two sections of many sentences.
fn paper() -> Vec<u8> {
    let mut t = String::from("# Reading scanned pages\n\n");
    for i in 0..40 {
        t.push_str(&format!(
            "Scanned page {i} is read by tesseract, which recognises Japanese and English text. "
        ));
    }
    t.push_str("\n\n# Opening hours\n\n");
    for i in 0..40 {
        t.push_str(&format!(
            "On day {i} the reading room opens at nine and closes at five in the evening. "
        ));
    }
    t.into_bytes()
}

async fn wait_job(d: &Docs, id: &str) -> bunko_core::jobs::JobRecord {
    let id = uuid::Uuid::parse_str(id).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let j = d.state.store.get_job(id).await.unwrap().unwrap();
        if matches!(
            j.state,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        ) {
            return j;
        }
        assert!(Instant::now() < until, "job {id} did not finish: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_is_mapped_reduced_checked_and_kept_when_a_later_one_fails() {
    let (d, s) = setup().await;
    let up = d.upload(&[file("paper.md", paper())]).await;
    let doc = ids(&up.json()).remove(0);
    d.settle(std::slice::from_ref(&doc), Duration::from_secs(60))
        .await;
    let path = format!("/api/v1/documents/{doc}/summary");
    assert_eq!(d.get(&path).await.code(404), "not_found", "none yet");

    let r = d.post_json(&path, "").await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let job = wait_job(&d, r.json()["job_id"].as_str().unwrap()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let v = d.get(&path).await.json();
    let parts = v["parts"].as_array().unwrap();
    assert!(parts.len() >= 3, "several parts: {v}");
    // One map call per part and one reduce call.
    assert_eq!(s.calls.load(Ordering::SeqCst), parts.len() + 1);
    assert!(
        parts[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("This part says that")
    );
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("Scanned pages are read by tesseract") && text.contains("reading room"),
        "the model's summary, not the fallback: {text}"
    );
    assert!(
        !text.contains("[7]") && !text.contains("something else"),
        "a part that does not exist is not cited, and what only it supports is dropped: {text}"
    );
    assert_eq!(v["model"], "scripted");
    assert_eq!(v["language"], "en");
    assert_eq!(v["extractive_parts"], 0);
    assert_eq!(v["input_tokens"], 100 * (parts.len() as u64 + 1));
    let c1 = &v["citations"][0];
    assert_eq!(c1["n"], 1);
    assert_eq!(c1["link"], format!("/api/v1/documents/{doc}/pages/1"));
    // The parts follow the document: the last part is about opening hours.
    assert!(
        parts.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("reading room"),
        "{v}"
    );
    assert!(s.prompts.lock().unwrap()[0].contains("Answer in English"));

    // The model fails: the job dies saying why, and the earlier summary is still served.
    s.fail.store(true, Ordering::SeqCst);
    let r = d
        .post_json(&path, r#"{"model": "scripted", "language": "en"}"#)
        .await;
    let job = wait_job(&d, r.json()["job_id"].as_str().unwrap()).await;
    assert_eq!(job.state, JobState::Dead, "{job:?}");
    assert_eq!(job.attempts, 3);
    assert!(
        job.last_error.as_deref().unwrap_or("").contains("upstream"),
        "{job:?}"
    );
    assert_eq!(d.get(&path).await.json()["id"], v["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn japanese_documents_are_summarised_in_japanese_and_bad_requests_are_refused() {
    let (d, s) = setup().await;
    let ja = "# 走査ページの読み取り\n\n走査したページは tesseract で読み取られ、日本語と英語の文字を認識する。\
              閲覧室は九時に開き、五時に閉まる。\n"
        .repeat(3);
    let up = d.upload(&[file("ja.md", ja.into_bytes())]).await;
    let doc = ids(&up.json()).remove(0);
    d.settle(std::slice::from_ref(&doc), Duration::from_secs(60))
        .await;
    let path = format!("/api/v1/documents/{doc}/summary");
    for (body, status, code) in [
        (r#"{"language": "fr"}"#, 422, "invalid_input"),
        (r#"{"model": "nope"}"#, 404, "model_not_found"),
        (r#"{"length": 3}"#, 422, "invalid_body"),
        (r#"{"model": "#, 400, "malformed_json"),
    ] {
        assert_eq!(d.post_json(&path, body).await.code(status), code, "{body}");
    }
    assert_eq!(
        d.post_json(
            &format!("/api/v1/documents/{}/summary", uuid::Uuid::now_v7()),
            ""
        )
        .await
        .code(404),
        "not_found"
    );
    let r = d.post_json(&path, "").await;
    let job = wait_job(&d, r.json()["job_id"].as_str().unwrap()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let v = d.get(&path).await.json();
    assert_eq!(v["language"], "ja");
    assert!(s.prompts.lock().unwrap()[0].contains("日本語で"));

    // A document that is not ready cannot be summarised yet.
    let pending = d.pending_document("11").await;
    let r = d
        .post_json(&format!("/api/v1/documents/{}/summary", pending.id), "")
        .await;
    assert_eq!(r.code(409), "document_not_ready");
}

/// A feed source with `summarize = true`: each new document is summarised as the service
/// account once ready, within `crawl.summary_daily_tokens` (a gateway quota: past it, summary
/// jobs end `quota_exceeded`); a source without it gets none; the daily digest note lists what
/// arrived, with summaries, once per day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_get_automatic_summaries_within_a_daily_budget_and_a_digest() {
    let s = stand_in().await;
    let url = s.url.clone();
    // A feed of three entries on the same loopback stand-in.
    let feed = |n: usize| {
        let mut x =
            String::from(r#"<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>"#);
        for i in 0..n {
            x.push_str(&format!(
                "<item><guid>e-{i}</guid><title>Notice {i}</title><description>Scanned page {i} is read by tesseract, which recognises Japanese and English text. The reading room opens at nine.</description></item>"
            ));
        }
        x.push_str("</channel></rss>");
        x
    };
    let body = feed(3);
    let app = Router::new().route(
        "/feed.xml",
        axum::routing::get(move || {
            let b = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/rss+xml")], b) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let feed_url = format!("http://{}/feed.xml", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    let d = start(move |c| {
        crate::it::ask::use_stand_in(c, &url);
        c.jobs.backoff_base_ms = 20;
        c.jobs.backoff_max_ms = 50;
        c.crawl.allow_hosts = vec!["127.0.0.1".into()];
        c.crawl.allow_private_networks = true;
        // Room for about two summaries of two calls (120 tokens each).
        c.crawl.summary_daily_tokens = 300;
    })
    .await;
    for (name, summarize) in [("notices", true), ("quiet", false)] {
        let r = d
            .post_json(
                "/api/v1/sources",
                &json!({ "name": name, "kind": "feed", "project": "papers", "url": feed_url,
                         "fetch_files": false, "delay_ms": 0, "summarize": summarize,
                         "tags": [name] })
                .to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let token = tokio_util::sync::CancellationToken::new();
    let got = bunko_server::crawl::crawl(&d.state.ingest, "notices", None, &token)
        .await
        .unwrap();
    assert_eq!(got.added, 3);
    // "quiet" lists the same entries: the same bytes in the project are the same documents,
    // so it adds nothing new (and asks for no summaries).
    let quiet = bunko_server::crawl::crawl(&d.state.ingest, "quiet", None, &token)
        .await
        .unwrap();
    assert_eq!(quiet.added, 0);

    // Every summary job finishes: some with a summary, the rest refused by the budget.
    let until = Instant::now() + Duration::from_secs(60);
    let jobs = loop {
        let jobs = d
            .state
            .store
            .list_jobs(
                &bunko_core::jobs::JobFilter {
                    kind: Some("document.summarize".into()),
                    ..Default::default()
                },
                bunko_core::ports::PageRequest::new(Some(50), None).unwrap(),
            )
            .await
            .unwrap()
            .items;
        if jobs.len() == 3
            && jobs
                .iter()
                .all(|j| matches!(j.state, JobState::Succeeded | JobState::Dead))
        {
            break jobs;
        }
        assert!(Instant::now() < until, "summary jobs: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done = jobs
        .iter()
        .filter(|j| j.state == JobState::Succeeded)
        .count();
    let refused: Vec<_> = jobs.iter().filter(|j| j.state == JobState::Dead).collect();
    assert!((1..=2).contains(&done), "{jobs:#?}");
    assert!(
        !refused.is_empty(),
        "the budget stopped the rest: {jobs:#?}"
    );
    assert!(
        refused
            .iter()
            .all(|j| j.last_error_code.as_deref() == Some("quota_exceeded")),
        "{refused:#?}"
    );
    assert!(
        s.calls.load(Ordering::SeqCst) <= 4,
        "no calls past the budget"
    );
    // As the service account, which cannot log in.
    let account = d
        .state
        .store
        .get_user_by_email(bunko_server::autosummary::ACCOUNT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jobs[0].payload["user_id"], account.id.to_string());
    assert!(account.password_hash.is_none());

    // The digest of today (UTC): one note, replaced on a second run.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let out = bunko_server::autosummary::digest(&d.state.ingest, today)
        .await
        .unwrap();
    assert_eq!(out["notes"], 1, "{out}");
    assert_eq!(out["documents"], 3);
    bunko_server::autosummary::digest(&d.state.ingest, today)
        .await
        .unwrap();
    let notes = d
        .get("/api/v1/projects/papers/notes?tag=digest")
        .await
        .json();
    let items = notes["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{notes:#}");
    let note = &items[0];
    assert_eq!(note["title"], format!("Digest {today}"));
    let body = note["body"].as_str().unwrap();
    assert!(body.starts_with("3 documents arrived on"), "{body}");
    assert!(
        body.contains("## notices — 3") && body.contains("[Notice 0]"),
        "{body}"
    );
    assert!(
        body.contains("This part says") || body.contains("tesseract"),
        "a summary's first sentence: {body}"
    );
    // A day with nothing new writes nothing.
    let empty = bunko_server::autosummary::digest(&d.state.ingest, today.yesterday().unwrap())
        .await
        .unwrap();
    assert_eq!(empty["notes"], 0);
}
