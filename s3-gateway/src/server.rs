//! [`serve`]: the HTTP server around the S3 service, with a span per request and a graceful
//! shutdown that lets requests in flight finish (bounded). A thin response layer fills in what
//! `s3s` leaves out: a `<Message>` in the errors it raises itself, and HeadObject's 206 for a
//! part (`partNumber`).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::auth::Credentials;
use dogfs_client::Client;
use futures::future::BoxFuture;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::host::MultiDomain;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{HttpError, HttpResponse};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, field, info, info_span, warn};

use crate::auth::Gatekeeper;
use crate::config::GatewayConfig;
use crate::errors::default_message;
use crate::service::DogS3;

/// How long a shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Error bodies up to this size are checked for a `<Message>` (s3s's are ~200 bytes); larger
/// or streamed bodies pass untouched.
const MAX_ERROR_BODY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "no credentials and not anonymous: give a credentials file (--credentials) or allow \
         unsigned requests (--anonymous)"
    )]
    NoAuthentication,
    #[error("access key {access_key}: its DogFS token: {message}")]
    KeyToken { access_key: String, message: String },
    #[error("virtual-host domains {domains:?}: {message}")]
    Domains {
        domains: Vec<String>,
        message: String,
    },
}

/// A client per access key that has a DogFS token of its own (same settings as the
/// gateway's, that token instead of the gateway's).
async fn key_clients(
    credentials: &Credentials,
    client: &Client,
) -> Result<HashMap<String, Client>, ServeError> {
    let mut out = HashMap::new();
    for (access_key, token) in credentials.tokens() {
        let mut cfg = client.config().clone();
        cfg.token = Some(
            dogfs_client::Token::new(token, &format!("the token of access key {access_key}"))
                .map_err(|e| ServeError::KeyToken {
                    access_key: access_key.to_owned(),
                    message: e.to_string(),
                })?,
        );
        let c = Client::connect(cfg)
            .await
            .map_err(|e| ServeError::KeyToken {
                access_key: access_key.to_owned(),
                message: e.to_string(),
            })?;
        out.insert(access_key.to_owned(), c);
    }
    Ok(out)
}

fn build(
    config: &GatewayConfig,
    client: Client,
    key_clients: HashMap<String, Client>,
) -> Result<S3Service, ServeError> {
    let credentials = config.credentials.clone().unwrap_or_default();
    if credentials.is_empty() && !config.anonymous {
        return Err(ServeError::NoAuthentication);
    }
    let s3 = DogS3::new(
        client,
        key_clients,
        config.region.clone(),
        credentials.clone(),
        config.anonymous,
    );
    let mut builder = S3ServiceBuilder::new(s3);
    if !credentials.is_empty() {
        let gate = Gatekeeper {
            credentials,
            anonymous: config.anonymous,
        };
        builder.set_auth(gate.clone());
        builder.set_access(gate);
    }
    if !config.domains.is_empty() {
        let host = MultiDomain::new(&config.domains).map_err(|e| ServeError::Domains {
            domains: config.domains.clone(),
            message: e.to_string(),
        })?;
        builder.set_host(host);
    }
    Ok(builder.build())
}

/// The S3 service with a span and one log line per request.
#[derive(Clone)]
struct Logged(S3Service);

impl hyper::service::Service<http::Request<Incoming>> for Logged {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let span = info_span!(
            "s3",
            method = %req.method(),
            path = %req.uri().path(),
            status = field::Empty,
        );
        let started = Instant::now();
        let head = req.method() == http::Method::HEAD;
        let fut = hyper::service::Service::call(&self.0, req);
        Box::pin(
            async move {
                let r = fut.await.map(|resp| finish(resp, head));
                let ms = started.elapsed().as_millis() as u64;
                match &r {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        tracing::Span::current().record("status", status);
                        if resp.status().is_server_error() {
                            warn!(status, ms, "request failed");
                        } else {
                            debug!(status, ms, "request done");
                        }
                    }
                    Err(e) => warn!(error = ?e, ms, "request failed"),
                }
                r
            }
            .instrument(span),
        )
    }
}

/// What s3s leaves out of a response: a `<Message>` in an error body without one (the errors
/// s3s raises itself, e.g. SignatureDoesNotMatch, InvalidBucketName, malformed requests), and
/// 206 for a HEAD answering a part (it carries Content-Range; s3s's HeadObject is always 200).
fn finish(mut resp: HttpResponse, head: bool) -> HttpResponse {
    let status = resp.status();
    if head && status == http::StatusCode::OK && resp.headers().contains_key(CONTENT_RANGE) {
        *resp.status_mut() = http::StatusCode::PARTIAL_CONTENT;
        return resp;
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let Some(body) = resp.body().bytes() else {
        return resp;
    };
    if body.len() > MAX_ERROR_BODY {
        return resp;
    }
    if let Some(filled) = std::str::from_utf8(&body).ok().and_then(with_message) {
        *resp.body_mut() = s3s::Body::from(filled);
        resp.headers_mut().remove(CONTENT_LENGTH);
    }
    resp
}

/// The error XML `doc` with a `<Message>` for its code after `</Code>`, or `None` when it
/// has a non-empty one already (or is no S3 error).
fn with_message(doc: &str) -> Option<String> {
    if !doc.contains("<Error>") {
        return None;
    }
    let doc = doc
        .replace("<Message></Message>", "")
        .replace("<Message/>", "");
    if doc.contains("<Message>") {
        return None;
    }
    let start = doc.find("<Code>")? + "<Code>".len();
    let end = start + doc[start..].find("</Code>")?;
    let message = escape(&default_message(&doc[start..end]));
    let after = end + "</Code>".len();
    Some(format!(
        "{}<Message>{message}</Message>{}",
        &doc[..after],
        &doc[after..]
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Serves S3 on `listener` over `client` until `shutdown` completes, then stops accepting and
/// waits (at most 30 s) for requests in flight. Embeddable: `dogfs dev` runs it in-process.
pub async fn serve<F>(
    config: GatewayConfig,
    listener: TcpListener,
    client: Client,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    let credentials = config.credentials.clone().unwrap_or_default();
    let keyed = key_clients(&credentials, &client).await?;
    let service = Logged(build(&config, client, keyed)?);
    if config.anonymous {
        warn!("anonymous mode: unsigned requests are allowed with full rights");
    }
    let addr = listener.local_addr().ok();
    info!(?addr, region = %config.region, "S3 gateway listening");
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service.clone())
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    info!("S3 gateway stopping: waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => info!("S3 gateway stopped"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            warn!(timeout = ?DRAIN_TIMEOUT, "S3 gateway stopped with requests still in flight");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_a_message_get_one() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch\
                   </Code><RequestId>1</RequestId></Error>";
        let filled = with_message(doc).unwrap();
        assert!(
            filled.contains("</Code><Message>The request signature"),
            "{filled}"
        );
        assert!(filled.ends_with("<RequestId>1</RequestId></Error>"));
        let empty = "<Error><Code>AccessDenied</Code><Message></Message></Error>";
        assert_eq!(
            with_message(empty).as_deref(),
            Some("<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
        );
        assert!(with_message("<Error><Code>X</Code><Message>m</Message></Error>").is_none());
        assert!(with_message("<ListBucketResult/>").is_none());
    }

    #[test]
    fn a_head_of_a_part_is_206() {
        let mut resp = HttpResponse::default();
        resp.headers_mut().insert(
            CONTENT_RANGE,
            http::HeaderValue::from_static("bytes 0-9/20"),
        );
        assert_eq!(
            finish(resp, true).status(),
            http::StatusCode::PARTIAL_CONTENT
        );
        let mut err = HttpResponse::new(s3s::Body::from(
            "<Error><Code>AccessDenied</Code></Error>".to_owned(),
        ));
        *err.status_mut() = http::StatusCode::FORBIDDEN;
        let err = finish(err, false);
        assert_eq!(
            err.body().bytes().as_deref(),
            Some(&b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"[..])
        );
    }
}
