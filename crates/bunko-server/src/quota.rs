//! Gateway quotas per user, API key and project: requests and tokens per minute (rates),
//! tokens per UTC day and US dollars per UTC month (budgets). Checked before a call (a used-up
//! quota refuses it with 429 `quota_exceeded` and when it resets), charged after it (a call in
//! flight — a stream — always finishes; the next one is refused). Budgets start from the usage
//! ledger at start, so a restart does not reset them. In-process: each replica counts its own
//! calls (a shared Redis counter is the scale-out port).

use bunko_core::config::{QuotaConfig, QuotaScope};
use bunko_core::identity::{Credential, Principal};
use std::collections::HashMap;
use std::sync::Mutex;

/// Who a call is charged to, per scope.
#[derive(Debug, Clone)]
pub struct Subjects {
    pub user: String,
    pub user_email: String,
    pub key: Option<String>,
    pub project: Option<String>,
}

impl Subjects {
    pub fn of(p: &Principal) -> Self {
        let (key, project) = match &p.credential {
            Credential::ApiKey {
                key_id, project_id, ..
            } => (Some(key_id.to_string()), project_id.map(|p| p.to_string())),
            Credential::Session { .. } => (None, None),
        };
        Self {
            user: p.user_id.to_string(),
            user_email: p.email.to_lowercase(),
            key,
            project,
        }
    }

    fn get(&self, scope: QuotaScope) -> Option<&str> {
        match scope {
            QuotaScope::User => Some(&self.user),
            QuotaScope::Key => self.key.as_deref(),
            QuotaScope::Project => self.project.as_deref(),
        }
    }

    fn matches(&self, q: &QuotaConfig) -> Option<&str> {
        let id = self.get(q.scope)?;
        let hit = q.id == "*"
            || q.id.eq_ignore_ascii_case(id)
            || (q.scope == QuotaScope::User && q.id.eq_ignore_ascii_case(&self.user_email));
        hit.then_some(id)
    }
}

#[derive(Debug, Default, Clone)]
struct Counter {
    minute: i64,
    requests: u64,
    minute_tokens: u64,
    day: i64,
    day_tokens: u64,
    month: i64,
    month_cost: f64,
}

/// Time windows, UTC.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub ms: i64,
}

impl Now {
    pub fn current() -> Self {
        Self {
            ms: bunko_core::ids::now_ms(),
        }
    }
    fn minute(self) -> i64 {
        self.ms.div_euclid(60_000)
    }
    fn day(self) -> i64 {
        self.ms.div_euclid(86_400_000)
    }
    /// Months since 1970-01 and the start of the next one (ms).
    fn month(self) -> (i64, i64) {
        let ts = jiff::Timestamp::from_millisecond(self.ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
        let index = i64::from(d.year()) * 12 + i64::from(d.month()) - 1;
        let next = d
            .first_of_month()
            .checked_add(jiff::ToSpan::months(1))
            .ok()
            .and_then(|n| n.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map_or(self.ms + 31 * 86_400_000, |z| {
                z.timestamp().as_millisecond()
            });
        (index, next)
    }
    /// Start of the current UTC month (ms).
    pub fn month_start(self) -> i64 {
        let ts = jiff::Timestamp::from_millisecond(self.ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        ts.to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .first_of_month()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_or(0, |z| z.timestamp().as_millisecond())
    }
    pub fn day_start(self) -> i64 {
        self.day() * 86_400_000
    }
}

impl Counter {
    fn roll(&mut self, now: Now) {
        if self.minute != now.minute() {
            self.minute = now.minute();
            self.requests = 0;
            self.minute_tokens = 0;
        }
        if self.day != now.day() {
            self.day = now.day();
            self.day_tokens = 0;
        }
        let (m, _) = now.month();
        if self.month != m {
            self.month = m;
            self.month_cost = 0.0;
        }
    }
}

/// A refused call: which quota, and seconds until it resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub message: String,
    pub retry_after_secs: u64,
}

pub struct Quotas {
    rules: Vec<QuotaConfig>,
    counters: Mutex<HashMap<(QuotaScope, String), Counter>>,
}

impl Quotas {
    pub fn new(rules: Vec<QuotaConfig>) -> Self {
        Self {
            rules,
            counters: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Seeds today's tokens and this month's cost of one subject (from the ledger at start).
    pub fn seed(&self, scope: QuotaScope, id: &str, day_tokens: u64, month_cost: f64, now: Now) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let e = c.entry((scope, id.to_owned())).or_default();
        e.roll(now);
        e.day_tokens += day_tokens;
        e.month_cost += month_cost;
    }

    /// Before a call: refuses when a hard limit is reached, else counts the request and
    /// returns the soft-limit warnings (for the `x-bunko-quota-warning` header).
    pub fn admit(&self, who: &Subjects, now: Now) -> Result<Vec<String>, Exceeded> {
        if self.rules.is_empty() {
            return Ok(Vec::new());
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut warnings = Vec::new();
        let mut charged = Vec::new();
        for q in &self.rules {
            let Some(id) = who.matches(q) else { continue };
            let c = counters.entry((q.scope, id.to_owned())).or_default();
            c.roll(now);
            let to_minute = 60 - (now.ms.div_euclid(1000) % 60) as u64;
            let to_day = ((now.day() + 1) * 86_400_000 - now.ms).max(0) as u64 / 1000 + 1;
            let to_month = ((now.month().1 - now.ms).max(0) as u64) / 1000 + 1;
            let checks: [(&str, Option<f64>, f64, u64); 4] = [
                (
                    "requests_per_min",
                    q.requests_per_min.map(|v| v as f64),
                    c.requests as f64,
                    to_minute,
                ),
                (
                    "tokens_per_min",
                    q.tokens_per_min.map(|v| v as f64),
                    c.minute_tokens as f64,
                    to_minute,
                ),
                (
                    "tokens_per_day",
                    q.tokens_per_day.map(|v| v as f64),
                    c.day_tokens as f64,
                    to_day,
                ),
                (
                    "cost_per_month_usd",
                    q.cost_per_month_usd,
                    c.month_cost,
                    to_month,
                ),
            ];
            for (name, limit, used, reset) in checks {
                let Some(limit) = limit else { continue };
                if used >= limit {
                    return Err(Exceeded {
                        message: format!(
                            "{} quota {name} = {limit} is used up ({used}); it resets in {reset} s",
                            q.scope.as_str()
                        ),
                        retry_after_secs: reset,
                    });
                }
                if used >= limit * q.soft_ratio {
                    warnings.push(format!(
                        "{}:{name}:{:.0}%",
                        q.scope.as_str(),
                        100.0 * used / limit
                    ));
                }
            }
            charged.push((q.scope, id.to_owned()));
        }
        charged.sort();
        charged.dedup();
        for k in charged {
            if let Some(c) = counters.get_mut(&k) {
                c.requests += 1;
            }
        }
        Ok(warnings)
    }

    /// After a call: its tokens and cost.
    pub fn charge(&self, who: &Subjects, tokens: u64, cost: f64, now: Now) {
        if self.rules.is_empty() {
            return;
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<(QuotaScope, String)> = self
            .rules
            .iter()
            .filter_map(|q| who.matches(q).map(|id| (q.scope, id.to_owned())))
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let c = counters.entry(k).or_default();
            c.roll(now);
            c.minute_tokens += tokens;
            c.day_tokens += tokens;
            c.month_cost += cost;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Subjects {
        Subjects {
            user: "u1".into(),
            user_email: "ada@example.org".into(),
            key: Some("k1".into()),
            project: None,
        }
    }

    fn rule(scope: QuotaScope, id: &str) -> QuotaConfig {
        QuotaConfig {
            scope,
            id: id.into(),
            requests_per_min: None,
            tokens_per_min: None,
            tokens_per_day: None,
            cost_per_month_usd: None,
            soft_ratio: 0.8,
        }
    }

    #[test]
    fn requests_per_minute_reset_with_the_minute() {
        let mut r = rule(QuotaScope::User, "ada@example.org");
        r.requests_per_min = Some(2);
        r.soft_ratio = 0.5;
        let q = Quotas::new(vec![r]);
        let t = Now { ms: 120_000 };
        assert!(q.admit(&who(), t).unwrap().is_empty());
        let warn = q.admit(&who(), t).unwrap();
        assert_eq!(warn, vec!["user:requests_per_min:50%".to_owned()]);
        let e = q.admit(&who(), Now { ms: 150_000 }).unwrap_err();
        assert!(e.message.contains("requests_per_min"), "{}", e.message);
        assert_eq!(e.retry_after_secs, 30);
        assert!(q.admit(&who(), Now { ms: 180_000 }).is_ok(), "next minute");
    }

    #[test]
    fn budgets_count_tokens_and_cost_and_a_key_rule_spares_other_keys() {
        let mut day = rule(QuotaScope::Key, "k1");
        day.tokens_per_day = Some(1000);
        let mut month = rule(QuotaScope::User, "*");
        month.cost_per_month_usd = Some(1.0);
        let q = Quotas::new(vec![day, month]);
        let t = Now {
            ms: 1_764_460_800_000, // 2025-11-30T00:00:00Z
        };
        q.admit(&who(), t).unwrap();
        q.charge(&who(), 900, 0.5, t);
        let w = q.admit(&who(), t).unwrap();
        assert_eq!(w, vec!["key:tokens_per_day:90%".to_owned()]);
        q.charge(&who(), 200, 0.1, t);
        let e = q.admit(&who(), t).unwrap_err();
        assert!(e.message.contains("tokens_per_day"));
        assert_eq!(e.retry_after_secs, 86_401);
        // Another key of the same user: only the user's monthly budget applies.
        let mut other = who();
        other.key = Some("k2".into());
        assert!(q.admit(&other, t).is_ok());
        q.charge(&other, 1, 0.5, t);
        let e = q.admit(&other, t).unwrap_err();
        assert!(e.message.contains("cost_per_month_usd"), "{}", e.message);
        // December 1st resets the month (and the day).
        let dec = Now {
            ms: 1_764_547_200_000,
        };
        assert_eq!(e.retry_after_secs, (dec.ms - t.ms) as u64 / 1000 + 1);
        assert!(q.admit(&who(), dec).is_ok());
    }
}
