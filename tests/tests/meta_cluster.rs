//! A full cluster of processes: 3 metadata nodes and 6 chunk servers on loopback.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use dogfs_proto::meta::NodeState;
use dogfs_tests::{Cluster, ClusterOptions, NodeRef};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn chunk_servers_register_and_the_system_group_survives_its_leader_kill9() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    eprintln!("{:?}: cluster up", t0.elapsed());

    // Every chunk server is in the registry, UP, at its address, with its usage.
    let nodes = cluster.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    for i in 0..6 {
        let id = cluster.chunk_node_id(i).unwrap();
        let addr = cluster.chunk_endpoints()[i].clone();
        let n = nodes
            .iter()
            .find(|n| n.node_id == id)
            .unwrap_or_else(|| panic!("chunk server {i} ({id}) not registered: {nodes:?}"));
        assert_eq!(n.address, addr);
        assert_eq!(n.state, NodeState::Up as i32);
        let usage = n.usage.as_ref().expect("usage reported");
        assert!(usage.capacity_bytes > 0, "{n:?}");
    }

    // kill -9 the system group's leader: the two others elect a new one.
    let (old, term) = cluster.meta_leader(0).await.expect("system group leader");
    cluster.kill9(NodeRef::Meta(old as usize)).unwrap();
    let (new, new_term) = cluster
        .wait_meta_leader(0, Duration::from_secs(60), |l, t| l != old && t > term)
        .await
        .unwrap();
    assert_ne!(new, old);
    assert!(new_term > term);
    eprintln!(
        "{:?}: group 0 leader {old} (term {term}) killed, {new} leads in term {new_term}",
        t0.elapsed()
    );

    // Chunk servers keep heartbeating through the failover: all stay UP (their heartbeats
    // move to a live metadata node), as the new leader sees them.
    cluster
        .wait_chunks_registered(Instant::now() + Duration::from_secs(60))
        .await
        .unwrap();
    let killed_at = unix_now();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = cluster.list_nodes().await.unwrap_or_default();
        let fresh = nodes
            .iter()
            .filter(|n| n.last_heartbeat_unix >= killed_at && n.state == NodeState::Up as i32)
            .count();
        if fresh == 6 {
            break;
        }
        assert!(
            Instant::now() < end,
            "heartbeats did not reach the new leader: {nodes:?}\n{}",
            cluster.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The killed node comes back on its data dir and answers again.
    eprintln!("{:?}: chunk servers UP after failover", t0.elapsed());
    cluster.restart(NodeRef::Meta(old as usize)).await.unwrap();
    let status = cluster.cluster_status().await.unwrap();
    assert_eq!(status.meta_nodes.len(), 3, "{status:?}");
    eprintln!("{:?}: node {old} restarted", t0.elapsed());

    // A chunk server killed and restarted registers again under the same id and address
    // (`restart` waits until every chunk server is listed UP).
    let id = cluster.chunk_node_id(1).unwrap().to_owned();
    cluster.kill9(NodeRef::Chunk(1)).unwrap();
    cluster.restart(NodeRef::Chunk(1)).await.unwrap();
    assert_eq!(cluster.chunk_node_id(1).unwrap(), id);
    let nodes = cluster.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 6, "a restart must not add a node: {nodes:?}");
    eprintln!("{:?}: chunk server 1 restarted and UP", t0.elapsed());
}
