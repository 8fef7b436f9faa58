//! End to end: the `Client` against three in-process metadata nodes (`dogfs_meta::MetaServer`)
//! and six chunk servers on 127.0.0.1 (ephemeral ports, temp dirs). The chunk servers are
//! registered through the ChunkRegistry API by the test, so this does not depend on how a
//! chunk server finds the metadata service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_client::{Client, ClientConfig, ErrorKind, GetOptions, ListEntry, ListQuery};
use dogfs_meta::{MetaConfig, MetaServer};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::chunk_registry_client::ChunkRegistryClient;
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(60);

struct Cluster {
    metas: Vec<Option<MetaServer>>,
    chunks: Vec<Option<ChunkServer>>,
    _dirs: Vec<TempDir>,
    endpoints: Vec<String>,
}

impl Cluster {
    async fn start() -> Cluster {
        let mut dirs = Vec::new();
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let peers: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let mut metas = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let dir = TempDir::new().unwrap();
            let mut cfg = MetaConfig::for_tests(i as u64, peers.clone(), dir.path());
            // The test registers the chunk servers once and does not heartbeat them.
            cfg.suspect_after_secs = 3600;
            cfg.down_after_secs = 7200;
            metas.push(Some(MetaServer::start(cfg, l, None).await.unwrap()));
            dirs.push(dir);
        }
        let mut chunks = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..6 {
            let dir = TempDir::new().unwrap();
            let s = ChunkServer::start(&ChunkConfig::for_tests(dir.path()))
                .await
                .unwrap();
            ids.push((
                format!("{:032x}", s.store().node_id().as_u128()),
                s.grpc_addr().to_string(),
            ));
            chunks.push(Some(s));
            dirs.push(dir);
        }
        let c = Cluster {
            metas,
            chunks,
            _dirs: dirs,
            endpoints: peers,
        };
        // Register (retrying while the system group elects its first leader).
        let end = Instant::now() + DEADLINE;
        for (id, addr) in &ids {
            loop {
                let r = async {
                    let mut reg =
                        ChunkRegistryClient::connect(format!("http://{}", c.endpoints[0])).await?;
                    reg.register(pb::RegisterRequest {
                        node_id: id.clone(),
                        address: addr.clone(),
                        zone: String::new(),
                        usage: Some(pb::NodeUsage {
                            capacity_bytes: 100 << 30,
                            available_bytes: 100 << 30,
                            ..Default::default()
                        }),
                    })
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                }
                .await;
                if r.is_ok() {
                    break;
                }
                assert!(Instant::now() < end, "registration failed: {r:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        c
    }

    async fn client(&self) -> Client {
        let mut cfg = ClientConfig::new(self.endpoints.clone());
        cfg.shard_timeout = Duration::from_secs(3);
        cfg.retry_deadline = Duration::from_secs(30);
        cfg.max_retries = 100;
        let client = Client::connect(cfg).await.unwrap();
        // Ready when every chunk server is up in the registry.
        let end = Instant::now() + DEADLINE;
        loop {
            if let Ok(nodes) = client.list_nodes().await
                && nodes.len() == 6
                && nodes.iter().all(|n| n.state == pb::NodeState::Up as i32)
            {
                return client;
            }
            assert!(Instant::now() < end, "chunk servers not up in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_through_the_real_metadata_service() {
    let mut c = Cluster::start().await;
    let client = c.client().await;
    client.create_bucket("e2e").await.unwrap();
    // for_tests: 4+2, 64 KiB cells, 1 MiB segments, 4 KiB inline.
    let sizes = [0usize, 1, 4096, 4097, 300_000, (1 << 20) + 5, 3 << 20];
    let mut objects = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let key = format!("dir/obj-{size}");
        let data = random_bytes(size, i as u64);
        let info = client.put_bytes("e2e", &key, data.clone()).await.unwrap();
        assert_eq!(info.size, size as u64);
        assert_eq!(info.inline, size <= 4096, "size {size}");
        let got = client.get_bytes("e2e", &key).await.unwrap();
        assert!(got == data, "size {size}");
        if size > 100 {
            let r = 17..size as u64 - 50;
            let mut out = Vec::new();
            client
                .get(
                    "e2e",
                    &key,
                    &mut out,
                    GetOptions {
                        range: Some(r.clone()),
                        progress: None,
                    },
                )
                .await
                .unwrap();
            assert!(out[..] == data[r.start as usize..r.end as usize]);
        }
        assert_eq!(client.head("e2e", &key).await.unwrap().etag, info.etag);
        objects.push((key, data));
    }
    // Listing merges the partitions in key order.
    let listed: Vec<String> = client
        .list("e2e", ListQuery::default())
        .map_ok(|e| e.name().to_string())
        .try_collect()
        .await
        .unwrap();
    let mut keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    assert_eq!(listed, keys);
    let grouped: Vec<ListEntry> = client
        .list(
            "e2e",
            ListQuery {
                delimiter: "/".into(),
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(grouped, vec![ListEntry::CommonPrefix("dir/".into())]);

    // Overwrite: the new version replaces the old atomically.
    let v2 = random_bytes(200_000, 99);
    client
        .put_bytes("e2e", "dir/obj-1", v2.clone())
        .await
        .unwrap();
    assert!(client.get_bytes("e2e", "dir/obj-1").await.unwrap() == v2);
    objects[1].1 = v2;

    // Two chunk servers down: every object still reads exactly ...
    for i in [1, 4] {
        c.chunks[i].take().unwrap().shutdown().await.unwrap();
    }
    for (key, data) in &objects {
        let got = client.get_bytes("e2e", key).await.unwrap();
        assert!(got == *data, "{key} with two servers down");
    }
    // ... but a PUT needs k + 1 = 5 servers for a segment: a clear error, nothing committed.
    let err = client
        .put_bytes("e2e", "dir/too-few", random_bytes(100_000, 5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        client.head("e2e", "dir/too-few").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Delete.
    let err = client.delete_bucket("e2e").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Precondition, "{err}");
    for (key, _) in &objects {
        assert!(client.delete("e2e", key).await.unwrap());
    }
    client.delete_bucket("e2e").await.unwrap();
    for m in c.metas.iter_mut() {
        m.take().unwrap().shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_survives_a_dead_chunk_server_and_a_meta_node_loss() {
    let mut c = Cluster::start().await;
    let client = c.client().await;
    client.create_bucket("fail").await.unwrap();
    // A chunk server dies while still registered as up: placements keep choosing it, the
    // client replaces it (or commits the shard missing).
    c.chunks[2].take().unwrap().shutdown().await.unwrap();
    let data = random_bytes(2 << 20, 7);
    client.put_bytes("fail", "big", data.clone()).await.unwrap();
    assert!(client.get_bytes("fail", "big").await.unwrap() == data);
    // The system group's leader stops: the client retries through the others while the
    // remaining two elect a new one.
    let leader = c.metas[0]
        .as_ref()
        .unwrap()
        .node()
        .raft(0)
        .unwrap()
        .metrics()
        .borrow()
        .current_leader
        .unwrap() as usize;
    c.metas[leader].take().unwrap().shutdown().await.unwrap();
    client.create_bucket("after-failover").await.unwrap();
    let t = Instant::now();
    let small = random_bytes(1000, 8);
    client
        .put_bytes("fail", "small", small.clone())
        .await
        .unwrap();
    assert!(client.get_bytes("fail", "small").await.unwrap() == small);
    assert!(client.get_bytes("fail", "big").await.unwrap() == data);
    assert!(t.elapsed() < DEADLINE);
}
