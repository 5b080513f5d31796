//! `/api/v1/projects` and their members. Members see their projects; administrators see all;
//! a key bound to a project sees only that one. Projects a caller cannot see answer 404.

use super::users::PageParams;
use crate::app::AppState;
use crate::http::ApiResult;
use crate::http::auth::{Authed, Client, Manage, OwnerScope, ProjectAccess, ReadScope};
use crate::http::extract::{Json, Query};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bunko_core::Error;
use bunko_core::identity::ProjectRole;
use bunko_core::ids::rfc3339;
use bunko_core::ports::{Member, Page, PageRequest, Project};
use bunko_core::projects;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
    description: Option<String>,
}

/// Create a project; its slug comes from the name and the creator becomes its owner.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, description = "slug taken")), security(("bearer" = [])))]
pub async fn create(
    Manage(p): Manage,
    State(s): State<AppState>,
    Client(c): Client,
    Json(r): Json<CreateProject>,
) -> ApiResult<(StatusCode, axum::Json<ProjectView>)> {
    let project = projects::create(s.store.as_ref(), &r.name, r.description.as_deref()).await?;
    let me = s.accounts.user(&p.user_id.to_string()).await?;
    s.accounts
        .put_member(Some(&p), project.id, &me, ProjectRole::Owner, &c)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(project.into())))
}

/// Projects you can see, newest first.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(PageParams),
    responses((status = 200, body = ProjectPage)), security(("bearer" = [])))]
pub async fn list(
    Authed(p): Authed,
    State(s): State<AppState>,
    Query(q): Query<PageParams>,
) -> ApiResult<axum::Json<ProjectPage>> {
    let page = PageRequest::new(q.limit, q.cursor.as_deref())?;
    let res: Page<Project> = match p.key_project() {
        Some(only) => {
            let proj = s.store.get_project(&only.to_string()).await?;
            let visible = p.is_admin()
                || p.role == bunko_core::identity::GlobalRole::Admin
                || s.store.member_role(only, p.user_id).await?.is_some();
            Page {
                items: proj
                    .into_iter()
                    .filter(|_| visible && page.before.is_none())
                    .collect(),
                next_cursor: None,
            }
        }
        None if p.role == bunko_core::identity::GlobalRole::Admin => {
            s.store.list_projects(page).await?
        }
        None => s.store.list_projects_of(p.user_id, page).await?,
    };
    Ok(axum::Json(ProjectPage {
        items: res.items.into_iter().map(Into::into).collect(),
        next_cursor: res.next_cursor,
    }))
}

/// One project, by id or slug.
#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path, description = "id or slug")),
    responses((status = 200, body = ProjectView), (status = 404, description = "no such project, or not yours")), security(("bearer" = [])))]
pub async fn show(access: ProjectAccess<ReadScope>) -> axum::Json<ProjectView> {
    axum::Json(access.project.into())
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    user_id: Uuid,
    email: String,
    display_name: String,
    /// `owner`, `editor` or `viewer`.
    role: String,
    since: String,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email,
            display_name: m.display_name,
            role: m.role.as_str().into(),
            since: rfc3339(m.created_at_ms),
        }
    }
}

/// Delete a project with its memberships and the API keys bound to it (owners and
/// administrators). Audited as `project.deleted`.
#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 204, description = "deleted")), security(("bearer" = [])))]
pub async fn delete(
    access: ProjectAccess<OwnerScope>,
    State(s): State<AppState>,
    Client(c): Client,
) -> ApiResult<StatusCode> {
    s.store.delete_project(access.project.id).await?;
    // Keys bound to the project were deleted with it.
    s.accounts.invalidate();
    let mut e = s
        .accounts
        .event("project.deleted", "success", Some(&access.principal), &c);
    e.project_id = Some(access.project.id);
    e.target = Some(format!("{} ({})", access.project.slug, access.project.name));
    s.accounts.audit(e).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The project's members.
#[utoipa::path(get, path = "/api/v1/projects/{project}/members", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, body = Vec<MemberView>)), security(("bearer" = [])))]
pub async fn members(
    access: ProjectAccess<ReadScope>,
    State(s): State<AppState>,
) -> ApiResult<axum::Json<Vec<MemberView>>> {
    let m = s.store.list_members(access.project.id).await?;
    Ok(axum::Json(m.into_iter().map(Into::into).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutMember {
    /// `owner`, `editor` or `viewer`.
    role: String,
}

/// Add a member or change their role (project owners and administrators).
#[utoipa::path(put, path = "/api/v1/projects/{project}/members/{user}", tag = "projects",
    params(("project" = String, Path), ("user" = String, Path, description = "user id or email")), request_body = PutMember,
    responses((status = 204, description = "done"), (status = 409, description = "would leave no owner")), security(("bearer" = [])))]
pub async fn put_member(
    access: ProjectAccess<OwnerScope>,
    State(s): State<AppState>,
    Client(c): Client,
    Path((_, user)): Path<(String, String)>,
    Json(r): Json<PutMember>,
) -> ApiResult<StatusCode> {
    let role = ProjectRole::parse(&r.role)
        .ok_or_else(|| Error::invalid("role must be owner, editor or viewer"))?;
    let u = s.accounts.user(&user).await?;
    s.accounts
        .put_member(Some(&access.principal), access.project.id, &u, role, &c)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member (project owners and administrators).
#[utoipa::path(delete, path = "/api/v1/projects/{project}/members/{user}", tag = "projects",
    params(("project" = String, Path), ("user" = String, Path)),
    responses((status = 204, description = "removed")), security(("bearer" = [])))]
pub async fn remove_member(
    access: ProjectAccess<OwnerScope>,
    State(s): State<AppState>,
    Client(c): Client,
    Path((_, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let u = s.accounts.user(&user).await?;
    s.accounts
        .remove_member(Some(&access.principal), access.project.id, &u, &c)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
