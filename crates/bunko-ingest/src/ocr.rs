//! OCR with tesseract: PDF pages rendered by `pdftoppm` (300 dpi, grey) and images read
//! directly, pages in parallel (one tesseract per core, each single-threaded), automatic page
//! segmentation with orientation detection (`--psm 1`) when the `osd` data is installed, and
//! the mean word confidence of each page from tesseract's TSV output.

use crate::process::run;
use crate::{ExtractError, Extracted, RawPage};
use bunko_core::documents::{DocMeta, PageMethod};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const RENDER_LIMIT: Duration = Duration::from_secs(120);
const OCR_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct OcrOptions {
    pub enabled: bool,
    /// Tesseract languages, `+`-joined (default `jpn+eng`).
    pub languages: String,
    pub dpi: u32,
    /// Pages OCR'd at once (default: the number of cores).
    pub workers: usize,
}

impl Default for OcrOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            languages: "jpn+eng".into(),
            dpi: 300,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// The languages tesseract has on this host (`tesseract --list-langs`), asked once.
fn installed_languages() -> &'static [String] {
    static LANGS: OnceLock<Vec<String>> = OnceLock::new();
    LANGS.get_or_init(|| {
        let mut cmd = Command::new("tesseract");
        cmd.arg("--list-langs");
        match run(cmd, Duration::from_secs(20)) {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .skip(1)
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            Err(_) => Vec::new(),
        }
    })
}

/// The requested languages that are installed (`-l` value), and whether orientation detection
/// can run. Missing languages are logged; none at all is a tool error.
fn languages(requested: &str) -> Result<(String, bool), ExtractError> {
    let have = installed_languages();
    if have.is_empty() {
        return Err(ExtractError::Tool(
            "tesseract is not installed or has no language data (Debian: tesseract-ocr, tesseract-ocr-jpn, tesseract-ocr-eng)".into(),
        ));
    }
    let (ok, missing): (Vec<&str>, Vec<&str>) = requested
        .split('+')
        .filter(|l| !l.is_empty())
        .partition(|l| have.iter().any(|h| h == l));
    if !missing.is_empty() {
        tracing::warn!(missing = %missing.join("+"), "OCR languages not installed; using the others");
    }
    if ok.is_empty() {
        return Err(ExtractError::Tool(format!(
            "none of the OCR languages `{requested}` is installed (have: {})",
            have.join(", ")
        )));
    }
    Ok((ok.join("+"), have.iter().any(|h| h == "osd")))
}

fn tesseract(
    image: &Path,
    langs: &str,
    osd: bool,
) -> Result<Vec<(u32, String, Option<f32>)>, ExtractError> {
    let mut cmd = Command::new("tesseract");
    cmd.arg(image)
        .arg("stdout")
        .args(["-l", langs, "--psm", if osd { "1" } else { "3" }])
        .arg("tsv")
        // Pages run in parallel: one thread each.
        .env("OMP_THREAD_LIMIT", "1");
    let out = run(cmd, OCR_LIMIT)?;
    if !out.success() {
        return Err(ExtractError::Unreadable(format!(
            "OCR failed: {}",
            out.stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("tesseract gave no reason")
        )));
    }
    Ok(parse_tsv(&String::from_utf8_lossy(&out.stdout)))
}

/// Tesseract TSV → per page (page number, text with line and paragraph breaks, mean word
/// confidence).
pub fn parse_tsv(tsv: &str) -> Vec<(u32, String, Option<f32>)> {
    let mut pages: Vec<(u32, String, f64, usize)> = Vec::new();
    let mut last: Option<(u32, u32, u32, u32)> = None;
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.splitn(12, '\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            if cols.len() >= 2 && cols[0] == "1" {
                let page = cols[1].parse().unwrap_or(1);
                if pages.last().is_none_or(|p| p.0 != page) {
                    pages.push((page, String::new(), 0.0, 0));
                }
            }
            continue;
        }
        let num = |i: usize| cols[i].parse::<u32>().unwrap_or(0);
        let (page, block, par, ln) = (num(1), num(2), num(3), num(4));
        let conf: f64 = cols[10].parse().unwrap_or(-1.0);
        let word = cols[11].trim();
        if word.is_empty() {
            continue;
        }
        if pages.last().is_none_or(|p| p.0 != page) {
            pages.push((page, String::new(), 0.0, 0));
            last = None;
        }
        let Some(cur) = pages.last_mut() else {
            continue;
        };
        match last {
            Some((_, b, p, _)) if (b, p) != (block, par) => cur.1.push_str("\n\n"),
            Some((_, _, _, l)) if l != ln => cur.1.push('\n'),
            Some(_) => cur.1.push(' '),
            None => {}
        }
        cur.1.push_str(word);
        if conf >= 0.0 {
            cur.2 += conf;
            cur.3 += 1;
        }
        last = Some((page, block, par, ln));
    }
    pages
        .into_iter()
        .map(|(p, t, sum, n)| (p, t, (n > 0).then(|| (sum / n as f64) as f32)))
        .collect()
}

/// OCRs the given pages of a PDF, in parallel; `report(k)` after each page.
pub fn pdf_pages(
    path: &Path,
    password: Option<&str>,
    pages: &[u32],
    opts: &OcrOptions,
    report: &(dyn Fn(usize) + Sync),
) -> Result<Vec<(u32, String, Option<f32>)>, ExtractError> {
    let (langs, osd) = languages(&opts.languages)?;
    let dir = tempfile::tempdir()
        .map_err(|e| ExtractError::Tool(format!("no temporary directory for OCR: {e}")))?;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let workers = opts.workers.clamp(1, 16).min(pages.len());
    let one = |page: u32| -> Result<(u32, String, Option<f32>), ExtractError> {
        let prefix = dir.path().join(format!("p{page}"));
        let mut cmd = Command::new("pdftoppm");
        cmd.args(["-r", &opts.dpi.to_string(), "-gray", "-png", "-singlefile"])
            .args(["-f", &page.to_string(), "-l", &page.to_string()]);
        if let Some(p) = password {
            cmd.arg("-opw").arg(p).arg("-upw").arg(p);
        }
        cmd.arg(path).arg(&prefix);
        let out = run(cmd, RENDER_LIMIT)?;
        let png = prefix.with_extension("png");
        if !out.success() || !png.exists() {
            // A page that cannot be drawn has no text; the rest of the document still counts.
            tracing::warn!(page, stderr = %out.stderr.trim(), "page could not be rendered for OCR");
            return Ok((page, String::new(), None));
        }
        let r = tesseract(&png, &langs, osd);
        let _ = std::fs::remove_file(&png);
        let mut r = r?;
        Ok(r.pop()
            .map(|(_, t, c)| (page, t, c))
            .unwrap_or((page, String::new(), None)))
    };
    let results: Vec<Result<Vec<_>, ExtractError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&page) = pages.get(i) else { break };
                        mine.push(one(page)?);
                        report(done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ExtractError::Tool("OCR thread panicked".into())))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(pages.len());
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(p, _, _)| *p);
    Ok(all)
}

/// OCRs an image file (PNG, JPEG, or TIFF with any number of pages).
pub fn image(path: &Path, opts: &OcrOptions) -> Result<Extracted, ExtractError> {
    if !opts.enabled {
        return Err(ExtractError::Empty(
            "images need OCR, which is off (ingest.ocr = false)".into(),
        ));
    }
    let (langs, osd) = languages(&opts.languages)?;
    let started = std::time::Instant::now();
    let pages = tesseract(path, &langs, osd)?;
    Ok(Extracted {
        ocr_seconds: started.elapsed().as_secs_f64(),
        pages: pages
            .into_iter()
            .map(|(page, text, confidence)| RawPage {
                page: page.max(1),
                text,
                method: PageMethod::Ocr,
                confidence,
            })
            .collect(),
        meta: DocMeta::default(),
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_to_text_and_confidence() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t\n\
5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello\n\
5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld\n\
5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tnext\n\
5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t60\tpara\n\
1\t2\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t\n";
        let p = parse_tsv(tsv);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1, "Hello world\nnext\n\npara");
        assert_eq!(p[0].2, Some(75.0));
        assert_eq!((p[1].0, p[1].1.as_str(), p[1].2), (2, "", None));
    }
}
