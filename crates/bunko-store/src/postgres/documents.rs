use super::{PgStore, db_err};
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
impl DocumentQueries for PgStore {
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $11, $12, $13, $14, $15)
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
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| super::constraint_err(e, String::new, "project"))?;
        if let Some(row) = inserted {
            return Ok((rows::document(&row)?, true));
        }
        let row = sqlx::query("SELECT * FROM documents WHERE project_id = $1 AND sha256 = $2")
            .bind(d.project_id.to_string())
            .bind(&d.sha256)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok((rows::document(&row)?, false))
    }

    async fn get_document(&self, id: Uuid) -> StoreResult<Option<Document>> {
        sqlx::query("SELECT * FROM documents WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
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
             WHERE project_id = $1
               AND ($2::text IS NULL OR id < $2)
               AND ($3::text IS NULL OR status = $3)
               AND ($4::text IS NULL OR doc_type = $4)
               AND ($5::text IS NULL OR language = $5)
               AND ($6::text IS NULL OR title ILIKE $6 ESCAPE '\\')
             ORDER BY id DESC LIMIT $7",
        )
        .bind(project.to_string())
        .bind(page.before.map(|u| u.to_string()))
        .bind(f.status.map(DocStatus::as_str))
        .bind(f.doc_type.map(DocType::as_str))
        .bind(&f.language)
        .bind(&title)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::document, |d| d.id)
    }

    async fn queue_document(&self, id: Uuid, job: Uuid) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE documents SET status = 'queued', stage = NULL, progress = 0, error_code = NULL,
                    error_message = NULL, job_id = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(job.to_string())
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_document_stage(&self, id: Uuid, stage: &str, progress: f32) -> StoreResult<()> {
        sqlx::query(
            "UPDATE documents SET status = 'processing', stage = $1, progress = $2, updated_at = $3
             WHERE id = $4",
        )
        .bind(stage)
        .bind(f64::from(progress.clamp(0.0, 1.0)))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn fail_document(&self, id: Uuid, error: &DocError) -> StoreResult<()> {
        // The previous pages and chunks (of an earlier successful run) stay; only the status
        // says this run failed.
        sqlx::query(
            "UPDATE documents SET status = 'failed', stage = NULL, error_code = $1,
                    error_message = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(&error.code)
        .bind(&error.message)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn finish_document(&self, id: Uuid, p: &Processed) -> StoreResult<()> {
        let ids = id.to_string();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("DELETE FROM document_pages WHERE document_id = $1")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM chunks WHERE document_id = $1")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // One statement per table (arrays unnested server-side), not one round trip per row.
        let offsets = p
            .pages
            .iter()
            .map(|pg| rows::json(&pg.offsets))
            .collect::<StoreResult<Vec<_>>>()?;
        sqlx::query(
            "INSERT INTO document_pages (document_id, page, text, raw, method, confidence, offsets)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
                                      $6::float8[], $7::text[])",
        )
        .bind(&ids)
        .bind(
            p.pages
                .iter()
                .map(|pg| i64::from(pg.page))
                .collect::<Vec<_>>(),
        )
        .bind(
            p.pages
                .iter()
                .map(|pg| pg.text.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(p.pages.iter().map(|pg| pg.raw.as_str()).collect::<Vec<_>>())
        .bind(
            p.pages
                .iter()
                .map(|pg| pg.method.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            p.pages
                .iter()
                .map(|pg| pg.confidence.map(f64::from))
                .collect::<Vec<_>>(),
        )
        .bind(offsets)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let c = &p.chunks;
        let n = |f: fn(&bunko_core::documents::ChunkRecord) -> u32| {
            c.iter().map(|c| i64::from(f(c))).collect::<Vec<_>>()
        };
        sqlx::query(
            "INSERT INTO chunks (id, document_id, project_id, ord, text, page_start, page_end,
                 char_start, char_end, section_path, language, is_references, content_hash)
             SELECT u.id, $1, u.project_id, u.ord, u.text, u.page_start, u.page_end, u.char_start,
                    u.char_end, u.section_path, u.language, u.is_references, u.content_hash
             FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
                         $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
                         $12::bigint[], $13::text[])
                  AS u (id, project_id, ord, text, page_start, page_end, char_start, char_end,
                        section_path, language, is_references, content_hash)",
        )
        .bind(&ids)
        .bind(c.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|c| c.project_id.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(n(|c| c.ord))
        .bind(c.iter().map(|c| c.text.as_str()).collect::<Vec<_>>())
        .bind(n(|c| c.page_start))
        .bind(n(|c| c.page_end))
        .bind(n(|c| c.char_start))
        .bind(n(|c| c.char_end))
        .bind(
            c.iter()
                .map(|c| c.section_path.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|c| c.language.as_str()).collect::<Vec<_>>())
        .bind(
            c.iter()
                .map(|c| i64::from(c.is_references))
                .collect::<Vec<_>>(),
        )
        .bind(
            c.iter()
                .map(|c| c.content_hash.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let r = sqlx::query(
            "UPDATE documents SET status = 'ready', stage = NULL, progress = 1, error_code = NULL,
                    error_message = NULL, page_count = $1, chunk_count = $2, language = $3,
                    meta = $4,
                    -- a crawled document keeps the title its source gave
                    title = CASE WHEN external_id IS NULL THEN COALESCE($5, title) ELSE title END,
                    updated_at = $6
             WHERE id = $7",
        )
        .bind(p.pages.len() as i64)
        .bind(p.chunks.len() as i64)
        .bind(&p.language)
        .bind(rows::json(&p.meta)?)
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
        let row = sqlx::query("SELECT * FROM document_pages WHERE document_id = $1 AND page = $2")
            .bind(id.to_string())
            .bind(i64::from(page))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| rows::page_text(&r, page)).transpose()
    }

    async fn document_chunks(&self, id: Uuid) -> StoreResult<Vec<ChunkRecord>> {
        sqlx::query("SELECT * FROM chunks WHERE document_id = $1 ORDER BY ord")
            .bind(id.to_string())
            .fetch_all(&self.pool)
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
        sqlx::query("SELECT * FROM chunks WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::chunk)
            .collect()
    }

    async fn all_chunks(&self, project: Option<Uuid>) -> StoreResult<Vec<ChunkRecord>> {
        sqlx::query(
            "SELECT c.* FROM chunks c JOIN documents d ON d.id = c.document_id
             WHERE d.status = 'ready' AND ($1::text IS NULL OR c.project_id = $1)
             ORDER BY c.document_id, c.ord",
        )
        .bind(project.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(rows::chunk)
        .collect()
    }

    async fn ready_documents(&self) -> StoreResult<Vec<(Uuid, u32)>> {
        let rows = sqlx::query("SELECT id, chunk_count FROM documents WHERE status = 'ready'")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::ready_document).collect()
    }

    async fn delete_document(&self, id: Uuid) -> StoreResult<Option<Document>> {
        sqlx::query("DELETE FROM documents WHERE id = $1 RETURNING *")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::document)
            .transpose()
    }

    async fn blob_references(&self, sha256: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT count(*) FROM documents WHERE sha256 = $1")
            .bind(sha256)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn set_document_password(&self, id: Uuid, password: Option<&str>) -> StoreResult<()> {
        match password {
            Some(p) => sqlx::query(
                "INSERT INTO document_passwords (document_id, password, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (document_id) DO UPDATE SET password = excluded.password",
            )
            .bind(id.to_string())
            .bind(p)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| super::constraint_err(e, String::new, "document"))?,
            None => sqlx::query("DELETE FROM document_passwords WHERE document_id = $1")
                .bind(id.to_string())
                .execute(&self.pool)
                .await
                .map_err(db_err)?,
        };
        Ok(())
    }

    async fn document_password(&self, id: Uuid) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT password FROM document_passwords WHERE document_id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
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
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::stale_document).collect()
    }

    async fn filter_documents(
        &self,
        projects: &[Uuid],
        f: &bunko_core::search::SearchFilters,
    ) -> StoreResult<Vec<Uuid>> {
        // An empty list means "any": bound as NULL.
        let list = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let projects: Vec<String> = projects.iter().map(Uuid::to_string).collect();
        let ids = list(f.document_ids.iter().map(Uuid::to_string).collect());
        let types = list(f.types.iter().map(|t| t.as_str().to_owned()).collect());
        // The document's date: its metadata's creation date, else the day it was added (UTC).
        let rows = sqlx::query(
            "SELECT id FROM documents d
             WHERE status = 'ready'
               AND project_id = ANY($1)
               AND ($2::text[] IS NULL OR id = ANY($2))
               AND ($3::text[] IS NULL OR doc_type = ANY($3))
               AND ($4::text[] IS NULL OR language = ANY($4))
               AND ($5::text[] IS NULL OR source = ANY($5))
               AND ($6::text[] IS NULL OR EXISTS (
                        SELECT 1 FROM jsonb_array_elements_text(d.tags::jsonb) t WHERE t = ANY($6)))
               AND ($7::text IS NULL OR COALESCE(substr(d.meta::jsonb ->> 'created', 1, 10),
                        to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')) >= $7)
               AND ($8::text IS NULL OR COALESCE(substr(d.meta::jsonb ->> 'created', 1, 10),
                        to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')) <= $8)
               AND CASE WHEN $9::text IS NULL THEN is_current = 1
                        ELSE external_id IS NULL
                             OR ((valid_from IS NULL OR valid_from <= $9)
                                 AND (valid_to IS NULL OR valid_to > $9)) END",
        )
        .bind(projects)
        .bind(ids)
        .bind(types)
        .bind(list(f.languages.clone()))
        .bind(list(f.sources.clone()))
        .bind(list(f.tags.clone()))
        .bind(&f.date_from)
        .bind(&f.date_to)
        .bind(&f.as_of)
        .fetch_all(&self.pool)
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
            "SELECT * FROM documents WHERE project_id = $1 AND external_id = $2
             ORDER BY COALESCE(valid_from, ''), created_at, id",
        )
        .bind(project.to_string())
        .bind(external_id)
        .fetch_all(&self.pool)
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
        // NULLS FIRST/LAST spelled out: SQLite sorts NULL lowest, PostgreSQL highest.
        sqlx::query(
            "WITH v AS (
                 SELECT id,
                        LEAD(valid_from) OVER (ORDER BY COALESCE(valid_from, ''), created_at, id)
                            AS next_from,
                        ROW_NUMBER() OVER (
                            ORDER BY CASE WHEN valid_from IS NULL OR valid_from <= $1 THEN 0 ELSE 1 END,
                                     CASE WHEN valid_from IS NULL OR valid_from <= $1
                                          THEN COALESCE(valid_from, '') END DESC NULLS LAST,
                                     valid_from NULLS FIRST, created_at DESC, id DESC) AS rank
                 FROM documents WHERE project_id = $2 AND external_id = $3)
             UPDATE documents
                SET valid_to = v.next_from,
                    is_current = CASE WHEN v.rank = 1 THEN 1 ELSE 0 END
               FROM v
              WHERE v.id = documents.id",
        )
        .bind(today)
        .bind(project.to_string())
        .bind(external_id)
        .execute(&self.pool)
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
            "SELECT * FROM documents WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(rows::document)
        .collect()
    }

    async fn superseded_documents(&self, projects: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let rows =
            sqlx::query("SELECT id FROM documents WHERE is_current = 0 AND project_id = ANY($1)")
                .bind(projects.iter().map(Uuid::to_string).collect::<Vec<_>>())
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.iter().map(|r| rows::uuid(r, "id")).collect()
    }
}
