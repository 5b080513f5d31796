//! Stable error codes. Every error a client can see maps to ONE row of [`Code`]: its
//! machine-readable `code`, HTTP status and title. Clients match on `code`; the API guide lists
//! them (docs/api/errors.md is checked against this table by a test).

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($status:literal, $code:literal, $title:literal), )+) => {
        /// The stable error codes bunko returns in `application/problem+json` bodies.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $( $(#[$doc])* $variant, )+ }

        impl Code {
            /// Every code, in table order (for documentation and tests).
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )+ ];

            /// The HTTP status this code is answered with.
            pub const fn status(self) -> u16 { match self { $( Code::$variant => $status, )+ } }

            /// The machine-readable code (`snake_case`, never changes once released).
            pub const fn as_str(self) -> &'static str { match self { $( Code::$variant => $code, )+ } }

            /// A short human title, the same for every occurrence of this code.
            pub const fn title(self) -> &'static str { match self { $( Code::$variant => $title, )+ } }
        }
    };
}

error_codes! {
    /// The request is malformed in a way no more specific code covers.
    BadRequest => (400, "bad_request", "Bad request"),
    /// The body is not syntactically valid JSON.
    MalformedJson => (400, "malformed_json", "Malformed JSON"),
    /// A search query is empty or has nothing searchable.
    QueryEmpty => (400, "query_empty", "Empty query"),
    /// A query-string parameter is missing or has the wrong type.
    InvalidQuery => (400, "invalid_query", "Invalid query parameters"),
    /// A search filter is malformed; the detail names the field.
    InvalidFilter => (400, "invalid_filter", "Invalid search filter"),
    /// No credentials were sent to a route that needs them.
    Unauthenticated => (401, "unauthenticated", "Authentication required"),
    /// The credentials sent are unknown, malformed, expired or revoked.
    InvalidToken => (401, "invalid_token", "Invalid or expired credentials"),
    /// Wrong email or password (the same answer whether or not the account exists).
    InvalidCredentials => (401, "invalid_credentials", "Invalid email or password"),
    /// The caller is known but may not do this.
    Forbidden => (403, "forbidden", "Forbidden"),
    /// No route matches the path.
    RouteNotFound => (404, "route_not_found", "No such route"),
    /// The route exists but the resource id does not.
    NotFound => (404, "not_found", "Not found"),
    /// The route exists but not for this method.
    MethodNotAllowed => (405, "method_not_allowed", "Method not allowed"),
    /// The server gave up waiting for the request to complete.
    RequestTimeout => (408, "request_timeout", "Request timeout"),
    /// The resource already exists or is in a state that forbids the change.
    Conflict => (409, "conflict", "Conflict"),
    /// The body is larger than the configured limit.
    PayloadTooLarge => (413, "payload_too_large", "Payload too large"),
    /// The body's content type is not one this route accepts.
    UnsupportedMediaType => (415, "unsupported_media_type", "Unsupported media type"),
    /// An uploaded file is not of a type bunko can extract text from.
    UnsupportedDocumentType => (415, "unsupported_document_type", "Unsupported document type"),
    /// An uploaded file is empty (zero bytes).
    EmptyFile => (400, "empty_file", "Empty file"),
    /// The PDF is encrypted and no (or a wrong) password was given.
    DocumentEncrypted => (422, "document_encrypted", "Document is encrypted"),
    /// The file is damaged or truncated; the parser's reason is in the detail.
    DocumentUnreadable => (422, "document_unreadable", "Document is unreadable"),
    /// No text could be found in the document, even with OCR.
    DocumentEmpty => (422, "document_empty", "Document has no text"),
    /// A tool extraction needs (pdftotext, tesseract) is missing or failed on this host.
    ExtractorUnavailable => (503, "extractor_unavailable", "Extractor unavailable"),
    /// The JSON is well-formed but fields are missing or of the wrong type.
    InvalidBody => (422, "invalid_body", "Invalid request body"),
    /// A field value is outside what the operation accepts.
    InvalidInput => (422, "invalid_input", "Invalid input"),
    /// The caller sent too many requests; retry after the `Retry-After` header.
    RateLimited => (429, "rate_limited", "Too many requests"),
    /// Too many failed logins for this account or address; retry after `Retry-After`.
    LoginLocked => (429, "login_locked", "Too many failed logins"),
    /// The gateway has no model by this name (alias).
    ModelNotFound => (404, "model_not_found", "No such model"),
    /// The prompt plus the requested output is larger than the model's context window.
    ContextLengthExceeded => (400, "context_length_exceeded", "Context window exceeded"),
    /// The upstream model server refused the request itself (its reason is in the detail).
    UpstreamRejected => (400, "upstream_rejected", "Upstream refused the request"),
    /// Every model the request could go to is busy (concurrency bound or open breaker).
    ModelOverloaded => (429, "model_overloaded", "Model overloaded"),
    /// A gateway quota (rate or budget) is used up; the detail says which and when it resets.
    QuotaExceeded => (429, "quota_exceeded", "Quota exceeded"),
    /// The upstream model server failed or answered something that is not its API.
    UpstreamUnavailable => (502, "upstream_unavailable", "Upstream unavailable"),
    /// The upstream model server did not answer in time.
    UpstreamTimeout => (504, "upstream_timeout", "Upstream timeout"),
    /// Something failed inside bunko; the details are in the server log under the request id.
    Internal => (500, "internal", "Internal server error"),
    /// A component bunko depends on (database, index, model) is down or shutting down.
    Unavailable => (503, "unavailable", "Service unavailable"),
    /// A job handler panicked.
    JobPanicked => (500, "job_panicked", "Job handler panicked"),
    /// A job handler failed.
    JobFailed => (500, "job_failed", "Job failed"),
    /// A job's lease expired too often (its worker died) and attempts ran out.
    LeaseExpired => (500, "lease_expired", "Job lease expired"),
    /// No handler is registered for a job kind.
    UnknownJobKind => (422, "unknown_job_kind", "Unknown job kind"),
    /// The documents hold no answer to the question, so nothing was written from it.
    NoAnswer => (422, "no_answer", "The documents hold no answer"),
    /// The document is still queued or being processed (or failed): it has no text yet.
    DocumentNotReady => (409, "document_not_ready", "Document not ready"),
    /// A source's address is not allowed (not in `crawl.allow_hosts`, or an internal
    /// address): refused against server-side request forgery.
    SourceRefused => (422, "source_refused", "Source address refused"),
    /// A source answered with an error or with something that is not its documented format.
    SourceFailed => (502, "source_failed", "Source failed"),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Anything that can say which stable [`Code`] it is answered with.
pub trait ErrorCode {
    fn code(&self) -> Code;
}

/// The service-level error: a stable code plus a detail that is safe to show a client.
/// Internal causes (SQL, paths, upstream bodies) go to the log, never into `detail`.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Error {
    pub code: Code,
    pub detail: String,
    /// Logged, never shown to clients.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Sent as `Retry-After` (429 and 503).
    pub retry_after_secs: Option<u64>,
}

impl Error {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            source: None,
            retry_after_secs: None,
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(Code::NotFound, format!("{what} `{id}` does not exist"))
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidInput, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(Code::Conflict, detail)
    }

    /// An internal failure: the client sees a generic detail, the cause is kept for the log.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            code: Code::Internal,
            detail: "an internal error occurred; the server log has details under this request id"
                .into(),
            source: Some(source.into()),
            retry_after_secs: None,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, detail)
    }

    pub fn with_retry_after(mut self, d: std::time::Duration) -> Self {
        self.retry_after_secs = Some(d.as_secs_f64().ceil().max(1.0) as u64);
        self
    }
}

impl ErrorCode for Error {
    fn code(&self) -> Code {
        self.code
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_and_statuses_are_errors() {
        let mut seen = HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!(
                (400..600).contains(&code.status()),
                "{code} has status {}",
                code.status()
            );
        }
    }
}
