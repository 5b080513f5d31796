//! The Ollama-compatible API: `GET /api/tags`, `GET /api/version`, `POST /api/show`,
//! `POST /api/chat`, `POST /api/generate` (NDJSON streamed by default, as Ollama does) and
//! `POST /api/embed`, over the same gateway as the OpenAI-compatible API. Errors are Ollama's
//! `{"error": "…"}` (written by the request middleware for these paths).

use super::openai::{LiveStream, embed_texts, to_messages, with_warning};
use crate::app::AppState;
use crate::gateway::{Call, GatewayService, Outcome};
use crate::http::auth::{GatewayScope, Scoped};
use crate::http::extract::Json;
use crate::http::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bunko_core::Code;
use bunko_core::llm::{ChatEvent, ChatRequest, Message, Role, Usage};
use bunko_llm::gateway::GatewayStream;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Instant;

/// The Ollama API version these routes follow.
pub const OLLAMA_API_VERSION: &str = "0.6.0";

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

pub async fn version(Scoped(_, _): Scoped<GatewayScope>) -> axum::Json<Value> {
    axum::Json(json!({"version": OLLAMA_API_VERSION}))
}

fn details(provider: &str) -> Value {
    json!({
        "parent_model": "",
        "format": "",
        "family": provider,
        "families": [provider],
        "parameter_size": "",
        "quantization_level": "",
    })
}

pub async fn tags(
    State(state): State<AppState>,
    Scoped(_, _): Scoped<GatewayScope>,
) -> axum::Json<Value> {
    let modified = now_rfc3339();
    let mut models: Vec<Value> = state
        .gateway
        .router
        .aliases()
        .iter()
        .map(|a| {
            json!({
                "name": a.alias, "model": a.alias, "modified_at": modified, "size": 0,
                "digest": "", "details": details(&a.provider),
            })
        })
        .collect();
    if state.gateway.embedder != "none" {
        models.push(json!({
            "name": state.gateway.embedder, "model": state.gateway.embedder,
            "modified_at": modified, "size": 0, "digest": "", "details": details("bunko"),
        }));
    }
    axum::Json(json!({"models": models}))
}

#[derive(Deserialize)]
pub struct ShowBody {
    #[serde(alias = "name")]
    model: String,
}

pub async fn show(
    State(state): State<AppState>,
    Scoped(_, _): Scoped<GatewayScope>,
    Json(body): Json<ShowBody>,
) -> ApiResult<axum::Json<Value>> {
    let gw = &state.gateway;
    let (provider, context, capabilities) = match gw.router.alias(&body.model) {
        Some(a) => (a.provider.clone(), a.context_window, vec!["completion"]),
        None if body.model == gw.embedder && gw.embedder != "none" => {
            ("bunko".to_owned(), 512, vec!["embedding"])
        }
        None => {
            return Err(GatewayService::error(
                bunko_llm::gateway::GatewayError::UnknownModel(body.model),
            ));
        }
    };
    Ok(axum::Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details(&provider),
        "model_info": {"general.architecture": provider, "general.context_length": context},
        "capabilities": capabilities,
        "modified_at": now_rfc3339(),
    })))
}

#[derive(Deserialize, Default)]
pub struct Options {
    temperature: Option<f32>,
    num_predict: Option<i64>,
    top_p: Option<f32>,
    seed: Option<i64>,
    #[serde(default)]
    stop: Vec<String>,
}

#[derive(Deserialize)]
pub struct InMessage {
    role: String,
    #[serde(default)]
    content: String,
}

/// `/api/chat` and `/api/generate` bodies (fields Ollama clients send that bunko does not use —
/// `format`, `keep_alive`, `images`, `tools` — are accepted and ignored).
#[derive(Deserialize)]
pub struct GenBody {
    model: String,
    #[serde(default)]
    messages: Vec<InMessage>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    system: Option<String>,
    /// Ollama streams unless told not to.
    #[serde(default = "yes")]
    stream: bool,
    #[serde(default)]
    options: Option<Options>,
}

fn yes() -> bool {
    true
}

impl GenBody {
    fn request(&mut self, generate: bool) -> Result<ChatRequest, ApiError> {
        let messages = if generate {
            let mut m = Vec::new();
            if let Some(s) = self.system.take().filter(|s| !s.is_empty()) {
                m.push(Message {
                    role: Role::System,
                    content: s,
                });
            }
            m.push(Message {
                role: Role::User,
                content: self.prompt.take().unwrap_or_default(),
            });
            m
        } else {
            to_messages(self.messages.drain(..).map(|m| (m.role, m.content)))?
        };
        let o = self.options.take().unwrap_or_default();
        Ok(ChatRequest {
            messages,
            max_tokens: o
                .num_predict
                .filter(|n| *n > 0)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            temperature: o.temperature,
            top_p: o.top_p,
            stop: o.stop,
            seed: o.seed,
        })
    }
}

/// The last object of an answer: `done`, the reason and the counts Ollama reports.
fn final_object(
    model: &str,
    generate: bool,
    text: &str,
    done_reason: &str,
    usage: Usage,
    started: Instant,
) -> Value {
    let nanos = started.elapsed().as_nanos() as u64;
    let mut v = json!({
        "model": model,
        "created_at": now_rfc3339(),
        "done": true,
        "done_reason": done_reason,
        "total_duration": nanos,
        "load_duration": 0,
        "prompt_eval_count": usage.input_tokens,
        "prompt_eval_duration": 0,
        "eval_count": usage.output_tokens,
        "eval_duration": nanos,
    });
    if generate {
        v["response"] = json!(text);
    } else {
        v["message"] = json!({"role": "assistant", "content": text});
    }
    v
}

async fn generate_or_chat(
    state: AppState,
    principal: bunko_core::identity::Principal,
    mut body: GenBody,
    generate: bool,
) -> ApiResult<Response> {
    let started = Instant::now();
    let req = body.request(generate)?;
    let warning = state.gateway.admit(&principal).await?;
    let res = answer(state, principal, body, req, generate, started).await?;
    Ok(with_warning(res, warning))
}

async fn answer(
    state: AppState,
    principal: bunko_core::identity::Principal,
    mut body: GenBody,
    req: ChatRequest,
    generate: bool,
    started: Instant,
) -> ApiResult<Response> {
    let alias = std::mem::take(&mut body.model);
    let prompt = req.message_text();
    let gw = &state.gateway;
    let api = if generate {
        "ollama.generate"
    } else {
        "ollama.chat"
    };
    let fail = |e| {
        gw.account(Call::failed(&principal, api, &alias, &prompt, started));
        GatewayService::error(e)
    };
    if body.stream {
        let (stream, served) = gw.router.chat_stream(&alias, &req).await.map_err(fail)?;
        let live = LiveStream::new(state.clone(), principal, alias, served, prompt, started);
        let mut res = Response::new(ndjson(stream, live, generate));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(res);
    }
    let (r, _, usage) = gw.chat(&principal, api, &alias, &req, started).await?;
    Ok(axum::Json(final_object(
        &alias,
        generate,
        &r.text,
        r.finish_reason.as_str(),
        usage,
        started,
    ))
    .into_response())
}

fn ndjson(stream: GatewayStream, live: LiveStream, generate: bool) -> Body {
    struct St {
        stream: GatewayStream,
        live: LiveStream,
        generate: bool,
        over: bool,
    }
    let st = St {
        stream,
        live,
        generate,
        over: false,
    };
    let s = futures_util::stream::unfold(st, |mut st| async move {
        if st.over {
            return None;
        }
        let line = match st.stream.next().await {
            Some(Ok(ChatEvent::Delta(t))) => {
                st.live.answer.push_str(&t);
                let mut v =
                    json!({"model": st.live.alias, "created_at": now_rfc3339(), "done": false});
                if st.generate {
                    v["response"] = json!(t);
                } else {
                    v["message"] = json!({"role": "assistant", "content": t});
                }
                v
            }
            Some(Ok(ChatEvent::Done {
                finish_reason,
                usage,
            })) => {
                st.live.usage = usage;
                let u = usage.unwrap_or_else(|| Usage::estimate(&st.live.prompt, &st.live.answer));
                let v = final_object(
                    &st.live.alias,
                    st.generate,
                    "",
                    finish_reason.as_str(),
                    u,
                    st.live.started,
                );
                st.live.finish(Outcome::Ok);
                st.over = true;
                v
            }
            Some(Err(e)) => {
                st.live.finish(Outcome::Error);
                st.over = true;
                json!({"error": e.to_string()})
            }
            None => {
                st.live.finish(Outcome::Error);
                st.over = true;
                json!({"error": "the upstream stream ended early"})
            }
        };
        Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), st))
    });
    Body::from_stream(s)
}

pub async fn chat(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<GatewayScope>,
    Json(body): Json<GenBody>,
) -> ApiResult<Response> {
    generate_or_chat(state, principal, body, false).await
}

pub async fn generate(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<GatewayScope>,
    Json(body): Json<GenBody>,
) -> ApiResult<Response> {
    if body.prompt.is_none() {
        return Err(ApiError::new(Code::InvalidBody, "prompt: missing"));
    }
    generate_or_chat(state, principal, body, true).await
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub struct EmbedBody {
    model: String,
    input: EmbedInput,
}

pub async fn embed(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<GatewayScope>,
    Json(body): Json<EmbedBody>,
) -> ApiResult<Response> {
    let started = Instant::now();
    let input = match body.input {
        EmbedInput::One(s) => vec![s],
        EmbedInput::Many(v) => v,
    };
    let (vecs, tokens, warning) =
        embed_texts(&state, &principal, "ollama.embed", &body.model, input).await?;
    let res = axum::Json(json!({
        "model": body.model,
        "embeddings": vecs,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }))
    .into_response();
    Ok(with_warning(res, warning))
}
