//! `bunko eval retrieval` on the shared evaluation sets (skipped, with the reason printed,
//! when `../shared` is not beside the checkout).

use super::support::{bunko, text};
use std::path::{Path, PathBuf};

fn shared(set: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/eval")
        .join(set);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (the shared evaluation sets live beside the checkout)",
            p.display()
        );
        None
    }
}

fn run_json(dir: &Path) -> serde_json::Value {
    let out = bunko(
        Path::new("."),
        &[
            "eval",
            "retrieval",
            "--dataset",
            dir.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "exactly one JSON object: {stdout}"
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn keyword_retrieval_on_cisi_and_the_japanese_guide() {
    // Floors well under the measured figures (BENCHMARKS.md): they catch a broken analyzer or
    // ranking, not noise.
    for (set, floor, queries) in [("cisi", 0.25, 76), ("ja-maint-guide", 0.60, 20)] {
        let Some(dir) = shared(set) else { continue };
        let v = run_json(&dir);
        for k in [
            "dataset",
            "mode",
            "queries",
            "ndcg_at_10",
            "mrr_at_10",
            "recall_at_100",
            "p50_ms",
            "p99_ms",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert_eq!(v["mode"], "keyword");
        assert_eq!(v["queries"], queries, "{v}");
        let ndcg = v["ndcg_at_10"].as_f64().unwrap();
        assert!(ndcg >= floor && ndcg <= 1.0, "{set}: nDCG@10 {ndcg}");
    }
}

#[test]
fn bad_evaluation_input_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bunko(
        dir.path(),
        &[
            "eval",
            "retrieval",
            "--dataset",
            dir.path().join("nope").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    std::fs::write(
        dir.path().join("docs.jsonl"),
        "{\"id\":1,\"title\":\"t\",\"text\":\"x\"}\nnot json\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("queries.jsonl"),
        "{\"id\":1,\"text\":\"x\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("qrels.tsv"), "1\t1\t1\n").unwrap();
    let out = bunko(
        dir.path(),
        &[
            "eval",
            "retrieval",
            "--dataset",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("docs.jsonl line 2"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        dir.path().join("docs.jsonl"),
        "{\"id\":1,\"title\":\"t\",\"text\":\"x\"}\n",
    )
    .unwrap();
    let out = bunko(
        dir.path(),
        &[
            "eval",
            "retrieval",
            "--dataset",
            dir.path().to_str().unwrap(),
            "--mode",
            "hybrid",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("embedder"),
        "{}",
        text(&out.stderr)
    );
    let out = bunko(
        dir.path(),
        &[
            "eval",
            "retrieval",
            "--dataset",
            dir.path().to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d = dir.path().to_str().unwrap();
    let out = bunko(
        dir.path(),
        &["eval", "retrieval", "--dataset", d, "--analyzer", "morph"],
    );
    assert_eq!(out.status.code(), Some(2), "unknown analyzer");
    let out = bunko(
        dir.path(),
        &[
            "eval",
            "retrieval",
            "--dataset",
            d,
            "--json",
            "--analyzer",
            "whitespace",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"analyzer\":\"whitespace\""),
        "{}",
        text(&out.stdout)
    );
}
