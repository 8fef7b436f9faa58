//! Shard grants (DESIGN §9, docs/security.md "Shard grants").
//!
//! A chunk server cannot tell which object a shard id belongs to, so it cannot check a
//! client's token. Instead the metadata service, which did check it, hands the client a grant
//! with every shard location: an HMAC-SHA256, under a key the metadata and chunk servers
//! share, of the operation, the shard id and an expiry. The chunk server accepts `PutShard`,
//! `GetShard`, `StatShard` and `DeleteShard` from a client only with a grant that verifies for
//! that operation and shard and has not expired; components (certificates with the meta or
//! chunk role) need none.
//!
//! A `PutShard` grant also allows `GetShard` of the same shard: the writer may read back what
//! it wrote (the SDK rebuilds a shard lost mid-upload from the ones it stored).
//!
//! Wire form (42 bytes): version 1, operation (1 byte), expiry (unix milliseconds, u64 BE),
//! MAC (32 bytes) over `"dogfs-grant-v1" ‖ operation ‖ shard id (u128 BE) ‖ expiry`.
//!
//! Keys come from a file of lines of 64 hex characters (32 bytes): the first line signs,
//! every line verifies, so a key is rotated by adding the new one first, waiting out the
//! longest grant lifetime, then removing the old one. The file is re-read when it changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::reload::Reloading;

const VERSION: u8 = 1;
const CONTEXT: &[u8] = b"dogfs-grant-v1";
/// Bytes of an encoded grant.
pub const GRANT_LEN: usize = 1 + 1 + 8 + 32;
/// Most keys a key file may hold.
pub const MAX_KEYS: usize = 16;

/// The shard operation a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put = 1,
    /// `GetShard` and `StatShard`.
    Get = 2,
    Delete = 3,
}

impl Op {
    fn from_byte(b: u8) -> Option<Op> {
        match b {
            1 => Some(Op::Put),
            2 => Some(Op::Get),
            3 => Some(Op::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "PutShard",
            Op::Get => "GetShard",
            Op::Delete => "DeleteShard",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error(
        "{op} of shard {shard:032x} needs a grant from the metadata service (this chunk server \
         checks shard grants); get the shard's location, with its grant, from the metadata \
         service"
    )]
    Missing { op: &'static str, shard: u128 },
    #[error("{op} of shard {shard:032x}: the grant is malformed ({len} bytes, not {GRANT_LEN})")]
    Malformed {
        op: &'static str,
        shard: u128,
        len: usize,
    },
    #[error("{op} of shard {shard:032x}: the grant is for {granted}, not {op}")]
    WrongOp {
        op: &'static str,
        shard: u128,
        granted: &'static str,
    },
    #[error(
        "{op} of shard {shard:032x}: the grant expired {ago_ms} ms ago; ask the metadata \
         service for the location again"
    )]
    Expired {
        op: &'static str,
        shard: u128,
        ago_ms: u64,
    },
    #[error(
        "{op} of shard {shard:032x}: the grant does not verify (a grant for another shard, or \
         not signed by this cluster's grant key)"
    )]
    BadSignature { op: &'static str, shard: u128 },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading grant key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "grant key file {path}, line {line}: expected 64 hex characters (a 32-byte key), e.g. \
         from `openssl rand -hex 32`"
    )]
    BadLine { path: PathBuf, line: usize },
    #[error("grant key file {path} holds no key")]
    Empty { path: PathBuf },
    #[error("grant key file {path} holds more than {MAX_KEYS} keys")]
    TooMany { path: PathBuf },
    #[error("writing grant key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The keys of a key file; the first signs.
#[derive(Clone)]
pub struct GrantKeys {
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for GrantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn mac(key: &[u8; 32], op: Op, shard: u128, expires_ms: u64) -> [u8; 32] {
    // An HMAC takes keys of any length; 32 bytes cannot fail.
    let mut m = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts 32-byte keys"),
    };
    m.update(CONTEXT);
    m.update(&[op as u8]);
    m.update(&shard.to_be_bytes());
    m.update(&expires_ms.to_be_bytes());
    m.finalize().into_bytes().into()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl GrantKeys {
    /// Parses a key file's text (blank lines and `#` comments ignored).
    pub fn parse(path: &Path, text: &str) -> Result<GrantKeys, KeyFileError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = unhex32(line).ok_or_else(|| KeyFileError::BadLine {
                path: path.to_path_buf(),
                line: i + 1,
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyFileError::TooMany {
                path: path.to_path_buf(),
            });
        }
        Ok(GrantKeys { keys })
    }

    pub fn load(path: &Path) -> Result<GrantKeys, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        GrantKeys::parse(path, &text)
    }

    /// A new random key file's text.
    pub fn generate_text() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}\n")
    }

    /// Writes a new random key file (mode 0600) unless one exists; returns its path.
    pub fn ensure_file(path: &Path) -> Result<(), KeyFileError> {
        if path.exists() {
            return Ok(());
        }
        write_secret(path, &GrantKeys::generate_text()).map_err(|source| KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A grant for `op` on `shard` valid until `expires`.
    pub fn sign(&self, op: Op, shard: u128, expires: SystemTime) -> Vec<u8> {
        let expires_ms = unix_ms(expires);
        let mut out = Vec::with_capacity(GRANT_LEN);
        out.push(VERSION);
        out.push(op as u8);
        out.extend_from_slice(&expires_ms.to_be_bytes());
        out.extend_from_slice(&mac(&self.keys[0], op, shard, expires_ms));
        out
    }

    /// Whether `grant` allows `op` on `shard` at `now`.
    pub fn verify(
        &self,
        grant: &[u8],
        op: Op,
        shard: u128,
        now: SystemTime,
    ) -> Result<(), GrantError> {
        let name = op.as_str();
        if grant.is_empty() {
            return Err(GrantError::Missing { op: name, shard });
        }
        if grant.len() != GRANT_LEN || grant[0] != VERSION {
            return Err(GrantError::Malformed {
                op: name,
                shard,
                len: grant.len(),
            });
        }
        let granted = Op::from_byte(grant[1]).ok_or(GrantError::Malformed {
            op: name,
            shard,
            len: grant.len(),
        })?;
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&grant[2..10]);
        let expires_ms = u64::from_be_bytes(exp);
        let sig = &grant[10..];
        // The signature first: what an unverified grant says is not worth reporting.
        if !self
            .keys
            .iter()
            .any(|k| crate::token::ct_eq(&mac(k, granted, shard, expires_ms), sig))
        {
            return Err(GrantError::BadSignature { op: name, shard });
        }
        // A writer may read back what it is writing: the SDK rebuilds a shard whose server
        // died mid-upload from the shards it already stored.
        let covers = granted == op || (granted == Op::Put && op == Op::Get);
        if !covers {
            return Err(GrantError::WrongOp {
                op: name,
                shard,
                granted: granted.as_str(),
            });
        }
        let now_ms = unix_ms(now);
        if now_ms >= expires_ms {
            return Err(GrantError::Expired {
                op: name,
                shard,
                ago_ms: now_ms - expires_ms,
            });
        }
        Ok(())
    }
}

/// Writes a file only its owner can read.
pub fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A key file, re-read (at most once a second) when it changes.
pub struct GrantKeyFile {
    inner: Reloading<GrantKeys, KeyFileError>,
}

impl std::fmt::Debug for GrantKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantKeyFile").finish_non_exhaustive()
    }
}

impl GrantKeyFile {
    /// Loads the file now, so a bad one fails the start with its error.
    pub fn open(path: &Path) -> Result<GrantKeyFile, KeyFileError> {
        let p = path.to_path_buf();
        let inner = Reloading::new(vec![p.clone()], Duration::from_secs(1), move || {
            GrantKeys::load(&p)
        })?;
        Ok(GrantKeyFile { inner })
    }

    pub fn keys(&self) -> Arc<GrantKeys> {
        self.inner.current().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> GrantKeys {
        GrantKeys::parse(Path::new("k"), &GrantKeys::generate_text()).unwrap()
    }

    #[test]
    fn a_grant_verifies_for_its_op_and_shard_until_it_expires() {
        let k = keys();
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let g = k.sign(Op::Get, 7, later);
        assert_eq!(g.len(), GRANT_LEN);
        assert_eq!(k.verify(&g, Op::Get, 7, now), Ok(()));
        assert!(matches!(
            k.verify(&g, Op::Get, 8, now),
            Err(GrantError::BadSignature { .. })
        ));
        assert!(matches!(
            k.verify(&g, Op::Put, 7, now),
            Err(GrantError::WrongOp { .. })
        ));
        assert!(matches!(
            k.verify(&g, Op::Delete, 7, now),
            Err(GrantError::WrongOp { .. })
        ));
        // A PutShard grant also reads its shard back (and nothing else).
        let put = k.sign(Op::Put, 7, later);
        assert_eq!(k.verify(&put, Op::Get, 7, now), Ok(()));
        assert!(k.verify(&put, Op::Delete, 7, now).is_err());
        assert!(k.verify(&put, Op::Get, 8, now).is_err());
        assert!(matches!(
            k.verify(&g, Op::Get, 7, later),
            Err(GrantError::Expired { .. })
        ));
        assert!(matches!(
            k.verify(&[], Op::Get, 7, now),
            Err(GrantError::Missing { .. })
        ));
        assert!(matches!(
            k.verify(&g[1..], Op::Get, 7, now),
            Err(GrantError::Malformed { .. })
        ));
        // Another cluster's key, or a flipped bit anywhere.
        assert!(keys().verify(&g, Op::Get, 7, now).is_err());
        for i in 0..g.len() {
            let mut bad = g.clone();
            bad[i] ^= 0x40;
            assert!(k.verify(&bad, Op::Get, 7, now).is_err(), "byte {i}");
        }
    }

    #[test]
    fn every_key_verifies_and_the_first_signs() {
        let (a, b) = (GrantKeys::generate_text(), GrantKeys::generate_text());
        let both = GrantKeys::parse(Path::new("k"), &format!("# rotated\n{b}\n{a}")).unwrap();
        let old = GrantKeys::parse(Path::new("k"), &a).unwrap();
        let new = GrantKeys::parse(Path::new("k"), &b).unwrap();
        let t = SystemTime::now() + Duration::from_secs(5);
        let now = SystemTime::now();
        assert!(
            both.verify(&old.sign(Op::Put, 1, t), Op::Put, 1, now)
                .is_ok()
        );
        assert!(
            new.verify(&both.sign(Op::Put, 1, t), Op::Put, 1, now)
                .is_ok()
        );
    }

    #[test]
    fn key_files_are_checked() {
        let p = Path::new("grant.key");
        assert!(matches!(
            GrantKeys::parse(p, ""),
            Err(KeyFileError::Empty { .. })
        ));
        assert!(matches!(
            GrantKeys::parse(p, "abc\n"),
            Err(KeyFileError::BadLine { line: 1, .. })
        ));
        assert!(matches!(
            GrantKeys::parse(p, &format!("{}\n", "g".repeat(64))),
            Err(KeyFileError::BadLine { .. })
        ));
        let many = GrantKeys::generate_text().repeat(MAX_KEYS + 1);
        assert!(matches!(
            GrantKeys::parse(p, &many),
            Err(KeyFileError::TooMany { .. })
        ));
    }
}
