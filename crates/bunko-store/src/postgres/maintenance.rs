use super::{PgStore, db_err};
use async_trait::async_trait;
use bunko_core::maintenance::MaintenanceQueries;
use bunko_core::ports::StoreResult;
use std::collections::HashSet;

/// Every table of the schema (checked by `integrity_check`).
const TABLES: &[&str] = &[
    "settings",
    "projects",
    "jobs",
    "users",
    "memberships",
    "sessions",
    "refresh_tokens",
    "api_keys",
    "audit_log",
    "documents",
    "document_pages",
    "chunks",
    "document_passwords",
    "usage_ledger",
    "conversations",
    "conversation_turns",
    "summaries",
    "notes",
    "schedules",
    "schedule_runs",
    "leases",
    "sources",
    "source_items",
    "usage_daily",
];

#[async_trait]
impl MaintenanceQueries for PgStore {
    async fn purge_finished_jobs(&self, before_ms: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "DELETE FROM jobs WHERE state IN ('succeeded', 'cancelled') AND finished_at < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected())
    }

    async fn purge_expired_sessions(&self, now_ms: i64) -> StoreResult<(u64, u64)> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let tokens = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE NOT EXISTS
                 (SELECT 1 FROM refresh_tokens t WHERE t.session_id = sessions.id)
               AND (revoked_at IS NOT NULL OR created_at < $1)",
        )
        .bind(now_ms - 86_400_000)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok((tokens, sessions))
    }

    async fn integrity_check(&self) -> StoreResult<String> {
        // PostgreSQL checks its own pages (and reports damage in its log); what bunko can
        // check is that the server answers and every table of its schema is there.
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
        )
        .bind(TABLES)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(if missing.is_empty() {
            "ok".into()
        } else {
            format!("missing tables: {}", missing.join(", "))
        })
    }

    async fn chunk_count(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chunks")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn referenced_blobs(&self) -> StoreResult<HashSet<String>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT sha256 FROM documents")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().collect())
    }
}
