//! The metadata service's gRPC API on 3 in-process nodes (real servers on 127.0.0.1, temp
//! dirs): every call through the leader and through a follower, precise statuses with the
//! state unchanged, placement, liveness, drain, and garbage collection against a real chunk
//! server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_meta::catalog::partition_of;
use dogfs_meta::{MetaConfig, MetaServer};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_proto::meta::chunk_registry_client::ChunkRegistryClient;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    dirs: Vec<TempDir>,
    servers: Vec<MetaServer>,
}

impl Cluster {
    async fn start(tweak: impl Fn(&mut MetaConfig)) -> Cluster {
        Cluster::start_with(tweak, false).await
    }

    /// `http`: node 0 also serves its HTTP side port.
    async fn start_with(tweak: impl Fn(&mut MetaConfig), http: bool) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let peers: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let mut dirs = Vec::new();
        let mut servers = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let dir = TempDir::new().unwrap();
            let mut cfg = MetaConfig::for_tests(i as u64, peers.clone(), dir.path());
            tweak(&mut cfg);
            let http_listener = if http && i == 0 {
                Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
            } else {
                None
            };
            servers.push(MetaServer::start(cfg, l, http_listener).await.unwrap());
            dirs.push(dir);
        }
        let c = Cluster { dirs, servers };
        c.wait_ready().await;
        c
    }

    async fn wait_ready(&self) {
        let end = Instant::now() + DEADLINE;
        loop {
            let ready = self.servers.iter().all(|s| s.readiness().is_ok());
            let config = self.partitions_recorded().await;
            if ready && config {
                return;
            }
            assert!(Instant::now() < end, "cluster not ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn partitions_recorded(&self) -> bool {
        // The bootstrap records the cluster config once the system group has a leader.
        let mut c = self.admin(0).await;
        c.cluster_status(pb::ClusterStatusRequest {}).await.is_ok()
            && self.servers[0]
                .node()
                .reader(0)
                .unwrap()
                .get(&dogfs_meta::registry::config_key())
                .unwrap()
                .is_some()
    }

    fn addr(&self, i: usize) -> String {
        format!("http://{}", self.servers[i].grpc_addr())
    }

    async fn meta(&self, i: usize) -> MetaServiceClient<Channel> {
        MetaServiceClient::connect(self.addr(i)).await.unwrap()
    }

    async fn admin(&self, i: usize) -> AdminServiceClient<Channel> {
        AdminServiceClient::connect(self.addr(i)).await.unwrap()
    }

    async fn registry(&self, i: usize) -> ChunkRegistryClient<Channel> {
        ChunkRegistryClient::connect(self.addr(i)).await.unwrap()
    }

    /// The index of the node leading `group`, and of one that does not.
    fn leader_and_follower(&self, group: u64) -> (usize, usize) {
        let m = self.servers[0]
            .node()
            .raft(group)
            .unwrap()
            .metrics()
            .borrow()
            .clone();
        let leader = m.current_leader.expect("group has a leader") as usize;
        (leader, (leader + 1) % 3)
    }
}

fn partition(bucket: &str, key: &str) -> u64 {
    partition_of(
        &BucketName::parse(bucket).unwrap(),
        &ObjectKey::parse(key).unwrap(),
        2,
    )
}

fn usage() -> pb::NodeUsage {
    pb::NodeUsage {
        capacity_bytes: 100 << 30,
        used_bytes: 0,
        available_bytes: 100 << 30,
        ..Default::default()
    }
}

fn fake_id(i: u32) -> String {
    format!("{:032x}", 0xabc0_0000_u128 + u128::from(i))
}

async fn register(c: &Cluster, via: usize, id: &str, address: &str) -> pb::RegisterResponse {
    c.registry(via)
        .await
        .register(pb::RegisterRequest {
            node_id: id.into(),
            address: address.into(),
            zone: String::new(),
            usage: Some(usage()),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn put_inline(client: &mut MetaServiceClient<Channel>, bucket: &str, key: &str, data: &[u8]) {
    client
        .put_inline_object(pb::PutInlineObjectRequest {
            bucket: bucket.into(),
            key: key.into(),
            data: Bytes::copy_from_slice(data),
            etag: format!("etag-{}", data.len()),
            content_type: "text/plain".into(),
            user_metadata: [("a".to_string(), "b".to_string())].into(),
        })
        .await
        .unwrap();
}

async fn list_all(client: &mut MetaServiceClient<Channel>, bucket: &str) -> Vec<String> {
    client
        .list_objects(pb::ListObjectsRequest {
            bucket: bucket.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} ({needle}), got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "status {s:?}");
            assert!(
                s.message().contains(needle),
                "message {:?} lacks {needle:?}",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_through_leader_and_follower() {
    let c = Cluster::start(|_| {}).await;
    let (l0, f0) = c.leader_and_follower(0);
    // Buckets live in the system group.
    for (i, via) in [l0, f0].into_iter().enumerate() {
        let b = format!("bucket-{i}");
        let mut m = c.meta(via).await;
        let r = m
            .create_bucket(pb::CreateBucketRequest { bucket: b.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.bucket.unwrap().name, b);
        let h = m
            .head_bucket(pb::HeadBucketRequest {
                bucket: b.clone(),
                consistency: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.bucket.unwrap().name, b);
        assert!(h.incarnation > 0);
    }
    for via in 0..3 {
        let names: Vec<String> = c
            .meta(via)
            .await
            .list_buckets(pb::ListBucketsRequest { consistency: 0 })
            .await
            .unwrap()
            .into_inner()
            .buckets
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, ["bucket-0", "bucket-1"]);
    }
    // Objects: one key per partition, each written through its leader and a follower.
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5"];
    let mut written = Vec::new();
    for key in keys {
        let (lead, follow) = c.leader_and_follower(partition("bucket-0", key));
        for via in [lead, follow] {
            let k = format!("{key}-via-{via}");
            let mut m = c.meta(via).await;
            put_inline(&mut m, "bucket-0", &k, k.as_bytes()).await;
            written.push(k);
        }
    }
    written.sort();
    for via in 0..3 {
        let mut m = c.meta(via).await;
        assert_eq!(list_all(&mut m, "bucket-0").await, written);
        for k in &written {
            let g = m
                .get_object(pb::GetObjectRequest {
                    bucket: "bucket-0".into(),
                    key: k.clone(),
                    consistency: 0,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(g.inline_data.as_ref(), k.as_bytes());
            let info = g.object.unwrap();
            assert!(info.inline);
            assert_eq!(info.user_metadata.get("a").map(String::as_str), Some("b"));
            let h = m
                .head_object(pb::HeadObjectRequest {
                    bucket: "bucket-0".into(),
                    key: k.clone(),
                    consistency: pb::ReadConsistency::Stale as i32,
                })
                .await;
            // A stale read may lag, but never invents data.
            if let Ok(h) = h {
                assert_eq!(h.into_inner().object.unwrap().size, k.len() as u64);
            }
        }
    }
    // BeginPut/Commit of an inline-sized object, through a follower.
    let key = "small";
    let (_, follow) = c.leader_and_follower(partition("bucket-1", key));
    let mut m = c.meta(follow).await;
    let b = m
        .begin_put(pb::BeginPutRequest {
            bucket: "bucket-1".into(),
            key: key.into(),
            size: 5,
            scheme: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(b.segments.is_empty());
    assert_eq!(b.upload_id.len(), 32);
    let committed = m
        .commit_object(pb::CommitObjectRequest {
            bucket: "bucket-1".into(),
            key: key.into(),
            upload_id: b.upload_id.clone(),
            size: 5,
            inline_data: Bytes::from_static(b"hello"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed.object.unwrap().version_id, b.upload_id);
    // Abort through the leader; then the upload is gone.
    let (lead, _) = c.leader_and_follower(partition("bucket-1", "aborted"));
    let mut ml = c.meta(lead).await;
    let b = ml
        .begin_put(pb::BeginPutRequest {
            bucket: "bucket-1".into(),
            key: "aborted".into(),
            size: 1,
            scheme: None,
        })
        .await
        .unwrap()
        .into_inner();
    let abort = pb::AbortUploadRequest {
        bucket: "bucket-1".into(),
        key: "aborted".into(),
        upload_id: b.upload_id.clone(),
    };
    ml.abort_upload(abort.clone()).await.unwrap();
    expect_code(
        m.abort_upload(abort).await,
        Code::NotFound,
        "does not exist",
    );
    // Delete through a follower and the leader; deleting again reports existed = false.
    for k in &written {
        let (lead, follow) = c.leader_and_follower(partition("bucket-0", k));
        let via = if k.len() % 2 == 0 { lead } else { follow };
        let mut m = c.meta(via).await;
        let d = m
            .delete_object(pb::DeleteObjectRequest {
                bucket: "bucket-0".into(),
                key: k.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(d.existed);
        let d = m
            .delete_object(pb::DeleteObjectRequest {
                bucket: "bucket-0".into(),
                key: k.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!d.existed);
    }
    assert!(list_all(&mut c.meta(f0).await, "bucket-0").await.is_empty());
    // Empty now: deleted through a follower (the delete driver runs on the system leader).
    c.meta(f0)
        .await
        .delete_bucket(pb::DeleteBucketRequest {
            bucket: "bucket-0".into(),
        })
        .await
        .unwrap();
    expect_code(
        c.meta(l0)
            .await
            .head_bucket(pb::HeadBucketRequest {
                bucket: "bucket-0".into(),
                consistency: 0,
            })
            .await,
        Code::NotFound,
        "bucket-0",
    );
    // The cluster map names every group's leader.
    let map = c
        .meta(f0)
        .await
        .get_cluster_map(pb::GetClusterMapRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(map.nodes.len(), 3);
    assert_eq!(map.groups.len(), 3);
    assert_eq!(map.partitions, 2);
    assert!(map.groups.iter().all(|g| g.leader_id.is_some()));
    assert_eq!(map.default_scheme.unwrap().k, 4);
    // Status: forwarded calls were counted.
    let status = c
        .admin(f0)
        .await
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.groups.len(), 3);
    assert!(status.meta_nodes.iter().all(|n| n.reachable));
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_precise_status_and_changes_nothing() {
    let c = Cluster::start(|_| {}).await;
    let (_, f0) = c.leader_and_follower(0);
    let mut m = c.meta(f0).await;
    m.create_bucket(pb::CreateBucketRequest {
        bucket: "data".into(),
    })
    .await
    .unwrap();
    put_inline(&mut m, "data", "keep", b"kept").await;
    let before = list_all(&mut m, "data").await;

    expect_code(
        m.create_bucket(pb::CreateBucketRequest {
            bucket: "Bad_Name".into(),
        })
        .await,
        Code::InvalidArgument,
        "Bad_Name",
    );
    expect_code(
        m.create_bucket(pb::CreateBucketRequest {
            bucket: "data".into(),
        })
        .await,
        Code::AlreadyExists,
        "already exists",
    );
    expect_code(
        m.put_inline_object(pb::PutInlineObjectRequest {
            bucket: "data".into(),
            key: String::new(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "",
    );
    expect_code(
        m.put_inline_object(pb::PutInlineObjectRequest {
            bucket: "data".into(),
            key: "big".into(),
            data: Bytes::from(vec![0u8; 4097]),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "at most 4096 bytes",
    );
    expect_code(
        m.put_inline_object(pb::PutInlineObjectRequest {
            bucket: "nobucket".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "\"nobucket\" does not exist",
    );
    expect_code(
        m.get_object(pb::GetObjectRequest {
            bucket: "data".into(),
            key: "missing".into(),
            consistency: 0,
        })
        .await,
        Code::NotFound,
        "\"missing\" does not exist",
    );
    let unknown = format!("{:032x}", 0xdead_u128);
    expect_code(
        m.commit_object(pb::CommitObjectRequest {
            bucket: "data".into(),
            key: "k".into(),
            upload_id: unknown.clone(),
            size: 1,
            inline_data: Bytes::from_static(b"x"),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &unknown,
    );
    expect_code(
        m.commit_object(pb::CommitObjectRequest {
            bucket: "data".into(),
            key: "k".into(),
            upload_id: "not-hex".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "invalid upload id",
    );
    // Fewer registered chunk servers than k+m.
    for i in 0..3 {
        register(&c, f0, &fake_id(i), &format!("10.0.0.{i}:7100")).await;
    }
    expect_code(
        m.begin_put(pb::BeginPutRequest {
            bucket: "data".into(),
            key: "large".into(),
            size: 10 << 20,
            scheme: None,
        })
        .await,
        Code::ResourceExhausted,
        "needs at least 5 of its 6 shards stored on distinct chunk servers, but only 3 can take one (3 known chunk servers: 3 up)",
    );
    // Double commit of an inline upload.
    let b = m
        .begin_put(pb::BeginPutRequest {
            bucket: "data".into(),
            key: "twice".into(),
            size: 2,
            scheme: None,
        })
        .await
        .unwrap()
        .into_inner();
    let commit = pb::CommitObjectRequest {
        bucket: "data".into(),
        key: "twice".into(),
        upload_id: b.upload_id.clone(),
        size: 2,
        inline_data: Bytes::from_static(b"hi"),
        ..Default::default()
    };
    m.commit_object(commit.clone()).await.unwrap();
    expect_code(
        m.commit_object(commit).await,
        Code::AlreadyExists,
        "already committed",
    );
    let after_commit = list_all(&mut m, "data").await;
    assert_eq!(after_commit, ["keep", "twice"]);
    // A non-empty bucket cannot be deleted, and the refusal leaves it usable.
    expect_code(
        m.delete_bucket(pb::DeleteBucketRequest {
            bucket: "data".into(),
        })
        .await,
        Code::FailedPrecondition,
        "is not empty",
    );
    put_inline(&mut m, "data", "after", b"x").await;
    let mut expected = before.clone();
    expected.extend(["after".to_string(), "twice".to_string()]);
    expected.sort();
    assert_eq!(list_all(&mut m, "data").await, expected);
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}

/// Reports for a committed upload: every shard stored with the layout's length.
fn reports(layout: &ObjectLayout, crc: u32) -> Vec<pb::SegmentReport> {
    layout
        .segments()
        .map(|seg| pb::SegmentReport {
            shards: (0..seg.total_shards())
                .map(|_| pb::ShardReport {
                    missing: false,
                    client_crc32c: crc,
                    server_crc32c: crc,
                    size: seg.shard_len(),
                })
                .collect(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_commit_and_read_back_with_six_registered_servers() {
    let c = Cluster::start(|_| {}).await;
    let (_, f0) = c.leader_and_follower(0);
    for i in 0..6 {
        let r = register(&c, i % 3, &fake_id(i as u32), &format!("10.0.0.{i}:7100")).await;
        assert_eq!(r.state, pb::NodeState::Up as i32);
        assert_eq!(r.heartbeat_interval_ms, 200);
    }
    let mut m = c.meta(f0).await;
    m.create_bucket(pb::CreateBucketRequest {
        bucket: "big".into(),
    })
    .await
    .unwrap();
    let size = (2 << 20) + 12345;
    let b = m
        .begin_put(pb::BeginPutRequest {
            bucket: "big".into(),
            key: "obj".into(),
            size,
            scheme: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.segments.len(), 3);
    for seg in &b.segments {
        assert_eq!(seg.shards.len(), 6);
        let nodes: BTreeSet<_> = seg.shards.iter().map(|s| s.node_id.clone()).collect();
        assert_eq!(nodes.len(), 6, "targets on distinct servers");
        for s in &seg.shards {
            assert!(s.address.starts_with("10.0.0."));
        }
    }
    let scheme = ErasureScheme::new(Codec::ReedSolomon, 4, 2, 64 * 1024).unwrap();
    let layout = ObjectLayout::new(size, b.segment_size, scheme).unwrap();
    let mut commit = pb::CommitObjectRequest {
        bucket: "big".into(),
        key: "obj".into(),
        upload_id: b.upload_id.clone(),
        size,
        etag: "e".into(),
        segments: reports(&layout, 7),
        ..Default::default()
    };
    // Wrong checksum, then a missing report: refused, nothing committed.
    let mut wrong = commit.clone();
    wrong.segments[1].shards[2].server_crc32c = 8;
    expect_code(
        m.commit_object(wrong).await,
        Code::InvalidArgument,
        "segment 1 shard 2: checksum 00000007 computed by the client differs from 00000008",
    );
    let mut short = commit.clone();
    short.segments[2].shards.pop();
    expect_code(
        m.commit_object(short).await,
        Code::InvalidArgument,
        "segment 2 shard 5: no checksum reported",
    );
    expect_code(
        m.get_object(pb::GetObjectRequest {
            bucket: "big".into(),
            key: "obj".into(),
            consistency: 0,
        })
        .await,
        Code::NotFound,
        "obj",
    );
    commit.segments[0].shards[5].missing = true;
    m.commit_object(commit).await.unwrap();
    let g = m
        .get_object(pb::GetObjectRequest {
            bucket: "big".into(),
            key: "obj".into(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.segments.len(), 3);
    for (got, placed) in g.segments.iter().zip(&b.segments) {
        for (s, p) in got.shards.iter().zip(&placed.shards) {
            assert_eq!(s.shard_id, p.shard_id);
            assert_eq!(s.node_id, p.node_id);
            assert_eq!(s.address, p.address);
        }
    }
    assert!(g.segments[0].shards[5].missing);
    assert_eq!(g.segments[1].shards[0].crc32c, 7);
    assert_eq!(g.object.unwrap().size, size);
    // ReplaceTarget: a new server, never one of the segment's other targets.
    for i in 6..8 {
        register(&c, 0, &fake_id(i), &format!("10.0.1.{i}:7100")).await;
    }
    let b2 = m
        .begin_put(pb::BeginPutRequest {
            bucket: "big".into(),
            key: "obj2".into(),
            size: 5 << 20,
            scheme: None,
        })
        .await
        .unwrap()
        .into_inner();
    let old = &b2.segments[0].shards[3];
    let t = m
        .replace_target(pb::ReplaceTargetRequest {
            bucket: "big".into(),
            key: "obj2".into(),
            upload_id: b2.upload_id.clone(),
            segment: 0,
            shard_index: 3,
            exclude_node_ids: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .target
        .unwrap();
    assert_ne!(t.node_id, old.node_id);
    assert!(!b2.segments[0].shards.iter().any(|s| s.node_id == t.node_id));
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_objects_pages_with_prefix_and_delimiter() {
    let c = Cluster::start(|_| {}).await;
    let (_, f0) = c.leader_and_follower(0);
    let mut m = c.meta(f0).await;
    m.create_bucket(pb::CreateBucketRequest {
        bucket: "photos".into(),
    })
    .await
    .unwrap();
    let mut keys = Vec::new();
    for d in ["2024", "2025", "misc"] {
        for i in 0..9 {
            keys.push(format!("{d}/img-{i:02}.jpg"));
        }
        keys.push(format!("{d}/sub/deep.jpg"));
    }
    keys.push("top.txt".into());
    for k in &keys {
        put_inline(&mut m, "photos", k, k.as_bytes()).await;
    }
    keys.sort();
    // Model: delimiter "/" with prefix "" → 3 common prefixes and one key.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = m
            .list_objects(pb::ListObjectsRequest {
                bucket: "photos".into(),
                delimiter: "/".into(),
                continuation_token: token.clone(),
                max_keys: Some(2),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.common_prefixes.iter().cloned());
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        if !page.truncated {
            break;
        }
        token = page.next_continuation_token;
    }
    seen.sort();
    assert_eq!(seen, ["2024/", "2025/", "misc/", "top.txt"]);
    // Prefix + delimiter, pages of 4: the 9 images and one common prefix, in order.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .meta(pages % 3)
            .await
            .list_objects(pb::ListObjectsRequest {
                bucket: "photos".into(),
                prefix: "2025/".into(),
                delimiter: "/".into(),
                continuation_token: token.clone(),
                max_keys: Some(4),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.objects.len() + page.common_prefixes.len() <= 4);
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        seen.extend(page.common_prefixes.iter().cloned());
        if !page.truncated {
            break;
        }
        token = page.next_continuation_token;
    }
    let mut expected: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("2025/img"))
        .cloned()
        .collect();
    expected.push("2025/sub/".into());
    seen.sort();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
    // Everything, start-after.
    let all = m
        .list_objects(pb::ListObjectsRequest {
            bucket: "photos".into(),
            start_after: "2025/sub/deep.jpg".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<String> = all.objects.into_iter().map(|o| o.key).collect();
    let want: Vec<String> = keys
        .iter()
        .filter(|k| k.as_str() > "2025/sub/deep.jpg")
        .cloned()
        .collect();
    assert_eq!(got, want);
    expect_code(
        m.list_objects(pb::ListObjectsRequest {
            bucket: "photos".into(),
            continuation_token: "zz".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "continuation token",
    );
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}

async fn node_state(c: &Cluster, id: &str) -> i32 {
    c.admin(1)
        .await
        .node_status(pb::NodeStatusRequest { node_id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap()
        .state
}

async fn wait_state(c: &Cluster, id: &str, want: pb::NodeState) {
    let end = Instant::now() + DEADLINE;
    while node_state(c, id).await != want as i32 {
        assert!(Instant::now() < end, "node {id} never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn liveness_flags_and_drain() {
    let c = Cluster::start(|_| {}).await;
    for i in 0..7 {
        register(&c, 2, &fake_id(i), &format!("10.0.0.{i}:7100")).await;
    }
    // Nodes 0..6 heartbeat; node 6 stays silent.
    let addr = c.addr(1);
    let beats = tokio::spawn(async move {
        let mut r = ChunkRegistryClient::connect(addr).await.unwrap();
        loop {
            for i in 0..6 {
                let _ = r
                    .heartbeat(pb::HeartbeatRequest {
                        node_id: fake_id(i),
                        usage: Some(usage()),
                        ..Default::default()
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let silent = fake_id(6);
    wait_state(&c, &silent, pb::NodeState::Suspect).await;
    wait_state(&c, &silent, pb::NodeState::Down).await;
    for i in 0..6 {
        assert_eq!(node_state(&c, &fake_id(i)).await, pb::NodeState::Up as i32);
    }
    // A heartbeat brings it back.
    let mut r = c.registry(0).await;
    let hb = r
        .heartbeat(pb::HeartbeatRequest {
            node_id: silent.clone(),
            usage: Some(usage()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.state, pb::NodeState::Up as i32);
    expect_code(
        r.heartbeat(pb::HeartbeatRequest {
            node_id: fake_id(99),
            usage: None,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "not registered",
    );
    // Draining node 6 (after it is up again) and node 0 excludes them from placement; with 5
    // eligible servers a 4+2 placement fails, undraining one makes it work again.
    let mut admin = c.admin(2).await;
    let d = admin
        .drain_node(pb::DrainNodeRequest {
            node_id: fake_id(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.node.unwrap().state, pb::NodeState::Draining as i32);
    let mut m = c.meta(0).await;
    m.create_bucket(pb::CreateBucketRequest {
        bucket: "bkt".into(),
    })
    .await
    .unwrap();
    for round in 0..5 {
        r.heartbeat(pb::HeartbeatRequest {
            node_id: silent.clone(),
            usage: Some(usage()),
            ..Default::default()
        })
        .await
        .unwrap();
        let put = m
            .begin_put(pb::BeginPutRequest {
                bucket: "bkt".into(),
                key: format!("k{round}"),
                size: 3 << 20,
                scheme: None,
            })
            .await
            .unwrap()
            .into_inner();
        for seg in put.segments {
            assert!(seg.shards.iter().all(|s| s.node_id != fake_id(0)));
        }
    }
    // Heartbeats do not undo a drain.
    assert_eq!(
        node_state(&c, &fake_id(0)).await,
        pb::NodeState::Draining as i32
    );
    let nodes = admin
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 7);
    admin
        .undrain_node(pb::UndrainNodeRequest {
            node_id: fake_id(0),
        })
        .await
        .unwrap();
    assert_eq!(node_state(&c, &fake_id(0)).await, pb::NodeState::Up as i32);
    beats.abort();
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}

/// RemoveNode, register refusal and the rebalance record through the admin API (no data: the
/// mover's moves are covered by the process tests in `tests/tests/elasticity.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_refuse_and_rebalance_state() {
    let c = Cluster::start(|cfg| cfg.rebalance_on_join = false).await;
    for i in 0..7 {
        register(&c, i as usize % 3, &fake_id(i), &format!("10.0.1.{i}:7100")).await;
    }
    let mut admin = c.admin(1).await;
    // Bad input and an active server are refused, nothing changes.
    expect_code(
        admin
            .remove_node(pb::RemoveNodeRequest {
                node_id: "zz".into(),
            })
            .await,
        Code::InvalidArgument,
        "invalid chunk server id",
    );
    expect_code(
        admin
            .remove_node(pb::RemoveNodeRequest {
                node_id: fake_id(99),
            })
            .await,
        Code::NotFound,
        "not registered",
    );
    expect_code(
        admin
            .remove_node(pb::RemoveNodeRequest {
                node_id: fake_id(0),
            })
            .await,
        Code::FailedPrecondition,
        "drain it first",
    );
    assert_eq!(node_state(&c, &fake_id(0)).await, pb::NodeState::Up as i32);

    // A drained (empty) server: progress says empty once surveyed, then removal works, twice.
    admin
        .drain_node(pb::DrainNodeRequest {
            node_id: fake_id(0),
        })
        .await
        .unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let n = admin
            .node_status(pb::NodeStatusRequest {
                node_id: fake_id(0),
            })
            .await
            .unwrap()
            .into_inner()
            .node
            .unwrap();
        if let Some(d) = n.drain
            && d.surveyed_unix > 0
        {
            assert_eq!((d.shards_left, d.bytes_left), (0, 0), "{d:?}");
            break;
        }
        assert!(Instant::now() < end, "drain never surveyed: {n:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..2 {
        let n = admin
            .remove_node(pb::RemoveNodeRequest {
                node_id: fake_id(0),
            })
            .await
            .unwrap()
            .into_inner()
            .node
            .unwrap();
        assert_eq!(n.state, pb::NodeState::Removed as i32);
    }
    // Its id is not reused: registration and a new drain are refused.
    expect_code(
        c.registry(2)
            .await
            .register(pb::RegisterRequest {
                node_id: fake_id(0),
                address: "10.0.1.0:7100".into(),
                zone: String::new(),
                usage: Some(usage()),
            })
            .await,
        Code::FailedPrecondition,
        "was removed",
    );
    expect_code(
        admin
            .drain_node(pb::DrainNodeRequest {
                node_id: fake_id(0),
            })
            .await,
        Code::FailedPrecondition,
        "was removed",
    );

    // The rebalance: idle, bad spreads refused, started (no data: done at once), stopped.
    let status = |s: Option<pb::RebalanceStatus>| s.expect("a rebalance status");
    let idle = status(
        admin
            .rebalance_status(pb::RebalanceStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .status,
    );
    assert_eq!(idle.state, pb::RebalanceState::Idle as i32);
    for bad in [-1.0, 100.0, f64::NAN] {
        expect_code(
            admin
                .rebalance(pb::RebalanceRequest {
                    action: pb::RebalanceAction::Start as i32,
                    spread_percent: bad,
                })
                .await,
            Code::InvalidArgument,
            "invalid rebalance spread",
        );
    }
    expect_code(
        admin
            .rebalance(pb::RebalanceRequest {
                action: pb::RebalanceAction::Unspecified as i32,
                spread_percent: 0.0,
            })
            .await,
        Code::InvalidArgument,
        "action is unspecified",
    );
    let started = status(
        c.admin(2)
            .await
            .rebalance(pb::RebalanceRequest {
                action: pb::RebalanceAction::Start as i32,
                spread_percent: 5.0,
            })
            .await
            .unwrap()
            .into_inner()
            .status,
    );
    assert_eq!(started.reason, "admin");
    assert!((started.spread_percent - 5.0).abs() < 1e-9, "{started:?}");
    let end = Instant::now() + DEADLINE;
    loop {
        let s = status(
            c.admin(0)
                .await
                .rebalance_status(pb::RebalanceStatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .status,
        );
        if s.state == pb::RebalanceState::Done as i32 {
            assert_eq!(s.shards_moved, 0);
            assert!(
                s.finished_unix >= s.started_unix && s.started_unix > 0,
                "{s:?}"
            );
            break;
        }
        assert!(Instant::now() < end, "rebalance never done: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ClusterStatus carries it too.
    let cs = admin
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cs.rebalance.unwrap().state, pb::RebalanceState::Done as i32);
    // Stopping a finished run changes nothing.
    let stopped = status(
        admin
            .rebalance(pb::RebalanceRequest {
                action: pb::RebalanceAction::Stop as i32,
                spread_percent: 0.0,
            })
            .await
            .unwrap()
            .into_inner()
            .status,
    );
    assert_eq!(stopped.state, pb::RebalanceState::Done as i32);
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_deletes_replaced_shards_on_a_real_chunk_server() {
    let chunk_dirs = [TempDir::new().unwrap(), TempDir::new().unwrap()];
    let mut chunks = Vec::new();
    for d in &chunk_dirs {
        let cfg = dogfs_chunk::ChunkConfig::for_tests(d.path());
        chunks.push(dogfs_chunk::ChunkServer::start(&cfg).await.unwrap());
    }
    let c = Cluster::start(|_| {}).await;
    for ch in &chunks {
        register(
            &c,
            0,
            &ch.store().node_id().to_string(),
            &ch.grpc_addr().to_string(),
        )
        .await;
    }
    let mut m = c.meta(1).await;
    m.create_bucket(pb::CreateBucketRequest {
        bucket: "gcb".into(),
    })
    .await
    .unwrap();
    let scheme = pb::ErasureScheme {
        codec: "rs".into(),
        k: 1,
        m: 1,
        cell_size: 64 * 1024,
    };
    let size = 100_000u64;
    let b = m
        .begin_put(pb::BeginPutRequest {
            bucket: "gcb".into(),
            key: "obj".into(),
            size,
            scheme: Some(scheme),
        })
        .await
        .unwrap()
        .into_inner();
    let layout = ObjectLayout::new(
        size,
        b.segment_size,
        ErasureScheme::new(Codec::ReedSolomon, 1, 1, 64 * 1024).unwrap(),
    )
    .unwrap();
    let shard_len = layout.segment(0).unwrap().shard_len();
    let mut shard_reports = Vec::new();
    let mut stored = Vec::new();
    for s in &b.segments[0].shards {
        let data = Bytes::from(vec![s.index as u8 + 1; shard_len as usize]);
        let id: ShardId = s.shard_id.parse().unwrap();
        let mut client = dogfs_chunk::client::connect(&s.address).await.unwrap();
        let info = dogfs_chunk::client::put_shard(&mut client, id, &data)
            .await
            .unwrap();
        shard_reports.push(pb::ShardReport {
            missing: false,
            client_crc32c: crc32c::crc32c(&data),
            server_crc32c: info.crc32c,
            size: shard_len,
        });
        stored.push((s.address.clone(), id));
    }
    m.commit_object(pb::CommitObjectRequest {
        bucket: "gcb".into(),
        key: "obj".into(),
        upload_id: b.upload_id,
        size,
        segments: vec![pb::SegmentReport {
            shards: shard_reports,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    for (addr, id) in &stored {
        let mut client = dogfs_chunk::client::connect(addr).await.unwrap();
        assert!(
            dogfs_chunk::client::get_shard(&mut client, *id, 0, None)
                .await
                .is_ok()
        );
    }
    // Overwrite with a small object: the old shards are queued and collected.
    put_inline(&mut m, "gcb", "obj", b"small now").await;
    let end = Instant::now() + DEADLINE;
    for (addr, id) in &stored {
        let mut client = dogfs_chunk::client::connect(addr).await.unwrap();
        loop {
            match dogfs_chunk::client::get_shard(&mut client, *id, 0, None).await {
                Err(s) if s.code() == Code::NotFound => break,
                _ => {
                    assert!(Instant::now() < end, "shard {id} on {addr} never collected");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
    for ch in chunks {
        ch.shutdown().await.unwrap();
    }
}

/// The chunk server as ListNodes (and a follower's ClusterStatus) report it.
fn reported(nodes: &[pb::ChunkNode], id: &str) -> Option<pb::ChunkNode> {
    nodes.iter().find(|n| n.node_id == id).cloned()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A real chunk server registering and heartbeating on its own: after it stores a shard, the
/// registry reports its used bytes and shard count within seconds (not only at the periodic
/// rewrite a minute later: the first MiB on a big disk used to be "not meaningful"), and the
/// last heartbeat keeps advancing, through the leader and in a follower's ClusterStatus.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_report_usage_of_a_real_chunk_server() {
    let c = Cluster::start(|_| {}).await;
    let dir = TempDir::new().unwrap();
    let mut cfg = dogfs_chunk::ChunkConfig::for_tests(dir.path());
    cfg.meta_endpoints = c
        .servers
        .iter()
        .map(|s| s.grpc_addr().to_string())
        .collect();
    let chunk = dogfs_chunk::ChunkServer::start(&cfg).await.unwrap();
    let id = chunk.store().node_id().simple().to_string();

    let (leader, follower) = c.leader_and_follower(0);
    let end = Instant::now() + DEADLINE;
    let first = loop {
        let nodes = c
            .admin(follower)
            .await
            .list_nodes(pb::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        if let Some(n) = reported(&nodes, &id) {
            break n;
        }
        assert!(Instant::now() < end, "chunk server never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.address, chunk.grpc_addr().to_string());

    let data = Bytes::from(vec![7u8; 1 << 20]);
    let mut client = dogfs_chunk::client::connect(&chunk.grpc_addr().to_string())
        .await
        .unwrap();
    dogfs_chunk::client::put_shard(&mut client, ShardId::random(), &data)
        .await
        .unwrap();

    // Well under the one-minute periodic rewrite, so only a prompt update passes.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = c
            .admin(leader)
            .await
            .list_nodes(pb::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        let n = reported(&nodes, &id).unwrap();
        let u = n.usage.unwrap();
        let fresh = (now_unix() - n.last_heartbeat_unix).abs() <= 3;
        if u.used_bytes >= 1 << 20 && u.shard_count == 1 && fresh {
            break;
        }
        assert!(
            Instant::now() < end,
            "usage never reported: used {} B, {} shards, last heartbeat {} (now {})",
            u.used_bytes,
            u.shard_count,
            n.last_heartbeat_unix,
            now_unix()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A follower answers ClusterStatus itself, but with the leader's view of the chunk
    // servers: its own liveness table never hears heartbeats.
    let end = Instant::now() + DEADLINE;
    loop {
        let s = c
            .admin(follower)
            .await
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.node_id, follower as u64);
        let n = reported(&s.chunk_nodes, &id).unwrap();
        let u = n.usage.unwrap();
        if (now_unix() - n.last_heartbeat_unix).abs() <= 3 && u.shard_count == 1 {
            assert!(s.used_bytes >= 1 << 20);
            break;
        }
        assert!(
            Instant::now() < end,
            "follower reports last heartbeat {} (now {}), {} shards",
            n.last_heartbeat_unix,
            now_unix(),
            u.shard_count
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    chunk.shutdown().await.unwrap();
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}

/// Whether every group's leader is its preferred node (`group mod 3`), as each of `live` sees
/// it; answers the groups that are not yet.
fn misplaced_leaders(servers: &[Option<MetaServer>], live: &[usize]) -> Vec<u64> {
    let groups = servers[live[0]].as_ref().unwrap().node().group_ids();
    groups
        .into_iter()
        .filter(|g| {
            live.iter().any(|i| {
                let m = servers[*i]
                    .as_ref()
                    .unwrap()
                    .node()
                    .raft(*g)
                    .unwrap()
                    .metrics()
                    .borrow()
                    .clone();
                m.current_leader != Some(g % 3)
            })
        })
        .collect()
}

fn leader_seen_by(servers: &[Option<MetaServer>], observer: usize, group: u64) -> Option<u64> {
    servers[observer]
        .as_ref()
        .unwrap()
        .node()
        .raft(group)
        .unwrap()
        .metrics()
        .borrow()
        .current_leader
}

/// A key of `bucket` in `partition` (group), found by trying names.
fn key_in(bucket: &str, partition: u64, n: usize) -> String {
    (0..)
        .map(|i| format!("k{n}-{i}"))
        .find(|k| self::partition(bucket, k) == partition)
        .unwrap()
}

/// DESIGN §5, leaders spread over the meta nodes: group g settles on node g mod 3; when
/// node 1 dies its groups fail over and keep taking writes; when it is back they return to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_spread_fail_over_and_come_back() {
    const SPREAD_DEADLINE: Duration = Duration::from_secs(60);
    let c = Cluster::start(|_| {}).await;
    let peers: Vec<String> = c
        .servers
        .iter()
        .map(|s| s.grpc_addr().to_string())
        .collect();
    let Cluster { dirs, servers } = c;
    let mut servers: Vec<Option<MetaServer>> = servers.into_iter().map(Some).collect();
    let meta = |i: usize| MetaServiceClient::connect(format!("http://{}", peers[i]));

    let start = Instant::now();
    let end = start + SPREAD_DEADLINE;
    loop {
        let off = misplaced_leaders(&servers, &[0, 1, 2]);
        if off.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "groups {off:?} not led by their preferred node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("leaders spread after {:?}", start.elapsed());

    let mut m0 = meta(0).await.unwrap();
    m0.create_bucket(pb::CreateBucketRequest {
        bucket: "spread".into(),
    })
    .await
    .unwrap();
    let mut written = Vec::new();
    for p in 1..=2 {
        let k = key_in("spread", p, 0);
        put_inline(&mut m0, "spread", &k, b"before").await;
        written.push(k);
    }

    // Node 1 dies: group 1 fails over to node 0 or 2, and takes writes again.
    servers[1].take().unwrap().shutdown().await.unwrap();
    let start = Instant::now();
    let end = start + DEADLINE;
    loop {
        let l0 = leader_seen_by(&servers, 0, 1);
        let l2 = leader_seen_by(&servers, 2, 1);
        if l0.is_some() && l0 == l2 && l0 != Some(1) {
            break;
        }
        assert!(
            Instant::now() < end,
            "group 1 never failed over: {l0:?} / {l2:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("group 1 failed over after {:?}", start.elapsed());
    for n in 1..4 {
        let k = key_in("spread", 1, n);
        put_inline(&mut m0, "spread", &k, b"during").await;
        written.push(k);
    }
    // Nobody pulls group 1 towards the dead node, and the others stay where they belong.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(leader_seen_by(&servers, 0, 1), Some(1));
    assert_eq!(leader_seen_by(&servers, 0, 0), Some(0));
    assert_eq!(leader_seen_by(&servers, 2, 2), Some(2));

    // Node 1 is back, on the same address and data: group 1 returns to it.
    let listener = tokio::net::TcpListener::bind(&peers[1]).await.unwrap();
    let cfg = MetaConfig::for_tests(1, peers.clone(), dirs[1].path());
    servers[1] = Some(MetaServer::start(cfg, listener, None).await.unwrap());
    let start = Instant::now();
    let end = start + SPREAD_DEADLINE;
    loop {
        let off = misplaced_leaders(&servers, &[0, 1, 2]);
        if off.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "groups {off:?} not back with their preferred node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("group 1 back on node 1 after {:?}", start.elapsed());
    let mut m1 = meta(1).await.unwrap();
    let k = key_in("spread", 1, 9);
    put_inline(&mut m1, "spread", &k, b"after").await;
    written.push(k);
    let mut listed = list_all(&mut m1, "spread").await;
    listed.sort();
    written.sort();
    assert_eq!(listed, written);

    for s in servers.into_iter().flatten() {
        s.shutdown().await.unwrap();
    }
}

/// A plain HTTP/1.0 GET: (status line, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.lines().next().unwrap_or_default().to_string();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_side_port_serves_metrics_health_and_readiness() {
    let c = Cluster::start_with(|_| {}, true).await;
    let addr = c.servers[0].http_addr().unwrap();
    let mut m = c.meta(1).await;
    m.create_bucket(pb::CreateBucketRequest {
        bucket: "metrics".into(),
    })
    .await
    .unwrap();
    let (status, body) = http_get(addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, body) = http_get(addr, "/readyz").await;
    assert!(status.contains("200"), "{status}: {body}");
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for needle in [
        "dogfs_meta_group_leader_id{group=\"0\"}",
        "dogfs_meta_group_applied_index{group=\"2\"}",
        "dogfs_meta_group_apply_lag",
        "dogfs_meta_group_term",
        "dogfs_meta_wal_sync_seconds_bucket",
        "dogfs_meta_rpc_requests_total",
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle}:\n{body}");
    }
    // Admin calls on an unknown or malformed node id.
    expect_code(
        c.admin(0)
            .await
            .drain_node(pb::DrainNodeRequest {
                node_id: fake_id(1),
            })
            .await,
        Code::NotFound,
        "not registered",
    );
    expect_code(
        c.admin(0)
            .await
            .drain_node(pb::DrainNodeRequest {
                node_id: "nope".into(),
            })
            .await,
        Code::InvalidArgument,
        "invalid chunk server id",
    );
    for s in c.servers {
        s.shutdown().await.unwrap();
    }
}
