//! TLS and component identities against real processes (issue 15): a cluster whose every
//! connection is TLS with mutual TLS between components serves objects exactly, through a
//! chunk server killed; plain-text clients, clients trusting another CA and components with
//! another CA's certificate are refused; internal methods refuse callers without the right
//! component role and change nothing; a certificate replaced on disk is served to the next
//! connection without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_same, data};
use dogfs_client::{Client, ClientConfig, ClientTlsPaths};
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::chunk::{CopyShardRequest, DeleteShardRequest};
use dogfs_proto::meta::RegisterRequest;
use dogfs_proto::meta::chunk_registry_client::ChunkRegistryClient;
use dogfs_proto::raft::RaftRequest;
use dogfs_proto::raft::raft_service_client::RaftServiceClient;
use dogfs_security::issue::{Authority, CertRequest};
use dogfs_security::{ClientTls, Role};
use dogfs_tests::{Cluster, ClusterOptions, NodeRef};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Code;
use tonic::transport::Channel;

fn tls_options() -> ClusterOptions {
    ClusterOptions {
        tls: true,
        meta_env: vec![("DOGFS_SEGMENT_SIZE".to_owned(), "8MiB".to_owned())],
        ..ClusterOptions::default()
    }
}

async fn tls_client(cluster: &Cluster, ca: &Path, retry: Duration) -> Result<Client, String> {
    let mut cfg = ClientConfig::new(cluster.endpoints());
    cfg.tls = Some(ClientTlsPaths::ca_only(ca));
    // Under `DOGFS_TEST_AUTH=1` the cluster also checks tokens.
    cfg.token = cluster
        .admin_token()
        .map(|t| dogfs_client::Token::new(t, "admin").unwrap());
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.shard_timeout = Duration::from_secs(3);
    cfg.retry_deadline = retry;
    Client::connect(cfg).await.map_err(|e| e.to_string())
}

/// A channel to `addr` over TLS trusting `ca`, presenting `identity` (certificate and key
/// files) when given.
async fn channel(addr: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> Channel {
    let tls = ClientTls::load(ClientTlsPaths {
        ca: ca.to_owned(),
        identity: identity.map(|(c, k)| (c.to_owned(), k.to_owned())),
    })
    .unwrap();
    let uri = format!("https://{addr}");
    let (endpoint, _) = dogfs_security::client::endpoint(&uri, Some(&tls)).unwrap();
    endpoint
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap()
}

/// The certificate the server at `addr` presents to a new connection.
async fn served_certificate(addr: &str, ca_pem: &str) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for c in dogfs_security::pem::certificates_from(Path::new("ca"), ca_pem.as_bytes()).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_cluster_serves_and_refuses_strangers() {
    // Registration (chunk → meta) and Raft (meta ↔ meta) run over mutual TLS: the cluster
    // only becomes ready if both work.
    let mut cluster = Cluster::start(tls_options()).await.unwrap();
    let ca = cluster.tls().unwrap().ca_path();
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let dir = ca.parent().unwrap().to_owned();

    // Objects round-trip exactly: inline, and erasure-coded over two segments.
    let client = tls_client(&cluster, &ca, Duration::from_secs(30))
        .await
        .unwrap();
    client.create_bucket("sec").await.unwrap();
    let small = data(1, 1000);
    let big = data(2, (9 << 20) + 77);
    client
        .put_bytes("sec", "small", small.clone())
        .await
        .unwrap();
    client.put_bytes("sec", "big", big.clone()).await.unwrap();
    assert_same(
        "small",
        &client.get_bytes("sec", "small").await.unwrap(),
        &small,
    );
    assert_same("big", &client.get_bytes("sec", "big").await.unwrap(), &big);

    // A chunk server killed: reads go through the rest, writes still land.
    cluster.kill9(NodeRef::Chunk(0)).unwrap();
    assert_same(
        "degraded",
        &client.get_bytes("sec", "big").await.unwrap(),
        &big,
    );
    let after = data(3, 5 << 20);
    client
        .put_bytes("sec", "after-kill", after.clone())
        .await
        .unwrap();
    cluster.restart(NodeRef::Chunk(0)).await.unwrap();
    assert_same(
        "after",
        &client.get_bytes("sec", "after-kill").await.unwrap(),
        &after,
    );

    // A plain-text client gets no answer from a TLS port.
    let mut plain = ClientConfig::new(
        cluster
            .endpoints()
            .iter()
            .map(|e| format!("http://{e}"))
            .collect::<Vec<_>>(),
    );
    plain.connect_timeout = Duration::from_secs(1);
    plain.retry_deadline = Duration::from_secs(2);
    let plain = Client::connect(plain).await.unwrap();
    assert!(
        plain.get_bytes("sec", "small").await.is_err(),
        "plain text was served"
    );

    // A client trusting another CA refuses the servers.
    let other = Authority::new("another-ca").unwrap();
    let other_ca = dir.join("other-ca.crt");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let wrong = tls_client(&cluster, &other_ca, Duration::from_secs(2))
        .await
        .unwrap();
    let e = wrong.get_bytes("sec", "small").await.unwrap_err();
    assert!(!e.to_string().is_empty());

    // Internal methods: a client without a component certificate is unauthenticated, a
    // component with the wrong role is denied; nothing changes.
    let meta_addr = cluster.endpoints()[0].clone();
    let chunk_addr = cluster.chunk_endpoints()[1].clone();
    let nodes_before = cluster.list_nodes().await.unwrap().len();
    let anon = channel(&meta_addr, &ca, None).await;
    let vote = RaftRequest {
        group_id: 0,
        payload: Vec::new().into(),
    };
    let s = RaftServiceClient::new(anon.clone())
        .vote(vote.clone())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let register = RegisterRequest {
        node_id: "0123456789abcdef0123456789abcdef".to_owned(),
        address: "127.0.0.1:1".to_owned(),
        ..Default::default()
    };
    let s = ChunkRegistryClient::new(anon)
        .register(register.clone())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let (chunk_cert, chunk_key) = (dir.join("chunk.crt"), dir.join("chunk.key"));
    let as_chunk = channel(&meta_addr, &ca, Some((&chunk_cert, &chunk_key))).await;
    let s = RaftServiceClient::new(as_chunk)
        .vote(vote)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("meta"), "{s:?}");
    // A client certificate from the right CA but with no role: denied.
    let (app_cert, app_key) = cluster
        .tls()
        .unwrap()
        .issue("app", CertRequest::new("app"))
        .unwrap();
    let as_app = channel(&meta_addr, &ca, Some((&app_cert, &app_key))).await;
    let s = ChunkRegistryClient::new(as_app)
        .register(register)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(cluster.list_nodes().await.unwrap().len(), nodes_before);
    // Chunk servers: deleting or copying shards is for metadata nodes only.
    let anon_chunk = channel(&chunk_addr, &ca, None).await;
    let s = ChunkServiceClient::new(anon_chunk.clone())
        .delete_shard(DeleteShardRequest {
            shard_id: "00000000-0000-0000-0000-000000000000".to_owned(),
            grant: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let as_chunk = channel(&chunk_addr, &ca, Some((&chunk_cert, &chunk_key))).await;
    let s = ChunkServiceClient::new(as_chunk)
        .copy_shard(CopyShardRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_same(
        "intact",
        &client.get_bytes("sec", "big").await.unwrap(),
        &big,
    );

    // A chunk server whose certificate comes from another CA cannot join: restarted wiped
    // (a new id) with a stranger's certificate, it never registers, and its log says why.
    let stranger = other
        .issue(&CertRequest::new("dogfs-chunk").roles(&[Role::Chunk]))
        .unwrap();
    let (s_cert, s_key) = (dir.join("stranger.crt"), dir.join("stranger.key"));
    std::fs::write(&s_cert, &stranger.cert_pem).unwrap();
    std::fs::write(&s_key, &stranger.key_pem).unwrap();
    let victim = NodeRef::Chunk(5);
    cluster.kill9(victim).unwrap();
    cluster.wipe(victim).unwrap();
    cluster
        .set_env(victim, "DOGFS_TLS_CERT", &s_cert.display().to_string())
        .unwrap();
    cluster
        .set_env(victim, "DOGFS_TLS_KEY", &s_key.display().to_string())
        .unwrap();
    cluster
        .set_env(victim, "DOGFS_TLS_CA", &other_ca.display().to_string())
        .unwrap();
    cluster.start_nowait(victim).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = cluster.node(victim).unwrap().log_tail(200);
        // The registration's failure line, whose cause names the refused certificate.
        if log
            .lines()
            .any(|l| l.contains("metadata call failed") && l.to_lowercase().contains("certificate"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TLS refusal in the stranger's log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cluster.list_nodes().await.unwrap().len(), nodes_before);

    // Renewal: a new metadata certificate on disk is served to the next connection, and the
    // cluster keeps working (peers reconnect with the renewed files).
    let before = served_certificate(&meta_addr, &ca_pem).await;
    cluster
        .tls()
        .unwrap()
        .issue("meta", CertRequest::new("dogfs-meta").roles(&[Role::Meta]))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = served_certificate(&meta_addr, &ca_pem).await;
        if now != before {
            assert_eq!(
                now.as_ref(),
                dogfs_security::pem::certificates(&dir.join("meta.crt")).unwrap()[0].as_ref()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let late = data(4, 3 << 20);
    client
        .put_bytes("sec", "renewed", late.clone())
        .await
        .unwrap();
    assert_same(
        "renewed",
        &client.get_bytes("sec", "renewed").await.unwrap(),
        &late,
    );
}
