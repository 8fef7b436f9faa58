//! The key-value engine under the state machine, behind a small trait so it can be replaced
//! (DESIGN §5), and its sled implementation.
//!
//! An engine ([`KvEngine`]) holds one key space ([`KvSpace`]) per Raft group; the sled engine
//! is one `sled::Db` per node with one tree per group (`group-<id>`). A space offers point
//! reads, ordered range reads, ordered writes whose crash recovery keeps a prefix, an atomic
//! replacement of its whole content (snapshot install) and a flush.

use std::fmt::Debug;
use std::ops::Bound;
use std::path::Path;

use thiserror::Error;

use crate::wal::GroupId;

/// A boxed engine error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A raw key-value pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A raw write: `Some` puts, `None` removes.
pub type RawWrite = (Vec<u8>, Option<Vec<u8>>);

/// Errors of the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("opening the key-value engine at {path}: {source}")]
    Open { path: String, source: BoxError },
    #[error("opening the key space of group {group}: {source}")]
    OpenSpace { group: GroupId, source: BoxError },
    #[error("reading: {0}")]
    Read(BoxError),
    #[error("writing: {0}")]
    Write(BoxError),
    #[error("replacing the content of a key space: {0}")]
    Replace(BoxError),
    #[error("flushing: {0}")]
    Flush(BoxError),
}

/// A key-value engine holding one [`KvSpace`] per Raft group.
pub trait KvEngine: Clone + Debug + Send + Sync + 'static {
    /// The key space of one group.
    type Space: KvSpace;
    /// Opens (creating if needed) the key space of `group`.
    fn space(&self, group: GroupId) -> Result<Self::Space, EngineError>;
}

/// One group's key space: ordered byte keys to byte values.
pub trait KvSpace: Clone + Debug + Send + Sync + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Up to `limit` pairs with keys in `(from, to)`, in key order.
    fn range(
        &self,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<Pair>, EngineError>;

    /// Applies `writes` one after the other, each atomically but not all together. The
    /// engine's contract, which the state machine's crash recovery rests on: after a crash it
    /// recovers a *prefix* of all the writes made through it, in the order they were made
    /// (a write is never recovered without every write made before it). sled 0.34 keeps it:
    /// its log is recovered up to the first torn or missing buffer, in log-sequence order,
    /// and one thread's writes take increasing log sequence numbers.
    fn write_in_order(&self, writes: &[RawWrite]) -> Result<(), EngineError>;

    /// Atomically replaces the whole content of the space by `pairs`.
    fn replace_all(&self, pairs: Vec<Pair>) -> Result<(), EngineError>;

    /// Asks the engine to write its state out (for sled not an `fsync`; see
    /// `docs/raft-storage.md` for why the state machine does not depend on it).
    fn flush(&self) -> Result<(), EngineError>;
}

/// The sled engine: one `sled::Db` per node, one tree per group.
#[derive(Debug, Clone)]
pub struct SledEngine {
    db: sled::Db,
}

impl SledEngine {
    /// Opens (creating if needed) the sled database in `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SledEngine, EngineError> {
        let path = path.as_ref();
        let db = sled::open(path).map_err(|e| EngineError::Open {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(SledEngine { db })
    }

    /// Wraps an open database.
    pub fn new(db: sled::Db) -> SledEngine {
        SledEngine { db }
    }

    /// The database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

impl KvEngine for SledEngine {
    type Space = SledSpace;

    fn space(&self, group: GroupId) -> Result<SledSpace, EngineError> {
        let tree =
            self.db
                .open_tree(format!("group-{group}"))
                .map_err(|e| EngineError::OpenSpace {
                    group,
                    source: Box::new(e),
                })?;
        Ok(SledSpace { tree })
    }
}

/// One group's tree in the sled database.
#[derive(Debug, Clone)]
pub struct SledSpace {
    tree: sled::Tree,
}

impl KvSpace for SledSpace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| EngineError::Read(Box::new(e)))
    }

    fn range(
        &self,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<Pair>, EngineError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for kv in self.tree.range::<Vec<u8>, _>((from, to)) {
            let (k, v) = kv.map_err(|e| EngineError::Read(Box::new(e)))?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn write_in_order(&self, writes: &[RawWrite]) -> Result<(), EngineError> {
        // Plain inserts, not a sled transaction or batch: those roll sled's IO buffer and
        // hand a disk write to its thread pool each time (4 disk writes per commit across the
        // group); atomicity comes from the state machine's markers instead.
        for (k, v) in writes {
            match v {
                Some(v) => self.tree.insert(k.as_slice(), v.as_slice()).map(|_| ()),
                None => self.tree.remove(k.as_slice()).map(|_| ()),
            }
            .map_err(|e| EngineError::Write(Box::new(e)))?;
        }
        Ok(())
    }

    fn replace_all(&self, pairs: Vec<Pair>) -> Result<(), EngineError> {
        // One batch on one tree is atomic in sled (also across a crash).
        let mut batch = sled::Batch::default();
        for k in self.tree.iter().keys() {
            let k = k.map_err(|e| EngineError::Replace(Box::new(e)))?;
            batch.remove(k);
        }
        for (k, v) in pairs {
            batch.insert(k, v);
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| EngineError::Replace(Box::new(e)))
    }

    fn flush(&self) -> Result<(), EngineError> {
        self.tree
            .flush()
            .map(|_| ())
            .map_err(|e| EngineError::Flush(Box::new(e)))
    }
}
