//! `/openapi.json` and `/docs`: the API reference, rendered in the browser by bunko's own
//! small script from the OpenAPI document. Every asset is served from the binary; no CDN.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "bunko API", description = "Self-hosted document intelligence. Errors are application/problem+json with a stable `code`."),
    paths(
        super::health::healthz, super::health::readyz, super::health::metrics,
        super::schedules::list, super::schedules::create, super::schedules::show,
        super::schedules::delete, super::schedules::pause, super::schedules::resume,
        super::schedules::run_now, super::schedules::runs,
        super::sources::list, super::sources::create, super::sources::show,
        super::sources::delete, super::sources::crawl_now,
        super::jobs::list, super::jobs::show, super::jobs::enqueue, super::jobs::retry, super::jobs::cancel,
        super::projects::create, super::projects::list, super::projects::show, super::projects::delete,
        super::projects::members, super::projects::put_member, super::projects::remove_member,
        super::auth::login, super::auth::refresh, super::auth::logout, super::auth::me, super::auth::change_password,
        super::users::list, super::users::create, super::users::show, super::users::update,
        super::keys::list, super::keys::create, super::keys::revoke,
        super::audit::list, super::search::get, super::search::post,
        super::documents::upload, super::documents::list, super::documents::show,
        super::documents::page, super::documents::original, super::documents::delete,
        super::documents::versions,
        super::documents::reprocess, super::documents::summarize, super::documents::summary,
        super::usage::report, super::ask::ask,
        super::notes::list, super::notes::create, super::notes::show, super::notes::update,
        super::notes::delete, super::notes::markdown, super::notes::bibtex, super::notes::generate,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness and metrics (public)"),
        (name = "jobs", description = "The durable job queue"),
        (name = "schedules", description = "The cron table: every firing is a job (administrators)"),
        (name = "sources", description = "Crawlers (arXiv, e-Gov law API, RSS/Atom) and watched folders (administrators)"),
        (name = "projects", description = "Projects and their members"),
        (name = "auth", description = "Log in, tokens, sessions"),
        (name = "users", description = "Accounts (administrators)"),
        (name = "keys", description = "API keys for programs"),
        (name = "audit", description = "Security events (administrators)"),
        (name = "documents", description = "Upload, extraction (PDF text layer, OCR), pages, originals"),
        (name = "gateway", description = "The LLM gateway's usage ledger (the OpenAI- and Ollama-compatible APIs are under /v1 and /api)"),
        (name = "search", description = "Hybrid search: BM25 keyword half + embedding vector half, fused by reciprocal rank"),
        (name = "ask", description = "Answers over your documents with numbered, checked citations"),
        (name = "notes", description = "Project notes in Markdown with citations linked to pages; Markdown and BibTeX export"),
    )
)]
pub struct ApiDoc;

/// The body of every error response.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape written by crate::http::error
pub struct Problem {
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// Stable, machine-readable; see docs/api/errors.md.
    code: String,
    request_id: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Every operation can answer an error, always as a problem document.
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = ResponseBuilder::new()
            .description(
                "An error: `application/problem+json` with a stable `code` (docs/api/errors.md)",
            )
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("default".into())
                    .or_insert_with(|| problem.clone().into());
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn openapi() -> Response {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::app::VERSION.into();
    axum::Json(doc).into_response()
}

pub async fn root() -> Redirect {
    Redirect::temporary("/docs")
}

const PAGE: &str = include_str!("../assets/docs.html");
const SCRIPT: &str = include_str!("../assets/docs.js");
const STYLE: &str = include_str!("../assets/docs.css");

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

pub async fn asset(Path(asset): Path<String>) -> Response {
    let (ct, body) = match asset.as_str() {
        "docs.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "docs.css" => ("text/css; charset=utf-8", STYLE),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
