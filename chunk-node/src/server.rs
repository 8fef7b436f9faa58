//! Starting and stopping a chunk server: store, gRPC, HTTP and scrubber tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dogfs_core::transport::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use dogfs_proto::chunk::chunk_service_server::ChunkServiceServer;
use dogfs_proto::meta::NodeState;
use dogfs_security::PolicyLayer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::config::ChunkConfig;
use crate::grants::GrantCheck;
use crate::heartbeat::{self, RegistrationError, RegistryError, RegistryOptions};
use crate::http::{HttpState, router};
use crate::metrics::Metrics;
use crate::repair::{RepairOptions, Repairer};
use crate::scrub;
use crate::service::ChunkServiceImpl;
use crate::store::{Store, StoreConfig, StoreError};
use dogfs_security::GrantKeyFile;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening store: {0}")]
    OpenStore(#[from] StoreError),
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("registration settings: {0}")]
    Registry(#[from] RegistryError),
    #[error("registration: {0}")]
    Registration(#[from] RegistrationError),
    #[error("server task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("TLS: {0}")]
    Tls(Box<dogfs_security::args::LoadError>),
    #[error(
        "--grant-key-file needs TLS (--tls-cert, --tls-key, --tls-ca): without certificates \
         the server cannot tell components, which need no grant, from clients"
    )]
    GrantsNeedTls,
    #[error("{0}")]
    GrantKey(dogfs_security::grant::KeyFileError),
}

/// Process exit code when metadata refused this server because it was removed from the
/// cluster (and `--rejoin-when-removed` is off). Distinct from 1 (any other error) and 2 (bad
/// flags), so an operator or supervisor can tell "wipe me or let me rejoin" from a crash.
pub const EXIT_REMOVED: u8 = 3;

impl ServerError {
    /// The process exit code for this error: `EXIT_REMOVED` for a removed server, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Registration(RegistrationError::Removed { .. }) => EXIT_REMOVED,
            _ => 1,
        }
    }
}

/// A running chunk server. Dropping it without `shutdown` leaves its tasks running until the
/// runtime stops.
#[derive(Debug)]
pub struct ChunkServer {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    stop_scrub: Arc<AtomicBool>,
    serving: Arc<AtomicBool>,
    grpc: JoinHandle<Result<(), ServerError>>,
    http: JoinHandle<Result<(), ServerError>>,
    scrubber: Option<JoinHandle<()>>,
    registration: Option<JoinHandle<Result<(), RegistrationError>>>,
    node_state: watch::Receiver<Option<NodeState>>,
    grace: Duration,
}

impl ChunkServer {
    pub async fn start(cfg: &ChunkConfig) -> Result<Self, ServerError> {
        // Settings are checked before anything is opened or bound, so a bad value fails fast.
        let endpoints = cfg.meta_endpoints();
        for e in &endpoints {
            heartbeat::check_host_port("meta endpoint", e)?;
        }
        if let Some(a) = &cfg.advertise_addr {
            heartbeat::check_host_port("advertise address", a)?;
        } else if !endpoints.is_empty() && cfg.grpc_addr.ip().is_unspecified() {
            return Err(RegistryError::NoAdvertiseAddr {
                grpc_addr: cfg.grpc_addr,
            }
            .into());
        }
        let store_cfg = StoreConfig {
            data_dir: cfg.data_dir.clone(),
            reserve: cfg.reserve.bytes(),
            capacity: cfg.capacity.map(|c| c.bytes()),
        };
        let tls = cfg.tls.load().map_err(|e| ServerError::Tls(Box::new(e)))?;
        let grant_check = match &cfg.grant_key_file {
            Some(_) if tls.is_none() => return Err(ServerError::GrantsNeedTls),
            Some(path) => Some(Arc::new(GrantCheck::new(
                GrantKeyFile::open(path).map_err(ServerError::GrantKey)?,
            ))),
            None => None,
        };
        if tls.is_none() {
            tracing::warn!(
                "no TLS settings: the gRPC port serves plain text, without component checks"
            );
        }
        let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(&store_cfg)).await??);
        let metrics = Metrics::new();

        let grpc_listener = bind("gRPC", cfg.grpc_addr).await?;
        let http_listener = bind("HTTP", cfg.http_addr).await?;
        let grpc_addr = local_addr("gRPC", cfg.grpc_addr, &grpc_listener)?;
        let http_addr = local_addr("HTTP", cfg.http_addr, &http_listener)?;

        let (shutdown, rx) = watch::channel(false);
        let serving = Arc::new(AtomicBool::new(false));

        let repairer = Arc::new(Repairer::new(
            Arc::clone(&store),
            Arc::clone(&metrics),
            RepairOptions {
                concurrency: cfg.repair_concurrency,
                bandwidth: cfg.repair_bandwidth.bytes(),
                source_timeout: Duration::from_millis(cfg.repair_source_timeout_ms.max(1)),
                tls: tls.as_ref().map(|t| Arc::clone(&t.client)),
            },
        ));
        let svc = ChunkServiceServer::new(ChunkServiceImpl::new(
            Arc::clone(&store),
            Arc::clone(&metrics),
            repairer,
            grant_check,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut grpc_rx = rx.clone();
        let server_tls = tls.as_ref().map(|t| Arc::clone(&t.server));
        let grpc = tokio::spawn(async move {
            let shutdown = async move {
                let _ = grpc_rx.wait_for(|s| *s).await;
            };
            // Certificates give identities only over TLS; plain text was asked for.
            let policy = server_tls.as_ref().map(|_| crate::access::policy());
            let router = tonic::transport::Server::builder()
                .max_concurrent_streams(dogfs_security::server::MAX_CONCURRENT_STREAMS)
                .http2_max_header_list_size(dogfs_security::server::MAX_HEADER_LIST_BYTES)
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .max_frame_size(MAX_FRAME_BYTES)
                .http2_keepalive_interval(Some(Duration::from_secs(20)))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .layer(PolicyLayer::new(policy))
                .add_service(svc);
            match server_tls {
                Some(tls) => {
                    router
                        .serve_with_incoming_shutdown(tls.incoming(grpc_listener), shutdown)
                        .await
                }
                None => {
                    let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
            }
            .map_err(ServerError::Grpc)
        });

        let state = HttpState {
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
            serving: Arc::clone(&serving),
        };
        let mut http_rx = rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(http_listener, router(state))
                .with_graceful_shutdown(async move {
                    let _ = http_rx.wait_for(|s| *s).await;
                })
                .await
                .map_err(ServerError::Http)
        });

        let stop_scrub = Arc::new(AtomicBool::new(false));
        let scrubber = (cfg.scrub_rate.bytes() > 0).then(|| {
            tokio::spawn(scrub::run(
                Arc::clone(&store),
                Arc::clone(&metrics),
                cfg.scrub_rate.bytes(),
                Duration::from_secs(cfg.scrub_interval_secs),
                Arc::clone(&stop_scrub),
                rx.clone(),
            ))
        });

        serving.store(true, Ordering::Relaxed);
        info!(%grpc_addr, %http_addr, node_id = %store.node_id(), "chunk server serving");

        // Registration starts once the server serves: metadata may place shards here as soon
        // as it hears of the node.
        let (state_tx, node_state) = watch::channel(None);
        let registration = (!endpoints.is_empty()).then(|| {
            let opts = RegistryOptions {
                endpoints,
                // Default: the address actually bound (an ephemeral port is resolved by now).
                advertise_addr: cfg
                    .advertise_addr
                    .clone()
                    .unwrap_or_else(|| grpc_addr.to_string()),
                zone: cfg.zone.clone(),
                rejoin_when_removed: cfg.rejoin_when_removed,
                tls: tls.as_ref().map(|t| Arc::clone(&t.client)),
            };
            tokio::spawn(heartbeat::run(
                Arc::clone(&store),
                Arc::clone(&metrics),
                opts,
                state_tx,
                rx.clone(),
            ))
        });
        Ok(ChunkServer {
            grpc_addr,
            http_addr,
            store,
            metrics,
            shutdown,
            stop_scrub,
            serving,
            grpc,
            http,
            scrubber,
            registration,
            node_state,
            grace: Duration::from_secs(cfg.shutdown_grace_secs),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The registry state metadata last reported; `None` before the first answer and when
    /// the server runs standalone (no meta endpoints).
    pub fn node_state(&self) -> Option<NodeState> {
        *self.node_state.borrow()
    }

    /// Waits until a server task ends on its own: an error, since they run until shutdown,
    /// or the registration task stopping because metadata refused this server as removed.
    /// Either way the caller still calls `shutdown` for a graceful stop.
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        let registration = &mut self.registration;
        let refused = async move {
            let Some(task) = registration.as_mut() else {
                return std::future::pending().await;
            };
            let r = task.await;
            // Finished: `shutdown` must not await it again.
            *registration = None;
            match r {
                Ok(Ok(())) => std::future::pending().await,
                Ok(Err(e)) => Err(ServerError::Registration(e)),
                Err(e) => Err(ServerError::Task(e)),
            }
        };
        tokio::select! {
            r = &mut self.grpc => r?,
            r = &mut self.http => r?,
            r = refused => r,
        }
    }

    /// Stops accepting requests, gives in-flight ones the grace period to finish, and stops
    /// the scrubber. The store (and its directory lock) is released when the last handle to
    /// it is dropped.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.serving.store(false, Ordering::Relaxed);
        self.stop_scrub.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let grpc = finish_within(self.grpc, self.grace, "gRPC").await?;
        let http = finish_within(self.http, self.grace, "HTTP").await?;
        if let Some(s) = self.scrubber {
            s.await?;
        }
        if let Some(r) = self.registration
            && let Err(e) = r.await?
        {
            // Not seen through `wait`; the task logged it when it stopped.
            tracing::debug!(error = %e, "registration had stopped");
        }
        info!("chunk server stopped");
        grpc.and(http)
    }
}

/// Awaits a server task, aborting it when connections outlive the grace period (a client
/// that never closes must not keep the process alive). Uploads cut this way leave only
/// temp files, which the next start removes.
async fn finish_within(
    mut task: JoinHandle<Result<(), ServerError>>,
    grace: Duration,
    what: &'static str,
) -> Result<Result<(), ServerError>, tokio::task::JoinError> {
    match tokio::time::timeout(grace, &mut task).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                server = what,
                ?grace,
                "connections still open after the grace period; closing them"
            );
            task.abort();
            match task.await {
                Err(e) if e.is_cancelled() => Ok(Ok(())),
                other => other,
            }
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    addr: SocketAddr,
    l: &TcpListener,
) -> Result<SocketAddr, ServerError> {
    l.local_addr()
        .map_err(|source| ServerError::Bind { what, addr, source })
}
