//! bunko-index: adapters for search — the tantivy keyword index with bunko's multilingual
//! analyzer (Japanese character bigrams + English stemming) now; the embedded vector index and
//! the pgvector/tsvector adapter later. Depends on bunko-core only; the one home of tantivy.

pub mod analyzer;
pub mod ann;
pub mod keyword;
pub mod vector;
