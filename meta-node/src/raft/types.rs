//! The Raft type configuration and the state machine's command.
//!
//! The state machine of every group is a small transactional key-value store. A [`Command`] is
//! a batch of [`Condition`]s and [`Write`]s: the writes are applied atomically iff every
//! condition holds, otherwise nothing is written and the [`Response`] names the first condition
//! that failed. Keys live in named trees ([`Key::tree`], e.g. `"bucket"`, `"object"`,
//! `"upload"`), so the catalogue built on top keeps its kinds of records apart. Every stored
//! value carries a version: the index of the Raft log entry that last wrote it, the same on
//! every replica.

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The metadata service's Raft types: node ids are `u64`, nodes carry their gRPC address
    /// ([`BasicNode::addr`]), entries carry [`Command`]s.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Longest tree name, in bytes.
pub const MAX_TREE_NAME: usize = 255;

/// A key in a named tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The tree's name (at most [`MAX_TREE_NAME`] bytes).
    pub tree: String,
    /// The key within the tree.
    #[serde(with = "super::bytes_serde")]
    pub key: Vec<u8>,
}

impl Key {
    /// A key in tree `tree`.
    pub fn new(tree: impl Into<String>, key: impl Into<Vec<u8>>) -> Key {
        Key {
            tree: tree.into(),
            key: key.into(),
        }
    }
}

/// A condition a [`Command`] requires of the current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key holds a value.
    Exists(Key),
    /// The key holds no value.
    Absent(Key),
    /// The key holds exactly these bytes.
    Equals(Key, #[serde(with = "super::bytes_serde")] Vec<u8>),
    /// The key holds a value whose version (index of the log entry that last wrote it) is this.
    VersionEquals(Key, u64),
}

impl Condition {
    /// The key the condition is about.
    pub fn key(&self) -> &Key {
        match self {
            Condition::Exists(k)
            | Condition::Absent(k)
            | Condition::Equals(k, _)
            | Condition::VersionEquals(k, _) => k,
        }
    }
}

/// A write of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Sets the key's value (its version becomes the entry's log index).
    Put(Key, #[serde(with = "super::bytes_serde")] Vec<u8>),
    /// Removes the key (no-op if absent).
    Delete(Key),
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &Key {
        match self {
            Write::Put(k, _) | Write::Delete(k) => k,
        }
    }
}

/// A state-machine command: `writes` are applied atomically iff all `conditions` hold.
/// Writes apply in order (a later write of the same key wins).
///
/// A non-empty `batch` makes the entry a batch of independent commands (group commit at the
/// proposer, so one Raft entry carries many clients' commands): each is applied in order as if
/// it were its own entry with the same log index — its conditions see the writes of the
/// commands before it — and the response is [`Response::Batch`]. A batch command's own
/// `conditions`/`writes` must be empty, and batches do not nest (else `Invalid`). The whole
/// entry is applied as one unit (atomic across crashes, `docs/raft-storage.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Command {
    /// Checked against the state before the command; all must hold.
    pub conditions: Vec<Condition>,
    /// Applied iff every condition holds.
    pub writes: Vec<Write>,
    /// Sub-commands of a batch entry (empty for a plain command).
    #[serde(deserialize_with = "bounded_batch")]
    pub batch: Vec<Command>,
}

/// How deep commands may nest when decoded. Batches do not nest (a nested one is applied as
/// `Invalid`), but decoding must refuse long before the stack runs out: bincode has no depth
/// limit, and a payload of commands nested a thousand deep (24 bytes a level) overflowed the
/// stack of whatever decoded it — a Raft RPC handler, WAL recovery — and aborted the process
/// (found by fuzzing, `fuzz/regressions/raft_messages/nested-batch`).
pub const MAX_COMMAND_DEPTH: u32 = 8;

thread_local! {
    /// Commands being decoded on this thread, outermost first (decoding never awaits).
    static COMMAND_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `Command::batch`, refusing more than [`MAX_COMMAND_DEPTH`] levels of nesting.
fn bounded_batch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Command>, D::Error> {
    /// Leaves the level however decoding ends (an error, or a panic unwinding).
    struct Level;
    impl Drop for Level {
        fn drop(&mut self) {
            COMMAND_DEPTH.with(|c| c.set(c.get().saturating_sub(1)));
        }
    }
    let depth = COMMAND_DEPTH.with(|c| {
        c.set(c.get().saturating_add(1));
        c.get()
    });
    let _level = Level;
    if depth > MAX_COMMAND_DEPTH {
        return Err(serde::de::Error::custom(format_args!(
            "commands nested more than {MAX_COMMAND_DEPTH} deep"
        )));
    }
    Vec::<Command>::deserialize(d)
}

impl Command {
    /// An unconditional batch of writes.
    pub fn writes(writes: Vec<Write>) -> Command {
        Command {
            conditions: Vec::new(),
            writes,
            batch: Vec::new(),
        }
    }

    /// A batch entry of independent commands.
    pub fn batch(commands: Vec<Command>) -> Command {
        Command {
            conditions: Vec::new(),
            writes: Vec::new(),
            batch: commands,
        }
    }
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// All conditions held and the writes were applied; `version` is the entry's log index,
    /// now the version of every key put.
    Applied { version: u64 },
    /// Condition number `index` (0-based, the first that failed) did not hold; nothing was
    /// written.
    ConditionFailed { index: usize },
    /// The command is malformed (e.g. a tree name longer than [`MAX_TREE_NAME`]); nothing was
    /// written. Deterministic on every replica.
    Invalid { reason: String },
    /// A blank or membership entry (no command).
    Internal,
    /// One response per sub-command of a batch entry, in order.
    Batch(Vec<Response>),
}
