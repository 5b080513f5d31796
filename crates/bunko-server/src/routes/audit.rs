//! `/api/v1/audit`: the security event log (administrators).

use crate::app::AppState;
use crate::http::ApiResult;
use crate::http::auth::AdminOnly;
use crate::http::extract::Query;
use axum::extract::State;
use bunko_core::Error;
use bunko_core::ids::rfc3339;
use bunko_core::ports::{AuditFilter, AuditRecord, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    id: Uuid,
    at: String,
    event: String,
    /// `success`, `failure`, `denied` or `locked`.
    outcome: String,
    actor_user: Option<Uuid>,
    actor_key: Option<Uuid>,
    actor: Option<String>,
    target: Option<String>,
    project_id: Option<Uuid>,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> Self {
        let e = r.event;
        Self {
            id: r.id,
            at: rfc3339(r.at_ms),
            event: e.event,
            outcome: e.outcome,
            actor_user: e.actor_user,
            actor_key: e.actor_key,
            actor: e.actor,
            target: e.target,
            project_id: e.project_id,
            ip: e.ip,
            user_agent: e.user_agent,
            detail: e.detail,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    items: Vec<AuditView>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// e.g. `login`, `login.lockout`, `refresh.reuse`, `key.created`, `permission.denied`.
    event: Option<String>,
    outcome: Option<String>,
    /// The acting user's id.
    actor: Option<Uuid>,
    /// RFC 3339 times.
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn time(name: &str, v: Option<&str>) -> Result<Option<i64>, Error> {
    v.map(|t| {
        t.parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|_| {
                Error::new(
                    bunko_core::Code::InvalidQuery,
                    format!("{name} must be an RFC 3339 time"),
                )
            })
    })
    .transpose()
}

/// Security events, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
pub async fn list(
    _: AdminOnly,
    State(s): State<AppState>,
    Query(q): Query<AuditParams>,
) -> ApiResult<axum::Json<AuditPage>> {
    let f = AuditFilter {
        event: q.event,
        outcome: q.outcome,
        actor_user: q.actor,
        since_ms: time("since", q.since.as_deref())?,
        until_ms: time("until", q.until.as_deref())?,
    };
    let page = s
        .store
        .list_audit(&f, PageRequest::new(q.limit, q.cursor.as_deref())?)
        .await?;
    Ok(axum::Json(AuditPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}
