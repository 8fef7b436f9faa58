//! Benchmark data without holding it: a reader that generates an object of any size from one
//! random block, and a writer that discards (tokio's `sink`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

    /// A writer that checks what it is given against the bytes `reader(_, seed)` produces,
    /// without holding the object: reading back exactly what was written, at any size.
    pub fn checker(&self, seed: u64) -> PatternCheck {
        PatternCheck {
            block: Arc::clone(&self.0),
            offset: (seed.wrapping_mul(4099) % BLOCK as u64) as usize,
            seen: 0,
            mismatch: None,
        }
    }
}

/// See [`Pattern::checker`].
#[derive(Debug)]
pub struct PatternCheck {
    block: Arc<Vec<u8>>,
    offset: usize,
    seen: u64,
    mismatch: Option<u64>,
}

impl PatternCheck {
    /// Bytes written to it so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The object offset of the first byte that differed, if any did.
    pub fn first_mismatch(&self) -> Option<u64> {
        self.mismatch
    }
}

impl AsyncWrite for PatternCheck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let mut rest = buf;
        while !rest.is_empty() {
            let n = rest.len().min(BLOCK - this.offset);
            let want = &this.block[this.offset..this.offset + n];
            if this.mismatch.is_none() && want != &rest[..n] {
                let at = want
                    .iter()
                    .zip(&rest[..n])
                    .take_while(|(a, b)| a == b)
                    .count();
                this.mismatch = Some(this.seen + at as u64);
            }
            this.seen += n as u64;
            this.offset = (this.offset + n) % BLOCK;
            rest = &rest[n..];
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
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

    #[tokio::test]
    async fn checker_accepts_the_pattern_and_finds_the_first_wrong_byte() {
        use tokio::io::AsyncWriteExt;
        let p = Pattern::new();
        let size = 2 * BLOCK + 777;
        let good = p.bytes(size, 9);
        let mut c = p.checker(9);
        // Odd write sizes, across the block's wrap-around.
        for part in good.chunks(100_003) {
            c.write_all(part).await.unwrap();
        }
        assert_eq!((c.seen(), c.first_mismatch()), (size as u64, None));

        let mut bad = good.to_vec();
        bad[BLOCK + 5] ^= 1;
        bad[BLOCK + 9] ^= 1;
        let mut c = p.checker(9);
        c.write_all(&bad).await.unwrap();
        assert_eq!(c.first_mismatch(), Some(BLOCK as u64 + 5));
        // Another object's bytes are not this one's.
        let mut c = p.checker(10);
        c.write_all(&good[..1000]).await.unwrap();
        assert!(c.first_mismatch().is_some());
    }
}
