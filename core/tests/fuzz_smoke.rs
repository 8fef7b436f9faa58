//! The fuzz targets of this crate, run for a bounded time (`dogfs_core::fuzzing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dogfs_core::fuzzing::{drive, names};

#[test]
fn names_fuzz() {
    let seeds: Vec<Vec<u8>> = [
        "photos",
        "a-b.c",
        "2026/cat.jpg",
        "x/../y",
        "",
        "0123456789abcdef0123456789abcdef",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([vec![b'k'; 1025], vec![0xff, 0xfe, 0]])
    .collect();
    assert!(drive("names", &seeds, names) > seeds.len() as u64);
}
