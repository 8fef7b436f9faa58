//! Linearizable reads under leader leases, on a cluster of real `dogfs-meta` processes: a
//! partition leader frozen (SIGSTOP) while it holds a read lease, deposed while frozen, and
//! resumed never answers a read with the value it held before the write its successor
//! acknowledged.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{client, options};
use dogfs_core::names::{BucketName, ObjectKey, partition_of};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_tests::{Cluster, NodeRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

async fn meta(cluster: &Cluster, node: u64) -> MetaServiceClient<Channel> {
    let addr = cluster
        .node(NodeRef::Meta(node as usize))
        .unwrap()
        .grpc_addr();
    MetaServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// A GetObject the node must serve itself (marked forwarded, so it is never passed on).
fn local_get(key: &str) -> Request<pb::GetObjectRequest> {
    let mut r = Request::new(pb::GetObjectRequest {
        bucket: "lease".into(),
        key: key.into(),
        consistency: pb::ReadConsistency::Linearizable as i32,
    });
    r.metadata_mut()
        .insert("x-dogfs-forwarded", MetadataValue::from_static("1"));
    r.set_timeout(Duration::from_secs(5));
    r
}

async fn lease_reads(cluster: &Cluster, node: u64) -> u64 {
    let addr = cluster
        .node(NodeRef::Meta(node as usize))
        .unwrap()
        .http_addr();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: dogfs\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("dogfs_meta_lease_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lease_reads counter in /metrics:\n{body}"))
}

#[tokio::test]
async fn a_deposed_leader_never_serves_a_stale_read() {
    let mut cluster = Cluster::start(options(0)).await.unwrap();
    let c = client(&cluster, Duration::from_secs(2)).await;
    c.create_bucket("lease").await.unwrap();
    c.put_bytes("lease", "k", bytes::Bytes::from_static(b"v1"))
        .await
        .unwrap();

    let group = partition_of(
        &BucketName::parse("lease").unwrap(),
        &ObjectKey::parse("k").unwrap(),
        cluster.options().partitions,
    );
    let (old, term) = cluster.meta_leader(group).await.unwrap();
    let mut old_client = meta(&cluster, old).await;

    // Reads served by the old leader: the first opens its lease, the rest ride on it.
    let before = lease_reads(&cluster, old).await;
    for _ in 0..20 {
        let got = old_client.get_object(local_get("k")).await.unwrap();
        assert_eq!(&got.get_ref().inline_data[..], b"v1");
    }
    assert!(
        lease_reads(&cluster, old).await > before,
        "20 reads in a row at the leader never used its lease"
    );

    // Freeze it while it holds a fresh lease; the others elect a new leader and commit v2.
    old_client.get_object(local_get("k")).await.unwrap();
    cluster.sigstop(NodeRef::Meta(old as usize)).unwrap();
    let (new, _) = cluster
        .wait_meta_leader(group, Duration::from_secs(30), |l, t| l != old && t > term)
        .await
        .unwrap();
    let mut new_client = meta(&cluster, new).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = new_client
            .put_inline_object(pb::PutInlineObjectRequest {
                bucket: "lease".into(),
                key: "k".into(),
                data: bytes::Bytes::from_static(b"v2"),
                etag: "v2".into(),
                ..Default::default()
            })
            .await;
        match put {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("PUT v2 at the new leader {new}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("PUT v2 at the new leader {new}: {e}"),
        }
    }

    // Resumed, the old leader answers reads it must serve itself at once: refused (it is no
    // longer the leader) or v2, never v1.
    cluster.sigcont(NodeRef::Meta(old as usize)).unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    let (mut served, mut refused) = (0, 0);
    while Instant::now() < until {
        match old_client.get_object(local_get("k")).await {
            Ok(r) => {
                assert_eq!(
                    &r.get_ref().inline_data[..],
                    b"v2",
                    "the deposed leader {old} served a stale read"
                );
                served += 1;
            }
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("resumed node {old}: {served} reads served (v2), {refused} refused");
    // Without the forwarded mark it passes the read to the new leader.
    let mut r = Request::new(pb::GetObjectRequest {
        bucket: "lease".into(),
        key: "k".into(),
        consistency: pb::ReadConsistency::Linearizable as i32,
    });
    r.set_timeout(Duration::from_secs(10));
    let got = old_client.get_object(r).await.unwrap();
    assert_eq!(&got.get_ref().inline_data[..], b"v2");
}
