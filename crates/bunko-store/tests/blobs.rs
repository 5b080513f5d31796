//! The `BlobStore` contract on the local directory and on S3 (moto's server with signature
//! checking, started by `scripts/services`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bunko_core::documents::BlobStore;
use bunko_core::ports::StoreError;
use bunko_store::s3::{S3Blobs, S3Config};
use sha2::{Digest, Sha256};
use std::path::Path;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

fn stage(b: &dyn BlobStore, bytes: &[u8]) -> (String, std::path::PathBuf) {
    let sha = hex::encode(Sha256::digest(bytes));
    let p = b.staging_dir().join(format!("up-{}", &sha[..8]));
    std::fs::write(&p, bytes).unwrap();
    (sha, p)
}

async fn contract(b: &dyn BlobStore) {
    let bytes = "原本 — the original bytes\n".repeat(1000).into_bytes();
    let (sha, staged) = stage(b, &bytes);
    assert!(!b.exists(&sha).await.unwrap());
    b.put_staged(&sha, &staged).await.unwrap();
    assert!(!staged.exists(), "the staged file is consumed");
    assert!(b.exists(&sha).await.unwrap());
    let p = b.local_path(&sha).await.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), bytes);
    // The same bytes again: kept once, staged copy dropped.
    let (_, staged) = stage(b, &bytes);
    b.put_staged(&sha, &staged).await.unwrap();
    assert!(!staged.exists());
    assert!(b.delete(&sha).await.unwrap());
    assert!(!b.delete(&sha).await.unwrap());
    assert!(!b.exists(&sha).await.unwrap());
    assert!(matches!(
        b.local_path(&sha).await,
        Err(StoreError::NotFound(_))
    ));
    // Not a hash: refused before any request or path is made.
    assert!(b.local_path("../../etc/passwd").await.is_err());
    assert!(b.exists("ABC").await.is_err());
}

#[tokio::test]
async fn local_directory_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let b = bunko_store::blobs::LocalBlobs::open(dir.path()).unwrap();
    contract(&b).await;
}

async fn s3(cfg: S3Config, local: &Path) -> S3Blobs {
    S3Blobs::open(cfg, local, client()).await.unwrap()
}

#[tokio::test]
async fn s3_meets_the_contract_and_lists_what_it_holds() {
    let Some(cfg) = bunko_store::testing::s3_config() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = s3(cfg.clone(), dir.path()).await;
    contract(&b).await;

    // Two blobs under this test's prefix, listed by hash; a second store on another
    // machine (another local dir) reads the same bytes.
    let mut shas = Vec::new();
    for text in ["one", "two"] {
        let (sha, staged) = stage(&b, text.as_bytes());
        b.put_staged(&sha, &staged).await.unwrap();
        shas.push(sha);
    }
    shas.sort();
    let listed = b.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|o| o.sha256.clone()).collect::<Vec<_>>(),
        shas
    );
    let now = bunko_core::ids::now_ms();
    assert!(
        listed
            .iter()
            .all(|o| o.modified_ms.is_some_and(|m| (now - m).abs() < 120_000)),
        "{listed:?}"
    );
    let other = tempfile::tempdir().unwrap();
    let b2 = s3(cfg, other.path()).await;
    let p = b2.local_path(&shas[0]).await.unwrap();
    assert!(p.starts_with(other.path()));
    let got = std::fs::read(&p).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&got)), shas[0]);
}

#[tokio::test]
async fn s3_refuses_bytes_that_do_not_match_their_name() {
    let Some(cfg) = bunko_store::testing::s3_config() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = s3(cfg, dir.path()).await;
    let (sha, _) = stage(&b, b"what was hashed");
    let staged = b.staging_dir().join("tampered");
    std::fs::write(&staged, b"what was sent instead").unwrap();
    let err = b.put_staged(&sha, &staged).await.unwrap_err();
    assert!(
        err.to_string().contains("do not have that SHA-256"),
        "{err}"
    );
    assert!(!b.exists(&sha).await.unwrap(), "nothing stored");
    assert!(!staged.exists(), "nothing left staged");
}

#[tokio::test]
async fn wrong_credentials_or_bucket_fail_at_open_with_the_reason() {
    let Some(cfg) = bunko_store::testing::s3_config() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bad_secret = S3Config {
        secret_access_key: "not-the-secret".into(),
        ..cfg.clone()
    };
    let err = S3Blobs::open(bad_secret, dir.path(), client())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("HTTP 403"), "{err}");
    let no_bucket = S3Config {
        bucket: "no-such-bucket".into(),
        ..cfg.clone()
    };
    let err = S3Blobs::open(no_bucket, dir.path(), client())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
    let nowhere = S3Config {
        endpoint: Some("http://127.0.0.1:1".into()),
        ..cfg
    };
    assert!(matches!(
        S3Blobs::open(nowhere, dir.path(), client()).await,
        Err(StoreError::Unavailable(_))
    ));
}
