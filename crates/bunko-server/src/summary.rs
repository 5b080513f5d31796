//! The `document.summarize` job: map-reduce over a document's parts through the gateway
//! (metered and quota'd as the requesting user), stored as a new summary only when it is
//! whole — a failed or cancelled job leaves the previous summary as it was.

use crate::gateway::GatewayService;
use bunko_core::answers::{PageRef, PartSummary, Summary};
use bunko_core::documents::{DocStatus, Document};
use bunko_core::identity::{Principal, UserStatus};
use bunko_core::jobs::{JobContext, JobFailure, JobHandler, NewJob};
use bunko_core::llm::ChatRequest;
use bunko_core::ports::MetaStore;
use bunko_core::rag::{Lang, MarkerFilter, Template};
use bunko_core::summarize::{self, Part};
use bunko_core::{Code, Error};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

pub const KIND: &str = "document.summarize";
/// Model work has its own queue, so long summaries never hold up document processing.
pub const QUEUE: &str = "llm";

/// What a summary job is asked to do.
pub struct Request {
    /// Who asks: the job's model calls are metered as theirs.
    pub user_id: Uuid,
    pub model: Option<String>,
    pub language: Option<String>,
}

/// Enqueues a summary of a ready document: 409 `document_not_ready` otherwise, 422 for a
/// language other than `ja`/`en`, 404 `model_not_found` for an alias the gateway lacks.
pub async fn enqueue(
    store: &dyn MetaStore,
    gateway: &bunko_llm::gateway::Gateway,
    doc: &Document,
    r: Request,
) -> Result<Uuid, Error> {
    if let Some(l) = &r.language
        && !matches!(l.as_str(), "ja" | "en")
    {
        return Err(Error::new(
            Code::InvalidInput,
            "language must be `ja` or `en`",
        ));
    }
    if let Some(m) = &r.model
        && gateway.alias(m).is_none()
    {
        return Err(Error::new(
            Code::ModelNotFound,
            format!("model `{m}` is not configured"),
        ));
    }
    if doc.status != DocStatus::Ready {
        return Err(Error::new(
            Code::DocumentNotReady,
            format!(
                "document {} is {}: it can be summarised once it is ready",
                doc.id,
                doc.status.as_str()
            ),
        ));
    }
    let mut job = NewJob::new(
        QUEUE,
        KIND,
        json!({"document_id": doc.id, "user_id": r.user_id,
               "model": r.model, "language": r.language}),
    );
    job.max_attempts = 3;
    Ok(store.enqueue(job).await?.id)
}

pub struct Summarize {
    pub store: Arc<dyn MetaStore>,
    pub gateway: Arc<GatewayService>,
    pub config: bunko_core::config::RagConfig,
}

fn payload_uuid(v: &Value, key: &str) -> Result<Uuid, JobFailure> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            JobFailure::permanent(
                Code::InvalidInput,
                format!("payload needs {{\"{key}\": UUID}}"),
            )
        })
}

fn store_failure(e: impl std::fmt::Display) -> JobFailure {
    JobFailure::retryable(Code::Unavailable, format!("storage: {e}"))
}

/// A gateway error as a job failure: retried when it may pass (upstream down, overloaded,
/// quota), final when the same request will fail again.
fn model_failure(e: crate::http::ApiError) -> JobFailure {
    let code = e.0.code;
    let msg = e.0.detail.clone();
    if code.status() >= 500 || code.status() == 429 {
        JobFailure::retryable(code, msg)
    } else {
        JobFailure::permanent(code, msg)
    }
}

/// The running totals of one job's model calls.
#[derive(Default)]
struct Meter {
    input: u64,
    output: u64,
}

struct Run<'a> {
    h: &'a Summarize,
    principal: Principal,
    alias: String,
    template: Template,
    lang: Lang,
    title: String,
    meter: Meter,
    cancel: &'a tokio_util::sync::CancellationToken,
    /// A summary sentence must share this much of its terms with what it summarises.
    floor: f32,
}

impl Run<'_> {
    /// One model call, accounted as the requesting user's; the answer's text.
    async fn call(&mut self, req: ChatRequest) -> Result<String, JobFailure> {
        if self.cancel.is_cancelled() {
            return Err(JobFailure::permanent(Code::Conflict, "cancelled"));
        }
        let gw = &self.h.gateway;
        gw.admit(&self.principal).await.map_err(model_failure)?;
        let (r, _, usage) = gw
            .chat(
                &self.principal,
                "summary",
                &self.alias,
                &req,
                Instant::now(),
            )
            .await
            .map_err(model_failure)?;
        self.meter.input += usage.input_tokens;
        self.meter.output += usage.output_tokens;
        Ok(r.text)
    }

    fn request(&self, messages: Vec<bunko_core::llm::Message>, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            messages,
            max_tokens: Some(max_tokens),
            temperature: Some(0.0),
            top_p: None,
            stop: match self.template {
                Template::Completion => summarize::COMPLETION_STOPS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                Template::Chat => Vec::new(),
            },
            seed: None,
        }
    }

    /// Reduces summaries to one text and the numbered stretches it cites (the parts, or
    /// after rounds of combining, groups of them); `None` when the model's text cites none.
    async fn reduce(
        &mut self,
        parts: &[Part],
        budget: u64,
    ) -> Result<Option<(String, Vec<Part>)>, JobFailure> {
        let mut level: Vec<Part> = parts.to_vec();
        // Rounds: combine groups that fit into one summary each until one prompt holds all.
        // Intermediate summaries stand for the pages of the parts they combine.
        while summarize::reduce_tokens(&level) > budget && level.len() > 1 {
            let mut next = Vec::new();
            for g in summarize::reduce_groups(&level, budget) {
                let text = if g.len() == 1 {
                    g[0].text.clone()
                } else {
                    let m = summarize::reduce_prompt(&self.title, &g, self.lang, self.template);
                    let out = self
                        .call(self.request(m, self.h.config.summary_part_answer_tokens * 2))
                        .await?;
                    let (clean, _) = MarkerFilter::whole(0, &out);
                    let sources: String = g
                        .iter()
                        .map(|p| p.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ");
                    summarize::clean_map(&clean, &sources, self.floor).unwrap_or(sources)
                };
                next.push(Part {
                    n: next.len() + 1,
                    section: String::new(),
                    page_start: g.iter().map(|p| p.page_start).min().unwrap_or(1),
                    page_end: g.iter().map(|p| p.page_end).max().unwrap_or(1),
                    text,
                });
            }
            if next.len() >= level.len() {
                break; // no progress: the groups hold one part each
            }
            level = next;
        }
        let m = summarize::reduce_prompt(&self.title, &level, self.lang, self.template);
        let out = self
            .call(self.request(m, self.h.config.summary_tokens))
            .await?;
        let (clean, _) = MarkerFilter::whole(level.len(), &out);
        Ok(summarize::clean_reduce(&clean, &level, self.floor).map(|t| (t, level)))
    }
}

#[async_trait::async_trait]
impl JobHandler for Summarize {
    async fn run(&self, ctx: JobContext) -> Result<Option<Value>, JobFailure> {
        let (attempts, max) = (ctx.job.attempts, ctx.job.max_attempts);
        let out = self.summarize(ctx).await;
        let outcome = match &out {
            Ok(_) => Some("generated"),
            Err(f) if !f.retryable || attempts >= max => Some("failed"),
            Err(_) => None, // tried again
        };
        if let Some(o) = outcome {
            self.gateway
                .metrics()
                .summaries
                .with_label_values(&[o])
                .inc();
        }
        out
    }
}

impl Summarize {
    async fn summarize(&self, ctx: JobContext) -> Result<Option<Value>, JobFailure> {
        let p = &ctx.job.payload;
        let doc_id = payload_uuid(p, "document_id")?;
        let user_id = payload_uuid(p, "user_id")?;
        let doc = self
            .store
            .get_document(doc_id)
            .await
            .map_err(store_failure)?
            .ok_or_else(|| {
                JobFailure::permanent(Code::NotFound, format!("document {doc_id} is gone"))
            })?;
        if doc.status != DocStatus::Ready {
            return Err(JobFailure::permanent(
                Code::DocumentNotReady,
                format!("document {doc_id} is {}", doc.status.as_str()),
            ));
        }
        let user = self
            .store
            .get_user(user_id)
            .await
            .map_err(store_failure)?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(|| {
                JobFailure::permanent(
                    Code::Forbidden,
                    "the user who asked for the summary is gone or disabled",
                )
            })?;
        let principal = Principal::in_process(user);
        let alias = p
            .get("model")
            .and_then(Value::as_str)
            .map_or_else(|| self.config.model.clone(), str::to_owned);
        let Some(model) = self.gateway.router.alias(&alias).cloned() else {
            return Err(JobFailure::permanent(
                Code::ModelNotFound,
                format!("model `{alias}` is not configured"),
            ));
        };
        let template = Template::for_provider(self.gateway.router.provider_kind(&alias));
        let lang = match p.get("language").and_then(Value::as_str) {
            Some("ja") => Lang::Ja,
            Some("en") => Lang::En,
            _ if doc.language.as_deref() == Some("ja") => Lang::Ja,
            _ => Lang::En,
        };
        let chunks = self
            .store
            .document_chunks(doc_id)
            .await
            .map_err(store_failure)?;
        let cfg = &self.config;
        let window = u64::from(model.context_window);
        let part_budget = u64::from(cfg.summary_part_tokens)
            .min(window.saturating_sub(u64::from(cfg.summary_part_answer_tokens) + 200))
            .max(100);
        let parts = summarize::parts(&chunks, part_budget);
        if parts.is_empty() {
            return Err(JobFailure::permanent(
                Code::DocumentEmpty,
                "the document has no text to summarise",
            ));
        }
        let mut run = Run {
            h: self,
            principal,
            alias: alias.clone(),
            template,
            lang,
            title: doc.title.clone(),
            meter: Meter::default(),
            cancel: &ctx.cancel,
            floor: cfg.support_floor.max(0.5),
        };
        // Map: each part summarised; a part the model cannot summarise keeps its lead
        // sentences (counted, and said in the result).
        let mut summaries = Vec::new();
        let mut extractive = 0u32;
        for part in &parts {
            let m = summarize::map_prompt(&run.title, part, lang, template);
            let out = run
                .call(run.request(m, cfg.summary_part_answer_tokens))
                .await?;
            let (clean, _) = MarkerFilter::whole(0, &out);
            let text = match summarize::clean_map(&clean, &part.text, run.floor) {
                Some(t) => t,
                None => {
                    extractive += 1;
                    summarize::lead_sentences(&part.text, 2)
                }
            };
            summaries.push(Part {
                text,
                ..part.clone()
            });
        }
        let reduce_budget = window
            .saturating_sub(u64::from(cfg.summary_tokens))
            .saturating_sub(200);
        let (text, cited) = match run.reduce(&summaries, reduce_budget).await? {
            Some(x) => x,
            // The model's whole summary cited nothing checkable: the part summaries, in
            // order, each citing its part.
            None => (
                summaries
                    .iter()
                    .filter(|s| !s.text.is_empty())
                    .map(|s| format!("{} [{}]", s.text.trim(), s.n))
                    .collect::<Vec<_>>()
                    .join("\n"),
                summaries.clone(),
            ),
        };
        let summary = Summary {
            id: bunko_core::ids::new_id(),
            document_id: doc_id,
            language: lang.as_str().to_owned(),
            model: alias,
            text,
            citations: cited
                .iter()
                .map(|s| PageRef {
                    n: s.n,
                    document_id: doc_id,
                    title: doc.title.clone(),
                    page: s.page_start,
                    page_end: s.page_end,
                    section: s.section.clone(),
                })
                .collect(),
            parts: summaries
                .into_iter()
                .map(|s| PartSummary {
                    section: s.section,
                    page_start: s.page_start,
                    page_end: s.page_end,
                    text: s.text,
                })
                .collect(),
            extractive_parts: extractive,
            input_tokens: run.meter.input,
            output_tokens: run.meter.output,
            job_id: Some(ctx.job.id),
            created_at_ms: bunko_core::ids::now_ms(),
        };
        self.store
            .put_summary(&summary)
            .await
            .map_err(store_failure)?;
        Ok(Some(json!({
            "summary_id": summary.id, "document_id": doc_id, "parts": summary.parts.len(),
            "extractive_parts": extractive, "model": summary.model,
            "input_tokens": summary.input_tokens, "output_tokens": summary.output_tokens,
        })))
    }
}
