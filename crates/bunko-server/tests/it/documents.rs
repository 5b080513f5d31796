//! Documents end to end, in-process with the real worker, poppler and tesseract: upload →
//! processing → pages, original, search with page and section → delete; bad uploads refused
//! with stable codes and nothing kept; every fixture PDF with its expected outcome.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use bunko_core::config::Config;
use bunko_server::app::{AppState, Runtime, router};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tower::ServiceExt;

pub struct Docs {
    pub router: Router,
    pub state: AppState,
    pub token: String,
    pub _dir: tempfile::TempDir,
}

pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if p.join("fixtures/pdfs").is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "../shared is missing in CI"
    );
    eprintln!("SKIPPED: ../shared/fixtures is absent");
    None
}

fn tools() -> bool {
    ["pdftotext", "pdftoppm", "tesseract"]
        .iter()
        .all(|t| crate::it::support::require_tool(t).is_some())
}

pub async fn start(tweak: impl FnOnce(&mut Config)) -> Docs {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.search.dictionary_cache = crate::it::support::DICT_CACHE.into();
    config.local.embedder = "none".into();
    config.limits.enabled = false;
    config.jobs.poll_interval_ms = 50;
    tweak(&mut config);
    let rt = Runtime::start(config, true).await.unwrap();
    let (email, password) = rt.new_admin.clone().unwrap();
    let token = rt
        .state
        .accounts
        .login(&email, &password, &Default::default())
        .await
        .unwrap()
        .access_token;
    bunko_core::projects::create(rt.state.store.as_ref(), "Papers", None)
        .await
        .unwrap();
    Docs {
        router: router(rt.state.clone()),
        state: rt.state,
        token,
        _dir: dir,
    }
}

pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub bytes: Vec<u8>,
}

pub fn file<'a>(filename: &'a str, bytes: Vec<u8>) -> Part<'a> {
    Part {
        name: "file",
        filename: Some(filename),
        bytes,
    }
}

const BOUNDARY: &str = "bunko-test-boundary-7d3f";

pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend(format!("--{BOUNDARY}\r\n").as_bytes());
        match p.filename {
            Some(f) => b.extend(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                    p.name
                )
                .as_bytes(),
            ),
            None => b.extend(
                format!("Content-Disposition: form-data; name=\"{}\"\r\n\r\n", p.name).as_bytes(),
            ),
        }
        b.extend(&p.bytes);
        b.extend(b"\r\n");
    }
    b.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

pub struct Res {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Res {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The problem's code, after checking status and content type.
    pub fn code(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        self.json()["code"].as_str().unwrap().to_owned()
    }
}

impl Docs {
    pub async fn send(&self, req: Request<Body>) -> Res {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Res {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Res {
        self.send(
            Request::get(path)
                .header("authorization", format!("Bearer {}", self.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Res {
        self.send(
            Request::delete(path)
                .header("authorization", format!("Bearer {}", self.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &str) -> Res {
        self.json_as(&self.token, "POST", path, body).await
    }

    /// A JSON request with another caller's token.
    pub async fn json_as(&self, token: &str, method: &str, path: &str, body: &str) -> Res {
        self.send(
            Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
    }

    /// A document of project `papers` that is queued and never processed (no job), its bytes
    /// named by `sha_byte` repeated (two hex digits).
    pub async fn pending_document(&self, sha_byte: &str) -> bunko_core::documents::Document {
        let papers = self
            .state
            .store
            .get_project("papers")
            .await
            .unwrap()
            .unwrap();
        self.state
            .store
            .create_document(bunko_core::documents::NewDocument {
                project_id: papers.id,
                title: "Pending".into(),
                filename: "pending.md".into(),
                doc_type: bunko_core::documents::DocType::Markdown,
                sha256: sha_byte.repeat(32),
                size_bytes: 1,
                source: "upload".into(),
                tags: vec![],
                origin: None,
            })
            .await
            .unwrap()
            .0
    }

    /// A member with `role` in `project` (none: no project), logged in; returns the token.
    pub async fn member(
        &self,
        email: &str,
        project: Option<(uuid::Uuid, bunko_core::identity::ProjectRole)>,
    ) -> String {
        let acc = &self.state.accounts;
        let c = Default::default();
        let password = "a long enough password 123";
        let (u, _) = acc
            .create_user(
                None,
                email,
                "member",
                bunko_core::identity::GlobalRole::Member,
                Some(password),
                &c,
            )
            .await
            .unwrap();
        if let Some((p, role)) = project {
            acc.put_member(None, p, &u, role, &c).await.unwrap();
        }
        acc.login(email, password, &c).await.unwrap().access_token
    }

    pub async fn upload(&self, parts: &[Part<'_>]) -> Res {
        self.send(
            Request::post("/api/v1/projects/papers/documents")
                .header("authorization", format!("Bearer {}", self.token))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(Body::from(multipart(parts)))
                .unwrap(),
        )
        .await
    }

    /// Waits until every document is ready or failed; returns them by id.
    pub async fn settle(&self, ids: &[String], limit: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let mut docs = Vec::new();
            for id in ids {
                docs.push(self.get(&format!("/api/v1/documents/{id}")).await.json());
            }
            if docs
                .iter()
                .all(|d| matches!(d["status"].as_str(), Some("ready" | "failed")))
            {
                return docs;
            }
            assert!(
                started.elapsed() < limit,
                "documents still processing after {limit:?}: {docs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn ids(upload: &Value) -> Vec<String> {
    upload["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["document_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_process_read_search_and_delete() {
    let (Some(shared), true) = (shared(), tools()) else {
        return;
    };
    document_cycle(start(|_| {}).await, &shared).await;
}

/// The same cycle with everything shared: documents, pages, chunks, jobs and the search
/// index in PostgreSQL, the originals in an S3 bucket (moto's server, signatures checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_process_read_search_and_delete_on_postgres_and_s3() {
    let (Some(shared), true) = (shared(), tools()) else {
        return;
    };
    let (Some(db), Some(s3)) = (
        bunko_store::testing::PgDatabase::create().await,
        bunko_store::testing::s3_config(),
    ) else {
        return;
    };
    let url = db.url.clone();
    let s3c = s3.clone();
    let d = start(move |c| {
        c.database.url = Some(bunko_core::config::DatabaseUrl::new(url));
        c.search.backend = "postgres".into();
        c.blobs.url = Some(format!("s3://{}/{}", s3c.bucket, s3c.prefix));
        c.blobs.endpoint = s3c.endpoint.clone();
        c.blobs.access_key_id = Some(s3c.access_key_id.clone());
        c.blobs.secret_access_key = Some(bunko_core::secret::Secret::new(
            s3c.secret_access_key.clone(),
        ));
    })
    .await;
    assert_eq!(d.state.store.backend(), "postgres");
    let data_dir = d.state.config.data_dir.clone();
    document_cycle(d, &shared).await;
    // The originals are the bucket's (under the URL's prefix, made a folder), none in the data
    // dir.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let other = tempfile::tempdir().unwrap();
    let bucket = bunko_store::s3::S3Blobs::open(
        bunko_store::s3::S3Config {
            prefix: format!("{}/", s3.prefix),
            ..s3
        },
        other.path(),
        bunko_store::s3::http_client().unwrap(),
    )
    .await
    .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let shas: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM documents")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(shas.len(), 2);
    for sha in &shas {
        assert!(
            bunko_core::documents::BlobStore::exists(&bucket, sha)
                .await
                .unwrap()
        );
    }
    assert!(
        bunko_store::blobs::stored_files(&data_dir.join("blobs"))
            .unwrap()
            .is_empty()
    );
    // The rows are PostgreSQL's: what the cycle left (two documents and their chunks).
    let (docs, chunks): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(docs, 2);
    assert!(chunks > 0);
    // …and the search index is PostgreSQL's too, not the data dir's.
    let searchable: i64 = sqlx::query_scalar("SELECT count(*) FROM search_chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(searchable, chunks);
    pool.close().await;
}

/// Chunks of a document in the keyword half, wherever the index lives.
async fn indexed(d: &Docs, doc: &str) -> u64 {
    match &d.state.pg_index {
        Some(pg) => pg
            .document_counts()
            .await
            .unwrap()
            .get(doc)
            .map_or(0, |c| c.0 as u64),
        None => d.state.keyword.count_document(doc).unwrap() as u64,
    }
}

async fn document_cycle(d: Docs, shared: &Path) {
    let zoo = std::fs::read(shared.join("fixtures/pdfs/papers_en/zoo.pdf")).unwrap();
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(
        "第一章 総則\n第一条 この法律は、文庫の検索を定める。\n2 前項の規定は、全文に適用する。\n第二条 用語の意義は、次のとおりとする。\n第三条 細目は、別に定める。\n",
    );
    let md = b"# Field notes\n\nThe heron nests by the river.\n\n## Second part\n\nMore notes.\n"
        .to_vec();
    let up = d
        .upload(&[
            file("zoo.pdf", zoo.clone()),
            file("law.txt", sjis.into_owned()),
            file("../..\\notes\t.md", md),
        ])
        .await;
    assert_eq!(up.status, 202, "{}", String::from_utf8_lossy(&up.body));
    let up = up.json();
    let docs = up["documents"].as_array().unwrap();
    assert!(
        docs.iter()
            .all(|e| e["status"] == "queued" && e["job_id"].is_string())
    );
    assert_eq!(
        docs[2]["filename"], "notes.md",
        "path and control characters are dropped"
    );
    let ids = ids(&up);
    let done = d.settle(&ids, Duration::from_secs(120)).await;
    for doc in &done {
        assert_eq!(doc["status"], "ready", "{doc:#}");
    }
    let zoo_doc = &done[0];
    assert_eq!(
        zoo_doc["title"],
        "zoo: An S3 Class and Methods for Indexed Totally Ordered Observations"
    );
    assert_eq!(zoo_doc["authors"][0], "Achim Zeileis");
    assert_eq!(zoo_doc["page_count"], 30);
    assert_eq!(zoo_doc["language"], "en");
    assert!(zoo_doc["chunk_count"].as_u64().unwrap() > 20);
    assert_eq!(done[1]["language"], "ja");
    assert_eq!(done[2]["title"], "Field notes");

    // Pages: 1-based, normalised, with the method.
    let p1 = d
        .get(&format!("/api/v1/documents/{}/pages/1", ids[0]))
        .await
        .json();
    assert_eq!(
        (p1["page"].as_u64(), p1["method"].as_str()),
        (Some(1), Some("text"))
    );
    assert!(p1["text"].as_str().unwrap().contains("Achim Zeileis"));
    assert_eq!(
        d.get(&format!("/api/v1/documents/{}/pages/31", ids[0]))
            .await
            .code(404),
        "not_found"
    );
    assert_eq!(
        d.get(&format!("/api/v1/documents/{}/pages/0", ids[0]))
            .await
            .code(400),
        "invalid_query"
    );
    let law = d
        .get(&format!("/api/v1/documents/{}/pages/1", ids[1]))
        .await
        .json();
    assert!(
        law["text"]
            .as_str()
            .unwrap()
            .contains("第一条 この法律は、文庫の検索を定める。")
    );
    assert!(law.get("source_text").is_none());
    // With the source: every normalised character maps back to where it came from.
    let src = d
        .get(&format!("/api/v1/documents/{}/pages/1?source=true", ids[1]))
        .await
        .json();
    let text: Vec<char> = src["text"].as_str().unwrap().chars().collect();
    let raw: Vec<char> = src["source_text"].as_str().unwrap().chars().collect();
    let offsets: Vec<(u32, u32)> = serde_json::from_value(src["offsets"].clone()).unwrap();
    for (i, c) in text
        .iter()
        .enumerate()
        .filter(|(_, c)| bunko_core::text::is_cjk(**c))
    {
        let from = bunko_core::text::source_index(&offsets, i as u32).unwrap() as usize;
        assert_eq!(raw[from], *c, "character {i}");
    }

    // The original comes back byte for byte, as a sandboxed attachment.
    let orig = d
        .get(&format!("/api/v1/documents/{}/original", ids[0]))
        .await;
    assert_eq!(orig.status, 200);
    assert_eq!(orig.body, zoo);
    assert_eq!(orig.headers[header::CONTENT_TYPE], "application/pdf");
    assert!(
        orig.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("zoo.pdf")
    );
    assert!(
        orig.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );

    // Search: document title, page and section path of each hit.
    let s = d
        .get("/api/v1/search?q=irregular%20time%20series&mode=keyword&k=3")
        .await
        .json();
    let top = &s["results"][0];
    assert_eq!(top["document_id"], ids[0].as_str(), "{s:#}");
    assert!(top["page_start"].as_u64().unwrap() >= 1);
    assert!(top["section_path"].is_string());
    let s = d
        .get("/api/v1/search?q=%E6%96%87%E5%BA%AB%E3%81%AE%E6%A4%9C%E7%B4%A2&mode=keyword")
        .await
        .json();
    assert_eq!(s["results"][0]["document_id"], ids[1].as_str(), "{s:#}");
    assert_eq!(
        s["results"][0]["section_path"], "第一章 総則 > 第一条",
        "{s:#}"
    );

    // Listing with filters.
    let l = d
        .get("/api/v1/projects/papers/documents?language=ja")
        .await
        .json();
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let l = d
        .get("/api/v1/projects/papers/documents?q=ZOO&type=pdf&status=ready")
        .await
        .json();
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        d.get("/api/v1/projects/papers/documents?status=done")
            .await
            .code(400),
        "invalid_query"
    );
    assert_eq!(
        d.get("/api/v1/projects/papers/documents?colour=red")
            .await
            .code(400),
        "invalid_query"
    );

    // The same bytes again: a duplicate, no new job.
    let again = d.upload(&[file("copy.pdf", zoo.clone())]).await.json();
    assert_eq!(again["documents"][0]["status"], "duplicate");
    assert_eq!(again["documents"][0]["document_id"], ids[0].as_str());
    assert!(again["documents"][0]["job_id"].is_null());

    // Reprocessing replaces the chunks (same count, same search results).
    let r = d
        .post_json(&format!("/api/v1/documents/{}/reprocess", ids[2]), "")
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let again = d.settle(&ids[2..3], Duration::from_secs(60)).await;
    assert_eq!(again[0]["chunk_count"], done[2]["chunk_count"]);
    assert_eq!(
        indexed(&d, &ids[2]).await,
        done[2]["chunk_count"].as_u64().unwrap()
    );
    assert_eq!(
        d.post_json(
            &format!("/api/v1/documents/{}/reprocess", ids[2]),
            "{\"password\": 5}"
        )
        .await
        .code(422),
        "invalid_body"
    );
    assert_eq!(
        d.post_json(&format!("/api/v1/documents/{}/reprocess", ids[2]), "{")
            .await
            .code(400),
        "malformed_json"
    );

    // Delete: gone from the index, the store and (no other reference) the blob store.
    let sha = zoo_doc["sha256"].as_str().unwrap().to_owned();
    assert_eq!(
        d.delete(&format!("/api/v1/documents/{}", ids[0]))
            .await
            .status,
        204
    );
    assert_eq!(
        d.get(&format!("/api/v1/documents/{}", ids[0]))
            .await
            .code(404),
        "not_found"
    );
    assert_eq!(indexed(&d, &ids[0]).await, 0);
    let s = d
        .get("/api/v1/search?q=irregular%20time%20series&mode=keyword")
        .await
        .json();
    assert!(
        s["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["document_id"] != ids[0].as_str())
    );
    assert!(!d.state.ingest.blobs.exists(&sha).await.unwrap());
    assert_eq!(
        d.delete(&format!("/api/v1/documents/{}", ids[0]))
            .await
            .code(404),
        "not_found"
    );
    assert_eq!(
        d.get("/api/v1/documents/not-a-uuid").await.code(404),
        "not_found"
    );

    // Metrics carry the ingestion counters.
    let m = d
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("bunko_ingest_documents_total{outcome=\"ready\"} 4"),
        "{text}"
    );
    assert!(text.contains("bunko_ingest_pages_total{method=\"text\"}"));
    assert!(text.contains("bunko_ingest_stage_duration_seconds_bucket{stage=\"extract\""));
    assert!(text.contains("bunko_ingest_bytes_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_stable_codes_and_keep_nothing() {
    let d = start(|c| c.ingest.max_file_bytes = 64 * 1024).await;
    let staging = d.state.config.data_dir.join("blobs/staging");
    assert_eq!(
        d.upload(&[file("empty.pdf", Vec::new())]).await.code(400),
        "empty_file"
    );
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00binary\x00\x01\x02\x03".to_vec();
    assert_eq!(
        d.upload(&[file("a.txt", b"fine".to_vec()), file("archive.docx", zip)])
            .await
            .code(415),
        "unsupported_document_type"
    );
    let big = vec![b'a'; 64 * 1024 + 1];
    assert_eq!(
        d.upload(&[file("big.txt", big)]).await.code(413),
        "payload_too_large"
    );
    assert_eq!(
        d.upload(&[Part {
            name: "password",
            filename: None,
            bytes: b"x".to_vec()
        }])
        .await
        .code(400),
        "bad_request"
    );
    assert_eq!(
        d.upload(&[Part {
            name: "colour",
            filename: None,
            bytes: b"red".to_vec()
        }])
        .await
        .code(400),
        "bad_request"
    );
    assert_eq!(
        d.post_json("/api/v1/projects/papers/documents", "{}")
            .await
            .code(415),
        "unsupported_media_type"
    );
    // A body that is not multipart at all, and one cut short.
    let broken = d
        .send(
            Request::post("/api/v1/projects/papers/documents")
                .header("authorization", format!("Bearer {}", d.token))
                .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
                .body(Body::from("--bunko-test-boundary-7d3f\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.txt\"\r\n\r\nunterminated"))
                .unwrap(),
        )
        .await;
    assert_eq!(broken.code(400), "bad_request");
    let no_boundary = d
        .send(
            Request::post("/api/v1/projects/papers/documents")
                .header("authorization", format!("Bearer {}", d.token))
                .header("content-type", "multipart/form-data")
                .body(Body::from("whatever"))
                .unwrap(),
        )
        .await;
    assert_eq!(no_boundary.code(400), "bad_request");
    // Unknown project: 404.
    let r = d
        .send(
            Request::post("/api/v1/projects/nope/documents")
                .header("authorization", format!("Bearer {}", d.token))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(Body::from(multipart(&[file("a.txt", b"x".to_vec())])))
                .unwrap(),
        )
        .await;
    assert_eq!(r.code(404), "not_found");
    // Nothing was kept: no documents, no blobs, no staged files.
    let l = d.get("/api/v1/projects/papers/documents").await.json();
    assert!(l["items"].as_array().unwrap().is_empty(), "{l}");
    let staged: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(staged.is_empty(), "staging left: {staged:?}");
    let blobs: Vec<_> = std::fs::read_dir(d.state.config.data_dir.join("blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "staging")
        .collect();
    assert!(blobs.is_empty(), "blobs left: {blobs:?}");
    // Unknown document ids and reprocess conflicts.
    let id = "0190a0a0-0000-7000-8000-000000000000";
    assert_eq!(
        d.get(&format!("/api/v1/documents/{id}")).await.code(404),
        "not_found"
    );
    assert_eq!(
        d.get(&format!("/api/v1/documents/{id}/original"))
            .await
            .code(404),
        "not_found"
    );
    assert_eq!(
        d.post_json(&format!("/api/v1/documents/{id}/reprocess"), "")
            .await
            .code(404),
        "not_found"
    );
}

/// Every PDF in ../shared/fixtures/pdfs, with the outcome a user should see.
fn expected_outcome(rel: &str) -> (&'static str, Option<&'static str>) {
    match rel {
        // Both AES-256 files open without a password: one has an empty user password, the
        // other an empty owner password (poppler and pypdf agree), so nothing is asked.
        "encrypted/r6-empty-password.pdf" | "encrypted/r6-user-password.pdf" => ("ready", None),
        r if r.starts_with("encrypted/") => ("failed", Some("document_encrypted")),
        "malformed/invalid.pdf"
        | "malformed/378014596.pdf"
        | "malformed/truncated-zoo.pdf"
        | "malformed/cyclic-toc.pdf" => ("failed", Some("document_unreadable")),
        "malformed/no_contents.pdf" => ("failed", Some("document_empty")),
        // The rest have text: in the text layer, or drawn (vector outlines, fonts without a
        // Unicode mapping, scans), which OCR reads.
        _ => ("ready", None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_pdf_has_its_expected_outcome() {
    let (Some(shared), true) = (shared(), tools()) else {
        return;
    };
    let d = start(|c| c.ingest.ocr_dpi = 200).await;
    let root = shared.join("fixtures/pdfs");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap().flatten() {
        if !dir.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "pdf") {
                files.push(f.path());
            }
        }
    }
    files.sort();
    assert!(files.len() >= 25, "{} fixture PDFs", files.len());
    let mut ids = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let up = d.upload(&[file(&name, bytes)]).await;
        assert_eq!(
            up.status,
            202,
            "{name}: {}",
            String::from_utf8_lossy(&up.body)
        );
        ids.push(
            up.json()["documents"][0]["document_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let docs = d.settle(&ids, Duration::from_secs(600)).await;
    let mut wrong = Vec::new();
    for (f, doc) in files.iter().zip(&docs) {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (status, code) = expected_outcome(&rel);
        let got_code = doc["error"]["code"].as_str();
        if doc["status"] != status || got_code != code {
            wrong.push(format!(
                "{rel}: expected {status} {code:?}, got {} {got_code:?} ({})",
                doc["status"], doc["error"]["message"]
            ));
        }
        if status == "failed" {
            // A failed document keeps its original and says why.
            if doc["error"]["message"].as_str().is_none_or(str::is_empty) {
                wrong.push(format!("{rel}: failed without a reason: {doc}"));
            }
            let o = d
                .get(&format!(
                    "/api/v1/documents/{}/original",
                    doc["id"].as_str().unwrap()
                ))
                .await;
            assert_eq!(o.status, 200, "{rel}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The encrypted ones open with their password (given on reprocess).
    for (f, doc) in files.iter().zip(&docs) {
        let name = f.file_name().unwrap().to_string_lossy();
        let pw = match name.as_ref() {
            "r2-user-password.pdf" | "r4-aes-user-password.pdf" => "asdfzxcv",
            "libreoffice-writer-password.pdf" => "openpassword",
            "graph-encrypted.pdf" => "user",
            _ => continue,
        };
        let id = doc["id"].as_str().unwrap();
        let wrong_pw = d
            .post_json(
                &format!("/api/v1/documents/{id}/reprocess"),
                "{\"password\": \"not it\"}",
            )
            .await;
        assert_eq!(wrong_pw.status, 202);
        let after = d.settle(&[id.to_owned()], Duration::from_secs(60)).await;
        assert_eq!(after[0]["error"]["code"], "document_encrypted", "{name}");
        let r = d
            .post_json(
                &format!("/api/v1/documents/{id}/reprocess"),
                &format!("{{\"password\": \"{pw}\"}}"),
            )
            .await;
        assert_eq!(r.status, 202);
        let after = d.settle(&[id.to_owned()], Duration::from_secs(60)).await;
        assert_eq!(after[0]["status"], "ready", "{name}: {}", after[0]);
        // The password is not kept once processing ends, and never appears in the job.
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(d.state.store.document_password(uuid).await.unwrap(), None);
        let job = d
            .state
            .store
            .get_job(uuid::Uuid::parse_str(after[0]["job_id"].as_str().unwrap()).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(!job.payload.to_string().contains(pw), "{}", job.payload);
    }
    // Scanned pages are marked as OCR with a confidence.
    let c03 = files
        .iter()
        .position(|f| f.ends_with("scanned_ocr/c03-29.pdf"))
        .unwrap();
    let p = d
        .get(&format!("/api/v1/documents/{}/pages/1", ids[c03]))
        .await
        .json();
    assert_eq!(p["method"], "ocr");
    assert!(p["confidence"].as_f64().unwrap() > 50.0, "{p}");
    let m = d
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("bunko_ingest_documents_total{outcome=\"document_encrypted\"}"),
        "{text}"
    );
    assert!(text.contains("bunko_ingest_pages_total{method=\"ocr\"}"));
}

/// Japanese is searched by words as well as bigrams: the dictionary is built from Debian's
/// mecab-ipadic into the data dir at start, and a conjugated query finds the base form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn japanese_words_are_searched_with_the_dictionary_built_in_the_data_dir() {
    let source = std::path::Path::new(bunko_index::morph::DEBIAN_IPADIC);
    if !source.join("matrix.def").is_file() {
        eprintln!(
            "SKIPPED: no {} (apt-get install mecab-ipadic)",
            source.display()
        );
        return;
    }
    // The default cache: `<data_dir>/dict`.
    let d = start(|c| c.search.dictionary_cache = Default::default()).await;
    let built: Vec<_> = std::fs::read_dir(d.state.config.data_dir.join("dict"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        built.len() == 1 && built[0].starts_with("ipadic-"),
        "{built:?}"
    );
    let up = d
        .upload(&[
            file(
                "report.md",
                "# 月報\n\n毎月の報告書を書く。\n".as_bytes().to_vec(),
            ),
            file(
                "log.md",
                "# 記録\n\n点検の記録を保存する。\n".as_bytes().to_vec(),
            ),
        ])
        .await
        .json();
    let docs = ids(&up);
    d.settle(&docs, Duration::from_secs(60)).await;
    // 書いた shares no character bigram with 書く; its base form is 書く.
    let r = d
        .post_json("/api/v1/search", r#"{"q": "書いた", "mode": "keyword"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let found: Vec<String> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(found, vec![docs[0].clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_apply_inside_the_index_query() {
    let d = start(|_| {}).await;
    let ja = "# 観察記録\n\n川に heron（サギ）がいる。サギは魚を食べる。\n"
        .as_bytes()
        .to_vec();
    let en = b"Field notes: the heron waits by the river for fish.\n".to_vec();
    let en2 =
        b"# Heron guide\n\nA heron is a long-legged bird; this heron guide lists many.\n".to_vec();
    let up = d
        .upload(&[
            file("ja.md", ja),
            Part {
                name: "tags",
                filename: None,
                bytes: b"law, birds".to_vec(),
            },
        ])
        .await
        .json();
    let ja_id = ids(&up).remove(0);
    let up = d
        .upload(&[
            file("notes.txt", en),
            file("guide.md", en2),
            Part {
                name: "tags",
                filename: None,
                bytes: b"notes".to_vec(),
            },
        ])
        .await
        .json();
    let en_ids = ids(&up);
    let mut all = vec![ja_id.clone()];
    all.extend(en_ids.clone());
    d.settle(&all, Duration::from_secs(60)).await;
    let d = &d;
    let search = |filters: &str| {
        let body = format!("{{\"q\": \"heron\", \"mode\": \"keyword\", \"filters\": {filters}}}");
        async move {
            let r = d.post_json("/api/v1/search", &body).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let v = r.json();
            let mut docs: Vec<String> = v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["document_id"].as_str().unwrap().to_owned())
                .collect();
            docs.sort();
            docs.dedup();
            docs
        }
    };
    let mut every = all.clone();
    every.sort();
    assert_eq!(search("{}").await, every);
    assert_eq!(search("{\"language\": \"ja\"}").await, vec![ja_id.clone()]);
    assert_eq!(search("{\"tags\": [\"birds\"]}").await, vec![ja_id.clone()]);
    let mut en_sorted = en_ids.clone();
    en_sorted.sort();
    assert_eq!(search("{\"tags\": \"notes\"}").await, en_sorted);
    assert_eq!(
        search("{\"type\": \"text\"}").await,
        vec![en_ids[0].clone()]
    );
    assert_eq!(
        search(&format!(
            "{{\"document_ids\": [\"{}\"], \"language\": [\"en\", \"ja\"]}}",
            en_ids[1]
        ))
        .await,
        vec![en_ids[1].clone()]
    );
    assert!(search("{\"date_to\": \"2001-01-01\"}").await.is_empty());
    assert!(search("{\"source\": \"crawler\"}").await.is_empty());
    // Malformed filters: 400 naming the field.
    for (bad, field) in [
        ("{\"language\": 5}", "filters.language[0]"),
        ("{\"type\": [\"docx\"]}", "filters.type[0]"),
        ("{\"date_from\": \"2020-02-30\"}", "filters.date_from"),
        ("{\"colour\": \"red\"}", "filters.colour"),
        ("[]", "filters"),
    ] {
        let r = d
            .post_json(
                "/api/v1/search",
                &format!("{{\"q\": \"heron\", \"filters\": {bad}}}"),
            )
            .await;
        assert_eq!(r.code(400), "invalid_filter", "{bad}");
        assert!(
            r.json()["detail"].as_str().unwrap().starts_with(field),
            "{bad}: {}",
            r.json()
        );
    }
    // A filter on a document of a project the caller cannot search finds nothing.
    let other = bunko_core::projects::create(d.state.store.as_ref(), "Hidden", None)
        .await
        .unwrap();
    let viewer_tok = {
        let acc = &d.state.accounts;
        let c = Default::default();
        let (u, _) = acc
            .create_user(
                None,
                "v@x.org",
                "v",
                bunko_core::identity::GlobalRole::Member,
                Some("a long enough password 123"),
                &c,
            )
            .await
            .unwrap();
        acc.put_member(
            None,
            other.id,
            &u,
            bunko_core::identity::ProjectRole::Viewer,
            &c,
        )
        .await
        .unwrap();
        acc.login("v@x.org", "a long enough password 123", &c)
            .await
            .unwrap()
            .access_token
    };
    let r = d
        .send(
            Request::post("/api/v1/search")
                .header("authorization", format!("Bearer {viewer_tok}"))
                .header("content-type", "application/json")
                .body(Body::from(format!(
                    "{{\"q\": \"heron\", \"mode\": \"keyword\", \"filters\": {{\"document_ids\": [\"{ja_id}\"]}}}}"
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["results"].as_array().unwrap().is_empty());
}

/// The start-up check repairs an index that lost a document's chunks (a crash before the
/// vector index was written, or a keyword index restored from an older copy), and drops
/// entries of documents that no longer exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_check_repairs_both_halves() {
    if !crate::it::support::model_installed("multilingual-e5-small") {
        return;
    }
    let d = start(|c| c.local.embedder = "multilingual-e5-small".into()).await;
    let up = d
        .upload(&[
            file(
                "a.md",
                "# 休憩\n\n使用者は休憩時間を与えなければならない。\n"
                    .as_bytes()
                    .to_vec(),
            ),
            file(
                "b.md",
                b"# Cake\n\nWhisk the eggs with sugar and bake the cake.\n".to_vec(),
            ),
        ])
        .await
        .json();
    let ids = ids(&up);
    let done = d.settle(&ids, Duration::from_secs(120)).await;
    let pid = done[0]["project_id"].as_str().unwrap().to_owned();
    let vector_count = |doc: &str| {
        let ready = d.state.vector.get().unwrap();
        ready
            .index
            .all_ids()
            .iter()
            .filter(|i| i.starts_with(&format!("{doc}:")))
            .count()
    };
    let n0 = vector_count(&ids[0]);
    assert!(n0 > 0);
    // Lose document a's vectors and document b's keyword entries; leave an orphan behind.
    {
        let ready = d.state.vector.get().unwrap();
        for id in ready.index.ids(&pid) {
            if id.starts_with(&ids[0]) {
                ready.index.delete(&pid, &id);
            }
        }
    }
    d.state.keyword.delete_document(&ids[1]).unwrap();
    let ghost = "0190a0a0-0000-7000-8000-00000000beef";
    d.state
        .keyword
        .upsert_chunk(&format!("{ghost}:0"), &pid, ghost, "gone", "orphaned text")
        .unwrap();
    d.state.keyword.commit().unwrap();
    assert_eq!(vector_count(&ids[0]), 0);
    let r = d.state.ingest.check_consistency().await.unwrap();
    assert_eq!(
        (r.documents, r.reindexed, r.orphans_removed),
        (2, 2, 1),
        "{r:?}"
    );
    assert_eq!(vector_count(&ids[0]), n0);
    assert_eq!(
        d.state.keyword.count_document(&ids[1]).unwrap() as u64,
        done[1]["chunk_count"].as_u64().unwrap()
    );
    assert_eq!(d.state.keyword.count_document(ghost).unwrap(), 0);
    // A second check finds nothing to do.
    let r = d.state.ingest.check_consistency().await.unwrap();
    assert_eq!(
        (r.reindexed, r.orphans_removed, r.stale_failed),
        (0, 0, 0),
        "{r:?}"
    );
}
