//! bunko-server: the `bunko` binary — CLI, HTTP routes, auth middleware, metrics exposition,
//! logging and the wiring of adapters to ports. The only crate that knows axum and the
//! adapters at once.

pub mod app;
pub mod autosummary;
pub mod backup;
pub mod cli;
pub mod commands;
pub mod crawl;
pub mod embedder;
pub mod gateway;
pub mod http;
pub mod ingest;
pub mod maintenance;
pub mod pgindex;
pub mod quota;
pub mod routes;
pub mod sample;
pub mod scheduler;
pub mod selfcheck;
pub mod summary;
pub mod telemetry;
pub mod tls;
