//! bunko-ingest: extractors (PDF, HTML, Markdown, text), OCR and crawlers (arXiv, e-Gov law
//! API, RSS/Atom, folders). Depends on bunko-core only.
//!
//! Empty in this release: document ingestion arrives with its own issue.
