//! The contract every `MetaStore` backend must meet. Each function takes a fresh, empty store;
//! [`contract_tests!`](crate::contract_tests) turns the whole list into `#[tokio::test]`s for a
//! backend, so SQLite today and PostgreSQL later run the very same assertions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::panic
)]

use bunko_core::Code;
use bunko_core::jobs::{Heartbeat, JobFailure, JobFilter, JobState, NewJob};
use bunko_core::ports::{MetaStore, NewProject, PageRequest, StoreError};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

type Store = Arc<dyn MetaStore>;

const TTL: Duration = Duration::from_secs(30);

fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        before: None,
    }
}

fn job(kind: &str) -> NewJob {
    NewJob::new("q", kind, json!({"n": 1}))
}

/// Generates one `#[tokio::test]` per contract function for a backend. `$make` is an async
/// expression returning `Option<(Arc<dyn MetaStore>, guard)>`; the guard is kept alive for
/// the test. `None` (the backend's server is not there) has already printed why, or failed
/// the test in CI.
#[macro_export]
macro_rules! contract_tests {
    ($make:expr) => {
        $crate::contract_tests!(@each $make;
            projects_create_get_list, settings_round_trip, enqueue_is_idempotent_per_queue,
            lease_takes_each_job_once, lease_respects_run_at_and_priority, heartbeat_and_fencing,
            failure_retries_then_dies, expired_lease_is_leased_again,
            expired_lease_without_attempts_left_is_dead, cancel_queued_and_running,
            retry_dead_job, release_gives_attempt_back, list_filters_and_paginates,
            counts_by_queue_and_state, ping_works, users_are_unique_by_email_case_insensitively,
            memberships_scope_projects, refresh_tokens_rotate_and_reuse_revokes_the_session,
            api_keys_lookup_revoke_and_touch, audit_log_appends_filters_and_prunes_only_old_rows,
            documents_dedupe_finish_atomically_and_cascade, usage_ledger_appends_and_totals,
            conversations_keep_turns_in_order, summaries_latest_wins_and_cascade,
            notes_crud_filter_and_cascade, schedules_sync_pause_and_history,
            one_scheduler_lease_at_a_time, scheduler_fires_each_slot_once_and_handles_missed_slots,
            cleanup_purges_finished_jobs_and_expired_sessions,
            sources_keep_cursors_items_and_outcomes, versions_are_ordered_and_current_by_date);
    };
    (@each $make:expr; $($name:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::contract::$name(store).await;
            }
        )+
    };
}

pub async fn ping_works(s: Store) {
    s.ping().await.unwrap();
    assert!(!s.backend().is_empty());
}

pub async fn projects_create_get_list(s: Store) {
    let mk = |slug: &str| NewProject {
        name: format!("Project {slug}"),
        slug: slug.into(),
        description: "d".into(),
    };
    let a = s.create_project(mk("alpha")).await.unwrap();
    assert_eq!(a.slug, "alpha");
    let err = s.create_project(mk("alpha")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(s.get_project("alpha").await.unwrap().unwrap(), a);
    assert_eq!(s.get_project(&a.id.to_string()).await.unwrap().unwrap(), a);
    assert!(s.get_project("nope").await.unwrap().is_none());
    for i in 0..4 {
        s.create_project(mk(&format!("p{i}"))).await.unwrap();
    }
    let p1 = s.list_projects(page(3)).await.unwrap();
    assert_eq!(p1.items.len(), 3);
    assert_eq!(p1.items[0].slug, "p3", "newest first");
    let cursor = p1.next_cursor.clone().unwrap();
    let p2 = s
        .list_projects(PageRequest {
            limit: 3,
            before: Some(cursor.parse().unwrap()),
        })
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 2);
    assert!(p2.next_cursor.is_none());
    let all: HashSet<_> = p1
        .items
        .iter()
        .chain(&p2.items)
        .map(|p| p.slug.clone())
        .collect();
    assert_eq!(all.len(), 5);
}

pub async fn settings_round_trip(s: Store) {
    assert_eq!(s.get_setting("k").await.unwrap(), None);
    assert!(s.put_setting_if_absent("k", "v1").await.unwrap());
    assert!(!s.put_setting_if_absent("k", "v2").await.unwrap());
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v1"));
    s.put_setting("k", "v3").await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v3"));
}

pub async fn enqueue_is_idempotent_per_queue(s: Store) {
    let mut j = job("k");
    j.idempotency_key = Some("doc-1".into());
    let a = s.enqueue(j.clone()).await.unwrap();
    let b = s.enqueue(j.clone()).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.id, b.id);
    j.queue = "other".into();
    let c = s.enqueue(j).await.unwrap();
    assert!(c.created && c.id != a.id, "the key is scoped to its queue");
    let d = s.enqueue(job("k")).await.unwrap();
    let e = s.enqueue(job("k")).await.unwrap();
    assert!(d.created && e.created && d.id != e.id, "no key, no dedup");
}

pub async fn lease_takes_each_job_once(s: Store) {
    for _ in 0..6 {
        s.enqueue(job("k")).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..10 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.lease("q", &format!("w{w}"), TTL).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for h in handles {
        if let Some(j) = h.await.unwrap() {
            assert_eq!(j.attempts, 1);
            assert!(ids.insert(j.id), "job leased twice");
        }
    }
    assert_eq!(ids.len(), 6);
    assert!(s.lease("q", "w", TTL).await.unwrap().is_none());
    assert!(s.lease("empty", "w", TTL).await.unwrap().is_none());
}

pub async fn lease_respects_run_at_and_priority(s: Store) {
    let mut later = job("later");
    later.run_at_ms = Some(bunko_core::ids::now_ms() + 60_000);
    s.enqueue(later).await.unwrap();
    let low = s.enqueue(job("low")).await.unwrap();
    let mut high = job("high");
    high.priority = 10;
    let high = s.enqueue(high).await.unwrap();
    assert_eq!(s.lease("q", "w", TTL).await.unwrap().unwrap().id, high.id);
    assert_eq!(s.lease("q", "w", TTL).await.unwrap().unwrap().id, low.id);
    assert!(
        s.lease("q", "w", TTL).await.unwrap().is_none(),
        "future job must wait"
    );
}

pub async fn heartbeat_and_fencing(s: Store) {
    let e = s.enqueue(job("k")).await.unwrap();
    let j = s.lease("q", "w1", TTL).await.unwrap().unwrap();
    assert_eq!(
        s.heartbeat(j.id, "w1", TTL).await.unwrap(),
        Heartbeat::Alive
    );
    assert_eq!(s.heartbeat(j.id, "w2", TTL).await.unwrap(), Heartbeat::Lost);
    assert!(
        !s.complete(j.id, "w2", None).await.unwrap(),
        "only the lease holder completes"
    );
    assert!(
        s.complete(j.id, "w1", Some(json!({"ok": true})))
            .await
            .unwrap()
    );
    let rec = s.get_job(e.id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Succeeded);
    assert_eq!(rec.result, Some(json!({"ok": true})));
    assert!(rec.finished_at_ms.is_some() && rec.lease_owner.is_none());
    assert_eq!(s.heartbeat(j.id, "w1", TTL).await.unwrap(), Heartbeat::Lost);
}

pub async fn failure_retries_then_dies(s: Store) {
    let mut nj = job("k");
    nj.max_attempts = 2;
    let e = s.enqueue(nj).await.unwrap();
    let j = s.lease("q", "w", TTL).await.unwrap().unwrap();
    let f = JobFailure::retryable(Code::JobFailed, "boom 1");
    let retry_at = bunko_core::ids::now_ms() + 60_000;
    assert!(s.fail(j.id, "w", &f, Some(retry_at)).await.unwrap());
    let rec = s.get_job(e.id).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempts, rec.run_at_ms),
        (JobState::Queued, 1, retry_at)
    );
    assert_eq!(rec.last_error.as_deref(), Some("boom 1"));
    assert!(
        s.lease("q", "w", TTL).await.unwrap().is_none(),
        "backoff delays the retry"
    );
    // Make it due now by failing again through a fresh lease after moving run_at.
    let e2 = s
        .enqueue(NewJob {
            max_attempts: 1,
            ..job("k2")
        })
        .await
        .unwrap();
    let j2 = s.lease("q", "w", TTL).await.unwrap().unwrap();
    assert_eq!(j2.id, e2.id);
    assert!(
        s.fail(
            j2.id,
            "w",
            &JobFailure::permanent(Code::JobPanicked, "panic: x"),
            None
        )
        .await
        .unwrap()
    );
    let rec = s.get_job(e2.id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Dead);
    assert_eq!(rec.last_error_code.as_deref(), Some("job_panicked"));
    assert_eq!(rec.last_error.as_deref(), Some("panic: x"));
    assert!(rec.finished_at_ms.is_some());
}

pub async fn expired_lease_is_leased_again(s: Store) {
    let e = s.enqueue(job("k")).await.unwrap();
    let short = Duration::from_millis(50);
    let j = s.lease("q", "dead-worker", short).await.unwrap().unwrap();
    assert!(
        s.lease("q", "w2", TTL).await.unwrap().is_none(),
        "lease still valid"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let again = s.lease("q", "w2", TTL).await.unwrap().unwrap();
    assert_eq!(again.id, j.id);
    assert_eq!(again.attempts, 2);
    let rec = s.get_job(e.id).await.unwrap().unwrap();
    assert_eq!(rec.lease_owner.as_deref(), Some("w2"));
    assert_eq!(rec.last_error_code.as_deref(), Some("lease_expired"));
    assert!(
        !s.complete(j.id, "dead-worker", None).await.unwrap(),
        "the old holder is fenced off"
    );
}

pub async fn expired_lease_without_attempts_left_is_dead(s: Store) {
    let e = s
        .enqueue(NewJob {
            max_attempts: 1,
            ..job("k")
        })
        .await
        .unwrap();
    s.lease("q", "dead-worker", Duration::from_millis(30))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.lease("q", "w2", TTL).await.unwrap().is_none());
    let rec = s.get_job(e.id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Dead);
    assert_eq!(rec.last_error_code.as_deref(), Some("lease_expired"));
}

pub async fn cancel_queued_and_running(s: Store) {
    let a = s.enqueue(job("a")).await.unwrap();
    let rec = s.cancel(a.id).await.unwrap();
    assert_eq!(rec.state, JobState::Cancelled);
    assert!(s.lease("q", "w", TTL).await.unwrap().is_none());
    let b = s.enqueue(job("b")).await.unwrap();
    let j = s.lease("q", "w", TTL).await.unwrap().unwrap();
    let rec = s.cancel(b.id).await.unwrap();
    assert_eq!(rec.state, JobState::Running);
    assert!(rec.cancel_requested);
    assert_eq!(
        s.heartbeat(j.id, "w", TTL).await.unwrap(),
        Heartbeat::CancelRequested
    );
    assert!(s.mark_cancelled(j.id, "w").await.unwrap());
    assert_eq!(
        s.get_job(b.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    let err = s.cancel(b.id).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err:?}");
    let err = s.cancel(uuid::Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn retry_dead_job(s: Store) {
    let e = s
        .enqueue(NewJob {
            max_attempts: 1,
            ..job("k")
        })
        .await
        .unwrap();
    let j = s.lease("q", "w", TTL).await.unwrap().unwrap();
    s.fail(
        j.id,
        "w",
        &JobFailure::retryable(Code::JobFailed, "x"),
        None,
    )
    .await
    .unwrap();
    let rec = s.retry(e.id).await.unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Queued, 0));
    assert_eq!(
        rec.last_error.as_deref(),
        Some("x"),
        "the last error is kept for the record"
    );
    let j = s.lease("q", "w", TTL).await.unwrap().unwrap();
    assert_eq!(j.attempts, 1);
    let err = s.retry(e.id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidState(_)),
        "running jobs cannot be retried"
    );
    let err = s.retry(uuid::Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
}

pub async fn release_gives_attempt_back(s: Store) {
    let e = s.enqueue(job("k")).await.unwrap();
    let j = s.lease("q", "w", TTL).await.unwrap().unwrap();
    assert!(s.release(j.id, "w").await.unwrap());
    let rec = s.get_job(e.id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Queued, 0));
    assert!(s.lease("q", "w2", TTL).await.unwrap().is_some());
}

pub async fn list_filters_and_paginates(s: Store) {
    for i in 0..5 {
        s.enqueue(NewJob::new(
            if i % 2 == 0 { "even" } else { "odd" },
            "k",
            json!(i),
        ))
        .await
        .unwrap();
    }
    let even = JobFilter {
        queue: Some("even".into()),
        ..Default::default()
    };
    let p = s.list_jobs(&even, page(2)).await.unwrap();
    assert_eq!(p.items.len(), 2);
    assert!(p.items.iter().all(|j| j.queue == "even"));
    let next = PageRequest {
        limit: 2,
        before: Some(p.next_cursor.unwrap().parse().unwrap()),
    };
    let p2 = s.list_jobs(&even, next).await.unwrap();
    assert_eq!(p2.items.len(), 1);
    assert!(p2.next_cursor.is_none());
    let queued = JobFilter {
        state: Some(JobState::Queued),
        ..Default::default()
    };
    assert_eq!(
        s.list_jobs(&queued, page(100)).await.unwrap().items.len(),
        5
    );
    let running = JobFilter {
        state: Some(JobState::Running),
        ..Default::default()
    };
    assert!(
        s.list_jobs(&running, page(100))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn counts_by_queue_and_state(s: Store) {
    for _ in 0..3 {
        s.enqueue(NewJob::new("a", "k", json!({}))).await.unwrap();
    }
    s.enqueue(NewJob::new("b", "k", json!({}))).await.unwrap();
    s.lease("a", "w", TTL).await.unwrap().unwrap();
    let mut counts = s.job_counts().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("a".into(), JobState::Queued, 2),
            ("a".into(), JobState::Running, 1),
            ("b".into(), JobState::Queued, 1)
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Identity

use bunko_core::identity::{GlobalRole, ProjectRole, Scope, UserStatus};
use bunko_core::ports::{AuditEvent, AuditFilter, NewApiKey, NewUser, RefreshUse};

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.into(),
        display_name: "U".into(),
        password_hash: Some("$argon2id$x".into()),
        role: GlobalRole::Member,
    }
}

pub async fn users_are_unique_by_email_case_insensitively(s: Store) {
    let u = s.create_user(new_user("Ada@Example.org")).await.unwrap();
    assert_eq!((u.role, u.status), (GlobalRole::Member, UserStatus::Active));
    let err = s
        .create_user(new_user("ada@example.ORG"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        s.get_user_by_email("ADA@example.org")
            .await
            .unwrap()
            .unwrap()
            .id,
        u.id
    );
    assert_eq!(s.get_user(u.id).await.unwrap().unwrap(), u);
    assert!(s.set_user_status(u.id, UserStatus::Disabled).await.unwrap());
    assert!(s.set_user_role(u.id, GlobalRole::Admin).await.unwrap());
    assert!(s.set_password_hash(u.id, "$argon2id$y").await.unwrap());
    let u2 = s.get_user(u.id).await.unwrap().unwrap();
    assert_eq!(
        (u2.status, u2.role, u2.password_hash.as_deref()),
        (UserStatus::Disabled, GlobalRole::Admin, Some("$argon2id$y"))
    );
    assert_eq!(
        s.count_active_admins().await.unwrap(),
        0,
        "disabled admins do not count"
    );
    s.set_user_status(u.id, UserStatus::Active).await.unwrap();
    assert_eq!(s.count_active_admins().await.unwrap(), 1);
    assert!(
        !s.set_user_status(uuid::Uuid::now_v7(), UserStatus::Active)
            .await
            .unwrap()
    );
    s.create_user(new_user("b@x")).await.unwrap();
    assert_eq!(s.list_users(page(10)).await.unwrap().items.len(), 2);
}

pub async fn memberships_scope_projects(s: Store) {
    let u = s.create_user(new_user("m@x")).await.unwrap();
    let mk = |slug: &str| NewProject {
        name: slug.into(),
        slug: slug.into(),
        description: String::new(),
    };
    let a = s.create_project(mk("a")).await.unwrap();
    let b = s.create_project(mk("b")).await.unwrap();
    s.create_project(mk("c")).await.unwrap();
    s.put_member(a.id, u.id, ProjectRole::Viewer).await.unwrap();
    s.put_member(b.id, u.id, ProjectRole::Owner).await.unwrap();
    s.put_member(a.id, u.id, ProjectRole::Editor).await.unwrap();
    assert_eq!(
        s.member_role(a.id, u.id).await.unwrap(),
        Some(ProjectRole::Editor)
    );
    let mine = s.list_projects_of(u.id, page(10)).await.unwrap();
    let slugs: Vec<_> = mine.items.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(
        slugs,
        vec!["b", "a"],
        "only the user's projects, newest first"
    );
    assert_eq!(s.count_owners(b.id).await.unwrap(), 1);
    let members = s.list_members(a.id).await.unwrap();
    assert_eq!(
        (members.len(), members[0].email.as_str(), members[0].role),
        (1, "m@x", ProjectRole::Editor)
    );
    assert!(s.remove_member(a.id, u.id).await.unwrap());
    assert!(!s.remove_member(a.id, u.id).await.unwrap());
    assert_eq!(s.member_role(a.id, u.id).await.unwrap(), None);
    let err = s
        .put_member(uuid::Uuid::now_v7(), u.id, ProjectRole::Viewer)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    // Deleting a project takes its memberships along.
    assert!(s.delete_project(b.id).await.unwrap());
    assert!(!s.delete_project(b.id).await.unwrap());
    assert!(s.get_project("b").await.unwrap().is_none());
    assert_eq!(s.member_role(b.id, u.id).await.unwrap(), None);
    assert!(
        s.list_projects_of(u.id, page(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn refresh_tokens_rotate_and_reuse_revokes_the_session(s: Store) {
    let u = s.create_user(new_user("r@x")).await.unwrap();
    let sid = s
        .create_session(u.id, Some("127.0.0.1"), Some("test"))
        .await
        .unwrap();
    let now = bunko_core::ids::now_ms();
    s.add_refresh_token(sid, "h1", now + 60_000).await.unwrap();
    assert_eq!(s.session_user(sid, u.id).await.unwrap().unwrap().id, u.id);
    assert_eq!(
        s.use_refresh_token("h1", now).await.unwrap(),
        RefreshUse::Rotated {
            session_id: sid,
            user_id: u.id
        }
    );
    s.add_refresh_token(sid, "h2", now + 60_000).await.unwrap();
    // The used token comes back: someone copied it. The whole session dies.
    assert_eq!(
        s.use_refresh_token("h1", now).await.unwrap(),
        RefreshUse::Reused {
            session_id: sid,
            user_id: u.id
        }
    );
    assert_eq!(
        s.use_refresh_token("h2", now).await.unwrap(),
        RefreshUse::Invalid,
        "the newest token dies with it"
    );
    assert!(s.session_user(sid, u.id).await.unwrap().is_none());
    assert_eq!(
        s.use_refresh_token("never-issued", now).await.unwrap(),
        RefreshUse::Invalid
    );
    // Expiry and explicit revocation.
    let sid2 = s.create_session(u.id, None, None).await.unwrap();
    s.add_refresh_token(sid2, "old", now - 1).await.unwrap();
    assert_eq!(
        s.use_refresh_token("old", now).await.unwrap(),
        RefreshUse::Invalid
    );
    s.add_refresh_token(sid2, "h3", now + 60_000).await.unwrap();
    assert!(s.revoke_session(sid2, "logout").await.unwrap());
    assert_eq!(
        s.use_refresh_token("h3", now).await.unwrap(),
        RefreshUse::Invalid
    );
    let sid3 = s.create_session(u.id, None, None).await.unwrap();
    assert_eq!(s.revoke_user_sessions(u.id, "disabled").await.unwrap(), 1);
    assert!(s.session_user(sid3, u.id).await.unwrap().is_none());
    let other = s.create_user(new_user("o@x")).await.unwrap();
    let sid4 = s.create_session(u.id, None, None).await.unwrap();
    assert!(
        s.session_user(sid4, other.id).await.unwrap().is_none(),
        "a session belongs to one user"
    );
}

pub async fn api_keys_lookup_revoke_and_touch(s: Store) {
    let u = s.create_user(new_user("k@x")).await.unwrap();
    let p = s
        .create_project(NewProject {
            name: "p".into(),
            slug: "p".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let k = s
        .create_api_key(NewApiKey {
            user_id: u.id,
            name: "ci".into(),
            prefix: "bko_key_abc".into(),
            secret_hash: "hash-1".into(),
            scopes: vec![Scope::Search, Scope::Ask],
            project_id: Some(p.id),
            expires_at_ms: Some(bunko_core::ids::now_ms() + 1000),
        })
        .await
        .unwrap();
    let (found, owner) = s.api_key_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!(
        (found.id, owner.id, found.scopes.clone(), found.project_id),
        (k.id, u.id, vec![Scope::Search, Scope::Ask], Some(p.id))
    );
    assert!(s.api_key_by_hash("hash-2").await.unwrap().is_none());
    s.touch_api_key(k.id, 5_000_000).await.unwrap();
    s.touch_api_key(k.id, 5_000_001).await.unwrap();
    assert_eq!(
        s.get_api_key(k.id).await.unwrap().unwrap().last_used_at_ms,
        Some(5_000_000),
        "throttled"
    );
    assert!(s.revoke_api_key(k.id).await.unwrap());
    assert!(!s.revoke_api_key(k.id).await.unwrap());
    assert!(
        s.api_key_by_hash("hash-1")
            .await
            .unwrap()
            .unwrap()
            .0
            .revoked_at_ms
            .is_some()
    );
    assert_eq!(
        s.list_api_keys(Some(u.id), page(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        s.list_api_keys(Some(uuid::Uuid::now_v7()), page(10))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
}

pub async fn audit_log_appends_filters_and_prunes_only_old_rows(s: Store) {
    for (event, outcome) in [
        ("login", "success"),
        ("login", "failure"),
        ("key.created", "success"),
    ] {
        s.append_audit(AuditEvent {
            event: event.into(),
            outcome: outcome.into(),
            ip: Some("127.0.0.1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let all = s
        .list_audit(&AuditFilter::default(), page(10))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    assert_eq!(all.items[0].event.event, "key.created", "newest first");
    let failures = AuditFilter {
        outcome: Some("failure".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_audit(&failures, page(10)).await.unwrap().items.len(),
        1
    );
    let logins = AuditFilter {
        event: Some("login".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_audit(&logins, page(10)).await.unwrap().items.len(),
        2
    );
    assert_eq!(
        s.prune_audit(bunko_core::ids::now_ms() - 60_000)
            .await
            .unwrap(),
        0,
        "recent rows stay"
    );
    assert_eq!(
        s.prune_audit(bunko_core::ids::now_ms() + 1).await.unwrap(),
        3
    );
}

pub async fn documents_dedupe_finish_atomically_and_cascade(s: Store) {
    use bunko_core::documents::*;
    let p = s
        .create_project(NewProject {
            name: "Docs".into(),
            slug: "docs".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let new = |sha: &str, title: &str| NewDocument {
        project_id: p.id,
        title: title.into(),
        filename: format!("{title}.pdf"),
        doc_type: DocType::Pdf,
        sha256: sha.into(),
        size_bytes: 10,
        source: "upload".into(),
        tags: vec!["t".into()],
        origin: None,
    };
    let (a, created) = s.create_document(new("aa", "A")).await.unwrap();
    assert!(created);
    assert_eq!(a.status, DocStatus::Queued);
    let (again, created) = s.create_document(new("aa", "A2")).await.unwrap();
    assert!(!created, "same bytes in one project are one document");
    assert_eq!(again.id, a.id);
    let (b, _) = s.create_document(new("bb", "Report B")).await.unwrap();
    // Unknown project: NotFound, not a backend error.
    let mut orphan = new("cc", "C");
    orphan.project_id = uuid::Uuid::now_v7();
    assert!(matches!(
        s.create_document(orphan).await.unwrap_err(),
        StoreError::NotFound(_)
    ));

    // Queued without a job: stale (nothing will process it).
    let stale = s.stale_documents().await.unwrap();
    assert_eq!(stale.len(), 2);
    let job = s.enqueue(job("document.process")).await.unwrap().id;
    assert!(s.queue_document(a.id, job).await.unwrap());
    let stale = s.stale_documents().await.unwrap();
    assert_eq!(stale.iter().map(|d| d.0.id).collect::<Vec<_>>(), vec![b.id]);
    s.set_document_stage(a.id, "extract", 0.2).await.unwrap();
    let got = s.get_document(a.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.stage.as_deref()),
        (DocStatus::Processing, Some("extract"))
    );
    assert_eq!(got.job_id, Some(job));

    let chunk = |ord: u32, text: &str| ChunkRecord {
        id: format!("{}:{ord}", a.id),
        document_id: a.id,
        project_id: p.id,
        ord,
        text: text.into(),
        page_start: 1,
        page_end: 2,
        char_start: 0,
        char_end: text.chars().count() as u32,
        section_path: "1 Intro".into(),
        language: "en".into(),
        is_references: ord == 1,
        content_hash: "h".into(),
    };
    let pg = |n: u32| PageText {
        page: n,
        text: format!("page {n}"),
        raw: format!("page  {n}"),
        method: if n == 1 {
            PageMethod::Text
        } else {
            PageMethod::Ocr
        },
        confidence: (n != 1).then_some(91.5),
        offsets: vec![(0, 0), (4, 5)],
    };
    let done = Processed {
        title: Some("Real title".into()),
        meta: DocMeta {
            title: Some("Real title".into()),
            authors: vec!["X".into()],
            ..Default::default()
        },
        language: Some("en".into()),
        pages: vec![pg(1), pg(2)],
        chunks: vec![chunk(0, "zero"), chunk(1, "one")],
    };
    s.finish_document(a.id, &done).await.unwrap();
    let got = s.get_document(a.id).await.unwrap().unwrap();
    assert_eq!(got.status, DocStatus::Ready);
    assert_eq!((got.page_count, got.chunk_count), (2, 2));
    assert_eq!(got.title, "Real title");
    assert_eq!(got.meta.authors, vec!["X".to_owned()]);
    assert_eq!(s.get_page(a.id, 2).await.unwrap().unwrap(), pg(2));
    assert!(s.get_page(a.id, 3).await.unwrap().is_none());
    let chunks = s.document_chunks(a.id).await.unwrap();
    assert_eq!(chunks, vec![chunk(0, "zero"), chunk(1, "one")]);
    let by_id = s
        .chunks_by_id(&[format!("{}:1", a.id), "nope".into()])
        .await
        .unwrap();
    assert_eq!(by_id, vec![chunk(1, "one")]);
    assert_eq!(s.all_chunks(Some(p.id)).await.unwrap().len(), 2);
    assert_eq!(s.ready_documents().await.unwrap(), vec![(a.id, 2)]);
    // Search filters resolve to ready documents only.
    use bunko_core::search::SearchFilters;
    let only = |f: SearchFilters| {
        let s = s.clone();
        let pid = p.id;
        async move { s.filter_documents(&[pid], &f).await.unwrap() }
    };
    assert_eq!(only(SearchFilters::default()).await, vec![a.id]);
    let pdf_en = SearchFilters {
        types: vec![DocType::Pdf],
        languages: vec!["en".into()],
        tags: vec!["t".into(), "other".into()],
        sources: vec!["upload".into()],
        ..Default::default()
    };
    assert_eq!(only(pdf_en).await, vec![a.id]);
    let ja = SearchFilters {
        languages: vec!["ja".into()],
        ..Default::default()
    };
    assert!(only(ja).await.is_empty());
    let no_tag = SearchFilters {
        tags: vec!["x".into()],
        ..Default::default()
    };
    assert!(only(no_tag).await.is_empty());
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let dated = SearchFilters {
        date_from: Some(today.clone()),
        date_to: Some(today),
        ..Default::default()
    };
    assert_eq!(
        only(dated).await,
        vec![a.id],
        "no metadata date: the day it was added"
    );
    let old = SearchFilters {
        date_to: Some("2001-01-01".into()),
        ..Default::default()
    };
    assert!(only(old).await.is_empty());
    assert!(
        s.filter_documents(&[], &SearchFilters::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Reprocessing replaces, and a failure keeps what the last success stored.
    let fewer = Processed {
        chunks: vec![chunk(0, "only")],
        ..done.clone()
    };
    s.finish_document(a.id, &fewer).await.unwrap();
    assert_eq!(s.document_chunks(a.id).await.unwrap().len(), 1);
    s.fail_document(a.id, &DocError::new(Code::DocumentUnreadable, "bad xref"))
        .await
        .unwrap();
    let got = s.get_document(a.id).await.unwrap().unwrap();
    assert_eq!(got.status, DocStatus::Failed);
    assert_eq!(got.error.unwrap().code, "document_unreadable");
    assert_eq!(s.document_chunks(a.id).await.unwrap().len(), 1);
    assert!(
        s.all_chunks(None).await.unwrap().is_empty(),
        "only ready documents are indexed"
    );

    // Filters and paging.
    let f = DocumentFilter {
        title: Some("report".into()),
        ..Default::default()
    };
    let listed = s.list_documents(p.id, &f, page(10)).await.unwrap();
    assert_eq!(
        listed.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![b.id]
    );
    let f = DocumentFilter {
        status: Some(DocStatus::Failed),
        ..Default::default()
    };
    assert_eq!(
        s.list_documents(p.id, &f, page(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let first = s
        .list_documents(p.id, &DocumentFilter::default(), page(1))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    assert!(first.next_cursor.is_some());
    // A LIKE wildcard in the title filter is taken literally.
    let f = DocumentFilter {
        title: Some("%".into()),
        ..Default::default()
    };
    assert!(
        s.list_documents(p.id, &f, page(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    s.set_document_password(a.id, Some("pw")).await.unwrap();
    s.set_document_password(a.id, Some("pw2")).await.unwrap();
    assert_eq!(
        s.document_password(a.id).await.unwrap().as_deref(),
        Some("pw2")
    );
    s.set_document_password(a.id, None).await.unwrap();
    assert_eq!(s.document_password(a.id).await.unwrap(), None);
    s.set_document_password(a.id, Some("pw3")).await.unwrap();

    assert_eq!(s.blob_references("aa").await.unwrap(), 1);
    let gone = s.delete_document(a.id).await.unwrap().unwrap();
    assert_eq!(gone.id, a.id);
    assert_eq!(s.blob_references("aa").await.unwrap(), 0);
    assert!(s.document_chunks(a.id).await.unwrap().is_empty());
    assert!(s.get_page(a.id, 1).await.unwrap().is_none());
    assert_eq!(
        s.document_password(a.id).await.unwrap(),
        None,
        "passwords go with the document"
    );
    assert!(s.delete_document(a.id).await.unwrap().is_none());
    // Deleting the project takes its documents.
    s.delete_project(p.id).await.unwrap();
    assert!(s.get_document(b.id).await.unwrap().is_none());
}

pub async fn usage_ledger_appends_and_totals(s: Store) {
    use bunko_core::ports::{UsageGroup, UsageRecord};
    let (u1, u2, key) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let rec = |at_ms: i64, user, model: &str, out: u64, outcome: &str| UsageRecord {
        at_ms,
        user_id: user,
        key_id: (user == u1).then_some(key),
        project_id: None,
        api: "openai".into(),
        model: model.into(),
        provider: "p".into(),
        input_tokens: 10,
        output_tokens: out,
        estimated: false,
        cost_usd: out as f64 * 0.001,
        duration_ms: 5.0,
        ttft_ms: Some(1.0),
        outcome: outcome.into(),
    };
    s.append_usage(&[
        rec(1_000, u1, "fast", 100, "ok"),
        rec(2_000, u1, "fast", 50, "ok"),
        rec(3_000, u2, "slow", 7, "error"),
        rec(9_000, u1, "fast", 1, "ok"),
    ])
    .await
    .unwrap();
    s.append_usage(&[]).await.unwrap();
    let by_model = s
        .usage_totals(UsageGroup::Model, 0, 5_000, None)
        .await
        .unwrap();
    assert_eq!(by_model.len(), 2);
    let fast = by_model.iter().find(|t| t.group == "fast").unwrap();
    assert_eq!(
        (fast.requests, fast.input_tokens, fast.output_tokens),
        (2, 20, 150)
    );
    assert!((fast.cost_usd - 0.15).abs() < 1e-9);
    let slow = by_model.iter().find(|t| t.group == "slow").unwrap();
    assert_eq!(slow.errors, 1);
    // One user's own calls only; the range's end is exclusive.
    let mine = s
        .usage_totals(UsageGroup::Key, 0, 9_000, Some(u1))
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].group.as_str(), mine[0].requests),
        (key.to_string().as_str(), 2)
    );
    let by_user = s
        .usage_totals(UsageGroup::User, 0, 10_000, None)
        .await
        .unwrap();
    assert_eq!(by_user.len(), 2);

    // Rolled up by day: the same totals for every grouping, fewer rows. A second day's rows
    // stay detailed; rolling up twice changes nothing.
    const DAY: i64 = 86_400_000;
    s.append_usage(&[rec(DAY + 5, u1, "fast", 3, "ok")])
        .await
        .unwrap();
    let snapshot = |s: Store| async move {
        let mut all = Vec::new();
        for g in [
            UsageGroup::User,
            UsageGroup::Key,
            UsageGroup::Project,
            UsageGroup::Model,
        ] {
            for who in [None, Some(u1)] {
                let mut t = s.usage_totals(g, 0, 2 * DAY, who).await.unwrap();
                t.sort_by(|a, b| a.group.cmp(&b.group));
                all.push(
                    t.iter()
                        .map(|t| {
                            (
                                t.group.clone(),
                                t.requests,
                                t.input_tokens,
                                t.output_tokens,
                                (t.cost_usd * 1e6).round() as i64,
                                t.errors,
                            )
                        })
                        .collect::<Vec<_>>(),
                );
            }
        }
        all
    };
    let before = snapshot(s.clone()).await;
    assert_eq!(s.rollup_usage(DAY).await.unwrap(), 4);
    assert_eq!(s.rollup_usage(DAY).await.unwrap(), 0);
    assert_eq!(snapshot(s.clone()).await, before);
    // Ranges still count by day for rolled-up rows.
    let first_day = s
        .usage_totals(UsageGroup::Model, 0, DAY, None)
        .await
        .unwrap();
    assert_eq!(first_day.iter().map(|t| t.requests).sum::<u64>(), 4);
    s.append_usage(&[rec(500, u1, "fast", 1, "ok")])
        .await
        .unwrap();
    assert_eq!(
        s.rollup_usage(DAY).await.unwrap(),
        1,
        "a late row joins its day's roll-up"
    );
    let fast = s
        .usage_totals(UsageGroup::Model, 0, DAY, None)
        .await
        .unwrap();
    assert_eq!(fast.iter().find(|t| t.group == "fast").unwrap().requests, 4);
}

pub async fn conversations_keep_turns_in_order(s: Store) {
    use bunko_core::answers::Turn;
    let u = s.create_user(new_user("c@x")).await.unwrap();
    let c = uuid::Uuid::now_v7();
    s.create_conversation(c, u.id).await.unwrap();
    assert!(matches!(
        s.create_conversation(c, u.id).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert_eq!(s.conversation_owner(c).await.unwrap(), Some(u.id));
    assert_eq!(
        s.conversation_owner(uuid::Uuid::now_v7()).await.unwrap(),
        None
    );
    for i in 0..5 {
        s.append_turn(
            c,
            &Turn {
                question: format!("q{i}"),
                answer: format!("a{i}"),
                at_ms: i,
            },
        )
        .await
        .unwrap();
    }
    let last = s.conversation_turns(c, 3).await.unwrap();
    let qs: Vec<&str> = last.iter().map(|t| t.question.as_str()).collect();
    assert_eq!(qs, ["q2", "q3", "q4"], "the last turns, oldest first");
    let gone = s
        .append_turn(
            uuid::Uuid::now_v7(),
            &Turn {
                question: "q".into(),
                answer: "a".into(),
                at_ms: 0,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(gone, StoreError::NotFound(_)), "{gone:?}");
    assert!(
        s.create_conversation(uuid::Uuid::now_v7(), uuid::Uuid::now_v7())
            .await
            .is_err(),
        "an unknown user has no conversations"
    );
}

async fn one_document(s: &Store, slug: &str) -> (uuid::Uuid, uuid::Uuid) {
    use bunko_core::documents::*;
    let p = s
        .create_project(NewProject {
            name: slug.into(),
            slug: slug.into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let (d, _) = s
        .create_document(NewDocument {
            project_id: p.id,
            title: "Paper".into(),
            filename: "paper.pdf".into(),
            doc_type: DocType::Pdf,
            sha256: "ab".into(),
            size_bytes: 1,
            source: "upload".into(),
            tags: vec![],
            origin: None,
        })
        .await
        .unwrap();
    (p.id, d.id)
}

pub async fn summaries_latest_wins_and_cascade(s: Store) {
    use bunko_core::answers::{PageRef, Summary};
    let (_, doc) = one_document(&s, "sum").await;
    assert!(s.latest_summary(doc).await.unwrap().is_none());
    let mk = |text: &str, at: i64| Summary {
        id: uuid::Uuid::now_v7(),
        document_id: doc,
        language: "en".into(),
        model: "local".into(),
        text: text.into(),
        parts: vec![],
        citations: vec![PageRef {
            n: 1,
            document_id: doc,
            title: "Paper".into(),
            page: 3,
            page_end: 4,
            section: "Intro".into(),
        }],
        extractive_parts: 0,
        input_tokens: 1,
        output_tokens: 2,
        job_id: None,
        created_at_ms: at,
    };
    s.put_summary(&mk("first", 1)).await.unwrap();
    let second = mk("second", 2);
    s.put_summary(&second).await.unwrap();
    assert_eq!(s.latest_summary(doc).await.unwrap(), Some(second));
    let mut orphan = mk("x", 3);
    orphan.document_id = uuid::Uuid::now_v7();
    assert!(matches!(
        s.put_summary(&orphan).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    s.delete_document(doc).await.unwrap();
    assert!(s.latest_summary(doc).await.unwrap().is_none());
}

pub async fn notes_crud_filter_and_cascade(s: Store) {
    use bunko_core::answers::{NewNote, NotePatch};
    let (project, _) = one_document(&s, "notes").await;
    let u = s.create_user(new_user("n@x")).await.unwrap();
    let mk = |title: &str, tags: &[&str]| NewNote {
        project_id: project,
        title: title.into(),
        body: format!("# {title}"),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        author_id: Some(u.id),
        citations: vec![],
    };
    let a = s.create_note(mk("A", &["law", "x"])).await.unwrap();
    let b = s.create_note(mk("B", &["paper"])).await.unwrap();
    assert_eq!(s.get_note(a.id).await.unwrap().unwrap(), a);
    assert_eq!(a.author_id, Some(u.id));
    let all = s.list_notes(project, None, page(1)).await.unwrap();
    assert_eq!(all.items[0].id, b.id, "newest first");
    assert!(all.next_cursor.is_some());
    let tagged = s.list_notes(project, Some("law"), page(10)).await.unwrap();
    assert_eq!(tagged.items.len(), 1);
    assert_eq!(tagged.items[0].id, a.id);
    let edited = s
        .update_note(
            a.id,
            NotePatch {
                body: Some("new body".into()),
                tags: Some(vec![]),
                ..NotePatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (edited.title.as_str(), edited.body.as_str()),
        ("A", "new body")
    );
    assert!(edited.tags.is_empty());
    assert!(
        s.update_note(uuid::Uuid::now_v7(), NotePatch::default())
            .await
            .unwrap()
            .is_none()
    );
    let mut orphan = mk("C", &[]);
    orphan.project_id = uuid::Uuid::now_v7();
    assert!(matches!(
        s.create_note(orphan).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert!(s.delete_note(b.id).await.unwrap());
    assert!(!s.delete_note(b.id).await.unwrap());
    s.delete_project(project).await.unwrap();
    assert!(s.get_note(a.id).await.unwrap().is_none());
}

fn def(name: &str, cron: &str) -> bunko_core::schedule::ScheduleDef {
    bunko_core::schedule::ScheduleDef {
        name: name.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        job: "system.noop".into(),
        queue: String::new(),
        params: json!({"k": 1}),
        enabled: true,
        missed: bunko_core::schedule::Missed::Skip,
    }
}

pub async fn schedules_sync_pause_and_history(s: Store) {
    use bunko_core::schedule::{Origin, RunKind, ScheduleRun};
    s.sync_config_schedules(&[def("a", "@daily"), def("b", "*/5 * * * *")])
        .await
        .unwrap();
    let api = s.create_schedule(&def("c", "@hourly")).await.unwrap();
    assert_eq!(api.origin, Origin::Api);
    assert!(matches!(
        s.create_schedule(&def("a", "@hourly")).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    // A config schedule may not take an API schedule's name.
    assert!(matches!(
        s.sync_config_schedules(&[def("c", "@daily")])
            .await
            .unwrap_err(),
        StoreError::Conflict(_)
    ));
    let names: Vec<String> = s
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.def.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    // History and pause survive a restart with the same configuration; a changed definition
    // gets its next slot recomputed; an unconfigured one goes, API ones stay.
    s.set_schedule_next_run("a", Some(1_000)).await.unwrap();
    s.set_schedule_next_run("b", Some(2_000)).await.unwrap();
    let run = ScheduleRun {
        schedule: "a".into(),
        slot_ms: 1_000,
        fired_at_ms: 1_500,
        kind: RunKind::OnTime,
        job_id: None,
        slots: 1,
    };
    s.record_schedule_run(&run, Some(86_401_000)).await.unwrap();
    let paused = s.set_schedule_paused("a", true).await.unwrap().unwrap();
    assert!(paused.paused);
    assert_eq!(paused.next_run_ms, Some(86_401_000));
    assert_eq!(paused.last_run_ms, Some(1_500));
    s.sync_config_schedules(&[def("a", "@daily"), def("b", "*/10 * * * *")])
        .await
        .unwrap();
    let a = s.get_schedule("a").await.unwrap().unwrap();
    assert!(a.paused);
    assert_eq!(a.next_run_ms, Some(86_401_000));
    let b = s.get_schedule("b").await.unwrap().unwrap();
    assert_eq!(b.def.cron, "*/10 * * * *");
    assert_eq!(b.next_run_ms, None, "a changed definition starts afresh");
    s.sync_config_schedules(&[def("b", "*/10 * * * *")])
        .await
        .unwrap();
    assert!(s.get_schedule("a").await.unwrap().is_none());
    assert!(s.get_schedule("c").await.unwrap().is_some());
    // Resuming drops the slot computed before the pause.
    s.set_schedule_paused("b", true).await.unwrap();
    let b = s.set_schedule_paused("b", false).await.unwrap().unwrap();
    assert!(!b.paused && b.next_run_ms.is_none());
    // Config schedules are not deleted over the API; API ones are, with their history.
    assert!(!s.delete_schedule("b").await.unwrap());
    s.record_schedule_run(
        &ScheduleRun {
            schedule: "c".into(),
            ..run.clone()
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.schedule_runs("c", 10).await.unwrap().len(), 1);
    assert!(s.delete_schedule("c").await.unwrap());
    assert!(s.schedule_runs("c", 10).await.unwrap().is_empty());
}

pub async fn one_scheduler_lease_at_a_time(s: Store) {
    assert!(s.try_lease("scheduler", "p1", 60_000).await.unwrap());
    assert!(
        s.try_lease("scheduler", "p1", 60_000).await.unwrap(),
        "renewed"
    );
    assert!(!s.try_lease("scheduler", "p2", 60_000).await.unwrap());
    // Expired: another holder takes it.
    assert!(s.try_lease("other", "p1", -1).await.unwrap());
    assert!(s.try_lease("other", "p2", 60_000).await.unwrap());
    assert!(!s.try_lease("other", "p1", 60_000).await.unwrap());
}

pub async fn scheduler_fires_each_slot_once_and_handles_missed_slots(s: Store) {
    use bunko_core::schedule::{Missed, RunKind, Scheduler};
    let minute = 60_000i64;
    // 2026-01-01T00:00:00Z
    let t0 = 1_767_225_600_000i64;
    let mut every5 = def("every5", "*/5 * * * *");
    every5.missed = Missed::Skip;
    let mut hourly = def("hourly", "0 * * * *");
    hourly.missed = Missed::CatchUpOnce;
    s.sync_config_schedules(&[every5, hourly]).await.unwrap();
    let a = Scheduler::new(30_000);
    let b = Scheduler::new(30_000);
    // First look: next slots computed, nothing fired.
    let t = a.tick(s.as_ref(), t0 + 30_000).await.unwrap();
    assert!(t.leader && t.fired.is_empty());
    assert_eq!(
        s.get_schedule("every5").await.unwrap().unwrap().next_run_ms,
        Some(t0 + 5 * minute)
    );
    // The other process is not the leader while the lease holds.
    assert!(!b.tick(s.as_ref(), t0 + 5 * minute).await.unwrap().leader);
    // On time: one job for the slot, with the schedule's params.
    let t = a.tick(s.as_ref(), t0 + 5 * minute + 3_000).await.unwrap();
    assert_eq!(t.fired.len(), 1);
    let run = &t.fired[0];
    assert_eq!((run.kind, run.slot_ms), (RunKind::OnTime, t0 + 5 * minute));
    let job = s.get_job(run.job_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(job.kind, "system.noop");
    assert_eq!(job.payload["k"], 1);
    assert_eq!(job.payload["schedule"], "every5");
    // The same tick again (another process after a lease change): nothing new.
    let again = a.tick(s.as_ref(), t0 + 5 * minute + 4_000).await.unwrap();
    assert!(again.fired.is_empty());
    // A second scheduler racing for the same slot enqueues nothing new (idempotency key).
    s.set_schedule_next_run("every5", Some(t0 + 5 * minute))
        .await
        .unwrap();
    let dup = a.tick(s.as_ref(), t0 + 5 * minute + 5_000).await.unwrap();
    assert_eq!(
        dup.fired[0].job_id, run.job_id,
        "the slot's job, not a second one"
    );
    // Downtime of three hours: `skip` records the missed slots and enqueues nothing;
    // `catch_up_once` enqueues one job for all of them.
    let later = t0 + 3 * 60 * minute + 3 * minute;
    let t = a.tick(s.as_ref(), later).await.unwrap();
    let by = |name: &str| t.fired.iter().find(|r| r.schedule == name).unwrap().clone();
    let skipped = by("every5");
    assert_eq!(skipped.kind, RunKind::Skipped);
    assert!(skipped.job_id.is_none());
    assert_eq!(skipped.slots, 35, "00:10 … 03:00 every 5 minutes");
    let caught = by("hourly");
    assert_eq!(caught.kind, RunKind::CatchUp);
    assert_eq!(caught.slots, 3);
    assert!(caught.job_id.is_some());
    assert_eq!(
        s.get_schedule("hourly").await.unwrap().unwrap().next_run_ms,
        Some(t0 + 4 * 60 * minute)
    );
    // Back within a slot's grace after more downtime: the missed slots are skipped, the
    // current one runs.
    let t = a
        .tick(s.as_ref(), t0 + 4 * 60 * minute + 30_000)
        .await
        .unwrap();
    let every5: Vec<_> = t.fired.iter().filter(|r| r.schedule == "every5").collect();
    assert_eq!(every5.len(), 2, "{every5:?}");
    assert_eq!((every5[0].kind, every5[0].slots), (RunKind::Skipped, 11));
    assert_eq!(every5[1].kind, RunKind::OnTime);
    assert!(every5[1].job_id.is_some());
    let history = s.schedule_runs("every5", 10).await.unwrap();
    assert_eq!(
        history.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [
            RunKind::OnTime,
            RunKind::Skipped,
            RunKind::Skipped,
            RunKind::OnTime,
            RunKind::OnTime
        ]
    );
    // Paused and disabled schedules do not fire; run-now does, outside the slots.
    s.set_schedule_paused("hourly", true).await.unwrap();
    let t = a.tick(s.as_ref(), t0 + 5 * 60 * minute).await.unwrap();
    assert!(t.fired.iter().all(|r| r.schedule != "hourly"));
    let manual = bunko_core::schedule::run_now(s.as_ref(), "hourly")
        .await
        .unwrap();
    assert_eq!(manual.kind, RunKind::Manual);
    assert!(s.get_job(manual.job_id.unwrap()).await.unwrap().is_some());
    assert!(matches!(
        bunko_core::schedule::run_now(s.as_ref(), "nope")
            .await
            .unwrap_err(),
        StoreError::NotFound(_)
    ));
}

pub async fn cleanup_purges_finished_jobs_and_expired_sessions(s: Store) {
    // Jobs: succeeded and cancelled go once past the cutoff; dead and queued stay.
    let ok = s.enqueue(job("ok")).await.unwrap().id;
    let leased = s.lease("q", "w", TTL).await.unwrap().unwrap();
    assert_eq!(leased.id, ok);
    assert!(s.complete(ok, "w", None).await.unwrap());
    let cancelled = s.enqueue(job("c")).await.unwrap().id;
    s.cancel(cancelled).await.unwrap();
    let dead = s
        .enqueue(NewJob {
            max_attempts: 1,
            ..job("d")
        })
        .await
        .unwrap()
        .id;
    let j = s.lease("q", "w", TTL).await.unwrap().unwrap();
    assert_eq!(j.id, dead);
    s.fail(
        dead,
        "w",
        &JobFailure::permanent(Code::JobFailed, "x"),
        None,
    )
    .await
    .unwrap();
    let waiting = s.enqueue(job("w")).await.unwrap().id;
    let now = bunko_core::ids::now_ms();
    assert_eq!(
        s.purge_finished_jobs(now - 60_000).await.unwrap(),
        0,
        "too recent"
    );
    assert_eq!(s.purge_finished_jobs(now + 60_000).await.unwrap(), 2);
    assert!(s.get_job(ok).await.unwrap().is_none());
    assert!(s.get_job(cancelled).await.unwrap().is_none());
    assert!(s.get_job(dead).await.unwrap().is_some());
    assert!(s.get_job(waiting).await.unwrap().is_some());

    // Sessions: expired tokens go; a session left without tokens goes when revoked (or a day
    // old); a live one stays.
    let u = s.create_user(new_user("clean@x")).await.unwrap();
    let live = s.create_session(u.id, None, None).await.unwrap();
    s.add_refresh_token(live, "live", now + 600_000)
        .await
        .unwrap();
    let gone = s.create_session(u.id, None, None).await.unwrap();
    s.add_refresh_token(gone, "old", now - 1_000).await.unwrap();
    s.revoke_session(gone, "logout").await.unwrap();
    let fresh = s.create_session(u.id, None, None).await.unwrap();
    s.add_refresh_token(fresh, "stale", now - 1_000)
        .await
        .unwrap();
    assert_eq!(s.purge_expired_sessions(now).await.unwrap(), (2, 1));
    assert!(s.session_user(live, u.id).await.unwrap().is_some());
    assert_eq!(
        s.use_refresh_token("live", now).await.unwrap(),
        bunko_core::ports::RefreshUse::Rotated {
            session_id: live,
            user_id: u.id
        }
    );
    // The unrevoked session without tokens is less than a day old: kept for now.
    assert_eq!(s.purge_expired_sessions(now).await.unwrap(), (0, 0));
    assert_eq!(
        s.purge_expired_sessions(now + 2 * 86_400_000)
            .await
            .unwrap()
            .1,
        2,
        "a day later: the stale session and the live one, whose token has expired too"
    );
    let _ = fresh;
    assert!(s.referenced_blobs().await.unwrap().is_empty());
    assert_eq!(s.integrity_check().await.unwrap(), "ok");
    assert_eq!(s.chunk_count().await.unwrap(), 0);
}

fn source(name: &str, url: &str) -> bunko_core::sources::SourceDef {
    serde_json::from_value(json!({"name": name, "kind": "feed", "project": "p", "url": url}))
        .unwrap()
}

pub async fn sources_keep_cursors_items_and_outcomes(s: Store) {
    use bunko_core::schedule::Origin;
    use bunko_core::sources::CrawlStats;
    s.sync_config_sources(&[source("a", "https://a.example/feed")])
        .await
        .unwrap();
    let api = s
        .create_source(&source("b", "https://b.example/feed"))
        .await
        .unwrap();
    assert_eq!(api.origin, Origin::Api);
    assert!(matches!(
        s.create_source(&source("a", "https://x/"))
            .await
            .unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert!(matches!(
        s.sync_config_sources(&[source("b", "https://x/")])
            .await
            .unwrap_err(),
        StoreError::Conflict(_)
    ));
    // Cursor and items survive a changed definition.
    s.save_source_cursor("a", &serde_json::json!({"etag": "\"x\""}))
        .await
        .unwrap();
    s.put_source_item("a", "k1", "h1", None).await.unwrap();
    s.put_source_item("a", "k1", "h2", None).await.unwrap();
    s.put_source_item("a", "k2", "h3", None).await.unwrap();
    s.sync_config_sources(&[source("a", "https://a.example/other")])
        .await
        .unwrap();
    let a = s.get_source("a").await.unwrap().unwrap();
    assert_eq!(a.def.url.as_deref(), Some("https://a.example/other"));
    assert_eq!(a.cursor["etag"], "\"x\"");
    assert_eq!(
        s.source_item("a", "k1")
            .await
            .unwrap()
            .unwrap()
            .content_hash,
        "h2"
    );
    assert_eq!(s.source_items("a").await.unwrap().len(), 2);
    s.forget_source_item("a", "k2").await.unwrap();
    assert!(s.source_item("a", "k2").await.unwrap().is_none());
    // Outcomes.
    let stats = CrawlStats {
        added: 3,
        ..Default::default()
    };
    s.finish_crawl("a", None, &stats, Some("source_failed: boom"))
        .await
        .unwrap();
    let a = s.get_source("a").await.unwrap().unwrap();
    assert_eq!(a.last_status.as_deref(), Some("failed"));
    assert_eq!(a.last_stats.added, 3);
    s.finish_crawl("a", None, &stats, None).await.unwrap();
    let a = s.get_source("a").await.unwrap().unwrap();
    assert_eq!((a.last_status.as_deref(), a.last_error), (Some("ok"), None));
    // A config source that goes away takes its items along; API ones are deleted by name.
    s.sync_config_sources(&[]).await.unwrap();
    assert!(s.get_source("a").await.unwrap().is_none());
    assert!(s.source_items("a").await.unwrap().is_empty());
    assert_eq!(
        s.list_sources()
            .await
            .unwrap()
            .iter()
            .map(|x| x.def.name.clone())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert!(s.delete_source("b").await.unwrap());
    assert!(!s.delete_source("b").await.unwrap());
}

pub async fn versions_are_ordered_and_current_by_date(s: Store) {
    use bunko_core::documents::*;
    use bunko_core::search::SearchFilters;
    let p = s
        .create_project(NewProject {
            name: "Laws".into(),
            slug: "laws".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let version = |sha: &str, v: &str, from: &str| NewDocument {
        project_id: p.id,
        title: "file name".into(),
        filename: format!("{v}.txt"),
        doc_type: DocType::Text,
        sha256: sha.into(),
        size_bytes: 1,
        source: "egov".into(),
        tags: vec![],
        origin: Some(NewOrigin {
            external_id: "egov:law".into(),
            version: Some(v.into()),
            valid_from: Some(from.into()),
            title: Some("Some Act".into()),
            meta: serde_json::json!({"law_num": "No. 1"}),
        }),
    };
    // Added out of order, one not yet in force.
    let (b, _) = s
        .create_document(version("b1", "r2", "2020-04-01"))
        .await
        .unwrap();
    let (a, _) = s
        .create_document(version("a1", "r1", "2010-01-01"))
        .await
        .unwrap();
    let (c, _) = s
        .create_document(version("c1", "r3", "2030-01-01"))
        .await
        .unwrap();
    let (plain, _) = s
        .create_document(NewDocument {
            origin: None,
            sha256: "d1".into(),
            title: "Upload".into(),
            ..version("x", "x", "x")
        })
        .await
        .unwrap();
    assert_eq!(b.title, "Some Act", "the source's title, not the file's");
    let now = bunko_core::ids::now_ms();
    let added = s
        .documents_added_between(now - 60_000, now + 1)
        .await
        .unwrap();
    assert_eq!(
        added.iter().map(|d| d.id).collect::<Vec<_>>(),
        [b.id, a.id, c.id, plain.id]
    );
    assert!(
        s.documents_added_between(now + 1, now + 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.superseded_documents(&[p.id]).await.unwrap().is_empty());
    s.refresh_versions(p.id, "egov:law", "2025-06-01")
        .await
        .unwrap();
    let vs = s.document_versions(p.id, "egov:law").await.unwrap();
    let ids: Vec<_> = vs.iter().map(|d| d.id).collect();
    assert_eq!(ids, [a.id, b.id, c.id]);
    let o = |i: usize| vs[i].origin.clone().unwrap();
    assert_eq!(o(0).valid_to.as_deref(), Some("2020-04-01"));
    assert_eq!(o(1).valid_to.as_deref(), Some("2030-01-01"));
    assert_eq!(o(2).valid_to, None);
    assert_eq!(
        [o(0).current, o(1).current, o(2).current],
        [false, true, false]
    );
    assert_eq!(o(1).meta["law_num"], "No. 1");
    let mut superseded = s.superseded_documents(&[p.id]).await.unwrap();
    superseded.sort();
    let mut want = vec![a.id, c.id];
    want.sort();
    assert_eq!(superseded, want, "the old and the not-yet-valid versions");
    // Once the date passes, the future revision is the current one.
    s.refresh_versions(p.id, "egov:law", "2030-01-01")
        .await
        .unwrap();
    let vs = s.document_versions(p.id, "egov:law").await.unwrap();
    assert!(vs[2].origin.as_ref().unwrap().current && !vs[1].origin.as_ref().unwrap().current);
    s.refresh_versions(p.id, "egov:law", "2025-06-01")
        .await
        .unwrap();

    // Search filters: current versions by default; `as_of` picks the version of that day.
    let done = Processed {
        title: None,
        meta: DocMeta::default(),
        language: None,
        pages: vec![],
        chunks: vec![],
    };
    for d in [a.id, b.id, c.id, plain.id] {
        s.finish_document(d, &done).await.unwrap();
    }
    assert_eq!(
        s.get_document(b.id).await.unwrap().unwrap().title,
        "Some Act"
    );
    let ready = |f: SearchFilters| {
        let s = s.clone();
        async move {
            let mut v = s.filter_documents(&[p.id], &f).await.unwrap();
            v.sort();
            v
        }
    };
    let mut want = vec![b.id, plain.id];
    want.sort();
    assert_eq!(ready(SearchFilters::default()).await, want);
    for (day, version) in [
        ("2015-05-05", a.id),
        ("2020-04-01", b.id),
        ("2031-01-01", c.id),
    ] {
        let mut want = vec![version, plain.id];
        want.sort();
        let got = ready(SearchFilters {
            as_of: Some(day.into()),
            ..Default::default()
        })
        .await;
        assert_eq!(got, want, "as of {day}");
    }
    let before = ready(SearchFilters {
        as_of: Some("2000-01-01".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(before, vec![plain.id], "no version was valid then");
}
