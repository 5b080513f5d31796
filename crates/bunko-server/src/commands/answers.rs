#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output

//! `bunko ask` and `bunko summarize`: the API's own code run in-process on the data dir, as
//! a user of it (`--as EMAIL`, default the first active administrator), metered like any
//! other call. `ask` streams the answer to the terminal and then lists the numbered sources.

use crate::app::{AppState, Runtime};
use crate::cli::CliError;
use bunko_core::config::Config;
use bunko_core::identity::{GlobalRole, Principal, UserStatus};
use bunko_core::jobs::JobState;
use bunko_core::ports::all_pages;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use uuid::Uuid;

pub struct AskArgs {
    pub question: String,
    pub projects: Vec<String>,
    pub documents: Vec<String>,
    pub k: Option<u32>,
    pub model: Option<String>,
    pub language: Option<String>,
    pub conversation: Option<String>,
    pub json: bool,
    pub as_user: Option<String>,
}

pub struct SummarizeArgs {
    pub document: String,
    pub wait: bool,
    pub model: Option<String>,
    pub language: Option<String>,
    pub json: bool,
    pub as_user: Option<String>,
}

/// Who the command acts as: `--as EMAIL`, or the oldest active administrator.
pub(crate) async fn acting_user(
    state: &AppState,
    email: Option<&str>,
) -> Result<Principal, CliError> {
    let user = match email {
        Some(e) => state
            .store
            .get_user_by_email(e)
            .await?
            .ok_or_else(|| CliError::usage(format!("no user `{e}`")))?,
        None => {
            let store = state.store.as_ref();
            all_pages(|page| store.list_users(page))
                .await?
                .into_iter()
                .filter(|u| u.role == GlobalRole::Admin && u.status == UserStatus::Active)
                .min_by_key(|u| u.id)
                .ok_or_else(|| {
                    CliError::usage("no active administrator to act as")
                        .hint("name a user with --as EMAIL")
                })?
        }
    };
    if user.status != UserStatus::Active {
        return Err(CliError::usage(format!(
            "user `{}` is disabled",
            user.email
        )));
    }
    Ok(Principal::in_process(user))
}

/// An error response of the API as a CLI error (its problem detail and code).
async fn problem(res: axum::response::Response) -> CliError {
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let detail = v["detail"].as_str().unwrap_or("request failed");
    let code = v["code"].as_str().unwrap_or("");
    let e = format!("{detail} ({code})");
    if status.is_client_error() {
        CliError::usage(e)
    } else {
        CliError::failure(e)
    }
}

fn place(s: &Value) -> String {
    let (p, e) = (
        s["page"].as_u64().unwrap_or(0),
        s["page_end"].as_u64().unwrap_or(0),
    );
    let mut out = if e > p {
        format!("pp. {p}–{e}")
    } else {
        format!("p. {p}")
    };
    if let Some(sec) = s["section"].as_str().filter(|x| !x.is_empty()) {
        out.push_str(" · ");
        out.push_str(sec);
    }
    out
}

pub async fn ask(config: Config, a: AskArgs) -> Result<(), CliError> {
    let rt = Runtime::start(config, false).await?;
    let state = rt.state;
    let res = ask_in(&state, a).await;
    state.stop().await;
    res
}

async fn ask_in(state: &AppState, a: AskArgs) -> Result<(), CliError> {
    let principal = acting_user(state, a.as_user.as_deref()).await?;
    let mut body = json!({"question": a.question, "stream": !a.json});
    if !a.projects.is_empty() {
        body["projects"] = json!(a.projects);
    }
    if !a.documents.is_empty() {
        body["documents"] = json!(a.documents);
    }
    for (key, v) in [
        ("model", &a.model),
        ("language", &a.language),
        ("conversation_id", &a.conversation),
    ] {
        if let Some(v) = v {
            body[key] = json!(v);
        }
    }
    if let Some(k) = a.k {
        body["k"] = json!(k);
    }
    // The same body the API takes, checked by the same rules.
    let body: crate::routes::ask::AskBody = serde_json::from_value(body)
        .map_err(|e| CliError::usage(format!("invalid question: {e}")))?;
    let res = crate::routes::ask::answer(state.clone(), principal, body)
        .await
        .map_err(|e| {
            let e = e.0;
            if e.code.status() < 500 {
                CliError::usage(format!("{} ({})", e.detail, e.code))
            } else {
                CliError::failure(format!("{} ({})", e.detail, e.code))
            }
        })?;
    if !res.status().is_success() {
        return Err(problem(res).await);
    }
    if a.json {
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        println!("{}", String::from_utf8_lossy(&bytes));
        return Ok(());
    }
    // Server-Sent Events: print the answer as it arrives, then the sources.
    let mut stream = res.into_body().into_data_stream();
    let mut buf = String::new();
    let mut sources: Vec<Value> = Vec::new();
    let mut done = Value::Null;
    let mut citations = Value::Null;
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| CliError::failure(e.to_string()))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = "";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            let v: Value = serde_json::from_str(&data).unwrap_or_default();
            match name {
                "sources" => sources = v["sources"].as_array().cloned().unwrap_or_default(),
                "delta" => {
                    let _ = write!(out, "{}", v["text"].as_str().unwrap_or(""));
                    let _ = out.flush();
                }
                "replace" => {
                    let _ = write!(
                        out,
                        "\n\n(the model cited no source; the passages' own sentences instead:)\n{}",
                        v["text"].as_str().unwrap_or("")
                    );
                }
                "citations" => citations = v["citations"].clone(),
                "error" => {
                    let _ = write!(
                        out,
                        "\n\n(the answer is incomplete: {})",
                        v["message"].as_str().unwrap_or("the model failed")
                    );
                }
                "done" => done = v,
                _ => {}
            }
        }
    }
    println!();
    let unsupported: Vec<String> = citations
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["kept"] == false)
        .map(|c| format!("[{}]", c["n"]))
        .collect();
    if !sources.is_empty() {
        println!("\nSources:");
        for s in &sources {
            println!(
                "  [{}] {} — {}  ({})",
                s["n"],
                s["title"].as_str().unwrap_or(""),
                place(s),
                s["document_id"].as_str().unwrap_or("")
            );
        }
    }
    if !unsupported.is_empty() {
        println!("Not supported by their passages: {}", unsupported.join(" "));
    }
    if let Some(id) = done["conversation_id"].as_str() {
        println!("Follow up with: --conversation {id}");
    }
    if done["incomplete"] == true {
        return Err(CliError::failure(
            "the model failed part-way through the answer",
        ));
    }
    Ok(())
}

pub async fn summarize(config: Config, a: SummarizeArgs) -> Result<(), CliError> {
    let rt = Runtime::start(config, a.wait).await?;
    let state = rt.state;
    let res = summarize_in(&state, a).await;
    state.stop().await;
    res
}

async fn summarize_in(state: &AppState, a: SummarizeArgs) -> Result<(), CliError> {
    let principal = acting_user(state, a.as_user.as_deref()).await?;
    let missing = || CliError::usage(format!("document `{}` does not exist", a.document));
    let id = Uuid::parse_str(&a.document).map_err(|_| missing())?;
    let doc = state.store.get_document(id).await?.ok_or_else(missing)?;
    let job = crate::summary::enqueue(
        state.store.as_ref(),
        &state.gateway.router,
        &doc,
        crate::summary::Request {
            user_id: principal.user_id,
            model: a.model,
            language: a.language,
        },
    )
    .await
    .map_err(|e| CliError::usage(format!("{} ({})", e.detail, e.code)))?;
    if !a.wait {
        if a.json {
            println!("{}", json!({"document_id": id, "job_id": job}));
        } else {
            println!("summary job {job} queued (a running server or `bunko worker` runs it)");
        }
        return Ok(());
    }
    eprintln!("summarising {} …", doc.title);
    let record = loop {
        let j = state
            .store
            .get_job(job)
            .await?
            .ok_or_else(|| CliError::failure(format!("job {job} disappeared")))?;
        if matches!(
            j.state,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        ) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if record.state != JobState::Succeeded {
        return Err(CliError::failure(format!(
            "the summary job {} is {}: {}",
            job,
            record.state.as_str(),
            record.last_error.as_deref().unwrap_or("no reason recorded")
        )));
    }
    let s = state
        .store
        .latest_summary(id)
        .await?
        .ok_or_else(|| CliError::failure("the summary was not stored"))?;
    if a.json {
        let v = json!({"id": s.id, "document_id": s.document_id, "language": s.language,
                       "model": s.model, "text": s.text, "citations": s.citations.iter().map(|c| json!({"n": c.n, "page": c.page, "page_end": c.page_end, "section": c.section})).collect::<Vec<_>>(),
                       "parts": s.parts.len(), "extractive_parts": s.extractive_parts,
                       "input_tokens": s.input_tokens, "output_tokens": s.output_tokens});
        println!("{v}");
        return Ok(());
    }
    println!("{}\n", s.text);
    for c in &s.citations {
        let pages = if c.page_end > c.page {
            format!("pp. {}–{}", c.page, c.page_end)
        } else {
            format!("p. {}", c.page)
        };
        let sec = if c.section.is_empty() {
            String::new()
        } else {
            format!(" · {}", c.section)
        };
        println!("  [{}] {pages}{sec}", c.n);
    }
    if s.extractive_parts > 0 {
        println!(
            "({} of {} parts are the text's own lead sentences: the model wrote nothing usable for them)",
            s.extractive_parts,
            s.parts.len()
        );
    }
    println!(
        "model {} · {} tokens in, {} out",
        s.model, s.input_tokens, s.output_tokens
    );
    Ok(())
}
