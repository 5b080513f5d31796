#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output and progress

//! `bunko eval rag --dataset DIR`: the whole ask path on a question set — the documents
//! ingested into a throw-away data dir (real extraction, chunking, hybrid index), each
//! question asked through the same code as `POST /api/v1/ask`, and the answers scored:
//! retrieval hit rate of the gold pages, citation validity (no marker outside the sources
//! may reach the reader: 100 % required), supported-citation ratio, key-fact recall.

use crate::app::Runtime;
use crate::cli::CliError;
use bunko_core::config::Config;
use bunko_core::documents::DocStatus;
use bunko_core::rag::MarkerFilter;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Question {
    id: String,
    file: String,
    question: String,
    gold_pages: Vec<u32>,
    #[serde(default)]
    facts: Vec<String>,
}

pub struct Args {
    pub dataset: PathBuf,
    pub fixtures: PathBuf,
    pub model: Option<String>,
    pub k: u32,
    pub json: bool,
}

fn load(dir: &Path) -> Result<Vec<Question>, CliError> {
    let path = dir.join("questions.jsonl");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let q: Question = serde_json::from_str(line)
            .map_err(|e| CliError::usage(format!("{}:{}: {e}", path.display(), i + 1)))?;
        if q.gold_pages.is_empty() {
            return Err(CliError::usage(format!("{}: no gold_pages", q.id)));
        }
        out.push(q);
    }
    if out.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no questions",
            path.display()
        )));
    }
    Ok(out)
}

/// One question's outcome.
struct Scored {
    hit: bool,
    invalid_markers: usize,
    valid_citations: usize,
    kept_citations: usize,
    facts: usize,
    facts_found: usize,
    extractive: bool,
    not_found: bool,
    total_ms: f64,
    first_token_ms: f64,
    retrieval_ms: f64,
}

pub async fn run(mut config: Config, a: Args) -> Result<(), CliError> {
    let questions = load(&a.dataset)?;
    if !a.fixtures.is_dir() {
        return Err(CliError::usage(format!(
            "the fixtures directory {} does not exist",
            a.fixtures.display()
        ))
        .hint("point --fixtures at the shared PDFs (default ../shared/fixtures/pdfs)"));
    }
    let tmp = tempfile::tempdir().map_err(|e| CliError::failure(e.to_string()))?;
    config.data_dir = tmp.path().join("data");
    let rt = Runtime::start(config, true).await?;
    let state = rt.state;
    let project = bunko_core::projects::create(state.store.as_ref(), "Eval", None).await?;
    // Ingest each file once.
    let mut docs: HashMap<String, Uuid> = HashMap::new();
    let started = Instant::now();
    for q in &questions {
        if docs.contains_key(&q.file) {
            continue;
        }
        let path = a.fixtures.join(&q.file);
        let staged = state
            .ingest
            .stage_path(&path)
            .await
            .map_err(|e| CliError::usage(format!("{}: {}", path.display(), e.detail)))?;
        let added = state
            .ingest
            .add(project.id, staged, "upload", None)
            .await
            .map_err(|e| CliError::failure(e.detail))?;
        docs.insert(q.file.clone(), added.document.id);
    }
    let until = Instant::now() + Duration::from_secs(3600);
    for (file, id) in &docs {
        loop {
            let d = state
                .store
                .get_document(*id)
                .await?
                .ok_or_else(|| CliError::failure(format!("{file} disappeared")))?;
            match d.status {
                DocStatus::Ready => break,
                DocStatus::Failed => {
                    return Err(CliError::failure(format!(
                        "{file} failed: {}",
                        d.error.map(|e| e.message).unwrap_or_default()
                    )));
                }
                _ if Instant::now() > until => {
                    return Err(CliError::failure(format!("{file} is still processing")));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    state.ingest.flush_vectors().await;
    let ingest_s = started.elapsed().as_secs_f64();
    if !a.json {
        eprintln!(
            "{} documents ready in {ingest_s:.1} s; asking {} questions…",
            docs.len(),
            questions.len()
        );
    }
    let principal = super::answers::acting_user(&state, None).await?;
    let model = a
        .model
        .clone()
        .unwrap_or_else(|| state.config.rag.model.clone());
    let mut rows = Vec::new();
    let mut scored = Vec::new();
    let mut failures = 0usize;
    for q in &questions {
        let body: crate::routes::ask::AskBody = serde_json::from_value(json!({
            "question": q.question, "projects": [project.id.to_string()],
            "k": a.k, "model": model,
        }))
        .map_err(|e| CliError::usage(e.to_string()))?;
        let res = match crate::routes::ask::answer_value(&state, &principal, body).await {
            Ok(r) => r,
            Err(e) => {
                // A failed question is reported and counted, and the run goes on.
                let why = format!("{} ({})", e.0.detail, e.0.code);
                if !a.json {
                    println!("{:<5} failed: {why}", q.id);
                }
                rows.push(json!({"id": q.id, "error": why}));
                failures += 1;
                continue;
            }
        };
        let gold_doc = docs[&q.file];
        let hit = res.sources.iter().any(|s| {
            s.document_id == gold_doc
                && q.gold_pages
                    .iter()
                    .any(|g| (s.page..=s.page_end.max(s.page)).contains(g))
        });
        let answer = res.answer.as_str();
        let k = res.sources.len();
        // What reached the reader: any marker naming no source is a failure of the check.
        let (_, f) = MarkerFilter::whole(k, answer);
        let valid: Vec<_> = res
            .citations
            .iter()
            .filter(|c| c.n >= 1 && c.n <= k)
            .collect();
        let lower = answer.to_lowercase();
        let found = q
            .facts
            .iter()
            .filter(|f| lower.contains(&f.to_lowercase()))
            .count();
        let s = Scored {
            hit,
            invalid_markers: f.removed.len(),
            valid_citations: valid.len(),
            kept_citations: valid.iter().filter(|c| c.kept).count(),
            facts: q.facts.len(),
            facts_found: found,
            extractive: res.extractive,
            not_found: res.not_found,
            total_ms: res.timings.total_ms,
            first_token_ms: res.timings.first_token_ms,
            retrieval_ms: res.timings.retrieval_ms,
        };
        if !a.json {
            println!(
                "{:<5} hit={} cites={}/{} facts={}/{}{}{}  {:.0} ms  {}",
                q.id,
                u8::from(s.hit),
                s.kept_citations,
                s.valid_citations,
                s.facts_found,
                s.facts,
                if s.extractive { " extractive" } else { "" },
                if s.not_found { " not_found" } else { "" },
                s.total_ms,
                answer
                    .replace('\n', " ")
                    .chars()
                    .take(100)
                    .collect::<String>()
            );
        }
        rows.push(json!({
            "id": q.id, "hit": s.hit, "invalid_markers": s.invalid_markers,
            "citations": s.valid_citations, "supported": s.kept_citations,
            "facts": s.facts, "facts_found": s.facts_found, "extractive": s.extractive,
            "not_found": s.not_found, "total_ms": s.total_ms, "answer": answer,
        }));
        scored.push(s);
    }
    let n = scored.len().max(1) as f64;
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let sum = |f: fn(&Scored) -> usize| scored.iter().map(f).sum::<usize>();
    let mut totals: Vec<f64> = scored.iter().map(|s| s.total_ms).collect();
    totals.sort_by(f64::total_cmp);
    let mut ttft: Vec<f64> = scored
        .iter()
        .filter(|s| s.first_token_ms > 0.0)
        .map(|s| s.first_token_ms)
        .collect();
    ttft.sort_by(f64::total_cmp);
    let median = |v: &[f64]| if v.is_empty() { 0.0 } else { v[v.len() / 2] };
    let invalid = sum(|s| s.invalid_markers);
    let report = json!({
        "questions": questions.len(),
        "answered": scored.len(),
        "failed": failures,
        "model": model,
        "k": a.k,
        "documents": docs.len(),
        "ingest_s": ingest_s,
        "retrieval_hit_rate": scored.iter().filter(|s| s.hit).count() as f64 / n,
        "citation_validity": if invalid == 0 { 1.0 } else { 1.0 - ratio(invalid, invalid + sum(|s| s.valid_citations)) },
        "invalid_markers_shown": invalid,
        "supported_citation_ratio": ratio(sum(|s| s.kept_citations), sum(|s| s.valid_citations)),
        "key_fact_recall": ratio(sum(|s| s.facts_found), sum(|s| s.facts)),
        "extractive_share": scored.iter().filter(|s| s.extractive).count() as f64 / n,
        "not_found_share": scored.iter().filter(|s| s.not_found).count() as f64 / n,
        "median_total_ms": median(&totals),
        "median_first_token_ms": median(&ttft),
        "median_retrieval_ms": median(&{
            let mut r: Vec<f64> = scored.iter().map(|s| s.retrieval_ms).collect();
            r.sort_by(f64::total_cmp);
            r
        }),
        "rows": rows,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "\n{} questions ({} failed) · model {} · k {}\n  retrieval hit rate (gold page among the sources) {:.3}\n  \
             citation validity {:.3} ({} invalid markers shown)\n  supported-citation ratio {:.3}\n  \
             key-fact recall {:.3}\n  extractive {:.0} % · not found {:.0} %\n  median total {:.0} ms · median first token {:.0} ms",
            questions.len(),
            failures,
            model,
            a.k,
            report["retrieval_hit_rate"].as_f64().unwrap_or(0.0),
            report["citation_validity"].as_f64().unwrap_or(0.0),
            invalid,
            report["supported_citation_ratio"].as_f64().unwrap_or(0.0),
            report["key_fact_recall"].as_f64().unwrap_or(0.0),
            report["extractive_share"].as_f64().unwrap_or(0.0) * 100.0,
            report["not_found_share"].as_f64().unwrap_or(0.0) * 100.0,
            report["median_total_ms"].as_f64().unwrap_or(0.0),
            report["median_first_token_ms"].as_f64().unwrap_or(0.0),
        );
    }
    state.stop().await;
    if invalid > 0 {
        return Err(CliError::failure(format!(
            "{invalid} citation markers outside the sources reached the reader"
        )));
    }
    Ok(())
}
