//! Helpers shared by the object tests (`objects.rs`, `failures.rs`): seeded object bytes, a
//! client for a harness cluster, exact whole and range reads, and the layout metadata records.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_client::{Client, ClientConfig, GetOptions};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_tests::{Cluster, ClusterOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Segment size the object tests run with, so that a ~20 MiB object has 3 segments and the
/// 64 MiB + 3 object 9 (the last one 3 bytes long).
pub const SEGMENT_SIZE: u64 = 8 << 20;
/// Cell size (the metadata service's default), for edge ranges.
pub const CELL_SIZE: u64 = 1 << 20;
/// Objects of at most this many bytes are inline (the metadata service's default).
pub const INLINE_MAX: usize = 4096;

/// A 3 + `chunk_nodes` cluster, RS 4+2, with 8 MiB segments.
pub fn options(chunk_nodes: usize) -> ClusterOptions {
    ClusterOptions {
        chunk_nodes,
        meta_env: vec![("DOGFS_SEGMENT_SIZE".to_owned(), "8MiB".to_owned())],
        ..ClusterOptions::default()
    }
}

/// `len` pseudo-random bytes, the same for the same seed (SplitMix64: `StdRng` is too slow for
/// ~100 MiB in a debug build).
pub fn data(seed: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len.next_multiple_of(8)];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for w in v.chunks_exact_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        w.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// The sizes issue 4 names, with keys that say what they are.
pub fn corpus() -> Vec<(String, Bytes)> {
    [
        ("size/0B", 0usize),
        ("size/1B", 1),
        ("size/4KiB", 4096),
        ("size/4KiB+1", 4097),
        ("size/1MiB-1", (1 << 20) - 1),
        // 3 segments of 8 MiB: 8 + 8 + 4 MiB and change.
        ("size/20MiB+12345", (20 << 20) + 12_345),
        // 8 full segments and one of 3 bytes.
        ("size/64MiB+3", (64 << 20) + 3),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (k, n))| (k.to_owned(), data(1000 + i as u64, n)))
    .collect()
}

/// The SDK's configuration for the cluster's metadata nodes (all of them): its CA under TLS,
/// its admin token under auth, the SDK's defaults otherwise.
pub fn config(cluster: &Cluster) -> ClientConfig {
    let mut cfg = ClientConfig::new(cluster.endpoints());
    cfg.tls = cluster
        .tls()
        .map(|t| dogfs_client::ClientTlsPaths::ca_only(t.ca_path()));
    cfg.token = cluster
        .admin_token()
        .map(|t| dogfs_client::Token::new(t, "the test cluster's admin token").unwrap());
    cfg
}

/// A client of the cluster's metadata nodes (all of them) with a short shard timeout.
pub async fn client(cluster: &Cluster, shard_timeout: Duration) -> Client {
    let mut cfg = config(cluster);
    cfg.shard_timeout = shard_timeout;
    cfg.connect_timeout = Duration::from_secs(2);
    Client::connect(cfg).await.unwrap()
}

/// Panics naming the first differing byte, without printing megabytes.
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}

/// `range` of the object, read with a range GET.
pub async fn get_range(client: &Client, bucket: &str, key: &str, range: Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    client
        .get(
            bucket,
            key,
            &mut out,
            GetOptions {
                range: Some(range.clone()),
                ..GetOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("GET {bucket}/{key} range {range:?}: {e}"));
    out
}

/// Edge ranges (empty, first and last byte, whole, across cell and segment boundaries) and
/// `n` random ones, the same for the same seed.
pub fn ranges(seed: u64, size: u64, n: usize) -> Vec<Range<u64>> {
    let mut out = vec![0..0, size..size, 0..size];
    if size > 0 {
        out.extend([0..1, size - 1..size, size / 2..size]);
    }
    for b in [CELL_SIZE, 4 * CELL_SIZE, SEGMENT_SIZE, 2 * SEGMENT_SIZE] {
        if b + 1 < size {
            out.extend([b - 1..b + 1, b..b + 1, b - 1..b]);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..n {
        if size == 0 {
            break;
        }
        let a = rng.random_range(0..size);
        // Mostly short ranges (they touch one or two cells), some long ones.
        let len = if rng.random_bool(0.7) {
            rng.random_range(1..=(size - a).min(3 * CELL_SIZE))
        } else {
            rng.random_range(1..=size - a)
        };
        out.push(a..a + len);
    }
    out
}

/// The object reads back exactly: whole, and by the edge ranges plus `n_ranges` random ones.
pub async fn check_object(
    client: &Client,
    bucket: &str,
    key: &str,
    want: &[u8],
    n_ranges: usize,
    seed: u64,
) {
    let got = client
        .get_bytes(bucket, key)
        .await
        .unwrap_or_else(|e| panic!("GET {bucket}/{key}: {e}"));
    assert_same(&format!("GET {bucket}/{key}"), &got, want);
    if n_ranges == 0 {
        return;
    }
    for r in ranges(seed, want.len() as u64, n_ranges) {
        let got = get_range(client, bucket, key, r.clone()).await;
        assert_same(
            &format!("GET {bucket}/{key} range {r:?}"),
            &got,
            &want[r.start as usize..r.end as usize],
        );
    }
}

/// The object's segments as metadata records them (`GetObject`, linearizable), asked of each
/// metadata node in turn until one answers (followers forward).
pub async fn layout(cluster: &Cluster, bucket: &str, key: &str) -> Vec<pb::Segment> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let mut last = String::new();
        for ep in cluster.endpoints() {
            let r = async {
                let mut c =
                    MetaServiceClient::new(cluster.channel(&ep).await.map_err(|e| e.to_string())?);
                c.get_object(pb::GetObjectRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    consistency: pb::ReadConsistency::Linearizable as i32,
                })
                .await
                .map_err(|s| s.to_string())
            }
            .await;
            match r {
                Ok(r) => return r.into_inner().segments,
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        assert!(
            Instant::now() < end,
            "GetObject {bucket}/{key} failed everywhere: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every shard id chunk server `i` holds, paged through `ListShards`.
pub async fn inventory(cluster: &Cluster, i: usize) -> std::collections::BTreeSet<String> {
    let mut c = cluster.chunk_client(i).await.unwrap();
    let mut out = std::collections::BTreeSet::new();
    let mut after = String::new();
    loop {
        let page = c
            .list_shards(dogfs_proto::chunk::ListShardsRequest {
                start_after: after.clone(),
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.shards.into_iter().map(|s| s.shard_id));
        if page.next_start_after.is_empty() {
            return out;
        }
        after = page.next_start_after;
    }
}
