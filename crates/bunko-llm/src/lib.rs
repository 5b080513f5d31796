//! bunko-llm: the gateway's upstreams — OpenAI-compatible servers, Ollama and Anthropic, each
//! in its own wire format (JSON, SSE, NDJSON) — and the router in front of them: model
//! aliases, retries with backoff, a circuit breaker and a concurrency bound per provider, and
//! fallback to the next alias. Depends on bunko-core only (plus the HTTP client).
//!
//! The embedded chat model (`local`, Gemma through llama.cpp) is not part of this build yet:
//! the `local` alias exists and answers `Unavailable`, so fallbacks to it fail cleanly.

pub mod gateway;
pub mod lines;
pub mod provider;
pub mod wire;
