//! Bearer-token records in the system group (docs/security.md "Tokens"): pure builders and
//! reads over the key-value state, as the catalogue's are. A record holds SHA-256 of the
//! token's secret, never the secret. Revoking keeps the record (marked) so `token list` shows
//! what was revoked and when.

use dogfs_core::names::BucketName;
use dogfs_security::token::{self, Identity, Limits, NewToken, Presented, Scope};
use serde::{Deserialize, Serialize};

use crate::catalog::ops::{Check, Prepared};
use crate::catalog::{CatalogError, records};
use crate::raft::{Condition, Key, KvReader, KvSpace, Write};

/// System group: token id (16 hex, as bytes) → [`TokenRecord`].
pub const TOKENS: &str = "token";
/// Most tokens a cluster keeps (revoked ones included): the list is read whole.
pub const MAX_TOKENS: usize = 10_000;
/// Most buckets one token may be limited to.
pub const MAX_BUCKET_LIMITS: usize = 100;
/// Longest token name.
pub const MAX_NAME: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("token name {0:?}: it must be 1 to {MAX_NAME} visible characters")]
    Name(String),
    #[error("token scope is unspecified: give read, read-write or admin")]
    NoScope,
    #[error("token bucket limit: {0}")]
    Bucket(#[from] dogfs_core::names::NameError),
    #[error("a token may be limited to at most {MAX_BUCKET_LIMITS} buckets, not {0}")]
    TooManyBuckets(usize),
    #[error(transparent)]
    Limits(#[from] token::TokenError),
    #[error("an admin token cannot have bucket or prefix limits (the admin API is cluster-wide)")]
    LimitedAdmin,
    #[error("this cluster already has {MAX_TOKENS} tokens; revoke and delete some first")]
    Full,
    #[error("token id {0:?} is not 16 hex characters")]
    BadId(String),
    #[error("token {0} does not exist")]
    NoSuchToken(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A token's stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub limits: Limits,
    pub secret_hash: [u8; 32],
    pub created_unix: u64,
    /// 0: never.
    pub expires_unix: u64,
    /// 0: not revoked.
    pub revoked_unix: u64,
}

impl TokenRecord {
    pub fn identity(&self) -> Identity {
        Identity {
            token_id: self.id.clone(),
            name: self.name.clone(),
            scope: self.scope,
            limits: self.limits.clone(),
        }
    }
}

/// What a new token is asked to be.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub name: String,
    pub scope: Option<Scope>,
    pub buckets: Vec<String>,
    pub prefix: String,
    pub ttl_secs: u64,
}

fn key(id: &str) -> Key {
    Key::new(TOKENS, id.as_bytes().to_vec())
}

fn check_id(id: &str) -> Result<(), TokenStoreError> {
    if id.len() == token::ID_HEX && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(TokenStoreError::BadId(id.chars().take(40).collect()))
    }
}

/// Checks a spec and builds the record of a new token (`new` from [`token::generate`]).
pub fn build(
    spec: &TokenSpec,
    new: &NewToken,
    now_unix: u64,
) -> Result<TokenRecord, TokenStoreError> {
    let name = spec.name.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(TokenStoreError::Name(spec.name.chars().take(40).collect()));
    }
    let scope = spec.scope.ok_or(TokenStoreError::NoScope)?;
    if spec.buckets.len() > MAX_BUCKET_LIMITS {
        return Err(TokenStoreError::TooManyBuckets(spec.buckets.len()));
    }
    let mut buckets = Vec::with_capacity(spec.buckets.len());
    for b in &spec.buckets {
        buckets.push(BucketName::parse(b)?.to_string());
    }
    buckets.sort();
    buckets.dedup();
    Limits::validate_prefix(&spec.prefix)?;
    let limits = Limits {
        buckets,
        prefix: spec.prefix.clone(),
    };
    if scope == Scope::Admin && !limits.is_unlimited() {
        return Err(TokenStoreError::LimitedAdmin);
    }
    Ok(TokenRecord {
        id: new.id.clone(),
        name: name.to_string(),
        scope,
        limits,
        secret_hash: new.secret_hash,
        created_unix: now_unix,
        expires_unix: if spec.ttl_secs == 0 {
            0
        } else {
            now_unix.saturating_add(spec.ttl_secs)
        },
        revoked_unix: 0,
    })
}

/// Stores a new record (its id must be free).
pub fn create<S: KvSpace>(
    system: &KvReader<S>,
    record: &TokenRecord,
) -> Result<Prepared, TokenStoreError> {
    if system
        .list(TOKENS, b"", None, MAX_TOKENS)
        .map_err(CatalogError::from)?
        .len()
        >= MAX_TOKENS
    {
        return Err(TokenStoreError::Full);
    }
    let mut p = Prepared::new("creating a token");
    let k = key(&record.id);
    p.require(Condition::Absent(k.clone()), Check::Unchanged);
    p.write(Write::Put(k, records::encode("token record", record)?));
    Ok(p)
}

pub fn get<S: KvSpace>(
    system: &KvReader<S>,
    id: &str,
) -> Result<Option<(TokenRecord, u64)>, TokenStoreError> {
    check_id(id)?;
    Ok(system
        .get(&key(id))
        .map_err(CatalogError::from)?
        .map(|v| Ok::<_, CatalogError>((records::decode("token record", &v.value)?, v.version)))
        .transpose()?)
}

/// Every record, in id order.
pub fn list<S: KvSpace>(system: &KvReader<S>) -> Result<Vec<TokenRecord>, TokenStoreError> {
    Ok(system
        .list(TOKENS, b"", None, MAX_TOKENS)
        .map_err(CatalogError::from)?
        .into_iter()
        .map(|(_, v)| records::decode("token record", &v.value))
        .collect::<Result<_, _>>()?)
}

/// Marks the token revoked; `None` when it already is.
pub fn revoke<S: KvSpace>(
    system: &KvReader<S>,
    id: &str,
    now_unix: u64,
) -> Result<(Option<Prepared>, TokenRecord), TokenStoreError> {
    let (mut record, version) =
        get(system, id)?.ok_or_else(|| TokenStoreError::NoSuchToken(id.to_string()))?;
    if record.revoked_unix != 0 {
        return Ok((None, record));
    }
    record.revoked_unix = now_unix.max(1);
    let mut p = Prepared::new("revoking a token");
    let k = key(id);
    p.require(
        Condition::VersionEquals(k.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Put(k, records::encode("token record", &record)?));
    Ok((Some(p), record))
}

/// Why a presented token does not authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked(Box<TokenRecord>),
    Expired(Box<TokenRecord>),
}

/// The identity of a presented token, checked against its record.
pub fn verify(
    record: Option<TokenRecord>,
    presented: &Presented,
    now_unix: u64,
) -> Result<Identity, Refusal> {
    let Some(r) = record else {
        return Err(Refusal::Unknown);
    };
    // A wrong secret for a known id says no more than an unknown id.
    if !token::ct_eq(&r.secret_hash, &presented.secret_hash) {
        return Err(Refusal::Unknown);
    }
    if r.revoked_unix != 0 {
        return Err(Refusal::Revoked(Box::new(r)));
    }
    if r.expires_unix != 0 && now_unix >= r.expires_unix {
        return Err(Refusal::Expired(Box::new(r)));
    }
    Ok(r.identity())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn spec(scope: Scope) -> TokenSpec {
        TokenSpec {
            name: "ci".into(),
            scope: Some(scope),
            buckets: vec![],
            prefix: String::new(),
            ttl_secs: 0,
        }
    }

    #[test]
    fn records_are_checked_when_built() {
        let t = token::generate();
        let r = build(&spec(Scope::Read), &t, 100).unwrap();
        assert_eq!((r.expires_unix, r.revoked_unix), (0, 0));
        assert_eq!(r.secret_hash, t.secret_hash);
        let mut s = spec(Scope::ReadWrite);
        s.ttl_secs = 60;
        s.buckets = vec!["b".repeat(3), "aaa".into(), "aaa".into()];
        let r = build(&s, &t, 100).unwrap();
        assert_eq!(r.expires_unix, 160);
        assert_eq!(r.limits.buckets, vec!["aaa".to_string(), "bbb".to_string()]);
        let mut bad = spec(Scope::Read);
        bad.name = " ".into();
        assert!(matches!(build(&bad, &t, 0), Err(TokenStoreError::Name(_))));
        let mut bad = spec(Scope::Read);
        bad.scope = None;
        assert!(matches!(build(&bad, &t, 0), Err(TokenStoreError::NoScope)));
        let mut bad = spec(Scope::Read);
        bad.buckets = vec!["Bad_Bucket".into()];
        assert!(matches!(
            build(&bad, &t, 0),
            Err(TokenStoreError::Bucket(_))
        ));
        let mut bad = spec(Scope::Admin);
        bad.prefix = "x/".into();
        assert!(matches!(
            build(&bad, &t, 0),
            Err(TokenStoreError::LimitedAdmin)
        ));
    }

    #[test]
    fn verification_needs_the_secret_and_a_live_record() {
        let t = token::generate();
        let r = build(&spec(Scope::Read), &t, 100).unwrap();
        let p = token::parse(&t.token).unwrap();
        assert_eq!(verify(Some(r.clone()), &p, 100).unwrap().token_id, t.id);
        assert_eq!(verify(None, &p, 100), Err(Refusal::Unknown));
        let other = token::parse(&token::generate().token).unwrap();
        assert_eq!(verify(Some(r.clone()), &other, 100), Err(Refusal::Unknown));
        let mut revoked = r.clone();
        revoked.revoked_unix = 150;
        assert!(matches!(
            verify(Some(revoked), &p, 200),
            Err(Refusal::Revoked(_))
        ));
        let mut expiring = r;
        expiring.expires_unix = 150;
        assert!(verify(Some(expiring.clone()), &p, 149).is_ok());
        assert!(matches!(
            verify(Some(expiring), &p, 150),
            Err(Refusal::Expired(_))
        ));
    }
}
