//! Accounts and credentials as a service: login (with lock-out and the same answer whether or
//! not an account exists), refresh-token rotation with reuse detection, logout, per-request
//! authentication of access tokens and API keys, user and key management, the first
//! administrator, and the audit trail of all of it. No HTTP types.

use crate::auth::{
    self, ACCESS_TTL_SECS, PasswordCost, REFRESH_TTL_SECS, TokenSigner, check_password_policy,
    dummy_verify, hash_password, new_secret, secret_hash, verify_password,
};
use crate::error::{Code, Error, Result};
use crate::identity::{Credential, GlobalRole, Principal, ProjectRole, Scope, UserStatus};
use crate::ids::{now_ms, random_bytes};
use crate::limits::LoginThrottle;
use crate::ports::{ApiKey, AuditEvent, MetaStore, NewApiKey, NewUser, RefreshUse, User};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{instrument, warn};
use uuid::Uuid;

pub const KEY_PREFIX: &str = "bko_key_";
pub const REFRESH_PREFIX: &str = "bko_rt_";

/// Where a request came from, for audit records and per-address limits.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

pub struct Accounts {
    store: Arc<dyn MetaStore>,
    signer: TokenSigner,
    cost: PasswordCost,
    throttle: Arc<dyn LoginThrottle>,
    /// Keys whose `last_used_at` was written recently (skip the write).
    touched: Mutex<HashMap<Uuid, Instant>>,
    /// Recently authenticated credentials, so most requests need no store round trip.
    /// Cleared right after every change to a session, user or key made in this process (not on
    /// every audited event: failed logins and denials must not be able to flush it); other
    /// processes' changes
    /// (a CLI `key revoke`, another replica) are seen within [`CACHE_TTL`].
    cache: Mutex<HashMap<String, (Instant, Principal)>>,
    /// At most this many password hashes at once (each takes memory and a core).
    hashing: tokio::sync::Semaphore,
}

/// How long a checked credential is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

fn invalid_token(detail: &str) -> Error {
    Error::new(Code::InvalidToken, detail)
}

pub fn validate_email(email: &str) -> Result<String> {
    let e = email.trim();
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(Error::invalid(format!(
            "`{}` is not an email address",
            e.chars().take(80).collect::<String>()
        )));
    }
    Ok(e.to_owned())
}

/// A random password for generated accounts: 24 characters, ~143 bits.
pub fn generate_password() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<18>())
}

impl Accounts {
    pub fn new(
        store: Arc<dyn MetaStore>,
        signer: TokenSigner,
        cost: PasswordCost,
        throttle: Arc<dyn LoginThrottle>,
    ) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            store,
            signer,
            cost,
            throttle,
            touched: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(cores),
        }
    }

    /// Forgets every cached credential (called on any change to users, sessions or keys).
    pub fn invalidate(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn cached(&self, bearer: &str) -> Option<Principal> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.get(bearer)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, p)| p.clone())
    }

    fn remember(&self, bearer: &str, p: &Principal) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() > 10_000 {
            c.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        c.insert(bearer.to_owned(), (Instant::now(), p.clone()));
    }

    /// argon2id off the async executor, bounded by the number of cores. With no stored hash
    /// a dummy verification takes the same time, so unknown accounts cannot be told apart.
    pub async fn check_password(&self, password: &str, stored: Option<&str>) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let (pw, stored, cost) = (password.to_owned(), stored.map(str::to_owned), self.cost);
        tokio::task::spawn_blocking(move || match stored {
            Some(h) => verify_password(&pw, &h),
            None => {
                dummy_verify(&pw, cost);
                false
            }
        })
        .await
        .unwrap_or(false)
    }

    async fn hash(&self, password: &str) -> Result<String> {
        let _permit = self.hashing.acquire().await.map_err(Error::internal)?;
        let (pw, cost) = (password.to_owned(), self.cost);
        tokio::task::spawn_blocking(move || hash_password(&pw, cost))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }

    /// Records a security event; a failure to record is logged, never hidden and never fatal.
    pub async fn audit(&self, e: AuditEvent) {
        if let Err(err) = self.store.append_audit(e.clone()).await {
            tracing::error!(error = %err, event = %e.event, "writing the audit log failed");
        }
    }

    pub fn event(
        &self,
        event: &str,
        outcome: &str,
        actor: Option<&Principal>,
        client: &ClientInfo,
    ) -> AuditEvent {
        AuditEvent {
            event: event.into(),
            outcome: outcome.into(),
            actor_user: actor.map(|p| p.user_id),
            actor_key: actor.and_then(|p| match &p.credential {
                Credential::ApiKey { key_id, .. } => Some(*key_id),
                Credential::Session { .. } => None,
            }),
            actor: actor.map(Principal::label),
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            ..Default::default()
        }
    }

    #[instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<TokenPair> {
        let account_key = format!("acct:{}", email.trim().to_lowercase());
        let ip_key = format!("ip:{}", client.ip.as_deref().unwrap_or("unknown"));
        let locked = match self.throttle.check(&account_key).await {
            Ok(()) => self.throttle.check(&ip_key).await,
            Err(wait) => Err(wait),
        };
        if let Err(wait) = locked {
            let mut e = self.event("login", "locked", None, client);
            e.target = Some(email.chars().take(254).collect());
            self.audit(e).await;
            return Err(
                Error::new(Code::LoginLocked, "too many failed logins; try again later")
                    .with_retry_after(wait),
            );
        }
        let user = self.store.get_user_by_email(email.trim()).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let verified = self.check_password(password, stored.as_deref()).await
            && user
                .as_ref()
                .is_some_and(|u| u.status == UserStatus::Active);
        let Some(user) = user.filter(|_| verified) else {
            let lock_a = self.throttle.failure(&account_key).await;
            let lock_b = self.throttle.failure(&ip_key).await;
            let mut e = self.event("login", "failure", None, client);
            e.target = Some(email.chars().take(254).collect());
            self.audit(e.clone()).await;
            if let Some(d) = lock_a.or(lock_b) {
                e.event = "login.lockout".into();
                e.detail = Some(format!("locked for {} s", d.as_secs_f64().ceil()));
                self.audit(e).await;
            }
            return Err(Error::new(
                Code::InvalidCredentials,
                "the email or password is wrong",
            ));
        };
        self.throttle.success(&account_key).await;
        let session = self
            .store
            .create_session(user.id, client.ip.as_deref(), client.user_agent.as_deref())
            .await?;
        let pair = self.issue(&user, session).await?;
        let mut e = self.event("login", "success", None, client);
        e.actor_user = Some(user.id);
        e.actor = Some(user.email.clone());
        self.audit(e).await;
        Ok(pair)
    }

    async fn issue(&self, user: &User, session: Uuid) -> Result<TokenPair> {
        let now_s = now_ms() / 1000;
        let (access_token, _) = self.signer.issue(user.id, session, now_s);
        let refresh_token = new_secret(REFRESH_PREFIX);
        self.store
            .add_refresh_token(
                session,
                &secret_hash(&refresh_token),
                now_ms() + REFRESH_TTL_SECS * 1000,
            )
            .await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: ACCESS_TTL_SECS,
        })
    }

    #[instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo) -> Result<TokenPair> {
        match self
            .store
            .use_refresh_token(&secret_hash(refresh_token), now_ms())
            .await?
        {
            RefreshUse::Rotated {
                session_id,
                user_id,
            } => {
                let user = self.store.session_user(session_id, user_id).await?;
                match user.filter(|u| u.status == UserStatus::Active) {
                    Some(u) => self.issue(&u, session_id).await,
                    None => Err(invalid_token("the session has ended; log in again")),
                }
            }
            RefreshUse::Reused {
                session_id,
                user_id,
            } => {
                let mut e = self.event("refresh.reuse", "denied", None, client);
                e.actor_user = Some(user_id);
                e.target = Some(format!("session {session_id}"));
                e.detail =
                    Some("a used refresh token was presented again; the session is revoked".into());
                self.invalidate();
                self.audit(e).await;
                warn!(%session_id, "refresh token reuse: session revoked");
                Err(invalid_token(
                    "this refresh token was already used; the session is revoked, log in again",
                ))
            }
            RefreshUse::Invalid => Err(invalid_token(
                "the refresh token is unknown, expired or revoked",
            )),
        }
    }

    pub async fn logout(&self, p: &Principal, client: &ClientInfo) -> Result<()> {
        let Credential::Session { session_id } = &p.credential else {
            return Err(Error::invalid(
                "API keys have no session; revoke the key instead",
            ));
        };
        self.store.revoke_session(*session_id, "logout").await?;
        self.invalidate();
        self.audit(self.event("logout", "success", Some(p), client))
            .await;
        Ok(())
    }

    /// Turns a bearer credential into a principal, or says why not. Disabled users, revoked
    /// sessions and revoked or expired keys are refused on the very next request.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        if let Some(p) = self.cached(bearer) {
            // A cached access token must still be unexpired.
            if bearer.starts_with(KEY_PREFIX) || self.signer.verify(bearer, now_ms() / 1000).is_ok()
            {
                return Ok(p);
            }
        }
        let p = self.authenticate_uncached(bearer).await?;
        self.remember(bearer, &p);
        Ok(p)
    }

    async fn authenticate_uncached(&self, bearer: &str) -> Result<Principal> {
        if bearer.starts_with(KEY_PREFIX) {
            let Some((key, user)) = self.store.api_key_by_hash(&secret_hash(bearer)).await? else {
                return Err(invalid_token("the API key is unknown"));
            };
            let now = now_ms();
            if key.revoked_at_ms.is_some() {
                return Err(invalid_token("the API key was revoked"));
            }
            if key.expires_at_ms.is_some_and(|e| e <= now) {
                return Err(invalid_token("the API key has expired"));
            }
            if user.status != UserStatus::Active {
                return Err(invalid_token("the key's user is disabled"));
            }
            self.touch(key.id, now).await;
            return Ok(Principal {
                user_id: user.id,
                email: user.email,
                role: user.role,
                credential: Credential::ApiKey {
                    key_id: key.id,
                    scopes: key.scopes,
                    project_id: key.project_id,
                },
            });
        }
        let claims = self
            .signer
            .verify(bearer, now_ms() / 1000)
            .map_err(|e| match e {
                auth::AuthError::Expired => {
                    invalid_token("the access token has expired; refresh it")
                }
                _ => invalid_token("the access token is invalid"),
            })?;
        let user = self.store.session_user(claims.sid, claims.sub).await?;
        match user {
            Some(u) if u.status == UserStatus::Active => Ok(Principal {
                user_id: u.id,
                email: u.email,
                role: u.role,
                credential: Credential::Session {
                    session_id: claims.sid,
                },
            }),
            Some(_) => Err(invalid_token("the user is disabled")),
            None => Err(invalid_token("the session has ended; log in again")),
        }
    }

    async fn touch(&self, key: Uuid, now: i64) {
        {
            let mut t = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            if t.get(&key)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
            {
                return;
            }
            if t.len() > 10_000 {
                t.clear();
            }
            t.insert(key, Instant::now());
        }
        if let Err(e) = self.store.touch_api_key(key, now).await {
            warn!(error = %e, "recording API key use failed");
        }
    }

    #[instrument(skip(self, password, client))]
    pub async fn create_user(
        &self,
        actor: Option<&Principal>,
        email: &str,
        display_name: &str,
        role: GlobalRole,
        password: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(User, Option<String>)> {
        let email = validate_email(email)?;
        if display_name.chars().count() > 200 {
            return Err(Error::invalid(
                "display_name must be at most 200 characters",
            ));
        }
        let generated = password.is_none().then(generate_password);
        let pw = password.or(generated.as_deref()).unwrap_or_default();
        check_password_policy(pw).map_err(Error::invalid)?;
        let hash = self.hash(pw).await?;
        let user = self
            .store
            .create_user(NewUser {
                email,
                display_name: display_name.trim().into(),
                password_hash: Some(hash),
                role,
            })
            .await?;
        let mut e = self.event("user.created", "success", actor, client);
        e.target = Some(user.email.clone());
        e.detail = Some(format!("role {role}"));
        self.audit(e).await;
        Ok((user, generated))
    }

    pub async fn user(&self, id_or_email: &str) -> Result<User> {
        let found = match Uuid::parse_str(id_or_email) {
            Ok(id) => self.store.get_user(id).await?,
            Err(_) => self.store.get_user_by_email(id_or_email).await?,
        };
        found.ok_or_else(|| Error::not_found("user", id_or_email))
    }

    /// Sets a new password and ends every session of the user.
    pub async fn set_password(
        &self,
        actor: Option<&Principal>,
        user: &User,
        password: &str,
        client: &ClientInfo,
    ) -> Result<()> {
        check_password_policy(password).map_err(Error::invalid)?;
        let hash = self.hash(password).await?;
        self.store.set_password_hash(user.id, &hash).await?;
        self.store
            .revoke_user_sessions(user.id, "password changed")
            .await?;
        self.invalidate();
        let mut e = self.event("user.password_changed", "success", actor, client);
        e.target = Some(user.email.clone());
        self.audit(e).await;
        Ok(())
    }

    pub async fn set_status(
        &self,
        actor: Option<&Principal>,
        user: &User,
        status: UserStatus,
        client: &ClientInfo,
    ) -> Result<()> {
        if status == UserStatus::Disabled
            && user.role == GlobalRole::Admin
            && user.status == UserStatus::Active
            && self.store.count_active_admins().await? <= 1
        {
            return Err(Error::conflict(
                "this is the last active administrator; make another one first",
            ));
        }
        self.store.set_user_status(user.id, status).await?;
        if status == UserStatus::Disabled {
            self.store
                .revoke_user_sessions(user.id, "user disabled")
                .await?;
        }
        self.invalidate();
        let mut e = self.event(
            if status == UserStatus::Disabled {
                "user.disabled"
            } else {
                "user.enabled"
            },
            "success",
            actor,
            client,
        );
        e.target = Some(user.email.clone());
        self.audit(e).await;
        Ok(())
    }

    pub async fn set_role(
        &self,
        actor: Option<&Principal>,
        user: &User,
        role: GlobalRole,
        client: &ClientInfo,
    ) -> Result<()> {
        if role == GlobalRole::Member
            && user.role == GlobalRole::Admin
            && user.status == UserStatus::Active
            && self.store.count_active_admins().await? <= 1
        {
            return Err(Error::conflict(
                "this is the last active administrator; make another one first",
            ));
        }
        self.store.set_user_role(user.id, role).await?;
        self.invalidate();
        let mut e = self.event("user.role_changed", "success", actor, client);
        e.target = Some(user.email.clone());
        e.detail = Some(format!("{} → {role}", user.role));
        self.audit(e).await;
        Ok(())
    }

    /// Creates an API key for `owner`; returns it with its secret (shown once).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_key(
        &self,
        actor: Option<&Principal>,
        owner: &User,
        name: &str,
        scopes: Vec<Scope>,
        project: Option<Uuid>,
        expires_in: Option<Duration>,
        client: &ClientInfo,
    ) -> Result<(ApiKey, String)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("name must be 1 to 100 characters"));
        }
        if scopes.is_empty() {
            return Err(Error::invalid("give at least one scope"));
        }
        if scopes.contains(&Scope::Admin) && owner.role != GlobalRole::Admin && project.is_none() {
            return Err(Error::new(
                Code::Forbidden,
                "only administrators can hold keys with the admin scope",
            ));
        }
        if let Some(p) = project
            && owner.role != GlobalRole::Admin
            && self.store.member_role(p, owner.id).await?.is_none()
        {
            return Err(Error::not_found("project", &p.to_string()));
        }
        if expires_in.is_some_and(|d| d.is_zero() || d > Duration::from_secs(5 * 366 * 86_400)) {
            return Err(Error::invalid(
                "expiry must be between 1 second and 5 years",
            ));
        }
        let secret = new_secret(KEY_PREFIX);
        let key = self
            .store
            .create_api_key(NewApiKey {
                user_id: owner.id,
                name: name.into(),
                prefix: secret.chars().take(KEY_PREFIX.len() + 6).collect(),
                secret_hash: secret_hash(&secret),
                scopes,
                project_id: project,
                expires_at_ms: expires_in.map(|d| now_ms() + d.as_millis() as i64),
            })
            .await?;
        let mut e = self.event("key.created", "success", actor, client);
        e.target = Some(format!("key {} of {}", key.id, owner.email));
        e.project_id = project;
        self.audit(e).await;
        Ok((key, secret))
    }

    pub async fn revoke_key(
        &self,
        actor: Option<&Principal>,
        key: &ApiKey,
        client: &ClientInfo,
    ) -> Result<()> {
        if !self.store.revoke_api_key(key.id).await? {
            return Err(Error::conflict("the key is already revoked"));
        }
        self.invalidate();
        let mut e = self.event("key.revoked", "success", actor, client);
        e.target = Some(format!("key {}", key.id));
        self.audit(e).await;
        Ok(())
    }

    /// When no active administrator exists, creates one with a random password and returns it.
    pub async fn ensure_bootstrap_admin(&self, email: &str) -> Result<Option<(User, String)>> {
        if self.store.count_active_admins().await? > 0
            || self.store.get_user_by_email(email).await?.is_some()
        {
            return Ok(None);
        }
        let (user, pw) = self
            .create_user(
                None,
                email,
                "Administrator",
                GlobalRole::Admin,
                None,
                &ClientInfo::default(),
            )
            .await?;
        Ok(pw.map(|p| (user, p)))
    }

    /// Adds or changes a project membership (audited).
    pub async fn put_member(
        &self,
        actor: Option<&Principal>,
        project: Uuid,
        user: &User,
        role: ProjectRole,
        client: &ClientInfo,
    ) -> Result<()> {
        let before = self.store.member_role(project, user.id).await?;
        if before == Some(ProjectRole::Owner)
            && role != ProjectRole::Owner
            && self.store.count_owners(project).await? <= 1
        {
            return Err(Error::conflict("a project keeps at least one owner"));
        }
        self.store.put_member(project, user.id, role).await?;
        let mut e = self.event("member.role_changed", "success", actor, client);
        e.project_id = Some(project);
        e.target = Some(user.email.clone());
        e.detail = Some(format!(
            "{} → {role}",
            before.map(|r| r.as_str()).unwrap_or("none")
        ));
        self.audit(e).await;
        Ok(())
    }

    pub async fn remove_member(
        &self,
        actor: Option<&Principal>,
        project: Uuid,
        user: &User,
        client: &ClientInfo,
    ) -> Result<()> {
        if self.store.member_role(project, user.id).await? == Some(ProjectRole::Owner)
            && self.store.count_owners(project).await? <= 1
        {
            return Err(Error::conflict("a project keeps at least one owner"));
        }
        if !self.store.remove_member(project, user.id).await? {
            return Err(Error::not_found("member", &user.email));
        }
        let mut e = self.event("member.removed", "success", actor, client);
        e.project_id = Some(project);
        e.target = Some(user.email.clone());
        self.audit(e).await;
        Ok(())
    }
}

/// `audit.prune`: deletes audit records older than the retention period (the only deletion
/// the append-only log permits). Enqueued once a day by the server.
pub struct AuditPrune {
    pub store: Arc<dyn MetaStore>,
    pub retention_days: u32,
}

#[async_trait::async_trait]
impl crate::jobs::JobHandler for AuditPrune {
    async fn run(
        &self,
        _: crate::jobs::JobContext,
    ) -> std::result::Result<Option<serde_json::Value>, crate::jobs::JobFailure> {
        let cutoff = now_ms() - i64::from(self.retention_days) * 86_400_000;
        let n = self
            .store
            .prune_audit(cutoff)
            .await
            .map_err(|e| crate::jobs::JobFailure::retryable(Code::JobFailed, e.to_string()))?;
        Ok(Some(
            serde_json::json!({ "deleted": n, "cutoff": crate::ids::rfc3339(cutoff) }),
        ))
    }
}
