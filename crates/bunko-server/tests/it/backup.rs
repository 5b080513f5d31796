//! Backups: taken online while documents are processed and searched; `verify` recomputes
//! every checksum and catches one flipped byte anywhere; `restore` refuses a data dir in use
//! unless forced, and the restored instance answers the same searches with the same results;
//! a backup that runs out of space fails cleanly with the earlier archive kept; a scheduled
//! backup is a job and shows in the metrics.
#![allow(clippy::unwrap_used)]

use crate::it::documents::{file, ids, start};
use crate::it::support::{BIN, Server, bunko_env, client, text};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const QUERIES: [&str; 3] = ["lighthouse keeper", "tidal harbour", "文庫 保存"];

fn docs() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "lighthouse.md".into(),
            b"# The lighthouse\n\nThe keeper trims the lamp each night and logs passing ships.\n".to_vec(),
        ),
        (
            "harbour.md".into(),
            b"# Tidal harbour\n\nBoats wait for the tide; the harbour master keeps the tide tables.\n".to_vec(),
        ),
        (
            "bunko.md".into(),
            "# 文庫\n\n文庫は文書を保存し、検索できるようにする。\n".as_bytes().to_vec(),
        ),
    ]
}

/// (ids, titles) of a search's results.
fn hits(v: &Value) -> Vec<(String, String)> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["document_id"].as_str().unwrap_or_default().to_owned(),
                h["title"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    bunko_env(
        data.parent().unwrap(),
        &all,
        &[("BUNKO__LOCAL__EMBEDDER", "none")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_verify_restore_and_the_same_searches() {
    let d = start(|_| {}).await;
    let parts: Vec<_> = docs().iter().map(|(n, b)| (n.clone(), b.clone())).collect();
    let up = d
        .upload(
            &parts
                .iter()
                .map(|(n, b)| file(n, b.clone()))
                .collect::<Vec<_>>(),
        )
        .await;
    d.settle(&ids(&up.json()), Duration::from_secs(60)).await;
    let mut before = Vec::new();
    for q in QUERIES {
        let v = d
            .get(&format!("/api/v1/search?q={}", urlencode(q)))
            .await
            .json();
        assert!(!hits(&v).is_empty(), "{q}: {v}");
        before.push(hits(&v));
    }

    // Online: a backup while another document is processed and searches run.
    let config = d.state.config.clone();
    let store = d.state.store.clone();
    let backing_up =
        tokio::spawn(async move { bunko_server::backup::create(&config, store.as_ref()).await });
    let more = d
        .upload(&[file(
            "later.md",
            b"# Later\n\nWritten while the backup ran.\n".to_vec(),
        )])
        .await;
    for _ in 0..5 {
        assert_eq!(d.get("/api/v1/search?q=harbour").await.status, 200);
    }
    let made = backing_up.await.unwrap().unwrap();
    d.settle(&ids(&more.json()), Duration::from_secs(60)).await;
    assert!(
        made.files >= 4,
        "the database and three originals: {made:?}"
    );
    let name = made
        .archive
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(name.starts_with("bunko-backup-") && name.ends_with(".tar"));

    // verify: intact, then one flipped byte anywhere is caught.
    let data = d.state.config.data_dir.clone();
    let out = cli(
        &data,
        &["backup", "verify", made.archive.to_str().unwrap(), "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], made.files as u64);
    let listed = cli(&data, &["backup", "list", "--json"]);
    assert!(text(&listed.stdout).contains(&name));

    let bad = made.archive.with_file_name("damaged.tar");
    let mut bytes = std::fs::read(&made.archive).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    std::fs::write(&bad, &bytes).unwrap();
    std::fs::copy(
        format!("{}.sha256", made.archive.display()),
        format!("{}.sha256", bad.display()),
    )
    .unwrap();
    let out = cli(&data, &["backup", "verify", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("damaged"),
        "{}",
        text(&out.stderr)
    );
    // Damage made "consistent" with the archive checksum: the manifest still catches it.
    let resummed = made.archive.with_file_name("resummed.tar");
    std::fs::write(&resummed, &bytes).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    std::fs::write(
        format!("{}.sha256", resummed.display()),
        format!("{digest}  resummed.tar\n"),
    )
    .unwrap();
    let out = cli(&data, &["backup", "verify", resummed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("manifest") || err.contains("integrity") || err.contains("damaged"),
        "{err}"
    );

    // restore: refused over a data dir in use, done into an empty one.
    let out = cli(
        &data,
        &["backup", "restore", made.archive.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--force"));
    let fresh = tempfile::tempdir().unwrap();
    let new_data = fresh.path().join("data");
    let out = cli(
        &new_data,
        &["backup", "restore", made.archive.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The restored instance answers the same searches (as the same administrator).
    std::fs::copy(
        data.join("initial-admin-password"),
        new_data.join("initial-admin-password"),
    )
    .unwrap();
    let mut s = Server::start_in(
        fresh.path(),
        &new_data,
        &[],
        &[("BUNKO__LOCAL__EMBEDDER", "none")],
    );
    let token = s.token();
    for (q, want) in QUERIES.iter().zip(&before) {
        let v: Value = client()
            .get(s.url(&format!("/api/v1/search?q={}", urlencode(q))))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(&hits(&v), want, "{q}");
    }
    // The originals came back byte for byte.
    let doc = &before[0][0].0;
    let original = client()
        .get(s.url(&format!("/api/v1/documents/{doc}/original")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(original.as_ref(), docs()[0].1.as_slice());
    s.stop();
}

/// A backup that runs out of space (a file-size limit on the process) fails with a clear
/// error, leaves no partial archive and keeps the earlier backup intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_cleanly_and_keeps_the_previous_backup() {
    let d = start(|_| {}).await;
    let up = d
        .upload(&[file(
            "big.txt",
            "words that fill the database with text to back up. "
                .repeat(20_000)
                .into_bytes(),
        )])
        .await;
    d.settle(&ids(&up.json()), Duration::from_secs(60)).await;
    let first = bunko_server::backup::create(&d.state.config, d.state.store.as_ref())
        .await
        .unwrap();
    let data = d.state.config.data_dir.clone();
    let backups = data.join("backups");
    // Writes past 256 KiB fail with EFBIG (SIGXFSZ ignored), as on a full disk.
    let out = Command::new("sh")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 512; exec \"$0\" \"$@\"",
            BIN,
            "--data-dir",
            data.to_str().unwrap(),
            "backup",
            "create",
        ])
        .env("BUNKO__LOCAL__EMBEDDER", "none")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("error:"), "{err}");
    let names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".partial") && !n.starts_with(".tmp")),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".tar")).count(),
        1,
        "{names:?}"
    );
    bunko_server::backup::verify(&first.archive, None)
        .await
        .unwrap();
}

/// `backup.create` fired by a schedule: a job that succeeds, and the metrics show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_is_a_job_and_a_metric() {
    let d = start(|_| {}).await;
    bunko_server::scheduler::start(&d.state).await.unwrap();
    let m = String::from_utf8(d.get("/metrics").await.body).unwrap();
    assert!(
        m.contains("bunko_backup_last_success_timestamp_seconds 0"),
        "{m}"
    );
    let r = d
        .post_json(
            "/api/v1/schedules",
            r#"{"name": "nightly-backup", "cron": "30 2 * * *", "timezone": "Asia/Tokyo", "job": "backup.create"}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["queue"], "maintenance");
    let run = d
        .post_json("/api/v1/schedules/nightly-backup/run", "")
        .await;
    let job = run.json()["job_id"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let j = d.get(&format!("/api/v1/jobs/{job}")).await.json();
        if j["state"] == "succeeded" {
            assert!(j["result"]["archive"].as_str().unwrap().ends_with(".tar"));
            break;
        }
        assert_ne!(j["state"], "dead", "{j}");
        assert!(Instant::now() < until, "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = String::from_utf8(d.get("/metrics").await.body).unwrap();
    let ts: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("bunko_backup_last_success_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ts > 1.7e9, "{ts}");
    assert!(!m.contains("bunko_backup_last_size_bytes 0\n"));
}

fn urlencode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("q", s)])
        .unwrap()
        .query()
        .unwrap()
        .trim_start_matches("q=")
        .to_owned()
}
