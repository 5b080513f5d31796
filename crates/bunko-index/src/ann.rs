//! The embedded approximate-nearest-neighbour index: HNSW (Malkov & Yashunin) over
//! L2-normalised vectors stored in half precision (f16: half the memory of f32; queries stay
//! f32, and the cosine error, ~1e-4, is far below the gaps that order real results), tombstone deletes, updates by key,
//! filtered search (a predicate applied during the search, so a project filter never
//! starves or leaks results), compaction, and a versioned binary file in the data dir.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

/// The file format: `BKANN002` stores f16 vectors; `BKANN001` (f32) is still read.
const MAGIC: &[u8; 8] = b"BKANN002";
const MAGIC_F32: &[u8; 8] = b"BKANN001";

#[derive(Debug, thiserror::Error)]
pub enum AnnError {
    #[error("vector has {got} dimensions, the index {want}")]
    Dimension { got: usize, want: usize },
    #[error("vector is zero or not finite")]
    BadVector,
    #[error("index file {path}: {detail}")]
    File { path: String, detail: String },
}

#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    /// Links per node above layer 0 (layer 0 has 2·m).
    pub m: usize,
    pub ef_construction: usize,
    /// Candidates explored per search (at least k); 0 = [`auto_ef`] of the index's size.
    pub ef_search: usize,
}

/// The beam width `ef_search = 0` means: 128 up to 100k vectors, then growing with the index
/// to 1024 at 1M — where recall@10 against exact search on real embeddings with
/// near-duplicates measured 0.764 at 128, 0.944 at 512 and 0.973 at 1024 (BENCHMARKS.md),
/// and a search still takes a few milliseconds.
pub fn auto_ef(len: usize) -> usize {
    const SMALL: usize = 100_000;
    const LARGE: usize = 1_000_000;
    if len <= SMALL {
        128
    } else {
        (128 + (len - SMALL) * (1024 - 128) / (LARGE - SMALL)).min(1024)
    }
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
            ef_search: 0,
        }
    }
}

/// (similarity, node), ordered by similarity with a total order (NaN cannot occur: vectors
/// are checked finite and normalised).
#[derive(Debug, Clone, Copy)]
struct Scored(f32, u32);
impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

pub struct Hnsw {
    dim: usize,
    p: HnswParams,
    /// f16 bits, `dim` per node.
    vectors: Vec<u16>,
    keys: Vec<String>,
    /// neighbours[node][layer]
    links: Vec<Vec<Vec<u32>>>,
    deleted: Vec<bool>,
    by_key: HashMap<String, u32>,
    entry: Option<u32>,
    rng: u64,
}

/// Cosine of a normalised f32 query and a stored f16 vector: the embedder crate's SIMD dot
/// product (AVX2 + FMA + F16C when the CPU has them).
#[inline]
fn dot(a: &[f32], b: &[u16]) -> f32 {
    bunko_embed::kernels::dot_f16(a, b)
}

/// Node ids are dense small integers: a multiplicative hash beats SipHash for the visited set.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);
impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
type Visited = HashSet<u32, std::hash::BuildHasherDefault<IdHasher>>;

fn normalise(v: &[f32]) -> Option<Vec<f32>> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (n.is_finite() && n > 0.0).then(|| v.iter().map(|x| x / n).collect())
}

impl Hnsw {
    pub fn new(dim: usize, p: HnswParams) -> Self {
        Self {
            dim,
            p,
            vectors: Vec::new(),
            keys: Vec::new(),
            links: Vec::new(),
            deleted: Vec::new(),
            by_key: HashMap::new(),
            entry: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Candidates explored per search (at least k): recall against latency. 0 = automatic
    /// ([`auto_ef`] of the index's size).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.p.ef_search = ef;
    }

    /// The beam width a search uses now.
    pub fn ef_search(&self) -> usize {
        match self.p.ef_search {
            0 => auto_ef(self.len()),
            ef => ef,
        }
    }

    /// Live (not deleted) vectors.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The keys of live (not deleted) vectors.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| !**d)
            .map(|(k, _)| k.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn vec(&self, i: u32) -> &[u16] {
        &self.vectors[i as usize * self.dim..(i as usize + 1) * self.dim]
    }

    /// A stored vector as f32, into `out`.
    fn vec_f32(&self, i: u32, out: &mut Vec<f32>) {
        out.clear();
        out.extend(
            self.vec(i)
                .iter()
                .map(|h| bunko_embed::kernels::f16_to_f32(*h)),
        );
    }

    fn sim(&self, q: &[f32], i: u32) -> f32 {
        dot(q, self.vec(i))
    }

    fn random_level(&mut self) -> usize {
        // xorshift64*; level ~ floor(-ln(U) / ln(m))
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let u = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        let ml = 1.0 / (self.p.m as f64).ln();
        ((-(u.max(1e-12)).ln()) * ml).floor() as usize
    }

    fn top_level(&self) -> usize {
        self.entry
            .map(|e| self.links[e as usize].len() - 1)
            .unwrap_or(0)
    }

    /// Best-first search on one layer; returns up to `ef` nodes, best first.
    fn search_layer(&self, q: &[f32], entry: &[u32], ef: usize, layer: usize) -> Vec<Scored> {
        let mut visited: Visited = entry.iter().copied().collect();
        let mut candidates: BinaryHeap<Scored> =
            entry.iter().map(|&e| Scored(self.sim(q, e), e)).collect();
        // `best` is a min-heap by similarity (worst on top) of size ≤ ef.
        let mut best: BinaryHeap<std::cmp::Reverse<Scored>> =
            candidates.iter().map(|s| std::cmp::Reverse(*s)).collect();
        while let Some(c) = candidates.pop() {
            let worst = best.peek().map(|w| w.0.0).unwrap_or(f32::MIN);
            if c.0 < worst && best.len() >= ef {
                break;
            }
            for &n in &self.links[c.1 as usize][layer] {
                if !visited.insert(n) {
                    continue;
                }
                let s = self.sim(q, n);
                let worst = best.peek().map(|w| w.0.0).unwrap_or(f32::MIN);
                if best.len() < ef || s > worst {
                    candidates.push(Scored(s, n));
                    best.push(std::cmp::Reverse(Scored(s, n)));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// The paper's neighbour heuristic: keep a candidate only if it is closer to the new node
    /// than to every neighbour already kept (spreads links across directions).
    /// The result has room for one more link, so adding the next one does not reallocate.
    fn select(&self, candidates: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m + 1);
        let mut v = Vec::with_capacity(self.dim);
        for c in candidates {
            if kept.len() >= m {
                break;
            }
            self.vec_f32(c.1, &mut v);
            if kept.iter().all(|&k| self.sim(&v, k) < c.0) {
                kept.push(c.1);
            }
        }
        // Fill up with the closest remaining ones so sparse regions stay connected.
        for c in candidates {
            if kept.len() >= m {
                break;
            }
            if !kept.contains(&c.1) {
                kept.push(c.1);
            }
        }
        kept
    }

    /// Adds `key`, replacing any earlier vector under the same key.
    pub fn insert(&mut self, key: &str, vector: &[f32]) -> Result<(), AnnError> {
        if vector.len() != self.dim {
            return Err(AnnError::Dimension {
                got: vector.len(),
                want: self.dim,
            });
        }
        let v = normalise(vector).ok_or(AnnError::BadVector)?;
        self.delete(key);
        let id = self.keys.len() as u32;
        let level = self.random_level().min(16);
        self.vectors
            .extend(v.iter().map(|x| bunko_embed::kernels::f32_to_f16(*x)));
        self.keys.push(key.to_owned());
        self.links.push(vec![Vec::new(); level + 1]);
        self.deleted.push(false);
        self.by_key.insert(key.to_owned(), id);
        let Some(mut ep) = self.entry else {
            self.entry = Some(id);
            return Ok(());
        };
        let top = self.top_level();
        for layer in (level + 1..=top).rev() {
            ep = self.search_layer(&v, &[ep], 1, layer)[0].1;
        }
        let mut eps = vec![ep];
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(&v, &eps, self.p.ef_construction, layer);
            let m = if layer == 0 { 2 * self.p.m } else { self.p.m };
            let chosen = self.select(&found, m);
            let ids = chosen.clone();
            self.links[id as usize][layer] = chosen;
            for &n in &ids {
                let nl = &mut self.links[n as usize][layer];
                nl.push(id);
                if nl.len() > m {
                    let mut nv = Vec::with_capacity(self.dim);
                    self.vec_f32(n, &mut nv);
                    let mut cands: Vec<Scored> = self.links[n as usize][layer]
                        .iter()
                        .map(|&x| Scored(self.sim(&nv, x), x))
                        .collect();
                    cands.sort_by(|a, b| b.cmp(a));
                    self.links[n as usize][layer] = self.select(&cands, m);
                }
            }
            eps = found.iter().map(|s| s.1).collect();
        }
        if level > top {
            self.entry = Some(id);
        }
        Ok(())
    }

    /// Removes `key` (a tombstone: the node still routes searches until [`Hnsw::compact`]).
    pub fn delete(&mut self, key: &str) -> bool {
        match self.by_key.remove(key) {
            Some(id) => {
                self.deleted[id as usize] = true;
                true
            }
            None => false,
        }
    }

    /// Share of stored nodes that are tombstones.
    pub fn garbage_ratio(&self) -> f64 {
        if self.keys.is_empty() {
            0.0
        } else {
            1.0 - self.by_key.len() as f64 / self.keys.len() as f64
        }
    }

    /// Rebuilds the graph from the live vectors.
    pub fn compact(&mut self) {
        let mut fresh = Hnsw::new(self.dim, self.p);
        let mut live: Vec<(&String, u32)> = self.by_key.iter().map(|(k, v)| (k, *v)).collect();
        live.sort_by_key(|(_, id)| *id);
        let mut v = Vec::with_capacity(self.dim);
        for (k, id) in live {
            self.vec_f32(id, &mut v);
            // Vectors are already normalised and of the right size.
            let _ = fresh.insert(k, &v);
        }
        *self = fresh;
    }

    /// The k most similar live vectors that pass `allow`, best first, as (key, cosine).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, f32)>, AnnError> {
        if query.len() != self.dim {
            return Err(AnnError::Dimension {
                got: query.len(),
                want: self.dim,
            });
        }
        let Some(q) = normalise(query) else {
            return Ok(Vec::new());
        };
        let Some(mut ep) = self.entry else {
            return Ok(Vec::new());
        };
        if k == 0 {
            return Ok(Vec::new());
        }
        for layer in (1..=self.top_level()).rev() {
            ep = self.search_layer(&q, &[ep], 1, layer)[0].1;
        }
        // Widen the beam until k allowed results are found or the graph is exhausted.
        let mut ef = self.ef_search().max(k);
        loop {
            let found = self.search_layer(&q, &[ep], ef, 0);
            let hits: Vec<(String, f32)> = found
                .iter()
                .filter(|s| !self.deleted[s.1 as usize] && allow(&self.keys[s.1 as usize]))
                .take(k)
                .map(|s| (self.keys[s.1 as usize].clone(), s.0))
                .collect();
            if hits.len() >= k || found.len() < ef || ef >= self.keys.len() {
                return Ok(hits);
            }
            ef = (ef * 4).min(self.keys.len());
        }
    }

    /// Writes the index atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), AnnError> {
        let err = |e: std::io::Error| AnnError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let tmp = path.with_extension("tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(err)?);
        let u32s = |w: &mut dyn Write, x: usize| w.write_all(&(x as u32).to_le_bytes());
        w.write_all(MAGIC).map_err(err)?;
        for x in [
            self.dim,
            self.p.m,
            self.p.ef_construction,
            self.p.ef_search,
            self.keys.len(),
        ] {
            u32s(&mut w, x).map_err(err)?;
        }
        u32s(&mut w, self.entry.map(|e| e as usize + 1).unwrap_or(0)).map_err(err)?;
        for x in &self.vectors {
            w.write_all(&x.to_le_bytes()).map_err(err)?;
        }
        for i in 0..self.keys.len() {
            let k = self.keys[i].as_bytes();
            u32s(&mut w, k.len()).map_err(err)?;
            w.write_all(k).map_err(err)?;
            w.write_all(&[u8::from(self.deleted[i])]).map_err(err)?;
            u32s(&mut w, self.links[i].len()).map_err(err)?;
            for l in &self.links[i] {
                u32s(&mut w, l.len()).map_err(err)?;
                for n in l {
                    w.write_all(&n.to_le_bytes()).map_err(err)?;
                }
            }
        }
        w.flush().map_err(err)?;
        w.into_inner()
            .map_err(|e| err(e.into_error()))?
            .sync_all()
            .map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    pub fn load(path: &Path) -> Result<Hnsw, AnnError> {
        let bad = |d: &str| AnnError::File {
            path: path.display().to_string(),
            detail: d.to_owned(),
        };
        let bytes = std::fs::read(path).map_err(|e| bad(&e.to_string()))?;
        let mut r = &bytes[..];
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(|_| bad("truncated"))?;
        let half = match &magic {
            m if m == MAGIC => true,
            m if m == MAGIC_F32 => false,
            _ => return Err(bad("not a bunko vector index (or a newer format)")),
        };
        let mut u = || -> Result<usize, AnnError> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| bad("truncated"))?;
            Ok(u32::from_le_bytes(b) as usize)
        };
        let (dim, m, efc, efs, n, entry) = (u()?, u()?, u()?, u()?, u()?, u()?);
        if dim == 0 || dim > 65_536 || n > (bytes.len() / (dim * 2)).max(1) {
            return Err(bad("corrupt header"));
        }
        let mut h = Hnsw::new(
            dim,
            HnswParams {
                m,
                ef_construction: efc,
                ef_search: efs,
            },
        );
        let mut r = &bytes[8 + 24..];
        let read_u32 = |r: &mut &[u8]| -> Result<u32, AnnError> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| bad("truncated"))?;
            Ok(u32::from_le_bytes(b))
        };
        if half {
            let len = n * dim * 2;
            if r.len() < len {
                return Err(bad("truncated"));
            }
            h.vectors = r[..len]
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            r = &r[len..];
        } else {
            h.vectors.reserve_exact(n * dim);
            for _ in 0..n * dim {
                let x = f32::from_bits(read_u32(&mut r)?);
                h.vectors.push(bunko_embed::kernels::f32_to_f16(x));
            }
        }
        for i in 0..n {
            let len = read_u32(&mut r)? as usize;
            if len > r.len() {
                return Err(bad("truncated"));
            }
            let key = String::from_utf8(r[..len].to_vec()).map_err(|_| bad("bad key"))?;
            r = &r[len..];
            let mut flag = [0u8; 1];
            r.read_exact(&mut flag).map_err(|_| bad("truncated"))?;
            let layers = read_u32(&mut r)? as usize;
            let mut links = Vec::with_capacity(layers);
            for _ in 0..layers {
                let c = read_u32(&mut r)? as usize;
                let mut l = Vec::with_capacity(c);
                for _ in 0..c {
                    let nb = read_u32(&mut r)?;
                    if nb as usize >= n {
                        return Err(bad("link out of range"));
                    }
                    l.push(nb);
                }
                links.push(l);
            }
            if flag[0] == 0 {
                h.by_key.insert(key.clone(), i as u32);
            }
            h.keys.push(key);
            h.deleted.push(flag[0] != 0);
            h.links.push(links);
        }
        h.entry = (entry > 0).then(|| entry as u32 - 1);
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vecs(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect()
    }

    fn exact(data: &[(String, Vec<f32>)], q: &[f32], k: usize) -> Vec<String> {
        let q = normalise(q).unwrap();
        let mut all: Vec<(f32, &String)> = data
            .iter()
            .map(|(key, v)| {
                (
                    normalise(v)
                        .unwrap()
                        .iter()
                        .zip(&q)
                        .map(|(a, b)| a * b)
                        .sum(),
                    key,
                )
            })
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter().take(k).map(|(_, k)| k.clone()).collect()
    }

    #[test]
    fn recall_at_10_against_exact_search() {
        let dim = 48;
        let data: Vec<(String, Vec<f32>)> = rand_vecs(3000, dim, 7)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("c{i}"), v))
            .collect();
        let mut h = Hnsw::new(dim, HnswParams::default());
        for (k, v) in &data {
            h.insert(k, v).unwrap();
        }
        let queries = rand_vecs(100, dim, 99);
        let mut hit = 0;
        for q in &queries {
            let truth: HashSet<String> = exact(&data, q, 10).into_iter().collect();
            let got = h.search(q, 10, &|_| true).unwrap();
            hit += got.iter().filter(|(k, _)| truth.contains(k)).count();
        }
        let recall = hit as f64 / (queries.len() * 10) as f64;
        eprintln!("HNSW recall@10 on 3000 random 48-d vectors, 100 queries: {recall:.3}");
        assert!(recall >= 0.95, "recall@10 = {recall}");
    }

    #[test]
    fn the_automatic_beam_widens_with_the_index() {
        assert_eq!(auto_ef(0), 128);
        assert_eq!(auto_ef(100_000), 128);
        assert_eq!(auto_ef(550_000), 576);
        assert_eq!(auto_ef(1_000_000), 1024);
        assert_eq!(auto_ef(5_000_000), 1024);
        let mut h = Hnsw::new(8, HnswParams::default());
        assert_eq!(h.ef_search(), 128, "automatic by default");
        h.set_ef_search(40);
        assert_eq!(h.ef_search(), 40);
    }

    #[test]
    fn deletes_updates_filters_and_compaction() {
        let dim = 16;
        let vs = rand_vecs(500, dim, 3);
        let mut h = Hnsw::new(dim, HnswParams::default());
        for (i, v) in vs.iter().enumerate() {
            h.insert(&format!("k{i}"), v).unwrap();
        }
        // The nearest neighbour of a stored vector is itself.
        assert_eq!(h.search(&vs[42], 1, &|_| true).unwrap()[0].0, "k42");
        assert!(h.delete("k42"));
        assert!(!h.delete("k42"));
        assert!(
            h.search(&vs[42], 10, &|_| true)
                .unwrap()
                .iter()
                .all(|(k, _)| k != "k42")
        );
        // Update: the key now points at another vector.
        h.insert("k7", &vs[100]).unwrap();
        let top = h.search(&vs[100], 2, &|_| true).unwrap();
        assert!(top.iter().any(|(k, _)| k == "k7"), "{top:?}");
        assert_eq!(h.len(), 499);
        // A filter that allows only a few keys still returns k of them (the beam widens).
        let allowed: HashSet<String> = (0..500).step_by(50).map(|i| format!("k{i}")).collect();
        let got = h.search(&vs[1], 5, &|k| allowed.contains(k)).unwrap();
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|(k, _)| allowed.contains(k)));
        assert!(h.garbage_ratio() > 0.0);
        h.compact();
        assert_eq!(h.garbage_ratio(), 0.0);
        assert_eq!(h.len(), 499);
        assert_eq!(h.search(&vs[300], 1, &|_| true).unwrap()[0].0, "k300");
    }

    #[test]
    fn bad_vectors_and_persistence() {
        let mut h = Hnsw::new(4, HnswParams::default());
        assert!(matches!(
            h.insert("a", &[1.0, 2.0]),
            Err(AnnError::Dimension { .. })
        ));
        assert!(matches!(h.insert("a", &[0.0; 4]), Err(AnnError::BadVector)));
        assert!(matches!(
            h.insert("a", &[f32::NAN, 1.0, 1.0, 1.0]),
            Err(AnnError::BadVector)
        ));
        assert!(
            h.search(&[1.0, 0.0, 0.0, 0.0], 3, &|_| true)
                .unwrap()
                .is_empty()
        );
        for (i, v) in rand_vecs(200, 4, 5).iter().enumerate() {
            h.insert(&format!("日本語キー{i}"), v).unwrap();
        }
        h.delete("日本語キー3");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.ann");
        h.save(&path).unwrap();
        let back = Hnsw::load(&path).unwrap();
        assert_eq!(back.len(), 199);
        let q = [0.3, -0.2, 0.9, 0.1];
        assert_eq!(
            back.search(&q, 5, &|_| true).unwrap(),
            h.search(&q, 5, &|_| true).unwrap()
        );
        // A file of the earlier format (f32 vectors) still loads, to the same answers.
        let bytes = std::fs::read(&path).unwrap();
        let n = 200 * 4;
        let mut old = b"BKANN001".to_vec();
        old.extend_from_slice(&bytes[8..32]);
        for h in bytes[32..32 + 2 * n].chunks_exact(2) {
            let x = bunko_embed::kernels::f16_to_f32(u16::from_le_bytes([h[0], h[1]]));
            old.extend_from_slice(&x.to_le_bytes());
        }
        old.extend_from_slice(&bytes[32 + 2 * n..]);
        let old_path = dir.path().join("old.ann");
        std::fs::write(&old_path, &old).unwrap();
        let back = Hnsw::load(&old_path).unwrap();
        assert_eq!(
            back.search(&q, 5, &|_| true).unwrap(),
            h.search(&q, 5, &|_| true).unwrap()
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            Hnsw::load(&path).is_err(),
            "a truncated file is refused, not misread"
        );
        std::fs::write(&path, b"garbage!").unwrap();
        assert!(Hnsw::load(&path).is_err());
    }
}
