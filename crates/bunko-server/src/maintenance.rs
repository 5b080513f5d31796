//! `maintenance.cleanup` (daily, and on demand): succeeded and cancelled jobs past
//! `jobs.retention_days`, usage-ledger rows past `gateway.ledger_detail_days` rolled up by
//! day, expired refresh tokens and the sessions they leave, and
//! originals no document refers to any more (older than a day, so an upload between storing
//! its file and creating its document is never taken for an orphan).

use bunko_core::Code;
use bunko_core::documents::is_sha256_hex;
use bunko_core::ids::now_ms;
use bunko_core::jobs::{JobContext, JobFailure, JobHandler};
use bunko_core::ports::MetaStore;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const KIND: &str = "maintenance.cleanup";
pub const QUEUE: &str = "maintenance";

pub struct Cleanup {
    pub store: Arc<dyn MetaStore>,
    pub blobs_dir: PathBuf,
    /// The S3 bucket when originals live there (then `blobs_dir` holds none).
    pub s3: Option<Arc<bunko_store::s3::S3Blobs>>,
    pub job_retention_days: u32,
    pub ledger_detail_days: u32,
}

/// Removes original files under `dir` whose name (their SHA-256) is not in `keep` and that are
/// older than `min_age` (the staging area and files not named by a hash are never touched).
/// Returns (removed, bytes freed); a blob directory that cannot be listed is an error.
pub fn remove_orphans(
    dir: &std::path::Path,
    keep: &std::collections::HashSet<String>,
    min_age: Duration,
) -> std::io::Result<(u64, u64)> {
    let now = SystemTime::now();
    let (mut removed, mut freed) = (0, 0);
    for (_, p) in bunko_store::blobs::stored_files(dir)? {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !is_sha256_hex(&name) || keep.contains(&name) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= min_age);
        if old && std::fs::remove_file(&p).is_ok() {
            removed += 1;
            freed += meta.len();
        }
    }
    Ok((removed, freed))
}

/// [`remove_orphans`] for a bucket: objects not in `keep` last written before `older_than_ms`
/// (an object the listing gives no date for is kept).
async fn remove_remote_orphans(
    s3: &bunko_store::s3::S3Blobs,
    keep: &std::collections::HashSet<String>,
    older_than_ms: i64,
) -> Result<(u64, u64), bunko_core::ports::StoreError> {
    use bunko_core::documents::BlobStore;
    let mut removed = 0;
    for o in s3.list().await? {
        if keep.contains(&o.sha256) || o.modified_ms.is_none_or(|m| m >= older_than_ms) {
            continue;
        }
        if s3.delete(&o.sha256).await? {
            removed += 1;
        }
    }
    // S3 listings give sizes too, but freeing is S3's business: bytes are not counted.
    Ok((removed, 0))
}

#[async_trait::async_trait]
impl JobHandler for Cleanup {
    async fn run(&self, _ctx: JobContext) -> Result<Option<serde_json::Value>, JobFailure> {
        let fail = |e: bunko_core::ports::StoreError| {
            JobFailure::retryable(Code::JobFailed, e.to_string())
        };
        let now = now_ms();
        let cutoff = now - i64::from(self.job_retention_days) * 86_400_000;
        let jobs = self.store.purge_finished_jobs(cutoff).await.map_err(fail)?;
        let (tokens, sessions) = self.store.purge_expired_sessions(now).await.map_err(fail)?;
        // Whole UTC days only, so a day is either detailed or rolled up.
        let day = 86_400_000;
        let before = (now - i64::from(self.ledger_detail_days) * day) / day * day;
        let usage_rows = self.store.rollup_usage(before).await.map_err(fail)?;
        let keep = self.store.referenced_blobs().await.map_err(fail)?;
        let dir = self.blobs_dir.clone();
        let (blobs, freed) = if let Some(s3) = &self.s3 {
            remove_remote_orphans(s3, &keep, now - 86_400_000)
                .await
                .map_err(|e| {
                    JobFailure::retryable(Code::JobFailed, format!("the originals in S3: {e}"))
                })?
        } else {
            tokio::task::spawn_blocking(move || {
                remove_orphans(&dir, &keep, Duration::from_secs(86_400))
            })
            .await
            .map_err(|e| JobFailure::retryable(Code::JobFailed, e.to_string()))?
            .map_err(|e| {
                JobFailure::retryable(Code::JobFailed, format!("listing the originals: {e}"))
            })?
        };
        tracing::info!(
            jobs,
            tokens,
            sessions,
            usage_rows,
            blobs,
            freed_bytes = freed,
            "cleanup done"
        );
        Ok(Some(json!({
            "jobs_deleted": jobs,
            "refresh_tokens_deleted": tokens,
            "sessions_deleted": sessions,
            "usage_rows_rolled_up": usage_rows,
            "orphan_blobs_deleted": blobs,
            "bytes_freed": freed,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a bucket: only unreferenced objects written before the cut-off go.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn only_old_unreferenced_objects_leave_the_bucket() {
        use bunko_core::documents::BlobStore;
        use sha2::Digest;
        let Some(cfg) = bunko_store::testing::s3_config() else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let s3 = bunko_store::s3::S3Blobs::open(
            cfg,
            dir.path(),
            bunko_store::s3::http_client().unwrap(),
        )
        .await
        .unwrap();
        let mut shas = Vec::new();
        for body in ["kept", "orphan"] {
            let sha = hex::encode(sha2::Sha256::digest(body));
            let staged = s3.staging_dir().join(body);
            std::fs::write(&staged, body).unwrap();
            s3.put_staged(&sha, &staged).await.unwrap();
            shas.push(sha);
        }
        let keep: std::collections::HashSet<String> = [shas[0].clone()].into();
        // Nothing is old enough yet: nothing goes.
        let day_ago = now_ms() - 86_400_000;
        assert_eq!(
            remove_remote_orphans(&s3, &keep, day_ago).await.unwrap(),
            (0, 0)
        );
        assert!(s3.exists(&shas[1]).await.unwrap());
        // With the cut-off after both were written, the unreferenced one goes.
        let later = now_ms() + 60_000;
        assert_eq!(remove_remote_orphans(&s3, &keep, later).await.unwrap().0, 1);
        assert!(s3.exists(&shas[0]).await.unwrap());
        assert!(!s3.exists(&shas[1]).await.unwrap());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn only_old_unreferenced_originals_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let put = |sha: &str, days_old: u64| {
            let p = dir.path().join(&sha[..2]).join(&sha[2..4]);
            std::fs::create_dir_all(&p).unwrap();
            let f = std::fs::File::create(p.join(sha)).unwrap();
            std::io::Write::write_all(&mut &f, b"original").unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(days_old * 86_400 + 60))
                .unwrap();
            p.join(sha)
        };
        let sha = |c: char| c.to_string().repeat(64);
        let kept = put(&sha('a'), 10);
        let orphan = put(&sha('b'), 10);
        let young = put(&sha('c'), 0);
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        let staged = dir.path().join("staging").join(sha('d'));
        std::fs::write(&staged, b"upload in progress").unwrap();
        let other = dir.path().join("README");
        std::fs::write(&other, b"not a blob").unwrap();
        let keep = [sha('a')].into_iter().collect();
        let (n, bytes) = remove_orphans(dir.path(), &keep, Duration::from_secs(86_400)).unwrap();
        assert_eq!((n, bytes), (1, 8));
        assert!(!orphan.exists());
        for p in [kept, young, staged, other] {
            assert!(p.exists(), "{}", p.display());
        }
    }
}
