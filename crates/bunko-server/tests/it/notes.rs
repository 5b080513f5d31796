//! Project notes: CRUD with validated citations, notes generated from a question with the
//! scripted stand-in model (citations become page links), Markdown and BibTeX export.
#![allow(clippy::unwrap_used)]

use crate::it::ask::{Script, setup};
use crate::it::documents::{file, ids};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

const NOTES: &str = "/api/v1/projects/papers/notes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_written_listed_edited_exported_and_deleted() {
    let (d, _calls, docs) = setup(Script::Mixed).await;
    let doc = &docs[0];
    let body = json!({
        "title": "  OCR findings ",
        "body": "Scans go through tesseract [1].",
        "tags": ["ocr", "ocr", "tools"],
        "citations": [{"n": 1, "document_id": doc, "page": 1}],
    });
    let r = d.post_json(NOTES, &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let note = r.json();
    let id = note["id"].as_str().unwrap().to_owned();
    assert_eq!(note["title"], "OCR findings");
    assert_eq!(
        note["tags"],
        json!(["ocr", "tools"]),
        "trimmed, deduplicated"
    );
    let cite = &note["citations"][0];
    assert_eq!(cite["title"], "OCR", "the title comes from the document");
    assert_eq!(cite["link"], format!("/api/v1/documents/{doc}/pages/1"));
    // The link works.
    assert_eq!(d.get(cite["link"].as_str().unwrap()).await.status, 200);
    d.post_json(NOTES, r#"{"title": "Second", "tags": ["misc"]}"#)
        .await;
    let all = d.get(NOTES).await.json();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let tagged = d.get(&format!("{NOTES}?tag=ocr")).await.json();
    assert_eq!(tagged["items"].as_array().unwrap().len(), 1);
    assert_eq!(tagged["items"][0]["id"], id.as_str());

    let r = d
        .json_as(
            &d.token,
            "PATCH",
            &format!("{NOTES}/{id}"),
            r#"{"body": "Scans go through tesseract, in Japanese too [1]."}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["title"], "OCR findings", "untouched fields stay");

    let md = d.get(&format!("{NOTES}/{id}/markdown")).await;
    assert_eq!(md.status, 200);
    assert!(
        md.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let text = String::from_utf8(md.body.clone()).unwrap();
    assert_eq!(
        text,
        format!(
            "# OCR findings\n\nTags: `ocr` `tools`\n\nScans go through tesseract, in Japanese too [1].\n\n\
             ## References\n\n[1] OCR, [p. 1](/api/v1/documents/{doc}/pages/1)\n"
        )
    );

    assert_eq!(d.delete(&format!("{NOTES}/{id}")).await.status, 204);
    assert_eq!(d.get(&format!("{NOTES}/{id}")).await.code(404), "not_found");
    assert_eq!(
        d.delete(&format!("{NOTES}/{id}")).await.code(404),
        "not_found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_notes_get_stable_codes_and_change_nothing() {
    let (d, _calls, docs) = setup(Script::Mixed).await;
    let other = bunko_core::projects::create(d.state.store.as_ref(), "Other", None)
        .await
        .unwrap();
    // A document of another project cannot be cited here.
    let r = d
        .post_json(
            &format!("/api/v1/projects/{}/notes", other.slug),
            &json!({"title": "x", "citations": [{"n": 1, "document_id": docs[0], "page": 1}]})
                .to_string(),
        )
        .await;
    assert_eq!(r.code(422), "invalid_input");
    for (body, status, code) in [
        (json!({"title": "   "}).to_string(), 422, "invalid_input"),
        (
            json!({"title": "x".repeat(301)}).to_string(),
            422,
            "invalid_input",
        ),
        (
            json!({"title": "x", "body": "y".repeat(200_001)}).to_string(),
            422,
            "invalid_input",
        ),
        (
            json!({"title": "x", "tags": [""]}).to_string(),
            422,
            "invalid_input",
        ),
        (
            json!({"title": "x", "citations": [{"n": 1, "document_id": docs[0], "page": 99}]})
                .to_string(),
            422,
            "invalid_input",
        ),
        (
            json!({"title": "x", "citations": [{"n": 1, "document_id": uuid::Uuid::now_v7(), "page": 1}]})
                .to_string(),
            422,
            "invalid_input",
        ),
        (json!({"title": 7}).to_string(), 422, "invalid_body"),
        (json!({"title": "x", "mood": 1}).to_string(), 422, "invalid_body"),
        (r#"{"title": "#.to_owned(), 400, "malformed_json"),
    ] {
        let r = d.post_json(NOTES, &body).await;
        assert_eq!(r.code(status), code, "{}", &body[..body.len().min(80)]);
    }
    assert!(
        d.get(NOTES).await.json()["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was kept"
    );
    assert_eq!(
        d.get(&format!("{NOTES}/not-a-uuid")).await.code(404),
        "not_found"
    );
    let r = d
        .json_as(
            &d.token,
            "PATCH",
            &format!("{NOTES}/{}", uuid::Uuid::now_v7()),
            "{}",
        )
        .await;
    assert_eq!(r.code(404), "not_found");
    let r = d
        .post_json(&format!("{NOTES}:generate"), r#"{"question": "  "}"#)
        .await;
    assert_eq!(r.code(422), "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_note_keeps_its_checked_citations_as_page_links() {
    let (d, calls, _) = setup(Script::Mixed).await;
    let r = d
        .post_json(
            &format!("{NOTES}:generate"),
            r#"{"question": "Which program reads scanned pages?", "tags": ["ocr"]}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let note = r.json();
    assert_eq!(note["title"], "Which program reads scanned pages?");
    let body = note["body"].as_str().unwrap();
    assert!(
        !body.contains("[0]") && !body.contains("[999]"),
        "invalid markers never reach a note: {body}"
    );
    let cites = note["citations"].as_array().unwrap();
    assert_eq!(cites.len(), 2, "{note}");
    for c in cites {
        assert!(body.contains(&format!("[{}]", c["n"])), "{body}");
        assert!(c["link"].as_str().unwrap().ends_with("/pages/1"));
    }
    // The stand-in's second citation does not support its sentence: the note says so.
    assert!(body.contains("Weakly supported citations:"), "{body}");
    // Nothing to answer from: no note.
    let r = d
        .post_json(
            &format!("{NOTES}:generate"),
            r#"{"question": "What is the boiling point of mercury?"}"#,
        )
        .await;
    assert_eq!(r.code(422), "no_answer");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        d.get(NOTES).await.json()["items"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cited_papers_with_a_doi_or_arxiv_id_export_as_bibtex() {
    let (d, _calls, docs) = setup(Script::Mixed).await;
    let up = d
        .upload(&[
            file(
                "lme4.md",
                b"# Fitting Linear Mixed-Effects Models Using lme4\n\nJournal of Statistical Software, \
                  October 2015. DOI 10.18637/jss.v067.i01.\n\nMixed models are fitted by REML.\n"
                    .to_vec(),
            ),
            file(
                "preprint.md",
                b"# Attention for documents\n\nPreprint, arXiv:2101.00001v2 [cs.CL].\n\nAttention helps.\n"
                    .to_vec(),
            ),
        ])
        .await;
    let new = ids(&up.json());
    for doc in d.settle(&new, Duration::from_secs(60)).await {
        assert_eq!(doc["status"], "ready", "{doc}");
    }
    let meta: Value = d.get(&format!("/api/v1/documents/{}", new[0])).await.json();
    assert_eq!(meta["doi"], "10.18637/jss.v067.i01", "{meta}");
    let cite = |doc: &str| json!({"n": 1, "document_id": doc, "page": 1});
    for doc in [&new[0], &new[1], &docs[0]] {
        let r = d
            .post_json(
                NOTES,
                &json!({"title": "t", "citations": [cite(doc)]}).to_string(),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let bib = d.get(&format!("{NOTES}.bib")).await;
    assert_eq!(bib.status, 200);
    let text = String::from_utf8(bib.body.clone()).unwrap();
    assert!(text.contains("doi = {10.18637/jss.v067.i01}"), "{text}");
    assert!(text.contains("eprint = {2101.00001v2}"), "{text}");
    assert!(
        text.contains("title = {{Fitting Linear Mixed-Effects Models Using lme4}}"),
        "{text}"
    );
    assert_eq!(
        text.matches('@').count(),
        2,
        "the cited document without an identifier has no entry: {text}"
    );
}
