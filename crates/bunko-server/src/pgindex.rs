//! The search index in PostgreSQL (`search.backend = "postgres"`): bunko's analyzers make the
//! tokens (the same multilingual analyzer and Japanese dictionary as the embedded index), the
//! store keeps and ranks them (`bunko_store::postgres::search`). Every replica reads and
//! writes the same index, so any process may process documents and any may answer searches.

use bunko_index::DocScope;
use bunko_index::keyword::Hit;
use bunko_index::morph::Morphology;
use bunko_store::postgres::search::{IndexedChunk, KeywordQuery, PgHit, PgSearch, Scope};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub struct PgIndex {
    pub search: PgSearch,
    morph: Option<Arc<Morphology>>,
    /// Weight of a Japanese query's bigrams when its words are searched too.
    bigram_weight: f32,
}

/// The characters a snippet shows.
const SNIPPET_CHARS: usize = 240;

fn scope(d: &DocScope) -> Scope {
    Scope {
        only: d.only.as_ref().map(|s| s.iter().cloned().collect()),
        except: d.except.iter().cloned().collect(),
    }
}

impl PgIndex {
    /// On the store's connection pool.
    pub async fn open(
        store: &bunko_store::postgres::PgStore,
        morph: Option<Arc<Morphology>>,
    ) -> Result<Self, String> {
        let search = store
            .search(None)
            .await
            .map_err(|e| format!("the search index in PostgreSQL: {e}"))?;
        Ok(Self {
            search,
            morph,
            bigram_weight: bunko_index::keyword::BIGRAM_WEIGHT_WITH_WORDS,
        })
    }

    /// Japanese words of `text` (none without a dictionary or Japanese).
    fn words(&self, text: &str) -> Vec<String> {
        match &self.morph {
            Some(m) if text.chars().any(bunko_core::text::is_cjk) => {
                m.terms(text).into_iter().map(|(_, _, t)| t).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Replaces a document's chunks (tokenised here, on a blocking thread: the dictionary
    /// is CPU work). `vectors`, when given, are written when the vector half is on.
    pub async fn index_document(
        self: &Arc<Self>,
        document: &str,
        project: &str,
        title: &str,
        chunks: Vec<(String, String)>,
        vectors: Option<Vec<Vec<f32>>>,
    ) -> Result<(), String> {
        let me = self.clone();
        let title_s = title.to_owned();
        let (title_terms, indexed) = tokio::task::spawn_blocking(move || {
            let mut title_terms = bunko_index::analyzer::analyze(&title_s);
            title_terms.extend(me.words(&title_s));
            let mut vectors = vectors.map(Vec::into_iter);
            let indexed: Vec<IndexedChunk> = chunks
                .into_iter()
                .map(|(id, text)| IndexedChunk {
                    text_terms: bunko_index::analyzer::analyze(&text),
                    words: me.words(&text),
                    vector: vectors.as_mut().and_then(Iterator::next),
                    id,
                    text,
                })
                .collect();
            (title_terms, indexed)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.search
            .replace_document(document, project, title, &title_terms, &indexed)
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn delete_document(&self, document: &str) -> Result<(), String> {
        self.search
            .delete_document(document)
            .await
            .map_err(|e| e.to_string())
    }

    /// The keyword half: the query analysed as chunks are, ranked in PostgreSQL; the first
    /// `snippets` hits carry a highlighted snippet.
    pub async fn keyword(
        &self,
        projects: &[String],
        documents: &DocScope,
        text: &str,
        k: usize,
        snippets: usize,
    ) -> Result<Vec<Hit>, String> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let terms = bunko_index::analyzer::analyze(text);
        let words = self.words(text);
        let (cjk, plain): (Vec<String>, Vec<String>) = terms
            .into_iter()
            .partition(|t| t.chars().any(bunko_core::text::is_cjk));
        let q = KeywordQuery {
            bigram_weight: if words.is_empty() {
                1.0
            } else {
                self.bigram_weight
            },
            plain,
            cjk,
            words,
        };
        let mark: HashSet<String> = q.plain.iter().chain(&q.cjk).cloned().collect();
        let hits = self
            .search
            .keyword(projects, &scope(documents), &q, k)
            .await
            .map_err(|e| e.to_string())?;
        Ok(hits
            .into_iter()
            .enumerate()
            .map(|(i, h)| to_hit(h, (i < snippets).then_some(&mark)))
            .collect())
    }

    /// The vector half for a query vector of the model `(dims, fingerprint)`.
    pub async fn vector(
        &self,
        projects: &[String],
        documents: &DocScope,
        query: &[f32],
        model: (usize, &str),
        k: usize,
    ) -> Result<Vec<(String, String, f32)>, String> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        self.search.enable_vectors(model.0, model.1).await;
        self.search
            .vector(projects, &scope(documents), query, k)
            .await
            .map_err(|e| e.to_string())
    }

    /// One chunk with the opening of its text as the snippet.
    pub async fn get(&self, id: &str) -> Result<Option<Hit>, String> {
        Ok(self
            .search
            .get(id)
            .await
            .map_err(|e| e.to_string())?
            .map(|h| to_hit(h, Some(&HashSet::new()))))
    }

    /// Chunks per document in the keyword and vector halves.
    pub async fn document_counts(&self) -> Result<HashMap<String, (usize, usize)>, String> {
        self.search
            .document_counts()
            .await
            .map_err(|e| e.to_string())
    }
}

fn to_hit(h: PgHit, mark: Option<&HashSet<String>>) -> Hit {
    Hit {
        snippet: mark
            .map(|m| bunko_index::analyzer::highlight(&h.text, m, SNIPPET_CHARS))
            .unwrap_or_default(),
        id: h.id,
        project: h.project,
        score: h.score,
        title: h.title,
    }
}
