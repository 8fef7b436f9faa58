//! Object bytes between `s3s` and the DogFS client, both ways, with bounded memory.
//!
//! PUT: [`PutBody`] is the `AsyncRead` the client's `put` pulls from. It passes the request
//! body through, hashing it for Content-MD5 and the `x-amz-checksum-*` value (header or
//! aws-chunked trailer), and holds the last bytes back until the body has ended and every
//! digest matched. The client therefore never sees the whole object before it is verified,
//! so it cannot commit a corrupt one: a mismatch fails the read, the client aborts the
//! upload, and the failure is kept in the body for the gateway to answer `BadDigest`.
//!
//! GET: [`object_stream`] runs the client's `get` into a [`ChunkSink`], whose writes become
//! the response body's chunks (one copy, no pipe between), a bounded number queued. The last chunk is held until the `get`
//! finished and read the version the headers describe; otherwise the stream fails, so the
//! client sees a cut connection, never a silently mixed or short object.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Buf, Bytes};
use dogfs_client::{Client, GetOptions};
use futures::{Stream, StreamExt};
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Md5, Sha1, Sha256};
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode, TrailingHeaders};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;
use tracing::{Instrument, debug};

/// Largest chunk handed to the HTTP layer (a larger write is split).
const GET_CHUNK_BYTES: usize = 1 << 20;
/// Chunks queued between the client's `get` and the HTTP response: with the one being sent,
/// at most ~3 MiB per GET, and a slow HTTP client holds the `get` back.
const GET_QUEUE: usize = 2;

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("reading the request body: {message}")]
    Read {
        code: Option<S3ErrorCode>,
        message: String,
    },
    #[error("the request body is longer than its Content-Length {size}")]
    TooLong { size: u64 },
    #[error("the request body ended after {received} of {size} bytes")]
    Incomplete { received: u64, size: u64 },
    #[error("The Content-MD5 you specified did not match what we received.")]
    Md5Mismatch,
    #[error("The Content-MD5 you specified is not valid.")]
    Md5Invalid,
    #[error("The {algorithm} you specified did not match the calculated checksum.")]
    ChecksumMismatch { algorithm: &'static str },
    #[error("Value for {header} is not a valid base64 checksum.")]
    ChecksumInvalid { header: &'static str },
    #[error("The request declares trailer {header} but the body did not carry it.")]
    MissingTrailer { header: &'static str },
}

impl BodyError {
    pub(crate) fn to_s3(&self) -> S3Error {
        let code = match self {
            BodyError::Read { code: Some(c), .. } => c.clone(),
            BodyError::Read { code: None, .. } | BodyError::Incomplete { .. } => {
                S3ErrorCode::IncompleteBody
            }
            BodyError::Md5Mismatch | BodyError::ChecksumMismatch { .. } => S3ErrorCode::BadDigest,
            BodyError::Md5Invalid => S3ErrorCode::InvalidDigest,
            BodyError::TooLong { .. }
            | BodyError::ChecksumInvalid { .. }
            | BodyError::MissingTrailer { .. } => S3ErrorCode::InvalidRequest,
        };
        S3Error::with_message(code, self.to_string())
    }
}

/// The checksum algorithms S3 defines, with their header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    pub(crate) fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    fn from_header(name: &str) -> Option<Algorithm> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(name))
    }
}

enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64Nvme(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn new(a: Algorithm) -> Self {
        match a {
            Algorithm::Crc32 => Hasher::Crc32(Crc32::new()),
            Algorithm::Crc32c => Hasher::Crc32c(Crc32c::new()),
            Algorithm::Crc64Nvme => Hasher::Crc64Nvme(Crc64Nvme::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(h) => h.update(data),
            Hasher::Crc64Nvme(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finalize(self) -> Vec<u8> {
        match self {
            Hasher::Crc32(h) => h.finalize().to_vec(),
            Hasher::Crc32c(h) => h.finalize().to_vec(),
            Hasher::Crc64Nvme(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().as_ref().to_vec(),
            Hasher::Sha256(h) => h.finalize().as_ref().to_vec(),
        }
    }
}

/// The digests a request body must match.
#[derive(Debug, Default, Clone)]
pub(crate) struct Expected {
    /// Content-MD5, decoded.
    pub md5: Option<[u8; 16]>,
    /// Checksums given as headers (base64, as sent).
    pub headers: Vec<(Algorithm, String)>,
    /// Checksums announced in `x-amz-trailer`, to be read from the trailers.
    pub trailers: Vec<Algorithm>,
}

impl Expected {
    /// From the request's Content-MD5, checksum headers and `x-amz-trailer`.
    pub(crate) fn new(
        content_md5: Option<&str>,
        headers: [(Algorithm, Option<&String>); 5],
        trailer_header: Option<&str>,
    ) -> Result<Self, BodyError> {
        let md5 = match content_md5 {
            None => None,
            Some(s) => Some(
                B64.decode(s.trim())
                    .ok()
                    .and_then(|v| <[u8; 16]>::try_from(v).ok())
                    .ok_or(BodyError::Md5Invalid)?,
            ),
        };
        let headers = headers
            .into_iter()
            .filter_map(|(a, v)| v.map(|v| (a, v.clone())))
            .collect();
        let trailers = trailer_header
            .map(|t| t.split(',').filter_map(Algorithm::from_header).collect())
            .unwrap_or_default();
        Ok(Expected {
            md5,
            headers,
            trailers,
        })
    }

    fn algorithms(&self) -> Vec<Algorithm> {
        let mut v: Vec<Algorithm> = self.headers.iter().map(|(a, _)| *a).collect();
        for a in &self.trailers {
            if !v.contains(a) {
                v.push(*a);
            }
        }
        v
    }
}

/// A request body as the client's reader; see the module docs.
pub(crate) struct PutBody {
    stream: StreamingBlob,
    size: u64,
    received: u64,
    /// Released bytes the reader has not taken yet.
    pending: Bytes,
    /// The final bytes, released once the body ended and matched.
    held: Option<Bytes>,
    done: bool,
    md5: Option<Md5>,
    hashers: Vec<(Algorithm, Hasher)>,
    expected: Expected,
    trailers: Option<TrailingHeaders>,
    failure: Arc<Mutex<Option<BodyError>>>,
    /// Base64 checksums computed, once verified (returned in the PUT's answer).
    computed: Arc<Mutex<Vec<(Algorithm, String)>>>,
}

/// What the gateway keeps of a [`PutBody`] handed to the client.
#[derive(Clone)]
pub(crate) struct PutBodyOutcome {
    failure: Arc<Mutex<Option<BodyError>>>,
    computed: Arc<Mutex<Vec<(Algorithm, String)>>>,
}

impl PutBodyOutcome {
    /// Why the body was refused, if it was.
    pub(crate) fn failure(&self) -> Option<BodyError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The verified checksums (base64), by algorithm.
    pub(crate) fn checksums(&self) -> Vec<(Algorithm, String)> {
        self.computed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl PutBody {
    pub(crate) fn new(
        stream: StreamingBlob,
        size: u64,
        expected: Expected,
        trailers: Option<TrailingHeaders>,
    ) -> (Self, PutBodyOutcome) {
        let outcome = PutBodyOutcome {
            failure: Arc::default(),
            computed: Arc::default(),
        };
        let body = PutBody {
            stream,
            size,
            received: 0,
            pending: Bytes::new(),
            held: None,
            done: false,
            md5: expected.md5.map(|_| Md5::new()),
            hashers: expected
                .algorithms()
                .into_iter()
                .map(|a| (a, Hasher::new(a)))
                .collect(),
            expected,
            trailers,
            failure: Arc::clone(&outcome.failure),
            computed: Arc::clone(&outcome.computed),
        };
        (body, outcome)
    }

    fn fail(&mut self, e: BodyError) -> io::Error {
        debug!(error = %e, "request body refused");
        let err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        self.done = true;
        self.held = None;
        err
    }

    fn hash(&mut self, data: &[u8]) {
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
        for (_, h) in &mut self.hashers {
            h.update(data);
        }
    }

    /// Every digest against what the request said, once the body has ended.
    fn verify(&mut self) -> Result<(), BodyError> {
        if let (Some(want), Some(h)) = (self.expected.md5, self.md5.take())
            && h.finalize() != want
        {
            return Err(BodyError::Md5Mismatch);
        }
        let trailers = self.trailers.as_ref().and_then(TrailingHeaders::take);
        let mut computed = Vec::new();
        for (a, h) in std::mem::take(&mut self.hashers) {
            let got = h.finalize();
            let sent = match self.expected.headers.iter().find(|(x, _)| *x == a) {
                Some((_, v)) => v.clone(),
                None => trailers
                    .as_ref()
                    .and_then(|t| t.get(a.header()))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .ok_or(BodyError::MissingTrailer { header: a.header() })?,
            };
            let want = B64
                .decode(sent.trim())
                .map_err(|_| BodyError::ChecksumInvalid { header: a.header() })?;
            if want != got {
                return Err(BodyError::ChecksumMismatch {
                    algorithm: a.name(),
                });
            }
            computed.push((a, B64.encode(&got)));
        }
        *self.computed.lock().unwrap_or_else(PoisonError::into_inner) = computed;
        Ok(())
    }

    /// Reads the (empty) body of a 0-byte object to its end and verifies it: the client
    /// reads nothing of a 0-byte object, so it is checked before the put.
    pub(crate) async fn verify_empty(&mut self) -> Result<(), BodyError> {
        use tokio::io::AsyncReadExt;
        let mut one = [0u8; 1];
        match self.read(&mut one).await {
            Ok(0) => Ok(()),
            _ => Err(self
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or(BodyError::TooLong { size: self.size })),
        }
    }
}

impl AsyncRead for PutBody {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return match this.failure.lock().map(|f| f.is_some()) {
                    Ok(false) => Poll::Ready(Ok(())),
                    _ => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request body refused",
                    ))),
                };
            }
            match ready!(Pin::new(&mut this.stream).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.received += chunk.len() as u64;
                    if this.received > this.size {
                        let e = this.fail(BodyError::TooLong { size: this.size });
                        return Poll::Ready(Err(e));
                    }
                    this.hash(&chunk);
                    if this.received < this.size {
                        this.pending = chunk;
                    } else {
                        // Keep polling: the end of the body (and its trailers) decide.
                        this.held = Some(chunk);
                    }
                }
                Some(Err(e)) => {
                    let code = e.downcast_ref::<S3Error>().map(|s| s.code().clone());
                    let err = this.fail(BodyError::Read {
                        code,
                        message: e.to_string(),
                    });
                    return Poll::Ready(Err(err));
                }
                None => {
                    if this.received < this.size {
                        let e = this.fail(BodyError::Incomplete {
                            received: this.received,
                            size: this.size,
                        });
                        return Poll::Ready(Err(e));
                    }
                    if let Err(e) = this.verify() {
                        let e = this.fail(e);
                        return Poll::Ready(Err(e));
                    }
                    this.done = true;
                    this.pending = this.held.take().unwrap_or_default();
                }
            }
        }
    }
}

/// The response body of a GET of `range` of an object whose current version is `version`.
pub(crate) fn object_stream(
    client: Client,
    bucket: String,
    key: String,
    range: Option<Range<u64>>,
    version: String,
) -> StreamingBlob {
    let (chunks, reader) = mpsc::channel::<Bytes>(GET_QUEUE);
    let writer = ChunkSink {
        tx: PollSender::new(chunks),
    };
    let (tx, rx) = oneshot::channel::<Result<(), String>>();
    let task = async move {
        let opts = GetOptions {
            range,
            ..GetOptions::default()
        };
        let outcome = match client.get(&bucket, &key, writer, opts).await {
            Ok(info) if info.version_id == version => Ok(()),
            Ok(info) => Err(format!(
                "{bucket}/{key} was replaced while being read (version {} became {})",
                version, info.version_id
            )),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &outcome {
            debug!(error = %e, "GET failed after its headers were sent");
        }
        let _ = tx.send(outcome);
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
    StreamingBlob::wrap(HeldLast {
        inner: ReceiverStream::new(reader),
        inner_done: false,
        held: None,
        outcome: Some(rx),
    })
}

/// The `AsyncWrite` a GET's `client.get` writes into: each write (up to [`GET_CHUNK_BYTES`])
/// is copied once into a chunk of the response body. Waits while [`GET_QUEUE`] chunks are
/// queued; fails once the response body is gone (the HTTP client left), which ends the `get`.
struct ChunkSink {
    tx: PollSender<Bytes>,
}

impl AsyncWrite for ChunkSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let gone = |_| io::Error::new(io::ErrorKind::BrokenPipe, "the response body was dropped");
        ready!(self.tx.poll_reserve(cx)).map_err(gone)?;
        let n = buf.len().min(GET_CHUNK_BYTES);
        self.tx
            .send_item(Bytes::copy_from_slice(&buf[..n]))
            .map_err(gone)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

/// Yields the `get`'s chunks one behind, releasing the last only when the `get` succeeded.
struct HeldLast {
    inner: ReceiverStream<Bytes>,
    inner_done: bool,
    held: Option<Bytes>,
    outcome: Option<oneshot::Receiver<Result<(), String>>>,
}

impl Stream for HeldLast {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.outcome.is_none() {
                return Poll::Ready(None);
            }
            if !this.inner_done {
                match ready!(this.inner.poll_next_unpin(cx)) {
                    Some(b) => {
                        if let Some(prev) = this.held.replace(b) {
                            return Poll::Ready(Some(Ok(prev)));
                        }
                        continue;
                    }
                    None => this.inner_done = true,
                }
            }
            // The sink is gone: the get has finished (or died).
            let Some(rx) = this.outcome.as_mut() else {
                return Poll::Ready(None);
            };
            let r = ready!(Pin::new(rx).poll(cx));
            this.outcome = None;
            return match r {
                Ok(Ok(())) => Poll::Ready(this.held.take().map(Ok)),
                Ok(Err(msg)) => Poll::Ready(Some(Err(io::Error::other(msg)))),
                Err(_) => Poll::Ready(Some(Err(io::Error::other("the GET task ended early")))),
            };
        }
    }
}
