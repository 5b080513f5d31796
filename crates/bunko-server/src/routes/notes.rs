//! Project notes: Markdown with citations that link to document pages. Read with the
//! project's `read` permission; written (and generated from a question) by its editors.
//! Exports: one note as Markdown with a references section; the papers the project's notes
//! cite as BibTeX.

use crate::app::AppState;
use crate::http::auth::{IngestScope, ProjectAccess, ReadScope};
use crate::http::extract::{Json, Query};
use crate::http::{ApiError, ApiResult};
use crate::routes::ask::{AskBody, answer_value};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bunko_core::answers::{self, BibSource, NewNote, Note, NotePatch, PageRef};
use bunko_core::ids::rfc3339;
use bunko_core::ports::{PageRequest, Project, all_pages};
use bunko_core::{Code, Error};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

const MAX_TITLE: usize = 300;
const MAX_BODY: usize = 200_000;
const MAX_TAGS: usize = 32;
const MAX_TAG: usize = 64;
const MAX_CITATIONS: usize = 500;

/// A cited page.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct CitationView {
    /// The `[n]` in the body.
    n: usize,
    document_id: Uuid,
    /// 1-based.
    page: u32,
    /// Filled in by the server from the document.
    #[serde(default)]
    title: String,
    #[serde(default)]
    page_end: u32,
    #[serde(default)]
    section: String,
    /// Where the page's text is read (filled in by the server).
    #[serde(default)]
    link: String,
}

impl From<&PageRef> for CitationView {
    fn from(r: &PageRef) -> Self {
        Self {
            n: r.n,
            document_id: r.document_id,
            page: r.page,
            title: r.title.clone(),
            page_end: r.page_end.max(r.page),
            section: r.section.clone(),
            link: answers::page_link(r),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct NoteView {
    id: Uuid,
    project_id: Uuid,
    title: String,
    /// Markdown; `[n]` markers point at `citations`.
    body: String,
    tags: Vec<String>,
    author_id: Option<Uuid>,
    citations: Vec<CitationView>,
    created_at: String,
    updated_at: String,
}

impl From<Note> for NoteView {
    fn from(n: Note) -> Self {
        Self {
            id: n.id,
            project_id: n.project_id,
            citations: n.citations.iter().map(CitationView::from).collect(),
            title: n.title,
            body: n.body,
            tags: n.tags,
            author_id: n.author_id,
            created_at: rfc3339(n.created_at_ms),
            updated_at: rfc3339(n.updated_at_ms),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNoteBody {
    /// 1–300 characters.
    title: String,
    /// Markdown, at most 200,000 characters.
    #[serde(default)]
    body: String,
    /// At most 32 tags of 1–64 characters.
    #[serde(default)]
    tags: Vec<String>,
    /// Pages the body cites; each document must be in this project.
    #[serde(default)]
    citations: Vec<CitationView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotePatchBody {
    title: Option<String>,
    body: Option<String>,
    tags: Option<Vec<String>>,
    citations: Option<Vec<CitationView>>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError(Error::new(Code::InvalidInput, detail))
}

fn check_title(t: &str) -> Result<String, ApiError> {
    let t = t.trim();
    if t.is_empty() || t.chars().count() > MAX_TITLE {
        return Err(invalid(format!("title: 1 to {MAX_TITLE} characters")));
    }
    Ok(t.to_owned())
}

fn check_body(b: &str) -> Result<(), ApiError> {
    if b.chars().count() > MAX_BODY {
        return Err(invalid(format!("body: at most {MAX_BODY} characters")));
    }
    Ok(())
}

fn check_tags(tags: Vec<String>) -> Result<Vec<String>, ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!("tags: at most {MAX_TAGS}")));
    }
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_owned();
        if t.is_empty() || t.chars().count() > MAX_TAG || t.chars().any(char::is_control) {
            return Err(invalid(format!(
                "tags: each 1 to {MAX_TAG} printable characters"
            )));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Every cited document must be in the project and the page must exist; titles and sections
/// come from the document, not the caller.
async fn check_citations(
    s: &AppState,
    project: &Project,
    cites: Vec<CitationView>,
) -> Result<Vec<PageRef>, ApiError> {
    if cites.len() > MAX_CITATIONS {
        return Err(invalid(format!("citations: at most {MAX_CITATIONS}")));
    }
    let mut out = Vec::new();
    for c in cites {
        let doc = s
            .store
            .get_document(c.document_id)
            .await?
            .filter(|d| d.project_id == project.id)
            .ok_or_else(|| {
                invalid(format!(
                    "citation [{}]: document {} is not in this project",
                    c.n, c.document_id
                ))
            })?;
        if c.page == 0 || (doc.page_count > 0 && c.page > doc.page_count) {
            return Err(invalid(format!(
                "citation [{}]: the document has pages 1 to {}",
                c.n, doc.page_count
            )));
        }
        out.push(PageRef {
            n: c.n,
            document_id: doc.id,
            title: doc.title,
            page: c.page,
            page_end: c.page_end.clamp(c.page, doc.page_count.max(c.page)),
            section: c.section,
        });
    }
    Ok(out)
}

async fn note_in(s: &AppState, project: &Project, id: &str) -> ApiResult<Note> {
    let not_found = || ApiError(Error::not_found("note", id));
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    s.store
        .get_note(id)
        .await?
        .filter(|n| n.project_id == project.id)
        .ok_or_else(not_found)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoteListParams {
    /// Only notes with this tag.
    tag: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NotePage {
    items: Vec<NoteView>,
    next_cursor: Option<String>,
}

/// The project's notes, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/notes", tag = "notes",
    params(("project" = String, Path, description = "id or slug"), NoteListParams),
    responses((status = 200, body = NotePage), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn list(
    access: ProjectAccess<ReadScope>,
    State(s): State<AppState>,
    Query(q): Query<NoteListParams>,
) -> ApiResult<axum::Json<NotePage>> {
    let page = PageRequest::new(q.limit, q.cursor.as_deref())?;
    let res = s
        .store
        .list_notes(access.project.id, q.tag.as_deref(), page)
        .await?;
    Ok(axum::Json(NotePage {
        items: res.items.into_iter().map(NoteView::from).collect(),
        next_cursor: res.next_cursor,
    }))
}

/// Write a note.
#[utoipa::path(post, path = "/api/v1/projects/{project}/notes", tag = "notes",
    params(("project" = String, Path, description = "id or slug")), request_body = NewNoteBody,
    responses((status = 201, body = NoteView), (status = 422, description = "invalid_input, invalid_body")),
    security(("bearer" = [])))]
pub async fn create(
    access: ProjectAccess<IngestScope>,
    State(s): State<AppState>,
    Json(b): Json<NewNoteBody>,
) -> ApiResult<(StatusCode, axum::Json<NoteView>)> {
    let title = check_title(&b.title)?;
    check_body(&b.body)?;
    let tags = check_tags(b.tags)?;
    let citations = check_citations(&s, &access.project, b.citations).await?;
    let note = s
        .store
        .create_note(NewNote {
            project_id: access.project.id,
            title,
            body: b.body,
            tags,
            author_id: Some(access.principal.user_id),
            citations,
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(note.into())))
}

/// One note.
#[utoipa::path(get, path = "/api/v1/projects/{project}/notes/{note}", tag = "notes",
    params(("project" = String, Path, description = "id or slug"), ("note" = String, Path)),
    responses((status = 200, body = NoteView), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn show(
    access: ProjectAccess<ReadScope>,
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<NoteView>> {
    Ok(axum::Json(note_in(&s, &access.project, &id).await?.into()))
}

/// Change a note's title, body, tags or citations.
#[utoipa::path(patch, path = "/api/v1/projects/{project}/notes/{note}", tag = "notes",
    params(("project" = String, Path, description = "id or slug"), ("note" = String, Path)),
    request_body = NotePatchBody,
    responses((status = 200, body = NoteView), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn update(
    access: ProjectAccess<IngestScope>,
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
    Json(b): Json<NotePatchBody>,
) -> ApiResult<axum::Json<NoteView>> {
    let note = note_in(&s, &access.project, &id).await?;
    let title = b.title.as_deref().map(check_title).transpose()?;
    if let Some(body) = &b.body {
        check_body(body)?;
    }
    let tags = b.tags.map(check_tags).transpose()?;
    let citations = match b.citations {
        Some(c) => Some(check_citations(&s, &access.project, c).await?),
        None => None,
    };
    let updated = s
        .store
        .update_note(
            note.id,
            NotePatch {
                title,
                body: b.body,
                tags,
                citations,
            },
        )
        .await?
        .ok_or_else(|| ApiError(Error::not_found("note", &id)))?;
    Ok(axum::Json(updated.into()))
}

/// Delete a note.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/notes/{note}", tag = "notes",
    params(("project" = String, Path, description = "id or slug"), ("note" = String, Path)),
    responses((status = 204), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn delete(
    access: ProjectAccess<IngestScope>,
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let note = note_in(&s, &access.project, &id).await?;
    s.store.delete_note(note.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A note as Markdown, with a references section linking every citation to its page.
#[utoipa::path(get, path = "/api/v1/projects/{project}/notes/{note}/markdown", tag = "notes",
    params(("project" = String, Path, description = "id or slug"), ("note" = String, Path)),
    responses((status = 200, content_type = "text/markdown", body = String),
              (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn markdown(
    access: ProjectAccess<ReadScope>,
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let note = note_in(&s, &access.project, &id).await?;
    let name = format!("note-{}.md", note.id);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/markdown; charset=utf-8".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        answers::note_markdown(&note),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BibParams {
    /// Every document of the project that carries a DOI or arXiv id, not only those the
    /// notes cite.
    #[serde(default)]
    all: bool,
}

/// The papers the project's notes cite, as BibTeX (those with a DOI or an arXiv id).
#[utoipa::path(get, path = "/api/v1/projects/{project}/notes.bib", tag = "notes",
    params(("project" = String, Path, description = "id or slug"), BibParams),
    responses((status = 200, content_type = "application/x-bibtex", body = String)),
    security(("bearer" = [])))]
pub async fn bibtex(
    access: ProjectAccess<ReadScope>,
    State(s): State<AppState>,
    Query(q): Query<BibParams>,
) -> ApiResult<Response> {
    let pid = access.project.id;
    let store = s.store.as_ref();
    // Oldest document first, so that keys stay stable as the list grows.
    let mut docs = BTreeMap::new();
    if q.all {
        let every = bunko_core::documents::DocumentFilter::default();
        let all = all_pages(|page| store.list_documents(pid, &every, page)).await?;
        docs.extend(all.into_iter().map(|d| (d.id, d)));
    } else {
        let notes = all_pages(|page| store.list_notes(pid, None, page)).await?;
        let cited: HashSet<Uuid> = notes
            .iter()
            .flat_map(|n| n.citations.iter().map(|c| c.document_id))
            .collect();
        for id in cited {
            if let Some(d) = store.get_document(id).await?
                && d.project_id == pid
            {
                docs.insert(d.id, d);
            }
        }
    }
    let sources: Vec<BibSource> = docs
        .into_values()
        .map(|d| BibSource {
            title: d.meta.title.clone().unwrap_or(d.title),
            authors: d.meta.authors,
            year: d.meta.created.as_deref().and_then(answers::year_of),
            doi: d.meta.doi,
            arxiv_id: d.meta.arxiv_id,
        })
        .collect();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/x-bibtex; charset=utf-8".to_owned(),
        )],
        answers::bibtex(&sources),
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    /// The question the note answers; without one, the note gathers the main findings of
    /// `documents`.
    question: Option<String>,
    /// Only these documents of the project.
    documents: Option<Vec<Uuid>>,
    /// Default: the question, or the documents' titles.
    title: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// A model alias (default `rag.model`).
    model: Option<String>,
}

/// Write a note from a question (or a set of documents) with checked citations: an answer
/// over the project's documents whose `[n]` markers become links to the cited pages.
#[utoipa::path(post, path = "/api/v1/projects/{project}/notes:generate", tag = "notes",
    params(("project" = String, Path, description = "id or slug")), request_body = GenerateBody,
    responses((status = 201, body = NoteView),
              (status = 422, description = "no_answer (the documents hold none), invalid_input"),
              (status = 429, description = "quota_exceeded")),
    security(("bearer" = [])))]
pub async fn generate(
    access: ProjectAccess<IngestScope>,
    State(s): State<AppState>,
    Json(b): Json<GenerateBody>,
) -> ApiResult<(StatusCode, axum::Json<NoteView>)> {
    let tags = check_tags(b.tags)?;
    let question = b.question.map(|q| q.trim().to_owned());
    let (question, default_title) = match (question, &b.documents) {
        (Some(q), _) if !q.is_empty() => (q.clone(), q),
        (_, Some(docs)) if !docs.is_empty() => {
            let mut titles = Vec::new();
            let mut ja = false;
            for id in docs.iter().take(3) {
                if let Some(d) = s.store.get_document(*id).await?
                    && d.project_id == access.project.id
                {
                    ja |= d.language.as_deref() == Some("ja");
                    titles.push(d.title);
                }
            }
            let q = if ja {
                "これらの文書の主な内容と結論は何ですか。"
            } else {
                "What are the main findings and conclusions of these documents?"
            };
            (q.to_owned(), titles.join("; "))
        }
        _ => return Err(invalid("give a question, or documents to take notes on")),
    };
    let title = match b.title {
        Some(t) => check_title(&t)?,
        None => default_title.chars().take(120).collect(),
    };
    let body = AskBody::question(
        question,
        vec![access.project.id.to_string()],
        b.documents,
        b.model,
    );
    let res = answer_value(&s, &access.principal, body).await?;
    if res.not_found {
        return Err(ApiError(Error::new(
            Code::NoAnswer,
            "the documents hold no answer to this question; no note was made",
        )));
    }
    // Each source the answer cites becomes a linked reference under the same number.
    let (_, f) = bunko_core::rag::MarkerFilter::whole(res.sources.len(), &res.answer);
    let citations: Vec<PageRef> = res
        .sources
        .iter()
        .filter(|src| f.cited.contains(&src.n))
        .map(|src| PageRef {
            n: src.n,
            document_id: src.document_id,
            title: src.title.clone(),
            page: src.page,
            page_end: src.page_end,
            section: src.section.clone(),
        })
        .collect();
    let mut text = res.answer.clone();
    if res.extractive {
        text.push_str(match res.language.as_str() {
            "ja" => "\n\n（資料の文をそのまま抜き出した回答です。）",
            _ => "\n\n(Extractive: the sources' own sentences.)",
        });
    }
    let unsupported: Vec<String> = res
        .citations
        .iter()
        .filter(|c| !c.kept && c.n >= 1 && c.n <= res.sources.len())
        .map(|c| format!("[{}]", c.n))
        .collect();
    if !unsupported.is_empty() {
        text.push_str(&format!(
            "\n\n> {} {}",
            match res.language.as_str() {
                "ja" => "根拠が弱い引用:",
                _ => "Weakly supported citations:",
            },
            unsupported.join(" ")
        ));
    }
    let note = s
        .store
        .create_note(NewNote {
            project_id: access.project.id,
            title: if title.trim().is_empty() {
                "Note".into()
            } else {
                title
            },
            body: text,
            tags,
            author_id: Some(access.principal.user_id),
            citations,
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(note.into())))
}
