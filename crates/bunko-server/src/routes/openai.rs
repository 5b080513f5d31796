//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions` (JSON, or SSE
//! chunks ending in `data: [DONE]`) and `POST /v1/embeddings` (upstream aliases, and the
//! embedded embedder under its own name). Errors are OpenAI's `{"error": {…}}` (written by the
//! request middleware for every `/v1/` path), so the official SDKs raise their usual exceptions.

use crate::app::AppState;
use crate::gateway::{Call, GatewayService, Outcome};
use crate::http::auth::{GatewayScope, Scoped};
use crate::http::extract::Json;
use crate::http::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bunko_core::Code;
use bunko_core::identity::Principal;
use bunko_core::llm::{ChatEvent, ChatRequest, FinishReason, Message, Role, Usage};
use bunko_llm::gateway::{GatewayStream, Served};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn models(
    State(state): State<AppState>,
    Scoped(_, _): Scoped<GatewayScope>,
) -> ApiResult<axum::Json<Value>> {
    let mut data: Vec<Value> = state
        .gateway
        .router
        .aliases()
        .iter()
        .map(|a| json!({"id": a.alias, "object": "model", "created": 0, "owned_by": a.provider}))
        .collect();
    if state.gateway.embedder != "none" {
        data.push(json!({"id": state.gateway.embedder, "object": "model", "created": 0, "owned_by": "bunko"}));
    }
    Ok(axum::Json(json!({"object": "list", "data": data})))
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
pub struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields bunko uses; the others OpenAI clients send (`n`, `user`, `logprobs`…) are
/// accepted and ignored.
#[derive(Deserialize)]
pub struct ChatBody {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<Stop>,
    seed: Option<i64>,
    stream_options: Option<StreamOptions>,
}

/// Messages in any API's role names → the gateway's.
pub fn to_messages(
    items: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::new();
    for (i, (role, content)) in items.into_iter().enumerate() {
        let role = match role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::new(
                    Code::InvalidBody,
                    format!(
                        "messages[{i}].role: `{}` is not system, user or assistant",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        };
        out.push(Message { role, content });
    }
    if out.is_empty() {
        return Err(ApiError::new(
            Code::InvalidBody,
            "messages: at least one message is needed",
        ));
    }
    Ok(out)
}

impl ChatBody {
    fn request(&mut self) -> Result<ChatRequest, ApiError> {
        let items = self.messages.drain(..).map(|m| {
            let text = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => parts
                    .into_iter()
                    .filter(|p| p.kind == "text")
                    .filter_map(|p| p.text)
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            (m.role, text)
        });
        let messages = to_messages(items)?;
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ApiError::new(
                Code::InvalidInput,
                "temperature: must be between 0 and 2",
            ));
        }
        Ok(ChatRequest {
            messages,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            stop: match self.stop.take() {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s],
                Some(Stop::Many(v)) => v,
            },
            seed: self.seed,
        })
    }
}

fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"))
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<GatewayScope>,
    headers: HeaderMap,
    Json(mut body): Json<ChatBody>,
) -> ApiResult<Response> {
    let started = Instant::now();
    let req = body.request()?;
    let warning = state.gateway.admit(&principal).await?;
    let res = chat_completions_inner(&state, principal, &headers, body, req, started).await?;
    Ok(with_warning(res, warning))
}

/// Adds the soft-limit warning, when a quota passed one.
pub fn with_warning(mut res: Response, warning: Option<String>) -> Response {
    if let Some(w) = warning
        && let Ok(v) = HeaderValue::from_str(&w)
    {
        res.headers_mut().insert("x-bunko-quota-warning", v);
    }
    res
}

async fn chat_completions_inner(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    mut body: ChatBody,
    req: ChatRequest,
    started: Instant,
) -> ApiResult<Response> {
    let alias = std::mem::take(&mut body.model);
    let prompt = req.message_text();
    let gw = &state.gateway;
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    if body.stream {
        let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
        let (stream, served) = match gw.router.chat_stream(&alias, &req).await {
            Ok(s) => s,
            Err(e) => {
                gw.account(Call::failed(&principal, "openai", &alias, &prompt, started));
                return Err(GatewayService::error(e));
            }
        };
        let live = LiveStream::new(state.clone(), principal, alias, served, prompt, started);
        return Ok(sse_response(openai_sse(stream, live, id, include_usage)));
    }
    let nc = no_cache(headers);
    if let Some(r) = gw.cached(&alias, &req, nc).await {
        gw.account(Call {
            usage: r.usage,
            answer: &r.text,
            outcome: Outcome::Cached,
            ..Call::failed(&principal, "openai", &alias, &prompt, started)
        });
        return Ok(chat_json(
            &id,
            &alias,
            &r.text,
            r.finish_reason,
            r.usage,
            &prompt,
        ));
    }
    let upstream_started = Instant::now();
    let result = gw.router.chat(&alias, &req).await;
    let upstream = upstream_started.elapsed();
    match result {
        Ok((r, served)) => {
            gw.remember(&alias, &req, nc, &r).await;
            gw.account(Call {
                served: Some(&served),
                usage: r.usage,
                answer: &r.text,
                outcome: Outcome::Ok,
                ..Call::failed(&principal, "openai", &alias, &prompt, started)
            });
            let res = chat_json(&id, &alias, &r.text, r.finish_reason, r.usage, &prompt);
            gw.overhead(started.elapsed(), upstream);
            Ok(res)
        }
        Err(e) => {
            gw.account(Call::failed(&principal, "openai", &alias, &prompt, started));
            Err(GatewayService::error(e))
        }
    }
}

fn chat_json(
    id: &str,
    alias: &str,
    text: &str,
    finish: FinishReason,
    usage: Option<Usage>,
    prompt: &str,
) -> Response {
    let usage = usage.unwrap_or_else(|| Usage::estimate(prompt, text));
    axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": alias,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": finish.as_str(),
        }],
        "usage": usage_json(usage),
    }))
    .into_response()
}

/// A streamed call in progress: accounted when it ends, or as cancelled when the client goes
/// away first (dropping the body drops the upstream stream, which closes its connection).
pub struct LiveStream {
    pub state: AppState,
    pub principal: Principal,
    pub alias: String,
    pub served: Served,
    pub prompt: String,
    pub answer: String,
    pub started: Instant,
    pub first_token: Option<Instant>,
    pub usage: Option<Usage>,
    pub done: bool,
    /// The ledger's `api` for the call (`stream` unless set).
    pub api: &'static str,
}

impl LiveStream {
    /// A stream whose first token has just arrived.
    pub fn new(
        state: AppState,
        principal: Principal,
        alias: String,
        served: Served,
        prompt: String,
        started: Instant,
    ) -> Self {
        Self {
            state,
            principal,
            alias,
            served,
            prompt,
            answer: String::new(),
            started,
            first_token: Some(Instant::now()),
            usage: None,
            done: false,
            api: "stream",
        }
    }

    pub fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        self.state.gateway.account(Call {
            principal: &self.principal,
            api: self.api,
            alias: &self.alias,
            served: Some(&self.served),
            usage: self.usage,
            prompt_chars: &self.prompt,
            answer: &self.answer,
            outcome,
            started: self.started,
            first_token: self.first_token,
        });
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

pub fn sse_response(body: Body) -> Response {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

fn openai_sse(stream: GatewayStream, live: LiveStream, id: String, include_usage: bool) -> Body {
    struct St {
        stream: GatewayStream,
        live: LiveStream,
        id: String,
        include_usage: bool,
        sent_role: bool,
        over: bool,
    }
    let st = St {
        stream,
        live,
        id,
        include_usage,
        sent_role: false,
        over: false,
    };
    let chunk = |st: &St, delta: Value, finish: Option<&str>| -> String {
        let v = json!({
            "id": st.id,
            "object": "chat.completion.chunk",
            "created": now_secs(),
            "model": st.live.alias,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        format!("data: {v}\n\n")
    };
    let s = futures_util::stream::unfold(st, move |mut st| async move {
        if st.over {
            return None;
        }
        let mut out = String::new();
        if !st.sent_role {
            st.sent_role = true;
            out.push_str(&chunk(
                &st,
                json!({"role": "assistant", "content": ""}),
                None,
            ));
        }
        match st.stream.next().await {
            Some(Ok(ChatEvent::Delta(t))) => {
                st.live.answer.push_str(&t);
                out.push_str(&chunk(&st, json!({"content": t}), None));
            }
            Some(Ok(ChatEvent::Done {
                finish_reason,
                usage,
            })) => {
                st.live.usage = usage;
                out.push_str(&chunk(&st, json!({}), Some(finish_reason.as_str())));
                if st.include_usage {
                    let u =
                        usage.unwrap_or_else(|| Usage::estimate(&st.live.prompt, &st.live.answer));
                    let v = json!({
                        "id": st.id, "object": "chat.completion.chunk", "created": now_secs(),
                        "model": st.live.alias, "choices": [], "usage": usage_json(u),
                    });
                    out.push_str(&format!("data: {v}\n\n"));
                }
                out.push_str("data: [DONE]\n\n");
                st.live.finish(Outcome::Ok);
                st.over = true;
            }
            Some(Err(e)) => {
                // The status is sent already: the error goes in the stream, as OpenAI does.
                let v = json!({"error": {"message": e.to_string(), "type": "api_error", "param": null, "code": "upstream_unavailable"}});
                out.push_str(&format!("data: {v}\n\n"));
                st.live.finish(Outcome::Error);
                st.over = true;
            }
            None => {
                st.live.finish(Outcome::Error);
                st.over = true;
            }
        }
        Some((Ok::<_, std::convert::Infallible>(out), st))
    });
    Body::from_stream(s)
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub struct EmbeddingsBody {
    model: String,
    input: Input,
}

/// Embeds with the embedded embedder (its name as the model) or an upstream alias.
pub async fn embed_texts(
    state: &AppState,
    principal: &Principal,
    api: &'static str,
    model: &str,
    input: Vec<String>,
) -> ApiResult<(Vec<Vec<f32>>, u64, Option<String>)> {
    if input.is_empty() || input.len() > 2048 {
        return Err(ApiError::new(
            Code::InvalidInput,
            "input: between 1 and 2048 texts",
        ));
    }
    let warning = state.gateway.admit(principal).await?;
    let started = Instant::now();
    let text: String = input.concat();
    let result = embed_uncounted(state, model, input).await;
    let (usage, outcome) = match &result {
        Ok((_, tokens)) => (
            Some(Usage {
                input_tokens: *tokens,
                output_tokens: 0,
            }),
            Outcome::Ok,
        ),
        Err(_) => (None, Outcome::Error),
    };
    state.gateway.account(Call {
        principal,
        api,
        alias: model,
        served: None,
        usage,
        prompt_chars: &text,
        answer: "",
        outcome,
        started,
        first_token: None,
    });
    let (vecs, tokens) = result?;
    Ok((vecs, tokens, warning))
}

async fn embed_uncounted(
    state: &AppState,
    model: &str,
    input: Vec<String>,
) -> ApiResult<(Vec<Vec<f32>>, u64)> {
    if model == state.gateway.embedder && model != "none" {
        let state2 = state.clone();
        let texts = input.clone();
        let vecs = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<f32>>, String> {
            let ready = state2.vector.get().map_err(|e| e.0)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let e = ready.encoder.embed(&refs, bunko_embed::Role::Passage);
            Ok((0..refs.len()).map(|i| e.get(i).to_vec()).collect())
        })
        .await
        .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?
        .map_err(|e| ApiError::new(Code::Unavailable, e))?;
        let tokens = input
            .iter()
            .map(|t| bunko_core::llm::estimate_tokens(t))
            .sum();
        return Ok((vecs, tokens));
    }
    let ((vecs, tokens), _) = state
        .gateway
        .router
        .embed(model, &input)
        .await
        .map_err(GatewayService::error)?;
    let tokens = tokens.unwrap_or_else(|| {
        input
            .iter()
            .map(|t| bunko_core::llm::estimate_tokens(t))
            .sum()
    });
    Ok((vecs, tokens))
}

pub async fn embeddings(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<GatewayScope>,
    Json(body): Json<EmbeddingsBody>,
) -> ApiResult<Response> {
    let input = match body.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
    };
    let (vecs, tokens, warning) =
        embed_texts(&state, &principal, "openai.embeddings", &body.model, input).await?;
    let data: Vec<Value> = vecs
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    let res = axum::Json(json!({
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response();
    Ok(with_warning(res, warning))
}
