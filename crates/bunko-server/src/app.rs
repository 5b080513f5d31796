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
use bunko_core::config::Config;
use bunko_core::jobs::{Registry, Worker, WorkerConfig};
use bunko_core::metrics::Metrics;
use bunko_core::ports::MetaStore;
use bunko_core::tasks::Tasks;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

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
    pub metrics: Arc<Metrics>,
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
    bunko_store::open(&config.database_url())
        .await
        .map_err(|e| {
            CliError::failure(e.to_string()).hint("bunko never recreates a database it cannot read")
        })
}

/// Everything a serving or working process holds.
pub struct Runtime {
    pub state: AppState,
    /// Set when this start created the bootstrap admin token.
    pub new_token: Option<String>,
}

impl Runtime {
    pub async fn start(config: Config, run_worker: bool) -> Result<Runtime, CliError> {
        prepare_data_dir(&config.data_dir)?;
        let store = open_store(&config).await?;
        let new_token = auth::ensure_bootstrap_token(store.as_ref(), &config.data_dir)
            .await
            .map_err(|e| {
                CliError::failure(format!("cannot create the bootstrap admin token: {e}"))
            })?;
        if new_token.is_some() {
            tracing::info!(
                path = %auth::token_file(&config.data_dir).display(),
                "created the bootstrap admin token; it is in this file (mode 0600)"
            );
        }
        let metrics = Arc::new(Metrics::new(VERSION, COMMIT));
        let registry = Arc::new(Registry::builtin());
        let tasks = Tasks::new();
        let worker = run_worker.then(|| {
            let w = Worker::new(
                store.clone(),
                registry.clone(),
                WorkerConfig::from_config(&config, &registry),
                metrics.clone(),
            );
            w.start(&tasks);
            w
        });
        let state = AppState(Arc::new(Inner {
            config,
            store,
            metrics,
            registry,
            worker,
            tasks,
            started: Instant::now(),
            draining: AtomicBool::new(false),
        }));
        Ok(Runtime { state, new_token })
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The application with extra routes under the same layers (tests add a panicking route).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let limit = usize::try_from(state.config.server.body_limit_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    routes::routes()
        .merge(extra)
        .route_layer(from_fn_with_state(state.clone(), auth::require_auth))
        .route_layer(from_fn(capture_route))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone())
        .layer(
            ServiceBuilder::new()
                .layer(from_fn_with_state(state, request_context))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                ))
                .layer(CompressionLayer::new())
                .layer(RequestBodyLimitLayer::new(limit)),
        )
}
