//! `Client::put_with_md5_etag`: the stored ETag is hex(MD5) of the bytes, inline or
//! erasure-coded over several segments, and the object reads back whole (six real chunk
//! servers, the in-memory metadata service of tests/fake_meta).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_meta;

use std::time::Duration;

use bytes::Bytes;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_client::{Client, ClientConfig, PutOptions};
use dogfs_proto::meta::ErasureScheme;
use fake_meta::{FakeMeta, INLINE_MAX};
use md5::{Digest, Md5};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_etags_inline_and_erasure_coded() {
    let mut chunks = Vec::new();
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkServer::start(&ChunkConfig::for_tests(dir.path()))
            .await
            .unwrap();
        servers.push((
            format!("{:032x}", s.store().node_id().as_u128()),
            s.grpc_addr().to_string(),
        ));
        chunks.push(s);
        dirs.push(dir);
    }
    let scheme = ErasureScheme {
        codec: "rs".into(),
        k: 4,
        m: 2,
        cell_size: 16 * 1024,
    };
    let meta = FakeMeta::new(servers, scheme, 128 * 1024);
    let addr = meta.clone().serve().await;
    let mut cfg = ClientConfig::new(vec![addr.to_string()]);
    cfg.shard_timeout = Duration::from_secs(2);
    let c = Client::connect(cfg).await.unwrap();
    c.create_bucket("data").await.unwrap();

    // Empty, inline, and three 128 KiB segments plus a bit.
    for size in [0usize, INLINE_MAX as usize, 3 * 128 * 1024 + 5] {
        let data: Bytes = (0..size)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let key = format!("md5/{size}");
        let want = hex(&Md5::digest(&data));
        let info = c
            .put_with_md5_etag("data", &key, &data[..], size as u64, PutOptions::default())
            .await
            .unwrap();
        assert_eq!(info.etag, want, "{key}");
        assert_eq!(c.head("data", &key).await.unwrap().etag, want, "{key}");
        assert_eq!(c.get_bytes("data", &key).await.unwrap(), data, "{key}");
        // The default ETag is unchanged.
        let plain = c.put_bytes("data", &key, data.clone()).await.unwrap();
        let segments = size.div_ceil(128 * 1024);
        let crc = format!("{:08x}", crc32c::crc32c(&data));
        let want_plain = if segments > 1 {
            format!("{crc}-{segments}")
        } else {
            crc
        };
        assert_eq!(plain.etag, want_plain, "{key}");
    }
    drop(chunks);
}
