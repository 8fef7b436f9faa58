//! `ReconstructShard` throughput over loopback: seven chunk servers in one process, six
//! holding the shards of a 64 MiB segment (RS 4+2, 1 MiB cells: 16 MiB shards), the seventh
//! rebuilding one of them from the others. Throughput is rebuilt shard bytes per second.
//!
//! `cargo bench -p dogfs-chunk --bench repair`
//!
//! Stores live on tmpfs (`/dev/shm`) when there is one, as in the `stream` bench, so the figure
//! is the repair path (k source streams, CRC checks, decode, the store's write and fsync), not
//! the disk. `fetch_4_shards` is the floor under it: the same k = 4 GetShard streams read
//! concurrently into nothing, which a repair must at least do.

// Test and benchmark code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The same allocator as the `dogfs-chunk` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dogfs_chunk::client::{connect, put_shard};
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_core::checksum::crc32c;
use dogfs_core::codec::codec_for;
use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::scheme::ErasureScheme;
use dogfs_proto::chunk::{
    DeleteShardRequest, GetShardRequest, ReconstructShardRequest, ReconstructSource,
};

const SEGMENT: u64 = 64 * 1024 * 1024;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("DOGFS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let shm = std::path::Path::new("/dev/shm");
            shm.is_dir().then(|| shm.to_path_buf())
        });
    match base {
        Some(b) => tempfile::tempdir_in(b).expect("bench dir"),
        None => tempfile::tempdir().expect("bench dir"),
    }
}

/// The k + m shards of one full segment of pseudo-random data.
fn encode(scheme: ErasureScheme) -> Vec<Bytes> {
    let seg = ObjectLayout::new(SEGMENT, SEGMENT, scheme)
        .unwrap()
        .segment(0)
        .unwrap();
    let (k, m) = (seg.k(), seg.m());
    let cell = seg.cell_size() as usize;
    let codec = codec_for(&scheme).unwrap();
    let mut shards = vec![Vec::with_capacity(seg.shard_len() as usize); k + m];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..seg.stripe_count() {
        let stripe: Vec<u8> = (0..k * cell)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut parity = vec![0u8; m * cell];
        codec.encode_stripe(&stripe, &mut parity).unwrap();
        for i in 0..k {
            shards[i].extend_from_slice(&stripe[i * cell..(i + 1) * cell]);
        }
        for j in 0..m {
            shards[k + j].extend_from_slice(&parity[j * cell..(j + 1) * cell]);
        }
    }
    shards.into_iter().map(Bytes::from).collect()
}

fn repair(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let scheme = ErasureScheme::default();
    let shards = encode(scheme);
    let shard_len = shards[0].len() as u64;
    let dirs: Vec<_> = (0..7).map(|_| bench_dir()).collect();
    let servers: Vec<ChunkServer> = dirs
        .iter()
        .map(|d| {
            rt.block_on(ChunkServer::start(&ChunkConfig::for_tests(d.path())))
                .expect("server")
        })
        .collect();
    let mut sources = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let id = ShardId::random();
        let addr = servers[i].grpc_addr().to_string();
        let mut c = rt.block_on(connect(&addr)).expect("connect");
        rt.block_on(put_shard(&mut c, id, shard)).expect("put");
        sources.push(ReconstructSource {
            index: i as u32,
            shard_id: id.to_string(),
            address: addr,
            crc32c: crc32c(shard),
        });
    }
    let target = rt
        .block_on(connect(&servers[6].grpc_addr().to_string()))
        .expect("connect");
    let request = |index: usize, id: ShardId| ReconstructShardRequest {
        shard_id: id.to_string(),
        index: index as u32,
        codec: scheme.codec().to_string(),
        k: u32::from(scheme.k()),
        m: u32::from(scheme.m()),
        cell_size: u64::from(scheme.cell_size()),
        segment_len: SEGMENT,
        expected_crc32c: Some(crc32c(&shards[index])),
        sources: sources
            .iter()
            .filter(|s| s.index as usize != index)
            .cloned()
            .collect(),
    };

    let mut g = c.benchmark_group("repair");
    g.throughput(Throughput::Bytes(shard_len));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));

    for (name, index) in [("rebuild_data_16MiB", 0), ("rebuild_parity_16MiB", 4)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut c = target.clone();
                        let id = ShardId::random();
                        let start = Instant::now();
                        let resp = c
                            .reconstruct_shard(request(index, id))
                            .await
                            .expect("reconstruct")
                            .into_inner();
                        total += start.elapsed();
                        assert_eq!(resp.shard.expect("info").size, shard_len);
                        c.delete_shard(DeleteShardRequest {
                            grant: Default::default(),
                            shard_id: id.to_string(),
                        })
                        .await
                        .expect("delete");
                    }
                    total
                })
            })
        });
    }

    // The floor: the k source streams a repair of shard 0 reads, into nothing.
    let clients: Vec<_> = sources[1..5]
        .iter()
        .map(|s| {
            (
                rt.block_on(connect(&s.address)).expect("connect"),
                s.shard_id.clone(),
            )
        })
        .collect();
    g.bench_function("fetch_4_shards", |b| {
        b.iter(|| {
            rt.block_on(futures::future::join_all(clients.iter().map(
                |(c, id)| async move {
                    let mut c = c.clone();
                    let req = GetShardRequest {
                        grant: Default::default(),
                        shard_id: id.clone(),
                        offset: 0,
                        length: None,
                    };
                    let mut s = c.get_shard(req).await.expect("get").into_inner();
                    let mut n = 0u64;
                    while let Some(m) = s.message().await.expect("message") {
                        n += m.data.len() as u64;
                    }
                    assert_eq!(n, shard_len);
                },
            )))
        })
    });
    g.finish();
    for s in servers {
        rt.block_on(s.shutdown()).expect("shutdown");
    }
}

criterion_group!(benches, repair);
criterion_main!(benches);
