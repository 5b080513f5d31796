//! W3C Trace Context (`traceparent`): accepted from callers, generated when absent, and sent
//! back so a request can be followed across services.

use crate::ids::random_bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// This hop's span: 16 lowercase hex digits.
    pub span_id: String,
    /// The caller's span, when a valid `traceparent` came in.
    pub parent_span_id: Option<String>,
    pub sampled: bool,
}

impl TraceContext {
    /// Continue the caller's trace when `traceparent` is valid; start a new one otherwise.
    pub fn from_traceparent(header: Option<&str>) -> Self {
        let span_id = hex_id::<8>();
        match header.and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                sampled: flags & 1 == 1,
            },
            None => TraceContext {
                trace_id: hex_id::<16>(),
                span_id,
                parent_span_id: None,
                sampled: true,
            },
        }
    }

    /// The `traceparent` header naming this hop as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// Where an outgoing request (to an LLM upstream) gets its `traceparent`: set once by the
/// process when it exports spans, so a model call is a child of the span that made it.
static OUTGOING: std::sync::OnceLock<fn() -> Option<String>> = std::sync::OnceLock::new();

pub fn set_outgoing(f: fn() -> Option<String>) {
    let _ = OUTGOING.set(f);
}

/// How a span that starts a trace of its own (a job) learns its ids: set by the process when
/// it exports spans (the exported span's ids); otherwise fresh random ones.
static ROOT: std::sync::OnceLock<RootIds> = std::sync::OnceLock::new();

/// A span's (trace id, span id) as exported, if it is.
pub type RootIds = fn(&tracing::Span) -> Option<(String, String)>;

pub fn set_root_ids(f: RootIds) {
    let _ = ROOT.set(f);
}

/// Records `trace_id` and `span_id` on a root span (declared `Empty`), so its log lines carry
/// them.
pub fn start_root(span: &tracing::Span) {
    let (trace_id, span_id) = ROOT
        .get()
        .and_then(|f| f(span))
        .unwrap_or_else(|| (hex_id::<16>(), hex_id::<8>()));
    span.record("trace_id", trace_id.as_str());
    span.record("span_id", span_id.as_str());
}

/// The `traceparent` for a request made now to another service, if spans are exported.
pub fn outgoing_traceparent() -> Option<String> {
    OUTGOING.get().and_then(|f| f())
}

fn hex_id<const N: usize>() -> String {
    loop {
        let b = random_bytes::<N>();
        if b.iter().any(|x| *x != 0) {
            return hex::encode(b);
        }
    }
}

/// `version-traceid-parentid-flags`; version ff is invalid, all-zero ids are invalid.
fn parse_traceparent(h: &str) -> Option<(String, String, u8)> {
    let h = h.trim();
    let mut parts = h.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_hex(version, 2) || version == "ff" || !is_hex(trace_id, 32) || !is_hex(parent, 16) {
        return None;
    }
    if !is_hex(flags, 2) || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id.to_owned(), parent.to_owned(), flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_trace() {
        let t = TraceContext::from_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(
            t.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(t.traceparent().ends_with("-01"));
    }

    #[test]
    fn starts_a_new_trace_on_garbage() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let t = TraceContext::from_traceparent(Some(bad));
            assert!(t.parent_span_id.is_none(), "accepted {bad:?}");
            assert_eq!(t.trace_id.len(), 32);
        }
    }
}
