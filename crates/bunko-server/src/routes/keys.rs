//! `/api/v1/keys`: API keys for programs. The secret is returned once, at creation.

use super::users::PageParams;
use crate::app::AppState;
use crate::http::ApiResult;
use crate::http::auth::{Client, Manage};
use crate::http::extract::{Json, Query};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bunko_core::identity::{GlobalRole, Scope};
use bunko_core::ids::rfc3339;
use bunko_core::ports::{ApiKey, PageRequest};
use bunko_core::{Code, Error};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    id: Uuid,
    user_id: Uuid,
    name: String,
    /// The start of the secret, to recognise the key.
    prefix: String,
    scopes: Vec<String>,
    project_id: Option<Uuid>,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
    created_at: String,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            user_id: k.user_id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            project_id: k.project_id,
            expires_at: k.expires_at_ms.map(rfc3339),
            last_used_at: k.last_used_at_ms.map(rfc3339),
            revoked_at: k.revoked_at_ms.map(rfc3339),
            created_at: rfc3339(k.created_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeyPage {
    items: Vec<KeyView>,
    next_cursor: Option<String>,
}

/// Your keys (administrators: everyone's).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(PageParams),
    responses((status = 200, body = KeyPage)), security(("bearer" = [])))]
pub async fn list(
    Manage(p): Manage,
    State(s): State<AppState>,
    Query(q): Query<PageParams>,
) -> ApiResult<axum::Json<KeyPage>> {
    let owner = (!p.is_admin()).then_some(p.user_id);
    let page = s
        .store
        .list_api_keys(owner, PageRequest::new(q.limit, q.cursor.as_deref())?)
        .await?;
    Ok(axum::Json(KeyPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    /// Any of `read`, `search`, `ask`, `ingest`, `gateway`, `admin`.
    scopes: Vec<String>,
    /// Restrict the key to one project (id or slug).
    project: Option<String>,
    /// Days until the key stops working.
    expires_in_days: Option<u32>,
    /// Administrators may create keys for another user (id or email).
    user: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    key: KeyView,
    /// The secret: shown only now. Send it as `Authorization: Bearer <secret>`.
    secret: String,
}

/// Create a key.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey)), security(("bearer" = [])))]
pub async fn create(
    Manage(p): Manage,
    State(s): State<AppState>,
    Client(c): Client,
    Json(r): Json<CreateKey>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKey>)> {
    let scopes = Scope::parse_list(&r.scopes.join(",")).map_err(Error::invalid)?;
    let owner = match r.user.as_deref() {
        Some(u) if p.is_admin() => s.accounts.user(u).await?,
        Some(_) => {
            return Err(Error::new(
                Code::Forbidden,
                "only administrators create keys for others",
            )
            .into());
        }
        None => s.accounts.user(&p.user_id.to_string()).await?,
    };
    let project = match r.project.as_deref() {
        Some(key) => {
            let proj = s
                .store
                .get_project(key)
                .await?
                .ok_or_else(|| Error::not_found("project", key))?;
            // Only projects the caller can see exist for it.
            if !p.is_admin() && s.store.member_role(proj.id, p.user_id).await?.is_none() {
                return Err(Error::not_found("project", key).into());
            }
            Some(proj.id)
        }
        None => None,
    };
    if scopes.contains(&Scope::Admin) && owner.role != GlobalRole::Admin && project.is_none() {
        return Err(Error::new(
            Code::Forbidden,
            "only administrators hold unrestricted admin keys",
        )
        .into());
    }
    let expires = r
        .expires_in_days
        .map(|d| Duration::from_secs(u64::from(d) * 86_400));
    let (key, secret) = s
        .accounts
        .create_key(Some(&p), &owner, &r.name, scopes, project, expires, &c)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            key: key.into(),
            secret,
        }),
    ))
}

/// Revoke a key: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = Uuid, Path)),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such key")), security(("bearer" = [])))]
pub async fn revoke(
    Manage(p): Manage,
    State(s): State<AppState>,
    Client(c): Client,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let not_found = || Error::not_found("key", &id);
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let key = s
        .store
        .get_api_key(uuid)
        .await?
        .filter(|k| p.is_admin() || k.user_id == p.user_id)
        .ok_or_else(not_found)?;
    s.accounts.revoke_key(Some(&p), &key, &c).await?;
    Ok(StatusCode::NO_CONTENT)
}
