//! The SDK's data plane against six real chunk servers on 127.0.0.1 (ephemeral ports, temp
//! dirs), without the metadata service: layouts and targets are made up by the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_client::ErrorKind;
use dogfs_client::dataplane::{
    ChunkPool, DataPlaneConfig, Hedger, NoReplacement, TargetReplacer, UploadOutcome, download,
    download_reporting, etag_crc, upload,
};
use dogfs_core::codec::{ErasureCodec, codec_for};
use dogfs_core::ids::ShardId;
use dogfs_core::layout::{DEFAULT_SEGMENT_SIZE, ObjectLayout};
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_proto::meta::{NodeState, Segment, ShardLocation};
use futures::future::BoxFuture;
use rand::{Rng, RngCore, SeedableRng};
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;

struct Cluster {
    servers: Vec<Option<ChunkServer>>,
    addrs: Vec<String>,
    node_ids: Vec<String>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        let mut node_ids = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let s = ChunkServer::start(&ChunkConfig::for_tests(dir.path()))
                .await
                .unwrap();
            addrs.push(s.grpc_addr().to_string());
            node_ids.push(format!("{:032x}", s.store().node_id().as_u128()));
            servers.push(Some(s));
            dirs.push(dir);
        }
        Cluster {
            servers,
            addrs,
            node_ids,
            _dirs: dirs,
        }
    }

    fn location(&self, server: usize, index: u32) -> ShardLocation {
        ShardLocation {
            index,
            shard_id: ShardId::random().to_string(),
            node_id: self.node_ids[server].clone(),
            address: self.addrs[server].clone(),
            ..Default::default()
        }
    }

    /// Targets for every segment: shard i of segment s on server (s + i) mod n, within the
    /// first `use_servers` servers.
    fn targets(&self, layout: &ObjectLayout, use_servers: usize) -> Vec<Segment> {
        let n = layout.scheme().total();
        (0..layout.segment_count())
            .map(|s| Segment {
                index: s,
                shards: (0..n)
                    .map(|i| self.location((s as usize + i) % use_servers, i as u32))
                    .collect(),
            })
            .collect()
    }

    async fn stop(&mut self, i: usize) {
        if let Some(s) = self.servers[i].take() {
            s.shutdown().await.unwrap();
        }
    }

    /// Starts stopped server `i` again on its port and data.
    async fn restart(&mut self, i: usize) {
        let mut cfg = ChunkConfig::for_tests(self._dirs[i].path());
        cfg.grpc_addr = self.addrs[i].parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match ChunkServer::start(&cfg).await {
                Ok(s) => {
                    self.servers[i] = Some(s);
                    return;
                }
                // The port may take a moment to be free again.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("restarting server {i}: {e}"),
            }
        }
    }
}

fn cfg(shard_timeout: Duration) -> DataPlaneConfig {
    DataPlaneConfig {
        shard_timeout,
        read_ahead: 3,
        window_bytes: dogfs_client::dataplane::WINDOW_DATA_BYTES,
        hedge: Hedger::new(
            dogfs_client::DEFAULT_HEDGE_MIN,
            dogfs_client::DEFAULT_HEDGE_MAX,
        ),
    }
}

fn scheme(k: u32, m: u32, cell: u64) -> ErasureScheme {
    ErasureScheme::new(Codec::ReedSolomon, k, m, cell).unwrap()
}

fn random_bytes(n: u64, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// An address where nothing listens: connections are refused.
async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a.to_string()
}

/// A server that accepts TCP connections and never answers (a stopped process), counting the
/// connections made to it.
struct Hole {
    addr: SocketAddr,
    accepted: tokio::sync::watch::Receiver<Vec<SocketAddr>>,
    /// Probe connections made by [`Hole::connections`].
    probes: AtomicUsize,
    _task: tokio::task::JoinHandle<()>,
}

impl Hole {
    async fn start() -> Hole {
        // On 127.0.0.2, where nothing else in these tests listens or connects: a port another
        // test freed (a dead address, a stopped server) and its client still dials cannot be
        // this hole's, so every connection counted is this test's.
        let l = match tokio::net::TcpListener::bind("127.0.0.2:0").await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, peer)) = l.accept().await {
                held.push(s);
                tx.send_modify(|v| v.push(peer));
            }
        });
        Hole {
            addr,
            accepted: rx,
            probes: AtomicUsize::new(0),
            _task: task,
        }
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Connections made to the hole so far. A probe connection is made and waited for: the
    /// kernel's accept queue is FIFO, so every connection established before it is counted.
    async fn connections(&self) -> usize {
        let probe = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let me = probe.local_addr().unwrap();
        let mut rx = self.accepted.clone();
        let seen = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| v.contains(&me)))
            .await
            .expect("the probe connection was never accepted")
            .unwrap()
            .clone();
        // This probe and earlier ones are not the client's.
        seen.len() - self.probes.fetch_add(1, Ordering::SeqCst) - 1
    }
}

/// A TCP proxy to `target` that passes every byte from the client but only the first `pass`
/// bytes the server sends on each connection, then holds the connection open without passing
/// more: a server that stalls in the middle of a stream.
async fn stalling_proxy(
    target: SocketAddr,
    pass: usize,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut left = pass;
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    let n = match sr.read(&mut buf[..left.min(64 * 1024)]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                // Stalled: keep both ends open, pass nothing more.
                std::future::pending::<()>().await;
                drop((sr, cw));
            });
        }
    });
    (a, h)
}

struct Harness {
    pool: ChunkPool,
    cfg: DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    layout: ObjectLayout,
}

impl Harness {
    fn new(size: u64, segment_size: u64, scheme: ErasureScheme, shard_timeout: Duration) -> Self {
        Harness {
            pool: ChunkPool::new(Duration::from_secs(2), None),
            cfg: cfg(shard_timeout),
            codec: codec_for(&scheme).unwrap(),
            layout: ObjectLayout::new(size, segment_size, scheme).unwrap(),
        }
    }

    async fn put(
        &self,
        data: &[u8],
        targets: &[Segment],
        replacer: &dyn TargetReplacer,
    ) -> UploadOutcome {
        let mut reader = Cursor::new(data.to_vec());
        upload(
            &self.pool,
            &self.cfg,
            Arc::clone(&self.codec),
            self.layout,
            targets,
            &mut reader,
            replacer,
            None,
        )
        .await
        .unwrap()
    }

    async fn get(
        &self,
        locations: &[Segment],
        range: Range<u64>,
    ) -> Result<Vec<u8>, dogfs_client::Error> {
        let mut out = Vec::new();
        download(
            &self.pool,
            &self.cfg,
            Arc::clone(&self.codec),
            self.layout,
            Arc::new(locations.to_vec()),
            range,
            &mut out,
            None,
            None,
        )
        .await?;
        Ok(out)
    }
}

/// `locations` with the shards at `indices` of every segment pointed at `address`.
fn redirect(locations: &[Segment], indices: &[u32], address: &str) -> Vec<Segment> {
    let mut l = locations.to_vec();
    for seg in &mut l {
        for s in &mut seg.shards {
            if indices.contains(&s.index) {
                s.address = address.to_string();
            }
        }
    }
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_of_many_sizes() {
    let c = Cluster::start(6).await;
    let cases: [(u64, u64, ErasureScheme); 5] = [
        (MIB - 1, DEFAULT_SEGMENT_SIZE, ErasureScheme::default()),
        (4 * MIB + 1, DEFAULT_SEGMENT_SIZE, ErasureScheme::default()),
        // Several full stripes and a short one.
        (
            9 * MIB + 12_345,
            DEFAULT_SEGMENT_SIZE,
            ErasureScheme::default(),
        ),
        // Several segments of 4 stripes of 4 × 16 KiB, the last one short.
        (3 * MIB + 777, 256 * 1024, scheme(4, 2, 16 * 1024)),
        // Another scheme: 3+2 over five of the servers.
        (1_000_001, 3 * 64 * 1024, scheme(3, 2, 64 * 1024)),
    ];
    for (seed, (size, seg, sch)) in cases.into_iter().enumerate() {
        let h = Harness::new(size, seg, sch, Duration::from_secs(10));
        let data = random_bytes(size, seed as u64);
        let out = h.put(&data, &c.targets(&h.layout, 6), &NoReplacement).await;
        assert_eq!(out.reports.len() as u64, h.layout.segment_count());
        assert!(out.reports.iter().all(|r| {
            r.shards
                .iter()
                .all(|s| !s.missing && s.client_crc32c == s.server_crc32c)
        }));
        assert_eq!(etag_crc(&out.etag), Some(crc32c::crc32c(&data)));
        let got = h.get(&out.locations, 0..size).await.unwrap();
        assert!(got == data, "size {size}: bytes differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_ranges_match_the_source() {
    let c = Cluster::start(6).await;
    let size = 2 * MIB + 4321;
    let h = Harness::new(
        size,
        512 * 1024,
        scheme(4, 2, 16 * 1024),
        Duration::from_secs(10),
    );
    let data = random_bytes(size, 7);
    let out = h.put(&data, &c.targets(&h.layout, 6), &NoReplacement).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut ranges: Vec<Range<u64>> = vec![0..0, 0..1, size - 1..size, size..size, 0..size];
    for _ in 0..40 {
        let a = rng.random_range(0..size);
        let span = rng.random_range(1..600_000);
        let b = rng.random_range(a..=size.min(a + span));
        ranges.push(a..b);
    }
    for r in ranges {
        let got = h.get(&out.locations, r.clone()).await.unwrap();
        assert!(got == data[r.start as usize..r.end as usize], "range {r:?}");
    }
    // A range past the end is the caller's mistake.
    let e = h.get(&out.locations, 0..size + 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_two_lost_shards_still_read_exactly() {
    let mut c = Cluster::start(6).await;
    let size = 5 * MIB + 99;
    let h = Harness::new(
        size,
        2 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(5),
    );
    let data = random_bytes(size, 3);
    // Every segment on all six servers, shard i on server i: losing servers = losing indices.
    let targets: Vec<Segment> = (0..h.layout.segment_count())
        .map(|s| Segment {
            index: s,
            shards: (0..6).map(|i| c.location(i, i as u32)).collect(),
        })
        .collect();
    let out = h.put(&data, &targets, &NoReplacement).await;
    let dead = dead_address().await;
    for a in 0..6u32 {
        for b in a + 1..6 {
            let l = redirect(&out.locations, &[a, b], &dead);
            let got = h.get(&l, 0..size).await.unwrap();
            assert!(got == data, "shards {a} and {b} lost");
            let r = 1_000_000..3_500_000;
            let got = h.get(&l, r.clone()).await.unwrap();
            assert!(
                got == data[r.start as usize..r.end as usize],
                "range, {a} {b} lost"
            );
        }
    }
    // Three lost: a clear data-loss error, not wrong bytes.
    let l = redirect(&out.locations, &[0, 1, 2], &dead);
    let e = h.get(&l, 0..size).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DataLoss, "{e}");
    // Two servers really shut down.
    c.stop(1).await;
    c.stop(4).await;
    let got = h.get(&out.locations, 0..size).await.unwrap();
    assert!(got == data, "servers 1 and 4 down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shard_is_decoded_around() {
    let c = Cluster::start(6).await;
    let size = 3 * MIB;
    let h = Harness::new(
        size,
        DEFAULT_SEGMENT_SIZE,
        ErasureScheme::default(),
        Duration::from_secs(5),
    );
    let data = random_bytes(size, 5);
    let targets: Vec<Segment> = vec![Segment {
        index: 0,
        shards: (0..6).map(|i| c.location(i, i as u32)).collect(),
    }];
    let out = h.put(&data, &targets, &NoReplacement).await;
    // Flip one byte of data shard 1 on its server's disk.
    let loc = &out.locations[0].shards[1];
    let id: ShardId = loc.shard_id.parse().unwrap();
    let path = c.servers[1].as_ref().unwrap().store().shard_path(id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let got = h.get(&out.locations, 0..size).await.unwrap();
    assert!(got == data, "corrupt shard 1");
    let got = h.get(&out.locations, 500..5000).await.unwrap();
    assert!(got == data[500..5000]);
}

/// Shard i of every segment on server i, so a server stands for one shard index.
fn by_index(c: &Cluster, layout: &ObjectLayout) -> Vec<Segment> {
    (0..layout.segment_count())
        .map(|s| Segment {
            index: s,
            shards: (0..6).map(|i| c.location(i, i as u32)).collect(),
        })
        .collect()
}

/// The time `f` takes, and its result.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
    let t = Instant::now();
    let r = f.await;
    (t.elapsed(), r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_costs_a_hedge_delay_not_a_timeout() {
    let c = Cluster::start(6).await;
    let size = 6 * MIB + 5;
    // The timeout must play no part: the hedge reads around the silent server.
    let h = Harness::new(
        size,
        2 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(30),
    );
    let data = random_bytes(size, 9);
    let out = h.put(&data, &by_index(&c, &h.layout), &NoReplacement).await;
    let (healthy, got) = timed(h.get(&out.locations, 0..size)).await;
    assert!(got.unwrap() == data);

    let hole = Hole::start().await;
    let l = redirect(&out.locations, &[2], &hole.address());
    let (took, got) = timed(h.get(&l, 0..size)).await;
    assert!(got.unwrap() == data);
    eprintln!("6 MiB GET: healthy {healthy:?}, data shard 2 silent {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        hole.connections().await >= 1,
        "the silent server was never asked"
    );

    // A range inside shard 2's cells only, with a client that has not read anything yet (no
    // latency samples: the hedge delay is its ceiling).
    let fresh = Harness::new(
        size,
        2 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(30),
    );
    let r = 2 * MIB + 2 * 64 * 1024 + 10..2 * MIB + 3 * 64 * 1024 - 10;
    let (took, got) = timed(fresh.get(&l, r.clone())).await;
    assert!(got.unwrap() == data[r.start as usize..r.end as usize]);
    eprintln!("range GET, fresh client, data shard 2 silent: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stalling_mid_stream_is_hedged_around() {
    let c = Cluster::start(6).await;
    let size = 24 * MIB + 5;
    let mut h = Harness::new(
        size,
        16 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(30),
    );
    // One window per segment (4 MiB per shard, four 1 MiB messages) and one window at a
    // time, so the stalled connection delivers a whole first message and then nothing.
    h.cfg.window_bytes = 16 * MIB;
    h.cfg.read_ahead = 1;
    let data = random_bytes(size, 21);
    let out = h.put(&data, &by_index(&c, &h.layout), &NoReplacement).await;
    let (healthy, got) = timed(h.get(&out.locations, 0..size)).await;
    assert!(got.unwrap() == data);

    let target: SocketAddr = c.addrs[1].parse().unwrap();
    let (proxy, _task) = stalling_proxy(target, 3 * MIB as usize / 2).await;
    let l = redirect(&out.locations, &[1], &proxy.to_string());
    let (took, got) = timed(h.get(&l, 0..size)).await;
    let (problems_took, (r, problems)) = {
        let mut out = Vec::new();
        let fresh = Harness::new(
            size,
            16 * MIB,
            scheme(4, 2, 64 * 1024),
            Duration::from_secs(30),
        );
        let mut cfg = fresh.cfg.clone();
        cfg.window_bytes = 16 * MIB;
        cfg.read_ahead = 1;
        let (t, r) = timed(download_reporting(
            &fresh.pool,
            &cfg,
            Arc::clone(&fresh.codec),
            fresh.layout,
            Arc::new(l.clone()),
            0..size,
            &mut out,
            None,
            None,
        ))
        .await;
        assert!(out == data, "fresh client through the stalling server");
        (t, r)
    };
    assert!(got.unwrap() == data);
    r.unwrap();
    eprintln!(
        "24 MiB GET: healthy {healthy:?}; shard 1 stalling mid-stream {took:?}, fresh client \
         {problems_took:?}"
    );
    assert!(
        took < healthy + Duration::from_secs(1),
        "took {took:?}, healthy {healthy:?}"
    );
    // Reported once, as slow (not corrupt).
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].segment, problems[0].index), (0, 1));
    assert!(!problems[0].corrupt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_shards_and_down_servers_are_never_asked() {
    let c = Cluster::start(6).await;
    let size = 3 * MIB + 7;
    let mut h = Harness::new(
        size,
        2 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(30),
    );
    // Only the order is under test here: on a loaded machine a healthy read can be late
    // enough to hedge, and a hedge rightly falls back to the last-resort shards (the tests
    // below cover that). With hedging out of reach the order alone decides.
    h.cfg.hedge = Hedger::new(Duration::from_secs(30), Duration::from_secs(30));
    let data = random_bytes(size, 23);
    let out = h.put(&data, &by_index(&c, &h.layout), &NoReplacement).await;
    for state in [NodeState::Down, NodeState::Suspect, NodeState::Removed] {
        // If the reader asked either of these it would wait on a server that never answers.
        let missing = Hole::start().await;
        let down = Hole::start().await;
        let mut l = out.locations.clone();
        for seg in &mut l {
            seg.shards[0].missing = true;
            seg.shards[0].address = missing.address();
            seg.shards[2].node_state = state as i32;
            seg.shards[2].address = down.address();
        }
        let mut got = Vec::new();
        let (took, (r, problems)) = timed(download_reporting(
            &h.pool,
            &h.cfg,
            Arc::clone(&h.codec),
            h.layout,
            Arc::new(l.clone()),
            0..size,
            &mut got,
            None,
            None,
        ))
        .await;
        r.unwrap();
        assert!(got == data, "{state:?}");
        let rng = 100_000..2_500_000;
        let got = h.get(&l, rng.clone()).await.unwrap();
        assert!(
            got == data[rng.start as usize..rng.end as usize],
            "{state:?}"
        );
        assert_eq!(missing.connections().await, 0, "a missing shard was asked");
        assert_eq!(
            down.connections().await,
            0,
            "a shard on a {state:?} server was asked"
        );
        // Nothing was tried and failed: metadata already knows both.
        assert!(problems.is_empty(), "{problems:?}");
        // Read from parity at once, no hedge delay.
        assert!(took < Duration::from_secs(1), "{state:?}: took {took:?}");
    }
    // DRAINING and UNSPECIFIED servers serve reads as usual: the data shard is asked (and,
    // silent, hedged around at the usual delay).
    h.cfg.hedge = Hedger::new(
        dogfs_client::DEFAULT_HEDGE_MIN,
        dogfs_client::DEFAULT_HEDGE_MAX,
    );
    for state in [NodeState::Draining, NodeState::Unspecified] {
        let hole = Hole::start().await;
        let mut l = out.locations.clone();
        for seg in &mut l {
            seg.shards[1].node_state = state as i32;
            seg.shards[1].address = hole.address();
        }
        let got = h.get(&l, 0..size).await.unwrap();
        assert!(got == data, "{state:?}");
        assert!(hole.connections().await >= 1, "{state:?}: not asked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_suspect_servers_are_read_when_nothing_else_is_left() {
    let c = Cluster::start(6).await;
    let size = 3 * MIB + 7;
    let h = Harness::new(
        size,
        2 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(30),
    );
    let data = random_bytes(size, 29);
    let out = h.put(&data, &by_index(&c, &h.layout), &NoReplacement).await;
    let mut l = out.locations.clone();
    for seg in &mut l {
        seg.shards[4].missing = true;
        seg.shards[5].missing = true;
        seg.shards[1].node_state = NodeState::Suspect as i32;
        seg.shards[3].node_state = NodeState::Down as i32;
    }
    let got = h.get(&l, 0..size).await.unwrap();
    assert!(got == data);

    // Three shards on suspect servers and one of them silent: it is asked first (a data
    // shard) and hedged like any other, since the other two are still there to ask.
    let hole = Hole::start().await;
    let mut l = out.locations.clone();
    for seg in &mut l {
        for i in [1, 4, 5] {
            seg.shards[i].node_state = NodeState::Suspect as i32;
        }
        seg.shards[1].address = hole.address();
    }
    let (took, got) = timed(h.get(&l, 0..size)).await;
    assert!(got.unwrap() == data);
    assert!(
        hole.connections().await >= 1,
        "the silent suspect shard was not asked"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_loss_error_names_each_failed_shard_once() {
    let c = Cluster::start(6).await;
    let size = 4 * MIB;
    let mut h = Harness::new(
        size,
        8 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(5),
    );
    // 16 windows of one stripe in one segment, three fetched at once: each window meets the
    // same failed shards.
    h.cfg.window_bytes = 256 * 1024;
    let data = random_bytes(size, 31);
    let out = h.put(&data, &by_index(&c, &h.layout), &NoReplacement).await;
    let dead = dead_address().await;
    let other_dead = dead_address().await;
    let mut l = redirect(&out.locations, &[0, 1], &dead);
    l[0].shards[4].address = other_dead;
    let e = h.get(&l, 0..size).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DataLoss, "{e}");
    let msg = e.to_string();
    for i in [0, 1, 4] {
        let id = &l[0].shards[i].shard_id;
        assert!(msg.contains(id.as_str()), "shard {i} not in: {msg}");
        let entry = format!("(index {i})");
        assert_eq!(
            msg.matches(&entry).count(),
            1,
            "shard {i} not once in: {msg}"
        );
    }
    for i in [2, 3, 5] {
        let id = &l[0].shards[i].shard_id;
        assert!(!msg.contains(id.as_str()), "healthy shard {i} in: {msg}");
    }
}

/// Hands out targets on spare servers and counts calls.
struct Spares {
    cluster_addrs: Vec<String>,
    node_ids: Vec<String>,
    next: AtomicUsize,
    calls: AtomicUsize,
}

impl TargetReplacer for Spares {
    fn replace<'a>(
        &'a self,
        _segment: u64,
        shard_index: u32,
        exclude: Vec<String>,
    ) -> BoxFuture<'a, Result<Option<ShardLocation>, dogfs_client::Error>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(addr) = self.cluster_addrs.get(i) else {
                return Ok(None);
            };
            assert!(!exclude.contains(&self.node_ids[i]));
            Ok(Some(ShardLocation {
                index: shard_index,
                shard_id: ShardId::random().to_string(),
                node_id: self.node_ids[i].clone(),
                address: addr.clone(),
                ..Default::default()
            }))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_replaced_or_left_missing() {
    let c = Cluster::start(7).await;
    let size = 3 * MIB + 17;
    let h = Harness::new(
        size,
        2 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(2),
    );
    let data = random_bytes(size, 13);
    let dead = dead_address().await;
    let mut targets: Vec<Segment> = (0..h.layout.segment_count())
        .map(|s| Segment {
            index: s,
            shards: (0..6).map(|i| c.location(i, i as u32)).collect(),
        })
        .collect();
    for seg in &mut targets {
        seg.shards[3].address = dead.clone();
        seg.shards[3].node_id = "dead".into();
    }

    // No replacement: committed with shard 3 missing; the read decodes around it.
    let out = h.put(&data, &targets, &NoReplacement).await;
    for r in &out.reports {
        assert!(r.shards[3].missing);
        assert_eq!(r.shards.iter().filter(|s| s.missing).count(), 1);
    }
    let got = h.get(&out.locations, 0..size).await.unwrap();
    assert!(got == data);

    // With a spare server: the shard is rebuilt there; the object then survives two more lost
    // shards, which needs the rebuilt one.
    let spares = Spares {
        cluster_addrs: vec![c.addrs[6].clone(); 4],
        node_ids: vec![c.node_ids[6].clone(); 4],
        next: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
    };
    for seg in &mut targets {
        for s in &mut seg.shards {
            s.shard_id = ShardId::random().to_string();
        }
    }
    let out = h.put(&data, &targets, &spares).await;
    for (seg, r) in out.locations.iter().zip(&out.reports) {
        assert!(r.shards.iter().all(|s| !s.missing));
        assert_eq!(seg.shards[3].address, c.addrs[6]);
    }
    // One call per segment: the first failure is replaced after the stream, later segments up
    // front.
    assert_eq!(
        spares.calls.load(Ordering::SeqCst) as u64,
        h.layout.segment_count()
    );
    let l = redirect(&out.locations, &[0, 5], &dead);
    let got = h.get(&l, 0..size).await.unwrap();
    assert!(got == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_target_times_out_and_is_replaced() {
    let c = Cluster::start(7).await;
    let size = 2 * MIB + 3;
    let timeout = Duration::from_millis(800);
    let h = Harness::new(size, DEFAULT_SEGMENT_SIZE, scheme(4, 2, 64 * 1024), timeout);
    let data = random_bytes(size, 17);
    let hole = Hole::start().await;
    let mut targets = c.targets(&h.layout, 6);
    targets[0].shards[4].address = hole.address();
    let spares = Spares {
        cluster_addrs: vec![c.addrs[6].clone()],
        node_ids: vec![c.node_ids[6].clone()],
        next: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
    };
    let t = Instant::now();
    let out = h.put(&data, &targets, &spares).await;
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(out.reports[0].shards.iter().all(|s| !s.missing));
    let dead = dead_address().await;
    let l = redirect(&out.locations, &[0, 1], &dead);
    let got = h.get(&l, 0..size).await.unwrap();
    assert!(got == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_the_wrong_size_is_refused() {
    let c = Cluster::start(6).await;
    let h = Harness::new(
        MIB,
        DEFAULT_SEGMENT_SIZE,
        ErasureScheme::default(),
        Duration::from_secs(5),
    );
    let mut short = Cursor::new(vec![1u8; 1000]);
    let e = upload(
        &h.pool,
        &h.cfg,
        Arc::clone(&h.codec),
        h.layout,
        &c.targets(&h.layout, 6),
        &mut short,
        &NoReplacement,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("ended after 1000 bytes"), "{e}");
}

/// A chunk server the client found down and that came back on its port: the next GET that
/// needs it reaches it at once, round after round (nothing remembers the server as down
/// across GETs). The stale-connect case the fetch retry guards against (a connect that failed
/// while its caller was already gone, replayed by tonic to the next call) needs a connect
/// still pending when the caller drops, which a refused loopback connect never is; it was
/// seen once in `objects::every_object_survives_any_two_chunk_servers_killed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reached_again_at_once() {
    let mut c = Cluster::start(6).await;
    let size = 3 * MIB + 7;
    let h = Harness::new(
        size,
        2 * MIB,
        scheme(4, 2, 64 * 1024),
        Duration::from_secs(30),
    );
    let data = random_bytes(size, 31);
    let out = h.put(&data, &by_index(&c, &h.layout), &NoReplacement).await;
    for round in 0..3 {
        // Server 0 down: reads go through parity while the client's channel to it fails.
        c.stop(0).await;
        for _ in 0..3 {
            assert!(h.get(&out.locations, 0..size).await.unwrap() == data);
        }
        // Server 0 back; servers 1 and 2 down: only server 0 completes k shards.
        c.restart(0).await;
        c.stop(1).await;
        c.stop(2).await;
        let got = h
            .get(&out.locations, 0..size)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(got == data, "round {round}");
        c.restart(1).await;
        c.restart(2).await;
    }
}
