//! A client's deadline against a metadata service that has lost its quorum: with 2 of 3
//! metadata nodes frozen (SIGSTOP: connections accepted, nothing answered), an operation with
//! a 3 s deadline (the CLI's `--timeout 3s`) ends within it with a clear error, instead of
//! spending a whole request timeout per frozen node and per call. Resumed, the cluster works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{data, options};
use dogfs_client::{Client, ClientConfig, ErrorKind};
use dogfs_tests::{Cluster, NodeRef};

/// The SDK configured as `dogfs --timeout T` configures it (cli/src/commands.rs).
fn cli_like(cluster: &Cluster, t: Duration) -> ClientConfig {
    let mut cfg = common::config(cluster);
    cfg.connect_timeout = t;
    cfg.request_timeout = t;
    cfg.shard_timeout = t;
    cfg.retry_deadline = t;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frozen_metadata_nodes_end_a_put_at_its_deadline() {
    let mut cluster = Cluster::start(options(6)).await.unwrap();
    let t = Duration::from_secs(3);
    let setup = Client::connect(common::config(&cluster)).await.unwrap();
    setup.create_bucket("frozen").await.unwrap();
    setup
        .put_bytes("frozen", "before", data(1, 100_000))
        .await
        .unwrap();

    cluster.sigstop(NodeRef::Meta(0)).unwrap();
    cluster.sigstop(NodeRef::Meta(1)).unwrap();
    for (key, len) in [("big", 100_000usize), ("small", 100)] {
        let start = Instant::now();
        let client = Client::connect(cli_like(&cluster, t)).await.unwrap();
        let client = client.with_deadline(Instant::now() + t);
        let err = client
            .put_bytes("frozen", key, data(2, len))
            .await
            .unwrap_err();
        let took = start.elapsed();
        // A BeginPut that got no answer changed nothing that matters (an upload record
        // expires): unavailable. An inline put sent to a node that may have forwarded it
        // to a frozen leader may be applied when that leader resumes: unknown.
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Unavailable | ErrorKind::OutcomeUnknown
            ),
            "{key}: {err}"
        );
        assert!(took < t * 2, "{key}: took {took:?}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("did not answer") || msg.contains("gave up after"),
            "{key}: {msg}"
        );
    }

    cluster.sigcont(NodeRef::Meta(0)).unwrap();
    cluster.sigcont(NodeRef::Meta(1)).unwrap();
    // Resumed: the quorum is back; a fresh client writes and reads (the default deadlines
    // cover a new election).
    let after = Client::connect(common::config(&cluster)).await.unwrap();
    let bytes = data(3, 100_000);
    after
        .put_bytes("frozen", "after", bytes.clone())
        .await
        .unwrap();
    assert!(after.get_bytes("frozen", "after").await.unwrap() == bytes);
    assert_eq!(
        after.get_bytes("frozen", "before").await.unwrap(),
        data(1, 100_000)
    );
}
