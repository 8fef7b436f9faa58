//! A minimal S3 client for the bench: create bucket, PUT, GET and DELETE object, path-style,
//! SigV4 in the Authorization header (`dogfs_s3::sigv4`), over one pooled keep-alive HTTP/1.1
//! client. Streamed bodies are sent as `UNSIGNED-PAYLOAD` with a Content-Length and read back
//! frame by frame, so no object is ever held whole.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dogfs_s3::sigv4;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes per frame of a streamed PUT body.
const FRAME: usize = 1 << 20;
/// The most of an error response kept for the message.
const ERROR_BODY_LIMIT: usize = 16 << 10;

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum S3ClientError {
    #[error("{op} {path}: building the request: {source}")]
    Build {
        op: &'static str,
        path: String,
        source: http::Error,
    },
    #[error("{op} {path}: {source}")]
    Send {
        op: &'static str,
        path: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{op} {path}: no answer within {secs} s")]
    Timeout {
        op: &'static str,
        path: String,
        secs: u64,
    },
    #[error("{op} {path}: HTTP {status}: {body}")]
    Status {
        op: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{op} {path}: reading the response body: {source}")]
    Body {
        op: &'static str,
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{op} {path}: writing the response body: {source}")]
    Write {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// What the signature says of the body.
#[derive(Debug, Clone, Copy)]
enum Payload<'a> {
    /// `UNSIGNED-PAYLOAD`: streamed bodies, and GETs.
    Unsigned,
    /// These bytes' SHA-256 is signed.
    Signed(&'a [u8]),
}

/// One access key against one gateway. Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct S3Client {
    http: HttpClient<HttpConnector, ReqBody>,
    addr: SocketAddr,
    access_key: String,
    secret_key: String,
    region: String,
    /// Bounds the calls that move no stream (bucket calls, small objects, deletes).
    timeout: Duration,
}

impl S3Client {
    pub fn new(addr: SocketAddr, access_key: &str, secret_key: &str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        // 1 KiB requests: Nagle would hold each response behind the previous ACK.
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        S3Client {
            http,
            addr,
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: dogfs_s3::GatewayConfig::DEFAULT_REGION.to_owned(),
            timeout,
        }
    }

    /// A signed request.
    fn request(
        &self,
        op: &'static str,
        method: &str,
        path: &str,
        payload: Payload<'_>,
        extra: &[(String, String)],
        body: ReqBody,
    ) -> Result<http::Request<ReqBody>, S3ClientError> {
        let host = self.addr.to_string();
        let mut headers = vec![("host".to_owned(), host.clone())];
        let body_for_hash = match payload {
            Payload::Unsigned => {
                headers.push((
                    "x-amz-content-sha256".to_owned(),
                    sigv4::UNSIGNED_PAYLOAD.to_owned(),
                ));
                &[][..]
            }
            Payload::Signed(b) => b,
        };
        let signed = sigv4::sign_headers(
            &sigv4::Request {
                method,
                path,
                query: &[],
                headers: &headers,
                body: body_for_hash,
            },
            &self.access_key,
            &self.secret_key,
            &self.region,
            sigv4::now(),
        );
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{host}{}", sigv4::encode_path(path)));
        for (k, v) in signed.iter().chain(extra) {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(body).map_err(|source| S3ClientError::Build {
            op,
            path: path.to_owned(),
            source,
        })
    }

    /// Sends, and turns a non-2xx answer into [`S3ClientError::Status`] with its body.
    async fn send(
        &self,
        op: &'static str,
        path: &str,
        req: http::Request<ReqBody>,
    ) -> Result<http::Response<Incoming>, S3ClientError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|source| S3ClientError::Send {
                op,
                path: path.to_owned(),
                source,
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = match Limited::new(resp.into_body(), ERROR_BODY_LIMIT)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
            Err(e) => format!("(body unreadable: {e})"),
        };
        Err(S3ClientError::Status {
            op,
            path: path.to_owned(),
            status,
            body,
        })
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        path: &str,
        f: impl Future<Output = Result<T, S3ClientError>>,
    ) -> Result<T, S3ClientError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| S3ClientError::Timeout {
                op,
                path: path.to_owned(),
                secs: self.timeout.as_secs(),
            })?
    }

    /// CreateBucket; a bucket that exists already (made through the native client) is fine.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), S3ClientError> {
        let path = format!("/{bucket}");
        let req = self.request(
            "CreateBucket",
            "PUT",
            &path,
            Payload::Signed(b""),
            &[],
            empty(),
        )?;
        match self
            .bounded("CreateBucket", &path, self.send("CreateBucket", &path, req))
            .await
        {
            Ok(resp) => drain(resp, "CreateBucket", &path).await,
            Err(S3ClientError::Status { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// PutObject of bytes in memory, the payload hash signed (what SDKs do over plain HTTP).
    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
    ) -> Result<(), S3ClientError> {
        let path = format!("/{bucket}/{key}");
        let extra = [("content-length".to_owned(), data.len().to_string())];
        let req = self.request(
            "PutObject",
            "PUT",
            &path,
            Payload::Signed(&data),
            &extra,
            Full::new(data.clone())
                .map_err(|never| match never {})
                .boxed(),
        )?;
        let resp = self
            .bounded("PutObject", &path, self.send("PutObject", &path, req))
            .await?;
        drain(resp, "PutObject", &path).await
    }

    /// PutObject of `len` bytes streamed from `reader`, `UNSIGNED-PAYLOAD`. No time bound: a
    /// big object takes as long as it takes.
    pub async fn put_stream<R>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        len: u64,
    ) -> Result<(), S3ClientError>
    where
        R: AsyncRead + Unpin + Send + Sync + 'static,
    {
        let path = format!("/{bucket}/{key}");
        let extra = [("content-length".to_owned(), len.to_string())];
        let body = ReaderBody::new(reader, len).boxed();
        let req = self.request("PutObject", "PUT", &path, Payload::Unsigned, &extra, body)?;
        let resp = self.send("PutObject", &path, req).await?;
        drain(resp, "PutObject", &path).await
    }

    /// GetObject into `out`, frame by frame; returns the bytes written.
    pub async fn get_into<W>(
        &self,
        bucket: &str,
        key: &str,
        out: &mut W,
    ) -> Result<u64, S3ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let path = format!("/{bucket}/{key}");
        let req = self.request("GetObject", "GET", &path, Payload::Unsigned, &[], empty())?;
        let resp = self.send("GetObject", &path, req).await?;
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| S3ClientError::Body {
                op: "GetObject",
                path: path.clone(),
                source: Box::new(e),
            })?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|source| S3ClientError::Write {
                        op: "GetObject",
                        path: path.clone(),
                        source,
                    })?;
                n += data.len() as u64;
            }
        }
        Ok(n)
    }

    /// GetObject of a small object into memory.
    pub async fn get_bytes(&self, bucket: &str, key: &str) -> Result<Bytes, S3ClientError> {
        let path = format!("/{bucket}/{key}");
        let req = self.request("GetObject", "GET", &path, Payload::Unsigned, &[], empty())?;
        self.bounded("GetObject", &path, async {
            let resp = self.send("GetObject", &path, req).await?;
            resp.into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| S3ClientError::Body {
                    op: "GetObject",
                    path: path.clone(),
                    source: Box::new(e),
                })
        })
        .await
    }
}

fn empty() -> ReqBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Reads a success response's (small) body to its end, so the connection goes back to the
/// pool.
async fn drain(
    resp: http::Response<Incoming>,
    op: &'static str,
    path: &str,
) -> Result<(), S3ClientError> {
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| S3ClientError::Body {
            op,
            path: path.to_owned(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// A request body of exactly `len` bytes read from `reader`, in frames of up to [`FRAME`].
#[derive(Debug)]
pub struct ReaderBody<R> {
    reader: R,
    remaining: u64,
    buf: Vec<u8>,
    filled: usize,
}

impl<R> ReaderBody<R> {
    pub fn new(reader: R, len: u64) -> Self {
        ReaderBody {
            reader,
            remaining: len,
            buf: Vec::new(),
            filled: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> Body for ReaderBody<R> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = this.remaining.min(FRAME as u64) as usize;
        if this.buf.len() != want {
            this.buf = vec![0; want];
            this.filled = 0;
        }
        while this.filled < want {
            let mut rb = ReadBuf::new(&mut this.buf[this.filled..]);
            match Pin::new(&mut this.reader).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the body's reader ended {} bytes short", this.remaining),
                        ))));
                    }
                    this.filled += n;
                }
            }
        }
        // The buffer moves into the frame (no copy); the next frame gets a new one.
        let data = Bytes::from(std::mem::take(&mut this.buf));
        this.filled = 0;
        this.remaining -= want as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reader_body_yields_exactly_its_length_in_frames() {
        let data: Vec<u8> = (0..(2 * FRAME + 5)).map(|i| (i % 251) as u8).collect();
        let body = ReaderBody::new(std::io::Cursor::new(data.clone()), data.len() as u64);
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[..]);

        // A reader shorter than the length is an error, not a short body.
        let short = ReaderBody::new(std::io::Cursor::new(vec![1u8; 10]), 20);
        assert!(short.collect().await.is_err());
    }
}
