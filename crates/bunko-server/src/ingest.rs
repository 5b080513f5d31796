//! The document pipeline: staging uploads (hashed and typed while they stream to disk),
//! adding documents (content-addressed originals, one document per bytes per project), the
//! `document.process` job (extract → normalise → chunk → embed → index, then one store
//! transaction), deletion, and the start-up consistency check between the store and the
//! search index.
//!
//! Atomicity: a document's chunks are replaced in the keyword index by one commit (delete by
//! document + add), in the vector index in memory (its file is written every few seconds by
//! [`Ingest::flush_vectors`]), and in the store by one transaction that also sets `ready`. A crash between those steps is repaired at start by
//! [`Ingest::check_consistency`], which re-indexes ready documents from the stored chunks
//! (no re-extraction) and drops index entries of documents that no longer exist.

use crate::embedder::{VectorHalf, embed_passages, open_cache, passage_text};
use bunko_core::chunk::{ChunkParams, chunk_document, estimate_tokens, join_pages};
use bunko_core::config::Config;
use bunko_core::documents::{
    BlobStore, ChunkRecord, DocError, DocStatus, DocType, Document, NewDocument, PageMethod,
    PageText, Processed, sanitize_filename,
};
use bunko_core::jobs::{JobContext, JobFailure, JobHandler, NewJob};
use bunko_core::metrics::Metrics;
use bunko_core::ports::MetaStore;
use bunko_core::{Code, Error};
use bunko_index::keyword::KeywordIndex;
use bunko_ingest::{ExtractError, Extracted, OcrOptions, Options};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PROCESS_KIND: &str = "document.process";
pub const QUEUE: &str = "ingest";

/// A file being written to the staging directory while its hash is computed.
pub struct Stager {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    limit: u64,
}

/// A complete staged file: hashed, typed, not yet in the blob store.
pub struct Staged {
    pub path: tempfile::TempPath,
    pub sha256: String,
    pub size: u64,
    pub doc_type: DocType,
    pub filename: String,
}

impl Stager {
    pub async fn new(blobs: &dyn BlobStore, limit: u64) -> Result<Self, Error> {
        let dir = blobs.staging_dir();
        let tmp = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::Builder::new().prefix("upload-").tempfile_in(&dir)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::unavailable(format!("cannot stage the upload: {e}")))?;
        let (std_file, path) = tmp.into_parts();
        Ok(Self {
            file: tokio::fs::File::from_std(std_file),
            path,
            hasher: Sha256::new(),
            size: 0,
            head: Vec::new(),
            limit,
        })
    }

    /// Appends bytes; over the limit → 413 (the staged file is removed when dropped).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(Error::new(
                Code::PayloadTooLarge,
                format!(
                    "the file is larger than ingest.max_file_bytes ({} bytes)",
                    self.limit
                ),
            ));
        }
        if self.head.len() < 8192 {
            let take = (8192 - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.hasher.update(bytes);
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| Error::unavailable(format!("cannot stage the upload: {e}")))
    }

    /// Finishes the file: empty → 400 `empty_file`; not a type bunko reads → 415.
    pub async fn finish(mut self, filename: &str) -> Result<Staged, Error> {
        let filename = sanitize_filename(filename);
        self.file
            .flush()
            .await
            .map_err(|e| Error::unavailable(format!("cannot stage the upload: {e}")))?;
        if self.size == 0 {
            return Err(Error::new(
                Code::EmptyFile,
                format!("`{filename}` is empty (0 bytes)"),
            ));
        }
        let Some(doc_type) = DocType::sniff(&self.head, &filename) else {
            return Err(Error::new(
                Code::UnsupportedDocumentType,
                format!(
                    "`{filename}` is not a PDF, PNG, JPEG, TIFF, HTML, Markdown or text file (judged by its content)"
                ),
            ));
        };
        Ok(Staged {
            path: self.path,
            sha256: hex::encode(self.hasher.finalize()),
            size: self.size,
            doc_type,
            filename,
        })
    }
}

/// What adding one file did.
#[derive(Debug, Clone)]
pub struct Added {
    pub document: Document,
    pub job_id: Option<Uuid>,
    /// The same bytes were already a document of this project.
    pub duplicate: bool,
}

pub struct Ingest {
    pub store: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub keyword: Arc<KeywordIndex>,
    pub vector: Arc<VectorHalf>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// The search index in PostgreSQL (`search.backend = "postgres"`), instead of the
    /// embedded halves.
    pub pg: Option<Arc<crate::pgindex::PgIndex>>,
    /// One document's index update (or a vector-file write) at a time in this process.
    index_lock: tokio::sync::Mutex<()>,
    /// The "no vectors" warning is logged once per process, not once per document.
    warned_no_vectors: std::sync::atomic::AtomicBool,
}

/// How a processing attempt ended badly.
enum Failed {
    /// The document is at fault (encrypted, damaged, empty): failed for good.
    Document(DocError),
    /// Something around it (a tool, the store): worth another attempt.
    Transient(Code, String),
    /// The document was deleted while it was processed.
    Deleted,
    Cancelled,
}

impl From<bunko_core::ports::StoreError> for Failed {
    fn from(e: bunko_core::ports::StoreError) -> Self {
        Failed::Transient(Code::Unavailable, e.to_string())
    }
}

impl Ingest {
    pub fn new(
        store: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        keyword: Arc<KeywordIndex>,
        vector: Arc<VectorHalf>,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            blobs,
            keyword,
            vector,
            config,
            metrics,
            pg: None,
            index_lock: tokio::sync::Mutex::new(()),
            warned_no_vectors: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Indexes into PostgreSQL instead of the data dir's halves.
    pub fn with_postgres_index(mut self, pg: Option<Arc<crate::pgindex::PgIndex>>) -> Self {
        self.pg = pg;
        self
    }

    /// The configured model's (dimensions, fingerprint) when it is loaded or loads now.
    async fn model(&self) -> Option<(usize, String)> {
        let vector = self.vector.clone();
        tokio::task::spawn_blocking(move || {
            vector
                .get()
                .ok()
                .map(|r| (r.encoder.dim(), r.encoder.fingerprint().to_owned()))
        })
        .await
        .ok()
        .flatten()
    }

    /// Stages a file from the local file system (the CLI and folder import).
    pub async fn stage_path(&self, path: &Path) -> Result<Staged, Error> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        if meta.len() > self.config.ingest.max_file_bytes {
            return Err(Error::new(
                Code::PayloadTooLarge,
                format!(
                    "{} is larger than ingest.max_file_bytes ({} bytes)",
                    path.display(),
                    self.config.ingest.max_file_bytes
                ),
            ));
        }
        let mut stager =
            Stager::new(self.blobs.as_ref(), self.config.ingest.max_file_bytes).await?;
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            use tokio::io::AsyncReadExt;
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            stager.write(&buf[..n]).await?;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        stager.finish(&name).await
    }

    /// Stages bytes held in memory (the built-in sample).
    pub async fn stage_bytes(&self, name: &str, bytes: &[u8]) -> Result<Staged, Error> {
        let mut stager =
            Stager::new(self.blobs.as_ref(), self.config.ingest.max_file_bytes).await?;
        stager.write(bytes).await?;
        stager.finish(name).await
    }

    /// Adds a staged file to a project: stores the original, creates the document and its
    /// processing job. The same bytes twice in one project are one document (`duplicate`);
    /// a duplicate of a failed document given a password is processed again with it.
    pub async fn add(
        &self,
        project: Uuid,
        staged: Staged,
        source: &str,
        password: Option<&str>,
    ) -> Result<Added, Error> {
        self.add_tagged(project, staged, source, password, &[])
            .await
    }

    /// [`Ingest::add`] with tags for the new document (search can filter by them).
    pub async fn add_tagged(
        &self,
        project: Uuid,
        staged: Staged,
        source: &str,
        password: Option<&str>,
        tags: &[String],
    ) -> Result<Added, Error> {
        self.add_with_origin(project, staged, source, password, tags, None)
            .await
    }

    /// [`Ingest::add_tagged`] for a crawled item: its external id, version, validity and the
    /// source's metadata and title go with the new document.
    pub async fn add_with_origin(
        &self,
        project: Uuid,
        staged: Staged,
        source: &str,
        password: Option<&str>,
        tags: &[String],
        origin: Option<bunko_core::documents::NewOrigin>,
    ) -> Result<Added, Error> {
        let title = staged
            .filename
            .rsplit_once('.')
            .map(|(stem, _)| stem.to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| staged.filename.clone());
        self.blobs.put_staged(&staged.sha256, &staged.path).await?;
        let (doc, created) = self
            .store
            .create_document(NewDocument {
                project_id: project,
                title,
                filename: staged.filename.clone(),
                doc_type: staged.doc_type,
                sha256: staged.sha256.clone(),
                size_bytes: staged.size,
                source: source.to_owned(),
                tags: tags.to_vec(),
                origin,
            })
            .await?;
        if !created {
            if doc.status == DocStatus::Failed && password.is_some() {
                let job = self.reprocess(&doc, password).await?;
                let document = self.document(doc.id).await?;
                return Ok(Added {
                    document,
                    job_id: Some(job),
                    duplicate: true,
                });
            }
            return Ok(Added {
                document: doc,
                job_id: None,
                duplicate: true,
            });
        }
        self.metrics.ingest_bytes.inc_by(staged.size);
        self.metrics
            .documents_added
            .with_label_values(&[source])
            .inc();
        let job = self.enqueue(&doc, password).await?;
        let document = self.document(doc.id).await?;
        Ok(Added {
            document,
            job_id: Some(job),
            duplicate: false,
        })
    }

    async fn document(&self, id: Uuid) -> Result<Document, Error> {
        self.store
            .get_document(id)
            .await?
            .ok_or_else(|| bunko_core::documents::not_found(&id.to_string()))
    }

    async fn enqueue(&self, doc: &Document, password: Option<&str>) -> Result<Uuid, Error> {
        if let Some(p) = password {
            self.store.set_document_password(doc.id, Some(p)).await?;
        }
        let mut job = NewJob::new(QUEUE, PROCESS_KIND, json!({ "document_id": doc.id }));
        job.max_attempts = self.config.jobs.max_attempts.max(1);
        let id = self.store.enqueue(job).await?.id;
        self.store.queue_document(doc.id, id).await?;
        Ok(id)
    }

    /// Processes a document again (after a fix, with a password, or with a new model);
    /// 409 while it is queued or being processed.
    pub async fn reprocess(&self, doc: &Document, password: Option<&str>) -> Result<Uuid, Error> {
        if matches!(doc.status, DocStatus::Queued | DocStatus::Processing) {
            return Err(Error::conflict(
                "the document is already queued or being processed",
            ));
        }
        self.enqueue(doc, password).await
    }

    /// Deletes a document: its chunks leave the index first, then the store row (with pages,
    /// chunks and password); the original is removed when no document references it.
    pub async fn delete(&self, doc: &Document) -> Result<(), Error> {
        if let Some(job) = doc.job_id
            && matches!(doc.status, DocStatus::Queued | DocStatus::Processing)
        {
            // Stop its processing; an attempt that still finishes sees the document gone.
            let _ = self.store.cancel(job).await;
        }
        self.unindex(doc.id).await.map_err(Error::internal)?;
        self.store.delete_document(doc.id).await?;
        // The current version gone: the newest remaining one valid today takes its place.
        if let Some(o) = &doc.origin {
            self.store
                .refresh_versions(
                    doc.project_id,
                    &o.external_id,
                    &bunko_ingest::crawl::today(),
                )
                .await?;
        }
        if self.store.blob_references(&doc.sha256).await? == 0 {
            self.blobs.delete(&doc.sha256).await?;
        }
        Ok(())
    }

    /// Removes a document's chunks from both halves (chunk ids are `<document>:<n>`).
    async fn unindex(&self, doc: Uuid) -> Result<(), String> {
        if let Some(pg) = &self.pg {
            return pg.delete_document(&doc.to_string()).await;
        }
        let _guard = self.index_lock.lock().await;
        let keyword = self.keyword.clone();
        let vector = self.vector.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let d = doc.to_string();
            keyword
                .delete_document(&d)
                .and_then(|()| keyword.commit())
                .map_err(|e| e.to_string())?;
            // A data dir without vectors never loads the model just to delete.
            if let Some(ready) = vector.loaded_or_on_disk()
                && ready.index.delete_document(&d) > 0
            {
                vector.mark_dirty();
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn stage(&self, id: Uuid, stage: &str, progress: f32) {
        if let Err(e) = self.store.set_document_stage(id, stage, progress).await {
            tracing::warn!(document = %id, error = %e, "could not record progress");
        }
    }

    fn extract_options(&self, password: Option<String>) -> Options {
        let c = &self.config.ingest;
        let mut ocr = OcrOptions {
            enabled: c.ocr,
            languages: c.ocr_languages.clone(),
            dpi: c.ocr_dpi,
            ..OcrOptions::default()
        };
        if c.ocr_workers > 0 {
            ocr.workers = c.ocr_workers;
        }
        Options { password, ocr }
    }

    /// Runs the pipeline for one document. Idempotent: a repeated attempt replaces whatever
    /// an interrupted one left.
    pub async fn process(
        &self,
        id: Uuid,
        job: &bunko_core::jobs::LeasedJob,
        cancel: &CancellationToken,
    ) -> Result<Option<serde_json::Value>, JobFailure> {
        let started = Instant::now();
        let outcome = self.run_pipeline(id, cancel).await;
        match outcome {
            Ok(summary) => {
                self.metrics
                    .ingest_documents
                    .with_label_values(&["ready"])
                    .inc();
                let _ = self.store.set_document_password(id, None).await;
                let mut summary = summary;
                let took = started.elapsed();
                self.metrics.document_processing.observe(took.as_secs_f64());
                summary["took_ms"] = json!(took.as_millis() as u64);
                // A source that asks for summaries gets one of each new document.
                if let Ok(Some(doc)) = self.store.get_document(id).await {
                    match crate::autosummary::request(self, &doc, &bunko_ingest::crawl::today())
                        .await
                    {
                        Ok(Some(job)) => summary["summary_job_id"] = json!(job),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(document = %id, error = %e, "could not enqueue the automatic summary")
                        }
                    }
                }
                Ok(Some(summary))
            }
            Err(Failed::Deleted) => Ok(Some(json!({ "skipped": "the document was deleted" }))),
            Err(Failed::Cancelled) => {
                let e = DocError::new(Code::JobFailed, "processing was cancelled");
                let _ = self.store.fail_document(id, &e).await;
                Err(JobFailure::permanent(Code::JobFailed, e.message))
            }
            Err(Failed::Document(e)) => {
                self.metrics
                    .ingest_documents
                    .with_label_values(&[&e.code])
                    .inc();
                let _ = self.store.fail_document(id, &e).await;
                let _ = self.store.set_document_password(id, None).await;
                tracing::info!(document = %id, code = %e.code, reason = %e.message, "document failed");
                // The job did its work: the document's own fault is the document's status (and
                // `bunko_ingest_documents_total{outcome}`), not a failed job that alerts.
                Ok(Some(json!({
                    "document_id": id,
                    "outcome": "failed",
                    "code": e.code,
                    "message": e.message,
                })))
            }
            Err(Failed::Transient(code, message)) => {
                if job.attempts >= job.max_attempts {
                    self.metrics
                        .ingest_documents
                        .with_label_values(&[code.as_str()])
                        .inc();
                    let _ = self
                        .store
                        .fail_document(id, &DocError::new(code, message.clone()))
                        .await;
                } else {
                    // Back in the queue with the same job, which the worker retries.
                    let _ = self.store.queue_document(id, job.id).await;
                }
                Err(JobFailure::retryable(code, message))
            }
        }
    }

    async fn run_pipeline(
        &self,
        id: Uuid,
        cancel: &CancellationToken,
    ) -> Result<serde_json::Value, Failed> {
        let Some(doc) = self.store.get_document(id).await? else {
            return Err(Failed::Deleted);
        };
        // 1. Extract (child processes, on a blocking thread), reporting page progress.
        let t = Stage::begin("extract", id);
        self.stage(id, "extract", 0.02).await;
        let path = match self.blobs.local_path(&doc.sha256).await {
            Ok(p) => p,
            Err(bunko_core::ports::StoreError::NotFound(_)) => {
                return Err(Failed::Document(DocError::new(
                    Code::DocumentUnreadable,
                    "the original file is missing from the blob store",
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let password = self.store.document_password(id).await?;
        let opts = self.extract_options(password);
        let (tx, mut rx) = tokio::sync::watch::channel((0usize, 0usize));
        let doc_type = doc.doc_type;
        let mut handle = tokio::task::spawn_blocking(move || {
            bunko_ingest::extract(&path, doc_type, &opts, &move |d, t| {
                let _ = tx.send((d, t));
            })
        });
        // Progress reports until the extraction ends (its sender is then dropped).
        let mut reporting = true;
        let outcome = loop {
            tokio::select! {
                r = &mut handle => break r,
                changed = rx.changed(), if reporting => match changed {
                    Ok(()) => {
                        let (d, t) = *rx.borrow_and_update();
                        if t > 0 {
                            self.stage(id, "extract", 0.02 + 0.6 * d as f32 / t as f32).await;
                        }
                    }
                    Err(_) => reporting = false,
                },
                _ = cancel.cancelled() => return Err(Failed::Cancelled),
            }
        };
        let extracted: Extracted = outcome
            .map_err(|e| Failed::Transient(Code::Internal, format!("extraction thread: {e}")))?
            .map_err(|e| match e {
                ExtractError::Tool(m) => Failed::Transient(Code::ExtractorUnavailable, m),
                e => Failed::Document(DocError::new(e.code(), e.to_string())),
            })?;
        t.end(&self.metrics);
        if extracted.pages.iter().any(|p| p.method == PageMethod::Ocr) {
            self.metrics.ocr_duration.observe(extracted.ocr_seconds);
            for c in extracted.pages.iter().filter_map(|p| p.confidence) {
                self.metrics
                    .ocr_confidence
                    .observe(f64::from(c / 100.0).clamp(0.0, 1.0));
            }
        }
        for w in &extracted.warnings {
            tracing::warn!(document = %id, warning = %w, "extraction");
        }

        // 2–3. Normalise and chunk (pure, on a blocking thread), with the embedder's tokenizer
        // when it is available.
        let t = Stage::begin("chunk", id);
        self.stage(id, "chunk", 0.65).await;
        let vector = self.vector.clone();
        let params = ChunkParams {
            target_tokens: self.config.ingest.chunk_tokens,
            overlap: self.config.ingest.chunk_overlap,
        };
        let project = doc.project_id;
        // A source's title (arXiv, e-Gov, a feed) is the title; else the file's own, else its name.
        let title = if doc.origin.is_some() {
            Title::Given(doc.title.clone())
        } else {
            Title::Hint(doc.title.clone())
        };
        let (processed, texts) = tokio::task::spawn_blocking(move || {
            let ready = vector.get().ok();
            let counter = |s: &str| match ready {
                Some(r) => r.encoder.tokenize(s, bunko_embed::Role::Passage).len(),
                None => estimate_tokens(s),
            };
            build(id, project, &title, extracted, params, &counter)
        })
        .await
        .map_err(|e| Failed::Transient(Code::Internal, format!("chunking thread: {e}")))??;
        t.end(&self.metrics);
        if cancel.is_cancelled() {
            return Err(Failed::Cancelled);
        }

        // 4. Embed through the cache (skipped, with a warning, when the vector half is off).
        let t = Stage::begin("embed", id);
        self.stage(id, "embed", 0.7).await;
        let vectors = self
            .embed(texts, &t.span)
            .await
            .map_err(|e| Failed::Transient(Code::Internal, format!("embedding thread: {e}")))?;
        if vectors.is_none()
            && let Err(e) = self.vector.get()
            && !self
                .warned_no_vectors
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(reason = %e.0, "documents are indexed for keyword search only: the vector half is unavailable (`bunko index rebuild` adds their vectors later)");
        }
        t.end(&self.metrics);
        if cancel.is_cancelled() {
            return Err(Failed::Cancelled);
        }

        // 5. Index, then record — unless the document was deleted meanwhile.
        let t = Stage::begin("index", id);
        self.stage(id, "index", 0.9).await;
        if self.store.get_document(id).await?.is_none() {
            return Err(Failed::Deleted);
        }
        self.index(&processed, vectors.as_deref(), &doc.title)
            .await
            .map_err(|e| Failed::Transient(Code::Unavailable, format!("indexing: {e}")))?;
        if self.store.get_document(id).await?.is_none() {
            // Deleted while indexing: take back what was just added.
            let _ = self.unindex(id).await;
            return Err(Failed::Deleted);
        }
        self.store.finish_document(id, &processed).await?;
        t.end(&self.metrics);
        let ocr = processed
            .pages
            .iter()
            .filter(|p| p.method == PageMethod::Ocr)
            .count();
        self.metrics
            .ingest_pages
            .with_label_values(&["ocr"])
            .inc_by(ocr as u64);
        self.metrics
            .ingest_pages
            .with_label_values(&["text"])
            .inc_by((processed.pages.len() - ocr) as u64);
        Ok(json!({
            "document_id": id,
            "pages": processed.pages.len(),
            "ocr_pages": ocr,
            "chunks": processed.chunks.len(),
            "embedded": vectors.is_some(),
        }))
    }

    /// Passages through the embedding cache on a blocking thread; `None` when the vector half
    /// is unavailable (no model).
    async fn embed(
        &self,
        texts: Vec<String>,
        span: &tracing::Span,
    ) -> Result<Option<Vec<Vec<f32>>>, tokio::task::JoinError> {
        let vector = self.vector.clone();
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let span = span.clone();
        tokio::task::spawn_blocking(move || {
            let _in_stage = span.enter(); // batches are the embed stage's children
            let ready = vector.get().ok()?;
            let cache = open_cache(&config, &ready.encoder);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Some(embed_passages(
                &ready.encoder,
                cache.as_ref(),
                &refs,
                Some(&metrics),
                |_| {},
            ))
        })
        .await
    }

    /// Writes the vector index when it changed since the last write (called every few seconds
    /// and at shutdown by the process that owns the index). The graph file is rewritten whole,
    /// so it is not written per document; a crash in between loses only vectors the start-up
    /// check re-adds from the stored chunks (through the embedding cache).
    pub async fn flush_vectors(&self) {
        let vector = self.vector.clone();
        let _guard = self.index_lock.lock().await;
        let r = tokio::task::spawn_blocking(move || vector.save_if_dirty()).await;
        match r {
            Ok(Err(e)) => tracing::warn!(error = %e, "writing the vector index failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "vector index writer thread failed"),
            Ok(Ok(_)) => {}
        }
    }

    /// Replaces a document's chunks in both halves of the index.
    async fn index(
        &self,
        p: &Processed,
        vectors: Option<&[Vec<f32>]>,
        fallback_title: &str,
    ) -> Result<(), String> {
        let _guard = self.index_lock.lock().await;
        self.index_locked(p, vectors, fallback_title).await
    }

    /// [`Ingest::index`] for a caller that holds `index_lock`.
    async fn index_locked(
        &self,
        p: &Processed,
        vectors: Option<&[Vec<f32>]>,
        fallback_title: &str,
    ) -> Result<(), String> {
        let Some(first) = p.chunks.first() else {
            return Ok(());
        };
        let doc = first.document_id;
        let project = first.project_id.to_string();
        let title = p.title.clone().unwrap_or_else(|| fallback_title.to_owned());
        let chunks: Vec<(String, String)> = p
            .chunks
            .iter()
            .map(|c| (c.id.clone(), c.text.clone()))
            .collect();
        let vectors: Option<Vec<Vec<f32>>> = vectors.map(<[Vec<f32>]>::to_vec);
        if let Some(pg) = &self.pg {
            if vectors.is_some()
                && let Some((dims, fingerprint)) = self.model().await
            {
                pg.search.enable_vectors(dims, &fingerprint).await;
            }
            return pg
                .index_document(&doc.to_string(), &project, &title, chunks, vectors)
                .await;
        }
        let keyword = self.keyword.clone();
        let vector = self.vector.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let d = doc.to_string();
            keyword.delete_document(&d).map_err(|e| e.to_string())?;
            for (cid, text) in &chunks {
                keyword
                    .upsert_chunk(cid, &project, &d, &title, text)
                    .map_err(|e| e.to_string())?;
            }
            keyword.commit().map_err(|e| e.to_string())?;
            if let (Some(vs), Ok(ready)) = (vectors, vector.get()) {
                ready.index.delete_document(&d);
                for ((cid, _), v) in chunks.iter().zip(&vs) {
                    ready
                        .index
                        .upsert(&project, cid, v)
                        .map_err(|e| e.to_string())?;
                }
                vector.mark_dirty();
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Marks documents left `queued`/`processing` by a job that is no longer running
    /// (cancelled, dead, gone) as failed with the job's reason; returns how many.
    pub async fn fail_stale_documents(&self) -> Result<usize, Error> {
        let stale = self.store.stale_documents().await?;
        for (doc, code, message) in &stale {
            let code = code
                .clone()
                .unwrap_or_else(|| Code::JobFailed.as_str().to_owned());
            let message = message
                .clone()
                .unwrap_or_else(|| "processing stopped before it finished; reprocess it".into());
            self.store
                .fail_document(doc.id, &DocError { code, message })
                .await?;
        }
        Ok(stale.len())
    }

    /// Brings the index in line with the store (run at start by the process that owns the
    /// index): stale documents are failed ([`Ingest::fail_stale_documents`]); ready documents
    /// whose chunk count in an index half differs are re-indexed from their stored chunks;
    /// index entries of documents that no longer exist are removed. A document that stops
    /// being ready meanwhile (reprocessed) is left to its own processing.
    pub async fn check_consistency(&self) -> Result<ConsistencyReport, Error> {
        let mut report = ConsistencyReport {
            stale_failed: self.fail_stale_documents().await?,
            ..ConsistencyReport::default()
        };
        let ready = self.store.ready_documents().await?;
        report.documents = ready.len();
        let ready_ids: std::collections::HashSet<String> =
            ready.iter().map(|(id, _)| id.to_string()).collect();
        let keyword = self.keyword.clone();
        let vector = self.vector.clone();
        let pg_counts = match &self.pg {
            Some(pg) => Some((
                pg.document_counts().await.map_err(Error::internal)?,
                pg.search.vectors_on(),
            )),
            None => None,
        };
        let (mismatched, indexed) = tokio::task::spawn_blocking(move || {
            if let Some((counts, vectors_on)) = pg_counts {
                let mismatched = ready
                    .iter()
                    .filter(|(id, n)| {
                        let (k, v) = counts.get(&id.to_string()).copied().unwrap_or((0, 0));
                        k != *n as usize || (vectors_on && v != *n as usize)
                    })
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>();
                return (mismatched, counts.into_keys().collect::<Vec<_>>());
            }
            // Vector ids are `<document>:<n>` (per project); count them per document once.
            let per_doc: Option<std::collections::HashMap<String, usize>> =
                vector.loaded_or_on_disk().map(|r| {
                    let mut m = std::collections::HashMap::new();
                    for id in r.index.all_ids() {
                        if let Some((d, _)) = id.split_once(':') {
                            *m.entry(d.to_owned()).or_insert(0) += 1;
                        }
                    }
                    m
                });
            let mut mismatched = Vec::new();
            for (id, n) in &ready {
                let d = id.to_string();
                let k = keyword.count_document(&d).unwrap_or(0);
                let v_ok = per_doc
                    .as_ref()
                    .is_none_or(|m| m.get(&d).copied().unwrap_or(0) == *n as usize);
                if k != *n as usize || !v_ok {
                    mismatched.push(*id);
                }
            }
            (mismatched, keyword.documents().unwrap_or_default())
        })
        .await
        .map_err(Error::internal)?;
        for d in indexed {
            if ready_ids.contains(&d) {
                continue;
            }
            let Ok(uuid) = Uuid::parse_str(&d) else {
                continue;
            };
            if self.store.get_document(uuid).await?.is_none() {
                // Its record (or its whole project) is gone: drop it from both halves.
                self.unindex(uuid).await.map_err(Error::internal)?;
                report.orphans_removed += 1;
            }
        }
        for id in mismatched {
            let Some(doc) = self.store.get_document(id).await? else {
                continue;
            };
            let chunks = self.store.document_chunks(id).await?;
            let texts: Vec<String> = chunks
                .iter()
                .map(|c| passage_text(&doc.title, &c.text))
                .collect();
            let vectors = self
                .embed(texts, &tracing::Span::current())
                .await
                .map_err(Error::internal)?;
            // Under the index lock, only if it is still the same ready document: a reprocess
            // that started meanwhile indexes its own chunks.
            let _guard = self.index_lock.lock().await;
            let unchanged = self.store.get_document(id).await?.is_some_and(|now| {
                now.status == DocStatus::Ready && now.updated_at_ms == doc.updated_at_ms
            });
            if !unchanged {
                continue;
            }
            let processed = Processed {
                title: Some(doc.title.clone()),
                meta: doc.meta.clone(),
                language: doc.language.clone(),
                pages: Vec::new(),
                chunks,
            };
            if processed.chunks.is_empty() {
                continue;
            }
            self.index_locked(&processed, vectors.as_deref(), &doc.title)
                .await
                .map_err(Error::internal)?;
            report.reindexed += 1;
        }
        Ok(report)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ConsistencyReport {
    pub documents: usize,
    pub reindexed: usize,
    pub orphans_removed: usize,
    pub stale_failed: usize,
}

/// Where a document's title comes from.
enum Title {
    /// The source's: kept whatever the file says.
    Given(String),
    /// The file name: used when the file's metadata has none.
    Hint(String),
}

/// Normalises pages and chunks them; the texts to embed come back beside the records.
fn build(
    id: Uuid,
    project: Uuid,
    title: &Title,
    extracted: Extracted,
    params: ChunkParams,
    count: &dyn Fn(&str) -> usize,
) -> Result<(Processed, Vec<String>), Failed> {
    let pages: Vec<PageText> = extracted
        .pages
        .into_iter()
        .map(|p| {
            let n = bunko_core::text::normalise(&p.text);
            PageText {
                page: p.page,
                offsets: n.breakpoints(),
                text: n.text,
                raw: p.text,
                method: p.method,
                confidence: p.confidence,
            }
        })
        .collect();
    let (text, starts) = join_pages(pages.iter().map(|p| (p.page, p.text.as_str())));
    let chunks = chunk_document(&text, &starts, params, count);
    if chunks.is_empty() {
        return Err(Failed::Document(DocError::new(
            Code::DocumentEmpty,
            "no text was left after normalisation",
        )));
    }
    let mut meta = extracted.meta;
    // Identifiers printed on the first pages (a paper's DOI or arXiv id), unless the file's
    // metadata (or a crawler) already gave them.
    let front = pages
        .iter()
        .take(2)
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if meta.doi.is_none() {
        meta.doi = bunko_core::documents::find_doi(&front);
    }
    if meta.arxiv_id.is_none() {
        meta.arxiv_id = bunko_core::documents::find_arxiv_id(&front);
    }
    let title = match title {
        Title::Given(t) => t.clone(),
        Title::Hint(hint) => meta
            .title
            .clone()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| hint.clone()),
    };
    // The document's language: the one most of its characters are in.
    let mut by_lang: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in &chunks {
        *by_lang.entry(c.language).or_default() += c.text.len();
    }
    let language = by_lang
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(l, _)| l.to_owned());
    let records: Vec<ChunkRecord> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| ChunkRecord {
            id: format!("{id}:{i}"),
            document_id: id,
            project_id: project,
            ord: i as u32,
            content_hash: hex::encode(Sha256::digest(c.text.as_bytes())),
            text: c.text,
            page_start: c.page_start,
            page_end: c.page_end,
            char_start: c.char_start as u32,
            char_end: c.char_end as u32,
            section_path: c.section_path,
            language: c.language.to_owned(),
            is_references: c.is_references,
        })
        .collect();
    let texts = records
        .iter()
        .map(|c| passage_text(&title, &c.text))
        .collect();
    Ok((
        Processed {
            title: Some(title),
            meta,
            language,
            pages,
            chunks: records,
        },
        texts,
    ))
}

/// The `document.process` job.
pub struct ProcessDocument(pub Arc<Ingest>);

#[async_trait::async_trait]
impl JobHandler for ProcessDocument {
    async fn run(&self, ctx: JobContext) -> Result<Option<serde_json::Value>, JobFailure> {
        let id = ctx
            .job
            .payload
            .get("document_id")
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                JobFailure::permanent(Code::InvalidInput, "payload needs {\"document_id\": UUID}")
            })?;
        self.0.process(id, &ctx.job, &ctx.cancel).await
    }
}

/// Where the blob store lives in a data dir.
pub fn blobs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("blobs")
}

/// Removes staged uploads a crash left behind (older than a day), at start.
pub fn sweep_staging(blobs: &bunko_store::blobs::LocalBlobs) {
    let n = blobs.sweep_staging(Duration::from_secs(86_400));
    if n > 0 {
        tracing::info!(removed = n, "removed stale staged uploads");
    }
}

/// One processing stage of one document: timed into
/// `bunko_ingest_stage_duration_seconds{stage}`, and a span (a child of the job's).
struct Stage {
    name: &'static str,
    started: Instant,
    span: tracing::Span,
}

impl Stage {
    fn begin(name: &'static str, document: Uuid) -> Self {
        Self {
            name,
            started: Instant::now(),
            span: tracing::info_span!(
                "ingest.stage",
                otel.name = %format_args!("ingest {name}"),
                stage = name,
                document = %document,
            ),
        }
    }

    fn end(self, metrics: &Metrics) {
        metrics
            .ingest_stage_duration
            .with_label_values(&[self.name])
            .observe(self.started.elapsed().as_secs_f64());
    }
}
