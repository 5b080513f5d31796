//! The `source.crawl` job: one source crawled from its cursor. Each listing page's items are
//! taken in (new and changed ones fetched, stored, processed like uploads; unchanged ones
//! skipped by their hash, so nothing is fetched or embedded twice), then the cursor is saved —
//! a crawl killed midway resumes at the page it was on, and the items it had already taken
//! are skipped. Network trouble and a busy source (429/503 beyond `crawl.max_retry_wait_secs`)
//! fail the job as retryable: the queue backs off and the next attempt resumes from the
//! cursor. A refused address or a response that is not the source's format fails it for good
//! with the reason.

use crate::ingest::{Ingest, Staged};
use bunko_core::documents::NewOrigin;
use bunko_core::jobs::{JobContext, JobFailure, JobHandler, NewJob};
use bunko_core::ports::MetaStore;
use bunko_core::sources::{CrawlStats, Source, SourceDef, SourceKind};
use bunko_core::{Code, Error};
use bunko_ingest::crawl::{self, Content, CrawlError, FetchConfig, Fetcher, Item, NetPolicy};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const KIND: &str = "source.crawl";
/// Crawls wait on other servers; they have their own queue so documents keep moving.
pub const QUEUE: &str = "crawl";

pub struct CrawlJob(pub Arc<Ingest>);

#[async_trait::async_trait]
impl JobHandler for CrawlJob {
    async fn run(&self, ctx: JobContext) -> Result<Option<Value>, JobFailure> {
        let Some(name) = ctx.job.payload.get("source").and_then(Value::as_str) else {
            return Err(JobFailure::permanent(
                Code::InvalidInput,
                "payload needs {\"source\": NAME}",
            ));
        };
        let stats = crawl(&self.0, name, Some(ctx.job.id), &ctx.cancel).await?;
        Ok(serde_json::to_value(&stats).ok())
    }
}

/// Enqueues a crawl of `name` now (the API's and CLI's "crawl now"); 404 for an unknown
/// source. Two requests while one is queued are one crawl.
pub async fn enqueue(store: &dyn MetaStore, name: &str) -> Result<Uuid, Error> {
    if store.get_source(name).await?.is_none() {
        return Err(Error::not_found("source", name));
    }
    let mut job = NewJob::new(QUEUE, KIND, json!({ "source": name }));
    job.max_attempts = 5;
    job.idempotency_key = Some(format!("crawl:{name}:{}", bunko_core::ids::now_ms() / 1000));
    Ok(store.enqueue(job).await?.id)
}

/// The fetch settings from `[crawl]`.
pub fn fetch_config(c: &bunko_core::config::CrawlConfig) -> FetchConfig {
    FetchConfig {
        policy: NetPolicy {
            allow_hosts: c.allow_hosts.clone(),
            allow_private: c.allow_private_networks,
        },
        user_agent: c.user_agent.clone(),
        timeout: Duration::from_secs(c.timeout_secs),
        max_bytes: c.max_response_bytes,
        max_retry_wait: Duration::from_secs(c.max_retry_wait_secs),
        proxy: c.proxy.clone(),
    }
}

fn failure(e: &CrawlError) -> JobFailure {
    match e {
        CrawlError::Refused(m) => JobFailure::permanent(Code::SourceRefused, m.clone()),
        e @ CrawlError::Disallowed(_) => JobFailure::permanent(Code::SourceRefused, e.to_string()),
        e if e.retryable() => JobFailure::retryable(Code::SourceFailed, e.to_string()),
        e => JobFailure::permanent(Code::SourceFailed, e.to_string()),
    }
}

fn store_failure(e: impl std::fmt::Display) -> JobFailure {
    JobFailure::retryable(Code::Unavailable, format!("storage: {e}"))
}

/// Crawls one source now, in this task. The outcome is recorded on the source either way.
pub async fn crawl(
    ingest: &Ingest,
    name: &str,
    job: Option<Uuid>,
    cancel: &CancellationToken,
) -> Result<CrawlStats, JobFailure> {
    let store = ingest.store.as_ref();
    let Some(source) = store.get_source(name).await.map_err(store_failure)? else {
        return Err(JobFailure::permanent(
            Code::NotFound,
            format!("no source named `{name}`"),
        ));
    };
    let mut run = Run {
        ingest,
        source: &source,
        project: Uuid::nil(),
        stats: CrawlStats::default(),
        today: crawl::today(),
        fetcher: None,
    };
    let result = run.go(job, cancel).await;
    if let Some(f) = &run.fetcher {
        run.stats.requests += f.requests.load(std::sync::atomic::Ordering::Relaxed);
    }
    let m = &ingest.metrics;
    for (outcome, n) in [
        ("added", run.stats.added),
        ("unchanged", run.stats.unchanged),
        ("failed", run.stats.failed),
        ("deleted", run.stats.deleted),
    ] {
        m.crawl_items
            .with_label_values(&[name, outcome])
            .inc_by(u64::from(n));
    }
    m.crawl_requests
        .with_label_values(&[name])
        .inc_by(u64::from(run.stats.requests));
    let error = result
        .as_ref()
        .err()
        .map(|e| format!("{}: {}", e.code, e.message));
    if let Err(e) = store
        .finish_crawl(name, job, &run.stats, error.as_deref())
        .await
    {
        tracing::warn!(source = name, error = %e, "could not record the crawl's outcome");
    }
    m.crawl_runs
        .with_label_values(&[name, if error.is_some() { "failed" } else { "ok" }])
        .inc();
    match result {
        Ok(()) => {
            tracing::info!(source = name, stats = ?run.stats, "crawl finished");
            Ok(run.stats)
        }
        Err(e) => {
            tracing::warn!(source = name, code = e.code, error = e.message, stats = ?run.stats, "crawl stopped");
            Err(e)
        }
    }
}

struct Run<'a> {
    ingest: &'a Ingest,
    source: &'a Source,
    project: Uuid,
    stats: CrawlStats,
    today: String,
    fetcher: Option<Fetcher>,
}

impl Run<'_> {
    fn def(&self) -> &SourceDef {
        &self.source.def
    }

    async fn go(
        &mut self,
        job: Option<Uuid>,
        cancel: &CancellationToken,
    ) -> Result<(), JobFailure> {
        let def = self.source.def.clone();
        if !def.enabled {
            tracing::info!(source = def.name, "source is disabled; nothing crawled");
            return Ok(());
        }
        self.ingest
            .config
            .crawl
            .check_source(&def)
            .map_err(|e| JobFailure::permanent(e.code, e.detail))?;
        let project = self
            .ingest
            .store
            .get_project(&def.project)
            .await
            .map_err(store_failure)?
            .ok_or_else(|| {
                JobFailure::permanent(
                    Code::NotFound,
                    format!("source `{}`: no project `{}`", def.name, def.project),
                )
            })?;
        self.project = project.id;
        tracing::info!(
            source = def.name,
            kind = def.kind.as_str(),
            ?job,
            "crawl started"
        );
        if def.kind == SourceKind::Folder {
            return self.folder(cancel).await;
        }
        self.fetcher = Some(
            Fetcher::new(fetch_config(&self.ingest.config.crawl), &def).map_err(|e| failure(&e))?,
        );
        let mut cursor = self.source.cursor.clone();
        loop {
            if cancel.is_cancelled() {
                return Err(JobFailure::retryable(
                    Code::Unavailable,
                    "cancelled; resumes from the cursor",
                ));
            }
            let Some(fetcher) = self.fetcher.as_ref() else {
                return Err(JobFailure::permanent(Code::Internal, "no fetcher"));
            };
            let page = crawl::list_page(&def, fetcher, &cursor)
                .await
                .map_err(|e| failure(&e))?;
            self.stats.seen += page.items.len() as u32;
            for item in &page.items {
                if cancel.is_cancelled() {
                    return Err(JobFailure::retryable(
                        Code::Unavailable,
                        "cancelled; resumes from the cursor",
                    ));
                }
                if self.stats.added >= def.max_items {
                    // The cursor stays at this page: the next crawl lists it again and skips
                    // what was taken.
                    self.stats.more = true;
                    return Ok(());
                }
                self.take(item).await?;
            }
            cursor = page.cursor;
            self.ingest
                .store
                .save_source_cursor(&def.name, &cursor)
                .await
                .map_err(store_failure)?;
            if !page.more {
                return Ok(());
            }
            if self.stats.added >= def.max_items {
                self.stats.more = true;
                return Ok(());
            }
        }
    }

    async fn folder(&mut self, cancel: &CancellationToken) -> Result<(), JobFailure> {
        let def = self.def().clone();
        let max = self.ingest.config.crawl.folder_max_files;
        let items = tokio::task::spawn_blocking(move || crawl::folder::scan(&def, max))
            .await
            .map_err(|e| JobFailure::retryable(Code::Internal, e.to_string()))?
            .map_err(|e| JobFailure::permanent(Code::SourceFailed, e.to_string()))?;
        self.stats.seen = items.len() as u32;
        for item in &items {
            if cancel.is_cancelled() {
                return Err(JobFailure::retryable(Code::Unavailable, "cancelled"));
            }
            if self.stats.added >= self.def().max_items {
                self.stats.more = true;
                break;
            }
            self.take(item).await?;
        }
        if self.def().delete_missing && !self.stats.more {
            let present: std::collections::HashSet<&str> =
                items.iter().map(|i| i.key.as_str()).collect();
            let known = self
                .ingest
                .store
                .source_items(&self.def().name)
                .await
                .map_err(store_failure)?;
            for gone in known.iter().filter(|k| !present.contains(k.key.as_str())) {
                let external = crawl::folder::external_id(&self.def().name, &gone.key);
                let versions = self
                    .ingest
                    .store
                    .document_versions(self.project, &external)
                    .await
                    .map_err(store_failure)?;
                for doc in versions {
                    self.ingest
                        .delete(&doc)
                        .await
                        .map_err(|e| store_failure(e.detail))?;
                    self.stats.deleted += 1;
                }
                self.ingest
                    .store
                    .forget_source_item(&self.def().name, &gone.key)
                    .await
                    .map_err(store_failure)?;
            }
        }
        Ok(())
    }

    /// Takes one item in, unless it is unchanged. A problem with the item alone (a missing
    /// file, an unsupported type) is counted and logged; trouble with the source stops the
    /// crawl.
    async fn take(&mut self, item: &Item) -> Result<(), JobFailure> {
        let store = self.ingest.store.as_ref();
        let name = self.def().name.clone();
        let prev = store
            .source_item(&name, &item.key)
            .await
            .map_err(store_failure)?;
        if prev.as_ref().is_some_and(|p| p.content_hash == item.hash) {
            self.stats.unchanged += 1;
            return Ok(());
        }
        let staged = match self.materialise(item).await {
            Ok(s) => s,
            Err(Taken::Stop(f)) => return Err(f),
            Err(Taken::Skip(reason)) => {
                tracing::warn!(source = name, item = item.key, reason, "item not taken in");
                self.stats.failed += 1;
                return Ok(());
            }
        };
        let external = item
            .external_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}:{}", self.def().kind.as_str(), name, item.key));
        let origin = NewOrigin {
            external_id: external.clone(),
            version: item.version.clone(),
            valid_from: item.valid_from.clone(),
            title: Some(item.title.clone()),
            meta: item.meta.clone(),
        };
        let tags = self.def().tags.clone();
        let added = match self
            .ingest
            .add_with_origin(self.project, staged, &name, None, &tags, Some(origin))
            .await
        {
            Ok(a) => a,
            Err(e) if e.code.status() < 500 => {
                tracing::warn!(source = name, item = item.key, error = %e, "item not taken in");
                self.stats.failed += 1;
                return Ok(());
            }
            Err(e) => return Err(store_failure(e.detail)),
        };
        if !added.duplicate {
            self.stats.added += 1;
            if prev.is_some()
                || store
                    .document_versions(self.project, &external)
                    .await
                    .map_err(store_failure)?
                    .len()
                    > 1
            {
                self.stats.versions += 1;
            }
        } else {
            self.stats.unchanged += 1;
        }
        store
            .put_source_item(&name, &item.key, &item.hash, Some(added.document.id))
            .await
            .map_err(store_failure)?;
        store
            .refresh_versions(self.project, &external, &self.today)
            .await
            .map_err(store_failure)?;
        Ok(())
    }

    async fn materialise(&self, item: &Item) -> Result<Staged, Taken> {
        let stage_err = |e: Error| {
            if e.code.status() >= 500 {
                Taken::Stop(store_failure(e.detail))
            } else {
                Taken::Skip(e.detail)
            }
        };
        match &item.content {
            Content::Inline { filename, text } => self
                .ingest
                .stage_bytes(filename, text.as_bytes())
                .await
                .map_err(stage_err),
            Content::Path(p) => self.ingest.stage_path(p).await.map_err(stage_err),
            Content::Fetch { url, filename } | Content::EgovLaw { url, filename } => {
                let Some(fetcher) = self.fetcher.as_ref() else {
                    return Err(Taken::Skip(
                        "this source fetches nothing over the network".into(),
                    ));
                };
                let got = fetcher.get(url, (None, None)).await.map_err(|e| match &e {
                    e if e.retryable() => Taken::Stop(failure(e)),
                    e => Taken::Skip(e.to_string()),
                })?;
                let bytes = match &item.content {
                    Content::EgovLaw { .. } => crawl::egov::law_data_text(url, &got.body)
                        .map_err(|e| Taken::Skip(e.to_string()))?
                        .into_bytes(),
                    _ => got.body,
                };
                self.ingest
                    .stage_bytes(filename, &bytes)
                    .await
                    .map_err(stage_err)
            }
        }
    }
}

enum Taken {
    /// Count the item as failed and go on.
    Skip(String),
    /// Stop the crawl (retried later from the cursor).
    Stop(JobFailure),
}
