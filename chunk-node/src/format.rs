//! The shard file format (version 1).
//!
//! ```text
//! [ data: data_len bytes ]
//! [ block table: one little-endian u32 CRC32C per 64 KiB block of data (last may be short) ]
//! [ footer: 32 bytes ]
//!     magic "DOGSHRD1" | data_len u64 | block_size u32 | whole_crc u32 | table_crc u32 | footer_crc u32
//! ```
//!
//! Data and checksums live in one file so that one rename (link) makes both visible together:
//! a concurrent or crashed upload can never pair data with another upload's checksums. The
//! table goes after the data because the writer only knows it at the end of the stream.

use dogfs_core::checksum::{BLOCK_SIZE, block_count, crc32c};

pub const MAGIC: &[u8; 8] = b"DOGSHRD1";
pub const FOOTER_LEN: usize = 32;

/// Errors from decoding a footer or block table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("file is {len} bytes, shorter than a footer")]
    TooShort { len: u64 },
    #[error("bad magic: not a DogFS shard file")]
    Magic,
    #[error("footer checksum mismatch")]
    FooterChecksum,
    #[error("unsupported block size {0}")]
    BlockSize(u32),
    #[error("file is {actual} bytes but its footer implies {expected}")]
    Length { actual: u64, expected: u64 },
    #[error("block table checksum mismatch")]
    TableChecksum,
}

/// What the footer says about the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub data_len: u64,
    pub whole_crc: u32,
    pub table_crc: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.data_len.to_le_bytes());
        b[16..20].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        b[20..24].copy_from_slice(&self.whole_crc.to_le_bytes());
        b[24..28].copy_from_slice(&self.table_crc.to_le_bytes());
        let c = crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Decodes a footer read from the end of a file of `file_len` bytes and checks that the
    /// file length agrees with it.
    pub fn decode(b: &[u8; FOOTER_LEN], file_len: u64) -> Result<Self, FormatError> {
        if &b[0..8] != MAGIC {
            return Err(FormatError::Magic);
        }
        if crc32c(&b[0..28]) != le32(&b[28..32]) {
            return Err(FormatError::FooterChecksum);
        }
        let block_size = le32(&b[16..20]);
        if block_size as usize != BLOCK_SIZE {
            return Err(FormatError::BlockSize(block_size));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[8..16]);
        let footer = Footer {
            data_len: u64::from_le_bytes(n),
            whole_crc: le32(&b[20..24]),
            table_crc: le32(&b[24..28]),
        };
        let expected = file_len_for(footer.data_len);
        if expected != Some(file_len) {
            return Err(FormatError::Length {
                actual: file_len,
                expected: expected.unwrap_or(u64::MAX),
            });
        }
        Ok(footer)
    }
}

/// Total file length for a shard of `data_len` bytes; `None` on overflow (a corrupt footer).
pub fn file_len_for(data_len: u64) -> Option<u64> {
    block_count(data_len)
        .checked_mul(4)?
        .checked_add(data_len)?
        .checked_add(FOOTER_LEN as u64)
}

/// Serializes the block table.
pub fn encode_table(blocks: &[u32]) -> Vec<u8> {
    blocks.iter().flat_map(|c| c.to_le_bytes()).collect()
}

/// Parses and verifies a block table read from disk.
pub fn decode_table(bytes: &[u8], footer: &Footer) -> Result<Vec<u32>, FormatError> {
    if crc32c(bytes) != footer.table_crc {
        return Err(FormatError::TableChecksum);
    }
    Ok(bytes.chunks_exact(4).map(le32).collect())
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trip_and_corruption() {
        let f = Footer {
            data_len: 200_000,
            whole_crc: 7,
            table_crc: 9,
        };
        let len = file_len_for(f.data_len).unwrap();
        let b = f.encode();
        assert_eq!(Footer::decode(&b, len).unwrap(), f);
        assert!(matches!(
            Footer::decode(&b, len + 1),
            Err(FormatError::Length { .. })
        ));
        for i in 0..FOOTER_LEN {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert!(
                Footer::decode(&bad, len).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn table_round_trip() {
        let blocks = vec![1, 2, 0xdead_beef];
        let t = encode_table(&blocks);
        let f = Footer {
            data_len: 2 * BLOCK_SIZE as u64 + 1,
            whole_crc: 0,
            table_crc: crc32c(&t),
        };
        assert_eq!(decode_table(&t, &f).unwrap(), blocks);
        let mut bad = t.clone();
        bad[5] ^= 1;
        assert_eq!(decode_table(&bad, &f), Err(FormatError::TableChecksum));
    }
}
