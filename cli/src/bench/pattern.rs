//! Benchmark data without holding it: a reader that generates an object of any size from one
//! random block, and a writer that discards (tokio's `sink`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Size of the random block objects are cut from.
const BLOCK: usize = 1 << 20;

/// One random block shared by every generated object.
#[derive(Debug, Clone)]
pub struct Pattern(Arc<Vec<u8>>);

impl Pattern {
    pub fn new() -> Self {
        let mut block = vec![0u8; BLOCK];
        rand::fill(&mut block[..]);
        Pattern(Arc::new(block))
    }

    /// `size` bytes starting at `seed`'s offset in the block, so objects differ from each
    /// other.
    pub fn reader(&self, size: u64, seed: u64) -> PatternReader {
        PatternReader {
            block: Arc::clone(&self.0),
            remaining: size,
            offset: (seed.wrapping_mul(4099) % BLOCK as u64) as usize,
        }
    }

    /// The same bytes `reader(size, seed)` produces, in memory (small objects).
    pub fn bytes(&self, size: usize, seed: u64) -> bytes::Bytes {
        let mut out = Vec::with_capacity(size);
        let mut offset = (seed.wrapping_mul(4099) % BLOCK as u64) as usize;
        while out.len() < size {
            let n = (size - out.len()).min(BLOCK - offset);
            out.extend_from_slice(&self.0[offset..offset + n]);
            offset = (offset + n) % BLOCK;
        }
        bytes::Bytes::from(out)
    }
}

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
pub struct PatternReader {
    block: Arc<Vec<u8>>,
    remaining: u64,
    offset: usize,
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let n = (buf.remaining() as u64)
            .min(this.remaining)
            .min((BLOCK - this.offset) as u64) as usize;
        buf.put_slice(&this.block[this.offset..this.offset + n]);
        this.offset = (this.offset + n) % BLOCK;
        this.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reader_and_bytes_agree() {
        let p = Pattern::new();
        for (size, seed) in [
            (0usize, 1u64),
            (10, 2),
            (BLOCK + 12_345, 3),
            (3 * BLOCK, 300),
        ] {
            let mut out = Vec::new();
            p.reader(size as u64, seed)
                .read_to_end(&mut out)
                .await
                .unwrap();
            assert_eq!(out.len(), size);
            assert_eq!(&out[..], &p.bytes(size, seed)[..]);
        }
    }
}
