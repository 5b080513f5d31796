use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bunko");

/// One built Japanese dictionary for every bunko the tests start (built once, ~46 MB),
/// instead of one per temporary data dir.
pub const DICT_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/bunko-dict");
pub const DICT_CACHE_VAR: &str = "BUNKO__SEARCH__DICTIONARY_CACHE";

/// `bunko ARGS…` with a clean BUNKO__* environment, run to completion.
pub fn bunko(dir: &Path, args: &[&str]) -> std::process::Output {
    bunko_env(dir, args, &[])
}

pub fn bunko_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("BUNKO_CONFIG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BUNKO__")) {
        cmd.env_remove(k);
    }
    cmd.env(DICT_CACHE_VAR, DICT_CACHE);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run bunko")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running `bunko serve` whose stdout (JSON logs) is collected.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    token: Mutex<Option<String>>,
    _dir: Option<tempfile::TempDir>,
}

/// (email, password) of the first administrator, from the data dir.
pub fn admin_credentials(data_dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(data_dir.join("initial-admin-password")).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_owned()
    };
    (get("email:"), get("password:"))
}

impl Server {
    pub fn start(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = Server::start_in(dir.path(), &data, extra_args, env);
        s._dir = Some(dir);
        s
    }

    pub fn start_in(
        cwd: &Path,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(cwd)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env_remove("RUST_LOG")
            .env("BUNKO__LOG__FORMAT", "json")
            .env(DICT_CACHE_VAR, DICT_CACHE)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn bunko serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let l = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                l.lock().unwrap().push(line);
            }
        });
        let l = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "bunko serve did not start:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            logs,
            token: Mutex::new(None),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// An administrator's access token (logged in once per server).
    pub fn token(&self) -> String {
        let mut t = self.token.lock().unwrap();
        if let Some(t) = t.as_ref() {
            return t.clone();
        }
        let (email, password) = admin_credentials(&self.data_dir);
        let url = self.url("/api/v1/auth/login");
        let body = serde_json::json!({"email": email, "password": password});
        let v: serde_json::Value = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                client()
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap()
            })
        })
        .join()
        .unwrap();
        let access = v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login failed: {v}"))
            .to_owned();
        *t = Some(access.clone());
        access
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> (std::process::ExitStatus, String) {
        self.signal("TERM");
        self.stop_after_signal()
    }

    /// Waits for the exit status after a signal was sent.
    pub fn stop_after_signal(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the reader threads drain
                return (st, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    // bunko-llm builds reqwest without a default TLS provider (ring is installed explicitly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The tool, or None with a printed reason. In CI (CI set) a missing tool is a failure: the
/// test command installs it.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed; ./scripts/test installs it");
        }
        eprintln!("SKIPPED: {name} not found on PATH (./scripts/test installs it)");
    }
    found
}

/// Whether `bunko models pull` installed the model; otherwise a printed reason (and, in CI, a
/// failure: ./scripts/test pulls the default models first).
pub fn model_installed(name: &str) -> bool {
    let spec = bunko_core::models::find(name).unwrap();
    let dir = bunko_core::config::LocalConfig::default().resolved_models_dir();
    if spec.installed(&dir) {
        return true;
    }
    let why = format!(
        "model {name} is not installed in {} (run `bunko models pull`)",
        dir.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    false
}
