//! Registration and heartbeats against a tiny in-test `ChunkRegistry` server that records
//! every call: identity, address, zone and usage; repeated heartbeats; re-registration after
//! NOT_FOUND; leader hints; failing over to the next endpoint; serving while metadata is away;
//! a removed server refused (it stops with exit code 3, or with `--rejoin-when-removed` wipes
//! its store and joins under a new id), in process and as the real binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::client::{connect, get_shard, put_messages, put_shard};
use dogfs_chunk::heartbeat::LEADER_HEADER;
use dogfs_chunk::{ChunkConfig, ChunkServer, EXIT_REMOVED, ServerError};
use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::NodeInfoRequest;
use dogfs_proto::meta::chunk_registry_server::{ChunkRegistry, ChunkRegistryServer};
use dogfs_proto::meta::{
    HeartbeatRequest, HeartbeatResponse, NodeState, RegisterRequest, RegisterResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Default)]
struct Log {
    registers: Vec<RegisterRequest>,
    heartbeats: Vec<HeartbeatRequest>,
    /// Heartbeats answered NOT_FOUND.
    not_found: usize,
    /// Calls answered UNAVAILABLE with a leader hint.
    redirected: usize,
    /// Heartbeats of a known but removed id, refused like its Register.
    refused_heartbeats: usize,
}

#[derive(Debug)]
struct Inner {
    log: Log,
    known: HashSet<String>,
    /// Ids whose Register is refused as the metadata service refuses a removed node.
    removed: HashSet<String>,
    state: NodeState,
}

/// What the fake metadata node does; cheap to clone, shared with its server task.
#[derive(Debug, Clone)]
struct Registry {
    inner: Arc<Mutex<Inner>>,
    interval_ms: u64,
    /// Set: every call is answered UNAVAILABLE naming this leader.
    redirect_to: Option<String>,
}

impl Registry {
    fn new(interval_ms: u64, redirect_to: Option<String>) -> Self {
        Registry {
            inner: Arc::new(Mutex::new(Inner {
                log: Log::default(),
                known: HashSet::new(),
                removed: HashSet::new(),
                state: NodeState::Up,
            })),
            interval_ms,
            redirect_to,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap())
    }

    fn registers(&self) -> usize {
        self.with(|i| i.log.registers.len())
    }

    fn heartbeats(&self) -> usize {
        self.with(|i| i.log.heartbeats.len())
    }

    /// Metadata loses the node (a restored registry, say): heartbeats get NOT_FOUND.
    fn forget_all(&self) {
        self.with(|i| i.known.clear());
    }

    /// RemoveNode: the id is refused from its next Register on. With `forget`, its heartbeats
    /// also get NOT_FOUND, which makes a running server register again.
    fn remove(&self, node_id: &str, forget: bool) {
        self.with(|i| {
            i.removed.insert(node_id.to_owned());
            if forget {
                i.known.remove(node_id);
            }
        });
    }

    /// Node ids registered, in order.
    fn registered_ids(&self) -> Vec<String> {
        self.with(|i| i.log.registers.iter().map(|r| r.node_id.clone()).collect())
    }

    fn set_state(&self, s: NodeState) {
        self.with(|i| i.state = s);
    }

    fn redirect(&self) -> Option<Status> {
        let leader = self.redirect_to.as_ref()?;
        self.with(|i| i.log.redirected += 1);
        let mut st = Status::unavailable("not the leader and cannot forward");
        st.metadata_mut()
            .insert(LEADER_HEADER, leader.parse().unwrap());
        Some(st)
    }
}

#[tonic::async_trait]
impl ChunkRegistry for Registry {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        if let Some(st) = self.redirect() {
            return Err(st);
        }
        let req = request.into_inner();
        let state = self.with(|i| {
            if i.removed.contains(&req.node_id) {
                // The metadata service's wording (meta-node registry, RegisterRemoved).
                return Err(Status::failed_precondition(format!(
                    "chunk server {} was removed from the cluster; its id is not reused. Its \
                     shards are no longer referenced: wipe its data directory (or start it \
                     with --rejoin-when-removed) to join as a new server",
                    req.node_id
                )));
            }
            i.known.insert(req.node_id.clone());
            i.log.registers.push(req);
            Ok(i.state)
        })?;
        Ok(Response::new(RegisterResponse {
            state: state as i32,
            heartbeat_interval_ms: self.interval_ms,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        if let Some(st) = self.redirect() {
            return Err(st);
        }
        let req = request.into_inner();
        let state = self.with(|i| {
            if !i.known.contains(&req.node_id) {
                i.log.not_found += 1;
                return Err(Status::not_found(format!("no node {}", req.node_id)));
            }
            if i.removed.contains(&req.node_id) {
                i.log.refused_heartbeats += 1;
                return Err(Status::failed_precondition(format!(
                    "chunk server {} was removed; its id is not reused",
                    req.node_id
                )));
            }
            i.log.heartbeats.push(req);
            Ok(i.state)
        })?;
        Ok(Response::new(HeartbeatResponse {
            state: state as i32,
            heartbeat_interval_ms: self.interval_ms,
        }))
    }
}

/// Serves `reg` on `addr` (port 0: an ephemeral one); the task ends with the test's runtime.
async fn serve(reg: Registry, addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ChunkRegistryServer::new(reg))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// A loopback address nothing listens on (bound, then released).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn start(dir: &std::path::Path, endpoints: &[SocketAddr], zone: &str) -> ChunkServer {
    let mut cfg = ChunkConfig::for_tests(dir);
    cfg.meta_endpoints = endpoints.iter().map(ToString::to_string).collect();
    cfg.zone = zone.to_owned();
    ChunkServer::start(&cfg).await.unwrap()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A plain HTTP/1.1 GET, enough for the health and metrics endpoints.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (status, resp)
}

async fn shutdown_promptly(server: ChunkServer) {
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown hung (registration task not stopping?)")
        .unwrap();
}

#[tokio::test]
async fn registers_identity_address_zone_and_usage_then_heartbeats() {
    let reg = Registry::new(30, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[meta], "zone-a").await;
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    let data = Bytes::from(vec![5u8; 100_000]);
    put_shard(&mut c, ShardId::random(), &data).await.unwrap();

    // Heartbeats keep coming, and one of them reports the stored shard.
    wait_until("heartbeats reporting the shard", || {
        reg.with(|i| {
            i.log.heartbeats.len() >= 3
                && i.log.heartbeats.iter().any(|h| {
                    h.usage
                        .as_ref()
                        .is_some_and(|u| u.shard_count == 1 && u.used_bytes >= 100_000)
                })
        })
    })
    .await;

    let info = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    let want_id = info.node_id.replace('-', "");
    assert_eq!(want_id.len(), 32);
    assert!(
        want_id
            .chars()
            .all(|ch| ch.is_ascii_digit() || ('a'..='f').contains(&ch))
    );
    reg.with(|i| {
        assert_eq!(i.log.registers.len(), 1, "one registration per start");
        let r = &i.log.registers[0];
        assert_eq!(r.node_id, want_id);
        assert_eq!(r.address, server.grpc_addr().to_string());
        assert_eq!(r.zone, "zone-a");
        let u = r.usage.as_ref().unwrap();
        assert!(u.capacity_bytes > 0);
        assert!(u.available_bytes > 0 && u.available_bytes <= u.capacity_bytes);
        assert_eq!((u.corrupt_shards, u.io_errors), (0, 0));
        assert!(i.log.heartbeats.iter().all(|h| h.node_id == want_id));
    });
    assert_eq!(server.node_state(), Some(NodeState::Up));
    let (code, body) = http_get(server.http_addr(), "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        r#"dogfs_chunk_node_state{state="up"} 1"#,
        r#"dogfs_chunk_node_state{state="unregistered"} 0"#,
        r#"dogfs_chunk_node_state{state="draining"} 0"#,
    ] {
        assert!(body.contains(needle), "metrics lack {needle:?}:\n{body}");
    }

    // An operator drains the node: the next heartbeat carries it to the server.
    reg.set_state(NodeState::Draining);
    wait_until("draining state", || {
        server.node_state() == Some(NodeState::Draining)
    })
    .await;
    let (_, body) = http_get(server.http_addr(), "/metrics").await;
    assert!(
        body.contains(r#"dogfs_chunk_node_state{state="draining"} 1"#),
        "{body}"
    );
    assert!(body.contains(r#"dogfs_chunk_node_state{state="up"} 0"#));
    shutdown_promptly(server).await;

    // Stopped means stopped: no more heartbeats after shutdown returned.
    let after = reg.heartbeats();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(reg.heartbeats(), after);
}

#[tokio::test]
async fn registers_again_when_metadata_forgets_the_node() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[meta], "").await;
    wait_until("first heartbeats", || reg.heartbeats() >= 2).await;
    assert_eq!(reg.registers(), 1);

    reg.forget_all();
    wait_until("a second registration", || reg.registers() >= 2).await;
    let hb = reg.heartbeats();
    wait_until("heartbeats after re-registering", || {
        reg.heartbeats() >= hb + 2
    })
    .await;
    reg.with(|i| {
        assert!(i.log.not_found >= 1);
        assert_eq!(i.log.registers[1].node_id, i.log.registers[0].node_id);
        assert_eq!(i.log.registers[1].address, i.log.registers[0].address);
    });
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn follows_the_leader_hint_of_a_node_that_cannot_forward() {
    let leader = Registry::new(20, None);
    let leader_addr = serve(leader.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let follower = Registry::new(20, Some(leader_addr.to_string()));
    let follower_addr = serve(follower.clone(), "127.0.0.1:0".parse().unwrap()).await;

    // Only the follower is configured: the leader is reachable through its hint alone.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[follower_addr], "").await;
    wait_until("registration and heartbeats at the leader", || {
        leader.registers() == 1 && leader.heartbeats() >= 3
    })
    .await;
    // Heartbeats stay with the leader once found.
    follower.with(|i| {
        assert_eq!(i.log.redirected, 1);
        assert!(i.log.registers.is_empty() && i.log.heartbeats.is_empty());
    });
    assert_eq!(server.node_state(), Some(NodeState::Up));
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn moves_on_to_the_next_endpoint_when_one_is_down() {
    let reg = Registry::new(20, None);
    let live = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[dead_addr(), live], "").await;
    wait_until("registration via the second endpoint", || {
        reg.registers() == 1 && reg.heartbeats() >= 2
    })
    .await;
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn serves_shards_while_metadata_is_unreachable_then_registers() {
    let meta = dead_addr();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[meta], "").await;

    // Failed calls are counted, and everything else works as if standalone.
    let metric = |body: &str, name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let end = Instant::now() + DEADLINE;
    loop {
        let (_, body) = http_get(server.http_addr(), "/metrics").await;
        if metric(&body, "dogfs_chunk_registry_errors_total ") >= 2 {
            assert!(
                body.contains(r#"dogfs_chunk_node_state{state="unregistered"} 1"#),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < end, "no failed registry calls counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.node_state(), None);
    let (code, body) = http_get(server.http_addr(), "/readyz").await;
    assert_eq!(code, 200, "readiness must not wait for metadata: {body}");
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    let id = ShardId::random();
    let data = Bytes::from(
        (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    put_shard(&mut c, id, &data).await.unwrap();
    assert_eq!(get_shard(&mut c, id, 0, None).await.unwrap(), data);

    // Metadata comes up on the configured address: the server registers within its backoff.
    let reg = Registry::new(20, None);
    serve(reg.clone(), meta).await;
    wait_until("registration once metadata is up", || {
        reg.registers() == 1 && reg.heartbeats() >= 1
    })
    .await;
    reg.with(|i| {
        assert_eq!(i.log.registers[0].usage.as_ref().unwrap().shard_count, 1);
    });
    assert_eq!(get_shard(&mut c, id, 0, None).await.unwrap(), data);
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn wildcard_grpc_address_needs_an_advertise_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ChunkConfig::for_tests(dir.path());
    cfg.grpc_addr = "0.0.0.0:0".parse().unwrap();
    cfg.meta_endpoints = vec!["127.0.0.1:7000".into()];
    let err = ChunkServer::start(&cfg).await.unwrap_err().to_string();
    assert!(err.contains("DOGFS_ADVERTISE_ADDR"), "{err}");

    cfg.advertise_addr = Some("not an address".into());
    let err = ChunkServer::start(&cfg).await.unwrap_err().to_string();
    assert!(err.contains("not an address"), "{err}");

    // Standalone (no endpoints, or only blanks from an empty variable) needs neither.
    cfg.advertise_addr = None;
    cfg.meta_endpoints = vec![String::new()];
    let server = ChunkServer::start(&cfg).await.unwrap();
    assert_eq!(server.node_state(), None);
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn heartbeats_name_corrupt_shards_until_deleted_and_report_scrub_progress() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ChunkConfig::for_tests(dir.path());
    cfg.meta_endpoints = vec![meta.to_string()];
    // A pass every second, so the scrubber finds a flip made after the server started.
    cfg.scrub_rate = dogfs_core::size::ByteSize(256 * 1024 * 1024);
    cfg.scrub_interval_secs = 1;
    let server = ChunkServer::start(&cfg).await.unwrap();
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    let good = ShardId::random();
    let bad = ShardId::random();
    let data = Bytes::from(vec![7u8; 300_000]);
    put_shard(&mut c, good, &data).await.unwrap();
    put_shard(&mut c, bad, &data).await.unwrap();

    // Flip one byte of `bad` on disk; only the scrubber reads it from now on.
    let path = server.store().shard_path(bad);
    let mut raw = std::fs::read(&path).unwrap();
    raw[200_000] ^= 0x10;
    std::fs::write(&path, &raw).unwrap();

    let bad_s = bad.to_string();
    wait_until("a heartbeat naming the corrupt shard", || {
        reg.with(|i| {
            i.log
                .heartbeats
                .iter()
                .any(|h| h.corrupt_shard_ids == vec![bad_s.clone()] && h.scrub_passes >= 1)
        })
    })
    .await;
    reg.with(|i| {
        let h = i
            .log
            .heartbeats
            .iter()
            .find(|h| !h.corrupt_shard_ids.is_empty())
            .unwrap();
        // Usage counts it too.
        assert_eq!(h.usage.as_ref().unwrap().corrupt_shards, 1);
        // Progress is a fraction; between passes it reads 1.
        for h in &i.log.heartbeats {
            assert!((0.0..=1.0).contains(&h.scrub_progress), "{h:?}");
        }
        assert!(
            i.log
                .heartbeats
                .iter()
                .any(|h| h.scrub_passes >= 1 && h.scrub_progress == 1.0)
        );
    });
    let (_, body) = http_get(server.http_addr(), "/metrics").await;
    assert!(body.contains("dogfs_chunk_scrub_progress "), "{body}");
    assert!(body.contains("dogfs_chunk_corrupt_shards 1"), "{body}");

    // Passes go on and are counted.
    let passes = reg.with(|i| i.log.heartbeats.last().unwrap().scrub_passes);
    wait_until("another scrub pass", || {
        reg.with(|i| i.log.heartbeats.last().unwrap().scrub_passes > passes)
    })
    .await;

    // Repaired elsewhere, GC deletes it here: heartbeats stop naming it.
    c.delete_shard(dogfs_proto::chunk::DeleteShardRequest {
        grant: Default::default(),
        shard_id: bad_s.clone(),
    })
    .await
    .unwrap();
    let seen = reg.heartbeats();
    wait_until("heartbeats without the deleted shard", || {
        reg.with(|i| {
            i.log.heartbeats.len() > seen + 1
                && i.log
                    .heartbeats
                    .last()
                    .unwrap()
                    .corrupt_shard_ids
                    .is_empty()
        })
    })
    .await;
    assert!(server.store().corrupt_shards().is_empty());
    assert_eq!(get_shard(&mut c, good, 0, None).await.unwrap(), data);
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn a_heartbeat_names_at_most_1000_corrupt_shards() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[meta], "").await;
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    // 1001 stored shards, each with its footer damaged: a stat finds every one corrupt.
    let mut ids = Vec::new();
    for _ in 0..1001 {
        let id = ShardId::random();
        put_shard(&mut c, id, &Bytes::from_static(b"x"))
            .await
            .unwrap();
        let path = server.store().shard_path(id);
        let mut raw = std::fs::read(&path).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(server.store().stat(id).is_err());
        ids.push(id.to_string());
    }
    ids.sort();
    wait_until("a heartbeat with the corrupt shards", || {
        reg.with(|i| {
            i.log
                .heartbeats
                .last()
                .is_some_and(|h| h.usage.as_ref().unwrap().corrupt_shards == 1001)
        })
    })
    .await;
    reg.with(|i| {
        let h = i.log.heartbeats.last().unwrap();
        assert_eq!(h.corrupt_shard_ids, ids[..1000]);
    });
    shutdown_promptly(server).await;
}

/// The id a data directory registers under, and its NodeInfo spelling: starts a standalone
/// server there (creating the identity), stores `shards` random shards, and stops it.
async fn prepare_dir(dir: &Path, shards: usize) -> (String, Vec<(ShardId, Bytes)>) {
    let server = ChunkServer::start(&ChunkConfig::for_tests(dir))
        .await
        .unwrap();
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    let mut stored = Vec::new();
    for i in 0..shards {
        let id = ShardId::random();
        let data = Bytes::from(vec![i as u8; 200_000 + i]);
        put_shard(&mut c, id, &data).await.unwrap();
        stored.push((id, data));
    }
    let node_id = server.store().node_id().simple().to_string();
    shutdown_promptly(server).await;
    (node_id, stored)
}

fn shard_files(dir: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .map(|p| if p.is_dir() { walk(&p) } else { 1 })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&dir.join("shards"))
}

#[tokio::test]
async fn removed_while_running_keeps_serving_reads_and_heartbeating() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[meta], "").await;
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    let id = ShardId::random();
    let data = Bytes::from(vec![3u8; 150_000]);
    put_shard(&mut c, id, &data).await.unwrap();
    wait_until("first heartbeats", || reg.heartbeats() >= 2).await;

    reg.set_state(NodeState::Removed);
    wait_until("removed state", || {
        server.node_state() == Some(NodeState::Removed)
    })
    .await;
    let hb = reg.heartbeats();
    wait_until("heartbeats after removal", || reg.heartbeats() >= hb + 3).await;
    // Still running: the server tasks have not stopped, and reads are served.
    let waited = tokio::time::timeout(Duration::from_millis(100), server.wait()).await;
    assert!(waited.is_err(), "the server stopped: {waited:?}");
    assert_eq!(get_shard(&mut c, id, 0, None).await.unwrap(), data);
    let (_, body) = http_get(server.http_addr(), "/metrics").await;
    assert!(
        body.contains(r#"dogfs_chunk_node_state{state="removed"} 1"#),
        "{body}"
    );

    // Heartbeats refused the way a removed node's Register is: the same, the server keeps
    // serving and calling (it neither exits nor wipes while running).
    let node_id = reg.registered_ids()[0].clone();
    reg.remove(&node_id, false);
    wait_until("refused heartbeats", || {
        reg.with(|i| i.log.refused_heartbeats >= 3)
    })
    .await;
    let waited = tokio::time::timeout(Duration::from_millis(100), server.wait()).await;
    assert!(waited.is_err(), "the server stopped: {waited:?}");
    assert_eq!(server.node_state(), Some(NodeState::Removed));
    assert_eq!(get_shard(&mut c, id, 0, None).await.unwrap(), data);
    assert_eq!(reg.registers(), 1);
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn refused_as_removed_stops_the_server_with_the_removed_error_and_keeps_its_data() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let (node_id, stored) = prepare_dir(dir.path(), 2).await;
    reg.remove(&node_id, false);

    let mut server = start(dir.path(), &[meta], "").await;
    let err = tokio::time::timeout(DEADLINE, server.wait())
        .await
        .expect("the server kept running after registration was refused")
        .unwrap_err();
    assert!(
        matches!(err, ServerError::Registration(_)),
        "unexpected error {err:?}"
    );
    assert_eq!(err.exit_code(), EXIT_REMOVED);
    let msg = err.to_string();
    for needle in [
        node_id.as_str(),
        "was removed from the cluster",
        "--rejoin-when-removed",
        "Wipe the data directory",
    ] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    assert_eq!(server.node_state(), Some(NodeState::Removed));
    assert!(reg.registered_ids().is_empty());
    // Nothing was deleted: wiping is the operator's call without the flag.
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    for (id, data) in &stored {
        assert_eq!(&get_shard(&mut c, *id, 0, None).await.unwrap(), data);
    }
    assert_eq!(server.store().node_id().simple().to_string(), node_id);
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn rejoins_under_a_new_id_with_an_empty_store_when_the_flag_is_set() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ChunkConfig::for_tests(dir.path());
    cfg.meta_endpoints = vec![meta.to_string()];
    cfg.rejoin_when_removed = true;
    let server = ChunkServer::start(&cfg).await.unwrap();
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    let mut stored = Vec::new();
    for i in 0..3u8 {
        let id = ShardId::random();
        let data = Bytes::from(vec![i; 100_000]);
        put_shard(&mut c, id, &data).await.unwrap();
        stored.push(id);
    }
    wait_until("first heartbeats", || reg.heartbeats() >= 2).await;
    let old_id = reg.registered_ids()[0].clone();

    // An upload in flight when the server is wiped must not link a shard afterwards.
    let cut = ShardId::random();
    let mut msgs = put_messages(cut, &Bytes::from(vec![9u8; 3_000_000])).into_iter();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut c2 = c.clone();
    let upload = tokio::spawn(async move {
        c2.put_shard(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for m in msgs.by_ref().take(2) {
        tx.send(m).await.unwrap();
    }
    let tmp = dir.path().join("tmp");
    wait_until("the upload's temp file", || {
        std::fs::read_dir(&tmp).unwrap().count() == 1
    })
    .await;

    // RemoveNode, and the registry forgets it: the next heartbeat is NOT_FOUND, the
    // registration that follows is refused, and the server rejoins.
    reg.remove(&old_id, true);
    wait_until("a registration under a new id", || reg.registers() == 2).await;
    let new_id = reg.registered_ids()[1].clone();
    assert_ne!(new_id, old_id);
    wait_until("heartbeats under the new id", || {
        reg.with(|i| {
            i.log
                .heartbeats
                .iter()
                .filter(|h| h.node_id == new_id)
                .count()
                >= 2
        })
    })
    .await;
    assert_eq!(server.node_state(), Some(NodeState::Up));

    for m in msgs {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let refused = upload.await.unwrap().unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("wiped"), "{refused:?}");

    // Every old shard is gone, the store is empty, NodeInfo shows the new id.
    let info = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id.replace('-', ""), new_id);
    assert_eq!((info.shard_count, info.used_bytes), (0, 0));
    for id in stored.iter().chain([&cut]) {
        let st = get_shard(&mut c, *id, 0, None).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::NotFound, "{id}: {st:?}");
    }
    assert_eq!(shard_files(dir.path()), 0);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let hb = reg.with(|i| i.log.heartbeats.last().cloned().unwrap());
    assert_eq!(hb.usage.unwrap().shard_count, 0);

    // The new server works as any other, and its id is persisted.
    let fresh = ShardId::random();
    let data = Bytes::from(vec![1u8; 70_000]);
    put_shard(&mut c, fresh, &data).await.unwrap();
    assert_eq!(get_shard(&mut c, fresh, 0, None).await.unwrap(), data);
    shutdown_promptly(server).await;
    let server = start(dir.path(), &[meta], "").await;
    wait_until("registration after restart", || reg.registers() == 3).await;
    assert_eq!(reg.registered_ids()[2], new_id);
    assert_eq!(server.store().shard_count(), 1);
    shutdown_promptly(server).await;
}

/// The `dogfs-chunk` binary, killed when dropped; its log lines (JSON) are collected.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(dir: &Path, meta: SocketAddr, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dogfs-chunk"));
        cmd.env("DOGFS_DATA_DIR", dir)
            .env("DOGFS_GRPC_ADDR", "127.0.0.1:0")
            .env("DOGFS_HTTP_ADDR", "127.0.0.1:0")
            .env("DOGFS_RESERVE", "0")
            .env("DOGFS_META_ENDPOINTS", meta.to_string())
            .env("DOGFS_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("DOGFS_REJOIN_WHEN_REMOVED")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The gRPC address from the "serving" log line.
    async fn grpc_addr(&self) -> String {
        let mut addr = None;
        wait_until("the serving log line", || {
            addr = self.lines.lock().unwrap().iter().find_map(|l| {
                l.contains("chunk server serving")
                    .then(|| l.split("\"grpc_addr\":\"").nth(1)?.split('"').next())
                    .flatten()
                    .map(str::to_owned)
            });
            addr.is_some()
        })
        .await;
        addr.unwrap()
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "process did not exit in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn binary_refused_as_removed_exits_with_code_3_and_says_how_to_fix_it() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let (node_id, stored) = prepare_dir(dir.path(), 2).await;
    reg.remove(&node_id, false);

    let mut p = Proc::spawn(dir.path(), meta, &[]);
    let st = p.wait_exit().await;
    let log = p.log();
    assert_eq!(st.code(), Some(i32::from(EXIT_REMOVED)), "{st:?}\n{log}");
    // The error is logged (JSON, level ERROR) with the id and the two ways out, and the
    // server went through its normal stop.
    let line = log
        .lines()
        .find(|l| l.contains("\"level\":\"ERROR\"") && l.contains("was removed from the cluster"))
        .unwrap_or_else(|| panic!("no error line about the removal:\n{log}"));
    for needle in [
        node_id.as_str(),
        "its id is not reused",
        "Wipe the data directory",
        "--rejoin-when-removed",
    ] {
        assert!(line.contains(needle), "{line} lacks {needle:?}");
    }
    assert!(log.contains("chunk server stopped"), "{log}");
    assert!(reg.registered_ids().is_empty());
    // Data and identity untouched.
    assert_eq!(shard_files(dir.path()), stored.len());
    let server = ChunkServer::start(&ChunkConfig::for_tests(dir.path()))
        .await
        .unwrap();
    assert_eq!(server.store().node_id().simple().to_string(), node_id);
    let mut c = connect(&server.grpc_addr().to_string()).await.unwrap();
    for (id, data) in &stored {
        assert_eq!(&get_shard(&mut c, *id, 0, None).await.unwrap(), data);
    }
    shutdown_promptly(server).await;
}

#[tokio::test]
async fn binary_with_rejoin_env_wipes_and_registers_a_new_id() {
    let reg = Registry::new(20, None);
    let meta = serve(reg.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let (old_id, stored) = prepare_dir(dir.path(), 3).await;
    reg.remove(&old_id, false);

    let p = Proc::spawn(dir.path(), meta, &[("DOGFS_REJOIN_WHEN_REMOVED", "true")]);
    wait_until("a registration under a new id", || reg.registers() == 1).await;
    let new_id = reg.registered_ids()[0].clone();
    assert_ne!(new_id, old_id);
    let mut c = connect(&p.grpc_addr().await).await.unwrap();
    let info = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id.replace('-', ""), new_id);
    assert_eq!(info.shard_count, 0);
    for (id, _) in &stored {
        let st = get_shard(&mut c, *id, 0, None).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::NotFound);
    }
    assert_eq!(shard_files(dir.path()), 0);
    let log = p.log();
    assert!(
        log.contains("data directory wiped; registering as a new chunk server")
            && log.contains(&old_id),
        "{log}"
    );
    drop(p);

    // Restarted without the flag: the new id was persisted and registers without refusal.
    let mut p = Proc::spawn(dir.path(), meta, &[]);
    wait_until("registration after restart", || reg.registers() == 2).await;
    assert_eq!(reg.registered_ids()[1], new_id);
    assert!(p.child.try_wait().unwrap().is_none(), "{}", p.log());
}
