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

/// Every item of a paginated listing, fetched page by page (`MAX_LIMIT` at a time).
pub async fn all_pages<T, F>(mut list: impl FnMut(PageRequest) -> F) -> StoreResult<Vec<T>>
where
    F: std::future::Future<Output = StoreResult<Page<T>>>,
{
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = list(PageRequest {
            limit: PageRequest::MAX_LIMIT,
            before,
        })
        .await?;
        out.extend(page.items);
        match page.next_cursor.and_then(|c| Uuid::parse_str(&c).ok()) {
            Some(c) => before = Some(c),
            None => return Ok(out),
        }
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
    /// Deletes the project with its memberships and the API keys bound to it.
    async fn delete_project(&self, id: Uuid) -> StoreResult<bool>;
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
pub trait MetaStore:
    ProjectQueries
    + SettingsQueries
    + JobQueue
    + UserQueries
    + MembershipQueries
    + SessionQueries
    + ApiKeyQueries
    + AuditQueries
    + crate::documents::DocumentQueries
    + UsageQueries
    + crate::answers::AnswerQueries
    + crate::schedule::ScheduleQueries
    + crate::sources::SourceQueries
    + crate::maintenance::MaintenanceQueries
{
    /// A cheap round trip; used by `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// Closes connections cleanly (SQLite checkpoints its WAL); call once at shutdown.
    async fn close(&self);
    /// A consistent copy of the whole database written to `path` (which must not exist),
    /// taken online: readers and writers carry on meanwhile.
    async fn snapshot_into(&self, path: &std::path::Path) -> StoreResult<()>;
}

// ---------------------------------------------------------------------------------------
// Identity

use crate::identity::{GlobalRole, ProjectRole, Scope, UserStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    /// argon2id PHC string; `None` for users who cannot log in with a password.
    pub password_hash: Option<String>,
    pub role: GlobalRole,
    pub status: UserStatus,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub role: GlobalRole,
}

#[async_trait]
pub trait UserQueries: Send + Sync {
    /// `Conflict` when the email (case-insensitive) is taken.
    async fn create_user(&self, u: NewUser) -> StoreResult<User>;
    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>>;
    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self, page: PageRequest) -> StoreResult<Page<User>>;
    async fn set_password_hash(&self, id: Uuid, hash: &str) -> StoreResult<bool>;
    async fn set_user_status(&self, id: Uuid, status: UserStatus) -> StoreResult<bool>;
    async fn set_user_role(&self, id: Uuid, role: GlobalRole) -> StoreResult<bool>;
    async fn count_active_admins(&self) -> StoreResult<i64>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: ProjectRole,
    pub created_at_ms: i64,
}

#[async_trait]
pub trait MembershipQueries: Send + Sync {
    /// Adds or changes a membership.
    async fn put_member(&self, project: Uuid, user: Uuid, role: ProjectRole) -> StoreResult<()>;
    async fn remove_member(&self, project: Uuid, user: Uuid) -> StoreResult<bool>;
    async fn member_role(&self, project: Uuid, user: Uuid) -> StoreResult<Option<ProjectRole>>;
    async fn list_members(&self, project: Uuid) -> StoreResult<Vec<Member>>;
    async fn count_owners(&self, project: Uuid) -> StoreResult<i64>;
    /// Projects the user is a member of, newest first.
    async fn list_projects_of(&self, user: Uuid, page: PageRequest) -> StoreResult<Page<Project>>;
}

/// What happened when a refresh token was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid and now used up; issue the next one in the same session.
    Rotated { session_id: Uuid, user_id: Uuid },
    /// Already used before: a copy is in someone else's hands. The session is now revoked.
    Reused { session_id: Uuid, user_id: Uuid },
    /// Unknown, expired, or its session was revoked.
    Invalid,
}

#[async_trait]
pub trait SessionQueries: Send + Sync {
    async fn create_session(
        &self,
        user: Uuid,
        ip: Option<&str>,
        user_agent: Option<&str>,
    ) -> StoreResult<Uuid>;
    async fn add_refresh_token(
        &self,
        session: Uuid,
        token_hash: &str,
        expires_at_ms: i64,
    ) -> StoreResult<()>;
    /// Atomically uses a refresh token; a second use revokes its whole session.
    async fn use_refresh_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<RefreshUse>;
    async fn revoke_session(&self, session: Uuid, reason: &str) -> StoreResult<bool>;
    async fn revoke_user_sessions(&self, user: Uuid, reason: &str) -> StoreResult<u64>;
    /// The user behind an access token, if the session is still open.
    async fn session_user(&self, session: Uuid, user: Uuid) -> StoreResult<Option<User>>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// The first characters of the secret, to recognise a key in lists.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub project_id: Option<Uuid>,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub scopes: Vec<Scope>,
    pub project_id: Option<Uuid>,
    pub expires_at_ms: Option<i64>,
}

#[async_trait]
pub trait ApiKeyQueries: Send + Sync {
    async fn create_api_key(&self, k: NewApiKey) -> StoreResult<ApiKey>;
    /// The key and its owner, by the hash of the presented secret.
    async fn api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<(ApiKey, User)>>;
    async fn get_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>>;
    async fn list_api_keys(
        &self,
        user: Option<Uuid>,
        page: PageRequest,
    ) -> StoreResult<Page<ApiKey>>;
    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<bool>;
    async fn touch_api_key(&self, id: Uuid, now_ms: i64) -> StoreResult<()>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AuditEvent {
    pub event: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    pub actor_user: Option<Uuid>,
    pub actor_key: Option<Uuid>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub project_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at_ms: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub event: Option<String>,
    pub outcome: Option<String>,
    pub actor_user: Option<Uuid>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

#[async_trait]
pub trait AuditQueries: Send + Sync {
    async fn append_audit(&self, e: AuditEvent) -> StoreResult<()>;
    async fn list_audit(
        &self,
        f: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditRecord>>;
    /// Deletes records older than the cutoff (the only deletion the log allows).
    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64>;
}

// ---------------------------------------------------------------------------------------
// The gateway's usage ledger

/// One model call, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub at_ms: i64,
    pub user_id: Uuid,
    pub key_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    /// `openai`, `stream`, `ollama.chat`, …
    pub api: String,
    /// The model alias.
    pub model: String,
    pub provider: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Counted by bunko because the upstream reported none.
    pub estimated: bool,
    pub cost_usd: f64,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    pub outcome: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    User,
    Key,
    Project,
    Model,
}

impl UsageGroup {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "key" => Some(Self::Key),
            "project" => Some(Self::Project),
            "model" => Some(Self::Model),
            _ => None,
        }
    }
}

/// Totals for one group in a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageTotal {
    /// The user / key / project id or the model alias (`""` for calls without a key/project).
    pub group: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub errors: u64,
}

#[async_trait]
pub trait UsageQueries: Send + Sync {
    /// Appends a batch in one transaction.
    async fn append_usage(&self, batch: &[UsageRecord]) -> StoreResult<()>;
    /// Totals per group for `from_ms <= at < to_ms`, optionally only one user's calls.
    async fn usage_totals(
        &self,
        group: UsageGroup,
        from_ms: i64,
        to_ms: i64,
        user: Option<Uuid>,
    ) -> StoreResult<Vec<UsageTotal>>;
    /// Rolls ledger rows before `before_ms` up into one row per UTC day, user, key, project
    /// and model (totals stay the same); returns how many ledger rows it folded.
    async fn rollup_usage(&self, before_ms: i64) -> StoreResult<u64>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_pages_follows_the_cursor_to_the_end() {
        // 1,200 ids, newest first, served in pages as a store does.
        let mut ids: Vec<Uuid> = (0..1200).map(|_| Uuid::now_v7()).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut calls = 0;
        let got = all_pages(|page: PageRequest| {
            calls += 1;
            let rest: Vec<Uuid> = ids
                .iter()
                .copied()
                .filter(|id| page.before.is_none_or(|b| *id < b))
                .collect();
            let items: Vec<Uuid> = rest.iter().copied().take(page.limit as usize).collect();
            let next_cursor = (rest.len() > items.len()).then(|| items.last().unwrap().to_string());
            std::future::ready(Ok(Page { items, next_cursor }))
        })
        .await
        .unwrap();
        assert_eq!(got, ids);
        assert_eq!(calls, 3);
    }
}
