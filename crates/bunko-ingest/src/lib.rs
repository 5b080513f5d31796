//! bunko-ingest: text extraction. PDFs through poppler (`pdfinfo`, `pdftotext`, `pdftoppm`)
//! and tesseract for pages without a usable text layer and for images; HTML (main content,
//! no scripts or navigation), Markdown and plain text in UTF-8, UTF-16, Shift_JIS or EUC-JP.
//! The native tools run as child processes with time limits: a hostile or broken file can
//! hang or crash a parser, never the server. Depends on bunko-core only.

pub mod crawl;
mod html;
mod ocr;
mod pdf;
mod process;
mod textenc;

use bunko_core::Code;
use bunko_core::documents::{DocMeta, DocType, PageMethod};
use std::path::Path;

pub use html::html_to_text;
pub use ocr::OcrOptions;
pub use textenc::decode_text;

/// One physical page as the extractor saw it, before normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPage {
    /// 1-based.
    pub page: u32,
    pub text: String,
    pub method: PageMethod,
    /// Mean word confidence (0–100) of OCR'd pages.
    pub confidence: Option<f32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub pages: Vec<RawPage>,
    pub meta: DocMeta,
    /// Things an operator may want to know (e.g. OCR language missing).
    pub warnings: Vec<String>,
    /// Wall time spent rendering and recognising pages (0 when nothing was OCR'd).
    pub ocr_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Encrypted(String),
    #[error("{0}")]
    Unreadable(String),
    #[error("{0}")]
    Empty(String),
    #[error("{0}")]
    Unsupported(String),
    /// A tool is missing or failed for reasons of its own (retryable).
    #[error("{0}")]
    Tool(String),
}

impl ExtractError {
    pub fn code(&self) -> Code {
        match self {
            ExtractError::Encrypted(_) => Code::DocumentEncrypted,
            ExtractError::Unreadable(_) => Code::DocumentUnreadable,
            ExtractError::Empty(_) => Code::DocumentEmpty,
            ExtractError::Unsupported(_) => Code::UnsupportedDocumentType,
            ExtractError::Tool(_) => Code::ExtractorUnavailable,
        }
    }

    /// Worth trying again later (a tool may be installed or a time-out may pass).
    pub fn retryable(&self) -> bool {
        matches!(self, ExtractError::Tool(_))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// For encrypted PDFs.
    pub password: Option<String>,
    pub ocr: OcrOptions,
}

/// Progress reports: (pages done, pages in all).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Extracts the pages of the file at `path`. Blocking (child processes); run it on a blocking
/// thread. Fails with `Empty` when no page has any text.
pub fn extract(
    path: &Path,
    doc_type: DocType,
    opts: &Options,
    progress: Progress<'_>,
) -> Result<Extracted, ExtractError> {
    let out = match doc_type {
        DocType::Pdf => pdf::extract(path, opts, progress)?,
        DocType::Png | DocType::Jpeg | DocType::Tiff => ocr::image(path, &opts.ocr)?,
        DocType::Html | DocType::Markdown | DocType::Text => {
            let bytes = std::fs::read(path)
                .map_err(|e| ExtractError::Unreadable(format!("cannot read the file: {e}")))?;
            let text = decode_text(&bytes);
            let (text, title) = match doc_type {
                DocType::Html => html_to_text(&text),
                _ => {
                    let title = first_heading(&text);
                    (text, title)
                }
            };
            Extracted {
                pages: text
                    .split('\u{0c}')
                    .enumerate()
                    .map(|(i, t)| RawPage {
                        page: i as u32 + 1,
                        text: t.to_owned(),
                        method: PageMethod::Text,
                        confidence: None,
                    })
                    .collect(),
                meta: DocMeta {
                    title,
                    ..Default::default()
                },
                warnings: Vec::new(),
                ocr_seconds: 0.0,
            }
        }
    };
    if out.pages.iter().all(|p| p.text.trim().is_empty()) {
        return Err(ExtractError::Empty(match doc_type {
            DocType::Pdf => "no text in any page, neither in the text layer nor by OCR".into(),
            t if t.is_image() => "OCR found no text in the image".into(),
            _ => "the file has no text".into(),
        }));
    }
    Ok(out)
}

/// The first Markdown heading (`# Title`), or the first non-empty line if it is short.
fn first_heading(text: &str) -> Option<String> {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if let Some(h) = first.strip_prefix("# ") {
        return Some(h.trim().to_owned());
    }
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("# ").map(|h| h.trim().to_owned()))
        .or_else(|| (first.chars().count() <= 120).then(|| first.to_owned()))
}

/// Is `tool` on PATH and runnable?
pub fn tool_available(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}
