//! `POST /api/v1/ask`: hybrid retrieval over the projects the caller may ask in → numbered
//! passages fitted to the model's context → an answer through the gateway (metered, quota'd
//! and in the usage ledger like any other call) → citation markers filtered as they stream and
//! every citation scored against its passage. With no relevant passage the model is not
//! called; with the embedded base model an answer that cites nothing becomes an extractive one.
//!
//! Streaming is Server-Sent Events, in this order: `sources`, `delta`…, `citations`, `done`
//! (an `error` event before `done` when the model fails mid-answer).

use crate::app::AppState;
use crate::gateway::{Call, GatewayService, Outcome};
use crate::http::auth::{AskScope, Scoped};
use crate::http::extract::Json;
use crate::http::{ApiError, ApiResult};
use crate::routes::openai::{LiveStream, sse_response, with_warning};
use crate::routes::search::{Engines, search_blocking};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bunko_core::answers::Turn;
use bunko_core::identity::{Principal, Scope};
use bunko_core::llm::{ChatEvent, ChatRequest, Usage};
use bunko_core::rag::{self, Lang, MarkerFilter, Passage, Template};
use bunko_core::search::{Mode, parse_filters, projects_for};
use bunko_core::{Code, Error};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use utoipa::ToSchema;
use uuid::Uuid;

/// The longest question accepted, in characters.
pub const MAX_QUESTION_CHARS: usize = 8_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    /// The question, Japanese, English or mixed.
    question: String,
    /// Project ids or slugs; default: every project you may ask in.
    projects: Option<Vec<String>>,
    /// Only these documents (of those projects).
    documents: Option<Vec<Uuid>>,
    /// Passages to retrieve, 1–20 (default `rag.k`).
    k: Option<u32>,
    /// A model alias (default `rag.model`).
    model: Option<String>,
    /// Server-Sent Events instead of one JSON object.
    #[serde(default)]
    stream: bool,
    /// The same filters as `POST /api/v1/search`.
    #[schema(value_type = Option<crate::routes::search::SearchFilters>)]
    filters: Option<Value>,
    /// `ja` or `en`; default: the question's language.
    language: Option<String>,
    /// Tokens the answer may take (default `rag.answer_tokens`).
    max_tokens: Option<u32>,
    /// Continue this conversation (every answer returns its `conversation_id`): the earlier
    /// turns that fit the model's context go with the question, and the question before this
    /// one helps retrieval.
    conversation_id: Option<Uuid>,
}

impl AskBody {
    /// A one-off, non-streamed question (notes are generated this way).
    pub fn question(
        question: String,
        projects: Vec<String>,
        documents: Option<Vec<Uuid>>,
        model: Option<String>,
    ) -> Self {
        Self {
            question,
            projects: Some(projects),
            documents,
            k: None,
            model,
            stream: false,
            filters: None,
            language: None,
            max_tokens: None,
            conversation_id: None,
        }
    }
}

/// A numbered passage the answer may cite.
#[derive(Serialize, ToSchema, Clone)]
pub struct Source {
    pub(crate) n: usize,
    pub(crate) document_id: Uuid,
    pub(crate) title: String,
    /// 1-based first page.
    pub(crate) page: u32,
    pub(crate) page_end: u32,
    pub(crate) section: String,
    /// Character span in the document's normalised text.
    pub(crate) span: [u32; 2],
    pub(crate) text: String,
    pub(crate) chunk_id: String,
}

/// One cited source after the check.
#[derive(Serialize, ToSchema, Clone)]
pub struct Citation {
    pub(crate) n: usize,
    /// False for a marker with no such source (removed from the answer) or a passage that does
    /// not support the sentences citing it.
    pub(crate) kept: bool,
    /// Best share of a citing sentence's content terms found in the passage (0–1).
    pub(crate) support: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AskUsage {
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
}

#[derive(Serialize, ToSchema)]
pub struct AskTimings {
    pub(crate) retrieval_ms: f64,
    /// Until the model was asked: retrieval, passages, prompt (0 when no model was called).
    pub(crate) model_start_ms: f64,
    /// To the first answer text (0 when no model was called).
    pub(crate) first_token_ms: f64,
    pub(crate) total_ms: f64,
}

#[derive(Serialize, ToSchema)]
pub struct AskResponse {
    pub(crate) answer: String,
    /// The answer is made of the passages' own sentences (the model cited nothing).
    pub(crate) extractive: bool,
    /// The documents hold no answer; no model was called.
    pub(crate) not_found: bool,
    /// The model failed part-way; `answer` is what arrived.
    pub(crate) incomplete: bool,
    pub(crate) language: String,
    pub(crate) sources: Vec<Source>,
    pub(crate) citations: Vec<Citation>,
    pub(crate) usage: AskUsage,
    /// The model alias that answered (empty when none was called).
    pub(crate) model: String,
    pub(crate) timings: AskTimings,
    pub(crate) warnings: Vec<String>,
    /// Pass it back as `conversation_id` to ask a follow-up.
    pub(crate) conversation_id: Uuid,
}

/// What retrieval produced for one question.
struct Prepared {
    question: String,
    lang: Lang,
    alias: String,
    template: Template,
    passages: Vec<Passage>,
    relevant: bool,
    max_tokens: u32,
    retrieval: Duration,
    warnings: Vec<String>,
    conversation_id: Uuid,
    /// A new conversation's owner: it is created with its first kept turn, so a question
    /// refused later (quota, a failed model) leaves nothing behind.
    new_conversation: Option<Uuid>,
    history: Vec<Turn>,
}

fn source(p: &Passage) -> Source {
    Source {
        n: p.n,
        document_id: p.document_id,
        title: p.title.clone(),
        page: p.page_start,
        page_end: p.page_end,
        section: p.section.clone(),
        span: [p.span.0, p.span.1],
        text: p.text.clone(),
        chunk_id: p.chunk_id.clone(),
    }
}

fn citations(checks: &[rag::CitationCheck]) -> Vec<Citation> {
    checks
        .iter()
        .map(|c| Citation {
            n: c.n,
            kept: c.kept,
            support: (c.support * 1000.0).round() / 1000.0,
            reason: c.reason.clone(),
        })
        .collect()
}

/// One Server-Sent Event of a streamed answer: `event` is `sources`, `delta`, `replace`,
/// `citations`, `error` or `done`; `data` is its JSON object.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the shape of the stream written below
pub struct AskEvent {
    event: String,
    data: String,
}

/// Ask a question over your documents; the answer cites numbered passages.
#[utoipa::path(post, path = "/api/v1/ask", tag = "ask", request_body = AskBody,
    responses((status = 200, description = "The answer as JSON, or with `stream: true` as Server-Sent Events (`sources`, `delta`…, `citations`, `done`)",
               content((AskResponse = "application/json"), (AskEvent = "text/event-stream"))),
              (status = 400, description = "query_empty, invalid_input, invalid_filter"),
              (status = 404, description = "not_found (a project you cannot see), model_not_found"),
              (status = 429, description = "quota_exceeded")),
    security(("bearer" = [])))]
pub async fn ask(
    Scoped(principal, _): Scoped<AskScope>,
    State(state): State<AppState>,
    Json(body): Json<AskBody>,
) -> ApiResult<Response> {
    answer(state, principal, body).await
}

/// The whole of `POST /api/v1/ask` after authentication (the CLI calls it in-process).
pub async fn answer(state: AppState, principal: Principal, body: AskBody) -> ApiResult<Response> {
    let started = Instant::now();
    let stream = body.stream;
    Ok(match begin(&state, &principal, body).await? {
        Begun::NotFound(res) if stream => sse_response(Body::from(not_found_events(&res))),
        Begun::NotFound(res) => axum::Json(res).into_response(),
        Begun::Model(prepared, warning) => with_warning(
            if stream {
                stream_answer(state, principal, prepared, started).await?
            } else {
                whole_answer(&state, &principal, prepared, started)
                    .await?
                    .into_response()
            },
            warning,
        ),
    })
}

/// A whole (not streamed) answer as a value: notes are generated this way.
pub async fn answer_value(
    state: &AppState,
    principal: &Principal,
    body: AskBody,
) -> Result<AskResponse, ApiError> {
    let started = Instant::now();
    match begin(state, principal, body).await? {
        Begun::NotFound(res) => Ok(res),
        Begun::Model(prepared, _) => Ok(whole_answer(state, principal, prepared, started).await?.0),
    }
}

enum Begun {
    /// Nothing relevant was found: the answer says so and no model is called.
    NotFound(AskResponse),
    /// The passages are ready and the caller's quota admits a model call (with its warning).
    Model(Prepared, Option<String>),
}

async fn begin(state: &AppState, principal: &Principal, body: AskBody) -> Result<Begun, ApiError> {
    let started = Instant::now();
    let prepared = prepare(state, principal, body).await?;
    if !prepared.relevant && !state.config.rag.call_model_without_sources {
        count_answer(state, "not_found");
        let res = not_found(&prepared, started);
        remember(state, &prepared, &res.answer).await;
        return Ok(Begun::NotFound(res));
    }
    let warning = state.gateway.admit(principal).await?;
    Ok(Begun::Model(prepared, warning))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError(Error::new(Code::InvalidInput, detail))
}

/// Checks the request, retrieves and fits the passages.
async fn prepare(state: &AppState, p: &Principal, b: AskBody) -> Result<Prepared, ApiError> {
    let cfg = &state.config.rag;
    let question = b.question.trim().to_owned();
    if question.is_empty() {
        return Err(ApiError(Error::new(
            Code::QueryEmpty,
            "the question is empty",
        )));
    }
    let chars = question.chars().count();
    if chars > MAX_QUESTION_CHARS {
        return Err(invalid(format!(
            "the question is {chars} characters; at most {MAX_QUESTION_CHARS}"
        )));
    }
    let k = b.k.unwrap_or(cfg.k);
    if !(1..=20).contains(&k) {
        return Err(invalid("k must be between 1 and 20"));
    }
    if let Some(l) = b.language.as_deref()
        && !matches!(l, "ja" | "en")
    {
        return Err(invalid("language must be `ja` or `en`"));
    }
    let lang = Lang::of(&question, b.language.as_deref());
    let (conversation_id, turns) = match b.conversation_id {
        Some(id) => {
            // Someone else's conversation is as unknown as one that never existed.
            if state.store.conversation_owner(id).await? != Some(p.user_id) {
                return Err(ApiError(Error::new(
                    Code::NotFound,
                    format!("conversation {id} does not exist"),
                )));
            }
            (id, state.store.conversation_turns(id, HISTORY_TURNS).await?)
        }
        None => (bunko_core::ids::new_id(), Vec::new()),
    };
    let alias = b.model.unwrap_or_else(|| cfg.model.clone());
    let Some(model) = state.gateway.router.alias(&alias).cloned() else {
        return Err(GatewayService::error(
            bunko_llm::gateway::GatewayError::UnknownModel(alias),
        ));
    };
    let max_tokens = b.max_tokens.unwrap_or(cfg.answer_tokens);
    if !(1..=8192).contains(&max_tokens) {
        return Err(invalid("max_tokens must be between 1 and 8192"));
    }
    let template = Template::for_provider(state.gateway.router.provider_kind(&alias));
    let mut filters = parse_filters(b.filters.as_ref().unwrap_or(&Value::Null))?;
    let mut warnings = Vec::new();
    if let Some(docs) = b.documents {
        if docs.is_empty() || docs.len() > 1000 {
            return Err(invalid("documents must list 1 to 1000 ids"));
        }
        // A document named but not ready is said so, not silently missing from the sources.
        for id in &docs {
            if let Some(d) = state.store.get_document(*id).await?
                && d.status != bunko_core::documents::DocStatus::Ready
            {
                warnings.push(format!(
                    "document {id} is {}: its text is not searched yet",
                    d.status.as_str()
                ));
            }
        }
        filters.document_ids.extend(docs);
    }
    // Every project named must be visible and allow `ask` (404 / 403 otherwise); none named:
    // every project the caller may ask in.
    let mut projects = Vec::new();
    match b.projects {
        Some(list) if list.is_empty() || list.len() > 100 => {
            return Err(invalid("projects must list 1 to 100 projects"));
        }
        Some(list) => {
            for key in list {
                for pr in projects_for(state.store.as_ref(), p, Some(&key), Scope::Ask).await? {
                    if !projects
                        .iter()
                        .any(|x: &bunko_core::ports::Project| x.id == pr.id)
                    {
                        projects.push(pr);
                    }
                }
            }
        }
        None => projects = projects_for(state.store.as_ref(), p, None, Scope::Ask).await?,
    }
    let retrieval_started = Instant::now();
    let pids: Vec<Uuid> = projects.iter().map(|p| p.id).collect();
    let documents = super::search::document_set(state.store.as_ref(), &pids, &filters).await?;
    let mut found = Vec::new();
    let nothing_to_search = projects.is_empty() || documents.is_empty();
    if !nothing_to_search {
        let Ok(_permit) = state.search_permits.clone().try_acquire_owned() else {
            return Err(ApiError(
                Error::unavailable("search is at capacity; retry shortly")
                    .with_retry_after(Duration::from_secs(1)),
            ));
        };
        let ids: Vec<String> = projects.iter().map(|p| p.id.to_string()).collect();
        let (st, text) = (state.clone(), rag::retrieval_text(&question, &turns));
        let out = crate::telemetry::spawn_blocking_in_span(move || {
            let engines = Engines {
                keyword: &st.keyword,
                vector: &st.vector,
                pg: st.pg_index.as_deref(),
                config: &st.config.search,
                metrics: Some(&st.metrics),
            };
            search_blocking(&engines, &ids, &documents, &text, k as usize, Mode::Hybrid)
        })
        .await
        .map_err(Error::internal)??;
        warnings.extend(out.warnings);
        let ids: Vec<String> = out
            .results
            .iter()
            .map(|h| h.chunk_id().to_owned())
            .collect();
        let titles: HashMap<String, String> = out
            .results
            .iter()
            .map(|h| (h.chunk_id().to_owned(), h.title().to_owned()))
            .collect();
        let chunks = state.store.chunks_by_id(&ids).await?;
        let by_id: HashMap<&str, &bunko_core::documents::ChunkRecord> =
            chunks.iter().map(|c| (c.id.as_str(), c)).collect();
        for id in &ids {
            // Chunks indexed without a stored record (none in normal operation) are skipped:
            // a source must point at a page.
            if let Some(c) = by_id.get(id.as_str()) {
                found.push(Passage {
                    n: 0,
                    chunk_id: c.id.clone(),
                    document_id: c.document_id,
                    title: titles.get(id).cloned().unwrap_or_default(),
                    page_start: c.page_start,
                    page_end: c.page_end,
                    section: c.section_path.clone(),
                    span: (c.char_start, c.char_end),
                    text: c.text.clone(),
                    language: c.language.clone(),
                });
            }
        }
    }
    let budget = u64::from(model.context_window)
        .saturating_sub(u64::from(max_tokens))
        .saturating_sub(rag::prompt_overhead(&question));
    // Earlier turns take at most a quarter of the room; the passages get the rest.
    let history = rag::fit_history(&turns, budget / 4);
    let budget = budget.saturating_sub(rag::history_tokens(&history));
    let passages = rag::fit_passages(found, budget);
    let relevant = rag::relevant(&question, &passages, state.config.rag.relevance_floor);
    Ok(Prepared {
        question,
        lang,
        alias,
        template,
        passages,
        relevant,
        max_tokens,
        retrieval: retrieval_started.elapsed(),
        warnings,
        conversation_id,
        new_conversation: b.conversation_id.is_none().then_some(p.user_id),
        history,
    })
}

/// Earlier turns read for a follow-up (those that fit the budget are used).
const HISTORY_TURNS: u32 = 20;

/// Adds the turn to its conversation; a failure costs the follow-up its context, not the
/// answer, so it is logged rather than returned.
async fn remember(state: &AppState, p: &Prepared, answer: &str) {
    let turn = Turn {
        question: p.question.clone(),
        answer: answer.to_owned(),
        at_ms: bunko_core::ids::now_ms(),
    };
    let kept = async {
        if let Some(owner) = p.new_conversation {
            state
                .store
                .create_conversation(p.conversation_id, owner)
                .await?;
        }
        state.store.append_turn(p.conversation_id, &turn).await
    };
    if let Err(e) = kept.await {
        tracing::warn!(error = %e, conversation = %p.conversation_id, "the turn was not kept");
    }
}

fn not_found(p: &Prepared, started: Instant) -> AskResponse {
    AskResponse {
        answer: p.lang.not_found().to_owned(),
        extractive: false,
        not_found: true,
        incomplete: false,
        language: p.lang.as_str().to_owned(),
        sources: Vec::new(),
        citations: Vec::new(),
        usage: AskUsage {
            input_tokens: 0,
            output_tokens: 0,
        },
        model: String::new(),
        timings: AskTimings {
            retrieval_ms: p.retrieval.as_secs_f64() * 1000.0,
            model_start_ms: 0.0,
            first_token_ms: 0.0,
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        warnings: p.warnings.clone(),
        conversation_id: p.conversation_id,
    }
}

fn request(p: &Prepared) -> ChatRequest {
    ChatRequest {
        messages: rag::prompt(&p.question, &p.history, &p.passages, p.lang, p.template),
        max_tokens: Some(match p.template {
            Template::Completion => p.max_tokens.min(rag::COMPLETION_MAX_TOKENS),
            Template::Chat => p.max_tokens,
        }),
        temperature: Some(0.0),
        top_p: None,
        // A base model continuing the prompt goes on to write the next source or question:
        // its answer is the first paragraph.
        stop: match p.template {
            Template::Completion => rag::COMPLETION_STOPS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Template::Chat => Vec::new(),
        },
        seed: None,
    }
}

/// The checked answer: invalid markers gone, citations scored, and — when the embedded base
/// model's answer does not stand (see [`finish`]) or a model answered nothing — the passages'
/// own sentences instead.
struct Final {
    answer: String,
    extractive: bool,
    checks: Vec<rag::CitationCheck>,
    /// Said about the answer (one that cites no source).
    warning: Option<String>,
}

/// Checks a model's answer (`filtered`: markers outside the sources already taken out, their
/// numbers in `removed`), counts its citations and the answer (`failed` when `incomplete`).
fn finish(
    state: &AppState,
    p: &Prepared,
    filtered: String,
    removed: &[usize],
    incomplete: bool,
) -> Final {
    let floor = state.config.rag.support_floor;
    // A marker naming no source (removed from the text, reported).
    let invalid = |c: &rag::CitationCheck| c.n == 0 || c.n > p.passages.len();
    let checks = rag::check_citations(&filtered, &p.passages, removed, floor);
    let cites_none = checks.iter().all(invalid);
    // The embedded base model's answer stands only with a citation its passage supports, not
    // copying the sources' headers and not looping; otherwise the passages' own sentences do.
    let weak = p.template == Template::Completion
        && (!checks.iter().any(|c| c.kept)
            || rag::echoes_headers(&filtered, &p.passages)
            || rag::degenerate(&filtered));
    let (answer, extractive, checks) = if weak || filtered.trim().is_empty() {
        let e = rag::extractive(&p.question, &p.passages, 3);
        let mut c = rag::check_citations(&e, &p.passages, &[], floor);
        // The invalid markers the model wrote are still reported.
        c.extend(checks.into_iter().filter(|c| invalid(c)));
        (e, true, c)
    } else {
        (filtered, false, checks)
    };
    let m = &state.metrics.rag_citations;
    for c in &checks {
        let outcome = if invalid(c) {
            "invalid"
        } else if c.kept {
            "supported"
        } else {
            "unsupported"
        };
        m.with_label_values(&[outcome]).inc();
    }
    count_answer(
        state,
        match (incomplete, extractive) {
            (true, _) => "failed",
            (false, true) => "extractive",
            (false, false) => "generated",
        },
    );
    let warning = (!extractive && cites_none)
        .then(|| "the answer cites no source: check it against the sources yourself".to_owned());
    Final {
        answer,
        extractive,
        checks,
        warning,
    }
}

/// `bunko_rag_answers_total{kind}`.
fn count_answer(state: &AppState, kind: &str) {
    state.metrics.rag_answers.with_label_values(&[kind]).inc();
}

/// A model call that failed before any answer: accounted, and the caller's error.
fn failed(
    state: &AppState,
    principal: &Principal,
    alias: &str,
    prompt: &str,
    started: Instant,
    e: bunko_llm::gateway::GatewayError,
) -> ApiError {
    state
        .gateway
        .account(Call::failed(principal, "ask", alias, prompt, started));
    GatewayService::error(e)
}

async fn whole_answer(
    state: &AppState,
    principal: &Principal,
    p: Prepared,
    started: Instant,
) -> ApiResult<axum::Json<AskResponse>> {
    let model_start = Instant::now();
    let (r, served, usage) = state
        .gateway
        .chat(principal, "ask", &p.alias, &request(&p), started)
        .await
        .inspect_err(|_| count_answer(state, "failed"))?;
    let first_token = Instant::now();
    let (filtered, f) = MarkerFilter::whole(p.passages.len(), &r.text);
    let fin = finish(state, &p, filtered, &f.removed, false);
    remember(state, &p, &fin.answer).await;
    Ok(axum::Json(AskResponse {
        answer: fin.answer,
        extractive: fin.extractive,
        not_found: false,
        incomplete: false,
        language: p.lang.as_str().to_owned(),
        sources: p.passages.iter().map(source).collect(),
        citations: citations(&fin.checks),
        usage: AskUsage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
        },
        model: served.alias.alias.clone(),
        timings: AskTimings {
            retrieval_ms: p.retrieval.as_secs_f64() * 1000.0,
            model_start_ms: model_start.duration_since(started).as_secs_f64() * 1000.0,
            first_token_ms: first_token.duration_since(started).as_secs_f64() * 1000.0,
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        warnings: p.warnings.into_iter().chain(fin.warning).collect(),
        conversation_id: p.conversation_id,
    }))
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn not_found_events(r: &AskResponse) -> String {
    let mut s = event(
        "sources",
        &json!({"sources": [], "not_found": true, "conversation_id": r.conversation_id}),
    );
    s.push_str(&event("delta", &json!({"text": r.answer})));
    s.push_str(&event("citations", &json!({"citations": []})));
    s.push_str(&event(
        "done",
        &json!({"not_found": true, "extractive": false, "incomplete": false, "model": "",
                "language": r.language, "usage": {"input_tokens": 0, "output_tokens": 0},
                "timings": {"retrieval_ms": r.timings.retrieval_ms, "model_start_ms": 0.0, "first_token_ms": 0.0, "total_ms": r.timings.total_ms},
                "conversation_id": r.conversation_id}),
    ));
    s
}

async fn stream_answer(
    state: AppState,
    principal: Principal,
    p: Prepared,
    started: Instant,
) -> ApiResult<Response> {
    /// The model's stream once it has answered, with its accounting.
    struct Live {
        stream: bunko_llm::gateway::GatewayStream,
        live: LiveStream,
    }
    struct St {
        state: AppState,
        principal: Principal,
        req: ChatRequest,
        prompt: String,
        started: Instant,
        /// Set when the model is asked (after the `sources` event went out).
        model_start: Option<Instant>,
        conn: Option<Live>,
        p: Prepared,
        alias: String,
        filter: MarkerFilter,
        shown: String,
        sent_sources: bool,
        over: bool,
    }
    let req = request(&p);
    let prompt = req.message_text();
    let st = St {
        state,
        principal,
        req,
        prompt,
        started,
        model_start: None,
        conn: None,
        filter: MarkerFilter::new(p.passages.len()),
        alias: p.alias.clone(),
        p,
        shown: String::new(),
        sent_sources: false,
        over: false,
    };
    // Sends the closing events; returns the answer as the reader finally sees it.
    fn end(st: &mut St, out: &mut String, incomplete: Option<(String, &str)>) -> String {
        let rest = st.filter.finish();
        st.shown.push_str(&rest);
        let fin = finish(
            &st.state,
            &st.p,
            std::mem::take(&mut st.shown),
            &st.filter.removed,
            incomplete.is_some(),
        );
        if fin.extractive {
            // The answer is replaced: say so, then send it whole.
            out.push_str(&event(
                "replace",
                &json!({"text": fin.answer, "extractive": true}),
            ));
        } else if !rest.is_empty() {
            out.push_str(&event("delta", &json!({"text": rest})));
        }
        out.push_str(&event(
            "citations",
            &json!({"citations": citations(&fin.checks)}),
        ));
        if let Some((why, code)) = &incomplete {
            out.push_str(&event("error", &json!({"message": why, "code": code})));
        }
        let (usage, first_token) = match &st.conn {
            Some(c) => (
                c.live
                    .usage
                    .unwrap_or_else(|| Usage::estimate(&c.live.prompt, &c.live.answer)),
                c.live.first_token,
            ),
            None => (Usage::estimate(&st.prompt, ""), None),
        };
        let ms = |t: Option<Instant>| {
            t.map_or(0.0, |t| t.duration_since(st.started).as_secs_f64() * 1000.0)
        };
        out.push_str(&event(
            "done",
            &json!({
                "not_found": false, "extractive": fin.extractive,
                "incomplete": incomplete.is_some(), "model": st.alias,
                "language": st.p.lang.as_str(),
                "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
                "timings": {
                    "retrieval_ms": st.p.retrieval.as_secs_f64() * 1000.0,
                    "model_start_ms": ms(st.model_start),
                    "first_token_ms": ms(first_token),
                    "total_ms": st.started.elapsed().as_secs_f64() * 1000.0,
                },
                "warnings": st.p.warnings.iter().cloned().chain(fin.warning.clone()).collect::<Vec<_>>(),
                "conversation_id": st.p.conversation_id,
            }),
        ));
        st.over = true;
        fin.answer
    }
    let s = futures_util::stream::unfold(st, |mut st| async move {
        if st.over {
            return None;
        }
        let mut out = String::new();
        // The sources go out first, before the model is asked: a reader sees what the answer
        // will be drawn from while the model reads its prompt.
        if !st.sent_sources {
            st.sent_sources = true;
            let sources: Vec<Source> = st.p.passages.iter().map(source).collect();
            out.push_str(&event(
                "sources",
                &json!({"sources": sources, "not_found": false, "conversation_id": st.p.conversation_id}),
            ));
            return Some((Ok::<_, std::convert::Infallible>(out), st));
        }
        if st.conn.is_none() {
            st.model_start = Some(Instant::now());
            let gw = st.state.gateway.clone();
            match gw.router.chat_stream(&st.p.alias, &st.req).await {
                Ok((stream, served)) => {
                    st.alias = served.alias.alias.clone();
                    let mut live = LiveStream::new(
                        st.state.clone(),
                        st.principal.clone(),
                        st.p.alias.clone(),
                        served,
                        st.prompt.clone(),
                        st.started,
                    );
                    live.api = "ask";
                    st.conn = Some(Live { stream, live });
                }
                Err(e) => {
                    // Accounted as a failed call (and counted once, by `end`); the reader gets
                    // the passages' own sentences, marked incomplete, with the reason.
                    let err = failed(
                        &st.state,
                        &st.principal,
                        &st.p.alias,
                        &st.prompt,
                        st.started,
                        e,
                    );
                    let code = err.0.code.as_str();
                    let answer = end(&mut st, &mut out, Some((err.0.detail.clone(), code)));
                    remember(&st.state, &st.p, &answer).await;
                    return Some((Ok(out), st));
                }
            }
        }
        let conn = st.conn.as_mut()?;
        match conn.stream.next().await {
            Some(Ok(ChatEvent::Delta(t))) => {
                conn.live.answer.push_str(&t);
                let shown = st.filter.push(&t);
                if !shown.is_empty() {
                    st.shown.push_str(&shown);
                    out.push_str(&event("delta", &json!({"text": shown})));
                }
            }
            Some(Ok(ChatEvent::Done { usage, .. })) => {
                conn.live.usage = usage;
                conn.live.finish(Outcome::Ok);
                let answer = end(&mut st, &mut out, None);
                remember(&st.state, &st.p, &answer).await;
            }
            Some(Err(e)) => {
                conn.live.finish(Outcome::Error);
                let answer = end(
                    &mut st,
                    &mut out,
                    Some((e.to_string(), "upstream_unavailable")),
                );
                remember(&st.state, &st.p, &answer).await;
            }
            None => {
                conn.live.finish(Outcome::Error);
                let answer = end(
                    &mut st,
                    &mut out,
                    Some((
                        "the model's stream ended early".into(),
                        "upstream_unavailable",
                    )),
                );
                remember(&st.state, &st.p, &answer).await;
            }
        }
        Some((Ok(out), st))
    });
    Ok(sse_response(Body::from_stream(s)))
}
