//! DogFS metadata service (DESIGN §5).
//!
//! - [`wal`]: the write-ahead log that the Raft log and vote of every group are stored in
//!   (`docs/wal.md`).
//! - [`raft`]: openraft 0.9 storage on it: the log store over the WAL and the transactional
//!   key-value state machine on sled, with snapshot files (`docs/raft-storage.md`).

pub mod catalog;
pub mod raft;
pub mod wal;
