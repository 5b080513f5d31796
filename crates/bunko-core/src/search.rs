//! Search results and reciprocal-rank fusion. Fusion lives here, not in an index adapter, so
//! every backend ranks alike.

use crate::error::{Code, Error};
use crate::identity::{Access, GlobalRole, Principal, Scope};
use crate::ports::{MetaStore, PageRequest, Project};
use std::collections::HashMap;

/// Longer queries are cut here (with a warning), not refused.
pub const MAX_QUERY_CHARS: usize = 1000;
pub const MAX_K: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Keyword,
    Vector,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Keyword => "keyword",
            Mode::Vector => "vector",
        }
    }
}

/// Filters of `POST /api/v1/search`: a chunk must belong to a ready document that passes
/// every filter given. They are resolved to a set of documents which both index halves apply
/// inside their query (never by filtering results afterwards).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilters {
    pub document_ids: Vec<uuid::Uuid>,
    pub types: Vec<crate::documents::DocType>,
    pub languages: Vec<String>,
    /// Inclusive, `YYYY-MM-DD`, on the document's own date (its metadata's creation date,
    /// else the day it was added).
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// A document matches when it has any of these tags.
    pub tags: Vec<String>,
    pub sources: Vec<String>,
    /// `YYYY-MM-DD`: of documents with versions (laws, papers), the version valid on that day
    /// instead of the current one.
    pub as_of: Option<String>,
}

impl SearchFilters {
    pub fn is_empty(&self) -> bool {
        *self == SearchFilters::default()
    }
}

const MAX_FILTER_VALUES: usize = 1000;

fn filter_err(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(Code::InvalidFilter, format!("filters.{field}: {msg}"))
}

/// One value or a list of values, each a string.
fn strings(v: &serde_json::Value, field: &str) -> Result<Vec<String>, Error> {
    let items: Vec<&serde_json::Value> = match v {
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Null => Vec::new(),
        other => vec![other],
    };
    if items.len() > MAX_FILTER_VALUES {
        return Err(filter_err(
            field,
            format!("at most {MAX_FILTER_VALUES} values"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            let s = x
                .as_str()
                .ok_or_else(|| filter_err(&format!("{field}[{i}]"), "expected a string"))?;
            if s.is_empty() || s.chars().count() > 200 {
                return Err(filter_err(
                    &format!("{field}[{i}]"),
                    "must be 1–200 characters",
                ));
            }
            Ok(s.to_owned())
        })
        .collect()
}

fn date(v: &serde_json::Value, field: &str) -> Result<Option<String>, Error> {
    if v.is_null() {
        return Ok(None);
    }
    let s = v
        .as_str()
        .ok_or_else(|| filter_err(field, "expected a date as \"YYYY-MM-DD\""))?;
    let ok = s.len() == 10
        && s.parse::<jiff::civil::Date>().is_ok()
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[7] == b'-';
    if !ok {
        return Err(filter_err(
            field,
            format!("`{s}` is not a date as YYYY-MM-DD"),
        ));
    }
    Ok(Some(s.to_owned()))
}

/// Validates the `filters` object; every problem names its field.
pub fn parse_filters(v: &serde_json::Value) -> Result<SearchFilters, Error> {
    let obj = match v {
        serde_json::Value::Null => return Ok(SearchFilters::default()),
        serde_json::Value::Object(o) => o,
        _ => {
            return Err(Error::new(
                Code::InvalidFilter,
                "filters: expected an object",
            ));
        }
    };
    let mut f = SearchFilters::default();
    for (key, val) in obj {
        match key.as_str() {
            "document_ids" => {
                f.document_ids = strings(val, key)?
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        uuid::Uuid::parse_str(s).map_err(|_| {
                            filter_err(
                                &format!("{key}[{i}]"),
                                format!("`{s}` is not a document id"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "type" | "types" => {
                f.types = strings(val, key)?
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        crate::documents::DocType::parse(s).ok_or_else(|| {
                            filter_err(
                                &format!("{key}[{i}]"),
                                format!(
                                    "`{s}` is not pdf, png, jpeg, tiff, html, markdown or text"
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "language" | "languages" => {
                f.languages = strings(val, key)?;
                if let Some((i, bad)) = f
                    .languages
                    .iter()
                    .enumerate()
                    .find(|(_, l)| !matches!(l.as_str(), "ja" | "en" | "other"))
                {
                    return Err(filter_err(
                        &format!("{key}[{i}]"),
                        format!("`{bad}` is not ja, en or other"),
                    ));
                }
            }
            "date_from" => f.date_from = date(val, key)?,
            "date_to" => f.date_to = date(val, key)?,
            "tags" => f.tags = strings(val, key)?,
            "source" | "sources" => f.sources = strings(val, key)?,
            "as_of" => f.as_of = date(val, key)?,
            other => {
                return Err(filter_err(
                    other,
                    "unknown filter; filters are document_ids, type, language, date_from, date_to, tags, source, as_of",
                ));
            }
        }
    }
    if let (Some(a), Some(b)) = (&f.date_from, &f.date_to)
        && a > b
    {
        return Err(filter_err("date_from", format!("{a} is after date_to {b}")));
    }
    Ok(f)
}

/// A validated search request.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    pub k: usize,
    pub mode: Mode,
    pub warnings: Vec<String>,
}

/// Empty or whitespace → 400 `query_empty`; `k` outside 1..=100 or an unknown mode → 400
/// `invalid_query`; an over-long query is cut with a warning.
pub fn parse_query(
    q: Option<&str>,
    k: Option<u32>,
    mode: Option<&str>,
) -> Result<SearchQuery, Error> {
    let text = q.unwrap_or("").trim();
    if text.is_empty() {
        return Err(Error::new(Code::QueryEmpty, "the query `q` is empty"));
    }
    let k = k.unwrap_or(10);
    if !(1..=MAX_K).contains(&k) {
        return Err(Error::new(
            Code::InvalidQuery,
            format!("k must be between 1 and {MAX_K}"),
        ));
    }
    let mode = match mode.unwrap_or("hybrid") {
        "hybrid" => Mode::Hybrid,
        "keyword" => Mode::Keyword,
        "vector" => Mode::Vector,
        other => {
            return Err(Error::new(
                Code::InvalidQuery,
                format!("mode `{other}` is not hybrid, keyword or vector"),
            ));
        }
    };
    let mut warnings = Vec::new();
    let chars = text.chars().count();
    let text = if chars > MAX_QUERY_CHARS {
        warnings.push(format!(
            "the query had {chars} characters; only the first {MAX_QUERY_CHARS} were used"
        ));
        text.chars().take(MAX_QUERY_CHARS).collect()
    } else {
        text.to_owned()
    };
    Ok(SearchQuery {
        text,
        k: k as usize,
        mode,
        warnings,
    })
}

/// The projects the caller may search: the one named (404 when invisible, 403 when the
/// credential lacks `search` there), or every project visible to them where it may search.
pub async fn searchable_projects(
    store: &dyn MetaStore,
    p: &Principal,
    project: Option<&str>,
) -> Result<Vec<Project>, Error> {
    projects_for(store, p, project, Scope::Search).await
}

/// The projects the caller may use with `scope`: the one named (404 when invisible, 403 when
/// visible but not allowed), else every project where it is allowed.
pub async fn projects_for(
    store: &dyn MetaStore,
    p: &Principal,
    project: Option<&str>,
    scope: Scope,
) -> Result<Vec<Project>, Error> {
    if let Some(key) = project {
        let proj = store
            .get_project(key)
            .await?
            .ok_or_else(|| Error::not_found("project", key))?;
        let role = store.member_role(proj.id, p.user_id).await?;
        return match p.allows(scope, proj.id, role) {
            Access::Allowed => Ok(vec![proj]),
            Access::Invisible => Err(Error::not_found("project", key)),
            Access::Denied => Err(Error::new(
                Code::Forbidden,
                format!("this needs `{}` in project `{}`", scope.as_str(), proj.slug),
            )),
        };
    }
    if !p.has_scope(scope) {
        return Err(Error::new(
            Code::Forbidden,
            format!("this credential lacks the `{}` scope", scope.as_str()),
        ));
    }
    let page = PageRequest {
        limit: PageRequest::MAX_LIMIT,
        before: None,
    };
    let candidates = match p.key_project() {
        Some(only) => store
            .get_project(&only.to_string())
            .await?
            .into_iter()
            .collect(),
        None if p.role == GlobalRole::Admin => store.list_projects(page).await?.items,
        None => store.list_projects_of(p.user_id, page).await?.items,
    };
    let mut out = Vec::with_capacity(candidates.len());
    for proj in candidates {
        let role = store.member_role(proj.id, p.user_id).await?;
        if p.allows(scope, proj.id, role) == Access::Allowed {
            out.push(proj);
        }
    }
    Ok(out)
}

/// One leg's ranked ids, best first, with a weight.
pub struct Leg<'a> {
    pub ids: &'a [String],
    pub weight: f64,
}

/// Reciprocal-rank fusion: score(d) = Σ weight / (k + rank), rank 1-based. Ties keep the order
/// in which documents were first seen (earlier legs first).
pub fn rrf(legs: &[Leg<'_>], k: f64) -> Vec<(String, f64)> {
    let mut scores: HashMap<&str, (f64, usize)> = HashMap::new();
    let mut seen = 0usize;
    for leg in legs {
        for (i, id) in leg.ids.iter().enumerate() {
            let e = scores.entry(id.as_str()).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            e.0 += leg.weight / (k + (i + 1) as f64);
        }
    }
    let mut out: Vec<(String, f64, usize)> = scores
        .into_iter()
        .map(|(id, (s, o))| (id.to_owned(), s, o))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.into_iter().map(|(id, s, _)| (id, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_validate_and_name_the_field() {
        use serde_json::json;
        let f = parse_filters(&json!({
            "type": "pdf", "language": ["ja", "en"], "date_from": "2020-01-01",
            "tags": ["law"], "source": "upload",
            "document_ids": ["01a22986-0f64-7697-9e25-cbafef663365"]
        }))
        .unwrap();
        assert_eq!(f.types, vec![crate::documents::DocType::Pdf]);
        assert_eq!(f.languages, vec!["ja", "en"]);
        assert!(!f.is_empty());
        assert!(parse_filters(&json!(null)).unwrap().is_empty());
        for (bad, field) in [
            (json!({"language": ["ja", "xx"]}), "filters.language[1]"),
            (json!({"language": 5}), "filters.language[0]"),
            (json!({"type": "docx"}), "filters.type[0]"),
            (json!({"date_from": "2020-13-01"}), "filters.date_from"),
            (json!({"date_to": "yesterday"}), "filters.date_to"),
            (
                json!({"date_from": "2021-01-01", "date_to": "2020-01-01"}),
                "filters.date_from",
            ),
            (json!({"document_ids": ["nope"]}), "filters.document_ids[0]"),
            (json!({"colour": "red"}), "filters.colour"),
            (json!([1, 2]), "filters"),
        ] {
            let e = parse_filters(&bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidFilter, "{bad}");
            assert!(e.detail.starts_with(field), "{bad}: {}", e.detail);
        }
    }

    #[test]
    fn query_validation() {
        assert_eq!(
            parse_query(Some("  "), None, None).unwrap_err().code,
            Code::QueryEmpty
        );
        assert_eq!(
            parse_query(None, None, None).unwrap_err().code,
            Code::QueryEmpty
        );
        assert_eq!(
            parse_query(Some("x"), Some(0), None).unwrap_err().code,
            Code::InvalidQuery
        );
        assert_eq!(
            parse_query(Some("x"), Some(101), None).unwrap_err().code,
            Code::InvalidQuery
        );
        assert_eq!(
            parse_query(Some("x"), None, Some("magic"))
                .unwrap_err()
                .code,
            Code::InvalidQuery
        );
        let long = parse_query(Some(&"検".repeat(10_000)), Some(100), Some("keyword")).unwrap();
        assert_eq!(
            (long.text.chars().count(), long.warnings.len(), long.k),
            (MAX_QUERY_CHARS, 1, 100)
        );
        assert_eq!(
            parse_query(Some("q"), None, None).unwrap().mode,
            Mode::Hybrid
        );
    }

    #[test]
    fn fuses_by_reciprocal_rank() {
        let a: Vec<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
        let b: Vec<String> = ["y", "w"].iter().map(|s| s.to_string()).collect();
        let fused = rrf(
            &[
                Leg {
                    ids: &a,
                    weight: 1.0,
                },
                Leg {
                    ids: &b,
                    weight: 1.0,
                },
            ],
            60.0,
        );
        let ids: Vec<&str> = fused.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, vec!["y", "x", "w", "z"]);
        assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-12);
        let only_b = rrf(
            &[
                Leg {
                    ids: &a,
                    weight: 0.0,
                },
                Leg {
                    ids: &b,
                    weight: 1.0,
                },
            ],
            60.0,
        );
        assert_eq!(only_b[0].0, "y");
        assert!(rrf(&[], 60.0).is_empty());
    }
}
