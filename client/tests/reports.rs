//! `ReportShards` from the whole `Client`: six real chunk servers and the in-memory metadata
//! service (tests/fake_meta), which records every report. A GET reports each shard it could
//! not use exactly once — corrupt for DATA_LOSS, NOT_FOUND or a checksum other than metadata
//! recorded, not corrupt for unreachable or hedged-around servers — after a successful GET and
//! after a failed one, and never for shards metadata already knows (missing, on a DOWN
//! server); a metadata service that does not implement the call costs the GET nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_meta;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_client::{Client, ClientConfig, ErrorKind};
use dogfs_core::ids::ShardId;
use dogfs_proto::meta::{ErasureScheme, NodeState, ShardLocation};
use fake_meta::FakeMeta;
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;

/// 16 KiB cells, 4+2, 128 KiB segments (two stripes): a 640 KiB object has five segments.
const SEGMENT: u64 = 128 * 1024;

struct Env {
    chunks: Vec<ChunkServer>,
    _dirs: Vec<TempDir>,
    meta: FakeMeta,
    client: Client,
    /// Held open: connections are accepted and never answered.
    hole: tokio::net::TcpListener,
}

async fn env() -> Env {
    let mut chunks = Vec::new();
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkServer::start(&ChunkConfig::for_tests(dir.path()))
            .await
            .unwrap();
        servers.push((
            format!("{:032x}", s.store().node_id().as_u128()),
            s.grpc_addr().to_string(),
        ));
        chunks.push(s);
        dirs.push(dir);
    }
    let scheme = ErasureScheme {
        codec: "rs".into(),
        k: 4,
        m: 2,
        cell_size: 16 * 1024,
    };
    let meta = FakeMeta::new(servers, scheme, SEGMENT);
    let addr = meta.clone().serve().await;
    let mut cfg = ClientConfig::new(vec![addr.to_string()]);
    // Hedging, not this, must get the GETs past a silent server.
    cfg.shard_timeout = Duration::from_secs(30);
    cfg.backoff_base = Duration::from_millis(5);
    cfg.backoff_max = Duration::from_millis(50);
    let client = Client::connect(cfg).await.unwrap();
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Env {
        chunks,
        _dirs: dirs,
        meta,
        client,
        hole,
    }
}

impl Env {
    /// The chunk server at `loc`'s address.
    fn server(&self, loc: &ShardLocation) -> &ChunkServer {
        self.chunks
            .iter()
            .find(|s| s.grpc_addr().to_string() == loc.address)
            .unwrap()
    }

    fn shard_path(&self, loc: &ShardLocation) -> std::path::PathBuf {
        let id: ShardId = loc.shard_id.parse().unwrap();
        self.server(loc).store().shard_path(id)
    }

    fn hole_address(&self) -> String {
        self.hole.local_addr().unwrap().to_string()
    }
}

fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

/// (segment, index, shard id, corrupt) of a report, sorted, duplicates kept.
fn entries(r: &dogfs_proto::meta::ReportShardsRequest) -> Vec<(u64, u32, String, bool)> {
    let mut v: Vec<_> = r
        .shards
        .iter()
        .map(|p| (p.segment, p.index, p.shard_id.clone(), p.corrupt))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_reports_each_unusable_shard_once() {
    let e = env().await;
    let c = &e.client;
    c.create_bucket("rep").await.unwrap();
    let data = random_bytes(5 * SEGMENT as usize, 1);
    c.put_bytes("rep", "five", data.clone()).await.unwrap();
    let segs = e.meta.object_segments("rep", "five");
    assert_eq!(segs.len(), 5);

    // One problem per segment, of every kind the client tells apart.
    std::fs::remove_file(e.shard_path(&segs[0].shards[1])).unwrap(); // NOT_FOUND
    let p = e.shard_path(&segs[1].shards[2]);
    let mut b = std::fs::read(&p).unwrap();
    b[100] ^= 0x01;
    std::fs::write(&p, &b).unwrap(); // DATA_LOSS from the server's block check
    let dead = dead_address().await;
    let hole = e.hole_address();
    e.meta.edit_segments("rep", "five", |segs| {
        segs[2].shards[0].crc32c ^= 1; // metadata's checksum differs from the stored one
        segs[3].shards[3].address = hole.clone(); // silent: hedged around
        segs[3].shards[1].node_state = NodeState::Down as i32; // skipped, known to metadata
        segs[4].shards[0].address = dead.clone(); // refused
        segs[4].shards[5].missing = true; // skipped, known to metadata
    });
    let want: Vec<(u64, u32, String, bool)> = vec![
        (0, 1, segs[0].shards[1].shard_id.clone(), true),
        (1, 2, segs[1].shards[2].shard_id.clone(), true),
        (2, 0, segs[2].shards[0].shard_id.clone(), true),
        (3, 3, segs[3].shards[3].shard_id.clone(), false),
        (4, 0, segs[4].shards[0].shard_id.clone(), false),
    ];

    let t = Instant::now();
    let got = c.get_bytes("rep", "five").await.unwrap();
    let took = t.elapsed();
    assert!(got == data, "bytes differ");
    assert!(took < Duration::from_secs(2), "GET took {took:?}");

    let reports = e.meta.wait_reports(1, Duration::from_secs(10)).await;
    let r = &reports[0];
    assert_eq!((r.bucket.as_str(), r.key.as_str()), ("rep", "five"));
    assert_eq!(r.version_id, e.meta.object_version("rep", "five"));
    assert_eq!(entries(r), want, "{r:#?}");
    assert!(r.shards.iter().all(|p| !p.reason.is_empty()), "{r:#?}");

    // A GET that fails reports what it tried too: segment 0 loses two more shards.
    let dead2 = dead_address().await;
    e.meta.edit_segments("rep", "five", |segs| {
        segs[0].shards[0].address = dead2.clone();
        segs[0].shards[4].missing = true;
    });
    let err = c.get_bytes("rep", "five").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    let msg = err.to_string();
    // Each unusable shard once (a server's message may repeat the id, not the index).
    for i in [0, 1, 4] {
        let id = &segs[0].shards[i].shard_id;
        assert!(msg.contains(id.as_str()), "shard {i} not named in: {msg}");
        assert_eq!(
            msg.matches(&format!("(index {i})")).count(),
            1,
            "shard {i} not named once in: {msg}"
        );
    }
    let reports = e.meta.wait_reports(2, Duration::from_secs(10)).await;
    let r = &reports[1];
    let got: BTreeSet<(u64, u32, bool)> = r
        .shards
        .iter()
        .map(|p| (p.segment, p.index, p.corrupt))
        .collect();
    assert_eq!(got.len(), r.shards.len(), "a shard reported twice: {r:#?}");
    assert!(got.contains(&(0, 0, false)), "{r:#?}");
    assert!(got.contains(&(0, 1, true)), "{r:#?}");
    assert!(!got.iter().any(|&(s, i, _)| (s, i) == (0, 4)), "{r:#?}");

    // A healthy GET sends nothing.
    c.put_bytes("rep", "fine", data.clone()).await.unwrap();
    assert!(c.get_bytes("rep", "fine").await.unwrap() == data);

    // A metadata service without the call: the GET neither fails nor waits.
    e.meta
        .faults
        .reports_unimplemented
        .store(true, Ordering::SeqCst);
    e.meta.edit_segments("rep", "fine", |segs| {
        segs[0].shards[2].address = dead.clone();
    });
    assert!(c.get_bytes("rep", "fine").await.unwrap() == data);
    let reports = e.meta.wait_reports(3, Duration::from_secs(10)).await;
    assert_eq!(reports.len(), 3, "the healthy GET reported something");
    assert_eq!(reports[2].key, "fine");
    assert_eq!(
        entries(&reports[2])
            .iter()
            .map(|(s, i, _, c)| (*s, *i, *c))
            .collect::<Vec<_>>(),
        vec![(0, 2, false)]
    );
}
