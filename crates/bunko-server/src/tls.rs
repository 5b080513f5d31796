//! HTTPS with rustls (TLS 1.2 and 1.3 only, ring provider). The certificate is swapped in
//! place on SIGHUP or when its files change: new connections get the new certificate,
//! established ones continue undisturbed. Connections are served by hyper-util and drained
//! gracefully on shutdown, like the plain listener.

use crate::cli::CliError;
use axum::Router;
use axum::extract::ConnectInfo;
use bunko_core::config::TlsConfig;
use bunko_core::tasks::Tasks;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The current server configuration, replaceable at run time.
pub struct TlsState {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

fn load(cert: &PathBuf, key: &PathBuf) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {} is not valid PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn mtimes(cert: &PathBuf, key: &PathBuf) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

impl TlsState {
    pub fn new(cfg: &TlsConfig) -> Result<Arc<Self>, CliError> {
        let config = load(&cfg.cert_file, &cfg.key_file).map_err(|e| {
            CliError::failure(e).hint("check server.tls.cert_file and server.tls.key_file")
        })?;
        Ok(Arc::new(Self {
            cert: cfg.cert_file.clone(),
            key: cfg.key_file.clone(),
            current: RwLock::new(Arc::new(config)),
            stamp: RwLock::new(mtimes(&cfg.cert_file, &cfg.key_file)),
        }))
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(cfg)
    }

    /// Re-reads the files; on any error the old certificate stays in use.
    pub fn reload(&self, why: &str) {
        match load(&self.cert, &self.key) {
            Ok(cfg) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
                *self.stamp.write().unwrap_or_else(|e| e.into_inner()) =
                    mtimes(&self.cert, &self.key);
                info!(reason = why, cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                error!(reason = why, error = %e, "TLS certificate reload failed; keeping the previous one")
            }
        }
    }

    /// Reloads on SIGHUP and when the files' modification times change.
    pub fn watch(self: &Arc<Self>, tasks: &Tasks) {
        let me = self.clone();
        let stop = tasks.shutdown_token();
        tasks.spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                let hup_recv = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = hup_recv => me.reload("SIGHUP"),
                    _ = tick.tick() => {
                        let now = mtimes(&me.cert, &me.key);
                        let before = *me.stamp.read().unwrap_or_else(|e| e.into_inner());
                        if now.is_some() && now != before {
                            me.reload("file changed");
                        }
                    }
                }
            }
        });
    }
}

/// Serves `app` over TLS until `stop` is cancelled, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<TlsState>,
    stop: CancellationToken,
    tasks: Tasks,
) {
    let graceful = GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let svc = TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tasks.spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// Plain-HTTP listener that redirects every request to the HTTPS address.
pub fn redirect_app(https_port: u16) -> Router {
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    use axum::response::IntoResponse;
    Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| {
                h.rsplit_once(':')
                    .map(|(host, _)| host)
                    .unwrap_or(h)
                    .to_owned()
            })
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
            })
            .unwrap_or_else(|| "localhost".into());
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, format!("https://{host}{port}{path}"))],
        )
            .into_response()
    })
}
