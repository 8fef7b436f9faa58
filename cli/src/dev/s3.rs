//! `dogfs dev --s3 ADDR`: the S3 gateway (`dogfs-s3`, docs/s3.md) in the dev process, so the
//! local cluster works with aws-cli and boto3 at once. Its key pair is made on the first start
//! and kept in `DIR/s3-credentials.yaml` (a restart serves the same one).

use std::path::{Path, PathBuf};

use dogfs_core::ids::ShardId;
use dogfs_s3::{Credentials, GatewayConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Failures of the dev gateway, named after the failing step.
#[derive(Debug, thiserror::Error)]
pub enum DevS3Error {
    #[error("--s3 {addr}: binding the S3 gateway's address: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("writing the dev S3 credentials {path}: {source}")]
    WriteCredentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the dev S3 credentials: {0}")]
    Credentials(#[from] dogfs_s3::CredentialsError),
    #[error("connecting the S3 gateway to the cluster: {0}")]
    Connect(dogfs_client::Error),
}

/// The access key of the dev gateway (admin scope).
pub const DEV_ACCESS_KEY: &str = "dogfs-dev";

/// A running dev gateway.
#[derive(Debug)]
pub struct DevS3 {
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl DevS3 {
    /// Serves S3 on `addr` (`host:port`; port 0 picks a free one) for the cluster at
    /// `endpoints`, with the key pair of `dir`.
    pub async fn start(
        addr: &str,
        dir: &Path,
        endpoints: Vec<String>,
        ca: Option<&Path>,
        token: Option<&str>,
    ) -> Result<DevS3, DevS3Error> {
        let (access_key, secret_key, credentials) = credentials(dir)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DevS3Error::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| DevS3Error::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let mut client_config = dogfs_client::ClientConfig::new(endpoints);
        client_config.tls = ca.map(dogfs_client::ClientTlsPaths::ca_only);
        client_config.token = token
            .map(|t| dogfs_client::Token::new(t, "the dev cluster's admin token"))
            .transpose()
            .map_err(DevS3Error::Connect)?;
        let client = dogfs_client::Client::connect(client_config)
            .await
            .map_err(DevS3Error::Connect)?;
        let config = GatewayConfig {
            credentials: Some(credentials),
            ..GatewayConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = dogfs_s3::serve(config, listener, client, shutdown).await {
                warn!(error = %e, "the dev S3 gateway stopped");
            }
        });
        info!(%local, "dev S3 gateway listening");
        Ok(DevS3 {
            url: format!("http://{local}"),
            access_key,
            secret_key,
            stop: Some(stop),
            task,
        })
    }

    /// Stops accepting and waits for requests in flight.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The dev key pair: read from `dir`, or made and written there (owner-only).
fn credentials(dir: &Path) -> Result<(String, String, Credentials), DevS3Error> {
    let path = dir.join("s3-credentials.yaml");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let creds = Credentials::parse_yaml(&text, &path.display().to_string())?;
        if let Some(secret) = secret_in(&text) {
            return Ok((DEV_ACCESS_KEY.to_owned(), secret, creds));
        }
    }
    // 128 random bits, as hex: a dev secret, not a production one.
    let secret = ShardId::random().to_string();
    let text = format!(
        "# Made by `dogfs dev --s3`; delete it for a new secret.\ncredentials:\n  - access_key: {DEV_ACCESS_KEY}\n    secret_key: {secret}\n    identity: dev\n    scope: admin\n"
    );
    write_private(&path, &text).map_err(|source| DevS3Error::WriteCredentials {
        path: path.clone(),
        source,
    })?;
    let creds = Credentials::parse_yaml(&text, &path.display().to_string())?;
    Ok((DEV_ACCESS_KEY.to_owned(), secret, creds))
}

/// The dev key's secret in a file this module wrote.
fn secret_in(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("secret_key:"))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_key_pair_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a1, s1, _) = credentials(dir.path()).unwrap();
        let (a2, s2, _) = credentials(dir.path()).unwrap();
        assert_eq!((a1.as_str(), s1.as_str()), (a2.as_str(), s2.as_str()));
        assert_eq!(a1, DEV_ACCESS_KEY);
        assert_eq!(s1.len(), 32);
    }
}
