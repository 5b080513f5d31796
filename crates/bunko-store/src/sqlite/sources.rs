use super::{SqliteStore, constraint_err, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::ids::now_ms;
use bunko_core::ports::{StoreError, StoreResult};
use bunko_core::sources::{CrawlStats, Source, SourceDef, SourceItem, SourceQueries};
use uuid::Uuid;

#[async_trait]
impl SourceQueries for SqliteStore {
    async fn sync_config_sources(&self, defs: &[SourceDef]) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
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
                        "UPDATE sources SET definition = ?, updated_at = ? WHERE name = ? AND definition <> ?",
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
                        "INSERT INTO sources (name, definition, origin, created_at, updated_at) VALUES (?, ?, 'config', ?, ?)",
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
                sqlx::query("DELETE FROM sources WHERE name = ?")
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
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::source)
            .collect()
    }

    async fn get_source(&self, name: &str) -> StoreResult<Option<Source>> {
        sqlx::query("SELECT * FROM sources WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::source)
            .transpose()
    }

    async fn create_source(&self, def: &SourceDef) -> StoreResult<Source> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO sources (name, definition, origin, created_at, updated_at) VALUES (?, ?, 'api', ?, ?)",
        )
        .bind(&def.name)
        .bind(serde_json::to_string(def).map_err(rows::backend)?)
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(|e| constraint_err(e, || format!("source `{}` exists", def.name), "source"))?;
        self.get_source(&def.name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("source {}", def.name)))
    }

    async fn delete_source(&self, name: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sources WHERE name = ? AND origin = 'api'")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn save_source_cursor(&self, name: &str, cursor: &serde_json::Value) -> StoreResult<()> {
        sqlx::query("UPDATE sources SET cursor = ?, updated_at = ? WHERE name = ?")
            .bind(serde_json::to_string(cursor).map_err(rows::backend)?)
            .bind(now_ms())
            .bind(name)
            .execute(&self.writer)
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
            "UPDATE sources SET last_run = ?, last_job_id = COALESCE(?, last_job_id), last_status = ?,
                    last_error = ?, last_stats = ?, updated_at = ? WHERE name = ?",
        )
        .bind(now)
        .bind(job.map(|j| j.to_string()))
        .bind(if error.is_some() { "failed" } else { "ok" })
        .bind(error)
        .bind(serde_json::to_string(stats).map_err(rows::backend)?)
        .bind(now)
        .bind(name)
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn source_item(&self, name: &str, key: &str) -> StoreResult<Option<SourceItem>> {
        sqlx::query("SELECT * FROM source_items WHERE source = ? AND item_key = ?")
            .bind(name)
            .bind(key)
            .fetch_optional(&self.reader)
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
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (source, item_key) DO UPDATE SET content_hash = excluded.content_hash,
                 document_id = excluded.document_id, seen_at = excluded.seen_at",
        )
        .bind(name)
        .bind(key)
        .bind(content_hash)
        .bind(document.map(|d| d.to_string()))
        .bind(now_ms())
        .execute(&self.writer)
        .await
        .map_err(|e| constraint_err(e, || format!("item {key}"), "source"))?;
        Ok(())
    }

    async fn source_items(&self, name: &str) -> StoreResult<Vec<SourceItem>> {
        sqlx::query("SELECT * FROM source_items WHERE source = ? ORDER BY item_key")
            .bind(name)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::source_item)
            .collect()
    }

    async fn forget_source_item(&self, name: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM source_items WHERE source = ? AND item_key = ?")
            .bind(name)
            .bind(key)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
