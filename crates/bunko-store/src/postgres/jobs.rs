use super::{PgStore, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::ids::{new_id, now_ms};
use bunko_core::jobs::{
    Enqueued, Heartbeat, JobFailure, JobFilter, JobRecord, JobState, LeasedJob, NewJob,
};
use bunko_core::ports::{JobQueue, Page, PageRequest, StoreError, StoreResult};
use std::time::Duration;
use uuid::Uuid;

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, job: NewJob) -> StoreResult<Enqueued> {
        if job.max_attempts == 0 {
            return Err(StoreError::InvalidState(
                "max_attempts must be at least 1".into(),
            ));
        }
        let now = now_ms();
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, queue, kind, state, payload, idempotency_key, priority, attempts,
                               max_attempts, run_at, created_at, updated_at)
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, 0, $7, $8, $9, $9)
             ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&job.queue)
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(&job.idempotency_key)
        .bind(i64::from(job.priority))
        .bind(i64::from(job.max_attempts))
        .bind(job.run_at_ms.unwrap_or(now))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 1 {
            return Ok(Enqueued { id, created: true });
        }
        let existing: String =
            sqlx::query_scalar("SELECT id FROM jobs WHERE queue = $1 AND idempotency_key = $2")
                .bind(&job.queue)
                .bind(&job.idempotency_key)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(Enqueued {
            id: rows::parse_uuid(&existing)?,
            created: false,
        })
    }

    async fn lease(
        &self,
        queue: &str,
        worker: &str,
        ttl: Duration,
    ) -> StoreResult<Option<LeasedJob>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Expired leases whose worker died: out of attempts → dead; cancellation asked → cancelled.
        // Rows another worker is changing right now are left to it.
        sqlx::query(
            "UPDATE jobs SET
                state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'dead' END,
                last_error_code = CASE WHEN cancel_requested = 1 THEN last_error_code ELSE 'lease_expired' END,
                last_error = CASE WHEN cancel_requested = 1 THEN last_error
                    ELSE 'the worker running this job stopped heartbeating and no attempts are left' END,
                lease_owner = NULL, lease_expires_at = NULL, finished_at = $1, updated_at = $1
             WHERE id IN (
                SELECT id FROM jobs
                 WHERE queue = $2 AND state = 'running' AND lease_expires_at < $1
                   AND (attempts >= max_attempts OR cancel_requested = 1)
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .bind(queue)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // The due job is locked by whoever takes it; the others skip it and take the next. The
        // best due job and the best expired lease are each found through their index (an OR of
        // the two would scan every finished job), then the better of the two is taken.
        let row = sqlx::query(
            "WITH due AS (
                 SELECT id, priority, run_at FROM jobs
                  WHERE queue = $4 AND state = 'queued' AND run_at <= $3
                  ORDER BY priority DESC, run_at, id
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED),
             expired AS (
                 SELECT id, priority, run_at FROM jobs
                  WHERE queue = $4 AND state = 'running' AND lease_expires_at < $3
                  ORDER BY priority DESC, run_at, id
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET
                last_error_code = CASE WHEN state = 'running' THEN 'lease_expired' ELSE last_error_code END,
                last_error = CASE WHEN state = 'running'
                    THEN 'the previous worker stopped heartbeating; leased again' ELSE last_error END,
                state = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1,
                updated_at = $3
             WHERE id = (
                SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM expired) c
                 ORDER BY priority DESC, run_at, id
                 LIMIT 1)
             RETURNING id, queue, kind, payload, attempts, max_attempts",
        )
        .bind(worker)
        .bind(now + ttl_ms(ttl))
        .bind(now)
        .bind(queue)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        row.as_ref().map(rows::leased_job).transpose()
    }

    async fn heartbeat(&self, id: Uuid, worker: &str, ttl: Duration) -> StoreResult<Heartbeat> {
        let now = now_ms();
        let cancel: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $1, updated_at = $2
              WHERE id = $3 AND lease_owner = $4 AND state = 'running'
             RETURNING cancel_requested",
        )
        .bind(now + ttl_ms(ttl))
        .bind(now)
        .bind(id.to_string())
        .bind(worker)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(match cancel {
            None => Heartbeat::Lost,
            Some(0) => Heartbeat::Alive,
            Some(_) => Heartbeat::CancelRequested,
        })
    }

    async fn complete(
        &self,
        id: Uuid,
        worker: &str,
        result: Option<serde_json::Value>,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', result = $1, lease_owner = NULL, lease_expires_at = NULL,
                    finished_at = $2, updated_at = $2
              WHERE id = $3 AND lease_owner = $4 AND state = 'running'",
        )
        .bind(result.map(|v| v.to_string()))
        .bind(now)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn fail(
        &self,
        id: Uuid,
        worker: &str,
        f: &JobFailure,
        retry_at_ms: Option<i64>,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET state = $1, run_at = COALESCE($2, run_at), last_error_code = $3, last_error = $4,
                    lease_owner = NULL, lease_expires_at = NULL, finished_at = $5, updated_at = $6
              WHERE id = $7 AND lease_owner = $8 AND state = 'running'",
        )
        .bind(if retry_at_ms.is_some() { "queued" } else { "dead" })
        .bind(retry_at_ms)
        .bind(&f.code)
        .bind(&f.message)
        .bind(if retry_at_ms.is_some() { None } else { Some(now) })
        .bind(now)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn release(&self, id: Uuid, worker: &str) -> StoreResult<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), run_at = $1,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
              WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(now)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn mark_cancelled(&self, id: Uuid, worker: &str) -> StoreResult<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                    finished_at = $1, updated_at = $1
              WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(now)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn cancel(&self, id: Uuid) -> StoreResult<JobRecord> {
        self.transition(
            "UPDATE jobs SET
                cancel_requested = CASE WHEN state = 'running' THEN 1 ELSE cancel_requested END,
                finished_at = CASE WHEN state = 'queued' THEN $1 ELSE finished_at END,
                state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                updated_at = $1
              WHERE id = $2 AND state IN ('queued', 'running')
             RETURNING *",
            id,
            |st| format!("job {id} is {} and cannot be cancelled", st.as_str()),
        )
        .await
    }

    async fn retry(&self, id: Uuid) -> StoreResult<JobRecord> {
        self.transition(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $1, cancel_requested = 0,
                    finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
              WHERE id = $2 AND state IN ('dead', 'cancelled')
             RETURNING *",
            id,
            |st| {
                format!(
                    "job {id} is {}; only dead or cancelled jobs can be retried",
                    st.as_str()
                )
            },
        )
        .await
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<JobRecord>> {
        sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::job)
            .transpose()
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> StoreResult<Page<JobRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs
              WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR state = $2)
                AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR id < $4)
              ORDER BY id DESC LIMIT $5",
        )
        .bind(&filter.queue)
        .bind(filter.state.map(JobState::as_str))
        .bind(&filter.kind)
        .bind(page.before.map(|u| u.to_string()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows::to_page(&rows, page.limit, rows::job, |j| j.id)
    }

    async fn job_counts(&self) -> StoreResult<Vec<(String, JobState, i64)>> {
        sqlx::query("SELECT queue, state, count(*) AS n FROM jobs GROUP BY queue, state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(rows::job_count)
            .collect()
    }
}

impl PgStore {
    /// Runs a state change guarded by its WHERE clause (`$1` = now, `$2` = id). When no row
    /// matched, says whether the job is missing or in a state that forbids the change.
    async fn transition(
        &self,
        sql: &'static str,
        id: Uuid,
        refused: impl Fn(JobState) -> String,
    ) -> StoreResult<JobRecord> {
        let row = sqlx::query(sql)
            .bind(now_ms())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) => rows::job(&r),
            None => match self.get_job(id).await? {
                None => Err(StoreError::NotFound(format!("job {id}"))),
                Some(j) => Err(StoreError::InvalidState(refused(j.state))),
            },
        }
    }
}
