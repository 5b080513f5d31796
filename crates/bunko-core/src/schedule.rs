//! The scheduler: a cron table (`[[schedules]]` in the configuration, plus schedules made over
//! the API) whose every firing is a job in the durable queue with its own history.
//!
//! Every process may run [`Scheduler::tick`]; only the holder of the `scheduler` lease row
//! fires, and each slot's job carries the idempotency key `schedule:NAME:SLOT`, so a slot is
//! enqueued once even when the lease changes hands mid-tick. Slots missed while no scheduler
//! ran (downtime) follow the schedule's [`Missed`] policy.

use crate::cron::Cron;
use crate::ids::now_ms;
use crate::jobs::NewJob;
use crate::ports::{MetaStore, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A slot later than this behind its time counts as missed (downtime), not merely late.
pub const MISSED_AFTER_MS: i64 = 120_000;

/// What happens to slots that passed while no scheduler ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Forget them; wait for the next slot.
    #[default]
    Skip,
    /// Run once now for all of them, then go on with the next slot.
    CatchUpOnce,
}

/// One schedule's definition (a `[[schedules]]` entry, or the body of `POST /api/v1/schedules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// Lowercase letters, digits, `-`, `_` and `.`; unique.
    pub name: String,
    /// Five-field cron expression or a macro (`@daily`).
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The job kind each firing enqueues (e.g. `audit.prune`).
    pub job: String,
    /// The queue; empty = the kind's usual queue (`default`).
    #[serde(default)]
    pub queue: String,
    /// The job's payload (the firing adds `schedule` and `slot`).
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub missed: Missed,
}

fn utc() -> String {
    "UTC".into()
}
fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}
fn yes() -> bool {
    true
}

impl ScheduleDef {
    /// The parsed expression, or why the definition is wrong.
    pub fn validate(&self) -> Result<Cron, String> {
        check_name(&self.name)?;
        if self.job.trim().is_empty() {
            return Err("job (the job kind to enqueue) must not be empty".into());
        }
        if !self.params.is_object() {
            return Err("params must be a table (a JSON object)".into());
        }
        Cron::parse(&self.cron, &self.timezone)
    }

    pub fn queue(&self) -> &str {
        if self.queue.is_empty() {
            "default"
        } else {
            &self.queue
        }
    }
}

/// A schedule's or source's name: 1-64 lowercase letters, digits, `-`, `_` or `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
    {
        return Err(format!(
            "name `{name}` must be 1-64 lowercase letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// Where a schedule came from: the configuration (replaced at each start) or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "config" => Some(Origin::Config),
            "api" => Some(Origin::Api),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    #[serde(flatten)]
    pub def: ScheduleDef,
    pub origin: Origin,
    /// Paused by an administrator (kept across restarts; `enabled` is the definition's).
    pub paused: bool,
    /// The next slot (Unix ms), once the scheduler has looked at it.
    pub next_run_ms: Option<i64>,
    pub last_run_ms: Option<i64>,
    pub last_job_id: Option<Uuid>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// How a firing came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// At its slot (or late by less than [`MISSED_AFTER_MS`]).
    OnTime,
    /// For slots missed during downtime (`missed = "catch_up_once"`).
    CatchUp,
    /// Missed slots passed over (`missed = "skip"`): recorded, nothing enqueued.
    Skipped,
    /// `run-now` by an administrator.
    Manual,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::OnTime => "on_time",
            RunKind::CatchUp => "catch_up",
            RunKind::Skipped => "skipped",
            RunKind::Manual => "manual",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            RunKind::OnTime,
            RunKind::CatchUp,
            RunKind::Skipped,
            RunKind::Manual,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One firing, in the schedule's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleRun {
    pub schedule: String,
    /// The slot fired for (Unix ms): the cron time, or the request time for `manual`.
    pub slot_ms: i64,
    pub fired_at_ms: i64,
    pub kind: RunKind,
    /// The job enqueued (none for `skipped`).
    pub job_id: Option<Uuid>,
    /// How many slots this firing stands for (catch-up and skip cover several).
    pub slots: u32,
}

#[async_trait::async_trait]
pub trait ScheduleQueries: Send + Sync {
    /// Makes the configuration's schedules those of origin `config`: new ones added, changed
    /// definitions replaced (pause state and history kept; the next slot recomputed), ones no
    /// longer configured removed. Fails with `Conflict` when a name is taken by an API
    /// schedule.
    async fn sync_config_schedules(&self, defs: &[ScheduleDef]) -> StoreResult<()>;
    /// By name.
    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>>;
    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>>;
    /// Fails with `Conflict` when the name is taken.
    async fn create_schedule(&self, def: &ScheduleDef) -> StoreResult<Schedule>;
    /// Deletes an API schedule with its history; `false` when none by that name.
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;
    async fn set_schedule_paused(&self, name: &str, paused: bool) -> StoreResult<Option<Schedule>>;
    /// Sets when the schedule fires next (`None`: to be computed).
    async fn set_schedule_next_run(&self, name: &str, next_run_ms: Option<i64>) -> StoreResult<()>;
    /// Records a firing and, for non-manual ones, the next slot.
    async fn record_schedule_run(
        &self,
        run: &ScheduleRun,
        next_run_ms: Option<i64>,
    ) -> StoreResult<()>;
    /// Newest first.
    async fn schedule_runs(&self, name: &str, limit: u32) -> StoreResult<Vec<ScheduleRun>>;
    /// Takes or renews the lease `name` for `holder` until now + `ttl_ms`: `true` when it is
    /// `holder`'s (it was free, expired, or already theirs).
    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool>;
}

/// The job a firing enqueues: the params, plus `schedule` and `slot` (RFC 3339).
pub fn firing_job(def: &ScheduleDef, slot_ms: i64, key: String) -> NewJob {
    let mut payload = def.params.clone();
    if let Some(o) = payload.as_object_mut() {
        o.insert("schedule".into(), serde_json::json!(def.name));
        o.insert(
            "slot".into(),
            serde_json::json!(
                jiff::Timestamp::from_millisecond(slot_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
        );
    }
    let mut job = NewJob::new(def.queue(), &def.job, payload);
    job.idempotency_key = Some(key);
    job
}

pub const LEASE: &str = "scheduler";

/// Fires due schedules for one process. Cheap when nothing is due: one lease write and one
/// read of the (small) schedule table.
pub struct Scheduler {
    pub holder: String,
    /// How long a lease lasts without renewal (another process takes over after it).
    pub lease_ttl_ms: i64,
}

/// What one tick did (for logs and tests).
#[derive(Debug, Default, PartialEq)]
pub struct Tick {
    pub leader: bool,
    pub fired: Vec<ScheduleRun>,
}

fn ts(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

impl Scheduler {
    pub fn new(lease_ttl_ms: i64) -> Self {
        Self {
            holder: format!("{}-{}", std::process::id(), crate::ids::new_id()),
            lease_ttl_ms,
        }
    }

    /// Fires what is due at `now_ms` if this process holds the lease.
    pub async fn tick(&self, store: &dyn MetaStore, now: i64) -> StoreResult<Tick> {
        if !store
            .try_lease(LEASE, &self.holder, self.lease_ttl_ms)
            .await?
        {
            return Ok(Tick::default());
        }
        let mut tick = Tick {
            leader: true,
            fired: Vec::new(),
        };
        for s in store.list_schedules().await? {
            if !s.def.enabled || s.paused {
                continue;
            }
            let cron = match s.def.validate() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(schedule = %s.def.name, error = %e, "schedule is invalid; not fired");
                    continue;
                }
            };
            let next_after = |t: i64| cron.next_after(ts(t)).map(|t| t.as_millisecond());
            let Some(due) = s.next_run_ms else {
                store
                    .set_schedule_next_run(&s.def.name, next_after(now))
                    .await?;
                continue;
            };
            if due > now {
                continue;
            }
            // Every slot from `due` up to now.
            let mut slots = 1u32;
            let mut last = due;
            while let Some(n) = next_after(last).filter(|n| *n <= now) {
                last = n;
                slots = slots.saturating_add(1);
                if slots >= 10_000 {
                    break;
                }
            }
            // The latest slot is current when it is less than MISSED_AFTER_MS old; the
            // others were missed (downtime).
            let current = now - last <= MISSED_AFTER_MS;
            let missed = slots - u32::from(current);
            let next = next_after(now);
            let mut runs = Vec::new();
            match (current, missed, s.def.missed) {
                (true, 0, _) => runs.push((RunKind::OnTime, 1, true)),
                (true, m, Missed::Skip) => {
                    runs.push((RunKind::Skipped, m, false));
                    runs.push((RunKind::OnTime, 1, true));
                }
                (true, m, Missed::CatchUpOnce) => runs.push((RunKind::CatchUp, m + 1, true)),
                (false, m, Missed::Skip) => runs.push((RunKind::Skipped, m, false)),
                (false, m, Missed::CatchUpOnce) => runs.push((RunKind::CatchUp, m, true)),
            }
            for (kind, slots, enqueue) in runs {
                let job_id = if enqueue {
                    let key = format!("schedule:{}:{last}", s.def.name);
                    Some(store.enqueue(firing_job(&s.def, last, key)).await?.id)
                } else {
                    None
                };
                let run = ScheduleRun {
                    schedule: s.def.name.clone(),
                    slot_ms: last,
                    fired_at_ms: now,
                    kind,
                    job_id,
                    slots,
                };
                store.record_schedule_run(&run, next).await?;
                tracing::info!(
                    schedule = %s.def.name,
                    kind = kind.as_str(),
                    slots,
                    job = job_id.map(|j| j.to_string()).unwrap_or_default(),
                    "schedule fired"
                );
                tick.fired.push(run);
            }
        }
        Ok(tick)
    }
}

/// Enqueues a schedule's job now, outside its slots (an administrator's `run-now`).
pub async fn run_now(store: &dyn MetaStore, name: &str) -> StoreResult<ScheduleRun> {
    let s = store
        .get_schedule(name)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("schedule {name}")))?;
    let now = now_ms();
    let job = store
        .enqueue(firing_job(
            &s.def,
            now,
            format!("schedule:{name}:manual:{}", crate::ids::new_id()),
        ))
        .await?;
    let run = ScheduleRun {
        schedule: name.to_owned(),
        slot_ms: now,
        fired_at_ms: now,
        kind: RunKind::Manual,
        job_id: Some(job.id),
        slots: 1,
    };
    store.record_schedule_run(&run, s.next_run_ms).await?;
    Ok(run)
}
