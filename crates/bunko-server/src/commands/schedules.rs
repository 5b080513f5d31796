#![allow(clippy::print_stdout)] // CLI output

use crate::app::{open_store, prepare_data_dir};
use crate::cli::{CliError, SchedulesCmd};
use bunko_core::config::Config;
use bunko_core::ids::rfc3339;
use bunko_core::ports::StoreError;

/// `bunko schedules …` on the data dir's store (the schedules the server last synced from the
/// configuration, and those made over the API).
pub async fn run(config: &Config, cmd: SchedulesCmd) -> Result<(), CliError> {
    prepare_data_dir(&config.data_dir)?;
    let store = open_store(config).await?;
    let missing = |name: &str| {
        CliError::failure(format!("schedule `{name}` does not exist"))
            .hint("`bunko schedules list` shows them; configured ones appear after the server started with them")
    };
    match cmd {
        SchedulesCmd::List { json } => {
            let all = store.list_schedules().await?;
            if json {
                for s in all {
                    let last = store.schedule_runs(&s.def.name, 1).await?;
                    let mut v =
                        serde_json::to_value(crate::routes::schedule_view(s)).unwrap_or_default();
                    v["last_kind"] = serde_json::json!(last.first().map(|r| r.kind.as_str()));
                    println!("{v}");
                }
            } else {
                println!(
                    "{:<20}  {:<16}  {:<12}  {:<16}  {:<7}  {:<24}  LAST RUN",
                    "NAME", "CRON", "TIME ZONE", "JOB", "STATE", "NEXT RUN"
                );
                for s in all {
                    let state = if !s.def.enabled {
                        "off"
                    } else if s.paused {
                        "paused"
                    } else {
                        "on"
                    };
                    println!(
                        "{:<20}  {:<16}  {:<12}  {:<16}  {:<7}  {:<24}  {}",
                        s.def.name,
                        s.def.cron,
                        s.def.timezone,
                        s.def.job,
                        state,
                        s.next_run_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
                        s.last_run_ms.map(rfc3339).unwrap_or_else(|| "-".into()),
                    );
                }
            }
        }
        SchedulesCmd::RunNow { name } => {
            let run = bunko_core::schedule::run_now(store.as_ref(), &name)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(_) => missing(&name),
                    e => e.into(),
                })?;
            println!(
                "enqueued job {} for schedule `{name}` (a running server or `bunko worker` runs it)",
                run.job_id.map(|j| j.to_string()).unwrap_or_default()
            );
        }
        SchedulesCmd::Pause { name } => {
            store
                .set_schedule_paused(&name, true)
                .await?
                .ok_or_else(|| missing(&name))?;
            println!("schedule `{name}` paused");
        }
        SchedulesCmd::Resume { name } => {
            store
                .set_schedule_paused(&name, false)
                .await?
                .ok_or_else(|| missing(&name))?;
            println!("schedule `{name}` resumed: it fires at its next slot");
        }
    }
    store.close().await;
    Ok(())
}
