//! State replicas share through Redis: the rate limiter (GCRA), the login lock-out and the
//! gateway's answer cache — the `RateLimiter`, `LoginThrottle` and `Cache` ports of
//! bunko-core. Each limiter and lock-out decision is one Lua script run atomically on the
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
    LoginThrottle, Quota, RateLimiter,
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

pub struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    gcra: redis::Script,
    failure: redis::Script,
    locked: redis::Script,
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
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::InvalidState(format!("redis URL: {e}")))?;
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
            tracing::warn!(error = %e, what, "redis is not answering: limits and lock-outs are enforced per process, the answer cache misses");
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
