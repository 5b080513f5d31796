//! `bench-embed MODEL_PATH TEXTS_JSON [BATCH]`: embeds the texts (passages) in batches after a
//! warm-up and prints one JSON line: texts/s, tokens/s, load time. `bench/embed.py` runs it
//! beside the Python reference engines on the same texts.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use bunko_embed::{Encoder, Role};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: bench-embed MODEL_PATH TEXTS_JSON [BATCH]"
    );
    let batch: usize = args.get(2).map(|b| b.parse()).transpose()?.unwrap_or(32);
    let t = Instant::now();
    let enc = Encoder::load(std::path::Path::new(&args[0]))?;
    let load_s = t.elapsed().as_secs_f64();
    let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    enc.embed(&refs[..refs.len().min(batch)], Role::Passage);
    let t = Instant::now();
    let mut tokens = 0;
    for chunk in refs.chunks(batch) {
        tokens += enc.embed(chunk, Role::Passage).tokens.iter().sum::<usize>();
    }
    let secs = t.elapsed().as_secs_f64();
    let q = Instant::now();
    for t in refs.iter().take(50) {
        enc.embed(&[t], Role::Query);
    }
    let query_ms = q.elapsed().as_secs_f64() * 1000.0 / refs.len().min(50) as f64;
    println!(
        "{}",
        serde_json::json!({
            "engine": "bunko", "fingerprint": enc.fingerprint(), "texts": refs.len(),
            "seconds": secs, "texts_per_s": refs.len() as f64 / secs,
            "tokens_per_s": tokens as f64 / secs, "load_s": load_s,
            "single_query_ms": query_ms, "threads": rayon_threads(),
            "unit": bunko_embed::kernels::product_unit(),
        })
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
