//! bunko-core: domain types, configuration, the one table of stable error codes, the ports
//! (capability traits) that adapters implement, and the services built on them (the job
//! worker, metrics). It must not depend on axum, sqlx, tantivy, HTTP clients or any adapter:
//! dependencies point inward, to here.

pub mod accounts;
pub mod answers;
pub mod auth;
pub mod cache;
pub mod chunk;
pub mod config;
pub mod cron;
pub mod documents;
pub mod error;
pub mod eval;
pub mod identity;
pub mod ids;
pub mod jobs;
pub mod limits;
pub mod llm;
pub mod maintenance;
pub mod metrics;
pub mod models;
pub mod ports;
pub mod projects;
pub mod rag;
pub mod schedule;
pub mod search;
pub mod secret;
pub mod sources;
pub mod summarize;
pub mod tasks;
pub mod text;
pub mod trace;

pub use error::{Code, Error, ErrorCode};
