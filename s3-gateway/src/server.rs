//! [`serve`]: the HTTP server around the S3 service, with a span per request and a graceful
//! shutdown that lets requests in flight finish (bounded).

use std::future::Future;
use std::time::{Duration, Instant};

use dogfs_client::Client;
use futures::future::BoxFuture;
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
use crate::service::DogS3;

/// How long a shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "no credentials and not anonymous: give a credentials file (--credentials) or allow \
         unsigned requests (--anonymous)"
    )]
    NoAuthentication,
    #[error("virtual-host domains {domains:?}: {message}")]
    Domains {
        domains: Vec<String>,
        message: String,
    },
}

fn build(config: &GatewayConfig, client: Client) -> Result<S3Service, ServeError> {
    let credentials = config.credentials.clone().unwrap_or_default();
    if credentials.is_empty() && !config.anonymous {
        return Err(ServeError::NoAuthentication);
    }
    let s3 = DogS3::new(
        client,
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
        let fut = hyper::service::Service::call(&self.0, req);
        Box::pin(
            async move {
                let r = fut.await;
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
    let service = Logged(build(&config, client)?);
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
