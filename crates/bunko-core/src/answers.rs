//! What asking produces and keeps: conversations (the turns a follow-up question carries),
//! document summaries (one row per generation; the latest is served) and project notes
//! (Markdown with citations that link to document pages). The port is [`AnswerQueries`].

use crate::ports::{Page, PageRequest, StoreResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One question and the answer given, in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    pub at_ms: i64,
}

/// A cited page: where a note's or a summary's `[n]` points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRef {
    pub n: usize,
    pub document_id: Uuid,
    pub title: String,
    /// 1-based.
    pub page: u32,
    #[serde(default)]
    pub page_end: u32,
    #[serde(default)]
    pub section: String,
}

/// The summary of one stretch of a document (the "map" step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartSummary {
    pub section: String,
    pub page_start: u32,
    pub page_end: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: Uuid,
    pub document_id: Uuid,
    /// `ja` or `en`.
    pub language: String,
    /// The model alias that wrote it.
    pub model: String,
    /// The summary; `[n]` markers point at `citations`.
    pub text: String,
    /// The parts summarised first, in document order.
    pub parts: Vec<PartSummary>,
    /// `[n]` → the pages of the part it summarises.
    pub citations: Vec<PageRef>,
    /// Parts that came out of the passages' own sentences (the model wrote nothing usable).
    pub extractive_parts: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub job_id: Option<Uuid>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    /// Markdown.
    pub body: String,
    pub tags: Vec<String>,
    /// The user who wrote it (absent once that user is deleted).
    pub author_id: Option<Uuid>,
    pub citations: Vec<PageRef>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewNote {
    pub project_id: Uuid,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub author_id: Option<Uuid>,
    pub citations: Vec<PageRef>,
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct NotePatch {
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
    pub citations: Option<Vec<PageRef>>,
}

#[async_trait]
pub trait AnswerQueries: Send + Sync {
    /// A new, empty conversation `id` of `user` (created when its first turn is kept, so a
    /// refused question leaves nothing behind). Fails with `Conflict` when the id is taken.
    async fn create_conversation(&self, id: Uuid, user: Uuid) -> StoreResult<()>;
    /// Who owns it, if it exists.
    async fn conversation_owner(&self, id: Uuid) -> StoreResult<Option<Uuid>>;
    /// The last `limit` turns, oldest first.
    async fn conversation_turns(&self, id: Uuid, limit: u32) -> StoreResult<Vec<Turn>>;
    /// Fails with `NotFound` when the conversation is gone.
    async fn append_turn(&self, id: Uuid, turn: &Turn) -> StoreResult<()>;

    /// Stores a generated summary (the earlier ones stay).
    async fn put_summary(&self, s: &Summary) -> StoreResult<()>;
    /// The newest summary of a document.
    async fn latest_summary(&self, document: Uuid) -> StoreResult<Option<Summary>>;

    /// Fails with `NotFound` when the project does not exist.
    async fn create_note(&self, n: NewNote) -> StoreResult<Note>;
    async fn get_note(&self, id: Uuid) -> StoreResult<Option<Note>>;
    /// Newest first; only notes carrying `tag` when given.
    async fn list_notes(
        &self,
        project: Uuid,
        tag: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Note>>;
    async fn update_note(&self, id: Uuid, patch: NotePatch) -> StoreResult<Option<Note>>;
    async fn delete_note(&self, id: Uuid) -> StoreResult<bool>;
}

/// Where a cited page is read: the API path of the page's text.
pub fn page_link(r: &PageRef) -> String {
    format!("/api/v1/documents/{}/pages/{}", r.document_id, r.page)
}

fn pages_label(r: &PageRef) -> String {
    if r.page_end > r.page {
        format!("pp. {}–{}", r.page, r.page_end)
    } else {
        format!("p. {}", r.page)
    }
}

/// A note as one Markdown file: its title, its body, and a references section listing each
/// `[n]` with a link to the cited page.
pub fn note_markdown(note: &Note) -> String {
    let mut out = format!("# {}\n\n", note.title.trim());
    if !note.tags.is_empty() {
        let tags: Vec<String> = note.tags.iter().map(|t| format!("`{t}`")).collect();
        out.push_str(&format!("Tags: {}\n\n", tags.join(" ")));
    }
    out.push_str(note.body.trim_end());
    out.push('\n');
    if !note.citations.is_empty() {
        out.push_str("\n## References\n\n");
        let mut refs = note.citations.clone();
        refs.sort_by_key(|r| r.n);
        for r in &refs {
            let mut line = format!(
                "[{}] {}, [{}]({})",
                r.n,
                r.title.trim(),
                pages_label(r),
                page_link(r)
            );
            if !r.section.is_empty() {
                line.push_str(&format!(" — {}", r.section));
            }
            out.push_str(&line);
            out.push_str("\n\n");
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

/// What a BibTeX entry is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct BibSource {
    pub title: String,
    pub authors: Vec<String>,
    /// Four digits, when known.
    pub year: Option<String>,
    pub doi: Option<String>,
    pub arxiv_id: Option<String>,
}

/// The year in a date as files state it (`2015-10-07…`, PDF `D:20151007…`).
pub fn year_of(date: &str) -> Option<String> {
    let digits: String = date
        .trim_start_matches("D:")
        .chars()
        .take_while(char::is_ascii_digit)
        .take(4)
        .collect();
    (digits.len() == 4).then_some(digits)
}

/// BibTeX for sources that carry a DOI or an arXiv id (the others are left out: an entry
/// nobody can resolve is worse than none). Keys are the first author's family name + year +
/// first title word, made unique with a letter.
pub fn bibtex(sources: &[BibSource]) -> String {
    fn escape(s: &str) -> String {
        let mut o = String::new();
        for c in s.chars() {
            match c {
                '{' | '}' | '\\' => {}
                '&' | '%' | '$' | '#' | '_' => {
                    o.push('\\');
                    o.push(c);
                }
                _ => o.push(c),
            }
        }
        o.split_whitespace().collect::<Vec<_>>().join(" ")
    }
    fn word(s: &str) -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase()
    }
    let mut keys = std::collections::HashSet::new();
    let mut out = String::new();
    for s in sources {
        if s.doi.is_none() && s.arxiv_id.is_none() {
            continue;
        }
        let family = s
            .authors
            .first()
            .map(|a| match a.split_once(',') {
                Some((family, _)) => word(family),
                None => word(a.split_whitespace().last().unwrap_or("")),
            })
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "anon".into());
        let first = s
            .title
            .split_whitespace()
            .map(word)
            .find(|w| w.len() > 3)
            .unwrap_or_default();
        let base = format!("{family}{}{first}", s.year.as_deref().unwrap_or(""));
        let mut key = base.clone();
        let mut suffix = b'a';
        while !keys.insert(key.clone()) {
            key = format!("{base}{}", suffix as char);
            suffix = suffix.saturating_add(1);
        }
        let kind = if s.doi.is_some() { "article" } else { "misc" };
        out.push_str(&format!("@{kind}{{{key},\n"));
        out.push_str(&format!("  title = {{{{{}}}}},\n", escape(&s.title)));
        if !s.authors.is_empty() {
            let authors: Vec<String> = s.authors.iter().map(|a| escape(a)).collect();
            out.push_str(&format!("  author = {{{}}},\n", authors.join(" and ")));
        }
        if let Some(y) = &s.year {
            out.push_str(&format!("  year = {{{y}}},\n"));
        }
        if let Some(d) = &s.doi {
            out.push_str(&format!("  doi = {{{}}},\n", escape(d)));
        }
        if let Some(a) = &s.arxiv_id {
            out.push_str(&format!(
                "  eprint = {{{a}}},\n  archivePrefix = {{arXiv}},\n  url = {{https://arxiv.org/abs/{a}}},\n"
            ));
        }
        out.push_str("}\n\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_note_exports_with_linked_references() {
        let doc = Uuid::nil();
        let note = Note {
            id: Uuid::nil(),
            project_id: Uuid::nil(),
            title: "Robust errors".into(),
            body: "Sandwich estimators are robust [2]. They need care [1].".into(),
            tags: vec!["stats".into()],
            author_id: None,
            citations: vec![
                PageRef {
                    n: 2,
                    document_id: doc,
                    title: "sandwich".into(),
                    page: 3,
                    page_end: 4,
                    section: "2 Theory".into(),
                },
                PageRef {
                    n: 1,
                    document_id: doc,
                    title: "lmtest".into(),
                    page: 1,
                    page_end: 1,
                    section: String::new(),
                },
            ],
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let md = note_markdown(&note);
        assert_eq!(
            md,
            format!(
                "# Robust errors\n\nTags: `stats`\n\nSandwich estimators are robust [2]. They need care [1].\n\n\
                 ## References\n\n[1] lmtest, [p. 1](/api/v1/documents/{doc}/pages/1)\n\n\
                 [2] sandwich, [pp. 3–4](/api/v1/documents/{doc}/pages/3) — 2 Theory\n"
            )
        );
    }

    #[test]
    fn bibtex_has_entries_only_for_resolvable_papers() {
        let src = |title: &str, doi: Option<&str>, arxiv: Option<&str>| BibSource {
            title: title.into(),
            authors: vec!["Douglas Bates".into(), "Martin Mächler".into()],
            year: year_of("D:20151007120000"),
            doi: doi.map(Into::into),
            arxiv_id: arxiv.map(Into::into),
        };
        let bib = bibtex(&[
            src(
                "Fitting Linear Mixed-Effects Models Using lme4",
                Some("10.18637/jss.v067.i01"),
                None,
            ),
            src("A note without identifiers", None, None),
            src("Fitting 100% of {things}", None, Some("2101.00001v2")),
        ]);
        assert_eq!(
            bib,
            "@article{bates2015fitting,\n  title = {{Fitting Linear Mixed-Effects Models Using lme4}},\n  \
             author = {Douglas Bates and Martin Mächler},\n  year = {2015},\n  doi = {10.18637/jss.v067.i01},\n}\n\n\
             @misc{bates2015fittinga,\n  title = {{Fitting 100\\% of things}},\n  \
             author = {Douglas Bates and Martin Mächler},\n  year = {2015},\n  eprint = {2101.00001v2},\n  \
             archivePrefix = {arXiv},\n  url = {https://arxiv.org/abs/2101.00001v2},\n}\n\n"
        );
        assert_eq!(year_of("2015-10-07T12:00:00Z").as_deref(), Some("2015"));
        assert_eq!(year_of("yesterday"), None);
    }
}
