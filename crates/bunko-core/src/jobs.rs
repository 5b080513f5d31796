//! Jobs: the domain types of the durable queue and the worker loop that runs handlers.
//!
//! The worker leases jobs from a [`JobQueue`], runs the registered [`JobHandler`] in its own
//! task (a panic fails the job with the panic message; the worker lives on), heartbeats the
//! lease while it runs, and on failure queues the job again with exponential backoff and
//! jitter until `max_attempts`, after which it is dead with its last error kept.

use crate::error::Code;
use crate::ids::{now_ms, random_bytes};
use crate::metrics::Metrics;
use crate::ports::JobQueue;
use crate::tasks::Tasks;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to run (first time, or again after a failure at `run_at`).
    Queued,
    /// Leased by a worker.
    Running,
    Succeeded,
    /// Failed on its last attempt; kept with its last error until retried.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    /// Not before this time (Unix ms); `None` = now.
    pub run_at_ms: Option<i64>,
    pub priority: i32,
}

impl NewJob {
    pub fn new(queue: &str, kind: &str, payload: serde_json::Value) -> Self {
        Self {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            idempotency_key: None,
            max_attempts: 5,
            run_at_ms: None,
            priority: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: Uuid,
    /// False when the idempotency key matched an existing job.
    pub created: bool,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: Uuid,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub priority: i32,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at_ms: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub cancel_requested: bool,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A job handed to a worker. `attempts` already counts this attempt.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub id: Uuid,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Alive,
    /// Someone asked to cancel: stop and call `mark_cancelled`.
    CancelRequested,
    /// This worker no longer holds the lease (it expired and another worker took it).
    Lost,
}

/// Why a job attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
    /// False for errors that will fail the same way again (bad payload): dead at once.
    pub retryable: bool,
}

impl JobFailure {
    pub fn retryable(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().into(),
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().into(),
            message: message.into(),
            retryable: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
}

/// What a handler gets: the job and a token that is cancelled when it must stop.
pub struct JobContext {
    pub job: LeasedJob,
    pub cancel: CancellationToken,
}

#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, ctx: JobContext) -> Result<Option<serde_json::Value>, JobFailure>;
}

/// Job kinds known to this process: kind → (queue, handler).
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, (String, Arc<dyn JobHandler>)>,
}

impl Registry {
    /// The handlers every bunko process has.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        r.register("system.noop", "default", Arc::new(Noop));
        r.register("system.sleep", "default", Arc::new(Sleep));
        r
    }

    pub fn register(&mut self, kind: &str, queue: &str, handler: Arc<dyn JobHandler>) {
        self.kinds
            .insert(kind.to_owned(), (queue.to_owned(), handler));
    }

    pub fn queue_for(&self, kind: &str) -> Option<&str> {
        self.kinds.get(kind).map(|(q, _)| q.as_str())
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Every queue some kind runs on (sorted, unique).
    pub fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = self.kinds.values().map(|(q, _)| q.clone()).collect();
        q.sort();
        q.dedup();
        q
    }

    fn handler(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.kinds.get(kind).map(|(_, h)| h.clone())
    }
}

/// `system.noop`: succeeds at once and echoes its payload (smoke tests, benchmarks).
struct Noop;

#[async_trait]
impl JobHandler for Noop {
    async fn run(&self, ctx: JobContext) -> Result<Option<serde_json::Value>, JobFailure> {
        Ok(Some(ctx.job.payload))
    }
}

/// `system.sleep {"ms": N}`: waits N ms (≤ 1 h), stopping early when cancelled.
struct Sleep;

#[async_trait]
impl JobHandler for Sleep {
    async fn run(&self, ctx: JobContext) -> Result<Option<serde_json::Value>, JobFailure> {
        let ms = ctx
            .job
            .payload
            .get("ms")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                JobFailure::permanent(Code::InvalidInput, "payload needs {\"ms\": <milliseconds>}")
            })?;
        if ms > 3_600_000 {
            return Err(JobFailure::permanent(
                Code::InvalidInput,
                "ms must be at most 3600000",
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(Some(serde_json::json!({"slept_ms": ms}))),
            _ = ctx.cancel.cancelled() => Err(JobFailure::retryable(Code::Unavailable, "interrupted")),
        }
    }
}

/// Options for [`submit`].
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub idempotency_key: Option<String>,
    pub max_attempts: Option<u32>,
    pub delay: Option<Duration>,
    pub priority: i32,
}

/// Enqueues a job of a registered kind on that kind's queue, after validating the options.
#[tracing::instrument(skip(queue, registry, payload, opts))]
pub async fn submit(
    queue: &dyn JobQueue,
    registry: &Registry,
    default_max_attempts: u32,
    kind: &str,
    payload: serde_json::Value,
    opts: SubmitOptions,
) -> crate::error::Result<Enqueued> {
    use crate::error::Error;
    let Some(q) = registry.queue_for(kind) else {
        let known: Vec<&str> = registry.kinds().collect();
        return Err(Error::new(
            Code::UnknownJobKind,
            format!("no job kind `{kind}`; known kinds: {}", known.join(", ")),
        ));
    };
    let max_attempts = opts.max_attempts.unwrap_or(default_max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(Error::invalid("max_attempts must be between 1 and 100"));
    }
    if let Some(k) = &opts.idempotency_key
        && (k.is_empty() || k.len() > 200)
    {
        return Err(Error::invalid(
            "idempotency_key must be 1 to 200 characters",
        ));
    }
    if opts
        .delay
        .is_some_and(|d| d > Duration::from_secs(366 * 86_400))
    {
        return Err(Error::invalid("delay must be at most a year"));
    }
    if payload.to_string().len() > 256 * 1024 {
        return Err(Error::invalid("payload must be at most 256 KiB of JSON"));
    }
    let job = NewJob {
        queue: q.to_owned(),
        kind: kind.to_owned(),
        payload,
        idempotency_key: opts.idempotency_key,
        max_attempts,
        run_at_ms: opts.delay.map(|d| now_ms() + d.as_millis() as i64),
        priority: opts.priority.clamp(-1000, 1000),
    };
    Ok(queue.enqueue(job).await?)
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// (queue, concurrency)
    pub queues: Vec<(String, usize)>,
}

impl WorkerConfig {
    pub fn from_config(c: &crate::config::Config, registry: &Registry) -> Self {
        let mut names: Vec<String> = registry.queues();
        names.extend(c.jobs.queues.keys().cloned());
        names.sort();
        names.dedup();
        Self {
            lease_ttl: Duration::from_secs(c.jobs.lease_ttl_secs),
            poll_interval: Duration::from_millis(c.jobs.poll_interval_ms),
            backoff_base: Duration::from_millis(c.jobs.backoff_base_ms),
            backoff_max: Duration::from_millis(c.jobs.backoff_max_ms),
            queues: names
                .into_iter()
                .map(|q| (q.clone(), c.queue_concurrency(&q)))
                .collect(),
        }
    }
}

/// Whether a failure code is a 4xx one (the request cannot be done) rather than a fault.
fn failure_is_clients(code: &str) -> bool {
    crate::error::Code::ALL
        .iter()
        .find(|c| c.as_str() == code)
        .is_some_and(|c| (400..500).contains(&c.status()))
}

/// Delay before attempt `attempts + 1`: base × 2^(attempts−1), capped, ±20 % jitter.
pub fn backoff_delay(attempts: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    let r = u16::from_le_bytes(random_bytes::<2>()) as f64 / u16::MAX as f64; // 0..=1
    raw.mul_f64(0.8 + 0.4 * r)
}

/// Runs jobs: one lease loop per queue with a bounded number of concurrent jobs.
pub struct Worker {
    queue: Arc<dyn JobQueue>,
    registry: Arc<Registry>,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
    id: String,
    wake: Arc<Notify>,
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// Cancelled when the shutdown grace period is over: running jobs are stopped and released.
    hard_stop: CancellationToken,
}

impl Worker {
    pub fn new(
        queue: Arc<dyn JobQueue>,
        registry: Arc<Registry>,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let id = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            &crate::ids::new_id().simple().to_string()[24..]
        );
        Arc::new(Self {
            queue,
            registry,
            config,
            metrics,
            id,
            wake: Arc::new(Notify::new()),
            running: Arc::default(),
            hard_stop: CancellationToken::new(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Jobs currently running in this process.
    pub fn running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wakes idle lease loops at once (after an enqueue in this process).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Stops running jobs now and gives their leases back (end of the grace period).
    pub fn hard_stop(&self) {
        self.hard_stop.cancel();
    }

    /// Starts one lease loop per queue on `tasks`; they stop leasing when shutdown begins.
    pub fn start(self: &Arc<Self>, tasks: &Tasks) {
        info!(worker = %self.id, queues = ?self.config.queues, "job worker started");
        for (queue, concurrency) in self.config.queues.clone() {
            let me = self.clone();
            let t = tasks.clone();
            tasks.spawn(async move { me.lease_loop(queue, concurrency, t).await });
        }
    }

    async fn lease_loop(self: Arc<Self>, queue: String, concurrency: usize, tasks: Tasks) {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let shutdown = tasks.shutdown_token();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            if shutdown.is_cancelled() {
                break;
            }
            match self
                .queue
                .lease(&queue, &self.id, self.config.lease_ttl)
                .await
            {
                Ok(Some(job)) => {
                    let me = self.clone();
                    let t = tasks.clone();
                    tasks.spawn(async move {
                        me.execute(job, &t).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = self.wake.notified() => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    drop(permit);
                    warn!(queue = %queue, error = %e, "leasing a job failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        info!(queue = %queue, "lease loop stopped");
    }

    async fn execute(&self, job: LeasedJob, tasks: &Tasks) {
        let span = info_span!(
            "job",
            otel.name = %format_args!("job {}", job.kind),
            otel.kind = "consumer",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            job_id = %job.id,
            kind = %job.kind,
            queue = %job.queue,
            attempt = job.attempts
        );
        crate::trace::start_root(&span);
        self.running
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.execute_inner(job, tasks).instrument(span).await;
        self.running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    async fn execute_inner(&self, job: LeasedJob, tasks: &Tasks) {
        let started = Instant::now();
        let (id, queue, kind) = (job.id, job.queue.clone(), job.kind.clone());
        let Some(handler) = self.registry.handler(&kind) else {
            let f = JobFailure::permanent(
                Code::UnknownJobKind,
                format!("no handler for job kind `{kind}`"),
            );
            self.finish_failed(&job, f, started).await;
            return;
        };
        let cancel = CancellationToken::new();
        let ctx = JobContext {
            job: job.clone(),
            cancel: cancel.clone(),
        };
        let mut handle = tasks.spawn(async move { handler.run(ctx).await }.in_current_span());
        let beat_every = (self.config.lease_ttl / 3).max(Duration::from_millis(200));
        let mut beat =
            tokio::time::interval_at(tokio::time::Instant::now() + beat_every, beat_every);
        let outcome = loop {
            tokio::select! {
                res = &mut handle => break res,
                _ = beat.tick() => match self.queue.heartbeat(id, &self.id, self.config.lease_ttl).await {
                    Ok(Heartbeat::Alive) => {}
                    Ok(Heartbeat::CancelRequested) => {
                        cancel.cancel();
                        handle.abort();
                        let _ = (&mut handle).await;
                        if let Err(e) = self.queue.mark_cancelled(id, &self.id).await {
                            error!(error = %e, "recording cancellation failed");
                        }
                        self.observe(&queue, &kind, "cancelled", started);
                        info!("job cancelled");
                        return;
                    }
                    Ok(Heartbeat::Lost) => {
                        cancel.cancel();
                        handle.abort();
                        warn!("lease lost (expired and taken by another worker); abandoning this attempt");
                        self.observe(&queue, &kind, "lost", started);
                        return;
                    }
                    Err(e) => warn!(error = %e, "heartbeat failed; will retry"),
                },
                _ = self.hard_stop.cancelled() => {
                    cancel.cancel();
                    handle.abort();
                    let _ = (&mut handle).await;
                    match self.queue.release(id, &self.id).await {
                        Ok(_) => warn!("shutdown grace period over: job released for another worker"),
                        Err(e) => error!(error = %e, "releasing job at shutdown failed; its lease will expire"),
                    }
                    self.observe(&queue, &kind, "released", started);
                    return;
                }
            }
        };
        match outcome {
            Ok(Ok(result)) => match self.queue.complete(id, &self.id, result).await {
                Ok(true) => {
                    self.observe(&queue, &kind, "succeeded", started);
                    info!(
                        duration_ms = started.elapsed().as_millis() as u64,
                        "job succeeded"
                    );
                }
                Ok(false) => warn!("job finished but its lease was lost; result discarded"),
                Err(e) => error!(error = %e, "recording job success failed"),
            },
            Ok(Err(failure)) => self.finish_failed(&job, failure, started).await,
            Err(join) => {
                let failure = if join.is_panic() {
                    let msg = panic_message(join.into_panic());
                    JobFailure::retryable(Code::JobPanicked, format!("job handler panicked: {msg}"))
                } else {
                    JobFailure::retryable(Code::JobFailed, "job task was aborted")
                };
                self.finish_failed(&job, failure, started).await;
            }
        }
    }

    async fn finish_failed(&self, job: &LeasedJob, failure: JobFailure, started: Instant) {
        let retry_at = (failure.retryable && job.attempts < job.max_attempts).then(|| {
            now_ms()
                + backoff_delay(
                    job.attempts,
                    self.config.backoff_base,
                    self.config.backoff_max,
                )
                .as_millis() as i64
        });
        self.metrics
            .job_failures
            .with_label_values(&[&job.queue, &failure.code])
            .inc();
        let outcome = if retry_at.is_some() {
            "retrying"
        } else {
            "dead"
        };
        self.observe(&job.queue, &job.kind, outcome, started);
        match retry_at {
            Some(at) => {
                warn!(code = %failure.code, error = %failure.message, retry_in_ms = at - now_ms(), "job failed; will retry")
            }
            // A request that cannot be done (the document went away, a bad payload) is the
            // caller's matter and a warning; anything else needs an operator: an error.
            None if failure_is_clients(&failure.code) => {
                warn!(code = %failure.code, error = %failure.message, "job failed for good (dead)")
            }
            None => {
                error!(code = %failure.code, error = %failure.message, "job failed for good (dead)")
            }
        }
        if let Err(e) = self.queue.fail(job.id, &self.id, &failure, retry_at).await {
            error!(error = %e, "recording job failure failed");
        }
    }

    fn observe(&self, queue: &str, kind: &str, outcome: &str, started: Instant) {
        self.metrics
            .job_duration
            .with_label_values(&[queue, kind, outcome])
            .observe(started.elapsed().as_secs_f64());
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..=10u32 {
            let d = backoff_delay(attempt, base, max);
            let nominal = (base * (1 << (attempt - 1))).min(max);
            assert!(
                d >= nominal.mul_f64(0.79) && d <= nominal.mul_f64(1.21),
                "{attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn states_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("bogus"), None);
    }
}
