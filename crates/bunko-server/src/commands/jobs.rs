#![allow(clippy::print_stdout)] // CLI output

use crate::app::{open_store, prepare_data_dir};
use crate::cli::{CliError, JobsCmd};
use crate::routes::jobs_view;
use bunko_core::config::Config;
use bunko_core::ids::rfc3339;
use bunko_core::jobs::{self, JobFilter, JobRecord, JobState, Registry, SubmitOptions};
use bunko_core::ports::PageRequest;
use uuid::Uuid;

fn parse_id(id: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(id).map_err(|_| CliError::failure(format!("job `{id}` does not exist")))
}

fn print_json(j: JobRecord) {
    println!(
        "{}",
        serde_json::to_string(&jobs_view(j)).unwrap_or_default()
    );
}

pub async fn run(config: &Config, cmd: JobsCmd) -> Result<(), CliError> {
    prepare_data_dir(&config.data_dir)?;
    let store = open_store(config).await?;
    match cmd {
        JobsCmd::List {
            queue,
            state,
            kind,
            limit,
            json,
        } => {
            let state = state
                .map(|s| {
                    JobState::parse(&s).ok_or_else(|| {
                        CliError::usage(format!("unknown state `{s}`"))
                            .hint("queued, running, succeeded, dead or cancelled")
                    })
                })
                .transpose()?;
            let page = PageRequest::new(Some(limit), None)?;
            let res = store
                .list_jobs(&JobFilter { queue, state, kind }, page)
                .await?;
            if json {
                res.items.into_iter().for_each(print_json);
            } else {
                println!(
                    "{:<36}  {:<9}  {:<16}  {:<8}  {:>7}  {:<24}  LAST ERROR",
                    "ID", "STATE", "KIND", "QUEUE", "TRIES", "UPDATED"
                );
                for j in res.items {
                    println!(
                        "{:<36}  {:<9}  {:<16}  {:<8}  {:>3}/{:<3}  {:<24}  {}",
                        j.id,
                        j.state.as_str(),
                        j.kind,
                        j.queue,
                        j.attempts,
                        j.max_attempts,
                        rfc3339(j.updated_at_ms),
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        JobsCmd::Show { id, json } => {
            let job = store
                .get_job(parse_id(&id)?)
                .await?
                .ok_or_else(|| CliError::failure(format!("job `{id}` does not exist")))?;
            if json {
                print_json(job);
            } else {
                let v = serde_json::to_value(jobs_view(job)).unwrap_or_default();
                if let Some(obj) = v.as_object() {
                    for (k, v) in obj {
                        println!(
                            "{k:>18}: {}",
                            if let Some(s) = v.as_str() {
                                s.to_owned()
                            } else {
                                v.to_string()
                            }
                        );
                    }
                }
            }
        }
        JobsCmd::Retry { id } => {
            let j = store
                .retry(parse_id(&id)?)
                .await
                .map_err(bunko_core::Error::from)?;
            println!("job {} is queued again", j.id);
        }
        JobsCmd::Cancel { id } => {
            let j = store
                .cancel(parse_id(&id)?)
                .await
                .map_err(bunko_core::Error::from)?;
            if j.state == JobState::Cancelled {
                println!("job {} is cancelled", j.id);
            } else {
                println!("job {} is running; its worker has been asked to stop", j.id);
            }
        }
        JobsCmd::Enqueue {
            kind,
            payload,
            idempotency_key,
            max_attempts,
            json,
        } => {
            let payload: serde_json::Value = serde_json::from_str(&payload)
                .map_err(|e| CliError::usage(format!("--payload is not valid JSON: {e}")))?;
            let opts = SubmitOptions {
                idempotency_key,
                max_attempts,
                ..Default::default()
            };
            let e = jobs::submit(
                store.as_ref(),
                &Registry::builtin(),
                config.jobs.max_attempts,
                &kind,
                payload,
                opts,
            )
            .await?;
            if json {
                println!("{}", serde_json::json!({"id": e.id, "created": e.created}));
            } else if e.created {
                println!("enqueued job {}", e.id);
            } else {
                println!("job {} already exists for this idempotency key", e.id);
            }
        }
    }
    Ok(())
}
