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

use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_core::size::ByteSize;
use dogfs_meta::config::MAX_PARTITIONS;
use dogfs_meta::tasks::preferred_leader;
use dogfs_meta::{MetaConfig, MetaServer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::cluster::StatusView;

/// The file recording a dev cluster's layout.
pub const LAYOUT_FILE: &str = "dev.json";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
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
        }
    }
}

/// DIR/dev.json. A port of 0 (only before the first start) means "pick a free one".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub meta_grpc: Vec<u16>,
    pub chunk_grpc: Vec<u16>,
    pub meta_http: Vec<u16>,
    pub chunk_http: Vec<u16>,
    pub k: u32,
    pub m: u32,
    /// Object partitions; layouts recorded before the flag existed had the default.
    #[serde(default = "default_partitions")]
    pub partitions: u64,
}

const DEFAULT_META: usize = 3;
const DEFAULT_CHUNKS: usize = 6;
const DEFAULT_PORT: u16 = 7000;
/// As the operator's `spec.meta.partitions` default.
const DEFAULT_PARTITIONS: u64 = 8;

fn default_partitions() -> u64 {
    DEFAULT_PARTITIONS
}

impl Layout {
    /// The layout to start: the recorded one (checked against any flags given), or a new one.
    pub fn plan(opts: &DevOptions, recorded: Option<Layout>) -> Result<Layout, DevError> {
        if let Some(rec) = recorded {
            let mismatch = |what, recorded: String, asked: String| DevError::LayoutMismatch {
                dir: opts.dir.clone(),
                what,
                recorded,
                asked,
            };
            if let Some(n) = opts.meta.filter(|n| *n != rec.meta_grpc.len()) {
                return Err(mismatch(
                    "--meta",
                    rec.meta_grpc.len().to_string(),
                    n.to_string(),
                ));
            }
            if let Some(n) = opts.chunks.filter(|n| *n != rec.chunk_grpc.len()) {
                return Err(mismatch(
                    "--chunks",
                    rec.chunk_grpc.len().to_string(),
                    n.to_string(),
                ));
            }
            if let Some(k) = opts.k.filter(|k| *k != rec.k) {
                return Err(mismatch("--k", rec.k.to_string(), k.to_string()));
            }
            if let Some(m) = opts.m.filter(|m| *m != rec.m) {
                return Err(mismatch("--m", rec.m.to_string(), m.to_string()));
            }
            if let Some(p) = opts.partitions.filter(|p| *p != rec.partitions) {
                return Err(mismatch(
                    "--partitions",
                    rec.partitions.to_string(),
                    p.to_string(),
                ));
            }
            let first = rec.meta_grpc.first().copied().unwrap_or_default();
            if let Some(p) = opts.port.filter(|p| *p != 0 && *p != first) {
                return Err(mismatch("--port", first.to_string(), p.to_string()));
            }
            return Ok(rec);
        }
        let meta = opts.meta.unwrap_or(DEFAULT_META);
        let chunks = opts.chunks.unwrap_or(DEFAULT_CHUNKS);
        let k = opts.k.unwrap_or(4);
        let m = opts.m.unwrap_or(2);
        if meta == 0 {
            return Err(DevError::NoMeta);
        }
        let partitions = opts.partitions.unwrap_or(DEFAULT_PARTITIONS);
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(DevError::Partitions { partitions });
        }
        if chunks < (k + m) as usize {
            return Err(DevError::TooFewChunks { chunks, k, m });
        }
        let first = opts.port.unwrap_or(DEFAULT_PORT);
        let total = 2 * (meta + chunks);
        let port = |i: usize| -> Result<u16, DevError> {
            if first == 0 {
                return Ok(0);
            }
            u16::try_from(usize::from(first) + i).map_err(|_| DevError::PortRange {
                first,
                count: total,
            })
        };
        let span =
            |from: usize, n: usize| (from..from + n).map(port).collect::<Result<Vec<_>, _>>();
        Ok(Layout {
            meta_grpc: span(0, meta)?,
            chunk_grpc: span(meta, chunks)?,
            meta_http: span(meta + chunks, meta)?,
            chunk_http: span(2 * meta + chunks, chunks)?,
            k,
            m,
            partitions,
        })
    }

    fn load(dir: &Path) -> Result<Option<Layout>, DevError> {
        let path = dir.join(LAYOUT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| DevError::ParseLayout { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DevError::ReadLayout { path, source }),
        }
    }

    /// Written with a temp file and rename, so a crash never leaves half a layout.
    fn save(&self, dir: &Path) -> Result<(), DevError> {
        let path = dir.join(LAYOUT_FILE);
        let tmp = dir.join(format!("{LAYOUT_FILE}.tmp"));
        let werr = |source| DevError::WriteLayout {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| werr(std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(werr)?;
        std::fs::rename(&tmp, &path).map_err(werr)
    }
}

/// Binds 127.0.0.1:`port`; port 0 picks a free port outside the kernel's ephemeral range.
async fn bind(what: String, port: u16) -> Result<TcpListener, DevError> {
    if port == 0 {
        // A port from the ephemeral range could, once released for a chunk server to bind,
        // be taken meanwhile by an outgoing connection (the metadata nodes dial each other
        // as they start), and on restart it may be in use by one. Outside it, only another
        // listener can hold it.
        let (low, high) = non_ephemeral_range();
        for _ in 0..200 {
            let candidate = rand::random_range(low..=high);
            if let Ok(l) = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], candidate))).await {
                return Ok(l);
            }
        }
    }
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|source| DevError::Bind { what, port, source })
}

/// A port range the kernel does not hand out to outgoing connections: below
/// `ip_local_port_range` (Linux; 32768-60999 by default), or above it when it starts low.
fn non_ephemeral_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    pick_range(range)
}

fn pick_range(ephemeral: Option<(u16, u16)>) -> (u16, u16) {
    const FLOOR: u16 = 10_000;
    match ephemeral {
        Some((low, _)) if low > FLOOR + 1000 => (FLOOR, low - 1),
        Some((_, high)) if high < 64_000 => (high + 1, 65_000),
        // No room outside it (or no /proc): anywhere above the well-known ports.
        _ => (FLOOR, 65_000),
    }
}

fn local_port(l: &TcpListener, what: &str) -> Result<u16, DevError> {
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| DevError::Bind {
            what: what.to_owned(),
            port: 0,
            source,
        })
}

/// A running local cluster.
#[derive(Debug)]
pub struct DevCluster {
    dir: PathBuf,
    layout: Layout,
    metas: Vec<MetaServer>,
    chunk_cfgs: Vec<ChunkConfig>,
    chunks: Vec<Option<ChunkServer>>,
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
            let cfg = meta_config(i, &peers, &dir, &layout, opts.healing);
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
                .map(|i| chunk_config(i, &peers, &dir, &layout, opts))
                .collect(),
            chunks: Vec::new(),
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

async fn start_chunk_server(index: usize, cfg: &ChunkConfig) -> Result<ChunkServer, DevError> {
    // A port just released (a restart, or a free port found by binding) is bound again by
    // the server; retry briefly in case the kernel has not let go of it yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ChunkServer::start(cfg).await {
            Ok(s) => return Ok(s),
            Err(dogfs_chunk::ServerError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => return Err(DevError::StartChunk { index, source }),
        }
    }
}

/// Production-like settings (1 MiB cells, 64 MiB segments), with quicker
/// heartbeats so `cluster status` reflects a stopped server soon.
fn meta_config(
    index: usize,
    peers: &[String],
    dir: &Path,
    layout: &Layout,
    healing: Option<Healing>,
) -> MetaConfig {
    let mut cfg = MetaConfig::for_tests(
        index as u64,
        peers.to_vec(),
        dir.join(format!("meta-{index}")),
    );
    cfg.partitions = layout.partitions;
    cfg.ec_k = layout.k;
    cfg.ec_m = layout.m;
    cfg.cell_size = ByteSize(1 << 20);
    cfg.segment_size = ByteSize(64 << 20);
    cfg.inline_max = ByteSize(4096);
    cfg.upload_ttl_secs = 86_400;
    cfg.suspect_after_secs = 10;
    cfg.down_after_secs = 600;
    cfg.heartbeat_interval_ms = 1000;
    cfg.gc_interval_ms = 5000;
    // The service's defaults (MetaConfig::for_tests shortens them for tests).
    cfg.repair_after_secs = 600;
    cfg.repair_interval_ms = 5000;
    cfg.orphan_grace_secs = 3600;
    cfg.orphan_interval_ms = 600_000;
    if let Some(h) = healing {
        cfg.suspect_after_secs = h.suspect_after_secs;
        cfg.down_after_secs = h.down_after_secs;
        cfg.repair_after_secs = h.repair_after_secs;
        cfg.heartbeat_interval_ms = 250;
        cfg.repair_interval_ms = 250;
    }
    cfg
}

fn chunk_config(
    index: usize,
    peers: &[String],
    dir: &Path,
    layout: &Layout,
    opts: &DevOptions,
) -> ChunkConfig {
    let mut cfg = ChunkConfig::for_tests(dir.join(format!("chunk-{index}")));
    let port = |ports: &[u16]| ports.get(index).copied().unwrap_or(0);
    cfg.grpc_addr = SocketAddr::from(([127, 0, 0, 1], port(&layout.chunk_grpc)));
    cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], port(&layout.chunk_http)));
    cfg.reserve = opts.reserve;
    cfg.capacity = opts.capacity;
    cfg.meta_endpoints = peers.to_vec();
    cfg.advertise_addr = opts
        .chunk_advertise
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, a)| a.clone());
    cfg
}

/// `dogfs dev`: start, print the endpoint, run until Ctrl-C or SIGTERM, stop cleanly.
pub async fn run(args: &crate::args::DevArgs, out: crate::output::Out) -> Result<(), DevError> {
    let opts = DevOptions::from(args);
    let cluster = DevCluster::start(&opts).await?;
    let endpoint = cluster.endpoint();

    #[derive(Serialize)]
    struct Ready<'a> {
        endpoint: &'a str,
        dir: &'a Path,
        log: PathBuf,
        layout: &'a Layout,
    }
    let printed = out
        .json(&Ready {
            endpoint: &endpoint,
            dir: cluster.dir(),
            log: DevCluster::log_path(cluster.dir()),
            layout: cluster.layout(),
        })
        .and_then(|()| out.line(&format!("DOGFS_ENDPOINT={endpoint}")));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn default_layout_numbers_ports_in_order() {
        let l = Layout::plan(&DevOptions::new("d"), None).unwrap();
        assert_eq!(l.meta_grpc, vec![7000, 7001, 7002]);
        assert_eq!(l.chunk_grpc, (7003..7009).collect::<Vec<_>>());
        assert_eq!(l.meta_http, vec![7009, 7010, 7011]);
        assert_eq!(l.chunk_http, (7012..7018).collect::<Vec<_>>());
        assert_eq!((l.k, l.m), (4, 2));
    }

    #[test]
    fn port_zero_means_pick() {
        let mut o = DevOptions::new("d");
        o.port = Some(0);
        o.meta = Some(1);
        o.chunks = Some(3);
        o.k = Some(2);
        o.m = Some(1);
        let l = Layout::plan(&o, None).unwrap();
        assert_eq!(l.meta_grpc, vec![0]);
        assert_eq!(l.chunk_http, vec![0, 0, 0]);
    }

    #[test]
    fn bad_options_are_refused() {
        let mut o = DevOptions::new("d");
        o.chunks = Some(5);
        assert!(matches!(
            Layout::plan(&o, None),
            Err(DevError::TooFewChunks { chunks: 5, .. })
        ));
        let mut o = DevOptions::new("d");
        o.port = Some(65_530);
        assert!(matches!(
            Layout::plan(&o, None),
            Err(DevError::PortRange { .. })
        ));
        let mut o = DevOptions::new("d");
        o.meta = Some(0);
        assert!(matches!(Layout::plan(&o, None), Err(DevError::NoMeta)));
        for bad in [0, MAX_PARTITIONS + 1] {
            let mut o = DevOptions::new("d");
            o.partitions = Some(bad);
            let e = Layout::plan(&o, None).unwrap_err();
            assert!(matches!(e, DevError::Partitions { partitions } if partitions == bad));
            assert!(
                e.to_string().contains(&format!("--partitions {bad}")),
                "{e}"
            );
        }
        let mut o = DevOptions::new("d");
        assert_eq!(Layout::plan(&o, None).unwrap().partitions, 8);
        o.partitions = Some(1);
        assert_eq!(Layout::plan(&o, None).unwrap().partitions, 1);
    }

    #[test]
    fn recorded_layout_wins_and_conflicting_flags_are_refused() {
        let rec = Layout {
            meta_grpc: vec![40_000, 40_001, 40_002],
            chunk_grpc: (40_003..40_009).collect(),
            meta_http: vec![41_000, 41_001, 41_002],
            chunk_http: (41_003..41_009).collect(),
            k: 4,
            m: 2,
            partitions: 3,
        };
        let mut o = DevOptions::new("d");
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.partitions = Some(3);
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.partitions = Some(8);
        let e = Layout::plan(&o, Some(rec.clone())).unwrap_err();
        assert!(e.to_string().contains("--partitions"), "{e}");
        o.partitions = None;
        o.port = Some(0);
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.port = Some(40_000);
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.port = Some(7000);
        let e = Layout::plan(&o, Some(rec.clone())).unwrap_err();
        assert!(e.to_string().contains("--port 40000"), "{e}");
        let mut o = DevOptions::new("d");
        o.chunks = Some(8);
        assert!(Layout::plan(&o, Some(rec)).is_err());
    }

    #[test]
    fn free_ports_avoid_the_ephemeral_range() {
        assert_eq!(pick_range(Some((32_768, 60_999))), (10_000, 32_767));
        assert_eq!(pick_range(Some((1024, 40_000))), (40_001, 65_000));
        assert_eq!(pick_range(Some((1024, 65_535))), (10_000, 65_000));
        assert_eq!(pick_range(None), (10_000, 65_000));
    }

    #[tokio::test]
    async fn port_zero_binds_outside_the_ephemeral_range() {
        let l = bind("test".into(), 0).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (low, high) = non_ephemeral_range();
        assert!((low..=high).contains(&port), "{port} not in {low}..={high}");
    }

    #[test]
    fn layout_round_trips_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Layout::load(d.path()).unwrap(), None);
        let l = Layout::plan(&DevOptions::new(d.path()), None).unwrap();
        l.save(d.path()).unwrap();
        assert_eq!(Layout::load(d.path()).unwrap(), Some(l));
        // A layout recorded before --partitions existed had the default.
        let mut old: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join(LAYOUT_FILE)).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("partitions");
        std::fs::write(d.path().join(LAYOUT_FILE), old.to_string()).unwrap();
        assert_eq!(Layout::load(d.path()).unwrap().unwrap().partitions, 8);
        std::fs::write(d.path().join(LAYOUT_FILE), b"{").unwrap();
        assert!(matches!(
            Layout::load(d.path()),
            Err(DevError::ParseLayout { .. })
        ));
    }
}
