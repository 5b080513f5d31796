//! Wiring: the data directory, the store, metrics, the worker, and the HTTP stack around the
//! routes. Nothing here knows a route's logic.

use crate::cli::CliError;
use crate::http::auth;
use crate::http::middleware::{capture_route, panic_response, request_context};
use crate::routes;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use bunko_core::accounts::Accounts;
use bunko_core::auth::{PasswordCost, TokenSigner};
use bunko_core::config::{Config, Mode};
use bunko_core::jobs::{Registry, Worker, WorkerConfig};
use bunko_core::limits::{InProcessLimiter, InProcessThrottle, RateLimiter};
use bunko_core::metrics::Metrics;
use bunko_core::ports::MetaStore;
use bunko_core::secret::Secret;
use bunko_core::tasks::Tasks;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = match option_env!("BUNKO_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Subdirectories of the data dir.
pub const DATA_SUBDIRS: &[&str] = &["index", "blobs", "models", "backups"];

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn MetaStore>,
    pub accounts: Arc<Accounts>,
    pub limiter: Arc<dyn RateLimiter>,
    /// The keyword half of search (`<data_dir>/index/keyword`).
    pub keyword: Arc<bunko_index::keyword::KeywordIndex>,
    /// The vector half (`<data_dir>/index/vector` + the configured embedder), loaded lazily.
    pub vector: Arc<crate::embedder::VectorHalf>,
    /// The search index in PostgreSQL (`search.backend = "postgres"`); the two halves above
    /// are then not used for documents.
    pub pg_index: Option<Arc<crate::pgindex::PgIndex>>,
    /// Whether this process holds the search index's writer (and so processes documents).
    pub owns_index: bool,
    /// Documents: staging, processing, deletion (shared by routes, CLI and the job).
    pub ingest: Arc<crate::ingest::Ingest>,
    /// Searches running at once (one per core); beyond that, 503 with Retry-After.
    pub search_permits: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<Metrics>,
    /// The LLM gateway: model aliases, providers, cache and accounting.
    pub gateway: Arc<crate::gateway::GatewayService>,
    pub registry: Arc<Registry>,
    pub worker: Option<Arc<Worker>>,
    pub tasks: Tasks,
    pub started: Instant,
    draining: AtomicBool,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Ends a command's runtime (not `serve`'s drain): background tasks stop, running jobs are
    /// given back to the queue, the gateway writes its usage ledger, the vector index is
    /// written if it changed, the store is closed.
    pub async fn stop(&self) {
        self.tasks.begin_shutdown();
        if let Some(w) = &self.worker {
            w.hard_stop();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        self.ingest.flush_vectors().await;
        self.store.close().await;
    }
}

impl Inner {
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Creates the data dir and its layout, and proves it is writable.
pub fn prepare_data_dir(dir: &Path) -> Result<(), CliError> {
    let fail = |what: &str, e: std::io::Error| {
        CliError::failure(format!("data dir {} {what}: {e}", dir.display()))
            .hint("choose a writable directory with --data-dir DIR (or data_dir in bunko.toml)")
    };
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot be created", e))?;
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail("cannot be restricted to its owner", e))?;
    }
    for sub in DATA_SUBDIRS {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| fail(&format!("has no usable {sub}/"), e))?;
    }
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok").map_err(|e| fail("is not writable", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Opens the store of a prepared data dir, mapping failures to one clear CLI error.
pub async fn open_store(config: &Config) -> Result<Arc<dyn MetaStore>, CliError> {
    Ok(open_store_parts(config).await?.0)
}

/// [`open_store`], and the PostgreSQL store itself when the database is PostgreSQL (for
/// [`open_postgres_index`], which shares its pool).
pub async fn open_store_parts(
    config: &Config,
) -> Result<
    (
        Arc<dyn MetaStore>,
        Option<Arc<bunko_store::postgres::PgStore>>,
    ),
    CliError,
> {
    bunko_store::open_parts(&config.database_url(), config.database.max_connections)
        .await
        .map_err(|e| {
            CliError::failure(e.to_string()).hint("bunko never recreates a database it cannot read")
        })
}

/// The vector half at start. With no vectors in the data dir, nothing happens (the model is
/// never loaded). Vectors made by another model than the configured one are reported with the
/// fix, without loading the model (they are never mixed; vector search reports itself
/// unavailable until the rebuild). Otherwise the model and the graph load on a background
/// thread, so the first search does not pay for them (a search arriving meanwhile waits for
/// the same load).
fn start_vector_half(config: &Config, vector: &Arc<crate::embedder::VectorHalf>) {
    let Some(spec) = bunko_core::models::find(&config.local.embedder) else {
        return;
    };
    let dir = config.data_dir.join("index").join("vector");
    let Some(stored) = bunko_index::vector::stored_fingerprint(&dir) else {
        return;
    };
    let configured = spec.fingerprint();
    if stored != configured {
        tracing::error!(
            stored = %stored,
            configured = %configured,
            model = spec.name,
            "the vector index was built with another embedding model; run `bunko index rebuild`"
        );
        return;
    }
    let vector = vector.clone();
    let spawned = std::thread::Builder::new()
        .name("vector-warm-up".into())
        .spawn(move || {
            if let Err(e) = vector.get() {
                tracing::warn!(reason = %e.0, "vector search is unavailable");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the vector warm-up thread; loading on first use");
    }
}

/// Everything a serving or working process holds.
pub struct Runtime {
    pub state: AppState,
    /// Set when this start created the first administrator: (email, one-time password).
    pub new_admin: Option<(String, String)>,
}

/// The start-up consistency check between the store and the search index, then every ten
/// minutes the sweep for documents whose job stopped (cancelled, dead) without finishing them.
fn check_index(ingest: Arc<crate::ingest::Ingest>, tasks: &Tasks) {
    let stop = tasks.shutdown_token();
    // The vector index is written every few seconds while it changes, and at shutdown.
    let flusher = ingest.clone();
    let flush_stop = tasks.shutdown_token();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = flush_stop.cancelled() => break,
                _ = tick.tick() => flusher.flush_vectors().await,
            }
        }
        flusher.flush_vectors().await;
    });
    tasks.spawn(async move {
        match ingest.check_consistency().await {
            Ok(r) if r.reindexed + r.orphans_removed + r.stale_failed > 0 => tracing::warn!(
                documents = r.documents,
                reindexed = r.reindexed,
                orphans_removed = r.orphans_removed,
                stale_failed = r.stale_failed,
                "search index repaired to match the database"
            ),
            Ok(r) => tracing::debug!(documents = r.documents, "search index matches the database"),
            Err(e) => tracing::warn!(error = %e, "index consistency check failed"),
        }
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => match ingest.fail_stale_documents().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(documents = n, "documents whose processing stopped were marked failed"),
                    Err(e) => tracing::warn!(error = %e, "sweeping stopped documents failed"),
                },
            }
        }
    });
}

/// The access-token signing key: from configuration, or in development a random key made
/// once and kept in `<data_dir>/jwt-secret` (0600).
fn signing_key(config: &Config) -> Result<TokenSigner, CliError> {
    let key = match &config.auth.jwt_secret {
        Some(k) => k.clone(),
        None if config.mode == Mode::Development => {
            let path = config.data_dir.join("jwt-secret");
            match std::fs::read_to_string(&path) {
                Ok(k) => Secret::new(k.trim()),
                Err(_) => {
                    let k = hex::encode(bunko_core::ids::random_bytes::<32>());
                    auth::write_private(&path, &k).map_err(|e| {
                        CliError::failure(format!("cannot write {}: {e}", path.display()))
                    })?;
                    tracing::warn!(path = %path.display(), "development mode: generated an access-token signing key");
                    Secret::new(k)
                }
            }
        }
        None => {
            return Err(
                CliError::usage("production mode needs auth.jwt_secret_file")
                    .hint("see docs/operations/configuration.md"),
            );
        }
    };
    TokenSigner::new(key).map_err(|e| CliError::usage(format!("auth.jwt_secret: {e}")))
}

/// Makes the first administrator when there is none, and leaves its password for the operator.
async fn bootstrap_admin(
    config: &Config,
    accounts: &Accounts,
) -> Result<Option<(String, String)>, CliError> {
    let made = accounts
        .ensure_bootstrap_admin(&config.auth.bootstrap_admin_email)
        .await
        .map_err(|e| {
            CliError::failure(format!(
                "cannot create the first administrator: {}",
                e.detail
            ))
        })?;
    let Some((user, password)) = made else {
        return Ok(None);
    };
    let path = config.data_dir.join(auth::ADMIN_PASSWORD_FILE);
    auth::write_private(
        &path,
        &format!("email: {}\npassword: {password}\n", user.email),
    )
    .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))?;
    tracing::info!(
        email = %user.email,
        path = %path.display(),
        "created the first administrator; the one-time password is in this file (mode 0600)"
    );
    Ok(Some((user.email, password)))
}

/// Enqueues the daily maintenance jobs, `audit.prune` and `maintenance.cleanup`, and the hourly
/// `maintenance.selfcheck` (idempotent per day / hour, so several processes enqueue one).
fn daily_maintenance(store: Arc<dyn MetaStore>, tasks: &Tasks) {
    let stop = tasks.shutdown_token();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    // One job per period (the key names it): daily, and the self-check hourly.
                    let now = jiff::Timestamp::now();
                    for (queue, kind, period) in [
                        ("default", "audit.prune", "%Y-%m-%d"),
                        (crate::maintenance::QUEUE, crate::maintenance::KIND, "%Y-%m-%d"),
                        (crate::autosummary::DIGEST_QUEUE, crate::autosummary::DIGEST_KIND, "%Y-%m-%d"),
                        (crate::selfcheck::QUEUE, crate::selfcheck::KIND, "%Y-%m-%dT%H"),
                    ] {
                        let mut job = bunko_core::jobs::NewJob::new(queue, kind, serde_json::json!({}));
                        job.idempotency_key = Some(format!("{kind}:{}", now.strftime(period)));
                        if let Err(e) = store.enqueue(job).await {
                            tracing::warn!(error = %e, kind, "enqueuing maintenance failed");
                        }
                    }
                }
            }
        }
    });
}

/// The account service over a store (the server and the CLI's account commands).
pub fn build_accounts(config: &Config, store: &Arc<dyn MetaStore>) -> Result<Accounts, CliError> {
    build_accounts_with(config, store, Arc::new(InProcessThrottle::default()))
}

/// [`build_accounts`] with the lock-out bookkeeping given (Redis-backed with replicas).
pub fn build_accounts_with(
    config: &Config,
    store: &Arc<dyn MetaStore>,
    throttle: Arc<dyn bunko_core::limits::LoginThrottle>,
) -> Result<Accounts, CliError> {
    let cost = PasswordCost {
        m_kib: config.auth.password_memory_kib,
        t: config.auth.password_iterations,
        p: 1,
    };
    Ok(Accounts::new(
        store.clone(),
        signing_key(config)?,
        cost,
        throttle,
    ))
}

/// The Japanese word analyzer, built from `search.japanese_dictionary` on first use and
/// cached; `None` (logged, with the reason) when it is turned off or cannot be built — search
/// then analyses Japanese by character bigrams alone.
pub fn japanese_morphology(config: &Config) -> Option<Arc<bunko_index::morph::Morphology>> {
    let source = &config.search.japanese_dictionary;
    if source.as_os_str().is_empty() {
        tracing::info!(
            "search.japanese_dictionary is empty: Japanese is searched by character bigrams only"
        );
        return None;
    }
    let cache = if config.search.dictionary_cache.as_os_str().is_empty() {
        bunko_index::morph::cache_dir(&config.data_dir)
    } else {
        config.search.dictionary_cache.clone()
    };
    let started = std::time::Instant::now();
    match bunko_index::morph::Morphology::prepare(source, &cache) {
        Ok(m) => {
            tracing::info!(
                dictionary = m.name(),
                ms = started.elapsed().as_millis() as u64,
                "Japanese word analysis on"
            );
            Some(m)
        }
        Err(e) => {
            tracing::warn!(error = %e, "Japanese is searched by character bigrams only");
            None
        }
    }
}

/// The data dir's keyword index, with the Japanese word analyzer when there is one. One made
/// by another version of bunko is moved aside (the start-up check refills it).
pub fn open_keyword_index(config: &Config) -> Result<bunko_index::keyword::KeywordIndex, CliError> {
    open_keyword_index_with(config, japanese_morphology(config))
}

/// [`open_keyword_index`] with a dictionary already prepared (or none).
pub fn open_keyword_index_with(
    config: &Config,
    morph: Option<Arc<bunko_index::morph::Morphology>>,
) -> Result<bunko_index::keyword::KeywordIndex, CliError> {
    let (keyword, replaced) = bunko_index::keyword::KeywordIndex::open_or_replace(
        &config.data_dir.join("index").join("keyword"),
    )
    .map_err(|e| {
        CliError::failure(e.to_string())
            .hint("the index is derived data: move it away and run `bunko index rebuild`")
    })?;
    if replaced {
        tracing::warn!(
            "the keyword index was made by another version; moved it to index/keyword.old and refilling it from the database"
        );
    }
    Ok(match morph {
        Some(m) => {
            let (keyword, warning) = keyword.with_morphology(m);
            if let Some(w) = warning {
                tracing::warn!("{w}");
            }
            keyword
        }
        None => keyword,
    })
}

/// The blob store the configuration names: the data dir's `blobs/` or an S3 bucket (checked
/// at start: a wrong endpoint, bucket or key stops bunko with S3's answer). Stale staged
/// uploads (and downloaded copies) are swept first.
pub async fn open_blobs(
    config: &Config,
) -> Result<
    (
        Arc<dyn bunko_core::documents::BlobStore>,
        Option<Arc<bunko_store::s3::S3Blobs>>,
    ),
    CliError,
> {
    let Some((bucket, prefix)) = config.blobs.s3_location() else {
        let local =
            bunko_store::blobs::LocalBlobs::open(&crate::ingest::blobs_dir(&config.data_dir))
                .map_err(|e| CliError::failure(format!("blob store: {e}")))?;
        crate::ingest::sweep_staging(&local);
        return Ok((Arc::new(local), None));
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = bunko_store::s3::http_client().map_err(|e| CliError::failure(e.to_string()))?;
    let cfg = bunko_store::s3::S3Config {
        bucket,
        prefix,
        region: config.blobs.region.clone(),
        endpoint: config.blobs.endpoint.clone(),
        access_key_id: config.blobs.access_key_id.clone().unwrap_or_default(),
        secret_access_key: config
            .blobs
            .secret_access_key
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default(),
    };
    let s3 = bunko_store::s3::S3Blobs::open(cfg, &config.data_dir.join("blob-cache"), http)
        .await
        .map_err(|e| {
            CliError::failure(format!("blob store: {e}"))
                .hint("check blobs.url, blobs.endpoint, blobs.region and the access keys")
        })?;
    let n = s3.sweep_local(Duration::from_secs(86_400));
    if n > 0 {
        tracing::info!(
            removed = n,
            "removed stale staged uploads and downloaded copies"
        );
    }
    let s3 = Arc::new(s3);
    Ok((s3.clone(), Some(s3)))
}

/// Rate limits, lock-outs and the answer cache in Redis when `redis.url` is set (checked at
/// start: a wrong URL or password stops bunko with the reason).
pub async fn open_shared_state(
    config: &Config,
) -> Result<Option<Arc<bunko_store::shared::RedisState>>, CliError> {
    let Some(url) = &config.redis.url else {
        return Ok(None);
    };
    let ca = match &config.redis.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            CliError::failure(format!("redis.ca_file {}: {e}", path.display()))
                .hint("point redis.ca_file at the PEM certificate of the CA that signed Redis's")
        })?),
        None => None,
    };
    bunko_store::shared::RedisState::connect_with_ca(url.expose(), &config.redis.prefix, ca)
        .await
        .map(|r| Some(Arc::new(r)))
        .map_err(|e| {
            CliError::failure(format!("{e} ({})", url.redacted()))
                .hint("check redis.url (host, port, password)")
        })
}

/// The search index in PostgreSQL when `search.backend = "postgres"` (its tables are made
/// when missing), on the store's pool.
pub async fn open_postgres_index(
    config: &Config,
    store: Option<&bunko_store::postgres::PgStore>,
    morph: Option<Arc<bunko_index::morph::Morphology>>,
) -> Result<Option<Arc<crate::pgindex::PgIndex>>, CliError> {
    if config.search.backend != "postgres" {
        return Ok(None);
    }
    let Some(store) = store else {
        return Err(CliError::failure(
            "search.backend = \"postgres\" needs database.url = \"postgres://…\"",
        ));
    };
    crate::pgindex::PgIndex::open(store, morph)
        .await
        .map(|p| {
            p.search.set_candidate_rows(config.search.pg_candidate_rows);
            Some(Arc::new(p))
        })
        .map_err(CliError::failure)
}

impl Runtime {
    pub async fn start(config: Config, run_worker: bool) -> Result<Runtime, CliError> {
        prepare_data_dir(&config.data_dir)?;
        let (store, pg_store) = open_store_parts(&config).await?;
        let shared = open_shared_state(&config).await?;
        let accounts = Arc::new(match &shared {
            Some(r) => build_accounts_with(&config, &store, r.clone())?,
            None => build_accounts(&config, &store)?,
        });
        let new_admin = bootstrap_admin(&config, &accounts).await?;
        let morph = japanese_morphology(&config);
        let keyword = Arc::new(open_keyword_index_with(&config, morph.clone())?);
        let pg_index = open_postgres_index(&config, pg_store.as_deref(), morph).await?;
        // The process that processes documents owns the embedded index's single writer. A
        // second worker on the same data dir runs every other queue, but not `ingest`. With
        // the index in PostgreSQL every worker processes documents.
        let owns_index = run_worker
            && (pg_index.is_some()
                || match keyword.take_writer() {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "another bunko process owns this data dir's search index: this worker leaves documents (queue `ingest`) to it"
                        );
                        false
                    }
                });
        let (blobs, s3) = open_blobs(&config).await?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let metrics = Arc::new(Metrics::new(VERSION, COMMIT));
        let mut registry = Registry::builtin();
        registry.register(
            "audit.prune",
            "default",
            Arc::new(bunko_core::accounts::AuditPrune {
                store: store.clone(),
                retention_days: config.auth.audit_retention_days,
            }),
        );
        registry.register(
            crate::backup::KIND,
            crate::backup::QUEUE,
            Arc::new(crate::backup::BackupJob {
                store: store.clone(),
                config: config.clone(),
            }),
        );
        registry.register(
            crate::maintenance::KIND,
            crate::maintenance::QUEUE,
            Arc::new(crate::maintenance::Cleanup {
                store: store.clone(),
                blobs_dir: crate::ingest::blobs_dir(&config.data_dir),
                s3,
                job_retention_days: config.jobs.retention_days,
                ledger_detail_days: config.gateway.ledger_detail_days,
            }),
        );
        let vector = Arc::new(crate::embedder::VectorHalf::new(&config));
        let ingest = Arc::new(
            crate::ingest::Ingest::new(
                store.clone(),
                blobs,
                keyword.clone(),
                vector.clone(),
                config.clone(),
                metrics.clone(),
            )
            .with_postgres_index(pg_index.clone()),
        );
        registry.register(
            crate::ingest::PROCESS_KIND,
            crate::ingest::QUEUE,
            Arc::new(crate::ingest::ProcessDocument(ingest.clone())),
        );
        registry.register(
            crate::crawl::KIND,
            crate::crawl::QUEUE,
            Arc::new(crate::crawl::CrawlJob(ingest.clone())),
        );
        registry.register(
            crate::autosummary::DIGEST_KIND,
            crate::autosummary::DIGEST_QUEUE,
            Arc::new(crate::autosummary::Digest(ingest.clone())),
        );
        let tasks = Tasks::new();
        let gateway = Arc::new(
            crate::gateway::GatewayService::start(
                &config,
                metrics.clone(),
                store.clone(),
                // Shared through Redis when configured; in-process otherwise.
                match &shared {
                    Some(r) => r.clone() as Arc<dyn bunko_core::cache::Cache>,
                    None => Arc::new(bunko_core::cache::MemoryCache::new(
                        config.gateway.cache_entries,
                    )),
                },
                shared
                    .clone()
                    .map(|r| r as Arc<dyn bunko_core::limits::QuotaCounters>),
                &tasks,
            )
            .await
            .map_err(|e| CliError::failure(format!("gateway: {e}")))?,
        );
        registry.register(
            crate::summary::KIND,
            crate::summary::QUEUE,
            Arc::new(crate::summary::Summarize {
                store: store.clone(),
                gateway: gateway.clone(),
                config: config.rag.clone(),
            }),
        );
        registry.register(
            crate::selfcheck::KIND,
            crate::selfcheck::QUEUE,
            Arc::new(crate::selfcheck::SelfCheck {
                store: store.clone(),
                keyword: keyword.clone(),
                pg_index: pg_index.clone(),
                gateway: gateway.clone(),
                config: config.clone(),
            }),
        );
        let registry = Arc::new(registry);
        let worker = run_worker.then(|| {
            let mut wc = WorkerConfig::from_config(&config, &registry);
            if !owns_index {
                wc.queues.retain(|(q, _)| q != crate::ingest::QUEUE);
            }
            let w = Worker::new(store.clone(), registry.clone(), wc, metrics.clone());
            if owns_index {
                check_index(ingest.clone(), &tasks);
            }
            w.start(&tasks);
            daily_maintenance(store.clone(), &tasks);
            w
        });
        start_vector_half(&config, &vector);
        let state = AppState(Arc::new(Inner {
            config,
            store,
            accounts,
            limiter: match shared {
                Some(r) => r as Arc<dyn RateLimiter>,
                None => Arc::new(InProcessLimiter::default()),
            },
            keyword,
            vector,
            pg_index,
            ingest,
            owns_index,
            search_permits: Arc::new(tokio::sync::Semaphore::new(cores)),
            metrics,
            gateway,
            registry,
            worker,
            tasks,
            started: Instant::now(),
            draining: AtomicBool::new(false),
        }));
        Ok(Runtime { state, new_admin })
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The application with extra routes under the same layers (tests add a panicking route).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let limit = usize::try_from(state.config.server.body_limit_bytes).unwrap_or(usize::MAX);
    routes::routes()
        .merge(extra)
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::http::limits::rate_limit,
        ))
        .route_layer(from_fn_with_state(state.clone(), auth::require_auth))
        .route_layer(from_fn(capture_route))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone())
        .layer(
            ServiceBuilder::new()
                .layer(from_fn_with_state(state.clone(), request_context))
                .option_layer(cors(&state.config.server.cors_allowed_origins))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(from_fn_with_state(
                    state.clone(),
                    crate::http::middleware::body_and_time_limits,
                ))
                // Streams are never compressed (SSE is excluded by default; NDJSON too).
                .layer(CompressionLayer::new().compress_when(
                    tower_http::compression::Predicate::and(
                        tower_http::compression::predicate::DefaultPredicate::new(),
                        tower_http::compression::predicate::NotForContentType::const_new(
                            "application/x-ndjson",
                        ),
                    ),
                )),
        )
}

/// CORS is off unless origins are configured; then only those origins, with credentials
/// sent as headers (no cookies).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                header::HeaderName::from_static("x-request-id"),
                header::RETRY_AFTER,
                header::HeaderName::from_static("ratelimit-remaining"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
