//! The CLI's contract: help, exit codes, configuration errors, clear failures.

use super::support::{bunko, bunko_env, text};

#[test]
fn help_lists_every_command_with_a_purpose() {
    let out = bunko(std::path::Path::new("."), &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "serve",
        "quickstart",
        "worker",
        "migrate",
        "config",
        "jobs",
        "user",
        "project",
        "key",
        "ingest",
        "search",
        "eval",
        "models",
        "index",
        "ask",
        "summarize",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(cmd))
            .unwrap_or_else(|| panic!("{cmd} missing:\n{help}"));
        assert!(
            line.trim().len() > cmd.len() + 10,
            "{cmd} has no purpose line: {line}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = bunko(dir.path(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bunko(dir.path(), &["jobs", "list", "--limit", "lots"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_config_key_names_key_file_and_closest_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunko.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:9\"\nshutdown_grace_sec = 3\n",
    )
    .unwrap();
    let out = bunko(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "config", "check"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("server.shutdown_grace_sec"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
    assert!(
        err.contains("did you mean `server.shutdown_grace_secs`"),
        "{err}"
    );
    assert_eq!(
        err.trim().lines().next().unwrap().matches("error:").count(),
        1,
        "one clear line: {err}"
    );
    // The same file is refused by every command, not just `config check`.
    let out = bunko(dir.path(), &["--config", cfg.to_str().unwrap(), "migrate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn malformed_config_file_is_a_usage_error_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bunko.toml");
    std::fs::write(&cfg, "[server\nlisten = 1\n").unwrap();
    let out = bunko(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "config", "check"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("not valid TOML") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn config_check_layers_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    // Picked up from the working directory without --config.
    std::fs::write(
        dir.path().join("bunko.toml"),
        "[server]\nlisten = \"127.0.0.1:1111\"\n[log]\nlevel = \"debug\"\n",
    )
    .unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, "planted-secret-0123456789-abcdefghijklmnop\n").unwrap();
    let out = bunko_env(
        dir.path(),
        &["config", "check", "--json"],
        &[
            ("BUNKO__SERVER__LISTEN", "127.0.0.1:2222"),
            ("BUNKO__AUTH__JWT_SECRET_FILE", secret.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["config"]["server"]["listen"], "127.0.0.1:2222",
        "env beats file"
    );
    assert_eq!(v["config"]["log"]["level"], "debug", "file beats defaults");
    assert_eq!(v["config"]["auth"]["jwt_secret"], "[redacted]");
    assert!(!stdout.contains("planted-secret"), "{stdout}");
    // Flags beat env.
    let out = bunko_env(
        dir.path(),
        &["--log-level", "warn", "config", "check"],
        &[("BUNKO__LOG__LEVEL", "trace")],
    );
    assert!(
        text(&out.stdout).contains("level = \"warn\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn production_refuses_insecure_settings() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BUNKO__MODE", "production"),
        ("BUNKO__SERVER__LISTEN", "0.0.0.0:8000"),
    ];
    let out = bunko_env(dir.path(), &["config", "check"], &env);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains("auth.jwt_secret"),
        "{err}"
    );
    let out = bunko_env(dir.path(), &["serve"], &env);
    assert_eq!(
        out.status.code(),
        Some(2),
        "serve must refuse too: {}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join("bunko-data").exists(),
        "nothing is created before the config is sound"
    );
}

#[test]
fn unknown_env_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = bunko_env(
        dir.path(),
        &["config", "check"],
        &[("BUNKO__SERVER__LISTN", "x")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("BUNKO__SERVER__LISTN") && err.contains("server.listen"),
        "{err}"
    );
}

#[test]
fn unwritable_data_dir_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    // A path under a regular file cannot be created, even by root.
    let bad = file.join("data");
    let out = bunko(
        dir.path(),
        &["--data-dir", bad.to_str().unwrap(), "migrate"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("data dir") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn corrupt_database_refuses_to_start_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let junk = b"definitely not sqlite; somebody's precious bytes".repeat(100);
    std::fs::write(data.join("bunko.db"), &junk).unwrap();
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("not a readable SQLite database") && err.contains("will not overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(data.join("bunko.db")).unwrap(), junk);
}

#[test]
fn migrate_then_jobs_commands_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let dd = d.to_str().unwrap();
    let out = bunko(dir.path(), &["--data-dir", dd, "migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for sub in ["index", "blobs", "models", "backups"] {
        assert!(d.join(sub).is_dir(), "{sub}/ missing");
    }
    assert!(d.join("bunko.db").is_file());
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            dd,
            "jobs",
            "enqueue",
            "system.noop",
            "--payload",
            "{\"a\":1}",
            "--json",
            "--idempotency-key",
            "k1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["created"], true);
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            dd,
            "jobs",
            "enqueue",
            "system.noop",
            "--json",
            "--idempotency-key",
            "k1",
        ],
    );
    let v2: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(
        (v2["id"].as_str().unwrap(), &v2["created"]),
        (id.as_str(), &serde_json::json!(false))
    );
    let out = bunko(dir.path(), &["--data-dir", dd, "jobs", "list", "--json"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["state"], "queued");
    let out = bunko(dir.path(), &["--data-dir", dd, "jobs", "cancel", &id]);
    assert!(out.status.success() && text(&out.stdout).contains("cancelled"));
    let out = bunko(dir.path(), &["--data-dir", dd, "jobs", "cancel", &id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cancelling twice is a failure with a reason"
    );
    assert!(
        text(&out.stderr).contains("cannot be cancelled"),
        "{}",
        text(&out.stderr)
    );
    let out = bunko(dir.path(), &["--data-dir", dd, "jobs", "retry", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = bunko(
        dir.path(),
        &["--data-dir", dd, "jobs", "show", &id, "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["state"], "queued");
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            dd,
            "jobs",
            "show",
            "0190a0a0-0000-7000-8000-000000000000",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not exist"));
    let out = bunko(
        dir.path(),
        &["--data-dir", dd, "jobs", "enqueue", "no.such.kind"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("known kinds"),
        "{}",
        text(&out.stderr)
    );
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            dd,
            "jobs",
            "enqueue",
            "system.noop",
            "--payload",
            "{oops",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn user_project_and_key_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let dd = d.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut a = vec!["--data-dir", dd];
        a.extend_from_slice(args);
        bunko(dir.path(), &a)
    };
    let out = run(&["user", "add", "ana@example.org", "--name", "Ana"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("one-time password (shown once): "),
        "{stdout}"
    );
    let out = run(&["user", "add", "ANA@example.org"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "duplicate email (any case) is refused"
    );
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["user", "add", "not-an-email"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&[
        "project",
        "create",
        "Court Cases",
        "--owner",
        "ana@example.org",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&[
        "key",
        "create",
        "--user",
        "ana@example.org",
        "--project",
        "court-cases",
        "--scopes",
        "search,ask",
        "--expires",
        "90d",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("secret (shown once): bko_key_"), "{stdout}");
    let id = stdout.split_whitespace().nth(1).unwrap().to_owned();
    let out = run(&[
        "key",
        "create",
        "--user",
        "ana@example.org",
        "--scopes",
        "search,root",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["key", "list", "--user", "ana@example.org"]);
    assert!(text(&out.stdout).contains(&id) && text(&out.stdout).contains("active"));
    let out = run(&["key", "revoke", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["key", "revoke", &id]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["user", "disable", "ana@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&run(&["user", "list"]).stdout).contains("disabled"));
    // The last active administrator cannot be disabled or demoted.
    assert!(
        run(&["user", "add", "boss@example.org", "--admin"])
            .status
            .success()
    );
    let out = run(&["user", "disable", "boss@example.org"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("last active administrator"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["user", "role", "boss@example.org", "member"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn search_command_validates_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().join("data");
    let dd = dd.to_str().unwrap();
    let out = bunko(dir.path(), &["--data-dir", dd, "search", "   "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("empty"), "{}", text(&out.stderr));
    let out = bunko(
        dir.path(),
        &["--data-dir", dd, "search", "x", "--project", "nope"],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = bunko(dir.path(), &["--data-dir", dd, "search", "x", "--k", "500"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bunko(
        dir.path(),
        &["--data-dir", dd, "search", "休憩 🎉", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).trim().is_empty(),
        "no documents yet, no hits"
    );
}

/// `bunko index rebuild` re-embeds what the keyword index holds into a new vector index and
/// swaps it in; vector search then finds chunks across languages; a vector index of another
/// model is refused with the fix.
#[test]
fn index_rebuild_makes_the_vector_half_from_stored_chunks() {
    if !super::support::model_installed("multilingual-e5-small") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().join("data");
    let d = dd.to_str().unwrap();
    let out = bunko(dir.path(), &["--data-dir", d, "project", "create", "Laws"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // "created project Laws (slug laws) <id>"
    let pid = text(&out.stdout)
        .split_whitespace()
        .last()
        .expect("project id")
        .to_owned();
    {
        let ix = bunko_index::keyword::KeywordIndex::open(&dd.join("index/keyword")).unwrap();
        ix.upsert(
            "j1",
            &pid,
            "労働基準法",
            "使用者は、労働時間の途中に休憩時間を与えなければならない。",
        )
        .unwrap();
        ix.upsert(
            "e1",
            &pid,
            "Cooking",
            "Whisk the eggs with sugar and bake the cake.",
        )
        .unwrap();
        ix.commit().unwrap();
    }
    let out = bunko(dir.path(), &["--data-dir", d, "index", "rebuild"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 chunks"),
        "{}",
        text(&out.stdout)
    );
    let spec = bunko_core::models::find("multilingual-e5-small").unwrap();
    assert_eq!(
        bunko_index::vector::stored_fingerprint(&dd.join("index/vector")),
        Some(spec.fingerprint())
    );
    let search = |extra: &[&str]| {
        let mut args = vec!["--data-dir", d, "search", "rest breaks at work", "--json"];
        args.extend_from_slice(extra);
        bunko(dir.path(), &args)
    };
    let out = search(&["--mode", "vector"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().next().expect("a hit")).unwrap();
    assert_eq!(first["id"], "j1", "{}", text(&out.stdout));
    assert_eq!(first["vector_rank"], 1);
    // One project only, again: same result, nothing duplicated.
    let out = bunko(
        dir.path(),
        &["--data-dir", d, "index", "rebuild", "--project", "laws"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&search(&["--mode", "vector"]).stdout).lines().count(),
        2
    );
    // Vectors of another model: refused with the fix, never mixed.
    std::fs::write(dd.join("index/vector/model.txt"), "e5s1:0000000000000000\n").unwrap();
    let out = search(&["--mode", "vector"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).trim().is_empty(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("bunko index rebuild"),
        "{}",
        text(&out.stderr)
    );
    let out = bunko(
        dir.path(),
        &["--data-dir", d, "index", "rebuild", "--project", "laws"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("without --project"),
        "{}",
        text(&out.stderr)
    );
    let out = bunko(dir.path(), &["--data-dir", d, "index", "rebuild"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&search(&["--mode", "vector"]).stdout).lines().count(),
        2
    );
}

/// `bunko ingest` (files and a directory, --wait, --json) and `bunko index rebuild` refilling
/// a lost index from the database.
#[test]
fn ingest_cli_and_rebuild_from_the_database() {
    if !super::support::model_installed("multilingual-e5-small") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dd = dir.path().join("data");
    let d = dd.to_str().unwrap();
    let out = bunko(dir.path(), &["--data-dir", d, "project", "create", "Notes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(
        src.join("break.md"),
        "# 休憩\n\n使用者は、労働時間の途中に休憩時間を与えなければならない。\n",
    )
    .unwrap();
    std::fs::write(
        src.join("sub/cake.txt"),
        "Whisk the eggs with sugar and bake the cake for forty minutes.\n",
    )
    .unwrap();
    std::fs::write(src.join("sub/blob.bin"), [0u8, 1, 2, 3, 0, 0, 0, 9, 8, 7]).unwrap();
    let srcs = src.to_str().unwrap();
    // A directory without --recursive is a usage error.
    let out = bunko(
        dir.path(),
        &["--data-dir", d, "ingest", srcs, "--project", "notes"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            d,
            "ingest",
            srcs,
            "--recursive",
            "--project",
            "notes",
            "--wait",
            "--json",
        ],
    );
    // One unsupported file: exit 1, the others ready.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{}", text(&out.stdout));
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(n))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("break.md")["status"], "ready");
    assert_eq!(by_name("cake.txt")["status"], "ready");
    assert_eq!(by_name("blob.bin")["status"], "failed");
    assert_eq!(by_name("blob.bin")["code"], "unsupported_document_type");
    let law_doc = by_name("break.md")["document_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Again: duplicates, nothing new.
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            d,
            "ingest",
            src.join("break.md").to_str().unwrap(),
            "--project",
            "notes",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"duplicate\""),
        "{}",
        text(&out.stdout)
    );

    let search = || {
        let out = bunko(
            dir.path(),
            &[
                "--data-dir",
                d,
                "search",
                "rest breaks at work",
                "--json",
                "--mode",
                "hybrid",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let first = |s: String| -> serde_json::Value {
        serde_json::from_str(s.lines().next().expect("a hit")).unwrap()
    };
    let hit = first(search());
    assert_eq!(hit["document_id"], law_doc.as_str(), "{hit}");
    assert_eq!(hit["vector_rank"], 1);
    // Lose the whole index; rebuild it from the database.
    std::fs::remove_dir_all(dd.join("index")).unwrap();
    let out = bunko(dir.path(), &["--data-dir", d, "index", "rebuild"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("refilled the keyword index: 2 documents"),
        "{}",
        text(&out.stdout)
    );
    let hit = first(search());
    assert_eq!(hit["document_id"], law_doc.as_str(), "{hit}");
    assert_eq!(
        (hit["keyword_rank"].is_null(), hit["vector_rank"].as_u64()),
        (true, Some(1))
    );
    let out = bunko(
        dir.path(),
        &[
            "--data-dir",
            d,
            "search",
            "休憩時間",
            "--json",
            "--mode",
            "keyword",
        ],
    );
    assert_eq!(first(text(&out.stdout))["document_id"], law_doc.as_str());
}

/// `bunko ask` streams an answer from the embedded model and lists its numbered sources;
/// `bunko summarize --wait` runs the job here and prints the summary with its pages; bad
/// input exits 2 with the API's stable code.
#[test]
fn ask_and_summarize_work_on_the_data_dir() {
    if !super::support::model_installed("gemma-3-270m") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("BUNKO__LOCAL__EMBEDDER", "none")];
    let run = |args: &[&str]| bunko_env(dir.path(), args, &env);
    assert!(run(&["project", "create", "Manual"]).status.success());
    let doc = dir.path().join("ocr.md");
    std::fs::write(
        &doc,
        "# Reading scans\n\nScanned pages are read by tesseract, which recognises Japanese and \
         English text. The text layer of a PDF is used when it has one.\n",
    )
    .unwrap();
    let out = run(&[
        "ingest",
        "--project",
        "manual",
        "--wait",
        doc.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&[
        "ask",
        "Which program reads scanned pages?",
        "--project",
        "manual",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("Sources:\n  [1] Reading scans — p. 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Follow up with: --conversation "),
        "{stdout}"
    );
    let out = run(&["ask", "Which program reads scanned pages?", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "local");
    assert_eq!(v["sources"][0]["page"], 1);

    for (args, code) in [
        (vec!["ask", "  "], "query_empty"),
        (vec!["ask", "x", "--project", "nope"], "not_found"),
        (vec!["ask", "x", "--k", "99"], "invalid_input"),
        (vec!["ask", "x", "--as", "nobody@x.org"], "no user"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let id = v["sources"][0]["document_id"].as_str().unwrap().to_owned();
    let out = run(&["summarize", &id, "--wait"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("[1] p. 1"), "{stdout}");
    assert!(stdout.contains("model local"), "{stdout}");
    let out = run(&["summarize", "not-a-document"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not exist"));
}
