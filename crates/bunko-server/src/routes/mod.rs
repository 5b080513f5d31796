//! Paths mapped to handlers — nothing else. Every route is behind the auth layer except the
//! ones in [`PUBLIC_ROUTES`].

mod docs;
mod health;
mod jobs;
mod projects;

use crate::app::AppState;
use axum::Router;
use axum::routing::{get, post};

pub use docs::ApiDoc;

/// The API's view of a job (also printed by `bunko jobs … --json`).
pub fn jobs_view(j: bunko_core::jobs::JobRecord) -> jobs::JobView {
    j.into()
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
];

pub fn is_public(route: &str) -> bool {
    PUBLIC_ROUTES.contains(&route)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(docs::root))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(docs::openapi))
        .route("/docs", get(docs::page))
        .route("/docs/{asset}", get(docs::asset))
        .route("/api/v1/jobs", get(jobs::list).post(jobs::enqueue))
        .route("/api/v1/jobs/{id}", get(jobs::show))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route(
            "/api/v1/projects",
            get(projects::list).post(projects::create),
        )
        .route("/api/v1/projects/{project}", get(projects::show))
}
