//! Abuse protection behind ports, so a Redis adapter can share the state across replicas:
//! a GCRA rate limiter, an exponential login lock-out, and the gateway quotas' usage counters.
//! In-process implementations of the first two here (the quota counters' in-process side is
//! the gateway's own, in bunko-server).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// When `allowed` is false: how long until one request would pass.
    pub retry_after: Duration,
}

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    async fn check(&self, key: &str, quota: Quota) -> Decision;
}

/// GCRA (generic cell rate algorithm): one "theoretical arrival time" per key.
pub struct InProcessLimiter {
    tats: Mutex<HashMap<String, Instant>>,
    epoch: Instant,
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self {
            tats: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }
}

impl InProcessLimiter {
    pub fn check_at(&self, key: &str, quota: Quota, now: Instant) -> Decision {
        let interval = Duration::from_secs_f64(1.0 / quota.per_second.max(1e-9));
        let burst = quota.burst.max(1);
        let tolerance = interval * (burst - 1);
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() > 100_000 {
            // Forget keys whose buckets are full again; bounded memory under address churn.
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let allow_at = tat.checked_sub(tolerance).unwrap_or(self.epoch);
        if now < allow_at {
            let retry = allow_at - now;
            return Decision {
                allowed: false,
                limit: burst,
                remaining: 0,
                reset_after: tat - now,
                retry_after: retry,
            };
        }
        let new_tat = tat + interval;
        tats.insert(key.to_owned(), new_tat);
        let used = (new_tat - now).as_secs_f64() / interval.as_secs_f64();
        let remaining = (f64::from(burst) - used.ceil()).max(0.0) as u32;
        Decision {
            allowed: true,
            limit: burst,
            remaining,
            reset_after: new_tat - now,
            retry_after: Duration::ZERO,
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for InProcessLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Decision {
        self.check_at(key, quota, Instant::now())
    }
}

/// Failed-login bookkeeping per key (an account's email, a client address).
#[async_trait::async_trait]
pub trait LoginThrottle: Send + Sync {
    /// `Err(wait)` while the key is locked out.
    async fn check(&self, key: &str) -> Result<(), Duration>;
    /// Returns the lock-out now in force, if this failure started one.
    async fn failure(&self, key: &str) -> Option<Duration>;
    async fn success(&self, key: &str);
}

/// After `free` failures, each further failure locks the key for base × 2^(n−free−1),
/// capped; a success clears it.
pub struct InProcessThrottle {
    free: u32,
    base: Duration,
    max: Duration,
    state: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

impl InProcessThrottle {
    pub fn new(free: u32, base: Duration, max: Duration) -> Self {
        Self {
            free,
            base,
            max,
            state: Mutex::new(HashMap::new()),
        }
    }
}

/// The lock-out every adapter uses unless told otherwise: 5 free failures, then 1 s doubling
/// up to 15 minutes.
pub const LOCKOUT_FREE: u32 = 5;
pub const LOCKOUT_BASE: Duration = Duration::from_secs(1);
pub const LOCKOUT_MAX: Duration = Duration::from_secs(15 * 60);

impl Default for InProcessThrottle {
    fn default() -> Self {
        Self::new(LOCKOUT_FREE, LOCKOUT_BASE, LOCKOUT_MAX)
    }
}

impl InProcessThrottle {
    pub fn check_now(&self, key: &str) -> Result<(), Duration> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.get(key) {
            Some((_, Some(until))) if *until > Instant::now() => Err(*until - Instant::now()),
            _ => Ok(()),
        }
    }

    pub fn failure_now(&self, key: &str) -> Option<Duration> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.len() > 100_000 {
            let now = Instant::now();
            st.retain(|_, (_, until)| until.is_some_and(|u| u > now));
        }
        let entry = st.entry(key.to_owned()).or_insert((0, None));
        entry.0 += 1;
        if entry.0 > self.free {
            let exp = (entry.0 - self.free - 1).min(20);
            let lock = self.base.saturating_mul(1 << exp).min(self.max);
            entry.1 = Some(Instant::now() + lock);
            return Some(lock);
        }
        None
    }

    pub fn success_now(&self, key: &str) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[async_trait::async_trait]
impl LoginThrottle for InProcessThrottle {
    async fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_now(key)
    }

    async fn failure(&self, key: &str) -> Option<Duration> {
        self.failure_now(key)
    }

    async fn success(&self, key: &str) {
        self.success_now(key)
    }
}

/// One subject's usage in the current windows of the gateway quotas.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct QuotaUsage {
    /// Requests this UTC minute.
    pub requests: u64,
    /// Tokens this UTC minute.
    pub minute_tokens: u64,
    /// Tokens this UTC day.
    pub day_tokens: u64,
    /// US dollars this UTC month.
    pub month_cost: f64,
}

/// The quota windows a call falls in (UTC): indexes of its minute, day and month, and when the
/// day and the month end (ms since the epoch), for the counters' expiry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaWindows {
    pub minute: i64,
    pub day: i64,
    pub month: i64,
    pub now_ms: i64,
    pub day_end_ms: i64,
    pub month_end_ms: i64,
}

/// A subject a call is charged to (`"user:<id>"`, `"key:<id>"`, `"project:<id>"`) and, per
/// measure, the lowest limit any of its quotas sets — requests per minute, tokens per minute,
/// tokens per day, dollars per month (`None`: no limit). A call is refused when any measure
/// has reached its limit, which is the same as checking every quota on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaSubject {
    pub id: String,
    pub limits: [Option<f64>; 4],
}

/// What the shared counters decided, with each subject's usage before the call (in the order
/// the subjects were given), so the caller can name the quota or warn of a soft limit.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaAdmission {
    /// Counted as one request of each subject.
    Admitted(Vec<QuotaUsage>),
    /// A limit is reached; nothing was counted.
    Refused(Vec<QuotaUsage>),
    /// The counters do not hold this day's and month's usage yet (the first call of the day,
    /// or the server lost its data): seed them from the usage ledger, then ask again.
    Unseeded,
}

/// Quota usage counters shared by every replica (a Redis adapter). `None` from a call means
/// the counters did not answer: the gateway then counts on its own, never "no limit".
#[async_trait::async_trait]
pub trait QuotaCounters: Send + Sync {
    /// Atomically: reads the subjects' usage and, when no limit is reached, counts a request.
    async fn admit(&self, subjects: &[QuotaSubject], w: QuotaWindows) -> Option<QuotaAdmission>;
    /// Adds a finished call's tokens and cost to each subject.
    async fn charge(&self, subjects: &[String], w: QuotaWindows, tokens: u64, cost: f64);
    /// Raises each subject's day tokens and month cost to at least the ledger's figures (never
    /// lowers them: calls counted but not yet in the ledger stay counted), then marks the
    /// day and month as seeded.
    async fn seed(&self, w: QuotaWindows, usage: &[(String, u64, f64)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_exactly_the_burst_then_refills() {
        let l = InProcessLimiter::default();
        let q = Quota {
            per_second: 10.0,
            burst: 5,
        };
        let t0 = Instant::now();
        for i in 0..5 {
            let d = l.check_at("k", q, t0);
            assert!(d.allowed, "request {i} must pass");
            assert_eq!(d.remaining, 4 - i);
        }
        let d = l.check_at("k", q, t0);
        assert!(!d.allowed, "request 6 must be refused");
        assert!(
            d.retry_after > Duration::from_millis(90)
                && d.retry_after <= Duration::from_millis(100),
            "{d:?}"
        );
        assert!(l.check_at("other", q, t0).allowed, "keys are independent");
        assert!(
            l.check_at("k", q, t0 + Duration::from_millis(100)).allowed,
            "one token back after 1/rate"
        );
        assert!(!l.check_at("k", q, t0 + Duration::from_millis(100)).allowed);
        assert!(l.check_at("k", q, t0 + Duration::from_secs(10)).allowed);
    }

    #[test]
    fn lockout_grows_and_clears() {
        let t = InProcessThrottle::new(2, Duration::from_millis(40), Duration::from_millis(200));
        assert_eq!(t.failure_now("a"), None);
        assert_eq!(t.failure_now("a"), None);
        assert!(t.check_now("a").is_ok());
        assert_eq!(t.failure_now("a"), Some(Duration::from_millis(40)));
        assert!(t.check_now("a").is_err());
        assert_eq!(t.failure_now("a"), Some(Duration::from_millis(80)));
        assert_eq!(t.failure_now("a"), Some(Duration::from_millis(160)));
        assert_eq!(
            t.failure_now("a"),
            Some(Duration::from_millis(200)),
            "capped"
        );
        std::thread::sleep(Duration::from_millis(220));
        assert!(t.check_now("a").is_ok(), "expires");
        t.success_now("a");
        assert_eq!(t.failure_now("a"), None, "a success starts over");
    }
}
