//! `/api/v1/search`: keyword search now; the vector half is reported as unavailable until the
//! embedder exists (an empty half is always reported, never hidden).

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
    /// HTML with the matched terms in `<b>`.
    snippet: String,
    /// BM25 score of the keyword half.
    keyword_score: f32,
    keyword_rank: usize,
    /// Rank in the vector half (absent while it is unavailable).
    vector_rank: Option<usize>,
    /// Reciprocal-rank fusion score.
    fused_score: f64,
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
    run(&s, &p, q).await
}

/// The same as `GET`, with the parameters as a JSON body.
#[utoipa::path(post, path = "/api/v1/search", tag = "search", request_body = SearchParams,
    responses((status = 200, body = SearchResponse)), security(("bearer" = [])))]
pub async fn post(
    Scoped(p, _): Scoped<SearchScope>,
    State(s): State<AppState>,
    Json(q): Json<SearchParams>,
) -> ApiResult<axum::Json<SearchResponse>> {
    run(&s, &p, q).await
}

async fn run(
    s: &AppState,
    p: &Principal,
    params: SearchParams,
) -> ApiResult<axum::Json<SearchResponse>> {
    let started = Instant::now();
    let query = parse_query(params.q.as_deref(), params.k, params.mode.as_deref())?;
    let projects = searchable_projects(s.store.as_ref(), p, params.project.as_deref()).await?;
    let Ok(_permit) = s.search_permits.clone().try_acquire_owned() else {
        return Err(ApiError(
            Error::unavailable("search is at capacity; retry shortly")
                .with_retry_after(Duration::from_secs(1)),
        ));
    };
    let ids: Vec<String> = projects.iter().map(|p| p.id.to_string()).collect();
    let keyword = if query.mode == Mode::Vector {
        Vec::new()
    } else {
        let (ix, text, k) = (s.keyword.clone(), query.text.clone(), query.k);
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            ix.search(&refs, &text, k)
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)?
    };
    let ranked: Vec<String> = keyword.iter().map(|h| h.id.clone()).collect();
    let fused = bunko_core::search::rrf(
        &[bunko_core::search::Leg {
            ids: &ranked,
            weight: 1.0,
        }],
        60.0,
    );
    let fused_of: HashMap<&str, f64> = fused.iter().map(|(id, sc)| (id.as_str(), *sc)).collect();
    let results = keyword
        .iter()
        .enumerate()
        .map(|(i, h)| SearchHit {
            id: h.id.clone(),
            project_id: Uuid::parse_str(&h.project).ok(),
            title: h.title.clone(),
            snippet: h.snippet.clone(),
            keyword_score: h.score,
            keyword_rank: i + 1,
            vector_rank: None,
            fused_score: *fused_of.get(h.id.as_str()).unwrap_or(&0.0),
        })
        .collect::<Vec<_>>();
    let mut legs = HashMap::new();
    let keyword_status = if query.mode == Mode::Vector {
        "skipped"
    } else {
        "ok"
    };
    legs.insert(
        "keyword".to_owned(),
        Leg {
            status: keyword_status.into(),
            hits: results.len(),
            reason: None,
        },
    );
    legs.insert(
        "vector".to_owned(),
        Leg {
            status: "unavailable".into(),
            hits: 0,
            reason: Some("no embedding model is configured in this build".into()),
        },
    );
    let mut warnings = query.warnings;
    if query.mode != Mode::Keyword {
        warnings.push("the vector half is unavailable: results are keyword-only".into());
    }
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
