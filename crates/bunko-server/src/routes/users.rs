//! `/api/v1/users`: accounts (administrators).

use super::auth::UserView;
use crate::app::AppState;
use crate::http::ApiResult;
use crate::http::auth::{AdminOnly, Client};
use crate::http::extract::{Json, Query};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bunko_core::Error;
use bunko_core::identity::{GlobalRole, UserStatus};
use bunko_core::ports::PageRequest;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    items: Vec<UserView>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// All users, newest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = UserPage)), security(("bearer" = [])))]
pub async fn list(
    _: AdminOnly,
    State(s): State<AppState>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<UserPage>> {
    let page = s
        .store
        .list_users(PageRequest::new(p.limit, p.cursor.as_deref())?)
        .await?;
    Ok(axum::Json(UserPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn role(r: &str) -> Result<GlobalRole, Error> {
    GlobalRole::parse(r).ok_or_else(|| Error::invalid("role must be `admin` or `member`"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    #[serde(default)]
    display_name: String,
    /// `member` (default) or `admin`.
    role: Option<String>,
    /// 12–256 characters; omit to have one generated and returned once.
    password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    user: UserView,
    /// Only when generated; shown this once.
    password: Option<String>,
}

/// Create a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 409, description = "email taken")), security(("bearer" = [])))]
pub async fn create(
    AdminOnly(a): AdminOnly,
    State(s): State<AppState>,
    Client(c): Client,
    Json(r): Json<CreateUser>,
) -> ApiResult<(StatusCode, axum::Json<CreatedUser>)> {
    let role = r
        .role
        .as_deref()
        .map(role)
        .transpose()?
        .unwrap_or(GlobalRole::Member);
    let (user, password) = s
        .accounts
        .create_user(
            Some(&a),
            &r.email,
            &r.display_name,
            role,
            r.password.as_deref(),
            &c,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedUser {
            user: user.into(),
            password,
        }),
    ))
}

/// One user, by id or email.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "id or email")),
    responses((status = 200, body = UserView), (status = 404, description = "no such user")), security(("bearer" = [])))]
pub async fn show(
    _: AdminOnly,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(s.accounts.user(&id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// `admin` or `member`.
    role: Option<String>,
    /// `active` or `disabled` (disabling ends every session and key use at once).
    status: Option<String>,
    /// A new password (ends the user's sessions).
    password: Option<String>,
}

/// Change a user's role, status or password.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 409, description = "would leave no administrator")), security(("bearer" = [])))]
pub async fn update(
    AdminOnly(a): AdminOnly,
    State(s): State<AppState>,
    Client(c): Client,
    Path(id): Path<String>,
    Json(r): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    let user = s.accounts.user(&id).await?;
    if let Some(st) = r.status.as_deref() {
        let st = UserStatus::parse(st)
            .ok_or_else(|| Error::invalid("status must be `active` or `disabled`"))?;
        s.accounts.set_status(Some(&a), &user, st, &c).await?;
    }
    if let Some(rl) = r.role.as_deref() {
        s.accounts.set_role(Some(&a), &user, role(rl)?, &c).await?;
    }
    if let Some(pw) = r.password.as_deref() {
        s.accounts.set_password(Some(&a), &user, pw, &c).await?;
    }
    Ok(axum::Json(
        s.accounts.user(&user.id.to_string()).await?.into(),
    ))
}
