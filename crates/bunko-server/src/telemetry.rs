//! Logging. JSON lines by default (one object per event: timestamp in UTC RFC 3339, level,
//! target, message, the request's `request_id`/`trace_id`/`span_id`, then the event's
//! fields); human-readable when stdout is a terminal or `log.format = "pretty"`.
//!
//! With `[otel] enabled = true`, spans also go to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf), and the trace ids in the log lines are the exported traces' ids.
//!
//! Fields whose names look like secrets (authorization, cookie, password, token, secret, key)
//! are written as `[redacted]` whatever their value, so a careless `info!(token = …)` cannot
//! leak one; no code logs headers or bodies.

use bunko_core::config::{LogConfig, LogFormat, OtelConfig};
use bunko_core::secret::REDACTED;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

/// The exporting tracer provider, kept to flush at exit.
static PROVIDER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> =
    std::sync::OnceLock::new();

/// Whether spans are exported (`[otel] enabled`, and the exporter started).
pub fn otel_enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Sends the spans still buffered and stops the exporter (blocking; call outside the async
/// runtime, at exit).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown_with_timeout(std::time::Duration::from_secs(5))
    {
        tracing::warn!(error = %e, "flushing the last spans to the OpenTelemetry collector failed");
    }
}

/// The tracer provider for `[otel]`: batches of spans over OTLP/HTTP with protobuf bodies,
/// sampled by trace id at `sample_ratio` unless the caller's `traceparent` decided.
fn otel_provider(cfg: &OtelConfig) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::Sampler;
    let headers = cfg
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    // The exporter's HTTP client (reqwest, rustls without a default provider) needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(cfg.endpoint.clone())
        .with_timeout(std::time::Duration::from_millis(cfg.timeout_ms))
        .with_headers(headers)
        .build()
        .map_err(|e| format!("otel: cannot make the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            crate::app::VERSION,
        ))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The exported span context of `span`, when it has a valid one.
fn exported(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The `traceparent` naming the current span, for a request to another service (`None`
/// when spans are not exported or there is no current span).
fn current_traceparent() -> Option<String> {
    exported(&tracing::Span::current()).map(|sc| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The exported ids of `span`.
fn span_ids(span: &tracing::Span) -> Option<(String, String)> {
    exported(span).map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Renames an exported span that has started (`otel.name` recorded later is not applied):
/// the request span learns its route only once the router matched it.
pub fn rename_span(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if otel_enabled() {
        span.context().span().update_name(name);
    }
}

/// Makes a request's span continue the caller's trace (when `traceparent` came in) and, when
/// spans are exported, returns the ids the exported span has, so the log lines, the
/// `traceparent` answered and the collector agree. Without export, `trace` as it was.
pub fn link_request_span(
    span: &tracing::Span,
    mut trace: bunko_core::trace::TraceContext,
) -> bunko_core::trace::TraceContext {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !otel_enabled() {
        return trace;
    }
    if let Some(parent) = &trace.parent_span_id
        && let (Ok(t), Ok(s)) = (TraceId::from_hex(&trace.trace_id), SpanId::from_hex(parent))
    {
        let flags = if trace.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(t, s, flags, true, TraceState::default());
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    if let Some(sc) = exported(span) {
        trace.trace_id = sc.trace_id().to_string();
        trace.span_id = sc.span_id().to_string();
        trace.sampled = sc.is_sampled();
    }
    trace
}

/// `tokio::task::spawn_blocking` with the caller's span current in the closure (so spans the
/// blocking work opens are the caller's children).
pub fn spawn_blocking_in_span<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`. Dependencies stay at
/// `warn` unless the filter names them.
pub fn init(cfg: &LogConfig, otel: &OtelConfig, sink: Sink) -> Result<(), String> {
    let filter = build_filter(&cfg.level)?;
    let otel_layer = if otel.enabled {
        use opentelemetry::trace::TracerProvider as _;
        let provider = otel_provider(otel)?;
        // Spans are exported whatever `log.level` says (a quiet log must not mean no traces):
        // the exporter has its own filter, bunko's spans at `info`.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("bunko"))
            .with_tracked_inactivity(false)
            .with_filter(span_filter());
        let _ = PROVIDER.set(provider);
        bunko_core::trace::set_outgoing(current_traceparent);
        bunko_core::trace::set_root_ids(span_ids);
        Some(layer)
    } else {
        None
    };
    let tty = match sink {
        Sink::Stdout => std::io::stdout().is_terminal(),
        Sink::Stderr => std::io::stderr().is_terminal(),
    };
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !tty,
    };
    // The log's filter applies to the log layer only.
    let registry = tracing_subscriber::registry().with(otel_layer);
    let result = match (json, sink) {
        (true, Sink::Stdout) => registry
            .with(JsonLayer::new(std::io::stdout).with_filter(filter))
            .try_init(),
        (true, Sink::Stderr) => registry
            .with(JsonLayer::new(std::io::stderr).with_filter(filter))
            .try_init(),
        (false, Sink::Stdout) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(tty)
                    .with_writer(std::io::stdout)
                    .with_filter(filter),
            )
            .try_init(),
        (false, Sink::Stderr) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(tty)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// What the exporter records: bunko's own spans at `info` and above, dependencies' at `warn`.
fn span_filter() -> EnvFilter {
    EnvFilter::new(
        "warn,bunko=info,bunko_server=info,bunko_core=info,bunko_store=info,bunko_index=info,\
         bunko_ingest=info,bunko_llm=info",
    )
}

/// `info` → `warn,bunko=info,bunko_core=info,…`; a full directive string is taken as given.
/// llama.cpp's own log stays at `error`: it warns about the default model's known quirks on
/// every load.
pub fn build_filter(level: &str) -> Result<EnvFilter, String> {
    if let Ok(env) = std::env::var("RUST_LOG")
        && !env.trim().is_empty()
    {
        return EnvFilter::try_new(env).map_err(|e| format!("RUST_LOG is not a valid filter: {e}"));
    }
    let simple = ["error", "warn", "info", "debug", "trace", "off"];
    let directive = if simple.contains(&level.trim()) {
        let l = level.trim();
        format!(
            "warn,bunko={l},bunko_server={l},bunko_core={l},bunko_store={l},bunko_index={l},\
             bunko_ingest={l},bunko_llm={l},llama-cpp-2=error"
        )
    } else {
        level.to_owned()
    };
    EnvFilter::try_new(&directive)
        .map_err(|e| format!("log.level `{level}` is not a valid filter: {e}"))
}

const SECRET_WORDS: &[&str] = &[
    "authorization",
    "cookie",
    "password",
    "passwd",
    "token",
    "secret",
    "api_key",
    "apikey",
];

pub fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, Value::String(s));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        // Span names and kinds for the exporter, not log fields.
        if name.starts_with("otel.") {
            return;
        }
        let value = if is_secret_field(name) {
            Value::String(REDACTED.into())
        } else {
            value
        };
        self.0.insert(name.to_owned(), value);
    }
}

pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(f);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(f) = ext.get_mut::<Fields>() {
                values.record(f);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut obj = Map::new();
        obj.insert(
            "timestamp".into(),
            Value::String(
                jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string(),
            ),
        );
        obj.insert(
            "level".into(),
            Value::String(meta.level().as_str().to_owned()),
        );
        obj.insert("target".into(), Value::String(meta.target().to_owned()));
        // Span fields, outermost first, so request_id/trace_id/span_id land at the top level.
        if let Some(scope) = ctx.event_scope(event) {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(span.name());
                if let Some(f) = span.extensions().get::<Fields>() {
                    for (k, v) in &f.0 {
                        obj.insert(k.clone(), v.clone());
                    }
                }
            }
            obj.insert("spans".into(), Value::String(names.join(":")));
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let message =
            f.0.remove("message")
                .unwrap_or(Value::String(String::new()));
        obj.insert("message".into(), message);
        for (k, v) in f.0 {
            obj.insert(k, v);
        }
        let mut line = serde_json::to_vec(&Value::Object(obj)).unwrap_or_default();
        line.push(b'\n');
        let _ = self.make_writer.make_writer().write_all(&line);
    }
}

/// Routes panics through the logger (one JSON event) instead of raw stderr text.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".into());
        tracing::error!(panic = %payload, location = %location, "a task panicked");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_span_fields_and_redact_secrets() {
        let buf = Buf::default();
        let sub = tracing_subscriber::registry().with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("http_request", request_id = "rid-1", trace_id = "t1");
            let _g = span.enter();
            tracing::info!(
                password = "hunter2",
                authorization = "Bearer abc",
                n = 3,
                "hello"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["message"], "hello");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(v["trace_id"], "t1");
        assert_eq!(v["n"], 3);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(
            !text.contains("hunter2") && !text.contains("Bearer abc"),
            "{text}"
        );
    }
}
