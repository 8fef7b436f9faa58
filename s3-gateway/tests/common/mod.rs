//! Test support: a DogFS process cluster, the gateway in-process on a free port, and a small
//! S3 client over raw HTTP/1.1 with a hand-rolled AWS Signature V4 (header and presigned).

#![allow(dead_code)]

pub mod sigv4;
pub mod xml;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use dogfs_client::{Client, ClientConfig};
use dogfs_s3::{CredentialEntry, Credentials, GatewayConfig, Scope};
use dogfs_tests::{Cluster, ClusterOptions};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

pub const REGION: &str = "us-east-1";
pub const ADMIN: (&str, &str) = ("AKADMIN", "admin-secret");
pub const READER: (&str, &str) = ("AKREADER", "reader-secret");
/// Read-write, but only in bucket `limited`.
pub const LIMITED: (&str, &str) = ("AKLIMITED", "limited-secret");
/// Segments of this size, so a 5 MiB + 1 object spans three.
pub const SEGMENT: &str = "2MiB";

/// A light cluster for a 2-core machine: 1 metadata node, 3 chunk servers, RS 2+1.
pub async fn cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        meta_nodes: 1,
        chunk_nodes: 3,
        ec_k: 2,
        ec_m: 1,
        meta_env: vec![("DOGFS_SEGMENT_SIZE".to_owned(), SEGMENT.to_owned())],
        ..ClusterOptions::default()
    })
    .await
    .unwrap()
}

pub fn credentials() -> Credentials {
    let entry = |(ak, sk): (&str, &str), identity: &str, scope, buckets: Option<Vec<&str>>| {
        CredentialEntry {
            access_key: ak.to_owned(),
            secret_key: sk.to_owned(),
            identity: identity.to_owned(),
            scope,
            buckets: buckets.map(|b| b.into_iter().map(str::to_owned).collect()),
            token: None,
        }
    };
    Credentials::from_entries([
        entry(ADMIN, "root", Scope::Admin, None),
        entry(READER, "auditor", Scope::Read, None),
        entry(LIMITED, "app", Scope::ReadWrite, Some(vec!["limited"])),
    ])
    .unwrap()
}

/// The gateway running in this process; stops when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(endpoints: Vec<String>, config: GatewayConfig, deadline: Duration) -> Self {
        let mut cfg = ClientConfig::new(endpoints);
        cfg.retry_deadline = deadline;
        Self::start_with(cfg, config).await
    }

    /// With the gateway's DogFS client configured by the caller (TLS, token).
    pub async fn start_with(mut cfg: ClientConfig, config: GatewayConfig) -> Self {
        cfg.connect_timeout = Duration::from_secs(2);
        let client = Client::connect(cfg).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            dogfs_s3::serve(config, listener, client, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Gateway {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Stops accepting and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(40), &mut self.task)
            .await
            .expect("the gateway stops in time")
            .unwrap();
    }

    pub fn client(&self, key: (&str, &str)) -> S3 {
        S3 {
            addr: self.addr,
            key: Some((key.0.to_owned(), key.1.to_owned())),
        }
    }

    pub fn anonymous(&self) -> S3 {
        S3 {
            addr: self.addr,
            key: None,
        }
    }
}

pub fn gateway_config() -> GatewayConfig {
    GatewayConfig {
        credentials: Some(credentials()),
        ..GatewayConfig::default()
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The S3 error code of an error answer, checking the body is S3's error XML with a
    /// human message.
    pub fn error_code(&self) -> String {
        assert!(
            self.status >= 300,
            "not an error: {} {}",
            self.status,
            self.text()
        );
        let code = xml::error_code(&self.text());
        assert!(
            !self.error_message().is_empty(),
            "no <Message> in {}",
            self.text()
        );
        code
    }

    /// The `<Message>` of an error answer (empty when there is none).
    pub fn error_message(&self) -> String {
        xml::one(&self.text(), "Error/Message").unwrap_or_default()
    }
}

/// A request to the gateway.
pub struct Req<'a> {
    pub method: &'a str,
    /// `/bucket/key`, not encoded.
    pub path: &'a str,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl<'a> Req<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Req {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn q(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn h(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.to_owned()));
        self
    }

    pub fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = b.into();
        self
    }
}

/// An S3 client of one access key (or none: unsigned requests).
#[derive(Clone)]
pub struct S3 {
    pub addr: SocketAddr,
    pub key: Option<(String, String)>,
}

impl S3 {
    /// Sends `req` signed in the Authorization header (SigV4, payload hash signed).
    pub async fn send(&self, req: Req<'_>) -> Response {
        let host = self.addr.to_string();
        let mut headers = req.headers.clone();
        headers.push(("host".to_owned(), host.clone()));
        if let Some((ak, sk)) = &self.key {
            let signed = sigv4::sign_headers(
                &sigv4::Request {
                    method: req.method,
                    path: req.path,
                    query: &req.query,
                    headers: &headers,
                    body: &req.body,
                },
                ak,
                sk,
                REGION,
                sigv4::now(),
            );
            headers = signed;
        }
        let uri = format!(
            "{}{}",
            sigv4::encode_path(req.path),
            sigv4::query_string(&req.query)
        );
        self.raw(req.method, &uri, &headers, req.body).await
    }

    /// A presigned URL (path and query) for `method` on `path`, valid `expires` seconds.
    pub fn presign(&self, method: &str, path: &str, expires: u64) -> String {
        let (ak, sk) = self.key.clone().expect("presigning needs a key");
        sigv4::presign(
            method,
            path,
            &self.addr.to_string(),
            &ak,
            &sk,
            REGION,
            expires,
            sigv4::now(),
        )
    }

    /// Sends exactly these headers (a `host` header among them) to `uri`.
    pub async fn raw(
        &self,
        method: &str,
        uri: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Response {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut b = http::Request::builder().method(method).uri(uri);
        let mut has_host = false;
        for (k, v) in headers {
            has_host |= k == "host";
            b = b.header(k.as_str(), v.as_str());
        }
        if !has_host {
            b = b.header("host", self.addr.to_string());
        }
        let resp = sender
            .send_request(b.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            headers,
            body,
        }
    }
}

/// `len` pseudo-random bytes, the same for the same seed.
pub fn data(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub fn md5_hex(data: &[u8]) -> String {
    use s3s::crypto::Checksum as _;
    let mut h = s3s::crypto::Md5::new();
    h.update(data);
    hex(&h.finalize())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
