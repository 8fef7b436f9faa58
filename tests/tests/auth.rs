//! Tokens, scopes, limits and shard grants against real processes (issue 15): a cluster that
//! checks bearer tokens and shard grants serves objects exactly to the right tokens; missing,
//! malformed, unknown, expired, revoked, wrong-scope and wrong-bucket tokens are refused with
//! UNAUTHENTICATED or PERMISSION_DENIED and change nothing; chunk servers refuse shard calls
//! without a valid grant, with a grant for another shard or operation, or an expired one; a
//! rotated bootstrap token takes over without a restart; `dogfs admin token` end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{assert_same, data};
use dogfs_client::{Client, ClientConfig, ClientTlsPaths, ErrorKind, ListQuery, Token};
use dogfs_client::{TokenRequest, TokenScope};
use dogfs_proto::chunk::chunk_service_client::ChunkServiceClient;
use dogfs_proto::chunk::put_shard_request::Msg;
use dogfs_proto::chunk::{GetShardRequest, PutShardHeader, PutShardRequest, StatShardRequest};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_security::GrantOp;
use dogfs_tests::bins::{self, Binary};
use dogfs_tests::{Bearer, Cluster, ClusterOptions};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

fn auth_options() -> ClusterOptions {
    ClusterOptions {
        auth: true,
        tls: true,
        meta_env: vec![("DOGFS_SEGMENT_SIZE".to_owned(), "8MiB".to_owned())],
        ..ClusterOptions::default()
    }
}

async fn client_with(cluster: &Cluster, token: Option<&str>) -> Client {
    let mut cfg = ClientConfig::new(cluster.endpoints());
    cfg.tls = cluster.tls().map(|t| ClientTlsPaths::ca_only(t.ca_path()));
    cfg.token = token.map(|t| Token::new(t, "test").unwrap());
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.shard_timeout = Duration::from_secs(3);
    cfg.retry_deadline = Duration::from_secs(10);
    Client::connect(cfg).await.unwrap()
}

/// A TLS channel trusting the cluster's CA, without a client certificate: what an
/// application holds.
async fn app_channel(cluster: &Cluster, addr: &str) -> Channel {
    let tls = cluster.tls().unwrap().client();
    let uri = format!("https://{addr}");
    let (endpoint, _) = dogfs_security::client::endpoint(&uri, Some(tls)).unwrap();
    endpoint.connect().await.unwrap()
}

async fn meta_as(
    cluster: &Cluster,
    addr: &str,
    token: Option<&str>,
) -> MetaServiceClient<InterceptedService<Channel, Bearer>> {
    MetaServiceClient::new(InterceptedService::new(
        app_channel(cluster, addr).await,
        Bearer::new(token),
    ))
}

fn get_req(bucket: &str, key: &str) -> pb::GetObjectRequest {
    pb::GetObjectRequest {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        consistency: 0,
    }
}

/// Asserts the SDK call failed with PermissionDenied (UNAUTHENTICATED or PERMISSION_DENIED
/// on the wire) and its message contains `needle`.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, dogfs_client::Error>, needle: &str) {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), should be refused"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{what}: {e}");
            assert!(e.to_string().contains(needle), "{what}: {e}");
        }
    }
}

async fn token(
    admin: &Client,
    name: &str,
    scope: TokenScope,
    buckets: &[&str],
    prefix: &str,
) -> String {
    admin
        .create_token(&TokenRequest {
            name: name.to_owned(),
            scope,
            buckets: buckets.iter().map(|b| (*b).to_owned()).collect(),
            prefix: prefix.to_owned(),
            ttl_secs: 0,
        })
        .await
        .unwrap()
        .token
}

async fn get_shard(
    c: &mut ChunkServiceClient<Channel>,
    shard_id: &str,
    grant: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut s = c
        .get_shard(GetShardRequest {
            shard_id: shard_id.to_owned(),
            offset: 0,
            length: None,
            grant: grant.into(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend_from_slice(&m.data);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_scopes_limits_grants_and_rotation() {
    let mut cluster = Cluster::start(auth_options()).await.unwrap();
    let bootstrap = cluster.admin_token().unwrap().to_owned();
    let admin = client_with(&cluster, Some(&bootstrap)).await;
    let (doc, one, secret) = (data(1, 3 << 20), data(2, 1024), data(3, 100 << 10));
    for b in ["alpha", "beta"] {
        admin.create_bucket(b).await.unwrap();
    }
    admin.put_bytes("alpha", "doc", doc.clone()).await.unwrap();
    admin
        .put_bytes("alpha", "app/one", one.clone())
        .await
        .unwrap();
    admin
        .put_bytes("beta", "secret", secret.clone())
        .await
        .unwrap();
    // The admin's reads go through grants: the chunk servers check them.
    assert_same(
        "alpha/doc",
        &admin.get_bytes("alpha", "doc").await.unwrap(),
        &doc,
    );

    // No token, a malformed one, an unknown one, a known id with a wrong secret: refused on
    // every metadata node.
    let known = token(&admin, "known", TokenScope::Read, &[], "").await;
    let wrong_secret = format!("{}{}", &known[..known.len() - 4], "0000");
    for addr in cluster.endpoints() {
        for (t, needle) in [
            (None, "requires a bearer token"),
            (
                Some("not-a-token"),
                "neither this cluster's bootstrap token",
            ),
            (
                Some(
                    "dogfs_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
                ),
                "not known",
            ),
            (Some(wrong_secret.as_str()), "not known"),
        ] {
            let s = meta_as(&cluster, &addr, t)
                .await
                .get_object(get_req("alpha", "doc"))
                .await
                .unwrap_err();
            assert_eq!(s.code(), Code::Unauthenticated, "{addr} {t:?}: {s:?}");
            assert!(s.message().contains(needle), "{addr} {t:?}: {s:?}");
        }
    }
    let anonymous = client_with(&cluster, None).await;
    refused(
        "GET without a token",
        anonymous.get_bytes("alpha", "doc").await,
        "requires a bearer token",
    );

    // A read token for alpha: reads alpha, nothing else.
    let read = client_with(
        &cluster,
        Some(&token(&admin, "reader", TokenScope::Read, &["alpha"], "").await),
    )
    .await;
    assert_same(
        "read alpha/doc",
        &read.get_bytes("alpha", "doc").await.unwrap(),
        &doc,
    );
    refused(
        "PUT with a read token",
        read.put_bytes("alpha", "new", data(9, 10)).await,
        "needs write",
    );
    refused(
        "DELETE with a read token",
        read.delete("alpha", "doc").await,
        "needs write",
    );
    refused(
        "GET of another bucket",
        read.get_bytes("beta", "secret").await,
        "limited to buckets",
    );
    refused(
        "mb with a read token",
        read.create_bucket("gamma").await,
        "needs write",
    );
    refused(
        "admin API with a read token",
        read.list_nodes().await,
        "needs admin",
    );
    let visible: Vec<String> = read
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(visible, vec!["alpha".to_owned()]);

    // Read-write on alpha, keys under app/ only.
    let rw_token = token(&admin, "app", TokenScope::ReadWrite, &["alpha"], "app/").await;
    let rw = client_with(&cluster, Some(&rw_token)).await;
    let two = data(4, 2 << 20);
    rw.put_bytes("alpha", "app/two", two.clone()).await.unwrap();
    assert_same(
        "alpha/app/two",
        &rw.get_bytes("alpha", "app/two").await.unwrap(),
        &two,
    );
    refused(
        "PUT outside the prefix",
        rw.put_bytes("alpha", "doc", data(9, 10)).await,
        "limited to keys starting with",
    );
    refused(
        "list outside the prefix",
        rw.list_page("alpha", &ListQuery::default()).await,
        "limited to keys starting with",
    );
    let page = rw
        .list_page(
            "alpha",
            &ListQuery {
                prefix: "app/".to_owned(),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<&str> = page.entries.iter().map(|e| e.name()).collect();
    assert_eq!(names, vec!["app/one", "app/two"]);
    refused(
        "rb with a prefix token",
        rw.delete_bucket("alpha").await,
        "limited to keys",
    );
    refused(
        "mb of another bucket",
        rw.create_bucket("gamma").await,
        "limited to buckets",
    );

    // An expiring token stops working once its time is up.
    let short = admin
        .create_token(&TokenRequest {
            name: "short".to_owned(),
            scope: TokenScope::Read,
            buckets: Vec::new(),
            prefix: String::new(),
            ttl_secs: 1,
        })
        .await
        .unwrap();
    let short_client = client_with(&cluster, Some(&short.token)).await;
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        match short_client.head("alpha", "doc").await {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                assert!(e.to_string().contains("expired"), "{e}");
                break;
            }
            other => assert!(Instant::now() < end, "still accepted: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Revocation: refused on every metadata node as soon as RevokeToken returns.
    let rw_id = &rw_token[6..22];
    let revoked = admin.revoke_token(rw_id).await.unwrap();
    assert_ne!(revoked.revoked_unix, 0);
    for addr in cluster.endpoints() {
        let s = meta_as(&cluster, &addr, Some(&rw_token))
            .await
            .head_object(pb::HeadObjectRequest {
                bucket: "alpha".to_owned(),
                key: "app/two".to_owned(),
                consistency: pb::ReadConsistency::Stale as i32,
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{addr}: {s:?}");
        assert!(s.message().contains("revoked"), "{addr}: {s:?}");
    }
    let listed = admin.list_tokens().await.unwrap();
    assert!(
        listed.iter().any(|t| t.id == rw_id && t.revoked_unix != 0),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|t| t.name == "reader" && t.revoked_unix == 0)
    );

    // Shard grants. The layout a token holder gets carries a grant per shard.
    let mut meta = meta_as(&cluster, &cluster.endpoints()[0], Some(&bootstrap)).await;
    let doc_layout = meta
        .get_object(get_req("alpha", "doc"))
        .await
        .unwrap()
        .into_inner()
        .segments;
    let beta_layout = meta
        .get_object(get_req("beta", "secret"))
        .await
        .unwrap()
        .into_inner()
        .segments;
    let first = &doc_layout[0].shards[0];
    let second = &doc_layout[0].shards[1];
    assert!(
        !first.grant.is_empty(),
        "GetObject gave no grant: {first:?}"
    );
    let mut chunk = ChunkServiceClient::new(app_channel(&cluster, &first.address).await);
    let bytes = get_shard(&mut chunk, &first.shard_id, first.grant.to_vec())
        .await
        .unwrap();
    assert_eq!(bytes.len() as u64, first.size);
    assert_eq!(crc32c::crc32c(&bytes), first.crc32c);
    let denied = |r: Result<Vec<u8>, tonic::Status>, needle: &str| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains(needle), "{s:?}");
    };
    denied(
        get_shard(&mut chunk, &first.shard_id, Vec::new()).await,
        "needs a grant",
    );
    denied(
        get_shard(&mut chunk, &first.shard_id, second.grant.to_vec()).await,
        "does not verify",
    );
    // A token for one bucket cannot read another bucket's shards by id: its grants name
    // other shards.
    let foreign = &beta_layout[0].shards[0];
    let mut foreign_chunk = ChunkServiceClient::new(app_channel(&cluster, &foreign.address).await);
    denied(
        get_shard(&mut foreign_chunk, &foreign.shard_id, first.grant.to_vec()).await,
        "does not verify",
    );
    let keys = cluster.auth().unwrap().grant_keys().unwrap();
    let shard = u128::from_str_radix(&first.shard_id, 16).unwrap();
    let expired = keys.sign(
        GrantOp::Get,
        shard,
        SystemTime::now() - Duration::from_secs(1),
    );
    denied(
        get_shard(&mut chunk, &first.shard_id, expired).await,
        "expired",
    );
    let s = chunk
        .stat_shard(StatShardRequest {
            shard_id: first.shard_id.clone(),
            grant: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // A read grant does not write: neither a new shard nor over the granted one.
    for (id, grant) in [
        (
            "0123456789abcdef0123456789abcdef".to_owned(),
            first.grant.clone(),
        ),
        (first.shard_id.clone(), first.grant.clone()),
    ] {
        let header = PutShardRequest {
            msg: Some(Msg::Header(PutShardHeader {
                shard_id: id.clone(),
                size: 4,
                grant,
            })),
        };
        let s = chunk
            .put_shard(futures::stream::iter(vec![header]))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{id}: {s:?}");
    }

    // The bootstrap token rotates by rewriting its file: the new one is taken, the old one
    // refused, without a restart.
    let new_bootstrap = cluster.rotate_admin_token().unwrap();
    let rotated = client_with(&cluster, Some(&new_bootstrap)).await;
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        match rotated.list_nodes().await {
            Ok(n) => {
                assert_eq!(n.len(), 6);
                break;
            }
            Err(e) => assert!(Instant::now() < end, "new bootstrap token refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    refused(
        "the old bootstrap token",
        admin.list_nodes().await,
        "neither this cluster's bootstrap token",
    );

    // `dogfs admin token create|list|revoke` end to end.
    let dogfs = bins::path_of(Binary::Cli).unwrap();
    let ca = cluster.tls().unwrap().ca_path();
    let run = |token: &str, args: &[&str]| {
        let out = Command::new(&dogfs)
            .arg("--endpoint")
            .arg(cluster.endpoints().join(","))
            .arg("--ca")
            .arg(&ca)
            .arg("--token")
            .arg(token)
            .arg("--timeout")
            .arg("20s")
            .args(args)
            .output()
            .unwrap();
        (
            out.status,
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, stdout, stderr) = run(
        &new_bootstrap,
        &[
            "admin", "token", "create", "--name", "cli", "--scope", "read", "--bucket", "alpha",
        ],
    );
    assert!(status.success(), "{stderr}");
    let cli_token = String::from_utf8(stdout).unwrap().trim().to_owned();
    assert!(cli_token.starts_with("dogfs_"), "{cli_token:?}");
    assert!(stderr.contains("shown only this once"), "{stderr}");
    let (status, stdout, stderr) = run(&cli_token, &["cat", "alpha/app/one"]);
    assert!(status.success(), "{stderr}");
    assert_same("dogfs cat", &stdout, &one);
    let (status, stdout, stderr) = run(&new_bootstrap, &["--json", "admin", "token", "list"]);
    assert!(status.success(), "{stderr}");
    let stdout = String::from_utf8(stdout).unwrap();
    let cli_id = &cli_token[6..22];
    assert!(stdout.contains(&format!("\"id\":\"{cli_id}\"")), "{stdout}");
    assert!(
        !stdout.contains(&cli_token),
        "list shows a secret: {stdout}"
    );
    let (status, _, stderr) = run(&new_bootstrap, &["admin", "token", "revoke", &cli_token]);
    assert!(status.success(), "{stderr}");
    let (status, _, stderr) = run(&cli_token, &["cat", "alpha/app/one"]);
    assert!(!status.success());
    assert!(stderr.contains("revoked"), "{stderr}");

    // Nothing the refused calls tried changed anything.
    assert_same(
        "alpha/doc",
        &rotated.get_bytes("alpha", "doc").await.unwrap(),
        &doc,
    );
    assert_same(
        "beta/secret",
        &rotated.get_bytes("beta", "secret").await.unwrap(),
        &secret,
    );
    let all: Vec<String> = rotated
        .list_page("alpha", &ListQuery::default())
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.name().to_owned())
        .collect();
    assert_eq!(all, vec!["app/one", "app/two", "doc"]);
    let buckets: Vec<String> = rotated
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(buckets, vec!["alpha", "beta"]);
}
