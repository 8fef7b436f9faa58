//! CRC32C (Castagnoli) checksums: one per 64 KiB block of every shard file, plus one over the
//! whole shard. The `crc32c` crate uses the SSE4.2 / ARMv8 instructions when present.

use std::sync::OnceLock;

/// Bytes covered by one block checksum.
pub const BLOCK_SIZE: usize = 64 * 1024;

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Extends a CRC32C computed over earlier bytes with `data`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// Number of blocks needed for `len` bytes.
pub fn block_count(len: u64) -> u64 {
    len.div_ceil(BLOCK_SIZE as u64)
}

/// Computes block checksums and the whole-data checksum over a stream of byte slices of any
/// sizes, without buffering more than the slices it is given.
#[derive(Debug, Clone, Default)]
pub struct BlockHasher {
    blocks: Vec<u32>,
    current: u32,
    current_len: usize,
    whole: u32,
    total: u64,
}

impl BlockHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let take = (BLOCK_SIZE - self.current_len).min(data.len());
            self.current = crc32c_append(self.current, &data[..take]);
            self.current_len += take;
            data = &data[take..];
            if self.current_len == BLOCK_SIZE {
                self.close_block();
            }
        }
    }

    /// One CRC pass over the data: the whole-data checksum is combined from the block
    /// checksums rather than computed a second time.
    fn close_block(&mut self) {
        self.blocks.push(self.current);
        self.whole = if self.current_len == BLOCK_SIZE {
            shift_one_block(self.whole) ^ self.current
        } else {
            crc32c::crc32c_combine(self.whole, self.current, self.current_len)
        };
        self.current = 0;
        self.current_len = 0;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The block checksums (the last block may be short) and the whole-data checksum.
    pub fn finish(mut self) -> (Vec<u32>, u32) {
        if self.current_len > 0 {
            self.close_block();
        }
        (self.blocks, self.whole)
    }
}

/// `crc32c_combine(c, 0, BLOCK_SIZE)`: the CRC register advanced over one block of zeros.
/// The operation is linear over GF(2), so it is a table lookup per byte of `c`; the generic
/// combine re-derives the operator on every call, which cost a tenth of an upload's CPU.
fn shift_one_block(c: u32) -> u32 {
    static TABLES: OnceLock<[[u32; 256]; 4]> = OnceLock::new();
    let t = TABLES.get_or_init(|| {
        let bit: [u32; 32] = std::array::from_fn(|i| crc32c::crc32c_combine(1 << i, 0, BLOCK_SIZE));
        std::array::from_fn(|k| {
            std::array::from_fn(|b| {
                (0..8)
                    .filter(|j| b >> j & 1 == 1)
                    .fold(0, |acc, j| acc ^ bit[8 * k + j])
            })
        })
    });
    let b = c.to_le_bytes();
    t[0][usize::from(b[0])]
        ^ t[1][usize::from(b[1])]
        ^ t[2][usize::from(b[2])]
        ^ t[3][usize::from(b[3])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        // RFC 3720 appendix B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    proptest! {
        #[test]
        fn block_shift_matches_generic_combine(c: u32, d: u32) {
            prop_assert_eq!(
                shift_one_block(c) ^ d,
                crc32c::crc32c_combine(c, d, BLOCK_SIZE)
            );
        }

        #[test]
        fn block_hasher_matches_direct_computation(
            len in 0usize..(3 * BLOCK_SIZE + 17),
            cuts in proptest::collection::vec(1usize..100_000, 0..8),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut h = BlockHasher::new();
            let mut rest = &data[..];
            for c in cuts {
                let take = c.min(rest.len());
                h.update(&rest[..take]);
                rest = &rest[take..];
            }
            h.update(rest);
            prop_assert_eq!(h.len(), len as u64);
            let (blocks, whole) = h.finish();
            prop_assert_eq!(whole, crc32c(&data));
            let expected: Vec<u32> = data.chunks(BLOCK_SIZE).map(crc32c).collect();
            prop_assert_eq!(blocks.len() as u64, block_count(len as u64));
            prop_assert_eq!(blocks, expected);
        }
    }
}
