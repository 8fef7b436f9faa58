//! Fuzz entry points of the metadata service's parsers (`dogfs_core::fuzzing` explains how
//! they run): WAL records, stored catalogue records, and Raft messages and state-machine
//! commands as decoded from the wire.

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::catalog::records;
use crate::catalog::{BucketRecord, ObjectVersion, UploadRecord};
use crate::raft::{Command, TypeConfig};
use crate::wal::record::Record;

/// A WAL segment's bytes, decoded record after record as recovery does: each decode returns
/// an error or a record whose length stays inside the buffer, and what decodes re-encodes to
/// the same bytes.
pub fn wal_records(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let mut at = 0;
    while let Ok((rec, len)) = Record::decode(&buf, at) {
        assert!(len > 0 && at + len <= buf.len());
        if let Ok(again) = rec.encode() {
            assert_eq!(&again[..], &buf[at..at + len]);
        }
        at += len;
    }
}

/// Stored catalogue records (format byte + bincode): errors, never panics.
pub fn stored_records(data: &[u8]) {
    let _ = records::decode::<ObjectVersion>("object", data);
    let _ = records::decode::<UploadRecord>("upload", data);
    let _ = records::decode::<BucketRecord>("bucket", data);
    let _ = records::decode::<crate::tokens::TokenRecord>("token", data);
}

/// Raft messages as a peer's payload arrives (`raft/server.rs` decodes these) and the
/// commands in log entries: errors, never panics.
pub fn raft_messages(data: &[u8]) {
    let _ = bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = bincode::deserialize::<VoteRequest<u64>>(data);
    let _ = bincode::deserialize::<InstallSnapshotRequest<TypeConfig>>(data);
    let _ = bincode::deserialize::<Command>(data);
}
