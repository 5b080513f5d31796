//! What ships in deploy/: Prometheus configuration and alert rules checked and unit-tested
//! with promtool; Grafana dashboards that are what their generator writes; and a real
//! Prometheus scraping a live bunko that has done some work, in which every expression of
//! bunko's alert rules and of every dashboard must evaluate and every bunko metric it names
//! must have series (queries on metrics nobody exports are the usual rot). Debian's node and
//! blackbox exporters run beside it (the blackbox one probing bunko over HTTP and a TLS
//! endpoint), so host and availability panels are checked with real series too; cAdvisor's
//! container metrics are checked for validity only (it needs a container runtime).
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
            // Everything but cAdvisor's `container_*` (it needs a container runtime).
            if (cur.starts_with("bunko_")
                || cur.starts_with("process_")
                || cur.starts_with("node_")
                || cur.starts_with("probe_")
                || cur == "up")
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
    let (Some(_), Some(prometheus), Some(node_exporter), Some(blackbox)) = (
        require_tool("promtool"),
        require_tool("prometheus"),
        require_tool("prometheus-node-exporter"),
        require_tool("prometheus-blackbox-exporter"),
    ) else {
        return;
    };
    // A live bunko that has done some work: a document processed, searches, an ask, a priced
    // model call, an error, a job.
    let upstream = crate::it::gateway::stand_in().await;
    // A watched folder, crawled once.
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("minutes.md"),
        "# Minutes\n\nThe crawl metrics.\n",
    )
    .unwrap();
    let folder_path = folder.path().to_str().unwrap().to_owned();
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
        c.schedules = vec![
            toml::from_str(
                "name = \"nightly-backup\"\ncron = \"30 2 * * *\"\njob = \"backup.create\"",
            )
            .unwrap(),
        ];
        c.scheduler.tick_secs = 1;
        c.scheduler.lease_secs = 5;
        c.sources = vec![
            serde_json::from_value(serde_json::json!({
                "name": "minutes", "kind": "folder", "project": "papers", "path": folder_path,
            }))
            .unwrap(),
        ];
    })
    .await;
    bunko_server::scheduler::start(&d.state).await.unwrap();
    let crawled = bunko_server::crawl::crawl(
        &d.state.ingest,
        "minutes",
        None,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(crawled.added, 1);
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
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // The exporters the stack runs: node (host metrics) and blackbox (probes) — the latter with
    // deploy/blackbox/blackbox.yml's modules, trusting the test's self-signed certificate.
    let node_port = free_port();
    let _node = Kill(
        Command::new(&node_exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .args([
                "--collector.disable-defaults",
                "--collector.filesystem",
                "--collector.loadavg",
                "--collector.meminfo",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (ok, out) = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(ok, "{out}");
    let tls_port = free_port();
    let _tls = Kill(
        Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-accept",
                &tls_port.to_string(),
                "-cert",
            ])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let modules = std::fs::read_to_string(deploy().join("blackbox/blackbox.yml"))
        .unwrap()
        .replace(
            "insecure_skip_verify: false",
            &format!(
                "insecure_skip_verify: false\n        ca_file: {}\n        server_name: localhost",
                cert.display()
            ),
        );
    std::fs::write(dir.path().join("blackbox.yml"), modules).unwrap();
    let blackbox_port = free_port();
    let _blackbox = Kill(
        Command::new(&blackbox)
            .arg(format!(
                "--config.file={}",
                dir.path().join("blackbox.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{blackbox_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rules = deploy().join("prometheus/rules/bunko.yml");
    let probe = |job: &str, module: &str, targets: &str| {
        format!(
            "  - job_name: {job}\n    metrics_path: /probe\n    params:\n      module: [{module}]\n\
             \x20   static_configs:\n      - targets: [{targets}]\n    relabel_configs:\n\
             \x20     - source_labels: [__address__]\n        target_label: __param_target\n\
             \x20     - source_labels: [__param_target]\n        target_label: instance\n\
             \x20     - target_label: __address__\n        replacement: 127.0.0.1:{blackbox_port}\n"
        )
    };
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: bunko\n    static_configs:\n      - targets: [\"{addr}\"]\n\
             \x20 - job_name: node\n    static_configs:\n      - targets: [\"127.0.0.1:{node_port}\"]\n{}{}",
            rules.display(),
            probe("blackbox-http", "http_2xx", &format!("\"http://{addr}/healthz\", \"http://{addr}/readyz\"")),
            probe("blackbox-tls", "tls_connect", &format!("\"127.0.0.1:{tls_port}\"")),
        ),
    )
    .unwrap();
    let port = free_port();
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
        "expressions read metrics nothing exports: {missing:?}"
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
        "postgres",
        "redis",
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
    // bunko reads its database URL (with the password) from a secret, never from the file.
    assert!(compose_text.contains("BUNKO__DATABASE__URL_FILE: /run/secrets/database_url"));
    assert!(compose_text.contains("POSTGRES_PASSWORD_FILE"));
    assert!(compose_text.contains("BUNKO__REDIS__URL_FILE: /run/secrets/redis_url"));
    assert!(compose_text.contains("BUNKO__SEARCH__BACKEND: postgres"));
    assert!(!compose_text.contains("POSTGRES_PASSWORD:"));
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

/// The Kubernetes manifests (patches excepted) pass the API schemas strictly (`kubernetes-validate --strict`,
/// Kubernetes 1.30), the structural checks of `deploy/k8s/check.py` (non-root, read-only,
/// resources, probes, selectors, TLS, network policy, no committed secrets), and the
/// configuration the ConfigMap carries passes `bunko config check` in production mode.
#[test]
fn kubernetes_manifests_validate() {
    let Some(validate) = require_tool("kubernetes-validate") else {
        return;
    };
    let k8s = deploy().join("k8s");
    let mut files = Vec::new();
    let mut dirs = vec![k8s.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    // Patches are partial objects (check.py makes sure they are named so).
                    n != "kustomization.yaml" && !n.starts_with("patch-")
                })
            {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let (ok, out) = run(Command::new(&validate)
        .args(["-k", "1.30.0", "--strict", "--quiet"])
        .args(&files));
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new("python3").arg(k8s.join("check.py")));
    assert!(ok, "{out}");

    // The ConfigMaps' bunko.toml (the base's, and the replicas' with everything shared),
    // with the secret files the pods mount.
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let jwt = secret("jwt_secret", &"k".repeat(48));
    let db_url = secret(
        "database_url",
        "postgres://bunko:pw@db.bunko.svc:5432/bunko?sslmode=require",
    );
    let s3_key = secret("s3_secret_access_key", "s3cr3t");
    let redis_url = secret("redis_url", "rediss://:pw@redis.bunko.svc:6380/0");
    for (file, env) in [
        (
            "base/configmap.yaml",
            vec![("BUNKO__AUTH__JWT_SECRET_FILE", jwt.as_str())],
        ),
        (
            "overlays/replicas/patch-configmap.yaml",
            vec![
                ("BUNKO__AUTH__JWT_SECRET_FILE", jwt.as_str()),
                ("BUNKO__DATABASE__URL_FILE", db_url.as_str()),
                ("BUNKO__BLOBS__SECRET_ACCESS_KEY_FILE", s3_key.as_str()),
                ("BUNKO__BLOBS__ACCESS_KEY_ID", "AKIAEXAMPLE"),
                ("BUNKO__REDIS__URL_FILE", redis_url.as_str()),
            ],
        ),
    ] {
        let cm = std::fs::read_to_string(k8s.join(file)).unwrap();
        let toml_text: String = cm
            .split_once("bunko.toml: |\n")
            .unwrap()
            .1
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("bunko.toml"), &toml_text).unwrap();
        let out = crate::it::support::bunko_env(
            dir.path(),
            &["--config", "bunko.toml", "config", "check", "--json"],
            &env,
        );
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains("production"), "{report}");
        if file.contains("replicas") {
            assert!(report.contains("postgres"), "{report}");
        }
    }
}

/// What the in-test OTLP receiver got: every span with its service name.
type Received =
    std::sync::Arc<std::sync::Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>;

/// An OTLP/HTTP traces receiver (protobuf bodies, as a collector takes them).
async fn otlp_receiver() -> (String, Received) {
    use axum::body::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;
    let got: Received = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let g = g.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                assert_eq!(headers["x-collector-key"], "k-123");
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            g.lock().unwrap().push((service.clone(), span));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn attr(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            V::StringValue(s) => s.clone(),
            V::IntValue(i) => i.to_string(),
            V::BoolValue(b) => b.to_string(),
            V::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

/// With `[otel]` on, bunko's spans reach a real OTLP/HTTP receiver as protobuf: the request's
/// span continues the caller's `traceparent`, the model call is its child and the upstream
/// gets a `traceparent` naming that call, search legs and ingest stages are children of their
/// request and job, log lines carry the exported trace id, and a caller's "not sampled" flag
/// is obeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_linked_parent_to_child_and_to_the_upstream() {
    use crate::it::documents::multipart;
    use crate::it::support::{Server, client};
    let (endpoint, received) = otlp_receiver().await;
    // An OpenAI-compatible upstream that remembers the traceparent of each call.
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let s2 = seen.clone();
    let upstream = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let s2 = s2.clone();
            async move {
                s2.lock().unwrap().push(
                    headers
                        .get("traceparent")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default(),
                );
                (
                    [("content-type", "application/json")],
                    crate::it::gateway::fixture("openai_chat.json"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { axum::serve(listener, upstream).await });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bunko.toml"),
        format!(
            r#"
[otel]
enabled = true
endpoint = "{endpoint}"
sample_ratio = 1.0
service_name = "bunko-under-test"
headers = {{ x-collector-key = "k-123" }}

[[providers]]
name = "lab"
type = "openai"
base_url = "{upstream_url}/v1"

[[models]]
alias = "fast"
provider = "lab"
model = "gpt-4o-mini"
"#
        ),
    )
    .unwrap();
    let mut s = Server::start_in(
        dir.path(),
        &dir.path().join("data"),
        &[],
        &[
            ("BUNKO__LOCAL__EMBEDDER", "none"),
            ("BUNKO__JOBS__POLL_INTERVAL_MS", "50"),
        ],
    );
    let token = s.token();
    let c = client();
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let r = c
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .json(
            &serde_json::json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered = r.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(answered.starts_with(&format!("00-{TRACE}-")), "{answered}");
    // Not sampled by the caller: nothing of this trace is exported.
    const UNSAMPLED: &str = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .get(s.url("/api/v1/projects"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{UNSAMPLED}-b7ad6b7169203331-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A document processed (a job with its stages) and a search.
    let r = c
        .post(s.url("/api/v1/projects"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "Traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(s.url("/api/v1/projects/traced/documents"))
        .bearer_auth(&token)
        .header(
            "content-type",
            "multipart/form-data; boundary=bunko-test-boundary-7d3f",
        )
        .body(multipart(&[file(
            "otel.md",
            b"# Tracing\n\nSpans travel over OTLP to the collector.\n".to_vec(),
        )]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let doc = ids(&r.json::<Value>().await.unwrap()).remove(0);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = c
            .get(s.url(&format!("/api/v1/documents/{doc}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < until, "the document never got ready: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .get(s.url("/api/v1/search?q=collector"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A graceful stop flushes the last batch.
    let (status, _) = s.stop();
    assert!(status.success());
    let spans = received.lock().unwrap().clone();
    assert!(!spans.is_empty(), "no spans arrived:\n{}", s.logs());
    assert!(
        spans
            .iter()
            .all(|(svc, _)| svc.contains("bunko-under-test")),
        "{:?}",
        spans.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let hex = |b: &[u8]| hex::encode(b);
    let named = |name: &str| -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    let by_id = |id: &[u8]| spans.iter().map(|(_, s)| s).find(|s| s.span_id == id);

    // The request continues the caller's trace; the model call is its child.
    let http = named("POST /v1/chat/completions");
    assert_eq!(
        http.len(),
        1,
        "{:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    let http = http[0];
    assert_eq!(hex(&http.trace_id), TRACE);
    assert_eq!(hex(&http.parent_span_id), CALLER);
    assert_eq!(http.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attr(http, "http.response.status_code"), "200");
    assert!(answered.contains(&hex(&http.span_id)), "{answered}");
    let llm = named("chat fast");
    assert_eq!(llm.len(), 1);
    let llm = llm[0];
    assert_eq!(llm.parent_span_id, http.span_id);
    assert_eq!(llm.trace_id, http.trace_id);
    assert_eq!(llm.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(attr(llm, "gen_ai.request.model"), "fast");
    assert_eq!(attr(llm, "gen_ai.provider.name"), "lab");
    let usage: Value =
        serde_json::from_slice(&crate::it::gateway::fixture("openai_chat.json")).unwrap();
    assert_eq!(
        attr(llm, "gen_ai.usage.input_tokens"),
        usage["usage"]["prompt_tokens"].to_string()
    );
    assert_eq!(
        attr(llm, "gen_ai.usage.output_tokens"),
        usage["usage"]["completion_tokens"].to_string()
    );
    // W3C context to the upstream: this trace, the model call as parent.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![format!("00-{TRACE}-{}-01", hex(&llm.span_id))]);

    // The caller said "not sampled": nothing of that trace.
    assert!(
        spans.iter().all(|(_, s)| hex(&s.trace_id) != UNSAMPLED),
        "an unsampled trace was exported"
    );

    // Search legs are children of the search request.
    let search = named("GET /api/v1/search");
    assert_eq!(search.len(), 1);
    let kw = named("search.keyword");
    assert!(
        kw.iter().any(|k| k.parent_span_id == search[0].span_id),
        "search.keyword is not a child of the search request"
    );
    // Ingest stages are children of the job's span.
    let job = named("job document.process");
    assert_eq!(
        job.len(),
        1,
        "{:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    for stage in [
        "ingest extract",
        "ingest chunk",
        "ingest embed",
        "ingest index",
    ] {
        let st = named(stage);
        assert_eq!(st.len(), 1, "{stage}");
        assert_eq!(st[0].parent_span_id, job[0].span_id, "{stage}");
        assert!(st[0].end_time_unix_nano >= st[0].start_time_unix_nano);
    }
    assert!(by_id(&job[0].parent_span_id).is_none() && job[0].parent_span_id.is_empty());

    // Log lines carry the exported ids.
    let logs = s.logs();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request finished" && v["route"] == "/v1/chat/completions")
        .unwrap_or_else(|| panic!("no request line:\n{logs}"));
    assert_eq!(line["trace_id"], TRACE);
    assert_eq!(line["span_id"], hex(&http.span_id));
    let job_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["spans"].as_str().is_some_and(|s| s.starts_with("job"))
                && v["kind"] == "document.process"
        })
        .unwrap_or_else(|| panic!("no job line:\n{logs}"));
    assert_eq!(job_line["trace_id"], hex(&job[0].trace_id));
}
