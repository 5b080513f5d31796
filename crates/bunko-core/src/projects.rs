//! Projects: the unit every document, search and answer belongs to.

use crate::error::{Error, Result};
use crate::ports::{MetaStore, NewProject, Project};
use tracing::instrument;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 4000;

/// A URL-safe slug: ASCII letters and digits lowercased, everything else folded into single
/// dashes. Names with no ASCII letters or digits (e.g. all Japanese) get `project-<suffix>`.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    out.chars()
        .take(60)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

#[instrument(skip(store, description))]
pub async fn create(
    store: &dyn MetaStore,
    name: &str,
    description: Option<&str>,
) -> Result<Project> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid("name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(format!(
            "name must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    let description = description.unwrap_or("").trim();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    let mut slug = slugify(name);
    if slug.is_empty() {
        slug = format!(
            "project-{}",
            &crate::ids::new_id().simple().to_string()[20..]
        );
    }
    let project = store
        .create_project(NewProject {
            name: name.to_owned(),
            slug,
            description: description.to_owned(),
        })
        .await?;
    Ok(project)
}

#[instrument(skip(store))]
pub async fn get(store: &dyn MetaStore, id_or_slug: &str) -> Result<Project> {
    store
        .get_project(id_or_slug)
        .await?
        .ok_or_else(|| Error::not_found("project", id_or_slug))
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn slugs() {
        assert_eq!(slugify("My Papers: 2026 (draft)"), "my-papers-2026-draft");
        assert_eq!(slugify("  --x--  "), "x");
        assert_eq!(slugify("法令データ"), "");
        assert_eq!(slugify("法令 Laws"), "laws");
    }
}
