//! `/api/v1/search`: the keyword half (tantivy BM25) and the vector half (the embedder + HNSW)
//! run side by side on a blocking thread and are fused by reciprocal rank in core. Each half
//! reports its status and hit count in `legs`: an empty or unavailable half is reported, never
//! hidden, and hybrid falls back to the other half with a warning.

use crate::app::AppState;
use crate::http::auth::{Scoped, SearchScope};
use crate::http::extract::{Json, Query};
use crate::http::{ApiError, ApiResult};
use axum::extract::State;
use bunko_core::Error;
use bunko_core::identity::Principal;
use bunko_core::search::{Mode, parse_query, searchable_projects};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The query, Japanese, English or mixed.
    q: Option<String>,
    /// Project id or slug; default: every project you may search.
    project: Option<String>,
    /// 1–100, default 10.
    k: Option<u32>,
    /// `hybrid` (default), `keyword` or `vector`.
    mode: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchHit {
    /// The chunk id.
    id: String,
    project_id: Option<Uuid>,
    title: String,
    /// HTML: the matched terms in `<b>` (keyword hits), else the opening of the chunk, escaped.
    snippet: String,
    /// BM25 score and 1-based rank in the keyword half (absent when it did not find this chunk).
    keyword_score: Option<f32>,
    keyword_rank: Option<usize>,
    /// Cosine similarity and 1-based rank in the vector half.
    vector_score: Option<f32>,
    vector_rank: Option<usize>,
    /// Reciprocal-rank fusion score: Σ weight / (rrf_k + rank) over the halves.
    fused_score: f64,
    /// Where the chunk comes from (absent for chunks indexed without a document).
    #[serde(skip_serializing_if = "Option::is_none")]
    document_id: Option<Uuid>,
    /// 1-based physical pages the chunk spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    page_start: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_end: Option<u32>,
    /// E.g. `第3章 > 第12条 > 2` or `3 Methods > 3.1 Data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    section_path: Option<String>,
    /// Character span in the document's normalised text (pages joined by a blank line).
    #[serde(skip_serializing_if = "Option::is_none")]
    char_start: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    char_end: Option<u32>,
    /// `ja`, `en` or `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<String>,
    /// True for a paper's references section.
    #[serde(skip_serializing_if = "Option::is_none")]
    is_references: Option<bool>,
}

impl SearchHit {
    /// The chunk's id (to look up where it comes from).
    pub fn chunk_id(&self) -> &str {
        &self.id
    }

    /// The title of the chunk's document.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Adds where the chunk comes from, from the store's record of it.
    pub fn locate(&mut self, c: &bunko_core::documents::ChunkRecord) {
        self.document_id = Some(c.document_id);
        self.page_start = Some(c.page_start);
        self.page_end = Some(c.page_end);
        self.section_path = Some(c.section_path.clone());
        self.char_start = Some(c.char_start);
        self.char_end = Some(c.char_end);
        self.language = Some(c.language.clone());
        self.is_references = Some(c.is_references);
    }
}

#[derive(Serialize, ToSchema)]
pub struct Leg {
    /// `ok` or `unavailable`.
    status: String,
    hits: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    query: String,
    mode: String,
    k: usize,
    projects: usize,
    results: Vec<SearchHit>,
    legs: HashMap<String, Leg>,
    warnings: Vec<String>,
    took_ms: f64,
}

/// Search the projects you may search.
#[utoipa::path(get, path = "/api/v1/search", tag = "search", params(SearchParams),
    responses((status = 200, body = SearchResponse), (status = 400, description = "query_empty, invalid_query")), security(("bearer" = [])))]
pub async fn get(
    Scoped(p, _): Scoped<SearchScope>,
    State(s): State<AppState>,
    Query(q): Query<SearchParams>,
) -> ApiResult<axum::Json<SearchResponse>> {
    run(&s, &p, q, bunko_core::search::SearchFilters::default()).await
}

/// Filters of `POST /api/v1/search`. A value may be one string or a list; a chunk must
/// belong to a ready document passing every filter given.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the shape parsed by bunko_core::search::parse_filters
pub struct SearchFilters {
    document_ids: Option<Vec<Uuid>>,
    /// `pdf`, `png`, `jpeg`, `tiff`, `html`, `markdown`, `text`.
    r#type: Option<Vec<String>>,
    /// `ja`, `en`, `other`.
    language: Option<Vec<String>>,
    /// Inclusive `YYYY-MM-DD`, on the document's date (metadata creation date, else the day added).
    date_from: Option<String>,
    date_to: Option<String>,
    /// Any of these tags.
    tags: Option<Vec<String>>,
    /// `upload`, `sample`, or a crawler's name.
    source: Option<Vec<String>>,
    /// `YYYY-MM-DD`: of documents with versions (a law's revisions, a paper's arXiv versions),
    /// the version valid on that day; without it, the current version.
    as_of: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    q: Option<String>,
    project: Option<String>,
    k: Option<u32>,
    mode: Option<String>,
    /// Malformed filters are 400 `invalid_filter` naming the field.
    #[schema(value_type = Option<SearchFilters>)]
    filters: Option<serde_json::Value>,
}

/// The same as `GET`, with the parameters as a JSON body, plus `filters`.
#[utoipa::path(post, path = "/api/v1/search", tag = "search", request_body = SearchBody,
    responses((status = 200, body = SearchResponse), (status = 400, description = "query_empty, invalid_query, invalid_filter")), security(("bearer" = [])))]
pub async fn post(
    Scoped(p, _): Scoped<SearchScope>,
    State(s): State<AppState>,
    Json(b): Json<SearchBody>,
) -> ApiResult<axum::Json<SearchResponse>> {
    let filters =
        bunko_core::search::parse_filters(b.filters.as_ref().unwrap_or(&serde_json::Value::Null))?;
    let q = SearchParams {
        q: b.q,
        project: b.project,
        k: b.k,
        mode: b.mode,
    };
    run(&s, &p, q, filters).await
}

pub struct Outcome {
    pub results: Vec<SearchHit>,
    pub keyword: Leg,
    pub vector: Leg,
    pub warnings: Vec<String>,
}

fn leg(status: &str, hits: usize, reason: Option<String>) -> Leg {
    Leg {
        status: status.into(),
        hits,
        reason,
    }
}

/// What one search runs on: the two halves and the fusion settings.
pub struct Engines<'a> {
    pub keyword: &'a bunko_index::keyword::KeywordIndex,
    pub vector: &'a crate::embedder::VectorHalf,
    /// The index in PostgreSQL, when configured: both halves' hits come from it (the vector
    /// half still embeds the query with `vector`'s model). Needs a Tokio runtime handle (the
    /// caller runs this on a blocking thread).
    pub pg: Option<&'a crate::pgindex::PgIndex>,
    pub config: &'a bunko_core::config::SearchConfig,
    /// Where the search's timing and legs are counted (`None` for one-off CLI searches).
    pub metrics: Option<&'a bunko_core::metrics::Metrics>,
}

/// Both halves and the fusion; blocking (tantivy, the encoder and the graph are CPU work).
/// Shared by the HTTP route and `bunko search`. `documents` says which documents' chunks may
/// come back (clauses of both halves' queries, not a filter on their results).
pub fn search_blocking(
    s: &Engines<'_>,
    projects: &[String],
    documents: &bunko_index::DocScope,
    text: &str,
    k: usize,
    mode: Mode,
) -> Result<Outcome, Error> {
    let started = std::time::Instant::now();
    let refs: Vec<&str> = projects.iter().map(String::as_str).collect();
    let cand = s.config.candidates.max(k);
    let mut warnings = Vec::new();
    // Captured here: in a hybrid search the keyword half runs on a second thread, which has
    // neither the caller's runtime context (for the PostgreSQL index) nor its span.
    let pg = s.pg.map(|pg| (pg, tokio::runtime::Handle::current()));
    let parent = tracing::Span::current();
    let keyword_half = || {
        if mode == Mode::Vector {
            return Ok((Vec::new(), leg("skipped", 0, None)));
        }
        let span = parent.in_scope(|| tracing::info_span!("search.keyword", candidates = cand));
        let hits = span.in_scope(|| match &pg {
            Some((pg, rt)) => rt
                .block_on(pg.keyword(projects, documents, text, cand, k))
                .map_err(Error::internal),
            None => s
                .keyword
                .search_filtered(&refs, documents, text, cand, k)
                .map_err(Error::internal),
        })?;
        let n = hits.len();
        Ok::<_, Error>((hits, leg("ok", n, None)))
    };
    let vector_half = |warnings: &mut Vec<String>| {
        if mode == Mode::Keyword {
            return (Vec::new(), leg("skipped", 0, None));
        }
        let _vector_span = tracing::info_span!("search.vector", candidates = cand).entered();
        match s.vector.get() {
            Ok(ready) => {
                let q = ready.encoder.embed(&[text], bunko_embed::Role::Query);
                if let Some(m) = s.metrics {
                    m.embed_texts.with_label_values(&["query", "model"]).inc();
                }
                if q.truncated[0] {
                    warnings.push(format!(
                        "the query is longer than the embedding model's {} tokens; the vector \
                         half used the first {}",
                        ready.encoder.window_tokens() + 2,
                        ready.encoder.window_tokens() + 2
                    ));
                }
                let found = match &pg {
                    Some((pg, rt)) => rt.block_on(pg.vector(
                        projects,
                        documents,
                        q.get(0),
                        (ready.encoder.dim(), ready.encoder.fingerprint()),
                        cand,
                    )),
                    None => ready
                        .index
                        .search_filtered(&refs, documents, q.get(0), cand)
                        .map_err(|e| e.to_string()),
                };
                match found {
                    Ok(hits) => {
                        let n = hits.len();
                        (hits, leg("ok", n, None))
                    }
                    // An index that cannot answer (PostgreSQL without pgvector, vectors of
                    // another model) is reported as an unavailable half, not an error.
                    Err(why) => {
                        warnings.push(
                            "the vector half is unavailable: results are keyword-only".into(),
                        );
                        (Vec::new(), leg("unavailable", 0, Some(why)))
                    }
                }
            }
            Err(why) => {
                warnings.push(if mode == Mode::Vector {
                    "the vector half is unavailable: no results".into()
                } else {
                    "the vector half is unavailable: results are keyword-only".into()
                });
                (Vec::new(), leg("unavailable", 0, Some(why.0)))
            }
        }
    };
    let ((keyword, keyword_leg), (vector, vector_leg)) = if mode == Mode::Hybrid {
        // Both halves at once: the keyword half on a second thread while this one embeds the
        // query (on rayon's pool) and walks the graph, so a hybrid search takes about the
        // slower half's time instead of their sum.
        std::thread::scope(|scope| {
            let keyword = scope.spawn(keyword_half);
            let vector = vector_half(&mut warnings);
            match keyword.join() {
                Ok(keyword) => Ok((keyword?, vector)),
                Err(_) => Err(Error::internal("the keyword half of the search panicked")),
            }
        })?
    } else {
        let keyword = keyword_half()?;
        (keyword, vector_half(&mut warnings))
    };
    let kw_ids: Vec<String> = keyword.iter().map(|h| h.id.clone()).collect();
    let vec_ids: Vec<String> = vector.iter().map(|(_, id, _)| id.clone()).collect();
    let fused = bunko_core::search::rrf(
        &[
            bunko_core::search::Leg {
                ids: &kw_ids,
                weight: s.config.keyword_weight,
            },
            bunko_core::search::Leg {
                ids: &vec_ids,
                weight: s.config.vector_weight,
            },
        ],
        s.config.rrf_k,
    );
    let kw_at: HashMap<&str, usize> = kw_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let vec_at: HashMap<&str, usize> = vec_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut results = Vec::with_capacity(k);
    for (id, fused_score) in fused.into_iter().take(k) {
        let kw = kw_at.get(id.as_str()).map(|&i| &keyword[i]);
        let vr = vec_at.get(id.as_str()).copied();
        // Keyword hits within the first k carry a highlighted snippet; any other result shows
        // the opening of its chunk.
        let shown = match kw {
            Some(h) if !h.snippet.is_empty() => Some(h.clone()),
            _ => match s.pg {
                Some(pg) => tokio::runtime::Handle::current()
                    .block_on(pg.get(&id))
                    .map_err(Error::internal)?,
                None => s.keyword.get(&id).map_err(Error::internal)?,
            },
        };
        let project = kw
            .map(|h| h.project.clone())
            .or_else(|| vr.map(|i| vector[i].0.clone()))
            .unwrap_or_default();
        results.push(SearchHit {
            project_id: Uuid::parse_str(&project).ok(),
            title: shown.as_ref().map(|h| h.title.clone()).unwrap_or_default(),
            snippet: shown.map(|h| h.snippet).unwrap_or_default(),
            keyword_score: kw.map(|h| h.score),
            keyword_rank: kw_at.get(id.as_str()).map(|i| i + 1),
            vector_score: vr.map(|i| vector[i].2),
            vector_rank: vr.map(|i| i + 1),
            fused_score,
            id,
            document_id: None,
            page_start: None,
            page_end: None,
            section_path: None,
            char_start: None,
            char_end: None,
            language: None,
            is_references: None,
        });
    }
    if let Some(m) = s.metrics {
        m.search_duration
            .with_label_values(&[mode.as_str()])
            .observe(started.elapsed().as_secs_f64());
        for (name, l) in [("keyword", &keyword_leg), ("vector", &vector_leg)] {
            let status = match (l.status.as_str(), l.hits) {
                ("ok", 0) => "empty",
                ("ok", _) => "ok",
                ("unavailable", _) => "unavailable",
                _ => continue,
            };
            m.search_legs.with_label_values(&[name, status]).inc();
        }
    }
    Ok(Outcome {
        results,
        keyword: keyword_leg,
        vector: vector_leg,
        warnings,
    })
}

/// Fills in each hit's document, pages and section from the store (one query for all).
pub async fn locate(
    store: &dyn bunko_core::ports::MetaStore,
    hits: &mut [SearchHit],
) -> Result<(), Error> {
    let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
    let chunks = store.chunks_by_id(&ids).await?;
    let by_id: HashMap<&str, &bunko_core::documents::ChunkRecord> =
        chunks.iter().map(|c| (c.id.as_str(), c)).collect();
    for h in hits {
        if let Some(c) = by_id.get(h.id.as_str()) {
            h.locate(c);
        }
    }
    Ok(())
}

/// Up to this many superseded versions are excluded by name; beyond, current ones are listed.
const MAX_EXCLUDED: usize = 2_000;

/// The documents a search may return, applied inside both index halves: with filters, the
/// documents passing them (current versions, or those valid `as_of`); without, every document
/// but the superseded versions (usually few, so nothing is listed for a plain search).
pub async fn document_set(
    store: &dyn bunko_core::ports::MetaStore,
    projects: &[Uuid],
    filters: &bunko_core::search::SearchFilters,
) -> Result<bunko_index::DocScope, Error> {
    if filters.is_empty() {
        let superseded = store.superseded_documents(projects).await?;
        // A corpus of many revisions (laws with their whole history) is better listed by its
        // current versions.
        if superseded.len() <= MAX_EXCLUDED {
            let mut scope = bunko_index::DocScope::all();
            scope.except = superseded.into_iter().map(|d| d.to_string()).collect();
            return Ok(scope);
        }
    }
    Ok(bunko_index::DocScope::only(
        store
            .filter_documents(projects, filters)
            .await?
            .into_iter()
            .map(|d| d.to_string()),
    ))
}

async fn run(
    s: &AppState,
    p: &Principal,
    params: SearchParams,
    filters: bunko_core::search::SearchFilters,
) -> ApiResult<axum::Json<SearchResponse>> {
    let started = Instant::now();
    let query = parse_query(params.q.as_deref(), params.k, params.mode.as_deref())?;
    let projects = searchable_projects(s.store.as_ref(), p, params.project.as_deref()).await?;
    let pids: Vec<Uuid> = projects.iter().map(|p| p.id).collect();
    let documents = document_set(s.store.as_ref(), &pids, &filters).await?;
    let Ok(_permit) = s.search_permits.clone().try_acquire_owned() else {
        return Err(ApiError(
            Error::unavailable("search is at capacity; retry shortly")
                .with_retry_after(Duration::from_secs(1)),
        ));
    };
    let ids: Vec<String> = projects.iter().map(|p| p.id.to_string()).collect();
    let (state, text, k, mode) = (s.clone(), query.text.clone(), query.k, query.mode);
    let out = crate::telemetry::spawn_blocking_in_span(move || {
        let engines = Engines {
            keyword: &state.keyword,
            vector: &state.vector,
            pg: state.pg_index.as_deref(),
            config: &state.config.search,
            metrics: Some(&state.metrics),
        };
        search_blocking(&engines, &ids, &documents, &text, k, mode)
    })
    .await
    .map_err(Error::internal)??;
    let mut results = out.results;
    locate(s.store.as_ref(), &mut results).await?;
    let mut warnings = query.warnings;
    warnings.extend(out.warnings);
    let legs = HashMap::from([
        ("keyword".to_owned(), out.keyword),
        ("vector".to_owned(), out.vector),
    ]);
    Ok(axum::Json(SearchResponse {
        query: query.text,
        mode: query.mode.as_str().into(),
        k: query.k,
        projects: projects.len(),
        results,
        legs,
        warnings,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}
