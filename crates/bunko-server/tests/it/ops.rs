//! What ships in deploy/: Prometheus configuration and alert rules checked and unit-tested
//! with promtool; Grafana dashboards that are what their generator writes; and a real
//! Prometheus scraping a live bunko that has done some work, in which every expression of
//! bunko's alert rules and of every dashboard must evaluate and every bunko metric it names
//! must have series (queries on metrics nobody exports are the usual rot). The exporters'
//! metrics (cAdvisor, node, blackbox) are checked for validity only: no exporter runs here.
#![allow(clippy::unwrap_used)]

use crate::it::documents::{file, ids, start};
use crate::it::support::require_tool;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn rule_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy().join("prometheus").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    v.sort();
    v
}

#[test]
fn alert_rules_and_the_prometheus_config_pass_promtool() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let rules = rule_files("rules");
    assert!(rules.len() >= 2, "{rules:?}");
    let (ok, out) = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .args(&rules));
    assert!(ok, "{out}");
    // Every alert has a severity and a runbook section that exists.
    let runbook = std::fs::read_to_string(deploy().join("../docs/operations/runbook.md")).unwrap();
    for f in &rules {
        let text = std::fs::read_to_string(f).unwrap();
        for name in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert: "))
        {
            assert!(
                runbook.contains(&format!("### {name}"))
                    || runbook.contains(&format!(" {name} "))
                    || runbook.contains(&format!("/ {name}")),
                "alert {name} has no runbook section"
            );
            assert!(
                text.contains(&format!("runbook.md#{}", name.to_lowercase())),
                "alert {name} links no runbook section"
            );
        }
    }
    let tests = rule_files("tests");
    let (ok, out) = run(Command::new(&promtool)
        .current_dir(deploy().join("prometheus"))
        .arg("test")
        .arg("rules")
        .args(&tests));
    assert!(ok, "{out}");
    // Each alert is exercised by a unit test.
    let all_tests: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(t).unwrap())
        .collect();
    for f in &rules {
        for name in std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert: "))
        {
            assert!(
                all_tests.contains(&format!("alertname: {name}")),
                "alert {name} has no promtool unit test"
            );
        }
    }
    // The shipped configuration, with its rule files where they are in the repository.
    let dir = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(deploy().join("prometheus/prometheus.yml"))
        .unwrap()
        .replace(
            "/etc/prometheus/rules/*.yml",
            &format!("{}/prometheus/rules/*.yml", deploy().display()),
        );
    std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
    let (ok, out) = run(Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(dir.path().join("prometheus.yml")));
    assert!(ok, "{out}");
}

/// (dashboard / panel title, expression) for every query of the shipped dashboards.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(deploy().join("grafana/dashboards")).unwrap() {
        let path = e.unwrap().path();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    format!(
                        "{} / {}",
                        d["title"].as_str().unwrap(),
                        p["title"].as_str().unwrap()
                    ),
                    t["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

/// The dashboards are valid provisioning JSON (unique uids, every panel on the provisioned
/// data source) and exactly what `deploy/grafana/dashboards.py` writes.
#[test]
fn dashboards_are_generated_and_consistent() {
    let Some(python) = require_tool("python3") else {
        return;
    };
    let (ok, out) = run(Command::new(python).arg("-c").arg(format!(
        "import json, sys; sys.path.insert(0, '{}'); import dashboards; \
         print(json.dumps(dashboards.render()))",
        deploy().join("grafana").display()
    )));
    assert!(ok, "{out}");
    let rendered: Value = serde_json::from_str(&out).unwrap();
    let mut uids = std::collections::HashSet::new();
    for (name, text) in rendered.as_object().unwrap() {
        let file = deploy().join("grafana/dashboards").join(name);
        let committed = std::fs::read_to_string(&file).unwrap_or_else(|_| {
            panic!("{name} is not committed: run deploy/grafana/dashboards.py")
        });
        assert_eq!(
            committed,
            text.as_str().unwrap(),
            "{name} differs from what deploy/grafana/dashboards.py writes"
        );
        let d: Value = serde_json::from_str(&committed).unwrap();
        assert!(uids.insert(d["uid"].as_str().unwrap().to_owned()));
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"]["uid"], "prometheus", "{name}: {p}");
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{name}: {p}");
        }
    }
    assert!(uids.len() >= 7, "{uids:?}");
    let datasource =
        std::fs::read_to_string(deploy().join("grafana/provisioning/datasources/prometheus.yml"))
            .unwrap();
    assert!(datasource.contains("uid: prometheus"));
}

/// Metric names an expression reads (`bunko_…`, `process_…`, `up`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
            cur.clear();
            continue;
        }
        if in_string {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            cur.push(c);
        } else {
            if (cur.starts_with("bunko_") || cur.starts_with("process_") || cur == "up")
                && !out.contains(&cur)
            {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

fn query_url(base: &str, q: &str) -> reqwest::Url {
    reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), &[("query", q)]).unwrap()
}

async fn query(client: &reqwest::Client, base: &str, q: &str) -> Value {
    client
        .get(query_url(base, q))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_evaluates_every_alert_and_dashboard_expression_against_a_live_bunko() {
    let (Some(_), Some(prometheus)) = (require_tool("promtool"), require_tool("prometheus")) else {
        return;
    };
    // A live bunko that has done some work: a document processed, searches, an ask, a priced
    // model call, an error, a job.
    let upstream = crate::it::gateway::stand_in().await;
    let d = start(|c| {
        #[derive(serde::Deserialize)]
        struct Llm {
            providers: Vec<bunko_core::llm::ProviderConfig>,
            models: Vec<bunko_core::llm::ModelAlias>,
        }
        let llm: Llm = toml::from_str(&format!(
            "[[providers]]\nname = \"lab\"\ntype = \"openai\"\nbase_url = \"{upstream}/v1\"\n\
             [[models]]\nalias = \"fast\"\nprovider = \"lab\"\nmodel = \"gpt-4o-mini\"\n\
             input_price_per_mtok = 0.15\noutput_price_per_mtok = 0.60\n"
        ))
        .unwrap();
        c.providers = llm.providers;
        c.models = llm.models;
    })
    .await;
    let up = d
        .upload(&[file(
            "ops.md",
            b"# Operations\n\nPrometheus scrapes bunko's metrics every fifteen seconds.\n".to_vec(),
        )])
        .await;
    d.settle(&ids(&up.json()), Duration::from_secs(60)).await;
    d.get("/api/v1/search?q=prometheus").await;
    d.post_json(
        "/api/v1/ask",
        r#"{"question": "What is the boiling point of mercury?"}"#,
    )
    .await;
    let chat = d
        .post_json(
            "/v1/chat/completions",
            r#"{"model": "fast", "messages": [{"role": "user", "content": "hi"}]}"#,
        )
        .await;
    assert_eq!(chat.status, 200, "{}", String::from_utf8_lossy(&chat.body));
    d.get("/api/v1/documents/not-a-document").await;
    // A job that fails for good (no handler for its kind).
    let job = d
        .state
        .store
        .enqueue(bunko_core::jobs::NewJob::new(
            "default",
            "system.nothing-handles-this",
            serde_json::json!({}),
        ))
        .await
        .unwrap()
        .id;
    let until = Instant::now() + Duration::from_secs(30);
    while d.state.store.get_job(job).await.unwrap().unwrap().state
        != bunko_core::jobs::JobState::Dead
    {
        assert!(Instant::now() < until, "the job never died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = d.router.clone();
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let rules = deploy().join("prometheus/rules/bunko.yml");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: bunko\n    static_configs:\n      - targets: [\"{addr}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut prom = Command::new(&prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = {
        let child = std::mem::replace(&mut prom, Command::new("true").spawn().unwrap());
        Kill(child)
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Until bunko has been scraped a few times (rates need two samples).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let v = client
            .get(query_url(&base, "count_over_time(up{job=\"bunko\"}[1m])"))
            .send()
            .await;
        if let Ok(r) = v
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .is_some_and(|n| n >= 4.0)
        {
            break;
        }
        assert!(Instant::now() < until, "Prometheus never scraped bunko");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v = query(&client, &base, "up{job=\"bunko\"}").await;
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");

    // Every rule loaded and healthy.
    let rules_v: Value = client
        .get(format!("{base}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let groups = rules_v["data"]["groups"].as_array().unwrap();
    let mut exprs = Vec::new();
    for g in groups {
        for r in g["rules"].as_array().unwrap() {
            assert_ne!(r["health"], "err", "{r}");
            exprs.push((
                r["name"].as_str().unwrap().to_owned(),
                r["query"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(exprs.len() >= 12, "{rules_v}");
    // And every query of every dashboard.
    for (name, expr) in dashboard_queries() {
        exprs.push((name, expr));
    }
    let mut missing = Vec::new();
    for (name, expr) in &exprs {
        let v = query(&client, &base, expr).await;
        assert_eq!(v["status"], "success", "{name}: {expr}: {v}");
        for m in metric_names(expr) {
            let v = query(&client, &base, &format!("count({m})")).await;
            if v["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                missing.push(format!("{name}: {m}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "alert rules read metrics bunko does not export: {missing:?}"
    );
}

/// The Compose files are valid for docker-compose (the client validates without an engine),
/// the Dockerfile passes hadolint, and the configuration the stack mounts passes
/// `bunko config check`.
#[test]
fn compose_files_dockerfile_and_deploy_config_validate() {
    let (Some(compose), Some(hadolint)) =
        (require_tool("docker-compose"), require_tool("hadolint"))
    else {
        return;
    };
    for f in ["compose.yaml", "compose.lite.yaml"] {
        let (ok, out) = run(Command::new(&compose)
            .current_dir(deploy())
            .args(["-f", f, "config", "-q"]));
        assert!(ok, "{f}: {out}");
    }
    let (ok, out) = run(Command::new(&compose).current_dir(deploy()).args([
        "-f",
        "compose.yaml",
        "config",
        "--services",
    ]));
    assert!(ok, "{out}");
    for s in [
        "bunko",
        "bunko-worker",
        "models",
        "nginx",
        "ollama",
        "prometheus",
        "alertmanager",
        "grafana",
        "cadvisor",
        "node-exporter",
        "blackbox-exporter",
    ] {
        assert!(out.lines().any(|l| l == s), "service {s} missing: {out}");
    }
    let compose_text = std::fs::read_to_string(deploy().join("compose.yaml")).unwrap();
    // Only nginx publishes ports; no default Grafana password.
    assert_eq!(
        compose_text.matches("ports:").count(),
        1,
        "only nginx publishes ports"
    );
    assert!(compose_text.contains("GF_SECURITY_ADMIN_PASSWORD__FILE"));
    assert!(!compose_text.contains("GF_SECURITY_ADMIN_PASSWORD:"));
    let (ok, out) = run(Command::new(&hadolint).arg(deploy().join("docker/Dockerfile")));
    assert!(ok, "{out}");
    let out = crate::it::support::bunko(&deploy(), &["--config", "bunko.toml", "config", "check"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
