//! The scheduler over HTTP and the CLI: configured schedules appear with their next slot,
//! schedules are made, paused, resumed, run now and deleted by administrators only, every
//! firing is a job with its history, bad definitions are refused with the reason (in the
//! configuration at load, over the API with 422), and the metrics carry each schedule.
#![allow(clippy::unwrap_used)]

use crate::it::documents::start;
use crate::it::support::{bunko, text};
use std::time::{Duration, Instant};

fn config_schedule(c: &mut bunko_core::config::Config) {
    c.scheduler.tick_secs = 1;
    c.scheduler.lease_secs = 5;
    c.schedules = vec![
        toml::from_str(
            r#"
name = "noop-minutely"
cron = "* * * * *"
timezone = "Asia/Tokyo"
job = "system.noop"
params = { note = "from the config" }
missed = "catch_up_once"
"#,
        )
        .unwrap(),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_over_http_fire_as_jobs_with_history() {
    let d = start(config_schedule).await;
    bunko_server::scheduler::start(&d.state).await.unwrap();

    // The configured schedule, with its next slot once the scheduler has looked.
    let until = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let v = d.get("/api/v1/schedules").await.json();
        if v["items"][0]["next_run"].is_string() {
            break v;
        }
        assert!(Instant::now() < until, "no next slot: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let s = &listed["items"][0];
    assert_eq!(s["name"], "noop-minutely");
    assert_eq!(s["origin"], "config");
    assert_eq!(s["queue"], "default", "the kind's own queue");
    assert_eq!(s["missed"], "catch_up_once");
    assert!(s["next_run"].as_str().unwrap().ends_with(":00Z"), "{s}");

    // Made over the API.
    let made = d
        .post_json(
            "/api/v1/schedules",
            r#"{"name": "prune-nightly", "cron": "0 3 * * *", "timezone": "Asia/Tokyo", "job": "audit.prune"}"#,
        )
        .await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    assert_eq!(made.json()["origin"], "api");
    // Bad definitions say why; a taken name is a conflict.
    for (body, why) in [
        (
            r#"{"name": "x", "cron": "61 * * * *", "job": "system.noop"}"#,
            "outside 0-59",
        ),
        (
            r#"{"name": "x", "cron": "@daily", "timezone": "Mars/Base", "job": "system.noop"}"#,
            "time zone",
        ),
        (
            r#"{"name": "x", "cron": "@daily", "job": "crawl.nowhere"}"#,
            "not one this build runs",
        ),
        (
            r#"{"name": "Bad Name", "cron": "@daily", "job": "system.noop"}"#,
            "lowercase",
        ),
        (
            r#"{"name": "x", "cron": "@daily", "job": "system.noop", "missed": "sometimes"}"#,
            "catch_up_once",
        ),
        (
            r#"{"name": "x", "cron": "@daily", "job": "system.noop", "params": [1]}"#,
            "params",
        ),
    ] {
        let r = d.post_json("/api/v1/schedules", body).await;
        assert_eq!(r.code(422), "invalid_input", "{body}");
        assert!(
            r.json()["detail"].as_str().unwrap().contains(why),
            "{body}: {}",
            r.json()
        );
    }
    let dup = d
        .post_json(
            "/api/v1/schedules",
            r#"{"name": "prune-nightly", "cron": "@daily", "job": "audit.prune"}"#,
        )
        .await;
    assert_eq!(dup.code(409), "conflict");
    assert_eq!(d.post_json("/api/v1/schedules", "{oops").await.status, 400);

    // Only administrators.
    let member = d.member("someone@example.org", None).await;
    let r = d.json_as(&member, "GET", "/api/v1/schedules", "").await;
    assert_eq!(r.status, 403);

    // Run now: a job, in the history with its state.
    let run = d.post_json("/api/v1/schedules/noop-minutely/run", "").await;
    assert_eq!(run.status, 202, "{}", String::from_utf8_lossy(&run.body));
    let job = run.json()["job_id"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let j = d.get(&format!("/api/v1/jobs/{job}")).await.json();
        if j["state"] == "succeeded" {
            assert_eq!(j["payload"]["note"], "from the config");
            assert_eq!(j["payload"]["schedule"], "noop-minutely");
            break;
        }
        assert!(Instant::now() < until, "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = d.get("/api/v1/schedules/noop-minutely/runs").await.json();
    let manual = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "manual")
        .unwrap();
    assert_eq!(manual["job_state"], "succeeded");
    assert_eq!(
        d.get("/api/v1/schedules/noop-minutely/runs?limit=0")
            .await
            .code(400),
        "invalid_query"
    );

    // Pause and resume; deleting a configured schedule is refused, an API one goes.
    let p = d
        .post_json("/api/v1/schedules/noop-minutely/pause", "")
        .await;
    assert_eq!(p.json()["paused"], true);
    let r = d
        .post_json("/api/v1/schedules/noop-minutely/resume", "")
        .await;
    assert_eq!(r.json()["paused"], false);
    assert_eq!(
        d.delete("/api/v1/schedules/noop-minutely").await.code(409),
        "conflict"
    );
    assert_eq!(
        d.delete("/api/v1/schedules/prune-nightly").await.status,
        204
    );
    assert_eq!(
        d.get("/api/v1/schedules/prune-nightly").await.code(404),
        "not_found"
    );
    assert_eq!(
        d.post_json("/api/v1/schedules/nope/run", "")
            .await
            .code(404),
        "not_found"
    );

    // Metrics per schedule.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let m = String::from_utf8(d.get("/metrics").await.body).unwrap();
        if m.contains(r#"bunko_schedule_next_run_timestamp_seconds{schedule="noop-minutely"}"#)
            && m.contains(
                r#"bunko_schedule_last_outcome{outcome="succeeded",schedule="noop-minutely"} 1"#,
            )
        {
            break;
        }
        assert!(Instant::now() < until, "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An invalid cron expression or time zone in the configuration is refused at load, naming
/// the entry and the reason.
#[test]
fn bad_schedules_in_the_configuration_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (entry, why) in [
        (
            "cron = \"0 25 * * *\"\njob = \"system.noop\"",
            "outside 0-23",
        ),
        (
            "cron = \"@daily\"\ntimezone = \"Europe/Atlantis\"\njob = \"system.noop\"",
            "time zone",
        ),
    ] {
        let cfg = dir.path().join("bunko.toml");
        std::fs::write(&cfg, format!("[[schedules]]\nname = \"bad\"\n{entry}\n")).unwrap();
        let out = bunko(dir.path(), &["--config", cfg.to_str().unwrap(), "migrate"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("schedules[0]") && err.contains(why), "{err}");
    }
}

/// The self-check runs at start (and hourly): its report is in `/readyz` and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_check_reports_in_readyz_and_metrics() {
    let d = start(|_| {}).await;
    let until = Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let v = d.get("/readyz").await.json();
        let c = &v["components"]["selfcheck"];
        let detail = c["detail"].as_str().unwrap_or_default().to_owned();
        if !detail.starts_with("no self-check") {
            assert_eq!(c["status"], "up", "{v}");
            assert_eq!(v["status"], "ready", "{v}");
            break detail;
        }
        assert!(Instant::now() < until, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        detail.starts_with("all checks ok") || detail.starts_with("at "),
        "{detail}"
    );
    let m = String::from_utf8(d.get("/metrics").await.body).unwrap();
    assert!(
        m.contains(r#"bunko_selfcheck_status{check="database"} 0"#),
        "{m}"
    );
    assert!(m.contains(r#"bunko_selfcheck_status{check="disk"}"#), "{m}");
    assert!(
        !m.contains("bunko_selfcheck_last_run_timestamp_seconds 0\n"),
        "{m}"
    );
    // The job's own report.
    let jobs = d
        .get("/api/v1/jobs?kind=maintenance.selfcheck&state=succeeded")
        .await
        .json();
    let checks = jobs["items"][0]["result"]["checks"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["database", "index", "disk", "models", "llm"]);
}
