//! bunko-index: adapters for search — the tantivy keyword index with bunko's multilingual
//! analyzer (Japanese character bigrams + English stemming, plus Japanese words from lindera
//! when the IPADIC dictionary is available) and the embedded vector index (HNSW). Depends on
//! bunko-core and bunko-embed; the one home of tantivy and lindera.

pub mod analyzer;
pub mod ann;
pub mod keyword;
pub mod morph;
pub mod vector;

use std::collections::HashSet;

/// Which documents a search may return (inside both halves' queries, not a filter on their
/// results): with `only`, just those; never those in `except` (superseded versions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocScope {
    pub only: Option<HashSet<String>>,
    pub except: HashSet<String>,
}

impl DocScope {
    /// Every document.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(docs: I) -> Self {
        Self {
            only: Some(docs.into_iter().map(Into::into).collect()),
            except: HashSet::new(),
        }
    }

    /// Nothing can match (an empty `only`).
    pub fn is_empty(&self) -> bool {
        self.only.as_ref().is_some_and(HashSet::is_empty)
    }

    pub fn allows(&self, doc: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(doc)) && !self.except.contains(doc)
    }
}
