//! bunko-index: adapters for search — the tantivy keyword index with bunko's multilingual
//! analyzer (Japanese character bigrams + English stemming, plus Japanese words from lindera
//! when the IPADIC dictionary is available) and the embedded vector index (HNSW). Depends on
//! bunko-core and bunko-embed; the one home of tantivy and lindera.

pub mod analyzer;
pub mod ann;
pub mod keyword;
pub mod morph;
pub mod vector;
