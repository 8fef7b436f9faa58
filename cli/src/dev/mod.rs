//! `dogfs dev`: a whole cluster (metadata servers and chunk servers) in this process, on
//! loopback, with its data under one directory so a restart on the same directory brings back
//! the same cluster. `dogfs bench` and the tests start one the same way.
//!
//! Ports: with `--port P` the metadata gRPC ports are P, P+1, ...; the chunk servers' gRPC
//! ports follow, then the metadata HTTP ports, then the chunk HTTP ports. With `--port 0`
//! free ports are picked. Either way they are recorded in DIR/dev.json with the server counts
//! and the erasure scheme, and a restart reuses them (metadata nodes know each other, and
//! chunk servers are known, by address).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auth::DevAuth;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_core::size::ByteSize;
use dogfs_meta::MetaServer;
use dogfs_meta::config::MAX_PARTITIONS;
use dogfs_meta::tasks::preferred_leader;
use dogfs_security::TlsArgs;
use dogfs_security::issue::LocalClusterFiles;
use serde::Serialize;
use tracing::{info, warn};

use crate::cluster::StatusView;

pub mod auth;
mod config;
mod layout;
mod s3;

use config::{chunk_config, meta_config, start_chunk_server};
pub use layout::Layout;
use layout::{bind, local_port};

/// The file recording a dev cluster's layout.
pub const LAYOUT_FILE: &str = "dev.json";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("token files in {path}: {source}")]
    Auth {
        path: PathBuf,
        source: auth::DevAuthError,
    },
    #[error("TLS files in {path}: {source}")]
    Tls {
        path: PathBuf,
        source: dogfs_security::issue::IssueError,
    },
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    ReadLayout {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a dev cluster layout: {source}")]
    ParseLayout {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    WriteLayout {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{dir} holds a cluster with {what} {recorded}, not {asked}: use its value (or leave the \
         flag out), or another --dir"
    )]
    LayoutMismatch {
        dir: PathBuf,
        what: &'static str,
        recorded: String,
        asked: String,
    },
    #[error("{chunks} chunk servers cannot hold {k}+{m} shards on distinct servers")]
    TooFewChunks { chunks: usize, k: u32, m: u32 },
    #[error("--meta must be at least 1")]
    NoMeta,
    #[error("--partitions {partitions} is out of range: it must be in 1..={max}", max = MAX_PARTITIONS)]
    Partitions { partitions: u64 },
    #[error("ports {first}..{first}+{count} run past 65535")]
    PortRange { first: u16, count: usize },
    #[error("binding 127.0.0.1:{port} for {what}: {source} (is another `dogfs dev` running?)")]
    Bind {
        what: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("starting metadata server {index}: {source}")]
    StartMeta {
        index: usize,
        source: dogfs_meta::ServerError,
    },
    #[error("starting chunk server {index}: {source}")]
    StartChunk {
        index: usize,
        source: dogfs_chunk::ServerError,
    },
    #[error("stopping chunk server {index}: {source}")]
    StopChunk {
        index: usize,
        source: dogfs_chunk::ServerError,
    },
    #[error("no chunk server {index} (the cluster has {count})")]
    NoSuchChunk { index: usize, count: usize },
    #[error("connecting to the cluster: {0}")]
    Connect(dogfs_client::Error),
    #[error(transparent)]
    S3(#[from] s3::DevS3Error),
    #[error("the cluster was not ready within {timeout:?}: {detail} (logs: {log})")]
    NotReady {
        timeout: Duration,
        detail: String,
        log: PathBuf,
    },
}

impl crate::exit::Classify for DevError {
    fn exit_kind(&self) -> crate::exit::ExitKind {
        use crate::exit::ExitKind;
        match self {
            DevError::LayoutMismatch { .. }
            | DevError::TooFewChunks { .. }
            | DevError::NoMeta
            | DevError::Partitions { .. }
            | DevError::PortRange { .. }
            | DevError::NoSuchChunk { .. } => ExitKind::InvalidInput,
            DevError::Bind { .. } => ExitKind::Conflict,
            DevError::NotReady { .. } | DevError::Connect(_) => ExitKind::Unavailable,
            _ => ExitKind::Other,
        }
    }
}

/// What to start (from `dogfs dev` flags or by `bench`/tests). `None` means "as recorded in
/// DIR/dev.json, else the default".
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub dir: PathBuf,
    pub meta: Option<usize>,
    pub chunks: Option<usize>,
    pub port: Option<u16>,
    pub k: Option<u32>,
    pub m: Option<u32>,
    pub partitions: Option<u64>,
    pub reserve: ByteSize,
    pub capacity: Option<ByteSize>,
    pub ready_timeout: Duration,
    /// Failure detection and repair timings (`dogfs bench repair`); production-like when
    /// absent (suspect after 10 s, down after 10 min, repaired 10 min later).
    pub healing: Option<Healing>,
    /// Address chunk server i registers (and clients reach it) at, instead of its own: a
    /// relay in front of it (`dogfs bench repair` freezes one to measure hedged reads).
    pub chunk_advertise: Vec<(usize, String)>,
    /// The metadata servers' mover (drains and rebalancing); the service's defaults when
    /// absent (`dogfs bench drain` starts its rebalance itself).
    pub mover: Option<Mover>,
    /// TLS everywhere, with the files of `DIR/tls` (made on first use).
    pub tls: bool,
    /// Tokens and shard grants (and so TLS), with the files of `DIR/auth`.
    pub auth: bool,
}

/// Mover settings of the metadata servers, as their `--mover-*` and `--rebalance-*` flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mover {
    pub concurrency: usize,
    pub interval_ms: u64,
    pub spread_percent: f64,
    pub rebalance_on_join: bool,
}

impl Default for Mover {
    /// The metadata service's defaults.
    fn default() -> Self {
        Mover {
            concurrency: 4,
            interval_ms: 2000,
            spread_percent: 10.0,
            rebalance_on_join: true,
        }
    }
}

/// Shortened failure detection and repair, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Healing {
    pub suspect_after_secs: u64,
    pub down_after_secs: u64,
    pub repair_after_secs: u64,
}

impl DevOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DevOptions {
            dir: dir.into(),
            meta: None,
            chunks: None,
            port: None,
            k: None,
            m: None,
            partitions: None,
            reserve: ByteSize(1 << 30),
            capacity: None,
            ready_timeout: Duration::from_secs(60),
            healing: None,
            chunk_advertise: Vec::new(),
            mover: None,
            tls: false,
            auth: false,
        }
    }
}

impl From<&crate::args::DevArgs> for DevOptions {
    fn from(a: &crate::args::DevArgs) -> Self {
        DevOptions {
            dir: a.dir.clone(),
            meta: a.meta,
            chunks: a.chunks,
            port: a.port,
            k: a.k,
            m: a.m,
            partitions: a.partitions,
            reserve: a.reserve,
            capacity: a.capacity,
            ready_timeout: a.ready_timeout,
            healing: None,
            chunk_advertise: Vec::new(),
            mover: None,
            tls: a.tls || a.auth,
            auth: a.auth,
        }
    }
}

/// A running local cluster.
#[derive(Debug)]
pub struct DevCluster {
    dir: PathBuf,
    layout: Layout,
    metas: Vec<MetaServer>,
    chunk_cfgs: Vec<ChunkConfig>,
    chunks: Vec<Option<ChunkServer>>,
    /// The cluster's CA when it runs TLS.
    ca: Option<PathBuf>,
    /// The bootstrap admin token when it checks tokens.
    token: Option<String>,
}

impl DevCluster {
    /// Starts every server and waits until the cluster is ready (every group has a leader and
    /// every chunk server is registered and up), or `ready_timeout` passes.
    pub async fn start(opts: &DevOptions) -> Result<DevCluster, DevError> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| DevError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let planned = Layout::plan(opts, Layout::load(&dir)?)?;
        let auth = if opts.auth {
            let auth_dir = dir.join("auth");
            Some(DevAuth::ensure(&auth_dir).map_err(|source| DevError::Auth {
                path: auth_dir,
                source,
            })?)
        } else {
            None
        };
        let tls = if opts.tls || opts.auth {
            let tls_dir = dir.join("tls");
            Some(
                LocalClusterFiles::ensure(&tls_dir).map_err(|source| DevError::Tls {
                    path: tls_dir,
                    source,
                })?,
            )
        } else {
            None
        };

        // Bind every metadata listener first: the peer list needs every gRPC port, and a port
        // held here cannot be taken by anyone else meanwhile.
        let mut meta_grpc = Vec::new();
        let mut meta_http = Vec::new();
        for (i, p) in planned.meta_grpc.iter().enumerate() {
            meta_grpc.push(bind(format!("metadata server {i} gRPC"), *p).await?);
        }
        for (i, p) in planned.meta_http.iter().enumerate() {
            meta_http.push(bind(format!("metadata server {i} HTTP"), *p).await?);
        }
        // Chunk servers bind their own ports; free ones are found by binding and releasing.
        let mut chunk_grpc = Vec::new();
        let mut chunk_http = Vec::new();
        for (i, p) in planned.chunk_grpc.iter().enumerate() {
            let l = bind(format!("chunk server {i} gRPC"), *p).await?;
            chunk_grpc.push(local_port(&l, "chunk gRPC")?);
        }
        for (i, p) in planned.chunk_http.iter().enumerate() {
            let l = bind(format!("chunk server {i} HTTP"), *p).await?;
            chunk_http.push(local_port(&l, "chunk HTTP")?);
        }
        let layout = Layout {
            meta_grpc: meta_grpc
                .iter()
                .map(|l| local_port(l, "metadata gRPC"))
                .collect::<Result<_, _>>()?,
            meta_http: meta_http
                .iter()
                .map(|l| local_port(l, "metadata HTTP"))
                .collect::<Result<_, _>>()?,
            chunk_grpc,
            chunk_http,
            k: planned.k,
            m: planned.m,
            partitions: planned.partitions,
        };
        layout.save(&dir)?;

        let peers: Vec<String> = layout
            .meta_grpc
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut metas = Vec::new();
        for (i, (grpc, http)) in meta_grpc.into_iter().zip(meta_http).enumerate() {
            let mut cfg = meta_config(i, &peers, &dir, &layout, opts.healing, opts.mover);
            if let Some(t) = &tls {
                cfg.tls = TlsArgs::from_paths(&t.paths("meta"));
            }
            if let Some(a) = &auth {
                cfg.auth_token_file = Some(a.token_path.clone());
                cfg.grant_key_file = Some(a.grant_key_path.clone());
            }
            match MetaServer::start(cfg, grpc, Some(http)).await {
                Ok(server) => metas.push(server),
                Err(source) => {
                    // Stop the ones already running, so an embedding process (bench, tests)
                    // is not left with servers it cannot reach.
                    for m in metas {
                        let _ = m.shutdown().await;
                    }
                    return Err(DevError::StartMeta { index: i, source });
                }
            }
        }

        let mut cluster = DevCluster {
            chunk_cfgs: (0..layout.chunk_grpc.len())
                .map(|i| {
                    let mut cfg = chunk_config(i, &peers, &dir, &layout, opts);
                    if let Some(t) = &tls {
                        cfg.tls = TlsArgs::from_paths(&t.paths("chunk"));
                    }
                    if let Some(a) = &auth {
                        cfg.grant_key_file = Some(a.grant_key_path.clone());
                    }
                    cfg
                })
                .collect(),
            chunks: Vec::new(),
            ca: tls.as_ref().map(LocalClusterFiles::ca),
            token: auth.map(|a| a.token),
            dir,
            layout,
            metas,
        };
        for i in 0..cluster.chunk_cfgs.len() {
            let server = start_chunk_server(i, &cluster.chunk_cfgs[i]).await;
            match server {
                Ok(s) => cluster.chunks.push(Some(s)),
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = cluster.wait_ready(opts.ready_timeout).await {
            cluster.shutdown().await;
            return Err(e);
        }
        info!(endpoint = %cluster.endpoint(), dir = %cluster.dir.display(), "dev cluster ready");
        Ok(cluster)
    }

    /// The CA bundle clients need when the cluster runs TLS (a `DOGFS_CA` value).
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The bootstrap admin token, when the cluster checks tokens (`--auth`).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The bootstrap token as a client setting.
    pub fn client_token(&self) -> Result<Option<dogfs_client::Token>, dogfs_client::Error> {
        self.token
            .as_deref()
            .map(|t| dogfs_client::Token::new(t, "the dev cluster's admin token"))
            .transpose()
    }

    /// `host:port` of every metadata server, comma-separated (a `DOGFS_ENDPOINT` value).
    pub fn endpoint(&self) -> String {
        self.endpoints().join(",")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.layout
            .meta_grpc
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn chunk_count(&self) -> usize {
        self.chunk_cfgs.len()
    }

    /// The log file `dogfs dev` writes the servers' logs to.
    pub fn log_path(dir: &Path) -> PathBuf {
        dir.join("dev.log")
    }

    /// The gRPC address chunk server `index` listens on.
    pub fn chunk_grpc_addr(&self, index: usize) -> Option<SocketAddr> {
        self.chunk_cfgs.get(index).map(|c| c.grpc_addr)
    }

    /// Stops chunk server `index` (its data stays), as a crashed or unplugged server would be
    /// seen by clients.
    pub async fn stop_chunk(&mut self, index: usize) -> Result<(), DevError> {
        let count = self.chunks.len();
        let slot = self
            .chunks
            .get_mut(index)
            .ok_or(DevError::NoSuchChunk { index, count })?;
        if let Some(server) = slot.take() {
            server
                .shutdown()
                .await
                .map_err(|source| DevError::StopChunk { index, source })?;
        }
        Ok(())
    }

    /// Starts one more chunk server (a new data directory, free ports, chunk server 0's
    /// settings), records it in DIR/dev.json and answers its index. It registers with
    /// metadata as it starts; wait for it to be up before counting on it.
    pub async fn add_chunk(&mut self) -> Result<usize, DevError> {
        let index = self.chunk_cfgs.len();
        let mut cfg = self
            .chunk_cfgs
            .first()
            .cloned()
            .ok_or(DevError::NoSuchChunk { index: 0, count: 0 })?;
        // Free ports found by binding; the listeners close at the end of the block, before
        // the server binds the ports itself.
        let (grpc, http) = {
            let g = bind(format!("chunk server {index} gRPC"), 0).await?;
            let h = bind(format!("chunk server {index} HTTP"), 0).await?;
            (local_port(&g, "chunk gRPC")?, local_port(&h, "chunk HTTP")?)
        };
        cfg.data_dir = self.dir.join(format!("chunk-{index}"));
        cfg.grpc_addr = SocketAddr::from(([127, 0, 0, 1], grpc));
        cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], http));
        cfg.advertise_addr = None;
        let server = start_chunk_server(index, &cfg).await?;
        self.chunk_cfgs.push(cfg);
        self.chunks.push(Some(server));
        // Recorded once running, so a restart on DIR brings back exactly what ran.
        self.layout.chunk_grpc.push(grpc);
        self.layout.chunk_http.push(http);
        self.layout.save(&self.dir)?;
        info!(chunk = index, port = grpc, "chunk server added");
        Ok(index)
    }

    /// Starts chunk server `index` again, on the same port and data.
    pub async fn start_chunk(&mut self, index: usize) -> Result<(), DevError> {
        let count = self.chunks.len();
        let cfg = self
            .chunk_cfgs
            .get(index)
            .ok_or(DevError::NoSuchChunk { index, count })?;
        if self.chunks.get(index).is_some_and(Option::is_some) {
            return Ok(());
        }
        let server = start_chunk_server(index, cfg).await?;
        if let Some(slot) = self.chunks.get_mut(index) {
            *slot = Some(server);
        }
        Ok(())
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), DevError> {
        let want = self.chunks.iter().filter(|c| c.is_some()).count();
        self.wait_for(timeout, |view| {
            if view.is_ready(want) {
                return None;
            }
            let leaders = view.groups.iter().filter(|g| g.leader_id.is_some()).count();
            let up = view.chunk_nodes.iter().filter(|n| n.state == "up").count();
            Some(format!(
                "{leaders}/{} groups have a leader, {up}/{want} chunk servers are up",
                view.groups.len()
            ))
        })
        .await
    }

    /// Waits until every group is led by its preferred metadata node. A fresh cluster moves
    /// its leaders there a few seconds after it is ready, and each move leaves the group
    /// without a leader for up to ~2 s under load (docs/meta-service.md, "Leader
    /// spreading"); `dogfs bench` waits for it so its figures are of the settled cluster.
    pub async fn wait_leaders_placed(&self, timeout: Duration) -> Result<(), DevError> {
        self.wait_for(timeout, |view| {
            let mut ids: Vec<u64> = view.meta_nodes.iter().map(|n| n.node_id).collect();
            ids.sort_unstable();
            let elsewhere = view
                .groups
                .iter()
                .filter(|g| g.leader_id != preferred_leader(&ids, g.group_id))
                .count();
            (elsewhere > 0).then(|| {
                format!(
                    "{elsewhere}/{} groups are not yet led by their preferred node",
                    view.groups.len()
                )
            })
        })
        .await
    }

    /// Polls `ClusterStatus` until `pending` (what is still missing, `None` when nothing)
    /// says the cluster is there, or `timeout` passes.
    async fn wait_for(
        &self,
        timeout: Duration,
        pending: impl Fn(&StatusView) -> Option<String>,
    ) -> Result<(), DevError> {
        let deadline = Instant::now() + timeout;
        let mut cfg = dogfs_client::ClientConfig::new(self.endpoints());
        cfg.tls = self.ca.clone().map(dogfs_client::ClientTlsPaths::ca_only);
        cfg.token = self.client_token().map_err(DevError::Connect)?;
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.request_timeout = Duration::from_secs(2);
        // This loop is the retry: one status call must not outlive the deadline.
        cfg.retry_deadline = Duration::from_secs(2);
        let client = dogfs_client::Client::connect(cfg)
            .await
            .map_err(DevError::Connect)?;
        loop {
            let detail = match client.cluster_status().await {
                Ok(s) => match pending(&StatusView::from(&s)) {
                    None => return Ok(()),
                    Some(detail) => detail,
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(DevError::NotReady {
                    timeout,
                    detail,
                    log: Self::log_path(&self.dir),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every server: chunk servers first (they heartbeat to metadata), then metadata.
    /// Errors are logged, not returned: shutting down goes on regardless.
    pub async fn shutdown(self) {
        for (i, c) in self.chunks.into_iter().enumerate() {
            if let Some(c) = c
                && let Err(e) = c.shutdown().await
            {
                warn!(chunk = i, error = %e, "stopping chunk server");
            }
        }
        for (i, m) in self.metas.into_iter().enumerate() {
            if let Err(e) = m.shutdown().await {
                warn!(meta = i, error = %e, "stopping metadata server");
            }
        }
        info!("dev cluster stopped");
    }
}

/// `dogfs dev`: start, print the endpoint, run until Ctrl-C or SIGTERM, stop cleanly.
pub async fn run(args: &crate::args::DevArgs, out: crate::output::Out) -> Result<(), DevError> {
    let opts = DevOptions::from(args);
    let cluster = DevCluster::start(&opts).await?;
    let endpoint = cluster.endpoint();
    let gateway = match &args.s3 {
        Some(addr) => Some(
            s3::DevS3::start(
                addr,
                cluster.dir(),
                cluster.endpoints(),
                cluster.ca(),
                cluster.token(),
            )
            .await?,
        ),
        None => None,
    };

    #[derive(Serialize)]
    struct S3Ready<'a> {
        url: &'a str,
        access_key: &'a str,
        secret_key: &'a str,
    }
    #[derive(Serialize)]
    struct Ready<'a> {
        endpoint: &'a str,
        dir: &'a Path,
        log: PathBuf,
        layout: &'a Layout,
        #[serde(skip_serializing_if = "Option::is_none")]
        s3: Option<S3Ready<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ca: Option<&'a Path>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
    }
    let printed = out
        .json(&Ready {
            endpoint: &endpoint,
            dir: cluster.dir(),
            log: DevCluster::log_path(cluster.dir()),
            layout: cluster.layout(),
            s3: gateway.as_ref().map(|g| S3Ready {
                url: &g.url,
                access_key: &g.access_key,
                secret_key: &g.secret_key,
            }),
            ca: cluster.ca(),
            token: cluster.token(),
        })
        .and_then(|()| out.line(&format!("DOGFS_ENDPOINT={endpoint}")))
        .and_then(|()| match cluster.ca() {
            Some(ca) => out.line(&format!("DOGFS_CA={}", ca.display())),
            None => Ok(()),
        })
        .and_then(|()| match cluster.token() {
            Some(t) => out.line(&format!("DOGFS_TOKEN={t}")),
            None => Ok(()),
        })
        .and_then(|()| match &gateway {
            // Lines to export for aws-cli (`aws --endpoint-url $DOGFS_S3_URL s3 ls`).
            Some(g) => out.line(&format!(
                "DOGFS_S3_URL={}\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_DEFAULT_REGION=us-east-1",
                g.url, g.access_key, g.secret_key
            )),
            None => Ok(()),
        });
    if let Err(e) = printed {
        warn!(error = %e, "printing the endpoint");
    }
    if !out.quiet {
        use std::io::Write;
        let l = cluster.layout();
        let _ = writeln!(
            std::io::stderr(),
            "dogfs dev: {} metadata + {} chunk servers ({}+{}) ready in {} (logs: dev.log); \
             export the line above, then try `dogfs mb demo`. Ctrl-C stops.",
            l.meta_grpc.len(),
            l.chunk_grpc.len(),
            l.k,
            l.m,
            cluster.dir().display(),
        );
    }
    shutdown_signal().await;
    info!("shutdown signal received; stopping the dev cluster");
    if let Some(g) = gateway {
        g.shutdown().await;
    }
    // A second Ctrl-C stops waiting for in-flight requests; what was acknowledged is durable.
    tokio::select! {
        () = cluster.shutdown() => {}
        () = shutdown_signal() => warn!("second signal: exiting without waiting for the servers"),
    }
    Ok(())
}

/// Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still works.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
