//! The router: alias → provider, with a concurrency bound and a circuit breaker per provider,
//! retries with exponential backoff + jitter (at least the upstream's `Retry-After`) and
//! fallback through the alias's `fallbacks`. A streamed answer is committed to a model only
//! once its first event has arrived, so a provider that fails before its first token still
//! falls back.

use crate::local::LocalSettings;
use crate::provider::{ChatStream, Provider};
use bunko_core::config::Config;
use bunko_core::llm::{
    ChatEvent, ChatRequest, ChatResponse, LOCAL, ModelAlias, ProviderConfig, ProviderError,
    ProviderErrorKind, ProviderKind, estimate_tokens,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use tracing::field::Empty;

/// The span of one model call (OpenTelemetry's GenAI conventions): the upstream request is
/// made inside it, so its `traceparent` names this span.
fn call_span(alias: &str, streamed: bool) -> tracing::Span {
    tracing::info_span!(
        "llm.call",
        otel.name = %format_args!("chat {alias}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = alias,
        gen_ai.provider.name = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        llm.streamed = streamed,
        llm.attempts = Empty,
    )
}

fn record_served(span: &tracing::Span, served: &Served) {
    span.record("gen_ai.provider.name", served.provider.as_str());
    span.record("gen_ai.response.model", served.alias.model.as_str());
    span.record("llm.attempts", served.attempts);
}

fn record_usage(span: &tracing::Span, usage: Option<bunko_core::llm::Usage>) {
    if let Some(u) = usage {
        span.record("gen_ai.usage.input_tokens", u.input_tokens);
        span.record("gen_ai.usage.output_tokens", u.output_tokens);
    }
}

/// Breaker states, as the metric reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

pub struct Slot {
    pub provider: Provider,
    permits: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

impl Slot {
    pub fn breaker_state(&self) -> BreakerState {
        let b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// May a request go through now? An open breaker lets one probe through after its cooldown.
    fn admit(&self) -> bool {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match b.open_until {
            None => true,
            Some(t) if Instant::now() < t => false,
            Some(_) if b.probing => false,
            Some(_) => {
                b.probing = true;
                true
            }
        }
    }

    fn record(&self, outcome: Result<(), &ProviderError>) {
        let cfg = &self.provider.config;
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.probing = false;
        match outcome {
            Err(e) if e.is_provider_failure() => {
                b.failures += 1;
                if b.failures >= cfg.breaker_failures || b.open_until.is_some() {
                    b.open_until =
                        Some(Instant::now() + Duration::from_secs(cfg.breaker_cooldown_secs));
                }
            }
            Err(_) => {}
            Ok(()) => {
                b.failures = 0;
                b.open_until = None;
            }
        }
    }
}

/// Which model finally served a request, and how many attempts it took in all.
#[derive(Debug, Clone)]
pub struct Served {
    pub alias: ModelAlias,
    pub provider: String,
    pub kind: ProviderKind,
    pub attempts: u32,
    /// Aliases tried before it that failed.
    pub fell_back_from: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    #[error(
        "the request needs about {needed} tokens; model `{alias}` has a context window of {window}"
    )]
    ContextTooLong {
        alias: String,
        needed: u64,
        window: u32,
    },
    #[error(transparent)]
    Provider(ProviderError),
}

pub struct Gateway {
    slots: HashMap<String, Arc<Slot>>,
    aliases: Vec<ModelAlias>,
}

/// A streamed answer after its first event: the events, and the provider's permit, held until
/// the stream is dropped.
pub struct GatewayStream {
    /// The call's span, open until the stream ends or is dropped.
    span: tracing::Span,
    first: Option<ChatEvent>,
    stream: ChatStream,
    slot: Arc<Slot>,
    _permit: OwnedSemaphorePermit,
    total_deadline: Instant,
    finished: bool,
}

impl GatewayStream {
    pub async fn next(&mut self) -> Option<Result<ChatEvent, ProviderError>> {
        if let Some(e) = self.first.take() {
            return Some(Ok(e));
        }
        if self.finished {
            return None;
        }
        let left = self
            .total_deadline
            .saturating_duration_since(Instant::now());
        let got = match tokio::time::timeout(left, self.stream.next())
            .instrument(self.span.clone())
            .await
        {
            Ok(got) => got,
            Err(_) => Some(Err(ProviderError::new(
                ProviderErrorKind::Timeout,
                self.slot.provider.name(),
                "the answer took longer than the provider's total timeout",
            ))),
        };
        match &got {
            Some(Err(e)) => {
                self.finished = true;
                self.span.record("otel.status_code", "error");
                self.slot.record(Err(e));
            }
            Some(Ok(ChatEvent::Done { usage, .. })) => {
                record_usage(&self.span, *usage);
                self.finished = true;
                self.slot.record(Ok(()));
            }
            None => {
                self.finished = true;
                self.slot.record(Ok(()));
            }
            Some(Ok(_)) => {}
        }
        got
    }
}

fn local_alias(config: &Config) -> ModelAlias {
    ModelAlias {
        alias: LOCAL.to_owned(),
        provider: LOCAL.to_owned(),
        model: config.local.generator.clone(),
        context_window: config.local.generator_context,
        input_price_per_mtok: 0.0,
        output_price_per_mtok: 0.0,
        fallbacks: Vec::new(),
    }
}

/// How the configured embedded chat model runs (`None`: `local.generator = "none"`).
fn local_settings(config: &Config, max_concurrent: usize) -> Option<LocalSettings> {
    let spec = bunko_core::models::find(&config.local.generator)?;
    let dir = config.local.resolved_models_dir();
    Some(LocalSettings {
        path: spec.path(&dir),
        install_hint: format!("run `bunko models pull {}`", spec.name),
        threads: config.local.generator_threads(),
        context: config.local.generator_context,
        idle: Duration::from_secs(config.local.generator_idle_secs.max(1)),
        queue: max_concurrent.max(1),
    })
}

impl Gateway {
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut providers: Vec<ProviderConfig> = config.providers.clone();
        if !providers.iter().any(|p| p.name == LOCAL) {
            let local: ProviderConfig = serde_json::from_value(serde_json::json!({
                "name": LOCAL, "type": "local", "max_concurrent": 1
            }))
            .map_err(|e| e.to_string())?;
            providers.push(local);
        }
        let mut slots = HashMap::new();
        for p in providers {
            let permits = Arc::new(Semaphore::new(p.max_concurrent));
            let local = (p.kind == ProviderKind::Local)
                .then(|| local_settings(config, p.max_concurrent))
                .flatten();
            slots.insert(
                p.name.clone(),
                Arc::new(Slot {
                    provider: Provider::new(p, local)?,
                    permits,
                    breaker: Mutex::new(Breaker::default()),
                }),
            );
        }
        let mut aliases = config.models.clone();
        if !aliases.iter().any(|a| a.alias == LOCAL) {
            aliases.push(local_alias(config));
        }
        Ok(Self { slots, aliases })
    }

    pub fn aliases(&self) -> &[ModelAlias] {
        &self.aliases
    }

    pub fn alias(&self, name: &str) -> Option<&ModelAlias> {
        self.aliases.iter().find(|a| a.alias == name)
    }

    /// The kind of provider that serves an alias (its first choice, before fallbacks).
    pub fn provider_kind(&self, alias: &str) -> Option<ProviderKind> {
        let a = self.alias(alias)?;
        self.slots.get(&a.provider).map(|s| s.provider.config.kind)
    }

    pub fn slots(&self) -> impl Iterator<Item = (&str, &Arc<Slot>)> {
        self.slots.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The alias and then its fallbacks (each once).
    fn chain(&self, alias: &str) -> Result<Vec<&ModelAlias>, GatewayError> {
        let first = self
            .alias(alias)
            .ok_or_else(|| GatewayError::UnknownModel(alias.to_owned()))?;
        let mut out = vec![first];
        for f in &first.fallbacks {
            if let Some(a) = self.alias(f)
                && !out.iter().any(|o| o.alias == a.alias)
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    fn check_context(a: &ModelAlias, req: &ChatRequest) -> Result<(), GatewayError> {
        let prompt: u64 = req
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + 4)
            .sum();
        let needed = prompt + u64::from(req.max_tokens.unwrap_or(0));
        if needed > u64::from(a.context_window) {
            return Err(GatewayError::ContextTooLong {
                alias: a.alias.clone(),
                needed,
                window: a.context_window,
            });
        }
        Ok(())
    }

    fn slot(&self, a: &ModelAlias) -> Result<&Arc<Slot>, ProviderError> {
        self.slots.get(&a.provider).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Unavailable,
                &a.provider,
                "no such provider",
            )
        })
    }

    fn busy(slot: &Slot, why: &str) -> ProviderError {
        let mut e = ProviderError::new(ProviderErrorKind::Overloaded, slot.provider.name(), why);
        e.retry_after = Some(Duration::from_secs(1));
        e
    }

    /// Runs `call` against one alias's provider with its retries; the permit is held for the
    /// call.
    async fn attempt<T, F, Fut>(
        &self,
        a: &ModelAlias,
        attempts: &mut u32,
        call: &F,
    ) -> Result<(T, Arc<Slot>, OwnedSemaphorePermit), ProviderError>
    where
        F: Fn(Arc<Slot>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let slot = self.slot(a)?.clone();
        let cfg = slot.provider.config.clone();
        let mut tries = 0u32;
        loop {
            if !slot.admit() {
                return Err(Self::busy(&slot, "circuit breaker open"));
            }
            let Ok(permit) = slot.permits.clone().try_acquire_owned() else {
                // Not a provider failure: let a probe slot go again.
                slot.breaker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .probing = false;
                return Err(Self::busy(&slot, "too many requests in flight"));
            };
            *attempts += 1;
            tries += 1;
            let first = Duration::from_millis(cfg.first_token_timeout_ms);
            let res = match tokio::time::timeout(first, call(slot.clone(), a.model.clone())).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::new(
                    ProviderErrorKind::Timeout,
                    &cfg.name,
                    format!("no answer within {} ms", cfg.first_token_timeout_ms),
                )),
            };
            match res {
                Ok(v) => return Ok((v, slot, permit)),
                Err(e) => {
                    slot.record(Err(&e));
                    drop(permit);
                    if !e.retryable() || tries > cfg.retries {
                        return Err(e);
                    }
                    let backoff = backoff(tries, e.retry_after);
                    if backoff > Duration::from_secs(30) {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Tries the alias and then its fallbacks with `call` until one serves: the value, the
    /// slot and permit it holds, and who served.
    async fn serve<T, F, Fut>(
        &self,
        alias: &str,
        req: &ChatRequest,
        call: F,
    ) -> Result<(T, Arc<Slot>, OwnedSemaphorePermit, Served), GatewayError>
    where
        F: Fn(Arc<Slot>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let chain = self.chain(alias)?;
        Self::check_context(chain[0], req)?;
        let mut attempts = 0;
        let mut failed = Vec::new();
        let mut last = None;
        for a in chain {
            if Self::check_context(a, req).is_err() {
                continue;
            }
            match self.attempt(a, &mut attempts, &call).await {
                Ok((v, slot, permit)) => {
                    let served = Served {
                        alias: a.clone(),
                        provider: slot.provider.name().to_owned(),
                        kind: slot.provider.config.kind,
                        attempts,
                        fell_back_from: failed,
                    };
                    return Ok((v, slot, permit, served));
                }
                Err(e) => {
                    tracing::warn!(alias = %a.alias, provider = %e.provider, error = %e.message, "model failed");
                    let stop = !e.allows_fallback();
                    failed.push(a.alias.clone());
                    last = Some(e);
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(GatewayError::Provider(last.unwrap_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Unavailable,
                alias,
                "no model could serve",
            )
        })))
    }

    /// A whole answer from the alias or one of its fallbacks.
    pub async fn chat(
        &self,
        alias: &str,
        req: &ChatRequest,
    ) -> Result<(ChatResponse, Served), GatewayError> {
        let span = call_span(alias, false);
        let (resp, slot, _permit, served) = self
            .serve(alias, req, |slot, model| {
                let req = req.clone();
                async move { slot.provider.chat(&model, &req).await }
            })
            .instrument(span.clone())
            .await
            .inspect_err(|_| {
                span.record("otel.status_code", "error");
            })?;
        record_served(&span, &served);
        record_usage(&span, resp.usage);
        slot.record(Ok(()));
        Ok((resp, served))
    }

    /// A streamed answer from the alias or one of its fallbacks, committed once its first event
    /// arrived.
    pub async fn chat_stream(
        &self,
        alias: &str,
        req: &ChatRequest,
    ) -> Result<(GatewayStream, Served), GatewayError> {
        let started = Instant::now();
        let span = call_span(alias, true);
        let ((stream, first), slot, permit, served) = self
            .serve(alias, req, |slot, model| {
                let req = req.clone();
                async move {
                    let mut s = slot.provider.chat_stream(&model, &req).await?;
                    match s.next().await {
                        Some(Ok(first)) => Ok((s, first)),
                        Some(Err(e)) => Err(e),
                        None => Err(ProviderError::new(
                            ProviderErrorKind::BadResponse,
                            slot.provider.name(),
                            "empty stream",
                        )),
                    }
                }
            })
            .instrument(span.clone())
            .await
            .inspect_err(|_| {
                span.record("otel.status_code", "error");
            })?;
        record_served(&span, &served);
        let total = Duration::from_millis(slot.provider.config.total_timeout_ms);
        let finished = matches!(first, ChatEvent::Done { .. });
        if finished {
            if let ChatEvent::Done { usage, .. } = &first {
                record_usage(&span, *usage);
            }
            slot.record(Ok(()));
        }
        Ok((
            GatewayStream {
                span,
                first: Some(first),
                stream,
                slot,
                _permit: permit,
                total_deadline: started + total,
                finished,
            },
            served,
        ))
    }

    /// Embeddings through an upstream alias.
    pub async fn embed(
        &self,
        alias: &str,
        input: &[String],
    ) -> Result<((Vec<Vec<f32>>, Option<u64>), Served), GatewayError> {
        let a = self
            .alias(alias)
            .ok_or_else(|| GatewayError::UnknownModel(alias.to_owned()))?;
        let mut attempts = 0;
        let (out, slot, _permit) = self
            .attempt(a, &mut attempts, &|slot: Arc<Slot>, model: String| {
                let input = input.to_vec();
                async move { slot.provider.embed(&model, &input).await }
            })
            .await
            .map_err(GatewayError::Provider)?;
        slot.record(Ok(()));
        Ok((
            out,
            Served {
                alias: a.clone(),
                provider: slot.provider.name().to_owned(),
                kind: slot.provider.config.kind,
                attempts,
                fell_back_from: Vec::new(),
            },
        ))
    }
}

/// Exponential backoff from 200 ms with ±20 % jitter, at least the upstream's `Retry-After`.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = 200f64 * 2f64.powi(attempt.saturating_sub(1).min(10) as i32);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = 0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0;
    let d = Duration::from_millis((base * jitter) as u64);
    retry_after.map_or(d, |r| r.max(d))
}
