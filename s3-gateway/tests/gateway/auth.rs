//! Signatures, access keys and their scopes, presigned URLs.

use std::time::Duration;

use bytes::Bytes;
use dogfs_s3::GatewayConfig;

use crate::BUCKET;
use crate::common::{ADMIN, Gateway, LIMITED, READER, Req, xml};

pub async fn credentials_and_scopes(gw: &Gateway) {
    let admin = gw.client(ADMIN);
    let key = format!("/{BUCKET}/auth/k");
    assert_eq!(
        admin
            .send(Req::new("PUT", &key).body("secret"))
            .await
            .status,
        200
    );

    let wrong = gw.client((ADMIN.0, "not-the-secret"));
    let r = wrong.send(Req::new("GET", &key)).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let unknown = gw.client(("AKNOBODY", "x"));
    let r = unknown.send(Req::new("GET", &key)).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "InvalidAccessKeyId")
    );
    let r = gw.anonymous().send(Req::new("GET", &key)).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));

    let reader = gw.client(READER);
    assert_eq!(
        &reader.send(Req::new("GET", &key)).await.body[..],
        b"secret"
    );
    let r = reader.send(Req::new("PUT", &key).body("overwritten")).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));
    let r = reader.send(Req::new("DELETE", &key)).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));
    assert_eq!(&admin.send(Req::new("GET", &key)).await.body[..], b"secret");

    let limited = gw.client(LIMITED);
    let r = limited.send(Req::new("PUT", "/limited")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "AccessDenied"),
        "no admin scope"
    );
    assert_eq!(admin.send(Req::new("PUT", "/limited")).await.status, 200);
    assert_eq!(
        limited
            .send(Req::new("PUT", "/limited/k").body("v"))
            .await
            .status,
        200
    );
    let r = limited.send(Req::new("GET", &key)).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "AccessDenied"),
        "other bucket"
    );
    let r = limited
        .send(Req::new("PUT", "/limited/copy").h("x-amz-copy-source", &format!("{BUCKET}/auth/k")))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "AccessDenied"),
        "copy source"
    );
    let r = limited.send(Req::new("GET", "/")).await;
    assert_eq!(xml::all(&r.text(), "Bucket/Name"), vec!["limited"]);

    // Presigned URLs: GET and PUT, then a bad signature.
    let url = admin.presign("GET", &key, 300);
    let r = gw.anonymous().raw("GET", &url, &[], Bytes::new()).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"secret"[..]),
        "{}",
        r.text()
    );
    let url = admin.presign("PUT", &format!("/{BUCKET}/auth/presigned"), 300);
    let r = gw
        .anonymous()
        .raw("PUT", &url, &[], Bytes::from_static(b"via url"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = admin
        .send(Req::new("GET", &format!("/{BUCKET}/auth/presigned")))
        .await;
    assert_eq!(&got.body[..], b"via url");
    let url = wrong.presign("GET", &key, 300);
    let r = gw.anonymous().raw("GET", &url, &[], Bytes::new()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "SignatureDoesNotMatch")
    );
}

/// `--anonymous`: unsigned requests pass with full rights; with a credentials file too,
/// signed requests are still checked.
pub async fn anonymous_mode(endpoints: Vec<String>) {
    for with_keys in [true, false] {
        let config = GatewayConfig {
            anonymous: true,
            credentials: with_keys.then(crate::common::credentials),
            ..GatewayConfig::default()
        };
        let gw = Gateway::start(endpoints.clone(), config, Duration::from_secs(10)).await;
        let anon = gw.anonymous();
        let key = format!("/{BUCKET}/anonymous/{with_keys}");
        let r = anon.send(Req::new("PUT", &key).body("open")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(&anon.send(Req::new("GET", &key)).await.body[..], b"open");
        if with_keys {
            let wrong = gw.client((ADMIN.0, "not-the-secret"));
            let r = wrong.send(Req::new("GET", &key)).await;
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (403, "SignatureDoesNotMatch")
            );
            assert_eq!(
                gw.client(READER).send(Req::new("GET", &key)).await.status,
                200
            );
        }
        gw.stop().await;
    }
}
