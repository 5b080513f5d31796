//! `bunko eval retrieval` on the shared evaluation sets (skipped, with the reason printed,
//! when `../shared` is not beside the checkout).

use super::support::{bunko, bunko_env, text};
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

fn run_json(dir: &Path, mode: &str) -> serde_json::Value {
    let out = bunko(
        Path::new("."),
        &[
            "eval",
            "retrieval",
            "--dataset",
            dir.to_str().unwrap(),
            "--json",
            "--mode",
            mode,
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
        let v = run_json(&dir, "keyword");
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

/// Hybrid on the Japanese guide with the real embedder: better than either half alone and
/// than the plain-BM25 anchor (0.714). The vectors come through the embedding cache, so only
/// the first run on a machine embeds the 69 pages.
#[test]
fn hybrid_beats_each_half_on_the_japanese_guide() {
    let Some(dir) = shared("ja-maint-guide") else {
        return;
    };
    if !super::support::model_installed("multilingual-e5-small") {
        return;
    }
    let ndcg = |mode: &str| {
        let v = run_json(&dir, mode);
        assert_eq!(v["mode"], mode);
        assert_eq!(v["model"].is_string(), mode != "keyword", "{v}");
        v["ndcg_at_10"].as_f64().unwrap()
    };
    let (hybrid, keyword, vector) = (ndcg("hybrid"), ndcg("keyword"), ndcg("vector"));
    assert!(vector > 0.6, "vector half nDCG@10 {vector}");
    assert!(
        hybrid > keyword.max(vector),
        "hybrid {hybrid}, keyword {keyword}, vector {vector}"
    );
    assert!(hybrid > 0.75, "hybrid {hybrid} (plain BM25 anchor 0.714)");
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
    let d = dir.path().to_str().unwrap();
    let args = ["eval", "retrieval", "--dataset", d, "--mode", "hybrid"];
    let out = bunko_env(dir.path(), &args, &[("BUNKO__LOCAL__EMBEDDER", "none")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("embedder"),
        "{}",
        text(&out.stderr)
    );
    let empty = dir.path().join("no-models");
    let out = bunko_env(
        dir.path(),
        &args,
        &[("BUNKO_MODELS_DIR", empty.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bunko models pull"),
        "{}",
        text(&out.stderr)
    );
    let out = bunko(
        dir.path(),
        &["eval", "retrieval", "--dataset", d, "--mode", "fuzzy"],
    );
    assert_eq!(out.status.code(), Some(2), "unknown mode");
    let out = bunko(
        dir.path(),
        &[
            "eval",
            "retrieval",
            "--dataset",
            d,
            "--json",
            "--mode",
            "keyword",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bunko(
        dir.path(),
        &["eval", "retrieval", "--dataset", d, "--analyzer", "mecab"],
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
            "--mode",
            "keyword",
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
