//! Durability of ingestion: `kill -9` in the middle of a 200-file ingest, restart, and every
//! document ends ready exactly once — none stuck, none duplicated, and the search index holds
//! exactly each document's stored chunks.

use crate::it::documents::{file, multipart};
use crate::it::support::{Server, client};
use bunko_core::documents::{DocStatus, DocumentFilter, DocumentQueries};
use bunko_core::ports::PageRequest;
use serde_json::Value;
use std::time::{Duration, Instant};

const FILES: usize = 200;

fn body_of(n: usize) -> Vec<u8> {
    let mut s = format!("# Report {n}\n\nThis report carries the marker crashword{n} and ");
    for i in 0..30 {
        s.push_str(&format!(
            "sentence {i} of report {n} says something about rivers, herons and ledgers. "
        ));
    }
    s.push_str(
        "\n\n## 第二部\n\n報告書の第二部は日本語で書かれている。検索できることを確かめる。\n",
    );
    s.into_bytes()
}

async fn ready_count(s: &Server, token: &str) -> (usize, usize) {
    let mut ready = 0;
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = s.url("/api/v1/projects/crash/documents?limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let v: Value = client()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for d in v["items"].as_array().unwrap() {
            total += 1;
            if d["status"] == "ready" {
                ready += 1;
            }
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (ready, total),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_200_file_ingest_then_restart() {
    let env = [
        ("BUNKO__LOCAL__EMBEDDER", "none"),
        ("BUNKO__JOBS__LEASE_TTL_SECS", "2"),
        ("BUNKO__JOBS__POLL_INTERVAL_MS", "50"),
        ("BUNKO__LIMITS__ENABLED", "false"),
    ];
    let mut s = Server::start(&[], &env);
    let token = s.token();
    let c = client();
    let r = c
        .post(s.url("/api/v1/projects"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "Crash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let bodies: Vec<Vec<u8>> = (0..FILES).map(body_of).collect();
    for batch in 0..4 {
        let names: Vec<String> = (batch * 50..batch * 50 + 50)
            .map(|n| format!("report-{n}.md"))
            .collect();
        let parts: Vec<_> = names
            .iter()
            .zip(&bodies[batch * 50..batch * 50 + 50])
            .map(|(n, b)| file(n, b.clone()))
            .collect();
        let r = c
            .post(s.url("/api/v1/projects/crash/documents"))
            .bearer_auth(&token)
            .header(
                "content-type",
                "multipart/form-data; boundary=bunko-test-boundary-7d3f",
            )
            .body(multipart(&parts))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    // Kill it hard once a fair part, but not all, is done.
    let started = Instant::now();
    loop {
        let (ready, total) = ready_count(&s, &token).await;
        assert_eq!(total, FILES);
        if ready >= FILES / 5 {
            assert!(
                ready < FILES,
                "all {FILES} finished before the kill; make the work larger"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "too slow: {ready} ready\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.signal("KILL");
    let _ = s.stop_after_signal();
    let data_dir = s.data_dir.clone();
    let killed_at = ready_count_offline(&data_dir).await;
    eprintln!("killed with {killed_at} of {FILES} ready");

    // Restart on the same data dir: the rest is finished, nothing twice.
    let cwd = data_dir.parent().unwrap().to_path_buf();
    let mut s2 = Server::start_in(&cwd, &data_dir, &[], &env);
    let token = s2.token();
    let started = Instant::now();
    loop {
        let (ready, total) = ready_count(&s2, &token).await;
        assert_eq!(total, FILES, "documents were duplicated or lost");
        if ready == FILES {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{ready} of {FILES} ready after the restart\n{}",
            s2.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every marker finds exactly its own document.
    for n in (0..FILES).step_by(7) {
        let v: Value = c
            .get(s2.url(&format!("/api/v1/search?q=crashword{n}&mode=keyword&k=5")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let hits = v["results"].as_array().unwrap();
        assert!(!hits.is_empty(), "crashword{n}: {v}");
        let doc = hits[0]["document_id"].as_str().unwrap().to_owned();
        assert!(
            hits.iter().all(|h| h["document_id"] == doc.as_str()),
            "crashword{n}: {v}"
        );
    }
    let (status, logs) = s2.stop();
    assert!(status.success(), "{logs}");

    // Offline: the store and the keyword index agree chunk for chunk.
    let store = bunko_store::sqlite::SqliteStore::open(&data_dir.join("bunko.db"))
        .await
        .unwrap();
    let ix = bunko_index::keyword::KeywordIndex::open(&data_dir.join("index/keyword")).unwrap();
    let project = bunko_core::ports::ProjectQueries::get_project(&store, "crash")
        .await
        .unwrap()
        .unwrap();
    let docs = store
        .list_documents(
            project.id,
            &DocumentFilter::default(),
            PageRequest {
                limit: 500,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(docs.items.len(), FILES);
    let mut shas = std::collections::HashSet::new();
    for d in &docs.items {
        assert_eq!(d.status, DocStatus::Ready);
        assert!(shas.insert(d.sha256.clone()), "two documents for one file");
        let stored = store.document_chunks(d.id).await.unwrap().len();
        assert!(stored > 0);
        assert_eq!(d.chunk_count as usize, stored);
        assert_eq!(
            ix.count_document(&d.id.to_string()).unwrap(),
            stored,
            "index and store disagree for {}",
            d.filename
        );
    }
    assert_eq!(ix.documents().unwrap().len(), FILES);
}

async fn ready_count_offline(data_dir: &std::path::Path) -> usize {
    let store = bunko_store::sqlite::SqliteStore::open(&data_dir.join("bunko.db"))
        .await
        .unwrap();
    let ready = store.ready_documents().await.unwrap().len();
    bunko_core::ports::MetaStore::close(&store).await;
    ready
}
