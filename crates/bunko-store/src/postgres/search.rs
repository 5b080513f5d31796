//! The search index in PostgreSQL, so every replica searches the same chunks: the keyword half
//! is a `tsvector` of bunko's own analyzer tokens (the caller tokenises with the same
//! multilingual and Japanese analyzers as the embedded index — PostgreSQL's text search
//! configurations know neither Japanese nor bunko's normalisation), ranked with `ts_rank`
//! under a GIN index; the vector half is a pgvector column under an HNSW index (cosine).
//! Both are derived data: their tables are made here (not by the metadata migrations) and
//! `bunko index rebuild` refills them from the stored chunks.
//!
//! Project permissions and document scopes are `WHERE` clauses of the ranking query itself.
//! Vector search uses pgvector's iterative index scan, so a filter that excludes most of the
//! nearest neighbours still returns `k` allowed ones.

use super::db_err;
use bunko_core::ports::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Advisory-lock key for creating the search tables (one namespace with the store's).
const LOCK_SEARCH: i64 = 0x6275_6e6b_0003;

/// A chunk as the keyword half stores it: its text and the analyzer's tokens, in order.
#[derive(Debug, Clone)]
pub struct IndexedChunk {
    pub id: String,
    pub text: String,
    /// Multilingual tokens of the text (stemmed English, CJK bigrams), in order.
    pub text_terms: Vec<String>,
    /// Japanese words (base forms) of the title and text; empty without a dictionary.
    pub words: Vec<String>,
    /// The vector of `passage: title + text`, when the vector half is on.
    pub vector: Option<Vec<f32>>,
}

/// One keyword hit.
#[derive(Debug, Clone, PartialEq)]
pub struct PgHit {
    pub id: String,
    pub project: String,
    pub document: String,
    pub score: f32,
    pub title: String,
    pub text: String,
}

/// What a keyword query looks for: tokens in the analyzer's form.
#[derive(Debug, Clone, Default)]
pub struct KeywordQuery {
    /// Non-CJK tokens (full weight).
    pub plain: Vec<String>,
    /// CJK bigrams, weighted `bigram_weight`.
    pub cjk: Vec<String>,
    /// Japanese words (full weight).
    pub words: Vec<String>,
    pub bigram_weight: f32,
}

/// `only`: just these documents (None: all); `except`: never these.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub only: Option<Vec<String>>,
    pub except: Vec<String>,
}

pub struct PgSearch {
    pool: PgPool,
    vectors: std::sync::RwLock<Vectors>,
    /// How often each token occurs, from PostgreSQL's statistics (refreshed every minute).
    stats: std::sync::Mutex<Option<(std::time::Instant, Arc<TermStats>)>>,
    /// Rows a keyword query may rank (estimated); 0 = every matching row.
    candidates: std::sync::atomic::AtomicUsize,
}

/// Rows a keyword query ranks at most by default (estimated from the statistics), unless its
/// rarest token alone matches more: its tokens join the row filter rarest first while the
/// estimate stays within this; the rest still count in the ranking. See [`PgSearch::keyword`];
/// `search.pg_candidate_rows` sets it.
pub const CANDIDATE_ROWS: usize = 2_000;

/// Token frequencies: the share of rows holding each of the most common tokens, as ANALYZE
/// samples them (`pg_stats.most_common_elems` of the tsvector column).
#[derive(Debug, Default)]
struct TermStats {
    rows: f64,
    share: HashMap<String, f32>,
    /// The share of the least common token listed: any token not listed is rarer.
    floor: f32,
}

impl TermStats {
    /// The tokens to filter rows by: rarest first while the estimated rows stay within
    /// `budget` (at least one). A token the statistics do not list counts as half the least
    /// common listed one.
    fn filter<'a>(&self, tokens: &'a [String], budget: usize) -> Vec<&'a String> {
        let mut by_share: Vec<(f32, &String)> = tokens
            .iter()
            // A token not listed is rarer than every listed one.
            .map(|t| (self.share.get(t).copied().unwrap_or(self.floor / 2.0), t))
            .collect();
        by_share.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let mut rows = 0.0;
        let mut out = Vec::new();
        for (share, t) in by_share {
            rows += f64::from(share) * self.rows;
            if !out.is_empty() && rows > budget as f64 {
                break;
            }
            out.push(t);
        }
        out
    }
}

/// The vector half's state: prepared lazily, when the embedder is first loaded.
#[derive(Debug, Clone, PartialEq)]
enum Vectors {
    Off,
    /// The vector column's dimensions and the model it holds vectors of.
    On(usize, String),
    /// Why it cannot be used (pgvector missing, another model's vectors).
    Unavailable(String),
}

/// A tsvector literal: each distinct lexeme with its positions (1-based, at most 256 per
/// lexeme, as PostgreSQL keeps), title lexemes weighted A, text lexemes D.
pub fn tsvector_literal(title: &[String], text: &[String], words: &[String]) -> String {
    let mut at: HashMap<&str, Vec<String>> = HashMap::new();
    let mut pos = 0u32;
    for (weight, list) in [("A", title), ("", text), ("", words)] {
        for t in list {
            pos = (pos + 1).min(16_383);
            let v = at.entry(t.as_str()).or_default();
            if v.len() < 256 {
                v.push(format!("{pos}{weight}"));
            }
        }
    }
    let mut lexemes: Vec<_> = at.into_iter().collect();
    lexemes.sort();
    let mut out = String::new();
    for (lex, positions) in lexemes {
        if lex.is_empty() || lex.len() > MAX_LEXEME {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push('\'');
        out.push_str(&lex.replace('\\', "\\\\").replace('\'', "''"));
        out.push_str("':");
        out.push_str(&positions.join(","));
    }
    out
}

/// A tsquery of alternatives: `'a' | 'b'` (None when empty).
/// The longest lexeme PostgreSQL keeps (bytes).
const MAX_LEXEME: usize = 2046;

fn tsquery_any(terms: &[String]) -> Option<String> {
    let parts: Vec<String> = terms
        .iter()
        .filter(|t| !t.is_empty() && t.len() <= MAX_LEXEME)
        .map(|t| format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" | "))
}

/// pgvector's text form `[a,b,…]`.
fn vector_literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let x = if x.is_finite() { *x } else { 0.0 };
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

impl PgSearch {
    /// Connects and makes the search tables when missing. `vectors` = (dimensions, model
    /// fingerprint) of the configured embedder: the vector table is made for them; vectors of
    /// another model (or a server without pgvector) leave the vector half unavailable with the
    /// reason and the fix, never mixed.
    pub async fn open(
        url: &str,
        max_connections: u32,
        vectors: Option<(usize, &str)>,
    ) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidState(format!("database URL: {e}")))?
            .application_name("bunko-search");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        Self::with_pool(pool, vectors).await
    }

    /// [`PgSearch::open`] on a pool the caller already has (the store's: one pool per process).
    pub async fn with_pool(pool: PgPool, vectors: Option<(usize, &str)>) -> StoreResult<Self> {
        let mut conn = pool.acquire().await.map_err(db_err)?;
        let mut tx = conn.begin().await.map_err(db_err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_SEARCH)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS search_meta (
                 key   TEXT COLLATE \"C\" PRIMARY KEY,
                 value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS search_chunks (
                 id          TEXT COLLATE \"C\" PRIMARY KEY,
                 project_id  TEXT COLLATE \"C\" NOT NULL,
                 document_id TEXT COLLATE \"C\" NOT NULL,
                 title       TEXT NOT NULL,
                 text        TEXT NOT NULL,
                 terms       tsvector NOT NULL);
             CREATE INDEX IF NOT EXISTS search_chunks_terms ON search_chunks USING gin (terms);
             CREATE INDEX IF NOT EXISTS search_chunks_document ON search_chunks (document_id);
             CREATE INDEX IF NOT EXISTS search_chunks_project ON search_chunks (project_id);",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        drop(conn);
        let s = Self {
            pool,
            vectors: std::sync::RwLock::new(Vectors::Off),
            stats: std::sync::Mutex::new(None),
            candidates: std::sync::atomic::AtomicUsize::new(CANDIDATE_ROWS),
        };
        if let Some((d, fingerprint)) = vectors {
            s.enable_vectors(d, fingerprint).await;
        }
        Ok(s)
    }

    /// Prepares the vector half for a model (once per model; the table is made for its
    /// dimensions when missing). Another model's vectors leave the half unavailable, with the
    /// reason and the fix.
    pub async fn enable_vectors(&self, dims: usize, fingerprint: &str) {
        if matches!(&*self.read_vectors(), Vectors::On(d, f) if *d == dims && f == fingerprint) {
            return;
        }
        let state = match self.pool.acquire().await {
            Ok(mut conn) => match Self::prepare_vectors(&mut conn, dims, fingerprint).await {
                Ok(()) => Vectors::On(dims, fingerprint.to_owned()),
                Err(why) => Vectors::Unavailable(why),
            },
            Err(e) => Vectors::Unavailable(format!("database: {e}")),
        };
        *self.vectors.write().unwrap_or_else(|e| e.into_inner()) = state;
    }

    fn read_vectors(&self) -> std::sync::RwLockReadGuard<'_, Vectors> {
        self.vectors.read().unwrap_or_else(|e| e.into_inner())
    }

    fn dims(&self) -> Option<usize> {
        match &*self.read_vectors() {
            Vectors::On(d, _) => Some(*d),
            _ => None,
        }
    }

    async fn prepare_vectors(
        conn: &mut sqlx::PgConnection,
        dims: usize,
        fingerprint: &str,
    ) -> Result<(), String> {
        let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_SEARCH)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        let has_vector: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        if !has_vector {
            sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    format!(
                        "PostgreSQL has no pgvector extension bunko may create ({e}): install \
                         pgvector and run `CREATE EXTENSION vector` as a superuser"
                    )
                })?;
        }
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM search_meta WHERE key = 'vector_model'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
        match stored {
            Some(f) if f != fingerprint => {
                return Err(format!(
                    "the vectors in PostgreSQL were made by another embedding model ({f}); \
                     run `bunko index rebuild` to replace them with the configured one's"
                ));
            }
            Some(_) => {}
            None => {
                // Audited: `dims` is a number.
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP TABLE IF EXISTS search_vectors;
                     CREATE TABLE search_vectors (
                         id          TEXT COLLATE \"C\" PRIMARY KEY,
                         project_id  TEXT COLLATE \"C\" NOT NULL,
                         document_id TEXT COLLATE \"C\" NOT NULL,
                         embedding   vector({dims}) NOT NULL);
                     CREATE INDEX search_vectors_hnsw ON search_vectors
                         USING hnsw (embedding vector_cosine_ops);
                     CREATE INDEX search_vectors_document ON search_vectors (document_id);"
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
                sqlx::query("INSERT INTO search_meta (key, value) VALUES ('vector_model', $1)")
                    .bind(fingerprint)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().await.map_err(|e| e.to_string())
    }

    /// Why the vector half is unavailable, if it is.
    pub fn vector_unavailable(&self) -> Option<String> {
        match &*self.read_vectors() {
            Vectors::Unavailable(why) => Some(why.clone()),
            _ => None,
        }
    }

    pub fn vectors_on(&self) -> bool {
        self.dims().is_some()
    }

    /// Replaces a document's chunks in both halves in one transaction (readers see the old
    /// chunks or the new ones, never a mix). Vectors are written when given and the vector
    /// half is on.
    pub async fn replace_document(
        &self,
        document: &str,
        project: &str,
        title: &str,
        title_terms: &[String],
        chunks: &[IndexedChunk],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("DELETE FROM search_chunks WHERE document_id = $1")
            .bind(document)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if self.dims().is_some() {
            sqlx::query("DELETE FROM search_vectors WHERE document_id = $1")
                .bind(document)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let terms: Vec<String> = chunks
            .iter()
            .map(|c| tsvector_literal(title_terms, &c.text_terms, &c.words))
            .collect();
        sqlx::query(
            "INSERT INTO search_chunks (id, project_id, document_id, title, text, terms)
             SELECT u.id, $1, $2, $3, u.text, u.terms::tsvector
             FROM unnest($4::text[], $5::text[], $6::text[]) AS u (id, text, terms)",
        )
        .bind(project)
        .bind(document)
        .bind(title)
        .bind(chunks.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
        .bind(chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>())
        .bind(terms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if self.dims().is_some() {
            let with: Vec<&IndexedChunk> = chunks.iter().filter(|c| c.vector.is_some()).collect();
            if !with.is_empty() {
                sqlx::query(
                    "INSERT INTO search_vectors (id, project_id, document_id, embedding)
                     SELECT u.id, $1, $2, u.v::vector
                     FROM unnest($3::text[], $4::text[]) AS u (id, v)",
                )
                .bind(project)
                .bind(document)
                .bind(with.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
                .bind(
                    with.iter()
                        .map(|c| vector_literal(c.vector.as_deref().unwrap_or_default()))
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)
    }

    /// Removes a document's chunks from both halves.
    pub async fn delete_document(&self, document: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("DELETE FROM search_chunks WHERE document_id = $1")
            .bind(document)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if self.dims().is_some() {
            sqlx::query("DELETE FROM search_vectors WHERE document_id = $1")
                .bind(document)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    /// Chunks per document in each half: `document → (keyword, vector)`.
    pub async fn document_counts(&self) -> StoreResult<HashMap<String, (usize, usize)>> {
        let mut out: HashMap<String, (usize, usize)> = HashMap::new();
        let rows = sqlx::query(
            "SELECT document_id, count(*) AS n FROM search_chunks GROUP BY document_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        for r in rows {
            let d: String = r.try_get("document_id").map_err(db_err)?;
            let n: i64 = r.try_get("n").map_err(db_err)?;
            out.entry(d).or_default().0 = n as usize;
        }
        if self.dims().is_some() {
            let rows = sqlx::query(
                "SELECT document_id, count(*) AS n FROM search_vectors GROUP BY document_id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            for r in rows {
                let d: String = r.try_get("document_id").map_err(db_err)?;
                let n: i64 = r.try_get("n").map_err(db_err)?;
                out.entry(d).or_default().1 = n as usize;
            }
        }
        Ok(out)
    }

    /// (chunks in the keyword half, vectors).
    pub async fn counts(&self) -> StoreResult<(u64, u64)> {
        let k: i64 = sqlx::query_scalar("SELECT count(*) FROM search_chunks")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let v: i64 = if self.dims().is_some() {
            sqlx::query_scalar("SELECT count(*) FROM search_vectors")
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?
        } else {
            0
        };
        Ok((k.max(0) as u64, v.max(0) as u64))
    }

    /// Empties both halves (before a rebuild); the vector table is remade for the configured
    /// model on the next open.
    pub async fn clear(&self, forget_vector_model: bool) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("TRUNCATE search_chunks")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if self.dims().is_some() {
            sqlx::query("TRUNCATE search_vectors")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        if forget_vector_model {
            sqlx::query("DELETE FROM search_meta WHERE key = 'vector_model'")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        if forget_vector_model {
            *self.vectors.write().unwrap_or_else(|e| e.into_inner()) = Vectors::Off;
        }
        Ok(())
    }

    /// Refreshes PostgreSQL's statistics of the index (after a bulk load; autovacuum does it
    /// otherwise), and forgets the token frequencies read from them.
    pub async fn analyze(&self) -> StoreResult<()> {
        sqlx::query("ANALYZE search_chunks")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// Rows a keyword query ranks at most (estimated); 0 ranks every matching row.
    pub fn set_candidate_rows(&self, rows: usize) {
        self.candidates
            .store(rows, std::sync::atomic::Ordering::Relaxed);
    }

    /// The statistics' token frequencies (read at most once a minute; None before the table
    /// was first analysed, or when they cannot be read).
    async fn term_stats(&self) -> Option<Arc<TermStats>> {
        {
            let cached = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, s)) = cached.as_ref()
                && at.elapsed() < std::time::Duration::from_secs(60)
            {
                return Some(s.clone());
            }
        }
        let row = sqlx::query(
            "SELECT s.most_common_elems::text::text[] AS elems,
                    s.most_common_elem_freqs AS freqs,
                    c.reltuples::float8 AS rows
             FROM pg_stats s
             JOIN pg_class c ON c.oid = 'search_chunks'::regclass
             WHERE s.schemaname = current_schema()
               AND s.tablename = 'search_chunks' AND s.attname = 'terms'",
        )
        .fetch_optional(&self.pool)
        .await;
        let stats = match row {
            Ok(Some(r)) => {
                let elems: Option<Vec<String>> = r.try_get("elems").ok().flatten();
                let freqs: Option<Vec<f32>> = r.try_get("freqs").ok().flatten();
                let rows: f64 = r.try_get("rows").unwrap_or(0.0);
                match (elems, freqs) {
                    // The frequencies list one per token, then the least and greatest of
                    // them and the share of empty vectors.
                    (Some(e), Some(f)) if rows > 0.0 && f.len() >= e.len() + 2 => TermStats {
                        rows,
                        floor: f[e.len()],
                        share: e.into_iter().zip(f).collect(),
                    },
                    _ => TermStats::default(),
                }
            }
            Ok(None) => TermStats::default(),
            Err(e) => {
                tracing::debug!(error = %e, "reading the search index's token statistics");
                TermStats::default()
            }
        };
        let stats = Arc::new(stats);
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), stats.clone()));
        (stats.rows > 0.0).then_some(stats)
    }

    /// The best `k` chunks for the query's tokens in `projects` (and the scope), by `ts_rank`:
    /// plain tokens and Japanese words at full weight, CJK bigrams at `bigram_weight`.
    ///
    /// A GIN index finds the rows holding a token but cannot rank them, so every row the
    /// filter lets through is ranked; a paragraph-long query OR-ing dozens of tokens matches
    /// most of the table. So the filter holds the query's rarest tokens only — as many as keep
    /// the estimated rows within [`CANDIDATE_ROWS`] (at least one) — and the ranking counts
    /// all of them: a chunk holding none of the rare tokens, only common ones, is not ranked —
    /// unless fewer than `k` chunks hold them, when the filter is widened.
    pub async fn keyword(
        &self,
        projects: &[String],
        scope: &Scope,
        q: &KeywordQuery,
        k: usize,
    ) -> StoreResult<Vec<PgHit>> {
        let full: Vec<String> = q.plain.iter().chain(&q.words).cloned().collect();
        let all: Vec<String> = full
            .iter()
            .chain(&q.cjk)
            .filter(|t| !t.is_empty() && t.len() <= MAX_LEXEME)
            .cloned()
            .collect();
        if projects.is_empty() || k == 0 || scope.only.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let stats = self.term_stats().await;
        let mut budget = self.candidates.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let filter: Vec<String> = match &stats {
                Some(stats) if budget > 0 => {
                    stats.filter(&all, budget).into_iter().cloned().collect()
                }
                _ => all.clone(),
            };
            let hits = self.ranked(projects, scope, q, &full, &filter, k).await?;
            // Fewer than `k` rows hold the rare tokens (the statistics overestimate tokens
            // they do not list, or a filter excludes most rows): widen the filter, up to every
            // token, so a search never comes back short while more rows match.
            if hits.len() >= k || filter.len() == all.len() {
                return Ok(hits);
            }
            budget = budget.saturating_mul(8);
        }
    }

    /// The best `k` rows holding any token of `filter`, ranked by every token.
    async fn ranked(
        &self,
        projects: &[String],
        scope: &Scope,
        q: &KeywordQuery,
        full: &[String],
        filter: &[String],
        k: usize,
    ) -> StoreResult<Vec<PgHit>> {
        let Some(any) = tsquery_any(filter) else {
            return Ok(Vec::new());
        };
        // Title (A) and text (D) count alike; normalisation 1 divides by 1 + log(length), as
        // BM25 discounts long chunks.
        let rows = sqlx::query(
            "SELECT id, project_id, document_id, title, text,
                    (COALESCE(ts_rank('{1, 0.2, 0.4, 1}', terms, $2::tsquery, 1), 0)
                     + $3 * COALESCE(ts_rank('{1, 0.2, 0.4, 1}', terms, $4::tsquery, 1), 0))::REAL
                        AS score
             FROM search_chunks
             WHERE terms @@ $1::tsquery
               AND project_id = ANY($5)
               AND ($6::text[] IS NULL OR document_id = ANY($6))
               AND NOT (document_id = ANY($7))
             ORDER BY score DESC, id
             LIMIT $8",
        )
        .bind(&any)
        .bind(tsquery_any(full))
        .bind(q.bigram_weight)
        .bind(tsquery_any(&q.cjk))
        .bind(projects)
        .bind(&scope.only)
        .bind(&scope.except)
        .bind(k as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(hit).collect()
    }

    /// The `k` nearest chunks to `query` in `projects` (and the scope), as (project, id,
    /// cosine similarity), best first.
    pub async fn vector(
        &self,
        projects: &[String],
        scope: &Scope,
        query: &[f32],
        k: usize,
    ) -> StoreResult<Vec<(String, String, f32)>> {
        if let Some(why) = self.vector_unavailable() {
            return Err(StoreError::Unavailable(why));
        }
        if self.dims().is_none()
            || projects.is_empty()
            || k == 0
            || scope.only.as_ref().is_some_and(Vec::is_empty)
        {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Filtered HNSW: keep walking the graph until k rows pass the filter (pgvector 0.8).
        sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // Audited: a number.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL hnsw.ef_search = {}",
            (k * 2).clamp(40, 1000)
        )))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let rows = sqlx::query(
            "SELECT project_id, id, (1 - (embedding <=> $1::vector))::REAL AS score
             FROM search_vectors
             WHERE project_id = ANY($2)
               AND ($3::text[] IS NULL OR document_id = ANY($3))
               AND NOT (document_id = ANY($4))
             ORDER BY embedding <=> $1::vector
             LIMIT $5",
        )
        .bind(vector_literal(query))
        .bind(projects)
        .bind(&scope.only)
        .bind(&scope.except)
        .bind(k as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("project_id").map_err(db_err)?,
                    r.try_get("id").map_err(db_err)?,
                    r.try_get::<f32, _>("score").map_err(db_err)?,
                ))
            })
            .collect()
    }

    /// One chunk as the keyword half holds it (score 0).
    pub async fn get(&self, id: &str) -> StoreResult<Option<PgHit>> {
        sqlx::query(
            "SELECT id, project_id, document_id, title, text, 0::REAL AS score
             FROM search_chunks WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(hit)
        .transpose()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn hit(r: &sqlx::postgres::PgRow) -> StoreResult<PgHit> {
    Ok(PgHit {
        id: r.try_get("id").map_err(db_err)?,
        project: r.try_get("project_id").map_err(db_err)?,
        document: r.try_get("document_id").map_err(db_err)?,
        score: r.try_get("score").map_err(db_err)?,
        title: r.try_get("title").map_err(db_err)?,
        text: r.try_get("text").map_err(db_err)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsvector_literals_quote_and_weight() {
        let s = |v: &[&str]| v.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            tsvector_literal(&s(&["zoo"]), &s(&["zoo", "o'k", "a\\b"]), &s(&["東京"])),
            "'a\\\\b':4 'o''k':3 'zoo':1A,2 '東京':5"
        );
        assert_eq!(tsquery_any(&s(&["a", "o'k"])).unwrap(), "'a' | 'o''k'");
        assert_eq!(tsquery_any(&[]), None);
        assert_eq!(vector_literal(&[0.5, -1.0, f32::NAN]), "[0.5,-1,0]");
    }
}
