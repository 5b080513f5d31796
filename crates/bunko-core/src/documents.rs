//! Documents: what was uploaded (a content-addressed original), where its processing stands,
//! its pages of normalised text and the chunks search indexes. The `DocumentQueries` port is
//! implemented by each MetaStore adapter and run through the same contract suite.

use crate::error::{Code, Error};
use crate::ports::{Page, PageRequest, StoreResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `queued → processing (stage, progress) → ready | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocStatus {
    Queued,
    Processing,
    Ready,
    Failed,
}

impl DocStatus {
    pub const ALL: [DocStatus; 4] = [
        DocStatus::Queued,
        DocStatus::Processing,
        DocStatus::Ready,
        DocStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DocStatus::Queued => "queued",
            DocStatus::Processing => "processing",
            DocStatus::Ready => "ready",
            DocStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The kinds of file bunko extracts text from, judged by content (magic bytes), not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocType {
    Pdf,
    Png,
    Jpeg,
    Tiff,
    Html,
    Markdown,
    Text,
}

impl DocType {
    pub const ALL: [DocType; 7] = [
        DocType::Pdf,
        DocType::Png,
        DocType::Jpeg,
        DocType::Tiff,
        DocType::Html,
        DocType::Markdown,
        DocType::Text,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DocType::Pdf => "pdf",
            DocType::Png => "png",
            DocType::Jpeg => "jpeg",
            DocType::Tiff => "tiff",
            DocType::Html => "html",
            DocType::Markdown => "markdown",
            DocType::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn mime(self) -> &'static str {
        match self {
            DocType::Pdf => "application/pdf",
            DocType::Png => "image/png",
            DocType::Jpeg => "image/jpeg",
            DocType::Tiff => "image/tiff",
            DocType::Html => "text/html; charset=utf-8",
            DocType::Markdown => "text/markdown; charset=utf-8",
            DocType::Text => "text/plain; charset=utf-8",
        }
    }

    pub fn is_image(self) -> bool {
        matches!(self, DocType::Png | DocType::Jpeg | DocType::Tiff)
    }

    /// Judges a file by its first bytes, and for text by its name's extension (Markdown and
    /// HTML look like text). `None`: not a type bunko can extract.
    pub fn sniff(head: &[u8], filename: &str) -> Option<DocType> {
        let ext = filename
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        if head.starts_with(b"%PDF-") || (head.len() > 1024 && find(&head[..1024], b"%PDF-")) {
            return Some(DocType::Pdf);
        }
        if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Some(DocType::Png);
        }
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Some(DocType::Jpeg);
        }
        if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
            return Some(DocType::Tiff);
        }
        if looks_binary(head) {
            return None;
        }
        let lower: String = String::from_utf8_lossy(&head[..head.len().min(1024)])
            .trim_start_matches('\u{feff}')
            .trim_start()
            .chars()
            .take(256)
            .collect::<String>()
            .to_ascii_lowercase();
        if matches!(ext.as_str(), "html" | "htm" | "xhtml")
            || lower.starts_with("<!doctype html")
            || lower.starts_with("<html")
        {
            return Some(DocType::Html);
        }
        if matches!(ext.as_str(), "md" | "markdown") {
            return Some(DocType::Markdown);
        }
        Some(DocType::Text)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Binary content that is not one of the known types: NUL bytes outside UTF-16 text, or many
/// C0 control bytes.
fn looks_binary(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(4096)];
    if sample.is_empty() {
        return false;
    }
    let utf16_bom = sample.starts_with(&[0xFF, 0xFE]) || sample.starts_with(&[0xFE, 0xFF]);
    if utf16_bom {
        return false;
    }
    // UTF-16 without a BOM: every other byte NUL in ASCII-heavy text.
    if sample.contains(&0) {
        return utf16_without_bom(sample).is_none();
    }
    let control = sample
        .iter()
        .filter(|b| **b < 0x20 && !matches!(**b, b'\n' | b'\r' | b'\t' | 0x0c | 0x1b))
        .count();
    control * 20 > sample.len()
}

/// UTF-16 text without a byte-order mark, recognised by its NUL bytes all on one side:
/// `Some(true)` little-endian, `Some(false)` big-endian, `None` when it does not look so.
pub fn utf16_without_bom(sample: &[u8]) -> Option<bool> {
    let sample = &sample[..sample.len().min(4096)];
    let half = sample.len() / 2;
    if half == 0 {
        return None;
    }
    let even_nul = sample.iter().step_by(2).filter(|b| **b == 0).count();
    let odd_nul = sample
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|b| **b == 0)
        .count();
    if odd_nul * 10 > half * 3 && even_nul == 0 {
        Some(true)
    } else if even_nul * 10 > half * 3 && odd_nul == 0 {
        Some(false)
    } else {
        None
    }
}

/// How a page's text was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageMethod {
    Text,
    Ocr,
}

impl PageMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PageMethod::Text => "text",
            PageMethod::Ocr => "ocr",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(PageMethod::Text),
            "ocr" => Some(PageMethod::Ocr),
            _ => None,
        }
    }
}

/// Why a document failed: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocError {
    pub code: String,
    pub message: String,
}

impl DocError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().into(),
            message: message.into(),
        }
    }
}

/// Metadata found in the file (PDF info dictionary / XMP, HTML `<title>`, first heading).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMeta {
    pub title: Option<String>,
    pub authors: Vec<String>,
    /// As the file states it (ISO 8601 where the format allows).
    pub created: Option<String>,
    pub modified: Option<String>,
    /// A DOI found on the first pages (`10.18637/jss.v067.i01`), for citations and BibTeX.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doi: Option<String>,
    /// An arXiv identifier (`2101.00001` or `hep-th/9901001`), with its version if stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arxiv_id: Option<String>,
}

/// The first DOI in `text`: `10.` + registrant digits + `/` + a suffix up to white space,
/// trailing punctuation dropped.
pub fn find_doi(text: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = text[from..].find("10.") {
        let start = from + i;
        from = start + 3;
        // Not the middle of a longer number (e.g. 110.5).
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            continue;
        }
        let rest = &text[start + 3..];
        let reg = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(4..=9).contains(&reg) || rest.as_bytes().get(reg) != Some(&b'/') {
            continue;
        }
        let suffix: String = rest[reg + 1..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '<' | '>' | '{' | '}'))
            .collect();
        let suffix = suffix.trim_end_matches(['.', ',', ';', ':', ')', ']']);
        if suffix.is_empty() {
            continue;
        }
        return Some(format!("10.{}/{}", &rest[..reg], suffix));
    }
    None
}

/// The first arXiv identifier in `text` written as `arXiv:2101.00001v2` or
/// `arxiv.org/abs/…` (new style NNNN.NNNNN, or old style archive/NNNNNNN).
pub fn find_arxiv_id(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    for marker in ["arxiv:", "arxiv.org/abs/", "arxiv.org/pdf/"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            from = start;
            let cand: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-'))
                .collect();
            let cand = cand.trim_end_matches('.');
            if is_arxiv_id(cand) {
                return Some(cand.to_owned());
            }
        }
    }
    None
}

fn is_arxiv_id(s: &str) -> bool {
    let base = match s.rfind('v') {
        Some(i) if i > 0 && s[i + 1..].bytes().all(|b| b.is_ascii_digit()) && i + 1 < s.len() => {
            &s[..i]
        }
        _ => s,
    };
    if let Some((yymm, num)) = base.split_once('.') {
        return yymm.len() == 4
            && yymm.bytes().all(|b| b.is_ascii_digit())
            && (4..=5).contains(&num.len())
            && num.bytes().all(|b| b.is_ascii_digit());
    }
    if let Some((archive, num)) = base.split_once('/') {
        return !archive.is_empty()
            && archive.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            && num.len() == 7
            && num.bytes().all(|b| b.is_ascii_digit());
    }
    false
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    pub id: Uuid,
    pub project_id: Uuid,
    /// From the file's metadata, else the file name.
    pub title: String,
    /// The uploaded name, sanitised.
    pub filename: String,
    pub doc_type: DocType,
    pub sha256: String,
    pub size_bytes: u64,
    pub status: DocStatus,
    /// While processing: `extract`, `chunk` (normalise + chunk), `embed` or `index`.
    pub stage: Option<String>,
    /// 0.0–1.0 within the whole pipeline.
    pub progress: f32,
    pub error: Option<DocError>,
    pub page_count: u32,
    pub chunk_count: u32,
    /// `ja`, `en`, `other`: the language of most of its chunks.
    pub language: Option<String>,
    pub meta: DocMeta,
    /// Where it came from: `upload`, `folder`, a crawler name.
    pub source: String,
    pub tags: Vec<String>,
    /// The job that processes it (the last one enqueued).
    pub job_id: Option<Uuid>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Where a crawled document came from and which version it is (none for uploads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<DocOrigin>,
}

/// A document taken from a source: the item it is (`arxiv:2101.00001`,
/// `egov:411AC0000000127`), which version (arXiv `v2`, a law's revision id) and from when to
/// when that version is the valid one. Each version is its own document; `current` marks the
/// one search and ask see unless asked "as of" a date.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocOrigin {
    pub external_id: String,
    pub version: Option<String>,
    /// `YYYY-MM-DD`: published (a paper's version) or in force (a law's revision).
    pub valid_from: Option<String>,
    /// The next version's `valid_from`; none for the newest.
    pub valid_to: Option<String>,
    pub current: bool,
    /// The source's own metadata (arXiv: abstract, categories, DOI, journal ref, dates; e-Gov:
    /// law number, type, promulgation and enforcement dates).
    pub meta: serde_json::Value,
}

/// [`DocOrigin`] as a crawler gives it for a new document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewOrigin {
    pub external_id: String,
    pub version: Option<String>,
    pub valid_from: Option<String>,
    /// Becomes the document's title for good (the file's own metadata does not replace it).
    pub title: Option<String>,
    pub meta: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct NewDocument {
    pub project_id: Uuid,
    pub title: String,
    pub filename: String,
    pub doc_type: DocType,
    pub sha256: String,
    pub size_bytes: u64,
    pub source: String,
    pub tags: Vec<String>,
    pub origin: Option<NewOrigin>,
}

/// One physical page's text after normalisation (`raw` is what the extractor gave).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageText {
    /// 1-based physical page number.
    pub page: u32,
    pub text: String,
    pub raw: String,
    pub method: PageMethod,
    /// Mean word confidence 0–100 for OCR'd pages.
    pub confidence: Option<f32>,
    /// `(index in text, index in raw)` wherever the correspondence jumps (characters, not
    /// bytes): [`crate::text::source_index`] maps any character of `text` back into `raw`.
    pub offsets: Vec<(u32, u32)>,
}

/// A chunk as stored: the unit search indexes and answers cite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRecord {
    /// `<document id>:<ordinal>`.
    pub id: String,
    pub document_id: Uuid,
    pub project_id: Uuid,
    pub ord: u32,
    pub text: String,
    pub page_start: u32,
    pub page_end: u32,
    /// Character span (Unicode scalar values) in the document's normalised text (its pages'
    /// texts joined by a blank line).
    pub char_start: u32,
    pub char_end: u32,
    /// E.g. `第3章 > 第12条 > 2` or `3 Methods > 3.1 Data`.
    pub section_path: String,
    pub language: String,
    /// True in a paper's references / bibliography.
    pub is_references: bool,
    /// SHA-256 (hex) of `text`.
    pub content_hash: String,
}

#[derive(Debug, Clone, Default)]
pub struct DocumentFilter {
    pub status: Option<DocStatus>,
    pub doc_type: Option<DocType>,
    pub language: Option<String>,
    /// Case-insensitive substring of the title.
    pub title: Option<String>,
}

/// The result of a successful processing run, stored in one transaction.
#[derive(Debug, Clone)]
pub struct Processed {
    pub title: Option<String>,
    pub meta: DocMeta,
    pub language: Option<String>,
    pub pages: Vec<PageText>,
    pub chunks: Vec<ChunkRecord>,
}

#[async_trait]
pub trait DocumentQueries: Send + Sync {
    /// Inserts a document, or returns the existing one with the same bytes in the same
    /// project (`created: false`).
    async fn create_document(&self, d: NewDocument) -> StoreResult<(Document, bool)>;
    async fn get_document(&self, id: Uuid) -> StoreResult<Option<Document>>;
    async fn list_documents(
        &self,
        project: Uuid,
        filter: &DocumentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Document>>;
    /// Sets status `queued` with the job that will process it, clearing any error.
    async fn queue_document(&self, id: Uuid, job: Uuid) -> StoreResult<bool>;
    /// Status `processing` at a stage with progress.
    async fn set_document_stage(&self, id: Uuid, stage: &str, progress: f32) -> StoreResult<()>;
    /// Status `failed` with the reason; pages and chunks are left as they were.
    async fn fail_document(&self, id: Uuid, error: &DocError) -> StoreResult<()>;
    /// Replaces pages and chunks and sets status `ready`, in one transaction.
    async fn finish_document(&self, id: Uuid, p: &Processed) -> StoreResult<()>;
    async fn get_page(&self, id: Uuid, page: u32) -> StoreResult<Option<PageText>>;
    async fn document_chunks(&self, id: Uuid) -> StoreResult<Vec<ChunkRecord>>;
    /// Chunks by id (search results), in no particular order.
    async fn chunks_by_id(&self, ids: &[String]) -> StoreResult<Vec<ChunkRecord>>;
    /// Every chunk of ready documents, optionally of one project (index rebuild).
    async fn all_chunks(&self, project: Option<Uuid>) -> StoreResult<Vec<ChunkRecord>>;
    /// (document id, chunk count) of every ready document (index consistency check).
    async fn ready_documents(&self) -> StoreResult<Vec<(Uuid, u32)>>;
    /// Deletes the document with its pages and chunks; returns it.
    async fn delete_document(&self, id: Uuid) -> StoreResult<Option<Document>>;
    /// Documents `queued` or `processing` whose job is no longer queued or running (it was
    /// cancelled, died, or is gone), with the job's last error code and message.
    async fn stale_documents(&self)
    -> StoreResult<Vec<(Document, Option<String>, Option<String>)>>;
    /// Ready documents of these projects that pass the filters (search filters are resolved
    /// to documents here, then applied inside both index halves).
    async fn filter_documents(
        &self,
        projects: &[Uuid],
        f: &crate::search::SearchFilters,
    ) -> StoreResult<Vec<Uuid>>;
    /// Keeps (or with `None`, forgets) the password for an encrypted PDF until processing ends.
    async fn set_document_password(&self, id: Uuid, password: Option<&str>) -> StoreResult<()>;
    async fn document_password(&self, id: Uuid) -> StoreResult<Option<String>>;
    /// How many documents (in any project) reference these bytes.
    async fn blob_references(&self, sha256: &str) -> StoreResult<i64>;
    /// Every version of the item `external_id` in a project, oldest first.
    async fn document_versions(
        &self,
        project: Uuid,
        external_id: &str,
    ) -> StoreResult<Vec<Document>>;
    /// Recomputes `valid_to` and `current` of an item's versions: `current` is the newest
    /// version valid on `today` (`YYYY-MM-DD`), else the oldest one not yet valid.
    async fn refresh_versions(
        &self,
        project: Uuid,
        external_id: &str,
        today: &str,
    ) -> StoreResult<()>;
    /// Documents (of every project) added in `[from_ms, to_ms)`, oldest first.
    async fn documents_added_between(&self, from_ms: i64, to_ms: i64)
    -> StoreResult<Vec<Document>>;
    /// The superseded versions in these projects (search keeps them out unless asked "as of"
    /// a date); usually few, so excluding them is cheaper than listing every current one.
    async fn superseded_documents(&self, projects: &[Uuid]) -> StoreResult<Vec<Uuid>>;
}

/// Keeps a file name a user gave safe to store and show: no path, no control characters,
/// at most 255 bytes; never empty.
pub fn sanitize_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_start_matches('.')
        .to_owned();
    let mut out = String::new();
    for c in cleaned.chars() {
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        "unnamed".into()
    } else {
        out
    }
}

/// The error for a document id that does not exist (or is not visible).
pub fn not_found(id: &str) -> Error {
    Error::not_found("document", id)
}

/// Original files, content-addressed by SHA-256 (lowercase hex).
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Moves a staged file in under its hash; a blob already present is kept (same bytes).
    async fn put_staged(&self, sha256: &str, staged: &std::path::Path) -> StoreResult<()>;
    /// A local path to read the blob from (the local store's own file; a remote store
    /// downloads to a temporary file).
    async fn local_path(&self, sha256: &str) -> StoreResult<std::path::PathBuf>;
    async fn exists(&self, sha256: &str) -> StoreResult<bool>;
    /// Removes the blob; false when it was not there.
    async fn delete(&self, sha256: &str) -> StoreResult<bool>;
    /// Where uploads are staged before their hash is known (same file system as the blobs,
    /// so that putting is a rename).
    fn staging_dir(&self) -> std::path::PathBuf;
}

/// Is `s` a SHA-256 in lowercase hex (and so safe as a file name)?
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        assert_eq!(DocType::sniff(b"%PDF-1.7\n", "x.txt"), Some(DocType::Pdf));
        assert_eq!(
            DocType::sniff(b"\x89PNG\r\n\x1a\n....", "a.pdf"),
            Some(DocType::Png)
        );
        assert_eq!(
            DocType::sniff(b"# Title\n", "a.md"),
            Some(DocType::Markdown)
        );
        assert_eq!(
            DocType::sniff(b"<!DOCTYPE html><html>", "page"),
            Some(DocType::Html)
        );
        assert_eq!(
            DocType::sniff("日本語".as_bytes(), "a"),
            Some(DocType::Text)
        );
        assert_eq!(
            DocType::sniff(b"PK\x03\x04\0\0\x01\x02\x03", "a.docx"),
            None
        );
        // UTF-16LE with a BOM, and without one.
        assert_eq!(
            DocType::sniff(&[0xFF, 0xFE, b'a', 0, b'b', 0], "a.txt"),
            Some(DocType::Text)
        );
        assert_eq!(
            DocType::sniff(&[b'a', 0, b'b', 0, b'c', 0, b'd', 0], "a.txt"),
            Some(DocType::Text)
        );
    }

    #[test]
    fn identifiers_are_found_in_page_text() {
        assert_eq!(
            find_doi("Journal of Statistical Software. DOI 10.18637/jss.v067.i01, October")
                .as_deref(),
            Some("10.18637/jss.v067.i01")
        );
        assert_eq!(
            find_doi("see https://doi.org/10.1145/3292500.3330701.").as_deref(),
            Some("10.1145/3292500.3330701")
        );
        assert_eq!(find_doi("a ratio of 110.5/2 and 10.5 units"), None);
        assert_eq!(
            find_arxiv_id("Preprint arXiv:2101.00001v2 [cs.CL] 4 Jan").as_deref(),
            Some("2101.00001v2")
        );
        assert_eq!(
            find_arxiv_id("http://arxiv.org/abs/hep-th/9901001.").as_deref(),
            Some("hep-th/9901001")
        );
        assert_eq!(find_arxiv_id("arXiv: not an id, arxiv:12.3"), None);
    }

    #[test]
    fn filenames_lose_paths_and_controls() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("a\\b\\c.pdf"), "c.pdf");
        assert_eq!(sanitize_filename("bad\u{0}\u{7}name\n.pdf"), "badname.pdf");
        assert_eq!(sanitize_filename(""), "unnamed");
        assert_eq!(sanitize_filename("..."), "unnamed");
        assert_eq!(sanitize_filename("報告書.pdf"), "報告書.pdf");
        assert!(sanitize_filename(&"あ".repeat(200)).len() <= 255);
    }
}
