//! The request middleware: request id (`x-request-id`, generated when absent), W3C trace
//! context, the request's log span, RED metrics by route template, one access log line, and
//! problem+json bodies for every error response.

use super::error::{ProblemDetails, render_problem};
use crate::app::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bunko_core::ids::new_id;
use bunko_core::trace::TraceContext;
use std::time::{Duration, Instant};
use tracing::{Instrument, debug, info, info_span, warn};

/// What the middleware knows about the request, for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace: TraceContext,
}

/// The matched route template, passed from inside the router back out to the middleware.
#[derive(Debug, Clone)]
struct MatchedRoute(String);

/// An incoming request id is kept if it is short printable ASCII; otherwise a new one is made.
fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub async fn request_context(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(valid_request_id)
        .unwrap_or_else(|| new_id().to_string());
    let trace = TraceContext::from_traceparent(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let method = method_label(req.method());
    let shape = crate::http::error::ErrorShape::for_path(req.uri().path());
    let span = info_span!(
        "http_request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = trace.parent_span_id.as_deref().unwrap_or(""),
        method,
        path = %req.uri().path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let trace = crate::telemetry::link_request_span(&span, trace);
    span.record("trace_id", trace.trace_id.as_str());
    span.record("span_id", trace.span_id.as_str());
    req.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        trace: trace.clone(),
    });
    let m = &state.metrics;
    m.http_in_flight.inc();
    let mut res = next.run(req).instrument(span.clone()).await;
    m.http_in_flight.dec();

    let route = res.extensions().get::<MatchedRoute>().map(|r| r.0.clone());
    let route = route.as_deref().unwrap_or("unmatched");
    let status = res.status();
    // Error responses made by layers and fallbacks (no body type, or plain text) become
    // problems too; a handler's deliberate JSON (the /readyz report) is left as it is.
    let layer_made = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    let details = res.extensions_mut().remove::<ProblemDetails>();
    if details.is_some() || ((status.is_client_error() || status.is_server_error()) && layer_made) {
        let (parts, _body) = res.into_parts();
        res = render_problem(status, details, &request_id, shape, parts);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    security_headers(res.headers_mut(), state.config.server.tls.is_some());
    if let Ok(v) = HeaderValue::from_str(&trace.traceparent()) {
        res.headers_mut().insert("traceparent", v);
    }
    let elapsed = started.elapsed();
    crate::telemetry::rename_span(&span, format!("{method} {route}"));
    span.record("http.route", route);
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    m.http_requests
        .with_label_values(&[method, route, status.as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[method, route])
        .observe(elapsed.as_secs_f64());
    let ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status.is_server_error() {
            warn!(
                status = status.as_u16(),
                route,
                duration_ms = ms,
                "request finished"
            );
        } else if matches!(route, "/healthz" | "/readyz" | "/metrics") {
            debug!(
                status = status.as_u16(),
                route,
                duration_ms = ms,
                "request finished"
            );
        } else {
            info!(
                status = status.as_u16(),
                route,
                duration_ms = ms,
                "request finished"
            );
        }
    });
    res
}

/// Runs inside the router (as a route layer) where the matched template is known.
pub async fn capture_route(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if let Some(m) = matched {
        res.extensions_mut()
            .insert(MatchedRoute(m.as_str().to_owned()));
    }
    res
}

/// A panicking handler becomes a 500 problem without internals; the panic is logged once.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into());
    tracing::error!(panic = %msg, "request handler panicked; answered 500, still serving");
    super::error::problem_response(
        bunko_core::Code::Internal,
        "an internal error occurred; the server log has details under this request id".into(),
    )
}

/// Security headers on every response, errors included. A handler that sets its own
/// `Content-Security-Policy` (the docs page) keeps it.
fn security_headers(h: &mut axum::http::HeaderMap, tls: bool) {
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    const FIXED: &[(&str, &str)] = &[
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in FIXED {
        h.insert(*name, HeaderValue::from_static(value));
    }
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// Whether a request is a document upload (its own size and time limits).
fn is_upload(req: &Request) -> bool {
    if req.method() != axum::http::Method::POST {
        return false;
    }
    let segs: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    matches!(segs.as_slice(), ["api", "v1", "projects", p, "documents"] if !p.is_empty())
}

/// Whether a request asks a model for an answer (the provider's own timeouts govern it).
fn is_generation(req: &Request) -> bool {
    let path = req.uri().path();
    matches!(
        path,
        "/v1/chat/completions" | "/api/chat" | "/api/generate" | "/api/v1/ask"
    ) || (path.starts_with("/api/v1/projects/") && path.ends_with("/notes:generate"))
}

/// Body size and time limits: `server.body_limit_bytes` and `server.request_timeout_secs` for
/// every route, except model answers (up to an hour: each provider's first-token and total
/// timeouts apply) and uploads, which may carry files up to `ingest.max_file_bytes` each and
/// take an hour. A declared length over the limit is refused before reading; a body that
/// grows past it fails while it is read (413 either way); a request over time is 408.
pub async fn body_and_time_limits(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let c = &state.config;
    let upload = is_upload(&req);
    let (limit, timeout) = if upload {
        let per_request = c
            .ingest
            .max_file_bytes
            .saturating_mul(crate::routes::MAX_FILES_PER_UPLOAD as u64)
            .saturating_add(1024 * 1024);
        (
            per_request,
            Duration::from_secs(c.server.request_timeout_secs.max(3600)),
        )
    } else if is_generation(&req) {
        (
            c.server.body_limit_bytes,
            Duration::from_secs(c.server.request_timeout_secs.max(3600)),
        )
    } else {
        (
            c.server.body_limit_bytes,
            Duration::from_secs(c.server.request_timeout_secs),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        let detail = if upload {
            format!(
                "the upload is larger than allowed ({limit} bytes per request; ingest.max_file_bytes per file)"
            )
        } else {
            "the request body is larger than server.body_limit_bytes".to_owned()
        };
        return crate::http::error::problem_response(bunko_core::Code::PayloadTooLarge, detail);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, limit)));
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}
