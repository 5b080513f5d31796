#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output and progress

//! `bunko index rebuild [--project P]`: the vector half is derived data. It is re-made from
//! the chunks the keyword index holds (with ingestion, from the database), embedded through
//! the cache, into a new directory that replaces the old one only when complete — a crash
//! mid-rebuild leaves the previous index in place.

use crate::cli::CliError;
use bunko_core::config::Config;
use bunko_index::keyword::KeywordIndex;
use bunko_index::vector::{EmbeddingCache, VectorIndex};
use std::time::Instant;

pub async fn rebuild(config: &Config, project: Option<&str>) -> Result<(), CliError> {
    crate::app::prepare_data_dir(&config.data_dir)?;
    let project_id = match project {
        Some(p) => {
            let store = crate::app::open_store(config).await?;
            let id = bunko_core::projects::get(store.as_ref(), p)
                .await?
                .id
                .to_string();
            store.close().await;
            Some(id)
        }
        None => None,
    };
    let encoder = crate::embedder::load(config)
        .map_err(|e| CliError::failure(e.0))?
        .ok_or_else(|| {
            CliError::usage("models.embedder is `none`: there is no vector half to rebuild")
        })?;
    let index_dir = config.data_dir.join("index");
    let keyword = KeywordIndex::open(&index_dir.join("keyword"))
        .map_err(|e| CliError::failure(e.to_string()))?;
    let chunks = keyword
        .chunks(project_id.as_deref())
        .map_err(|e| CliError::failure(e.to_string()))?;
    let cache = crate::embedder::open_cache(config, &encoder);
    let started = Instant::now();
    let texts: Vec<String> = chunks
        .iter()
        .map(|c| crate::embedder::passage_text(&c.title, &c.text))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let cached_before = cache.as_ref().map_or(0, EmbeddingCache::len);
    let total = refs.len();
    let vectors = crate::embedder::embed_passages(&encoder, cache.as_ref(), &refs, |done| {
        eprint!("\rembedding {done}/{total}");
    });
    eprintln!();
    let embedded = cache.as_ref().map_or(total, |c| c.len() - cached_before);
    let fail = |e: bunko_index::vector::VectorError| CliError::failure(e.to_string());
    let live = index_dir.join("vector");
    match project_id {
        None => {
            // Build beside the live index, then swap: the old one stays until the new is whole.
            let fresh = index_dir.join("vector.rebuild");
            let _ = std::fs::remove_dir_all(&fresh);
            let vx =
                VectorIndex::open(&fresh, encoder.dim(), encoder.fingerprint()).map_err(fail)?;
            for (c, v) in chunks.iter().zip(&vectors) {
                vx.upsert(&c.project, &c.id, v).map_err(fail)?;
            }
            vx.save().map_err(fail)?;
            let old = index_dir.join("vector.old");
            let _ = std::fs::remove_dir_all(&old);
            if live.exists() {
                std::fs::rename(&live, &old).map_err(|e| {
                    CliError::failure(format!("cannot move the old index aside: {e}"))
                })?;
            }
            std::fs::rename(&fresh, &live).map_err(|e| {
                CliError::failure(format!("cannot put the new index in place: {e}"))
            })?;
            let _ = std::fs::remove_dir_all(&old);
        }
        Some(pid) => {
            let vx =
                VectorIndex::open(&live, encoder.dim(), encoder.fingerprint()).map_err(|e| {
                    CliError::failure(e.to_string())
                        .hint("a different model needs a full rebuild: run it without --project")
                })?;
            for id in vx.ids(&pid) {
                vx.delete(&pid, &id);
            }
            for (c, v) in chunks.iter().zip(&vectors) {
                vx.upsert(&c.project, &c.id, v).map_err(fail)?;
            }
            vx.save().map_err(fail)?;
        }
    }
    println!(
        "rebuilt the vector index: {} chunks ({} embedded, {} from the cache) with {} in {:.1} s",
        total,
        embedded.min(total),
        total - embedded.min(total),
        encoder.fingerprint(),
        started.elapsed().as_secs_f64()
    );
    println!("a running server loads the new index when it restarts");
    Ok(())
}
