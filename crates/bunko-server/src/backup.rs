//! Backups of a data dir: one tar archive holding an online, consistent snapshot of the
//! database (`VACUUM INTO` — readers and writers go on meanwhile), every original file (blobs
//! are content-addressed and never change, so a copy taken after the snapshot holds every blob
//! it names), and `MANIFEST.json` with each file's size and SHA-256. Next to it,
//! `ARCHIVE.sha256` covers the archive's every byte. The search index is not in the archive:
//! it is derived data, rebuilt from the database on restore (`bunko index rebuild`).
//!
//! Written as `.partial` files and renamed when complete, so a failure (a full disk) leaves
//! the earlier backups as they were and no half archive under a real name.

use bunko_core::config::Config;
use bunko_core::ports::MetaStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const KIND: &str = "backup.create";
pub const QUEUE: &str = "maintenance";
/// The settings key holding the last successful backup (for metrics).
pub const LAST_KEY: &str = "backup.last";
const MANIFEST: &str = "MANIFEST.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub bunko_version: String,
    pub schema_version: i64,
    pub created_at: String,
    pub files: Vec<FileEntry>,
    /// Always false: the index is rebuilt on restore.
    pub index_included: bool,
    pub index_rebuild: String,
}

/// What `create` made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Made {
    pub archive: PathBuf,
    pub bytes: u64,
    pub files: usize,
    pub seconds: f64,
    pub at_ms: i64,
    /// Older archives removed by the retention policy.
    pub pruned: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(String),
}

fn io(what: &str) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(format!("{what}: {e}"))
}

/// Where archives go.
pub fn dir(config: &Config) -> PathBuf {
    if config.backup.dir.as_os_str().is_empty() {
        config.data_dir.join("backups")
    } else {
        config.backup.dir.clone()
    }
}

fn hex(d: impl AsRef<[u8]>) -> String {
    hex::encode(d)
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what comes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Adds one file to the archive, hashing it on the way.
fn add_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    path: &Path,
) -> Result<FileEntry, BackupError> {
    let file = std::fs::File::open(path).map_err(io("reading a file to back up"))?;
    let len = file
        .metadata()
        .map_err(io("reading a file to back up"))?
        .len();
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    let mut reader = HashingReader {
        inner: file.take(len),
        hash: Sha256::new(),
        bytes: 0,
    };
    tar.append_data(&mut header, name, &mut reader)
        .map_err(io("writing the archive"))?;
    if reader.bytes != len {
        return Err(BackupError::Io(format!(
            "{} changed size while being backed up",
            path.display()
        )));
    }
    Ok(FileEntry {
        path: name.to_owned(),
        bytes: len,
        sha256: hex(reader.hash.finalize()),
    })
}

/// Every original under `blobs/` (not the staging area), by its name in the archive.
fn blob_files(blobs: &Path) -> Result<Vec<(String, PathBuf)>, BackupError> {
    Ok(bunko_store::blobs::stored_files(blobs)
        .map_err(io("listing the blobs"))?
        .into_iter()
        .map(|(rel, p)| (format!("blobs/{rel}"), p))
        .collect())
}

fn stamp(at: jiff::Timestamp) -> String {
    at.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Takes a backup of the running (or stopped) instance into [`dir`], then applies retention.
pub async fn create(config: &Config, store: &dyn MetaStore) -> Result<Made, BackupError> {
    let started = Instant::now();
    let at = jiff::Timestamp::now();
    let out_dir = dir(config);
    std::fs::create_dir_all(&out_dir).map_err(io("making the backup directory"))?;
    remove_partials(&out_dir);
    let name = format!("bunko-backup-{}.tar", stamp(at));
    let archive = out_dir.join(&name);
    let partial = out_dir.join(format!(".{name}.partial"));
    let scratch = tempfile::tempdir_in(&out_dir).map_err(io("making a scratch directory"))?;
    let db_copy = scratch.path().join("bunko.db");
    // The online snapshot: one read transaction; writers carry on (WAL).
    store
        .snapshot_into(&db_copy)
        .await
        .map_err(|e| BackupError::Io(format!("snapshot of the database: {e}")))?;
    let schema_version = schema_of(&db_copy).await?;
    let blobs = crate::ingest::blobs_dir(&config.data_dir);
    if let Some((bucket, _)) = config.blobs.s3_location() {
        tracing::warn!(
            bucket,
            "the originals are in S3, not in this archive: protect them with the bucket's versioning or replication"
        );
    }
    let result = tokio::task::spawn_blocking({
        let (partial, db_copy) = (partial.clone(), db_copy.clone());
        move || write_archive(&partial, &db_copy, &blobs, schema_version, at)
    })
    .await
    .map_err(|e| BackupError::Io(format!("backup thread: {e}")))?;
    let (bytes, files, digest) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let finish = || -> Result<(), BackupError> {
        let sum = out_dir.join(format!("{name}.sha256"));
        let sum_partial = out_dir.join(format!(".{name}.sha256.partial"));
        let mut f = std::fs::File::create(&sum_partial).map_err(io("writing the checksum"))?;
        writeln!(f, "{digest}  {name}").map_err(io("writing the checksum"))?;
        f.sync_all().map_err(io("writing the checksum"))?;
        std::fs::rename(&sum_partial, &sum).map_err(io("writing the checksum"))?;
        // The archive last: a real name means a complete archive with its checksum beside it.
        std::fs::rename(&partial, &archive).map_err(io("naming the archive"))
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(out_dir.join(format!(".{name}.sha256.partial")));
        return Err(e);
    }
    let pruned = prune(
        &out_dir,
        config.backup.keep_daily,
        config.backup.keep_weekly,
    )?;
    let made = Made {
        archive,
        bytes,
        files,
        seconds: started.elapsed().as_secs_f64(),
        at_ms: at.as_millisecond(),
        pruned,
    };
    if let Ok(text) = serde_json::to_string(&made) {
        let _ = store.put_setting(LAST_KEY, &text).await;
    }
    Ok(made)
}

async fn schema_of(db: &Path) -> Result<i64, BackupError> {
    bunko_store::sqlite::inspect(db)
        .await
        .map(|(v, _)| v)
        .map_err(|e| BackupError::Corrupt(format!("the database snapshot: {e}")))
}

/// The archive at `partial`: the database, the blobs, the manifest last. Returns (bytes,
/// files, SHA-256 of the whole archive).
fn write_archive(
    partial: &Path,
    db: &Path,
    blobs: &Path,
    schema_version: i64,
    at: jiff::Timestamp,
) -> Result<(u64, usize, String), BackupError> {
    let file = std::fs::File::create(partial).map_err(io("creating the archive"))?;
    let mut tar = tar::Builder::new(Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        bytes: 0,
    });
    let mut files = vec![add_file(&mut tar, "db/bunko.db", db)?];
    for (name, path) in blob_files(blobs)? {
        match add_file(&mut tar, &name, &path) {
            Ok(e) => files.push(e),
            // Deleted since the listing (its document was deleted): the snapshot may name it,
            // but a document deleted before the snapshot does not; either way nothing to copy.
            Err(BackupError::Io(m)) if !path.exists() => {
                tracing::debug!(blob = %name, reason = %m, "blob gone during backup");
            }
            Err(e) => return Err(e),
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        bunko_version: crate::app::VERSION.into(),
        schema_version,
        created_at: at.to_string(),
        files: files.clone(),
        index_included: false,
        index_rebuild: "bunko index rebuild (run by `bunko backup restore`)".into(),
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Io(format!("manifest: {e}")))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(0);
    tar.append_data(&mut header, MANIFEST, text.as_slice())
        .map_err(io("writing the archive"))?;
    let hashing = tar.into_inner().map_err(io("writing the archive"))?;
    let Hashing {
        inner, hash, bytes, ..
    } = hashing;
    let file = inner
        .into_inner()
        .map_err(|e| BackupError::Io(format!("writing the archive: {}", e.error())))?;
    file.sync_all().map_err(io("writing the archive"))?;
    Ok((bytes, files.len(), hex(hash.finalize())))
}

fn remove_partials(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') && n.ends_with(".partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// An archive in the backup directory.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Listed {
    pub archive: PathBuf,
    pub created_at: jiff::Timestamp,
    pub bytes: u64,
}

/// Archives in `dir`, newest first (by the time in their names).
pub fn list(dir: &Path) -> Result<Vec<Listed>, BackupError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("listing the backups")(e)),
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(ts) = n
            .strip_prefix("bunko-backup-")
            .and_then(|r| r.strip_suffix(".tar"))
        else {
            continue;
        };
        let Ok(dt) = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", ts) else {
            continue;
        };
        let Ok(at) = dt.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()) else {
            continue;
        };
        out.push(Listed {
            archive: e.path(),
            created_at: at,
            bytes: e.metadata().map(|m| m.len()).unwrap_or(0),
        });
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    Ok(out)
}

/// Keeps the newest archive of each of the last `daily` days that have one and of each of the
/// last `weekly` ISO weeks that have one (and always the newest); removes the rest.
pub fn prune(dir: &Path, daily: u32, weekly: u32) -> Result<Vec<PathBuf>, BackupError> {
    let all = list(dir)?;
    let mut keep = std::collections::HashSet::new();
    let mut days = Vec::new();
    let mut weeks = Vec::new();
    for (i, a) in all.iter().enumerate() {
        let d = a.created_at.to_zoned(jiff::tz::TimeZone::UTC).date();
        let w = d.iso_week_date();
        let week = (w.year(), w.week());
        if i == 0 {
            keep.insert(i);
        }
        if !days.contains(&d) && days.len() < daily as usize {
            days.push(d);
            keep.insert(i);
        }
        if !weeks.contains(&week) && weeks.len() < weekly as usize {
            weeks.push(week);
            keep.insert(i);
        }
    }
    let mut removed = Vec::new();
    for (i, a) in all.into_iter().enumerate() {
        if !keep.contains(&i) {
            std::fs::remove_file(&a.archive).map_err(io("removing an old backup"))?;
            let _ = std::fs::remove_file(sum_path(&a.archive));
            removed.push(a.archive);
        }
    }
    Ok(removed)
}

fn sum_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verified {
    pub archive: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub schema_version: i64,
    pub created_at: String,
}

/// Recomputes the archive's checksum and every file's, and opens the database copy
/// (`PRAGMA integrity_check`). With `extract_to`, the files are written there as they are read
/// (a restore).
pub async fn verify(archive: &Path, extract_to: Option<&Path>) -> Result<Verified, BackupError> {
    let archive = archive.to_path_buf();
    let scratch = tempfile::tempdir().map_err(io("making a scratch directory"))?;
    let target = extract_to.map_or_else(|| scratch.path().to_path_buf(), Path::to_path_buf);
    let (manifest, files, bytes) = tokio::task::spawn_blocking({
        let (archive, target) = (archive.clone(), target.clone());
        move || read_archive(&archive, &target)
    })
    .await
    .map_err(|e| BackupError::Io(format!("verify thread: {e}")))??;
    let (_, check) = bunko_store::sqlite::inspect(&target.join("bunko.db"))
        .await
        .map_err(|e| BackupError::Corrupt(format!("the database in the archive: {e}")))?;
    if check != "ok" {
        return Err(BackupError::Corrupt(format!(
            "the database in the archive fails its integrity check: {check}"
        )));
    }
    Ok(Verified {
        archive,
        files,
        bytes,
        schema_version: manifest.schema_version,
        created_at: manifest.created_at,
    })
}

/// Reads the whole archive: its checksum against the `.sha256` beside it, each file against
/// the manifest; files are written under `target` (`bunko.db`, `blobs/…`).
fn read_archive(archive: &Path, target: &Path) -> Result<(Manifest, usize, u64), BackupError> {
    let expected = std::fs::read_to_string(sum_path(archive))
        .map_err(|e| {
            BackupError::Corrupt(format!(
                "{}: its checksum file is missing or unreadable ({e})",
                archive.display()
            ))
        })?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let file = std::fs::File::open(archive).map_err(io("opening the archive"))?;
    let mut whole = HashingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut seen: Vec<FileEntry> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    {
        let mut tar = tar::Archive::new(&mut whole);
        let entries = tar
            .entries()
            .map_err(|e| BackupError::Corrupt(format!("not a readable archive: {e}")))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| BackupError::Corrupt(format!("a damaged archive entry: {e}")))?;
            let name = entry
                .path()
                .map_err(|e| BackupError::Corrupt(format!("a damaged entry name: {e}")))?
                .to_string_lossy()
                .into_owned();
            if name == MANIFEST {
                let mut text = Vec::new();
                entry
                    .read_to_end(&mut text)
                    .map_err(|e| BackupError::Corrupt(format!("reading the manifest: {e}")))?;
                manifest = Some(serde_json::from_slice(&text).map_err(|e| {
                    BackupError::Corrupt(format!("the manifest is not valid: {e}"))
                })?);
                continue;
            }
            // Only the two places an archive writes to, never outside the target.
            let rel = match name.as_str() {
                "db/bunko.db" => PathBuf::from("bunko.db"),
                n if n.starts_with("blobs/")
                    && !n.split('/').any(|c| c == ".." || c.is_empty()) =>
                {
                    PathBuf::from(n)
                }
                other => {
                    return Err(BackupError::Corrupt(format!(
                        "unexpected entry `{other}` in the archive"
                    )));
                }
            };
            let dest = target.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io("writing a restored file"))?;
            }
            let mut out = std::fs::File::create(&dest).map_err(io("writing a restored file"))?;
            let mut r = HashingReader {
                inner: &mut entry,
                hash: Sha256::new(),
                bytes: 0,
            };
            std::io::copy(&mut r, &mut out)
                .map_err(|e| BackupError::Corrupt(format!("reading `{name}`: {e}")))?;
            out.sync_all().map_err(io("writing a restored file"))?;
            seen.push(FileEntry {
                path: name,
                bytes: r.bytes,
                sha256: hex(r.hash.finalize()),
            });
        }
    }
    // Whatever follows the last entry counts too.
    std::io::copy(&mut whole, &mut std::io::sink()).map_err(io("reading the archive"))?;
    let digest = hex(whole.hash.finalize());
    if digest != expected {
        return Err(BackupError::Corrupt(format!(
            "{}: the archive's SHA-256 is {digest}, its checksum file says {expected}: the archive is damaged",
            archive.display()
        )));
    }
    let manifest =
        manifest.ok_or_else(|| BackupError::Corrupt("the archive has no manifest".into()))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Corrupt(format!(
            "archive format {} is not one this bunko reads ({FORMAT})",
            manifest.format
        )));
    }
    if seen != manifest.files {
        let bad: Vec<String> = manifest
            .files
            .iter()
            .filter(|f| !seen.contains(f))
            .map(|f| f.path.clone())
            .collect();
        return Err(BackupError::Corrupt(format!(
            "files do not match the manifest: {}",
            if bad.is_empty() {
                "extra files in the archive".into()
            } else {
                bad.join(", ")
            }
        )));
    }
    let n = seen.len();
    Ok((manifest, n, whole.bytes))
}

/// Restores `archive` into `config.data_dir`: refused when it holds a database or originals
/// unless `force`; verified completely before anything in the data dir is touched; then the
/// search index is rebuilt from the restored database.
pub async fn restore(
    config: &Config,
    archive: &Path,
    force: bool,
) -> Result<Verified, BackupError> {
    let data = &config.data_dir;
    let db = data.join("bunko.db");
    let blobs = crate::ingest::blobs_dir(data);
    let has_blobs = blob_files(&blobs).map(|f| !f.is_empty()).unwrap_or(false);
    if (db.exists() || has_blobs) && !force {
        return Err(BackupError::Refused(format!(
            "{} already holds a database or original files; restore into an empty data dir, or pass --force to replace them",
            data.display()
        )));
    }
    std::fs::create_dir_all(data).map_err(io("making the data dir"))?;
    // Verify and unpack into a scratch directory beside the data, then move into place.
    let scratch = tempfile::tempdir_in(data).map_err(io("making a scratch directory"))?;
    let verified = verify(archive, Some(scratch.path())).await?;
    for stale in ["bunko.db", "bunko.db-wal", "bunko.db-shm"] {
        let _ = std::fs::remove_file(data.join(stale));
    }
    if blobs.exists() {
        std::fs::remove_dir_all(&blobs).map_err(io("replacing the originals"))?;
    }
    let index = data.join("index");
    if index.exists() {
        std::fs::remove_dir_all(&index).map_err(io("removing the old index"))?;
    }
    std::fs::rename(scratch.path().join("bunko.db"), &db).map_err(io("placing the database"))?;
    if scratch.path().join("blobs").exists() {
        std::fs::rename(scratch.path().join("blobs"), &blobs)
            .map_err(io("placing the originals"))?;
    }
    Ok(verified)
}

/// `backup.create`: a scheduled (or enqueued) backup. A failure (disk full, unreadable file)
/// is retried; the earlier archives are untouched either way.
pub struct BackupJob {
    pub store: std::sync::Arc<dyn MetaStore>,
    pub config: Config,
}

#[async_trait::async_trait]
impl bunko_core::jobs::JobHandler for BackupJob {
    async fn run(
        &self,
        _ctx: bunko_core::jobs::JobContext,
    ) -> Result<Option<serde_json::Value>, bunko_core::jobs::JobFailure> {
        match create(&self.config, self.store.as_ref()).await {
            Ok(made) => {
                tracing::info!(
                    archive = %made.archive.display(),
                    bytes = made.bytes,
                    files = made.files,
                    seconds = made.seconds,
                    pruned = made.pruned.len(),
                    "backup written"
                );
                Ok(serde_json::to_value(&made).ok())
            }
            Err(e) => Err(bunko_core::jobs::JobFailure::retryable(
                bunko_core::Code::Unavailable,
                format!("backup failed: {e}"),
            )),
        }
    }
}

/// The last successful backup, as recorded by [`create`] (for metrics).
pub async fn last(store: &dyn MetaStore) -> Option<Made> {
    let text = store.get_setting(LAST_KEY).await.ok()??;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn retention_keeps_the_newest_per_day_and_per_week() {
        let dir = tempfile::tempdir().unwrap();
        // Two a day for 40 days, from 2026-01-01 (a Thursday).
        let start: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        for day in 0..40i64 {
            for hour in [1i64, 13] {
                let at = start
                    .checked_add(jiff::SignedDuration::from_hours(day * 24 + hour - 1))
                    .unwrap();
                let name = format!("bunko-backup-{}.tar", stamp(at));
                std::fs::write(dir.path().join(&name), b"x").unwrap();
                std::fs::write(dir.path().join(format!("{name}.sha256")), b"x").unwrap();
            }
        }
        std::fs::write(dir.path().join("notes.txt"), b"not a backup").unwrap();
        let removed = prune(dir.path(), 7, 4).unwrap();
        let kept = list(dir.path()).unwrap();
        let names: Vec<String> = kept.iter().map(|k| k.created_at.to_string()).collect();
        // The 7 newest days' evening archives (Feb 3 … Feb 9), and the newest of each of the
        // 4 newest ISO weeks: week 7 (Feb 9, Monday) and week 6 (Feb 8) are kept as days
        // already, week 5's is Feb 1 (Sunday), week 4's Jan 25.
        assert_eq!(
            names,
            [
                "2026-02-09T13:00:00Z",
                "2026-02-08T13:00:00Z",
                "2026-02-07T13:00:00Z",
                "2026-02-06T13:00:00Z",
                "2026-02-05T13:00:00Z",
                "2026-02-04T13:00:00Z",
                "2026-02-03T13:00:00Z",
                "2026-02-01T13:00:00Z",
                "2026-01-25T13:00:00Z",
            ]
        );
        assert_eq!(removed.len(), 80 - 9);
        // Checksums go with their archives; other files are left alone.
        assert!(dir.path().join("notes.txt").exists());
        let sums = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sha256"))
            .count();
        assert_eq!(sums, 9);
    }
}
