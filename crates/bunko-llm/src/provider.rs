//! One upstream over HTTP: sends a request in its wire format and maps every way it can fail
//! to a [`ProviderError`] the gateway can act on.

use crate::lines::{LineError, Lines, Sse};
use crate::local::{LocalModel, LocalSettings};
use crate::wire;
use bunko_core::llm::{
    ChatEvent, ChatRequest, ChatResponse, ProviderConfig, ProviderError, ProviderErrorKind,
    ProviderKind,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

pub struct Provider {
    pub config: ProviderConfig,
    http: reqwest::Client,
    api_key: Option<String>,
    /// The embedded model, for a `local` provider (`None`: none configured).
    local: Option<LocalModel>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .field("kind", &self.config.kind)
            .finish()
    }
}

/// The most a whole (non-streamed) answer may be.
const MAX_BODY: usize = 32 << 20;

impl Provider {
    /// Reads the API key file (if any) and builds the HTTP client; the key never leaves this
    /// struct except in the upstream's auth header.
    pub fn new(config: ProviderConfig, local: Option<LocalSettings>) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api_key = match (&config.api_key, &config.api_key_file) {
            (Some(k), _) => Some(k.expose().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!(
                            "provider {}: api_key_file {}: {e}",
                            config.name,
                            path.display()
                        )
                    })?
                    .trim_end()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .map_err(|e| format!("provider {}: {e}", config.name))?;
        let local = match config.kind {
            ProviderKind::Local => local.map(|s| LocalModel::new(&config.name, s)),
            _ => None,
        };
        Ok(Self {
            config,
            http,
            api_key,
            local,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn err(&self, kind: ProviderErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, &self.config.name, message)
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = &self.api_key
            && let Ok(v) = HeaderValue::from_str(&match self.config.kind {
                ProviderKind::Anthropic => k.clone(),
                _ => format!("Bearer {k}"),
            })
        {
            let mut v = v;
            v.set_sensitive(true);
            match self.config.kind {
                ProviderKind::Anthropic => h.insert("x-api-key", v),
                _ => h.insert("authorization", v),
            };
        }
        if self.config.kind == ProviderKind::Anthropic {
            h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        h
    }

    /// The embedded model of a `local` provider.
    pub fn local_model(&self) -> Option<&LocalModel> {
        self.local.as_ref()
    }

    /// The embedded model, or why there is none.
    fn local(&self) -> Result<&LocalModel, ProviderError> {
        self.local.as_ref().ok_or_else(|| {
            self.err(
                ProviderErrorKind::Unavailable,
                "no embedded chat model is configured (local.generator = \"none\")",
            )
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<reqwest::Response, ProviderError> {
        if self.config.kind == ProviderKind::Local {
            return Err(self.err(
                ProviderErrorKind::Rejected,
                "the embedded chat model serves chat only",
            ));
        }
        let url = format!("{}{path}", self.config.base_url());
        let mut req = self.http.post(&url).headers(self.headers()).json(body);
        if let Some(tp) = bunko_core::trace::outgoing_traceparent() {
            req = req.header("traceparent", tp);
        }
        let res = req.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                ProviderErrorKind::Timeout
            } else {
                ProviderErrorKind::Unavailable
            };
            self.err(kind, format!("cannot reach {url}: {}", root_cause(&e)))
        })?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        let body = read_limited(res, 64 * 1024).await.unwrap_or_default();
        let detail = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| wire::error_message(&v))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        let kind = match status.as_u16() {
            429 => ProviderErrorKind::RateLimited,
            500..=599 => ProviderErrorKind::Unavailable,
            _ => ProviderErrorKind::Rejected,
        };
        let mut e = self.err(kind, format!("upstream answered {status}: {detail}"));
        e.retry_after = retry_after;
        e.status = Some(status.as_u16());
        Err(e)
    }

    fn expect_type(&self, res: &reqwest::Response, wanted: &[&str]) -> Result<(), ProviderError> {
        let ct = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if wanted.iter().any(|w| ct.starts_with(w)) {
            Ok(())
        } else {
            Err(self.err(
                ProviderErrorKind::BadResponse,
                format!(
                    "upstream answered with content type `{ct}`, expected {}",
                    wanted.join(" or ")
                ),
            ))
        }
    }

    /// A JSON answer, checked for its content type, size and syntax.
    async fn json_body(&self, res: reqwest::Response) -> Result<Value, ProviderError> {
        self.expect_type(&res, &["application/json"])?;
        let body = read_limited(res, MAX_BODY)
            .await
            .map_err(|e| self.err(e.0, e.1))?;
        serde_json::from_slice(&body).map_err(|e| {
            self.err(
                ProviderErrorKind::BadResponse,
                format!("malformed JSON from upstream: {e}"),
            )
        })
    }

    /// Sends a chat request in the provider's format.
    async fn post_chat(
        &self,
        model: &str,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let kind = self.config.kind;
        self.post(
            wire::chat_path(kind),
            &wire::chat_body(kind, model, req, stream),
        )
        .await
    }

    /// A whole answer.
    pub async fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> Result<ChatResponse, ProviderError> {
        let kind = self.config.kind;
        if kind == ProviderKind::Local {
            let mut s = self.chat_stream(model, req).await?;
            return s.collect().await;
        }
        let res = self.post_chat(model, req, false).await?;
        let v = self.json_body(res).await?;
        wire::parse_chat(kind, &v).map_err(|m| self.err(ProviderErrorKind::BadResponse, m))
    }

    /// A streamed answer: the request is made (and fails) here; events come from the stream.
    /// Dropping the stream closes the upstream connection.
    pub async fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        let kind = self.config.kind;
        if kind == ProviderKind::Local {
            return Ok(ChatStream {
                provider: self.config.name.clone(),
                kind,
                res: None,
                local: Some(self.local()?.generate(req)?),
                lines: Lines::default(),
                sse: Sse::default(),
                state: wire::StreamState::default(),
                pending: VecDeque::new(),
            });
        }
        let res = self.post_chat(model, req, true).await?;
        match kind {
            ProviderKind::Ollama => {
                self.expect_type(&res, &["application/x-ndjson", "application/json"])?
            }
            _ => self.expect_type(&res, &["text/event-stream"])?,
        }
        Ok(ChatStream {
            provider: self.config.name.clone(),
            kind,
            res: Some(res),
            local: None,
            lines: Lines::default(),
            sse: Sse::default(),
            state: wire::StreamState::default(),
            pending: VecDeque::new(),
        })
    }

    /// Embeddings from an OpenAI-compatible or Ollama upstream.
    pub async fn embed(
        &self,
        model: &str,
        input: &[String],
    ) -> Result<(Vec<Vec<f32>>, Option<u64>), ProviderError> {
        let kind = self.config.kind;
        if kind == ProviderKind::Anthropic {
            return Err(self.err(
                ProviderErrorKind::Rejected,
                "Anthropic has no embeddings API",
            ));
        }
        let (path, body) = wire::embed_request(kind, model, input);
        let res = self.post(path, &body).await?;
        let v = self.json_body(res).await?;
        wire::parse_embed(kind, &v).map_err(|m| self.err(ProviderErrorKind::BadResponse, m))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn read_limited(
    mut res: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, (ProviderErrorKind, String)> {
    let mut out = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > limit {
                    return Err((
                        ProviderErrorKind::BadResponse,
                        format!("upstream answer over {limit} bytes"),
                    ));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err((
                    ProviderErrorKind::Unavailable,
                    format!("upstream connection broke: {}", root_cause(&e)),
                ));
            }
        }
    }
}

/// The events of one streamed answer.
pub struct ChatStream {
    provider: String,
    kind: ProviderKind,
    res: Option<reqwest::Response>,
    /// The embedded model's events, for a `local` provider.
    local: Option<tokio::sync::mpsc::Receiver<Result<ChatEvent, ProviderError>>>,
    lines: Lines,
    sse: Sse,
    state: wire::StreamState,
    pending: VecDeque<ChatEvent>,
}

impl ChatStream {
    fn err(&self, kind: ProviderErrorKind, message: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, &self.provider, message)
    }

    fn take_line(&mut self, line: &str) -> Result<(), ProviderError> {
        let events = match self.kind {
            ProviderKind::Ollama => {
                if line.trim().is_empty() {
                    return Ok(());
                }
                wire::ndjson_line(&mut self.state, line)
            }
            _ => match self.sse.line(line) {
                Some(ev) => wire::sse_event(self.kind, &mut self.state, &ev.event, &ev.data),
                None => Ok(Vec::new()),
            },
        }
        .map_err(|m| self.err(ProviderErrorKind::BadResponse, m))?;
        self.pending.extend(events);
        Ok(())
    }

    /// The whole answer the events add up to.
    pub async fn collect(&mut self) -> Result<ChatResponse, ProviderError> {
        let mut text = String::new();
        while let Some(e) = self.next().await {
            match e? {
                ChatEvent::Delta(d) => text.push_str(&d),
                ChatEvent::Done {
                    finish_reason,
                    usage,
                } => {
                    return Ok(ChatResponse {
                        text,
                        finish_reason,
                        usage,
                    });
                }
            }
        }
        Err(self.err(
            ProviderErrorKind::BadResponse,
            "the answer ended without an end",
        ))
    }

    /// The next event; `None` after `Done` (or after an error).
    pub async fn next(&mut self) -> Option<Result<ChatEvent, ProviderError>> {
        if let Some(rx) = self.local.as_mut() {
            let got = rx.recv().await;
            if !matches!(got, Some(Ok(ChatEvent::Delta(_)))) {
                self.local = None;
                self.state.done = true;
            }
            return got.or_else(|| {
                Some(Err(self.err(
                    ProviderErrorKind::Unavailable,
                    "the embedded model stopped without finishing",
                )))
            });
        }
        loop {
            if let Some(e) = self.pending.pop_front() {
                if matches!(e, ChatEvent::Done { .. }) {
                    self.res = None;
                    self.pending.clear();
                }
                return Some(Ok(e));
            }
            if self.state.done {
                return None;
            }
            match self.lines.next_line() {
                Ok(Some(line)) => {
                    if let Err(e) = self.take_line(&line) {
                        self.res = None;
                        self.state.done = true;
                        return Some(Err(e));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(LineError::TooLong) => {
                    self.res = None;
                    self.state.done = true;
                    return Some(Err(self.err(
                        ProviderErrorKind::BadResponse,
                        format!("upstream sent a line over {} bytes", crate::lines::MAX_LINE),
                    )));
                }
                Err(LineError::NotUtf8) => {
                    self.res = None;
                    self.state.done = true;
                    return Some(Err(self.err(
                        ProviderErrorKind::BadResponse,
                        "upstream sent invalid UTF-8",
                    )));
                }
            }
            let res = self.res.as_mut()?;
            match res.chunk().await {
                Ok(Some(bytes)) => self.lines.push(&bytes),
                Ok(None) => {
                    self.res = None;
                    // A last line without its newline, then a blank line to end an SSE event.
                    if let Some(rest) = self.lines.rest() {
                        let _ = self.take_line(&rest);
                    }
                    if self.kind != ProviderKind::Ollama {
                        let _ = self.take_line("");
                    }
                    if self
                        .pending
                        .iter()
                        .any(|e| matches!(e, ChatEvent::Done { .. }))
                    {
                        continue;
                    }
                    self.state.done = true;
                    return Some(Err(self.err(
                        ProviderErrorKind::BadResponse,
                        "the upstream stream ended before its end marker",
                    )));
                }
                Err(e) => {
                    self.res = None;
                    self.state.done = true;
                    return Some(Err(self.err(
                        ProviderErrorKind::Unavailable,
                        format!("upstream stream broke: {}", root_cause(&e)),
                    )));
                }
            }
        }
    }
}
