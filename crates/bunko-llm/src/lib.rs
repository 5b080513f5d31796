//! bunko-llm: the gateway's upstreams — OpenAI-compatible servers, Ollama and Anthropic, each
//! in its own wire format (JSON, SSE, NDJSON) — and the router in front of them: model
//! aliases, retries with backoff, a circuit breaker and a concurrency bound per provider, and
//! fallback to the next alias; and the embedded chat model (`local`: a GGUF file run
//! in-process by llama.cpp). Depends on bunko-core only (plus the HTTP client and llama.cpp).

pub mod gateway;
pub mod lines;
pub mod local;
pub mod provider;
pub mod wire;
