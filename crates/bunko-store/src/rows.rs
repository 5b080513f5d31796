//! Rows → domain values, once for every backend. Both schemas store the same columns with the
//! same meanings (ids and JSON as text, times as integer milliseconds, flags as 0/1 integers),
//! so a mapper reads a SQLite row and a PostgreSQL row alike through [`Cols`].

use bunko_core::answers::{Note, PageRef, Turn};
use bunko_core::documents::{
    ChunkRecord, DocError, DocMeta, DocOrigin, DocStatus, DocType, Document, PageMethod, PageText,
};
use bunko_core::identity::{GlobalRole, ProjectRole, Scope, UserStatus};
use bunko_core::jobs::{JobRecord, JobState};
use bunko_core::ports::{
    ApiKey, AuditEvent, AuditRecord, Member, Page, Project, StoreError, StoreResult, UsageTotal,
    User,
};
use bunko_core::schedule::{Origin, RunKind, Schedule, ScheduleRun};
use bunko_core::sources::{CrawlStats, Source, SourceItem};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

/// A column type both drivers decode.
pub trait ColType: Sized {
    fn sqlite(r: &SqliteRow, c: &str) -> Result<Self, sqlx::Error>;
    fn pg(r: &PgRow, c: &str) -> Result<Self, sqlx::Error>;
}

macro_rules! col_types {
    ($($t:ty),+) => {$(
        impl ColType for $t {
            fn sqlite(r: &SqliteRow, c: &str) -> Result<Self, sqlx::Error> {
                r.try_get(c)
            }
            fn pg(r: &PgRow, c: &str) -> Result<Self, sqlx::Error> {
                r.try_get(c)
            }
        }
    )+};
}
col_types!(String, Option<String>, i64, Option<i64>, f64, Option<f64>);

/// A row of either backend.
pub trait Cols {
    fn col<T: ColType>(&self, c: &str) -> StoreResult<T>;
}

fn decode_err(c: &str, e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!("column {c}: {e}"))
}

impl Cols for SqliteRow {
    fn col<T: ColType>(&self, c: &str) -> StoreResult<T> {
        T::sqlite(self, c).map_err(|e| decode_err(c, e))
    }
}

impl Cols for PgRow {
    fn col<T: ColType>(&self, c: &str) -> StoreResult<T> {
        T::pg(self, c).map_err(|e| decode_err(c, e))
    }
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(crate) fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} `{v}` is not valid"))
}

pub(crate) fn parse_uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| bad("id", s))
}

pub(crate) fn uuid(r: &impl Cols, c: &str) -> StoreResult<Uuid> {
    parse_uuid(&r.col::<String>(c)?)
}

pub(crate) fn opt_uuid(r: &impl Cols, c: &str) -> StoreResult<Option<Uuid>> {
    r.col::<Option<String>>(c)?
        .as_deref()
        .map(parse_uuid)
        .transpose()
}

fn count(r: &impl Cols, c: &str) -> StoreResult<u32> {
    Ok(r.col::<i64>(c)?.clamp(0, i64::from(u32::MAX)) as u32)
}

fn flag(r: &impl Cols, c: &str) -> StoreResult<bool> {
    Ok(r.col::<i64>(c)? != 0)
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(backend)
}

pub(crate) fn unjson<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(backend)
}

/// Ids as a JSON array (the list filters bind one array instead of a placeholder per id).
pub(crate) fn uuid_list(ids: &[Uuid]) -> StoreResult<String> {
    json(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
}

pub(crate) fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Trims the look-ahead row and returns the cursor for the next page, if there is one.
pub(crate) fn paginate<T>(
    items: &mut Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> Uuid,
) -> Option<String> {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| id(t).to_string())
    } else {
        None
    }
}

/// Maps rows fetched with one look-ahead row into a page.
pub(crate) fn to_page<R, T>(
    rows: &[R],
    limit: u32,
    map: impl Fn(&R) -> StoreResult<T>,
    id: impl Fn(&T) -> Uuid,
) -> StoreResult<Page<T>> {
    let mut items = rows.iter().map(map).collect::<StoreResult<Vec<_>>>()?;
    let next_cursor = paginate(&mut items, limit, id);
    Ok(Page { items, next_cursor })
}

pub(crate) fn project(r: &impl Cols) -> StoreResult<Project> {
    Ok(Project {
        id: uuid(r, "id")?,
        name: r.col("name")?,
        slug: r.col("slug")?,
        description: r.col("description")?,
        created_at_ms: r.col("created_at")?,
        updated_at_ms: r.col("updated_at")?,
    })
}

pub(crate) fn job(r: &impl Cols) -> StoreResult<JobRecord> {
    let state: String = r.col("state")?;
    let payload: String = r.col("payload")?;
    let result: Option<String> = r.col("result")?;
    Ok(JobRecord {
        id: uuid(r, "id")?,
        queue: r.col("queue")?,
        kind: r.col("kind")?,
        state: JobState::parse(&state).ok_or_else(|| bad("job state", &state))?,
        payload: unjson(&payload)?,
        result: result.as_deref().map(unjson).transpose()?,
        idempotency_key: r.col("idempotency_key")?,
        priority: r.col::<i64>("priority")? as i32,
        attempts: count(r, "attempts")?,
        max_attempts: count(r, "max_attempts")?,
        run_at_ms: r.col("run_at")?,
        lease_owner: r.col("lease_owner")?,
        lease_expires_at_ms: r.col("lease_expires_at")?,
        cancel_requested: flag(r, "cancel_requested")?,
        last_error_code: r.col("last_error_code")?,
        last_error: r.col("last_error")?,
        created_at_ms: r.col("created_at")?,
        updated_at_ms: r.col("updated_at")?,
        finished_at_ms: r.col("finished_at")?,
    })
}

/// The `(queue, state, n)` rows of a count grouped by queue and state.
pub(crate) fn job_count(r: &impl Cols) -> StoreResult<(String, JobState, i64)> {
    let state: String = r.col("state")?;
    Ok((
        r.col("queue")?,
        JobState::parse(&state).ok_or_else(|| bad("job state", &state))?,
        r.col("n")?,
    ))
}

pub(crate) fn user(r: &impl Cols) -> StoreResult<User> {
    let role: String = r.col("role")?;
    let status: String = r.col("status")?;
    Ok(User {
        id: uuid(r, "id")?,
        email: r.col("email")?,
        display_name: r.col("display_name")?,
        password_hash: r.col("password_hash")?,
        role: GlobalRole::parse(&role).ok_or_else(|| bad("role", &role))?,
        status: UserStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        created_at_ms: r.col("created_at")?,
        updated_at_ms: r.col("updated_at")?,
    })
}

/// An API key whose columns carry `prefix` (`k_` when joined with its user).
pub(crate) fn api_key(r: &impl Cols, prefix: &str) -> StoreResult<ApiKey> {
    let c = |c: &str| format!("{prefix}{c}");
    let scopes: String = r.col(&c("scopes"))?;
    Ok(ApiKey {
        id: uuid(r, &c("id"))?,
        user_id: uuid(r, &c("user_id"))?,
        name: r.col(&c("name"))?,
        prefix: r.col(&c("prefix"))?,
        scopes: Scope::parse_list(&scopes).map_err(|_| bad("scopes", &scopes))?,
        project_id: opt_uuid(r, &c("project_id"))?,
        expires_at_ms: r.col(&c("expires_at"))?,
        last_used_at_ms: r.col(&c("last_used_at"))?,
        revoked_at_ms: r.col(&c("revoked_at"))?,
        created_at_ms: r.col(&c("created_at"))?,
    })
}

pub(crate) fn member(r: &impl Cols) -> StoreResult<Member> {
    let role: String = r.col("role")?;
    Ok(Member {
        user_id: uuid(r, "user_id")?,
        email: r.col("email")?,
        display_name: r.col("display_name")?,
        role: ProjectRole::parse(&role).ok_or_else(|| bad("project role", &role))?,
        created_at_ms: r.col("created_at")?,
    })
}

pub(crate) fn audit(r: &impl Cols) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: uuid(r, "id")?,
        at_ms: r.col("at")?,
        event: AuditEvent {
            event: r.col("event")?,
            outcome: r.col("outcome")?,
            actor_user: opt_uuid(r, "actor_user")?,
            actor_key: opt_uuid(r, "actor_key")?,
            actor: r.col("actor")?,
            target: r.col("target")?,
            project_id: opt_uuid(r, "project_id")?,
            ip: r.col("ip")?,
            user_agent: r.col("user_agent")?,
            detail: r.col("detail")?,
        },
    })
}

pub(crate) fn document(r: &impl Cols) -> StoreResult<Document> {
    let status: String = r.col("status")?;
    let doc_type: String = r.col("doc_type")?;
    let meta: String = r.col("meta")?;
    let tags: String = r.col("tags")?;
    let code: Option<String> = r.col("error_code")?;
    let message: Option<String> = r.col("error_message")?;
    let job: Option<String> = r.col("job_id")?;
    let size: i64 = r.col("size_bytes")?;
    let progress: f64 = r.col("progress")?;
    Ok(Document {
        id: uuid(r, "id")?,
        project_id: uuid(r, "project_id")?,
        title: r.col("title")?,
        filename: r.col("filename")?,
        doc_type: DocType::parse(&doc_type).ok_or_else(|| bad("doc_type", &doc_type))?,
        sha256: r.col("sha256")?,
        size_bytes: size.max(0) as u64,
        status: DocStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        stage: r.col("stage")?,
        progress: progress as f32,
        error: code.map(|code| DocError {
            code,
            message: message.unwrap_or_default(),
        }),
        page_count: count(r, "page_count")?,
        chunk_count: count(r, "chunk_count")?,
        language: r.col("language")?,
        meta: serde_json::from_str::<DocMeta>(&meta).unwrap_or_default(),
        source: r.col("source")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        job_id: job.and_then(|j| Uuid::parse_str(&j).ok()),
        created_at_ms: r.col("created_at")?,
        updated_at_ms: r.col("updated_at")?,
        origin: origin(r)?,
    })
}

fn origin(r: &impl Cols) -> StoreResult<Option<DocOrigin>> {
    let Some(external_id) = r.col::<Option<String>>("external_id")? else {
        return Ok(None);
    };
    let meta: Option<String> = r.col("origin_meta")?;
    Ok(Some(DocOrigin {
        external_id,
        version: r.col("version")?,
        valid_from: r.col("valid_from")?,
        valid_to: r.col("valid_to")?,
        current: flag(r, "is_current")?,
        meta: meta
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or(serde_json::Value::Null),
    }))
}

pub(crate) fn chunk(r: &impl Cols) -> StoreResult<ChunkRecord> {
    Ok(ChunkRecord {
        id: r.col("id")?,
        document_id: uuid(r, "document_id")?,
        project_id: uuid(r, "project_id")?,
        ord: count(r, "ord")?,
        text: r.col("text")?,
        page_start: count(r, "page_start")?,
        page_end: count(r, "page_end")?,
        char_start: count(r, "char_start")?,
        char_end: count(r, "char_end")?,
        section_path: r.col("section_path")?,
        language: r.col("language")?,
        is_references: flag(r, "is_references")?,
        content_hash: r.col("content_hash")?,
    })
}

pub(crate) fn page_text(r: &impl Cols, page: u32) -> StoreResult<PageText> {
    let method: String = r.col("method")?;
    let confidence: Option<f64> = r.col("confidence")?;
    let offsets: String = r.col("offsets")?;
    Ok(PageText {
        page,
        text: r.col("text")?,
        raw: r.col("raw")?,
        method: PageMethod::parse(&method).ok_or_else(|| bad("method", &method))?,
        confidence: confidence.map(|c| c as f32),
        offsets: serde_json::from_str(&offsets).map_err(|_| bad("offsets", &offsets))?,
    })
}

/// A document row with the error of the job that last processed it (`stale_documents`).
pub(crate) fn stale_document(
    r: &impl Cols,
) -> StoreResult<(Document, Option<String>, Option<String>)> {
    Ok((document(r)?, r.col("job_error_code")?, r.col("job_error")?))
}

pub(crate) fn ready_document(r: &impl Cols) -> StoreResult<(Uuid, u32)> {
    Ok((uuid(r, "id")?, count(r, "chunk_count")?))
}

pub(crate) fn usage_total(r: &impl Cols) -> StoreResult<UsageTotal> {
    let n = |c: &str| -> StoreResult<u64> { Ok(u64::try_from(r.col::<i64>(c)?).unwrap_or(0)) };
    Ok(UsageTotal {
        group: r.col("g")?,
        requests: n("requests")?,
        input_tokens: n("input")?,
        output_tokens: n("output")?,
        cost_usd: r.col("cost")?,
        errors: n("errors")?,
    })
}

pub(crate) fn turn(r: &impl Cols) -> StoreResult<Turn> {
    Ok(Turn {
        question: r.col("question")?,
        answer: r.col("answer")?,
        at_ms: r.col("at")?,
    })
}

pub(crate) fn note(r: &impl Cols) -> StoreResult<Note> {
    let tags: String = r.col("tags")?;
    let citations: String = r.col("citations")?;
    Ok(Note {
        id: uuid(r, "id")?,
        project_id: uuid(r, "project_id")?,
        title: r.col("title")?,
        body: r.col("body")?,
        tags: unjson(&tags)?,
        author_id: opt_uuid(r, "author_id")?,
        citations: unjson::<Vec<PageRef>>(&citations)?,
        created_at_ms: r.col("created_at")?,
        updated_at_ms: r.col("updated_at")?,
    })
}

pub(crate) fn schedule(r: &impl Cols) -> StoreResult<Schedule> {
    let def: String = r.col("definition")?;
    let origin: String = r.col("origin")?;
    Ok(Schedule {
        def: unjson(&def)?,
        origin: Origin::parse(&origin).ok_or_else(|| bad("origin", &origin))?,
        paused: flag(r, "paused")?,
        next_run_ms: r.col("next_run")?,
        last_run_ms: r.col("last_run")?,
        last_job_id: opt_uuid(r, "last_job_id")?,
        created_at_ms: r.col("created_at")?,
        updated_at_ms: r.col("updated_at")?,
    })
}

pub(crate) fn schedule_run(r: &impl Cols) -> StoreResult<ScheduleRun> {
    let kind: String = r.col("kind")?;
    Ok(ScheduleRun {
        schedule: r.col("schedule")?,
        slot_ms: r.col("slot")?,
        fired_at_ms: r.col("fired_at")?,
        kind: RunKind::parse(&kind).ok_or_else(|| bad("run kind", &kind))?,
        job_id: opt_uuid(r, "job_id")?,
        slots: u32::try_from(r.col::<i64>("slots")?).unwrap_or(1),
    })
}

pub(crate) fn source(r: &impl Cols) -> StoreResult<Source> {
    let def: String = r.col("definition")?;
    let origin: String = r.col("origin")?;
    let cursor: String = r.col("cursor")?;
    let stats: String = r.col("last_stats")?;
    Ok(Source {
        def: unjson(&def)?,
        origin: Origin::parse(&origin).ok_or_else(|| bad("origin", &origin))?,
        cursor: unjson(&cursor)?,
        last_run_ms: r.col("last_run")?,
        last_job_id: opt_uuid(r, "last_job_id")?,
        last_status: r.col("last_status")?,
        last_error: r.col("last_error")?,
        last_stats: serde_json::from_str::<CrawlStats>(&stats).unwrap_or_default(),
        created_at_ms: r.col("created_at")?,
        updated_at_ms: r.col("updated_at")?,
    })
}

pub(crate) fn source_item(r: &impl Cols) -> StoreResult<SourceItem> {
    Ok(SourceItem {
        key: r.col("item_key")?,
        content_hash: r.col("content_hash")?,
        document_id: opt_uuid(r, "document_id")?,
        seen_at_ms: r.col("seen_at")?,
    })
}

pub(crate) fn leased_job(r: &impl Cols) -> StoreResult<bunko_core::jobs::LeasedJob> {
    let payload: String = r.col("payload")?;
    Ok(bunko_core::jobs::LeasedJob {
        id: uuid(r, "id")?,
        queue: r.col("queue")?,
        kind: r.col("kind")?,
        payload: unjson(&payload)?,
        attempts: count(r, "attempts")?,
        max_attempts: count(r, "max_attempts")?,
    })
}
