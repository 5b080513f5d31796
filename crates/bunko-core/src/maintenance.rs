//! Retention and cleanup in the store: finished jobs past their retention, expired refresh
//! tokens and the dead sessions they leave, and the set of blobs documents still refer to (for
//! removing orphan originals).

use crate::ports::StoreResult;
use std::collections::HashSet;

#[async_trait::async_trait]
pub trait MaintenanceQueries: Send + Sync {
    /// Deletes succeeded and cancelled jobs that finished before `before_ms`. Dead jobs stay:
    /// they wait for an operator.
    async fn purge_finished_jobs(&self, before_ms: i64) -> StoreResult<u64>;
    /// Deletes refresh tokens that expired before `now_ms`, then sessions left without any
    /// token that were revoked or started a day or more before `now_ms`. Returns (tokens,
    /// sessions) deleted.
    async fn purge_expired_sessions(&self, now_ms: i64) -> StoreResult<(u64, u64)>;
    /// The SHA-256 of every original a document refers to.
    async fn referenced_blobs(&self) -> StoreResult<HashSet<String>>;
    /// The database's own consistency check: "ok", or what is wrong.
    async fn integrity_check(&self) -> StoreResult<String>;
    /// Chunks of all documents (what a complete search index holds).
    async fn chunk_count(&self) -> StoreResult<u64>;
}
