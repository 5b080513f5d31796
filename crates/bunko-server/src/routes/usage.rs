//! `/api/v1/usage`: the gateway's usage ledger, totalled per user, key, project or model over
//! a time range. Administrators see every call; everyone else sees their own.

use crate::app::AppState;
use crate::http::ApiResult;
use crate::http::auth::Authed;
use crate::http::extract::Query;
use axum::extract::State;
use bunko_core::ids::rfc3339;
use bunko_core::ports::UsageGroup;
use bunko_core::{Code, Error};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// `user`, `key`, `project` or `model` (default).
    group_by: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (UTC); default: 30 days before `to`.
    from: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (UTC, exclusive); default: now.
    to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageRow {
    /// The user, key or project id, or the model alias; empty for calls without a key or
    /// project.
    group: String,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    errors: u64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    group_by: String,
    from: String,
    to: String,
    /// `all` for administrators, `own` for everyone else.
    visibility: String,
    totals: Vec<UsageRow>,
}

fn time(name: &str, v: &str) -> Result<i64, Error> {
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    v.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_millisecond())
        .ok_or_else(|| {
            Error::new(
                Code::InvalidQuery,
                format!("{name} must be an RFC 3339 time or a YYYY-MM-DD date"),
            )
        })
}

/// Totals of gateway calls.
#[utoipa::path(get, path = "/api/v1/usage", tag = "gateway", params(UsageParams),
    responses((status = 200, body = UsageReport)), security(("bearer" = [])))]
pub async fn report(
    Authed(p): Authed,
    State(s): State<AppState>,
    Query(q): Query<UsageParams>,
) -> ApiResult<axum::Json<UsageReport>> {
    let group_name = q.group_by.unwrap_or_else(|| "model".to_owned());
    let group = UsageGroup::parse(&group_name).ok_or_else(|| {
        Error::new(
            Code::InvalidQuery,
            "group_by must be user, key, project or model",
        )
    })?;
    let to = match q.to.as_deref() {
        Some(t) => time("to", t)?,
        None => bunko_core::ids::now_ms(),
    };
    let from = match q.from.as_deref() {
        Some(f) => time("from", f)?,
        None => to.saturating_sub(30 * 86_400_000),
    };
    if from > to {
        return Err(Error::new(Code::InvalidQuery, "from is after to").into());
    }
    let admin = p.is_admin();
    let totals = s
        .store
        .usage_totals(group, from, to, (!admin).then_some(p.user_id))
        .await?;
    Ok(axum::Json(UsageReport {
        group_by: group_name,
        from: rfc3339(from),
        to: rfc3339(to),
        visibility: if admin { "all" } else { "own" }.to_owned(),
        totals: totals
            .into_iter()
            .map(|t| UsageRow {
                group: t.group,
                requests: t.requests,
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                cost_usd: t.cost_usd,
                errors: t.errors,
            })
            .collect(),
    }))
}
