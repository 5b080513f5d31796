#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output and progress

//! `bunko index rebuild [--project P]`: the index is derived data, re-made from the chunks
//! the database holds (ready documents; plus any chunk the keyword index holds without a
//! document). The keyword half is refilled document by document when no running server owns
//! it; the vector half is embedded through the cache into a new directory that replaces the
//! old one only when complete — a crash mid-rebuild leaves the previous index in place.

use crate::cli::CliError;
use bunko_core::config::Config;
use bunko_index::keyword::{KeywordIndex, StoredChunk};
use bunko_index::vector::{EmbeddingCache, VectorIndex};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// The chunks to index: the store's (with their document's title), then keyword-only ones.
async fn chunks_to_index(
    store: &dyn bunko_core::ports::MetaStore,
    keyword: &KeywordIndex,
    project: Option<uuid::Uuid>,
) -> Result<(Vec<StoredChunk>, HashMap<String, Vec<usize>>), CliError> {
    let fail = |e: String| CliError::failure(e);
    let stored = store
        .all_chunks(project)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut titles: HashMap<uuid::Uuid, String> = HashMap::new();
    let mut out = Vec::with_capacity(stored.len());
    let mut by_doc: HashMap<String, Vec<usize>> = HashMap::new();
    for c in stored {
        if let std::collections::hash_map::Entry::Vacant(slot) = titles.entry(c.document_id) {
            let t = store
                .get_document(c.document_id)
                .await
                .map_err(|e| fail(e.to_string()))?
                .map(|d| d.title)
                .unwrap_or_default();
            slot.insert(t);
        }
        by_doc
            .entry(c.document_id.to_string())
            .or_default()
            .push(out.len());
        out.push(StoredChunk {
            id: c.id,
            project: c.project_id.to_string(),
            title: titles[&c.document_id].clone(),
            text: c.text,
        });
    }
    let known: HashSet<String> = out.iter().map(|c| c.id.clone()).collect();
    let project_s = project.map(|p| p.to_string());
    let legacy = keyword
        .chunks(project_s.as_deref())
        .map_err(|e| fail(e.to_string()))?
        .into_iter()
        .filter(|c| !known.contains(&c.id));
    out.extend(legacy);
    Ok((out, by_doc))
}

pub async fn rebuild(config: &Config, project: Option<&str>) -> Result<(), CliError> {
    crate::app::prepare_data_dir(&config.data_dir)?;
    let (store, pg_store) = crate::app::open_store_parts(config).await?;
    let project_id = match project {
        Some(p) => Some(bunko_core::projects::get(store.as_ref(), p).await?.id),
        None => None,
    };
    // Fails before touching anything when the configured model is missing.
    let encoder = crate::embedder::load(config).map_err(|e| CliError::failure(e.0))?;
    let index_dir = config.data_dir.join("index");
    let morph = crate::app::japanese_morphology(config);
    let keyword = crate::app::open_keyword_index_with(config, morph.clone())?;
    let (chunks, by_doc) = chunks_to_index(store.as_ref(), &keyword, project_id).await?;
    if let Some(pg) = crate::app::open_postgres_index(config, pg_store.as_deref(), morph).await? {
        // The index shares the store's pool: closed when the rebuild is done.
        let out =
            rebuild_postgres(config, &pg, encoder, &chunks, &by_doc, project_id.is_none()).await;
        store.close().await;
        return out;
    }
    let project_id = project_id.map(|p| p.to_string());
    store.close().await;
    // The keyword half, when no server holds its writer.
    match keyword.take_writer() {
        Ok(()) => {
            let fail = |e: bunko_index::keyword::IndexError| CliError::failure(e.to_string());
            for (doc, idx) in &by_doc {
                keyword.delete_document(doc).map_err(fail)?;
                for &i in idx {
                    let c = &chunks[i];
                    keyword
                        .upsert_chunk(&c.id, &c.project, doc, &c.title, &c.text)
                        .map_err(fail)?;
                }
            }
            keyword.commit().map_err(fail)?;
            if project_id.is_none() {
                keyword.mark_morphology_complete();
            }
            println!("refilled the keyword index: {} documents", by_doc.len());
        }
        Err(_) => println!(
            "kept the keyword index: a running server owns it (it checks it against the database at start)"
        ),
    }
    drop(keyword);
    let Some(encoder) = encoder else {
        println!("local.embedder is `none`: there is no vector half to rebuild");
        return Ok(());
    };
    let cache = crate::embedder::open_cache(config, &encoder);
    let started = Instant::now();
    let texts: Vec<String> = chunks
        .iter()
        .map(|c| crate::embedder::passage_text(&c.title, &c.text))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let cached_before = cache.as_ref().map_or(0, EmbeddingCache::len);
    let total = refs.len();
    let vectors = crate::embedder::embed_passages(&encoder, cache.as_ref(), &refs, None, |done| {
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

/// The index in PostgreSQL, refilled: emptied first for a whole rebuild (forgetting which
/// model its vectors came from, so the configured one's take their place), then each
/// document replaced in one transaction — searches meanwhile see a document's old chunks or
/// its new ones.
async fn rebuild_postgres(
    config: &Config,
    pg: &std::sync::Arc<crate::pgindex::PgIndex>,
    encoder: Option<std::sync::Arc<bunko_embed::Encoder>>,
    chunks: &[StoredChunk],
    by_doc: &HashMap<String, Vec<usize>>,
    whole: bool,
) -> Result<(), CliError> {
    let fail = |e: String| CliError::failure(e);
    if whole {
        pg.search
            .clear(true)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let vectors = match &encoder {
        Some(enc) => {
            pg.search.enable_vectors(enc.dim(), enc.fingerprint()).await;
            if let Some(why) = pg.search.vector_unavailable() {
                println!("the vector half stays unavailable: {why}");
                None
            } else {
                let cache = crate::embedder::open_cache(config, enc);
                let texts: Vec<String> = chunks
                    .iter()
                    .map(|c| crate::embedder::passage_text(&c.title, &c.text))
                    .collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let total = refs.len();
                let v = crate::embedder::embed_passages(enc, cache.as_ref(), &refs, None, |done| {
                    eprint!("\rembedding {done}/{total}");
                });
                eprintln!();
                Some(v)
            }
        }
        None => None,
    };
    let started = Instant::now();
    for (doc, idx) in by_doc {
        let Some(&first) = idx.first() else { continue };
        let c0 = &chunks[first];
        let list: Vec<(String, String)> = idx
            .iter()
            .map(|&i| (chunks[i].id.clone(), chunks[i].text.clone()))
            .collect();
        let vs = vectors
            .as_ref()
            .map(|v| idx.iter().map(|&i| v[i].clone()).collect::<Vec<_>>());
        pg.index_document(doc, &c0.project, &c0.title, list, vs)
            .await
            .map_err(fail)?;
    }
    // Fresh token statistics, so long keyword queries rank their rarest tokens' rows first.
    pg.search.analyze().await.map_err(|e| fail(e.to_string()))?;
    println!(
        "refilled the search index in PostgreSQL: {} documents, {} chunks{} in {:.1} s",
        by_doc.len(),
        by_doc.values().map(Vec::len).sum::<usize>(),
        if vectors.is_some() {
            " with vectors"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
