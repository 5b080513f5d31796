//! The gateway as the server runs it: the router from bunko-llm, the response cache, and the
//! accounting of every call (metrics and a structured log line per call). The OpenAI- and
//! Ollama-compatible routes are thin translations onto this.

use crate::http::ApiError;
use crate::quota::{Now, Quotas, Subjects};
use bunko_core::Code;
use bunko_core::cache::Cache;
use bunko_core::config::Config;
use bunko_core::identity::{Credential, Principal};
use bunko_core::limits::QuotaCounters;
use bunko_core::llm::{ChatRequest, ChatResponse, ProviderErrorKind, Usage};
use bunko_core::metrics::Metrics;
use bunko_core::ports::{MetaStore, UsageRecord};
use bunko_core::tasks::Tasks;
use bunko_llm::gateway::{Gateway, GatewayError, Served};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct GatewayService {
    pub router: Gateway,
    metrics: Arc<Metrics>,
    /// Exact-match answers (the `Cache` port: in-process, or shared by replicas).
    cache: Arc<dyn Cache>,
    cache_ttl: Duration,
    pub quotas: Quotas,
    /// To the ledger writer (bounded: a full queue drops the row with a warning, it never
    /// blocks a request).
    ledger: tokio::sync::mpsc::Sender<UsageRecord>,
    /// The embedded embedder's name (`local.embedder`), served by `/v1/embeddings` too.
    pub embedder: String,
}

/// How one call ended, for metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Cached,
    Error,
    Cancelled,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Cached => "cached",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// What the accounting needs to know about one call.
pub struct Call<'a> {
    pub principal: &'a Principal,
    pub api: &'static str,
    pub alias: &'a str,
    pub served: Option<&'a Served>,
    pub usage: Option<Usage>,
    /// The prompt and answer text, to count tokens when the upstream gave no usage.
    pub prompt_chars: &'a str,
    pub answer: &'a str,
    pub outcome: Outcome,
    pub started: Instant,
    pub first_token: Option<Instant>,
}

impl<'a> Call<'a> {
    /// A call that failed before an answer (the base the other outcomes are made from).
    pub fn failed(
        principal: &'a Principal,
        api: &'static str,
        alias: &'a str,
        prompt_chars: &'a str,
        started: Instant,
    ) -> Self {
        Self {
            principal,
            api,
            alias,
            served: None,
            usage: None,
            prompt_chars,
            answer: "",
            outcome: Outcome::Error,
            started,
            first_token: None,
        }
    }
}

impl GatewayService {
    /// The process's metrics (the gateway's and its callers', e.g. summary jobs).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The router, and the ledger writer on `tasks` (it drains at shutdown). Quota budgets
    /// start from the ledger's totals for today and this month; with `shared_quotas` every
    /// replica counts against the same counters (seeded from the ledger as well).
    pub async fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        store: Arc<dyn MetaStore>,
        cache: Arc<dyn Cache>,
        shared_quotas: Option<Arc<dyn QuotaCounters>>,
        tasks: &Tasks,
    ) -> Result<Self, String> {
        let (tx, rx) = tokio::sync::mpsc::channel(65_536);
        let mut service = Self::new(config, metrics, cache, tx)?;
        if !service.quotas.is_empty() {
            let now = Now::current();
            for (scope, id, tokens, cost) in Quotas::ledger_usage(store.as_ref(), now).await? {
                service.quotas.seed(scope, &id, tokens, cost, now);
            }
            if let Some(counters) = shared_quotas {
                service.quotas = service.quotas.shared(counters, store.clone());
            }
        }
        let flush = Duration::from_millis(config.gateway.ledger_flush_ms.max(10));
        tasks.spawn(write_ledger(rx, store, flush, tasks.shutdown_token()));
        Ok(service)
    }

    fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        cache: Arc<dyn Cache>,
        ledger: tokio::sync::mpsc::Sender<UsageRecord>,
    ) -> Result<Self, String> {
        let router = Gateway::new(config)?;
        for (name, slot) in router.slots() {
            metrics
                .llm_breaker
                .with_label_values(&[name])
                .set(slot.breaker_state() as i64);
        }
        // Each alias's series start at 0 (calls to its own provider; fallbacks appear when
        // used), so dashboards and alerts find them before the first call.
        for a in router.aliases() {
            let m = &metrics;
            for outcome in [Outcome::Ok, Outcome::Error] {
                m.llm_requests
                    .with_label_values(&[&a.alias, &a.provider, outcome.as_str()]);
            }
            for direction in ["input", "output"] {
                m.llm_tokens.with_label_values(&[&a.alias, direction]);
            }
            m.llm_cost.with_label_values(&[&a.alias]);
            m.llm_duration.with_label_values(&[&a.alias]);
            m.llm_ttft.with_label_values(&[&a.alias]);
        }
        Ok(Self {
            router,
            metrics,
            cache,
            cache_ttl: Duration::from_secs(config.gateway.cache_ttl_secs),
            embedder: config.local.embedder.clone(),
            quotas: Quotas::new(
                config
                    .gateway
                    .quotas
                    .iter()
                    .cloned()
                    .chain(crate::autosummary::quota(config))
                    .collect(),
            ),
            ledger,
        })
    }

    /// Before a call: the caller's quotas. `Ok` carries the soft-limit warning header value.
    pub async fn admit(&self, principal: &Principal) -> Result<Option<String>, ApiError> {
        match self
            .quotas
            .admit(&Subjects::of(principal), Now::current())
            .await
        {
            Ok(w) if w.is_empty() => Ok(None),
            Ok(w) => {
                self.metrics.llm_quota.with_label_values(&["warning"]).inc();
                Ok(Some(w.join(", ")))
            }
            Err(e) => {
                self.metrics
                    .llm_quota
                    .with_label_values(&["exceeded"])
                    .inc();
                let mut err = ApiError::new(Code::QuotaExceeded, e.message);
                err.0.retry_after_secs = Some(e.retry_after_secs);
                Err(err)
            }
        }
    }

    /// One non-streamed call through the router, accounted either way as `api` for
    /// `principal` (`started` is when the caller's request began); the answer with the
    /// upstream that served it, and its usage (the upstream's, else estimated).
    pub async fn chat(
        &self,
        principal: &Principal,
        api: &'static str,
        alias: &str,
        req: &ChatRequest,
        started: Instant,
    ) -> Result<(ChatResponse, Served, Usage), ApiError> {
        let prompt = req.message_text();
        match self.router.chat(alias, req).await {
            Ok((r, served)) => {
                self.account(Call {
                    served: Some(&served),
                    usage: r.usage,
                    answer: &r.text,
                    outcome: Outcome::Ok,
                    ..Call::failed(principal, api, alias, &prompt, started)
                });
                let usage = r.usage.unwrap_or_else(|| Usage::estimate(&prompt, &r.text));
                Ok((r, served, usage))
            }
            Err(e) => {
                self.account(Call::failed(principal, api, alias, &prompt, started));
                Err(Self::error(e))
            }
        }
    }

    /// The stable error for a gateway failure (in the caller's API shape, by the middleware).
    pub fn error(e: GatewayError) -> ApiError {
        match e {
            GatewayError::UnknownModel(m) => ApiError::new(
                Code::ModelNotFound,
                format!(
                    "no model `{}`; GET /v1/models lists them",
                    m.chars().take(100).collect::<String>()
                ),
            ),
            e @ GatewayError::ContextTooLong { .. } => {
                ApiError::new(Code::ContextLengthExceeded, e.to_string())
            }
            GatewayError::Provider(p) => {
                let code = match p.kind {
                    ProviderErrorKind::Rejected => Code::UpstreamRejected,
                    ProviderErrorKind::Overloaded | ProviderErrorKind::RateLimited => {
                        Code::ModelOverloaded
                    }
                    ProviderErrorKind::Timeout => Code::UpstreamTimeout,
                    ProviderErrorKind::Unavailable | ProviderErrorKind::BadResponse => {
                        Code::UpstreamUnavailable
                    }
                };
                let mut err = ApiError::new(code, p.to_string());
                if code == Code::ModelOverloaded {
                    err.0.retry_after_secs = Some(p.retry_after.map_or(1, |d| d.as_secs().max(1)));
                }
                err
            }
        }
    }

    /// Metrics and the log line for one call. Tokens the upstream did not count are estimated.
    pub fn account(&self, c: Call<'_>) {
        let m = &self.metrics;
        let model = match (c.served, self.router.alias(c.alias)) {
            (Some(s), _) => s.alias.alias.clone(),
            (None, Some(a)) => a.alias.clone(),
            (None, None) => "unknown".to_owned(),
        };
        let provider = c.served.map_or("none", |s| s.provider.as_str());
        let usage = c
            .usage
            .unwrap_or_else(|| Usage::estimate(c.prompt_chars, c.answer));
        let cost = c.served.map_or(0.0, |s| s.alias.cost(usage)).max(0.0);
        m.llm_requests
            .with_label_values(&[&model, provider, c.outcome.as_str()])
            .inc();
        if c.outcome != Outcome::Error {
            m.llm_tokens
                .with_label_values(&[&model, "input"])
                .inc_by(usage.input_tokens);
            m.llm_tokens
                .with_label_values(&[&model, "output"])
                .inc_by(usage.output_tokens);
            if cost > 0.0 && c.outcome != Outcome::Cached {
                m.llm_cost.with_label_values(&[&model]).inc_by(cost);
            }
        }
        let elapsed = c.started.elapsed();
        m.llm_duration
            .with_label_values(&[&model])
            .observe(elapsed.as_secs_f64());
        if let Some(t) = c.first_token {
            m.llm_ttft
                .with_label_values(&[&model])
                .observe(t.duration_since(c.started).as_secs_f64());
        }
        for (name, slot) in self.router.slots() {
            m.llm_breaker
                .with_label_values(&[name])
                .set(slot.breaker_state() as i64);
        }
        let (key, project) = match &c.principal.credential {
            Credential::ApiKey {
                key_id, project_id, ..
            } => (Some(*key_id), *project_id),
            Credential::Session { .. } => (None, None),
        };
        if c.outcome != Outcome::Error {
            let user = c.principal.user_id.to_string();
            let project = project.map_or_else(|| "none".to_owned(), |p| p.to_string());
            m.llm_user_tokens
                .with_label_values(&[&user, &project])
                .inc_by(usage.input_tokens + usage.output_tokens);
            // The series exists from the user's first call (free models included).
            let spent = m.llm_user_cost.with_label_values(&[&user, &project]);
            if cost > 0.0 && c.outcome != Outcome::Cached {
                spent.inc_by(cost);
            }
        }
        if c.outcome != Outcome::Cached {
            self.quotas.charge(
                &Subjects::of(c.principal),
                usage.input_tokens + usage.output_tokens,
                cost,
                Now::current(),
            );
        }
        let record = UsageRecord {
            at_ms: bunko_core::ids::now_ms(),
            user_id: c.principal.user_id,
            key_id: key,
            project_id: project,
            api: c.api.to_owned(),
            model: model.clone(),
            provider: provider.to_owned(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            estimated: c.usage.is_none(),
            cost_usd: if c.outcome == Outcome::Cached {
                0.0
            } else {
                cost
            },
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            ttft_ms: c
                .first_token
                .map(|t| t.duration_since(c.started).as_secs_f64() * 1000.0),
            outcome: c.outcome.as_str().to_owned(),
        };
        if self.ledger.try_send(record).is_err() {
            tracing::warn!("the usage ledger queue is full; a call was not recorded");
        }
        let key = key.map(|k| k.to_string());
        tracing::info!(
            api = c.api,
            model = %model,
            provider,
            user = %c.principal.user_id,
            key = key.as_deref().unwrap_or(""),
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            tokens_counted_upstream = c.usage.is_some(),
            cost_usd = cost,
            outcome = c.outcome.as_str(),
            attempts = c.served.map_or(0, |s| s.attempts),
            fell_back_from = %c.served.map(|s| s.fell_back_from.join(",")).unwrap_or_default(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            ttft_ms = c.first_token.map(|t| t.duration_since(c.started).as_secs_f64() * 1000.0),
            "gateway call"
        );
    }

    /// Time spent in bunko itself for a call whose upstream took `upstream`.
    pub fn overhead(&self, total: Duration, upstream: Duration) {
        self.metrics
            .gateway_overhead
            .observe(total.saturating_sub(upstream).as_secs_f64());
    }

    /// A cached answer for a cacheable request (temperature 0, not streamed, not opted out).
    pub async fn cached(
        &self,
        alias: &str,
        req: &ChatRequest,
        no_cache: bool,
    ) -> Option<ChatResponse> {
        let result = if no_cache {
            "bypass"
        } else if req.temperature != Some(0.0) {
            return None;
        } else {
            match self
                .cache
                .get(&cache_key(alias, req))
                .await
                .and_then(|b| serde_json::from_slice::<ChatResponse>(&b).ok())
            {
                Some(r) => {
                    self.metrics.llm_cache.with_label_values(&["hit"]).inc();
                    return Some(r);
                }
                None => "miss",
            }
        };
        self.metrics.llm_cache.with_label_values(&[result]).inc();
        None
    }

    pub async fn remember(&self, alias: &str, req: &ChatRequest, no_cache: bool, r: &ChatResponse) {
        if !no_cache
            && req.temperature == Some(0.0)
            && let Ok(bytes) = serde_json::to_vec(r)
        {
            self.cache
                .put(&cache_key(alias, req), bytes, self.cache_ttl)
                .await;
        }
    }
}

/// The normalised request (the parsed form, whatever the API and JSON layout it came in) and
/// the alias, hashed.
fn cache_key(alias: &str, req: &ChatRequest) -> String {
    let mut h = Sha256::new();
    h.update(b"gateway-answer\0");
    h.update(alias.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(req).unwrap_or_default());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the ledger in batches: every `flush`, or at 1,000 rows, and what is left at shutdown.
async fn write_ledger(
    mut rx: tokio::sync::mpsc::Receiver<UsageRecord>,
    store: Arc<dyn MetaStore>,
    flush: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut batch: Vec<UsageRecord> = Vec::new();
    let mut tick = tokio::time::interval(flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            got = rx.recv() => match got {
                Some(r) => {
                    batch.push(r);
                    if batch.len() < 1000 {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        if stopping {
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store.append_usage(&batch).await {
                tracing::warn!(error = %e, rows = batch.len(), "writing the usage ledger failed; retrying with the next batch");
                if batch.len() > 100_000 {
                    batch.clear();
                }
            } else {
                batch.clear();
            }
        }
        if stopping {
            return;
        }
    }
}
