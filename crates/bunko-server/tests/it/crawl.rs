//! Crawlers end to end against local stand-in servers that serve the real response formats in
//! ../shared/fixtures/crawl (see SOURCES.md there): arXiv's Atom API paged, a new version of a
//! paper recorded as a version (search sees the current one unless asked `as_of`), a crawl
//! that fails midway resuming from its cursor without duplicates, 429 + Retry-After waited
//! out; e-Gov law revisions as versions valid by date, error responses and a wrong shape;
//! RSS with ETag, edits, malformed and Shift_JIS feeds; watched folders with changes and
//! deletions; the allow-list and the private-network guard. No test touches the internet.
#![allow(clippy::unwrap_used)]

use crate::it::documents::{Docs, start};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn crawl_fixtures() -> Option<PathBuf> {
    let p = crate::it::documents::shared()?.join("fixtures/crawl");
    assert!(p.is_dir(), "../shared/fixtures/crawl is missing");
    Some(p)
}

#[derive(Default)]
struct Stand {
    dir: PathBuf,
    base: Mutex<String>,
    /// Every request: path?query.
    log: Mutex<Vec<String>>,
    /// arXiv: also list a v2 of the first paper.
    v2: AtomicBool,
    /// arXiv: answer 500 to pages after the first.
    fail_after_first: AtomicBool,
    /// arXiv: answer 429 + Retry-After: 1 to the next page-2 request.
    busy_once: AtomicBool,
    /// e-Gov: the listing answers with a structurally wrong body.
    egov_broken: AtomicBool,
    feed: Mutex<(String, Vec<u8>)>,
    feed_requests: AtomicU32,
}

impl Stand {
    fn base(&self) -> String {
        self.base.lock().unwrap().clone()
    }
}

type S = State<Arc<Stand>>;

fn entries(atom: &str) -> (String, Vec<String>) {
    let head_end = atom.find("<entry>").unwrap();
    let mut out = Vec::new();
    let mut rest = &atom[head_end..];
    while let Some(i) = rest.find("<entry>") {
        let j = rest[i..].find("</entry>").unwrap() + i + "</entry>".len();
        out.push(rest[i..j].to_owned());
        rest = &rest[j..];
    }
    (atom[..head_end].to_owned(), out)
}

async fn arxiv_query(State(s): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let start: usize = q.get("start").and_then(|v| v.parse().ok()).unwrap_or(0);
    let max: usize = q
        .get("max_results")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    s.log.lock().unwrap().push(format!(
        "/api/query?start={start}&search_query={}",
        q.get("search_query").cloned().unwrap_or_default()
    ));
    if start > 0 && s.fail_after_first.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream trouble").into_response();
    }
    if start > 0 && s.busy_once.swap(false, Ordering::SeqCst) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "slow down",
        )
            .into_response();
    }
    let atom = std::fs::read_to_string(s.dir.join("arxiv_api/query_all_science_2019.atom.xml"))
        .unwrap()
        .replace("http://arxiv.org/", &format!("{}/", s.base()));
    let (head, mut all) = entries(&atom);
    if s.v2.load(Ordering::SeqCst) {
        let v2 = all[0]
            .replace("1501.05039v1", "1501.05039v2")
            .replace(
                "<updated>2015-01-21T02:41:55Z</updated>",
                "<updated>2016-02-01T00:00:00Z</updated>",
            )
            .replace(
                "Data science is gaining",
                "Data science (in its revised telling) is gaining",
            );
        all.push(v2);
    }
    let head = head.replace(">120839<", &format!(">{}<", all.len()));
    let page: String = all.iter().skip(start).take(max).cloned().collect();
    (
        [(header::CONTENT_TYPE, "application/atom+xml")],
        format!("{head}{page}</feed>"),
    )
        .into_response()
}

fn article(caption: &str, title: &str, sentence: &str) -> Value {
    let t = |tag: &str, children: Value| json!({ "tag": tag, "attr": "", "children": children });
    t(
        "Article",
        json!([
            t("ArticleCaption", json!([caption])),
            t("ArticleTitle", json!([title])),
            t(
                "Paragraph",
                json!([
                    t("ParagraphNum", json!([])),
                    t(
                        "ParagraphSentence",
                        json!([t("Sentence", json!([sentence]))])
                    ),
                ])
            ),
        ]),
    )
}

fn law_tree(sentence: &str) -> Value {
    let t = |tag: &str, children: Value| json!({ "tag": tag, "attr": "", "children": children });
    json!({ "law_full_text": t("Law", json!([
        t("LawNum", json!(["令和三年法律第三十六号"])),
        t("LawBody", json!([
            t("LawTitle", json!(["デジタル庁設置法"])),
            t("MainProvision", json!([
                article("（設置）", "第一条", sentence),
                article("（任務）", "第二条", "デジタル社会の形成に関する行政事務の迅速かつ重点的な遂行を図る。"),
                article("（所掌事務）", "第三条", "前条の任務を達成するため、次に掲げる事務をつかさどる。"),
            ])),
        ])),
    ]))})
}

const OLD_REV: &str = "503AC0000000036_20210901_000000000000000";
const NEW_REV: &str = "503AC0000000036_20240607_506AC0000000046";

async fn egov_laws(State(s): S, Query(q): Query<HashMap<String, String>>) -> Response {
    s.log.lock().unwrap().push(format!("/api/2/laws {q:?}"));
    let name = if s.egov_broken.load(Ordering::SeqCst) {
        "japanese-law-mcp_law-search-structural-error.json"
    } else if q.get("law_type").map(String::as_str) == Some("Rule") {
        "japanese-law-mcp_law-search-empty.json"
    } else {
        "egov-mcp_法令一覧取得API.json"
    };
    let body = std::fs::read(s.dir.join("egov_v2").join(name)).unwrap();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn egov_revisions(State(s): S, UrlPath(id): UrlPath<String>) -> Response {
    s.log
        .lock()
        .unwrap()
        .push(format!("/api/2/law_revisions/{id}"));
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(s.dir.join("egov_v2/egov-mcp_法令履歴一覧取得API.json")).unwrap(),
    )
    .unwrap();
    // The fixture's one revision (2024-06-07) and the law as first enacted (2021-09-01).
    let mut first = v["revisions"][0].clone();
    first["law_revision_id"] = json!(OLD_REV);
    first["amendment_enforcement_date"] = json!("2021-09-01");
    first["amendment_law_id"] = Value::Null;
    first["current_revision_status"] = json!("PreviousEnforced");
    v["revisions"].as_array_mut().unwrap().push(first);
    axum::Json(v).into_response()
}

async fn egov_law_data(State(s): S, UrlPath(rev): UrlPath<String>) -> Response {
    s.log.lock().unwrap().push(format!("/api/2/law_data/{rev}"));
    match rev.as_str() {
        OLD_REV => axum::Json(law_tree("デジタル庁は、内閣に置く。")).into_response(),
        NEW_REV => axum::Json(law_tree(
            "デジタル庁は、内閣に置く。改正後の規定により情報通信技術の活用を図る。",
        ))
        .into_response(),
        "322CO0000000016_20240401_506CO0000000161" => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "code": "404001", "message": "指定された法令が見つかりません" })),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn feed(State(s): S, headers: HeaderMap) -> Response {
    s.feed_requests.fetch_add(1, Ordering::SeqCst);
    let (etag, body) = s.feed.lock().unwrap().clone();
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.to_str().unwrap() == etag)
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [
            (header::ETAG, etag.as_str()),
            (header::CONTENT_TYPE, "application/rss+xml"),
        ],
        body,
    )
        .into_response()
}

async fn pdf(State(s): S, UrlPath(id): UrlPath<String>) -> Response {
    s.log.lock().unwrap().push(format!("/pdf/{id}"));
    let Some(shared) = crate::it::documents::shared() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let name = if id.contains("05039") {
        "sandwich.pdf"
    } else {
        "zoo.pdf"
    };
    let bytes = std::fs::read(shared.join("fixtures/pdfs/papers_en").join(name)).unwrap();
    ([(header::CONTENT_TYPE, "application/pdf")], bytes).into_response()
}

/// OAI-PMH: the fixture's page with a resumption token added, then a second page (another
/// record) that ends the list.
async fn oai(State(s): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut keys: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    keys.sort();
    s.log
        .lock()
        .unwrap()
        .push(format!("/oai?{}", keys.join("&")));
    let page1 = std::fs::read_to_string(
        s.dir
            .join("arxiv_oai/invenio_listrecords_arXiv_astro-ph_2013.xml"),
    )
    .unwrap();
    let body = match q.get("resumptionToken").map(String::as_str) {
        None => page1.replace(
            "</ListRecords>",
            r#"<resumptionToken cursor="0" completeListSize="2">tok-1</resumptionToken></ListRecords>"#,
        ),
        Some("tok-1") if s.fail_after_first.load(Ordering::SeqCst) => {
            return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "3600")], "maintenance").into_response();
        }
        Some("tok-1") => page1
            .replace("0801.3931", "0802.0001")
            .replace("2013-03-26", "2013-03-27")
            .replace("Dynamical study of 2D and 3D barred galaxy models", "A second record")
            .replace("</ListRecords>", r#"<resumptionToken cursor="1" completeListSize="2"/></ListRecords>"#),
        Some(_) => page1.replace("<ListRecords>", "").replace("</ListRecords>", "").replace(
            "<request",
            r#"<error code="badResumptionToken">The value of the resumptionToken argument is invalid or expired.</error><request"#,
        ),
    };
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

async fn robots_txt(State(s): S) -> &'static str {
    s.log.lock().unwrap().push("/robots.txt".into());
    "User-agent: *\nDisallow: /\n\nUser-agent: bunko\nDisallow: /private/\nCrawl-delay: 0\n"
}

async fn linked_feed(State(s): S) -> Response {
    let base = s.base();
    let body = format!(
        r#"<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>links</title>
        <entry><id>urn:a</id><title>公開ページ</title><link href="{base}/pages/a.html"/><updated>2024-09-01T00:00:00Z</updated></entry>
        <entry><id>urn:b</id><title>非公開ページ</title><link href="{base}/private/b.html"/><updated>2024-09-01T00:00:00Z</updated></entry>
        </feed>"#
    );
    ([(header::CONTENT_TYPE, "application/atom+xml")], body).into_response()
}

async fn page(State(s): S, UrlPath(name): UrlPath<String>) -> Response {
    s.log.lock().unwrap().push(format!("/page/{name}"));
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<html><head><title>{name}</title></head><body><main><h1>お知らせ {name}</h1><p>窓口の受付時間を変更します。</p></main></body></html>"),
    )
        .into_response()
}

async fn stand_in(dir: PathBuf) -> Arc<Stand> {
    let st = Arc::new(Stand {
        dir,
        ..Default::default()
    });
    let app = axum::Router::new()
        .route("/api/query", get(arxiv_query))
        .route("/api/2/laws", get(egov_laws))
        .route("/api/2/law_revisions/{id}", get(egov_revisions))
        .route("/api/2/law_data/{rev}", get(egov_law_data))
        .route("/feed.xml", get(feed))
        .route("/pdf/{id}", get(pdf))
        .route("/robots.txt", get(robots_txt))
        .route("/oai", get(oai))
        .route("/linked.xml", get(linked_feed))
        .route("/pages/{name}", get(page))
        .route("/private/{name}", get(page))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *st.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    st
}

fn loopback_allowed(c: &mut bunko_core::config::Config) {
    c.crawl.allow_hosts = vec!["127.0.0.1".into()];
    c.crawl.allow_private_networks = true;
    c.crawl.max_retry_wait_secs = 5;
}

async fn add_source(d: &Docs, def: Value) {
    let r = d.post_json("/api/v1/sources", &def.to_string()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

async fn crawl_via_api(d: &Docs, name: &str) -> Value {
    let r = d
        .post_json(&format!("/api/v1/sources/{name}/crawl"), "")
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json()["job_id"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let j = d.get(&format!("/api/v1/jobs/{job}")).await.json();
        if j["state"] == "succeeded" || j["state"] == "dead" {
            return j;
        }
        assert!(Instant::now() < until, "crawl job still {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crawl_here(
    d: &Docs,
    name: &str,
) -> Result<bunko_core::sources::CrawlStats, bunko_core::jobs::JobFailure> {
    bunko_server::crawl::crawl(
        &d.state.ingest,
        name,
        None,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
}

async fn documents(d: &Docs) -> Vec<Value> {
    let l = d
        .get("/api/v1/projects/papers/documents?limit=200")
        .await
        .json();
    l["items"].as_array().unwrap().clone()
}

async fn settle_all(d: &Docs) -> Vec<Value> {
    let ids: Vec<String> = documents(d)
        .await
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect();
    d.settle(&ids, Duration::from_secs(120)).await
}

async fn search_ids(d: &Docs, q: &str, filters: Value) -> Vec<String> {
    let r = d
        .post_json(
            "/api/v1/search",
            &json!({ "q": q, "mode": "keyword", "k": 20, "filters": filters }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut ids: Vec<String> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["document_id"].as_str().unwrap().to_owned())
        .collect();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arxiv_pages_versions_resume_and_busy_sources() {
    let Some(dir) = crawl_fixtures() else { return };
    let stand = stand_in(dir).await;
    let d = start(loopback_allowed).await;
    add_source(
        &d,
        json!({ "name": "arxiv-sci", "kind": "arxiv", "project": "papers",
                "url": format!("{}/api/query", stand.base()), "query": "all:science",
                "page_size": 4, "fetch_files": false, "delay_ms": 0, "tags": ["arxiv"] }),
    )
    .await;

    // A crawl that fails on page 2: page 1 is kept and the cursor points at page 2.
    stand.fail_after_first.store(true, Ordering::SeqCst);
    let failed = crawl_here(&d, "arxiv-sci").await.unwrap_err();
    assert_eq!(failed.code, "source_failed");
    assert!(failed.retryable, "a 500 is worth another attempt later");
    assert!(failed.message.contains("500"), "{}", failed.message);
    assert_eq!(documents(&d).await.len(), 4);
    let src = d.get("/api/v1/sources/arxiv-sci").await.json();
    assert_eq!(src["cursor"]["start"], 4, "{src}");
    assert_eq!(src["last_status"], "failed");
    assert!(
        src["last_error"]
            .as_str()
            .unwrap()
            .contains("source_failed"),
        "{src}"
    );

    // Resumed (through the job queue) from page 2, with a 429 + Retry-After on the way.
    stand.fail_after_first.store(false, Ordering::SeqCst);
    stand.busy_once.store(true, Ordering::SeqCst);
    stand.log.lock().unwrap().clear();
    let job = crawl_via_api(&d, "arxiv-sci").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let stats = &job["result"];
    assert_eq!(stats["added"], 6, "{job}");
    assert_eq!(stats["unchanged"], 0, "{job}");
    let log = stand.log.lock().unwrap().clone();
    assert!(
        log[0].starts_with("/api/query?start=4"),
        "resumed at the cursor: {log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("/api/query?start=4"))
            .count(),
        2,
        "the 429 was retried: {log:?}"
    );
    let docs = documents(&d).await;
    assert_eq!(docs.len(), 10, "no duplicates");
    let src = d.get("/api/v1/sources/arxiv-sci").await.json();
    assert_eq!(src["cursor"]["start"], 0);
    let newest = src["cursor"]["from"].as_str().unwrap().to_owned();
    assert!(newest.as_str() >= "2015-01-21", "{src}");

    // The metadata the API gave is on the document.
    let paper = docs
        .iter()
        .find(|x| x["origin"]["external_id"] == "arxiv:1501.05039")
        .unwrap();
    assert_eq!(paper["title"], "Defining Data Science");
    assert_eq!(paper["source"], "arxiv-sci");
    assert_eq!(paper["tags"], json!(["arxiv"]));
    assert_eq!(paper["origin"]["version"], "v1");
    assert_eq!(paper["authors"], json!(["Yangyong Zhu", "Yun Xiong"]));
    assert_eq!(paper["origin"]["meta"]["primary_category"], "cs.DB");
    assert_eq!(paper["origin"]["current"], true);

    // Again: the next window starts at the newest day seen; nothing changed, nothing added.
    stand.log.lock().unwrap().clear();
    let again = crawl_here(&d, "arxiv-sci").await.unwrap();
    assert_eq!((again.added, again.unchanged), (0, 10), "{again:?}");
    let log = stand.log.lock().unwrap().clone();
    assert!(
        log[0].contains(&format!("lastUpdatedDate:[{}0000", newest.replace('-', ""))),
        "{log:?}"
    );

    // A new version (v2) becomes a version of the same document, not a duplicate.
    stand.v2.store(true, Ordering::SeqCst);
    let v = crawl_here(&d, "arxiv-sci").await.unwrap();
    assert_eq!((v.added, v.versions, v.unchanged), (1, 1, 10), "{v:?}");
    settle_all(&d).await;
    let v1_id = paper["id"].as_str().unwrap();
    let versions = d
        .get(&format!("/api/v1/documents/{v1_id}/versions"))
        .await
        .json();
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{versions:#}");
    assert_eq!(items[0]["origin"]["version"], "v1");
    assert_eq!(items[0]["origin"]["current"], false);
    assert_eq!(items[0]["origin"]["valid_to"], "2016-02-01");
    assert_eq!(items[1]["origin"]["version"], "v2");
    assert_eq!(items[1]["origin"]["current"], true);
    let v2_id = items[1]["id"].as_str().unwrap();

    // Search sees the current version; `as_of` a day before v2, the version valid then.
    let now = search_ids(&d, "Defining Data Science datanature", json!(null)).await;
    assert!(
        now.contains(&v2_id.to_owned()) && !now.contains(&v1_id.to_owned()),
        "{now:?}"
    );
    let then = search_ids(
        &d,
        "Defining Data Science datanature",
        json!({ "as_of": "2015-06-01" }),
    )
    .await;
    assert!(
        then.contains(&v1_id.to_owned()) && !then.contains(&v2_id.to_owned()),
        "{then:?}"
    );
    let r = d
        .post_json(
            "/api/v1/search",
            r#"{"q": "x", "filters": {"as_of": "2015-13-01"}}"#,
        )
        .await;
    assert_eq!(r.code(400), "invalid_filter");

    // The crawl metrics carry the source.
    let m = String::from_utf8(d.get("/metrics").await.body).unwrap();
    let sample = |name: &str, outcome: &str| -> Option<String> {
        m.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("source=\"arxiv-sci\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        sample("bunko_crawl_items_total", "added").as_deref(),
        Some("11"),
        "{m}"
    );
    assert_eq!(
        sample("bunko_crawl_runs_total", "failed").as_deref(),
        Some("1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arxiv_pdfs_are_fetched_and_ingested() {
    let Some(dir) = crawl_fixtures() else { return };
    let stand = stand_in(dir).await;
    let d = start(loopback_allowed).await;
    add_source(
        &d,
        json!({ "name": "arxiv-pdf", "kind": "arxiv", "project": "papers",
                "url": format!("{}/api/query", stand.base()), "categories": ["cs.DB"],
                "page_size": 2, "max_items": 2, "delay_ms": 0 }),
    )
    .await;
    let stats = crawl_here(&d, "arxiv-pdf").await.unwrap();
    assert_eq!(stats.added, 2, "{stats:?}");
    assert!(stats.more, "max_items stops the crawl with more to come");
    let docs = settle_all(&d).await;
    assert!(
        docs.iter()
            .all(|x| x["status"] == "ready" && x["type"] == "pdf"),
        "{docs:#?}"
    );
    // The source's title stays (not the PDF's own), and the PDF's text is searchable.
    assert!(
        docs.iter().any(|x| x["title"] == "Defining Data Science"),
        "{docs:#?}"
    );
    assert!(
        stand
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "/pdf/1501.05039v1")
    );
    let hits = search_ids(&d, "sandwich covariance", json!(null)).await;
    assert!(!hits.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egov_revisions_are_versions_valid_by_date() {
    let Some(dir) = crawl_fixtures() else { return };
    let stand = stand_in(dir).await;
    let d = start(loopback_allowed).await;
    let base = format!("{}/api/2", stand.base());
    add_source(
        &d,
        json!({ "name": "digital-agency", "kind": "egov", "project": "papers", "url": base,
                "law_ids": ["503AC0000000036"], "all_revisions": true, "delay_ms": 0 }),
    )
    .await;
    let stats = crawl_here(&d, "digital-agency").await.unwrap();
    assert_eq!((stats.added, stats.failed), (2, 0), "{stats:?}");
    let docs = settle_all(&d).await;
    assert!(docs.iter().all(|x| x["status"] == "ready"), "{docs:#?}");
    let id = docs[0]["id"].as_str().unwrap();
    let v = d
        .get(&format!("/api/v1/documents/{id}/versions"))
        .await
        .json();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["origin"]["version"], OLD_REV);
    assert_eq!(items[0]["origin"]["valid_from"], "2021-09-01");
    assert_eq!(items[0]["origin"]["valid_to"], "2024-06-07");
    assert_eq!(items[0]["origin"]["current"], false);
    assert_eq!(items[1]["origin"]["current"], true);
    assert_eq!(items[1]["title"], "デジタル庁設置法");
    assert_eq!(
        items[1]["origin"]["meta"]["law_num"],
        "令和三年法律第三十六号"
    );
    assert_eq!(
        items[1]["origin"]["meta"]["amendment_law_num"],
        "令和六年法律第四十六号"
    );
    let (old_id, new_id) = (
        items[0]["id"].as_str().unwrap(),
        items[1]["id"].as_str().unwrap(),
    );

    // The article is a section the chunker found.
    let s = d
        .get("/api/v1/search?q=%E3%83%87%E3%82%B8%E3%82%BF%E3%83%AB%E5%BA%81&mode=keyword")
        .await
        .json();
    let hits = s["results"].as_array().unwrap();
    assert!(hits.iter().all(|h| h["document_id"] == new_id), "{s:#}");
    assert!(
        hits.iter().all(|h| h["title"] == "デジタル庁設置法"),
        "{s:#}"
    );
    assert!(hits.iter().any(|h| h["section_path"] == "第一条"), "{s:#}");
    // As of 2022 the law read otherwise.
    let then = search_ids(&d, "デジタル庁", json!({ "as_of": "2022-01-01" })).await;
    assert_eq!(then, vec![old_id.to_owned()]);
    let before = search_ids(&d, "デジタル庁", json!({ "as_of": "2020-01-01" })).await;
    assert!(before.is_empty(), "the law did not exist yet: {before:?}");
    let amended = search_ids(&d, "情報通信技術", json!(null)).await;
    assert_eq!(amended, vec![new_id.to_owned()]);

    // Unchanged revisions are skipped without fetching their text again.
    stand.log.lock().unwrap().clear();
    let again = crawl_here(&d, "digital-agency").await.unwrap();
    assert_eq!((again.added, again.unchanged), (0, 2));
    assert!(
        !stand
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("law_data"))
    );

    // The listing: a law whose text the API refuses (404 with e-Gov's error body) is counted
    // as failed with the API's message; an empty result is no error.
    add_source(
        &d,
        json!({ "name": "cabinet-orders", "kind": "egov", "project": "papers", "url": base,
                "law_type": "CabinetOrder", "delay_ms": 0 }),
    )
    .await;
    let listed = crawl_here(&d, "cabinet-orders").await.unwrap();
    assert_eq!(
        (listed.seen, listed.added, listed.failed),
        (1, 0, 1),
        "{listed:?}"
    );
    add_source(
        &d,
        json!({ "name": "rules", "kind": "egov", "project": "papers", "url": base,
                "law_type": "Rule", "delay_ms": 0 }),
    )
    .await;
    let empty = crawl_here(&d, "rules").await.unwrap();
    assert_eq!((empty.seen, empty.added), (0, 0));
    // A response of the wrong shape stops the crawl for good, saying why.
    stand.egov_broken.store(true, Ordering::SeqCst);
    let broken = crawl_here(&d, "cabinet-orders").await.unwrap_err();
    assert_eq!(broken.code, "source_failed");
    assert!(!broken.retryable);
    assert!(
        broken.message.contains("unexpected response"),
        "{}",
        broken.message
    );
}

fn rss(items: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>お知らせ</title>"#,
    );
    for (guid, title, body) in items {
        s.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>https://example.go.jp/{guid}</link><pubDate>Mon, 02 Sep 2024 09:00:00 +0900</pubDate><description>{body}</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_and_watched_folders() {
    let Some(dir) = crawl_fixtures() else { return };
    let stand = stand_in(dir).await;
    let d = start(|c| {
        loopback_allowed(c);
        c.crawl.folder_roots = vec![std::env::temp_dir()];
    })
    .await;
    *stand.feed.lock().unwrap() = (
        "\"v1\"".into(),
        rss(&[
            ("n-1", "告示第一号", "港湾の利用に関する告示"),
            ("n-2", "告示第二号", "河川の管理に関する告示"),
        ]),
    );
    add_source(
        &d,
        json!({ "name": "notices", "kind": "feed", "project": "papers",
                "url": format!("{}/feed.xml", stand.base()), "fetch_files": false, "delay_ms": 0 }),
    )
    .await;
    let first = crawl_here(&d, "notices").await.unwrap();
    assert_eq!(first.added, 2);
    // Not modified (ETag): nothing read.
    let same = crawl_here(&d, "notices").await.unwrap();
    assert_eq!((same.seen, same.added), (0, 0));
    assert_eq!(stand.feed_requests.load(Ordering::SeqCst), 2);
    // An edited entry comes in again as a new version; the other is unchanged.
    *stand.feed.lock().unwrap() = (
        "\"v2\"".into(),
        rss(&[
            ("n-1", "告示第一号", "港湾の利用に関する告示（改正）"),
            ("n-2", "告示第二号", "河川の管理に関する告示"),
        ]),
    );
    let edited = crawl_here(&d, "notices").await.unwrap();
    assert_eq!(
        (edited.added, edited.versions, edited.unchanged),
        (1, 1, 1),
        "{edited:?}"
    );
    // Malformed XML stops the crawl with the reason; nothing is lost.
    *stand.feed.lock().unwrap() = (
        "\"v3\"".into(),
        b"<rss><channel><item><title>x</channel>".to_vec(),
    );
    let bad = crawl_here(&d, "notices").await.unwrap_err();
    assert_eq!(bad.code, "source_failed");
    assert!(bad.message.contains("malformed XML"), "{}", bad.message);
    assert_eq!(documents(&d).await.len(), 3);
    // Shift_JIS, as declared.
    let text = String::from_utf8(rss(&[("n-9", "入札公告", "庁舎の清掃業務")]))
        .unwrap()
        .replace("UTF-8", "Shift_JIS");
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(&text);
    *stand.feed.lock().unwrap() = ("\"v4\"".into(), sjis.into_owned());
    let jp = crawl_here(&d, "notices").await.unwrap();
    assert_eq!(jp.added, 1);
    let docs = settle_all(&d).await;
    assert!(
        docs.iter()
            .any(|x| x["title"] == "入札公告" && x["status"] == "ready"),
        "{docs:#?}"
    );

    // Linked pages are fetched as robots.txt allows (bunko's own group, not `*`).
    add_source(
        &d,
        json!({ "name": "linked", "kind": "feed", "project": "papers",
                "url": format!("{}/linked.xml", stand.base()), "delay_ms": 0 }),
    )
    .await;
    stand.log.lock().unwrap().clear();
    let linked = crawl_here(&d, "linked").await.unwrap();
    assert_eq!((linked.added, linked.failed), (1, 1), "{linked:?}");
    let log = stand.log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| *l == "/robots.txt").count(),
        1,
        "once per crawl: {log:?}"
    );
    assert!(
        log.contains(&"/page/a.html".to_owned()) && !log.contains(&"/page/b.html".to_owned()),
        "{log:?}"
    );

    // A watched folder: new files in, a changed file as a new version, a deleted one gone.
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("a.md"),
        "# 議事録\n\n第一回の議事録です。",
    )
    .unwrap();
    std::fs::create_dir(folder.path().join("sub")).unwrap();
    std::fs::write(
        folder.path().join("sub/b.txt"),
        "Minutes of the second meeting.",
    )
    .unwrap();
    add_source(
        &d,
        json!({ "name": "minutes", "kind": "folder", "project": "papers",
                "path": folder.path().to_str().unwrap(), "delete_missing": true }),
    )
    .await;
    // Outside the roots, or climbing out of them: refused.
    for path in [
        "/etc".to_owned(),
        format!("{}/../../etc", folder.path().display()),
    ] {
        let r = d
            .post_json(
                "/api/v1/sources",
                &json!({ "name": "sneaky", "kind": "folder", "project": "papers", "path": path })
                    .to_string(),
            )
            .await;
        assert_eq!(r.code(422), "source_refused", "{path}");
    }
    let f = crawl_here(&d, "minutes").await.unwrap();
    assert_eq!(f.added, 2);
    let f = crawl_here(&d, "minutes").await.unwrap();
    assert_eq!((f.added, f.unchanged), (0, 2));
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        folder.path().join("a.md"),
        "# 議事録\n\n第一回の議事録（訂正版）です。",
    )
    .unwrap();
    std::fs::remove_file(folder.path().join("sub/b.txt")).unwrap();
    let before = documents(&d).await.len();
    let f = crawl_here(&d, "minutes").await.unwrap();
    assert_eq!((f.added, f.versions, f.deleted), (1, 1, 1), "{f:?}");
    assert_eq!(documents(&d).await.len(), before + 1 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_refused_outside_the_allow_list_and_private_networks() {
    let Some(dir) = crawl_fixtures() else { return };
    let stand = stand_in(dir).await;
    // The default policy: known public hosts only, no private addresses.
    let d = start(|c| c.crawl.allow_hosts.push("127.0.0.1".into())).await;
    let r = d
        .post_json(
            "/api/v1/sources",
            r#"{"name": "evil", "kind": "feed", "project": "papers", "url": "http://169.254.169.254/latest/meta-data"}"#,
        )
        .await;
    assert_eq!(r.code(422), "source_refused");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("crawl.allow_hosts")
    );
    for (body, code) in [
        // Folders over the API only under crawl.folder_roots (none here).
        (
            r#"{"name": "x", "kind": "folder", "project": "papers", "path": "/etc"}"#,
            "source_refused",
        ),
        (
            r#"{"name": "x", "kind": "feed", "project": "papers"}"#,
            "invalid_input",
        ),
        (
            r#"{"name": "x", "kind": "feed", "project": "nowhere", "url": "http://127.0.0.1/"}"#,
            "invalid_input",
        ),
        (
            r#"{"name": "x", "kind": "telnet", "project": "papers"}"#,
            "invalid_body",
        ),
        (
            r#"{"name": "x", "kind": "folder", "project": "papers", "path": "relative/dir"}"#,
            "invalid_input",
        ),
    ] {
        let r = d.post_json("/api/v1/sources", body).await;
        assert_eq!(r.code(422), code, "{body}");
    }
    // On the allow-list but a loopback address: refused when the crawl connects.
    add_source(
        &d,
        json!({ "name": "local", "kind": "feed", "project": "papers",
                "url": format!("{}/feed.xml", stand.base()), "delay_ms": 0 }),
    )
    .await;
    let e = crawl_here(&d, "local").await.unwrap_err();
    assert_eq!(e.code, "source_refused");
    assert!(!e.retryable);
    assert_eq!(
        stand.feed_requests.load(Ordering::SeqCst),
        0,
        "nothing reached the address"
    );
    assert_eq!(
        d.post_json("/api/v1/sources/nope/crawl", "")
            .await
            .code(404),
        "not_found"
    );
    // A name is taken once; configured sources cannot be deleted over the API.
    let dup = d
        .post_json("/api/v1/sources", &json!({ "name": "local", "kind": "feed", "project": "papers", "url": format!("{}/feed.xml", stand.base()) }).to_string())
        .await;
    assert_eq!(dup.code(409), "conflict");
    assert_eq!(d.delete("/api/v1/sources/local").await.status, 204);
    assert_eq!(
        d.delete("/api/v1/sources/local").await.code(404),
        "not_found"
    );
}

/// `kill -9` of the server in the middle of a crawl job: after the restart the job is leased
/// again, resumes at the saved cursor and ends with every paper once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_killed_midway_resumes_after_restart_without_duplicates() {
    use crate::it::support::{Server, client};
    let Some(dir) = crawl_fixtures() else { return };
    let stand = stand_in(dir).await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("bunko.toml");
    std::fs::write(
        &cfg,
        "[crawl]\nallow_hosts = [\"127.0.0.1\"]\nallow_private_networks = true\n",
    )
    .unwrap();
    let env = [
        ("BUNKO__LOCAL__EMBEDDER", "none"),
        ("BUNKO__JOBS__LEASE_TTL_SECS", "2"),
        ("BUNKO__JOBS__POLL_INTERVAL_MS", "50"),
        ("BUNKO__LIMITS__ENABLED", "false"),
        ("BUNKO_CONFIG", cfg.to_str().unwrap()),
    ];
    let mut s = Server::start(&[], &env);
    let token = s.token();
    let c = client();
    let post = |path: &str, body: Value| c.post(s.url(path)).bearer_auth(&token).json(&body).send();
    assert_eq!(
        post("/api/v1/projects", json!({"name": "Papers"}))
            .await
            .unwrap()
            .status(),
        201
    );
    let r = post(
        "/api/v1/sources",
        json!({ "name": "slow", "kind": "arxiv", "project": "papers",
                "url": format!("{}/api/query", stand.base()), "query": "all:science",
                "page_size": 1, "fetch_files": false, "delay_ms": 400 }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        post("/api/v1/sources/slow/crawl", json!({}))
            .await
            .unwrap()
            .status(),
        202
    );
    // Killed after a few pages.
    let until = Instant::now() + Duration::from_secs(30);
    while stand.log.lock().unwrap().len() < 4 {
        assert!(Instant::now() < until, "the crawl did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.signal("KILL");
    let _ = s.stop_after_signal();
    let seen_before = stand.log.lock().unwrap().len();
    assert!(
        seen_before < 10,
        "the crawl finished before the kill; slow it down"
    );
    stand.log.lock().unwrap().clear();

    let data_dir = s.data_dir.clone();
    let cwd = data_dir.parent().unwrap().to_path_buf();
    let mut s2 = Server::start_in(&cwd, &data_dir, &[], &env);
    let token = s2.token();
    let until = Instant::now() + Duration::from_secs(60);
    let src = loop {
        let v: Value = c
            .get(s2.url("/api/v1/sources/slow"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["last_status"] == "ok" {
            break v;
        }
        assert!(
            Instant::now() < until,
            "the crawl did not resume: {v}\n{}",
            s2.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = stand.log.lock().unwrap().clone();
    assert!(
        !log[0].starts_with("/api/query?start=0&"),
        "resumed from the cursor, not the start: {log:?}"
    );
    let docs: Value = c
        .get(s2.url("/api/v1/projects/papers/documents?limit=100"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = docs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["origin"]["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10, "every paper once: {docs:#}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert_eq!(src["cursor"]["start"], 0);
    let (status, _) = s2.stop();
    assert!(status.success());
}

/// The CLI: a bad `[[sources]]` entry stops it at load with the entry and the reason;
/// `bunko crawl NAME` crawls a configured folder and prints its statistics; `bunko sources list
/// --json` prints the API's view; an unknown source is a usage error.
#[test]
fn the_cli_crawls_lists_and_refuses_bad_sources() {
    use crate::it::support::{bunko, text};
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("minutes");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("one.md"), "# Minutes\n\nThe first meeting.").unwrap();
    let cfg = dir.path().join("bunko.toml");
    let dd = dir.path().join("data");
    let run = |args: &[&str]| {
        let mut all = vec![
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            dd.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        bunko(dir.path(), &all)
    };
    for (entry, why) in [
        (
            "kind = \"feed\"\nurl = \"http://169.254.169.254/\"",
            "crawl.allow_hosts",
        ),
        ("kind = \"feed\"", "needs `url`"),
        ("kind = \"folder\"\npath = \"relative\"", "absolute"),
        ("kind = \"gopher\"", "kind"),
    ] {
        std::fs::write(
            &cfg,
            format!("[[sources]]\nname = \"bad\"\nproject = \"p\"\n{entry}\n"),
        )
        .unwrap();
        let out = run(&["migrate"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("sources") && err.contains(why), "{err}");
    }
    std::fs::write(
        &cfg,
        format!(
            "[local]\nembedder = \"none\"\n\n[[sources]]\nname = \"minutes\"\nkind = \"folder\"\nproject = \"minutes\"\npath = \"{}\"\n",
            folder.display()
        ),
    )
    .unwrap();
    let out = run(&["project", "create", "Minutes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["crawl", "minutes", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (stats["added"].as_u64(), stats["seen"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    let out = run(&["sources", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["name"], "minutes");
    assert_eq!(line["origin"], "config");
    assert_eq!(line["last_status"], "ok");
    assert_eq!(line["last_stats"]["added"], 1);
    let out = run(&["crawl", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sources list"),
        "{}",
        text(&out.stderr)
    );
}

/// OAI-PMH: pages follow the resumption token; a crawl stopped on page 2 (503 with a
/// Retry-After longer than the crawl waits) resumes with that token; the next crawl asks from
/// the newest datestamp seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arxiv_oai_follows_resumption_tokens_and_resumes() {
    let Some(dir) = crawl_fixtures() else { return };
    let stand = stand_in(dir).await;
    let d = start(loopback_allowed).await;
    add_source(
        &d,
        json!({ "name": "astro", "kind": "arxiv_oai", "project": "papers",
                "url": format!("{}/oai", stand.base()), "categories": ["physics:astro-ph"],
                "from": "2013-03-25", "fetch_files": false, "delay_ms": 0 }),
    )
    .await;
    stand.fail_after_first.store(true, Ordering::SeqCst);
    let e = crawl_here(&d, "astro").await.unwrap_err();
    assert_eq!(e.code, "source_failed");
    assert!(e.retryable && e.message.contains("503"), "{}", e.message);
    let src = d.get("/api/v1/sources/astro").await.json();
    assert_eq!(src["cursor"]["resumption_token"], "tok-1", "{src}");
    assert_eq!(documents(&d).await.len(), 1);

    stand.fail_after_first.store(false, Ordering::SeqCst);
    stand.log.lock().unwrap().clear();
    let ok = crawl_here(&d, "astro").await.unwrap();
    assert_eq!((ok.added, ok.seen), (1, 1), "{ok:?}");
    let log = stand.log.lock().unwrap().clone();
    assert_eq!(
        log,
        ["/oai?resumptionToken=tok-1&verb=ListRecords"],
        "resumed with the token"
    );
    let docs = documents(&d).await;
    assert_eq!(docs.len(), 2);
    let first = docs
        .iter()
        .find(|x| x["origin"]["external_id"] == "arxiv:0801.3931")
        .unwrap();
    assert_eq!(
        first["title"],
        "Dynamical study of 2D and 3D barred galaxy models"
    );
    assert_eq!(first["doi"], "10.1007/978-3-540-75826-6_11");
    assert_eq!(first["authors"], json!(["T. Manos", "E. Athanassoula"]));
    let src = d.get("/api/v1/sources/astro").await.json();
    assert_eq!(src["cursor"]["from"], "2013-03-27", "{src}");

    stand.log.lock().unwrap().clear();
    let again = crawl_here(&d, "astro").await.unwrap();
    assert_eq!((again.added, again.unchanged), (0, 2));
    let log = stand.log.lock().unwrap().clone();
    assert_eq!(
        log[0],
        "/oai?from=2013-03-27&metadataPrefix=arXiv&set=physics:astro-ph&verb=ListRecords"
    );
}
