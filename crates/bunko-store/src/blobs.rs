//! The local `BlobStore`: `<data_dir>/blobs/ab/cd/<sha256>`, files readable by the owner
//! only, written by rename from a staging directory on the same file system (a crash leaves
//! either the whole blob or none).

use async_trait::async_trait;
use bunko_core::documents::{BlobStore, is_sha256_hex};
use bunko_core::ports::{StoreError, StoreResult};
use std::path::{Path, PathBuf};

/// Every file under a blob root except the staging area: (path relative to `root` with `/`
/// separators, full path), sorted. A missing root is empty; any other I/O error is returned.
pub fn stored_files(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let p = e.path();
            if p == root.join("staging") {
                continue;
            }
            if e.file_type()?.is_dir() {
                dirs.push(p);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("staging"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path_of(&self, sha: &str) -> StoreResult<PathBuf> {
        if !is_sha256_hex(sha) {
            return Err(StoreError::InvalidState(format!(
                "`{sha}` is not a SHA-256"
            )));
        }
        Ok(self.root.join(&sha[..2]).join(&sha[2..4]).join(sha))
    }

    /// Staged files older than `max_age` (left by a crash mid-upload) are removed.
    pub fn sweep_staging(&self, max_age: std::time::Duration) -> usize {
        sweep_dir(&self.root.join("staging"), max_age)
    }
}

/// Removes the files directly in `dir` older than `max_age`; returns how many.
pub(crate) fn sweep_dir(dir: &Path, max_age: std::time::Duration) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if old && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("blob store: {e}"))
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put_staged(&self, sha256: &str, staged: &Path) -> StoreResult<()> {
        let dest = self.path_of(sha256)?;
        let staged = staged.to_path_buf();
        tokio::task::spawn_blocking(move || -> StoreResult<()> {
            if dest.exists() {
                let _ = std::fs::remove_file(&staged);
                return Ok(());
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
                std::fs::File::open(&staged)
                    .and_then(|f| f.sync_all())
                    .map_err(io)?;
            }
            std::fs::rename(&staged, &dest).map_err(io)?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn local_path(&self, sha256: &str) -> StoreResult<PathBuf> {
        let p = self.path_of(sha256)?;
        if tokio::fs::try_exists(&p).await.map_err(io)? {
            Ok(p)
        } else {
            Err(StoreError::NotFound(format!("blob {sha256}")))
        }
    }

    async fn exists(&self, sha256: &str) -> StoreResult<bool> {
        tokio::fs::try_exists(self.path_of(sha256)?)
            .await
            .map_err(io)
    }

    async fn delete(&self, sha256: &str) -> StoreResult<bool> {
        match tokio::fs::remove_file(self.path_of(sha256)?).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn put_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBlobs::open(dir.path()).unwrap();
        let sha = "a".repeat(64);
        let staged = b.staging_dir().join("x");
        std::fs::write(&staged, b"hello").unwrap();
        b.put_staged(&sha, &staged).await.unwrap();
        assert!(!staged.exists());
        let p = b.local_path(&sha).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // Putting the same hash again keeps the first copy and drops the staged one.
        std::fs::write(&staged, b"hello").unwrap();
        b.put_staged(&sha, &staged).await.unwrap();
        assert!(!staged.exists());
        assert!(b.delete(&sha).await.unwrap());
        assert!(!b.delete(&sha).await.unwrap());
        assert!(matches!(
            b.local_path(&sha).await,
            Err(StoreError::NotFound(_))
        ));
        // Not a hash: refused (no path tricks).
        assert!(b.local_path("../../etc/passwd").await.is_err());
    }
}
