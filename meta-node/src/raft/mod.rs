//! openraft 0.9 (`storage-v2`) storage for the metadata service (DESIGN §5, `docs/raft-storage.md`).
//!
//! - [`types`]: the [`TypeConfig`] and the state-machine command ([`Command`]) and response.
//! - [`log_store`]: [`LogStore`], the Raft log, vote and committed marker of one group, kept in
//!   the node's shared [`Wal`](crate::wal::Wal).
//! - [`engine`]: [`KvEngine`], the small key-value trait the state machine runs on, and its sled
//!   implementation [`SledEngine`].
//! - [`state_machine`]: [`StateMachine`], a conditional KV per group (crash-atomic entries),
//!   with fsynced snapshot files.
//! - [`network`]: the gRPC client side of the Raft transport ([`NetworkFactory`], one pooled
//!   channel per peer shared by all groups).
//! - [`link`], [`stream`], [`frame`]: the node-pair stream that carries every group's Vote and
//!   AppendEntries between two nodes in shared frames (caller, callee, framing).
//! - [`server`]: the gRPC `RaftService`, routing messages by group id ([`RaftServer`]).
//! - [`restored`]: the extra wait of reads on a leadership resumed at startup.
//! - [`node`]: [`MultiRaft`], every group of one node on one WAL and one sled database
//!   (`docs/raft-network.md`).

pub mod bytes_serde;
pub mod engine;
pub mod frame;
pub mod link;
pub mod log_store;
pub mod network;
pub mod node;
pub mod restored;
pub mod server;
pub mod state_machine;
pub mod stream;
pub mod types;

pub use engine::{EngineError, KvEngine, KvSpace, SledEngine, SledSpace};
pub use frame::{TransportCounts, TransportStats};
pub use log_store::{LogStore, LogStoreError};
pub use network::{Connections, GroupClient, NetworkFactory, TransportError, TransportMode};
pub use node::{MultiRaft, NodeConfig, NodeError, RaftHandle};
pub use server::{CallKind, RaftRegistry, RaftServer, ServerError};
pub use state_machine::{KvReader, SnapshotBuilder, StateMachine, StateMachineError, Versioned};
pub use types::{Command, Condition, Key, Response, TypeConfig, Write};
