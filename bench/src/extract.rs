//! `bench-extract SHARED_DIR [ROUNDS]`: text-layer extraction and OCR, side by side with the
//! command-line tools on the same files in one run. Prints one JSON line per measurement.
//!
//! - text layer: for each PDF in papers_en/ and japanese/ (+ the ja-maint-guide PDF), `pdftotext
//!   FILE /dev/null` vs bunko's extraction (pdfinfo + pdftotext ranges + normalisation), ROUNDS
//!   times each, pages/s over all files;
//! - OCR: the scanned fixtures' pages, `tesseract PAGE.png stdout -l jpn+eng` alone on pages
//!   rendered beforehand (the anchor), vs bunko's OCR path (render + tesseract + TSV parsing +
//!   normalisation) with 1 and 2 pages at once, on the four scanned fixtures joined into one
//!   4-page PDF (pdfunite).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use bunko_core::documents::DocType;
use bunko_ingest::{OcrOptions, Options, extract};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn pdfs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
        .collect();
    v.sort();
    v
}

fn pages_of(p: &Path) -> usize {
    let out = Command::new("pdfinfo").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Pages:").map(|v| v.trim().parse().unwrap()))
        .unwrap()
}

fn text_layer(name: &str, files: &[PathBuf], rounds: usize) {
    let pages: usize = files.iter().map(|f| pages_of(f)).sum::<usize>() * rounds;
    let t = Instant::now();
    for _ in 0..rounds {
        for f in files {
            let st = Command::new("pdftotext")
                .args(["-enc", "UTF-8"])
                .arg(f)
                .arg("/dev/null")
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
    let anchor = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut chars = 0usize;
    for _ in 0..rounds {
        for f in files {
            let e = extract(f, DocType::Pdf, &Options::default(), &|_, _| {}).unwrap();
            for p in &e.pages {
                chars += bunko_core::text::normalise(&p.text).text.len();
            }
        }
    }
    let ours = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "text_layer", "set": name, "files": files.len(), "pages": pages,
            "pdftotext_pages_per_s": pages as f64 / anchor,
            "bunko_pages_per_s": pages as f64 / ours,
            "ratio": anchor / ours, "normalised_bytes": chars,
        })
    );
}

fn ocr(files: &[PathBuf]) {
    let dir = tempfile::tempdir().unwrap();
    // Render every page once, outside the anchor's clock.
    let mut images = Vec::new();
    for f in files {
        for page in 1..=pages_of(f) {
            let prefix = dir.path().join(format!(
                "{}-{page}",
                f.file_stem().unwrap().to_string_lossy()
            ));
            let st = Command::new("pdftoppm")
                .args([
                    "-r",
                    "300",
                    "-gray",
                    "-png",
                    "-singlefile",
                    "-f",
                    &page.to_string(),
                    "-l",
                    &page.to_string(),
                ])
                .arg(f)
                .arg(&prefix)
                .status()
                .unwrap();
            assert!(st.success());
            images.push(prefix.with_extension("png"));
        }
    }
    let t = Instant::now();
    for img in &images {
        let out = Command::new("tesseract")
            .arg(img)
            .args(["stdout", "-l", "jpn+eng"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let anchor = t.elapsed().as_secs_f64();
    for workers in [1usize, 2] {
        let opts = Options {
            password: None,
            ocr: OcrOptions {
                workers,
                ..OcrOptions::default()
            },
        };
        let t = Instant::now();
        let mut n = 0;
        for f in files {
            let e = extract(f, DocType::Pdf, &opts, &|_, _| {}).unwrap();
            n += e
                .pages
                .iter()
                .filter(|p| p.method == bunko_core::documents::PageMethod::Ocr)
                .count();
            for p in &e.pages {
                let _ = bunko_core::text::normalise(&p.text);
            }
        }
        let ours = t.elapsed().as_secs_f64();
        assert_eq!(n, images.len());
        println!(
            "{}",
            serde_json::json!({
                "bench": "ocr", "pages": n, "languages": "jpn+eng", "dpi": 300,
                "tesseract_cli_s_per_page": anchor / n as f64,
                "bunko_workers": workers, "bunko_s_per_page": ours / n as f64,
                "overhead": ours / anchor - 1.0,
            })
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shared = PathBuf::from(args.first().map(String::as_str).unwrap_or("../shared"));
    let rounds: usize = args.get(1).map(|r| r.parse().unwrap()).unwrap_or(3);
    let only = args.get(2).cloned().unwrap_or_default();
    let root = shared.join("fixtures/pdfs");
    if only.is_empty() || only == "text" {
        text_layer("papers_en", &pdfs(&root.join("papers_en")), rounds);
        let mut ja = pdfs(&root.join("japanese"));
        let guide = shared.join("eval/ja-maint-guide/maint-guide.ja.pdf");
        if guide.exists() && !ja.iter().any(|p| p.file_name() == guide.file_name()) {
            ja.push(guide);
        }
        text_layer("japanese", &ja, rounds);
    }
    if only.is_empty() || only == "ocr" {
        // The scans as one 4-page document, so that pages can be OCR'd at once.
        let scans: Vec<PathBuf> = ["c03-29.pdf", "congress.pdf", "linn.pdf", "skew.pdf"]
            .iter()
            .map(|n| root.join("scanned_ocr").join(n))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let joined = dir.path().join("scans.pdf");
        let st = Command::new("pdfunite")
            .args(&scans)
            .arg(&joined)
            .status()
            .unwrap();
        assert!(st.success());
        ocr(&[joined]);
    }
}
