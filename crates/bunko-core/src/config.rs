//! Configuration: compiled defaults < one TOML file < environment `BUNKO__SECTION__KEY` <
//! command-line flags. Every key is optional. Unknown keys are an error that names the key,
//! where it came from and the closest valid key. Secrets are [`Secret`]s (and may be read from
//! `*_file` paths), so printing the effective config never shows them.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment variables with this prefix override the file: `BUNKO__SERVER__LISTEN`.
pub const ENV_PREFIX: &str = "BUNKO__";
/// The file read when `--config` is not given and it exists in the working directory.
pub const DEFAULT_FILE: &str = "bunko.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `development` (default) or `production`, which refuses insecure settings.
    pub mode: Mode,
    /// Where bunko keeps everything: `bunko.db`, `index/`, `blobs/`, `models/`, `backups/`.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub log: LogConfig,
    /// `[otel]`: OpenTelemetry traces over OTLP/HTTP (off by default).
    pub otel: OtelConfig,
    pub database: DatabaseConfig,
    pub blobs: BlobsConfig,
    pub redis: RedisConfig,
    pub jobs: JobsConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    /// The in-process models: the embedder and the embedded chat model.
    pub local: LocalConfig,
    pub search: SearchConfig,
    pub ingest: IngestConfig,
    /// `[[providers]]`: upstream model servers for the gateway.
    pub providers: Vec<crate::llm::ProviderConfig>,
    /// `[[models]]`: the aliases callers use (`local`, the embedded model, always exists).
    pub models: Vec<crate::llm::ModelAlias>,
    pub gateway: GatewayConfig,
    /// `[rag]`: answering questions over the documents.
    pub rag: RagConfig,
    /// `[scheduler]`: whether this process fires schedules, and how often it looks.
    pub scheduler: SchedulerConfig,
    /// `[[schedules]]`: the cron table (more can be made over `/api/v1/schedules`).
    pub schedules: Vec<crate::schedule::ScheduleDef>,
    /// `[backup]`: where archives go and how many are kept.
    pub backup: BackupConfig,
    /// `[crawl]`: how sources are fetched (User-Agent, allowed hosts, limits).
    pub crawl: CrawlConfig,
    /// `[[sources]]`: crawlers and watched folders (more can be made over `/api/v1/sources`).
    pub sources: Vec<crate::sources::SourceDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrawlConfig {
    /// Sent with every request unless a source sets its own; name a contact, as arXiv's and
    /// e-Gov's terms ask.
    pub user_agent: String,
    /// Hosts sources may reach: exact names or `.suffix`; a source elsewhere is refused (at
    /// config load, over the API, and at every redirect). Empty = any public host.
    pub allow_hosts: Vec<String>,
    /// Let sources reach loopback, private and link-local addresses (an intranet feed, a
    /// stand-in server). Off: such addresses are refused even behind a public name.
    pub allow_private_networks: bool,
    /// Per request.
    pub timeout_secs: u64,
    /// Largest response taken (a listing page or a file).
    pub max_response_bytes: u64,
    /// The longest `Retry-After` waited out within a crawl; longer ends the crawl, which the
    /// job queue retries later from the saved cursor.
    pub max_retry_wait_secs: u64,
    /// An HTTP(S) proxy for all crawling (`http://proxy:3128`); none = direct.
    pub proxy: Option<String>,
    /// A watched folder with more files than this is refused (split it).
    pub folder_max_files: usize,
    /// Directories under which folder sources made over the API may watch (folder sources in
    /// this file may be anywhere: whoever writes it can read the disk already). Empty: folder
    /// sources only from the configuration.
    pub folder_roots: Vec<PathBuf>,
    /// Tokens per UTC day the automatic summaries of sources' new documents may use (a
    /// gateway quota on the `autosummary@bunko.local` account); 0 turns them off.
    pub summary_daily_tokens: u64,
    /// The model alias automatic summaries use; none = `rag.model`.
    pub summary_model: Option<String>,
}

impl Default for CrawlConfig {
    fn default() -> Self {
        Self {
            user_agent: format!(
                "bunko/{} (document crawler; set crawl.user_agent to name your contact)",
                env!("CARGO_PKG_VERSION")
            ),
            allow_hosts: vec![
                "export.arxiv.org".into(),
                "arxiv.org".into(),
                "oaipmh.arxiv.org".into(),
                "laws.e-gov.go.jp".into(),
            ],
            allow_private_networks: false,
            timeout_secs: 60,
            max_response_bytes: 200 * 1024 * 1024,
            max_retry_wait_secs: 120,
            proxy: None,
            folder_max_files: 100_000,
            folder_roots: Vec::new(),
            summary_daily_tokens: 200_000,
            summary_model: None,
        }
    }
}

impl CrawlConfig {
    /// Whether `host` is on the allow-list (an empty list allows any).
    pub fn host_allowed(&self, host: &str) -> bool {
        crate::sources::host_allowed(&self.allow_hosts, host)
    }

    /// A source's definition checked, including its host against the allow-list.
    /// A folder source made over the API must watch a directory under `folder_roots` (no
    /// `..`, symbolic links resolved): an administrator of bunko is not thereby one of the
    /// machine's file system.
    pub fn check_api_folder(&self, def: &crate::sources::SourceDef) -> Result<(), crate::Error> {
        let Some(path) = def.path.as_deref() else {
            return Ok(());
        };
        let p = std::path::Path::new(path);
        let refused = |why: String| Err(crate::Error::new(crate::Code::SourceRefused, why));
        if p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return refused(format!("path `{path}` must not contain `..`"));
        }
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let under = self.folder_roots.iter().any(|root| {
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            real.starts_with(&root)
        });
        if !under {
            return refused(if self.folder_roots.is_empty() {
                "folder sources can be defined only in the configuration (crawl.folder_roots is empty)".into()
            } else {
                format!("path `{path}` is not under crawl.folder_roots")
            });
        }
        Ok(())
    }

    /// `invalid_input` for a malformed definition, `source_refused` for a host not allowed.
    pub fn check_source(&self, def: &crate::sources::SourceDef) -> Result<(), crate::Error> {
        def.validate()
            .map_err(|e| crate::Error::new(crate::Code::InvalidInput, e))?;
        if let Some(url) = def.url() {
            let host = url
                .split_once("://")
                .map(|(_, r)| r.split(['/', '?', '#']).next().unwrap_or(""))
                .unwrap_or("");
            let host = match host.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => host,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !self.host_allowed(host) {
                return Err(crate::Error::new(
                    crate::Code::SourceRefused,
                    format!(
                        "host `{host}` is not in crawl.allow_hosts ({}); add it there to crawl it",
                        self.allow_hosts.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where archives are written; empty: `<data_dir>/backups`.
    pub dir: PathBuf,
    /// Keep the newest archive of each of this many last days that have one.
    pub keep_daily: u32,
    /// And of each of this many last ISO weeks.
    pub keep_weekly: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            keep_daily: 7,
            keep_weekly: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Take part in firing schedules (one process at a time fires, by lease).
    pub enabled: bool,
    /// How often due schedules are looked for (1-60 s).
    pub tick_secs: u64,
    /// The lease's length: another process takes over this long after the holder stops.
    pub lease_secs: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_secs: 5,
            lease_secs: 30,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Development,
            data_dir: PathBuf::from("./bunko-data"),
            server: ServerConfig::default(),
            log: LogConfig::default(),
            otel: OtelConfig::default(),
            scheduler: SchedulerConfig::default(),
            schedules: Vec::new(),
            backup: BackupConfig::default(),
            crawl: CrawlConfig::default(),
            sources: Vec::new(),
            database: DatabaseConfig::default(),
            blobs: BlobsConfig::default(),
            redis: RedisConfig::default(),
            jobs: JobsConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            local: LocalConfig::default(),
            search: SearchConfig::default(),
            ingest: IngestConfig::default(),
            providers: Vec::new(),
            models: Vec::new(),
            gateway: GatewayConfig::default(),
            rag: RagConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest file accepted (bytes); larger uploads are refused with 413.
    pub max_file_bytes: u64,
    /// OCR pages without a usable text layer, and images.
    pub ocr: bool,
    /// Tesseract languages, `+`-joined.
    pub ocr_languages: String,
    /// Resolution pages are rendered at for OCR.
    pub ocr_dpi: u32,
    /// Pages OCR'd at once; 0 = one per core.
    pub ocr_workers: usize,
    /// Chunk size in tokens of the embedding model.
    pub chunk_tokens: usize,
    /// Share of a chunk carried into the next (whole sentences).
    pub chunk_overlap: f32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 200 * 1024 * 1024,
            ocr: true,
            ocr_languages: "jpn+eng".into(),
            ocr_dpi: 300,
            ocr_workers: 0,
            chunk_tokens: 350,
            chunk_overlap: 0.15,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Where model files live, shared by every data dir on the host. Empty: the
    /// `BUNKO_MODELS_DIR` environment variable, else `$XDG_CACHE_HOME/bunko/models`, else
    /// `~/.cache/bunko/models`.
    pub models_dir: PathBuf,
    /// The embedding model for the vector half of search (`bunko models list`), or `none`.
    pub embedder: String,
    /// The embedded chat model behind the gateway's `local` provider, or `none`.
    pub generator: String,
    /// Threads the chat model computes with; 0: one per core.
    pub generator_threads: usize,
    /// Its context size in tokens (prompt + answer).
    pub generator_context: u32,
    /// Unloaded after this many seconds without a request (loaded again on the next one).
    pub generator_idle_secs: u64,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::new(),
            embedder: "multilingual-e5-small".to_owned(),
            generator: "gemma-3-270m".to_owned(),
            generator_threads: 0,
            generator_context: 4096,
            generator_idle_secs: 300,
        }
    }
}

impl LocalConfig {
    /// The models this configuration uses (what `bunko models pull` fetches by default).
    pub fn configured_models(&self) -> Vec<&str> {
        [self.embedder.as_str(), self.generator.as_str()]
            .into_iter()
            .filter(|m| *m != "none")
            .collect()
    }

    /// Threads for the chat model: the configured number, else one per core.
    pub fn generator_threads(&self) -> usize {
        if self.generator_threads > 0 {
            return self.generator_threads;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// The directory models are read from and pulled into.
    pub fn resolved_models_dir(&self) -> PathBuf {
        if !self.models_dir.as_os_str().is_empty() {
            return self.models_dir.clone();
        }
        if let Some(d) = std::env::var_os("BUNKO_MODELS_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("bunko/models");
        }
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".cache/bunko/models"),
            None => PathBuf::from("./bunko-models"),
        }
    }
}

/// `[rag]`: `POST /api/v1/ask`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RagConfig {
    /// The model alias answers come from when the request names none.
    pub model: String,
    /// Passages retrieved per question when the request gives no `k` (1–20).
    pub k: u32,
    /// Tokens kept free for the answer when passages are fitted to the context window.
    pub answer_tokens: u32,
    /// A citation is kept when its passage holds at least this share of the citing
    /// sentence's content terms (0–1).
    pub support_floor: f32,
    /// Passages sharing less than this share of the question's content terms do not count
    /// as an answer; with none left, the reply says the documents do not contain one.
    pub relevance_floor: f32,
    /// Ask the model even when no passage is relevant (it is told to say so itself).
    pub call_model_without_sources: bool,
    /// Summaries: the most tokens of a document's text summarised in one call (the "map"
    /// step); also capped by the model's context window.
    pub summary_part_tokens: u32,
    /// Summaries: tokens each part's summary may take.
    pub summary_part_answer_tokens: u32,
    /// Summaries: tokens the whole document's summary may take.
    pub summary_tokens: u32,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            model: crate::llm::LOCAL.to_owned(),
            k: 5,
            answer_tokens: 512,
            support_floor: 0.3,
            relevance_floor: 0.3,
            call_model_without_sources: false,
            summary_part_tokens: 1500,
            summary_part_answer_tokens: 160,
            summary_tokens: 400,
        }
    }
}

/// `[gateway]`: the LLM gateway's cache, ledger and quotas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Exact-match cache of non-streamed temperature-0 answers; 0 turns it off.
    pub cache_ttl_secs: u64,
    pub cache_entries: usize,
    /// The usage ledger is written in batches this often (off the request path).
    pub ledger_flush_ms: u64,
    /// Ledger rows (one per call) are kept this many days; the daily cleanup then rolls them
    /// up into one row per day, user, key, project and model (totals stay exact).
    pub ledger_detail_days: u32,
    /// `[[gateway.quotas]]`: limits per user, API key or project (`id = "*"`: each one).
    pub quotas: Vec<QuotaConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            cache_ttl_secs: 300,
            cache_entries: 1000,
            ledger_flush_ms: 1000,
            ledger_detail_days: 90,
            quotas: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaScope {
    User,
    Key,
    Project,
}

impl QuotaScope {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaScope::User => "user",
            QuotaScope::Key => "key",
            QuotaScope::Project => "project",
        }
    }
}

/// One quota. Rates (per minute) and budgets (tokens per UTC day, US dollars per UTC month);
/// absent = no limit. Reaching `soft_ratio` of a limit adds the `x-bunko-quota-warning`
/// header; reaching the limit refuses with 429 `quota_exceeded` until it resets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub scope: QuotaScope,
    /// A user's email, an API key's id, a project's slug — or `*` for each of them.
    #[serde(default = "star")]
    pub id: String,
    #[serde(default)]
    pub requests_per_min: Option<u64>,
    #[serde(default)]
    pub tokens_per_min: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub cost_per_month_usd: Option<f64>,
    #[serde(default = "default_soft_ratio")]
    pub soft_ratio: f64,
}

fn star() -> String {
    "*".to_owned()
}

fn default_soft_ratio() -> f64 {
    0.8
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Where the index lives: `embedded` (tantivy + the vector graph in the data dir; one
    /// process writes it) or `postgres` (tables in the `database.url` PostgreSQL, shared by
    /// every replica; needs pgvector for the vector half).
    pub backend: String,
    /// Reciprocal-rank fusion constant: score = Σ weight / (rrf_k + rank).
    pub rrf_k: f64,
    pub keyword_weight: f64,
    pub vector_weight: f64,
    /// Candidates each half contributes to fusion (at least `k`).
    pub candidates: usize,
    /// The vector index's search beam (recall against latency); 0 = automatic: 128 up to
    /// 100k chunks, growing to 1024 at 1M.
    pub ef_search: usize,
    /// With `backend = "postgres"`: rows a keyword query ranks at most (estimated from
    /// PostgreSQL's statistics; its rarest tokens find them); 0 ranks every matching row.
    pub pg_candidate_rows: usize,
    /// MeCab IPADIC sources (Debian's `mecab-ipadic`) to build the Japanese morphological
    /// dictionary from; empty turns Japanese words off (character bigrams only).
    pub japanese_dictionary: PathBuf,
    /// Where the built dictionary is kept; empty: `<data_dir>/dict`.
    pub dictionary_cache: PathBuf,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            rrf_k: 60.0,
            keyword_weight: 1.0,
            vector_weight: 1.0,
            candidates: 100,
            ef_search: 0,
            pg_candidate_rows: 2_000,
            japanese_dictionary: PathBuf::from("/usr/share/mecab/dic/ipadic"),
            dictionary_cache: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Set when a TLS-terminating reverse proxy sits in front: production then allows
    /// listening beyond loopback without TLS in bunko itself.
    pub behind_proxy: bool,
    /// A request that takes longer is answered 408.
    pub request_timeout_secs: u64,
    /// Largest request body accepted on JSON routes.
    pub body_limit_bytes: u64,
    /// On SIGTERM/SIGINT: how long in-flight requests and running jobs may take to finish.
    pub shutdown_grace_secs: u64,
    /// Origins allowed to call the API from a browser (CORS). Empty = CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// Serve HTTPS (TLS 1.2+) instead of plain HTTP.
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. Re-read on SIGHUP and when the file changes.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Also listen here with plain HTTP and redirect every request to HTTPS.
    pub redirect_http_from: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            behind_proxy: false,
            request_timeout_secs: 30,
            body_limit_bytes: 2 * 1024 * 1024,
            shutdown_grace_secs: 20,
            cors_allowed_origins: Vec::new(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines, or human-readable when stdout is a terminal.
    #[default]
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a full filter (`info,bunko_store=debug`).
    /// `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// OpenTelemetry traces: spans for requests, jobs, ingest stages, embedding batches, index
/// queries and model calls, exported over OTLP/HTTP with protobuf bodies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    pub enabled: bool,
    /// The collector's traces URL (OTLP/HTTP), e.g. an OpenTelemetry Collector or Jaeger.
    pub endpoint: String,
    /// Share of new traces recorded, 0–1. A caller's `traceparent` decides for its trace.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Giving up on one export after this long (spans of that batch are dropped, never the
    /// request).
    pub timeout_ms: u64,
    /// Extra HTTP headers for the collector (e.g. `authorization`); treated as secrets.
    pub headers: std::collections::BTreeMap<String, Secret>,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            sample_ratio: 1.0,
            service_name: "bunko".into(),
            timeout_ms: 10_000,
            headers: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (default `sqlite://<data_dir>/bunko.db`) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB[?sslmode=require]`.
    pub url: Option<DatabaseUrl>,
    /// Read `url` from this file instead (it holds a password; trailing newline trimmed).
    pub url_file: Option<PathBuf>,
    /// PostgreSQL: the most connections this process opens (each replica opens its own).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            url_file: None,
            max_connections: 10,
        }
    }
}

/// Rate limits, login lock-outs and the gateway's answer cache shared by every replica
/// through Redis; unset: each process keeps its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for TLS.
    pub url: Option<DatabaseUrl>,
    /// Read `url` from this file instead (it holds a password).
    pub url_file: Option<PathBuf>,
    /// Put before every key bunko writes (several deployments can share one server).
    pub prefix: String,
    /// PEM certificate(s) of the authority that signed the server's certificate, trusted for
    /// `rediss://` instead of the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            url_file: None,
            prefix: "bunko:".into(),
            ca_file: None,
        }
    }
}

/// Where original files are kept: `<data_dir>/blobs` by default, or an S3-compatible bucket
/// shared by every process (AWS S3, MinIO, Ceph RGW, Garage, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsConfig {
    /// `s3://BUCKET[/PREFIX]`; unset = the local directory.
    pub url: Option<String>,
    /// `http(s)://HOST:PORT` of an S3-compatible server (path-style requests); unset = AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Read `secret_access_key` from this file instead.
    pub secret_access_key_file: Option<PathBuf>,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
        }
    }
}

impl BlobsConfig {
    /// `(bucket, prefix)` of an `s3://` URL; None for the local directory.
    pub fn s3_location(&self) -> Option<(String, String)> {
        let rest = self.url.as_deref()?.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Some((bucket.to_owned(), prefix))
    }
}

/// A database URL whose password never prints.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.split_once("://").map(|(s, _)| s).unwrap_or("")
    }

    /// The URL with any `user:password@` password replaced.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let (authority, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
                let pw = if userinfo.contains(':') {
                    ":[redacted]"
                } else {
                    ""
                };
                format!("{scheme}://{user}{pw}@{host}{tail}")
            }
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run the worker loop inside `bunko serve` (a separate `bunko worker` always runs it).
    pub run_in_server: bool,
    /// A leased job not heartbeated within this time is leased again by another worker.
    pub lease_ttl_secs: u64,
    /// How often an idle worker looks for new jobs.
    pub poll_interval_ms: u64,
    /// Attempts before a job is dead (per job; this is the default).
    pub max_attempts: u32,
    /// Retry delay: base × 2^(attempt−1), capped, with ±20 % jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Per-queue settings; queues not listed use concurrency 1.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Succeeded and cancelled jobs are deleted this many days after they finished (the daily
    /// `maintenance.cleanup`); dead jobs stay until handled.
    pub retention_days: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        let mut queues = BTreeMap::new();
        queues.insert("default".to_owned(), QueueConfig { concurrency: 2 });
        Self {
            run_in_server: true,
            lease_ttl_secs: 60,
            poll_interval_ms: 500,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            queues,
            retention_days: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub concurrency: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { concurrency: 1 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Key for signing access tokens (≥ 32 bytes). Required in production; in development a
    /// random one is generated once into `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<Secret>,
    /// Read `jwt_secret` from this file instead (trailing newline trimmed).
    pub jwt_secret_file: Option<PathBuf>,
    /// The administrator created on first start when there is none.
    pub bootstrap_admin_email: String,
    /// argon2id memory cost (KiB) and passes for new password hashes.
    pub password_memory_kib: u32,
    pub password_iterations: u32,
    /// Audit records older than this are deleted by the retention job.
    pub audit_retention_days: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_secret_file: None,
            bootstrap_admin_email: "admin@bunko.local".into(),
            password_memory_kib: 46 * 1024,
            password_iterations: 3,
            audit_retention_days: 365,
        }
    }
}

/// Rate limits per route class. Authenticated callers are limited per user or key,
/// anonymous ones per client address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub enabled: bool,
    /// `auth`, `search`, `ask`, `ingest`, `gateway`, `default`.
    pub classes: BTreeMap<String, RateConfig>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

pub const RATE_CLASSES: &[&str] = &["auth", "search", "ask", "ingest", "gateway", "default"];

impl Default for LimitsConfig {
    fn default() -> Self {
        let mut classes = BTreeMap::new();
        for (name, per_second, burst) in [
            ("auth", 0.5, 10),
            ("search", 20.0, 40),
            ("ask", 2.0, 10),
            ("ingest", 5.0, 20),
            ("gateway", 20.0, 40),
            ("default", 50.0, 100),
        ] {
            classes.insert(name.to_owned(), RateConfig { per_second, burst });
        }
        Self {
            enabled: true,
            classes,
        }
    }
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub log_level: Option<String>,
}

/// Why a configuration could not be loaded. Every variant says where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown key `{key}` in {origin}{}", hint(.suggestion))]
    UnknownKey {
        key: String,
        origin: String,
        suggestion: Option<String>,
    },
    #[error("invalid value for `{key}` in {origin}: {message}")]
    InvalidValue {
        key: String,
        origin: String,
        message: String,
    },
    #[error("cannot read secret file {path} (from `{key}`): {source}")]
    SecretFile {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} problem(s) in the configuration:\n{1}")]
    Problems(usize, String),
}

fn hint(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A problem found by [`Config::check`].
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: `{}`: {}", self.key, self.message)
    }
}

/// Where the loaded configuration came from (for `bunko config check`).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub file: Option<PathBuf>,
    pub env_keys: Vec<String>,
    /// Found while loading (e.g. a secret in a file others can read).
    pub warnings: Vec<Problem>,
}

/// Readable by group or others?
fn loosely_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(false)
}

impl Config {
    /// Loads file < env < CLI. `file` is the explicit `--config`; when `None`, `./bunko.toml`
    /// is read if it exists. `env` is the process environment (passed in for testability).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        cli: &CliOverrides,
    ) -> Result<(Config, Provenance), ConfigError> {
        let mut prov = Provenance::default();
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
        };
        let mut table = toml::Table::new();
        if let Some(path) = &path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Syntax {
                    path: path.clone(),
                    message: e.to_string().trim().to_owned(),
                })?;
            // Check the file alone first so an unknown key is blamed on the file.
            deserialize(table.clone(), &format!("config file {}", path.display()))?;
            prov.file = Some(path.clone());
        }

        let mut env_vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env_vars.sort();
        for (name, value) in &env_vars {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::UnknownKey {
                    key: path.join("."),
                    origin: format!("environment variable {name}"),
                    suggestion: None,
                });
            }
            let mut single = toml::Table::new();
            set_path(&mut single, &path, env_value(value));
            deserialize(single.clone(), &format!("environment variable {name}"))?;
            set_path(&mut table, &path, env_value(value));
            prov.env_keys.push(name.clone());
        }

        let mut config = deserialize(table, "the merged configuration")?;
        if let Some(d) = &cli.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = &cli.listen {
            config.server.listen = l.clone();
        }
        if let Some(l) = &cli.log_level {
            config.log.level = l.clone();
        }
        config.resolve_secret_files()?;
        let secret_in_file =
            |t: &toml::Table| t.get("auth").and_then(|a| a.get("jwt_secret")).is_some();
        if let Some(path) = &prov.file
            && let Ok(text) = std::fs::read_to_string(path)
            && text
                .parse::<toml::Table>()
                .map(|t| secret_in_file(&t))
                .unwrap_or(false)
            && loosely_readable(path)
        {
            prov.warnings.push(Problem {
                severity: Severity::Warning,
                key: "auth.jwt_secret".into(),
                message: format!(
                    "{} holds a secret and is readable by group or others: chmod 600 it, or use auth.jwt_secret_file",
                    path.display()
                ),
            });
        }
        if let Some(path) = &config.auth.jwt_secret_file
            && loosely_readable(path)
        {
            prov.warnings.push(Problem {
                severity: Severity::Warning,
                key: "auth.jwt_secret_file".into(),
                message: format!(
                    "{} is readable by group or others: chmod 600 it",
                    path.display()
                ),
            });
        }
        Ok((config, prov))
    }

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.auth.jwt_secret_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: "auth.jwt_secret_file".into(),
                path: path.clone(),
                source,
            })?;
            self.auth.jwt_secret = Some(Secret::new(text.trim_end_matches(['\r', '\n'])));
        }
        if let Some(path) = &self.blobs.secret_access_key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: "blobs.secret_access_key_file".into(),
                path: path.clone(),
                source,
            })?;
            self.blobs.secret_access_key = Some(Secret::new(text.trim()));
        }
        if let Some(path) = &self.redis.url_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: "redis.url_file".into(),
                path: path.clone(),
                source,
            })?;
            self.redis.url = Some(DatabaseUrl::new(text.trim()));
        }
        if let Some(path) = &self.database.url_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: "database.url_file".into(),
                path: path.clone(),
                source,
            })?;
            self.database.url = Some(DatabaseUrl::new(text.trim()));
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database.url.clone().unwrap_or_else(|| {
            DatabaseUrl::new(format!(
                "sqlite://{}",
                self.data_dir.join("bunko.db").display()
            ))
        })
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.server.listen.parse::<SocketAddr>().map_err(|e| {
            format!(
                "`{}` is not an address like 127.0.0.1:8000 ({e})",
                self.server.listen
            )
        })
    }

    /// The gateway's providers and aliases refer to each other by name: check the names.
    fn validate_gateway(&self, err: &mut impl FnMut(&str, String)) {
        use crate::llm::{LOCAL, ProviderKind};
        let mut providers = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = format!("providers[{i}]");
            if p.name.is_empty() || !providers.insert(p.name.as_str()) {
                err(&key, format!("name `{}` is empty or used twice", p.name));
            }
            if p.name == LOCAL && p.kind != ProviderKind::Local {
                err(&key, "the name `local` is the embedded model's".into());
            }
            if p.api_key.is_some() && p.api_key_file.is_some() {
                err(&key, "give api_key or api_key_file, not both".into());
            }
            if p.kind != ProviderKind::Local
                && !p.base_url.is_empty()
                && !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://"))
            {
                err(
                    &key,
                    format!("base_url `{}` is not an http(s) URL", p.base_url),
                );
            }
            if p.max_concurrent == 0 {
                err(&key, "max_concurrent must be at least 1".into());
            }
        }
        let mut aliases = std::collections::HashSet::new();
        aliases.insert(LOCAL);
        for (i, m) in self.models.iter().enumerate() {
            let key = format!("models[{i}]");
            if m.alias.is_empty() || !aliases.insert(m.alias.as_str()) {
                err(
                    &key,
                    format!("alias `{}` is empty, `local` or used twice", m.alias),
                );
            }
            if m.provider != LOCAL && !providers.contains(m.provider.as_str()) {
                err(
                    &key,
                    format!("provider `{}` is not in [[providers]]", m.provider),
                );
            }
            if m.context_window == 0 {
                err(&key, "context_window must be at least 1".into());
            }
            if !(m.input_price_per_mtok >= 0.0 && m.output_price_per_mtok >= 0.0) {
                err(&key, "prices must be zero or positive".into());
            }
        }
        for (i, m) in self.models.iter().enumerate() {
            for f in &m.fallbacks {
                if !aliases.contains(f.as_str()) || f == &m.alias {
                    err(
                        &format!("models[{i}].fallbacks"),
                        format!("`{f}` is not another model alias"),
                    );
                }
            }
        }
        for (i, q) in self.gateway.quotas.iter().enumerate() {
            if !(q.soft_ratio > 0.0 && q.soft_ratio <= 1.0) {
                err(
                    &format!("gateway.quotas[{i}].soft_ratio"),
                    "must be in (0, 1]".into(),
                );
            }
        }
    }

    /// Problems with the values (not the syntax): production refuses insecure settings.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut err = |key: &str, message: String| {
            out.push(Problem {
                severity: Severity::Error,
                key: key.into(),
                message,
            })
        };
        let listen = self.listen_addr();
        if let Err(e) = &listen {
            err("server.listen", e.clone());
        }
        if self.data_dir.as_os_str().is_empty() {
            err("data_dir", "must not be empty".into());
        }
        match self.database_url().scheme() {
            "sqlite" => {}
            "postgres" | "postgresql" => {
                if !(2..=1000).contains(&self.database.max_connections) {
                    err(
                        "database.max_connections",
                        "must be between 2 and 1000".into(),
                    );
                }
            }
            other => err(
                "database.url",
                format!(
                    "unsupported scheme `{other}`; use sqlite://PATH or postgres://USER@HOST/DB"
                ),
            ),
        }
        if let Some(url) = &self.redis.url
            && !matches!(url.scheme(), "redis" | "rediss")
        {
            err(
                "redis.url",
                format!("`{}` is not redis:// or rediss://", url.redacted()),
            );
        }
        match self.search.backend.as_str() {
            "embedded" => {}
            "postgres" => {
                if !matches!(self.database_url().scheme(), "postgres" | "postgresql") {
                    err(
                        "search.backend",
                        "`postgres` keeps the index in the PostgreSQL database: set database.url = \"postgres://…\" too".into(),
                    );
                }
            }
            other => err(
                "search.backend",
                format!("`{other}` is not `embedded` or `postgres`"),
            ),
        }
        if let Some(url) = &self.blobs.url {
            match self.blobs.s3_location() {
                None => err(
                    "blobs.url",
                    format!(
                        "`{url}` is not s3://BUCKET[/PREFIX] (leave it unset for the data dir)"
                    ),
                ),
                Some((bucket, _)) => {
                    let ok = (3..=63).contains(&bucket.len())
                        && bucket.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                        });
                    if !ok {
                        err(
                            "blobs.url",
                            format!("`{bucket}` is not a valid bucket name (3–63 of a-z 0-9 . -)"),
                        );
                    }
                    if self.blobs.access_key_id.is_none() || self.blobs.secret_access_key.is_none()
                    {
                        err(
                            "blobs.access_key_id",
                            "an s3:// blob store needs access_key_id and secret_access_key (or secret_access_key_file)".into(),
                        );
                    }
                    if let Some(ep) = &self.blobs.endpoint
                        && !(ep.starts_with("http://") || ep.starts_with("https://"))
                    {
                        err("blobs.endpoint", format!("`{ep}` is not an http(s):// URL"));
                    }
                }
            }
        }
        if !(1..=60).contains(&self.scheduler.tick_secs) {
            err("scheduler.tick_secs", "must be between 1 and 60".into());
        }
        if self.scheduler.lease_secs < self.scheduler.tick_secs * 2 {
            err(
                "scheduler.lease_secs",
                "must be at least twice scheduler.tick_secs (the holder renews it every tick)"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let key = format!("schedules[{i}]");
            if let Err(e) = s.validate() {
                err(&key, format!("`{}`: {e}", s.name));
            }
            if !names.insert(s.name.as_str()) {
                err(&key, format!("name `{}` is used twice", s.name));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            if let Err(e) = self.crawl.check_source(s) {
                err(&key, format!("`{}`: {}", s.name, e.detail));
            }
            if !names.insert(s.name.as_str()) {
                err(&key, format!("name `{}` is used twice", s.name));
            }
        }
        if self.crawl.timeout_secs == 0 || self.crawl.max_response_bytes == 0 {
            err(
                "crawl",
                "timeout_secs and max_response_bytes must be above 0".into(),
            );
        }
        let ua = &self.crawl.user_agent;
        if ua.trim().is_empty() || ua.len() > 256 || !ua.chars().all(|c| (' '..='~').contains(&c)) {
            err(
                "crawl.user_agent",
                "must be 1-256 printable ASCII characters".into(),
            );
        }
        if let Some(p) = &self.crawl.proxy
            && !(p.starts_with("http://") || p.starts_with("https://"))
        {
            err("crawl.proxy", format!("`{p}` is not an http(s) URL"));
        }
        if !(0.0..=1.0).contains(&self.otel.sample_ratio) {
            err("otel.sample_ratio", "must be between 0 and 1".into());
        }
        if self.otel.enabled
            && !(self.otel.endpoint.starts_with("http://")
                || self.otel.endpoint.starts_with("https://"))
        {
            err(
                "otel.endpoint",
                format!(
                    "`{}` is not an http(s) URL (OTLP/HTTP, e.g. http://collector:4318/v1/traces)",
                    self.otel.endpoint
                ),
            );
        }
        if self.otel.service_name.trim().is_empty() {
            err("otel.service_name", "must not be empty".into());
        }
        if !(self.search.rrf_k > 0.0 && self.search.rrf_k.is_finite()) {
            err("search.rrf_k", "must be a positive number".into());
        }
        for (key, w) in [
            ("search.keyword_weight", self.search.keyword_weight),
            ("search.vector_weight", self.search.vector_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                err(key, "must be zero or a positive number".into());
            }
        }
        if !(1..=1000).contains(&self.search.candidates) {
            err("search.candidates", "must be between 1 and 1000".into());
        }
        if self.ingest.max_file_bytes == 0 {
            err("ingest.max_file_bytes", "must be positive".into());
        }
        if !(32..=2048).contains(&self.ingest.chunk_tokens) {
            err("ingest.chunk_tokens", "must be between 32 and 2048".into());
        }
        if !(0.0..=0.5).contains(&self.ingest.chunk_overlap) {
            err("ingest.chunk_overlap", "must be between 0 and 0.5".into());
        }
        if !(72..=1200).contains(&self.ingest.ocr_dpi) {
            err("ingest.ocr_dpi", "must be between 72 and 1200".into());
        }
        if self
            .ingest
            .ocr_languages
            .split('+')
            .any(|l| l.is_empty() || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            err(
                "ingest.ocr_languages",
                "must be tesseract language names joined by `+` (e.g. jpn+eng)".into(),
            );
        }
        for (key, name, kind) in [
            (
                "local.embedder",
                &self.local.embedder,
                crate::models::Kind::Embedding,
            ),
            (
                "local.generator",
                &self.local.generator,
                crate::models::Kind::Generation,
            ),
        ] {
            if name != "none" && crate::models::find(name).is_none_or(|m| m.kind != kind) {
                err(
                    key,
                    format!(
                        "unknown {} model `{name}`; known: {}, or `none`",
                        kind.as_str(),
                        crate::models::names_of(kind).join(", ")
                    ),
                );
            }
        }
        if !(256..=131_072).contains(&self.local.generator_context) {
            err(
                "local.generator_context",
                "must be between 256 and 131072 tokens".into(),
            );
        }
        if self.local.generator_threads > 256 {
            err("local.generator_threads", "must be at most 256".into());
        }
        self.validate_gateway(&mut err);
        if self.search.ef_search > 10_000 {
            err(
                "search.ef_search",
                "must be at most 10000 (0 = automatic)".into(),
            );
        }
        if !(1..=20).contains(&self.rag.k) {
            err("rag.k", "must be between 1 and 20".into());
        }
        for (key, v, lo) in [
            ("rag.answer_tokens", self.rag.answer_tokens, 32),
            ("rag.summary_part_tokens", self.rag.summary_part_tokens, 200),
            (
                "rag.summary_part_answer_tokens",
                self.rag.summary_part_answer_tokens,
                32,
            ),
            ("rag.summary_tokens", self.rag.summary_tokens, 32),
        ] {
            if !(lo..=8192).contains(&v) {
                err(key, format!("must be between {lo} and 8192"));
            }
        }
        for (key, v) in [
            ("rag.support_floor", self.rag.support_floor),
            ("rag.relevance_floor", self.rag.relevance_floor),
        ] {
            if !(0.0..=1.0).contains(&v) {
                err(key, "must be between 0 and 1".into());
            }
        }
        if self.rag.model != crate::llm::LOCAL
            && !self.models.iter().any(|m| m.alias == self.rag.model)
        {
            err(
                "rag.model",
                format!(
                    "`{}` is not a [[models]] alias (nor `local`)",
                    self.rag.model
                ),
            );
        }
        if self.server.body_limit_bytes < 1024 {
            err("server.body_limit_bytes", "must be at least 1024".into());
        }
        if self.server.request_timeout_secs == 0 {
            err("server.request_timeout_secs", "must be at least 1".into());
        }
        if self.jobs.lease_ttl_secs < 2 {
            err("jobs.lease_ttl_secs", "must be at least 2".into());
        }
        if self.jobs.max_attempts == 0 {
            err("jobs.max_attempts", "must be at least 1".into());
        }
        if self.jobs.poll_interval_ms == 0 {
            err("jobs.poll_interval_ms", "must be at least 1".into());
        }
        for (name, q) in &self.jobs.queues {
            if q.concurrency == 0 || q.concurrency > 256 {
                err(
                    &format!("jobs.queues.{name}.concurrency"),
                    "must be between 1 and 256".into(),
                );
            }
        }
        if !self.auth.bootstrap_admin_email.contains('@') {
            err(
                "auth.bootstrap_admin_email",
                "must be an email address".into(),
            );
        }
        if self.auth.password_memory_kib < 8 * 1024 || self.auth.password_iterations == 0 {
            err(
                "auth.password_memory_kib",
                "argon2id needs at least 8192 KiB and 1 iteration".into(),
            );
        }
        for (name, r) in &self.limits.classes {
            if !RATE_CLASSES.contains(&name.as_str()) {
                err(
                    &format!("limits.classes.{name}"),
                    format!("unknown class; classes are {}", RATE_CLASSES.join(", ")),
                );
            }
            if !(r.per_second > 0.0 && r.per_second.is_finite()) || r.burst == 0 {
                err(
                    &format!("limits.classes.{name}"),
                    "per_second must be > 0 and burst ≥ 1".into(),
                );
            }
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [
                ("server.tls.cert_file", &tls.cert_file),
                ("server.tls.key_file", &tls.key_file),
            ] {
                if !path.is_file() {
                    err(key, format!("{} is not a readable file", path.display()));
                }
            }
            if let Some(r) = &tls.redirect_http_from
                && r.parse::<SocketAddr>().is_err()
            {
                err(
                    "server.tls.redirect_http_from",
                    format!("`{r}` is not an address like 0.0.0.0:80"),
                );
            }
        }
        for o in &self.server.cors_allowed_origins {
            if !(o.starts_with("https://") || o.starts_with("http://"))
                || o.ends_with('/')
                || o == "*"
            {
                err(
                    "server.cors_allowed_origins",
                    format!("`{o}` must be an origin like https://app.example.org"),
                );
            }
        }
        let secret_len = self.auth.jwt_secret.as_ref().map(|s| s.expose().len());
        if self.mode == Mode::Production {
            if let Ok(addr) = listen
                && !addr.ip().is_loopback()
                && !self.server.behind_proxy
                && self.server.tls.is_none()
            {
                err(
                    "server.listen",
                    format!(
                        "production mode refuses to listen on {addr} without TLS; put a TLS \
                         proxy in front and set server.behind_proxy = true, or listen on loopback"
                    ),
                );
            }
            match secret_len {
                None => err(
                    "auth.jwt_secret",
                    "production mode needs a signing secret: set auth.jwt_secret_file (or \
                     BUNKO__AUTH__JWT_SECRET_FILE) to a file with at least 32 random bytes"
                        .into(),
                ),
                Some(n) if n < 32 => err(
                    "auth.jwt_secret",
                    format!("is {n} bytes; production needs at least 32"),
                ),
                Some(_) => {}
            }
        } else if let Some(n) = secret_len
            && n < 32
        {
            out.push(Problem {
                severity: Severity::Warning,
                key: "auth.jwt_secret".into(),
                message: format!(
                    "is {n} bytes; at least 32 are recommended (production requires it)"
                ),
            });
        }
        out
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Concurrency for a queue (1 when not configured).
    pub fn queue_concurrency(&self, queue: &str) -> usize {
        self.jobs
            .queues
            .get(queue)
            .map(|q| q.concurrency)
            .unwrap_or(1)
    }
}

/// Parses an environment value as a TOML value when it is one (numbers, booleans, arrays,
/// quoted strings), otherwise takes it as a plain string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else { return };
        cur = t;
    }
    cur.insert(last.clone(), value);
}

fn deserialize(table: toml::Table, origin: &str) -> Result<Config, ConfigError> {
    let de = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        match parse_unknown_field(&message) {
            Some((field, expected)) => {
                let parent = path
                    .strip_suffix(&field)
                    .map(|p| p.trim_end_matches('.').to_owned())
                    .unwrap_or_else(|| {
                        if path == "." {
                            String::new()
                        } else {
                            path.clone()
                        }
                    });
                let full = |k: &str| {
                    if parent.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{parent}.{k}")
                    }
                };
                ConfigError::UnknownKey {
                    key: full(&field),
                    origin: origin.to_owned(),
                    suggestion: closest(&field, &expected).map(|s| full(&s)),
                }
            }
            None => ConfigError::InvalidValue {
                key: if path == "." { "(root)".into() } else { path },
                origin: origin.to_owned(),
                message,
            },
        }
    })
}

/// serde's message: "unknown field `x`, expected one of `a`, `b`" / "expected `a`" /
/// "there are no fields".
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

fn closest(field: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(field, c), c))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn unknown_key_in_file_names_key_file_and_closest() {
        let f = write("[server]\nlistn = \"0.0.0.0:1\"\n");
        let e = Config::load(Some(f.path()), env(&[]), &CliOverrides::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`server.listn`"), "{msg}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(msg.contains("did you mean `server.listen`"), "{msg}");
    }

    #[test]
    fn unknown_top_level_section() {
        let f = write("[sever]\nlisten = \"x\"\n");
        let msg = Config::load(Some(f.path()), env(&[]), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`sever`") && msg.contains("did you mean `server`"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_in_env_names_the_variable() {
        let msg = Config::load(
            None,
            env(&[("BUNKO__LOG__LEVLE", "debug")]),
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("BUNKO__LOG__LEVLE") && msg.contains("`log.level`"),
            "{msg}"
        );
    }

    /// The gateway's configuration contract, exactly as documented.
    #[test]
    fn providers_and_model_aliases_as_documented() {
        let f = write(
            r#"
[[providers]]
name = "lab-vllm"
type = "openai"                 # local | ollama | openai | anthropic
base_url = "http://127.0.0.1:9999/v1"
api_key_file = "/run/secrets/lab"

[[models]]
alias = "fast"
provider = "lab-vllm"
model = "gpt-4o-mini"
context_window = 128000
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
fallbacks = ["local"]
"#,
        );
        let (c, _) = Config::load(Some(f.path()), env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(c.providers[0].kind, crate::llm::ProviderKind::Openai);
        assert_eq!(c.providers[0].base_url(), "http://127.0.0.1:9999/v1");
        assert_eq!(c.models[0].fallbacks, vec!["local"]);
        assert_eq!(c.models[0].context_window, 128_000);
        assert!(
            c.check()
                .iter()
                .all(|p| !p.key.starts_with("models") && !p.key.starts_with("providers")),
            "{:?}",
            c.check()
        );
        // Names that point nowhere are reported with the key.
        let f = write(
            "[[models]]\nalias = \"x\"\nprovider = \"nope\"\nmodel = \"m\"\nfallbacks = [\"y\"]\n",
        );
        let (c, _) = Config::load(Some(f.path()), env(&[]), &CliOverrides::default()).unwrap();
        let keys: Vec<String> = c.check().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"models[0]".to_owned()), "{keys:?}");
        assert!(keys.contains(&"models[0].fallbacks".to_owned()), "{keys:?}");
        // An unknown provider type is a parse error naming the key.
        let f = write("[[providers]]\nname = \"a\"\ntype = \"grok\"\n");
        let msg = Config::load(Some(f.path()), env(&[]), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("providers") && msg.contains("grok"), "{msg}");
    }

    #[test]
    fn layering_file_then_env_then_cli() {
        let f = write(
            "[server]\nlisten = \"127.0.0.1:1111\"\nrequest_timeout_secs = 7\n[log]\nlevel = \"warn\"\n",
        );
        let e = env(&[
            ("BUNKO__SERVER__LISTEN", "127.0.0.1:2222"),
            ("BUNKO__JOBS__MAX_ATTEMPTS", "9"),
        ]);
        let (c, prov) = Config::load(Some(f.path()), e.clone(), &CliOverrides::default()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2222");
        assert_eq!(c.server.request_timeout_secs, 7);
        assert_eq!(c.jobs.max_attempts, 9);
        assert_eq!(c.log.level, "warn");
        assert_eq!(prov.env_keys.len(), 2);
        let cli = CliOverrides {
            listen: Some("127.0.0.1:3333".into()),
            ..Default::default()
        };
        let (c, _) = Config::load(Some(f.path()), e, &cli).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:3333");
    }

    #[test]
    fn wrong_type_names_key() {
        let f = write("[server]\nrequest_timeout_secs = \"soon\"\n");
        let msg = Config::load(Some(f.path()), env(&[]), &CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("server.request_timeout_secs"), "{msg}");
    }

    #[test]
    fn secret_file_is_read_and_never_rendered() {
        let secret = write("s3cr3t-value-that-is-long-enough-0123456789\n");
        let e = env(&[(
            "BUNKO__AUTH__JWT_SECRET_FILE",
            secret.path().to_str().unwrap(),
        )]);
        let (c, _) = Config::load(None, e, &CliOverrides::default()).unwrap();
        assert_eq!(
            c.auth.jwt_secret.as_ref().unwrap().expose(),
            "s3cr3t-value-that-is-long-enough-0123456789"
        );
        let out = c.to_redacted_toml();
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn database_url_file_is_read_and_its_password_never_rendered() {
        let url = write("postgres://bunko:pa55word@db:5432/bunko\n");
        let e = env(&[("BUNKO__DATABASE__URL_FILE", url.path().to_str().unwrap())]);
        let (c, _) = Config::load(None, e, &CliOverrides::default()).unwrap();
        assert_eq!(
            c.database_url().expose(),
            "postgres://bunko:pa55word@db:5432/bunko"
        );
        assert!(c.check().iter().all(|p| !p.key.starts_with("database")));
        assert!(!c.to_redacted_toml().contains("pa55word"));
        let e = env(&[("BUNKO__DATABASE__URL_FILE", "/nonexistent/db-url")]);
        let err = Config::load(None, e, &CliOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("database.url_file"), "{err}");
    }

    #[test]
    fn s3_blob_settings_are_checked_and_the_secret_never_rendered() {
        let mut c = Config::default();
        c.blobs.url = Some("s3://Bad_Bucket".into());
        let keys: Vec<_> = c.check().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"blobs.url".to_owned()), "{keys:?}");
        assert!(keys.contains(&"blobs.access_key_id".to_owned()), "{keys:?}");
        c.blobs.url = Some("/var/blobs".into());
        assert!(c.check().iter().any(|p| p.key == "blobs.url"));
        c.blobs.url = Some("s3://bunko-originals/prod/blobs".into());
        c.blobs.endpoint = Some("minio:9000".into());
        c.blobs.access_key_id = Some("AKIA".into());
        c.blobs.secret_access_key = Some(Secret::new("very-secret-key"));
        let problems: Vec<_> = c.check().into_iter().map(|p| p.key).collect();
        assert_eq!(problems, vec!["blobs.endpoint".to_owned()]);
        c.blobs.endpoint = Some("http://minio:9000".into());
        assert!(c.check().iter().all(|p| !p.key.starts_with("blobs")));
        assert_eq!(
            c.blobs.s3_location(),
            Some(("bunko-originals".into(), "prod/blobs/".into()))
        );
        assert!(!c.to_redacted_toml().contains("very-secret-key"));
    }

    #[test]
    fn redis_url_is_checked_and_its_password_never_rendered() {
        let mut c = Config::default();
        c.redis.url = Some(DatabaseUrl::new("http://cache:6379"));
        assert!(c.check().iter().any(|p| p.key == "redis.url"));
        c.redis.url = Some(DatabaseUrl::new("rediss://:hunter2pass@cache:6380/1"));
        assert!(c.check().iter().all(|p| p.key != "redis.url"));
        assert!(!c.to_redacted_toml().contains("hunter2pass"));
        assert!(!format!("{c:?}").contains("hunter2pass"));
    }

    #[test]
    fn database_url_password_is_redacted() {
        let u = DatabaseUrl::new("postgres://bunko:pa55word@db.internal:5432/bunko");
        assert_eq!(
            u.redacted(),
            "postgres://bunko:[redacted]@db.internal:5432/bunko"
        );
        assert!(!format!("{u:?}").contains("pa55word"));
    }

    #[test]
    fn production_refuses_insecure_settings() {
        let mut c = Config {
            mode: Mode::Production,
            ..Default::default()
        };
        c.server.listen = "0.0.0.0:8000".into();
        let problems = c.check();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(
            keys.contains(&"server.listen") && keys.contains(&"auth.jwt_secret"),
            "{keys:?}"
        );
        c.server.behind_proxy = true;
        c.auth.jwt_secret = Some(Secret::new("x".repeat(40)));
        assert!(c.check().is_empty(), "{:?}", c.check());
        let dev = Config::default();
        assert!(dev.check().is_empty());
    }
}

#[cfg(test)]
mod permission_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_in_a_world_readable_file_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bunko.toml");
        std::fs::write(
            &p,
            "[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, prov) = Config::load(Some(&p), Vec::new(), &CliOverrides::default()).unwrap();
        assert_eq!(prov.warnings.len(), 1, "{:?}", prov.warnings);
        assert!(prov.warnings[0].message.contains("chmod 600"));
        assert!(
            !prov.warnings[0].message.contains("0123456789abcdef"),
            "never the secret itself"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, prov) = Config::load(Some(&p), Vec::new(), &CliOverrides::default()).unwrap();
        assert!(prov.warnings.is_empty());
    }
}
