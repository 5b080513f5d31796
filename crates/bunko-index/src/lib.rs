//! bunko-index: adapters for the `SearchIndex` port (tantivy + an embedded ANN index; later
//! pgvector + tsvector) and the Japanese/English analyzers. Depends on bunko-core only.
//!
//! Empty in this release: hybrid search arrives with its own issue. The crate exists now so the
//! workspace has its final shape and heavy dependencies have one home.
