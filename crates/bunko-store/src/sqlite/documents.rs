use super::{SqliteStore, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::documents::{
    ChunkRecord, DocError, DocStatus, DocType, Document, DocumentFilter, DocumentQueries,
    NewDocument, PageText, Processed,
};
use bunko_core::ids::{new_id, now_ms};
use bunko_core::ports::{Page, PageRequest, StoreError, StoreResult};
use uuid::Uuid;

#[async_trait]
impl DocumentQueries for SqliteStore {
    async fn create_document(&self, d: NewDocument) -> StoreResult<(Document, bool)> {
        let now = now_ms();
        let tags =
            serde_json::to_string(&d.tags).map_err(|e| StoreError::Backend(e.to_string()))?;
        // The unique (project, sha256) index makes a concurrent second upload a no-op.
        let origin = d.origin.as_ref();
        let origin_meta = origin
            .map(|o| serde_json::to_string(&o.meta))
            .transpose()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let title = origin.and_then(|o| o.title.clone()).unwrap_or(d.title);
        let inserted = sqlx::query(
            "INSERT INTO documents (id, project_id, title, filename, doc_type, sha256, size_bytes,
                                    status, source, tags, created_at, updated_at,
                                    external_id, version, valid_from, origin_meta)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (project_id, sha256) DO NOTHING
             RETURNING *",
        )
        .bind(new_id().to_string())
        .bind(d.project_id.to_string())
        .bind(&title)
        .bind(&d.filename)
        .bind(d.doc_type.as_str())
        .bind(&d.sha256)
        .bind(i64::try_from(d.size_bytes).unwrap_or(i64::MAX))
        .bind(&d.source)
        .bind(tags)
        .bind(now)
        .bind(now)
        .bind(origin.map(|o| o.external_id.as_str()))
        .bind(origin.and_then(|o| o.version.as_deref()))
        .bind(origin.and_then(|o| o.valid_from.as_deref()))
        .bind(origin_meta)
        .fetch_optional(&self.writer)
        .await
        .map_err(|e| super::constraint_err(e, String::new, "project"))?;
        if let Some(row) = inserted {
            return Ok((rows::document(&row)?, true));
        }
        let row = sqlx::query("SELECT * FROM documents WHERE project_id = ? AND sha256 = ?")
            .bind(d.project_id.to_string())
            .bind(&d.sha256)
            .fetch_one(&self.writer)
            .await
            .map_err(db_err)?;
        Ok((rows::document(&row)?, false))
    }

    async fn get_document(&self, id: Uuid) -> StoreResult<Option<Document>> {
        sqlx::query("SELECT * FROM documents WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::document)
            .transpose()
    }

    async fn list_documents(
        &self,
        project: Uuid,
        f: &DocumentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Document>> {
        let title = f.title.as_ref().map(|t| {
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows = sqlx::query(
            "SELECT * FROM documents
             WHERE project_id = ?
               AND (? IS NULL OR id < ?)
               AND (? IS NULL OR status = ?)
               AND (? IS NULL OR doc_type = ?)
               AND (? IS NULL OR language = ?)
               AND (? IS NULL OR title LIKE ? ESCAPE '\\')
             ORDER BY id DESC LIMIT ?",
        )
        .bind(project.to_string())
        .bind(page.before.map(|u| u.to_string()))
        .bind(page.before.map(|u| u.to_string()))
        .bind(f.status.map(DocStatus::as_str))
        .bind(f.status.map(DocStatus::as_str))
        .bind(f.doc_type.map(DocType::as_str))
        .bind(f.doc_type.map(DocType::as_str))
        .bind(&f.language)
        .bind(&f.language)
        .bind(&title)
        .bind(&title)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::document, |d| d.id)
    }

    async fn queue_document(&self, id: Uuid, job: Uuid) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE documents SET status = 'queued', stage = NULL, progress = 0, error_code = NULL,
                    error_message = NULL, job_id = ?, updated_at = ? WHERE id = ?",
        )
        .bind(job.to_string())
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_document_stage(&self, id: Uuid, stage: &str, progress: f32) -> StoreResult<()> {
        sqlx::query(
            "UPDATE documents SET status = 'processing', stage = ?, progress = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(stage)
        .bind(f64::from(progress.clamp(0.0, 1.0)))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn fail_document(&self, id: Uuid, error: &DocError) -> StoreResult<()> {
        // The previous pages and chunks (of an earlier successful run) stay; only the status
        // says this run failed.
        sqlx::query(
            "UPDATE documents SET status = 'failed', stage = NULL, error_code = ?,
                    error_message = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&error.code)
        .bind(&error.message)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn finish_document(&self, id: Uuid, p: &Processed) -> StoreResult<()> {
        let ids = id.to_string();
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        sqlx::query("DELETE FROM document_pages WHERE document_id = ?")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM chunks WHERE document_id = ?")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for pg in &p.pages {
            sqlx::query(
                "INSERT INTO document_pages (document_id, page, text, raw, method, confidence, offsets)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&ids)
            .bind(i64::from(pg.page))
            .bind(&pg.text)
            .bind(&pg.raw)
            .bind(pg.method.as_str())
            .bind(pg.confidence.map(f64::from))
            .bind(serde_json::to_string(&pg.offsets).map_err(|e| StoreError::Backend(e.to_string()))?)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        for c in &p.chunks {
            sqlx::query(
                "INSERT INTO chunks (id, document_id, project_id, ord, text, page_start, page_end,
                     char_start, char_end, section_path, language, is_references, content_hash)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.id)
            .bind(&ids)
            .bind(c.project_id.to_string())
            .bind(i64::from(c.ord))
            .bind(&c.text)
            .bind(i64::from(c.page_start))
            .bind(i64::from(c.page_end))
            .bind(i64::from(c.char_start))
            .bind(i64::from(c.char_end))
            .bind(&c.section_path)
            .bind(&c.language)
            .bind(i64::from(c.is_references))
            .bind(&c.content_hash)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        let meta =
            serde_json::to_string(&p.meta).map_err(|e| StoreError::Backend(e.to_string()))?;
        let r = sqlx::query(
            "UPDATE documents SET status = 'ready', stage = NULL, progress = 1, error_code = NULL,
                    error_message = NULL, page_count = ?, chunk_count = ?, language = ?,
                    meta = ?,
                    -- a crawled document keeps the title its source gave
                    title = CASE WHEN external_id IS NULL THEN COALESCE(?, title) ELSE title END,
                    updated_at = ?
             WHERE id = ?",
        )
        .bind(p.pages.len() as i64)
        .bind(p.chunks.len() as i64)
        .bind(&p.language)
        .bind(meta)
        .bind(&p.title)
        .bind(now_ms())
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if r.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("document {id}")));
        }
        tx.commit().await.map_err(db_err)
    }

    async fn get_page(&self, id: Uuid, page: u32) -> StoreResult<Option<PageText>> {
        let row = sqlx::query("SELECT * FROM document_pages WHERE document_id = ? AND page = ?")
            .bind(id.to_string())
            .bind(i64::from(page))
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.map(|r| rows::page_text(&r, page)).transpose()
    }

    async fn document_chunks(&self, id: Uuid) -> StoreResult<Vec<ChunkRecord>> {
        sqlx::query("SELECT * FROM chunks WHERE document_id = ? ORDER BY ord")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::chunk)
            .collect()
    }

    async fn chunks_by_id(&self, ids: &[String]) -> StoreResult<Vec<ChunkRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One bound JSON array instead of a variable number of placeholders.
        let list = serde_json::to_string(ids).map_err(|e| StoreError::Backend(e.to_string()))?;
        sqlx::query("SELECT * FROM chunks WHERE id IN (SELECT value FROM json_each(?))")
            .bind(list)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::chunk)
            .collect()
    }

    async fn all_chunks(&self, project: Option<Uuid>) -> StoreResult<Vec<ChunkRecord>> {
        sqlx::query(
            "SELECT c.* FROM chunks c JOIN documents d ON d.id = c.document_id
             WHERE d.status = 'ready' AND (? IS NULL OR c.project_id = ?)
             ORDER BY c.document_id, c.ord",
        )
        .bind(project.map(|p| p.to_string()))
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?
        .iter()
        .map(rows::chunk)
        .collect()
    }

    async fn ready_documents(&self) -> StoreResult<Vec<(Uuid, u32)>> {
        let rows = sqlx::query("SELECT id, chunk_count FROM documents WHERE status = 'ready'")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::ready_document).collect()
    }

    async fn delete_document(&self, id: Uuid) -> StoreResult<Option<Document>> {
        sqlx::query("DELETE FROM documents WHERE id = ? RETURNING *")
            .bind(id.to_string())
            .fetch_optional(&self.writer)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::document)
            .transpose()
    }

    async fn blob_references(&self, sha256: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT count(*) FROM documents WHERE sha256 = ?")
            .bind(sha256)
            .fetch_one(&self.writer)
            .await
            .map_err(db_err)
    }

    async fn set_document_password(&self, id: Uuid, password: Option<&str>) -> StoreResult<()> {
        match password {
            Some(p) => sqlx::query(
                "INSERT INTO document_passwords (document_id, password, created_at) VALUES (?, ?, ?)
                 ON CONFLICT (document_id) DO UPDATE SET password = excluded.password",
            )
            .bind(id.to_string())
            .bind(p)
            .bind(now_ms())
            .execute(&self.writer)
            .await
            .map_err(|e| super::constraint_err(e, String::new, "document"))?,
            None => sqlx::query("DELETE FROM document_passwords WHERE document_id = ?")
                .bind(id.to_string())
                .execute(&self.writer)
                .await
                .map_err(db_err)?,
        };
        Ok(())
    }

    async fn document_password(&self, id: Uuid) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT password FROM document_passwords WHERE document_id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.writer)
            .await
            .map_err(db_err)
    }

    async fn stale_documents(
        &self,
    ) -> StoreResult<Vec<(Document, Option<String>, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT d.*, j.last_error_code AS job_error_code, j.last_error AS job_error
             FROM documents d LEFT JOIN jobs j ON j.id = d.job_id
             WHERE d.status IN ('queued', 'processing')
               AND (j.id IS NULL OR j.state NOT IN ('queued', 'running'))",
        )
        .fetch_all(&self.writer)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::stale_document).collect()
    }

    async fn filter_documents(
        &self,
        projects: &[Uuid],
        f: &bunko_core::search::SearchFilters,
    ) -> StoreResult<Vec<Uuid>> {
        let json = |v: Vec<String>| -> StoreResult<Option<String>> {
            if v.is_empty() {
                Ok(None)
            } else {
                serde_json::to_string(&v)
                    .map(Some)
                    .map_err(|e| StoreError::Backend(e.to_string()))
            }
        };
        let projects = rows::uuid_list(projects)?;
        let ids = json(f.document_ids.iter().map(Uuid::to_string).collect())?;
        let types = json(f.types.iter().map(|t| t.as_str().to_owned()).collect())?;
        let langs = json(f.languages.clone())?;
        let tags = json(f.tags.clone())?;
        let sources = json(f.sources.clone())?;
        // The document's date: its metadata's creation date, else the day it was added.
        let rows = sqlx::query(
            "SELECT id FROM documents d
             WHERE status = 'ready'
               AND project_id IN (SELECT value FROM json_each(?))
               AND (? IS NULL OR id IN (SELECT value FROM json_each(?)))
               AND (? IS NULL OR doc_type IN (SELECT value FROM json_each(?)))
               AND (? IS NULL OR language IN (SELECT value FROM json_each(?)))
               AND (? IS NULL OR source IN (SELECT value FROM json_each(?)))
               AND (? IS NULL OR EXISTS (SELECT 1 FROM json_each(d.tags) t
                                         WHERE t.value IN (SELECT value FROM json_each(?))))
               AND (? IS NULL OR COALESCE(substr(json_extract(meta, '$.created'), 1, 10),
                                          date(created_at / 1000, 'unixepoch')) >= ?)
               AND (? IS NULL OR COALESCE(substr(json_extract(meta, '$.created'), 1, 10),
                                          date(created_at / 1000, 'unixepoch')) <= ?)
               AND CASE WHEN ? IS NULL THEN is_current = 1
                        ELSE external_id IS NULL
                             OR ((valid_from IS NULL OR valid_from <= ?)
                                 AND (valid_to IS NULL OR valid_to > ?)) END",
        )
        .bind(projects)
        .bind(&ids)
        .bind(&ids)
        .bind(&types)
        .bind(&types)
        .bind(&langs)
        .bind(&langs)
        .bind(&sources)
        .bind(&sources)
        .bind(&tags)
        .bind(&tags)
        .bind(&f.date_from)
        .bind(&f.date_from)
        .bind(&f.date_to)
        .bind(&f.date_to)
        .bind(&f.as_of)
        .bind(&f.as_of)
        .bind(&f.as_of)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(|r| rows::uuid(r, "id")).collect()
    }

    async fn document_versions(
        &self,
        project: Uuid,
        external_id: &str,
    ) -> StoreResult<Vec<Document>> {
        sqlx::query(
            "SELECT * FROM documents WHERE project_id = ? AND external_id = ?
             ORDER BY COALESCE(valid_from, ''), created_at, id",
        )
        .bind(project.to_string())
        .bind(external_id)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?
        .iter()
        .map(rows::document)
        .collect()
    }

    async fn refresh_versions(
        &self,
        project: Uuid,
        external_id: &str,
        today: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "WITH v AS (
                 SELECT id,
                        LEAD(valid_from) OVER (ORDER BY COALESCE(valid_from, ''), created_at, id)
                            AS next_from,
                        ROW_NUMBER() OVER (
                            ORDER BY CASE WHEN valid_from IS NULL OR valid_from <= ?1 THEN 0 ELSE 1 END,
                                     CASE WHEN valid_from IS NULL OR valid_from <= ?1
                                          THEN COALESCE(valid_from, '') END DESC,
                                     valid_from, created_at DESC, id DESC) AS rank
                 FROM documents WHERE project_id = ?2 AND external_id = ?3)
             UPDATE documents
                SET valid_to = (SELECT next_from FROM v WHERE v.id = documents.id),
                    is_current = (SELECT rank = 1 FROM v WHERE v.id = documents.id)
              WHERE project_id = ?2 AND external_id = ?3",
        )
        .bind(today)
        .bind(project.to_string())
        .bind(external_id)
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn documents_added_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<Document>> {
        sqlx::query(
            "SELECT * FROM documents WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?
        .iter()
        .map(rows::document)
        .collect()
    }

    async fn superseded_documents(&self, projects: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let ids = rows::uuid_list(projects)?;
        let rows = sqlx::query(
            "SELECT id FROM documents
             WHERE is_current = 0 AND project_id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(|r| rows::uuid(r, "id")).collect()
    }
}
