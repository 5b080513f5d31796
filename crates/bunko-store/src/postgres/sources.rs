use super::{PgStore, constraint_err, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::ids::now_ms;
use bunko_core::ports::{StoreError, StoreResult};
use bunko_core::sources::{CrawlStats, Source, SourceDef, SourceItem, SourceQueries};
use uuid::Uuid;

#[async_trait]
impl SourceQueries for PgStore {
    async fn sync_config_sources(&self, defs: &[SourceDef]) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Replicas starting together sync one after the other.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(super::LOCK_SYNC)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let existing: Vec<(String, String)> = sqlx::query_as("SELECT name, origin FROM sources")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        for def in defs {
            let text = serde_json::to_string(def).map_err(rows::backend)?;
            match existing.iter().find(|(n, _)| *n == def.name) {
                Some((_, origin)) if origin == "api" => {
                    return Err(StoreError::Conflict(format!(
                        "source `{}` exists (made over the API); rename one of them",
                        def.name
                    )));
                }
                Some(_) => {
                    sqlx::query(
                        "UPDATE sources SET definition = $1, updated_at = $2 WHERE name = $3 AND definition <> $4",
                    )
                    .bind(&text)
                    .bind(now)
                    .bind(&def.name)
                    .bind(&text)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO sources (name, definition, origin, created_at, updated_at) VALUES ($1, $2, 'config', $3, $4)",
                    )
                    .bind(&def.name)
                    .bind(&text)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
            }
        }
        for (name, origin) in &existing {
            if origin == "config" && !defs.iter().any(|d| d.name == *name) {
                sqlx::query("DELETE FROM sources WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)
    }

    async fn list_sources(&self) -> StoreResult<Vec<Source>> {
        sqlx::query("SELECT * FROM sources ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::source)
            .collect()
    }

    async fn get_source(&self, name: &str) -> StoreResult<Option<Source>> {
        sqlx::query("SELECT * FROM sources WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::source)
            .transpose()
    }

    async fn create_source(&self, def: &SourceDef) -> StoreResult<Source> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO sources (name, definition, origin, created_at, updated_at) VALUES ($1, $2, 'api', $3, $4)",
        )
        .bind(&def.name)
        .bind(serde_json::to_string(def).map_err(rows::backend)?)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| constraint_err(e, || format!("source `{}` exists", def.name), "source"))?;
        self.get_source(&def.name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("source {}", def.name)))
    }

    async fn delete_source(&self, name: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sources WHERE name = $1 AND origin = 'api'")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn save_source_cursor(&self, name: &str, cursor: &serde_json::Value) -> StoreResult<()> {
        sqlx::query("UPDATE sources SET cursor = $1, updated_at = $2 WHERE name = $3")
            .bind(serde_json::to_string(cursor).map_err(rows::backend)?)
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn finish_crawl(
        &self,
        name: &str,
        job: Option<Uuid>,
        stats: &CrawlStats,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE sources SET last_run = $1, last_job_id = COALESCE($2, last_job_id), last_status = $3,
                    last_error = $4, last_stats = $5, updated_at = $6 WHERE name = $7",
        )
        .bind(now)
        .bind(job.map(|j| j.to_string()))
        .bind(if error.is_some() { "failed" } else { "ok" })
        .bind(error)
        .bind(serde_json::to_string(stats).map_err(rows::backend)?)
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn source_item(&self, name: &str, key: &str) -> StoreResult<Option<SourceItem>> {
        sqlx::query("SELECT * FROM source_items WHERE source = $1 AND item_key = $2")
            .bind(name)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::source_item)
            .transpose()
    }

    async fn put_source_item(
        &self,
        name: &str,
        key: &str,
        content_hash: &str,
        document: Option<Uuid>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO source_items (source, item_key, content_hash, document_id, seen_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source, item_key) DO UPDATE SET content_hash = excluded.content_hash,
                 document_id = excluded.document_id, seen_at = excluded.seen_at",
        )
        .bind(name)
        .bind(key)
        .bind(content_hash)
        .bind(document.map(|d| d.to_string()))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| constraint_err(e, || format!("item {key}"), "source"))?;
        Ok(())
    }

    async fn source_items(&self, name: &str) -> StoreResult<Vec<SourceItem>> {
        sqlx::query("SELECT * FROM source_items WHERE source = $1 ORDER BY item_key")
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::source_item)
            .collect()
    }

    async fn forget_source_item(&self, name: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM source_items WHERE source = $1 AND item_key = $2")
            .bind(name)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
