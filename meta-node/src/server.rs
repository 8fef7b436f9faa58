//! [`MetaServer`]: one metadata node — its Raft groups, the gRPC services on the node's one
//! port, the HTTP side port, and the background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dogfs_proto::meta::admin_service_server::AdminServiceServer;
use dogfs_proto::meta::chunk_registry_server::ChunkRegistryServer;
use dogfs_proto::meta::meta_internal_server::MetaInternalServer;
use dogfs_proto::meta::meta_service_server::MetaServiceServer;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::MetaAuthenticator;
use crate::catalog::CatalogError;
use crate::config::{ConfigError, MetaConfig};
use crate::metrics::Metrics;
use crate::raft::node::default_raft_config;
use crate::raft::{MultiRaft, NodeConfig, NodeError};
use crate::registry;
use crate::service::admin::AdminSvc;
use crate::service::internal::InternalSvc;
use crate::service::meta::MetaSvc;
use crate::service::registry::RegistrySvc;
use crate::service::{Core, FORWARDED_HEADER, MAX_MESSAGE_BYTES};
use crate::tasks;
use dogfs_security::token::BootstrapFile;
use dogfs_security::{AuthLayer, GrantKeyFile};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("starting the raft node: {0}")]
    Node(#[from] NodeError),
    #[error("reading the cluster config: {0}")]
    ClusterConfig(#[from] CatalogError),
    #[error(
        "--partitions {configured} differs from the {recorded} partitions this cluster was \
         bootstrapped with; partitions cannot change (start with --partitions {recorded})"
    )]
    PartitionsMismatch { configured: u64, recorded: u64 },
    #[error("listener address: {0}")]
    Listener(std::io::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("TLS: {0}")]
    Tls(Box<dogfs_security::args::LoadError>),
    #[error("{0}")]
    AuthToken(dogfs_security::token::BootstrapFileError),
    #[error("{0}")]
    GrantKey(dogfs_security::grant::KeyFileError),
}

/// A running metadata node.
#[derive(Debug)]
pub struct MetaServer {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    node: MultiRaft,
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http: Option<JoinHandle<Result<(), std::io::Error>>>,
    grace: Duration,
}

impl MetaServer {
    /// Opens the node's storage, starts every group, serves the gRPC services on
    /// `grpc_listener` (and HTTP on `http_listener`), and starts the background tasks,
    /// including the bootstrap guard (which retries until the peers answer).
    pub async fn start(
        config: MetaConfig,
        grpc_listener: TcpListener,
        http_listener: Option<TcpListener>,
    ) -> Result<MetaServer, ServerError> {
        config.validate()?;
        let scheme = config.default_scheme().map_err(ConfigError::from)?;
        let grpc_addr = grpc_listener.local_addr().map_err(ServerError::Listener)?;
        let http_addr = http_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(ServerError::Listener)?;
        let metrics = Metrics::new();

        let mut node_cfg = NodeConfig::new(
            config.node_id,
            config.peer_map(),
            config.data_dir.clone(),
            (0..=config.partitions).collect(),
        );
        node_cfg.raft = openraft::Config {
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: config.snapshot_keep,
            ..default_raft_config()
        };
        node_cfg.sync_observer = Some(metrics.sync_observer());
        node_cfg.transport = config.raft_transport;
        node_cfg.coalesce_heartbeats = config.raft_coalesce_heartbeats;
        if let Some(tls) = config
            .tls
            .load()
            .map_err(|e| ServerError::Tls(Box::new(e)))?
        {
            node_cfg.server_tls = Some(tls.server);
            node_cfg.client_tls = Some(tls.client);
        } else {
            tracing::warn!(
                "no TLS settings: the gRPC port serves plain text, without component checks"
            );
        }
        // Lifted by the `vote_guard` task below.
        node_cfg.amnesia_guard = true;
        let mut node = MultiRaft::open(node_cfg, grpc_listener).await?;

        // A restart with another --partitions would host other groups than the cluster has.
        let recorded = node
            .reader(0)
            .map_err(ServerError::Node)
            .and_then(|r| Ok(registry::get_config(&r)?));
        match recorded {
            Ok(Some(c)) if c.partitions != config.partitions => {
                let _ = node.shutdown().await;
                return Err(ServerError::PartitionsMismatch {
                    configured: config.partitions,
                    recorded: c.partitions,
                });
            }
            Ok(_) => {}
            Err(e) => {
                let _ = node.shutdown().await;
                return Err(e);
            }
        }

        let auth = match &config.auth_token_file {
            Some(path) => {
                let bootstrap = BootstrapFile::open(path).map_err(ServerError::AuthToken)?;
                let a: Arc<dyn dogfs_security::Authenticator> =
                    Arc::new(MetaAuthenticator::new(bootstrap, node.handle()));
                Some(a)
            }
            None => {
                tracing::warn!(
                    "no --auth-token-file: client and admin calls are not authenticated"
                );
                None
            }
        };
        let auth = AuthLayer::new(auth, crate::auth::RULES.to_vec(), FORWARDED_HEADER);
        let grants = config
            .grant_key_file
            .as_deref()
            .map(GrantKeyFile::open)
            .transpose()
            .map_err(ServerError::GrantKey)?;
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let in_flight = config.proposer_in_flight;
        let (core, queues) = Core::new(config, scheme, node.handle(), metrics, grants);
        let core = Arc::new(core);
        let routes = tonic::service::Routes::new(
            MetaServiceServer::new(MetaSvc::new(Arc::clone(&core)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ChunkRegistryServer::new(RegistrySvc::new(Arc::clone(
            &core,
        ))))
        .add_service(AdminServiceServer::new(AdminSvc::new(Arc::clone(&core))))
        .add_service(
            MetaInternalServer::new(InternalSvc::new(Arc::clone(&core)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
        node.serve(routes, auth);

        let (stop, rx) = watch::channel(false);
        let mut tasks: Vec<JoinHandle<()>> = queues
            .into_iter()
            .map(|(g, rx)| tokio::spawn(crate::service::proposer(node.handle(), g, in_flight, rx)))
            .collect();
        tasks.extend([
            tokio::spawn(tasks::bootstrap(Arc::clone(&core), rx.clone())),
            tokio::spawn(tasks::liveness(Arc::clone(&core), rx.clone())),
            tokio::spawn(tasks::maintenance(Arc::clone(&core), rx.clone())),
            tokio::spawn(crate::orphans::run(Arc::clone(&core), rx.clone())),
            tokio::spawn(crate::repair::run(Arc::clone(&core), rx.clone())),
            tokio::spawn(crate::mover::run(Arc::clone(&core), rx.clone())),
            tokio::spawn(tasks::leader_balance(Arc::clone(&core), rx.clone())),
            tokio::spawn(crate::vote_guard::run(Arc::clone(&core), rx.clone())),
        ]);
        let http = http_listener.map(|l| {
            let mut http_rx = rx.clone();
            let app = crate::http::router(Arc::clone(&core));
            tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = http_rx.wait_for(|s| *s).await;
                    })
                    .await
            })
        });
        tracing::info!(
            node_id = core.node_id,
            %grpc_addr,
            http_addr = %http_addr.map_or_else(|| "-".to_string(), |a| a.to_string()),
            partitions = core.partitions(),
            "metadata node serving"
        );
        Ok(MetaServer {
            grpc_addr,
            http_addr,
            node,
            core,
            stop,
            tasks,
            http,
            grace,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn node_id(&self) -> u64 {
        self.core.node_id
    }

    /// The node's Raft groups (metrics, waits).
    pub fn node(&self) -> &MultiRaft {
        &self.node
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    /// `Ok` when `/readyz` would answer 200, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        crate::http::readiness(&self.core)
    }

    /// Stops the background tasks and the HTTP server, then the groups and the gRPC server,
    /// and releases the storage (the node can be reopened from the same directory).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        if let Some(h) = self.http {
            let abort = h.abort_handle();
            if tokio::time::timeout(self.grace, h).await.is_err() {
                abort.abort();
            }
        }
        drop(self.core);
        self.node.shutdown().await?;
        tracing::info!("metadata node stopped");
        Ok(())
    }
}
