//! The vector half of search: the HNSW graph keyed by `project/id`, so that the project filter
//! runs inside the graph walk (never after it), and the fingerprint of the model that made the
//! vectors, kept beside the graph so vectors of two models never mix. Plus the embedding cache:
//! text that has been embedded by a model is never embedded by it again.

use crate::ann::{AnnError, Hnsw, HnswParams};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error(transparent)]
    Ann(#[from] AnnError),
    #[error(
        "the vector index in {dir} was built with model {stored}, the configured model is \
         {current}; run `bunko index rebuild` to re-embed with it"
    )]
    ModelChanged {
        dir: String,
        stored: String,
        current: String,
    },
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
}

/// The fingerprint of the model that made the vectors in `dir`, if any were made.
pub fn stored_fingerprint(dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(dir.join(MODEL)).ok()?;
    dir.join(GRAPH).exists().then(|| s.trim().to_owned())
}

pub struct VectorIndex {
    graph: RwLock<Hnsw>,
    fingerprint: String,
    dir: Option<PathBuf>,
}

const GRAPH: &str = "vectors.hnsw";
const MODEL: &str = "model.txt";

fn key(project: &str, id: &str) -> String {
    format!("{project}/{id}")
}

impl VectorIndex {
    /// Candidates explored per search (see [`Hnsw::set_ef_search`]).
    pub fn set_ef_search(&self, ef: usize) {
        self.graph
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_ef_search(ef);
    }

    pub fn in_memory(dim: usize, fingerprint: &str) -> Self {
        Self {
            graph: RwLock::new(Hnsw::new(dim, HnswParams::default())),
            fingerprint: fingerprint.to_owned(),
            dir: None,
        }
    }

    /// Opens the index in `dir` (creating it when absent). Vectors made by another model are
    /// refused with the fix, not silently mixed or dropped.
    pub fn open(dir: &Path, dim: usize, fingerprint: &str) -> Result<Self, VectorError> {
        let file_err = |e: std::io::Error| VectorError::File {
            path: dir.display().to_string(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(file_err)?;
        let graph_path = dir.join(GRAPH);
        let stored = std::fs::read_to_string(dir.join(MODEL)).ok();
        let graph = match (&stored, graph_path.exists()) {
            (Some(stored), true) if stored.trim() != fingerprint => {
                return Err(VectorError::ModelChanged {
                    dir: dir.display().to_string(),
                    stored: stored.trim().to_owned(),
                    current: fingerprint.to_owned(),
                });
            }
            (_, true) => Hnsw::load(&graph_path)?,
            (_, false) => Hnsw::new(dim, HnswParams::default()),
        };
        if graph.dim() != dim {
            return Err(VectorError::ModelChanged {
                dir: dir.display().to_string(),
                stored: format!("a {}-dimensional model", graph.dim()),
                current: format!("{fingerprint} ({dim} dimensions)"),
            });
        }
        std::fs::write(dir.join(MODEL), format!("{fingerprint}\n")).map_err(file_err)?;
        Ok(Self {
            graph: RwLock::new(graph),
            fingerprint: fingerprint.to_owned(),
            dir: Some(dir.to_path_buf()),
        })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The ids held for `project`.
    pub fn ids(&self, project: &str) -> Vec<String> {
        let g = self.graph.read().unwrap_or_else(|p| p.into_inner());
        g.keys()
            .filter_map(|k| k.split_once('/'))
            .filter(|(p, _)| *p == project)
            .map(|(_, id)| id.to_owned())
            .collect()
    }

    /// Every chunk id held, in any project.
    pub fn all_ids(&self) -> Vec<String> {
        let g = self.graph.read().unwrap_or_else(|p| p.into_inner());
        g.keys()
            .filter_map(|k| k.split_once('/'))
            .map(|(_, id)| id.to_owned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.graph.read().map_or(0, |g| g.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn upsert(&self, project: &str, id: &str, vector: &[f32]) -> Result<(), VectorError> {
        let mut g = self.graph.write().unwrap_or_else(|p| p.into_inner());
        g.insert(&key(project, id), vector)?;
        Ok(())
    }

    /// Removes every chunk of a document (ids `<document>:<n>`, in whichever project);
    /// returns how many.
    pub fn delete_document(&self, document: &str) -> usize {
        let prefix = format!("{document}:");
        let mut g = self.graph.write().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<String> = g
            .keys()
            .filter(|k| {
                k.split_once('/')
                    .is_some_and(|(_, id)| id.starts_with(&prefix))
            })
            .map(str::to_owned)
            .collect();
        keys.iter().filter(|k| g.delete(k)).count()
    }

    pub fn delete(&self, project: &str, id: &str) -> bool {
        let mut g = self.graph.write().unwrap_or_else(|p| p.into_inner());
        g.delete(&key(project, id))
    }

    /// The `k` nearest chunks in `projects`, best first, as (project, id, cosine).
    pub fn search(
        &self,
        projects: &[&str],
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(String, String, f32)>, VectorError> {
        self.search_filtered(projects, &crate::DocScope::all(), query, k)
    }

    /// Like [`VectorIndex::search`], and when `documents` is given only chunks whose id is
    /// `<document>:<n>` for one of them — checked inside the graph walk, not afterwards.
    pub fn search_filtered(
        &self,
        projects: &[&str],
        documents: &crate::DocScope,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(String, String, f32)>, VectorError> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let g = self.graph.read().unwrap_or_else(|p| p.into_inner());
        let unscoped = *documents == crate::DocScope::all();
        let allow = |key: &str| {
            key.split_once('/').is_some_and(|(p, id)| {
                projects.contains(&p)
                    && (unscoped
                        || id
                            .split_once(':')
                            .is_some_and(|(doc, _)| documents.allows(doc)))
            })
        };
        Ok(g.search(query, k, &allow)?
            .into_iter()
            .filter_map(|(key, score)| {
                let (p, id) = key.split_once('/')?;
                Some((p.to_owned(), id.to_owned(), score))
            })
            .collect())
    }

    /// Writes the graph (atomically) when the index lives in a directory.
    pub fn save(&self) -> Result<(), VectorError> {
        if let Some(dir) = &self.dir {
            let g = self.graph.read().unwrap_or_else(|p| p.into_inner());
            g.save(&dir.join(GRAPH))?;
        }
        Ok(())
    }
}

/// Vectors by (model fingerprint, SHA-256 of the text): an append-only file per model.
pub struct EmbeddingCache {
    dim: usize,
    path: PathBuf,
    map: RwLock<HashMap<[u8; 32], Box<[f32]>>>,
    file: Mutex<Option<std::fs::File>>,
}

pub fn text_hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl EmbeddingCache {
    /// Opens (or creates) the cache for `fingerprint` in `dir`. A torn last record (a crash
    /// mid-write) is ignored and overwritten.
    pub fn open(dir: &Path, fingerprint: &str, dim: usize) -> Result<Self, VectorError> {
        let name: String = fingerprint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = dir.join(format!("{name}.vec"));
        let err = |e: std::io::Error| VectorError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut map = HashMap::new();
        let record = 32 + dim * 4;
        let mut valid = 0u64;
        if let Ok(mut f) = std::fs::File::open(&path) {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(err)?;
            for r in buf.chunks_exact(record) {
                let mut h = [0u8; 32];
                h.copy_from_slice(&r[..32]);
                let v: Box<[f32]> = r[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                map.insert(h, v);
                valid += record as u64;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        file.set_len(valid).map_err(err)?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(err)?;
        Ok(Self {
            dim,
            path,
            map: RwLock::new(map),
            file: Mutex::new(Some(file)),
        })
    }

    pub fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<Box<[f32]>> {
        self.map.read().ok()?.get(hash).cloned()
    }

    pub fn put(&self, hash: [u8; 32], vector: &[f32]) -> Result<(), VectorError> {
        if vector.len() != self.dim {
            return Err(AnnError::Dimension {
                got: vector.len(),
                want: self.dim,
            }
            .into());
        }
        let mut rec = Vec::with_capacity(32 + 4 * self.dim);
        rec.extend_from_slice(&hash);
        for v in vector {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(f) = self.file.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            f.write_all(&rec).map_err(|e| VectorError::File {
                path: self.path.display().to_string(),
                detail: e.to_string(),
            })?;
        }
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, vector.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(dim: usize, seed: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|i| (((i + 1) * (seed + 3) * 7919) % 101) as f32 - 50.0)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn project_filter_is_inside_the_search_and_models_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let ix = VectorIndex::open(dir.path(), 16, "m1").unwrap();
        for i in 0..50 {
            let p = if i % 2 == 0 { "pa" } else { "pb" };
            ix.upsert(p, &format!("c{i}"), &unit(16, i)).unwrap();
        }
        let hits = ix.search(&["pb"], &unit(16, 4), 10).unwrap();
        assert_eq!(hits.len(), 10, "a filter must not starve the results");
        assert!(hits.iter().all(|(p, _, _)| p == "pb"));
        let own = ix.search(&["pa"], &unit(16, 4), 1).unwrap();
        assert_eq!(own[0].1, "c4");
        assert!(ix.delete("pa", "c4"));
        assert_ne!(ix.search(&["pa"], &unit(16, 4), 1).unwrap()[0].1, "c4");
        ix.save().unwrap();
        drop(ix);
        let again = VectorIndex::open(dir.path(), 16, "m1").unwrap();
        assert_eq!(again.len(), 49);
        let err = VectorIndex::open(dir.path(), 16, "m2")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bunko index rebuild"), "{err}");
    }

    #[test]
    fn document_filter_is_inside_the_walk() {
        let ix = VectorIndex::in_memory(16, "m");
        for i in 0..200 {
            let doc = if i == 150 { "rare" } else { "common" };
            ix.upsert("p", &format!("{doc}:{i}"), &unit(16, i)).unwrap();
        }
        let only = crate::DocScope::only(["rare"]);
        // The one allowed chunk is far from the query, and is still found.
        let hits = ix.search_filtered(&["p"], &only, &unit(16, 3), 5).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].1, "rare:150");
        let none = crate::DocScope::only(Vec::<String>::new());
        assert!(
            ix.search_filtered(&["p"], &none, &unit(16, 3), 5)
                .unwrap()
                .is_empty()
        );
        assert_eq!(ix.all_ids().len(), 200);
        assert_eq!(ix.delete_document("rare"), 1);
        assert_eq!(ix.delete_document("rare"), 0);
        assert!(
            ix.search_filtered(&["p"], &only, &unit(16, 3), 5)
                .unwrap()
                .is_empty()
        );
        assert_eq!(ix.all_ids().len(), 199);
        // Excluded documents are left out inside the walk too.
        let mut except = crate::DocScope::all();
        except.except.insert("common".into());
        assert!(
            ix.search_filtered(&["p"], &except, &unit(16, 3), 5)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn cache_survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let c = EmbeddingCache::open(dir.path(), "e5s1:abc", 4).unwrap();
        c.put(text_hash("a"), &[1.0, 0.0, 0.0, 0.0]).unwrap();
        c.put(text_hash("b"), &[0.0, 1.0, 0.0, 0.0]).unwrap();
        assert!(c.put(text_hash("c"), &[1.0]).is_err());
        drop(c);
        let path = dir.path().join("e5s1-abc.vec");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[7u8; 20]).unwrap(); // half a record
        drop(f);
        let c = EmbeddingCache::open(dir.path(), "e5s1:abc", 4).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&text_hash("b")).unwrap()[1], 1.0);
        c.put(text_hash("d"), &[0.0, 0.0, 1.0, 0.0]).unwrap();
        drop(c);
        assert_eq!(
            EmbeddingCache::open(dir.path(), "e5s1:abc", 4)
                .unwrap()
                .len(),
            3
        );
    }
}
