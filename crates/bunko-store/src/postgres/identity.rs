//! Users, memberships, sessions + refresh tokens, API keys, audit log.

use super::{PgStore, constraint_err, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::identity::{GlobalRole, ProjectRole, UserStatus};
use bunko_core::ids::{new_id, now_ms};
use bunko_core::ports::{
    ApiKey, ApiKeyQueries, AuditEvent, AuditFilter, AuditQueries, AuditRecord, Member,
    MembershipQueries, NewApiKey, NewUser, Page, PageRequest, Project, RefreshUse, SessionQueries,
    StoreResult, User, UserQueries,
};
use sqlx::Row;
use uuid::Uuid;

#[async_trait]
impl UserQueries for PgStore {
    async fn create_user(&self, u: NewUser) -> StoreResult<User> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, role, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'active', $6, $7) RETURNING *",
        )
        .bind(new_id().to_string())
        .bind(&u.email)
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(u.role.as_str())
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| constraint_err(e, || format!("a user with email `{}` already exists", u.email), ""))?;
        rows::user(&row)
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::user)
            .transpose()
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::user)
            .transpose()
    }

    async fn list_users(&self, page: PageRequest) -> StoreResult<Page<User>> {
        let before = page.before.map(|u| u.to_string());
        let rows = sqlx::query(
            "SELECT * FROM users WHERE ($1::text IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::user, |u| u.id)
    }

    async fn set_password_hash(&self, id: Uuid, hash: &str) -> StoreResult<bool> {
        self.update_user(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
            hash,
            id,
        )
        .await
    }

    async fn set_user_status(&self, id: Uuid, status: UserStatus) -> StoreResult<bool> {
        self.update_user(
            "UPDATE users SET status = $1, updated_at = $2 WHERE id = $3",
            status.as_str(),
            id,
        )
        .await
    }

    async fn set_user_role(&self, id: Uuid, role: GlobalRole) -> StoreResult<bool> {
        self.update_user(
            "UPDATE users SET role = $1, updated_at = $2 WHERE id = $3",
            role.as_str(),
            id,
        )
        .await
    }

    async fn count_active_admins(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND status = 'active'")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)
    }
}

impl PgStore {
    async fn update_user(&self, sql: &'static str, value: &str, id: Uuid) -> StoreResult<bool> {
        let r = sqlx::query(sql)
            .bind(value)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl MembershipQueries for PgStore {
    async fn put_member(&self, project: Uuid, user: Uuid, role: ProjectRole) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO memberships (project_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| constraint_err(e, String::new, "project or user"))?;
        Ok(())
    }

    async fn remove_member(&self, project: Uuid, user: Uuid) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM memberships WHERE project_id = $1 AND user_id = $2")
            .bind(project.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn member_role(&self, project: Uuid, user: Uuid) -> StoreResult<Option<ProjectRole>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE project_id = $1 AND user_id = $2",
        )
        .bind(project.to_string())
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        role.map(|r| ProjectRole::parse(&r).ok_or_else(|| rows::bad("project role", &r)))
            .transpose()
    }

    async fn list_members(&self, project: Uuid) -> StoreResult<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.email, u.display_name, m.role, m.created_at
               FROM memberships m JOIN users u ON u.id = m.user_id
              WHERE m.project_id = $1 ORDER BY lower(u.email)",
        )
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::member).collect()
    }

    async fn count_owners(&self, project: Uuid) -> StoreResult<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM memberships WHERE project_id = $1 AND role = 'owner'",
        )
        .bind(project.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)
    }

    async fn list_projects_of(&self, user: Uuid, page: PageRequest) -> StoreResult<Page<Project>> {
        let before = page.before.map(|u| u.to_string());
        let rows = sqlx::query(
            "SELECT p.* FROM projects p JOIN memberships m ON m.project_id = p.id
              WHERE m.user_id = $1 AND ($2::text IS NULL OR p.id < $2) ORDER BY p.id DESC LIMIT $3",
        )
        .bind(user.to_string())
        .bind(before)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::project, |p| p.id)
    }
}

#[async_trait]
impl SessionQueries for PgStore {
    async fn create_session(
        &self,
        user: Uuid,
        ip: Option<&str>,
        user_agent: Option<&str>,
    ) -> StoreResult<Uuid> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(now_ms())
        .bind(ip)
        .bind(user_agent.map(|u| u.chars().take(300).collect::<String>()))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(id)
    }

    async fn add_refresh_token(
        &self,
        session: Uuid,
        token_hash: &str,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, session_id, token_hash, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_id().to_string())
        .bind(session.to_string())
        .bind(token_hash)
        .bind(expires_at_ms)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn use_refresh_token(&self, token_hash: &str, now: i64) -> StoreResult<RefreshUse> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let row = sqlx::query(
            "SELECT t.id, t.session_id, t.expires_at, t.used_at, s.user_id, s.revoked_at
               FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1
              FOR UPDATE OF t",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(r) = row else {
            return Ok(RefreshUse::Invalid);
        };
        let session_id = rows::uuid(&r, "session_id")?;
        let user_id = rows::uuid(&r, "user_id")?;
        let used: Option<i64> = r.try_get("used_at").map_err(db_err)?;
        let revoked: Option<i64> = r.try_get("revoked_at").map_err(db_err)?;
        let expires: i64 = r.try_get("expires_at").map_err(db_err)?;
        if used.is_some() {
            sqlx::query(
                "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1), revoke_reason = COALESCE(revoke_reason, 'refresh token reuse') WHERE id = $2",
            )
            .bind(now)
            .bind(session_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            return Ok(RefreshUse::Reused {
                session_id,
                user_id,
            });
        }
        if revoked.is_some() || expires <= now {
            return Ok(RefreshUse::Invalid);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(r.try_get::<String, _>("id").map_err(db_err)?)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(RefreshUse::Rotated {
            session_id,
            user_id,
        })
    }

    async fn revoke_session(&self, session: Uuid, reason: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(reason)
            .bind(session.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn revoke_user_sessions(&self, user: Uuid, reason: &str) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(user.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected())
    }

    async fn session_user(&self, session: Uuid, user: Uuid) -> StoreResult<Option<User>> {
        sqlx::query(
            "SELECT u.* FROM sessions s JOIN users u ON u.id = s.user_id
              WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL",
        )
        .bind(session.to_string())
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(rows::user)
        .transpose()
    }
}

#[async_trait]
impl ApiKeyQueries for PgStore {
    async fn create_api_key(&self, k: NewApiKey) -> StoreResult<ApiKey> {
        let row = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, secret_hash, scopes, project_id, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
        )
        .bind(new_id().to_string())
        .bind(k.user_id.to_string())
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.secret_hash)
        .bind(rows::scopes_text(&k.scopes))
        .bind(k.project_id.map(|p| p.to_string()))
        .bind(k.expires_at_ms)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| constraint_err(e, String::new, "user or project"))?;
        rows::api_key(&row, "")
    }

    async fn api_key_by_hash(&self, secret_hash: &str) -> StoreResult<Option<(ApiKey, User)>> {
        let row = sqlx::query(
            "SELECT k.id AS k_id, k.user_id AS k_user_id, k.name AS k_name, k.prefix AS k_prefix,
                    k.scopes AS k_scopes, k.project_id AS k_project_id, k.expires_at AS k_expires_at,
                    k.last_used_at AS k_last_used_at, k.revoked_at AS k_revoked_at, k.created_at AS k_created_at,
                    u.*
               FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.secret_hash = $1",
        )
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| Ok((rows::api_key(&r, "k_")?, rows::user(&r)?)))
            .transpose()
    }

    async fn get_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(|r| rows::api_key(&r, ""))
            .transpose()
    }

    async fn list_api_keys(
        &self,
        user: Option<Uuid>,
        page: PageRequest,
    ) -> StoreResult<Page<ApiKey>> {
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR id < $2)
              ORDER BY id DESC LIMIT $3",
        )
        .bind(user.map(|u| u.to_string()))
        .bind(page.before.map(|u| u.to_string()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, |r| rows::api_key(r, ""), |k| k.id)
    }

    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<bool> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id.to_string())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_api_key(&self, id: Uuid, now: i64) -> StoreResult<()> {
        // At most one write per key per minute: the time is for people, not accounting.
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1 - 60000)")
            .bind(now)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait]
impl AuditQueries for PgStore {
    async fn append_audit(&self, e: AuditEvent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, event, outcome, actor_user, actor_key, actor, target, project_id, ip, user_agent, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(new_id().to_string())
        .bind(now_ms())
        .bind(&e.event)
        .bind(&e.outcome)
        .bind(e.actor_user.map(|u| u.to_string()))
        .bind(e.actor_key.map(|u| u.to_string()))
        .bind(&e.actor)
        .bind(&e.target)
        .bind(e.project_id.map(|u| u.to_string()))
        .bind(&e.ip)
        .bind(e.user_agent.as_ref().map(|u| u.chars().take(300).collect::<String>()))
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn list_audit(
        &self,
        f: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log
              WHERE ($1::text IS NULL OR event = $1) AND ($2::text IS NULL OR outcome = $2) AND ($3::text IS NULL OR actor_user = $3)
                AND ($4::bigint IS NULL OR at >= $4) AND ($5::bigint IS NULL OR at < $5) AND ($6::text IS NULL OR id < $6)
              ORDER BY id DESC LIMIT $7",
        )
        .bind(&f.event)
        .bind(&f.outcome)
        .bind(f.actor_user.map(|u| u.to_string()))
        .bind(f.since_ms)
        .bind(f.until_ms)
        .bind(page.before.map(|u| u.to_string()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::audit, |a| a.id)
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ('audit.retention_cutoff_ms', $1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(before_ms.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let r = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(r.rows_affected())
    }
}
