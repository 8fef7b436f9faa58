//! The gateway over a real process cluster (1 metadata node, 3 chunk servers, RS 2+1, 2 MiB
//! segments), driven with raw HTTP and SigV4: what an S3 client sees, bytes compared.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "gateway/auth.rs"]
mod auth;
mod common;
#[path = "gateway/digests.rs"]
mod digests;
#[path = "gateway/listing.rs"]
mod listing;
#[path = "gateway/multipart.rs"]
mod multipart;
#[path = "gateway/parts.rs"]
mod parts;
#[path = "gateway/reads.rs"]
mod reads;

use std::time::{Duration, Instant};

use common::{ADMIN, Gateway, Req, S3, data, gateway_config, md5_hex, xml};
use dogfs_s3::GatewayConfig;

const BUCKET: &str = "objects";

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

#[tokio::test]
async fn s3_gateway_over_a_process_cluster() {
    let t0 = Instant::now();
    let cluster = common::cluster().await;
    eprintln!("{:?}: cluster up", t0.elapsed());
    let gw = Gateway::start(
        cluster.endpoints(),
        gateway_config(),
        Duration::from_secs(20),
    )
    .await;
    let admin = gw.client(ADMIN);

    bucket_lifecycle(&admin).await;
    eprintln!("{:?}: bucket lifecycle", t0.elapsed());
    assert_eq!(
        admin
            .send(Req::new("PUT", &format!("/{BUCKET}")))
            .await
            .status,
        200
    );
    objects_round_trip(&admin).await;
    eprintln!("{:?}: objects", t0.elapsed());
    digests::digests(&admin).await;
    eprintln!("{:?}: digests", t0.elapsed());
    reads::ranges_and_conditions(&admin).await;
    eprintln!("{:?}: ranges and conditions", t0.elapsed());
    reads::copies_and_multi_delete(&admin).await;
    eprintln!("{:?}: copy and DeleteObjects", t0.elapsed());
    listing::listing_against_a_model(&admin).await;
    eprintln!("{:?}: listing", t0.elapsed());
    auth::credentials_and_scopes(&gw).await;
    auth::anonymous_mode(cluster.endpoints()).await;
    eprintln!("{:?}: credentials", t0.elapsed());

    multipart::multipart(&gw, &admin).await;
    eprintln!("{:?}: multipart", t0.elapsed());
    parts::upload_part_copy_and_part_reads(&gw, &admin).await;
    eprintln!("{:?}: UploadPartCopy and partNumber reads", t0.elapsed());
    parts::list_uploads_with_a_delimiter(&admin).await;
    parts::s3s_errors_have_messages(&gw).await;
    eprintln!("{:?}: upload listing and error messages", t0.elapsed());
    gw.stop().await;
}

async fn bucket_lifecycle(s3: &S3) {
    let r = s3.send(Req::new("PUT", "/life")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s3.send(Req::new("HEAD", "/life")).await.status, 200);
    let r = s3.send(Req::new("GET", "/")).await;
    assert_eq!(r.status, 200);
    assert!(
        xml::all(&r.text(), "Bucket/Name").contains(&"life".to_owned()),
        "{}",
        r.text()
    );
    let r = s3.send(Req::new("GET", "/life").q("location", "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        xml::one(&r.text(), "LocationConstraint").unwrap_or_default(),
        ""
    );

    let r = s3.send(Req::new("PUT", "/life")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "BucketAlreadyOwnedByYou")
    );
    let r = s3.send(Req::new("HEAD", "/nosuch")).await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty(), "a HEAD answer has no body");
    let r = s3
        .send(Req::new("GET", "/nosuch").q("list-type", "2"))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchBucket"));
    let r = s3.send(Req::new("GET", "/nosuch/key")).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchBucket"));
    let r = s3.send(Req::new("PUT", "/nosuch/key").body("x")).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchBucket"));

    assert_eq!(
        s3.send(Req::new("PUT", "/life/k").body("v")).await.status,
        200
    );
    let r = s3.send(Req::new("DELETE", "/life")).await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "BucketNotEmpty"));
    assert_eq!(s3.send(Req::new("DELETE", "/life/k")).await.status, 204);
    assert_eq!(s3.send(Req::new("DELETE", "/life")).await.status, 204);
    assert_eq!(s3.send(Req::new("HEAD", "/life")).await.status, 404);
    let r = s3.send(Req::new("DELETE", "/life")).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchBucket"));
}

async fn objects_round_trip(s3: &S3) {
    for (name, len) in [("0B", 0usize), ("1B", 1), ("5MiB+1", (5 << 20) + 1)] {
        let key = format!("/{BUCKET}/size/{name}");
        let body = data(len as u64 + 7, len);
        let r = s3
            .send(
                Req::new("PUT", &key)
                    .h("content-type", "text/x-test")
                    .h("content-disposition", "attachment; filename=\"f.bin\"")
                    .h("content-encoding", "identity")
                    .h("content-language", "en")
                    .h("cache-control", "max-age=60")
                    .h("expires", "Wed, 21 Oct 2037 07:28:00 GMT")
                    .h("x-amz-meta-color", "blue")
                    .body(body.clone()),
            )
            .await;
        assert_eq!(r.status, 200, "PUT {key}: {}", r.text());
        let etag = quoted(&md5_hex(&body));
        assert_eq!(r.header("etag"), Some(etag.as_str()), "PUT {key}");

        let r = s3.send(Req::new("GET", &key)).await;
        assert_eq!(r.status, 200, "GET {key}: {}", r.text());
        assert!(
            r.body == body,
            "GET {key}: {} bytes, want {}",
            r.body.len(),
            body.len()
        );
        for (h, want) in [
            ("etag", etag.as_str()),
            ("content-type", "text/x-test"),
            ("content-disposition", "attachment; filename=\"f.bin\""),
            ("content-encoding", "identity"),
            ("content-language", "en"),
            ("cache-control", "max-age=60"),
            ("expires", "Wed, 21 Oct 2037 07:28:00 GMT"),
            ("x-amz-meta-color", "blue"),
            ("content-length", len.to_string().as_str()),
        ] {
            assert_eq!(r.header(h), Some(want), "GET {key}: header {h}");
        }
        assert!(r.header("last-modified").is_some());

        let r = s3.send(Req::new("HEAD", &key)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("x-amz-meta-color"), Some("blue"));
        assert!(r.body.is_empty());
    }
    let key = format!("/{BUCKET}/size/1B");
    assert_eq!(s3.send(Req::new("DELETE", &key)).await.status, 204);
    let r = s3.send(Req::new("GET", &key)).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchKey"));
    let r = s3.send(Req::new("HEAD", &key)).await;
    assert_eq!(r.status, 404);
    // Deleting what is not there is a success in S3.
    assert_eq!(s3.send(Req::new("DELETE", &key)).await.status, 204);

    // Unversioned: `null` is every object's version; any other id names nothing.
    let key = format!("/{BUCKET}/size/0B");
    assert_eq!(
        s3.send(Req::new("GET", &key).q("versionId", "null"))
            .await
            .status,
        200
    );
    let r = s3.send(Req::new("GET", &key).q("versionId", "3f2a")).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchVersion"));

    // A key that needs encoding, in the path and in the signature.
    let key = format!("/{BUCKET}/dir/hello world+ü.txt");
    assert_eq!(s3.send(Req::new("PUT", &key).body("hi")).await.status, 200);
    assert_eq!(&s3.send(Req::new("GET", &key)).await.body[..], b"hi");
    // response-* overrides.
    let r = s3
        .send(
            Req::new("GET", &key)
                .q("response-content-type", "application/x-override")
                .q("response-content-disposition", "inline"),
        )
        .await;
    assert_eq!(r.header("content-type"), Some("application/x-override"));
    assert_eq!(r.header("content-disposition"), Some("inline"));
}

/// No metadata service: requests answer 503 ServiceUnavailable in S3 XML, in bounded time.
#[tokio::test]
async fn unreachable_metadata_is_service_unavailable() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = dead.local_addr().unwrap().to_string();
    drop(dead);
    let gw = Gateway::start(
        vec![endpoint],
        common::gateway_config(),
        Duration::from_secs(2),
    )
    .await;
    let s3 = gw.client(ADMIN);
    let t0 = Instant::now();
    let r = s3.send(Req::new("GET", "/")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "ServiceUnavailable")
    );
    let r = s3.send(Req::new("GET", "/bkt/k")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "ServiceUnavailable")
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    gw.stop().await;
}

/// Without credentials the gateway refuses to start unless anonymous mode is asked for.
#[tokio::test]
async fn no_credentials_needs_anonymous_mode() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = dogfs_client::Client::connect(dogfs_client::ClientConfig::new(["127.0.0.1:1"]))
        .await
        .unwrap();
    let r = dogfs_s3::serve(GatewayConfig::default(), listener, client, async {}).await;
    assert!(
        matches!(r, Err(dogfs_s3::ServeError::NoAuthentication)),
        "{r:?}"
    );
}

/// Access keys wired to DogFS tokens (issue 15 meets issue 14): a key whose entry carries a
/// token is served with that token, so the cluster enforces its scope and buckets on top of
/// the gateway's own check; keys without one use the gateway's token; a revoked token stops
/// the key.
#[tokio::test]
async fn access_keys_act_with_their_dogfs_tokens() {
    use dogfs_client::{ClientConfig, ClientTlsPaths, Token, TokenRequest, TokenScope};
    use dogfs_s3::{CredentialEntry, Credentials, Scope};
    use dogfs_tests::{Cluster, ClusterOptions};

    let cluster = Cluster::start(ClusterOptions {
        meta_nodes: 1,
        chunk_nodes: 3,
        ec_k: 2,
        ec_m: 1,
        tls: true,
        auth: true,
        meta_env: vec![("DOGFS_SEGMENT_SIZE".to_owned(), common::SEGMENT.to_owned())],
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let mut cfg = ClientConfig::new(cluster.endpoints());
    cfg.tls = Some(ClientTlsPaths::ca_only(cluster.tls().unwrap().ca_path()));
    cfg.token = Some(Token::new(cluster.admin_token().unwrap(), "admin").unwrap());
    cfg.retry_deadline = Duration::from_secs(20);
    let admin_sdk = dogfs_client::Client::connect(cfg.clone()).await.unwrap();
    admin_sdk.create_bucket("shared").await.unwrap();
    let doc = data(7, 300_000);
    admin_sdk
        .put_bytes("shared", "doc", doc.clone())
        .await
        .unwrap();
    let reader = admin_sdk
        .create_token(&TokenRequest {
            name: "s3-reader".to_owned(),
            scope: TokenScope::Read,
            buckets: vec!["shared".to_owned()],
            prefix: String::new(),
            ttl_secs: 0,
        })
        .await
        .unwrap();
    const KEYED: (&str, &str) = ("AKKEYED", "keyed-secret");
    let entry = |key: (&str, &str), scope, token: Option<String>| CredentialEntry {
        access_key: key.0.to_owned(),
        secret_key: key.1.to_owned(),
        identity: key.0.to_lowercase(),
        scope,
        buckets: None,
        token,
    };
    let config = GatewayConfig {
        credentials: Some(
            Credentials::from_entries([
                entry(ADMIN, Scope::Admin, None),
                // The gateway alone would let this key write; its token does not.
                entry(KEYED, Scope::ReadWrite, Some(reader.token.clone())),
            ])
            .unwrap(),
        ),
        ..GatewayConfig::default()
    };
    let gw = Gateway::start_with(cfg, config).await;
    let keyed = gw.client(KEYED);
    let r = keyed.send(Req::new("GET", "/shared/doc")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == doc, "GET through the key's token differs");
    let r = keyed
        .send(Req::new("PUT", "/shared/new").body("refused"))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));
    assert!(r.text().contains("needs write"), "{}", r.text());
    assert_eq!(
        admin_sdk.head("shared", "new").await.unwrap_err().kind(),
        dogfs_client::ErrorKind::NotFound
    );
    // A key without a token of its own writes with the gateway's.
    let admin = gw.client(ADMIN);
    let r = admin
        .send(Req::new("PUT", "/shared/by-admin").body("ok"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Revoked, the key's token stops the key.
    admin_sdk.revoke_token(&reader.info.id).await.unwrap();
    let r = keyed.send(Req::new("GET", "/shared/doc")).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));
    gw.stop().await;
}
