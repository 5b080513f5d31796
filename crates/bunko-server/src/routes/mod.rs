//! Paths mapped to handlers — nothing else. Every route is behind the auth layer except the
//! ones in [`PUBLIC_ROUTES`].

mod audit;
mod auth;
mod docs;
mod health;
mod jobs;
mod keys;
mod projects;
mod users;

use crate::app::AppState;
use axum::Router;
use axum::routing::{delete, get, post, put};

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
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
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
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route("/api/v1/auth/password", post(auth::change_password))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/{id}", get(users::show).patch(users::update))
        .route("/api/v1/keys", get(keys::list).post(keys::create))
        .route("/api/v1/keys/{id}", delete(keys::revoke))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/jobs", get(jobs::list).post(jobs::enqueue))
        .route("/api/v1/jobs/{id}", get(jobs::show))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route(
            "/api/v1/projects",
            get(projects::list).post(projects::create),
        )
        .route("/api/v1/projects/{project}", get(projects::show))
        .route("/api/v1/projects/{project}/members", get(projects::members))
        .route(
            "/api/v1/projects/{project}/members/{user}",
            put(projects::put_member).delete(projects::remove_member),
        )
}
