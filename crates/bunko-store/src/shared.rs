//! State replicas share through Redis: the rate limiter (GCRA), the login lock-out, the
//! gateway's answer cache and its quota counters — the `RateLimiter`, `LoginThrottle`, `Cache`
//! and `QuotaCounters` ports of bunko-core. A quota decision is one Lua script too: it reads
//! every subject's counters and counts the request only when no limit is reached. Each limiter and lock-out decision is one Lua script run atomically on the
//! server with the server's clock (`TIME`), so replicas with drifting clocks still share one
//! budget.
//!
//! When Redis does not answer within 300 ms, limits and lock-outs fall back to the in-process
//! adapters (each replica then enforces them on its own — never "no limit at all") and the
//! cache misses; for the next 5 s requests go straight to the fallback (no request waits on a
//! dead server), then Redis is tried again. A warning is logged at most once a minute. Every
//! key starts with the configured prefix.

use async_trait::async_trait;
use bunko_core::cache::Cache;
use bunko_core::limits::{
    Decision, InProcessLimiter, InProcessThrottle, LOCKOUT_BASE, LOCKOUT_FREE, LOCKOUT_MAX,
    LoginThrottle, Quota, QuotaAdmission, QuotaCounters, QuotaSubject, QuotaUsage, QuotaWindows,
    RateLimiter,
};
use bunko_core::ports::{StoreError, StoreResult};
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// GCRA with the server's clock in microseconds. ARGV: interval, tolerance (µs).
/// Returns {allowed, retry_after_us, reset_after_us}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if (not tat) or tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, new_tat - now}
";

/// One failed login. ARGV: free failures, base lock (ms), longest lock (ms), how long the
/// count is kept (ms). Returns the lock-out now in force (ms; 0 = none).
const FAILURE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local free = tonumber(ARGV[1])
local lock = 0
if n > free then
  local exp = math.min(n - free - 1, 20)
  lock = math.min(tonumber(ARGV[2]) * (2 ^ exp), tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'until', string.format('%.0f', now + lock))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return lock
";

/// The lock-out left on a key (ms; 0 = none).
const LOCKED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local u = tonumber(redis.call('HGET', KEYS[1], 'until'))
if u and u > now then return u - now end
return 0
";

/// A quota decision. KEYS: the day's "seeded" marker, then per subject its minute hash
/// (`r` requests, `t` tokens), day tokens and month cost. ARGV: the minute hash's expiry (ms),
/// then per subject four limits (-1 = none). Returns {-1} when the day is not seeded, else
/// {1 admitted | 0 refused, then per subject its four counters as stored}.
const QUOTA_ADMIT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local n = (#KEYS - 1) / 3
local out = {1}
for i = 0, n - 1 do
  local m = KEYS[2 + i * 3]
  local used = {
    redis.call('HGET', m, 'r') or '0',
    redis.call('HGET', m, 't') or '0',
    redis.call('GET', KEYS[3 + i * 3]) or '0',
    redis.call('GET', KEYS[4 + i * 3]) or '0',
  }
  for k = 1, 4 do
    local limit = tonumber(ARGV[1 + i * 4 + k])
    if limit >= 0 and tonumber(used[k]) >= limit then out[1] = 0 end
    table.insert(out, used[k])
  end
end
if out[1] == 1 then
  for i = 0, n - 1 do
    redis.call('HINCRBY', KEYS[2 + i * 3], 'r', 1)
    redis.call('PEXPIRE', KEYS[2 + i * 3], ARGV[1])
  end
end
return out
";

/// A finished call. KEYS: per subject its minute hash, day tokens, month cost. ARGV: tokens,
/// cost (USD), and the three keys' expiries (ms).
const QUOTA_CHARGE: &str = r"
for i = 0, #KEYS / 3 - 1 do
  local m, d, c = KEYS[1 + i * 3], KEYS[2 + i * 3], KEYS[3 + i * 3]
  redis.call('HINCRBY', m, 't', ARGV[1])
  redis.call('PEXPIRE', m, ARGV[3])
  redis.call('INCRBY', d, ARGV[1])
  redis.call('PEXPIRE', d, ARGV[4])
  if tonumber(ARGV[2]) > 0 then
    redis.call('INCRBYFLOAT', c, ARGV[2])
    redis.call('PEXPIRE', c, ARGV[5])
  end
end
return 1
";

/// Seeding from the ledger. KEYS: the day's marker, then per subject day tokens and month
/// cost. ARGV: the marker's, day's and month's expiries (ms), then per subject tokens and
/// cost. A counter is only ever raised.
const QUOTA_SEED: &str = r"
for i = 0, (#KEYS - 1) / 2 - 1 do
  local d, c = KEYS[2 + i * 2], KEYS[3 + i * 2]
  local tokens, cost = ARGV[4 + i * 2], ARGV[5 + i * 2]
  if tonumber(tokens) > tonumber(redis.call('GET', d) or '0') then
    redis.call('SET', d, tokens, 'PX', ARGV[2])
  end
  if tonumber(cost) > tonumber(redis.call('GET', c) or '0') then
    redis.call('SET', c, cost, 'PX', ARGV[3])
  end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
";

pub struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    gcra: redis::Script,
    failure: redis::Script,
    locked: redis::Script,
    quota_admit: redis::Script,
    quota_charge: redis::Script,
    quota_seed: redis::Script,
    limiter: InProcessLimiter,
    throttle: InProcessThrottle,
    free: u32,
    base: Duration,
    max: Duration,
    /// When the last "Redis is not answering" warning was logged (ms since the epoch).
    warned_at: AtomicI64,
    /// Until when Redis is not tried (ms since the epoch), after a failure.
    down_until: AtomicI64,
}

/// How long one call may wait for Redis before the fallback answers.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);
/// How long Redis is left alone after a failed call.
const BACK_OFF_MS: i64 = 5_000;

impl RedisState {
    /// Connects (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS) and checks
    /// that the server answers, so a wrong URL or password stops bunko at start.
    pub async fn connect(url: &str, prefix: &str) -> StoreResult<Self> {
        Self::connect_with_ca(url, prefix, None).await
    }

    /// [`connect`](Self::connect), trusting `ca_pem` (PEM certificates) instead of the
    /// system's roots for `rediss://`.
    pub async fn connect_with_ca(
        url: &str,
        prefix: &str,
        ca_pem: Option<Vec<u8>>,
    ) -> StoreResult<Self> {
        let url_err = |e: redis::RedisError| StoreError::InvalidState(format!("redis URL: {e}"));
        let client = if url.starts_with("rediss://") {
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: ca_pem,
                },
            )
            .map_err(url_err)?
        } else {
            redis::Client::open(url).map_err(url_err)?
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        if pong != "PONG" {
            return Err(StoreError::Unavailable(format!(
                "redis answered PING with {pong}"
            )));
        }
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            gcra: redis::Script::new(GCRA),
            failure: redis::Script::new(FAILURE),
            locked: redis::Script::new(LOCKED),
            quota_admit: redis::Script::new(QUOTA_ADMIT),
            quota_charge: redis::Script::new(QUOTA_CHARGE),
            quota_seed: redis::Script::new(QUOTA_SEED),
            limiter: InProcessLimiter::default(),
            throttle: InProcessThrottle::default(),
            free: LOCKOUT_FREE,
            base: LOCKOUT_BASE,
            max: LOCKOUT_MAX,
            warned_at: AtomicI64::new(0),
            down_until: AtomicI64::new(0),
        })
    }

    /// Lock-out parameters (as [`InProcessThrottle::new`]); the fallback uses the same.
    pub fn with_lockout(mut self, free: u32, base: Duration, max: Duration) -> Self {
        self.free = free;
        self.base = base;
        self.max = max;
        self.throttle = InProcessThrottle::new(free, base, max);
        self
    }

    fn key(&self, kind: &str, k: &str) -> String {
        format!("{}{kind}:{k}", self.prefix)
    }

    /// Runs one call unless Redis is backed off from, bounded by [`CALL_TIMEOUT`].
    async fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        if bunko_core::ids::now_ms() < self.down_until.load(Ordering::Relaxed) {
            return None;
        }
        let why = match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", CALL_TIMEOUT.as_millis()),
        };
        self.down_until
            .store(bunko_core::ids::now_ms() + BACK_OFF_MS, Ordering::Relaxed);
        self.degraded(what, &why);
        None
    }

    fn degraded(&self, what: &str, e: &str) {
        let now = bunko_core::ids::now_ms();
        let last = self.warned_at.load(Ordering::Relaxed);
        if now - last > 60_000
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, what, "redis is not answering: limits, lock-outs and quotas are enforced per process, the answer cache misses");
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)
}

#[async_trait]
impl RateLimiter for RedisState {
    async fn check(&self, key: &str, quota: Quota) -> Decision {
        let interval = Duration::from_secs_f64(1.0 / quota.per_second.max(1e-9));
        let burst = quota.burst.max(1);
        let tolerance = interval * (burst - 1);
        let mut conn = self.conn.clone();
        let mut inv = self.gcra.key(self.key("rl", key));
        inv.arg(micros(interval)).arg(micros(tolerance));
        let r: Option<(i64, i64, i64)> = self.call("rate limit", inv.invoke_async(&mut conn)).await;
        match r {
            Some((allowed, retry_us, reset_us)) => {
                let reset = Duration::from_micros(reset_us.max(0) as u64);
                let used = (reset.as_secs_f64() / interval.as_secs_f64()).ceil();
                Decision {
                    allowed: allowed == 1,
                    limit: burst,
                    remaining: if allowed == 1 {
                        (f64::from(burst) - used).max(0.0) as u32
                    } else {
                        0
                    },
                    reset_after: reset,
                    retry_after: Duration::from_micros(retry_us.max(0) as u64),
                }
            }
            None => self.limiter.check(key, quota).await,
        }
    }
}

#[async_trait]
impl LoginThrottle for RedisState {
    async fn check(&self, key: &str) -> Result<(), Duration> {
        let mut conn = self.conn.clone();
        let inv = self.locked.key(self.key("lockout", key));
        let r: Option<i64> = self
            .call("login lock-out", inv.invoke_async(&mut conn))
            .await;
        match r {
            Some(0) => Ok(()),
            Some(ms) => Err(Duration::from_millis(ms.max(0) as u64)),
            None => self.throttle.check_now(key),
        }
    }

    async fn failure(&self, key: &str) -> Option<Duration> {
        let mut conn = self.conn.clone();
        let keep = self.max.max(Duration::from_secs(86_400));
        let mut inv = self.failure.key(self.key("lockout", key));
        inv.arg(self.free)
            .arg(i64::try_from(self.base.as_millis()).unwrap_or(i64::MAX))
            .arg(i64::try_from(self.max.as_millis()).unwrap_or(i64::MAX))
            .arg(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let r: Option<i64> = self
            .call("login lock-out", inv.invoke_async(&mut conn))
            .await;
        match r {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms.max(0) as u64)),
            None => self.throttle.failure_now(key),
        }
    }

    async fn success(&self, key: &str) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key("lockout", key));
        let _: Option<i64> = self
            .call("login lock-out", cmd.query_async(&mut conn))
            .await;
        self.throttle.success_now(key);
    }
}

#[async_trait]
impl Cache for RedisState {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("cache", key));
        self.call(
            "answer cache",
            cmd.query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await
        .flatten()
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("cache", key))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let _: Option<()> = self.call("answer cache", cmd.query_async(&mut conn)).await;
    }
}

/// Keys of one quota subject's minute, day and month counters.
fn quota_keys(prefix: &str, subject: &str, w: QuotaWindows) -> [String; 3] {
    [
        format!("{prefix}quota:{subject}:m{}", w.minute),
        format!("{prefix}quota:{subject}:d{}", w.day),
        format!("{prefix}quota:{subject}:M{}", w.month),
    ]
}

/// Expiries (ms) of the minute, day and month counters: an hour past the window's end.
fn quota_ttls(w: QuotaWindows) -> [i64; 3] {
    const SLACK: i64 = 3_600_000;
    [
        120_000,
        (w.day_end_ms - w.now_ms).max(0) + SLACK,
        (w.month_end_ms - w.now_ms).max(0) + SLACK,
    ]
}

#[async_trait]
impl QuotaCounters for RedisState {
    async fn admit(&self, subjects: &[QuotaSubject], w: QuotaWindows) -> Option<QuotaAdmission> {
        let mut conn = self.conn.clone();
        let mut inv = self.quota_admit.prepare_invoke();
        inv.key(format!("{}quota:seeded:{}", self.prefix, w.day));
        for s in subjects {
            for k in quota_keys(&self.prefix, &s.id, w) {
                inv.key(k);
            }
        }
        inv.arg(quota_ttls(w)[0]);
        for s in subjects {
            for l in s.limits {
                inv.arg(l.map_or_else(|| "-1".to_owned(), |v| v.to_string()));
            }
        }
        let r: Vec<redis::Value> = self.call("quotas", inv.invoke_async(&mut conn)).await?;
        let number = |v: &redis::Value| -> f64 {
            match v {
                redis::Value::Int(i) => *i as f64,
                redis::Value::BulkString(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0),
                _ => 0.0,
            }
        };
        let flag = r.first().map(number)?;
        if flag < 0.0 {
            return Some(QuotaAdmission::Unseeded);
        }
        let used = r[1..]
            .chunks_exact(4)
            .map(|c| QuotaUsage {
                requests: number(&c[0]) as u64,
                minute_tokens: number(&c[1]) as u64,
                day_tokens: number(&c[2]) as u64,
                month_cost: number(&c[3]),
            })
            .collect();
        Some(if flag > 0.0 {
            QuotaAdmission::Admitted(used)
        } else {
            QuotaAdmission::Refused(used)
        })
    }

    async fn charge(&self, subjects: &[String], w: QuotaWindows, tokens: u64, cost: f64) {
        if subjects.is_empty() {
            return;
        }
        let mut conn = self.conn.clone();
        let mut inv = self.quota_charge.prepare_invoke();
        for s in subjects {
            for k in quota_keys(&self.prefix, s, w) {
                inv.key(k);
            }
        }
        inv.arg(tokens).arg(cost.max(0.0).to_string());
        for t in quota_ttls(w) {
            inv.arg(t);
        }
        let _: Option<i64> = self.call("quotas", inv.invoke_async(&mut conn)).await;
    }

    async fn seed(&self, w: QuotaWindows, usage: &[(String, u64, f64)]) {
        let mut conn = self.conn.clone();
        let mut inv = self.quota_seed.prepare_invoke();
        inv.key(format!("{}quota:seeded:{}", self.prefix, w.day));
        let [_, day_ttl, month_ttl] = quota_ttls(w);
        inv.arg(day_ttl).arg(day_ttl).arg(month_ttl);
        for (subject, tokens, cost) in usage {
            let [_, d, m] = quota_keys(&self.prefix, subject, w);
            inv.key(d).key(m);
            inv.arg(*tokens).arg(cost.max(0.0).to_string());
        }
        let _: Option<i64> = self.call("quotas", inv.invoke_async(&mut conn)).await;
    }
}
