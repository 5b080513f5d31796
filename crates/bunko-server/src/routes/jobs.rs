//! `/api/v1/jobs`: inspect and steer the durable job queue (administrators).

use crate::app::AppState;
use crate::http::auth::AdminOnly;
use crate::http::extract::{Json, Query};
use crate::http::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bunko_core::Code;
use bunko_core::ids::rfc3339;
use bunko_core::jobs::{self, JobFilter, JobRecord, JobState, SubmitOptions};
use bunko_core::ports::PageRequest;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct JobView {
    id: Uuid,
    queue: String,
    kind: String,
    /// `queued`, `running`, `succeeded`, `dead` or `cancelled`.
    state: String,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    idempotency_key: Option<String>,
    priority: i32,
    attempts: u32,
    max_attempts: u32,
    run_at: String,
    lease_owner: Option<String>,
    lease_expires_at: Option<String>,
    cancel_requested: bool,
    last_error_code: Option<String>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

impl From<JobRecord> for JobView {
    fn from(j: JobRecord) -> Self {
        Self {
            id: j.id,
            queue: j.queue,
            kind: j.kind,
            state: j.state.as_str().into(),
            payload: j.payload,
            result: j.result,
            idempotency_key: j.idempotency_key,
            priority: j.priority,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: rfc3339(j.run_at_ms),
            lease_owner: j.lease_owner,
            lease_expires_at: j.lease_expires_at_ms.map(rfc3339),
            cancel_requested: j.cancel_requested,
            last_error_code: j.last_error_code,
            last_error: j.last_error,
            created_at: rfc3339(j.created_at_ms),
            updated_at: rfc3339(j.updated_at_ms),
            finished_at: j.finished_at_ms.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct JobPage {
    items: Vec<JobView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    queue: Option<String>,
    /// `queued`, `running`, `succeeded`, `dead` or `cancelled`.
    state: Option<String>,
    kind: Option<String>,
    /// 1–500, default 50.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListParams),
    responses((status = 200, body = JobPage)), security(("bearer" = [])))]
pub async fn list(
    _: AdminOnly,
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<JobPage>> {
    let page = PageRequest::new(p.limit, p.cursor.as_deref())?;
    let state = p
        .state
        .as_deref()
        .map(|st| {
            JobState::parse(st)
                .ok_or_else(|| ApiError::new(Code::InvalidQuery, format!("unknown state `{st}`")))
        })
        .transpose()?;
    let filter = JobFilter {
        queue: p.queue,
        state,
        kind: p.kind,
    };
    let res = s.store.list_jobs(&filter, page).await?;
    Ok(axum::Json(JobPage {
        items: res.items.into_iter().map(JobView::from).collect(),
        next_cursor: res.next_cursor,
    }))
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError(bunko_core::Error::not_found("job", id)))
}

/// One job with its last error.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, description = "no such job")), security(("bearer" = [])))]
pub async fn show(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    let uuid = parse_id(&id)?;
    let job = s
        .store
        .get_job(uuid)
        .await?
        .ok_or_else(|| ApiError(bunko_core::Error::not_found("job", &id)))?;
    Ok(axum::Json(job.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// A registered job kind, e.g. `system.noop` or `system.sleep`.
    kind: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// Enqueuing the same key again returns the existing job.
    idempotency_key: Option<String>,
    max_attempts: Option<u32>,
    /// Run no earlier than this many seconds from now.
    delay_secs: Option<u64>,
    #[serde(default)]
    priority: i32,
}

#[derive(Serialize, ToSchema)]
pub struct EnqueueResponse {
    id: Uuid,
    /// False when the idempotency key matched an existing job.
    created: bool,
}

/// Enqueue a job.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = EnqueueRequest,
    responses((status = 202, body = EnqueueResponse)), security(("bearer" = [])))]
pub async fn enqueue(
    _: AdminOnly,
    State(s): State<AppState>,
    Json(r): Json<EnqueueRequest>,
) -> ApiResult<(StatusCode, axum::Json<EnqueueResponse>)> {
    let payload = if r.payload.is_null() {
        serde_json::json!({})
    } else {
        r.payload
    };
    let opts = SubmitOptions {
        idempotency_key: r.idempotency_key,
        max_attempts: r.max_attempts,
        delay: r.delay_secs.map(Duration::from_secs),
        priority: r.priority,
    };
    let e = jobs::submit(
        s.store.as_ref(),
        &s.registry,
        s.config.jobs.max_attempts,
        &r.kind,
        payload,
        opts,
    )
    .await?;
    if let Some(w) = &s.worker {
        w.wake();
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(EnqueueResponse {
            id: e.id,
            created: e.created,
        }),
    ))
}

/// Retry a dead or cancelled job (attempts start again from zero).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 409, description = "not dead or cancelled")), security(("bearer" = [])))]
pub async fn retry(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    let job = s.store.retry(parse_id(&id)?).await?;
    if let Some(w) = &s.worker {
        w.wake();
    }
    Ok(axum::Json(job.into()))
}

/// Cancel a queued job, or ask a running one to stop.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 409, description = "already finished")), security(("bearer" = [])))]
pub async fn cancel(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    Ok(axum::Json(s.store.cancel(parse_id(&id)?).await?.into()))
}
