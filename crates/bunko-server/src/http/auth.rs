//! The auth layer: every route is denied unless it is in the public allow-list
//! ([`crate::routes::PUBLIC_ROUTES`]) or the request carries valid credentials. Handlers name
//! what they need in their signature ([`Admin`]), so a check cannot be forgotten.
//!
//! Until users and keys exist, the only credential is the bootstrap admin token: made on first
//! start, written once to `<data_dir>/bootstrap-admin.token` (mode 0600), stored as a SHA-256
//! hash. Never logged.

use super::error::ApiError;
use crate::app::AppState;
use crate::routes::is_public;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bunko_core::Code;
use bunko_core::ids::{constant_time_eq, random_bytes, sha256_hex};
use bunko_core::ports::MetaStore;
use std::path::{Path, PathBuf};

pub const BOOTSTRAP_HASH_KEY: &str = "auth.bootstrap_admin_token_sha256";
pub const BOOTSTRAP_FILE: &str = "bootstrap-admin.token";
const TOKEN_PREFIX: &str = "bko_admin_";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    BootstrapAdmin,
}

pub async fn require_auth(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    if matched.as_ref().is_some_and(|m| is_public(m.as_str())) {
        return next.run(req).await;
    }
    match authenticate(
        state.store.as_ref(),
        req.headers().get(header::AUTHORIZATION),
    )
    .await
    {
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

async fn authenticate(
    store: &dyn MetaStore,
    header: Option<&HeaderValue>,
) -> Result<Principal, ApiError> {
    let Some(value) = header else {
        return Err(ApiError::new(
            Code::Unauthenticated,
            "send credentials as `Authorization: Bearer <token>`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidToken,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    let stored = store.get_setting(BOOTSTRAP_HASH_KEY).await?;
    match stored {
        Some(hash)
            if constant_time_eq(hash.as_bytes(), sha256_hex(token.as_bytes()).as_bytes()) =>
        {
            Ok(Principal::BootstrapAdmin)
        }
        _ => Err(ApiError::new(
            Code::InvalidToken,
            "the token is unknown, expired or revoked",
        )),
    }
}

/// Extractor for routes that need an administrator.
pub struct Admin(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p @ Principal::BootstrapAdmin) => Ok(Admin(p.clone())),
            None => Err(ApiError::new(
                Code::Unauthenticated,
                "this route needs credentials",
            )),
        }
    }
}

pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join(BOOTSTRAP_FILE)
}

/// Makes the bootstrap admin token on first start. Returns the new token when one was made.
pub async fn ensure_bootstrap_token(
    store: &dyn MetaStore,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    if store.get_setting(BOOTSTRAP_HASH_KEY).await?.is_some() {
        return Ok(None);
    }
    let token = new_token();
    if !store
        .put_setting_if_absent(BOOTSTRAP_HASH_KEY, &sha256_hex(token.as_bytes()))
        .await?
    {
        return Ok(None); // another process won the race
    }
    write_private(&token_file(data_dir), &token)?;
    Ok(Some(token))
}

/// Replaces the bootstrap token (the old one stops working at once).
pub async fn rotate_bootstrap_token(
    store: &dyn MetaStore,
    data_dir: &Path,
) -> anyhow::Result<String> {
    let token = new_token();
    store
        .put_setting(BOOTSTRAP_HASH_KEY, &sha256_hex(token.as_bytes()))
        .await?;
    write_private(&token_file(data_dir), &token)?;
    Ok(token)
}

fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(random_bytes::<32>()))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
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
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
