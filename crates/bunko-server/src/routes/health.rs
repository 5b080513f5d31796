//! Liveness, readiness and metrics.

use crate::app::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bunko_core::jobs::JobState;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process answers.
    status: &'static str,
    version: &'static str,
}

/// Liveness: the process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        version: crate::app::VERSION,
    })
}

#[derive(Serialize, ToSchema)]
pub struct Component {
    /// `up`, `down`, `disabled` or `draining`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    components: BTreeMap<&'static str, Component>,
}

fn up(detail: Option<String>, latency_ms: Option<f64>) -> Component {
    Component {
        status: "up",
        detail,
        latency_ms,
    }
}

/// The last self-check: `down` when its database or disk check failed, `up` otherwise (its
/// warnings in the detail).
async fn selfcheck_component(state: &AppState) -> Component {
    use crate::selfcheck::Status;
    let Ok(Some(r)) = tokio::time::timeout(
        Duration::from_secs(2),
        crate::selfcheck::last(state.store.as_ref()),
    )
    .await
    else {
        return up(Some("no self-check has run yet".into()), None);
    };
    let notes: Vec<String> = r
        .checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let failed = r
        .checks
        .iter()
        .any(|c| c.status == Status::Fail && matches!(c.name.as_str(), "database" | "disk"));
    let at = bunko_core::ids::rfc3339(r.at_ms);
    Component {
        status: if failed { "down" } else { "up" },
        detail: Some(if notes.is_empty() {
            format!("all checks ok at {at}")
        } else {
            format!("at {at}: {}", notes.join("; "))
        }),
        latency_ms: None,
    }
}

/// Readiness: every component's state; 503 when one is down or the server is shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut components = BTreeMap::new();
    let t = Instant::now();
    let db = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => up(
            Some(state.store.backend().into()),
            Some(t.elapsed().as_secs_f64() * 1000.0),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database ping failed");
            Component {
                status: "down",
                detail: Some("database ping failed".into()),
                latency_ms: None,
            }
        }
        Err(_) => Component {
            status: "down",
            detail: Some("database ping timed out".into()),
            latency_ms: None,
        },
    };
    components.insert("database", db);
    let dir_ok = std::fs::metadata(state.data_dir())
        .map(|m| m.is_dir())
        .unwrap_or(false);
    components.insert(
        "data_dir",
        if dir_ok {
            up(None, None)
        } else {
            Component {
                status: "down",
                detail: Some("data dir is missing".into()),
                latency_ms: None,
            }
        },
    );
    components.insert(
        "worker",
        match &state.worker {
            Some(w) => up(Some(format!("{} running job(s)", w.running())), None),
            None => Component {
                status: "disabled",
                detail: None,
                latency_ms: None,
            },
        },
    );
    components.insert("selfcheck", selfcheck_component(&state).await);
    components.insert(
        "server",
        if state.is_draining() {
            Component {
                status: "draining",
                detail: Some("shutting down".into()),
                latency_ms: None,
            }
        } else {
            up(None, None)
        },
    );
    let ready = components
        .values()
        .all(|c| matches!(c.status, "up" | "disabled"));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        components,
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    refresh_job_gauges(&state).await;
    refresh_index_gauges(&state).await;
    refresh_schedule_gauges(&state).await;
    if let Some(r) = crate::selfcheck::last(state.store.as_ref()).await {
        let m = &state.metrics;
        m.selfcheck_last_run.set(r.at_ms as f64 / 1000.0);
        for c in &r.checks {
            if crate::selfcheck::CHECKS.contains(&c.name.as_str()) {
                m.selfcheck_status
                    .with_label_values(&[c.name.as_str()])
                    .set(c.status.value());
            }
        }
    }
    if let Some(b) = crate::backup::last(state.store.as_ref()).await {
        let m = &state.metrics;
        m.backup_last_success.set(b.at_ms as f64 / 1000.0);
        m.backup_last_size.set(b.bytes as f64);
        m.backup_last_duration.set(b.seconds);
    }
    let text = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Each schedule's next and last firing and the state of its last job, read at scrape time.
async fn refresh_schedule_gauges(state: &AppState) {
    let Ok(Ok(schedules)) =
        tokio::time::timeout(Duration::from_secs(2), state.store.list_schedules()).await
    else {
        return;
    };
    let m = &state.metrics;
    m.schedule_next_run.reset();
    m.schedule_last_run.reset();
    m.schedule_last_outcome.reset();
    // The job states, plus `skipped` (missed slots passed over) and `none` (never fired).
    let outcomes: Vec<&str> = JobState::ALL
        .iter()
        .map(|s| s.as_str())
        .chain(["skipped", "none"])
        .collect();
    for s in schedules {
        let name = s.def.name.as_str();
        if let Some(t) = s.next_run_ms.filter(|_| s.def.enabled && !s.paused) {
            m.schedule_next_run
                .with_label_values(&[name])
                .set(t as f64 / 1000.0);
        }
        if let Some(t) = s.last_run_ms {
            m.schedule_last_run
                .with_label_values(&[name])
                .set(t as f64 / 1000.0);
        }
        let last = match state.store.schedule_runs(name, 1).await {
            Ok(runs) => runs.into_iter().next(),
            Err(_) => continue,
        };
        let outcome = match last.map(|r| r.job_id) {
            None => "none",
            Some(None) => "skipped",
            Some(Some(id)) => match state.store.get_job(id).await {
                Ok(Some(j)) => j.state.as_str(),
                _ => "none",
            },
        };
        for &o in &outcomes {
            m.schedule_last_outcome
                .with_label_values(&[name, o])
                .set(i64::from(o == outcome));
        }
    }
}

/// Index sizes and chunk counts, read at scrape time (a walk of two directories; the vector
/// half's count only once it is loaded — a scrape never loads the model).
async fn refresh_index_gauges(state: &AppState) {
    let st = state.clone();
    let sizes = tokio::task::spawn_blocking(move || {
        let root = st.config.data_dir.join("index");
        [
            ("keyword", dir_size(&root.join("keyword"))),
            ("vector", dir_size(&root.join("vector"))),
        ]
    })
    .await;
    let m = &state.metrics;
    if let Ok(sizes) = sizes {
        for (index, bytes) in sizes {
            m.index_size
                .with_label_values(&[index])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
    if let Some(pg) = &state.pg_index {
        // The index lives in PostgreSQL: its row counts (no files in the data dir).
        if let Ok((k, v)) = pg.search.counts().await {
            for (index, n) in [("keyword", k), ("vector", v)] {
                m.index_chunks
                    .with_label_values(&[index])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        return;
    }
    m.index_chunks
        .with_label_values(&["keyword"])
        .set(i64::try_from(state.keyword.num_docs()).unwrap_or(i64::MAX));
    if let Some(ready) = state.vector.loaded() {
        m.index_chunks
            .with_label_values(&["vector"])
            .set(i64::try_from(ready.index.len()).unwrap_or(i64::MAX));
    }
}

/// Bytes of the files under `dir` (0 when it does not exist).
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Queue depth is read from the store at scrape time, so it is right even when other
/// processes enqueue and run jobs. Every known queue × state has a series (zero included).
async fn refresh_job_gauges(state: &AppState) {
    let counts = match tokio::time::timeout(Duration::from_secs(2), state.store.job_counts()).await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: reading job counts failed");
            return;
        }
        Err(_) => return,
    };
    let mut queues: BTreeSet<String> = state.registry.queues().into_iter().collect();
    queues.extend(state.config.jobs.queues.keys().cloned());
    queues.extend(counts.iter().map(|(q, _, _)| q.clone()));
    let g = &state.metrics.jobs;
    for q in &queues {
        for s in JobState::ALL {
            let n = counts
                .iter()
                .find(|(cq, cs, _)| cq == q && *cs == s)
                .map(|c| c.2)
                .unwrap_or(0);
            g.with_label_values(&[q.as_str(), s.as_str()]).set(n);
        }
    }
}
