//! Credentials: argon2id password hashes, HS256 access tokens (JWT) with strict validation,
//! and random opaque secrets (refresh tokens, API keys) stored only as SHA-256 hashes.
//!
//! The JWT code accepts exactly one header shape — `{"alg":"HS256","typ":"JWT"}` — so `none`,
//! other algorithms and key-confusion tricks fail before any signature is computed.

use crate::ids::{random_bytes, sha256_hex};
use crate::secret::Secret;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Access tokens live 15 minutes: a disabled user or revoked session is refused at once
/// anyway (the user is looked up on every request), so this bounds only a stolen token.
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
pub const ISSUER: &str = "bunko";

/// argon2id cost: m=46 MiB, t=3 — one login takes ~80 ms on this 2-core machine (BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct PasswordCost {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self {
            m_kib: 46 * 1024,
            t: 3,
            p: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm or type is not accepted")]
    BadHeader,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's claims are invalid")]
    BadClaims,
}

fn argon(cost: PasswordCost) -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(cost.m_kib, cost.t, cost.p, None)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

pub fn hash_password(password: &str, cost: PasswordCost) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    argon(cost)?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Verifies against a stored PHC string (its own parameters are used).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A hash of a fixed dummy password, verified when the account does not exist so that a
/// failed login takes the same time either way.
pub fn dummy_verify(password: &str, cost: PasswordCost) {
    use std::sync::OnceLock;
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(h) = DUMMY.get_or_init(|| hash_password("bunko-dummy-password", cost).ok()) {
        let _ = verify_password(password, h);
    }
}

/// Password rules (ASVS 2.1): 12–256 characters; anything else is the user's choice.
pub fn check_password_policy(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < 12 {
        return Err("passwords need at least 12 characters".into());
    }
    if n > 256 {
        return Err("passwords may have at most 256 characters".into());
    }
    Ok(())
}

/// A random secret with a readable prefix: `bko_rt_…` (refresh token), `bko_key_…` (API key).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", B64.encode(random_bytes::<32>()))
}

/// What is stored for a secret: its SHA-256 (the secret has 256 random bits, so a fast hash
/// is enough; no password-style stretching is needed).
pub fn secret_hash(secret: &str) -> String {
    sha256_hex(secret.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user id.
    pub sub: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The refresh-token family this session belongs to (logout revokes it).
    pub sid: Uuid,
    pub jti: Uuid,
}

/// Signs and verifies access tokens with HMAC-SHA256.
#[derive(Clone)]
pub struct TokenSigner {
    key: Secret,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl TokenSigner {
    /// The key must have at least 32 bytes (256 bits).
    pub fn new(key: Secret) -> Result<Self, String> {
        if key.expose().len() < 32 {
            return Err("the signing secret must have at least 32 bytes".into());
        }
        Ok(Self { key })
    }

    fn mac(&self) -> Hmac<sha2::Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        #[allow(clippy::expect_used)]
        Hmac::<sha2::Sha256>::new_from_slice(self.key.expose().as_bytes()).expect("hmac key")
    }

    pub fn issue(&self, user: Uuid, session: Uuid, now_secs: i64) -> (String, Claims) {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: user,
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs + ACCESS_TTL_SECS,
            sid: session,
            jti: crate::ids::new_id(),
        };
        let body = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(body));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        (format!("{signing_input}.{sig}"), claims)
    }

    /// Checks shape, header, signature (constant time), issuer and times (30 s leeway).
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header = B64.decode(h).map_err(|_| AuthError::Malformed)?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        if header != serde_json::json!({"alg": "HS256", "typ": "JWT"}) {
            return Err(AuthError::BadHeader);
        }
        let sig = B64.decode(s).map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(c.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = B64
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::BadClaims)?;
        const LEEWAY: i64 = 30;
        if claims.iss != ISSUER || claims.exp - claims.iat > ACCESS_TTL_SECS + LEEWAY {
            return Err(AuthError::BadClaims);
        }
        if now_secs > claims.exp + LEEWAY {
            return Err(AuthError::Expired);
        }
        if now_secs + LEEWAY < claims.nbf {
            return Err(AuthError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        TokenSigner::new(Secret::new("k".repeat(32))).unwrap()
    }

    fn forge(header: &str, claims: &serde_json::Value, key: &str) -> String {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims.to_string()));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn round_trip_and_time_checks() {
        let s = signer();
        let (t, c) = s.issue(Uuid::now_v7(), Uuid::now_v7(), 1_000_000);
        assert_eq!(s.verify(&t, 1_000_100).unwrap(), c);
        assert!(matches!(
            s.verify(&t, 1_000_000 + ACCESS_TTL_SECS + 31),
            Err(AuthError::Expired)
        ));
        assert!(matches!(
            s.verify(&t, 1_000_000 - 31),
            Err(AuthError::NotYetValid)
        ));
    }

    #[test]
    fn rejects_forgeries() {
        let s = signer();
        let (t, c) = s.issue(Uuid::now_v7(), Uuid::now_v7(), 1_000_000);
        let claims = serde_json::to_value(&c).unwrap();
        // alg none, with and without a signature
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(claims.to_string())
        );
        assert!(matches!(
            s.verify(&none, 1_000_001),
            Err(AuthError::BadHeader)
        ));
        // another algorithm name with our key
        let hs512 = forge(r#"{"alg":"HS512","typ":"JWT"}"#, &claims, &"k".repeat(32));
        assert!(matches!(
            s.verify(&hs512, 1_000_001),
            Err(AuthError::BadHeader)
        ));
        // the wrong key
        let wrong = forge(HEADER, &claims, &"x".repeat(32));
        assert!(matches!(
            s.verify(&wrong, 1_000_001),
            Err(AuthError::BadSignature)
        ));
        // tampered claims with the original signature
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut evil = claims.clone();
        evil["sub"] = serde_json::json!(Uuid::now_v7());
        let evil_body = B64.encode(evil.to_string());
        parts[1] = &evil_body;
        assert!(matches!(
            s.verify(&parts.join("."), 1_000_001),
            Err(AuthError::BadSignature)
        ));
        // a long-lived token signed with our key is still refused
        let mut long = claims.clone();
        long["exp"] = serde_json::json!(c.iat + 86_400 * 365);
        assert!(matches!(
            s.verify(&forge(HEADER, &long, &"k".repeat(32)), 1_000_001),
            Err(AuthError::BadClaims)
        ));
        for junk in ["", "a.b", "a.b.c.d", "....", "eyJ.eyJ.sig"] {
            assert!(s.verify(junk, 1_000_001).is_err(), "{junk}");
        }
        assert!(TokenSigner::new(Secret::new("short")).is_err());
    }

    #[test]
    fn passwords() {
        let cost = PasswordCost {
            m_kib: 1024,
            t: 1,
            p: 1,
        };
        let h = hash_password("correct horse battery", cost).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("x", "not a phc string"));
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("long enough pass").is_ok());
        assert_ne!(new_secret("bko_rt_"), new_secret("bko_rt_"));
    }
}
