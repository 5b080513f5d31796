//! arXiv: the Atom API (`/api/query`: a search query and categories within a window of
//! last-updated dates, oldest first, paged with `start` and `max_results`) and OAI-PMH
//! (`ListRecords`, metadataPrefix `arXiv`, paged with resumption tokens). Each version of a
//! paper (`v1`, `v2`, …) is an item of its own sharing the external id `arxiv:<id>`.

use super::xml::{self, Element, fold_space};
use super::{Content, CrawlError, Fetcher, Item, Page, filename_from_url, listing_hash};
use bunko_core::sources::SourceDef;
use serde_json::{Value, json};

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn parse_xml(url: &str, body: &[u8]) -> Result<Element, CrawlError> {
    xml::parse(body).map_err(|e| CrawlError::Format(url.to_owned(), e))
}

/// `2101.00001v2` → (`2101.00001`, `v2`).
pub fn split_version(id: &str) -> (&str, Option<&str>) {
    match id.rfind('v') {
        Some(i) if i > 0 && i + 1 < id.len() && id[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&id[..i], Some(&id[i..]))
        }
        _ => (id, None),
    }
}

fn date_part(s: &str) -> Option<String> {
    let d = s.get(..10)?;
    d.parse::<jiff::civil::Date>().ok().map(|_| d.to_owned())
}

/// The Atom API's query for a source and a window start (`YYYY-MM-DD`).
pub fn atom_query(def: &SourceDef, from: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(q) = &def.query {
        parts.push(format!("({q})"));
    }
    if !def.categories.is_empty() {
        let cats: Vec<String> = def.categories.iter().map(|c| format!("cat:{c}")).collect();
        parts.push(format!("({})", cats.join(" OR ")));
    }
    if let Some(f) = from {
        parts.push(format!(
            "lastUpdatedDate:[{}0000 TO 299912312359]",
            f.replace('-', "")
        ));
    }
    parts.join(" AND ")
}

pub async fn atom_page(
    def: &SourceDef,
    fetcher: &Fetcher,
    cursor: &Value,
) -> Result<Page, CrawlError> {
    let base = def.url().unwrap_or_default();
    let start = cursor.get("start").and_then(Value::as_u64).unwrap_or(0);
    let from = s(cursor, "from").or_else(|| def.from.clone());
    let url = reqwest::Url::parse_with_params(
        base,
        &[
            ("search_query", atom_query(def, from.as_deref())),
            ("start", start.to_string()),
            ("max_results", def.page_size.to_string()),
            ("sortBy", "lastUpdatedDate".into()),
            ("sortOrder", "ascending".into()),
        ],
    )
    .map_err(|e| CrawlError::Refused(format!("url `{base}`: {e}")))?;
    let got = fetcher.get(url.as_str(), (None, None)).await?;
    let feed = parse_xml(url.as_str(), &got.body)?;
    let (items, total) =
        parse_atom(&feed, def.fetch_files).map_err(|e| CrawlError::Format(url.to_string(), e))?;
    let n = items.len() as u64;
    let more = n > 0 && total.is_some_and(|t| start + n < t);
    // The newest day seen over this crawl's pages: the next crawl looks again from there
    // (items of that day already taken are skipped by their keys).
    let newest = items
        .iter()
        .filter_map(|i| i.valid_from.clone())
        .chain(s(cursor, "newest"))
        .max();
    let cursor = if more {
        json!({ "start": start + n, "from": from, "newest": newest })
    } else {
        let next_from = [newest, from].into_iter().flatten().max();
        json!({ "start": 0, "from": next_from })
    };
    Ok(Page {
        items,
        cursor,
        more,
    })
}

/// Entries of an arXiv API Atom feed and its `opensearch:totalResults`. An API error (an
/// entry whose id is under `/api/errors`) is an error.
pub fn parse_atom(feed: &Element, fetch_files: bool) -> Result<(Vec<Item>, Option<u64>), String> {
    if feed.name != "feed" {
        return Err(format!("expected an Atom <feed>, got <{}>", feed.name));
    }
    let total = feed
        .child_text("totalResults")
        .and_then(|t| t.parse::<u64>().ok());
    let mut items = Vec::new();
    for e in feed.all("entry") {
        let id_url = e.child_text("id").unwrap_or_default();
        if id_url.contains("/api/errors") {
            return Err(format!(
                "arXiv API error: {}",
                e.child_text("summary").unwrap_or_else(|| id_url.clone())
            ));
        }
        let Some(idv) = id_url
            .split_once("/abs/")
            .map(|(_, id)| id.trim().to_owned())
            .filter(|i| !i.is_empty())
        else {
            tracing::warn!(id = id_url, "arXiv entry without an abs/ id; skipped");
            continue;
        };
        let (id, version) = split_version(&idv);
        let title = e.child_text("title").unwrap_or_else(|| idv.clone());
        let authors: Vec<String> = e
            .all("author")
            .filter_map(|a| a.child_text("name"))
            .collect();
        let pdf = e
            .all("link")
            .find(|l| l.attr("title") == Some("pdf") || l.attr("type") == Some("application/pdf"))
            .and_then(|l| l.attr("href"))
            .map(str::to_owned);
        let categories: Vec<String> = e
            .all("category")
            .filter_map(|c| c.attr("term").map(str::to_owned))
            .collect();
        let published = e.child_text("published");
        let updated = e.child_text("updated");
        let meta = json!({
            "arxiv_id": id,
            "version": version,
            "authors": authors,
            "abstract": e.child_text("summary"),
            "categories": categories,
            "primary_category": e.child("primary_category").and_then(|c| c.attr("term")),
            "doi": e.child_text("doi"),
            "journal_ref": e.child_text("journal_ref"),
            "comment": e.child_text("comment"),
            "published": published,
            "updated": updated,
            "url": id_url,
        });
        let valid_from = updated
            .as_deref()
            .or(published.as_deref())
            .and_then(date_part);
        items.push(item(
            &idv,
            id,
            version.map(str::to_owned),
            valid_from,
            title,
            meta,
            pdf,
            fetch_files,
        ));
    }
    Ok((items, total))
}

#[allow(clippy::too_many_arguments)]
fn item(
    key: &str,
    id: &str,
    version: Option<String>,
    valid_from: Option<String>,
    title: String,
    meta: Value,
    pdf: Option<String>,
    fetch_files: bool,
) -> Item {
    let safe = bunko_core::documents::sanitize_filename(&key.replace('/', "_"));
    let content = match pdf {
        Some(url) if fetch_files => Content::Fetch {
            filename: filename_from_url(&format!("x/{safe}"), "pdf"),
            url,
        },
        _ => Content::Inline {
            filename: format!("{safe}.md"),
            text: abstract_text(&title, &meta),
        },
    };
    let hash = listing_hash(&title, &meta, &content);
    Item {
        key: key.to_owned(),
        external_id: Some(format!("arxiv:{id}")),
        version,
        valid_from,
        title,
        meta,
        content,
        hash,
    }
}

/// A paper's listing as a small Markdown document (when its PDF is not fetched).
fn abstract_text(title: &str, meta: &Value) -> String {
    let mut out = format!("# {title}\n\n");
    if let Some(a) = meta.get("authors").and_then(Value::as_array) {
        let names: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            out.push_str(&names.join(", "));
            out.push_str("\n\n");
        }
    }
    if let Some(a) = meta.get("abstract").and_then(Value::as_str) {
        out.push_str("## Abstract\n\n");
        out.push_str(a);
        out.push('\n');
    }
    out
}

/// Where a paper's PDF is: arxiv.org for the real service, the same host for a mirror or a
/// stand-in.
fn pdf_url(base: &str, id: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(u) if !u.host_str().unwrap_or("").ends_with("arxiv.org") => {
            format!("{}/pdf/{id}", u.origin().ascii_serialization())
        }
        _ => format!("https://arxiv.org/pdf/{id}"),
    }
}

pub async fn oai_page(
    def: &SourceDef,
    fetcher: &Fetcher,
    cursor: &Value,
) -> Result<Page, CrawlError> {
    let base = def.url().unwrap_or_default();
    let from = s(cursor, "from").or_else(|| def.from.clone());
    let token = s(cursor, "resumption_token");
    let mut params: Vec<(&str, String)> = vec![("verb", "ListRecords".into())];
    match &token {
        Some(t) => params.push(("resumptionToken", t.clone())),
        None => {
            params.push(("metadataPrefix", "arXiv".into()));
            if let Some(set) = def.categories.first() {
                params.push(("set", set.clone()));
            }
            if let Some(f) = &from {
                params.push(("from", f.clone()));
            }
        }
    }
    let url = reqwest::Url::parse_with_params(base, &params)
        .map_err(|e| CrawlError::Refused(format!("url `{base}`: {e}")))?;
    let got = fetcher.get(url.as_str(), (None, None)).await?;
    let root = parse_xml(url.as_str(), &got.body)?;
    let parsed = parse_oai(&root, base, def.fetch_files)
        .map_err(|e| CrawlError::Format(url.to_string(), e))?;
    let newest = parsed
        .items
        .iter()
        .filter_map(|i| s(&i.meta, "datestamp"))
        .max();
    let cursor = match &parsed.token {
        Some(t) => {
            json!({ "resumption_token": t, "from": from, "newest": newest.or_else(|| s(cursor, "newest")) })
        }
        None => {
            let newest = [newest, s(cursor, "newest"), from]
                .into_iter()
                .flatten()
                .max();
            json!({ "from": newest })
        }
    };
    Ok(Page {
        more: parsed.token.is_some(),
        items: parsed.items,
        cursor,
    })
}

pub struct OaiPage {
    pub items: Vec<Item>,
    /// The resumption token for the next page (none: the list is complete).
    pub token: Option<String>,
}

/// A ListRecords response. `noRecordsMatch` is an empty list; any other OAI error is an error.
pub fn parse_oai(root: &Element, base: &str, fetch_files: bool) -> Result<OaiPage, String> {
    if root.name != "OAI-PMH" {
        return Err(format!("expected <OAI-PMH>, got <{}>", root.name));
    }
    if let Some(err) = root.child("error") {
        let code = err.attr("code").unwrap_or("");
        if code == "noRecordsMatch" {
            return Ok(OaiPage {
                items: Vec::new(),
                token: None,
            });
        }
        return Err(format!("OAI-PMH error {code}: {}", fold_space(&err.text())));
    }
    let list = root
        .child("ListRecords")
        .ok_or("the response has neither ListRecords nor an error")?;
    let mut items = Vec::new();
    for rec in list.all("record") {
        let Some(header) = rec.child("header") else {
            continue;
        };
        if header.attr("status") == Some("deleted") {
            continue;
        }
        let datestamp = header.child_text("datestamp");
        let Some(m) = rec.child("metadata").and_then(|m| m.child("arXiv")) else {
            tracing::warn!("OAI record without arXiv metadata; skipped");
            continue;
        };
        let Some(id) = m.child_text("id") else {
            tracing::warn!("OAI record without an id; skipped");
            continue;
        };
        let authors: Vec<String> = m
            .child("authors")
            .map(|a| {
                a.all("author")
                    .map(|au| {
                        [au.child_text("forenames"), au.child_text("keyname")]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let created = m.child_text("created");
        let updated = m.child_text("updated");
        let title = m.child_text("title").unwrap_or_else(|| id.clone());
        let categories: Vec<String> = m
            .child_text("categories")
            .map(|c| c.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let meta = json!({
            "arxiv_id": id,
            "authors": authors,
            "abstract": m.child_text("abstract"),
            "categories": categories,
            "doi": m.child_text("doi"),
            "journal_ref": m.child_text("journal-ref"),
            "comment": m.child_text("comments"),
            "license": m.child_text("license"),
            "published": created,
            "updated": updated,
            "datestamp": datestamp,
            "url": format!("https://arxiv.org/abs/{id}"),
        });
        // The arXiv format names no version; the date of the last revision stands for it.
        let when = updated.clone().or(created.clone());
        let key = format!("{id}@{}", when.clone().unwrap_or_default());
        items.push(item(
            &key,
            &id,
            when.clone(),
            when.as_deref().and_then(date_part),
            title,
            meta,
            Some(pdf_url(base, &id)),
            fetch_files,
        ));
    }
    let token = list.child_text("resumptionToken").filter(|t| !t.is_empty());
    Ok(OaiPage { items, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_split() {
        assert_eq!(split_version("1501.05039v12"), ("1501.05039", Some("v12")));
        assert_eq!(
            split_version("hep-th/9901001v1"),
            ("hep-th/9901001", Some("v1"))
        );
        assert_eq!(split_version("1501.05039"), ("1501.05039", None));
    }

    #[test]
    fn query_combines_search_categories_and_window() {
        let def: SourceDef = toml::from_str(
            "name='a'\nkind='arxiv'\nproject='p'\nquery='all:transformer'\ncategories=['cs.CL','cs.LG']",
        )
        .unwrap();
        assert_eq!(
            atom_query(&def, Some("2024-03-01")),
            "(all:transformer) AND (cat:cs.CL OR cat:cs.LG) AND lastUpdatedDate:[202403010000 TO 299912312359]"
        );
    }

    #[test]
    fn api_errors_are_errors() {
        let feed = xml::parse(br#"<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>http://arxiv.org/api/errors#incorrect_id_format_for_1234.1234v1</id><title>Error</title><summary>incorrect id format for 1234.1234v1</summary></entry></feed>"#).unwrap();
        let e = parse_atom(&feed, true).unwrap_err();
        assert!(e.contains("incorrect id format"), "{e}");
    }
}
