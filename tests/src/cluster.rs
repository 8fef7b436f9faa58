//! A DogFS cluster of real processes on loopback (DESIGN §11): `dogfs-meta` and `dogfs-chunk`
//! with their data directories under one temp dir, ports picked free, every child's stdout and
//! stderr appended to `<temp>/logs/<node>.log`.
//!
//! Every wait has a deadline; a wait that times out (or a node that exits while being waited
//! for) returns an error carrying the tails of the relevant logs, and a `Cluster` dropped while
//! a test panics prints every node's log tail to stderr. Dropping the cluster kills every child
//! (SIGKILL works on stopped processes too); set `DOGFS_TEST_KEEP=1` to keep the temp dir.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use dogfs_proto::chunk::NodeInfoRequest;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_proto::meta::{
    ChunkNode, ClusterStatusRequest, ClusterStatusResponse, ListNodesRequest, NodeState,
};
use dogfs_security::ClientTls;
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::auth::{Bearer, TestAuth};
use crate::bins::{self, BinError, Binary};
use crate::tls::TestTls;
use tonic::service::interceptor::InterceptedService;

/// A channel as [`Cluster::channel`] gives it: calls carry the admin token under `auth`.
pub type TestChannel = InterceptedService<Channel, Bearer>;

/// Lines of each log shown in an error or on panic.
const TAIL_LINES: usize = 40;
/// Poll period of every wait.
const POLL: Duration = Duration::from_millis(50);
/// Per-call limits while probing nodes: a SIGSTOPped node must not stall a wait.
const PROBE_CONNECT: Duration = Duration::from_millis(500);
const PROBE_CALL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Binary(#[from] BinError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("no such node {0:?}")]
    NoSuchNode(NodeRef),
    #[error("{node:?} is {state}; {action} needs it {needed}")]
    WrongState {
        node: NodeRef,
        state: &'static str,
        action: &'static str,
        needed: &'static str,
    },
    #[error("the cluster has no metadata nodes")]
    NoMeta,
    #[error("the cluster was started without auth (ClusterOptions.auth)")]
    NoAuth,
    #[error("{node:?} exited while waiting for {what} ({status})\n{logs}")]
    Exited {
        node: NodeRef,
        what: String,
        status: String,
        logs: String,
    },
    #[error("timed out waiting for {what}; last observation: {last}\n{logs}")]
    Timeout {
        what: String,
        last: String,
        logs: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Which node: the index among the metadata nodes (= its Raft node id) or the chunk servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRef {
    Meta(usize),
    Chunk(usize),
}

/// What to start. `Default` is the production shape (3 + 6, RS 4+2) with timings shortened for
/// tests.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub meta_nodes: usize,
    pub chunk_nodes: usize,
    pub partitions: u64,
    pub ec_k: u32,
    pub ec_m: u32,
    pub heartbeat_interval_ms: u64,
    pub suspect_after_secs: u64,
    pub down_after_secs: u64,
    /// `RUST_LOG` of every process.
    pub rust_log: String,
    /// Extra variables for every process, then per kind (later entries win).
    pub env: Vec<(String, String)>,
    pub meta_env: Vec<(String, String)>,
    pub chunk_env: Vec<(String, String)>,
    /// Deadline for `start` and `restart` (a cold debug build of a 3+6 cluster on a loaded
    /// 2-core machine needs tens of seconds).
    pub startup_timeout: Duration,
    /// TLS on every process: a CA of the cluster's own and component certificates
    /// ([`Cluster::tls`]); the harness's own calls use it too.
    pub tls: bool,
    /// Tokens and shard grants (implies `tls`): a bootstrap admin token and a grant key
    /// ([`Cluster::auth`]); the harness's own calls and [`Cluster::channel`] carry the token.
    pub auth: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            meta_nodes: 3,
            chunk_nodes: 6,
            partitions: 4,
            ec_k: 4,
            ec_m: 2,
            heartbeat_interval_ms: 250,
            suspect_after_secs: 5,
            down_after_secs: 30,
            rust_log: "info".to_owned(),
            env: Vec::new(),
            meta_env: Vec::new(),
            chunk_env: Vec::new(),
            startup_timeout: Duration::from_secs(90),
            // `DOGFS_TEST_TLS=1` runs every suite's clusters on TLS (docs/testing.md).
            tls: std::env::var_os("DOGFS_TEST_TLS").is_some_and(|v| v == "1"),
            // `DOGFS_TEST_AUTH=1` adds tokens and grants (and TLS) to every suite's clusters.
            auth: std::env::var_os("DOGFS_TEST_AUTH").is_some_and(|v| v == "1"),
        }
    }
}

/// One process slot: its fixed ports, data dir and log, and the running child if any.
#[derive(Debug)]
pub struct Node {
    node: NodeRef,
    program: PathBuf,
    env: Vec<(String, String)>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    stopped: bool,
    starts: u32,
}

impl Node {
    pub fn node(&self) -> NodeRef {
        self.node
    }

    /// `host:port` of the gRPC server (meta: clients, admin, Raft; chunk: ChunkService).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id while a child runs (or is stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn spawn(&mut self) -> Result<(), ClusterError> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io(format!("opening {}", self.log_path.display())))?;
        self.starts += 1;
        // A marker between runs, so a restart's log is told apart from the run before.
        writeln!(
            log,
            "===== harness: start #{} of {:?} ({}) =====",
            self.starts,
            self.node,
            self.program.display()
        )
        .map_err(io("writing log marker"))?;
        let stderr = log.try_clone().map_err(io("cloning log file"))?;
        let mut cmd = Command::new(&self.program);
        // The developer's own DOGFS_* settings must not leak into test nodes.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DOGFS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", self.program.display())))?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    fn signal(&mut self, sig: Signal, action: &'static str) -> Result<(), ClusterError> {
        let child = self.child.as_ref().ok_or(ClusterError::WrongState {
            node: self.node,
            state: "not running",
            action,
            needed: "running",
        })?;
        kill_process(Pid::from_child(child), sig).map_err(|e| ClusterError::Io {
            what: format!("{action} {:?}", self.node),
            source: e.into(),
        })
    }

    /// SIGKILL and reap. A node that is not running is left alone.
    fn kill9(&mut self) -> Result<(), ClusterError> {
        if let Some(mut child) = self.child.take() {
            // Already exited (crashed) is fine: kill then fails, wait reaps.
            let _ = child.kill();
            child
                .wait()
                .map_err(io(format!("reaping {:?}", self.node)))?;
        }
        self.stopped = false;
        Ok(())
    }

    /// Whether the child ended by itself; reaps it and answers how.
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }
}

/// A running cluster. Dropping it kills every process.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    meta: Vec<Node>,
    chunk: Vec<Node>,
    /// Chunk servers' node ids as metadata knows them (32 hex), learned once each served.
    chunk_ids: Vec<Option<String>>,
    tls: Option<TestTls>,
    auth: Option<TestAuth>,
    /// The bootstrap token on the harness's own calls (none without `auth`).
    bearer: Bearer,
    // Last field: dropped after the children are killed (see Drop).
    dir: Option<TempDir>,
}

/// The process slot of chunk server `i` (ports, data dir, log, environment); not started.
fn chunk_slot(
    opts: &ClusterOptions,
    dir: &Path,
    i: usize,
    peers: &str,
    program: PathBuf,
    tls: Option<&TestTls>,
    auth: Option<&TestAuth>,
) -> Result<Node, ClusterError> {
    let (grpc, http) = (free_addr()?, free_addr()?);
    let data_dir = dir.join(format!("chunk-{i}"));
    let mut env = base_env(opts, &data_dir, grpc, http);
    env.extend(
        [
            ("DOGFS_RESERVE", "0".to_owned()),
            ("DOGFS_ADVERTISE_ADDR", grpc.to_string()),
            ("DOGFS_SHUTDOWN_GRACE_SECS", "2".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    if !peers.is_empty() {
        env.push(("DOGFS_META_ENDPOINTS".to_owned(), peers.to_owned()));
    }
    if let Some(tls) = tls {
        env.extend(tls.env("chunk"));
    }
    if let Some(auth) = auth {
        env.extend(auth.chunk_env());
    }
    env.extend(opts.env.iter().cloned());
    env.extend(opts.chunk_env.iter().cloned());
    Ok(Node {
        node: NodeRef::Chunk(i),
        program,
        env,
        grpc_addr: grpc,
        http_addr: http,
        data_dir,
        log_path: dir.join("logs").join(format!("chunk-{i}.log")),
        child: None,
        stopped: false,
        starts: 0,
    })
}

impl Cluster {
    /// Starts `opts.meta_nodes` metadata nodes and `opts.chunk_nodes` chunk servers and waits
    /// until every chunk server answers, and (with metadata) every group has a leader and every
    /// chunk server is registered UP.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let meta_bin = if opts.meta_nodes > 0 {
            Some(bins::path_of(Binary::Meta)?)
        } else {
            None
        };
        let chunk_bin = if opts.chunk_nodes > 0 {
            Some(bins::path_of(Binary::Chunk)?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("dogfs-cluster-")
            .tempdir()
            .map_err(io("creating the cluster temp dir"))?;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).map_err(io("creating logs dir"))?;
        let tls = if opts.tls || opts.auth {
            Some(TestTls::create(&dir.path().join("tls"))?)
        } else {
            None
        };
        let auth = if opts.auth {
            Some(TestAuth::create(&dir.path().join("auth"))?)
        } else {
            None
        };

        let meta_addrs: Vec<(SocketAddr, SocketAddr)> = (0..opts.meta_nodes)
            .map(|_| Ok((free_addr()?, free_addr()?)))
            .collect::<Result<_, ClusterError>>()?;
        let peers = meta_addrs
            .iter()
            .map(|(g, _)| g.to_string())
            .collect::<Vec<_>>()
            .join(",");

        let mut meta = Vec::new();
        for (i, (grpc, http)) in meta_addrs.iter().enumerate() {
            let data_dir = dir.path().join(format!("meta-{i}"));
            let mut env = base_env(&opts, &data_dir, *grpc, *http);
            env.extend(
                [
                    ("DOGFS_NODE_ID", i.to_string()),
                    ("DOGFS_PEERS", peers.clone()),
                    ("DOGFS_PARTITIONS", opts.partitions.to_string()),
                    ("DOGFS_EC_K", opts.ec_k.to_string()),
                    ("DOGFS_EC_M", opts.ec_m.to_string()),
                    (
                        "DOGFS_SUSPECT_AFTER_SECS",
                        opts.suspect_after_secs.to_string(),
                    ),
                    ("DOGFS_DOWN_AFTER_SECS", opts.down_after_secs.to_string()),
                    (
                        "DOGFS_HEARTBEAT_INTERVAL_MS",
                        opts.heartbeat_interval_ms.to_string(),
                    ),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
            if let Some(tls) = &tls {
                env.extend(tls.env("meta"));
            }
            if let Some(auth) = &auth {
                env.extend(auth.meta_env());
            }
            env.extend(opts.env.iter().cloned());
            env.extend(opts.meta_env.iter().cloned());
            meta.push(Node {
                node: NodeRef::Meta(i),
                program: meta_bin.clone().unwrap_or_default(),
                env,
                grpc_addr: *grpc,
                http_addr: *http,
                data_dir,
                log_path: logs.join(format!("meta-{i}.log")),
                child: None,
                stopped: false,
                starts: 0,
            });
        }

        let mut chunk = Vec::new();
        for i in 0..opts.chunk_nodes {
            chunk.push(chunk_slot(
                &opts,
                dir.path(),
                i,
                &peers,
                chunk_bin.clone().unwrap_or_default(),
                tls.as_ref(),
                auth.as_ref(),
            )?);
        }

        let mut cluster = Cluster {
            chunk_ids: vec![None; chunk.len()],
            opts,
            meta,
            chunk,
            tls,
            bearer: Bearer::new(auth.as_ref().map(TestAuth::token)),
            auth,
            dir: Some(dir),
        };
        // From here on an error drops `cluster`, which kills whatever was started.
        for n in cluster.meta.iter_mut().chain(cluster.chunk.iter_mut()) {
            n.spawn()?;
        }
        let deadline = Instant::now() + cluster.opts.startup_timeout;
        for i in 0..cluster.chunk.len() {
            cluster.wait_chunk_serving(i, deadline).await?;
        }
        if !cluster.meta.is_empty() {
            cluster.wait_meta_ready(deadline).await?;
        }
        Ok(cluster)
    }

    /// Starts one more chunk server (index `chunk_nodes()` before the call) and waits until it
    /// serves and, with metadata, is registered UP. Returns its index.
    pub async fn add_chunk_server(&mut self) -> Result<usize, ClusterError> {
        let i = self.chunk.len();
        let dir = self
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .ok_or_else(|| ClusterError::Io {
                what: "adding a chunk server".to_owned(),
                source: std::io::Error::other("the cluster's directory is gone"),
            })?;
        let peers = self
            .meta
            .iter()
            .map(|n| n.grpc_addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut node = chunk_slot(
            &self.opts,
            &dir,
            i,
            &peers,
            bins::path_of(Binary::Chunk)?,
            self.tls.as_ref(),
            self.auth.as_ref(),
        )?;
        node.spawn()?;
        self.chunk.push(node);
        self.chunk_ids.push(None);
        let deadline = Instant::now() + self.opts.startup_timeout;
        self.wait_chunk_serving(i, deadline).await?;
        if !self.meta.is_empty() {
            self.wait_chunks_registered(deadline).await?;
        }
        Ok(i)
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// The temp dir holding every data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), TempDir::path)
    }

    pub fn node(&self, node: NodeRef) -> Result<&Node, ClusterError> {
        match node {
            NodeRef::Meta(i) => self.meta.get(i),
            NodeRef::Chunk(i) => self.chunk.get(i),
        }
        .ok_or(ClusterError::NoSuchNode(node))
    }

    fn node_mut(&mut self, node: NodeRef) -> Result<&mut Node, ClusterError> {
        match node {
            NodeRef::Meta(i) => self.meta.get_mut(i),
            NodeRef::Chunk(i) => self.chunk.get_mut(i),
        }
        .ok_or(ClusterError::NoSuchNode(node))
    }

    pub fn meta_nodes(&self) -> usize {
        self.meta.len()
    }

    pub fn chunk_nodes(&self) -> usize {
        self.chunk.len()
    }

    /// A metadata endpoint for clients (`host:port`): the first running, unstopped node.
    pub fn endpoint(&self) -> Result<String, ClusterError> {
        self.meta
            .iter()
            .find(|n| n.is_running() && !n.is_stopped())
            .or_else(|| self.meta.first())
            .map(|n| n.grpc_addr.to_string())
            .ok_or(ClusterError::NoMeta)
    }

    /// The cluster's TLS material, when started with `tls`.
    pub fn tls(&self) -> Option<&TestTls> {
        self.tls.as_ref()
    }

    /// The cluster's token material, when started with `auth`.
    pub fn auth(&self) -> Option<&TestAuth> {
        self.auth.as_ref()
    }

    /// Writes a new bootstrap token (the metadata nodes re-read the file); the harness's
    /// own calls use it from now on. Returns it.
    pub fn rotate_admin_token(&mut self) -> Result<String, ClusterError> {
        let auth = self.auth.as_mut().ok_or(ClusterError::NoAuth)?;
        let token = auth.rotate_token()?;
        self.bearer = Bearer::new(Some(&token));
        Ok(token)
    }

    /// The bootstrap admin token, when started with `auth`.
    pub fn admin_token(&self) -> Option<&str> {
        self.auth.as_ref().map(TestAuth::token)
    }

    /// TLS for the harness's own calls (CA only, like an SDK user).
    fn probe_tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref().map(|t| t.client().as_ref())
    }

    /// A connected channel to `addr` (`host:port`) as a client sees it: over TLS trusting the
    /// cluster's CA when the cluster runs TLS, plain text otherwise; with `auth`, every call
    /// carries the bootstrap admin token.
    pub async fn channel(&self, addr: &str) -> Result<TestChannel, ClusterError> {
        channel(addr, self.probe_tls(), None)
            .await
            .map(|ch| InterceptedService::new(ch, self.bearer.clone()))
            .map_err(|e| ClusterError::Io {
                what: format!("connecting to {addr}"),
                source: std::io::Error::other(e),
            })
    }

    /// Like [`Self::channel`], presenting the metadata nodes' certificate under TLS: for
    /// calls only a metadata node may make (`MetaInternal`, calls marked forwarded).
    pub async fn meta_channel(&self, addr: &str) -> Result<TestChannel, ClusterError> {
        let tls = self.tls.as_ref().map(|t| t.as_meta().as_ref());
        channel(addr, tls, None)
            .await
            .map(|ch| InterceptedService::new(ch, self.bearer.clone()))
            .map_err(|e| ClusterError::Io {
                what: format!("connecting to {addr}"),
                source: std::io::Error::other(e),
            })
    }

    /// Every metadata node's `host:port`, in node-id order (running or not).
    pub fn endpoints(&self) -> Vec<String> {
        self.meta.iter().map(|n| n.grpc_addr.to_string()).collect()
    }

    /// Every chunk server's `host:port`.
    pub fn chunk_endpoints(&self) -> Vec<String> {
        self.chunk.iter().map(|n| n.grpc_addr.to_string()).collect()
    }

    /// The id chunk server `i` registers under (32 hex), once it has served.
    pub fn chunk_node_id(&self, i: usize) -> Option<&str> {
        self.chunk_ids.get(i)?.as_deref()
    }

    /// A ChunkService client for chunk server `i` (shard-stream transport settings); under TLS
    /// it presents the metadata nodes' certificate, so every method is open to it.
    pub async fn chunk_client(
        &self,
        i: usize,
    ) -> Result<ChunkServiceClient<Channel>, ClusterError> {
        let n = self.node(NodeRef::Chunk(i))?;
        // As a metadata node: `ListShards` and deletions are theirs under TLS.
        let tls = self.tls.as_ref().map(|t| t.as_meta().as_ref());
        dogfs_chunk::client::connect_with(&n.grpc_addr.to_string(), tls)
            .await
            .map_err(|e| ClusterError::Io {
                what: format!("connecting to chunk server {i}"),
                source: std::io::Error::other(e),
            })
    }

    /// SIGKILL: the process dies at once, without flushing anything; it is reaped.
    pub fn kill9(&mut self, node: NodeRef) -> Result<(), ClusterError> {
        self.node_mut(node)?.kill9()
    }

    /// SIGSTOP: the process freezes (sockets stay open, nothing answers). Returns once the
    /// kernel reports it stopped: the signal is delivered asynchronously, and on a loaded
    /// machine the process could otherwise still answer a call made right after this.
    pub fn sigstop(&mut self, node: NodeRef) -> Result<(), ClusterError> {
        let n = self.node_mut(node)?;
        n.signal(Signal::STOP, "SIGSTOP")?;
        n.stopped = true;
        let Some(pid) = n.child.as_ref().map(std::process::Child::id) else {
            return Ok(());
        };
        let stat = format!("/proc/{pid}/stat");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = String::new();
        while Instant::now() < deadline {
            // `pid (comm) S ...`: the state follows the last ')'.
            last = std::fs::read_to_string(&stat).unwrap_or_default();
            let state = last
                .rsplit(')')
                .next()
                .and_then(|r| r.trim_start().chars().next());
            if matches!(state, Some('T' | 't')) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(ClusterError::Timeout {
            what: format!("{node:?} to stop after SIGSTOP"),
            last,
            logs: String::new(),
        })
    }

    /// SIGCONT: a stopped process resumes.
    pub fn sigcont(&mut self, node: NodeRef) -> Result<(), ClusterError> {
        let n = self.node_mut(node)?;
        n.signal(Signal::CONT, "SIGCONT")?;
        n.stopped = false;
        Ok(())
    }

    /// Starts the node again with the same ports and data dir (killing it first if it runs),
    /// and waits until it serves (a chunk server answers NodeInfo and, with metadata, is
    /// registered UP again; a metadata node answers ClusterStatus).
    pub async fn restart(&mut self, node: NodeRef) -> Result<(), ClusterError> {
        let n = self.node_mut(node)?;
        n.kill9()?;
        n.spawn()?;
        let deadline = Instant::now() + self.opts.startup_timeout;
        match node {
            NodeRef::Chunk(i) => {
                self.wait_chunk_serving(i, deadline).await?;
                if !self.meta.is_empty() {
                    self.wait_chunks_registered(deadline).await?;
                }
                Ok(())
            }
            NodeRef::Meta(_) => self.wait_meta_answers(node, deadline).await,
        }
    }

    /// Starts the node again with the same ports and data dir (killing it first if it runs)
    /// and returns at once, without waiting for it to serve or register: for a process that is
    /// expected to exit by itself (e.g. a removed chunk server refused registration; see
    /// [`Cluster::wait_exit`]).
    pub fn start_nowait(&mut self, node: NodeRef) -> Result<(), ClusterError> {
        let n = self.node_mut(node)?;
        n.kill9()?;
        n.spawn()
    }

    /// Waits until the node's process ends by itself and answers its exit status; a timeout
    /// error (with the node's log) if it still runs after `timeout`.
    pub async fn wait_exit(
        &mut self,
        node: NodeRef,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.node_mut(node)?;
            let Some(child) = n.child.as_mut() else {
                return Err(ClusterError::WrongState {
                    node,
                    state: "not running",
                    action: "wait_exit",
                    needed: "running",
                });
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    n.child = None;
                    n.stopped = false;
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => return Err(io(format!("waiting for {node:?}"))(e)),
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    what: format!("{node:?} to exit"),
                    last: "still running".to_owned(),
                    logs: self.logs_of(&[node]),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sets (or replaces) an environment variable of the node for its next start.
    pub fn set_env(&mut self, node: NodeRef, key: &str, value: &str) -> Result<(), ClusterError> {
        let n = self.node_mut(node)?;
        n.env.retain(|(k, _)| k != key);
        n.env.push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    /// Removes the node's data dir (it must be killed first): the next `restart` starts it
    /// empty, as a replaced disk would; a chunk server gets a new identity.
    pub fn wipe(&mut self, node: NodeRef) -> Result<(), ClusterError> {
        let n = self.node_mut(node)?;
        if n.is_running() {
            return Err(ClusterError::WrongState {
                node,
                state: "running",
                action: "wipe",
                needed: "killed",
            });
        }
        match std::fs::remove_dir_all(&n.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("wiping {}", n.data_dir.display()))(e)),
        }
        if let NodeRef::Chunk(i) = node
            && let Some(id) = self.chunk_ids.get_mut(i)
        {
            *id = None;
        }
        Ok(())
    }

    /// Kills every node (kill -9, stopped ones too) and starts them all again on the same
    /// ports and data dirs, then waits as `start` does: every chunk server answers, every
    /// group has a leader, every chunk server is registered UP. A whole-cluster power cut.
    pub async fn restart_all(&mut self) -> Result<(), ClusterError> {
        for n in self.meta.iter_mut().chain(self.chunk.iter_mut()) {
            n.kill9()?;
        }
        for n in self.meta.iter_mut().chain(self.chunk.iter_mut()) {
            n.spawn()?;
        }
        let deadline = Instant::now() + self.opts.startup_timeout;
        for i in 0..self.chunk.len() {
            self.wait_chunk_serving(i, deadline).await?;
        }
        if !self.meta.is_empty() {
            self.wait_meta_ready(deadline).await?;
        }
        Ok(())
    }

    /// Waits (up to `startup_timeout`) until every metadata group has a leader and every
    /// running chunk server is registered UP, e.g. after restarting nodes one by one.
    pub async fn wait_ready(&mut self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + self.opts.startup_timeout;
        self.wait_meta_ready(deadline).await
    }

    /// The index of the chunk server registered as `node_id` (32 hex, as metadata spells it,
    /// e.g. `ShardLocation::node_id`), among those that have served since their last wipe.
    pub fn chunk_index(&self, node_id: &str) -> Option<usize> {
        let want = node_id.replace('-', "");
        self.chunk_ids
            .iter()
            .position(|id| id.as_deref() == Some(want.as_str()))
    }

    /// Shard uploads chunk server `i` is receiving right now: the names of the temp files in
    /// `<data>/tmp/` (`<shard-id>.<pid>.<seq>.tmp`, chunk-node/src/store.rs), cut to the shard
    /// id. A test uses this to find the targets of a PUT in flight without asking the client.
    pub fn chunk_uploads_in_progress(&self, i: usize) -> Result<Vec<String>, ClusterError> {
        let n = self.node(NodeRef::Chunk(i))?;
        let tmp = n.data_dir.join("tmp");
        let entries = match std::fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("listing {}", tmp.display()))(e)),
        };
        let mut ids = Vec::new();
        for e in entries {
            let e = e.map_err(io(format!("listing {}", tmp.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.split('.').next()
                && name.ends_with(".tmp")
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// ClusterStatus from the first metadata node that answers (running, not stopped).
    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse, ClusterError> {
        let mut last = String::from("no metadata node is running");
        for n in self
            .meta
            .iter()
            .filter(|n| n.is_running() && !n.is_stopped())
        {
            match cluster_status_of(n.grpc_addr, self.probe_tls(), &self.bearer).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("{:?}: {e}", n.node),
            }
        }
        Err(ClusterError::Io {
            what: "ClusterStatus".to_owned(),
            source: std::io::Error::other(last),
        })
    }

    /// The leader of Raft group `group` (0 = system) with its term, as the live metadata nodes
    /// report it: the report with the highest term wins, since a partitioned node may still
    /// name an old leader. `None` while no node knows one.
    pub async fn meta_leader(&self, group: u64) -> Option<(u64, u64)> {
        let mut best: Option<(u64, u64)> = None;
        for n in self
            .meta
            .iter()
            .filter(|n| n.is_running() && !n.is_stopped())
        {
            let Ok(s) = cluster_status_of(n.grpc_addr, self.probe_tls(), &self.bearer).await else {
                continue;
            };
            for g in s.groups.iter().filter(|g| g.group_id == group) {
                if let Some(l) = g.leader_id
                    && best.is_none_or(|(_, t)| g.term > t)
                {
                    best = Some((l, g.term));
                }
            }
        }
        best
    }

    /// Waits until group `group` has a leader for which `accept(leader_id, term)` holds (e.g.
    /// "not the node just killed").
    pub async fn wait_meta_leader(
        &mut self,
        group: u64,
        timeout: Duration,
        accept: impl Fn(u64, u64) -> bool,
    ) -> Result<(u64, u64), ClusterError> {
        let deadline = Instant::now() + timeout;
        let what = format!("a leader of group {group}");
        loop {
            let last = match self.meta_leader(group).await {
                Some((l, t)) if accept(l, t) => return Ok((l, t)),
                Some((l, t)) => format!("leader {l} in term {t}, not accepted"),
                None => "no leader known".to_owned(),
            };
            self.check_deadline(&what, deadline, &last, self.all_meta())?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every chunk server is registered UP with the address it advertises.
    pub async fn wait_chunks_registered(&mut self, deadline: Instant) -> Result<(), ClusterError> {
        let what = "every chunk server registered UP".to_owned();
        loop {
            let last = match self.list_nodes().await {
                Ok(nodes) => {
                    let missing = self.unregistered(&nodes);
                    if missing.is_empty() {
                        return Ok(());
                    }
                    format!("not (yet) UP: chunk servers {missing:?}; registry: {nodes:?}")
                }
                Err(e) => e.to_string(),
            };
            let mut watch = self.all_meta();
            watch.extend((0..self.chunk.len()).map(NodeRef::Chunk));
            self.check_deadline(&what, deadline, &last, watch)?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// The registry as ListNodes answers it from the first metadata node that answers.
    pub async fn list_nodes(&self) -> Result<Vec<ChunkNode>, ClusterError> {
        let mut last = String::from("no metadata node is running");
        for n in self
            .meta
            .iter()
            .filter(|n| n.is_running() && !n.is_stopped())
        {
            let r = async {
                let mut c = admin_client(n.grpc_addr, self.probe_tls(), &self.bearer).await?;
                let mut req = tonic::Request::new(ListNodesRequest {});
                req.set_timeout(PROBE_CALL);
                Ok::<_, String>(
                    c.list_nodes(req)
                        .await
                        .map_err(|s| s.to_string())?
                        .into_inner()
                        .nodes,
                )
            }
            .await;
            match r {
                Ok(nodes) => return Ok(nodes),
                Err(e) => last = format!("{:?}: {e}", n.node),
            }
        }
        Err(ClusterError::Io {
            what: "ListNodes".to_owned(),
            source: std::io::Error::other(last),
        })
    }

    /// Indexes of running chunk servers not listed UP at their address.
    fn unregistered(&self, nodes: &[ChunkNode]) -> Vec<usize> {
        (0..self.chunk.len())
            .filter(|&i| self.chunk[i].is_running())
            .filter(|&i| {
                let Some(id) = self.chunk_ids[i].as_deref() else {
                    return true;
                };
                let addr = self.chunk[i].grpc_addr.to_string();
                !nodes.iter().any(|n| {
                    n.node_id == id && n.address == addr && n.state == NodeState::Up as i32
                })
            })
            .collect()
    }

    fn all_meta(&self) -> Vec<NodeRef> {
        (0..self.meta.len()).map(NodeRef::Meta).collect()
    }

    /// Waits until chunk server `i` answers NodeInfo; records its node id.
    async fn wait_chunk_serving(
        &mut self,
        i: usize,
        deadline: Instant,
    ) -> Result<(), ClusterError> {
        let addr = self.node(NodeRef::Chunk(i))?.grpc_addr;
        let what = format!("chunk server {i} to serve on {addr}");
        loop {
            let last = match node_info_id(addr, self.probe_tls()).await {
                Ok(id) => {
                    if let Some(slot) = self.chunk_ids.get_mut(i) {
                        *slot = Some(id);
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            self.check_deadline(&what, deadline, &last, vec![NodeRef::Chunk(i)])?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until one metadata node answers ClusterStatus.
    async fn wait_meta_answers(
        &mut self,
        node: NodeRef,
        deadline: Instant,
    ) -> Result<(), ClusterError> {
        let addr = self.node(node)?.grpc_addr;
        let what = format!("{node:?} to answer ClusterStatus on {addr}");
        loop {
            let last = match cluster_status_of(addr, self.probe_tls(), &self.bearer).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            self.check_deadline(&what, deadline, &last, vec![node])?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until ClusterStatus shows a leader for every group and every chunk server is
    /// registered UP.
    async fn wait_meta_ready(&mut self, deadline: Instant) -> Result<(), ClusterError> {
        let groups = self.opts.partitions + 1;
        let what = format!("leaders for all {groups} metadata groups");
        loop {
            let last = match self.cluster_status().await {
                Ok(s) => {
                    let leaderless: Vec<u64> = (0..groups)
                        .filter(|g| {
                            !s.groups
                                .iter()
                                .any(|x| x.group_id == *g && x.leader_id.is_some())
                        })
                        .collect();
                    if leaderless.is_empty() {
                        break;
                    }
                    format!("groups without a leader: {leaderless:?}")
                }
                Err(e) => e.to_string(),
            };
            self.check_deadline(&what, deadline, &last, self.all_meta())?;
            tokio::time::sleep(POLL).await;
        }
        if !self.chunk.is_empty() {
            self.wait_chunks_registered(deadline).await?;
        }
        Ok(())
    }

    /// Fails when a watched node exited or the deadline passed, with the watched nodes' logs.
    fn check_deadline(
        &mut self,
        what: &str,
        deadline: Instant,
        last: &str,
        watch: Vec<NodeRef>,
    ) -> Result<(), ClusterError> {
        for &r in &watch {
            if let Ok(n) = self.node_mut(r)
                && let Some(status) = n.exited()
            {
                return Err(ClusterError::Exited {
                    node: r,
                    what: what.to_owned(),
                    status,
                    logs: self.logs_of(&[r]),
                });
            }
        }
        let now = Instant::now();
        if now < deadline {
            return Ok(());
        }
        Err(ClusterError::Timeout {
            what: what.to_owned(),
            last: last.to_owned(),
            logs: self.logs_of(&watch),
        })
    }

    /// The log tails of `nodes`, each under a header naming the node and the file.
    pub fn logs_of(&self, nodes: &[NodeRef]) -> String {
        let mut out = String::new();
        for &r in nodes {
            if let Ok(n) = self.node(r) {
                out.push_str(&format!(
                    "----- {r:?}: last {TAIL_LINES} lines of {} -----\n{}\n",
                    n.log_path.display(),
                    n.log_tail(TAIL_LINES)
                ));
            }
        }
        out
    }

    /// Every node's log tail.
    pub fn all_logs(&self) -> String {
        let mut all = self.all_meta();
        all.extend((0..self.chunk.len()).map(NodeRef::Chunk));
        self.logs_of(&all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.meta.iter_mut().chain(self.chunk.iter_mut()) {
            let _ = n.kill9();
        }
        // A failing test's assertion message is more useful with what the nodes said.
        if std::thread::panicking() {
            eprintln!(
                "cluster dropped during a panic; logs under {}\n{}",
                self.dir().display(),
                self.all_logs()
            );
        }
        if std::env::var_os("DOGFS_TEST_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("DOGFS_TEST_KEEP: cluster dir kept at {}", kept.display());
        }
    }
}

/// Environment every node gets.
fn base_env(
    opts: &ClusterOptions,
    data_dir: &Path,
    grpc: SocketAddr,
    http: SocketAddr,
) -> Vec<(String, String)> {
    [
        ("DOGFS_DATA_DIR", data_dir.display().to_string()),
        ("DOGFS_GRPC_ADDR", grpc.to_string()),
        ("DOGFS_HTTP_ADDR", http.to_string()),
        ("DOGFS_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", opts.rust_log.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Ports handed out by this process, so parallel tests in one test binary never share one.
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback address with a port that was free a moment ago, picked outside the kernel's
/// ephemeral range. The port is released before the child binds it, and a killed node's port
/// stays free until it restarts: a port from the ephemeral range could meanwhile become the
/// source port of any outgoing connection (the nodes dial each other all the time), and the
/// restart would fail with "address in use". Outside that range only another listener can
/// take it, and `TAKEN` keeps parallel tests of one binary apart.
fn free_addr() -> Result<SocketAddr, ClusterError> {
    let (low, high) = non_ephemeral_range();
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = rand::random_range(low..=high);
        if taken.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))) {
            let addr = l.local_addr().map_err(io("probe port address"))?;
            taken.insert(port);
            return Ok(addr);
        }
    }
    Err(ClusterError::Io {
        what: "finding a free port".to_owned(),
        source: std::io::Error::other(format!("1000 probes in {low}..={high} found none free")),
    })
}

/// Ports the kernel does not hand out to outgoing connections: below `ip_local_port_range`
/// (32768-60999 by default on Linux), or above it when it starts low.
fn non_ephemeral_range() -> (u16, u16) {
    const FLOOR: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    match ephemeral {
        Some((low, _)) if low > FLOOR + 1000 => (FLOOR, low - 1),
        Some((_, high)) if high < 64_000 => (high + 1, 65_000),
        _ => (FLOOR, 65_000),
    }
}

/// A connected channel to `addr`, over TLS when `tls` is given; each call bounded by
/// `call_timeout` when given (the harness's probes), unbounded otherwise (tests' own calls).
async fn channel(
    addr: &str,
    tls: Option<&ClientTls>,
    call_timeout: Option<Duration>,
) -> Result<Channel, String> {
    let uri = dogfs_security::client::uri(addr, tls).map_err(|e| e.to_string())?;
    let (mut endpoint, _) =
        dogfs_security::client::endpoint(&uri, tls).map_err(|e| e.to_string())?;
    if let Some(t) = call_timeout {
        endpoint = endpoint.timeout(t);
    }
    endpoint
        .connect_timeout(PROBE_CONNECT)
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

async fn admin_client(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    bearer: &Bearer,
) -> Result<AdminServiceClient<TestChannel>, String> {
    Ok(AdminServiceClient::new(InterceptedService::new(
        channel(&addr.to_string(), tls, Some(PROBE_CALL)).await?,
        bearer.clone(),
    )))
}

async fn cluster_status_of(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    bearer: &Bearer,
) -> Result<ClusterStatusResponse, String> {
    let mut c = admin_client(addr, tls, bearer).await?;
    c.cluster_status(ClusterStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("ClusterStatus on {addr}: {s}"))
}

/// The chunk server's node id in the registry's spelling (32 hex, no hyphens).
async fn node_info_id(addr: SocketAddr, tls: Option<&ClientTls>) -> Result<String, String> {
    let mut c = ChunkServiceClient::new(channel(&addr.to_string(), tls, Some(PROBE_CALL)).await?);
    let info = c
        .node_info(NodeInfoRequest {})
        .await
        .map_err(|s| format!("NodeInfo on {addr}: {s}"))?
        .into_inner();
    Ok(info.node_id.replace('-', ""))
}

/// The last `lines` lines of a file (reads at most the last 64 KiB).
fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}
