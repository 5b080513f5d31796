//! The e-Gov 法令 API v2 (`https://laws.e-gov.go.jp/api/2`): `GET /laws` (by type, category,
//! `updated_from`; paged with `limit`/`offset`), `GET /law_revisions/{law_id}` (a law's
//! amendment history) and `GET /law_data/{law_revision_id}` (the full text as a
//! tag/attr/children tree). Each revision is an item — a version of `egov:<law_id>` valid from
//! its enforcement date — and its text keeps the law's structure (編/章/節/款/目, 条 with
//! caption, 項, 号, 附則) one unit per line, as the law-aware chunker reads it.

use super::xml::{Element, Node};
use super::{Content, CrawlError, Fetcher, Item, Page, listing_hash};
use bunko_core::sources::SourceDef;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct LawsResponse {
    #[serde(default)]
    total_count: Option<u64>,
    /// Read only to check the shape (a number).
    #[serde(default)]
    #[allow(dead_code)]
    count: Option<u64>,
    #[serde(default)]
    next_offset: Option<u64>,
    laws: Vec<LawEntry>,
}

#[derive(Debug, Deserialize)]
struct LawEntry {
    law_info: Value,
    revision_info: Value,
}

#[derive(Debug, Deserialize)]
struct RevisionsResponse {
    law_info: Value,
    revisions: Vec<Value>,
}

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn url_for(base: &str, path: &str, params: &[(&str, String)]) -> Result<reqwest::Url, CrawlError> {
    let joined = format!("{}/{}", base.trim_end_matches('/'), path);
    reqwest::Url::parse_with_params(&joined, params)
        .map_err(|e| CrawlError::Refused(format!("url `{joined}`: {e}")))
}

fn json_body<T: serde::de::DeserializeOwned>(
    url: &reqwest::Url,
    body: &[u8],
) -> Result<T, CrawlError> {
    serde_json::from_slice(body).map_err(|e| CrawlError::Format(url.to_string(), e.to_string()))
}

/// One page: a listing page (`laws`), or with `law_ids` one law per page.
pub async fn page(def: &SourceDef, fetcher: &Fetcher, cursor: &Value) -> Result<Page, CrawlError> {
    let base = def.url().unwrap_or_default();
    if !def.law_ids.is_empty() {
        let index = cursor.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        let Some(law_id) = def.law_ids.get(index) else {
            return Ok(Page {
                items: Vec::new(),
                cursor: json!({ "index": 0 }),
                more: false,
            });
        };
        let items = if def.all_revisions {
            revisions(def, fetcher, base, law_id).await?
        } else {
            let url = url_for(base, "laws", &[("law_id", law_id.clone())])?;
            let got = fetcher.get(url.as_str(), (None, None)).await?;
            let laws: LawsResponse = json_body(&url, &got.body)?;
            laws.laws
                .iter()
                .filter_map(|l| revision_item(def, base, &l.law_info, &l.revision_info))
                .collect()
        };
        let more = index + 1 < def.law_ids.len();
        return Ok(Page {
            items,
            cursor: json!({ "index": if more { index + 1 } else { 0 } }),
            more,
        });
    }
    let offset = cursor.get("offset").and_then(Value::as_u64).unwrap_or(0);
    let from = cursor
        .get("updated_from")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| def.from.clone());
    let mut params = vec![
        ("limit", def.page_size.to_string()),
        ("offset", offset.to_string()),
    ];
    if let Some(t) = &def.law_type {
        params.push(("law_type", t.clone()));
    }
    if let Some(c) = &def.category {
        params.push(("category_cd", c.clone()));
    }
    if let Some(f) = &from {
        params.push(("updated_from", f.clone()));
    }
    let url = url_for(base, "laws", &params)?;
    let got = fetcher.get(url.as_str(), (None, None)).await?;
    let laws: LawsResponse = json_body(&url, &got.body)?;
    let mut items = Vec::new();
    for l in &laws.laws {
        if def.all_revisions {
            let Some(id) = get_str(&l.law_info, "law_id") else {
                continue;
            };
            items.extend(revisions(def, fetcher, base, id).await?);
        } else if let Some(i) = revision_item(def, base, &l.law_info, &l.revision_info) {
            items.push(i);
        }
    }
    let n = laws.laws.len() as u64;
    let next = laws
        .next_offset
        .or_else(|| {
            laws.total_count
                .filter(|t| offset + n < *t)
                .map(|_| offset + n)
        })
        .filter(|_| n > 0);
    let cursor = match next {
        Some(o) => json!({ "offset": o, "updated_from": from }),
        None => {
            // Next time: what changed since the newest update seen.
            let newest = laws
                .laws
                .iter()
                .filter_map(|l| get_str(&l.revision_info, "updated").and_then(|u| u.get(..10)))
                .max()
                .map(str::to_owned)
                .or(from);
            json!({ "offset": 0, "updated_from": newest })
        }
    };
    Ok(Page {
        items,
        cursor,
        more: next.is_some(),
    })
}

async fn revisions(
    def: &SourceDef,
    fetcher: &Fetcher,
    base: &str,
    law_id: &str,
) -> Result<Vec<Item>, CrawlError> {
    let url = url_for(base, &format!("law_revisions/{law_id}"), &[])?;
    let got = fetcher.get(url.as_str(), (None, None)).await?;
    let r: RevisionsResponse = json_body(&url, &got.body)?;
    Ok(r.revisions
        .iter()
        .filter_map(|rev| revision_item(def, base, &r.law_info, rev))
        .collect())
}

/// One revision as an item; `None` (logged) when it lacks a revision id.
fn revision_item(def: &SourceDef, base: &str, law: &Value, rev: &Value) -> Option<Item> {
    let Some(rev_id) = get_str(rev, "law_revision_id") else {
        tracing::warn!(
            source = def.name,
            "e-Gov revision without law_revision_id; skipped"
        );
        return None;
    };
    let law_id = get_str(law, "law_id")
        .map(str::to_owned)
        .or_else(|| rev_id.split('_').next().map(str::to_owned))?;
    let title = get_str(rev, "law_title").unwrap_or(&law_id).to_owned();
    let valid_from = get_str(rev, "amendment_enforcement_date")
        .or_else(|| get_str(rev, "amendment_scheduled_enforcement_date"))
        .or_else(|| get_str(law, "promulgation_date"))
        .filter(|d| d.parse::<jiff::civil::Date>().is_ok())
        .map(str::to_owned);
    let mut meta = json!({
        "law_id": law_id,
        "law_num": get_str(law, "law_num"),
        "law_type": get_str(law, "law_type").or_else(|| get_str(rev, "law_type")),
        "promulgation_date": get_str(law, "promulgation_date"),
        "law_revision_id": rev_id,
    });
    for key in [
        "law_title_kana",
        "abbrev",
        "category",
        "updated",
        "amendment_promulgate_date",
        "amendment_enforcement_date",
        "amendment_scheduled_enforcement_date",
        "amendment_law_id",
        "amendment_law_title",
        "amendment_law_num",
        "repeal_status",
        "repeal_date",
        "current_revision_status",
    ] {
        if let Some(v) = rev.get(key).filter(|v| !v.is_null() && *v != "") {
            meta[key] = v.clone();
        }
    }
    let url = url_for(
        base,
        &format!("law_data/{rev_id}"),
        &[("law_full_text_format", "json".into())],
    )
    .ok()?
    .to_string();
    let content = Content::EgovLaw {
        url,
        filename: format!("{}.txt", bunko_core::documents::sanitize_filename(rev_id)),
    };
    let hash = listing_hash(&title, &meta, &content);
    Some(Item {
        key: rev_id.to_owned(),
        external_id: Some(format!("egov:{law_id}")),
        version: Some(rev_id.to_owned()),
        valid_from,
        title,
        meta,
        content,
        hash,
    })
}

/// A `law_data` response (JSON) as the law's text.
pub fn law_data_text(url: &str, body: &[u8]) -> Result<String, CrawlError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| CrawlError::Format(url.into(), e.to_string()))?;
    let tree = v
        .get("law_full_text")
        .ok_or_else(|| CrawlError::Format(url.into(), "no law_full_text in the response".into()))?;
    let root = json_tree(tree, 0)
        .ok_or_else(|| CrawlError::Format(url.into(), "law_full_text is not a tag tree".into()))?;
    let text = law_text(&root);
    if text.trim().is_empty() {
        return Err(CrawlError::Format(
            url.into(),
            "the law's text is empty".into(),
        ));
    }
    Ok(text)
}

/// The JSON form (`{"tag", "attr", "children"}`) as an element tree.
pub fn json_tree(v: &Value, depth: usize) -> Option<Element> {
    if depth > 200 {
        return None;
    }
    let tag = v.get("tag")?.as_str()?;
    let attrs = v
        .get("attr")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let children = v
        .get("children")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|ch| match ch {
                    Value::String(s) => Some(Node::Text(s.clone())),
                    other => json_tree(other, depth + 1).map(Node::El),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Element {
        name: tag.to_owned(),
        attrs,
        children,
    })
}

const DIVISIONS: [&str; 5] = ["Part", "Chapter", "Section", "Subsection", "Division"];

/// A law's element tree (the standard 法令XML) as text, one structural unit per line.
pub fn law_text(root: &Element) -> String {
    let mut lines = Vec::new();
    block(root, &mut lines);
    let mut out = lines
        .into_iter()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// Inline text: ruby readings (`Rt`) dropped, columns of a sentence separated by a space.
fn inline(e: &Element) -> String {
    let mut out = String::new();
    for n in &e.children {
        match n {
            // Law XML's own spaces are ideographic; ASCII white space is pretty-printing.
            Node::Text(t) => out.push_str(t.trim_matches(|c: char| c.is_ascii_whitespace())),
            Node::El(c) if c.name == "Rt" => {}
            Node::El(c) if c.name == "Column" => {
                if !out.is_empty() {
                    out.push('\u{3000}');
                }
                out.push_str(&inline(c));
            }
            Node::El(c) => out.push_str(&inline(c)),
        }
    }
    out
}

fn child_inline(e: &Element, suffix: &str) -> String {
    e.elements()
        .find(|c| c.name.ends_with(suffix) && c.name != e.name)
        .map(inline)
        .unwrap_or_default()
}

/// `title　sentence` for 項, 号 and their sub-items, then their own sub-items.
fn numbered(e: &Element, lead: &str, lines: &mut Vec<String>) {
    let sentence = child_inline(e, "Sentence");
    lines.push(match (lead.is_empty(), sentence.is_empty()) {
        (true, _) => sentence,
        (false, true) => lead.to_owned(),
        (false, false) => format!("{lead}\u{3000}{sentence}"),
    });
    for c in e.elements() {
        if c.name == "Item"
            || c.name.starts_with("Subitem")
                && !c.name.ends_with("Title")
                && !c.name.ends_with("Sentence")
        {
            numbered(c, &child_inline(c, "Title"), lines);
        } else if !(c.name.ends_with("Sentence")
            || c.name.ends_with("Title")
            || c.name.ends_with("Num"))
        {
            block(c, lines);
        }
    }
}

fn block(e: &Element, lines: &mut Vec<String>) {
    let name = e.name.as_str();
    match name {
        "TOC" | "Rt" => {}
        "LawNum" | "LawTitle" | "EnactStatement" => lines.push(inline(e)),
        _ if DIVISIONS.contains(&name) => {
            lines.push(child_inline(e, "Title"));
            for c in e.elements().filter(|c| !c.name.ends_with("Title")) {
                block(c, lines);
            }
        }
        "Article" => {
            let caption = child_inline(e, "Caption");
            if !caption.is_empty() {
                lines.push(caption);
            }
            let title = child_inline(e, "ArticleTitle");
            let mut first = true;
            for c in e.elements() {
                match c.name.as_str() {
                    "ArticleCaption" | "ArticleTitle" => {}
                    "Paragraph" => {
                        let lead = if first {
                            title.clone()
                        } else {
                            child_inline(c, "ParagraphNum")
                        };
                        first = false;
                        numbered(c, &lead, lines);
                    }
                    _ => block(c, lines),
                }
            }
            if first && !title.is_empty() {
                lines.push(title);
            }
        }
        "Paragraph" => numbered(e, &child_inline(e, "ParagraphNum"), lines),
        "Item" => numbered(e, &child_inline(e, "ItemTitle"), lines),
        _ if name.starts_with("Subitem")
            && !name.ends_with("Title")
            && !name.ends_with("Sentence") =>
        {
            numbered(e, &child_inline(e, "Title"), lines)
        }
        "SupplProvision" => {
            let label = child_inline(e, "SupplProvisionLabel");
            let label = if label.is_empty() {
                "附則".to_owned()
            } else {
                label
            };
            lines.push(match e.attr("AmendLawNum").filter(|a| !a.is_empty()) {
                Some(num) => format!("{label}（{num}）"),
                None => label,
            });
            for c in e.elements().filter(|c| c.name != "SupplProvisionLabel") {
                block(c, lines);
            }
        }
        "TableRow" => {
            let cells: Vec<String> = e.elements().map(inline).filter(|c| !c.is_empty()).collect();
            lines.push(cells.join(" | "));
        }
        _ => {
            if e.elements().next().is_some() {
                for n in &e.children {
                    match n {
                        Node::El(c) => block(c, lines),
                        Node::Text(t) => lines.push(t.clone()),
                    }
                }
            } else {
                lines.push(inline(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tag: &str, children: Value) -> Value {
        json!({ "tag": tag, "attr": "", "children": children })
    }

    #[test]
    fn a_law_keeps_its_structure_one_unit_per_line() {
        let law = json!({ "law_full_text": t("Law", json!([
            t("LawNum", json!(["令和三年法律第三十六号"])),
            t("LawBody", json!([
                t("LawTitle", json!(["デジタル庁設置法"])),
                t("TOC", json!([t("TOCLabel", json!(["目次"]))])),
                t("MainProvision", json!([
                    t("Chapter", json!([
                        t("ChapterTitle", json!(["第一章　総則"])),
                        t("Article", json!([
                            t("ArticleCaption", json!(["（趣旨）"])),
                            t("ArticleTitle", json!(["第一条"])),
                            t("Paragraph", json!([
                                t("ParagraphNum", json!([])),
                                t("ParagraphSentence", json!([t("Sentence", json!(["この法律は、デジタル庁の設置を定める。"]))])),
                            ])),
                            t("Paragraph", json!([
                                t("ParagraphNum", json!(["２"])),
                                t("ParagraphSentence", json!([t("Sentence", json!(["次に掲げる事務をつかさどる。"]))])),
                                t("Item", json!([
                                    t("ItemTitle", json!(["一"])),
                                    t("ItemSentence", json!([
                                        t("Column", json!(["基本方針"])),
                                        t("Column", json!(["の企画"])),
                                    ])),
                                ])),
                            ])),
                        ])),
                    ])),
                ])),
                { "tag": "SupplProvision", "attr": { "AmendLawNum": "令和六年法律第四十六号" }, "children": [
                    t("SupplProvisionLabel", json!(["附　則"])),
                    t("Paragraph", json!([
                        t("ParagraphNum", json!([])),
                        t("ParagraphSentence", json!([t("Sentence", json!(["この法律は、公布の日から施行する。"]))])),
                    ])),
                ]},
            ])),
        ]))});
        let text = law_data_text("u", law.to_string().as_bytes()).unwrap();
        assert_eq!(
            text,
            "令和三年法律第三十六号\nデジタル庁設置法\n第一章　総則\n（趣旨）\n第一条　この法律は、デジタル庁の設置を定める。\n２　次に掲げる事務をつかさどる。\n一　基本方針　の企画\n附　則（令和六年法律第四十六号）\nこの法律は、公布の日から施行する。\n"
        );
        // The chunker sees the article heading (after normalisation, which makes the
        // ideographic space an ASCII one).
        let line = text.lines().nth(4).unwrap().replace('\u{3000}', " ");
        assert!(bunko_core::text::law_heading(&line).is_some(), "{line}");
    }

    #[test]
    fn shapes_that_are_not_a_law_are_errors() {
        assert!(law_data_text("u", b"{}").is_err());
        assert!(law_data_text("u", b"not json").is_err());
        assert!(
            law_data_text("u", br#"{"law_full_text": {"tag": "Law", "children": []}}"#).is_err()
        );
    }
}
