//! The crawlers' parsers on real responses kept in ../shared/fixtures/crawl (provenance in its
//! SOURCES.md): the arXiv API's Atom feed, an arXiv OAI-PMH ListRecords page, e-Gov v2 law
//! listings, revisions and full text. Skips with a printed reason when ../shared is absent
//! (in CI, where it is present, absence is a failure).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::panic
)]

use bunko_ingest::crawl::{Content, arxiv, egov, xml};
use std::path::{Path, PathBuf};

fn crawl_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/crawl");
    if p.is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "../shared is missing in CI"
    );
    eprintln!("SKIPPED: ../shared/fixtures/crawl is absent");
    None
}

#[test]
fn arxiv_atom_feed_gives_versions_and_metadata() {
    let Some(dir) = crawl_dir() else { return };
    let body = std::fs::read(dir.join("arxiv_api/query_all_science_2019.atom.xml")).unwrap();
    let feed = xml::parse(&body).unwrap();
    let (items, total) = arxiv::parse_atom(&feed, true).unwrap();
    assert_eq!(total, Some(120_839));
    assert_eq!(items.len(), 10);
    let first = &items[0];
    assert_eq!(first.key, "1501.05039v1");
    assert_eq!(first.external_id.as_deref(), Some("arxiv:1501.05039"));
    assert_eq!(first.version.as_deref(), Some("v1"));
    assert_eq!(first.valid_from.as_deref(), Some("2015-01-21"));
    assert_eq!(first.title, "Defining Data Science");
    assert_eq!(first.meta["authors"][1], "Yun Xiong");
    assert_eq!(first.meta["primary_category"], "cs.DB");
    assert_eq!(
        first.meta["categories"],
        serde_json::json!(["cs.DB", "cs.CY"])
    );
    assert!(
        first.meta["abstract"]
            .as_str()
            .unwrap()
            .starts_with("Data science is gaining")
    );
    assert_eq!(
        first.content,
        Content::Fetch {
            url: "http://arxiv.org/pdf/1501.05039v1".into(),
            filename: "1501.05039v1.pdf".into()
        }
    );
    // Wrapped titles are one line.
    assert!(items[1].title.starts_with(
        "Report on a Boston University Conference December 7-8, 2012 on 'How Can the History"
    ));
    // Some entries carry a DOI and a journal reference.
    assert!(
        items.iter().any(|i| i.meta["doi"].is_string()),
        "no DOI in the fixture's entries"
    );
    assert!(items.iter().any(|i| i.meta["journal_ref"].is_string()));
    // Keys are unique; the hash is stable.
    let mut keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    keys.dedup();
    assert_eq!(keys.len(), 10);
    let (again, _) = arxiv::parse_atom(&feed, true).unwrap();
    assert_eq!(again[3].hash, items[3].hash);
    // Without fetching files the abstract is the document.
    let (inline, _) = arxiv::parse_atom(&feed, false).unwrap();
    match &inline[0].content {
        Content::Inline { text, filename } => {
            assert_eq!(filename, "1501.05039v1.md");
            assert!(text.starts_with("# Defining Data Science\n\nYangyong Zhu, Yun Xiong"));
        }
        c => panic!("{c:?}"),
    }
}

#[test]
fn arxiv_oai_list_records() {
    let Some(dir) = crawl_dir() else { return };
    let body =
        std::fs::read(dir.join("arxiv_oai/invenio_listrecords_arXiv_astro-ph_2013.xml")).unwrap();
    let root = xml::parse(&body).unwrap();
    let page = arxiv::parse_oai(&root, "https://oaipmh.arxiv.org/oai", true).unwrap();
    assert!(page.token.is_none());
    assert_eq!(page.items.len(), 1);
    let it = &page.items[0];
    assert_eq!(it.external_id.as_deref(), Some("arxiv:0801.3931"));
    assert_eq!(
        it.title,
        "Dynamical study of 2D and 3D barred galaxy models"
    );
    assert_eq!(
        it.meta["authors"],
        serde_json::json!(["T. Manos", "E. Athanassoula"])
    );
    assert_eq!(it.meta["doi"], "10.1007/978-3-540-75826-6_11");
    assert_eq!(it.meta["datestamp"], "2013-03-26");
    assert!(
        it.meta["comment"]
            .as_str()
            .unwrap()
            .contains("\"Chaos in Astronomy\"")
    );
    assert_eq!(it.valid_from.as_deref(), Some("2008-01-25"));
    match &it.content {
        Content::Fetch { url, .. } => assert_eq!(url, "https://arxiv.org/pdf/0801.3931"),
        c => panic!("{c:?}"),
    }
    // A stand-in or mirror serves the PDF itself.
    let mirror = arxiv::parse_oai(&root, "http://127.0.0.1:9/oai", true).unwrap();
    match &mirror.items[0].content {
        Content::Fetch { url, .. } => assert_eq!(url, "http://127.0.0.1:9/pdf/0801.3931"),
        c => panic!("{c:?}"),
    }
    // The protocol's errors.
    let none = xml::parse(br#"<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><error code="noRecordsMatch">none</error></OAI-PMH>"#).unwrap();
    assert!(arxiv::parse_oai(&none, "x", true).unwrap().items.is_empty());
    let bad = xml::parse(br#"<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><error code="badResumptionToken">expired</error></OAI-PMH>"#).unwrap();
    assert!(
        arxiv::parse_oai(&bad, "x", true)
            .err()
            .unwrap()
            .contains("badResumptionToken")
    );
}

#[test]
fn egov_law_full_text_and_its_structure() {
    let Some(dir) = crawl_dir() else { return };
    let body = std::fs::read(dir.join("egov_v2/egov-mcp_法令本文取得API.json")).unwrap();
    let text = egov::law_data_text("u", &body).unwrap();
    assert_eq!(
        text,
        "平成十一年法律第百二十七号\n国旗及び国歌に関する法律\n（国旗）\n第一条\n"
    );
    // The XML form of the same API has the same tags.
    let xml_body =
        std::fs::read(dir.join("egov_v2/japanese-law-mcp_law-document-normal.xml")).unwrap();
    let root = xml::parse(&xml_body).unwrap();
    let law = root
        .child("law_full_text")
        .and_then(|t| t.child("Law"))
        .unwrap();
    assert_eq!(
        egov::law_text(law),
        "昭和二十二年政令第十六号\n地方自治法施行令\n第一条\u{3000}地方自治法の施行について必要な事項を定める&確認する。\n"
    );
}
