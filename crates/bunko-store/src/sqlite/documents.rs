use super::{SqliteStore, db_err, to_page};
use async_trait::async_trait;
use bunko_core::documents::{
    ChunkRecord, DocError, DocMeta, DocOrigin, DocStatus, DocType, Document, DocumentFilter,
    DocumentQueries, NewDocument, PageMethod, PageText, Processed,
};
use bunko_core::ids::{new_id, now_ms};
use bunko_core::ports::{Page, PageRequest, StoreError, StoreResult};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} `{v}` is not valid"))
}

fn uuid(r: &SqliteRow, col: &str) -> StoreResult<Uuid> {
    let s: String = r.try_get(col).map_err(db_err)?;
    Uuid::parse_str(&s).map_err(|_| bad(col, &s))
}

/// Ids as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn uuid_list(ids: &[Uuid]) -> StoreResult<String> {
    serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
        .map_err(|e| StoreError::Backend(e.to_string()))
}

fn row_to_document(r: &SqliteRow) -> StoreResult<Document> {
    let status: String = r.try_get("status").map_err(db_err)?;
    let doc_type: String = r.try_get("doc_type").map_err(db_err)?;
    let meta: String = r.try_get("meta").map_err(db_err)?;
    let tags: String = r.try_get("tags").map_err(db_err)?;
    let code: Option<String> = r.try_get("error_code").map_err(db_err)?;
    let message: Option<String> = r.try_get("error_message").map_err(db_err)?;
    let job: Option<String> = r.try_get("job_id").map_err(db_err)?;
    let size: i64 = r.try_get("size_bytes").map_err(db_err)?;
    let progress: f64 = r.try_get("progress").map_err(db_err)?;
    let pages: i64 = r.try_get("page_count").map_err(db_err)?;
    let chunks: i64 = r.try_get("chunk_count").map_err(db_err)?;
    Ok(Document {
        id: uuid(r, "id")?,
        project_id: uuid(r, "project_id")?,
        title: r.try_get("title").map_err(db_err)?,
        filename: r.try_get("filename").map_err(db_err)?,
        doc_type: DocType::parse(&doc_type).ok_or_else(|| bad("doc_type", &doc_type))?,
        sha256: r.try_get("sha256").map_err(db_err)?,
        size_bytes: size.max(0) as u64,
        status: DocStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        stage: r.try_get("stage").map_err(db_err)?,
        progress: progress as f32,
        error: code.map(|code| DocError {
            code,
            message: message.unwrap_or_default(),
        }),
        page_count: pages.max(0) as u32,
        chunk_count: chunks.max(0) as u32,
        language: r.try_get("language").map_err(db_err)?,
        meta: serde_json::from_str::<DocMeta>(&meta).unwrap_or_default(),
        source: r.try_get("source").map_err(db_err)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        job_id: job.and_then(|j| Uuid::parse_str(&j).ok()),
        created_at_ms: r.try_get("created_at").map_err(db_err)?,
        updated_at_ms: r.try_get("updated_at").map_err(db_err)?,
        origin: row_to_origin(r)?,
    })
}

fn row_to_origin(r: &SqliteRow) -> StoreResult<Option<DocOrigin>> {
    let Some(external_id) = r
        .try_get::<Option<String>, _>("external_id")
        .map_err(db_err)?
    else {
        return Ok(None);
    };
    let meta: Option<String> = r.try_get("origin_meta").map_err(db_err)?;
    Ok(Some(DocOrigin {
        external_id,
        version: r.try_get("version").map_err(db_err)?,
        valid_from: r.try_get("valid_from").map_err(db_err)?,
        valid_to: r.try_get("valid_to").map_err(db_err)?,
        current: r.try_get::<i64, _>("is_current").map_err(db_err)? != 0,
        meta: meta
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or(serde_json::Value::Null),
    }))
}

fn row_to_chunk(r: &SqliteRow) -> StoreResult<ChunkRecord> {
    let n = |c: &str| -> StoreResult<u32> {
        let v: i64 = r.try_get(c).map_err(db_err)?;
        Ok(v.max(0) as u32)
    };
    let refs: i64 = r.try_get("is_references").map_err(db_err)?;
    Ok(ChunkRecord {
        id: r.try_get("id").map_err(db_err)?,
        document_id: uuid(r, "document_id")?,
        project_id: uuid(r, "project_id")?,
        ord: n("ord")?,
        text: r.try_get("text").map_err(db_err)?,
        page_start: n("page_start")?,
        page_end: n("page_end")?,
        char_start: n("char_start")?,
        char_end: n("char_end")?,
        section_path: r.try_get("section_path").map_err(db_err)?,
        language: r.try_get("language").map_err(db_err)?,
        is_references: refs != 0,
        content_hash: r.try_get("content_hash").map_err(db_err)?,
    })
}

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
            return Ok((row_to_document(&row)?, true));
        }
        let row = sqlx::query("SELECT * FROM documents WHERE project_id = ? AND sha256 = ?")
            .bind(d.project_id.to_string())
            .bind(&d.sha256)
            .fetch_one(&self.writer)
            .await
            .map_err(db_err)?;
        Ok((row_to_document(&row)?, false))
    }

    async fn get_document(&self, id: Uuid) -> StoreResult<Option<Document>> {
        sqlx::query("SELECT * FROM documents WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(row_to_document)
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
        to_page(&rows, page.limit, row_to_document, |d| d.id)
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
        let Some(r) = row else { return Ok(None) };
        let method: String = r.try_get("method").map_err(db_err)?;
        let confidence: Option<f64> = r.try_get("confidence").map_err(db_err)?;
        let offsets: String = r.try_get("offsets").map_err(db_err)?;
        Ok(Some(PageText {
            page,
            text: r.try_get("text").map_err(db_err)?,
            raw: r.try_get("raw").map_err(db_err)?,
            method: PageMethod::parse(&method).ok_or_else(|| bad("method", &method))?,
            confidence: confidence.map(|c| c as f32),
            offsets: serde_json::from_str(&offsets).map_err(|_| bad("offsets", &offsets))?,
        }))
    }

    async fn document_chunks(&self, id: Uuid) -> StoreResult<Vec<ChunkRecord>> {
        sqlx::query("SELECT * FROM chunks WHERE document_id = ? ORDER BY ord")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(row_to_chunk)
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
            .map(row_to_chunk)
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
        .map(row_to_chunk)
        .collect()
    }

    async fn ready_documents(&self) -> StoreResult<Vec<(Uuid, u32)>> {
        let rows = sqlx::query("SELECT id, chunk_count FROM documents WHERE status = 'ready'")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("chunk_count").map_err(db_err)?;
                Ok((uuid(r, "id")?, n.max(0) as u32))
            })
            .collect()
    }

    async fn delete_document(&self, id: Uuid) -> StoreResult<Option<Document>> {
        sqlx::query("DELETE FROM documents WHERE id = ? RETURNING *")
            .bind(id.to_string())
            .fetch_optional(&self.writer)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(row_to_document)
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
        rows.iter()
            .map(|r| {
                Ok((
                    row_to_document(r)?,
                    r.try_get("job_error_code").map_err(db_err)?,
                    r.try_get("job_error").map_err(db_err)?,
                ))
            })
            .collect()
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
        let projects = uuid_list(projects)?;
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
        rows.iter().map(|r| uuid(r, "id")).collect()
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
        .map(row_to_document)
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
        .map(row_to_document)
        .collect()
    }

    async fn superseded_documents(&self, projects: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let ids = uuid_list(projects)?;
        let rows = sqlx::query(
            "SELECT id FROM documents
             WHERE is_current = 0 AND project_id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(|r| uuid(r, "id")).collect()
    }
}
