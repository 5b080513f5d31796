//! Ports: the capability traits adapters implement (held as `Arc<dyn …>`). The embedded
//! default implements them on SQLite (bunko-store); a later PostgreSQL adapter implements the
//! same traits and runs the same contract suite (`bunko_store::contract`).

use crate::error::{Code, Error, ErrorCode};
use crate::jobs::{
    Enqueued, Heartbeat, JobFailure, JobFilter, JobRecord, JobState, LeasedJob, NewJob,
};
use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// What went wrong in a storage adapter. Messages are for the log; clients see the code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid state: {0}")]
    InvalidState(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Backend(String),
}

impl ErrorCode for StoreError {
    fn code(&self) -> Code {
        match self {
            StoreError::NotFound(_) => Code::NotFound,
            StoreError::Conflict(_) | StoreError::InvalidState(_) => Code::Conflict,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Backend(_) => Code::Internal,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => {
                Error::new(Code::NotFound, format!("{what} does not exist"))
            }
            StoreError::Conflict(m) | StoreError::InvalidState(m) => Error::conflict(m),
            StoreError::Unavailable(_) => Error {
                source: Some(Box::new(e)),
                ..Error::unavailable("the database is unavailable")
            },
            StoreError::Backend(_) => Error::internal(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A page of results; `next_cursor` is passed back as `cursor` for the next page.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Keyset pagination over time-ordered UUIDv7 ids (newest first).
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u32,
    /// Return items strictly older than this id.
    pub before: Option<Uuid>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;

    pub fn new(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, Error> {
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        if limit == 0 || limit > Self::MAX_LIMIT {
            return Err(Error::new(
                Code::InvalidQuery,
                format!("limit must be between 1 and {}", Self::MAX_LIMIT),
            ));
        }
        let before = cursor
            .map(|c| {
                Uuid::parse_str(c).map_err(|_| {
                    Error::new(Code::InvalidQuery, "cursor is not one this API returned")
                })
            })
            .transpose()?;
        Ok(Self { limit, before })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub slug: String,
    pub description: String,
}

#[async_trait]
pub trait ProjectQueries: Send + Sync {
    /// Fails with `Conflict` when the slug is taken.
    async fn create_project(&self, p: NewProject) -> StoreResult<Project>;
    /// By id or by slug.
    async fn get_project(&self, id_or_slug: &str) -> StoreResult<Option<Project>>;
    async fn list_projects(&self, page: PageRequest) -> StoreResult<Page<Project>>;
}

#[async_trait]
pub trait SettingsQueries: Send + Sync {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
    async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Insert only when absent; returns whether it was inserted.
    async fn put_setting_if_absent(&self, key: &str, value: &str) -> StoreResult<bool>;
}

/// The durable job queue. At-least-once delivery: a job whose worker stops heartbeating is
/// leased again after its TTL, so handlers must be idempotent.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// With an idempotency key, enqueuing the same key on the same queue again returns the
    /// existing job (`created: false`) instead of a new one.
    async fn enqueue(&self, job: NewJob) -> StoreResult<Enqueued>;
    /// Takes the next due job of `queue` (or one whose lease expired), if any.
    async fn lease(
        &self,
        queue: &str,
        worker: &str,
        ttl: Duration,
    ) -> StoreResult<Option<LeasedJob>>;
    /// Extends the lease; says whether it was lost or cancellation was requested.
    async fn heartbeat(&self, id: Uuid, worker: &str, ttl: Duration) -> StoreResult<Heartbeat>;
    /// Marks success; false when this worker no longer holds the lease.
    async fn complete(
        &self,
        id: Uuid,
        worker: &str,
        result: Option<serde_json::Value>,
    ) -> StoreResult<bool>;
    /// Records a failure: queued again at `retry_at_ms`, or dead when `None`.
    async fn fail(
        &self,
        id: Uuid,
        worker: &str,
        failure: &JobFailure,
        retry_at_ms: Option<i64>,
    ) -> StoreResult<bool>;
    /// Gives a running job back without counting the attempt (shutdown).
    async fn release(&self, id: Uuid, worker: &str) -> StoreResult<bool>;
    /// Marks a running job whose cancellation was requested as cancelled.
    async fn mark_cancelled(&self, id: Uuid, worker: &str) -> StoreResult<bool>;
    /// Queued → cancelled at once; running → cancellation requested (the worker stops it).
    async fn cancel(&self, id: Uuid) -> StoreResult<JobRecord>;
    /// Dead, cancelled (or succeeded) → queued again with a fresh attempt count.
    async fn retry(&self, id: Uuid) -> StoreResult<JobRecord>;
    async fn get_job(&self, id: Uuid) -> StoreResult<Option<JobRecord>>;
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> StoreResult<Page<JobRecord>>;
    /// Number of jobs per (queue, state).
    async fn job_counts(&self) -> StoreResult<Vec<(String, JobState, i64)>>;
}

/// The metadata store as a whole: every capability plus a health probe.
#[async_trait]
pub trait MetaStore: ProjectQueries + SettingsQueries + JobQueue {
    /// A cheap round trip; used by `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// Closes connections cleanly (SQLite checkpoints its WAL); call once at shutdown.
    async fn close(&self);
}
