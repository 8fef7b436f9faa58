//! `CopyShard` against real chunk servers on 127.0.0.1: a shard put on one server is pulled
//! by another (under its own id or a new target id), read back from both with `GetShard` and
//! compared byte for byte; corrupt, missing, mismatched, hung and cut-off sources store
//! nothing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Client, Node, assert_nothing_stored, assert_status, dead_addr, node, node_with, tmp_files,
};

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::client::{get_shard, put_shard};
use dogfs_chunk::format::{FOOTER_LEN, Footer};
use dogfs_core::checksum::crc32c;
use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::{
    CopyShardRequest, CopyShardResponse, ReconstructShardRequest, ReconstructSource,
    StatShardRequest,
};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

/// Three 1 MiB messages and a partial fourth, ending inside a 64 KiB block.
const LEN: usize = 3 * 1024 * 1024 + 12_345;

impl Node {
    fn addr(&self) -> String {
        self.server.grpc_addr().to_string()
    }

    /// XORs `mask` into byte `at` of shard `id`'s file on disk.
    fn flip(&self, id: ShardId, at: u64, mask: u8) {
        let path = self.server.store().shard_path(id);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= mask;
        f.write_all_at(&b, at).unwrap();
    }
}

fn random(len: usize) -> Bytes {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    Bytes::from(data)
}

/// A source server holding one random shard.
struct Source {
    node: Node,
    id: ShardId,
    data: Bytes,
}

async fn source() -> Source {
    let mut node = node().await;
    let id = ShardId::random();
    let data = random(LEN);
    let info = put_shard(&mut node.client, id, &data).await.unwrap();
    assert_eq!(info.crc32c, crc32c(&data));
    Source { node, id, data }
}

impl Source {
    fn request(&self) -> CopyShardRequest {
        CopyShardRequest {
            shard_id: self.id.to_string(),
            source_address: self.node.addr(),
            expected_crc32c: crc32c(&self.data),
            expected_size: self.data.len() as u64,
            target_shard_id: String::new(),
        }
    }
}

async fn copy(c: &mut Client, req: CopyShardRequest) -> Result<CopyShardResponse, Status> {
    c.copy_shard(req).await.map(tonic::Response::into_inner)
}

/// The shard stored under `id` on `n`, read back through GetShard, equals `want`, and its
/// recorded CRC is `want`'s.
async fn assert_stored(n: &mut Node, id: ShardId, want: &Bytes) {
    let got = get_shard(&mut n.client, id, 0, None).await.unwrap();
    assert!(got == want.as_ref(), "shard {id} differs from the original");
    let stat = n
        .client
        .stat_shard(StatShardRequest {
            grant: Default::default(),
            shard_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .shard
        .unwrap();
    assert_eq!(stat.crc32c, crc32c(want));
    assert_eq!(stat.size, want.len() as u64);
}

/// A TCP proxy to `upstream` that forwards everything until the upstream has sent `limit`
/// bytes, then closes both sides of the connection: a source server dying mid-stream. Answers
/// its address and the bytes it forwarded from upstream.
async fn cutting_proxy(upstream: String, limit: u64) -> (String, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let forwarded = Arc::new(AtomicU64::new(0));
    let fwd = Arc::clone(&forwarded);
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let fwd = Arc::clone(&fwd);
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let down = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = sr.read(&mut buf).await.unwrap_or(0);
                        let sent = fwd.load(Ordering::Relaxed);
                        if n == 0 || sent >= limit {
                            return;
                        }
                        let n = n.min((limit - sent) as usize);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        fwd.fetch_add(n as u64, Ordering::Relaxed);
                    }
                };
                // Whichever direction ends first, both sockets close when this task ends.
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (addr, forwarded)
}

/// A peer that accepts connections and never answers (a frozen server); each accepted
/// connection is announced on the returned channel.
async fn hung_peer() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held_open = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held_open.push(s);
            let _ = tx.send(());
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn copied_shard_is_byte_identical_and_a_retry_is_idempotent() {
    let mut src = source().await;
    let mut target = node().await;
    let resp = copy(&mut target.client, src.request()).await.unwrap();
    let info = resp.shard.unwrap();
    assert_eq!(info.shard_id, src.id.to_string());
    assert_eq!(info.size, LEN as u64);
    assert_eq!(info.crc32c, crc32c(&src.data));
    assert_eq!(resp.bytes_fetched, LEN as u64);
    // Both copies read back whole and equal; the source still has its own.
    assert_stored(&mut target, src.id, &src.data).await;
    let data = src.data.clone();
    assert_stored(&mut src.node, src.id, &data).await;
    assert_eq!(tmp_files(target.dir.path()), 0);

    // A retry whose answer was lost succeeds without fetching anything; a retry with the
    // source gone too (the mover deleted it after committing the move).
    let again = copy(&mut target.client, src.request()).await.unwrap();
    assert_eq!(again.shard.unwrap().crc32c, info.crc32c);
    assert_eq!(again.bytes_fetched, 0);
    let mut gone = src.request();
    gone.source_address = dead_addr();
    let again = copy(&mut target.client, gone).await.unwrap();
    assert_eq!(again.bytes_fetched, 0);
    assert_stored(&mut target, src.id, &src.data).await;

    let m = target.server.metrics();
    assert_eq!(m.copies_started.get(), 1);
    assert_eq!(m.copies_succeeded.get(), 1);
    assert_eq!(m.copies_failed.get(), 0);
    assert_eq!(m.copies_running.get(), 0);
    assert_eq!(m.copy_fetched_bytes.get(), LEN as u64);
    assert_eq!(m.copy_written_bytes.get(), LEN as u64);
    assert_eq!(m.repair_fetched_bytes.get(), 0);

    // An empty shard copies too.
    let id = ShardId::random();
    put_shard(&mut src.node.client, id, &Bytes::new())
        .await
        .unwrap();
    let resp = copy(
        &mut target.client,
        CopyShardRequest {
            shard_id: id.to_string(),
            source_address: src.node.addr(),
            expected_crc32c: crc32c(&[]),
            expected_size: 0,
            target_shard_id: String::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.shard.unwrap().size, 0);
    assert_stored(&mut target, id, &Bytes::new()).await;
}

#[tokio::test]
async fn copy_under_a_new_target_id_reads_back_equal_and_leaves_the_source_untouched() {
    let mut src = source().await;
    let mut target = node().await;
    let new_id = ShardId::random();
    let req = CopyShardRequest {
        target_shard_id: new_id.to_string(),
        ..src.request()
    };
    let resp = copy(&mut target.client, req.clone()).await.unwrap();
    let info = resp.shard.unwrap();
    assert_eq!(info.shard_id, new_id.to_string());
    assert_eq!((info.size, info.crc32c), (LEN as u64, crc32c(&src.data)));
    assert_eq!(resp.bytes_fetched, LEN as u64);
    assert_stored(&mut target, new_id, &src.data).await;
    // Stored under the new id only; the source keeps its shard, under its id only.
    assert_nothing_stored(&mut target, src.id).await;
    let data = src.data.clone();
    assert_stored(&mut src.node, src.id, &data).await;
    assert_nothing_stored(&mut src.node, new_id).await;
    assert_eq!(target.server.store().shard_count(), 1);

    // Idempotent: a retry fetches nothing, also with the source gone.
    let again = copy(&mut target.client, req.clone()).await.unwrap();
    assert_eq!(again.bytes_fetched, 0);
    assert_eq!(again.shard.unwrap().shard_id, new_id.to_string());
    let gone = CopyShardRequest {
        source_address: dead_addr(),
        ..req.clone()
    };
    assert_eq!(
        copy(&mut target.client, gone).await.unwrap().bytes_fetched,
        0
    );
    assert_stored(&mut target, new_id, &src.data).await;
    assert_eq!(target.server.metrics().copies_started.get(), 1);

    // A different shard already under the target id: ALREADY_EXISTS naming it, kept as is.
    let taken = ShardId::random();
    let other = random(1000);
    put_shard(&mut target.client, taken, &other).await.unwrap();
    assert_status(
        copy(
            &mut target.client,
            CopyShardRequest {
                target_shard_id: taken.to_string(),
                ..src.request()
            },
        )
        .await,
        Code::AlreadyExists,
        &[&taken.to_string()],
    );
    assert_stored(&mut target, taken, &other).await;

    // The source's id given explicitly is the same as leaving it empty.
    let resp = copy(
        &mut target.client,
        CopyShardRequest {
            target_shard_id: src.id.to_string(),
            ..src.request()
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.shard.unwrap().shard_id, src.id.to_string());
    assert_stored(&mut target, src.id, &src.data).await;
    assert_eq!(tmp_files(target.dir.path()), 0);
}

#[tokio::test]
async fn copy_onto_the_source_server_itself_under_a_new_id() {
    let mut src = source().await;
    let new_id = ShardId::random();
    let req = CopyShardRequest {
        target_shard_id: new_id.to_string(),
        ..src.request()
    };
    let resp = copy(&mut src.node.client, req.clone()).await.unwrap();
    assert_eq!(resp.bytes_fetched, LEN as u64);
    let data = src.data.clone();
    assert_stored(&mut src.node, new_id, &data).await;
    assert_stored(&mut src.node, src.id, &data).await;
    assert_eq!(src.node.server.store().shard_count(), 2);
    assert_eq!(
        copy(&mut src.node.client, req).await.unwrap().bytes_fetched,
        0
    );
    // Under its own id it is already stored: success, nothing fetched, nothing changed.
    let own = src.request();
    let same = copy(&mut src.node.client, own).await.unwrap();
    assert_eq!(same.bytes_fetched, 0);
    assert_stored(&mut src.node, src.id, &data).await;
    assert_eq!(src.node.server.store().shard_count(), 2);
    assert_eq!(tmp_files(src.node.dir.path()), 0);
}

#[tokio::test]
async fn a_source_cut_off_mid_copy_leaves_nothing_under_the_target_id() {
    let mut src = source().await;
    let mut target = node().await;
    // The connection dies after the first 1 MiB message and part of the second.
    const CUT: u64 = 1536 * 1024;
    let (proxy, forwarded) = cutting_proxy(src.node.addr(), CUT).await;
    let new_id = ShardId::random();
    let req = CopyShardRequest {
        target_shard_id: new_id.to_string(),
        source_address: proxy.clone(),
        ..src.request()
    };
    assert_status(
        copy(&mut target.client, req).await,
        Code::FailedPrecondition,
        &[&src.id.to_string(), &proxy],
    );
    assert_eq!(forwarded.load(Ordering::Relaxed), CUT);
    // Mid-copy: data had reached the temp file when the source went away.
    let fetched = target.server.metrics().copy_fetched_bytes.get();
    assert!(
        (1024 * 1024..LEN as u64).contains(&fetched),
        "fetched {fetched}"
    );
    assert_nothing_stored(&mut target, new_id).await;
    assert_nothing_stored(&mut target, src.id).await;
    assert_eq!(target.server.store().shard_count(), 0);
    assert_eq!(target.server.store().used_bytes(), 0);
    let data = src.data.clone();
    assert_stored(&mut src.node, src.id, &data).await;

    // Retried straight from the source, the copy completes.
    let resp = copy(
        &mut target.client,
        CopyShardRequest {
            target_shard_id: new_id.to_string(),
            ..src.request()
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.bytes_fetched, LEN as u64);
    assert_stored(&mut target, new_id, &src.data).await;
}

#[tokio::test]
async fn a_different_shard_under_the_id_is_already_exists() {
    let src = source().await;
    let mut target = node().await;
    let other = random(1000);
    put_shard(&mut target.client, src.id, &other).await.unwrap();
    assert_status(
        copy(&mut target.client, src.request()).await,
        Code::AlreadyExists,
        &[&src.id.to_string()],
    );
    assert_stored(&mut target, src.id, &other).await;
    assert_eq!(target.server.metrics().copy_fetched_bytes.get(), 0);
}

#[tokio::test]
async fn corrupt_source_is_data_loss_and_stores_nothing() {
    let src = source().await;
    let mut target = node().await;

    // A bad byte in the last block: the first three messages were already written to the
    // temp file when the source's server refuses the block.
    src.node.flip(src.id, LEN as u64 - 100, 0x01);
    assert_status(
        copy(&mut target.client, src.request()).await,
        Code::DataLoss,
        &[&src.id.to_string(), &src.node.addr()],
    );
    assert_nothing_stored(&mut target, src.id).await;
    src.node.flip(src.id, LEN as u64 - 100, 0x01);

    // A footer that lies: every block checks out and the source reports the CRC the request
    // expects, but the bytes do not have it. Only the CRC computed while streaming sees it.
    let path = src.node.server.store().shard_path(src.id);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let file_len = file.metadata().unwrap().len();
    let mut fb = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut fb, file_len - FOOTER_LEN as u64)
        .unwrap();
    let mut footer = Footer::decode(&fb, file_len).unwrap();
    footer.whole_crc ^= 0x5a5a;
    file.write_all_at(&footer.encode(), file_len - FOOTER_LEN as u64)
        .unwrap();
    let mut req = src.request();
    req.expected_crc32c = footer.whole_crc;
    assert_status(
        copy(&mut target.client, req).await,
        Code::DataLoss,
        &[&src.id.to_string(), &format!("{:08x}", footer.whole_crc)],
    );
    assert_nothing_stored(&mut target, src.id).await;

    let m = target.server.metrics();
    assert_eq!(m.copies_failed.get(), 2);
    assert_eq!(m.copies_succeeded.get(), 0);
    assert_eq!(m.copies_running.get(), 0);
}

#[tokio::test]
async fn wrong_expected_crc_or_size_is_data_loss_and_stores_nothing() {
    let src = source().await;
    let mut target = node().await;
    let crc = crc32c(&src.data);

    let mut req = src.request();
    req.expected_crc32c ^= 0xdead_beef;
    let wrong = req.expected_crc32c;
    assert_status(
        copy(&mut target.client, req).await,
        Code::DataLoss,
        &[&format!("{crc:08x}"), &format!("{wrong:08x}")],
    );
    assert_nothing_stored(&mut target, src.id).await;

    for size in [LEN as u64 - 1, LEN as u64 + 1, 0] {
        let mut req = src.request();
        req.expected_size = size;
        assert_status(
            copy(&mut target.client, req).await,
            Code::DataLoss,
            &[&format!("not the expected {size} bytes")],
        );
        assert_nothing_stored(&mut target, src.id).await;
    }
    // Each of the four was refused on its first message (1 MiB of data): the rest of the
    // shard was never fetched.
    assert_eq!(
        target.server.metrics().copy_fetched_bytes.get(),
        4 * 1024 * 1024
    );
}

#[tokio::test]
async fn missing_or_unreachable_source_is_failed_precondition_naming_the_shard() {
    let src = source().await;
    let mut target = node().await;

    let mut req = src.request();
    let id = ShardId::random();
    req.shard_id = id.to_string();
    assert_status(
        copy(&mut target.client, req).await,
        Code::FailedPrecondition,
        &[&id.to_string(), &src.node.addr(), "NotFound"],
    );
    assert_nothing_stored(&mut target, id).await;

    let mut req = src.request();
    let dead = dead_addr();
    req.source_address = dead.clone();
    assert_status(
        copy(&mut target.client, req).await,
        Code::FailedPrecondition,
        &[&src.id.to_string(), &dead],
    );
    assert_nothing_stored(&mut target, src.id).await;
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument_naming_the_field() {
    let src = source().await;
    let mut target = node().await;
    type Mutate = Box<dyn Fn(&mut CopyShardRequest)>;
    let cases: Vec<(Mutate, &str)> = vec![
        (Box::new(|r| r.shard_id = "not-hex".into()), "shard_id"),
        (Box::new(|r| r.shard_id = String::new()), "shard_id"),
        (
            Box::new(|r| r.target_shard_id = "../../etc/passwd".into()),
            "target_shard_id",
        ),
        (
            Box::new(|r| r.target_shard_id = "0123456789ABCDEF0123456789ABCDEF".into()),
            "0123456789ABCDEF0123456789ABCDEF",
        ),
        (Box::new(|r| r.target_shard_id = "abc".into()), "\"abc\""),
        (
            Box::new(|r| r.source_address = "nowhere".into()),
            "source_address",
        ),
        (
            Box::new(|r| r.source_address = String::new()),
            "source_address",
        ),
        (
            Box::new(|r| r.source_address = "http://a:1".into()),
            "source_address",
        ),
    ];
    for (mutate, field) in cases {
        let mut r = src.request();
        mutate(&mut r);
        assert_status(
            copy(&mut target.client, r).await,
            Code::InvalidArgument,
            &[field],
        );
    }
    assert_nothing_stored(&mut target, src.id).await;
    assert_eq!(target.server.metrics().copies_started.get(), 0);
}

#[tokio::test]
async fn hung_source_fails_within_its_timeout_and_slots_are_shared_with_repairs() {
    let src = source().await;
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let mut target = node_with(|c| {
        c.repair_concurrency = 1;
        c.repair_source_timeout_ms = TIMEOUT.as_millis() as u64;
    })
    .await;
    let (hung, mut accepted) = hung_peer().await;

    let mut req = src.request();
    req.source_address = hung.clone();
    let mut c = target.client.clone();
    let started = Instant::now();
    let first = tokio::spawn(async move { copy(&mut c, req).await });

    // The copy connects to the source only once admitted, so from here until its timeout it
    // holds the only slot: a second copy and a repair are both refused.
    accepted.recv().await.unwrap();
    let other = ShardId::random();
    assert_status(
        copy(
            &mut target.client,
            CopyShardRequest {
                shard_id: other.to_string(),
                ..src.request()
            },
        )
        .await,
        Code::ResourceExhausted,
        &["DOGFS_REPAIR_CONCURRENCY"],
    );
    let repair = ReconstructShardRequest {
        shard_id: other.to_string(),
        index: 0,
        codec: "rs".into(),
        k: 1,
        m: 1,
        cell_size: 64 * 1024,
        segment_len: 1000,
        expected_crc32c: None,
        sources: vec![ReconstructSource {
            index: 1,
            shard_id: ShardId::random().to_string(),
            address: dead_addr(),
            crc32c: 0,
        }],
    };
    let refused = target.client.reconstruct_shard(repair).await;
    assert_status(refused, Code::ResourceExhausted, &[]);

    let r = first.await.unwrap();
    let elapsed = started.elapsed();
    assert_status(
        r,
        Code::FailedPrecondition,
        &[&src.id.to_string(), &hung, "1500 ms"],
    );
    assert!(elapsed >= TIMEOUT, "failed before the timeout: {elapsed:?}");
    // Generous for a loaded debug build, but far below a hang.
    assert!(
        elapsed < TIMEOUT + Duration::from_secs(10),
        "the hung source cost more than its timeout: {elapsed:?}"
    );
    assert_nothing_stored(&mut target, src.id).await;

    // The slot was released before the answer: the copy now goes through.
    copy(&mut target.client, src.request()).await.unwrap();
    assert_stored(&mut target, src.id, &src.data).await;

    // Concurrency 0 refuses every copy.
    let mut off = node_with(|c| c.repair_concurrency = 0).await;
    assert_status(
        copy(&mut off.client, src.request()).await,
        Code::ResourceExhausted,
        &[],
    );
    assert_nothing_stored(&mut off, src.id).await;
}

#[tokio::test]
async fn no_room_is_resource_exhausted_and_stores_nothing() {
    let src = source().await;
    // A reserve larger than any test disk's free space: every write is refused.
    let mut target = node_with(|c| c.reserve = dogfs_core::size::ByteSize(u64::MAX / 4)).await;
    assert_status(
        copy(&mut target.client, src.request()).await,
        Code::ResourceExhausted,
        &[&src.id.to_string()],
    );
    assert_nothing_stored(&mut target, src.id).await;
    assert_eq!(target.server.metrics().copy_fetched_bytes.get(), 0);
}

#[tokio::test]
async fn the_repair_bandwidth_limit_paces_copies() {
    let src = source().await;
    const RATE: u64 = 1_000_000;
    let mut target = node_with(|c| c.repair_bandwidth = dogfs_core::size::ByteSize(RATE)).await;
    let started = Instant::now();
    let resp = copy(&mut target.client, src.request()).await.unwrap();
    let elapsed = started.elapsed();
    // The bucket starts with one second of tokens; the rest is paid at RATE.
    let floor = Duration::from_secs_f64((resp.bytes_fetched - RATE) as f64 / RATE as f64);
    assert!(
        elapsed >= floor.mul_f64(0.9),
        "{} bytes in {elapsed:?}, the limit allows no faster than {floor:?}",
        resp.bytes_fetched
    );
    assert_stored(&mut target, src.id, &src.data).await;
}
