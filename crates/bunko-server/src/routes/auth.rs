//! `/api/v1/auth`: log in, rotate, log out, who am I, change my password.

use crate::app::AppState;
use crate::http::ApiResult;
use crate::http::auth::{Authed, Client, Manage};
use crate::http::extract::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bunko_core::identity::{Credential, Scope};
use bunko_core::ids::rfc3339;
use bunko_core::ports::User;
use bunko_core::{Code, Error};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct Tokens {
    access_token: String,
    refresh_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds until the access token expires (900).
    expires_in: i64,
}

impl From<bunko_core::accounts::TokenPair> for Tokens {
    fn from(t: bunko_core::accounts::TokenPair) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: t.token_type.into(),
            expires_in: t.expires_in,
        }
    }
}

fn bounded(field: &str, v: &str, max: usize) -> Result<(), Error> {
    if v.len() > max {
        return Err(Error::invalid(format!("{field} is too long")));
    }
    Ok(())
}

/// Log in with email and password. Failed attempts lock the account and the address out
/// for exponentially growing periods; the answer is the same whether or not the account exists.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = Tokens), (status = 401, description = "invalid_credentials"), (status = 429, description = "login_locked")))]
pub async fn login(
    State(s): State<AppState>,
    Client(c): Client,
    Json(r): Json<Login>,
) -> ApiResult<axum::Json<Tokens>> {
    bounded("email", &r.email, 254)?;
    bounded("password", &r.password, 1024)?;
    Ok(axum::Json(
        s.accounts.login(&r.email, &r.password, &c).await?.into(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    refresh_token: String,
}

/// Trade a refresh token for a new pair. Each refresh token works once; presenting a used one
/// again revokes the whole session (someone else has a copy).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = Refresh,
    responses((status = 200, body = Tokens), (status = 401, description = "invalid_token")))]
pub async fn refresh(
    State(s): State<AppState>,
    Client(c): Client,
    Json(r): Json<Refresh>,
) -> ApiResult<axum::Json<Tokens>> {
    bounded("refresh_token", &r.refresh_token, 256)?;
    Ok(axum::Json(
        s.accounts.refresh(&r.refresh_token, &c).await?.into(),
    ))
}

/// End this session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "logged out")), security(("bearer" = [])))]
pub async fn logout(
    State(s): State<AppState>,
    Client(c): Client,
    Authed(p): Authed,
) -> ApiResult<StatusCode> {
    s.accounts.logout(&p, &c).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: Uuid,
    email: String,
    display_name: String,
    /// `admin` or `member`.
    role: String,
    /// `active` or `disabled`.
    status: String,
    created_at: String,
    updated_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            role: u.role.as_str().into(),
            status: u.status.as_str().into(),
            created_at: rfc3339(u.created_at_ms),
            updated_at: rfc3339(u.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    user: UserView,
    /// `session` or `api_key`.
    credential: String,
    /// What this credential may do.
    scopes: Vec<String>,
    /// Set for API keys bound to one project.
    project_id: Option<Uuid>,
}

/// Who is calling, with what.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", responses((status = 200, body = Me)), security(("bearer" = [])))]
pub async fn me(State(s): State<AppState>, Authed(p): Authed) -> ApiResult<axum::Json<Me>> {
    let user = s.accounts.user(&p.user_id.to_string()).await?;
    let (credential, scopes) = match &p.credential {
        Credential::Session { .. } => ("session", Scope::ALL.to_vec()),
        Credential::ApiKey { scopes, .. } => ("api_key", scopes.clone()),
    };
    Ok(axum::Json(Me {
        user: user.into(),
        credential: credential.into(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        project_id: p.key_project(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Change your own password (12–256 characters). Every session of yours ends.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = ChangePassword,
    responses((status = 204, description = "changed")), security(("bearer" = [])))]
pub async fn change_password(
    State(s): State<AppState>,
    Client(c): Client,
    Manage(p): Manage,
    Json(r): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    bounded("current_password", &r.current_password, 1024)?;
    let user = s.accounts.user(&p.user_id.to_string()).await?;
    let ok = s
        .accounts
        .check_password(&r.current_password, user.password_hash.as_deref())
        .await;
    if !ok {
        return Err(Error::new(Code::InvalidCredentials, "the current password is wrong").into());
    }
    s.accounts
        .set_password(Some(&p), &user, &r.new_password, &c)
        .await?;
    let admin_file = s
        .config
        .data_dir
        .join(crate::http::auth::ADMIN_PASSWORD_FILE);
    if admin_file.exists() {
        // The one-time password has served its purpose.
        let _ = std::fs::remove_file(admin_file);
    }
    Ok(StatusCode::NO_CONTENT)
}
