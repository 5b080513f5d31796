use super::{PgStore, constraint_err, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::ids::now_ms;
use bunko_core::ports::{StoreError, StoreResult};
use bunko_core::schedule::{Schedule, ScheduleDef, ScheduleQueries, ScheduleRun};

#[async_trait]
impl ScheduleQueries for PgStore {
    async fn sync_config_schedules(&self, defs: &[ScheduleDef]) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Replicas starting together sync one after the other.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(super::LOCK_SYNC)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let existing: Vec<(String, String, String)> =
            sqlx::query_as("SELECT name, origin, definition FROM schedules")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        for def in defs {
            let text = serde_json::to_string(def).map_err(rows::backend)?;
            match existing.iter().find(|(n, _, _)| *n == def.name) {
                Some((_, origin, _)) if origin == "api" => {
                    return Err(StoreError::Conflict(format!(
                        "schedule `{}` exists (made over the API); rename one of them",
                        def.name
                    )));
                }
                Some((_, _, old)) if *old == text => {}
                Some(_) => {
                    // A changed definition: the next slot is computed afresh.
                    sqlx::query(
                        "UPDATE schedules SET definition = $1, next_run = NULL, updated_at = $2 WHERE name = $3",
                    )
                    .bind(&text)
                    .bind(now)
                    .bind(&def.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO schedules (name, definition, origin, created_at, updated_at) VALUES ($1, $2, 'config', $3, $4)",
                    )
                    .bind(&def.name)
                    .bind(&text)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
            }
        }
        for (name, origin, _) in &existing {
            if origin == "config" && !defs.iter().any(|d| d.name == *name) {
                sqlx::query("DELETE FROM schedules WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        let rows = sqlx::query(
            "SELECT name, definition, origin, paused, next_run, last_run, last_job_id, created_at, updated_at
             FROM schedules ORDER BY name",
        )
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::schedule).collect()
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let row = sqlx::query(
            "SELECT name, definition, origin, paused, next_run, last_run, last_job_id, created_at, updated_at
             FROM schedules WHERE name = $1",
        )
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::schedule).transpose()
    }

    async fn create_schedule(&self, def: &ScheduleDef) -> StoreResult<Schedule> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO schedules (name, definition, origin, created_at, updated_at) VALUES ($1, $2, 'api', $3, $4)",
        )
        .bind(&def.name)
        .bind(serde_json::to_string(def).map_err(rows::backend)?)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| constraint_err(e, || format!("schedule `{}` exists", def.name), "schedule"))?;
        self.get_schedule(&def.name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("schedule {}", def.name)))
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM schedules WHERE name = $1 AND origin = 'api'")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> StoreResult<Option<Schedule>> {
        // Resuming recomputes the next slot: slots passed while paused are not "missed".
        sqlx::query(
            "UPDATE schedules SET paused = $1, next_run = CASE WHEN $2 THEN next_run ELSE NULL END, updated_at = $3 WHERE name = $4",
        )
        .bind(i64::from(paused))
        .bind(paused)
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        self.get_schedule(name).await
    }

    async fn set_schedule_next_run(&self, name: &str, next_run_ms: Option<i64>) -> StoreResult<()> {
        sqlx::query("UPDATE schedules SET next_run = $1 WHERE name = $2")
            .bind(next_run_ms)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn record_schedule_run(
        &self,
        run: &ScheduleRun,
        next_run_ms: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO schedule_runs (schedule, slot, fired_at, kind, job_id, slots) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&run.schedule)
        .bind(run.slot_ms)
        .bind(run.fired_at_ms)
        .bind(run.kind.as_str())
        .bind(run.job_id.map(|j| j.to_string()))
        .bind(i64::from(run.slots))
        .execute(&mut *tx)
        .await
        .map_err(|e| constraint_err(e, || "schedule run".into(), "schedule"))?;
        sqlx::query(
            "UPDATE schedules SET next_run = $1, last_run = $2, last_job_id = COALESCE($3, last_job_id) WHERE name = $4",
        )
        .bind(next_run_ms)
        .bind(run.fired_at_ms)
        .bind(run.job_id.map(|j| j.to_string()))
        .bind(&run.schedule)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn schedule_runs(&self, name: &str, limit: u32) -> StoreResult<Vec<ScheduleRun>> {
        let rows = sqlx::query(
            "SELECT schedule, slot, fired_at, kind, job_id, slots FROM schedule_runs
             WHERE schedule = $1 ORDER BY fired_at DESC, id DESC LIMIT $2",
        )
        .bind(name)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::schedule_run).collect()
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}
