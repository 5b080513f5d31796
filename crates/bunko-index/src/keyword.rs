//! The keyword half of search: a tantivy index with BM25 over the multilingual analyzer
//! (`title`, `text`) and, for chunks with Japanese text, over Japanese words (`title_ja`,
//! `text_ja`, from [`crate::morph`]). Project permissions are a filter inside the query (never
//! post-filtering).

use crate::analyzer::{MULTI, Variant};
use crate::morph::{MORPH, MorphTokenizer, Morphology};
use bunko_core::text::is_cjk;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{LowerCaser, TextAnalyzer, TokenStream};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(String),
    #[error("search index schema: {0}")]
    Schema(String),
}

pub type IndexResult<T> = Result<T, IndexError>;

struct Fields {
    id: Field,
    project: Field,
    /// The document a chunk belongs to (empty for chunks indexed without one).
    document: Field,
    title: Field,
    text: Field,
    /// Japanese words (base forms) of the title and text; empty without a dictionary.
    title_ja: Field,
    text_ja: Field,
}

pub struct KeywordIndex {
    index: Index,
    reader: IndexReader,
    /// Made on first write: tantivy allows one writer per index, and a reading process (the
    /// CLI beside a server) must not take the lock.
    writer: Mutex<Option<IndexWriter>>,
    f: Fields,
    /// The Japanese dictionary this index analyses with (none: bigrams only).
    morph: Option<Arc<Morphology>>,
    /// The directory on disk (none in memory): where the dictionary in use is recorded.
    dir: Option<PathBuf>,
    /// Weight of a Japanese query's character bigrams when its words are searched too.
    bigram_weight_with_words: f32,
}

/// The default for [`KeywordIndex::set_bigram_weight_with_words`].
pub const BIGRAM_WEIGHT_WITH_WORDS: f32 = 0.05;

/// The file in an index directory naming the dictionary its Japanese words came from.
const MORPH_MARK: &str = "bunko-morphology";

/// One hit: the chunk id, its BM25 score, its title and a highlighted snippet (HTML, `<b>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub project: String,
    pub score: f32,
    pub title: String,
    pub snippet: String,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let analyzed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(MULTI)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(MORPH)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        project: b.add_text_field("project", STRING | STORED),
        document: b.add_text_field("document", STRING | STORED),
        title: b.add_text_field("title", analyzed.clone().set_stored()),
        text: b.add_text_field("text", analyzed.set_stored()),
        title_ja: b.add_text_field("title_ja", words.clone()),
        text_ja: b.add_text_field("text_ja", words),
    };
    (b.build(), f)
}

impl KeywordIndex {
    /// Opens the index in `dir`, creating it when empty.
    pub fn open(dir: &Path) -> IndexResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| IndexError::Directory(format!("{}: {e}", dir.display())))?;
        let mmap = MmapDirectory::open(dir).map_err(|e| IndexError::Directory(e.to_string()))?;
        let (schema, _) = schema();
        let index = Index::open_or_create(mmap, schema.clone()).map_err(|e| match e {
            tantivy::TantivyError::SchemaError(m) => IndexError::Schema(m),
            e => IndexError::Tantivy(e),
        })?;
        if index.schema() != schema {
            return Err(IndexError::Schema(
                "the keyword index was made by another version of bunko".into(),
            ));
        }
        let mut ix = Self::with(index, ReloadPolicy::OnCommitWithDelay, Variant::Multi)?;
        ix.dir = Some(dir.to_owned());
        Ok(ix)
    }

    /// Analyses Japanese by words too, with `morph` (before the first write: tantivy's writer
    /// keeps the analyzers it started with). Returns a warning when the index already holds
    /// chunks analysed without this dictionary — they are found by bigrams only until
    /// `bunko index rebuild`.
    pub fn with_morphology(mut self, morph: Arc<Morphology>) -> (Self, Option<String>) {
        self.index.tokenizers().register(
            MORPH,
            TextAnalyzer::builder(MorphTokenizer::new(Some(morph.clone())))
                .filter(LowerCaser)
                .build(),
        );
        let mut warning = None;
        if let Some(dir) = &self.dir {
            let mark = dir.join(MORPH_MARK);
            let recorded = std::fs::read_to_string(&mark).unwrap_or_default();
            if recorded.trim() != morph.name() {
                if self.num_docs() > 0 {
                    warning = Some(format!(
                        "the keyword index holds chunks analysed without the Japanese dictionary {}: they are found by character bigrams only until `bunko index rebuild`",
                        morph.name()
                    ));
                } else {
                    let _ = std::fs::write(&mark, morph.name());
                }
            }
        }
        self.morph = Some(morph);
        (self, warning)
    }

    /// Records that every chunk now in the index was analysed with the current dictionary
    /// (after a rebuild refilled it).
    pub fn mark_morphology_complete(&self) {
        if let (Some(dir), Some(m)) = (&self.dir, &self.morph) {
            let _ = std::fs::write(dir.join(MORPH_MARK), m.name());
        }
    }

    /// The weight of a Japanese query's character bigrams beside its words (the evaluation's
    /// ablation; 0 searches Japanese by words alone).
    pub fn set_bigram_weight_with_words(&mut self, weight: f32) {
        self.bigram_weight_with_words = weight;
    }

    /// Whether Japanese is analysed by words as well as bigrams.
    pub fn morphology(&self) -> Option<&str> {
        self.morph.as_deref().map(Morphology::name)
    }

    /// Opens the index in `dir`; one made with another schema (an older bunko) is moved aside
    /// to `<dir>.old` and a new, empty one is made — the index is derived data, and the
    /// start-up consistency check refills it from the database. Returns whether that happened.
    pub fn open_or_replace(dir: &Path) -> IndexResult<(Self, bool)> {
        match Self::open(dir) {
            Err(IndexError::Schema(_)) => {
                let aside = dir.with_extension("old");
                let _ = std::fs::remove_dir_all(&aside);
                std::fs::rename(dir, &aside)
                    .map_err(|e| IndexError::Directory(format!("{}: {e}", dir.display())))?;
                Ok((Self::open(dir)?, true))
            }
            other => other.map(|ix| (ix, false)),
        }
    }

    /// Takes the index's single writer now (the process that processes documents owns the
    /// index); fails at once when another process holds it.
    pub fn take_writer(&self) -> IndexResult<()> {
        self.write(|_| Ok(()))
    }

    /// A throw-away index in memory (evaluation, tests).
    pub fn in_memory() -> IndexResult<Self> {
        Self::in_memory_with(Variant::Multi)
    }

    /// In memory with another analyzer variant (the evaluation's ablation).
    pub fn in_memory_with(variant: Variant) -> IndexResult<Self> {
        Self::with(
            Index::create_in_ram(schema().0),
            ReloadPolicy::Manual,
            variant,
        )
    }

    fn with(mut index: Index, policy: ReloadPolicy, variant: Variant) -> IndexResult<Self> {
        // A query's segments are searched in parallel, one thread per core (a 1M-chunk index
        // has several segments; long queries were 31 ms p50 on one thread). Without a pool
        // (threads cannot be started) searches stay on the calling thread.
        let _ = index.set_default_multithread_executor();
        // The schema names one analyzer; each index registers the variant it uses under it.
        index.tokenizers().register(MULTI, variant.analyzer());
        index
            .tokenizers()
            .register(MORPH, TextAnalyzer::from(MorphTokenizer::new(None)));
        let (_, f) = schema();
        let reader = index.reader_builder().reload_policy(policy).try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(None),
            f,
            morph: None,
            dir: None,
            bigram_weight_with_words: BIGRAM_WEIGHT_WITH_WORDS,
        })
    }

    fn write<T>(&self, f: impl FnOnce(&mut IndexWriter) -> IndexResult<T>) -> IndexResult<T> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.index.writer(64 * 1024 * 1024)?);
        }
        match guard.as_mut() {
            Some(w) => f(w),
            None => unreachable_writer(),
        }
    }

    /// Adds or replaces (by id) one chunk. Visible after [`KeywordIndex::commit`].
    pub fn upsert(&self, id: &str, project: &str, title: &str, text: &str) -> IndexResult<()> {
        self.upsert_chunk(id, project, "", title, text)
    }

    /// Adds or replaces (by id) one chunk of a document.
    pub fn upsert_chunk(
        &self,
        id: &str,
        project: &str,
        document: &str,
        title: &str,
        text: &str,
    ) -> IndexResult<()> {
        self.write(|w| {
            w.delete_term(Term::from_field_text(self.f.id, id));
            let mut d = doc!(
                self.f.id => id,
                self.f.project => project,
                self.f.document => document,
                self.f.title => title,
                self.f.text => text,
            );
            if self.morph.is_some() {
                if title.chars().any(is_cjk) {
                    d.add_text(self.f.title_ja, title);
                }
                if text.chars().any(is_cjk) {
                    d.add_text(self.f.text_ja, text);
                }
            }
            w.add_document(d)?;
            Ok(())
        })
    }

    /// Removes every chunk of a document (visible after commit). Removing and adding in one
    /// commit replaces a document's chunks atomically.
    pub fn delete_document(&self, document: &str) -> IndexResult<()> {
        self.write(|w| {
            w.delete_term(Term::from_field_text(self.f.document, document));
            Ok(())
        })
    }

    /// Live chunks of a document in the committed index.
    pub fn count_document(&self, document: &str) -> IndexResult<usize> {
        let q = TermQuery::new(
            Term::from_field_text(self.f.document, document),
            IndexRecordOption::Basic,
        );
        Ok(self
            .reader
            .searcher()
            .search(&q, &tantivy::collector::Count)?)
    }

    /// Every document id with live chunks in the committed index.
    pub fn documents(&self) -> IndexResult<Vec<String>> {
        let searcher = self.reader.searcher();
        let mut ids = std::collections::BTreeSet::new();
        for seg in searcher.segment_readers() {
            let inv = seg.inverted_index(self.f.document)?;
            let mut stream = inv
                .terms()
                .stream()
                .map_err(|e| IndexError::Directory(e.to_string()))?;
            while stream.advance() {
                if let Ok(t) = std::str::from_utf8(stream.key())
                    && !t.is_empty()
                {
                    ids.insert(t.to_owned());
                }
            }
        }
        // The term dictionary still lists documents whose chunks were all deleted but not yet
        // merged away: keep those with live chunks.
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if self.count_document(&id)? > 0 {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub fn delete(&self, id: &str) -> IndexResult<()> {
        self.write(|w| {
            w.delete_term(Term::from_field_text(self.f.id, id));
            Ok(())
        })
    }

    pub fn commit(&self) -> IndexResult<()> {
        self.write(|w| Ok(w.commit().map(|_| ())?))?;
        self.reader.reload()?;
        Ok(())
    }

    /// The query's distinct terms (sorted), from the analyzer registered on this index under
    /// `analyzer` (the one its documents were indexed with).
    fn query_terms(&self, analyzer: &str, query: &str) -> Vec<String> {
        let Some(mut analyzer) = self.index.tokenizers().get(analyzer) else {
            return Vec::new();
        };
        let mut stream = analyzer.token_stream(query);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out.sort();
        out.dedup();
        out
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// BM25 over title and text for the query's terms, restricted to `projects`.
    /// A query with no searchable terms (only punctuation, emoji…) returns no hits.
    pub fn search(&self, projects: &[&str], query: &str, k: usize) -> IndexResult<Vec<Hit>> {
        self.search_ranked(projects, query, k, k)
    }

    /// As [`search`](Self::search), with highlighted snippets for the first `snippets` hits
    /// only (the rest have an empty snippet): a snippet re-reads and re-tokenises the chunk,
    /// which costs more than the search itself when a fusion pulls 100 candidates.
    pub fn search_ranked(
        &self,
        projects: &[&str],
        query: &str,
        k: usize,
        snippets: usize,
    ) -> IndexResult<Vec<Hit>> {
        self.search_filtered(projects, &crate::DocScope::all(), query, k, snippets)
    }

    /// BM25 restricted to `projects` and, when given, to chunks of these documents — both
    /// filters are clauses of the query, so the top `k` are the best allowed chunks.
    pub fn search_filtered(
        &self,
        projects: &[&str],
        documents: &crate::DocScope,
        query: &str,
        k: usize,
        snippets: usize,
    ) -> IndexResult<Vec<Hit>> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let terms = self.query_terms(MULTI, query);
        // Japanese words, when the query has Japanese and the index a dictionary.
        let words = if self.morph.is_some() && query.chars().any(is_cjk) {
            self.query_terms(MORPH, query)
        } else {
            Vec::new()
        };
        if (terms.is_empty() && words.is_empty()) || projects.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut add = |terms: &[String], fields: [Field; 2], weight: f32| {
            if weight <= 0.0 {
                return;
            }
            for t in terms {
                for field in fields {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(field, t),
                        IndexRecordOption::WithFreqs,
                    ));
                    should.push((
                        Occur::Should,
                        if weight == 1.0 {
                            q
                        } else {
                            Box::new(BoostQuery::new(q, weight))
                        },
                    ));
                }
            }
        };
        // With words, a Japanese query's character bigrams only break ties and catch what the
        // dictionary segments differently in query and chunk: full-weight bigrams on top of the
        // words count every match twice (BENCHMARKS.md, the analyzer ablation).
        let bigram_weight = if words.is_empty() {
            1.0
        } else {
            self.bigram_weight_with_words
        };
        let (cjk, plain): (Vec<String>, Vec<String>) =
            terms.into_iter().partition(|t| t.chars().any(is_cjk));
        add(&plain, [self.f.text, self.f.title], 1.0);
        add(&cjk, [self.f.text, self.f.title], bigram_weight);
        add(&words, [self.f.text_ja, self.f.title_ja], 1.0);
        let allowed = TermSetQuery::new(
            projects
                .iter()
                .map(|p| Term::from_field_text(self.f.project, p)),
        );
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (
                Occur::Must,
                Box::new(BooleanQuery::new(should)) as Box<dyn Query>,
            ),
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(allowed), 0.0)),
            ),
        ];
        if let Some(docs) = &documents.only {
            let only = TermSetQuery::new(
                docs.iter()
                    .map(|d| Term::from_field_text(self.f.document, d)),
            );
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(only), 0.0)),
            ));
        }
        if !documents.except.is_empty() {
            let except = TermSetQuery::new(
                documents
                    .except
                    .iter()
                    .map(|d| Term::from_field_text(self.f.document, d)),
            );
            clauses.push((Occur::MustNot, Box::new(except)));
        }
        let q = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(k).order_by_score())?;
        let snippets_wanted = snippets;
        let mut snippets = SnippetGenerator::create(&searcher, &q, self.f.text)?;
        snippets.set_max_num_chars(240);
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let text_of = |f: Field| stored_text(&d, f);
            let id = text_of(self.f.id);
            if id.is_empty() {
                continue;
            }
            hits.push(Hit {
                id,
                project: text_of(self.f.project),
                score,
                title: text_of(self.f.title),
                snippet: if hits.len() < snippets_wanted {
                    snippets.snippet_from_doc(&d).to_html()
                } else {
                    String::new()
                },
            });
        }
        Ok(hits)
    }
}

/// A stored chunk: what the vector half is rebuilt from.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub id: String,
    pub project: String,
    pub title: String,
    pub text: String,
}

impl KeywordIndex {
    /// Every stored chunk, or those of one project.
    pub fn chunks(&self, project: Option<&str>) -> IndexResult<Vec<StoredChunk>> {
        let searcher = self.reader.searcher();
        let q: Box<dyn Query> = match project {
            Some(p) => Box::new(TermQuery::new(
                Term::from_field_text(self.f.project, p),
                IndexRecordOption::Basic,
            )),
            None => Box::new(tantivy::query::AllQuery),
        };
        let docs = searcher.search(&q, &tantivy::collector::DocSetCollector)?;
        let mut out = Vec::with_capacity(docs.len());
        for addr in docs {
            let d: TantivyDocument = searcher.doc(addr)?;
            let text_of = |f: Field| stored_text(&d, f);
            out.push(StoredChunk {
                id: text_of(self.f.id),
                project: text_of(self.f.project),
                title: text_of(self.f.title),
                text: text_of(self.f.text),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One chunk by id, with the opening of its text as the snippet (HTML-escaped): how a
    /// hit found only by the vector half is shown.
    pub fn get(&self, id: &str) -> IndexResult<Option<Hit>> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.id, id),
            IndexRecordOption::Basic,
        );
        let top = searcher.search(&q, &TopDocs::with_limit(1).order_by_score())?;
        let Some((_, addr)) = top.first() else {
            return Ok(None);
        };
        let d: TantivyDocument = searcher.doc(*addr)?;
        let text_of = |f: Field| stored_text(&d, f);
        let text = text_of(self.f.text);
        let opening: String = text.chars().take(240).collect();
        Ok(Some(Hit {
            id: id.to_owned(),
            project: text_of(self.f.project),
            score: 0.0,
            title: text_of(self.f.title),
            snippet: escape_html(&opening),
        }))
    }
}

/// A stored text field of a document ("" when absent).
fn stored_text(d: &TantivyDocument, f: Field) -> String {
    d.get_first(f)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The writer slot is filled just above; this keeps the code free of `unwrap`.
fn unreachable_writer<T>() -> IndexResult<T> {
    Err(IndexError::Directory("index writer unavailable".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeywordIndex {
        let ix = KeywordIndex::in_memory().unwrap();
        ix.upsert(
            "en1",
            "p1",
            "Library cataloguing",
            "Indexing books in libraries with subject headings",
        )
        .unwrap();
        ix.upsert(
            "ja1",
            "p1",
            "パッケージ",
            "Debian パッケージを作成する手順を説明します",
        )
        .unwrap();
        ix.upsert("ja2", "p1", "ライセンス", "著作権とライセンスの確認")
            .unwrap();
        ix.upsert(
            "other",
            "p2",
            "Libraries elsewhere",
            "library library library",
        )
        .unwrap();
        ix.commit().unwrap();
        ix
    }

    #[test]
    fn japanese_words_meet_at_their_base_form() {
        let Some(m) = crate::morph::tests::shared() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (ix, warning) = KeywordIndex::open(dir.path())
            .unwrap()
            .with_morphology(m.clone());
        assert_eq!(warning, None, "an empty index needs no rebuild");
        assert_eq!(ix.morphology(), Some(m.name()));
        ix.upsert("a", "p", "報告", "毎月の報告書を書く。").unwrap();
        ix.upsert("b", "p", "記録", "点検の記録を保存する。")
            .unwrap();
        ix.commit().unwrap();
        // 書いた shares no character bigram with 書く (書い, いた); its base form is 書く.
        let hits = ix.search(&["p"], "書いた", 10).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        drop(ix);
        // Bigrams alone cannot find it.
        let plain = KeywordIndex::open(dir.path()).unwrap();
        assert!(plain.search(&["p"], "書いた", 10).unwrap().is_empty());
        drop(plain);
        // Reopened with the same dictionary: no warning (the index records it).
        let (_, warning) = KeywordIndex::open(dir.path()).unwrap().with_morphology(m);
        assert_eq!(warning, None);
    }

    #[test]
    fn chunks_indexed_without_the_dictionary_are_reported() {
        let Some(m) = crate::morph::tests::shared() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let ix = KeywordIndex::open(dir.path()).unwrap();
        ix.upsert("a", "p", "点検", "毎月の点検を行う。").unwrap();
        ix.commit().unwrap();
        drop(ix);
        let (ix, warning) = KeywordIndex::open(dir.path()).unwrap().with_morphology(m);
        assert!(warning.unwrap_or_default().contains("bunko index rebuild"));
        // Bigram matches still work; after a refill the mark is written.
        assert_eq!(ix.search(&["p"], "点検", 10).unwrap().len(), 1);
        ix.mark_morphology_complete();
        assert!(dir.path().join(MORPH_MARK).is_file());
    }

    #[test]
    fn finds_english_by_stem_and_japanese_by_bigrams() {
        let ix = sample();
        assert_eq!(
            ix.search(&["p1"], "indexed library", 10).unwrap()[0].id,
            "en1"
        );
        assert_eq!(
            ix.search(&["p1"], "パッケージの作成", 10).unwrap()[0].id,
            "ja1"
        );
        assert_eq!(
            ix.search(&["p1"], "debian ライセンス", 10).unwrap().len(),
            2,
            "mixed-language query hits both"
        );
    }

    #[test]
    fn hits_carry_title_project_and_a_highlighted_snippet() {
        let ix = sample();
        let ja = ix.search(&["p1"], "パッケージの作成", 10).unwrap();
        assert_eq!(
            (ja[0].title.as_str(), ja[0].project.as_str()),
            ("パッケージ", "p1")
        );
        assert!(ja[0].snippet.contains("<b>"), "{}", ja[0].snippet);
    }

    #[test]
    fn project_filter_is_inside_the_query() {
        let ix = sample();
        let hits = ix.search(&["p1"], "library", 10).unwrap();
        assert!(hits.iter().all(|h| h.id != "other"), "{hits:?}");
        assert_eq!(ix.search(&["p2"], "library", 10).unwrap()[0].id, "other");
        assert!(ix.search(&[], "library", 10).unwrap().is_empty());
        assert_eq!(ix.search(&["p1", "p2"], "library", 10).unwrap().len(), 2);
    }

    #[test]
    fn get_returns_one_chunk_with_an_escaped_opening() {
        let ix = KeywordIndex::in_memory().unwrap();
        ix.upsert("x1", "p", "T", "a <b> & c").unwrap();
        ix.commit().unwrap();
        let h = ix.get("x1").unwrap().unwrap();
        assert_eq!(
            (h.title.as_str(), h.snippet.as_str()),
            ("T", "a &lt;b&gt; &amp; c")
        );
        assert!(ix.get("nope").unwrap().is_none());
    }

    #[test]
    fn upsert_replaces_and_delete_removes() {
        let ix = sample();
        ix.upsert("en1", "p1", "Renamed", "nothing about the old words")
            .unwrap();
        ix.delete("ja2").unwrap();
        ix.commit().unwrap();
        assert_eq!(ix.num_docs(), 3);
        assert!(ix.search(&["p1"], "cataloguing", 10).unwrap().is_empty());
        assert!(ix.search(&["p1"], "著作権", 10).unwrap().is_empty());
    }

    #[test]
    fn odd_queries_return_valid_empty_results() {
        let ix = sample();
        for q in [
            "",
            "   ",
            "!!!",
            "🎉🎉🎉",
            "\u{0}\u{1b}[31m",
            &"あ".repeat(10_000),
        ] {
            assert!(ix.search(&["p1"], q, 10).is_ok(), "{q:?}");
        }
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ix = KeywordIndex::open(dir.path()).unwrap();
            ix.upsert("a", "p", "", "persisted text").unwrap();
            ix.commit().unwrap();
        }
        let ix = KeywordIndex::open(dir.path()).unwrap();
        assert_eq!(ix.search(&["p"], "persisted", 5).unwrap()[0].id, "a");
    }

    #[test]
    fn document_filter_is_inside_the_query() {
        let ix = KeywordIndex::in_memory().unwrap();
        for i in 0..30 {
            ix.upsert_chunk(&format!("a:{i}"), "p", "a", "T", "heron heron heron river")
                .unwrap();
        }
        ix.upsert_chunk("b:0", "p", "b", "T", "heron river")
            .unwrap();
        ix.commit().unwrap();
        // k = 5: the weaker document's chunk is still found when the filter asks for it.
        let hits = ix
            .search_filtered(&["p"], &crate::DocScope::only(["b"]), "heron", 5, 5)
            .unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            vec!["b:0"]
        );
        assert!(
            ix.search_filtered(
                &["p"],
                &crate::DocScope::only(Vec::<String>::new()),
                "heron",
                5,
                5
            )
            .unwrap()
            .is_empty()
        );
        assert_eq!(
            ix.search_filtered(&["p"], &crate::DocScope::all(), "heron", 5, 5)
                .unwrap()
                .len(),
            5
        );
        // Excluded: every chunk of `a` left out inside the query, `b` found.
        let mut except = crate::DocScope::all();
        except.except.insert("a".into());
        let hits = ix.search_filtered(&["p"], &except, "heron", 5, 5).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            vec!["b:0"]
        );
    }

    #[test]
    fn documents_replace_atomically_and_old_schemas_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyword");
        let ix = KeywordIndex::open(&path).unwrap();
        ix.upsert_chunk("d1:0", "p", "d1", "T", "alpha beta")
            .unwrap();
        ix.upsert_chunk("d1:1", "p", "d1", "T", "gamma").unwrap();
        ix.upsert_chunk("d2:0", "p", "d2", "U", "delta").unwrap();
        ix.commit().unwrap();
        assert_eq!(ix.count_document("d1").unwrap(), 2);
        assert_eq!(
            ix.documents().unwrap(),
            vec!["d1".to_owned(), "d2".to_owned()]
        );
        // Replace d1 with one chunk: before the commit, readers still see the old two.
        ix.delete_document("d1").unwrap();
        ix.upsert_chunk("d1:0", "p", "d1", "T", "epsilon").unwrap();
        assert_eq!(ix.count_document("d1").unwrap(), 2);
        ix.commit().unwrap();
        assert_eq!(ix.count_document("d1").unwrap(), 1);
        assert!(ix.search(&["p"], "gamma", 5).unwrap().is_empty());
        ix.delete_document("d2").unwrap();
        ix.commit().unwrap();
        assert_eq!(ix.documents().unwrap(), vec!["d1".to_owned()]);
        drop(ix);

        // An index with another schema: open refuses, open_or_replace starts afresh.
        let other = dir.path().join("other");
        {
            let mut b = Schema::builder();
            b.add_text_field("id", STRING | STORED);
            let old = Index::create_in_dir(
                {
                    std::fs::create_dir_all(&other).unwrap();
                    &other
                },
                b.build(),
            )
            .unwrap();
            drop(old);
        }
        assert!(matches!(
            KeywordIndex::open(&other),
            Err(IndexError::Schema(_))
        ));
        let (fresh, replaced) = KeywordIndex::open_or_replace(&other).unwrap();
        assert!(replaced);
        assert_eq!(fresh.num_docs(), 0);
        assert!(other.with_extension("old").exists());
    }
}
