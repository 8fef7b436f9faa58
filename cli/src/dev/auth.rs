//! `dogfs dev --auth`: the bootstrap admin token and the shard-grant key of a local cluster,
//! made on first use in `DIR/auth` and kept across restarts (so exported `DOGFS_TOKEN`s stay
//! good).

use std::path::{Path, PathBuf};

use dogfs_security::GrantKeys;

#[derive(Debug, thiserror::Error)]
pub enum DevAuthError {
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    GrantKey(#[from] dogfs_security::grant::KeyFileError),
}

/// A local cluster's token and grant key files.
#[derive(Debug, Clone)]
pub struct DevAuth {
    pub token: String,
    pub token_path: PathBuf,
    pub grant_key_path: PathBuf,
}

impl DevAuth {
    pub fn ensure(dir: &Path) -> Result<DevAuth, DevAuthError> {
        std::fs::create_dir_all(dir).map_err(|source| DevAuthError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let token_path = dir.join("admin-token");
        if !token_path.exists() {
            let bytes: [u8; 24] = rand::random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            dogfs_security::grant::write_secret(&token_path, &format!("dogfs-dev-admin-{hex}\n"))
                .map_err(|source| DevAuthError::Write {
                path: token_path.clone(),
                source,
            })?;
        }
        let token = std::fs::read_to_string(&token_path)
            .map_err(|source| DevAuthError::Read {
                path: token_path.clone(),
                source,
            })?
            .trim()
            .to_owned();
        let grant_key_path = dir.join("grant.key");
        GrantKeys::ensure_file(&grant_key_path)?;
        Ok(DevAuth {
            token,
            token_path,
            grant_key_path,
        })
    }
}
