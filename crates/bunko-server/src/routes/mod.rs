//! Paths mapped to handlers — nothing else. Every route is behind the auth layer except the
//! ones in [`PUBLIC_ROUTES`].

pub mod ask;
mod audit;
mod auth;
mod docs;
mod documents;
mod health;
mod jobs;
mod keys;
mod notes;
mod ollama;
mod openai;
mod projects;
mod schedules;
pub mod search;
mod sources;
mod usage;
mod users;

use crate::app::AppState;
use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

pub use docs::ApiDoc;
pub use documents::MAX_FILES_PER_REQUEST as MAX_FILES_PER_UPLOAD;

/// The API's view of a job (also printed by `bunko jobs … --json`).
pub fn jobs_view(j: bunko_core::jobs::JobRecord) -> jobs::JobView {
    j.into()
}

/// The API's view of a schedule (also printed by `bunko schedules list --json`).
pub fn schedule_view(s: bunko_core::schedule::Schedule) -> schedules::ScheduleView {
    s.into()
}

/// The API's view of a source (also printed by `bunko sources list --json`).
pub fn source_view(s: bunko_core::sources::Source) -> sources::SourceView {
    s.into()
}

/// The allow-list: route templates anyone may call. Keep it short.
pub const PUBLIC_ROUTES: &[&str] = &[
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/{asset}",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
];

pub fn is_public(route: &str) -> bool {
    PUBLIC_ROUTES.contains(&route)
}

/// Builds the router and, from the same calls, the list of every (method, path) it serves —
/// which the authorization-matrix test walks, so a route cannot be added without an entry.
struct Table {
    router: Router<AppState>,
    list: Vec<(Method, &'static str)>,
}

impl Table {
    fn new() -> Self {
        Self {
            router: Router::new(),
            list: Vec::new(),
        }
    }

    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // A fixed method list: the conversion cannot fail for these.
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        self.router = self.router.route(path, on(filter, handler));
        self.list.push((method, path));
        self
    }
}

fn table() -> Table {
    use Method as M;
    Table::new()
        .add(M::GET, "/", docs::root)
        .add(M::GET, "/healthz", health::healthz)
        .add(M::GET, "/readyz", health::readyz)
        .add(M::GET, "/metrics", health::metrics)
        .add(M::GET, "/openapi.json", docs::openapi)
        .add(M::GET, "/docs", docs::page)
        .add(M::GET, "/docs/{asset}", docs::asset)
        .add(M::POST, "/api/v1/auth/login", auth::login)
        .add(M::POST, "/api/v1/auth/refresh", auth::refresh)
        .add(M::POST, "/api/v1/auth/logout", auth::logout)
        .add(M::GET, "/api/v1/auth/me", auth::me)
        .add(M::POST, "/api/v1/auth/password", auth::change_password)
        .add(M::GET, "/api/v1/users", users::list)
        .add(M::POST, "/api/v1/users", users::create)
        .add(M::GET, "/api/v1/users/{id}", users::show)
        .add(M::PATCH, "/api/v1/users/{id}", users::update)
        .add(M::GET, "/api/v1/keys", keys::list)
        .add(M::POST, "/api/v1/keys", keys::create)
        .add(M::DELETE, "/api/v1/keys/{id}", keys::revoke)
        .add(M::GET, "/api/v1/audit", audit::list)
        .add(M::GET, "/api/v1/search", search::get)
        .add(M::POST, "/api/v1/search", search::post)
        .add(M::POST, "/api/v1/ask", ask::ask)
        .add(
            M::POST,
            "/api/v1/projects/{project}/documents",
            documents::upload.layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .add(
            M::GET,
            "/api/v1/projects/{project}/documents",
            documents::list,
        )
        .add(M::GET, "/api/v1/documents/{id}", documents::show)
        .add(
            M::GET,
            "/api/v1/documents/{id}/versions",
            documents::versions,
        )
        .add(M::DELETE, "/api/v1/documents/{id}", documents::delete)
        .add(M::GET, "/api/v1/documents/{id}/pages/{n}", documents::page)
        .add(
            M::GET,
            "/api/v1/documents/{id}/original",
            documents::original,
        )
        .add(
            M::POST,
            "/api/v1/documents/{id}/reprocess",
            documents::reprocess,
        )
        .add(
            M::POST,
            "/api/v1/documents/{id}/summary",
            documents::summarize,
        )
        .add(M::GET, "/api/v1/documents/{id}/summary", documents::summary)
        .add(M::GET, "/api/v1/usage", usage::report)
        .add(M::GET, "/v1/models", openai::models)
        .add(M::POST, "/v1/chat/completions", openai::chat_completions)
        .add(M::POST, "/v1/embeddings", openai::embeddings)
        .add(M::GET, "/api/tags", ollama::tags)
        .add(M::GET, "/api/version", ollama::version)
        .add(M::POST, "/api/show", ollama::show)
        .add(M::POST, "/api/chat", ollama::chat)
        .add(M::POST, "/api/generate", ollama::generate)
        .add(M::POST, "/api/embed", ollama::embed)
        .add(M::GET, "/api/v1/sources", sources::list)
        .add(M::POST, "/api/v1/sources", sources::create)
        .add(M::GET, "/api/v1/sources/{name}", sources::show)
        .add(M::DELETE, "/api/v1/sources/{name}", sources::delete)
        .add(M::POST, "/api/v1/sources/{name}/crawl", sources::crawl_now)
        .add(M::GET, "/api/v1/schedules", schedules::list)
        .add(M::POST, "/api/v1/schedules", schedules::create)
        .add(M::GET, "/api/v1/schedules/{name}", schedules::show)
        .add(M::DELETE, "/api/v1/schedules/{name}", schedules::delete)
        .add(M::POST, "/api/v1/schedules/{name}/pause", schedules::pause)
        .add(
            M::POST,
            "/api/v1/schedules/{name}/resume",
            schedules::resume,
        )
        .add(M::POST, "/api/v1/schedules/{name}/run", schedules::run_now)
        .add(M::GET, "/api/v1/schedules/{name}/runs", schedules::runs)
        .add(M::GET, "/api/v1/jobs", jobs::list)
        .add(M::POST, "/api/v1/jobs", jobs::enqueue)
        .add(M::GET, "/api/v1/jobs/{id}", jobs::show)
        .add(M::POST, "/api/v1/jobs/{id}/retry", jobs::retry)
        .add(M::POST, "/api/v1/jobs/{id}/cancel", jobs::cancel)
        .add(M::GET, "/api/v1/projects", projects::list)
        .add(M::POST, "/api/v1/projects", projects::create)
        .add(M::GET, "/api/v1/projects/{project}", projects::show)
        .add(M::DELETE, "/api/v1/projects/{project}", projects::delete)
        .add(
            M::GET,
            "/api/v1/projects/{project}/members",
            projects::members,
        )
        .add(
            M::PUT,
            "/api/v1/projects/{project}/members/{user}",
            projects::put_member,
        )
        .add(
            M::DELETE,
            "/api/v1/projects/{project}/members/{user}",
            projects::remove_member,
        )
        .add(M::GET, "/api/v1/projects/{project}/notes", notes::list)
        .add(M::POST, "/api/v1/projects/{project}/notes", notes::create)
        .add(
            M::POST,
            "/api/v1/projects/{project}/notes:generate",
            notes::generate,
        )
        .add(
            M::GET,
            "/api/v1/projects/{project}/notes.bib",
            notes::bibtex,
        )
        .add(
            M::GET,
            "/api/v1/projects/{project}/notes/{note}",
            notes::show,
        )
        .add(
            M::PATCH,
            "/api/v1/projects/{project}/notes/{note}",
            notes::update,
        )
        .add(
            M::DELETE,
            "/api/v1/projects/{project}/notes/{note}",
            notes::delete,
        )
        .add(
            M::GET,
            "/api/v1/projects/{project}/notes/{note}/markdown",
            notes::markdown,
        )
}

pub fn routes() -> Router<AppState> {
    table().router
}

/// Every (method, route template) the router serves.
pub fn route_list() -> Vec<(Method, &'static str)> {
    table().list
}
