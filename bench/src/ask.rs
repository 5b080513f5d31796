//! `bench-ask prepare DATA_DIR CORPUS_DIR N` fills a bunko data dir with N chunks for the ask
//! benchmark (bench/ask.py): the first N chunks of a `bench-search prepare` corpus (real text
//! from the evaluation sets with their multilingual-e5-small vectors), as documents of 100
//! chunks each in one project, written straight into the store (SQLite), the keyword index
//! (tantivy, with the Japanese analyzer the server uses) and the vector index — so that a
//! server started on the data dir finds them consistent and serves at once, without spending
//! an hour embedding 100k chunks through the pipeline.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use bunko_core::config::Config;
use bunko_core::documents::{ChunkRecord, DocType, NewDocument, PageMethod, PageText, Processed};
use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::Instant;

const DIM: usize = 384;
const PER_DOC: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 || args[1] != "prepare" {
        anyhow::bail!("usage: bench-ask prepare DATA_DIR CORPUS_DIR N");
    }
    let data = PathBuf::from(&args[2]);
    let corpus = PathBuf::from(&args[3]);
    let n: usize = args[4].parse()?;
    let started = Instant::now();
    let config = Config {
        data_dir: data.clone(),
        ..Default::default()
    };
    bunko_server::app::prepare_data_dir(&data).map_err(|e| anyhow::anyhow!(e.message))?;
    let store = bunko_server::app::open_store(&config)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let project = bunko_core::projects::create(store.as_ref(), "Bench", None).await?;
    let keyword =
        bunko_server::app::open_keyword_index(&config).map_err(|e| anyhow::anyhow!(e.message))?;
    keyword.take_writer()?;
    let vector = bunko_server::embedder::VectorHalf::new(&config);
    let ready = vector
        .get()
        .map_err(|e| anyhow::anyhow!("the embedder: {}", e.0))?;

    let texts = std::io::BufReader::new(std::fs::File::open(corpus.join("corpus.tsv"))?);
    let mut vectors = std::io::BufReader::new(std::fs::File::open(corpus.join("vectors.f32"))?);
    let mut lines = texts.lines();
    let pid = project.id.to_string();
    let mut done = 0usize;
    let mut doc_no = 0usize;
    while done < n {
        let take = PER_DOC.min(n - done);
        let mut chunk_texts = Vec::with_capacity(take);
        let mut vecs = Vec::with_capacity(take);
        for _ in 0..take {
            let line = lines.next().expect("the corpus has fewer chunks than N")?;
            let text = line.splitn(3, '\t').nth(2).unwrap_or("").to_owned();
            let mut buf = vec![0u8; DIM * 4];
            vectors.read_exact(&mut buf)?;
            let v: Vec<f32> = buf
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            chunk_texts.push(text);
            vecs.push(v);
        }
        let title = format!("Bench document {doc_no}");
        let (doc, _) = store
            .create_document(NewDocument {
                project_id: project.id,
                title: title.clone(),
                filename: format!("bench-{doc_no}.md"),
                doc_type: DocType::Markdown,
                sha256: format!("{doc_no:064x}"),
                size_bytes: 1,
                source: "upload".into(),
                tags: vec![],
                origin: None,
            })
            .await?;
        let mut page_text = String::new();
        let mut chunks = Vec::with_capacity(take);
        for (i, t) in chunk_texts.iter().enumerate() {
            let start = page_text.chars().count() as u32;
            page_text.push_str(t);
            let end = page_text.chars().count() as u32;
            page_text.push_str("\n\n");
            chunks.push(ChunkRecord {
                id: format!("{}:{i}", doc.id),
                document_id: doc.id,
                project_id: project.id,
                ord: i as u32,
                text: t.clone(),
                page_start: 1,
                page_end: 1,
                char_start: start,
                char_end: end,
                section_path: String::new(),
                language: bunko_core::text::detect_language(t).to_owned(),
                is_references: false,
                content_hash: format!("{i:x}"),
            });
        }
        let d = doc.id.to_string();
        for c in &chunks {
            keyword.upsert_chunk(&c.id, &pid, &d, &title, &c.text)?;
        }
        for (c, v) in chunks.iter().zip(&vecs) {
            ready.index.upsert(&pid, &c.id, v)?;
        }
        store
            .finish_document(
                doc.id,
                &Processed {
                    title: Some(title),
                    meta: Default::default(),
                    language: Some("en".into()),
                    pages: vec![PageText {
                        page: 1,
                        text: page_text.clone(),
                        raw: page_text,
                        method: PageMethod::Text,
                        confidence: None,
                        offsets: vec![(0, 0)],
                    }],
                    chunks,
                },
            )
            .await?;
        done += take;
        doc_no += 1;
        if doc_no.is_multiple_of(50) {
            keyword.commit()?;
            eprintln!("{done} chunks");
        }
    }
    keyword.commit()?;
    vector.mark_dirty();
    vector.save_if_dirty()?;
    store.close().await;
    println!(
        "{{\"chunks\": {n}, \"documents\": {doc_no}, \"seconds\": {:.1}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
