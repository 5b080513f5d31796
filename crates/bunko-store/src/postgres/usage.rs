use super::{PgStore, db_err};
use crate::rows;
use async_trait::async_trait;
use bunko_core::ports::{StoreResult, UsageGroup, UsageQueries, UsageRecord, UsageTotal};
use uuid::Uuid;

#[async_trait]
impl UsageQueries for PgStore {
    async fn append_usage(&self, batch: &[UsageRecord]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for r in batch {
            sqlx::query(
                "INSERT INTO usage_ledger (at, user_id, key_id, project_id, api, model, provider,
                    input_tokens, output_tokens, estimated, cost_usd, duration_ms, ttft_ms, outcome)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(r.at_ms)
            .bind(r.user_id.to_string())
            .bind(r.key_id.map(|k| k.to_string()))
            .bind(r.project_id.map(|p| p.to_string()))
            .bind(&r.api)
            .bind(&r.model)
            .bind(&r.provider)
            .bind(i64::try_from(r.input_tokens).unwrap_or(i64::MAX))
            .bind(i64::try_from(r.output_tokens).unwrap_or(i64::MAX))
            .bind(i64::from(r.estimated))
            .bind(r.cost_usd.max(0.0))
            .bind(r.duration_ms)
            .bind(r.ttft_ms)
            .bind(&r.outcome)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn usage_totals(
        &self,
        group: UsageGroup,
        from_ms: i64,
        to_ms: i64,
        user: Option<Uuid>,
    ) -> StoreResult<Vec<UsageTotal>> {
        // The column is chosen from a closed set, never from input.
        let col = match group {
            UsageGroup::User => "user_id",
            UsageGroup::Key => "COALESCE(key_id, '')",
            UsageGroup::Project => "COALESCE(project_id, '')",
            UsageGroup::Model => "model",
        };
        // The detailed ledger and its daily roll-up, summed alike; `$3` is the user or NULL.
        let sql = format!(
            "SELECT {col} AS g, COALESCE(sum(requests), 0)::BIGINT AS requests,
                    COALESCE(sum(input_tokens), 0)::BIGINT AS input,
                    COALESCE(sum(output_tokens), 0)::BIGINT AS output,
                    COALESCE(sum(cost_usd), 0.0)::DOUBLE PRECISION AS cost,
                    COALESCE(sum(errors), 0)::BIGINT AS errors
             FROM (SELECT user_id, key_id, project_id, model, 1 AS requests, input_tokens,
                          output_tokens, cost_usd,
                          CASE WHEN outcome = 'error' THEN 1 ELSE 0 END AS errors
                   FROM usage_ledger
                   WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR user_id = $3)
                   UNION ALL
                   SELECT user_id, NULLIF(key_id, ''), NULLIF(project_id, ''), model, requests,
                          input_tokens, output_tokens, cost_usd, errors
                   FROM usage_daily
                   WHERE at >= $1 AND at < $2 AND ($3::text IS NULL OR user_id = $3)) u
             GROUP BY g ORDER BY cost DESC, requests DESC"
        );
        // Audited: `col` is a literal chosen above.
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from_ms)
            .bind(to_ms)
            .bind(user.map(|u| u.to_string()));
        let rows = q.fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(rows::usage_total).collect()
    }

    async fn rollup_usage(&self, before_ms: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO usage_daily (at, user_id, key_id, project_id, model, requests,
                                      input_tokens, output_tokens, cost_usd, errors)
             SELECT (at / 86400000) * 86400000, user_id, COALESCE(key_id, ''),
                    COALESCE(project_id, ''), model, count(*), sum(input_tokens),
                    sum(output_tokens), sum(cost_usd),
                    count(*) FILTER (WHERE outcome = 'error')
             FROM usage_ledger WHERE at < $1
             GROUP BY 1, 2, 3, 4, 5
             ON CONFLICT (at, user_id, key_id, project_id, model) DO UPDATE SET
                 requests = usage_daily.requests + excluded.requests,
                 input_tokens = usage_daily.input_tokens + excluded.input_tokens,
                 output_tokens = usage_daily.output_tokens + excluded.output_tokens,
                 cost_usd = usage_daily.cost_usd + excluded.cost_usd,
                 errors = usage_daily.errors + excluded.errors",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let folded = sqlx::query("DELETE FROM usage_ledger WHERE at < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(folded)
    }
}
