//! bunko-llm: model providers (local GGUF, Ollama, OpenAI-compatible, Anthropic) and
//! embedders behind the `ChatModel` and `Embedder` ports. Depends on bunko-core only.
//!
//! Empty in this release: the gateway arrives with its own issue.
