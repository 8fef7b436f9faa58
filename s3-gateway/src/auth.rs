//! Access keys (a YAML file, docs/s3.md "Credentials"), SigV4 secret lookup for `s3s`, and
//! the scope and bucket checks every request passes before it reaches the operation.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::{S3Request, S3Result, s3_error};
use serde::Deserialize;
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading credentials file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing credentials file {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("credentials: access key {0:?} appears twice")]
    Duplicate(String),
    #[error("credentials: an entry has an empty {0}")]
    Empty(&'static str),
}

/// What a key may do. Each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// List, head and get.
    Read,
    /// And put, copy and delete objects.
    ReadWrite,
    /// And create and delete buckets.
    Admin,
}

/// One access key as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    pub access_key: String,
    pub secret_key: String,
    /// The DogFS identity the key acts as (logged with every request).
    pub identity: String,
    pub scope: Scope,
    /// The buckets the key may touch; absent: every bucket.
    #[serde(default)]
    pub buckets: Option<Vec<String>>,
    /// A DogFS token (`dogfs admin token create`) the key's requests are made with, so the
    /// cluster checks the key's rights too; absent: the gateway's own token.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

/// Every access key the gateway accepts, by access key id.
#[derive(Clone, Default)]
pub struct Credentials {
    keys: Arc<HashMap<String, Key>>,
}

struct Key {
    secret: String,
    identity: String,
    scope: Scope,
    buckets: Option<BTreeSet<String>>,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Credentials")
            .field("access_keys", &self.keys.len())
            .finish()
    }
}

impl Credentials {
    pub fn from_entries(
        entries: impl IntoIterator<Item = CredentialEntry>,
    ) -> Result<Self, CredentialsError> {
        let mut keys = HashMap::new();
        for e in entries {
            for (what, v) in [
                ("access_key", &e.access_key),
                ("secret_key", &e.secret_key),
                ("identity", &e.identity),
            ] {
                if v.is_empty() {
                    return Err(CredentialsError::Empty(what));
                }
            }
            let key = Key {
                secret: e.secret_key,
                identity: e.identity,
                scope: e.scope,
                buckets: e.buckets.map(|b| b.into_iter().collect()),
                token: e.token.filter(|t| !t.trim().is_empty()),
            };
            if keys.insert(e.access_key.clone(), key).is_some() {
                return Err(CredentialsError::Duplicate(e.access_key));
            }
        }
        Ok(Credentials {
            keys: Arc::new(keys),
        })
    }

    /// The access keys that have a DogFS token of their own, with it.
    pub fn tokens(&self) -> Vec<(&str, &str)> {
        self.keys
            .iter()
            .filter_map(|(k, v)| v.token.as_deref().map(|t| (k.as_str(), t)))
            .collect()
    }

    pub fn parse_yaml(text: &str, path: &str) -> Result<Self, CredentialsError> {
        let file: CredentialsFile =
            serde_yaml::from_str(text).map_err(|source| CredentialsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        Self::from_entries(file.credentials)
    }

    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse_yaml(&text, &shown)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a request needs, from its operation's name.
fn needed_scope(op: &str) -> Scope {
    // Every multipart operation, its listings included, is part of writing an object.
    if op == "ListParts" || op == "ListMultipartUploads" {
        Scope::ReadWrite
    } else if op.starts_with("Get") || op.starts_with("Head") || op.starts_with("List") {
        Scope::Read
    } else if op == "CreateBucket" || op.starts_with("PutBucket") || op.starts_with("DeleteBucket")
    {
        Scope::Admin
    } else {
        // Unknown operations count as writes: a read-only key never reaches them.
        Scope::ReadWrite
    }
}

/// The rights of the caller of one request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caller<'a> {
    /// Unsigned, in anonymous mode, or no authentication configured.
    Anonymous,
    Key(&'a str),
}

/// `s3s`'s SigV4 secret lookup and per-request authorisation over [`Credentials`].
#[derive(Debug, Clone)]
pub(crate) struct Gatekeeper {
    pub(crate) credentials: Credentials,
    pub(crate) anonymous: bool,
}

impl Gatekeeper {
    /// `Ok` when `caller` may run `op` on `bucket` (`None`: the service, e.g. ListBuckets).
    pub(crate) fn allow(&self, caller: Caller<'_>, op: &str, bucket: Option<&str>) -> S3Result<()> {
        let key = match caller {
            Caller::Anonymous if self.anonymous => {
                warn!(op, bucket, "unsigned request allowed (anonymous mode)");
                return Ok(());
            }
            Caller::Anonymous => return Err(s3_error!(AccessDenied, "Signature is required")),
            Caller::Key(k) => k,
        };
        let Some(entry) = self.credentials.keys.get(key) else {
            return Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ));
        };
        let need = needed_scope(op);
        if entry.scope < need {
            debug!(identity = %entry.identity, op, ?need, have = ?entry.scope, "denied: scope");
            return Err(s3_error!(
                AccessDenied,
                "{op} needs {need:?} scope; access key of {} has {:?}",
                entry.identity,
                entry.scope
            ));
        }
        if let (Some(allowed), Some(b)) = (&entry.buckets, bucket)
            && !allowed.contains(b)
        {
            debug!(identity = %entry.identity, op, bucket = b, "denied: bucket");
            return Err(s3_error!(
                AccessDenied,
                "access key of {} may not use bucket {b}",
                entry.identity
            ));
        }
        Ok(())
    }

    /// Whether the caller may see `bucket` at all (ListBuckets filters by it).
    pub(crate) fn sees_bucket(&self, caller: Caller<'_>, bucket: &str) -> bool {
        match caller {
            Caller::Anonymous => true,
            Caller::Key(k) => self.credentials.keys.get(k).is_some_and(|e| {
                e.buckets
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(bucket))
            }),
        }
    }

    pub(crate) fn identity(&self, caller: Caller<'_>) -> &str {
        match caller {
            Caller::Anonymous => "anonymous",
            Caller::Key(k) => self
                .credentials
                .keys
                .get(k)
                .map_or("unknown", |e| e.identity.as_str()),
        }
    }
}

pub(crate) fn caller_of(creds: Option<&s3s::auth::Credentials>) -> Caller<'_> {
    creds.map_or(Caller::Anonymous, |c| Caller::Key(c.access_key.as_str()))
}

#[async_trait::async_trait]
impl S3Auth for Gatekeeper {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.credentials.keys.get(access_key) {
            Some(k) => Ok(SecretKey::from(k.secret.as_str())),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Gatekeeper {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let caller = caller_of(cx.credentials());
        let op = cx.s3_op().name();
        self.allow(caller, op, cx.s3_path().get_bucket_name())
    }

    /// A copy also reads its source, which may be in another bucket.
    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        if let CopySource::Bucket { bucket, .. } = &req.input.copy_source {
            self.allow(
                caller_of(req.credentials.as_ref()),
                "GetObject",
                Some(bucket),
            )?;
        }
        Ok(())
    }

    /// UploadPartCopy reads its source too, as CopyObject does.
    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        if let CopySource::Bucket { bucket, .. } = &req.input.copy_source {
            self.allow(
                caller_of(req.credentials.as_ref()),
                "GetObject",
                Some(bucket),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
credentials:
  - access_key: ADMIN
    secret_key: s1
    identity: root
    scope: admin
  - access_key: READER
    secret_key: s2
    identity: auditor
    scope: read
  - access_key: PHOTOS
    secret_key: s3
    identity: app
    scope: read-write
    buckets: [photos]
"#;

    fn gate(anonymous: bool) -> Gatekeeper {
        Gatekeeper {
            credentials: Credentials::parse_yaml(FILE, "test").unwrap(),
            anonymous,
        }
    }

    #[test]
    fn scopes_nest_and_bucket_lists_limit() {
        let g = gate(false);
        let k = Caller::Key;
        assert!(g.allow(k("ADMIN"), "CreateBucket", Some("x")).is_ok());
        assert!(g.allow(k("READER"), "GetObject", Some("x")).is_ok());
        assert!(g.allow(k("READER"), "ListObjectsV2", Some("x")).is_ok());
        assert!(g.allow(k("READER"), "PutObject", Some("x")).is_err());
        assert!(g.allow(k("READER"), "DeleteObjects", Some("x")).is_err());
        for op in [
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "AbortMultipartUpload",
            "ListParts",
            "ListMultipartUploads",
        ] {
            assert!(g.allow(k("READER"), op, Some("x")).is_err(), "{op}");
            assert!(g.allow(k("PHOTOS"), op, Some("photos")).is_ok(), "{op}");
            assert!(g.allow(k("PHOTOS"), op, Some("other")).is_err(), "{op}");
        }
        assert!(g.allow(k("PHOTOS"), "PutObject", Some("photos")).is_ok());
        assert!(g.allow(k("PHOTOS"), "PutObject", Some("other")).is_err());
        assert!(
            g.allow(k("PHOTOS"), "CreateBucket", Some("photos"))
                .is_err()
        );
        assert!(g.allow(k("PHOTOS"), "ListBuckets", None).is_ok());
        assert!(g.sees_bucket(k("PHOTOS"), "photos"));
        assert!(!g.sees_bucket(k("PHOTOS"), "other"));
        let e = g.allow(k("NOPE"), "GetObject", Some("x")).unwrap_err();
        assert_eq!(e.code().as_str(), "InvalidAccessKeyId");
        let e = g
            .allow(Caller::Anonymous, "GetObject", Some("x"))
            .unwrap_err();
        assert_eq!(e.code().as_str(), "AccessDenied");
        assert!(
            gate(true)
                .allow(Caller::Anonymous, "PutObject", Some("x"))
                .is_ok()
        );
        assert_eq!(g.identity(k("PHOTOS")), "app");
    }

    #[test]
    fn bad_files_are_refused() {
        let dup = "credentials:\n  - {access_key: A, secret_key: s, identity: i, scope: read}\n  - {access_key: A, secret_key: t, identity: j, scope: read}\n";
        assert!(matches!(
            Credentials::parse_yaml(dup, "t"),
            Err(CredentialsError::Duplicate(_))
        ));
        let bad_scope =
            "credentials:\n  - {access_key: A, secret_key: s, identity: i, scope: all}\n";
        assert!(matches!(
            Credentials::parse_yaml(bad_scope, "t"),
            Err(CredentialsError::Parse { .. })
        ));
        let empty = "credentials:\n  - {access_key: A, secret_key: '', identity: i, scope: read}\n";
        assert!(matches!(
            Credentials::parse_yaml(empty, "t"),
            Err(CredentialsError::Empty("secret_key"))
        ));
    }
}
