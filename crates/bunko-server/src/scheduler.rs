//! The scheduler in a serving or worker process: the configuration's `[[schedules]]` checked
//! against the job kinds this build runs and written to the store (origin `config`), then a
//! tick every `scheduler.tick_secs` that fires what is due — in whichever process holds the
//! lease ([`bunko_core::schedule::Scheduler`]).

use crate::app::AppState;
use crate::cli::CliError;
use bunko_core::ids::now_ms;
use bunko_core::ports::StoreError;
use bunko_core::schedule::{ScheduleDef, Scheduler};
use std::time::Duration;

/// A definition ready to store: its job kind known to `registry`, its queue the kind's own
/// when none is given.
pub fn resolve(
    def: &ScheduleDef,
    registry: &bunko_core::jobs::Registry,
) -> Result<ScheduleDef, String> {
    def.validate()?;
    let Some(queue) = registry.queue_for(&def.job) else {
        let mut kinds: Vec<&str> = registry.kinds().collect();
        kinds.sort_unstable();
        return Err(format!(
            "job kind `{}` is not one this build runs ({})",
            def.job,
            kinds.join(", ")
        ));
    };
    let mut out = def.clone();
    if out.queue.is_empty() {
        out.queue = queue.to_owned();
    }
    Ok(out)
}

/// Syncs the configured schedules and, with `scheduler.enabled`, starts the tick loop.
pub async fn start(state: &AppState) -> Result<(), CliError> {
    let mut defs = Vec::new();
    for (i, def) in state.config.schedules.iter().enumerate() {
        defs.push(
            resolve(def, &state.registry)
                .map_err(|e| CliError::usage(format!("schedules[{i}] (`{}`): {e}", def.name)))?,
        );
    }
    state
        .store
        .sync_config_schedules(&defs)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => CliError::usage(m),
            e => CliError::failure(format!("storing the schedules: {e}")),
        })?;
    // Sources are checked at config load; here they become the store's `config` sources
    // (cursors and item memory kept for names that stay).
    state
        .store
        .sync_config_sources(&state.config.sources)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => CliError::usage(m),
            e => CliError::failure(format!("storing the sources: {e}")),
        })?;
    if !state.config.scheduler.enabled {
        tracing::info!("scheduler.enabled = false: this process fires no schedules");
        return Ok(());
    }
    let c = &state.config.scheduler;
    let scheduler = Scheduler::new(i64::try_from(c.lease_secs * 1000).unwrap_or(30_000));
    let every = Duration::from_secs(c.tick_secs);
    let (store, stop) = (state.store.clone(), state.tasks.shutdown_token());
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = scheduler.tick(store.as_ref(), now_ms()).await {
                        tracing::warn!(error = %e, "scheduler tick failed; trying again next tick");
                    }
                }
            }
        }
    });
    Ok(())
}
