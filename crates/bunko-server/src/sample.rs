//! The quickstart's sample corpus: bunko's own documentation, English and Japanese, built into
//! the binary (so `quickstart` works from any directory) and ingested into the project
//! `bunko-docs` through the same pipeline as uploads. Re-running adds only what changed; a
//! file whose text changed replaces its older version.

use crate::ingest::Ingest;
use bunko_core::Error;
use bunko_core::documents::DocumentFilter;
use bunko_core::ports::PageRequest;

macro_rules! docs {
    ($($path:literal),+ $(,)?) => {
        &[$(($path, include_str!(concat!("../../../", $path)))),+]
    };
}

/// (path in the repository, contents). A test checks this lists every file under docs/.
pub const SAMPLE: &[(&str, &str)] = docs!(
    "README.md",
    "README.ja.md",
    "docs/ARCHITECTURE.md",
    "docs/ingestion.md",
    "docs/gateway.md",
    "docs/ask.md",
    "docs/sources.md",
    "docs/api/errors.md",
    "docs/operations/capacity.md",
    "docs/operations/configuration.md",
    "docs/operations/deploy.md",
    "docs/operations/metrics.md",
    "docs/operations/models.md",
    "docs/operations/runbook.md",
    "docs/operations/scale-out.md",
    "docs/operations/security.md",
    "docs/operations/tracing.md",
    "docs/ja/ARCHITECTURE.md",
    "docs/ja/ingestion.md",
    "docs/ja/gateway.md",
    "docs/ja/ask.md",
    "docs/ja/sources.md",
    "docs/ja/operations/capacity.md",
    "docs/ja/operations/configuration.md",
    "docs/ja/operations/deploy.md",
    "docs/ja/operations/models.md",
    "docs/ja/operations/runbook.md",
    "docs/ja/operations/scale-out.md",
    "docs/ja/operations/security.md",
    "docs/ja/operations/tracing.md",
);

pub const PROJECT: &str = "bunko-docs";

/// Ingests the sample into `bunko-docs` (made when missing); returns (added, unchanged).
pub async fn ingest_sample(ingest: &Ingest) -> Result<(usize, usize), Error> {
    let store = ingest.store.as_ref();
    let project = match store.get_project(PROJECT).await? {
        Some(p) => p,
        None => bunko_core::projects::create(
            store,
            "bunko docs",
            Some(
                "bunko's own documentation (English and Japanese): the quickstart's sample corpus",
            ),
        )
        .await?,
    };
    let existing = store
        .list_documents(
            project.id,
            &DocumentFilter::default(),
            PageRequest {
                limit: PageRequest::MAX_LIMIT,
                before: None,
            },
        )
        .await?
        .items;
    let mut added = 0;
    let mut unchanged = 0;
    for (path, text) in SAMPLE {
        // Keep the directory in the name so docs/x.md and docs/ja/x.md stay apart.
        let name = path.replace('/', "__");
        let staged = ingest.stage_bytes(&name, text.as_bytes()).await?;
        let sha = staged.sha256.clone();
        for old in existing
            .iter()
            .filter(|d| d.filename == name && d.sha256 != sha)
        {
            ingest.delete(old).await?;
        }
        let a = ingest.add(project.id, staged, "sample", None).await?;
        if a.duplicate {
            unchanged += 1;
        } else {
            added += 1;
        }
    }
    Ok((added, unchanged))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sample_lists_every_doc() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        let mut stack = vec![root.join("docs")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "md") {
                    let rel = p
                        .strip_prefix(&root)
                        .map(|r| r.to_string_lossy().into_owned());
                    files.extend(rel);
                }
            }
        }
        for f in &files {
            assert!(
                super::SAMPLE.iter().any(|(p, _)| p == f),
                "{f} is not in the quickstart sample (crates/bunko-server/src/sample.rs)"
            );
        }
        assert!(super::SAMPLE.iter().any(|(p, _)| p.starts_with("docs/ja/")));
    }
}
