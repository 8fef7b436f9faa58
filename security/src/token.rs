//! Bearer tokens (DESIGN §9, docs/security.md "Tokens").
//!
//! A token is `dogfs_<id>_<secret>`: `id` (16 hex) names its record, `secret` (64 hex, 256
//! random bits) proves it. The metadata service keeps only the record and SHA-256 of the
//! secret, so its state, snapshots and logs hold nothing a caller could present. A token has
//! a [`Scope`] and optional [`Limits`] (buckets, a key prefix); an [`Identity`] is what a
//! verified token grants, checked per call.
//!
//! The bootstrap admin token (from a file or a Kubernetes Secret) is any string of 16 to 1024
//! visible ASCII characters; it is compared by hash, in constant time, and never stored.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of every token the metadata service issues.
pub const TOKEN_PREFIX: &str = "dogfs_";
/// Hex characters of a token id.
pub const ID_HEX: usize = 16;
/// Hex characters of a token secret.
pub const SECRET_HEX: usize = 64;
/// Bounds of a bootstrap token's length.
pub const BOOTSTRAP_MIN: usize = 16;
pub const BOOTSTRAP_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "malformed token: expected {TOKEN_PREFIX}<16 hex id>_<64 hex secret> (as `dogfs admin \
         token create` prints it)"
    )]
    Malformed,
    #[error(
        "bootstrap token: {0} (it must be {BOOTSTRAP_MIN} to {BOOTSTRAP_MAX} visible ASCII \
         characters, no spaces)"
    )]
    Bootstrap(&'static str),
    #[error("unknown token scope {0:?} (expected read, read-write or admin)")]
    Scope(String),
    #[error("token prefix limit {0:?}: {1}")]
    Prefix(String, &'static str),
}

/// What a token may do. Ordered: each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read objects and list buckets and keys.
    Read,
    /// Also write and delete objects, create and delete buckets.
    ReadWrite,
    /// Everything, including the admin API and tokens.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::ReadWrite => "read-write",
            Scope::Admin => "admin",
        }
    }

    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Read => true,
            Action::Write => self >= Scope::ReadWrite,
            Action::Admin => self == Scope::Admin,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "read-write" | "readwrite" | "rw" => Ok(Scope::ReadWrite),
            "admin" => Ok(Scope::Admin),
            other => Err(TokenError::Scope(other.to_string())),
        }
    }
}

/// What a call does, for the scope check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }
}

/// Where a token may act: some buckets only (none listed: every bucket), and within them
/// only keys starting with a prefix (empty: every key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub buckets: Vec<String>,
    pub prefix: String,
}

impl Limits {
    /// Checks a prefix limit's shape (a key prefix: at most 1024 bytes, no NUL).
    pub fn validate_prefix(prefix: &str) -> Result<(), TokenError> {
        if prefix.len() > 1024 {
            return Err(TokenError::Prefix(
                prefix.chars().take(32).collect(),
                "longer than 1024 bytes",
            ));
        }
        if prefix.contains('\0') {
            return Err(TokenError::Prefix(prefix.to_string(), "contains NUL"));
        }
        Ok(())
    }

    pub fn is_unlimited(&self) -> bool {
        self.buckets.is_empty() && self.prefix.is_empty()
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's id (`bootstrap` for the bootstrap token).
    pub token_id: String,
    /// The token's name, for logs.
    pub name: String,
    pub scope: Scope,
    pub limits: Limits,
}

/// Why an identity may not do something (PERMISSION_DENIED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("token {id} ({name}) has scope {scope}; this call needs {needed}")]
    Scope {
        id: String,
        name: String,
        scope: Scope,
        needed: &'static str,
    },
    #[error("token {id} ({name}) is limited to buckets {allowed:?}, not {bucket:?}")]
    Bucket {
        id: String,
        name: String,
        bucket: String,
        allowed: Vec<String>,
    },
    #[error("token {id} ({name}) is limited to keys starting with {prefix:?}, not {key:?}")]
    Key {
        id: String,
        name: String,
        key: String,
        prefix: String,
    },
}

impl Identity {
    /// The bootstrap admin token's identity.
    pub fn bootstrap() -> Identity {
        Identity {
            token_id: "bootstrap".to_string(),
            name: "bootstrap admin token".to_string(),
            scope: Scope::Admin,
            limits: Limits::default(),
        }
    }

    pub fn check_action(&self, action: Action) -> Result<(), Denied> {
        if self.scope.allows(action) {
            return Ok(());
        }
        Err(Denied::Scope {
            id: self.token_id.clone(),
            name: self.name.clone(),
            scope: self.scope,
            needed: action.as_str(),
        })
    }

    /// Whether the token may name this bucket at all.
    pub fn may_see_bucket(&self, bucket: &str) -> bool {
        self.limits.buckets.is_empty() || self.limits.buckets.iter().any(|b| b == bucket)
    }

    pub fn check_bucket(&self, bucket: &str) -> Result<(), Denied> {
        if self.may_see_bucket(bucket) {
            return Ok(());
        }
        Err(Denied::Bucket {
            id: self.token_id.clone(),
            name: self.name.clone(),
            bucket: bucket.to_string(),
            allowed: self.limits.buckets.clone(),
        })
    }

    /// An object call: the bucket and the key.
    pub fn check_key(&self, bucket: &str, key: &str) -> Result<(), Denied> {
        self.check_bucket(bucket)?;
        if key.starts_with(&self.limits.prefix) {
            return Ok(());
        }
        Err(Denied::Key {
            id: self.token_id.clone(),
            name: self.name.clone(),
            key: key.to_string(),
            prefix: self.limits.prefix.clone(),
        })
    }

    /// A listing: its prefix must stay inside the token's prefix, so it never returns keys
    /// outside it.
    pub fn check_list(&self, bucket: &str, prefix: &str) -> Result<(), Denied> {
        self.check_key(bucket, prefix)
    }

    /// A bucket-level change (create, delete): a token limited to a key prefix acts on keys,
    /// not on whole buckets.
    pub fn check_bucket_change(&self, bucket: &str) -> Result<(), Denied> {
        self.check_bucket(bucket)?;
        if self.limits.prefix.is_empty() {
            return Ok(());
        }
        Err(Denied::Key {
            id: self.token_id.clone(),
            name: self.name.clone(),
            key: String::new(),
            prefix: self.limits.prefix.clone(),
        })
    }
}

/// A token as presented: its id and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub id: String,
    pub secret_hash: [u8; 32],
}

/// A new token: what to store (id, hash) and what to hand out once (the token string).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub secret_hash: [u8; 32],
    pub token: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Compares in time independent of where the inputs differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh token with a random id and secret.
pub fn generate() -> NewToken {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let (id, secret) = (hex(&id), hex(&secret));
    NewToken {
        secret_hash: sha256(secret.as_bytes()),
        token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        id,
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses an issued token (`dogfs_<id>_<secret>`).
pub fn parse(token: &str) -> Result<Presented, TokenError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    if !is_lower_hex(id, ID_HEX) || !is_lower_hex(secret, SECRET_HEX) {
        return Err(TokenError::Malformed);
    }
    Ok(Presented {
        id: id.to_string(),
        secret_hash: sha256(secret.as_bytes()),
    })
}

/// Checks a bootstrap token's shape and returns its hash.
pub fn bootstrap_hash(token: &str) -> Result<[u8; 32], TokenError> {
    if token.len() < BOOTSTRAP_MIN {
        return Err(TokenError::Bootstrap("too short"));
    }
    if token.len() > BOOTSTRAP_MAX {
        return Err(TokenError::Bootstrap("too long"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Bootstrap(
            "holds a space, a control or a non-ASCII character",
        ));
    }
    Ok(sha256(token.as_bytes()))
}

/// The token of an `authorization: Bearer <token>` header value.
pub fn from_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapFileError {
    #[error("reading the bootstrap token file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("bootstrap token file {path}: {source}")]
    Token {
        path: std::path::PathBuf,
        source: TokenError,
    },
}

fn read_bootstrap(path: &std::path::Path) -> Result<[u8; 32], BootstrapFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| BootstrapFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // A Secret written with `echo` ends in a newline; the token is the trimmed text.
    bootstrap_hash(text.trim()).map_err(|source| BootstrapFileError::Token {
        path: path.to_path_buf(),
        source,
    })
}

/// The bootstrap admin token's file, re-read (at most once a second) when it changes, so a
/// rotated Secret takes effect without a restart.
pub struct BootstrapFile {
    inner: crate::reload::Reloading<[u8; 32], BootstrapFileError>,
}

impl fmt::Debug for BootstrapFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapFile").finish_non_exhaustive()
    }
}

impl BootstrapFile {
    /// Reads the file now, so a missing or bad one fails the start with its error.
    pub fn open(path: &std::path::Path) -> Result<BootstrapFile, BootstrapFileError> {
        let p = path.to_path_buf();
        let inner = crate::reload::Reloading::new(
            vec![p.clone()],
            std::time::Duration::from_secs(1),
            move || read_bootstrap(&p),
        )?;
        Ok(BootstrapFile { inner })
    }

    /// Whether `token` is the bootstrap token.
    pub fn matches(&self, token: &str) -> bool {
        let (hash, _) = self.inner.current();
        ct_eq(&sha256(token.as_bytes()), hash.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_to_their_id_and_hash() {
        let t = generate();
        let p = parse(&t.token).unwrap();
        assert_eq!(p.id, t.id);
        assert_eq!(p.secret_hash, t.secret_hash);
        assert_ne!(generate().token, t.token);
        // Any change to the secret changes the hash.
        let mut other = t.token.clone();
        let last = other.pop().unwrap();
        other.push(if last == '0' { '1' } else { '0' });
        assert_ne!(parse(&other).unwrap().secret_hash, t.secret_hash);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let t = generate().token;
        for bad in [
            "",
            "dogfs_",
            "dogfs__",
            &t[1..],
            &t[..t.len() - 1],
            &t.to_uppercase(),
            &format!("{t}0"),
            &t.replacen('_', "-", 2),
            "dogfs_0123456789abcdef_zz",
        ] {
            assert_eq!(parse(bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn bootstrap_tokens_have_a_shape() {
        assert!(bootstrap_hash("0123456789abcdef").is_ok());
        assert!(bootstrap_hash("short").is_err());
        assert!(bootstrap_hash("with a space in the middle").is_err());
        assert!(bootstrap_hash(&"x".repeat(BOOTSTRAP_MAX + 1)).is_err());
        assert!(bootstrap_hash("0123456789abcdéf").is_err());
    }

    #[test]
    fn scopes_include_the_lesser_ones() {
        assert!(Scope::Read.allows(Action::Read));
        assert!(!Scope::Read.allows(Action::Write));
        assert!(Scope::ReadWrite.allows(Action::Write));
        assert!(!Scope::ReadWrite.allows(Action::Admin));
        assert!(Scope::Admin.allows(Action::Admin));
        assert_eq!("read-write".parse::<Scope>().unwrap(), Scope::ReadWrite);
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn limits_confine_buckets_and_keys() {
        let id = Identity {
            token_id: "t".into(),
            name: "n".into(),
            scope: Scope::ReadWrite,
            limits: Limits {
                buckets: vec!["logs".into()],
                prefix: "app/".into(),
            },
        };
        assert!(id.check_key("logs", "app/1").is_ok());
        assert!(matches!(
            id.check_key("other", "app/1"),
            Err(Denied::Bucket { .. })
        ));
        assert!(matches!(
            id.check_key("logs", "ap"),
            Err(Denied::Key { .. })
        ));
        assert!(id.check_list("logs", "app/x").is_ok());
        assert!(id.check_list("logs", "").is_err());
        assert!(id.check_bucket_change("logs").is_err());
        let open = Identity::bootstrap();
        assert!(open.check_key("any", "thing").is_ok());
        assert!(open.check_bucket_change("any").is_ok());
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(from_bearer("Bearer abc"), Some("abc"));
        assert_eq!(from_bearer("bearer  abc "), Some("abc"));
        assert_eq!(from_bearer("Basic abc"), None);
        assert_eq!(from_bearer("Bearer"), None);
        assert!(ct_eq(b"ab", b"ab"));
        assert!(!ct_eq(b"ab", b"ac"));
        assert!(!ct_eq(b"ab", b"abc"));
    }
}
