//! The auth layer: every route is denied unless it is in the public allow-list
//! ([`crate::routes::PUBLIC_ROUTES`]) or the request carries a valid access token or API key.
//! What a handler needs is in its signature: [`Authed`] (anyone signed in), [`AdminOnly`],
//! or [`ProjectAccess<S>`] (a scope inside the `{project}` of the path). Objects in projects the
//! caller cannot see are answered 404, never 403, so their existence does not leak.

use super::error::ApiError;
use crate::app::AppState;
use crate::routes::is_public;
use axum::extract::{
    ConnectInfo, FromRef, FromRequestParts, MatchedPath, RawPathParams, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bunko_core::Code;
use bunko_core::accounts::ClientInfo;
use bunko_core::identity::{Access, Principal, ProjectRole, Scope};
use bunko_core::ports::Project;
use std::marker::PhantomData;
use std::net::SocketAddr;

pub const ADMIN_PASSWORD_FILE: &str = "initial-admin-password";

pub async fn require_auth(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    if matched.as_ref().is_some_and(|m| is_public(m.as_str())) {
        return next.run(req).await;
    }
    let result = match bearer(req.headers().get(header::AUTHORIZATION)) {
        Ok(token) => state.accounts.authenticate(token).await.map_err(ApiError),
        Err(e) => Err(e),
    };
    match result {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => {
            let mut res = e.into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bunko\""),
            );
            res
        }
    }
}

fn bearer(value: Option<&HeaderValue>) -> Result<&str, ApiError> {
    let Some(value) = value else {
        return Err(ApiError::new(
            Code::Unauthenticated,
            "send credentials as `Authorization: Bearer <token>`",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 4096 && !t.contains(' '))
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidToken,
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

pub fn principal(parts: &Parts) -> Result<Principal, ApiError> {
    parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::new(Code::Unauthenticated, "this route needs credentials"))
}

/// Anyone signed in (a session or an API key of an active user).
pub struct Authed(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        principal(parts).map(Authed)
    }
}

/// An administrator (with the `admin` scope when using a key).
pub struct AdminOnly(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for AdminOnly
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        let p = principal(parts)?;
        if p.is_admin() {
            return Ok(AdminOnly(p));
        }
        let state = AppState::from_ref(s);
        let client = client_info(parts, &state);
        let mut e = state
            .accounts
            .event("permission.denied", "denied", Some(&p), &client);
        e.target = Some(parts.uri.path().chars().take(200).collect());
        e.detail = Some("administrator route".into());
        state.accounts.audit(e).await;
        Err(ApiError::new(
            Code::Forbidden,
            "this needs an administrator",
        ))
    }
}

/// The scope a route needs, as a type.
pub trait NeedScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($t:ident => $s:ident),+) => {$(
        pub struct $t;
        impl NeedScope for $t { const SCOPE: Scope = Scope::$s; }
    )+};
}
scopes!(ReadScope => Read, SearchScope => Search, AskScope => Ask, IngestScope => Ingest, GatewayScope => Gateway, OwnerScope => Admin);

/// Anyone signed in whose credential carries scope `S` (project checks come later, per project).
pub struct Scoped<S: NeedScope>(pub Principal, pub PhantomData<S>);

impl<S: NeedScope, St: Send + Sync> FromRequestParts<St> for Scoped<S> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        let p = principal(parts)?;
        if p.has_scope(S::SCOPE) {
            Ok(Scoped(p, PhantomData))
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                format!("this credential lacks the `{}` scope", S::SCOPE),
            ))
        }
    }
}

/// The project named by the `{project}` path segment (id or slug), after checking that the
/// caller may use scope `S` there.
pub struct ProjectAccess<S: NeedScope> {
    pub project: Project,
    pub principal: Principal,
    /// The caller's membership (None for administrators who are not members).
    pub role: Option<ProjectRole>,
    _scope: PhantomData<S>,
}

impl<S, St> FromRequestParts<St> for ProjectAccess<S>
where
    S: NeedScope,
    St: Send + Sync,
    AppState: FromRef<St>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &St) -> Result<Self, Self::Rejection> {
        let p = principal(parts)?;
        let state = AppState::from_ref(st);
        let params = RawPathParams::from_request_parts(parts, st)
            .await
            .map_err(|_| ApiError::new(Code::BadRequest, "bad path"))?;
        let key = params
            .iter()
            .find(|(k, _)| *k == "project")
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| ApiError::new(Code::Internal, "route has no {project}"))?;
        let not_found = || ApiError(bunko_core::Error::not_found("project", &key));
        let project = state.store.get_project(&key).await?.ok_or_else(not_found)?;
        let client = client_info(parts, &state);
        let role = authorize_project::<S>(&state, &p, &client, &project).await?;
        Ok(ProjectAccess {
            project,
            principal: p,
            role,
            _scope: PhantomData,
        })
    }
}

/// May `p` use scope `S` in `project`? The caller's membership when allowed; 404 when the
/// project is invisible to them; 403 (audited) when they see it but lack the role or scope.
pub async fn authorize_project<S: NeedScope>(
    state: &AppState,
    p: &Principal,
    client: &ClientInfo,
    project: &Project,
) -> Result<Option<ProjectRole>, ApiError> {
    let role = state.store.member_role(project.id, p.user_id).await?;
    match p.allows(S::SCOPE, project.id, role) {
        Access::Allowed => Ok(role),
        Access::Invisible => Err(ApiError(bunko_core::Error::not_found(
            "project",
            &project.slug,
        ))),
        Access::Denied => {
            let mut e = state
                .accounts
                .event("permission.denied", "denied", Some(p), client);
            e.project_id = Some(project.id);
            e.detail = Some(format!("needs scope {} in the project", S::SCOPE));
            state.accounts.audit(e).await;
            Err(ApiError::new(
                Code::Forbidden,
                format!("this needs `{}` in project `{}`", S::SCOPE, project.slug),
            ))
        }
    }
}

/// The client's address (the proxy's `X-Forwarded-For` only when `server.behind_proxy`) and
/// user agent.
pub fn client_info(parts: &Parts, state: &AppState) -> ClientInfo {
    let forwarded = state
        .config
        .server
        .behind_proxy
        .then(|| {
            parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
        })
        .flatten()
        .and_then(|v| v.split(',').next())
        .map(|s| s.trim().to_owned())
        .filter(|s| s.parse::<std::net::IpAddr>().is_ok());
    let direct = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    ClientInfo {
        ip: forwarded.or(direct),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(300).collect()),
    }
}

/// Extractor form of [`client_info`].
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client
where
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(client_info(parts, &AppState::from_ref(s))))
    }
}

/// Writes the first administrator's credentials for the operator (mode 0600).
pub fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A person at the keyboard (a session), or a program holding a key with the `admin` scope:
/// what account management (keys, password, new projects) needs.
pub struct Manage(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Manage {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let p = principal(parts)?;
        match &p.credential {
            bunko_core::identity::Credential::Session { .. } => Ok(Manage(p)),
            _ if p.has_scope(Scope::Admin) => Ok(Manage(p)),
            _ => Err(ApiError::new(
                Code::Forbidden,
                "API keys need the `admin` scope for this",
            )),
        }
    }
}
