//! `ReconstructShard` against real chunk servers on 127.0.0.1: a segment is encoded with
//! core's layout and codec, its k+m shards are put on six servers, and a seventh rebuilds
//! shards from them. Every rebuilt shard is read back with `GetShard` and compared byte for
//! byte with the original.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Client, Node, assert_nothing_stored, assert_status, dead_addr, node, node_with, tmp_files,
};

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::client::{get_shard, put_shard};
use dogfs_chunk::format::{FOOTER_LEN, Footer};
use dogfs_core::checksum::crc32c;
use dogfs_core::codec::codec_for;
use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_core::size::ByteSize;
use dogfs_proto::chunk::{
    ReconstructShardRequest, ReconstructShardResponse, ReconstructSource, StatShardRequest,
};
use rand::RngCore;
use tonic::{Code, Status};

const DEADLINE: Duration = Duration::from_secs(30);

/// RS 4+2 with 64 KiB cells; the segment is the short last segment of a 25 MiB + 12 345-byte
/// object cut into 16 MiB segments, as a client would write it: 9 MiB + 12 345 data bytes in
/// 37 stripes of 63 872-byte cells (the effective cell rule), the last stripe 3 527 bytes
/// short of data; shards of 2 363 264 bytes, so a repair runs over three 1 MiB windows.
const K: usize = 4;
const M: usize = 2;
const CELL: u64 = 64 * 1024;
const SEGMENT_SIZE: u64 = 16 * 1024 * 1024;
const OBJECT: u64 = 25 * 1024 * 1024 + 12_345;

/// A segment's shards as the writer produces them.
struct Segment {
    scheme: ErasureScheme,
    len: u64,
    shards: Vec<Bytes>,
}

fn scheme() -> ErasureScheme {
    ErasureScheme::new(Codec::ReedSolomon, K as u32, M as u32, CELL).unwrap()
}

/// Encodes the last segment of a random object, stripe by stripe, the way a writer does:
/// each stripe's data copied into a zeroed k × cell buffer, parity from `encode_stripe`,
/// cell i appended to shard i.
fn encode() -> Segment {
    let scheme = scheme();
    let layout = ObjectLayout::new(OBJECT, SEGMENT_SIZE, scheme).unwrap();
    let seg = layout.segment(1).unwrap();
    let mut data = vec![0u8; seg.data_len() as usize];
    rand::rng().fill_bytes(&mut data);
    let codec = codec_for(&scheme).unwrap();
    let cell = seg.cell_size() as usize;
    assert!(seg.stripe_count() > 1, "the test needs several stripes");
    let last = seg.stripe_data_range(seg.stripe_count() - 1).unwrap();
    assert!(
        last.end - last.start < seg.stripe_data_size(),
        "the test needs a short last stripe"
    );
    assert_eq!(
        (seg.stripe_count(), seg.cell_size(), seg.shard_len()),
        (37, 63_872, 2_363_264)
    );
    let mut shards = vec![Vec::new(); K + M];
    for s in 0..seg.stripe_count() {
        let r = seg.stripe_data_range(s).unwrap();
        let mut stripe = vec![0u8; K * cell];
        stripe[..(r.end - r.start) as usize]
            .copy_from_slice(&data[r.start as usize..r.end as usize]);
        let mut parity = vec![0u8; M * cell];
        codec.encode_stripe(&stripe, &mut parity).unwrap();
        for i in 0..K {
            shards[i].extend_from_slice(&stripe[i * cell..(i + 1) * cell]);
        }
        for j in 0..M {
            shards[K + j].extend_from_slice(&parity[j * cell..(j + 1) * cell]);
        }
    }
    for s in &shards {
        assert_eq!(s.len() as u64, seg.shard_len());
    }
    Segment {
        scheme,
        len: seg.data_len(),
        shards: shards.into_iter().map(Bytes::from).collect(),
    }
}

/// Six servers holding shard i on server i, and the segment.
struct Held {
    nodes: Vec<Node>,
    ids: Vec<ShardId>,
    seg: Segment,
}

async fn hold() -> Held {
    let seg = encode();
    let mut nodes = Vec::new();
    let mut ids = Vec::new();
    for shard in &seg.shards {
        let mut n = node().await;
        let id = ShardId::random();
        let info = put_shard(&mut n.client, id, shard).await.unwrap();
        assert_eq!(info.crc32c, crc32c(shard));
        nodes.push(n);
        ids.push(id);
    }
    Held { nodes, ids, seg }
}

impl Held {
    fn source(&self, i: usize) -> ReconstructSource {
        ReconstructSource {
            index: i as u32,
            shard_id: self.ids[i].to_string(),
            address: self.nodes[i].server.grpc_addr().to_string(),
            crc32c: crc32c(&self.seg.shards[i]),
        }
    }

    /// The other shards, in the given order.
    fn sources(&self, order: &[usize]) -> Vec<ReconstructSource> {
        order.iter().map(|&i| self.source(i)).collect()
    }

    fn request(
        &self,
        id: ShardId,
        index: usize,
        sources: Vec<ReconstructSource>,
        expected: Option<u32>,
    ) -> ReconstructShardRequest {
        ReconstructShardRequest {
            shard_id: id.to_string(),
            index: index as u32,
            codec: self.seg.scheme.codec().to_string(),
            k: u32::from(self.seg.scheme.k()),
            m: u32::from(self.seg.scheme.m()),
            cell_size: u64::from(self.seg.scheme.cell_size()),
            segment_len: self.seg.len,
            expected_crc32c: expected,
            sources,
        }
    }

    fn crc(&self, i: usize) -> u32 {
        crc32c(&self.seg.shards[i])
    }

    fn shard_len(&self) -> u64 {
        self.seg.shards[0].len() as u64
    }

    /// XORs `mask` into byte `at` of shard i's file on disk.
    fn flip(&self, i: usize, at: u64, mask: u8) {
        let path = self.nodes[i].server.store().shard_path(self.ids[i]);
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

async fn reconstruct(
    c: &mut Client,
    req: ReconstructShardRequest,
) -> Result<ReconstructShardResponse, Status> {
    c.reconstruct_shard(req)
        .await
        .map(tonic::Response::into_inner)
}

/// The shard stored under `id` on `n`, read back through GetShard, equals `want`.
async fn assert_stored(n: &mut Node, id: ShardId, want: &Bytes) {
    let got = get_shard(&mut n.client, id, 0, None).await.unwrap();
    assert!(
        got == want.as_ref(),
        "rebuilt shard {id} differs from the original"
    );
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
}

#[tokio::test]
async fn rebuilds_every_index_exactly_data_and_parity() {
    let held = hold().await;
    let mut target = node().await;
    let len = held.shard_len();
    for index in 0..K + M {
        let others: Vec<usize> = (0..K + M).filter(|&i| i != index).collect();
        let id = ShardId::random();
        // Half with a recorded CRC to check against, half as for a shard missing since its
        // write (no CRC): the bytes must be exact either way.
        let expected = (index % 2 == 0).then(|| held.crc(index));
        let resp = reconstruct(
            &mut target.client,
            held.request(id, index, held.sources(&others), expected),
        )
        .await
        .unwrap();
        let info = resp.shard.unwrap();
        assert_eq!(info.shard_id, id.to_string());
        assert_eq!(info.size, len);
        assert_eq!(info.crc32c, held.crc(index), "index {index}");
        assert!(resp.bad_sources.is_empty(), "{:?}", resp.bad_sources);
        // Exactly k sources were read, each once, whole.
        assert_eq!(resp.bytes_fetched, K as u64 * len);
        assert_stored(&mut target, id, &held.seg.shards[index]).await;

        // The same repair again (a retry whose answer was lost) succeeds and changes nothing.
        let again = reconstruct(
            &mut target.client,
            held.request(id, index, held.sources(&others), expected),
        )
        .await
        .unwrap();
        assert_eq!(again.shard.unwrap().crc32c, info.crc32c);
    }
    let m = target.server.metrics();
    assert_eq!(m.repairs_succeeded.get(), 2 * (K + M) as u64);
    assert_eq!(m.repairs_failed.get(), 0);
    assert_eq!(m.repair_written_bytes.get(), (K + M) as u64 * len * 3 / 2);

    // A different shard under an id already stored: ALREADY_EXISTS, the stored one untouched,
    // whether the answer is certain up front (a recorded CRC) or only after rebuilding.
    let id = ShardId::random();
    reconstruct(
        &mut target.client,
        held.request(id, 0, held.sources(&[1, 2, 3, 4]), None),
    )
    .await
    .unwrap();
    for expected in [Some(held.crc(1)), None] {
        assert_status(
            reconstruct(
                &mut target.client,
                held.request(id, 1, held.sources(&[0, 2, 3, 4]), expected),
            )
            .await,
            Code::AlreadyExists,
            &[&id.to_string()],
        );
    }
    assert_stored(&mut target, id, &held.seg.shards[0]).await;
    assert_eq!(tmp_files(target.dir.path()), 0);
}

#[tokio::test]
async fn corrupt_source_is_skipped_for_a_spare_and_reported() {
    let held = hold().await;
    let mut target = node().await;
    let len = held.shard_len();

    // A bad byte in the first block: the source fails before any of its bytes are used, and
    // the spare (the fifth source) takes its place.
    held.flip(1, 10, 0x20);
    let id = ShardId::random();
    let resp = reconstruct(
        &mut target.client,
        held.request(id, 0, held.sources(&[1, 2, 3, 4, 5]), Some(held.crc(0))),
    )
    .await
    .unwrap();
    assert_eq!(resp.bad_sources.len(), 1, "{:?}", resp.bad_sources);
    let bad = &resp.bad_sources[0];
    assert!(
        bad.starts_with(&format!("{}: ", held.ids[1])) && bad.contains("DataLoss"),
        "{bad}"
    );
    assert_eq!(resp.bytes_fetched, K as u64 * len);
    assert_stored(&mut target, id, &held.seg.shards[0]).await;
    held.flip(1, 10, 0x20);

    // A bad byte in the last window: the source's earlier windows were already decoded, so
    // the partial shard is dropped and rebuilt without it. Rebuilding a parity shard.
    held.flip(3, len - 100, 0x01);
    let id = ShardId::random();
    let resp = reconstruct(
        &mut target.client,
        held.request(id, 5, held.sources(&[3, 0, 2, 4, 1]), None),
    )
    .await
    .unwrap();
    assert_eq!(resp.bad_sources.len(), 1, "{:?}", resp.bad_sources);
    assert!(
        resp.bad_sources[0].starts_with(&held.ids[3].to_string()),
        "{:?}",
        resp.bad_sources
    );
    // Started over, not patched with a spare: the first pass had at least its first two
    // windows from each of its k sources when source 3 failed, and the second pass reads k
    // whole shards again (a spare joining mid-way would add one shard, not k windows).
    let first_pass = K as u64 * 2 * 1024 * 1024;
    assert!(
        resp.bytes_fetched >= K as u64 * len + first_pass,
        "fetched {}: the repair did not start over",
        resp.bytes_fetched
    );
    assert_eq!(resp.shard.unwrap().crc32c, held.crc(5));
    assert_stored(&mut target, id, &held.seg.shards[5]).await;
    assert_eq!(target.server.metrics().repair_bad_sources.get(), 2);
}

#[tokio::test]
async fn sources_whose_checksum_is_not_the_recorded_one_are_rejected() {
    let held = hold().await;
    let mut target = node().await;

    // Metadata recorded a different CRC than source 1's server holds: refused on its first
    // message.
    let mut sources = held.sources(&[1, 2, 3, 4, 5]);
    sources[0].crc32c ^= 1;
    let id = ShardId::random();
    let resp = reconstruct(
        &mut target.client,
        held.request(id, 0, sources, Some(held.crc(0))),
    )
    .await
    .unwrap();
    assert_eq!(resp.bad_sources.len(), 1);
    assert!(
        resp.bad_sources[0].starts_with(&held.ids[1].to_string())
            && resp.bad_sources[0].contains("recorded"),
        "{:?}",
        resp.bad_sources
    );
    assert_stored(&mut target, id, &held.seg.shards[0]).await;

    // A source whose every block checks out and whose server reports the recorded CRC, but
    // whose bytes do not have that CRC (a footer that lies): caught by the CRC computed while
    // streaming, after its bytes were decoded, so the shard is rebuilt without it.
    let path = held.nodes[2].server.store().shard_path(held.ids[2]);
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
    let mut sources = held.sources(&[2, 1, 3, 4, 5]);
    sources[0].crc32c = footer.whole_crc;
    let id = ShardId::random();
    let resp = reconstruct(&mut target.client, held.request(id, 0, sources, None))
        .await
        .unwrap();
    assert_eq!(resp.bad_sources.len(), 1, "{:?}", resp.bad_sources);
    assert!(
        resp.bad_sources[0].starts_with(&held.ids[2].to_string())
            && resp.bad_sources[0].contains("bytes received"),
        "{:?}",
        resp.bad_sources
    );
    assert_eq!(resp.shard.unwrap().crc32c, held.crc(0));
    assert_stored(&mut target, id, &held.seg.shards[0]).await;
}

#[tokio::test]
async fn fewer_than_k_good_sources_is_failed_precondition_and_stores_nothing() {
    let held = hold().await;
    let mut target = node().await;
    let dead = dead_addr();

    // Two of five sources unreachable, one with a wrong recorded CRC: two good, four needed.
    let mut sources = held.sources(&[1, 2, 3, 4, 5]);
    sources[0].address = dead.clone();
    sources[2].address = dead;
    sources[3].crc32c ^= 0xff;
    let id = ShardId::random();
    let r = reconstruct(
        &mut target.client,
        held.request(id, 0, sources, Some(held.crc(0))),
    )
    .await;
    let ids: Vec<String> = [1, 3, 4].iter().map(|&i| held.ids[i].to_string()).collect();
    let mut needles: Vec<&str> = ids.iter().map(String::as_str).collect();
    needles.push("k = 4");
    assert_status(r, Code::FailedPrecondition, &needles);
    assert_nothing_stored(&mut target, id).await;

    // A source failing deep in the shard after the others ran out: nothing stored either.
    held.flip(2, held.shard_len() - 10, 0x04);
    let id = ShardId::random();
    let r = reconstruct(
        &mut target.client,
        held.request(id, 0, held.sources(&[1, 2, 3, 4]), None),
    )
    .await;
    assert_status(r, Code::FailedPrecondition, &[&held.ids[2].to_string()]);
    assert_nothing_stored(&mut target, id).await;
    assert_eq!(target.server.metrics().repairs_failed.get(), 2);
}

#[tokio::test]
async fn wrong_expected_crc_is_data_loss_and_stores_nothing() {
    let held = hold().await;
    let mut target = node().await;
    let id = ShardId::random();
    let wrong = held.crc(3) ^ 0xdead_beef;
    let r = reconstruct(
        &mut target.client,
        held.request(id, 3, held.sources(&[0, 1, 2, 4, 5]), Some(wrong)),
    )
    .await;
    assert_status(
        r,
        Code::DataLoss,
        &[&format!("{:08x}", held.crc(3)), &format!("{wrong:08x}")],
    );
    assert_nothing_stored(&mut target, id).await;
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument_naming_the_field() {
    let held = hold().await;
    let mut target = node().await;
    let base = || held.request(ShardId::random(), 0, held.sources(&[1, 2, 3, 4, 5]), None);
    type Mutate = Box<dyn Fn(&mut ReconstructShardRequest)>;
    let cases: Vec<(Mutate, &str)> = vec![
        (Box::new(|r| r.shard_id = "not-hex".into()), "shard_id"),
        (Box::new(|r| r.codec = "xor".into()), "codec"),
        (Box::new(|r| r.k = 0), "scheme"),
        (Box::new(|r| r.cell_size = 1000), "scheme"),
        (Box::new(|r| r.segment_len = 0), "segment_len"),
        (Box::new(|r| r.segment_len = u64::MAX), "segment_len"),
        (Box::new(|r| r.index = 6), "index"),
        (Box::new(|r| r.sources.truncate(3)), "sources"),
        (Box::new(|r| r.sources[2].index = 1), "sources[2].index"),
        (Box::new(|r| r.sources[1].index = 0), "sources[1].index"),
        (
            Box::new(|r| r.sources[4].shard_id = "x".into()),
            "sources[4].shard_id",
        ),
        (
            Box::new(|r| r.sources[0].address = "nowhere".into()),
            "sources[0].address",
        ),
    ];
    for (mutate, field) in cases {
        let mut r = base();
        mutate(&mut r);
        let id: Option<ShardId> = r.shard_id.parse().ok();
        assert_status(
            reconstruct(&mut target.client, r).await,
            Code::InvalidArgument,
            &[field],
        );
        if let Some(id) = id {
            assert_nothing_stored(&mut target, id).await;
        }
    }
    assert_eq!(target.server.metrics().repairs_started.get(), 0);
}

#[tokio::test]
async fn hung_source_costs_one_timeout_and_concurrency_is_bounded() {
    let held = hold().await;
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let target = node_with(|c| {
        c.repair_concurrency = 1;
        c.repair_source_timeout_ms = TIMEOUT.as_millis() as u64;
    })
    .await;

    // A peer that accepts connections and never answers (a frozen server).
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held_open = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held_open.push(s);
        }
    });

    let mut sources = held.sources(&[1, 2, 3, 4, 5]);
    sources[0].address = hung_addr;
    let id = ShardId::random();
    let req = held.request(id, 0, sources, Some(held.crc(0)));
    let mut c = target.client.clone();
    let started = Instant::now();
    let first = tokio::spawn(async move { reconstruct(&mut c, req).await });

    // While it waits on the hung source, a second repair is refused.
    wait_until("the first repair to start", || {
        target.server.metrics().repairs_running.get() == 1
    })
    .await;
    let mut c = target.client.clone();
    assert_status(
        reconstruct(
            &mut c,
            held.request(ShardId::random(), 1, held.sources(&[0, 2, 3, 4]), None),
        )
        .await,
        Code::ResourceExhausted,
        &["DOGFS_REPAIR_CONCURRENCY"],
    );

    let resp = first.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= TIMEOUT,
        "finished before the timeout: {elapsed:?}"
    );
    // One timeout, then a normal repair; generous for a loaded debug build.
    assert!(
        elapsed < TIMEOUT + Duration::from_secs(10),
        "the hung source cost more than its timeout: {elapsed:?}"
    );
    assert_eq!(resp.bad_sources.len(), 1);
    assert!(
        resp.bad_sources[0].starts_with(&held.ids[1].to_string())
            && resp.bad_sources[0].contains("1500 ms"),
        "{:?}",
        resp.bad_sources
    );
    let mut target = target;
    assert_stored(&mut target, id, &held.seg.shards[0]).await;

    // With the slot free again, the refused repair goes through.
    let id = ShardId::random();
    reconstruct(
        &mut target.client,
        held.request(id, 1, held.sources(&[0, 2, 3, 4]), Some(held.crc(1))),
    )
    .await
    .unwrap();
    assert_stored(&mut target, id, &held.seg.shards[1]).await;

    // Concurrency 0 refuses every repair.
    let mut off = node_with(|c| c.repair_concurrency = 0).await;
    assert_status(
        reconstruct(
            &mut off.client,
            held.request(ShardId::random(), 1, held.sources(&[0, 2, 3, 4]), None),
        )
        .await,
        Code::ResourceExhausted,
        &[],
    );
}

#[tokio::test]
async fn bandwidth_limit_paces_source_reads() {
    let held = hold().await;
    const RATE: u64 = 4_000_000;
    let mut target = node_with(|c| c.repair_bandwidth = ByteSize(RATE)).await;
    let id = ShardId::random();
    let started = Instant::now();
    let resp = reconstruct(
        &mut target.client,
        held.request(id, 2, held.sources(&[0, 1, 3, 4, 5]), Some(held.crc(2))),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    // The bucket starts with one second of tokens; the rest is paid at RATE.
    let floor = Duration::from_secs_f64((resp.bytes_fetched - RATE) as f64 / RATE as f64);
    assert!(
        elapsed >= floor.mul_f64(0.9),
        "{} bytes in {elapsed:?}, the limit allows no faster than {floor:?}",
        resp.bytes_fetched
    );
    assert_stored(&mut target, id, &held.seg.shards[2]).await;
}

#[tokio::test]
async fn a_cancelled_repair_leaves_nothing_and_frees_its_slot() {
    let held = hold().await;
    let mut target = node_with(|c| {
        c.repair_concurrency = 1;
        c.repair_source_timeout_ms = 60_000;
    })
    .await;
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held_open = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held_open.push(s);
        }
    });
    // The repair waits on its hung fourth source; its temp file and space reservation exist
    // from the start, and that is what must go when the caller gives up.
    let mut sources = held.sources(&[1, 2, 3, 4]);
    sources[3].address = hung_addr;
    let id = ShardId::random();
    let req = held.request(id, 0, sources, None);
    let mut c = target.client.clone();
    let call = tokio::spawn(async move { reconstruct(&mut c, req).await });
    let running = |n: i64| {
        let m = std::sync::Arc::clone(target.server.metrics());
        move || m.repairs_running.get() == n
    };
    wait_until("the repair to start", running(1)).await;
    wait_until("the repair's temp file", || {
        tmp_files(target.dir.path()) == 1
    })
    .await;
    // The caller gives up: the call's stream is reset and the server drops the repair.
    call.abort();
    wait_until("the repair to stop", running(0)).await;
    wait_until("its temp file to go", || tmp_files(target.dir.path()) == 0).await;
    assert_nothing_stored(&mut target, id).await;
    // Its slot is free again.
    let id = ShardId::random();
    reconstruct(
        &mut target.client,
        held.request(id, 0, held.sources(&[1, 2, 3, 4]), Some(held.crc(0))),
    )
    .await
    .unwrap();
    assert_stored(&mut target, id, &held.seg.shards[0]).await;
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
