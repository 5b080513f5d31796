//! `maintenance.selfcheck` (hourly, and at start): the database's consistency check, the
//! keyword index against the database's chunk count, free disk space in the data dir, the
//! configured local models' files against their checksums, and the LLM providers' circuit
//! breakers. The report is kept in the database; `/readyz` shows it (a failed database check
//! or a nearly full disk makes the process not ready) and `/metrics` exports each check.

use crate::gateway::GatewayService;
use bunko_core::config::Config;
use bunko_core::ids::now_ms;
use bunko_core::jobs::{JobContext, JobFailure, JobHandler};
use bunko_core::ports::MetaStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const KIND: &str = "maintenance.selfcheck";
pub const QUEUE: &str = "maintenance";
pub const KEY: &str = "selfcheck.last";
/// The checks, in report order (the `check` label's values).
pub const CHECKS: [&str; 5] = ["database", "index", "disk", "models", "llm"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn value(self) -> i64 {
        match self {
            Status::Ok => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub at_ms: i64,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }
}

fn check(name: &str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// Free space: under 2 % (or 512 MiB) fails — writes will soon fail —, under 10 % warns.
pub fn disk_status(avail_kib: u64, total_kib: u64) -> (Status, String) {
    let share = if total_kib == 0 {
        0.0
    } else {
        avail_kib as f64 / total_kib as f64
    };
    let detail = format!(
        "{:.1} GiB free of {:.1} GiB ({:.0} %)",
        avail_kib as f64 / 1_048_576.0,
        total_kib as f64 / 1_048_576.0,
        share * 100.0
    );
    let status = if share < 0.02 || avail_kib < 512 * 1024 {
        Status::Fail
    } else if share < 0.10 {
        Status::Warn
    } else {
        Status::Ok
    };
    (status, detail)
}

/// (available, total) KiB of the file system holding `dir`, from POSIX `df -Pk`.
fn df(dir: &std::path::Path) -> Result<(u64, u64), String> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .map_err(|e| format!("df: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).ok_or("df printed nothing")?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    match (num(3), num(1)) {
        (Some(avail), Some(total)) => Ok((avail, total)),
        _ => Err(format!("df output not understood: {line}")),
    }
}

pub struct SelfCheck {
    pub store: Arc<dyn MetaStore>,
    pub keyword: Arc<bunko_index::keyword::KeywordIndex>,
    /// The index in PostgreSQL when configured (counted instead of `keyword`).
    pub pg_index: Option<Arc<crate::pgindex::PgIndex>>,
    pub gateway: Arc<GatewayService>,
    pub config: Config,
}

impl SelfCheck {
    pub async fn run_checks(&self) -> Report {
        let mut checks = Vec::new();
        checks.push(match self.store.integrity_check().await {
            Ok(r) if r == "ok" => check("database", Status::Ok, "integrity ok"),
            Ok(r) => check("database", Status::Fail, format!("integrity check: {r}")),
            Err(e) => check(
                "database",
                Status::Fail,
                format!("integrity check failed: {e}"),
            ),
        });
        checks.push(match self.store.chunk_count().await {
            Ok(n) => {
                let indexed = match &self.pg_index {
                    Some(pg) => pg.search.counts().await.map(|c| c.0).unwrap_or(0),
                    None => self.keyword.num_docs(),
                };
                if indexed == n {
                    check("index", Status::Ok, format!("{n} chunks in the database and the keyword index"))
                } else {
                    check(
                        "index",
                        Status::Warn,
                        format!(
                            "the keyword index holds {indexed} chunks, the database {n} (documents in processing lag; if it persists: `bunko index rebuild`)"
                        ),
                    )
                }
            }
            Err(e) => check("index", Status::Warn, format!("counting chunks failed: {e}")),
        });
        let dir = self.config.data_dir.clone();
        checks.push(match tokio::task::spawn_blocking(move || df(&dir)).await {
            Ok(Ok((avail, total))) => {
                let (s, d) = disk_status(avail, total);
                check("disk", s, d)
            }
            Ok(Err(e)) => check("disk", Status::Warn, e),
            Err(e) => check("disk", Status::Warn, e.to_string()),
        });
        let config = self.config.clone();
        checks.push(
            tokio::task::spawn_blocking(move || models_check(&config))
                .await
                .unwrap_or_else(|e| check("models", Status::Warn, e.to_string())),
        );
        let mut open = Vec::new();
        let mut providers = 0;
        for (name, slot) in self.gateway.router.slots() {
            providers += 1;
            let state = slot.breaker_state() as i64;
            if state != 0 {
                open.push(format!(
                    "{name} ({})",
                    if state == 1 { "open" } else { "half-open" }
                ));
            }
        }
        checks.push(if open.is_empty() {
            check(
                "llm",
                Status::Ok,
                format!("{providers} provider(s), breakers closed"),
            )
        } else {
            check(
                "llm",
                Status::Warn,
                format!("circuit breaker not closed: {}", open.join(", ")),
            )
        });
        Report {
            at_ms: now_ms(),
            checks,
        }
    }
}

/// The configured local models' files against the checksums bunko pulled them with.
fn models_check(config: &Config) -> Check {
    let dir = config.local.resolved_models_dir();
    let mut notes = Vec::new();
    let mut status = Status::Ok;
    for name in [&config.local.embedder, &config.local.generator] {
        if name == "none" {
            continue;
        }
        let Some(spec) = bunko_core::models::find(name) else {
            notes.push(format!("{name}: unknown model"));
            status = status.max(Status::Warn);
            continue;
        };
        if !spec.installed(&dir) {
            notes.push(format!(
                "{name}: not installed (`bunko models pull {name}`)"
            ));
            status = status.max(Status::Warn);
            continue;
        }
        let bad: Vec<&str> = spec
            .members
            .iter()
            .filter(|m| {
                crate::commands::models::sha256_file(&spec.dir(&dir).join(m.file))
                    .map_or(true, |h| h != m.sha256)
            })
            .map(|m| m.file)
            .collect();
        if bad.is_empty() {
            notes.push(format!("{name}: checksums ok"));
        } else {
            notes.push(format!(
                "{name}: checksum mismatch in {} (re-pull: `bunko models pull {name}`)",
                bad.join(", ")
            ));
            status = status.max(Status::Warn);
        }
    }
    if notes.is_empty() {
        notes.push("no local model configured".into());
    }
    check("models", status, notes.join("; "))
}

#[async_trait::async_trait]
impl JobHandler for SelfCheck {
    async fn run(&self, _ctx: JobContext) -> Result<Option<serde_json::Value>, JobFailure> {
        let report = self.run_checks().await;
        let text = serde_json::to_string(&report)
            .map_err(|e| JobFailure::permanent(bunko_core::Code::Internal, e.to_string()))?;
        self.store
            .put_setting(KEY, &text)
            .await
            .map_err(|e| JobFailure::retryable(bunko_core::Code::JobFailed, e.to_string()))?;
        for c in report.checks.iter().filter(|c| c.status != Status::Ok) {
            tracing::warn!(check = %c.name, status = ?c.status, detail = %c.detail, "self-check");
        }
        Ok(serde_json::to_value(&report).ok())
    }
}

/// The last report, if a self-check ran.
pub async fn last(store: &dyn MetaStore) -> Option<Report> {
    serde_json::from_str(&store.get_setting(KEY).await.ok()??).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_thresholds() {
        let gib = 1_048_576;
        assert_eq!(disk_status(50 * gib, 100 * gib).0, Status::Ok);
        assert_eq!(disk_status(8 * gib, 100 * gib).0, Status::Warn);
        assert_eq!(disk_status(gib, 100 * gib).0, Status::Fail);
        // A small disk with little left fails on the absolute floor.
        assert_eq!(disk_status(256 * 1024, 4 * 1024 * 1024).0, Status::Fail);
        assert!(disk_status(50 * gib, 100 * gib).1.contains("50 %"));
    }
}
