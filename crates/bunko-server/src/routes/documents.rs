//! Documents: upload (multipart, streamed to disk while hashed), list, show, pages, the
//! original, delete and reprocess. Writing needs `ingest` (editor) in the project, reading
//! needs `read` (viewer); a document in a project the caller cannot see answers 404.

use crate::app::AppState;
use crate::http::auth::{
    AskScope, IngestScope, NeedScope, ProjectAccess, ReadScope, authorize_project, client_info,
};
use crate::http::extract::{Query, optional_json};
use crate::http::{ApiError, ApiResult};
use crate::ingest::{Added, Stager};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bunko_core::accounts::ClientInfo;
use bunko_core::documents::{DocStatus, DocType, Document, DocumentFilter};
use bunko_core::identity::Principal;
use bunko_core::ids::rfc3339;
use bunko_core::ports::PageRequest;
use bunko_core::{Code, Error};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Files one upload request may carry.
pub const MAX_FILES_PER_REQUEST: usize = 100;

#[derive(Serialize, ToSchema)]
pub struct DocErrorView {
    /// Stable: `document_encrypted`, `document_unreadable`, `document_empty`, …
    code: String,
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentView {
    id: Uuid,
    project_id: Uuid,
    title: String,
    filename: String,
    /// `pdf`, `png`, `jpeg`, `tiff`, `html`, `markdown` or `text`.
    #[serde(rename = "type")]
    doc_type: String,
    sha256: String,
    size_bytes: u64,
    /// `queued`, `processing`, `ready` or `failed`.
    status: String,
    /// While processing: `extract`, `chunk`, `embed` or `index`.
    stage: Option<String>,
    /// 0–1.
    progress: f32,
    error: Option<DocErrorView>,
    page_count: u32,
    chunk_count: u32,
    /// `ja`, `en` or `other`.
    language: Option<String>,
    authors: Vec<String>,
    created: Option<String>,
    modified: Option<String>,
    /// A DOI printed on the first pages (or given by the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    doi: Option<String>,
    /// An arXiv identifier printed on the first pages (or given by the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    arxiv_id: Option<String>,
    source: String,
    tags: Vec<String>,
    job_id: Option<Uuid>,
    created_at: String,
    updated_at: String,
    /// For a document taken from a source: the item and which version of it this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<OriginView>,
}

#[derive(Serialize, ToSchema)]
pub struct OriginView {
    /// The item all versions share: `arxiv:2101.00001`, `egov:411AC0000000127`,
    /// `feed:NAME:ENTRY`, `folder:NAME:PATH`.
    external_id: String,
    /// arXiv `v2`, a law's revision id.
    version: Option<String>,
    /// `YYYY-MM-DD`: published (a paper version) or in force (a law revision).
    valid_from: Option<String>,
    /// The next version's `valid_from`.
    valid_to: Option<String>,
    /// The version search and ask see unless asked `as_of` a date.
    current: bool,
    /// The source's metadata (arXiv: abstract, categories, journal ref, dates; e-Gov: law
    /// number, type, promulgation and enforcement dates, the amending law).
    #[schema(value_type = Object)]
    meta: serde_json::Value,
}

fn meta_strings(meta: &serde_json::Value, key: &str) -> Vec<String> {
    meta.get(key)
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn meta_string(meta: &serde_json::Value, key: &str) -> Option<String> {
    meta.get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

impl From<Document> for DocumentView {
    fn from(mut d: Document) -> Self {
        // What the source says fills what the file does not.
        if let Some(o) = &d.origin {
            if d.meta.authors.is_empty() {
                d.meta.authors = meta_strings(&o.meta, "authors");
            }
            d.meta.doi = d.meta.doi.take().or_else(|| meta_string(&o.meta, "doi"));
            d.meta.arxiv_id = d
                .meta
                .arxiv_id
                .take()
                .or_else(|| meta_string(&o.meta, "arxiv_id"));
            d.meta.created = d
                .meta
                .created
                .take()
                .or_else(|| meta_string(&o.meta, "published"))
                .or_else(|| meta_string(&o.meta, "promulgation_date"));
        }
        Self {
            id: d.id,
            project_id: d.project_id,
            title: d.title,
            filename: d.filename,
            doc_type: d.doc_type.as_str().into(),
            sha256: d.sha256,
            size_bytes: d.size_bytes,
            status: d.status.as_str().into(),
            stage: d.stage,
            progress: d.progress,
            error: d.error.map(|e| DocErrorView {
                code: e.code,
                message: e.message,
            }),
            page_count: d.page_count,
            chunk_count: d.chunk_count,
            language: d.language,
            authors: d.meta.authors,
            created: d.meta.created,
            modified: d.meta.modified,
            doi: d.meta.doi,
            arxiv_id: d.meta.arxiv_id,
            source: d.source,
            tags: d.tags,
            job_id: d.job_id,
            created_at: rfc3339(d.created_at_ms),
            updated_at: rfc3339(d.updated_at_ms),
            origin: d.origin.map(|o| OriginView {
                external_id: o.external_id,
                version: o.version,
                valid_from: o.valid_from,
                valid_to: o.valid_to,
                current: o.current,
                meta: o.meta,
            }),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UploadEntry {
    filename: String,
    document_id: Uuid,
    /// The processing job; absent for duplicates.
    job_id: Option<Uuid>,
    /// `queued`, or `duplicate` when these bytes already are a document of the project.
    status: String,
    /// For duplicates: the existing document's status.
    document_status: String,
}

#[derive(Serialize, ToSchema)]
pub struct UploadResponse {
    documents: Vec<UploadEntry>,
}

#[derive(ToSchema)]
#[allow(dead_code)] // documents the multipart form for the OpenAPI description
pub struct UploadForm {
    /// One or more files (repeat the field).
    #[schema(format = Binary, value_type = Vec<String>)]
    file: Vec<Vec<u8>>,
    /// The password of encrypted PDFs in this request.
    password: Option<String>,
    /// Comma-separated tags for every file of this request (repeatable); search filters by them.
    tags: Option<String>,
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(Code::PayloadTooLarge, "the upload is larger than allowed")
    } else {
        ApiError::new(
            Code::BadRequest,
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}

/// Upload documents: multipart field `file` (repeatable), optional `password`. Each file is
/// streamed to disk, typed by its content and deduplicated by SHA-256 within the project.
/// Either every file is accepted or none is.
#[utoipa::path(post, path = "/api/v1/projects/{project}/documents", tag = "documents",
    params(("project" = String, Path, description = "id or slug")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 202, body = UploadResponse),
        (status = 400, description = "empty_file, bad_request"),
        (status = 413, description = "payload_too_large"),
        (status = 415, description = "unsupported_document_type, unsupported_media_type")),
    security(("bearer" = [])))]
pub async fn upload(
    access: ProjectAccess<IngestScope>,
    State(s): State<AppState>,
    req: Request,
) -> ApiResult<(StatusCode, axum::Json<UploadResponse>)> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "upload files as `multipart/form-data` with a `file` field",
        ));
    }
    let mut form = Multipart::from_request(req, &s)
        .await
        .map_err(|e| ApiError::new(Code::BadRequest, e.body_text()))?;
    let limit = s.config.ingest.max_file_bytes;
    let mut staged = Vec::new();
    let mut password: Option<String> = None;
    let mut tags: Vec<String> = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                if staged.len() == MAX_FILES_PER_REQUEST {
                    return Err(ApiError::new(
                        Code::BadRequest,
                        format!("at most {MAX_FILES_PER_REQUEST} files per request"),
                    ));
                }
                let filename = field.file_name().unwrap_or("unnamed").to_owned();
                let mut stager = Stager::new(s.ingest.blobs.as_ref(), limit).await?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    stager.write(&chunk).await?;
                }
                staged.push(stager.finish(&filename).await?);
            }
            "tags" => {
                let text = field.text().await.map_err(multipart_error)?;
                for t in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if t.chars().count() > 100 || t.chars().any(char::is_control) {
                        return Err(ApiError::new(
                            Code::BadRequest,
                            "tags: each tag is 1–100 characters without control characters",
                        ));
                    }
                    if !tags.iter().any(|x| x == t) {
                        tags.push(t.to_owned());
                    }
                }
                if tags.len() > 50 {
                    return Err(ApiError::new(Code::BadRequest, "tags: at most 50"));
                }
            }
            "password" => {
                let text = field.text().await.map_err(multipart_error)?;
                if text.len() > 1024 {
                    return Err(ApiError::new(
                        Code::BadRequest,
                        "password: at most 1024 bytes",
                    ));
                }
                password = Some(text);
            }
            other => {
                return Err(ApiError::new(
                    Code::BadRequest,
                    format!(
                        "unknown form field `{other}`; send `file` (repeatable) and optionally `password` and `tags`"
                    ),
                ));
            }
        }
    }
    if staged.is_empty() {
        return Err(ApiError::new(
            Code::BadRequest,
            "no file: send one or more `file` fields",
        ));
    }
    let mut out = Vec::with_capacity(staged.len());
    for file in staged {
        let filename = file.filename.clone();
        let Added {
            document,
            job_id,
            duplicate,
        } = s
            .ingest
            .add_tagged(
                access.project.id,
                file,
                "upload",
                password.as_deref(),
                &tags,
            )
            .await?;
        out.push(UploadEntry {
            filename,
            document_id: document.id,
            job_id,
            status: if duplicate { "duplicate" } else { "queued" }.into(),
            document_status: document.status.as_str().into(),
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(UploadResponse { documents: out }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `queued`, `processing`, `ready` or `failed`.
    status: Option<String>,
    /// `pdf`, `png`, `jpeg`, `tiff`, `html`, `markdown` or `text`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    doc_type: Option<String>,
    /// `ja`, `en` or `other`.
    language: Option<String>,
    /// Part of the title (case-insensitive for ASCII).
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentPage {
    items: Vec<DocumentView>,
    next_cursor: Option<String>,
}

/// The project's documents, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/documents", tag = "documents",
    params(("project" = String, Path, description = "id or slug"), ListParams),
    responses((status = 200, body = DocumentPage)), security(("bearer" = [])))]
pub async fn list(
    access: ProjectAccess<ReadScope>,
    State(s): State<AppState>,
    Query(q): Query<ListParams>,
) -> ApiResult<axum::Json<DocumentPage>> {
    let page = PageRequest::new(q.limit, q.cursor.as_deref())?;
    let bad = |what: &str, v: &str, allowed: &str| {
        ApiError::new(
            Code::InvalidQuery,
            format!("{what} `{v}` is not one of {allowed}"),
        )
    };
    let status = q
        .status
        .as_deref()
        .map(|v| {
            DocStatus::parse(v).ok_or_else(|| bad("status", v, "queued, processing, ready, failed"))
        })
        .transpose()?;
    let doc_type = q
        .doc_type
        .as_deref()
        .map(|v| {
            DocType::parse(v)
                .ok_or_else(|| bad("type", v, "pdf, png, jpeg, tiff, html, markdown, text"))
        })
        .transpose()?;
    if let Some(l) = &q.language
        && !matches!(l.as_str(), "ja" | "en" | "other")
    {
        return Err(bad("language", l, "ja, en, other"));
    }
    if q.q.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "q: at most 200 characters",
        ));
    }
    let filter = DocumentFilter {
        status,
        doc_type,
        language: q.language,
        title: q.q.filter(|t| !t.is_empty()),
    };
    let res = s
        .store
        .list_documents(access.project.id, &filter, page)
        .await?;
    Ok(axum::Json(DocumentPage {
        items: res.items.into_iter().map(Into::into).collect(),
        next_cursor: res.next_cursor,
    }))
}

/// The document `id`, after checking the caller may use scope `S` in its project (a document
/// in a project the caller cannot see is 404, like one that does not exist).
async fn document_for<S: NeedScope>(s: &AppState, c: &Caller, id: &str) -> ApiResult<Document> {
    let not_found = || ApiError(bunko_core::documents::not_found(id));
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    let doc = s.store.get_document(uuid).await?.ok_or_else(not_found)?;
    let project = s
        .store
        .get_project(&doc.project_id.to_string())
        .await?
        .ok_or_else(not_found)?;
    authorize_project::<S>(s, &c.0, &c.1, &project)
        .await
        .map_err(|e| {
            if e.0.code == Code::NotFound {
                not_found()
            } else {
                e
            }
        })?;
    Ok(doc)
}

/// The caller and where the request came from (for audit records of denials).
pub struct Caller(Principal, ClientInfo);

impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = crate::http::auth::principal(parts)?;
        Ok(Caller(p, client_info(parts, state)))
    }
}

/// One document: metadata, status, stage, progress, error, page and chunk counts.
#[utoipa::path(get, path = "/api/v1/documents/{id}", tag = "documents", params(("id" = String, Path)),
    responses((status = 200, body = DocumentView), (status = 404, description = "not_found")), security(("bearer" = [])))]
pub async fn show(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DocumentView>> {
    let d = document_for::<ReadScope>(&s, &caller, &id).await?;
    Ok(axum::Json(d.into()))
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    /// Oldest first; a document without a source is its own only version.
    items: Vec<DocumentView>,
}

/// Every version of the item this document is a version of (a paper's arXiv versions, a
/// law's revisions with the dates they are in force).
#[utoipa::path(get, path = "/api/v1/documents/{id}/versions", tag = "documents", params(("id" = String, Path)),
    responses((status = 200, body = VersionList), (status = 404, description = "not_found")), security(("bearer" = [])))]
pub async fn versions(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<VersionList>> {
    let d = document_for::<ReadScope>(&s, &caller, &id).await?;
    let items = match &d.origin {
        Some(o) => {
            s.store
                .document_versions(d.project_id, &o.external_id)
                .await?
        }
        None => vec![d],
    };
    Ok(axum::Json(VersionList {
        items: items.into_iter().map(DocumentView::from).collect(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct PageView {
    /// 1-based physical page.
    page: u32,
    /// The page's normalised text.
    text: String,
    /// `text` (the PDF's text layer or the file's text) or `ocr`.
    method: String,
    /// Mean OCR word confidence, 0–100 (OCR'd pages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<f32>,
    /// With `?source=true`: the text as the extractor gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    source_text: Option<String>,
    /// With `?source=true`: `[index in text, index in source_text]` (characters) wherever the
    /// correspondence jumps; between two entries both advance together.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<u32>>>)]
    offsets: Option<Vec<(u32, u32)>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Also return the extractor's text and the offset map.
    source: Option<bool>,
}

/// The normalised text of one page (`n` is the 1-based physical page).
#[utoipa::path(get, path = "/api/v1/documents/{id}/pages/{n}", tag = "documents",
    params(("id" = String, Path), ("n" = u32, Path), PageParams),
    responses((status = 200, body = PageView), (status = 404, description = "not_found")), security(("bearer" = [])))]
pub async fn page(
    caller: Caller,
    State(s): State<AppState>,
    Path((id, n)): Path<(String, String)>,
    Query(q): Query<PageParams>,
) -> ApiResult<axum::Json<PageView>> {
    let d = document_for::<ReadScope>(&s, &caller, &id).await?;
    let n: u32 =
        n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::new(Code::InvalidQuery, "the page number must be 1 or more")
        })?;
    let pg = s.store.get_page(d.id, n).await?.ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            format!("document `{id}` has no page {n} (it has {})", d.page_count),
        )
    })?;
    Ok(axum::Json(PageView {
        page: pg.page,
        text: pg.text,
        method: pg.method.as_str().into(),
        confidence: pg.confidence,
        source_text: q.source.unwrap_or(false).then(|| pg.raw.clone()),
        offsets: q.source.unwrap_or(false).then(|| pg.offsets.clone()),
    }))
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266 / 5987).
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

/// Download the original file (always as an attachment, sandboxed).
#[utoipa::path(get, path = "/api/v1/documents/{id}/original", tag = "documents", params(("id" = String, Path)),
    responses((status = 200, description = "the original bytes"), (status = 404, description = "not_found")), security(("bearer" = [])))]
pub async fn original(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = document_for::<ReadScope>(&s, &caller, &id).await?;
    let path = s.ingest.blobs.local_path(&d.sha256).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::unavailable(format!("the original cannot be read: {e}")))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(d.doc_type.mime()),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&d.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(d.size_bytes));
    // Uploaded HTML must never run as this origin's page.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(res)
}

/// Delete a document: its chunks leave the search index, then its record; the original is
/// removed when no other document has the same bytes.
#[utoipa::path(delete, path = "/api/v1/documents/{id}", tag = "documents", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, description = "not_found")), security(("bearer" = [])))]
pub async fn delete(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let d = document_for::<IngestScope>(&s, &caller, &id).await?;
    s.ingest.delete(&d).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReprocessRequest {
    /// A password for an encrypted PDF.
    password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ReprocessResponse {
    document_id: Uuid,
    job_id: Uuid,
}

/// Process a document again (optionally with a PDF password). 409 while it is queued or
/// being processed.
#[utoipa::path(post, path = "/api/v1/documents/{id}/reprocess", tag = "documents", params(("id" = String, Path)),
    request_body(content = Option<ReprocessRequest>, content_type = "application/json"),
    responses((status = 202, body = ReprocessResponse), (status = 409, description = "conflict")), security(("bearer" = [])))]
pub async fn reprocess(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, axum::Json<ReprocessResponse>)> {
    let d = document_for::<IngestScope>(&s, &caller, &id).await?;
    let req: Option<ReprocessRequest> = optional_json(&headers, &body)?;
    let password = req.and_then(|r| r.password);
    if password.as_ref().is_some_and(|p| p.len() > 1024) {
        return Err(ApiError::new(
            Code::InvalidInput,
            "password: at most 1024 bytes",
        ));
    }
    let job = s.ingest.reprocess(&d, password.as_deref()).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ReprocessResponse {
            document_id: d.id,
            job_id: job,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryRequest {
    /// A model alias (default `rag.model`).
    model: Option<String>,
    /// `ja` or `en`; default: the document's language.
    language: Option<String>,
}

/// Summarise a document (again): a job on queue `llm` that summarises each part of the
/// document and then the whole, citing the parts' pages. `GET` returns the newest summary.
#[utoipa::path(post, path = "/api/v1/documents/{id}/summary", tag = "documents",
    params(("id" = String, Path)), request_body(content = Option<SummaryRequest>),
    responses((status = 202, body = ReprocessResponse),
              (status = 404, description = "not_found, model_not_found"),
              (status = 409, description = "document_not_ready")),
    security(("bearer" = [])))]
pub async fn summarize(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, axum::Json<ReprocessResponse>)> {
    let d = document_for::<AskScope>(&s, &caller, &id).await?;
    let req: Option<SummaryRequest> = optional_json(&headers, &body)?;
    let (model, language) = req.map(|r| (r.model, r.language)).unwrap_or_default();
    let job = crate::summary::enqueue(
        s.store.as_ref(),
        &s.gateway.router,
        &d,
        crate::summary::Request {
            user_id: caller.0.user_id,
            model,
            language,
        },
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ReprocessResponse {
            document_id: d.id,
            job_id: job,
        }),
    ))
}

/// One part of the document and its summary.
#[derive(Serialize, ToSchema)]
pub struct PartView {
    section: String,
    page_start: u32,
    page_end: u32,
    text: String,
}

/// Where a summary's `[n]` points.
#[derive(Serialize, ToSchema)]
pub struct SummaryCitation {
    n: usize,
    page: u32,
    page_end: u32,
    section: String,
    link: String,
}

#[derive(Serialize, ToSchema)]
pub struct SummaryView {
    id: Uuid,
    document_id: Uuid,
    language: String,
    model: String,
    /// `[n]` markers point at `citations`.
    text: String,
    citations: Vec<SummaryCitation>,
    parts: Vec<PartView>,
    /// Parts the model could not summarise: their lead sentences stand in.
    extractive_parts: u32,
    input_tokens: u64,
    output_tokens: u64,
    job_id: Option<Uuid>,
    created_at: String,
}

impl From<bunko_core::answers::Summary> for SummaryView {
    fn from(x: bunko_core::answers::Summary) -> Self {
        Self {
            id: x.id,
            document_id: x.document_id,
            language: x.language,
            model: x.model,
            text: x.text,
            citations: x
                .citations
                .iter()
                .map(|c| SummaryCitation {
                    n: c.n,
                    page: c.page,
                    page_end: c.page_end,
                    section: c.section.clone(),
                    link: bunko_core::answers::page_link(c),
                })
                .collect(),
            parts: x
                .parts
                .into_iter()
                .map(|p| PartView {
                    section: p.section,
                    page_start: p.page_start,
                    page_end: p.page_end,
                    text: p.text,
                })
                .collect(),
            extractive_parts: x.extractive_parts,
            input_tokens: x.input_tokens,
            output_tokens: x.output_tokens,
            job_id: x.job_id,
            created_at: rfc3339(x.created_at_ms),
        }
    }
}

/// The document's newest summary.
#[utoipa::path(get, path = "/api/v1/documents/{id}/summary", tag = "documents",
    params(("id" = String, Path)),
    responses((status = 200, body = SummaryView),
              (status = 404, description = "not_found (no such document, or no summary yet)")),
    security(("bearer" = [])))]
pub async fn summary(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SummaryView>> {
    let d = document_for::<ReadScope>(&s, &caller, &id).await?;
    let x = s.store.latest_summary(d.id).await?.ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            format!(
                "document {} has no summary yet: POST to this path makes one",
                d.id
            ),
        )
    })?;
    Ok(axum::Json(x.into()))
}
