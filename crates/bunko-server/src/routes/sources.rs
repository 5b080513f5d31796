//! `/api/v1/sources`: crawlers and watched folders (administrators). Sources from the
//! configuration are listed with `origin: "config"` and can be crawled now, but are changed in
//! the configuration; sources made here (`origin: "api"`) can also be deleted (their
//! documents stay). To crawl on a schedule, make a schedule with job `source.crawl` and
//! params `{ source = "NAME" }`.

use crate::app::AppState;
use crate::http::auth::AdminOnly;
use crate::http::extract::Json;
use crate::http::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bunko_core::Code;
use bunko_core::ids::rfc3339;
use bunko_core::sources::{Source, SourceDef};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct SourceView {
    name: String,
    /// `arxiv`, `arxiv_oai`, `egov`, `feed` or `folder`.
    kind: String,
    /// The project (name or id) its documents go to.
    project: String,
    /// The whole definition, as a `[[sources]]` entry has it.
    #[schema(value_type = Object)]
    definition: serde_json::Value,
    /// `config` or `api`.
    origin: String,
    /// Where the next crawl starts (a date, an offset, a resumption token, an ETag).
    #[schema(value_type = Object)]
    cursor: serde_json::Value,
    last_run: Option<String>,
    last_job_id: Option<Uuid>,
    /// `ok` or `failed`.
    last_status: Option<String>,
    last_error: Option<String>,
    /// `requests`, `seen`, `added`, `versions`, `unchanged`, `failed`, `deleted`, `more`.
    #[schema(value_type = Object)]
    last_stats: serde_json::Value,
    created_at: String,
    updated_at: String,
}

impl From<Source> for SourceView {
    fn from(s: Source) -> Self {
        Self {
            name: s.def.name.clone(),
            kind: s.def.kind.as_str().into(),
            project: s.def.project.clone(),
            definition: serde_json::to_value(&s.def).unwrap_or_default(),
            origin: s.origin.as_str().into(),
            cursor: s.cursor,
            last_run: s.last_run_ms.map(rfc3339),
            last_job_id: s.last_job_id,
            last_status: s.last_status,
            last_error: s.last_error,
            last_stats: serde_json::to_value(&s.last_stats).unwrap_or_default(),
            created_at: rfc3339(s.created_at_ms),
            updated_at: rfc3339(s.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SourceList {
    items: Vec<SourceView>,
}

/// The sources, by name.
#[utoipa::path(get, path = "/api/v1/sources", tag = "sources",
    responses((status = 200, body = SourceList)), security(("bearer" = [])))]
pub async fn list(_: AdminOnly, State(s): State<AppState>) -> ApiResult<axum::Json<SourceList>> {
    let items = s.store.list_sources().await?;
    Ok(axum::Json(SourceList {
        items: items.into_iter().map(SourceView::from).collect(),
    }))
}

/// Make a source (the same fields as a `[[sources]]` entry: `name`, `kind`, `project`, and
/// per kind `url`, `query`, `categories`, `from`, `law_type`, `category`, `law_ids`,
/// `all_revisions`, `path`, `delete_missing`, `fetch_files`, `page_size`, `max_items`,
/// `delay_ms`, `user_agent`, `tags`, `summarize`, `enabled`). Its host must be in
/// `crawl.allow_hosts`; a folder must be under `crawl.folder_roots`.
#[utoipa::path(post, path = "/api/v1/sources", tag = "sources",
    request_body(content = Object, description = "a source definition"),
    responses((status = 201, body = SourceView), (status = 409, description = "the name is taken"),
        (status = 422, description = "invalid definition (`invalid_input`), unknown project, or a host not allowed (`source_refused`)")),
    security(("bearer" = [])))]
pub async fn create(
    _: AdminOnly,
    State(s): State<AppState>,
    Json(def): Json<SourceDef>,
) -> ApiResult<(StatusCode, axum::Json<SourceView>)> {
    s.config.crawl.check_source(&def)?;
    if def.kind == bunko_core::sources::SourceKind::Folder {
        s.config.crawl.check_api_folder(&def)?;
    }
    if s.store.get_project(&def.project).await?.is_none() {
        return Err(ApiError::new(
            Code::InvalidInput,
            format!("project `{}` does not exist", def.project),
        ));
    }
    let made = s.store.create_source(&def).await?;
    Ok((StatusCode::CREATED, axum::Json(made.into())))
}

async fn find(s: &AppState, name: &str) -> ApiResult<Source> {
    s.store
        .get_source(name)
        .await?
        .ok_or_else(|| ApiError(bunko_core::Error::not_found("source", name)))
}

/// One source, with its cursor and last crawl.
#[utoipa::path(get, path = "/api/v1/sources/{name}", tag = "sources", params(("name" = String, Path)),
    responses((status = 200, body = SourceView), (status = 404, description = "no such source")),
    security(("bearer" = [])))]
pub async fn show(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<SourceView>> {
    Ok(axum::Json(find(&s, &name).await?.into()))
}

/// Delete a source made over the API with its memory of items; its documents stay.
#[utoipa::path(delete, path = "/api/v1/sources/{name}", tag = "sources", params(("name" = String, Path)),
    responses((status = 204), (status = 404, description = "no such source"),
        (status = 409, description = "defined in the configuration")),
    security(("bearer" = [])))]
pub async fn delete(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let src = find(&s, &name).await?;
    if src.origin == bunko_core::schedule::Origin::Config {
        return Err(ApiError::new(
            Code::Conflict,
            format!("source `{name}` is defined in the configuration: remove it there"),
        ));
    }
    s.store.delete_source(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct CrawlQueued {
    job_id: Uuid,
}

/// Crawl a source now (a `source.crawl` job; follow it at `/api/v1/jobs/{id}`).
#[utoipa::path(post, path = "/api/v1/sources/{name}/crawl", tag = "sources", params(("name" = String, Path)),
    responses((status = 202, body = CrawlQueued), (status = 404, description = "no such source")),
    security(("bearer" = [])))]
pub async fn crawl_now(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<CrawlQueued>)> {
    let job_id = crate::crawl::enqueue(s.store.as_ref(), &name).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(CrawlQueued { job_id })))
}
