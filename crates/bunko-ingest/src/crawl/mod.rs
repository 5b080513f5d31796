//! Crawlers: each turns a source's listing (one page at a time, from a cursor) into items —
//! what to take in, its key, version and metadata. The server's crawl job stores the items,
//! remembers their keys and content hashes and saves the cursor after each page.
//!
//! Every request goes through [`Fetcher`]: the source's own User-Agent, a pause between two
//! requests to the same source, `Retry-After` honoured on 429/503, a size limit, conditional
//! requests (ETag / Last-Modified), and the network policy against server-side request
//! forgery — the host must be on the allow-list and must not resolve to a loopback, private,
//! link-local or otherwise internal address (checked on every connection, so a redirect or a
//! DNS answer that changes cannot get round it).

pub mod arxiv;
pub mod egov;
pub mod feed;
pub mod folder;
pub mod robots;
pub mod xml;

use bunko_core::sources::{SourceDef, SourceKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One thing a source offers: a paper version, a law revision, a feed entry, a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Unique within the source and per version (`2101.00001v2`, a law revision id, a feed
    /// entry's id, a file's relative path).
    pub key: String,
    /// The item all versions share (`arxiv:2101.00001`, `egov:411AC0000000127`).
    pub external_id: Option<String>,
    pub version: Option<String>,
    /// `YYYY-MM-DD` from which this version is the valid one.
    pub valid_from: Option<String>,
    pub title: String,
    pub meta: Value,
    pub content: Content,
    /// SHA-256 of what the listing says about the item: unchanged → skipped without fetching.
    pub hash: String,
}

/// Where an item's document comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A file at a URL (a paper's PDF, a feed entry's page or enclosure).
    Fetch { url: String, filename: String },
    /// An e-Gov law's full text (JSON), turned into structured text.
    EgovLaw { url: String, filename: String },
    /// The document is the listing's own text (an abstract, an entry's content).
    Inline { filename: String, text: String },
    /// A local file (watched folder).
    Path(PathBuf),
}

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// The cursor once this page is taken in: `next` = more pages in this crawl.
    pub cursor: Value,
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    /// The network policy refused the address (not on the allow-list, an internal address).
    #[error("refused: {0}")]
    Refused(String),
    /// The source answered with an error status (after retries for 429/503).
    #[error("{url} answered HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("network: {0}")]
    Network(String),
    #[error("{0} is larger than the limit of {1} bytes")]
    TooLarge(String, u64),
    /// The response is not what the API documents (malformed XML, wrong JSON shape).
    #[error("unexpected response from {0}: {1}")]
    Format(String, String),
    /// robots.txt of the host disallows the URL.
    #[error("{0} is disallowed by the host's robots.txt")]
    Disallowed(String),
    #[error("{0}")]
    Local(String),
}

impl CrawlError {
    /// Worth another attempt later (network trouble, the source busy or failing).
    pub fn retryable(&self) -> bool {
        match self {
            CrawlError::Network(_) => true,
            CrawlError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Where requests may go.
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    /// Host names (`export.arxiv.org`) or suffixes (`.go.jp`); empty = any public host.
    pub allow_hosts: Vec<String>,
    /// Let requests reach loopback and private addresses (a stand-in server in tests, an
    /// intranet source); off by default.
    pub allow_private: bool,
}

impl NetPolicy {
    /// Refuses a URL whose scheme, host or literal address the policy does not allow.
    pub fn check(&self, url: &reqwest::Url) -> Result<(), CrawlError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CrawlError::Refused(format!(
                "{url}: only http and https are crawled"
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(CrawlError::Refused(format!("{url} has no host")));
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if !bunko_core::sources::host_allowed(&self.allow_hosts, &host) {
            return Err(CrawlError::Refused(format!(
                "host `{host}` is not in crawl.allow_hosts"
            )));
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && !self.allow_private
            && is_internal(ip)
        {
            return Err(CrawlError::Refused(format!(
                "{ip} is an internal address (crawl.allow_private_networks is off)"
            )));
        }
        Ok(())
    }
}

/// Loopback, private, link-local, unique-local, unspecified, shared (CGNAT), documentation,
/// broadcast and multicast addresses: nothing a public source lives at.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b)
        }
    }
}

/// Resolves names and drops internal addresses (unless allowed): the check happens where the
/// connection is made, so neither a redirect nor a changed DNS answer gets past it.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "`{host}` resolves only to internal addresses (crawl.allow_private_networks is off)"
                )
                .into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// Settings every fetcher shares (from `[crawl]`).
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub policy: NetPolicy,
    pub user_agent: String,
    pub timeout: Duration,
    /// Largest response body taken (a listing or a file).
    pub max_bytes: u64,
    /// Longest `Retry-After` waited out inside a crawl; longer ones end it (the job retries).
    pub max_retry_wait: Duration,
    pub proxy: Option<String>,
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// 200, or 304 for a conditional request with nothing new.
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// HTTP for one source: its User-Agent and pace.
pub struct Fetcher {
    client: reqwest::Client,
    config: FetchConfig,
    delay: Duration,
    last: tokio::sync::Mutex<Option<Instant>>,
    /// Requests made (for the crawl's statistics).
    pub requests: std::sync::atomic::AtomicU32,
    /// robots.txt rules per origin, for sources that fetch web pages (feeds); `None` for
    /// APIs (arXiv, e-Gov), whose terms of use govern instead.
    robots: Option<tokio::sync::Mutex<std::collections::HashMap<String, robots::Rules>>>,
}

/// The product token bunko looks for in robots.txt.
pub const ROBOTS_AGENT: &str = "bunko";
/// The longest Crawl-delay honoured.
const MAX_CRAWL_DELAY: Duration = Duration::from_secs(60);

const MAX_REDIRECTS: usize = 5;
const MAX_ATTEMPTS: u32 = 4;

impl Fetcher {
    pub fn new(config: FetchConfig, def: &SourceDef) -> Result<Self, CrawlError> {
        let ua = def
            .user_agent
            .clone()
            .unwrap_or_else(|| config.user_agent.clone());
        let mut b = reqwest::Client::builder()
            .user_agent(ua)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // Redirects are followed here, each hop checked against the policy.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.policy.allow_private,
            }));
        b = match &config.proxy {
            Some(p) => b.proxy(
                reqwest::Proxy::all(p)
                    .map_err(|e| CrawlError::Local(format!("crawl.proxy `{p}`: {e}")))?,
            ),
            None => b.no_proxy(),
        };
        let client = b
            .build()
            .map_err(|e| CrawlError::Local(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            delay: Duration::from_millis(def.delay_ms()),
            config,
            last: tokio::sync::Mutex::new(None),
            requests: std::sync::atomic::AtomicU32::new(0),
            robots: (def.kind == SourceKind::Feed).then(Default::default),
        })
    }

    /// Waits until the source's pause (or the host's longer Crawl-delay) since the previous
    /// request has passed.
    async fn pace(&self, host_delay: Duration) {
        let delay = self.delay.max(host_delay.min(MAX_CRAWL_DELAY));
        let mut last = self.last.lock().await;
        if let Some(t) = *last {
            let since = t.elapsed();
            if since < delay {
                tokio::time::sleep(delay - since).await;
            }
        }
        *last = Some(Instant::now());
    }

    /// The host's robots.txt rules (fetched once per crawl): a missing file (4xx) allows
    /// everything; a failing one (5xx) stops the crawl for now, as RFC 9309 asks.
    async fn robots_for(&self, url: &reqwest::Url) -> Result<Option<robots::Rules>, CrawlError> {
        let Some(cache) = &self.robots else {
            return Ok(None);
        };
        let origin = url.origin().ascii_serialization();
        if let Some(r) = cache.lock().await.get(&origin) {
            return Ok(Some(r.clone()));
        }
        let robots_url = format!("{origin}/robots.txt");
        self.pace(Duration::ZERO).await;
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rules = match self.client.get(&robots_url).send().await {
            Ok(resp) if resp.status().is_success() => {
                let body = read_limited(resp, 512 * 1024).await?.unwrap_or_default();
                robots::parse(&String::from_utf8_lossy(&body), ROBOTS_AGENT)
            }
            Ok(resp) if resp.status().is_server_error() => {
                return Err(CrawlError::Status {
                    url: robots_url,
                    status: resp.status().as_u16(),
                    detail: " (robots.txt unreachable: nothing is fetched from the host for now)"
                        .into(),
                    retry_after: None,
                });
            }
            Ok(_) => robots::Rules::default(),
            Err(e) => return Err(CrawlError::Network(format!("{robots_url}: {e}"))),
        };
        cache.lock().await.insert(origin, rules.clone());
        Ok(Some(rules))
    }

    /// GET with the policy, pace, retries on 429/503 and redirects. `conditional` is the
    /// cursor's (ETag, Last-Modified).
    pub async fn get(
        &self,
        url: &str,
        conditional: (Option<&str>, Option<&str>),
    ) -> Result<Fetched, CrawlError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.get_once(url, conditional).await {
                Err(CrawlError::Status {
                    status,
                    retry_after,
                    ..
                }) if (status == 429 || status == 503)
                    && attempt < MAX_ATTEMPTS
                    && retry_after.unwrap_or(Duration::ZERO) <= self.config.max_retry_wait =>
                {
                    let wait = retry_after
                        .unwrap_or(Duration::from_secs(1 << attempt))
                        .min(self.config.max_retry_wait);
                    tracing::info!(
                        url,
                        status,
                        wait_ms = wait.as_millis() as u64,
                        "source busy; waiting as asked"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(CrawlError::Network(e)) if attempt < MAX_ATTEMPTS => {
                    let wait = Duration::from_millis(500 << attempt);
                    tracing::info!(url, error = %e, "network error; trying again");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn get_once(
        &self,
        url: &str,
        conditional: (Option<&str>, Option<&str>),
    ) -> Result<Fetched, CrawlError> {
        let mut current = reqwest::Url::parse(url)
            .map_err(|e| CrawlError::Refused(format!("`{url}` is not a URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            self.config.policy.check(&current)?;
            let rules = self.robots_for(&current).await?;
            if let Some(r) = &rules {
                let path = match current.query() {
                    Some(q) => format!("{}?{q}", current.path()),
                    None => current.path().to_owned(),
                };
                if !r.allowed(&path) {
                    return Err(CrawlError::Disallowed(current.to_string()));
                }
            }
            let host_delay = rules
                .and_then(|r| r.crawl_delay)
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::ZERO);
            self.pace(host_delay).await;
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut req = self.client.get(current.clone());
            if let Some(e) = conditional.0 {
                req = req.header(reqwest::header::IF_NONE_MATCH, e);
            }
            if let Some(m) = conditional.1 {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
            }
            let resp = req.send().await.map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                if msg.contains("internal addresses") {
                    CrawlError::Refused(msg)
                } else {
                    CrawlError::Network(msg)
                }
            })?;
            let status = resp.status().as_u16();
            let header = |h: reqwest::header::HeaderName| {
                resp.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if (300..400).contains(&status) && status != 304 {
                let Some(loc) = header(reqwest::header::LOCATION) else {
                    return Err(CrawlError::Format(
                        current.to_string(),
                        format!("HTTP {status} without a Location"),
                    ));
                };
                current = current.join(&loc).map_err(|e| {
                    CrawlError::Format(current.to_string(), format!("bad redirect `{loc}`: {e}"))
                })?;
                continue;
            }
            let etag = header(reqwest::header::ETAG);
            let last_modified = header(reqwest::header::LAST_MODIFIED);
            let content_type = header(reqwest::header::CONTENT_TYPE);
            if status == 304 {
                return Ok(Fetched {
                    status,
                    body: Vec::new(),
                    content_type,
                    etag,
                    last_modified,
                });
            }
            if !(200..300).contains(&status) {
                let retry_after =
                    header(reqwest::header::RETRY_AFTER).and_then(|v| parse_retry_after(&v));
                let body = read_limited(resp, 4096).await.unwrap_or_default();
                let detail = error_detail(&body);
                return Err(CrawlError::Status {
                    url: current.to_string(),
                    status,
                    detail,
                    retry_after,
                });
            }
            if let Some(len) = resp.content_length()
                && len > self.config.max_bytes
            {
                return Err(CrawlError::TooLarge(
                    current.to_string(),
                    self.config.max_bytes,
                ));
            }
            let body = read_limited(resp, self.config.max_bytes)
                .await?
                .ok_or_else(|| CrawlError::TooLarge(current.to_string(), self.config.max_bytes))?;
            return Ok(Fetched {
                status,
                body,
                content_type,
                etag,
                last_modified,
            });
        }
        Err(CrawlError::Format(
            url.to_owned(),
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }
}

/// The body, or `None` past `limit` bytes.
async fn read_limited(
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<Option<Vec<u8>>, CrawlError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CrawlError::Network(e.to_string()))?
    {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// What an error body says, briefly (e-Gov answers `{"code": …, "message": …}`).
fn error_detail(body: &Option<Vec<u8>>) -> String {
    let Some(b) = body else { return String::new() };
    if let Ok(v) = serde_json::from_slice::<Value>(b) {
        let msg = v
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| v.get("detail").and_then(Value::as_str));
        if let Some(m) = msg {
            let code = v.get("code").and_then(|c| {
                c.as_str()
                    .map(str::to_owned)
                    .or_else(|| Some(c.to_string()))
            });
            return match code {
                Some(c) if c != "null" => format!(": {m} ({c})"),
                _ => format!(": {m}"),
            };
        }
    }
    let text = String::from_utf8_lossy(b);
    let t = xml::fold_space(&text);
    if t.is_empty() {
        String::new()
    } else {
        format!(": {}", t.chars().take(200).collect::<String>())
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(s) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = jiff::fmt::rfc2822::parse(v.trim()).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    Some(Duration::from_millis(
        u64::try_from(t.as_millisecond() - now.as_millisecond()).unwrap_or(0),
    ))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hash of what a listing says about an item.
pub fn listing_hash(title: &str, meta: &Value, content: &Content) -> String {
    let content = match content {
        Content::Fetch { url, .. } | Content::EgovLaw { url, .. } => json!({ "url": url }),
        Content::Inline { text, .. } => json!({ "text": text }),
        Content::Path(p) => json!({ "path": p.to_string_lossy() }),
    };
    sha256_hex(
        json!({ "title": title, "meta": meta, "content": content })
            .to_string()
            .as_bytes(),
    )
}

/// A crawler for one kind of source.
pub async fn list_page(
    def: &SourceDef,
    fetcher: &Fetcher,
    cursor: &Value,
) -> Result<Page, CrawlError> {
    match def.kind {
        SourceKind::Arxiv => arxiv::atom_page(def, fetcher, cursor).await,
        SourceKind::ArxivOai => arxiv::oai_page(def, fetcher, cursor).await,
        SourceKind::Egov => egov::page(def, fetcher, cursor).await,
        SourceKind::Feed => feed::page(def, fetcher, cursor).await,
        SourceKind::Folder => Err(CrawlError::Local(
            "folders are scanned, not listed page by page".into(),
        )),
    }
}

/// A file name from the last segment of a URL path (`2101.00001v2` → `2101.00001v2.pdf`
/// when `ext` is given and the name has none).
pub fn filename_from_url(url: &str, ext: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name = bunko_core::documents::sanitize_filename(last);
    let name = if name.is_empty() {
        "item".to_owned()
    } else {
        name
    };
    // A name without an extension of letters (`1501.05039v1` has the "extension" `05039v1`)
    // gets the one given.
    let has_ext = name.rsplit_once('.').is_some_and(|(_, e)| {
        e.len() <= 5
            && e.chars().all(|c| c.is_ascii_alphanumeric())
            && !e.chars().all(|c| c.is_ascii_digit())
            && !e.chars().next().is_some_and(|c| c.is_ascii_digit())
    });
    if ext.is_empty() || has_ext {
        name
    } else {
        format!("{name}.{ext}")
    }
}

/// Today as `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "151.101.1.1", "2606:4700::1111"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn policy_checks_scheme_host_and_literal_addresses() {
        let p = NetPolicy {
            allow_hosts: vec!["export.arxiv.org".into(), ".go.jp".into()],
            allow_private: false,
        };
        let ok = |u: &str| p.check(&reqwest::Url::parse(u).unwrap());
        assert!(ok("https://export.arxiv.org/api/query").is_ok());
        assert!(ok("https://laws.e-gov.go.jp/api/2/laws").is_ok());
        assert!(ok("https://go.jp/").is_ok());
        assert!(matches!(
            ok("https://evil.example/"),
            Err(CrawlError::Refused(_))
        ));
        assert!(matches!(
            ok("https://notgo.jp/"),
            Err(CrawlError::Refused(_))
        ));
        assert!(matches!(
            ok("file:///etc/passwd"),
            Err(CrawlError::Refused(_))
        ));
        let open = NetPolicy::default();
        let ok = |u: &str| open.check(&reqwest::Url::parse(u).unwrap());
        assert!(matches!(
            ok("http://169.254.169.254/latest/meta-data"),
            Err(CrawlError::Refused(_))
        ));
        assert!(matches!(
            ok("http://[::1]:8080/"),
            Err(CrawlError::Refused(_))
        ));
        assert!(ok("http://93.184.216.34/").is_ok());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn filenames_from_urls() {
        assert_eq!(
            filename_from_url("http://arxiv.org/pdf/1501.05039v1", "pdf"),
            "1501.05039v1.pdf"
        );
        assert_eq!(
            filename_from_url("https://x/a/report.pdf?x=1", "pdf"),
            "report.pdf"
        );
        assert_eq!(filename_from_url("https://x/", "html"), "x.html");
    }
}
