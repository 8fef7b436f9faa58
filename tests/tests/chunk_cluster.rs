//! The harness on chunk-only clusters (no metadata): six real `dogfs-chunk` processes, kill -9,
//! SIGSTOP/SIGCONT, restart and wipe, with every byte read back compared to what was written.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use dogfs_chunk::client::{get_shard, put_shard};
use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::NodeInfoRequest;
use dogfs_tests::{Cluster, ClusterError, ClusterOptions, NodeRef};
use rand::RngCore;

fn chunk_only(n: usize) -> ClusterOptions {
    ClusterOptions {
        meta_nodes: 0,
        chunk_nodes: n,
        ..ClusterOptions::default()
    }
}

fn random_bytes(n: usize) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    Bytes::from(v)
}

#[tokio::test]
async fn six_chunk_servers_survive_kill9_sigstop_restart_and_wipe() {
    let mut cluster = Cluster::start(chunk_only(6)).await.unwrap();
    assert_eq!(cluster.chunk_endpoints().len(), 6);

    // One shard per server, each a different size (one spans several messages and blocks).
    let mut stored = Vec::new();
    for i in 0..6 {
        let mut c = cluster.chunk_client(i).await.unwrap();
        let id = ShardId::random();
        let data = random_bytes(100_000 + i * 700_000);
        put_shard(&mut c, id, &data).await.unwrap();
        stored.push((id, data));
    }

    // kill -9: the server is gone; after a restart on the same port and data dir its shard
    // reads back byte for byte and it takes new ones.
    let before = cluster.chunk_node_id(2).unwrap().to_owned();
    cluster.kill9(NodeRef::Chunk(2)).unwrap();
    assert!(!cluster.node(NodeRef::Chunk(2)).unwrap().is_running());
    assert!(
        cluster.chunk_client(2).await.is_err(),
        "killed server answers"
    );
    cluster.restart(NodeRef::Chunk(2)).await.unwrap();
    assert_eq!(cluster.chunk_node_id(2).unwrap(), before, "identity kept");
    let mut c2 = cluster.chunk_client(2).await.unwrap();
    assert_eq!(
        get_shard(&mut c2, stored[2].0, 0, None).await.unwrap(),
        stored[2].1
    );
    let fresh = (ShardId::random(), random_bytes(2_500_000));
    put_shard(&mut c2, fresh.0, &fresh.1).await.unwrap();
    assert_eq!(get_shard(&mut c2, fresh.0, 0, None).await.unwrap(), fresh.1);

    // SIGSTOP: connections open, nothing answers (a call with a deadline times out); the
    // other servers are unaffected; SIGCONT and it answers again with its data intact.
    let mut c3 = cluster.chunk_client(3).await.unwrap();
    cluster.sigstop(NodeRef::Chunk(3)).unwrap();
    let mut req = tonic::Request::new(NodeInfoRequest {});
    req.set_timeout(Duration::from_millis(500));
    let err = c3.node_info(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    let mut c4 = cluster.chunk_client(4).await.unwrap();
    assert_eq!(
        get_shard(&mut c4, stored[4].0, 0, None).await.unwrap(),
        stored[4].1
    );
    cluster.sigcont(NodeRef::Chunk(3)).unwrap();
    assert_eq!(
        get_shard(&mut c3, stored[3].0, 0, None).await.unwrap(),
        stored[3].1
    );

    // Restarting a stopped server works too (SIGKILL reaches stopped processes).
    cluster.sigstop(NodeRef::Chunk(0)).unwrap();
    cluster.restart(NodeRef::Chunk(0)).await.unwrap();
    let mut c0 = cluster.chunk_client(0).await.unwrap();
    assert_eq!(
        get_shard(&mut c0, stored[0].0, 0, None).await.unwrap(),
        stored[0].1
    );

    // Wipe: a replaced disk. A new identity, nothing stored.
    assert!(matches!(
        cluster.wipe(NodeRef::Chunk(5)),
        Err(ClusterError::WrongState { .. })
    ));
    let old = cluster.chunk_node_id(5).unwrap().to_owned();
    cluster.kill9(NodeRef::Chunk(5)).unwrap();
    cluster.wipe(NodeRef::Chunk(5)).unwrap();
    cluster.restart(NodeRef::Chunk(5)).await.unwrap();
    assert_ne!(cluster.chunk_node_id(5).unwrap(), old);
    let mut c5 = cluster.chunk_client(5).await.unwrap();
    let err = get_shard(&mut c5, stored[5].0, 0, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The untouched server still has its shard.
    let mut c1 = cluster.chunk_client(1).await.unwrap();
    assert_eq!(
        get_shard(&mut c1, stored[1].0, 0, None).await.unwrap(),
        stored[1].1
    );
}

#[tokio::test]
async fn drop_kills_every_process() {
    let mut cluster = Cluster::start(chunk_only(2)).await.unwrap();
    cluster.sigstop(NodeRef::Chunk(1)).unwrap();
    let pids: Vec<u32> = (0..2)
        .map(|i| cluster.node(NodeRef::Chunk(i)).unwrap().pid().unwrap())
        .collect();
    drop(cluster);
    for pid in pids {
        // Reaped children are gone: signal 0 to them fails.
        let p = rustix_pid(pid);
        assert!(p.is_err() || rustix::process::test_kill_process(p.unwrap()).is_err());
    }
}

fn rustix_pid(pid: u32) -> Result<rustix::process::Pid, ()> {
    rustix::process::Pid::from_raw(i32::try_from(pid).map_err(|_| ())?).ok_or(())
}

#[tokio::test]
async fn a_node_that_fails_to_start_is_reported_with_its_log() {
    let opts = ClusterOptions {
        chunk_env: vec![("DOGFS_RESERVE".into(), "12 parsecs".into())],
        ..chunk_only(1)
    };
    let err = Cluster::start(opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ClusterError::Exited { .. }), "{msg}");
    // The node's own complaint is in the error, so a CI log shows why.
    assert!(msg.contains("12 parsecs"), "{msg}");
}
