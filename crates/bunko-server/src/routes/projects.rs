//! `/api/v1/projects`: the unit documents, search and answers belong to. Membership and roles
//! arrive with identity; for now administrators manage projects.

use crate::app::AppState;
use crate::http::ApiResult;
use crate::http::auth::Admin;
use crate::http::extract::{Json, Query};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bunko_core::ids::rfc3339;
use bunko_core::ports::{PageRequest, Project};
use bunko_core::projects;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct ProjectView {
    id: Uuid,
    name: String,
    slug: String,
    description: String,
    created_at: String,
    updated_at: String,
}

impl From<Project> for ProjectView {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name,
            slug: p.slug,
            description: p.description,
            created_at: rfc3339(p.created_at_ms),
            updated_at: rfc3339(p.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectPage {
    items: Vec<ProjectView>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
    description: Option<String>,
}

/// Create a project; its slug is derived from the name.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, description = "slug taken")), security(("bearer" = [])))]
pub async fn create(
    _: Admin,
    State(s): State<AppState>,
    Json(r): Json<CreateProject>,
) -> ApiResult<(StatusCode, axum::Json<ProjectView>)> {
    let p = projects::create(s.store.as_ref(), &r.name, r.description.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(p.into())))
}

/// List projects, newest first.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(ListParams),
    responses((status = 200, body = ProjectPage)), security(("bearer" = [])))]
pub async fn list(
    _: Admin,
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<ProjectPage>> {
    let page = s
        .store
        .list_projects(PageRequest::new(p.limit, p.cursor.as_deref())?)
        .await?;
    Ok(axum::Json(ProjectPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One project, by id or slug.
#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path, description = "id or slug")),
    responses((status = 200, body = ProjectView), (status = 404, description = "no such project")), security(("bearer" = [])))]
pub async fn show(
    _: Admin,
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<axum::Json<ProjectView>> {
    Ok(axum::Json(
        projects::get(s.store.as_ref(), &project).await?.into(),
    ))
}
