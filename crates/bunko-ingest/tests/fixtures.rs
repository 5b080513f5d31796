//! Extraction on the shared fixtures, compared with references: each Japanese PDF page's
//! normalised text against `pdftotext`'s (≥ 99 % of characters, whitespace ignored), the
//! scanned brochure's OCR text against its ground truth (≥ 95 %), and the other scans become
//! searchable text. Skips with a printed reason when ../shared or the tools are absent (in CI,
//! where both are present, absence is a failure).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::panic
)]

use bunko_core::documents::{DocType, PageMethod};
use bunko_core::text::normalise;
use bunko_ingest::{Options, extract};
use std::path::{Path, PathBuf};
use std::process::Command;
use unicode_normalization::UnicodeNormalization;

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if p.join("fixtures/pdfs").is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "../shared is missing in CI"
    );
    eprintln!("SKIPPED: ../shared/fixtures is absent");
    None
}

fn tools() -> bool {
    let ok = ["pdftotext", "pdfinfo", "pdftoppm", "tesseract"]
        .iter()
        .all(|t| Command::new(t).arg("-v").output().is_ok());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "poppler-utils/tesseract missing in CI"
        );
        eprintln!(
            "SKIPPED: poppler-utils or tesseract not installed (./scripts/test installs them)"
        );
    }
    ok
}

/// Characters without whitespace, NFKC (what bunko's normalisation is measured against).
fn squash(s: &str) -> Vec<char> {
    s.nfkc().filter(|c| !c.is_whitespace()).collect()
}

/// 1 − edit distance / reference length: the share of the reference's characters reproduced.
fn similarity(got: &[char], want: &[char]) -> f64 {
    if want.is_empty() {
        return if got.is_empty() { 1.0 } else { 0.0 };
    }
    let mut prev: Vec<usize> = (0..=got.len()).collect();
    let mut cur = vec![0; got.len() + 1];
    for (i, w) in want.iter().enumerate() {
        cur[0] = i + 1;
        for (j, g) in got.iter().enumerate() {
            let sub = prev[j] + usize::from(w != g);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    1.0 - prev[got.len()] as f64 / want.len() as f64
}

fn pdftotext_pages(path: &Path) -> Vec<String> {
    let out = Command::new("pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(path)
        .arg("-")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut pages: Vec<String> = text.split('\u{0c}').map(str::to_owned).collect();
    if pages.last().is_some_and(|p| p.trim().is_empty()) {
        pages.pop();
    }
    pages
}

#[test]
fn japanese_pdfs_match_pdftotext_page_by_page() {
    let (Some(shared), true) = (shared(), tools()) else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared.join("fixtures/pdfs/japanese"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
        .collect();
    files.push(shared.join("eval/ja-maint-guide/maint-guide.ja.pdf"));
    let mut checked = 0;
    for f in files.iter().filter(|f| f.exists()) {
        let got = extract(f, DocType::Pdf, &Options::default(), &|_, _| {}).unwrap();
        let want = pdftotext_pages(f);
        assert_eq!(got.pages.len(), want.len(), "{}: page count", f.display());
        let mut worst = 1.0f64;
        for (g, w) in got.pages.iter().zip(&want) {
            assert_eq!(g.method, PageMethod::Text, "{} p{}", f.display(), g.page);
            let sim = similarity(&squash(&normalise(&g.text).text), &squash(w));
            assert!(
                sim >= 0.99,
                "{} page {}: {:.4} of characters match pdftotext",
                f.display(),
                g.page,
                sim
            );
            worst = worst.min(sim);
            checked += 1;
        }
        eprintln!(
            "{}: {} pages, worst page {:.4}",
            f.display(),
            want.len(),
            worst
        );
    }
    assert!(checked >= 71, "only {checked} pages checked");
}

#[test]
fn scanned_pages_are_ocrd_to_their_ground_truth() {
    let (Some(shared), true) = (shared(), tools()) else {
        return;
    };
    let dir = shared.join("fixtures/pdfs/scanned_ocr");
    let linn = extract(
        &dir.join("linn.pdf"),
        DocType::Pdf,
        &Options::default(),
        &|_, _| {},
    )
    .unwrap();
    assert!(linn.pages.iter().all(|p| p.method == PageMethod::Ocr));
    let conf = linn.pages[0].confidence.unwrap();
    assert!((50.0..=100.0).contains(&conf), "confidence {conf}");
    let got: String = linn.pages.iter().map(|p| normalise(&p.text).text).collect();
    let want = std::fs::read_to_string(dir.join("linn.txt")).unwrap();
    let sim = similarity(&squash(&got), &squash(&want));
    eprintln!("linn.pdf: {sim:.4} of the ground truth's characters (mean confidence {conf:.1})");
    assert!(
        sim >= 0.95,
        "linn.pdf OCR matches only {sim:.4} of linn.txt"
    );
    for (name, word) in [("c03-29.pdf", "Watson"), ("congress.pdf", "Congress")] {
        let e = extract(
            &dir.join(name),
            DocType::Pdf,
            &Options::default(),
            &|_, _| {},
        )
        .unwrap();
        let text: String = e.pages.iter().map(|p| p.text.as_str()).collect();
        assert!(
            e.pages.iter().all(|p| p.method == PageMethod::Ocr),
            "{name}"
        );
        assert!(
            text.to_lowercase().contains(&word.to_lowercase()),
            "{name}: OCR text lacks {word:?}: {}",
            &text[..text.len().min(300)]
        );
    }
}

#[test]
fn images_and_text_encodings() {
    let (Some(shared), true) = (shared(), tools()) else {
        return;
    };
    let png = shared.join("fixtures/pdfs/scanned_ocr/typewriter.png");
    let e = extract(&png, DocType::Png, &Options::default(), &|_, _| {}).unwrap();
    assert_eq!(e.pages.len(), 1);
    assert_eq!(e.pages[0].method, PageMethod::Ocr);
    assert!(
        e.pages[0].text.split_whitespace().count() > 10,
        "{:?}",
        e.pages[0].text
    );
    // JPEG and TIFF: the brochure's page rendered by pdftoppm in each format.
    let tmp = tempfile::tempdir().unwrap();
    let linn = shared.join("fixtures/pdfs/scanned_ocr/linn.pdf");
    let want = std::fs::read_to_string(shared.join("fixtures/pdfs/scanned_ocr/linn.txt")).unwrap();
    for (flag, ext, ty) in [
        ("-jpeg", "jpg", DocType::Jpeg),
        ("-tiff", "tif", DocType::Tiff),
    ] {
        let prefix = tmp.path().join(format!("linn-{ext}"));
        let st = Command::new("pdftoppm")
            .args([flag, "-r", "300", "-gray", "-singlefile"])
            .arg(&linn)
            .arg(&prefix)
            .status()
            .unwrap();
        assert!(st.success());
        let img = prefix.with_extension(ext);
        let head = std::fs::read(&img).unwrap();
        assert_eq!(DocType::sniff(&head[..16], "x"), Some(ty), "{ext}");
        let e = extract(&img, ty, &Options::default(), &|_, _| {}).unwrap();
        assert_eq!(e.pages[0].method, PageMethod::Ocr);
        let got: String = e.pages.iter().map(|p| normalise(&p.text).text).collect();
        let sim = similarity(&squash(&got), &squash(&want));
        assert!(sim >= 0.9, "{ext}: {sim:.4}");
    }
    // Shift_JIS plain text through the same entry point.
    let p = tmp.path().join("sjis.txt");
    let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode("第一条　この法律は、日本語の文書を扱う。");
    std::fs::write(&p, &bytes).unwrap();
    let e = extract(&p, DocType::Text, &Options::default(), &|_, _| {}).unwrap();
    assert_eq!(e.pages[0].text, "第一条　この法律は、日本語の文書を扱う。");
}

#[test]
fn similarity_is_an_honest_measure() {
    let a: Vec<char> = "日本語のテキスト".chars().collect();
    assert_eq!(similarity(&a, &a), 1.0);
    let b: Vec<char> = "日本語の䛾キスト".chars().collect();
    assert!((similarity(&b, &a) - 0.875).abs() < 1e-9);
    assert_eq!(similarity(&[], &a), 0.0);
}

/// Orientation detection: the scanned brochure turned by 90° and 180° (qpdf sets the page's
/// /Rotate, so the rendered image is on its side or upside down) is still read.
#[test]
fn rotated_scans_are_read_upright() {
    let (Some(shared), true) = (shared(), tools()) else {
        return;
    };
    if Command::new("qpdf").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "qpdf missing in CI");
        eprintln!("SKIPPED: qpdf not installed (./scripts/test installs it)");
        return;
    }
    let dir = shared.join("fixtures/pdfs/scanned_ocr");
    let want = std::fs::read_to_string(dir.join("linn.txt")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for angle in [90, 180, 270] {
        let out = tmp.path().join(format!("linn-{angle}.pdf"));
        let st = Command::new("qpdf")
            .arg(format!("--rotate=+{angle}:1"))
            .arg(dir.join("linn.pdf"))
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        let e = extract(&out, DocType::Pdf, &Options::default(), &|_, _| {}).unwrap();
        let got: String = e.pages.iter().map(|p| normalise(&p.text).text).collect();
        let sim = similarity(&squash(&got), &squash(&want));
        eprintln!("linn.pdf turned {angle}°: {sim:.4} of the ground truth");
        assert!(sim >= 0.9, "turned {angle}°: only {sim:.4} of linn.txt");
    }
}
