//! Sources: where documents come from on their own — arXiv (Atom API or OAI-PMH), the e-Gov
//! law API, RSS/Atom feeds and watched local folders. A source is bound to a project, keeps a
//! cursor (a date, a resumption token, an ETag) and remembers every item it took in by a key
//! and a content hash, so a crawl is incremental and a crawl killed midway resumes without
//! duplicates. The crawlers themselves live in `bunko-ingest`; the job that runs them in the
//! server.

use crate::ports::StoreResult;
use crate::schedule::Origin;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The arXiv API (`/api/query`, Atom): a search query and/or categories, newest first.
    Arxiv,
    /// arXiv's OAI-PMH interface (`/oai2`, ListRecords, metadataPrefix `arXiv`).
    ArxivOai,
    /// The e-Gov 法令 API v2 (`/api/2`): laws by type/category or by id, each revision a
    /// version with its enforcement date.
    Egov,
    /// An RSS 2.0 or Atom feed.
    Feed,
    /// A directory on this machine: new and changed files are ingested.
    Folder,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Arxiv => "arxiv",
            SourceKind::ArxivOai => "arxiv_oai",
            SourceKind::Egov => "egov",
            SourceKind::Feed => "feed",
            SourceKind::Folder => "folder",
        }
    }

    /// Where the source is when `url` is not given.
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            SourceKind::Arxiv => Some("https://export.arxiv.org/api/query"),
            SourceKind::ArxivOai => Some("https://oaipmh.arxiv.org/oai"),
            SourceKind::Egov => Some("https://laws.e-gov.go.jp/api/2"),
            SourceKind::Feed | SourceKind::Folder => None,
        }
    }

    /// The pause between two requests to the source unless `delay_ms` says otherwise: arXiv's
    /// terms ask for one request every three seconds.
    pub fn default_delay_ms(self) -> u64 {
        match self {
            SourceKind::Arxiv | SourceKind::ArxivOai => 3000,
            SourceKind::Egov | SourceKind::Feed => 1000,
            SourceKind::Folder => 0,
        }
    }
}

/// One source's definition (a `[[sources]]` entry, or the body of `POST /api/v1/sources`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDef {
    /// Lowercase letters, digits, `-`, `_` and `.`; unique. Documents record it as their
    /// `source`.
    pub name: String,
    pub kind: SourceKind,
    /// The project (name or id) its documents go to.
    pub project: String,
    /// The service's address (defaults per kind), the feed's URL, or (folder) nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// arXiv: a `search_query` (`all:transformer AND cat:cs.CL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// arXiv: categories (`cs.CL`); with `query`, both must match. OAI-PMH: sets
    /// (`cs`, `physics:astro-ph`), the first one used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// `YYYY-MM-DD`: the first crawl takes items from this day on (arXiv submitted date,
    /// OAI datestamp, e-Gov `updated`); later crawls go on from the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// e-Gov: law type (`Act`, `CabinetOrder`, `MinisterialOrdinance`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub law_type: Option<String>,
    /// e-Gov: category code (`category_cd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// e-Gov: these laws (law ids) rather than a listing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub law_ids: Vec<String>,
    /// e-Gov: every revision of each law (its amendment history), not only the current one.
    #[serde(default)]
    pub all_revisions: bool,
    /// Folder: the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Folder: a file that disappears deletes its document.
    #[serde(default)]
    pub delete_missing: bool,
    /// arXiv and feeds: fetch each item's PDF (or linked file) and ingest it; otherwise the
    /// entry's own text (title and abstract/summary) is the document.
    #[serde(default = "yes")]
    pub fetch_files: bool,
    /// Items per request (arXiv `max_results`, e-Gov `limit`).
    #[serde(default = "page_size")]
    pub page_size: u32,
    /// At most this many new items per crawl (the rest wait for the next one).
    #[serde(default = "max_items")]
    pub max_items: u32,
    /// The pause between two requests to the source (ms); default per kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Sent as `User-Agent`; default `crawl.user_agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Tags given to its documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Summarise each new document once it is ready (within `crawl.summary_daily_tokens`).
    #[serde(default)]
    pub summarize: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}
fn page_size() -> u32 {
    50
}
fn max_items() -> u32 {
    200
}

pub const MAX_PAGE_SIZE: u32 = 2000;
pub const MAX_DELAY_MS: u64 = 3_600_000;

impl SourceDef {
    /// Why the definition is wrong, if it is.
    pub fn validate(&self) -> Result<(), String> {
        crate::schedule::check_name(&self.name)?;
        if self.project.trim().is_empty() {
            return Err("project must name the project its documents go to".into());
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(format!("page_size must be 1-{MAX_PAGE_SIZE}"));
        }
        if self.max_items == 0 {
            return Err("max_items must be at least 1".into());
        }
        if self.delay_ms.is_some_and(|d| d > MAX_DELAY_MS) {
            return Err(format!("delay_ms must be at most {MAX_DELAY_MS} (an hour)"));
        }
        if let Some(ua) = &self.user_agent
            && (ua.trim().is_empty()
                || ua.len() > 256
                || !ua.chars().all(|c| (' '..='~').contains(&c)))
        {
            return Err("user_agent must be 1-256 printable ASCII characters".into());
        }
        if let Some(d) = &self.from
            && d.parse::<jiff::civil::Date>().is_err()
        {
            return Err(format!("from `{d}` is not a date as YYYY-MM-DD"));
        }
        match self.kind {
            SourceKind::Folder => {
                let Some(p) = self.path.as_deref().filter(|p| !p.trim().is_empty()) else {
                    return Err("a folder source needs `path`".into());
                };
                if !std::path::Path::new(p).is_absolute() {
                    return Err(format!("path `{p}` must be absolute"));
                }
                if self.url.is_some() {
                    return Err("a folder source has `path`, not `url`".into());
                }
            }
            SourceKind::Feed if self.url.is_none() => {
                return Err("a feed source needs `url`".into());
            }
            SourceKind::Arxiv if self.query.is_none() && self.categories.is_empty() => {
                return Err("an arxiv source needs `query` or `categories`".into());
            }
            SourceKind::Egov
                if self.law_ids.is_empty()
                    && self.law_type.is_none()
                    && self.category.is_none() =>
            {
                return Err(
                    "an egov source needs `law_ids`, `law_type` or `category` (the whole body of Japanese law is not one source)"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(u) = self.url() {
            check_url(u)?;
        }
        Ok(())
    }

    /// The address crawled: `url`, else the kind's default.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref().or(self.kind.default_url())
    }

    pub fn delay_ms(&self) -> u64 {
        self.delay_ms.unwrap_or(self.kind.default_delay_ms())
    }
}

/// Whether `host` matches the allow-list: exact names, or `.suffix` for a domain and its
/// subdomains. An empty list allows any host.
pub fn host_allowed(allow: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    allow.is_empty()
        || allow.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            match a.strip_prefix('.') {
                Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
                None => host == a,
            }
        })
}

/// An `http(s)` URL with a host and no credentials in it.
pub fn check_url(u: &str) -> Result<(), String> {
    let Some((scheme, rest)) = u.split_once("://") else {
        return Err(format!("url `{u}` is not an absolute http(s) URL"));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!("url `{u}`: only http and https are crawled"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!("url `{u}`: credentials do not belong in the URL"));
    }
    if authority.is_empty() {
        return Err(format!("url `{u}` has no host"));
    }
    Ok(())
}

/// What one crawl did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrawlStats {
    /// Requests made to the source (listing pages, files).
    pub requests: u32,
    /// Items the source listed.
    pub seen: u32,
    /// New documents (including new versions).
    pub added: u32,
    /// New versions of items already held.
    pub versions: u32,
    /// Items skipped because their content had not changed.
    pub unchanged: u32,
    /// Items that could not be taken in (each logged with its reason).
    pub failed: u32,
    /// Documents deleted (a folder's vanished files).
    pub deleted: u32,
    /// More items were there than `max_items`; the next crawl goes on.
    pub more: bool,
}

/// A source as stored: its definition, cursor and last outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    #[serde(flatten)]
    pub def: SourceDef,
    pub origin: Origin,
    /// Where the next crawl starts (per kind: `from` date, `offset`, `resumption_token`,
    /// `etag`, `last_modified`).
    pub cursor: serde_json::Value,
    pub last_run_ms: Option<i64>,
    pub last_job_id: Option<Uuid>,
    /// `ok` or `failed`.
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub last_stats: CrawlStats,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// An item a source has taken in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceItem {
    pub key: String,
    pub content_hash: String,
    pub document_id: Option<Uuid>,
    pub seen_at_ms: i64,
}

#[async_trait::async_trait]
pub trait SourceQueries: Send + Sync {
    /// Makes the configuration's sources those of origin `config` (cursors and items kept for
    /// names that stay). `Conflict` when a name is taken by an API source.
    async fn sync_config_sources(&self, defs: &[SourceDef]) -> StoreResult<()>;
    async fn list_sources(&self) -> StoreResult<Vec<Source>>;
    async fn get_source(&self, name: &str) -> StoreResult<Option<Source>>;
    /// `Conflict` when the name is taken.
    async fn create_source(&self, def: &SourceDef) -> StoreResult<Source>;
    /// Deletes an API source with its item memory (its documents stay); `false` when none.
    async fn delete_source(&self, name: &str) -> StoreResult<bool>;
    /// Saves the cursor (after each page, so a killed crawl resumes there).
    async fn save_source_cursor(&self, name: &str, cursor: &serde_json::Value) -> StoreResult<()>;
    /// Records how a crawl ended.
    async fn finish_crawl(
        &self,
        name: &str,
        job: Option<Uuid>,
        stats: &CrawlStats,
        error: Option<&str>,
    ) -> StoreResult<()>;
    async fn source_item(&self, name: &str, key: &str) -> StoreResult<Option<SourceItem>>;
    /// Records (or updates) an item taken in.
    async fn put_source_item(
        &self,
        name: &str,
        key: &str,
        content_hash: &str,
        document: Option<Uuid>,
    ) -> StoreResult<()>;
    /// Every item of a source (a folder's scan compares them with what is on disk).
    async fn source_items(&self, name: &str) -> StoreResult<Vec<SourceItem>>;
    async fn forget_source_item(&self, name: &str, key: &str) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(toml_text: &str) -> Result<(), String> {
        let d: SourceDef = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        d.validate()
    }

    #[test]
    fn definitions_are_checked_per_kind() {
        assert!(def("name='a'\nkind='arxiv'\nproject='p'\ncategories=['cs.CL']").is_ok());
        let e = def("name='a'\nkind='arxiv'\nproject='p'").unwrap_err();
        assert!(e.contains("query"), "{e}");
        let e = def("name='a'\nkind='feed'\nproject='p'").unwrap_err();
        assert!(e.contains("url"), "{e}");
        let e = def("name='a'\nkind='feed'\nproject='p'\nurl='ftp://x/y'").unwrap_err();
        assert!(e.contains("http"), "{e}");
        let e = def("name='a'\nkind='feed'\nproject='p'\nurl='http://u:pw@x/y'").unwrap_err();
        assert!(e.contains("credentials"), "{e}");
        let e = def("name='a'\nkind='folder'\nproject='p'\npath='rel'").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = def("name='a'\nkind='egov'\nproject='p'").unwrap_err();
        assert!(e.contains("law_ids"), "{e}");
        let e = def("name='A b'\nkind='egov'\nproject='p'\nlaw_type='Act'").unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = def("name='a'\nkind='egov'\nproject='p'\nlaw_type='Act'\nfrom='2024-13-01'")
            .unwrap_err();
        assert!(e.contains("from"), "{e}");
        let e = def("name='a'\nkind='rss'\nproject='p'").unwrap_err();
        assert!(e.contains("kind"), "{e}");
        let e = def("name='a'\nkind='feed'\nproject='p'\nurl='http://x/'\nuser_agent=\"a\\nb\"")
            .unwrap_err();
        assert!(e.contains("user_agent"), "{e}");
        let e = def("name='a'\nkind='feed'\nproject='p'\nurl='http://x/'\ndelay_ms=99999999")
            .unwrap_err();
        assert!(e.contains("delay_ms"), "{e}");
        let e = def("name='a'\nkind='feed'\nproject='p'\nurl='http://x/'\nbogus=1").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }
}
