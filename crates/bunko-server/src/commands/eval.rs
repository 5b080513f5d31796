#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output and progress

use crate::cli::CliError;
use bunko_core::eval::{Dataset, mrr_at, ndcg_at, recall_at};
use bunko_core::search::{Leg, Mode, rrf};
use bunko_embed::Role;
use bunko_index::keyword::KeywordIndex;
use bunko_index::vector::VectorIndex;
use std::path::Path;
use std::time::Instant;

const PROJECT: &str = "eval";
/// Hits each half contributes (recall@100 needs 100).
const CANDIDATES: usize = 100;

/// `bunko eval retrieval`: one index per run, in memory; the dataset is never modified.
/// Vectors come through the embedding cache, so a second run only embeds the queries.
pub fn retrieval(
    config: &bunko_core::config::Config,
    dir: &Path,
    mode: &str,
    analyzer: &str,
    json: bool,
) -> Result<(), CliError> {
    let mode = match mode {
        "hybrid" => Mode::Hybrid,
        "keyword" => Mode::Keyword,
        "vector" => Mode::Vector,
        other => {
            return Err(CliError::usage(format!("unknown mode `{other}`"))
                .hint("modes: hybrid, keyword, vector"));
        }
    };
    use bunko_index::analyzer::Variant;
    let variant = match analyzer {
        "auto" => None,
        other => Some(Variant::parse(other).ok_or_else(|| {
            CliError::usage(format!("unknown analyzer `{analyzer}`"))
                .hint("analyzers: auto, morph, words, multi, nostem, whitespace")
        })?),
    };
    let ds =
        Dataset::load(dir).map_err(|e| CliError::usage(format!("cannot read the dataset: {e}")))?;
    let encoder = if mode == Mode::Keyword {
        None
    } else {
        Some(
            crate::embedder::load(config)
                .map_err(|e| CliError::failure(e.0).hint("or use --mode keyword"))?
                .ok_or_else(|| {
                    CliError::usage("local.embedder is `none`").hint("use --mode keyword")
                })?,
        )
    };
    let fail = |e: bunko_index::keyword::IndexError| CliError::failure(e.to_string());
    let morph = match variant {
        None | Some(Variant::Morph | Variant::Words) => crate::app::japanese_morphology(config),
        Some(_) => None,
    };
    let variant = match (variant, &morph) {
        (Some(Variant::Morph | Variant::Words), None) => {
            return Err(CliError::failure(
                "the Japanese dictionary is not available (see the warning above)",
            )
            .hint("install Debian's mecab-ipadic, or use --analyzer multi"));
        }
        (Some(v), _) => v,
        (None, Some(_)) => Variant::Morph,
        (None, None) => Variant::Multi,
    };
    let mut ix = KeywordIndex::in_memory_with(variant).map_err(fail)?;
    if let Some(m) = morph {
        ix = ix.with_morphology(m).0;
    }
    if variant == Variant::Words {
        ix.set_bigram_weight_with_words(0.0);
    }
    let t = Instant::now();
    for d in &ds.docs {
        ix.upsert(&d.id, PROJECT, &d.title, &d.text).map_err(fail)?;
    }
    ix.commit().map_err(fail)?;
    let index_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let vectors = match &encoder {
        None => None,
        Some(enc) => {
            let cache = crate::embedder::open_cache(config, enc);
            let texts: Vec<String> = ds
                .docs
                .iter()
                .map(|d| crate::embedder::passage_text(&d.title, &d.text))
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let total = refs.len();
            let embedded =
                crate::embedder::embed_passages(enc, cache.as_ref(), &refs, None, |done| {
                    if !json {
                        eprint!("\rembedding {done}/{total}");
                    }
                });
            if !json {
                eprintln!();
            }
            let vx = VectorIndex::in_memory(enc.dim(), enc.fingerprint());
            for (d, v) in ds.docs.iter().zip(&embedded) {
                vx.upsert(PROJECT, &d.id, v)
                    .map_err(|e| CliError::failure(e.to_string()))?;
            }
            Some(vx)
        }
    };
    let embed_secs = t.elapsed().as_secs_f64();
    let judged = ds.judged();
    let (mut ndcg, mut mrr, mut recall) = (0.0, 0.0, 0.0);
    let mut latencies = Vec::with_capacity(judged.len());
    for q in &judged {
        let t = Instant::now();
        let keyword: Vec<String> = if mode == Mode::Vector {
            Vec::new()
        } else {
            let hits = ix
                .search_ranked(&[PROJECT], &q.text, CANDIDATES, 0)
                .map_err(fail)?;
            hits.into_iter().map(|h| h.id).collect()
        };
        let vector: Vec<String> = match (&encoder, &vectors) {
            (Some(enc), Some(vx)) => {
                let qv = enc.embed(&[q.text.as_str()], Role::Query);
                vx.search(&[PROJECT], qv.get(0), CANDIDATES)
                    .map_err(|e| CliError::failure(e.to_string()))?
                    .into_iter()
                    .map(|(_, id, _)| id)
                    .collect()
            }
            _ => Vec::new(),
        };
        let ranked: Vec<String> = match mode {
            Mode::Keyword => keyword,
            Mode::Vector => vector,
            Mode::Hybrid => rrf(
                &[
                    Leg {
                        ids: &keyword,
                        weight: config.search.keyword_weight,
                    },
                    Leg {
                        ids: &vector,
                        weight: config.search.vector_weight,
                    },
                ],
                config.search.rrf_k,
            )
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
        };
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let j = &ds.qrels[&q.id];
        ndcg += ndcg_at(10, &ranked, j);
        mrr += mrr_at(10, &ranked, j);
        recall += recall_at(100, &ranked, j);
    }
    let n = judged.len().max(1) as f64;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let out = serde_json::json!({
        "dataset": ds.name,
        "mode": mode.as_str(),
        "analyzer": variant.as_str(),
        "model": encoder.as_ref().map(|e| e.fingerprint().to_owned()),
        "documents": ds.docs.len(),
        "queries": judged.len(),
        "queries_skipped": ds.queries.len() - judged.len(),
        "ndcg_at_10": ndcg / n,
        "mrr_at_10": mrr / n,
        "recall_at_100": recall / n,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "index_seconds": index_secs,
        "embed_seconds": embed_secs,
    });
    if json {
        println!("{out}");
    } else {
        println!(
            "dataset {} ({} documents), mode {}",
            ds.name,
            ds.docs.len(),
            mode.as_str()
        );
        println!(
            "queries {} judged, {} skipped (no positive judgement)",
            judged.len(),
            ds.queries.len() - judged.len()
        );
        println!(
            "nDCG@10 {:.3}   MRR@10 {:.3}   recall@100 {:.3}",
            ndcg / n,
            mrr / n,
            recall / n
        );
        println!(
            "latency p50 {:.2} ms   p99 {:.2} ms   (indexing {:.2} s, embedding {:.2} s)",
            pct(0.5),
            pct(0.99),
            index_secs,
            embed_secs
        );
    }
    Ok(())
}

/// `bunko search`: the operator on the host may search every project.
pub async fn search(
    config: &bunko_core::config::Config,
    q: &str,
    project: Option<&str>,
    k: u32,
    mode: &str,
    json: bool,
) -> Result<(), CliError> {
    let query = bunko_core::search::parse_query(Some(q), Some(k), Some(mode))?;
    crate::app::prepare_data_dir(&config.data_dir)?;
    let (store, pg_store) = crate::app::open_store_parts(config).await?;
    let projects = match project {
        Some(p) => vec![bunko_core::projects::get(store.as_ref(), p).await?],
        None => {
            let page = bunko_core::ports::PageRequest {
                limit: bunko_core::ports::PageRequest::MAX_LIMIT,
                before: None,
            };
            store.list_projects(page).await?.items
        }
    };
    let morph = crate::app::japanese_morphology(config);
    let ix = crate::app::open_keyword_index_with(config, morph.clone())?;
    let pg = crate::app::open_postgres_index(config, pg_store.as_deref(), morph).await?;
    let vector = crate::embedder::VectorHalf::new(config);
    let ids: Vec<String> = projects.iter().map(|p| p.id.to_string()).collect();
    let pids: Vec<uuid::Uuid> = projects.iter().map(|p| p.id).collect();
    let scope = crate::routes::search::document_set(
        store.as_ref(),
        &pids,
        &bunko_core::search::SearchFilters::default(),
    )
    .await?;
    // On a blocking thread, as the server runs it (the PostgreSQL index is awaited from it).
    let search_config = config.search.clone();
    let (text, k, mode) = (query.text.clone(), query.k, query.mode);
    let mut out = tokio::task::spawn_blocking(move || {
        let engines = crate::routes::search::Engines {
            keyword: &ix,
            vector: &vector,
            pg: pg.as_deref(),
            config: &search_config,
            metrics: None,
        };
        crate::routes::search::search_blocking(&engines, &ids, &scope, &text, k, mode)
    })
    .await
    .map_err(|e| CliError::failure(e.to_string()))??;
    crate::routes::search::locate(store.as_ref(), &mut out.results).await?;
    for w in query.warnings.iter().chain(&out.warnings) {
        tracing::warn!("{w}");
    }
    for (name, leg) in [("keyword", &out.keyword), ("vector", &out.vector)] {
        let leg = serde_json::to_value(leg).unwrap_or_default();
        if let Some(reason) = leg["reason"].as_str() {
            tracing::warn!(
                "the {name} half is {}: {reason}",
                leg["status"].as_str().unwrap_or("?")
            );
        }
    }
    let hits = serde_json::to_value(&out.results).map_err(|e| CliError::failure(e.to_string()))?;
    let hits = hits.as_array().cloned().unwrap_or_default();
    for (i, h) in hits.iter().enumerate() {
        if json {
            println!("{h}");
        } else {
            let place = match (h["page_start"].as_u64(), h["section_path"].as_str()) {
                (Some(p), Some(s)) if !s.is_empty() => format!("  p.{p} · {s}"),
                (Some(p), _) => format!("  p.{p}"),
                _ => String::new(),
            };
            println!(
                "{:>3}. {:.4}  {}  {}{place}",
                i + 1,
                h["fused_score"].as_f64().unwrap_or(0.0),
                h["id"].as_str().unwrap_or(""),
                h["title"].as_str().unwrap_or("")
            );
        }
    }
    if !json {
        let legs = serde_json::json!({"keyword": out.keyword, "vector": out.vector});
        println!("legs: {legs}");
    }
    Ok(())
}
