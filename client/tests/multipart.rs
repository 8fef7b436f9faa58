//! Multipart upload end to end: the `Client` against three in-process metadata nodes and six
//! chunk servers on 127.0.0.1 (as `tests/e2e.rs`), the minimum part size lowered to 100 KiB.
//!
//! Parts with different segment sizes, one re-uploaded, completed into one object read back
//! exactly (whole and ranges across part and segment boundaries); the replaced part's shards,
//! an aborted upload's and finally the object's are deleted from the chunk servers by GC.
//! ListParts, ListMultipartUploads and the S3 errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_client::{
    Client, ClientConfig, CompletedPart, GetOptions, MultipartFailure, PartOptions, PutOptions,
    UploadsQuery,
};
use dogfs_core::size::ByteSize;
use dogfs_meta::{MetaConfig, MetaServer};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::chunk_registry_client::ChunkRegistryClient;
use md5::{Digest, Md5};
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(60);
const MIN_PART: u64 = 100 * 1024;

struct Cluster {
    _metas: Vec<MetaServer>,
    chunks: Vec<ChunkServer>,
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
            cfg.multipart_min_part_size = ByteSize(MIN_PART);
            metas.push(MetaServer::start(cfg, l, None).await.unwrap());
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
            chunks.push(s);
            dirs.push(dir);
        }
        let end = Instant::now() + DEADLINE;
        for (id, addr) in &ids {
            loop {
                let r = async {
                    let mut reg =
                        ChunkRegistryClient::connect(format!("http://{}", peers[0])).await?;
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
        Cluster {
            _metas: metas,
            chunks,
            _dirs: dirs,
            endpoints: peers,
        }
    }

    async fn client(&self) -> Client {
        let mut cfg = ClientConfig::new(self.endpoints.clone());
        cfg.shard_timeout = Duration::from_secs(3);
        cfg.retry_deadline = Duration::from_secs(30);
        cfg.max_retries = 100;
        let client = Client::connect(cfg).await.unwrap();
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

    fn shards(&self) -> u64 {
        self.chunks.iter().map(|c| c.store().shard_count()).sum()
    }

    /// Waits until the chunk servers hold exactly `n` shards (GC has run).
    async fn wait_shards(&self, n: u64) {
        let end = Instant::now() + DEADLINE;
        while self.shards() != n {
            assert!(
                Instant::now() < end,
                "chunk servers hold {} shards, expected {n}",
                self.shards()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn get_range(client: &Client, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    client
        .get(
            "mpu",
            key,
            &mut out,
            GetOptions {
                range: Some(range),
                progress: None,
            },
        )
        .await
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multipart_upload_completes_reads_back_and_collects_garbage() {
    let c = Cluster::start().await;
    let client = c.client().await;
    client.create_bucket("mpu").await.unwrap();
    let opts = PutOptions {
        content_type: Some("application/x-test".into()),
        user_metadata: [("owner".to_string(), "me".to_string())].into(),
        progress: None,
    };
    let up = client.create_multipart("mpu", "big", opts).await.unwrap();

    // for_tests: 4+2, 64 KiB cells, 1 MiB segments. Part 1: 1 segment of the cluster's size;
    // part 2: 256 KiB segments (6 of them); part 3: 1 byte.
    let p1 = random_bytes(300_000, 1);
    let p2_old = random_bytes(200_000, 2);
    let p2 = random_bytes(1_500_000, 3);
    let p3 = random_bytes(1, 4);
    let quarter = PartOptions {
        segment_size: Some(256 * 1024),
        ..Default::default()
    };
    let i2 = client
        .upload_part_with(&up, 2, &p2_old[..], p2_old.len() as u64, quarter.clone())
        .await
        .unwrap();
    assert_eq!(i2.etag, md5_hex(&p2_old));
    let i1 = client
        .upload_part(&up, 1, &p1[..], p1.len() as u64)
        .await
        .unwrap();
    let i3 = client.upload_part(&up, 3, &p3[..], 1).await.unwrap();
    assert_eq!((i3.part_number, i3.size), (3, 1));
    // Re-uploading part 2 replaces it (a given ETag is stored as given).
    let given = PartOptions {
        etag: Some(md5_hex(&p2)),
        ..quarter
    };
    let i2 = client
        .upload_part_with(&up, 2, &p2[..], p2.len() as u64, given)
        .await
        .unwrap();
    assert_eq!((i1.etag.clone(), i2.size), (md5_hex(&p1), 1_500_000));

    let page = client.list_parts(&up, 0, None).await.unwrap();
    assert_eq!(
        page.parts
            .iter()
            .map(|p| (p.part_number, p.size, p.etag.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, 300_000, md5_hex(&p1)),
            (2, 1_500_000, md5_hex(&p2)),
            (3, 1, md5_hex(&p3)),
        ]
    );
    assert_eq!(page.upload.content_type, "application/x-test");
    let page = client.list_parts(&up, 1, Some(1)).await.unwrap();
    assert_eq!((page.parts.len(), page.truncated), (1, true));
    assert_eq!(page.next_part_number_marker, 2);

    // Another upload of another key, to list and to abort.
    let other = client
        .create_multipart("mpu", "dir/other", PutOptions::default())
        .await
        .unwrap();
    client
        .upload_part(&other, 1, &p1[..], p1.len() as u64)
        .await
        .unwrap();
    let listed = client
        .list_multipart_uploads("mpu", &UploadsQuery::default())
        .await
        .unwrap();
    let mut want = vec![
        ("big".to_string(), up.upload_id.clone()),
        ("dir/other".to_string(), other.upload_id.clone()),
    ];
    want.sort();
    assert_eq!(
        listed
            .uploads
            .iter()
            .map(|u| (u.key.clone(), u.upload_id.clone()))
            .collect::<Vec<_>>(),
        want
    );
    let q = UploadsQuery {
        prefix: "dir/".into(),
        ..Default::default()
    };
    let listed = client.list_multipart_uploads("mpu", &q).await.unwrap();
    assert_eq!(listed.uploads.len(), 1);
    let q = UploadsQuery {
        max_uploads: Some(1),
        ..Default::default()
    };
    let first = client.list_multipart_uploads("mpu", &q).await.unwrap();
    assert!(first.truncated);
    let q = UploadsQuery {
        key_marker: first.next_key_marker.clone(),
        upload_id_marker: first.next_upload_id_marker.clone(),
        ..Default::default()
    };
    let rest = client.list_multipart_uploads("mpu", &q).await.unwrap();
    assert_eq!(rest.uploads.len(), 1);
    assert_ne!(rest.uploads[0].key, first.uploads[0].key);

    // S3's errors.
    let part = |n: u32, etag: &str| CompletedPart {
        part_number: n,
        etag: etag.to_string(),
    };
    let (e1, e2, e3) = (md5_hex(&p1), md5_hex(&p2), md5_hex(&p3));
    for (parts, want) in [
        (vec![part(1, &e2)], MultipartFailure::InvalidPart),
        (
            vec![part(1, &e1), part(9, &e1)],
            MultipartFailure::InvalidPart,
        ),
        (
            vec![part(2, &e2), part(1, &e1)],
            MultipartFailure::InvalidPartOrder,
        ),
        (
            vec![part(1, &e1), part(3, &e3), part(2, &e2)],
            MultipartFailure::InvalidPartOrder,
        ),
        (
            vec![part(3, &e3), part(4, &e3)],
            MultipartFailure::InvalidPart,
        ),
        (vec![], MultipartFailure::NoPartsListed),
    ] {
        let e = client.complete_multipart(&up, &parts).await.unwrap_err();
        assert_eq!(MultipartFailure::of(&e), Some(want), "{e}");
    }
    let small = client
        .create_multipart("mpu", "small", PutOptions::default())
        .await
        .unwrap();
    client.upload_part(&small, 1, &p3[..], 1).await.unwrap();
    client.upload_part(&small, 2, &p3[..], 1).await.unwrap();
    let e = client
        .complete_multipart(&small, &[part(1, &e3), part(2, &e3)])
        .await
        .unwrap_err();
    assert_eq!(
        MultipartFailure::of(&e),
        Some(MultipartFailure::EntityTooSmall)
    );
    let e = client.upload_part(&small, 0, &p3[..], 1).await.unwrap_err();
    assert_eq!(
        MultipartFailure::of(&e),
        Some(MultipartFailure::InvalidPartNumber)
    );
    client.abort_multipart(&small).await.unwrap();

    // Complete: one object, S3's ETag, bytes back exactly.
    let info = client
        .complete_multipart(
            &up,
            &[part(1, &e1), part(2, &format!("\"{e2}\"")), part(3, &e3)],
        )
        .await
        .unwrap();
    let mut md5s = Vec::new();
    for d in [&p1, &p2, &p3] {
        md5s.extend_from_slice(&Md5::digest(&d[..]));
    }
    assert_eq!(info.etag, format!("{}-3", md5_hex(&md5s)));
    assert_eq!(info.size, 1_800_001);
    assert_eq!(info.content_type, "application/x-test");
    assert_eq!(
        info.user_metadata.get("owner").map(String::as_str),
        Some("me")
    );
    let head = client.head("mpu", "big").await.unwrap();
    assert_eq!(
        (head.etag.clone(), head.size),
        (info.etag.clone(), info.size)
    );
    // The parts' places (S3's partNumber reads); an object of one PUT has none.
    let layout = client.object_parts("mpu", "big").await.unwrap();
    assert_eq!(layout.info.etag, info.etag);
    assert_eq!(
        layout
            .parts
            .iter()
            .map(|p| (p.part_number, p.offset, p.size))
            .collect::<Vec<_>>(),
        vec![(1, 0, 300_000), (2, 300_000, 1_500_000), (3, 1_800_000, 1)]
    );
    assert_eq!(layout.nth(2).map(|p| p.offset), Some(300_000));
    assert_eq!(layout.nth(4), None);
    assert_eq!(layout.nth(0), None);
    client.put_bytes("mpu", "single", p3.clone()).await.unwrap();
    let single = client.object_parts("mpu", "single").await.unwrap();
    assert!(single.parts.is_empty());
    assert_eq!(single.info.size, 1);
    client.delete("mpu", "single").await.unwrap();
    let whole: Vec<u8> = [&p1[..], &p2[..], &p3[..]].concat();
    let got = client.get_bytes("mpu", "big").await.unwrap();
    assert!(got[..] == whole[..], "whole object differs");
    let (b1, b2) = (300_000u64, 1_800_000u64);
    for range in [
        0..1,
        b1 - 10..b1 + 10,
        b1..b2,
        b1 + 256 * 1024 - 7..b1 + 256 * 1024 + 7,
        b2 - 5..b2 + 1,
        b2..b2 + 1,
        1000..b2 + 1,
        b1 - 1..b1,
        b2 + 1..b2 + 1,
    ] {
        let got = get_range(&client, "big", range.clone()).await;
        assert!(
            got[..] == whole[range.start as usize..range.end as usize],
            "range {range:?} differs"
        );
    }
    let e = client
        .get(
            "mpu",
            "big",
            &mut Vec::new(),
            GetOptions {
                range: Some(0..b2 + 2),
                progress: None,
            },
        )
        .await;
    assert!(e.is_err());
    // The upload is gone: ListParts says NoSuchUpload.
    let e = client.list_parts(&up, 0, None).await.unwrap_err();
    assert_eq!(
        MultipartFailure::of(&e),
        Some(MultipartFailure::NoSuchUpload)
    );

    // Garbage: the first part 2 is collected; the object's 1 + 6 + 1 segments stay, and the
    // other upload's part (1 segment).
    c.wait_shards((1 + 6 + 1) * 6 + 6).await;
    // Abort frees the other upload's part.
    client.abort_multipart(&other).await.unwrap();
    c.wait_shards((1 + 6 + 1) * 6).await;
    let listed = client
        .list_multipart_uploads("mpu", &UploadsQuery::default())
        .await
        .unwrap();
    assert!(listed.uploads.is_empty(), "{listed:?}");
    // Deleting the object frees the rest.
    assert!(client.delete("mpu", "big").await.unwrap());
    c.wait_shards(0).await;
}
