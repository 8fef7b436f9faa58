//! Which ETag a PUT stores, and the reader that computes an MD5 one while the bytes stream.
//!
//! The default ETag is the CRC32C form of [`crate::put::etag`]; [`EtagKind::Md5`] stores
//! `hex(MD5(bytes))` instead, as S3 clients expect of a single PUT
//! ([`crate::Client::put_with_md5_etag`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, ReadBuf};

use crate::put::etag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EtagKind {
    Crc32c,
    Md5,
}

/// The ETag of an object small enough to be held whole (inline).
pub(crate) fn etag_of_small(kind: EtagKind, data: &[u8]) -> String {
    match kind {
        EtagKind::Crc32c => etag(crc32c::crc32c(data), 1),
        EtagKind::Md5 => hex(&Md5::digest(data)),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Passes the reader's bytes through, hashing them with MD5 when the kind asks for it.
pub(crate) struct EtagReader<R> {
    inner: R,
    kind: EtagKind,
    md5: Md5,
}

impl<R> EtagReader<R> {
    pub(crate) fn new(inner: R, kind: EtagKind) -> Self {
        EtagReader {
            inner,
            kind,
            md5: Md5::new(),
        }
    }

    pub(crate) fn kind(&self) -> EtagKind {
        self.kind
    }

    /// `hex(MD5)` of every byte read so far, for [`EtagKind::Md5`]; `None` otherwise.
    pub(crate) fn md5_hex(&self) -> Option<String> {
        (self.kind == EtagKind::Md5).then(|| hex(&self.md5.clone().finalize()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for EtagReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.kind == EtagKind::Md5
            && let Poll::Ready(Ok(())) = &r
        {
            this.md5.update(&buf.filled()[before..]);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn small_etags_of_both_kinds() {
        assert_eq!(
            etag_of_small(EtagKind::Md5, b""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            etag_of_small(EtagKind::Md5, b"hello"),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(
            etag_of_small(EtagKind::Crc32c, b"hello"),
            etag(crc32c::crc32c(b"hello"), 1)
        );
    }

    #[tokio::test]
    async fn the_reader_hashes_what_passes_through_in_any_chunking() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = EtagReader::new(&data[..], EtagKind::Md5);
        let mut out = Vec::new();
        let mut buf = [0u8; 777];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(r.md5_hex().unwrap(), hex(&Md5::digest(&data)));
        let plain = EtagReader::new(&data[..], EtagKind::Crc32c);
        assert_eq!(plain.md5_hex(), None);
    }
}
