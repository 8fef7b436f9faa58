//! Chunk server tests against a real server on 127.0.0.1 (ephemeral ports, temp dirs).

// Test and benchmark code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::client::{connect, get_shard, put_messages, put_shard};
use dogfs_chunk::scrub::scrub_pass;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_core::checksum::{BLOCK_SIZE, crc32c};
use dogfs_core::ids::ShardId;
use dogfs_core::size::ByteSize;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::chunk::put_shard_request::Msg;
use dogfs_proto::chunk::{
    DeleteShardRequest, GetShardRequest, ListShardsRequest, NodeInfoRequest, PutShardHeader,
    PutShardRequest, PutShardTrailer, StatShardRequest,
};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

type Client = ChunkServiceClient<Channel>;

async fn start(dir: &Path) -> (ChunkServer, Client) {
    start_with(ChunkConfig::for_tests(dir)).await
}

async fn start_with(cfg: ChunkConfig) -> (ChunkServer, Client) {
    let server = ChunkServer::start(&cfg).await.unwrap();
    let client = connect(&server.grpc_addr().to_string()).await.unwrap();
    (server, client)
}

fn random_bytes(n: usize) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    Bytes::from(v)
}

/// Files under `dir/tmp` (uploads in progress).
fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).unwrap().count()
}

/// Shard files under `dir/shards`.
fn shard_files(dir: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.map(|e| {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
            })
            .unwrap_or(0)
    }
    walk(&dir.join("shards"))
}

async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} containing {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "status: {s:?}");
            assert!(
                s.message().contains(needle),
                "message {:?} should contain {needle:?}",
                s.message()
            );
        }
    }
}

#[tokio::test]
async fn put_get_range_delete_list_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(dir.path()).await;

    // Sizes around the block (64 KiB) and message (1 MiB) boundaries, and empty.
    let sizes = [
        0,
        1,
        BLOCK_SIZE - 1,
        BLOCK_SIZE,
        BLOCK_SIZE + 1,
        1024 * 1024 + 3,
        3 * 1024 * 1024 + 65_537,
    ];
    let mut stored = Vec::new();
    for &n in &sizes {
        let id = ShardId::random();
        let data = random_bytes(n);
        let info = put_shard(&mut c, id, &data).await.unwrap();
        assert_eq!(info.shard_id, id.to_string());
        assert_eq!(info.size, n as u64);
        assert_eq!(info.crc32c, crc32c(&data));
        assert_eq!(get_shard(&mut c, id, 0, None).await.unwrap(), data);
        stored.push((id, data));
    }

    // Ranges, including ones that start and end inside blocks and cross message pieces.
    let (id, data) = stored.last().unwrap().clone();
    let mut rng = rand::rng();
    for _ in 0..40 {
        let off = (rng.next_u64() % data.len() as u64) as usize;
        let len = (rng.next_u64() % (data.len() - off + 1) as u64) as usize;
        let got = get_shard(&mut c, id, off as u64, Some(len as u64))
            .await
            .unwrap();
        assert_eq!(got, &data[off..off + len], "range {off}+{len}");
    }
    // Offset alone reads to the end; an empty range at the end is valid.
    assert_eq!(get_shard(&mut c, id, 10, None).await.unwrap(), &data[10..]);
    assert!(
        get_shard(&mut c, id, data.len() as u64, Some(0))
            .await
            .unwrap()
            .is_empty()
    );

    // The first message of a read carries the shard's size and checksum.
    let mut stream = c
        .get_shard(GetShardRequest {
            grant: Default::default(),
            shard_id: id.to_string(),
            offset: 5,
            length: Some(3),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let info = first.shard.unwrap();
    assert_eq!((info.size, info.crc32c), (data.len() as u64, crc32c(&data)));
    assert_eq!(first.offset, 5);

    // Stat.
    let st = c
        .stat_shard(StatShardRequest {
            grant: Default::default(),
            shard_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .shard
        .unwrap();
    assert_eq!(st.size, data.len() as u64);

    // List in pages of 3 equals the sorted ids.
    let mut want: Vec<String> = stored.iter().map(|(i, _)| i.to_string()).collect();
    want.sort();
    let mut got = Vec::new();
    let mut start_after = String::new();
    loop {
        let page = c
            .list_shards(ListShardsRequest {
                start_after: start_after.clone(),
                limit: 3,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.shards.len() <= 3);
        got.extend(page.shards.iter().map(|s| s.shard_id.clone()));
        if page.next_start_after.is_empty() {
            break;
        }
        start_after = page.next_start_after;
    }
    assert_eq!(got, want);

    // Node info counts what is stored.
    let ni = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(ni.shard_count, sizes.len() as u64);
    assert!(ni.used_bytes >= sizes.iter().sum::<usize>() as u64);

    // Delete is idempotent and the shard is gone afterwards.
    let del = |id: ShardId| DeleteShardRequest {
        grant: Default::default(),
        shard_id: id.to_string(),
    };
    assert!(c.delete_shard(del(id)).await.unwrap().into_inner().existed);
    assert!(!c.delete_shard(del(id)).await.unwrap().into_inner().existed);
    assert_code(
        get_shard(&mut c, id, 0, None).await,
        Code::NotFound,
        "not found",
    );
    let ni = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(ni.shard_count, sizes.len() as u64 - 1);
    assert_eq!(tmp_files(dir.path()), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn flipped_byte_on_disk_is_data_loss_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(dir.path()).await;
    let id = ShardId::random();
    let data = random_bytes(5 * BLOCK_SIZE + 100);
    put_shard(&mut c, id, &data).await.unwrap();

    // Flip one byte inside block 3.
    let path = server.store().shard_path(id);
    let mut raw = std::fs::read(&path).unwrap();
    let at = 3 * BLOCK_SIZE + 1234;
    raw[at] ^= 0x01;
    std::fs::write(&path, &raw).unwrap();

    // A whole read fails with DATA_LOSS; the bytes it delivered before failing are correct.
    let mut stream = c
        .get_shard(GetShardRequest {
            grant: Default::default(),
            shard_id: id.to_string(),
            offset: 0,
            length: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(m)) => received.extend_from_slice(&m.data),
            Ok(None) => panic!("read of a corrupt shard completed"),
            Err(s) => break s,
        }
    };
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains("block 3"), "{}", err.message());
    assert!(received.len() <= at);
    assert_eq!(received, &data[..received.len()]);

    // A range inside the damaged block fails; one that avoids it still reads exactly.
    assert_code(
        get_shard(&mut c, id, at as u64 - 10, Some(20)).await,
        Code::DataLoss,
        "checksum",
    );
    let ok = get_shard(&mut c, id, 0, Some(3 * BLOCK_SIZE as u64))
        .await
        .unwrap();
    assert_eq!(ok, &data[..3 * BLOCK_SIZE]);

    // The scrubber finds it, and node info reports it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let report = scrub_pass(server.store(), server.metrics(), 0, &stop).unwrap();
    assert_eq!(report.corrupt, vec![id]);
    let ni = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(ni.corrupt_shards, vec![id.to_string()]);
    assert!(ni.checksum_errors >= 1);

    // A damaged footer is data loss too, also for stat.
    let n = raw.len();
    raw[n - 5] ^= 0x80;
    std::fs::write(&path, &raw).unwrap();
    assert_code(
        c.stat_shard(StatShardRequest {
            grant: Default::default(),
            shard_id: id.to_string(),
        })
        .await,
        Code::DataLoss,
        "damaged",
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn scrubber_passes_clean_store() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(dir.path()).await;
    for _ in 0..5 {
        put_shard(&mut c, ShardId::random(), &random_bytes(100_000))
            .await
            .unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let report = scrub_pass(server.store(), server.metrics(), 0, &stop).unwrap();
    assert_eq!(report.shards, 5);
    assert_eq!(report.bytes, 500_000);
    assert!(report.corrupt.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn upload_cut_short_leaves_no_shard() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(dir.path()).await;
    let id = ShardId::random();
    let data = random_bytes(3 * 1024 * 1024);

    // The stream ends cleanly but without its trailer.
    let mut msgs = put_messages(id, &data);
    msgs.pop();
    msgs.pop();
    assert_code(
        c.put_shard(tokio_stream::iter(msgs)).await,
        Code::Aborted,
        "without a trailer",
    );
    assert_code(get_shard(&mut c, id, 0, None).await, Code::NotFound, "");
    assert_eq!(tmp_files(dir.path()), 0);

    // The client goes away mid-stream: its task is aborted while the server waits for more.
    let (tx, rx) = tokio::sync::mpsc::channel::<PutShardRequest>(4);
    let mut c2 = c.clone();
    let upload = tokio::spawn(async move {
        c2.put_shard(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let msgs = put_messages(id, &data);
    for m in msgs.into_iter().take(2) {
        tx.send(m).await.unwrap();
    }
    let tmp = dir.path().to_path_buf();
    wait_until("the upload to start", Duration::from_secs(10), || {
        tmp_files(&tmp) == 1
    })
    .await;
    upload.abort();
    drop(tx);
    wait_until("the temp file to go", Duration::from_secs(10), || {
        tmp_files(&tmp) == 0
    })
    .await;
    assert_code(get_shard(&mut c, id, 0, None).await, Code::NotFound, "");
    assert_eq!(shard_files(dir.path()), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_uploads_of_one_id_never_tear() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(dir.path()).await;
    for round in 0..8 {
        let id = ShardId::random();
        let a = random_bytes(2 * 1024 * 1024 + round);
        let b = random_bytes(2 * 1024 * 1024 + round);
        let (mut c1, mut c2) = (c.clone(), c.clone());
        let (a2, b2) = (a.clone(), b.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { put_shard(&mut c1, id, &a2).await }),
            tokio::spawn(async move { put_shard(&mut c2, id, &b2).await }),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        // Exactly one wins; the loser is told, and the stored bytes are the winner's.
        let winner = match (&ra, &rb) {
            (Ok(_), Err(s)) | (Err(s), Ok(_)) => {
                assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
                if ra.is_ok() { &a } else { &b }
            }
            other => panic!("round {round}: expected one winner, got {other:?}"),
        };
        let mut cc = c.clone();
        assert_eq!(&get_shard(&mut cc, id, 0, None).await.unwrap(), winner);

        // The same bytes twice (a retried upload) both succeed: idempotent.
        let (mut c1, mut c2) = (c.clone(), c.clone());
        let id2 = ShardId::random();
        let (x, y) = (a.clone(), a.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { put_shard(&mut c1, id2, &x).await }),
            tokio::spawn(async move { put_shard(&mut c2, id2, &y).await }),
        );
        assert_eq!(r1.unwrap().unwrap().crc32c, crc32c(&a));
        assert_eq!(r2.unwrap().unwrap().crc32c, crc32c(&a));
        assert_eq!(&get_shard(&mut cc, id2, 0, None).await.unwrap(), &a);
    }
    assert_eq!(shard_files(dir.path()), 16);
    assert_eq!(server.store().shard_count(), 16);
    assert_eq!(tmp_files(dir.path()), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn data_and_identity_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(dir.path()).await;
    let node_id = c
        .node_info(NodeInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .node_id;
    let shards: Vec<(ShardId, Bytes)> = (0..4)
        .map(|i| (ShardId::random(), random_bytes(i * 300_000 + 7)))
        .collect();
    for (id, d) in &shards {
        put_shard(&mut c, *id, d).await.unwrap();
    }
    // While it runs, a second server cannot take the same directory.
    let err = ChunkServer::start(&ChunkConfig::for_tests(dir.path()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    server.shutdown().await.unwrap();
    drop(c);

    // A crash left a temp file behind; the next start removes it.
    std::fs::write(dir.path().join("tmp").join("leftover.tmp"), b"partial").unwrap();

    let (server, mut c) = start(dir.path()).await;
    assert_eq!(tmp_files(dir.path()), 0);
    let ni = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(ni.node_id, node_id);
    assert_eq!(ni.shard_count, 4);
    for (id, d) in &shards {
        assert_eq!(&get_shard(&mut c, *id, 0, None).await.unwrap(), d);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn full_disk_refuses_writes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ChunkConfig::for_tests(dir.path());
    cfg.capacity = Some(ByteSize(3 * 1024 * 1024));
    cfg.reserve = ByteSize(1024 * 1024);
    let (server, mut c) = start_with(cfg).await;

    // 1.5 MiB fits in the 2 MiB above the reserve; a second one does not.
    let first = ShardId::random();
    put_shard(&mut c, first, &random_bytes(1536 * 1024))
        .await
        .unwrap();
    let id = ShardId::random();
    assert_code(
        put_shard(&mut c, id, &random_bytes(1536 * 1024)).await,
        Code::ResourceExhausted,
        "reserve",
    );
    assert_code(get_shard(&mut c, id, 0, None).await, Code::NotFound, "");
    assert_eq!(shard_files(dir.path()), 1);
    assert_eq!(tmp_files(dir.path()), 0);
    let ni = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(ni.reserve_bytes, 1024 * 1024);
    assert!(ni.available_bytes < 1536 * 1024);

    // After a delete the space is back.
    c.delete_shard(DeleteShardRequest {
        grant: Default::default(),
        shard_id: first.to_string(),
    })
    .await
    .unwrap();
    put_shard(&mut c, id, &random_bytes(1536 * 1024))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_precise_status_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(dir.path()).await;
    let id = ShardId::random();
    let data = random_bytes(200_000);

    // Malformed shard ids on every call.
    for bad in [
        "",
        "xyz",
        "../../etc/passwd",
        "0123456789ABCDEF0123456789ABCDEF",
    ] {
        let header = PutShardHeader {
            grant: Default::default(),
            shard_id: bad.into(),
            size: 1,
        };
        let msgs = vec![PutShardRequest {
            msg: Some(Msg::Header(header)),
        }];
        assert_code(
            c.put_shard(tokio_stream::iter(msgs)).await,
            Code::InvalidArgument,
            "invalid shard id",
        );
        let req = GetShardRequest {
            grant: Default::default(),
            shard_id: bad.into(),
            offset: 0,
            length: None,
        };
        assert_code(c.get_shard(req).await, Code::InvalidArgument, "shard_id");
        let del = DeleteShardRequest {
            grant: Default::default(),
            shard_id: bad.into(),
        };
        assert_code(c.delete_shard(del).await, Code::InvalidArgument, "shard id");
        let st = StatShardRequest {
            grant: Default::default(),
            shard_id: bad.into(),
        };
        assert_code(c.stat_shard(st).await, Code::InvalidArgument, "shard id");
    }
    assert_code(
        c.list_shards(ListShardsRequest {
            start_after: "nope".into(),
            limit: 0,
        })
        .await,
        Code::InvalidArgument,
        "start_after",
    );
    assert_code(
        c.list_shards(ListShardsRequest {
            start_after: String::new(),
            limit: 20_000,
        })
        .await,
        Code::InvalidArgument,
        "limit 20000",
    );

    // Upload protocol violations.
    let mut no_header = put_messages(id, &data);
    no_header.remove(0);
    assert_code(
        c.put_shard(tokio_stream::iter(no_header)).await,
        Code::InvalidArgument,
        "must be a header",
    );
    assert_code(
        c.put_shard(tokio_stream::iter(Vec::<PutShardRequest>::new()))
            .await,
        Code::InvalidArgument,
        "empty upload stream",
    );
    let mut two_headers = put_messages(id, &data);
    two_headers.insert(1, two_headers[0].clone());
    assert_code(
        c.put_shard(tokio_stream::iter(two_headers)).await,
        Code::InvalidArgument,
        "second header",
    );
    let mut empty_msg = put_messages(id, &data);
    empty_msg.insert(1, PutShardRequest { msg: None });
    assert_code(
        c.put_shard(tokio_stream::iter(empty_msg)).await,
        Code::InvalidArgument,
        "empty PutShard message",
    );

    // Wrong checksum in the trailer.
    let mut wrong_crc = put_messages(id, &data);
    let last = wrong_crc.len() - 1;
    wrong_crc[last] = PutShardRequest {
        msg: Some(Msg::Trailer(PutShardTrailer {
            crc32c: crc32c(&data) ^ 1,
        })),
    };
    assert_code(
        c.put_shard(tokio_stream::iter(wrong_crc)).await,
        Code::DataLoss,
        "checksum mismatch",
    );

    // More or fewer bytes than declared.
    let mut too_much = put_messages(id, &data);
    if let Some(Msg::Header(h)) = &mut too_much[0].msg {
        h.size = 1000;
    }
    assert_code(
        c.put_shard(tokio_stream::iter(too_much)).await,
        Code::InvalidArgument,
        "more than the declared 1000 bytes",
    );
    let mut too_little = put_messages(id, &data);
    if let Some(Msg::Header(h)) = &mut too_little[0].msg {
        h.size = 300_000;
    }
    assert_code(
        c.put_shard(tokio_stream::iter(too_little)).await,
        Code::InvalidArgument,
        "declared 300000",
    );

    // An oversized message, from a client whose own limit is raised past the server's.
    let mut big_client = c.clone().max_encoding_message_size(64 * 1024 * 1024);
    let big = random_bytes(5 * 1024 * 1024);
    let msgs = vec![
        PutShardRequest {
            msg: Some(Msg::Header(PutShardHeader {
                grant: Default::default(),
                shard_id: id.to_string(),
                size: big.len() as u64,
            })),
        },
        PutShardRequest {
            msg: Some(Msg::Data(big.clone())),
        },
        PutShardRequest {
            msg: Some(Msg::Trailer(PutShardTrailer {
                crc32c: crc32c(&big),
            })),
        },
    ];
    assert_code(
        big_client.put_shard(tokio_stream::iter(msgs)).await,
        Code::ResourceExhausted,
        "too large",
    );

    // Nothing of the above was stored.
    assert_eq!(shard_files(dir.path()), 0);
    assert_eq!(tmp_files(dir.path()), 0);
    assert_code(
        get_shard(&mut c, id, 0, None).await,
        Code::NotFound,
        "not found",
    );

    // Reads past the end.
    put_shard(&mut c, id, &data).await.unwrap();
    for (off, len, needle) in [
        (200_001, None, "past the end"),
        (0, Some(200_001), "length=200001"),
        (199_999, Some(2), "offset=199999"),
        (u64::MAX, Some(1), "past the end"),
        (1, Some(u64::MAX), "past the end"),
    ] {
        assert_code(
            get_shard(&mut c, id, off, len).await,
            Code::OutOfRange,
            needle,
        );
    }
    assert_code(
        get_shard(&mut c, ShardId::random(), 0, None).await,
        Code::NotFound,
        "not found",
    );
    // The server is still healthy after all of it.
    assert_eq!(get_shard(&mut c, id, 0, None).await.unwrap(), data);
    server.shutdown().await.unwrap();
}

/// A plain HTTP/1.1 GET, enough for the health and metrics endpoints.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
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

#[tokio::test]
async fn health_ready_and_metrics_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(dir.path()).await;
    put_shard(&mut c, ShardId::random(), &random_bytes(1000))
        .await
        .unwrap();
    let _ = get_shard(&mut c, ShardId::random(), 0, None).await;
    let addr = server.http_addr();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        r#"dogfs_chunk_rpc_requests_total{method="PutShard",code="OK"} 1"#,
        r#"dogfs_chunk_rpc_requests_total{method="GetShard",code="NOT_FOUND"} 1"#,
        "dogfs_chunk_shards 1",
        "dogfs_chunk_written_bytes_total 1000",
        "dogfs_chunk_rpc_duration_seconds_bucket",
    ] {
        assert!(body.contains(needle), "metrics lack {needle:?}:\n{body}");
    }
    server.shutdown().await.unwrap();
}
