//! One module per CLI command group. This is CLI output code: it prints to stdout.

pub mod admin;
pub mod answers;
pub mod backup;
pub mod config;
pub mod eval;
pub mod eval_rag;
pub mod index;
pub mod ingest;
pub mod jobs;
pub mod models;
pub mod schedules;
pub mod serve;
pub mod sources;
