//! Token and grant material for a test cluster started with `auth`: the bootstrap admin
//! token file the metadata nodes read, and the shard-grant key file they share with the chunk
//! servers, under the cluster's directory.

use std::path::{Path, PathBuf};

use dogfs_security::GrantKeys;

use crate::ClusterError;

/// The SDK's interceptor, for the harness's raw gRPC calls.
pub use dogfs_client::Bearer;

/// A test cluster's bootstrap token and grant key.
#[derive(Debug)]
pub struct TestAuth {
    dir: PathBuf,
    token: String,
}

fn write(path: &Path, text: &str) -> Result<(), ClusterError> {
    dogfs_security::grant::write_secret(path, text).map_err(|source| ClusterError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("dogfs-test-bootstrap-{hex}")
}

impl TestAuth {
    pub fn create(dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let token = random_token();
        write(&dir.join("token"), &format!("{token}\n"))?;
        write(&dir.join("grant.key"), &GrantKeys::generate_text())?;
        Ok(TestAuth {
            dir: dir.to_owned(),
            token,
        })
    }

    /// The bootstrap admin token (as the file holds it now).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    pub fn grant_key_path(&self) -> PathBuf {
        self.dir.join("grant.key")
    }

    /// The grant keys, to sign grants as the metadata service would (tests of refusals).
    pub fn grant_keys(&self) -> Result<GrantKeys, ClusterError> {
        GrantKeys::load(&self.grant_key_path()).map_err(|e| ClusterError::Io {
            what: "reading the grant key".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Writes a new bootstrap token into the file (the nodes re-read it) and returns it.
    pub fn rotate_token(&mut self) -> Result<String, ClusterError> {
        let token = random_token();
        // Written aside and renamed, as a Secret update swaps files: never half a token.
        let tmp = self.dir.join("token.new");
        write(&tmp, &format!("{token}\n"))?;
        std::fs::rename(&tmp, self.token_path()).map_err(|source| ClusterError::Io {
            what: "replacing the token file".to_owned(),
            source,
        })?;
        self.token = token.clone();
        Ok(token)
    }

    pub fn meta_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "DOGFS_AUTH_TOKEN_FILE".to_owned(),
                self.token_path().display().to_string(),
            ),
            (
                "DOGFS_GRANT_KEY_FILE".to_owned(),
                self.grant_key_path().display().to_string(),
            ),
        ]
    }

    pub fn chunk_env(&self) -> Vec<(String, String)> {
        vec![(
            "DOGFS_GRANT_KEY_FILE".to_owned(),
            self.grant_key_path().display().to_string(),
        )]
    }
}
