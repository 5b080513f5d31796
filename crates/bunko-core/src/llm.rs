//! The gateway's domain: one chat request/response shape every provider adapter maps to and
//! from, the events of a streamed answer, provider errors classified for retry and fallback,
//! the configuration of providers and model aliases, and pricing. No HTTP types here.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// A chat request as the gateway sees it, whichever API it came in through.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
}

impl ChatRequest {
    /// The messages' text run together: what bunko counts tokens from when an upstream
    /// reports no usage.
    pub fn message_text(&self) -> String {
        self.messages.iter().map(|m| m.content.as_str()).collect()
    }

    /// The prompt as plain text, for a completion-style model and for counting tokens
    /// locally when an upstream reports none.
    pub fn as_prompt(&self) -> String {
        let mut s = String::new();
        for m in &self.messages {
            s.push_str(match m.role {
                Role::System => "",
                Role::User => "User: ",
                Role::Assistant => "Assistant: ",
            });
            s.push_str(&m.content);
            s.push_str("\n\n");
        }
        s.push_str("Assistant:");
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// Counts bunko makes itself when an upstream reports none ([`estimate_tokens`]).
    pub fn estimate(prompt: &str, answer: &str) -> Self {
        Self {
            input_tokens: estimate_tokens(prompt),
            output_tokens: estimate_tokens(answer),
        }
    }
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// Text to append.
    Delta(String),
    /// The end: why, and the upstream's token counts when it gave them.
    Done {
        finish_reason: FinishReason,
        usage: Option<Usage>,
    },
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Option<Usage>,
}

/// What went wrong upstream, classified for retries, fallback and the caller's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderErrorKind {
    /// 429 from the upstream (retried after `Retry-After`).
    RateLimited,
    /// 5xx, or a connection that could not be made or broke (retried; falls back).
    Unavailable,
    /// No first token (or no answer) in time (falls back).
    Timeout,
    /// The upstream answered something that is not its API (malformed JSON, wrong content
    /// type, an over-long line, a stream cut in the middle).
    BadResponse,
    /// The upstream refused the request itself (4xx other than 429): not retried.
    Rejected,
    /// The provider's breaker is open or its concurrency bound is full.
    Overloaded,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub provider: String,
    pub message: String,
    /// The upstream's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The upstream HTTP status, when there was one.
    pub status: Option<u16>,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, provider: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            provider: provider.to_owned(),
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }

    /// Worth another attempt at the same provider.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::RateLimited | ProviderErrorKind::Unavailable
        )
    }

    /// Counts against the provider's circuit breaker (the provider is unwell, not the request).
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::Unavailable
                | ProviderErrorKind::Timeout
                | ProviderErrorKind::BadResponse
        )
    }

    /// Another model may succeed where this one failed.
    pub fn allows_fallback(&self) -> bool {
        !matches!(self.kind, ProviderErrorKind::Rejected)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Local,
    Ollama,
    Openai,
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

/// `[[providers]]`: one upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// The API's base URL (OpenAI-compatible: up to and including `/v1`). Empty: the
    /// provider's usual local address (Ollama `http://127.0.0.1:11434`, Anthropic
    /// `https://api.anthropic.com`).
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Read the API key from this file (trailing newline trimmed).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Requests in flight at once; more get 429 with `Retry-After` (never an unbounded queue).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the first token (streamed) or the whole answer's headers.
    #[serde(default = "default_first_token_timeout_ms")]
    pub first_token_timeout_ms: u64,
    #[serde(default = "default_total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Further attempts on 429 / 5xx / connection errors (exponential backoff with jitter,
    /// at least the upstream's `Retry-After`).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before letting one probe through.
    #[serde(default = "default_breaker_cooldown_secs")]
    pub breaker_cooldown_secs: u64,
}

fn default_max_concurrent() -> usize {
    64
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_first_token_timeout_ms() -> u64 {
    60_000
}
fn default_total_timeout_ms() -> u64 {
    600_000
}
fn default_retries() -> u32 {
    2
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_secs() -> u64 {
    30
}

impl ProviderConfig {
    pub fn base_url(&self) -> String {
        let url = if self.base_url.is_empty() {
            match self.kind {
                ProviderKind::Ollama => "http://127.0.0.1:11434",
                ProviderKind::Anthropic => "https://api.anthropic.com",
                ProviderKind::Openai => "https://api.openai.com/v1",
                ProviderKind::Local => "",
            }
        } else {
            self.base_url.as_str()
        };
        url.trim_end_matches('/').to_owned()
    }
}

/// `[[models]]`: an alias callers use, and where it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelAlias {
    pub alias: String,
    pub provider: String,
    /// The upstream's name for the model.
    pub model: String,
    #[serde(default = "default_context_window")]
    pub context_window: u32,
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
    pub output_price_per_mtok: f64,
    /// Aliases tried in order when this one's provider is down, overloaded or its breaker open.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

fn default_context_window() -> u32 {
    8192
}

impl ModelAlias {
    /// The cost of a call in US dollars.
    pub fn cost(&self, usage: Usage) -> f64 {
        (usage.input_tokens as f64 * self.input_price_per_mtok
            + usage.output_tokens as f64 * self.output_price_per_mtok)
            / 1e6
    }
}

/// The alias and provider name of the embedded model, always defined.
pub const LOCAL: &str = "local";

/// A rough token count for text an upstream did not count (≈ 4 characters of English or 1.5
/// of Japanese per token), used for quotas and the ledger only.
pub fn estimate_tokens(text: &str) -> u64 {
    let mut cjk = 0u64;
    let mut other = 0u64;
    for c in text.chars() {
        if crate::text::is_cjk(c) {
            cjk += 1;
        } else {
            other += 1;
        }
    }
    (cjk * 2).div_ceil(3) + other.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_per_million_tokens() {
        let m = ModelAlias {
            alias: "fast".into(),
            provider: "p".into(),
            model: "m".into(),
            context_window: 100,
            input_price_per_mtok: 0.15,
            output_price_per_mtok: 0.60,
            fallbacks: vec![],
        };
        let c = m.cost(Usage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
        });
        assert!((c - 0.45).abs() < 1e-12, "{c}");
    }

    #[test]
    fn errors_are_classified_for_retry_and_fallback() {
        let e = |k| ProviderError::new(k, "p", "x");
        assert!(e(ProviderErrorKind::RateLimited).retryable());
        assert!(e(ProviderErrorKind::Unavailable).retryable());
        assert!(!e(ProviderErrorKind::Timeout).retryable());
        assert!(!e(ProviderErrorKind::Rejected).allows_fallback());
        assert!(e(ProviderErrorKind::Overloaded).allows_fallback());
        assert!(!e(ProviderErrorKind::RateLimited).is_provider_failure());
    }

    #[test]
    fn token_estimates_count_japanese_denser() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("日本語"), 2);
    }
}
