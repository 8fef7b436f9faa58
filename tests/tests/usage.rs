//! Chunk-server usage as the registry reports it, end to end (3 `dogfs-meta` + 6 `dogfs-chunk`
//! processes, RS 4+2): after one object is stored, `ListNodes` shows each server's used bytes
//! and shard count within seconds, with a last heartbeat that keeps advancing — the
//! `dogfs cluster nodes` view that used to show 0 B and 0 shards for a minute.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dogfs_client::Client;
use dogfs_proto::meta::ChunkNode;
use dogfs_tests::{Cluster, ClusterOptions};

/// Under the registry's one-minute periodic usage rewrite: only a prompt update passes.
const REPORT_DEADLINE: Duration = Duration::from_secs(20);

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Why `n` does not (yet) show a stored shard and a fresh heartbeat; `None` when it does.
fn not_reported(n: &ChunkNode, min_used: u64) -> Option<String> {
    let u = n.usage.unwrap_or_default();
    let age = now_unix() - n.last_heartbeat_unix;
    (u.used_bytes < min_used || u.shard_count == 0 || !(0..=3).contains(&age)).then(|| {
        format!(
            "{}: used {} B, {} shards, last heartbeat {age} s ago",
            n.node_id, u.used_bytes, u.shard_count
        )
    })
}

#[tokio::test]
async fn list_nodes_reports_usage_and_fresh_heartbeats_after_a_put() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let client = Client::connect(common::config(&cluster)).await.unwrap();
    client.create_bucket("usage").await.unwrap();
    // 24 MiB in one segment: one 6 MiB shard on each of the six servers, i.e. a shard count
    // of 1 and a few MiB on a disk of many GiB — the smallest change there is to report.
    let data = Bytes::from(vec![0x5a; 24 << 20]);
    client.put_bytes("usage", "blob", data).await.unwrap();

    let end = Instant::now() + REPORT_DEADLINE;
    let first = loop {
        let nodes = cluster.list_nodes().await.unwrap();
        assert_eq!(nodes.len(), 6);
        let missing: Vec<String> = nodes
            .iter()
            .filter_map(|n| not_reported(n, 6 << 20))
            .collect();
        if missing.is_empty() {
            break nodes;
        }
        assert!(
            Instant::now() < end,
            "usage not reported within {REPORT_DEADLINE:?}: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let shards: u64 = first
        .iter()
        .map(|n| n.usage.unwrap_or_default().shard_count)
        .sum();
    assert_eq!(shards, 6, "{first:?}");

    // The last heartbeat keeps advancing (the leader's in-memory table, 250 ms heartbeats;
    // whole seconds, so it moves within a few seconds).
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let later = cluster.list_nodes().await.unwrap();
        let stuck: Vec<_> = first
            .iter()
            .filter(|n| {
                later
                    .iter()
                    .find(|m| m.node_id == n.node_id)
                    .is_none_or(|m| m.last_heartbeat_unix <= n.last_heartbeat_unix)
            })
            .map(|n| (n.node_id.clone(), n.last_heartbeat_unix))
            .collect();
        if stuck.is_empty() {
            break;
        }
        assert!(Instant::now() < end, "last heartbeat stuck for {stuck:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
