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
    ChunkPool, DataPlaneConfig, NoReplacement, TargetReplacer, UploadOutcome, download, etag_crc,
    upload,
};
use dogfs_core::codec::{ErasureCodec, codec_for};
use dogfs_core::ids::ShardId;
use dogfs_core::layout::{DEFAULT_SEGMENT_SIZE, ObjectLayout};
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_proto::meta::{Segment, ShardLocation};
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
}

fn cfg(shard_timeout: Duration) -> DataPlaneConfig {
    DataPlaneConfig {
        shard_timeout,
        read_ahead: 3,
        window_bytes: dogfs_client::dataplane::WINDOW_DATA_BYTES,
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

/// A server that accepts TCP connections and never answers (a stopped process).
async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
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
            pool: ChunkPool::new(Duration::from_secs(2)),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_does_not_stall_a_read() {
    let c = Cluster::start(6).await;
    let size = 6 * MIB + 5;
    let timeout = Duration::from_millis(800);
    let h = Harness::new(size, 2 * MIB, scheme(4, 2, 64 * 1024), timeout);
    let data = random_bytes(size, 9);
    let targets: Vec<Segment> = (0..h.layout.segment_count())
        .map(|s| Segment {
            index: s,
            shards: (0..6).map(|i| c.location(i, i as u32)).collect(),
        })
        .collect();
    let out = h.put(&data, &targets, &NoReplacement).await;
    let (hole, _task) = black_hole().await;
    let l = redirect(&out.locations, &[2], &hole.to_string());
    let t = Instant::now();
    let got = h.get(&l, 0..size).await.unwrap();
    assert!(got == data);
    // One shard timeout (the read-ahead windows wait on it together), not one per window.
    assert!(t.elapsed() < timeout * 4, "took {:?}", t.elapsed());
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
    let (hole, _task) = black_hole().await;
    let mut targets = c.targets(&h.layout, 6);
    targets[0].shards[4].address = hole.to_string();
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
