//! Fuzz entry points of the shard file format (`dogfs_core::fuzzing` explains how they run).

use crate::format::{FOOTER_LEN, Footer, decode_table};

/// A shard file's footer and block table from arbitrary bytes (the last 32 bytes are the
/// footer, the length of the whole is the file length): errors, never panics; a decoded
/// table has one CRC per 64 KiB block of the data.
pub fn shard_file(data: &[u8]) {
    if data.len() < FOOTER_LEN {
        return;
    }
    let (head, tail) = data.split_at(data.len() - FOOTER_LEN);
    let mut b = [0u8; FOOTER_LEN];
    b.copy_from_slice(tail);
    for file_len in [data.len() as u64, u64::MAX, 0] {
        if let Ok(footer) = Footer::decode(&b, file_len) {
            assert_eq!(
                Footer::decode(&footer.encode(), file_len).ok(),
                Some(footer)
            );
            let _ = decode_table(head, &footer);
        }
    }
}
