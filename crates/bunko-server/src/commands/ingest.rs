#![allow(clippy::print_stdout, clippy::print_stderr)] // CLI output and progress

//! `bunko ingest PATH… --project P [--recursive] [--wait] [--json]`: adds files (and, with
//! `--recursive`, the files under directories) to a project through the same pipeline as
//! uploads. With `--wait` it processes them here — or, when a server already owns this data
//! dir's index, lets that server's worker process them — and waits, showing progress, then
//! prints one line per document (or with `--json`, one JSON object per document).

use crate::app::Runtime;
use crate::cli::CliError;
use bunko_core::config::Config;
use bunko_core::documents::DocStatus;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct Args {
    pub paths: Vec<PathBuf>,
    pub project: String,
    pub recursive: bool,
    pub wait: bool,
    pub json: bool,
    pub password: Option<String>,
}

/// One input file's fate.
struct Row {
    path: String,
    document_id: Option<Uuid>,
    /// `queued`, `processing`, `ready`, `failed` or `duplicate`.
    status: String,
    code: Option<String>,
    message: Option<String>,
}

fn collect(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        let meta =
            std::fs::metadata(p).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
        if meta.is_dir() {
            if !recursive {
                return Err(CliError::usage(format!("{} is a directory", p.display()))
                    .hint("add --recursive to ingest the files under it"));
            }
            walk(p, &mut out).map_err(|e| CliError::failure(format!("{}: {e}", p.display())))?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Regular files under `dir`, sorted, skipping hidden entries.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

pub async fn run(config: Config, args: Args) -> Result<(), CliError> {
    let files = collect(&args.paths, args.recursive)?;
    if files.is_empty() {
        return Err(CliError::usage("no files to ingest"));
    }
    // Process here when this process can own the index; otherwise a running server does.
    let rt = Runtime::start(config.clone(), args.wait).await?;
    let local_worker = rt.state.owns_index;
    if args.wait && !local_worker {
        eprintln!("a running bunko owns this data dir's index: its worker processes the files");
    }
    let state = rt.state;
    let project = bunko_core::projects::get(state.store.as_ref(), &args.project)
        .await
        .map_err(|e| CliError::usage(e.detail).hint("list projects with `bunko project list`"))?;
    let mut rows = Vec::with_capacity(files.len());
    for f in &files {
        let path = f.display().to_string();
        let added = match state.ingest.stage_path(f).await {
            Ok(staged) => {
                state
                    .ingest
                    .add(project.id, staged, "upload", args.password.as_deref())
                    .await
            }
            Err(e) => Err(e),
        };
        rows.push(match added {
            Ok(a) => Row {
                path,
                document_id: Some(a.document.id),
                status: if a.duplicate && a.job_id.is_none() {
                    "duplicate".into()
                } else {
                    a.document.status.as_str().into()
                },
                code: None,
                message: None,
            },
            Err(e) => Row {
                path,
                document_id: None,
                status: "failed".into(),
                code: Some(e.code.as_str().into()),
                message: Some(e.detail),
            },
        });
    }
    if args.wait {
        wait(&state, &mut rows, local_worker).await?;
    }
    let failed = rows.iter().filter(|r| r.status == "failed").count();
    if args.json {
        for r in &rows {
            println!(
                "{}",
                serde_json::json!({
                    "path": r.path,
                    "document_id": r.document_id,
                    "status": r.status,
                    "code": r.code,
                })
            );
        }
    } else {
        let width = rows
            .iter()
            .map(|r| r.path.chars().count())
            .max()
            .unwrap_or(4)
            .min(60);
        for r in &rows {
            let reason = match (&r.code, &r.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.clone(),
                _ => String::new(),
            };
            println!("{:<width$}  {:<10}  {reason}", r.path, r.status);
        }
        let ready = rows.iter().filter(|r| r.status == "ready").count();
        let dup = rows.iter().filter(|r| r.status == "duplicate").count();
        let queued = rows.len() - ready - dup - failed;
        println!(
            "{} files: {ready} ready, {dup} duplicate, {failed} failed{}",
            rows.len(),
            if queued > 0 {
                format!(", {queued} queued (a running server or `bunko worker` processes them)")
            } else {
                String::new()
            }
        );
    }
    state.stop().await;
    if failed > 0 {
        return Err(CliError::failure(format!("{failed} file(s) failed")));
    }
    Ok(())
}

/// Polls the documents until each is ready or failed, with a progress line on a terminal.
async fn wait(
    state: &crate::app::AppState,
    rows: &mut [Row],
    local_worker: bool,
) -> Result<(), CliError> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_note = Instant::now();
    let mut hinted = false;
    loop {
        let mut pending = 0;
        let mut current = None;
        for r in rows.iter_mut() {
            let Some(id) = r.document_id else { continue };
            if matches!(r.status.as_str(), "ready" | "failed" | "duplicate") {
                continue;
            }
            let Some(d) = state
                .store
                .get_document(id)
                .await
                .map_err(|e| CliError::failure(e.to_string()))?
            else {
                r.status = "failed".into();
                r.code = Some("not_found".into());
                r.message = Some("the document was deleted meanwhile".into());
                continue;
            };
            match d.status {
                DocStatus::Ready => r.status = "ready".into(),
                DocStatus::Failed => {
                    r.status = "failed".into();
                    if let Some(e) = d.error {
                        r.code = Some(e.code);
                        r.message = Some(e.message);
                    }
                }
                s => {
                    pending += 1;
                    r.status = s.as_str().into();
                    if s == DocStatus::Processing {
                        current = Some(format!(
                            "{} {} {:.0}%",
                            r.path,
                            d.stage.unwrap_or_default(),
                            d.progress * 100.0
                        ));
                    }
                }
            }
        }
        let done = rows.len() - pending;
        if tty {
            eprint!(
                "\r\x1b[2K[{done}/{}] {}",
                rows.len(),
                current.as_deref().unwrap_or("")
            );
        } else if last_note.elapsed() > Duration::from_secs(10) && pending > 0 {
            eprintln!(
                "[{done}/{}] {}",
                rows.len(),
                current.as_deref().unwrap_or("waiting")
            );
            last_note = Instant::now();
        }
        if pending == 0 {
            break;
        }
        if !local_worker
            && !hinted
            && started.elapsed() > Duration::from_secs(10)
            && current.is_none()
            && done == 0
        {
            eprintln!("still queued: is a server or `bunko worker` running on this data dir?");
            hinted = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if tty {
        eprintln!();
    }
    Ok(())
}
