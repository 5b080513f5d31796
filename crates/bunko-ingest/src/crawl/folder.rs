//! Watched folders: a scan lists the regular files under a directory (hidden files, partial
//! downloads and editor backups left out; symbolic links not followed, so the scan never
//! leaves the directory), each an item keyed by its relative path and hashed by size and
//! modification time — a file is read only when those change. A changed file becomes a new
//! version of `folder:<source>:<path>`.

use super::{Content, CrawlError, Item};
use bunko_core::sources::SourceDef;
use serde_json::json;
use std::path::Path;

/// The item all versions of a watched file share.
pub fn external_id(source: &str, rel: &str) -> String {
    format!("folder:{source}:{rel}")
}

fn skipped(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('~')
        || [".part", ".tmp", ".crdownload", ".swp", "~"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Every file to take in, by relative path; at most `max` (then the error says so).
pub fn scan(def: &SourceDef, max: usize) -> Result<Vec<Item>, CrawlError> {
    let root = Path::new(def.path.as_deref().unwrap_or(""));
    let meta = std::fs::metadata(root)
        .map_err(|e| CrawlError::Local(format!("folder {}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(CrawlError::Local(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| CrawlError::Local(format!("folder {}: {e}", dir.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| CrawlError::Local(format!("folder {}: {e}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if skipped(&name) {
                continue;
            }
            let ft = entry
                .file_type()
                .map_err(|e| CrawlError::Local(format!("{}: {e}", entry.path().display())))?;
            if ft.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let path = entry.path();
            let m = entry
                .metadata()
                .map_err(|e| CrawlError::Local(format!("{}: {e}", path.display())))?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let modified = m
                .modified()
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok());
            let mtime_ns = modified.map(|t| t.as_nanosecond()).unwrap_or(0);
            let title = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| rel.clone());
            out.push(Item {
                external_id: Some(external_id(&def.name, &rel)),
                version: None,
                valid_from: modified.map(|t| t.strftime("%Y-%m-%d").to_string()),
                title,
                meta: json!({ "path": rel, "size": m.len() }),
                content: Content::Path(path),
                hash: format!("{}:{mtime_ns}", m.len()),
                key: rel,
            });
            if out.len() > max {
                return Err(CrawlError::Local(format!(
                    "{} holds more than {max} files; split it into several sources",
                    root.display()
                )));
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_files_and_leaves_out_hidden_partial_and_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/.git")).unwrap();
        std::fs::write(dir.path().join("a.md"), "# A").unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "b").unwrap();
        std::fs::write(dir.path().join("sub/.git/config"), "x").unwrap();
        std::fs::write(dir.path().join("c.pdf.part"), "x").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        let def: SourceDef = toml::from_str(&format!(
            "name='f'\nkind='folder'\nproject='p'\npath='{}'",
            dir.path().display()
        ))
        .unwrap();
        let items = scan(&def, 100).unwrap();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["a.md", "sub/b.txt"]);
        assert_eq!(items[0].external_id.as_deref(), Some("folder:f:a.md"));
        assert!(scan(&def, 1).is_err());
        let gone: SourceDef =
            toml::from_str("name='f'\nkind='folder'\nproject='p'\npath='/no/such/dir'").unwrap();
        assert!(matches!(scan(&gone, 10), Err(CrawlError::Local(_))));
    }
}
