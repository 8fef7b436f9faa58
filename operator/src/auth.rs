//! `spec.auth`: the bootstrap admin token and the shard-grant key of a cluster.
//!
//! Without `auth.secretName` the operator generates `<c>-auth` once (`token`: `dogfs_` and 43
//! base64url characters, 256 random bits; `grant.key`: 64 hex characters, a 32-byte key) and
//! never regenerates a key that is there: a new token would lock out every client holding the
//! old one, a new grant key would void every grant in flight. Rotation is by editing the
//! Secret (the servers re-read the files; see docs/kubernetes.md, "Auth").

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rand::RngCore as _;
use tracing::info;

use crate::build::{self, Names};
use crate::crd::DogCluster;

/// Secret key of the bootstrap admin token.
pub const TOKEN_KEY: &str = "token";
/// Secret key of the shard-grant key file.
pub const GRANT_KEY: &str = "grant.key";
/// Where the auth Secret is mounted in server pods.
pub const AUTH_DIR: &str = "/etc/dogfs/auth";
/// `app.kubernetes.io/component` of the generated Secret.
pub const AUTH_COMPONENT: &str = "auth";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading auth Secret {name}: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("creating auth Secret {name}: {source}")]
    CreateSecret { name: String, source: kube::Error },
    #[error("adding {keys:?} to auth Secret {name}: {source}")]
    CompleteSecret {
        name: String,
        keys: Vec<&'static str>,
        source: kube::Error,
    },
    #[error("auth Secret {name} does not exist (spec.auth.secretName)")]
    MissingSecret { name: String },
    #[error(
        "auth Secret {name} lacks {keys:?} (it needs `token` and `grant.key`; docs/kubernetes.md, \"Auth\")"
    )]
    IncompleteSecret {
        name: String,
        keys: Vec<&'static str>,
    },
    #[error("auth Secret {name}: `token` must be 16 to 1024 visible ASCII characters")]
    BadToken { name: String },
    #[error("building child objects: {0}")]
    Build(#[from] build::Error),
}

/// The Secret the pods use: the given one, or `<c>-auth`. `None` with auth off.
pub fn secret_name(cluster: &DogCluster, names: &Names) -> Option<String> {
    if !cluster.spec.auth_enabled() {
        return None;
    }
    let given = cluster
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.secret_name.clone());
    Some(given.unwrap_or_else(|| names.auth_secret()))
}

/// A new bootstrap admin token: `dogfs_` and 32 random bytes in unpadded base64url.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "dogfs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new shard-grant key file: one line of 64 hex characters.
pub fn generate_grant_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}\n")
}

fn value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The keys a Secret lacks (empty values count as missing).
pub fn missing_keys(secret: &Secret) -> Vec<&'static str> {
    [TOKEN_KEY, GRANT_KEY]
        .into_iter()
        .filter(|k| value(secret, k).is_none_or(|v| v.trim().is_empty()))
        .collect()
}

/// The token as the servers read it (trimmed), if it has the bootstrap token's shape.
pub fn token_of(secret: &Secret) -> Option<String> {
    let token = value(secret, TOKEN_KEY)?.trim().to_string();
    let ok = (16..=1024).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(token)
}

/// The generated Secret with fresh values for `keys`.
pub fn generated_secret(names: &Names, owner: &OwnerReference, keys: &[&str]) -> Secret {
    let data: BTreeMap<String, ByteString> = keys
        .iter()
        .map(|k| {
            let v = if *k == TOKEN_KEY {
                generate_token()
            } else {
                generate_grant_key()
            };
            (k.to_string(), ByteString(v.into_bytes()))
        })
        .collect();
    Secret {
        metadata: build::metadata(names, names.auth_secret(), AUTH_COMPONENT, owner),
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Makes sure the auth Secret exists and is complete; returns the admin token (`None` with
/// auth off).
pub async fn ensure(
    client: &Client,
    cluster: &DogCluster,
    names: &Names,
) -> Result<Option<String>, Error> {
    let Some(name) = secret_name(cluster, names) else {
        return Ok(None);
    };
    let ns = &names.namespace;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let read = |name: &str| {
        let secrets = secrets.clone();
        let name = name.to_string();
        async move {
            secrets
                .get_opt(&name)
                .await
                .map_err(|source| Error::ReadSecret {
                    name: name.clone(),
                    source,
                })
        }
    };
    let generated = name == names.auth_secret()
        && cluster
            .spec
            .auth
            .as_ref()
            .is_none_or(|a| a.secret_name.is_none());
    let mut secret = read(&name).await?;
    if generated {
        let owner = build::owner_reference(cluster)?;
        match &secret {
            None => {
                let new = generated_secret(names, &owner, &[TOKEN_KEY, GRANT_KEY]);
                // Create, not apply: if another writer made it meanwhile, keep theirs.
                match secrets.create(&PostParams::default(), &new).await {
                    Ok(created) => {
                        info!(secret = %name, "generated the admin token and grant key");
                        secret = Some(created);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        secret = read(&name).await?;
                    }
                    Err(source) => return Err(Error::CreateSecret { name, source }),
                }
            }
            Some(existing) => {
                let keys = missing_keys(existing);
                if !keys.is_empty() {
                    // A merge patch of the missing keys only: what is there is never replaced.
                    let add = generated_secret(names, &owner, &keys);
                    let patch = serde_json::json!({"data": add.data});
                    secret = Some(
                        secrets
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map_err(|source| Error::CompleteSecret {
                                name: name.clone(),
                                keys: keys.clone(),
                                source,
                            })?,
                    );
                    info!(secret = %name, ?keys, "completed the auth Secret");
                }
            }
        }
    }
    let secret = secret.ok_or_else(|| Error::MissingSecret { name: name.clone() })?;
    let keys = missing_keys(&secret);
    if !keys.is_empty() {
        return Err(Error::IncompleteSecret { name, keys });
    }
    token_of(&secret).map(Some).ok_or(Error::BadToken { name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn generated_values_have_the_shapes_the_servers_read() {
        let token = generate_token();
        assert_eq!(token.len(), "dogfs_".len() + 43, "{token}");
        assert!(token.starts_with("dogfs_"));
        assert!(
            token[6..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(token, generate_token());
        let key = generate_grant_key();
        assert!(key.ends_with('\n'));
        assert_eq!(key.trim().len(), 64);
        assert!(key.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn missing_keys_and_token_shape() {
        let token = generate_token();
        let full = secret(&[(TOKEN_KEY, &token), (GRANT_KEY, &generate_grant_key())]);
        assert!(missing_keys(&full).is_empty());
        assert_eq!(token_of(&full).as_deref(), Some(token.as_str()));
        assert_eq!(missing_keys(&secret(&[(TOKEN_KEY, "x")])), [GRANT_KEY]);
        assert_eq!(
            missing_keys(&secret(&[(GRANT_KEY, "k"), (TOKEN_KEY, " \n")])),
            [TOKEN_KEY]
        );
        assert_eq!(missing_keys(&Secret::default()), [TOKEN_KEY, GRANT_KEY]);
        // Too short, or with a space: the metadata service would refuse it at start.
        assert_eq!(token_of(&secret(&[(TOKEN_KEY, "short")])), None);
        assert_eq!(
            token_of(&secret(&[(TOKEN_KEY, "a token with spaces in it")])),
            None
        );
        // A trailing newline (a Secret made with echo) is what the servers trim too.
        assert_eq!(
            token_of(&secret(&[(TOKEN_KEY, "0123456789abcdef\n")])).as_deref(),
            Some("0123456789abcdef")
        );
    }
}
