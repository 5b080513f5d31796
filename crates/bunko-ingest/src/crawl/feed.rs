//! RSS 2.0 and Atom feeds. The feed is fetched conditionally (the cursor keeps its ETag and
//! Last-Modified; 304 = nothing new); each entry is keyed by its guid / id (else its link) and
//! hashed over what the feed says of it, so an unchanged entry is skipped and an edited one
//! comes in again. With `fetch_files` the entry's enclosure (or linked page) is the document,
//! otherwise its own text.

use super::xml::{self, Element};
use super::{Content, CrawlError, Fetcher, Item, Page, filename_from_url, listing_hash};
use bunko_core::sources::SourceDef;
use serde_json::{Value, json};

/// Text of one entry kept inline at most (an enormous entry is cut, with a note).
pub const MAX_ENTRY_CHARS: usize = 200_000;

pub async fn page(def: &SourceDef, fetcher: &Fetcher, cursor: &Value) -> Result<Page, CrawlError> {
    let url = def.url().unwrap_or_default();
    let etag = cursor.get("etag").and_then(Value::as_str);
    let modified = cursor.get("last_modified").and_then(Value::as_str);
    let got = fetcher.get(url, (etag, modified)).await?;
    if got.status == 304 {
        return Ok(Page {
            items: Vec::new(),
            cursor: cursor.clone(),
            more: false,
        });
    }
    let root = xml::parse(&got.body).map_err(|e| CrawlError::Format(url.to_owned(), e))?;
    let items = parse(&root, def.fetch_files).map_err(|e| CrawlError::Format(url.to_owned(), e))?;
    Ok(Page {
        items,
        cursor: json!({ "etag": got.etag, "last_modified": got.last_modified }),
        more: false,
    })
}

struct Entry {
    id: Option<String>,
    title: Option<String>,
    link: Option<String>,
    enclosure: Option<(String, Option<String>)>,
    summary: Option<String>,
    content: Option<String>,
    published: Option<String>,
    updated: Option<String>,
    authors: Vec<String>,
    categories: Vec<String>,
}

/// The entries of an RSS 2.0 (`rss/channel/item`), RSS 1.0 (`RDF/item`) or Atom (`feed/entry`)
/// document. Entries with neither an id nor a link are skipped (logged).
pub fn parse(root: &Element, fetch_files: bool) -> Result<Vec<Item>, String> {
    let entries: Vec<Entry> = match root.name.as_str() {
        "rss" => {
            let ch = root
                .child("channel")
                .ok_or("an RSS feed without <channel>")?;
            ch.all("item").map(rss_entry).collect()
        }
        "RDF" => root.all("item").map(rss_entry).collect(),
        "feed" => root.all("entry").map(atom_entry).collect(),
        other => return Err(format!("not an RSS or Atom feed (root element <{other}>)")),
    };
    let mut items = Vec::new();
    for e in entries {
        let Some(key) = e.id.clone().or_else(|| e.link.clone()) else {
            tracing::warn!(
                title = e.title.as_deref().unwrap_or(""),
                "feed entry without an id or a link; skipped"
            );
            continue;
        };
        let title = e.title.clone().unwrap_or_else(|| "(untitled)".into());
        let meta = json!({
            "url": e.link,
            "published": e.published,
            "updated": e.updated,
            "authors": e.authors,
            "categories": e.categories,
            "summary": e.summary.as_deref().map(|s| cut(s, 2000)),
        });
        let target = e
            .enclosure
            .as_ref()
            .map(|(u, t)| (u.clone(), t.clone()))
            .or_else(|| e.link.clone().map(|l| (l, None)));
        let content = match target {
            Some((url, ty)) if fetch_files => {
                let ext = match ty.as_deref() {
                    Some("application/pdf") => "pdf",
                    Some(t) if t.starts_with("text/plain") => "txt",
                    _ if url
                        .to_ascii_lowercase()
                        .split('?')
                        .next()
                        .is_some_and(|p| p.ends_with(".pdf")) =>
                    {
                        "pdf"
                    }
                    _ => "html",
                };
                Content::Fetch {
                    filename: filename_from_url(&url, ext),
                    url,
                }
            }
            _ => {
                let body = e.content.clone().or(e.summary.clone()).unwrap_or_default();
                let (body, _) = if body.contains('<') {
                    crate::html_to_text(&body)
                } else {
                    (body, None)
                };
                let mut text = format!("# {title}\n\n{}\n", cut(&body, MAX_ENTRY_CHARS));
                if let Some(l) = &e.link {
                    text.push_str(&format!("\n<{l}>\n"));
                }
                Content::Inline {
                    filename: format!(
                        "{}.md",
                        bunko_core::documents::sanitize_filename(&cut(&title, 80))
                    ),
                    text,
                }
            }
        };
        let hash = listing_hash(&title, &meta, &content);
        let valid_from = e
            .updated
            .as_deref()
            .or(e.published.as_deref())
            .and_then(date_of);
        items.push(Item {
            external_id: None,
            version: None,
            valid_from,
            key,
            title,
            meta,
            content,
            hash,
        });
    }
    Ok(items)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push_str(" […]");
    out
}

/// RFC 3339 (Atom) or RFC 2822 (RSS) as `YYYY-MM-DD`.
fn date_of(s: &str) -> Option<String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.strftime("%Y-%m-%d").to_string());
    }
    if let Ok(z) = jiff::fmt::rfc2822::parse(s) {
        return Some(z.strftime("%Y-%m-%d").to_string());
    }
    s.get(..10)
        .filter(|d| d.parse::<jiff::civil::Date>().is_ok())
        .map(str::to_owned)
}

fn rss_entry(it: &Element) -> Entry {
    Entry {
        id: it
            .child_text("guid")
            .or_else(|| it.attr("about").map(str::to_owned)),
        title: it.child_text("title"),
        link: it.child_text("link"),
        enclosure: it.child("enclosure").and_then(|e| {
            e.attr("url")
                .map(|u| (u.to_owned(), e.attr("type").map(str::to_owned)))
        }),
        summary: it.child_text("description"),
        content: it.child_text("encoded"),
        published: it.child_text("pubDate").or_else(|| it.child_text("date")),
        updated: None,
        authors: it
            .all("creator")
            .chain(it.all("author"))
            .map(|a| xml::fold_space(&a.text()))
            .filter(|a| !a.is_empty())
            .collect(),
        categories: it
            .all("category")
            .map(|c| xml::fold_space(&c.text()))
            .filter(|c| !c.is_empty())
            .collect(),
    }
}

fn atom_entry(e: &Element) -> Entry {
    let link = |rel: &str| {
        e.all("link")
            .find(|l| l.attr("rel").unwrap_or("alternate") == rel)
            .and_then(|l| {
                l.attr("href")
                    .map(|h| (h.to_owned(), l.attr("type").map(str::to_owned)))
            })
    };
    Entry {
        id: e.child_text("id"),
        title: e.child_text("title"),
        link: link("alternate").map(|(h, _)| h),
        enclosure: link("enclosure"),
        summary: e.child_text("summary"),
        content: e.child_text("content"),
        published: e.child_text("published"),
        updated: e.child_text("updated"),
        authors: e
            .all("author")
            .filter_map(|a| a.child_text("name"))
            .collect(),
        categories: e
            .all("category")
            .filter_map(|c| c.attr("term").map(str::to_owned))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_items_with_enclosures_and_missing_fields() {
        let root = xml::parse(
            r#"<?xml version="1.0"?><rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>官報</title>
            <item><title>告示 第1号</title><link>https://example.go.jp/a.html</link><guid>a-1</guid><pubDate>Mon, 02 Sep 2024 09:00:00 +0900</pubDate><description>&lt;p&gt;本文&lt;/p&gt;</description></item>
            <item><title>PDF</title><link>https://example.go.jp/b</link><enclosure url="https://example.go.jp/b.pdf" type="application/pdf" length="1"/></item>
            <item><description>no id, no link</description></item>
            </channel></rss>"#.as_bytes(),
        )
        .unwrap();
        let items = parse(&root, false).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key, "a-1");
        assert_eq!(items[0].valid_from.as_deref(), Some("2024-09-02"));
        match &items[0].content {
            Content::Inline { text, .. } => {
                assert!(text.contains("本文") && !text.contains("<p>"), "{text}")
            }
            c => panic!("{c:?}"),
        }
        assert_eq!(items[1].key, "https://example.go.jp/b");
        let fetched = parse(&root, true).unwrap();
        assert_eq!(
            fetched[1].content,
            Content::Fetch {
                url: "https://example.go.jp/b.pdf".into(),
                filename: "b.pdf".into()
            }
        );
        // Same listing, same hashes; an edit changes the hash.
        assert_eq!(parse(&root, false).unwrap()[0].hash, items[0].hash);
    }

    #[test]
    fn enormous_entries_are_cut_and_other_roots_refused() {
        let big = "字".repeat(MAX_ENTRY_CHARS + 10);
        let doc = format!(
            "<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry><id>x</id><title>t</title><content>{big}</content></entry></feed>"
        );
        let items = parse(&xml::parse(doc.as_bytes()).unwrap(), false).unwrap();
        match &items[0].content {
            Content::Inline { text, .. } => {
                assert!(text.chars().count() < MAX_ENTRY_CHARS + 100 && text.contains("[…]"))
            }
            c => panic!("{c:?}"),
        }
        assert!(
            parse(&xml::parse(b"<html><body/></html>").unwrap(), false)
                .unwrap_err()
                .contains("html")
        );
    }
}
