//! The on-disk shard store. Blocking I/O: callers on an async runtime run these calls in
//! `spawn_blocking`.
//!
//! Layout under the data directory:
//! ```text
//! identity               node id (UUID) and format version, written once
//! lock                   flock'ed while a process serves this directory
//! shards/<aa>/<bb>/<id>  one file per shard (see `format`)
//! tmp/                   uploads in progress; emptied at start
//! ```
//! Paths come from the parsed `ShardId` alone, never from request strings.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use bytes::Bytes;
use dogfs_core::checksum::{BLOCK_SIZE, BlockHasher, crc32c};
use dogfs_core::ids::ShardId;
use tracing::{info, warn};
use uuid::Uuid;

use crate::format::{self, FOOTER_LEN, Footer, FormatError};

const IDENTITY_FILE: &str = "identity";
const FORMAT_VERSION: u32 = 1;

/// Errors from the store, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("data directory {path} is in use by another dogfs-chunk process")]
    Locked { path: PathBuf },
    #[error("locking data directory {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("reading identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("scanning {path}: {source}")]
    Scan { path: PathBuf, source: io::Error },
    #[error("shard {0} not found")]
    NotFound(ShardId),
    #[error(
        "not enough space for shard {id} of {size} bytes: {available} bytes available above the {reserve}-byte reserve"
    )]
    NoSpace {
        id: ShardId,
        size: u64,
        available: u64,
        reserve: u64,
    },
    #[error("shard {id}: received more than the declared {declared} bytes")]
    TooMuchData { id: ShardId, declared: u64 },
    #[error("shard {id}: received {received} bytes but the header declared {declared}")]
    ShortData {
        id: ShardId,
        received: u64,
        declared: u64,
    },
    #[error(
        "shard {id}: checksum mismatch: sender's crc32c {expected:08x}, received data has {actual:08x}; nothing stored"
    )]
    UploadChecksum {
        id: ShardId,
        expected: u32,
        actual: u32,
    },
    #[error("shard {id} already exists with different content (size {size}, crc32c {crc:08x})")]
    AlreadyExists { id: ShardId, size: u64, crc: u32 },
    #[error("shard {id}: block {block} fails its checksum")]
    Corrupt { id: ShardId, block: u64 },
    #[error("shard {id}: damaged file: {source}")]
    Damaged { id: ShardId, source: FormatError },
    #[error("range offset={offset} length={length} is past the end of shard {id} (size {size})")]
    OutOfRange {
        id: ShardId,
        offset: u64,
        length: u64,
        size: u64,
    },
    #[error("{step} for shard {id}: {source}")]
    Io {
        step: &'static str,
        id: ShardId,
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Fs {
        step: &'static str,
        source: io::Error,
    },
    #[error(
        "shard {id}: the store was wiped while it was being written (this server was removed \
         from the cluster and rejoined under a new id); nothing stored"
    )]
    Wiped { id: ShardId },
}

impl StoreError {
    /// True when the error means stored bytes are bad (as opposed to a request or I/O fault).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::Damaged { .. }
        )
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Bytes of free space never used for shards.
    pub reserve: u64,
    /// Upper bound on bytes used for shards, below the file system's size (dev clusters and
    /// tests share one disk between several servers).
    pub capacity: Option<u64>,
}

/// What is known about one stored shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMeta {
    pub id: ShardId,
    pub size: u64,
    pub crc32c: u32,
    pub created_unix: i64,
}

/// Space accounting as NodeInfo and heartbeats report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub capacity: u64,
    pub used: u64,
    pub available: u64,
    pub reserve: u64,
}

/// Counters of faults since start.
#[derive(Debug, Default)]
pub struct FaultCounters {
    pub checksum_errors: AtomicU64,
    pub io_errors: AtomicU64,
}

/// What `Store::wipe_for_new_identity` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WipeReport {
    pub old_id: Uuid,
    pub new_id: Uuid,
    /// Shard files deleted, and their bytes (the store's own counters before the wipe).
    pub shards: u64,
    pub bytes: u64,
    /// Unfinished uploads (temp files) deleted.
    pub uploads: usize,
}

/// The node id and how many times the store was wiped. Commits and deletes hold it for
/// reading, a wipe for writing, so a wipe never interleaves with a link or an unlink.
#[derive(Debug)]
struct Identity {
    node_id: Uuid,
    wipes: u64,
}

/// The shard store of one chunk server.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    shards_dir: PathBuf,
    tmp_dir: PathBuf,
    identity: RwLock<Identity>,
    reserve: u64,
    capacity: Option<u64>,
    used: AtomicU64,
    count: AtomicU64,
    /// Bytes promised to uploads in flight, so concurrent uploads cannot together eat into
    /// the reserve.
    pending: AtomicU64,
    tmp_seq: AtomicU64,
    corrupt: Mutex<BTreeSet<ShardId>>,
    pub faults: FaultCounters,
    // Held for the life of the store: the flock is released when the file closes.
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store: takes the directory lock, reads or writes the
    /// identity, removes uploads a crash left in `tmp/`, and counts what is stored.
    pub fn open(cfg: &StoreConfig) -> Result<Self> {
        let root = cfg.data_dir.clone();
        let shards_dir = root.join("shards");
        let tmp_dir = root.join("tmp");
        for d in [&root, &shards_dir, &tmp_dir] {
            fs::create_dir_all(d).map_err(|source| StoreError::CreateDir {
                path: d.clone(),
                source,
            })?;
        }
        let lock = lock_dir(&root)?;
        let node_id = load_or_create_identity(&root)?;
        let removed = clean_tmp(&tmp_dir)?;
        if removed > 0 {
            info!(removed, "removed unfinished uploads left by an earlier run");
        }
        let (count, used) = scan(&shards_dir)?;
        info!(%node_id, shards = count, used_bytes = used, dir = %root.display(), "store opened");
        Ok(Store {
            root,
            shards_dir,
            tmp_dir,
            identity: RwLock::new(Identity { node_id, wipes: 0 }),
            reserve: cfg.reserve,
            capacity: cfg.capacity,
            used: AtomicU64::new(used),
            count: AtomicU64::new(count),
            pending: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            corrupt: Mutex::new(BTreeSet::new()),
            faults: FaultCounters::default(),
            _lock: lock,
        })
    }

    /// The node id; it changes only when the store is wiped to rejoin as a new server.
    pub fn node_id(&self) -> Uuid {
        self.identity().node_id
    }

    fn identity(&self) -> RwLockReadGuard<'_, Identity> {
        // Nothing panics while holding it for writing with the fields half updated.
        self.identity.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes every shard file and unfinished upload and gives the store a new node id,
    /// persisted like the first one. For a server metadata removed: its id is never reused,
    /// and removal is only allowed once nothing references its shards, so it rejoins as a new,
    /// empty server (`--rejoin-when-removed`).
    ///
    /// Crash-safe by order: the identity is replaced last, so a crash part way leaves the old
    /// id, which metadata refuses again, and the next start wipes the rest. Uploads in flight
    /// lose their temp files and fail at commit (`Wiped`) rather than linking a shard nobody
    /// references under the new id.
    pub fn wipe_for_new_identity(&self) -> Result<WipeReport> {
        let mut ident = self
            .identity
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let fs_err = |step| move |source| StoreError::Fs { step, source };
        let uploads = clean_tmp(&self.tmp_dir)?;
        fsync_dir(&self.tmp_dir).map_err(fs_err("syncing tmp folder after wipe"))?;
        let shards = self.count.load(Ordering::Relaxed);
        let bytes = self.used.load(Ordering::Relaxed);
        for a in sorted_hex_dirs(&self.shards_dir)? {
            fs::remove_dir_all(self.shards_dir.join(&a))
                .map_err(fs_err("removing a shard folder"))?;
        }
        fsync_dir(&self.shards_dir).map_err(fs_err("syncing shards folder after wipe"))?;
        let new_id = Uuid::new_v4();
        write_identity(&self.root, new_id).map_err(|e| StoreError::Identity {
            path: self.root.join(IDENTITY_FILE),
            reason: format!("writing: {e}"),
        })?;
        // Exact, whatever the counters said: nothing can link or unlink while we hold the lock.
        let (count, used) = scan(&self.shards_dir)?;
        self.count.store(count, Ordering::Relaxed);
        self.used.store(used, Ordering::Relaxed);
        lock_set(&self.corrupt).clear();
        let old_id = ident.node_id;
        ident.node_id = new_id;
        ident.wipes += 1;
        Ok(WipeReport {
            old_id,
            new_id,
            shards,
            bytes,
            uploads,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn shard_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The path of a shard's file, derived from its id alone.
    pub fn shard_path(&self, id: ShardId) -> PathBuf {
        let (a, b) = id.fanout();
        self.shards_dir.join(a).join(b).join(id.to_string())
    }

    /// Capacity, usage and what is still writable above the reserve.
    pub fn space(&self) -> Result<Space> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| StoreError::Fs {
            step: "statvfs of data directory",
            source: e.into(),
        })?;
        let fs_total = st.f_blocks.saturating_mul(st.f_frsize);
        let fs_free = st.f_bavail.saturating_mul(st.f_frsize);
        let used = self.used.load(Ordering::Relaxed);
        let capacity = self.capacity.map_or(fs_total, |c| c.min(fs_total));
        let free = fs_free.min(capacity.saturating_sub(used));
        let available = free
            .saturating_sub(self.reserve)
            .saturating_sub(self.pending.load(Ordering::Relaxed));
        Ok(Space {
            capacity,
            used,
            available,
            reserve: self.reserve,
        })
    }

    /// Starts an upload of `size` bytes: checks space, reserves it, and opens a temp file.
    pub fn begin_put(self: &Arc<Self>, id: ShardId, size: u64) -> Result<ShardWriter> {
        let on_disk = format::file_len_for(size).ok_or(StoreError::NoSpace {
            id,
            size,
            available: 0,
            reserve: self.reserve,
        })?;
        let space = self.space()?;
        if on_disk > space.available {
            return Err(StoreError::NoSpace {
                id,
                size,
                available: space.available,
                reserve: self.reserve,
            });
        }
        let wipes = self.identity().wipes;
        self.pending.fetch_add(on_disk, Ordering::Relaxed);
        let reservation = Reservation {
            store: Arc::clone(self),
            bytes: on_disk,
        };
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self
            .tmp_dir
            .join(format!("{id}.{}.{seq}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|source| self.io_err("creating temp file", id, source))?;
        Ok(ShardWriter {
            store: Arc::clone(self),
            id,
            declared: size,
            file: Some(file),
            tmp_path,
            hasher: BlockHasher::new(),
            wipes,
            _reservation: reservation,
        })
    }

    /// Reads the footer of a stored shard.
    pub fn stat(&self, id: ShardId) -> Result<ShardMeta> {
        let (file, footer, created) = self.open_shard(id)?;
        drop(file);
        Ok(ShardMeta {
            id,
            size: footer.data_len,
            crc32c: footer.whole_crc,
            created_unix: created,
        })
    }

    /// Opens a shard for range reads, checking its footer and block table.
    pub fn reader(self: &Arc<Self>, id: ShardId) -> Result<ShardReader> {
        let (file, footer, created) = self.open_shard(id)?;
        let nblocks = dogfs_core::checksum::block_count(footer.data_len);
        let mut table = vec![0u8; (nblocks * 4) as usize];
        file.read_exact_at(&mut table, footer.data_len)
            .map_err(|e| self.io_err("reading block table", id, e))?;
        let blocks = format::decode_table(&table, &footer).map_err(|source| {
            self.note_corrupt(id);
            StoreError::Damaged { id, source }
        })?;
        Ok(ShardReader {
            store: Arc::clone(self),
            meta: ShardMeta {
                id,
                size: footer.data_len,
                crc32c: footer.whole_crc,
                created_unix: created,
            },
            file,
            blocks,
        })
    }

    /// Deletes a shard; `Ok(false)` when it was not there.
    pub fn delete(&self, id: ShardId) -> Result<bool> {
        // Held to the end, so a wipe cannot reset the counters between unlink and update.
        let _ident = self.identity();
        let path = self.shard_path(id);
        // A shard that is gone is no longer corrupt here, however it went (GC after a repair,
        // or an operator removing the file): heartbeats stop naming it either way.
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                lock_set(&self.corrupt).remove(&id);
                return Ok(false);
            }
            Err(e) => return Err(self.io_err("stat before delete", id, e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                lock_set(&self.corrupt).remove(&id);
                return Ok(false);
            }
            Err(e) => return Err(self.io_err("deleting shard file", id, e)),
        }
        if let Some(dir) = path.parent() {
            fsync_dir(dir).map_err(|e| self.io_err("syncing folder after delete", id, e))?;
        }
        self.used.fetch_sub(len, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        lock_set(&self.corrupt).remove(&id);
        Ok(true)
    }

    /// Up to `limit` shards with ids greater than `start_after`, in ascending order.
    pub fn list(&self, start_after: Option<ShardId>, limit: usize) -> Result<Vec<ShardMeta>> {
        let mut out = Vec::new();
        self.walk_ids(start_after, |id| {
            match self.stat(id) {
                Ok(m) => out.push(m),
                // Deleted between readdir and open: not an error for a listing.
                Err(StoreError::NotFound(_)) => return Ok(ControlFlow::Continue(())),
                // A damaged file is still a stored shard; list it so repair sees it.
                Err(e) if e.is_corruption() => out.push(ShardMeta {
                    id,
                    size: 0,
                    crc32c: 0,
                    created_unix: 0,
                }),
                Err(e) => return Err(e),
            }
            Ok(if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(out)
    }

    /// Visits stored shard ids greater than `start_after` in ascending order until `f`
    /// breaks. Memory stays at one fan-out folder's names, whatever the store holds.
    pub fn walk_ids(
        &self,
        start_after: Option<ShardId>,
        mut f: impl FnMut(ShardId) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let (a0, b0) = start_after.map(|s| s.fanout()).unzip();
        for a in sorted_hex_dirs(&self.shards_dir)? {
            if a0.as_ref().is_some_and(|x| a < *x) {
                continue;
            }
            let adir = self.shards_dir.join(&a);
            for b in sorted_hex_dirs(&adir)? {
                if a0.as_ref() == Some(&a) && b0.as_ref().is_some_and(|x| b < *x) {
                    continue;
                }
                let mut ids: Vec<ShardId> = read_dir_names(&adir.join(&b))?
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .filter(|id| start_after.is_none_or(|s| *id > s))
                    .collect();
                ids.sort_unstable();
                for id in ids {
                    if f(id)?.is_break() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Shards found corrupt since start (by reads or the scrubber).
    pub fn corrupt_shards(&self) -> Vec<ShardId> {
        lock_set(&self.corrupt).iter().copied().collect()
    }

    /// At most `limit` corrupt shards, lowest ids first (heartbeats carry a bounded list).
    pub fn corrupt_shards_limited(&self, limit: usize) -> Vec<ShardId> {
        lock_set(&self.corrupt)
            .iter()
            .take(limit)
            .copied()
            .collect()
    }

    /// How many shards are known to be corrupt.
    pub fn corrupt_count(&self) -> usize {
        lock_set(&self.corrupt).len()
    }

    /// Bytes of shard files stored (data, block tables and footers), the store's own count.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn note_corrupt(&self, id: ShardId) {
        self.faults.checksum_errors.fetch_add(1, Ordering::Relaxed);
        if lock_set(&self.corrupt).insert(id) {
            warn!(shard_id = %id, "shard is corrupt");
        }
        // A reader that opened the file before a delete can find the corruption after the
        // delete cleared the set; an entry for a file that is gone would then be reported to
        // metadata forever. Delete unlinks before it clears, so checking after inserting
        // closes the race.
        if matches!(fs::symlink_metadata(self.shard_path(id)), Err(e) if e.kind() == ErrorKind::NotFound)
        {
            lock_set(&self.corrupt).remove(&id);
        }
    }

    fn io_err(&self, step: &'static str, id: ShardId, source: io::Error) -> StoreError {
        if source.kind() == ErrorKind::NotFound {
            return StoreError::NotFound(id);
        }
        self.faults.io_errors.fetch_add(1, Ordering::Relaxed);
        StoreError::Io { step, id, source }
    }

    fn open_shard(&self, id: ShardId) -> Result<(File, Footer, i64)> {
        let file = File::open(self.shard_path(id))
            .map_err(|e| self.io_err("opening shard file", id, e))?;
        let md = file
            .metadata()
            .map_err(|e| self.io_err("stat of shard file", id, e))?;
        let len = md.len();
        if len < FOOTER_LEN as u64 {
            self.note_corrupt(id);
            return Err(StoreError::Damaged {
                id,
                source: FormatError::TooShort { len },
            });
        }
        let mut fb = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut fb, len - FOOTER_LEN as u64)
            .map_err(|e| self.io_err("reading footer", id, e))?;
        let footer = Footer::decode(&fb, len).map_err(|source| {
            self.note_corrupt(id);
            StoreError::Damaged { id, source }
        })?;
        let created = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        Ok((file, footer, created))
    }
}

/// Returns reserved space to the store when an upload ends, however it ends.
#[derive(Debug)]
struct Reservation {
    store: Arc<Store>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.store.pending.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// An upload in progress. Dropping it without `commit` removes the temp file, so a cut
/// stream never leaves a visible (or any) shard.
#[derive(Debug)]
pub struct ShardWriter {
    store: Arc<Store>,
    id: ShardId,
    declared: u64,
    file: Option<File>,
    tmp_path: PathBuf,
    hasher: BlockHasher,
    /// The store's wipe count when the upload began: a wipe since then voids it.
    wipes: u64,
    _reservation: Reservation,
}

impl ShardWriter {
    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn received(&self) -> u64 {
        self.hasher.len()
    }

    pub fn declared(&self) -> u64 {
        self.declared
    }

    /// CRC32C of the bytes written so far, without finishing the upload: a repair checks the
    /// rebuilt shard against its recorded checksum before deciding to commit.
    pub fn checksum(&self) -> u32 {
        self.hasher.clone().finish().1
    }

    /// Appends bytes to the temp file.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.hasher.len() + data.len() as u64 > self.declared {
            return Err(StoreError::TooMuchData {
                id: self.id,
                declared: self.declared,
            });
        }
        let id = self.id;
        let file = self.file.as_mut().ok_or_else(|| StoreError::Io {
            step: "writing after commit",
            id,
            source: io::Error::other("writer already finished"),
        })?;
        if let Err(e) = file.write_all(data) {
            return Err(self.write_err(e));
        }
        self.hasher.update(data);
        Ok(())
    }

    /// Checks length and checksum, writes the block table and footer, syncs, and links the
    /// file into place. Idempotent for a retried upload of identical bytes.
    pub fn commit(mut self, expected_crc: u32) -> Result<ShardMeta> {
        let id = self.id;
        let received = self.hasher.len();
        if received != self.declared {
            return Err(StoreError::ShortData {
                id,
                received,
                declared: self.declared,
            });
        }
        let (blocks, whole) = std::mem::take(&mut self.hasher).finish();
        if whole != expected_crc {
            return Err(StoreError::UploadChecksum {
                id,
                expected: expected_crc,
                actual: whole,
            });
        }
        let table = format::encode_table(&blocks);
        let footer = Footer {
            data_len: received,
            whole_crc: whole,
            table_crc: crc32c(&table),
        };
        let Some(mut file) = self.file.take() else {
            return Err(StoreError::Io {
                step: "committing",
                id,
                source: io::Error::other("writer already finished"),
            });
        };
        let written = file
            .write_all(&table)
            .and_then(|()| file.write_all(&footer.encode()))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            return Err(self.write_err(e));
        }
        drop(file);

        let store = Arc::clone(&self.store);
        // Held through link and counters: a wipe waits for this commit, or voids it.
        let ident = store.identity();
        if ident.wipes != self.wipes {
            return Err(StoreError::Wiped { id });
        }
        let final_path = store.shard_path(id);
        let dir = final_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        ensure_fanout_dirs(&store.shards_dir, &dir)
            .map_err(|e| store.io_err("creating fan-out folder", id, e))?;
        // link() never replaces an existing file, so two uploads of one id cannot tear or
        // overwrite each other: the first to link wins, the second compares.
        match fs::hard_link(&self.tmp_path, &final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let existing = store.stat(id)?;
                return if existing.size == received && existing.crc32c == whole {
                    Ok(existing)
                } else {
                    Err(StoreError::AlreadyExists {
                        id,
                        size: existing.size,
                        crc: existing.crc32c,
                    })
                };
            }
            Err(e) => return Err(store.io_err("linking shard into place", id, e)),
        }
        fsync_dir(&dir).map_err(|e| store.io_err("syncing shard folder", id, e))?;
        let on_disk = format::file_len_for(received).unwrap_or(received);
        store.used.fetch_add(on_disk, Ordering::Relaxed);
        store.count.fetch_add(1, Ordering::Relaxed);
        // The temp name goes in Drop; a crash before that leaves a second link that the
        // next start removes.
        Ok(ShardMeta {
            id,
            size: received,
            crc32c: whole,
            created_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        })
    }

    fn write_err(&self, e: io::Error) -> StoreError {
        // ENOSPC / EDQUOT surface as the same clean refusal as the reserve check.
        if matches!(e.raw_os_error(), Some(28) | Some(122)) {
            return StoreError::NoSpace {
                id: self.id,
                size: self.declared,
                available: 0,
                reserve: self.store.reserve,
            };
        }
        self.store.io_err("writing shard data", self.id, e)
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        drop(self.file.take());
        if let Err(e) = fs::remove_file(&self.tmp_path)
            && e.kind() != ErrorKind::NotFound
        {
            warn!(path = %self.tmp_path.display(), error = %e, "could not remove temp file");
        }
    }
}

/// An open shard whose footer and block table have been verified.
#[derive(Debug)]
pub struct ShardReader {
    store: Arc<Store>,
    meta: ShardMeta,
    file: File,
    blocks: Vec<u32>,
}

impl ShardReader {
    pub fn meta(&self) -> ShardMeta {
        self.meta
    }

    /// Checks that `[offset, offset+length)` lies inside the shard.
    pub fn check_range(&self, offset: u64, length: u64) -> Result<()> {
        let end = offset.checked_add(length);
        if end.is_none_or(|e| e > self.meta.size) {
            return Err(StoreError::OutOfRange {
                id: self.meta.id,
                offset,
                length,
                size: self.meta.size,
            });
        }
        Ok(())
    }

    /// Reads `[offset, offset+length)`, verifying every block it touches before returning
    /// any byte of it. Reads move the file position: one reader serves one stream.
    pub fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        self.check_range(offset, length)?;
        if length == 0 {
            return Ok(Bytes::new());
        }
        let bs = BLOCK_SIZE as u64;
        let first = offset / bs;
        let last = (offset + length - 1) / bs;
        let start = first * bs;
        let end = ((last + 1) * bs).min(self.meta.size);
        // read_to_end fills spare capacity without zeroing it first: one pass fewer.
        let want = (end - start) as usize;
        let mut buf = Vec::with_capacity(want);
        let mut f = &self.file;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.take(want as u64).read_to_end(&mut buf))
            .map_err(|e| self.store.io_err("reading shard data", self.meta.id, e))?;
        if buf.len() != want {
            self.store.faults.io_errors.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Io {
                step: "reading shard data",
                id: self.meta.id,
                source: io::Error::new(ErrorKind::UnexpectedEof, "shard file shrank while open"),
            });
        }
        for (i, chunk) in buf.chunks(BLOCK_SIZE).enumerate() {
            let block = first + i as u64;
            let stored = self.blocks.get(block as usize).copied();
            if stored != Some(crc32c(chunk)) {
                self.store.note_corrupt(self.meta.id);
                return Err(StoreError::Corrupt {
                    id: self.meta.id,
                    block,
                });
            }
        }
        let buf = Bytes::from(buf);
        let from = (offset - start) as usize;
        Ok(buf.slice(from..from + length as usize))
    }

    /// Reads and verifies the whole shard in pieces of `piece` bytes, including the
    /// whole-shard checksum (scrubber).
    pub fn verify_all(&self, piece: u64, mut on_piece: impl FnMut(u64)) -> Result<()> {
        let mut crc = 0u32;
        let mut off = 0;
        while off < self.meta.size {
            let n = piece.min(self.meta.size - off);
            let b = self.read(off, n)?;
            crc = dogfs_core::checksum::crc32c_append(crc, &b);
            on_piece(n);
            off += n;
        }
        if crc != self.meta.crc32c {
            self.store.note_corrupt(self.meta.id);
            return Err(StoreError::Corrupt {
                id: self.meta.id,
                block: 0,
            });
        }
        Ok(())
    }
}

fn lock_set(m: &Mutex<BTreeSet<ShardId>>) -> std::sync::MutexGuard<'_, BTreeSet<ShardId>> {
    // A panic while holding this lock cannot leave the set inconsistent (single inserts).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_dir(root: &Path) -> Result<File> {
    let path = root.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Lock {
            path: path.clone(),
            source,
        })?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(StoreError::Locked {
            path: root.to_path_buf(),
        }),
        Err(e) => Err(StoreError::Lock {
            path,
            source: e.into(),
        }),
    }
}

fn load_or_create_identity(root: &Path) -> Result<Uuid> {
    let path = root.join(IDENTITY_FILE);
    let bad = |reason: String| StoreError::Identity {
        path: path.clone(),
        reason,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut id = None;
            let mut format = None;
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("node_id", v)) => id = Some(v.trim().to_owned()),
                    Some(("format", v)) => format = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
            if format.as_deref() != Some(&FORMAT_VERSION.to_string()) {
                return Err(bad(format!("unsupported format {format:?}")));
            }
            let id = id.ok_or_else(|| bad("no node_id line".into()))?;
            // Never replace an unreadable identity: that would make this server a stranger
            // to the metadata service while it still holds shards.
            Uuid::parse_str(&id).map_err(|e| bad(format!("node_id {id:?}: {e}")))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            write_identity(root, id).map_err(|e| bad(format!("writing: {e}")))?;
            info!(node_id = %id, "created a new node identity");
            Ok(id)
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Writes the identity file atomically and durably: temp file, fsync, rename, folder fsync.
fn write_identity(root: &Path, id: Uuid) -> io::Result<()> {
    let path = root.join(IDENTITY_FILE);
    let tmp = root.join(format!("{IDENTITY_FILE}.tmp"));
    let text = format!("node_id={id}\nformat={FORMAT_VERSION}\n");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    fsync_dir(root)
}

fn clean_tmp(tmp: &Path) -> Result<usize> {
    let mut n = 0;
    for name in read_dir_names(tmp)? {
        let p = tmp.join(&name);
        fs::remove_file(&p).map_err(|source| StoreError::Scan { path: p, source })?;
        n += 1;
    }
    Ok(n)
}

fn scan(shards: &Path) -> Result<(u64, u64)> {
    let (mut count, mut used) = (0, 0);
    for a in sorted_hex_dirs(shards)? {
        for b in sorted_hex_dirs(&shards.join(&a))? {
            let dir = shards.join(&a).join(&b);
            let entries = fs::read_dir(&dir).map_err(|source| StoreError::Scan {
                path: dir.clone(),
                source,
            })?;
            for e in entries {
                let e = e.map_err(|source| StoreError::Scan {
                    path: dir.clone(),
                    source,
                })?;
                if let Ok(md) = e.metadata()
                    && md.is_file()
                {
                    count += 1;
                    used += md.len();
                }
            }
        }
    }
    Ok((count, used))
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Scan {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|source| StoreError::Scan {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Ok(n) = e.file_name().into_string() {
            names.push(n);
        }
    }
    Ok(names)
}

/// Two-character lowercase hex folder names, sorted.
fn sorted_hex_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = read_dir_names(dir)?
        .into_iter()
        .filter(|n| n.len() == 2 && n.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Creates `shards/aa` and `shards/aa/bb` as needed, syncing each parent that gained an
/// entry so the folder survives a crash together with the file linked into it.
fn ensure_fanout_dirs(shards: &Path, leaf: &Path) -> io::Result<()> {
    let Some(mid) = leaf.parent() else {
        return Ok(());
    };
    for (dir, parent) in [(mid, shards), (leaf, mid)] {
        match fs::create_dir(dir) {
            Ok(()) => fsync_dir(parent)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
