//! The chunk service's stream path on one connection, against raw loopback TCP in the same run.
//!
//! `cargo bench -p dogfs-chunk --bench stream`
//!
//! The store lives on tmpfs (`/dev/shm`) when there is one, so the figures measure the stream
//! path (HTTP/2, protobuf, CRC32C, the store's write/read and checksum code), not the disk:
//! the bar compares it with raw TCP. Set `DOGFS_BENCH_DIR` to measure on another file system.
//!
//! Two more baselines bound what any shard protocol could reach here: `ideal_store` (raw TCP
//! into a receiver that checksums each 64 KiB block, writes a file beside the store's and
//! fsyncs it) and `ideal_serve` (a sender that reads a file, verifies each block and writes
//! it to raw TCP), each with its socket and file sides on two threads. They do the work an
//! upload and a checked download cannot skip, with no framing, no protobuf and no copies
//! besides the file and socket ones.

// Test and benchmark code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The same allocator as the `dogfs-chunk` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dogfs_chunk::client::{connect, put_shard};
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_core::checksum::{BLOCK_SIZE, BlockHasher, crc32c};
use dogfs_core::ids::ShardId;
use dogfs_core::transport::DATA_MESSAGE_BYTES;
use dogfs_proto::chunk::{DeleteShardRequest, GetShardRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A 64 MiB segment over k = 4 gives 16 MiB shards.
const SHARD: usize = 16 * 1024 * 1024;

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

/// Writes `data` in 1 MiB writes and waits for the receiver's 1-byte acknowledgement, so the
/// time is the delivery's, not the send buffer's.
async fn send_acked(conn: &mut TcpStream, data: &[u8]) {
    for chunk in data.chunks(DATA_MESSAGE_BYTES) {
        conn.write_all(chunk).await.expect("write");
    }
    let mut ack = [0u8; 1];
    conn.read_exact(&mut ack).await.expect("ack");
}

/// One loopback connection with Nagle off, as the gRPC channels have.
async fn dial(addr: std::net::SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).await.expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    conn
}

fn stream_path(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = bench_dir();
    let server = rt
        .block_on(ChunkServer::start(&ChunkConfig::for_tests(dir.path())))
        .expect("server");
    let addr = server.grpc_addr().to_string();
    let client = rt.block_on(connect(&addr)).expect("connect");
    let data = Bytes::from(
        (0..SHARD)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect::<Vec<u8>>(),
    );

    // Raw TCP: one connection, 1 MiB writes, the reader discarding into a 1 MiB buffer.
    let sink = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let sink_addr = sink.local_addr().expect("addr");
    rt.spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; DATA_MESSAGE_BYTES];
                let mut n = 0usize;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    // Acknowledge each full transfer so the writer times delivery, not
                    // just its send buffer.
                    if n >= SHARD {
                        n -= SHARD;
                        if s.write_all(&[1]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    let mut tcp = rt.block_on(dial(sink_addr));

    // The floors any shard protocol has on this machine, over raw TCP with no framing: a
    // receiver that checksums every 64 KiB block, writes a file in the store's file system and
    // fsyncs it (what any upload must do), and a sender that reads a file and verifies its
    // blocks before sending them (what any checked download must do). Each pipelines its
    // socket side (a tokio task) with its file side (a thread of its own, 4 buffers of
    // 1 MiB between them), as the chunk server does.
    let ideal_dir = dir.path().join("ideal");
    std::fs::create_dir_all(&ideal_dir).expect("ideal dir");
    let store = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let store_addr = store.local_addr().expect("addr");
    let store_dir = ideal_dir.clone();
    rt.spawn(async move {
        while let Ok((mut s, _)) = store.accept().await {
            let dir = store_dir.clone();
            tokio::spawn(async move {
                let mut n_file = 0u64;
                loop {
                    let path = dir.join(format!("shard-{n_file}"));
                    n_file += 1;
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
                    let writer = std::thread::spawn(move || {
                        let mut file = std::fs::File::create(&path).expect("create");
                        let mut hasher = BlockHasher::new();
                        while let Some(buf) = rx.blocking_recv() {
                            hasher.update(&buf);
                            std::io::Write::write_all(&mut file, &buf).expect("write");
                        }
                        file.sync_all().expect("fsync");
                        std::hint::black_box(hasher.finish());
                        path
                    });
                    let mut got = 0usize;
                    while got < SHARD {
                        let mut buf = BytesMut::with_capacity(DATA_MESSAGE_BYTES.min(SHARD - got));
                        match s.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => {
                                got += k;
                                if tx.send(buf.freeze()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    drop(tx);
                    let Ok(path) = writer.join() else { return };
                    if s.write_all(&[1]).await.is_err() {
                        return;
                    }
                    let _ = std::fs::remove_file(&path);
                }
            });
        }
    });
    let serve_path = ideal_dir.join("serve");
    std::fs::write(&serve_path, &data).expect("write serve file");
    let serve_table = {
        let mut h = BlockHasher::new();
        h.update(&data);
        h.finish().0
    };
    let serve = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let serve_addr = serve.local_addr().expect("addr");
    rt.spawn(async move {
        while let Ok((mut s, _)) = serve.accept().await {
            let (path, table) = (serve_path.clone(), serve_table.clone());
            tokio::spawn(async move {
                let mut req = [0u8; 1];
                while s.read_exact(&mut req).await.is_ok() {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
                    let (path, table) = (path.clone(), table.clone());
                    std::thread::spawn(move || {
                        let mut file = std::fs::File::open(&path).expect("open");
                        let mut block = 0;
                        loop {
                            let mut buf = vec![0u8; DATA_MESSAGE_BYTES];
                            let k = std::io::Read::read(&mut file, &mut buf).expect("read");
                            if k == 0 {
                                return;
                            }
                            buf.truncate(k);
                            for chunk in buf.chunks(BLOCK_SIZE) {
                                assert_eq!(crc32c(chunk), table[block], "block {block}");
                                block += 1;
                            }
                            if tx.blocking_send(Bytes::from(buf)).is_err() {
                                return;
                            }
                        }
                    });
                    while let Some(buf) = rx.recv().await {
                        if s.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let mut store_conn = rt.block_on(dial(store_addr));
    let mut serve_conn = rt.block_on(dial(serve_addr));

    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Bytes(SHARD as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("raw_tcp_16MiB", |b| {
        b.iter(|| rt.block_on(send_acked(&mut tcp, &data)))
    });

    g.bench_function("ideal_store_16MiB", |b| {
        b.iter(|| rt.block_on(send_acked(&mut store_conn, &data)))
    });

    g.bench_function("ideal_serve_16MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                serve_conn.write_all(&[1]).await.expect("request");
                let mut buf = vec![0u8; DATA_MESSAGE_BYTES];
                let mut n = 0;
                while n < SHARD {
                    let k = serve_conn.read(&mut buf).await.expect("read");
                    assert!(k > 0, "server closed");
                    n += k;
                }
            })
        })
    });

    g.bench_function("put_shard_16MiB", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut c = client.clone();
                    let id = ShardId::random();
                    let start = Instant::now();
                    put_shard(&mut c, id, &data).await.expect("put");
                    total += start.elapsed();
                    let req = DeleteShardRequest {
                        grant: Default::default(),
                        shard_id: id.to_string(),
                    };
                    c.delete_shard(req).await.expect("delete");
                }
                total
            })
        })
    });

    let id = ShardId::random();
    rt.block_on(put_shard(&mut client.clone(), id, &data))
        .expect("put");
    g.bench_function("get_shard_16MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                // Count and drop, like the raw TCP reader: measure the stream, not a Vec.
                let mut c = client.clone();
                let req = GetShardRequest {
                    grant: Default::default(),
                    shard_id: id.to_string(),
                    offset: 0,
                    length: None,
                };
                let mut s = c.get_shard(req).await.expect("get").into_inner();
                let mut n = 0;
                while let Some(m) = s.message().await.expect("message") {
                    n += m.data.len();
                }
                assert_eq!(n, SHARD);
            })
        })
    });
    g.finish();
    rt.block_on(server.shutdown()).expect("shutdown");
}

criterion_group!(benches, stream_path);
criterion_main!(benches);
