//! Gateway quotas per user, API key and project: requests and tokens per minute (rates),
//! tokens per UTC day and US dollars per UTC month (budgets). Checked before a call (a used-up
//! quota refuses it with 429 `quota_exceeded` and when it resets), charged after it (a call in
//! flight — a stream — always finishes; the next one is refused). Budgets start from the usage
//! ledger, so a restart does not reset them.
//!
//! With Redis (`redis.url`) the counters are shared by every replica: each decision is one
//! atomic script on the Redis server (the `QuotaCounters` port), and the first call of each
//! UTC day — or the first after Redis lost its data — seeds the shared budgets from the
//! ledger. Each process also keeps its own counters; they decide while Redis does not answer.

use bunko_core::config::{QuotaConfig, QuotaScope};
use bunko_core::identity::{Credential, Principal};
use bunko_core::limits::{QuotaAdmission, QuotaCounters, QuotaSubject, QuotaUsage, QuotaWindows};
use bunko_core::ports::{MetaStore, UsageGroup};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

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

/// One subject's usage in the windows it was last counted in.
#[derive(Debug, Default, Clone)]
struct Counter {
    minute: i64,
    day: i64,
    month: i64,
    used: QuotaUsage,
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
    /// Seconds until each measure's window (in [`MEASURES`] order) starts again.
    fn resets(self) -> [u64; 4] {
        let w = self.windows();
        let to_minute = 60 - (self.ms.div_euclid(1000) % 60) as u64;
        let until = |end: i64| (end - self.ms).max(0) as u64 / 1000 + 1;
        [
            to_minute,
            to_minute,
            until(w.day_end_ms),
            until(w.month_end_ms),
        ]
    }
    fn windows(self) -> QuotaWindows {
        let (month, month_end_ms) = self.month();
        QuotaWindows {
            minute: self.minute(),
            day: self.day(),
            month,
            now_ms: self.ms,
            day_end_ms: self.day_start() + 86_400_000,
            month_end_ms,
        }
    }
}

impl Counter {
    fn roll(&mut self, now: Now) {
        if self.minute != now.minute() {
            self.minute = now.minute();
            self.used.requests = 0;
            self.used.minute_tokens = 0;
        }
        if self.day != now.day() {
            self.day = now.day();
            self.used.day_tokens = 0;
        }
        let (m, _) = now.month();
        if self.month != m {
            self.month = m;
            self.used.month_cost = 0.0;
        }
    }
}

/// A refused call: which quota, and seconds until it resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub message: String,
    pub retry_after_secs: u64,
}

/// The shared counters, and the ledger they are seeded from.
struct Shared {
    counters: Arc<dyn QuotaCounters>,
    ledger: Arc<dyn MetaStore>,
    /// When this process last seeded them (ms), so concurrent first calls seed once.
    seeded_at: AtomicI64,
    seeding: tokio::sync::Mutex<()>,
}

type SubjectKey = (QuotaScope, String);

pub struct Quotas {
    rules: Vec<QuotaConfig>,
    counters: Mutex<HashMap<SubjectKey, Counter>>,
    shared: Option<Shared>,
}

/// The measures a quota limits, in the order of [`QuotaSubject::limits`].
const MEASURES: [&str; 4] = [
    "requests_per_min",
    "tokens_per_min",
    "tokens_per_day",
    "cost_per_month_usd",
];

fn limits(q: &QuotaConfig) -> [Option<f64>; 4] {
    [
        q.requests_per_min.map(|v| v as f64),
        q.tokens_per_min.map(|v| v as f64),
        q.tokens_per_day.map(|v| v as f64),
        q.cost_per_month_usd,
    ]
}

fn measures(u: &QuotaUsage) -> [f64; 4] {
    [
        u.requests as f64,
        u.minute_tokens as f64,
        u.day_tokens as f64,
        u.month_cost,
    ]
}

fn subject_id(k: &SubjectKey) -> String {
    format!("{}:{}", k.0.as_str(), k.1)
}

/// The distinct subjects of the quotas that apply, in a fixed order.
fn distinct<'a>(matched: &'a [(&QuotaConfig, SubjectKey)]) -> Vec<&'a SubjectKey> {
    let mut keys: Vec<&SubjectKey> = matched.iter().map(|(_, k)| k).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// One request for each subject of the quotas that apply.
fn count_request(
    counters: &mut HashMap<SubjectKey, Counter>,
    matched: &[(&QuotaConfig, SubjectKey)],
    now: Now,
) {
    for k in distinct(matched) {
        let c = counters.entry(k.clone()).or_default();
        c.roll(now);
        c.used.requests += 1;
    }
}

impl Quotas {
    pub fn new(rules: Vec<QuotaConfig>) -> Self {
        Self {
            rules,
            counters: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Counts against counters every replica shares, seeded from `ledger`.
    pub fn shared(mut self, counters: Arc<dyn QuotaCounters>, ledger: Arc<dyn MetaStore>) -> Self {
        self.shared = Some(Shared {
            counters,
            ledger,
            seeded_at: AtomicI64::new(i64::MIN),
            seeding: tokio::sync::Mutex::new(()),
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Seeds today's tokens and this month's cost of one subject (from the ledger at start).
    pub fn seed(&self, scope: QuotaScope, id: &str, day_tokens: u64, month_cost: f64, now: Now) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let e = c.entry((scope, id.to_owned())).or_default();
        e.roll(now);
        e.used.day_tokens += day_tokens;
        e.used.month_cost += month_cost;
    }

    /// The ledger's tokens today and cost this month, per subject of every scope.
    pub async fn ledger_usage(
        store: &dyn MetaStore,
        now: Now,
    ) -> Result<Vec<(QuotaScope, String, u64, f64)>, String> {
        let mut out = Vec::new();
        for (scope, group) in [
            (QuotaScope::User, UsageGroup::User),
            (QuotaScope::Key, UsageGroup::Key),
            (QuotaScope::Project, UsageGroup::Project),
        ] {
            let day = store
                .usage_totals(group, now.day_start(), i64::MAX, None)
                .await
                .map_err(|e| e.to_string())?;
            let month = store
                .usage_totals(group, now.month_start(), i64::MAX, None)
                .await
                .map_err(|e| e.to_string())?;
            for t in month {
                if t.group.is_empty() {
                    continue;
                }
                let tokens = day
                    .iter()
                    .find(|d| d.group == t.group)
                    .map_or(0, |d| d.input_tokens + d.output_tokens);
                out.push((scope, t.group, tokens, t.cost_usd));
            }
        }
        Ok(out)
    }

    /// The quotas that apply to `who`, each with its subject.
    fn matched<'a>(&'a self, who: &Subjects) -> Vec<(&'a QuotaConfig, SubjectKey)> {
        self.rules
            .iter()
            .filter_map(|q| who.matches(q).map(|id| (q, (q.scope, id.to_owned()))))
            .collect()
    }

    /// The verdict on usage before a call: the first quota (in configuration order) whose
    /// limit is reached refuses it; otherwise the soft-limit warnings.
    fn verdict(
        matched: &[(&QuotaConfig, SubjectKey)],
        used: impl Fn(&SubjectKey) -> QuotaUsage,
        now: Now,
    ) -> Result<Vec<String>, Exceeded> {
        let resets = now.resets();
        let mut warnings = Vec::new();
        for (q, subject) in matched {
            let used = measures(&used(subject));
            for (i, limit) in limits(q).into_iter().enumerate() {
                let Some(limit) = limit else { continue };
                let (name, used, reset) = (MEASURES[i], used[i], resets[i]);
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
        }
        Ok(warnings)
    }

    /// Before a call: refuses when a hard limit is reached, else counts the request and
    /// returns the soft-limit warnings (for the `x-bunko-quota-warning` header).
    pub async fn admit(&self, who: &Subjects, now: Now) -> Result<Vec<String>, Exceeded> {
        if self.rules.is_empty() {
            return Ok(Vec::new());
        }
        let matched = self.matched(who);
        if let Some(shared) = &self.shared
            && let Some(verdict) = self.admit_shared(shared, &matched, now).await
        {
            if verdict.is_ok() {
                let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
                count_request(&mut counters, &matched, now);
            }
            return verdict;
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (_, k) in &matched {
            counters.entry(k.clone()).or_default().roll(now);
        }
        let verdict = Self::verdict(
            &matched,
            |k| counters.get(k).map(|c| c.used).unwrap_or_default(),
            now,
        );
        if verdict.is_ok() {
            count_request(&mut counters, &matched, now);
        }
        verdict
    }

    /// The shared counters' verdict; `None` when they did not answer.
    async fn admit_shared(
        &self,
        shared: &Shared,
        matched: &[(&QuotaConfig, SubjectKey)],
        now: Now,
    ) -> Option<Result<Vec<String>, Exceeded>> {
        let keys = distinct(matched);
        let mut subjects: Vec<QuotaSubject> = keys
            .iter()
            .map(|k| QuotaSubject {
                id: subject_id(k),
                limits: [None; 4],
            })
            .collect();
        for (q, k) in matched {
            let Ok(i) = keys.binary_search(&k) else {
                continue;
            };
            for (lowest, limit) in subjects[i].limits.iter_mut().zip(limits(q)) {
                *lowest = match (*lowest, limit) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let w = now.windows();
        let mut decision = shared.counters.admit(&subjects, w).await?;
        if decision == QuotaAdmission::Unseeded {
            self.seed_shared(shared, now).await;
            decision = shared.counters.admit(&subjects, w).await?;
        }
        let (admitted, used) = match decision {
            QuotaAdmission::Admitted(u) => (true, u),
            QuotaAdmission::Refused(u) => (false, u),
            QuotaAdmission::Unseeded => return None,
        };
        let used_of = |k: &SubjectKey| {
            keys.binary_search(&k)
                .ok()
                .and_then(|i| used.get(i).copied())
                .unwrap_or_default()
        };
        let verdict = Self::verdict(matched, used_of, now);
        Some(match (admitted, verdict) {
            (false, Ok(_)) => Err(Exceeded {
                message: "a quota is used up".to_owned(),
                retry_after_secs: now.resets()[0],
            }),
            (_, v) => v,
        })
    }

    /// Seeds the shared counters from the ledger (once at a time per process; a seeding in
    /// the last five seconds is enough).
    async fn seed_shared(&self, shared: &Shared, now: Now) {
        let _one = shared.seeding.lock().await;
        if now
            .ms
            .saturating_sub(shared.seeded_at.load(Ordering::Relaxed))
            < 5_000
        {
            return;
        }
        match Self::ledger_usage(shared.ledger.as_ref(), now).await {
            Ok(usage) => {
                let usage: Vec<(String, u64, f64)> = usage
                    .into_iter()
                    .map(|(scope, id, tokens, cost)| (subject_id(&(scope, id)), tokens, cost))
                    .collect();
                shared.counters.seed(now.windows(), &usage).await;
                shared.seeded_at.store(now.ms, Ordering::Relaxed);
                tracing::info!(
                    subjects = usage.len(),
                    "seeded the shared quota counters from the usage ledger"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the usage ledger to seed the shared quota counters")
            }
        }
    }

    /// After a call: its tokens and cost (to the shared counters in the background).
    pub fn charge(&self, who: &Subjects, tokens: u64, cost: f64, now: Now) {
        if self.rules.is_empty() {
            return;
        }
        let matched = self.matched(who);
        let keys = distinct(&matched);
        if let Some(shared) = &self.shared
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let counters = shared.counters.clone();
            let ids: Vec<String> = keys.iter().map(|k| subject_id(k)).collect();
            rt.spawn(async move { counters.charge(&ids, now.windows(), tokens, cost).await });
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            let c = counters.entry(k.clone()).or_default();
            c.roll(now);
            c.used.minute_tokens += tokens;
            c.used.day_tokens += tokens;
            c.used.month_cost += cost;
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

    #[tokio::test]
    async fn requests_per_minute_reset_with_the_minute() {
        let mut r = rule(QuotaScope::User, "ada@example.org");
        r.requests_per_min = Some(2);
        r.soft_ratio = 0.5;
        let q = Quotas::new(vec![r]);
        let t = Now { ms: 120_000 };
        assert!(q.admit(&who(), t).await.unwrap().is_empty());
        let warn = q.admit(&who(), t).await.unwrap();
        assert_eq!(warn, vec!["user:requests_per_min:50%".to_owned()]);
        let e = q.admit(&who(), Now { ms: 150_000 }).await.unwrap_err();
        assert!(e.message.contains("requests_per_min"), "{}", e.message);
        assert_eq!(e.retry_after_secs, 30);
        assert!(
            q.admit(&who(), Now { ms: 180_000 }).await.is_ok(),
            "next minute"
        );
    }

    #[tokio::test]
    async fn budgets_count_tokens_and_cost_and_a_key_rule_spares_other_keys() {
        let mut day = rule(QuotaScope::Key, "k1");
        day.tokens_per_day = Some(1000);
        let mut month = rule(QuotaScope::User, "*");
        month.cost_per_month_usd = Some(1.0);
        let q = Quotas::new(vec![day, month]);
        let t = Now {
            ms: 1_764_460_800_000, // 2025-11-30T00:00:00Z
        };
        q.admit(&who(), t).await.unwrap();
        q.charge(&who(), 900, 0.5, t);
        let w = q.admit(&who(), t).await.unwrap();
        assert_eq!(w, vec!["key:tokens_per_day:90%".to_owned()]);
        q.charge(&who(), 200, 0.1, t);
        let e = q.admit(&who(), t).await.unwrap_err();
        assert!(e.message.contains("tokens_per_day"));
        assert_eq!(e.retry_after_secs, 86_401);
        // Another key of the same user: only the user's monthly budget applies.
        let mut other = who();
        other.key = Some("k2".into());
        assert!(q.admit(&other, t).await.is_ok());
        q.charge(&other, 1, 0.5, t);
        let e = q.admit(&other, t).await.unwrap_err();
        assert!(e.message.contains("cost_per_month_usd"), "{}", e.message);
        // December 1st resets the month (and the day).
        let dec = Now {
            ms: 1_764_547_200_000,
        };
        assert_eq!(e.retry_after_secs, (dec.ms - t.ms) as u64 / 1000 + 1);
        assert!(q.admit(&who(), dec).await.is_ok());
    }

    /// Shared counters that do not answer (Redis down): this process's own counters decide,
    /// so a quota is never "no limit"; once they answer again, their verdict is used.
    #[tokio::test]
    async fn without_an_answer_from_the_shared_counters_this_process_counts() {
        struct Flaky(std::sync::atomic::AtomicBool);
        #[async_trait::async_trait]
        impl QuotaCounters for Flaky {
            async fn admit(&self, s: &[QuotaSubject], _: QuotaWindows) -> Option<QuotaAdmission> {
                self.0.load(Ordering::Relaxed).then(|| {
                    QuotaAdmission::Refused(vec![
                        QuotaUsage {
                            requests: 7,
                            ..QuotaUsage::default()
                        };
                        s.len()
                    ])
                })
            }
            async fn charge(&self, _: &[String], _: QuotaWindows, _: u64, _: f64) {}
            async fn seed(&self, _: QuotaWindows, _: &[(String, u64, f64)]) {}
        }
        let mut r = rule(QuotaScope::User, "*");
        r.requests_per_min = Some(2);
        let flaky = Arc::new(Flaky(std::sync::atomic::AtomicBool::new(false)));
        let dir = tempfile::tempdir().unwrap();
        let store = bunko_store::sqlite::SqliteStore::open(&dir.path().join("t.db"))
            .await
            .unwrap();
        let q = Quotas::new(vec![r]).shared(flaky.clone(), Arc::new(store));
        let t = Now { ms: 120_000 };
        assert!(q.admit(&who(), t).await.is_ok());
        assert!(q.admit(&who(), t).await.is_ok());
        let e = q.admit(&who(), t).await.unwrap_err();
        assert!(
            e.message.contains("requests_per_min = 2 is used up (2)"),
            "{}",
            e.message
        );
        flaky.0.store(true, Ordering::Relaxed);
        let e = q.admit(&who(), Now { ms: 180_000 }).await.unwrap_err();
        assert!(
            e.message.contains("is used up (7)"),
            "the shared verdict: {}",
            e.message
        );
    }
}
