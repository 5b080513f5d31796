//! `/api/v1/schedules`: the cron table (administrators). Schedules from the configuration are
//! listed with `origin: "config"` and can be paused, resumed and run now, but are changed in
//! the configuration; schedules made here (`origin: "api"`) can also be deleted.

use crate::app::AppState;
use crate::http::auth::AdminOnly;
use crate::http::extract::{Json, Query};
use crate::http::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bunko_core::Code;
use bunko_core::ids::rfc3339;
use bunko_core::schedule::{Missed, Schedule, ScheduleDef, ScheduleRun};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct ScheduleView {
    name: String,
    /// Five-field cron expression or a macro (`@daily`).
    cron: String,
    /// IANA time zone the expression is read in.
    timezone: String,
    /// The job kind each firing enqueues.
    job: String,
    queue: String,
    #[schema(value_type = Object)]
    params: serde_json::Value,
    enabled: bool,
    /// `skip` or `catch_up_once`: what happens to slots missed during downtime.
    missed: String,
    /// `config` or `api`.
    origin: String,
    paused: bool,
    next_run: Option<String>,
    last_run: Option<String>,
    last_job_id: Option<Uuid>,
    created_at: String,
    updated_at: String,
}

fn missed_str(m: Missed) -> &'static str {
    match m {
        Missed::Skip => "skip",
        Missed::CatchUpOnce => "catch_up_once",
    }
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        Self {
            missed: missed_str(s.def.missed).into(),
            name: s.def.name,
            cron: s.def.cron,
            timezone: s.def.timezone,
            job: s.def.job,
            queue: s.def.queue,
            params: s.def.params,
            enabled: s.def.enabled,
            origin: s.origin.as_str().into(),
            paused: s.paused,
            next_run: s.next_run_ms.map(rfc3339),
            last_run: s.last_run_ms.map(rfc3339),
            last_job_id: s.last_job_id,
            created_at: rfc3339(s.created_at_ms),
            updated_at: rfc3339(s.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    items: Vec<ScheduleView>,
}

/// The schedules, by name.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)), security(("bearer" = [])))]
pub async fn list(_: AdminOnly, State(s): State<AppState>) -> ApiResult<axum::Json<ScheduleList>> {
    let items = s.store.list_schedules().await?;
    Ok(axum::Json(ScheduleList {
        items: items.into_iter().map(ScheduleView::from).collect(),
    }))
}

/// A schedule to make (the same fields as a `[[schedules]]` entry).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// 1–64 lowercase letters, digits, `-`, `_`, `.`; unique.
    name: String,
    cron: String,
    /// Default `UTC`.
    timezone: Option<String>,
    /// A job kind this build runs (e.g. `audit.prune`).
    job: String,
    queue: Option<String>,
    #[schema(value_type = Option<Object>)]
    params: Option<serde_json::Value>,
    enabled: Option<bool>,
    /// `skip` (default) or `catch_up_once`.
    missed: Option<String>,
}

/// Make a schedule; it first fires at its next slot.
#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules", request_body = CreateRequest,
    responses((status = 201, body = ScheduleView), (status = 409, description = "the name is taken"),
        (status = 422, description = "invalid cron expression, time zone, job kind or name")),
    security(("bearer" = [])))]
pub async fn create(
    _: AdminOnly,
    State(s): State<AppState>,
    Json(r): Json<CreateRequest>,
) -> ApiResult<(StatusCode, axum::Json<ScheduleView>)> {
    let missed = match r.missed.as_deref() {
        None | Some("skip") => Missed::Skip,
        Some("catch_up_once") => Missed::CatchUpOnce,
        Some(other) => {
            return Err(ApiError::new(
                Code::InvalidInput,
                format!("missed `{other}`: use `skip` or `catch_up_once`"),
            ));
        }
    };
    let def = ScheduleDef {
        name: r.name,
        cron: r.cron,
        timezone: r.timezone.unwrap_or_else(|| "UTC".into()),
        job: r.job,
        queue: r.queue.unwrap_or_default(),
        params: r.params.unwrap_or_else(|| serde_json::json!({})),
        enabled: r.enabled.unwrap_or(true),
        missed,
    };
    let def = crate::scheduler::resolve(&def, &s.registry)
        .map_err(|e| ApiError::new(Code::InvalidInput, e))?;
    let made = s.store.create_schedule(&def).await?;
    Ok((StatusCode::CREATED, axum::Json(made.into())))
}

async fn find(s: &AppState, name: &str) -> ApiResult<Schedule> {
    s.store
        .get_schedule(name)
        .await?
        .ok_or_else(|| ApiError(bunko_core::Error::not_found("schedule", name)))
}

/// One schedule.
#[utoipa::path(get, path = "/api/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, description = "no such schedule")),
    security(("bearer" = [])))]
pub async fn show(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<ScheduleView>> {
    Ok(axum::Json(find(&s, &name).await?.into()))
}

/// Delete a schedule made over the API, with its history (its jobs stay).
#[utoipa::path(delete, path = "/api/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 204), (status = 404, description = "no such schedule"),
        (status = 409, description = "defined in the configuration")),
    security(("bearer" = [])))]
pub async fn delete(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let sched = find(&s, &name).await?;
    if sched.origin == bunko_core::schedule::Origin::Config {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "schedule `{name}` is defined in the configuration: remove it there (or pause it)"
            ),
        ));
    }
    s.store.delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_paused(s: &AppState, name: &str, paused: bool) -> ApiResult<ScheduleView> {
    find(s, name).await?;
    let out = s
        .store
        .set_schedule_paused(name, paused)
        .await?
        .ok_or_else(|| ApiError(bunko_core::Error::not_found("schedule", name)))?;
    Ok(out.into())
}

/// Pause a schedule (kept across restarts).
#[utoipa::path(post, path = "/api/v1/schedules/{name}/pause", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, description = "no such schedule")),
    security(("bearer" = [])))]
pub async fn pause(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<ScheduleView>> {
    Ok(axum::Json(set_paused(&s, &name, true).await?))
}

/// Resume a paused schedule: it fires at its next slot (slots passed while paused are not run).
#[utoipa::path(post, path = "/api/v1/schedules/{name}/resume", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, description = "no such schedule")),
    security(("bearer" = [])))]
pub async fn resume(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<ScheduleView>> {
    Ok(axum::Json(set_paused(&s, &name, false).await?))
}

#[derive(Serialize, ToSchema)]
pub struct RunView {
    /// The slot fired for (the request time for `manual`).
    slot: String,
    fired_at: String,
    /// `on_time`, `catch_up`, `skipped` or `manual`.
    kind: String,
    job_id: Option<Uuid>,
    /// The job's state now (none for `skipped`).
    job_state: Option<String>,
    /// How many slots the firing stands for.
    slots: u32,
}

async fn run_view(s: &AppState, r: ScheduleRun) -> ApiResult<RunView> {
    let job_state = match r.job_id {
        Some(id) => s
            .store
            .get_job(id)
            .await?
            .map(|j| j.state.as_str().to_owned()),
        None => None,
    };
    Ok(RunView {
        slot: rfc3339(r.slot_ms),
        fired_at: rfc3339(r.fired_at_ms),
        kind: r.kind.as_str().into(),
        job_id: r.job_id,
        job_state,
        slots: r.slots,
    })
}

/// Fire a schedule now, outside its slots (its next slot is unchanged).
#[utoipa::path(post, path = "/api/v1/schedules/{name}/run", tag = "schedules", params(("name" = String, Path)),
    responses((status = 202, body = RunView), (status = 404, description = "no such schedule")),
    security(("bearer" = [])))]
pub async fn run_now(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<RunView>)> {
    find(&s, &name).await?;
    let run = bunko_core::schedule::run_now(s.store.as_ref(), &name).await?;
    if let Some(w) = &s.worker {
        w.wake();
    }
    Ok((StatusCode::ACCEPTED, axum::Json(run_view(&s, run).await?)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    /// 1–200, default 20.
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    items: Vec<RunView>,
}

/// A schedule's firings, newest first, with their jobs' states.
#[utoipa::path(get, path = "/api/v1/schedules/{name}/runs", tag = "schedules",
    params(("name" = String, Path), RunsParams),
    responses((status = 200, body = RunList), (status = 404, description = "no such schedule")),
    security(("bearer" = [])))]
pub async fn runs(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(p): Query<RunsParams>,
) -> ApiResult<axum::Json<RunList>> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::new(Code::InvalidQuery, "limit must be 1-200"));
    }
    find(&s, &name).await?;
    let mut items = Vec::new();
    for r in s.store.schedule_runs(&name, limit).await? {
        items.push(run_view(&s, r).await?);
    }
    Ok(axum::Json(RunList { items }))
}
