//! Helpers shared by the chunk server's repair and copy tests: real in-process servers in temp
//! dirs, and the assertions both make.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use dogfs_chunk::client::connect;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::StatShardRequest;
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Client = ChunkServiceClient<Channel>;

pub struct Node {
    pub dir: tempfile::TempDir,
    pub server: ChunkServer,
    pub client: Client,
}

pub async fn node_with(f: impl FnOnce(&mut ChunkConfig)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ChunkConfig::for_tests(dir.path());
    f(&mut cfg);
    let server = ChunkServer::start(&cfg).await.unwrap();
    let client = connect(&server.grpc_addr().to_string()).await.unwrap();
    Node {
        dir,
        server,
        client,
    }
}

pub async fn node() -> Node {
    node_with(|_| {}).await
}

/// Nothing under `id` and no temp file left.
pub async fn assert_nothing_stored(n: &mut Node, id: ShardId) {
    let st = n
        .client
        .stat_shard(StatShardRequest {
            grant: Default::default(),
            shard_id: id.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound, "{st:?}");
    assert_eq!(tmp_files(n.dir.path()), 0, "temp files left behind");
}

pub fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).unwrap().count()
}

pub fn assert_status<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needles: &[&str]) {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            for n in needles {
                assert!(s.message().contains(n), "{:?} lacks {n:?}", s.message());
            }
        }
    }
}

/// A loopback address nothing listens on.
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
