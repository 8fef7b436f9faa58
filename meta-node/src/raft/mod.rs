//! openraft 0.9 (`storage-v2`) storage for the metadata service (DESIGN §5, `docs/raft-storage.md`).
//!
//! - [`types`]: the [`TypeConfig`] and the state-machine command ([`Command`]) and response.
//! - [`log_store`]: [`LogStore`], the Raft log, vote and committed marker of one group, kept in
//!   the node's shared [`Wal`](crate::wal::Wal).
//! - [`engine`]: [`KvEngine`], the small key-value trait the state machine runs on, and its sled
//!   implementation [`SledEngine`].
//! - [`state_machine`]: [`StateMachine`], a transactional KV per group, with fsynced snapshot
//!   files.

pub mod engine;
pub mod log_store;
pub mod state_machine;
pub mod types;

pub use engine::{EngineError, KvEngine, KvSpace, SledEngine, SledSpace};
pub use log_store::{LogStore, LogStoreError};
pub use state_machine::{KvReader, SnapshotBuilder, StateMachine, StateMachineError, Versioned};
pub use types::{Command, Condition, Key, Response, TypeConfig, Write};
