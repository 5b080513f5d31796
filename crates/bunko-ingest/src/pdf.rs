//! PDFs through poppler: `pdfinfo` for the page count, encryption and metadata (info
//! dictionary, then XMP), `pdftotext` for the text layer (pages split at form feeds; large
//! files in two page ranges at once), and OCR for pages whose layer has no usable text.

use crate::process::run;
use crate::{ExtractError, Extracted, Options, Progress, RawPage, ocr};
use bunko_core::documents::{DocMeta, PageMethod};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const INFO_LIMIT: Duration = Duration::from_secs(30);
const TEXT_LIMIT: Duration = Duration::from_secs(300);

fn with_password(cmd: &mut Command, password: Option<&str>) {
    if let Some(p) = password {
        // Poppler tries the string as owner and as user password.
        cmd.arg("-opw").arg(p).arg("-upw").arg(p);
    }
}

/// The first poppler error line worth showing (without the "Syntax Error: " noise repeated).
fn reason(stderr: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for l in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !lines.contains(&l) {
            lines.push(l);
        }
    }
    let picked: Vec<&str> = lines.into_iter().take(3).collect();
    if picked.is_empty() {
        "the PDF parser gave no reason".into()
    } else {
        picked.join("; ")
    }
}

pub struct Info {
    pub pages: u32,
    pub meta: DocMeta,
}

pub fn info(path: &Path, password: Option<&str>) -> Result<Info, ExtractError> {
    let mut cmd = Command::new("pdfinfo");
    cmd.args(["-isodates", "-enc", "UTF-8"]);
    with_password(&mut cmd, password);
    cmd.arg(path);
    let out = run(cmd, INFO_LIMIT)?;
    if out.stderr.contains("Incorrect password") {
        return Err(ExtractError::Encrypted(if password.is_some() {
            "the PDF is encrypted and the password given does not open it".into()
        } else {
            "the PDF is encrypted: upload it again with its password (form field `password`), or reprocess with one".into()
        }));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        stdout.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    };
    let pages = field("Pages").and_then(|p| p.parse::<u32>().ok());
    let Some(pages) = pages.filter(|p| *p > 0).filter(|_| out.success()) else {
        return Err(ExtractError::Unreadable(format!(
            "the PDF cannot be read: {}",
            reason(&out.stderr)
        )));
    };
    let mut meta = DocMeta {
        title: field("Title"),
        authors: field("Author")
            .map(|a| split_authors(&a))
            .unwrap_or_default(),
        created: field("CreationDate"),
        modified: field("ModDate"),
        ..Default::default()
    };
    if meta.title.is_none() || meta.authors.is_empty() {
        xmp(path, password, &mut meta);
    }
    Ok(Info { pages, meta })
}

fn split_authors(s: &str) -> Vec<String> {
    s.split([',', ';', '、'])
        .flat_map(|p| p.split(" and "))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Fills what the info dictionary lacked from the XMP packet (dc:title, dc:creator).
fn xmp(path: &Path, password: Option<&str>, meta: &mut DocMeta) {
    let mut cmd = Command::new("pdfinfo");
    cmd.arg("-meta");
    with_password(&mut cmd, password);
    cmd.arg(path);
    let Ok(out) = run(cmd, INFO_LIMIT) else {
        return;
    };
    let x = String::from_utf8_lossy(&out.stdout);
    let first_li = |tag: &str| -> Option<String> {
        let start = x.find(&format!("<{tag}>"))?;
        let end = x[start..].find(&format!("</{tag}>"))? + start;
        let inner = &x[start..end];
        let li = inner.find("<rdf:li")?;
        let open_end = inner[li..].find('>')? + li + 1;
        let close = inner[open_end..].find("</rdf:li>")? + open_end;
        let v = crate::html::decode_entities(inner[open_end..close].trim());
        (!v.is_empty()).then_some(v)
    };
    if meta.title.is_none() {
        meta.title = first_li("dc:title");
    }
    if meta.authors.is_empty()
        && let Some(a) = first_li("dc:creator")
    {
        meta.authors = split_authors(&a);
    }
}

fn pdftotext(
    path: &Path,
    password: Option<&str>,
    first: u32,
    last: u32,
) -> Result<Vec<String>, ExtractError> {
    let mut cmd = Command::new("pdftotext");
    cmd.args([
        "-enc",
        "UTF-8",
        "-f",
        &first.to_string(),
        "-l",
        &last.to_string(),
    ]);
    with_password(&mut cmd, password);
    cmd.arg(path).arg("-");
    let out = run(cmd, TEXT_LIMIT)?;
    if !out.success() {
        return Err(ExtractError::Unreadable(format!(
            "the PDF's text cannot be read: {}",
            reason(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let want = (last - first + 1) as usize;
    let mut pages: Vec<String> = text.split('\u{0c}').take(want).map(str::to_owned).collect();
    pages.resize(want, String::new());
    Ok(pages)
}

/// A text layer is usable when it has letters, few replacement or private-use characters, and
/// — on short pages — letters make up most of what is not space. Fonts without a Unicode
/// mapping come out as punctuation soup, U+FFFD or private-use code points; a table of
/// contents with dot leaders is mostly punctuation but has plenty of letters.
pub fn usable(text: &str) -> bool {
    let mut letters = 0usize;
    let mut other = 0usize;
    let mut bad = 0usize;
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        if c == '\u{fffd}'
            || matches!(c as u32, 0xE000..=0xF8FF | 0xF0000..=0x10FFFF)
            || c.is_control()
        {
            bad += 1;
        } else if c.is_alphanumeric() {
            letters += 1;
        } else {
            other += 1;
        }
    }
    if bad * 10 >= letters.max(1) {
        return false;
    }
    letters >= 40 || (letters >= 2 && letters >= other)
}

pub fn extract(
    path: &Path,
    opts: &Options,
    progress: Progress<'_>,
) -> Result<Extracted, ExtractError> {
    let mut pw = opts.password.as_deref();
    let Info { pages: n, meta } = match info(path, pw) {
        // A password only matters where one is needed: a wrong one for a file that opens
        // without (an empty owner password) is ignored.
        Err(ExtractError::Encrypted(m)) if pw.is_some() => match info(path, None) {
            Ok(i) => {
                pw = None;
                i
            }
            Err(_) => return Err(ExtractError::Encrypted(m)),
        },
        other => other?,
    };
    // Page ranges at once on all cores for documents of some length, else one call.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(4) as u32;
    let texts = if n >= 8 && workers > 1 {
        let per = n.div_ceil(workers);
        let ranges: Vec<(u32, u32)> = (0..workers)
            .map(|w| (w * per + 1, ((w + 1) * per).min(n)))
            .filter(|(a, b)| a <= b)
            .collect();
        let parts: Vec<Result<Vec<String>, ExtractError>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&(a, b)| s.spawn(move || pdftotext(path, pw, a, b)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ExtractError::Tool("pdftotext thread failed".into()))
                    })
                })
                .collect()
        });
        let mut all = Vec::with_capacity(n as usize);
        for p in parts {
            all.extend(p?);
        }
        all
    } else {
        pdftotext(path, pw, 1, n)?
    };
    let mut pages: Vec<RawPage> = texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| RawPage {
            page: i as u32 + 1,
            text: t,
            method: PageMethod::Text,
            confidence: None,
        })
        .collect();
    let need_ocr: Vec<u32> = pages
        .iter()
        .filter(|p| !usable(&p.text))
        .map(|p| p.page)
        .collect();
    progress(pages.len() - need_ocr.len(), pages.len());
    let mut warnings = Vec::new();
    let mut ocr_seconds = 0.0;
    if !need_ocr.is_empty() {
        if opts.ocr.enabled {
            let done_before = pages.len() - need_ocr.len();
            let total = pages.len();
            let report = |k: usize| progress(done_before + k, total);
            let started = std::time::Instant::now();
            let results = ocr::pdf_pages(path, pw, &need_ocr, &opts.ocr, &report)?;
            ocr_seconds = started.elapsed().as_secs_f64();
            for (page, text, conf) in results {
                if let Some(p) = pages.get_mut(page as usize - 1) {
                    // Keep the text layer when OCR found nothing better.
                    if !text.trim().is_empty() || !usable(&p.text) {
                        p.text = text;
                        p.method = PageMethod::Ocr;
                        p.confidence = conf;
                    }
                }
            }
        } else {
            warnings.push(format!(
                "{} page(s) without a usable text layer were not OCR'd (OCR is off)",
                need_ocr.len()
            ));
        }
    }
    Ok(Extracted {
        pages,
        meta,
        warnings,
        ocr_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_text() {
        assert!(usable("Potato"));
        assert!(usable("日本語 テキスト"));
        assert!(!usable("\"7+%-"));
        assert!(!usable("  \n "));
        assert!(!usable("\u{fffd}\u{fffd}\u{fffd}"));
        assert!(usable("x = y + 2, where α is small"));
        // A table of contents: dot leaders outnumber the letters.
        let toc =
            "1.1 開発に必要なプログラム . . . . . . . . . . . . . . . . . . . . 3\n".repeat(3);
        assert!(usable(&toc));
        assert!(!usable(&format!("{}\u{e001}\u{e002}", "ab".repeat(5))));
    }

    #[test]
    fn authors_split() {
        assert_eq!(
            split_authors("Achim Zeileis, Gabor Grothendieck"),
            vec!["Achim Zeileis", "Gabor Grothendieck"]
        );
        assert_eq!(split_authors("A and B"), vec!["A", "B"]);
    }
}
