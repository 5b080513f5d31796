//! The configured embedding model, loaded from the models directory, and embedding through
//! the cache so that text a model has seen is never embedded by it twice.

use bunko_core::config::Config;
use bunko_core::metrics::Metrics;
use bunko_embed::{Encoder, Role};
use bunko_index::vector::{EmbeddingCache, text_hash};
use std::path::PathBuf;
use std::sync::Arc;

/// Why the vector half cannot run, in words an operator can act on.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// Loads the configured embedder: `Ok(None)` when `local.embedder = "none"`.
pub fn load(config: &Config) -> Result<Option<Arc<Encoder>>, Unavailable> {
    let name = &config.local.embedder;
    if name == "none" {
        return Ok(None);
    }
    let spec = bunko_core::models::find(name)
        .ok_or_else(|| Unavailable(format!("unknown embedding model `{name}`")))?;
    let dir = config.local.resolved_models_dir();
    if !spec.installed(&dir) {
        return Err(Unavailable(format!(
            "the embedding model {name} is not installed in {}: run `bunko models pull`",
            dir.display()
        )));
    }
    Encoder::load(&spec.path(&dir))
        .map(|e| Some(Arc::new(e)))
        .map_err(|e| Unavailable(format!("the embedding model {name} cannot be loaded: {e}")))
}

pub fn cache_dir(config: &Config) -> PathBuf {
    config.local.resolved_models_dir().join("embedding-cache")
}

/// The cache of `enc`'s vectors; `None` (embed everything) when it cannot be opened.
pub fn open_cache(config: &Config, enc: &Encoder) -> Option<EmbeddingCache> {
    EmbeddingCache::open(&cache_dir(config), enc.fingerprint(), enc.dim()).ok()
}

/// What a chunk is embedded as: its title (when it has one) on the line above its text.
pub fn passage_text(title: &str, text: &str) -> String {
    if title.is_empty() {
        text.to_owned()
    } else {
        format!("{title}\n{text}")
    }
}

/// Passages through the cache, in batches; `progress(done)` after each batch.
pub fn embed_passages(
    enc: &Encoder,
    cache: Option<&EmbeddingCache>,
    texts: &[&str],
    metrics: Option<&Metrics>,
    mut progress: impl FnMut(usize),
) -> Vec<Vec<f32>> {
    const BATCH: usize = 32;
    let mut out: Vec<Option<Vec<f32>>> = texts
        .iter()
        .map(|t| cache.and_then(|c| c.get(&text_hash(t))).map(Vec::from))
        .collect();
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
    let mut done = texts.len() - missing.len();
    if let Some(m) = metrics {
        m.embed_texts
            .with_label_values(&["passage", "cache"])
            .inc_by(done as u64);
    }
    for batch in missing.chunks(BATCH) {
        let chunk: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
        let started = std::time::Instant::now();
        let e = tracing::info_span!("embed.batch", texts = chunk.len())
            .in_scope(|| enc.embed(&chunk, Role::Passage));
        if let Some(m) = metrics {
            m.embed_batch_duration
                .observe(started.elapsed().as_secs_f64());
            m.embed_batch_size.observe(chunk.len() as f64);
            m.embed_texts
                .with_label_values(&["passage", "model"])
                .inc_by(chunk.len() as u64);
        }
        for (j, &i) in batch.iter().enumerate() {
            let v = e.get(j).to_vec();
            if let Some(c) = cache {
                // A cache that cannot be written only costs time later.
                let _ = c.put(text_hash(texts[i]), &v);
            }
            out[i] = Some(v);
        }
        done += batch.len();
        progress(done);
    }
    out.into_iter().map(Option::unwrap_or_default).collect()
}

/// The vector half of a serving process: the embedder and the vector index, loaded on first
/// use (a server that never runs a vector query never pays the model's memory) or by
/// [`VectorHalf::warm`] at start. The outcome, ready or why not, is kept.
pub struct VectorHalf {
    config: Config,
    cell: std::sync::OnceLock<Result<Ready, Unavailable>>,
    /// Changed in memory since it was last written.
    dirty: std::sync::atomic::AtomicBool,
}

pub struct Ready {
    pub encoder: Arc<Encoder>,
    pub index: bunko_index::vector::VectorIndex,
}

impl VectorHalf {
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
            cell: std::sync::OnceLock::new(),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The vector half if it has been loaded (never loads it).
    pub fn loaded(&self) -> Option<&Ready> {
        self.cell.get().and_then(|r| r.as_ref().ok())
    }

    /// Blocking: loads the model and opens the index on the first call.
    pub fn get(&self) -> Result<&Ready, Unavailable> {
        self.cell
            .get_or_init(|| {
                let encoder = load(&self.config)?.ok_or_else(|| {
                    Unavailable(
                        "no embedding model is configured (local.embedder = \"none\")".into(),
                    )
                })?;
                let dir = self.config.data_dir.join("index").join("vector");
                let index = bunko_index::vector::VectorIndex::open(
                    &dir,
                    encoder.dim(),
                    encoder.fingerprint(),
                )
                .map_err(|e| Unavailable(e.to_string()))?;
                index.set_ef_search(self.config.search.ef_search);
                Ok(Ready { encoder, index })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Notes that the in-memory index changed (written by [`VectorHalf::save_if_dirty`]).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Blocking: writes the index when it changed; returns whether it wrote.
    pub fn save_if_dirty(&self) -> Result<bool, bunko_index::vector::VectorError> {
        let Some(Ok(ready)) = self.cell.get() else {
            return Ok(false);
        };
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(false);
        }
        ready.index.save().inspect_err(|_| self.mark_dirty())?;
        Ok(true)
    }

    /// The loaded half, or loaded now when the data dir holds vectors; `None` otherwise.
    pub fn loaded_or_on_disk(&self) -> Option<&Ready> {
        if let Some(r) = self.cell.get() {
            return r.as_ref().ok();
        }
        let dir = self.config.data_dir.join("index").join("vector");
        bunko_index::vector::stored_fingerprint(&dir)?;
        self.get().ok()
    }

    /// Whether loading was attempted and failed (for readiness reporting), without loading.
    pub fn failure(&self) -> Option<String> {
        match self.cell.get() {
            Some(Err(e)) => Some(e.0.clone()),
            _ => None,
        }
    }
}
