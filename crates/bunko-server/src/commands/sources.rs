#![allow(clippy::print_stdout)] // CLI output

//! `bunko crawl SOURCE` (crawl one source now, in this process; the documents it adds are
//! processed by the worker of a running server, or by `bunko worker`) and `bunko sources list`.

use crate::app::{Runtime, open_store, prepare_data_dir};
use crate::cli::{CliError, SourcesCmd};
use bunko_core::config::Config;
use bunko_core::ids::rfc3339;

pub async fn crawl(config: Config, name: &str, json: bool) -> Result<(), CliError> {
    let rt = Runtime::start(config, false).await?;
    let state = &rt.state;
    state
        .store
        .sync_config_sources(&state.config.sources)
        .await
        .map_err(|e| CliError::failure(format!("storing the sources: {e}")))?;
    if state.store.get_source(name).await?.is_none() {
        return Err(CliError::usage(format!("source `{name}` does not exist"))
            .hint("`bunko sources list` shows them; define one under [[sources]] in the configuration"));
    }
    let result =
        crate::crawl::crawl(&state.ingest, name, None, &state.tasks.shutdown_token()).await;
    state.stop().await;
    let stats = result.map_err(|f| {
        CliError::failure(format!(
            "crawl of `{name}` stopped: {} ({})",
            f.message, f.code
        ))
        .hint(if f.retryable {
            "the source may be busy or unreachable; the next crawl resumes from the saved cursor"
        } else {
            "see `bunko sources list` and the source's definition"
        })
    })?;
    if json {
        println!("{}", serde_json::to_string(&stats).unwrap_or_default());
    } else {
        println!(
            "{name}: {} listed, {} added ({} new versions), {} unchanged, {} failed, {} deleted, {} requests{}",
            stats.seen,
            stats.added,
            stats.versions,
            stats.unchanged,
            stats.failed,
            stats.deleted,
            stats.requests,
            if stats.more {
                "; more remain for the next crawl"
            } else {
                ""
            }
        );
        if stats.added > 0 {
            println!(
                "the new documents are queued: a running server's worker (or `bunko worker`) processes them"
            );
        }
    }
    Ok(())
}

pub async fn run(config: &Config, cmd: SourcesCmd) -> Result<(), CliError> {
    prepare_data_dir(&config.data_dir)?;
    let store = open_store(config).await?;
    match cmd {
        SourcesCmd::List { json } => {
            let all = store.list_sources().await?;
            if json {
                for s in all {
                    println!(
                        "{}",
                        serde_json::to_string(&crate::routes::source_view(s)).unwrap_or_default()
                    );
                }
            } else {
                println!(
                    "{:<20}  {:<9}  {:<16}  {:<7}  {:<24}  LAST CRAWL",
                    "NAME", "KIND", "PROJECT", "STATE", "LAST RUN"
                );
                for s in all {
                    println!(
                        "{:<20}  {:<9}  {:<16}  {:<7}  {:<24}  {}",
                        s.def.name,
                        s.def.kind.as_str(),
                        s.def.project,
                        if s.def.enabled { "on" } else { "off" },
                        s.last_run_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
                        match (&s.last_status, &s.last_error) {
                            (_, Some(e)) => format!("failed: {e}"),
                            (Some(_), None) => format!(
                                "ok: {} added, {} unchanged, {} failed",
                                s.last_stats.added, s.last_stats.unchanged, s.last_stats.failed
                            ),
                            _ => "-".into(),
                        }
                    );
                }
            }
        }
    }
    store.close().await;
    Ok(())
}
