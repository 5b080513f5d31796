//! The S3-compatible `BlobStore` (AWS S3, MinIO, Ceph RGW, Garage, …): one object per blob
//! under `<prefix><sha256>`, requests signed with AWS Signature Version 4 over the HTTP client
//! the rest of bunko uses. The object's SHA-256 is its name, so it is also the payload hash S3
//! checks: a body that does not match is refused by the server, never stored.
//!
//! Uploads are staged on local disk (as with the local store) and streamed up; a blob the
//! extractor needs is downloaded once to a local cache and its hash checked before use.

use async_trait::async_trait;
use bunko_core::documents::{BlobStore, is_sha256_hex};
use bunko_core::ports::{StoreError, StoreResult};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    pub region: String,
    /// `http(s)://host:port` of an S3-compatible server (path-style requests); `None` for AWS
    /// (`https://<bucket>.s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub struct S3Blobs {
    cfg: S3Config,
    /// Scheme + authority requests go to, and the path before the key.
    base: String,
    host: String,
    path_prefix: String,
    http: reqwest::Client,
    /// Staged uploads and downloaded copies (local disk).
    local: PathBuf,
}

/// SHA-256 of no bytes: the payload hash of a request without a body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("S3 blob store: {e}"))
}

/// RFC 3986 unreserved characters stay; everything else is %-encoded (`/` kept in paths).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The parts of one SigV4-signed request that vary.
struct Signed {
    authorization: String,
    amz_date: String,
}

impl S3Blobs {
    /// Checks the configuration and that the bucket answers (a HEAD with these credentials),
    /// so a wrong endpoint, bucket or key fails at start with S3's reason.
    pub async fn open(cfg: S3Config, local: &Path, http: reqwest::Client) -> StoreResult<Self> {
        if cfg.bucket.is_empty() || cfg.access_key_id.is_empty() || cfg.secret_access_key.is_empty()
        {
            return Err(StoreError::InvalidState(
                "S3 needs a bucket, an access key id and a secret access key".into(),
            ));
        }
        let (base, host, path_prefix) = match &cfg.endpoint {
            Some(ep) => {
                let url = reqwest::Url::parse(ep)
                    .map_err(|e| StoreError::InvalidState(format!("S3 endpoint `{ep}`: {e}")))?;
                let host = match (url.host_str(), url.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_owned(),
                    _ => {
                        return Err(StoreError::InvalidState(format!(
                            "S3 endpoint `{ep}` has no host"
                        )));
                    }
                };
                (
                    format!("{}://{host}", url.scheme()),
                    host,
                    format!("/{}/", uri_encode(&cfg.bucket, false)),
                )
            }
            None => {
                let host = format!("{}.s3.{}.amazonaws.com", cfg.bucket, cfg.region);
                (format!("https://{host}"), host, "/".to_owned())
            }
        };
        for d in ["staging", "cache"] {
            tokio::fs::create_dir_all(local.join(d))
                .await
                .map_err(unavailable)?;
        }
        let s = Self {
            cfg,
            base,
            host,
            path_prefix,
            http,
            local: local.to_path_buf(),
        };
        let path = s.path_prefix.clone();
        let r = s
            .send(Method::HEAD, &path, "", "UNSIGNED-PAYLOAD", None)
            .await?;
        if !r.status().is_success() {
            return Err(StoreError::Unavailable(format!(
                "S3 bucket `{}` at {}: HTTP {} (check the bucket name, endpoint, region and keys)",
                s.cfg.bucket,
                s.base,
                r.status()
            )));
        }
        Ok(s)
    }

    fn key_path(&self, sha: &str) -> StoreResult<String> {
        if !is_sha256_hex(sha) {
            return Err(StoreError::InvalidState(format!(
                "`{sha}` is not a SHA-256"
            )));
        }
        Ok(format!(
            "{}{}{sha}",
            self.path_prefix,
            uri_encode(&self.cfg.prefix, true)
        ))
    }

    /// SigV4 for `method path?query` with `payload_hash` (hex, or `UNSIGNED-PAYLOAD`).
    fn sign(&self, method: &Method, path: &str, query: &str, payload_hash: &str) -> Signed {
        let now = jiff::Timestamp::now();
        let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
        let date = &amz_date[..8];
        let canonical = format!(
            "{method}\n{path}\n{query}\nhost:{}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload_hash}",
            self.host
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.cfg.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let k = hmac(
            format!("AWS4{}", self.cfg.secret_access_key).as_bytes(),
            date,
        );
        let k = hmac(&k, &self.cfg.region);
        let k = hmac(&k, "s3");
        let k = hmac(&k, "aws4_request");
        let signature = hex::encode(hmac(&k, &to_sign));
        Signed {
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
                self.cfg.access_key_id
            ),
            amz_date,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        payload_hash: &str,
        body: Option<(reqwest::Body, u64)>,
    ) -> StoreResult<reqwest::Response> {
        let signed = self.sign(&method, path, query, payload_hash);
        let url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let mut req = self
            .http
            .request(method, url)
            .header("x-amz-date", signed.amz_date)
            .header("x-amz-content-sha256", payload_hash)
            .header(reqwest::header::AUTHORIZATION, signed.authorization);
        if let Some((body, len)) = body {
            // S3 wants the length up front (no chunked uploads).
            req = req.header(reqwest::header::CONTENT_LENGTH, len).body(body);
        }
        req.send().await.map_err(unavailable)
    }

    /// A request without a body (its payload hash is the empty string's).
    async fn send_empty(
        &self,
        method: Method,
        path: &str,
        query: &str,
    ) -> StoreResult<reqwest::Response> {
        self.send(method, path, query, EMPTY_SHA256, None).await
    }

    /// Every blob (ListObjectsV2, page by page), by hash, for clean-up of unreferenced blobs.
    pub async fn list(&self) -> StoreResult<Vec<S3Object>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), self.cfg.prefix.clone()),
            ];
            if let Some(t) = &token {
                params.push(("continuation-token".to_owned(), t.clone()));
            }
            params.sort();
            let query = params
                .iter()
                .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
                .collect::<Vec<_>>()
                .join("&");
            let path = self.path_prefix.clone();
            let r = self.send_empty(Method::GET, &path, &query).await?;
            if !r.status().is_success() {
                return Err(unavailable(format!("listing: HTTP {}", r.status())));
            }
            let body = r.text().await.map_err(unavailable)?;
            for item in tags(&body, "Contents") {
                let key = tags(&item, "Key").into_iter().next().unwrap_or_default();
                if let Some(sha) = key.strip_prefix(&self.cfg.prefix)
                    && is_sha256_hex(sha)
                {
                    let modified_ms = tags(&item, "LastModified")
                        .first()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map(|t| t.as_millisecond());
                    out.push(S3Object {
                        sha256: sha.to_owned(),
                        modified_ms,
                    });
                }
            }
            let truncated = tags(&body, "IsTruncated").first().map(String::as_str) == Some("true");
            token = tags(&body, "NextContinuationToken").into_iter().next();
            if !truncated || token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        Ok(out)
    }

    /// Staged uploads and downloaded copies older than `max_age` are removed (a crash
    /// mid-upload, copies the extractor no longer needs).
    pub fn sweep_local(&self, max_age: std::time::Duration) -> usize {
        crate::blobs::sweep_dir(&self.local.join("staging"), max_age)
            + crate::blobs::sweep_dir(&self.local.join("cache"), max_age)
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Object {
    pub sha256: String,
    /// When S3 last wrote it (ms since the epoch), when the listing says.
    pub modified_ms: Option<i64>,
}

/// An HTTP client for object storage: connect timeout 10 s, whole-request timeout 10 min
/// (a large original). The process must have installed its rustls crypto provider.
pub fn http_client() -> StoreResult<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .map_err(|e| StoreError::Backend(format!("S3 client: {e}")))
}

/// The text of every `<name>…</name>` element (S3 listings: keys are hex, tokens opaque).
fn tags(xml: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

async fn hash_file(path: &Path) -> StoreResult<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> StoreResult<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).map_err(unavailable)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(unavailable)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| StoreError::Backend(e.to_string()))?
}

/// S3's error code from an error body (`<Code>…</Code>`), for messages.
fn error_code(body: &str) -> String {
    tags(body, "Code").into_iter().next().unwrap_or_default()
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put_staged(&self, sha256: &str, staged: &Path) -> StoreResult<()> {
        let path = self.key_path(sha256)?;
        let out = async {
            if self.exists(sha256).await? {
                return Ok(());
            }
            // The name must be the bytes' hash: checked here (S3 checks it again on receipt).
            let got = hash_file(staged).await?;
            if got != sha256 {
                return Err(StoreError::InvalidState(format!(
                    "blob {sha256}: its bytes do not have that SHA-256 ({got})"
                )));
            }
            let file = tokio::fs::File::open(staged).await.map_err(unavailable)?;
            let len = file.metadata().await.map_err(unavailable)?.len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            let r = self
                .send(Method::PUT, &path, "", sha256, Some((body, len)))
                .await?;
            if r.status().is_success() {
                return Ok(());
            }
            let status = r.status();
            let code = error_code(&r.text().await.unwrap_or_default());
            if code == "XAmzContentSHA256Mismatch" || code == "BadDigest" {
                return Err(StoreError::InvalidState(format!(
                    "S3 refused blob {sha256}: its bytes do not have that SHA-256"
                )));
            }
            Err(unavailable(format!(
                "upload of {sha256}: HTTP {status} {code}"
            )))
        }
        .await;
        // Staged bytes are either in the bucket now or not wanted; never left behind.
        let _ = tokio::fs::remove_file(staged).await;
        out
    }

    async fn local_path(&self, sha256: &str) -> StoreResult<PathBuf> {
        let path = self.key_path(sha256)?;
        let cached = self.local.join("cache").join(sha256);
        if tokio::fs::try_exists(&cached).await.map_err(unavailable)? {
            return Ok(cached);
        }
        let mut r = self.send_empty(Method::GET, &path, "").await?;
        match r.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Err(StoreError::NotFound(format!("blob {sha256}"))),
            s => return Err(unavailable(format!("download of {sha256}: HTTP {s}"))),
        }
        // Written under a temporary name, checked, then renamed: a reader never sees a partial
        // or altered copy.
        let tmp = self
            .local
            .join("cache")
            .join(format!(".{sha256}.{}", bunko_core::ids::new_id().simple()));
        let out = async {
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::File::create(&tmp).await.map_err(unavailable)?;
            let mut h = Sha256::new();
            while let Some(chunk) = r.chunk().await.map_err(unavailable)? {
                h.update(&chunk);
                f.write_all(&chunk).await.map_err(unavailable)?;
            }
            f.sync_all().await.map_err(unavailable)?;
            let got = hex::encode(h.finalize());
            if got != sha256 {
                return Err(StoreError::Backend(format!(
                    "blob {sha256} came back from S3 with SHA-256 {got}: refused"
                )));
            }
            tokio::fs::rename(&tmp, &cached).await.map_err(unavailable)
        }
        .await;
        if out.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        out.map(|()| cached)
    }

    async fn exists(&self, sha256: &str) -> StoreResult<bool> {
        let path = self.key_path(sha256)?;
        let r = self.send_empty(Method::HEAD, &path, "").await?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(unavailable(format!("HEAD {sha256}: HTTP {s}"))),
        }
    }

    async fn delete(&self, sha256: &str) -> StoreResult<bool> {
        let existed = self.exists(sha256).await?;
        let path = self.key_path(sha256)?;
        let r = self.send_empty(Method::DELETE, &path, "").await?;
        if !(r.status().is_success() || r.status() == StatusCode::NOT_FOUND) {
            return Err(unavailable(format!(
                "delete of {sha256}: HTTP {}",
                r.status()
            )));
        }
        let _ = tokio::fs::remove_file(self.local.join("cache").join(sha256)).await;
        Ok(existed)
    }

    fn staging_dir(&self) -> PathBuf {
        self.local.join("staging")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_payload_hash() {
        assert_eq!(hex::encode(Sha256::digest(b"")), EMPTY_SHA256);
    }

    #[test]
    fn encodes_like_the_sigv4_rules() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("日", false), "%E6%97%A5");
    }

    /// The signing key derivation and signature of AWS's own documented example
    /// ("Examples of how to derive a signing key for Signature Version 4").
    #[test]
    fn signing_key_matches_the_aws_example() {
        let k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215");
        let k = hmac(&k, "us-east-1");
        let k = hmac(&k, "iam");
        let k = hmac(&k, "aws4_request");
        assert_eq!(
            hex::encode(k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn reads_listing_elements() {
        let xml = "<ListBucketResult><Contents><Key>p/aa</Key></Contents><Contents><Key>p/b&amp;c</Key></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>t+1=</NextContinuationToken></ListBucketResult>";
        assert_eq!(tags(xml, "Key"), vec!["p/aa", "p/b&c"]);
        assert_eq!(tags(xml, "NextContinuationToken"), vec!["t+1="]);
        assert_eq!(
            error_code("<Error><Code>NoSuchBucket</Code></Error>"),
            "NoSuchBucket"
        );
    }
}
