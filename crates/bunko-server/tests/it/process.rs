//! Real `bunko serve` processes: logs, signals, shutdown, jobs across processes, promtool.

use super::support::{Server, bunko, client, require_tool, text};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn enqueue(s: &Server, body: Value) -> String {
    let r = client()
        .post(s.url("/api/v1/jobs"))
        .bearer_auth(s.token())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn job(s: &Server, id: &str) -> Value {
    client()
        .get(s.url(&format!("/api/v1/jobs/{id}")))
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_state(s: &Server, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = job(s, id).await;
        if j["state"] == state {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job never {state}: {j}\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn job_from_cli(data_dir: &std::path::Path, id: &str) -> Value {
    let out = bunko(
        std::path::Path::new("."),
        &[
            "--data-dir",
            data_dir.to_str().unwrap(),
            "jobs",
            "show",
            id,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str(&text(&out.stdout)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_ready_and_logs_structured_json() {
    let mut s = Server::start(&[], &[]);
    let r = client().get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(s.url("/api/v1/jobs"))
        .bearer_auth(s.token())
        .header("x-request-id", "rid-777")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, logs) = s.stop();
    assert!(status.success(), "{logs}");
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.len() >= 4, "{logs}");
    for l in &lines {
        for k in ["timestamp", "level", "target", "message"] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
        let ts = l["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
    }
    let req = lines
        .iter()
        .find(|l| l["request_id"] == "rid-777")
        .expect("request log line");
    assert_eq!(req["message"], "request finished");
    assert_eq!(req["route"], "/api/v1/jobs");
    assert_eq!(req["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(req["span_id"].as_str().unwrap().len(), 16);
    assert!(lines.iter().any(|l| l["message"] == "stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt");
    std::fs::write(
        &secret_file,
        "planted-jwt-secret-0123456789abcdef0123456789",
    )
    .unwrap();
    let mut s = Server::start(
        &["--log-level", "trace"],
        &[(
            "BUNKO__AUTH__JWT_SECRET_FILE",
            secret_file.to_str().unwrap(),
        )],
    );
    let token = s.token();
    let c = client();
    let _ = c
        .get(s.url("/api/v1/jobs"))
        .header("authorization", "Bearer planted-bearer-secret")
        .send()
        .await
        .unwrap();
    let _ = c
        .get(s.url("/api/v1/jobs"))
        .header("cookie", "session=planted-cookie-secret")
        .send()
        .await
        .unwrap();
    let _ = c
        .get(s.url("/api/v1/jobs?token=planted-query-secret"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let r = c
        .post(s.url("/api/v1/projects"))
        .bearer_auth(&token)
        .json(&json!({"name": "x", "password": "planted-password-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .post(s.url("/api/v1/projects"))
        .bearer_auth(&token)
        .json(&json!({"name": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, logs) = s.stop();
    assert!(
        logs.contains("request finished"),
        "trace logging was on: {logs}"
    );
    for planted in [
        "planted-bearer-secret",
        "planted-cookie-secret",
        "planted-query-secret",
        "planted-password-secret",
        "planted-jwt-secret",
        &token,
    ] {
        assert!(!logs.contains(planted), "{planted} appeared in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_a_clear_failure() {
    let s = Server::start(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
            "serve",
            "--listen",
            &s.addr,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("already in use") && err.contains("--listen"),
        "{err}"
    );
    assert_eq!(
        client()
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the first server is unharmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_jobs_before_exit() {
    let mut s = Server::start(&[], &[]);
    let id = enqueue(&s, json!({"kind": "system.sleep", "payload": {"ms": 1500}})).await;
    wait_state(&s, &id, "running").await;
    let data = s.data_dir.clone();
    let t = Instant::now();
    let (status, logs) = s.stop();
    assert!(status.success(), "{logs}");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "exited before the job could finish"
    );
    let j = job_from_cli(&data, &id);
    assert_eq!(j["state"], "succeeded", "{j}\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_over_gives_the_job_back() {
    let mut s = Server::start(&[], &[("BUNKO__SERVER__SHUTDOWN_GRACE_SECS", "1")]);
    let id = enqueue(
        &s,
        json!({"kind": "system.sleep", "payload": {"ms": 600000}}),
    )
    .await;
    wait_state(&s, &id, "running").await;
    let data = s.data_dir.clone();
    let t = Instant::now();
    let (status, logs) = s.stop();
    assert!(status.success(), "{logs}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    let j = job_from_cli(&data, &id);
    assert_eq!(
        (j["state"].as_str(), j["attempts"].as_u64()),
        (Some("queued"), Some(0)),
        "{j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_too() {
    let mut s = Server::start(&[], &[]);
    s.signal("INT");
    let (status, logs) = s.stop_after_signal();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("SIGINT"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_server_share_a_data_dir() {
    let s = Server::start(&[], &[]);
    let dd = s.data_dir.to_str().unwrap().to_owned();
    let out = bunko(
        std::path::Path::new("."),
        &[
            "--data-dir",
            &dd,
            "jobs",
            "enqueue",
            "system.noop",
            "--payload",
            "{\"from\":\"cli\"}",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = serde_json::from_str::<Value>(&text(&out.stdout)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = wait_state(&s, &id, "succeeded").await;
    assert_eq!(j["result"], json!({"from": "cli"}));
    // The server enqueues its daily audit retention job at start; the worker runs it.
    let list: Value = client()
        .get(s.url("/api/v1/jobs?kind=audit.prune"))
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prune = list["items"][0]["id"]
        .as_str()
        .expect("audit.prune enqueued")
        .to_owned();
    let done = wait_state(&s, &prune, "succeeded").await;
    assert_eq!(done["result"]["deleted"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_process_died_runs_again_after_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("BUNKO__JOBS__LEASE_TTL_SECS", "2")];
    let mut first = Server::start_in(dir.path(), &data, &[], &env);
    let id = enqueue(
        &first,
        json!({"kind": "system.sleep", "payload": {"ms": 1000}}),
    )
    .await;
    wait_state(&first, &id, "running").await;
    first.child.kill().unwrap(); // SIGKILL: no chance to give the job back
    first.child.wait().unwrap();
    drop(first);
    let second = Server::start_in(dir.path(), &data, &[], &env);
    let j = wait_state(&second, &id, "succeeded").await;
    assert_eq!(j["attempts"], 2, "{j}");
    assert_eq!(j["last_error_code"], "lease_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let s = Server::start(&[], &[]);
    let c = client();
    c.get(s.url("/healthz")).send().await.unwrap();
    c.get(s.url("/nope")).send().await.unwrap();
    enqueue(&s, json!({"kind": "system.noop"})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let body = s.metrics().await;
    for name in [
        "bunko_http_requests_total",
        "bunko_http_request_duration_seconds_bucket",
        "bunko_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "bunko_jobs{",
        "bunko_job_duration_seconds_bucket",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).trim().is_empty() && text(&out.stderr).trim().is_empty(),
        "lint findings: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_disabled_from_the_shell_is_refused_by_the_running_server() {
    let s = Server::start(&[], &[]);
    let c = client();
    let r = c
        .post(s.url("/api/v1/users"))
        .bearer_auth(s.token())
        .json(&json!({"email": "temp@x.org", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login: Value = c
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"email": "temp@x.org", "password": "a long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let me = || async {
        c.get(s.url("/api/v1/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(me().await, 200);
    let out = bunko(
        std::path::Path::new("."),
        &[
            "--data-dir",
            s.data_dir.to_str().unwrap(),
            "user",
            "disable",
            "temp@x.org",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Another process changed the database: the server's 1 s credential cache must let go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while me().await == 200 {
        assert!(
            Instant::now() < deadline,
            "the disabled user's token still works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(me().await, 401);
}

/// A second worker on a server's data dir starts and works every queue but `ingest`: the
/// embedded search index has one writer, the server, which keeps processing documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_worker_beside_the_server_leaves_documents_to_it() {
    let s = Server::start(&[], &[("BUNKO__LOCAL__EMBEDDER", "none")]);
    let mut w = std::process::Command::new(crate::it::support::BIN)
        .args(["--data-dir", s.data_dir.to_str().unwrap(), "worker"])
        .env("BUNKO__LOG__FORMAT", "json")
        .env(
            crate::it::support::DICT_CACHE_VAR,
            crate::it::support::DICT_CACHE,
        )
        .env("BUNKO__LOCAL__EMBEDDER", "none")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(w.try_wait().unwrap().is_none(), "the extra worker exited");
    // The server still processes an upload.
    let dd = s.data_dir.to_str().unwrap().to_owned();
    let out = bunko(
        std::path::Path::new("."),
        &["--data-dir", &dd, "project", "create", "Side"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("note.md");
    std::fs::write(&f, "# Note\n\nThe heron waits by the river.\n").unwrap();
    let out = bunko(
        std::path::Path::new("."),
        &[
            "--data-dir",
            &dd,
            "ingest",
            f.to_str().unwrap(),
            "--project",
            "side",
            "--wait",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"ready\""),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("its worker processes the files"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::process::Command::new("kill")
        .arg(w.id().to_string())
        .status();
    let status = w.wait().unwrap();
    let mut logs = String::new();
    use std::io::Read;
    w.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("leaves documents"), "{logs}");
}
