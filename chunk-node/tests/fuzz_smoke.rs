//! The fuzz targets of this crate, run for a bounded time (`dogfs_core::fuzzing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dogfs_chunk::format::{Footer, encode_table};
use dogfs_core::checksum::crc32c;
use dogfs_core::fuzzing::drive;

/// A shard file's tail as the store writes it: block table, then footer.
fn file(data_len: u64, blocks: &[u32]) -> Vec<u8> {
    let table = encode_table(blocks);
    let footer = Footer {
        data_len,
        whole_crc: 7,
        table_crc: crc32c(&table),
    };
    let mut out = vec![0u8; data_len as usize];
    out.extend_from_slice(&table);
    out.extend_from_slice(&footer.encode());
    out
}

#[test]
fn shard_file_fuzz() {
    let seeds = vec![file(0, &[]), file(10, &[1]), file(70_000, &[1, 2])];
    drive("shard_file", &seeds, dogfs_chunk::fuzzing::shard_file);
}
