//! `bench-search prepare DIR N` builds a corpus of N chunks from the evaluation sets (real text,
//! repeated with variation) with multilingual-e5-small vectors: every distinct base chunk is
//! embedded by the real model (through the embedding cache), and each repetition gets its base
//! vector plus small Gaussian noise, renormalised. It writes `corpus.tsv` (id, project, text),
//! `vectors.f32` (N × 384, little-endian) and `queries.jsonl` (text + the real query vector),
//! which `bench/search.py` also loads into PostgreSQL + pgvector.
//!
//! `bench-search run-pg DIR` does the same through bunko's PostgreSQL index
//! (`search.backend = "postgres"`), timing its keyword half with the default candidate budget
//! and ranking every matching row, and how often the two agree on the top 10.
//!
//! `bench-search quality-pg DATASET` scores the PostgreSQL keyword half on an evaluation set
//! (as `bunko eval retrieval --mode keyword` scores the embedded one) with several candidate
//! budgets: what ranking only the rarest tokens' rows costs in nDCG@10.
//!
//! `bench-search run DIR` indexes the same files into bunko's tantivy + HNSW indexes and prints
//! one JSON line: indexing chunks/s, and p50/p99 query latency for keyword, vector and hybrid
//! (vector and hybrid with the precomputed query vectors, so both systems are timed on the
//! index alone; embedding a query is measured separately), and peak RSS. Like the PostgreSQL
//! queries, it returns ids and scores only (no snippets / `ts_headline`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use anyhow::Context;
use bunko_core::search::{Leg, rrf};
use bunko_embed::{Encoder, Role};
use bunko_index::keyword::KeywordIndex;
use bunko_index::vector::{EmbeddingCache, VectorIndex};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const DIM: usize = 384;
const PROJECTS: usize = 4;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/eval")
}

fn base_chunks() -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for line in std::fs::read_to_string(shared().join("cisi/docs.jsonl"))?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let words: Vec<&str> = v["text"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        for c in words.chunks(60) {
            out.push(c.join(" "));
        }
    }
    for line in std::fs::read_to_string(shared().join("ja-maint-guide/pages.jsonl"))?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let text: String = v["text"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let chars: Vec<char> = text.chars().collect();
        for c in chars.chunks(200) {
            out.push(c.iter().collect());
        }
    }
    Ok(out)
}

/// xorshift64* and Box–Muller: deterministic noise without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.next().max(1e-12), self.next());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn models_dir() -> PathBuf {
    bunko_core::config::LocalConfig::default().resolved_models_dir()
}

fn prepare(dir: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let spec = bunko_core::models::find("multilingual-e5-small").unwrap();
    let enc = Encoder::load(&spec.path(&models_dir())).context("bunko models pull")?;
    let cache = EmbeddingCache::open(
        &models_dir().join("embedding-cache"),
        enc.fingerprint(),
        DIM,
    )?;
    let base = base_chunks()?;
    eprintln!("{} distinct base chunks", base.len());
    let mut base_vecs = Vec::with_capacity(base.len());
    let t = Instant::now();
    for (i, batch) in base.chunks(32).enumerate() {
        let missing: Vec<&str> = batch
            .iter()
            .filter(|t| cache.get(&bunko_index::vector::text_hash(t)).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let e = enc.embed(&missing, Role::Passage);
            for (j, t) in missing.iter().enumerate() {
                cache.put(bunko_index::vector::text_hash(t), e.get(j))?;
            }
        }
        for t in batch {
            base_vecs.push(cache.get(&bunko_index::vector::text_hash(t)).unwrap());
        }
        if i % 20 == 0 {
            eprint!(
                "\rembedded {}/{} ({:.0} s)",
                base_vecs.len(),
                base.len(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut corpus = BufWriter::new(std::fs::File::create(dir.join("corpus.tsv"))?);
    let mut vectors = BufWriter::new(std::fs::File::create(dir.join("vectors.f32"))?);
    let words: Vec<&str> = base.iter().flat_map(|t| t.split_whitespace()).collect();
    for i in 0..n {
        let b = i % base.len();
        // Variation: a few words from elsewhere in the corpus, so repeated text differs.
        let extra: Vec<&str> = (0..3)
            .map(|_| words[(rng.next() * words.len() as f64) as usize])
            .collect();
        let text = format!("{} {}", base[b], extra.join(" ")).replace(['\t', '\n'], " ");
        writeln!(corpus, "c{i}\tp{}\t{text}", i % PROJECTS)?;
        let mut v: Vec<f32> = base_vecs[b]
            .iter()
            .map(|x| x + 0.02 * rng.gauss())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        for x in v {
            vectors.write_all(&x.to_le_bytes())?;
        }
    }
    corpus.flush()?;
    vectors.flush()?;
    let mut queries = BufWriter::new(std::fs::File::create(dir.join("queries.jsonl"))?);
    for set in ["cisi", "ja-maint-guide"] {
        for line in std::fs::read_to_string(shared().join(set).join("queries.jsonl"))?.lines() {
            let q: serde_json::Value = serde_json::from_str(line)?;
            let text = q["text"].as_str().unwrap_or("").to_owned();
            let e = enc.embed(&[&text], Role::Query);
            writeln!(
                queries,
                "{}",
                serde_json::json!({"text": text, "vector": e.get(0)})
            )?;
        }
    }
    queries.flush()?;
    Ok(())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The vectors file, read in blocks (a 1M-chunk file is 1.5 GB: never held whole, so the
/// peak RSS measured is the index's, not the harness's).
fn for_each_vector(dir: &Path, mut f: impl FnMut(usize, &[f32])) -> anyhow::Result<()> {
    let mut r =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(dir.join("vectors.f32"))?);
    let mut buf = vec![0u8; DIM * 4];
    let mut v = vec![0f32; DIM];
    let mut i = 0;
    loop {
        match std::io::Read::read_exact(&mut r, &mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for (x, b) in v.iter_mut().zip(buf.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        f(i, &v);
        i += 1;
    }
}

/// The queries with their real query vectors.
fn load_queries(dir: &Path) -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    Ok(std::fs::read_to_string(dir.join("queries.jsonl"))?
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let vec = v["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (v["text"].as_str().unwrap().to_owned(), vec)
        })
        .collect())
}

/// Every query's exact top 10 (score, chunk number), in one pass over the vectors file: what
/// an index's recall@10 is measured against.
fn exact_top10(
    dir: &Path,
    queries: &[(String, Vec<f32>)],
) -> anyhow::Result<Vec<Vec<(f32, usize)>>> {
    let mut exact: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(11); queries.len()];
    for_each_vector(dir, |i, v| {
        for ((_, q), top) in queries.iter().zip(exact.iter_mut()) {
            let s = bunko_embed::kernels::dot_f32(q, v);
            if top.len() < 10 || s > top[top.len() - 1].0 {
                let at = top.partition_point(|e| e.0 >= s);
                top.insert(at, (s, i));
                top.truncate(10);
            }
        }
    })?;
    Ok(exact)
}

/// Reciprocal-rank fusion of the two halves' ids, weights 1/1 and k = 60 (the server's
/// defaults).
fn fuse(keyword: Vec<String>, vector: Vec<String>) -> Vec<(String, f64)> {
    let leg = |ids| Leg { ids, weight: 1.0 };
    rrf(&[leg(&keyword), leg(&vector)], 60.0)
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // As `bunko serve` runs it: Japanese words from the IPADIC dictionary when installed.
    let mut kw = KeywordIndex::open(&tmp.path().join("keyword"))?;
    let mut analyzer = "bigrams";
    match bunko_index::morph::Morphology::prepare(
        Path::new(bunko_index::morph::DEBIAN_IPADIC),
        &std::env::temp_dir().join("bunko-bench-dict"),
    ) {
        Ok(m) => {
            kw = kw.with_morphology(m).0;
            analyzer = "bigrams+words";
        }
        Err(e) => eprintln!("Japanese by bigrams only: {e}"),
    }
    let vx = VectorIndex::in_memory(DIM, "bench");
    let t = Instant::now();
    let mut lines = std::io::BufReader::new(std::fs::File::open(dir.join("corpus.tsv"))?).lines();
    let mut n = 0;
    let mut failed = None;
    for_each_vector(dir, |_, v| {
        if failed.is_some() {
            return;
        }
        let Some(Ok(line)) = lines.next() else {
            return;
        };
        let mut parts = line.splitn(3, '\t');
        let (id, project, text) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        if let Err(e) = kw.upsert(id, project, "", text) {
            failed = Some(anyhow::Error::from(e));
            return;
        }
        if let Err(e) = vx.upsert(project, id, v) {
            failed = Some(anyhow::Error::from(e));
            return;
        }
        n += 1;
        if n % 10_000 == 0 {
            eprint!("\rindexed {n} ({:.0} s)", t.elapsed().as_secs_f64());
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    kw.commit()?;
    eprintln!();
    let index_s = t.elapsed().as_secs_f64();
    let rss_indexed = peak_rss_mib();
    let queries = load_queries(dir)?;
    let projects = ["p0", "p1", "p2", "p3"];
    let exact = exact_top10(dir, &queries)?;
    let recall_at = |ef: usize| -> anyhow::Result<(f64, f64, f64)> {
        vx.set_ef_search(ef);
        let (mut recall, mut ms) = (0.0, Vec::new());
        for ((_, q), top) in queries.iter().zip(&exact) {
            let want: std::collections::HashSet<String> =
                top.iter().map(|(_, i)| format!("c{i}")).collect();
            let t = Instant::now();
            let got = vx.search(&projects, q, 10)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            recall += got.iter().filter(|h| want.contains(&h.1)).count() as f64 / 10.0;
        }
        Ok((
            recall / queries.len() as f64,
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.99),
        ))
    };
    // Recall against latency at other beam widths (BENCH_EF=128,256,512), then the default.
    let mut sweep = Vec::new();
    if let Ok(list) = std::env::var("BENCH_EF") {
        for ef in list
            .split(',')
            .filter_map(|e| e.trim().parse::<usize>().ok())
        {
            let (r, p50, p99) = recall_at(ef)?;
            eprintln!("ef_search {ef}: recall@10 {r:.3}, p50 {p50:.2} ms, p99 {p99:.2} ms");
            sweep.push(serde_json::json!({"ef_search": ef, "recall_at_10": r, "p50_ms": p50, "p99_ms": p99}));
        }
    }
    let recall = recall_at(bunko_index::ann::HnswParams::default().ef_search)?.0;
    let (mut tk, mut tv, mut th, mut hits) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
    let mut th_seq = Vec::new();
    for _round in 0..3 {
        for (text, vec) in &queries {
            let t = Instant::now();
            let k = kw.search_ranked(&projects, text, 10, 0)?;
            tk.push(t.elapsed().as_secs_f64() * 1e3);
            hits += k.len();
            let t = Instant::now();
            let v = vx.search(&projects, vec, 10)?;
            tv.push(t.elapsed().as_secs_f64() * 1e3);
            // Hybrid one half after the other (as the server did before 2026-11-30)…
            let t = Instant::now();
            let kh = kw.search_ranked(&projects, text, 100, 0)?;
            let vh = vx.search(&projects, vec, 100)?;
            th_seq.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box((kh, vh));
            // …and as it does now: the keyword half on a second thread meanwhile.
            let t = Instant::now();
            let (kh, vh) = std::thread::scope(|scope| {
                let keyword = scope.spawn(|| kw.search_ranked(&projects, text, 100, 0));
                let vector = vx.search(&projects, vec, 100);
                (keyword.join().expect("keyword half"), vector)
            });
            let (kh, vh) = (kh?, vh?);
            let fused = fuse(
                kh.into_iter().map(|h| h.id).collect(),
                vh.into_iter().map(|h| h.1).collect(),
            );
            th.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box((k, v, fused));
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "engine": "bunko", "chunks": n, "index_seconds": index_s,
            "chunks_per_s": n as f64 / index_s, "queries": tk.len(),
            "keyword_mean_hits": hits as f64 / tk.len() as f64,
            "keyword_p50_ms": pct(&mut tk, 0.5), "keyword_p99_ms": pct(&mut tk, 0.99),
            "vector_p50_ms": pct(&mut tv, 0.5), "vector_p99_ms": pct(&mut tv, 0.99),
            "hybrid_p50_ms": pct(&mut th, 0.5), "hybrid_p99_ms": pct(&mut th, 0.99),
            "hybrid_sequential_p50_ms": pct(&mut th_seq, 0.5),
            "hybrid_sequential_p99_ms": pct(&mut th_seq, 0.99),
            "peak_rss_mib": peak_rss_mib(), "rss_after_indexing_mib": rss_indexed,
            "vector_recall_at_10": recall, "analyzer": analyzer, "ef_sweep": sweep,
        })
    );
    Ok(())
}

/// `run-pg DIR`: the same corpus through bunko's PostgreSQL index (`search.backend =
/// "postgres"`): bunko's analyzers make the tokens, `PgSearch` stores and ranks them, the
/// vectors go into pgvector (HNSW, cosine); timed as `run` times the embedded index. Needs
/// `BUNKO_TEST_PG_URL` (`scripts/services start`); a fresh database is made and dropped.
/// The Japanese dictionary, as the server prepares it (None without Debian's mecab-ipadic).
fn morphology() -> Option<std::sync::Arc<bunko_index::morph::Morphology>> {
    bunko_index::morph::Morphology::prepare(
        Path::new(bunko_index::morph::DEBIAN_IPADIC),
        &std::env::temp_dir().join("bunko-bench-dict"),
    )
    .ok()
}

/// Japanese words of `text`, as `PgIndex` makes them.
fn words(
    morph: &Option<std::sync::Arc<bunko_index::morph::Morphology>>,
    text: &str,
) -> Vec<String> {
    match morph {
        Some(m) if text.chars().any(bunko_core::text::is_cjk) => {
            m.terms(text).into_iter().map(|(_, _, t)| t).collect()
        }
        _ => Vec::new(),
    }
}

/// A query's tokens for the PostgreSQL keyword half, as `PgIndex` makes them.
fn pg_keyword_query(
    morph: &Option<std::sync::Arc<bunko_index::morph::Morphology>>,
    text: &str,
) -> bunko_store::postgres::search::KeywordQuery {
    let terms = bunko_index::analyzer::analyze(text);
    let w = words(morph, text);
    let (cjk, plain): (Vec<String>, Vec<String>) = terms
        .into_iter()
        .partition(|t| t.chars().any(bunko_core::text::is_cjk));
    bunko_store::postgres::search::KeywordQuery {
        bigram_weight: if w.is_empty() {
            1.0
        } else {
            bunko_index::keyword::BIGRAM_WEIGHT_WITH_WORDS
        },
        plain,
        cjk,
        words: w,
    }
}

fn run_pg(dir: &Path) -> anyhow::Result<()> {
    use bunko_store::postgres::search::{CANDIDATE_ROWS, IndexedChunk, PgSearch, Scope};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let db = bunko_store::testing::PgDatabase::create()
            .await
            .context("BUNKO_TEST_PG_URL")?;
        let pg = PgSearch::open(&db.url, 4, Some((DIM, "bench"))).await?;
        let morph = morphology();
        let t = Instant::now();
        let mut lines =
            std::io::BufReader::new(std::fs::File::open(dir.join("corpus.tsv"))?).lines();
        // Chunks go in as documents of 500 chunks per project, as ingestion writes them.
        let mut batches: std::collections::HashMap<String, Vec<IndexedChunk>> =
            std::collections::HashMap::new();
        let mut pending = Vec::new();
        let mut n = 0usize;
        for_each_vector(dir, |_, v| {
            let Some(Ok(line)) = lines.next() else { return };
            let mut parts = line.splitn(3, '\t');
            let (id, project, text) = (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            );
            let b = batches.entry(project.clone()).or_default();
            b.push(IndexedChunk {
                text_terms: bunko_index::analyzer::analyze(&text),
                words: words(&morph, &text),
                vector: Some(v.to_vec()),
                id,
                text,
            });
            if b.len() == 500 {
                pending.push((project, std::mem::take(b)));
            }
            n += 1;
        })?;
        for (p, b) in batches {
            if !b.is_empty() {
                pending.push((p, b));
            }
        }
        for (i, (project, chunks)) in pending.iter().enumerate() {
            pg.replace_document(&format!("d{i}"), project, "", &[], chunks)
                .await?;
            if i % 20 == 0 {
                eprint!(
                    "\rindexed {} documents ({:.0} s)",
                    i,
                    t.elapsed().as_secs_f64()
                );
            }
        }
        eprintln!();
        let index_s = t.elapsed().as_secs_f64();
        // Statistics, as autovacuum would gather them after the load.
        pg.analyze().await?;
        let queries = load_queries(dir)?;
        let exact = exact_top10(dir, &queries)?;
        let projects: Vec<String> = (0..PROJECTS).map(|p| format!("p{p}")).collect();
        let all = Scope::default();
        let keyword_query = |text: &str| pg_keyword_query(&morph, text);
        let mut recall = 0.0;
        for ((_, q), top) in queries.iter().zip(&exact) {
            let want: std::collections::HashSet<String> =
                top.iter().map(|(_, i)| format!("c{i}")).collect();
            let got = pg.vector(&projects, &all, q, 10).await?;
            recall += got.iter().filter(|h| want.contains(&h.1)).count() as f64 / 10.0;
        }
        let recall = recall / queries.len() as f64;
        // The keyword half ranking every matching row, and how often the default budget's
        // top 10 agrees with it.
        pg.set_candidate_rows(0);
        let (mut tall, mut all_top) = (Vec::new(), Vec::new());
        for (text, _) in &queries {
            let t = Instant::now();
            let k = pg
                .keyword(&projects, &all, &keyword_query(text), 10)
                .await?;
            tall.push(t.elapsed().as_secs_f64() * 1e3);
            all_top.push(k.into_iter().map(|h| h.id).collect::<Vec<_>>());
        }
        pg.set_candidate_rows(CANDIDATE_ROWS);
        let (mut tk, mut tv, mut th, mut hits) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
        let mut agree = 0.0;
        for round in 0..3 {
            for (i, (text, vec)) in queries.iter().enumerate() {
                let t = Instant::now();
                let k = pg
                    .keyword(&projects, &all, &keyword_query(text), 10)
                    .await?;
                tk.push(t.elapsed().as_secs_f64() * 1e3);
                hits += k.len();
                if round == 0 {
                    let want = &all_top[i];
                    agree += k.iter().filter(|h| want.contains(&h.id)).count() as f64
                        / want.len().max(1) as f64;
                }
                let t = Instant::now();
                let v = pg.vector(&projects, &all, vec, 10).await?;
                tv.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let kq = keyword_query(text);
                // One half after the other (as `search_blocking` ran them until 2026-11-30; it
                // now runs them at once, which this side has not been re-measured with).
                let kh = pg.keyword(&projects, &all, &kq, 100).await?;
                let vh = pg.vector(&projects, &all, vec, 100).await?;
                let fused = fuse(
                    kh.into_iter().map(|h| h.id).collect(),
                    vh.into_iter().map(|h| h.1).collect(),
                );
                th.push(t.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box((k, v, fused));
            }
        }
        println!(
            "{}",
            serde_json::json!({
                "engine": "bunko search.backend=postgres", "chunks": n, "index_seconds": index_s,
                "chunks_per_s": n as f64 / index_s, "queries": tk.len(),
                "keyword_mean_hits": hits as f64 / tk.len() as f64,
                "keyword_p50_ms": pct(&mut tk, 0.5), "keyword_p99_ms": pct(&mut tk, 0.99),
                "candidate_rows": CANDIDATE_ROWS,
                "keyword_all_rows_p50_ms": pct(&mut tall, 0.5),
                "keyword_all_rows_p99_ms": pct(&mut tall, 0.99),
                "keyword_top10_agreement": agree / queries.len() as f64,
                "vector_p50_ms": pct(&mut tv, 0.5), "vector_p99_ms": pct(&mut tv, 0.99),
                "hybrid_p50_ms": pct(&mut th, 0.5), "hybrid_p99_ms": pct(&mut th, 0.99),
                "vector_recall_at_10": recall,
                "analyzer": if morph.is_some() { "bigrams+words" } else { "bigrams" },
            })
        );
        pg.close().await;
        anyhow::Ok(())
    })
}

/// `quality-pg DATASET`: the PostgreSQL keyword half on an evaluation set, one document per
/// entry (title + text), for each candidate budget: nDCG@10, MRR@10, recall@100 and latency.
fn quality_pg(dir: &Path) -> anyhow::Result<()> {
    use bunko_core::eval::{Dataset, mrr_at, ndcg_at, recall_at};
    use bunko_store::postgres::search::{IndexedChunk, PgSearch, Scope};
    let ds = Dataset::load(dir).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let db = bunko_store::testing::PgDatabase::create()
            .await
            .context("BUNKO_TEST_PG_URL")?;
        let pg = PgSearch::open(&db.url, 4, None).await?;
        let morph = morphology();
        for d in &ds.docs {
            let chunk = IndexedChunk {
                id: d.id.clone(),
                text_terms: bunko_index::analyzer::analyze(&d.text),
                words: words(&morph, &d.text),
                vector: None,
                text: d.text.clone(),
            };
            let title_terms = bunko_index::analyzer::analyze(&d.title);
            pg.replace_document(&d.id, "eval", &d.title, &title_terms, &[chunk])
                .await?;
        }
        pg.analyze().await?;
        let projects = vec!["eval".to_owned()];
        let judged = ds.judged();
        for budget in [0usize, 1000, 500, 200, 100, 50] {
            pg.set_candidate_rows(budget);
            let (mut ndcg, mut mrr, mut recall, mut ms) = (0.0, 0.0, 0.0, Vec::new());
            for q in &judged {
                let t = Instant::now();
                let hits = pg
                    .keyword(
                        &projects,
                        &Scope::default(),
                        &pg_keyword_query(&morph, &q.text),
                        100,
                    )
                    .await?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                let ranked: Vec<String> = hits.into_iter().map(|h| h.id).collect();
                let j = &ds.qrels[&q.id];
                ndcg += ndcg_at(10, &ranked, j);
                mrr += mrr_at(10, &ranked, j);
                recall += recall_at(100, &ranked, j);
            }
            let n = judged.len().max(1) as f64;
            println!(
                "{}",
                serde_json::json!({
                    "dataset": ds.name, "documents": ds.docs.len(), "queries": judged.len(),
                    "candidate_rows": budget, "ndcg_at_10": ndcg / n, "mrr_at_10": mrr / n,
                    "recall_at_100": recall / n,
                    "p50_ms": pct(&mut ms, 0.5), "p99_ms": pct(&mut ms, 0.99),
                })
            );
        }
        pg.close().await;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") if args.len() == 3 => prepare(Path::new(&args[1]), args[2].parse()?),
        Some("run") if args.len() == 2 => run(Path::new(&args[1])),
        Some("run-pg") if args.len() == 2 => run_pg(Path::new(&args[1])),
        Some("quality-pg") if args.len() == 2 => quality_pg(Path::new(&args[1])),
        _ => anyhow::bail!(
            "usage: bench-search prepare DIR N | bench-search run DIR | bench-search run-pg DIR \
             | bench-search quality-pg DATASET"
        ),
    }
}
