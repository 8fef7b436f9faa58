//! DogFS metadata service (DESIGN §5).
//!
//! For now this crate holds the write-ahead log that the Raft log and vote of every group are
//! stored in; see `docs/wal.md`.

pub mod wal;
