//! Ranges, conditional GET and HEAD, CopyObject, DeleteObjects.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::common::{Req, S3, data, md5_hex, xml};
use crate::{BUCKET, quoted};

pub async fn ranges_and_conditions(s3: &S3) {
    let key = format!("/{BUCKET}/size/5MiB+1");
    let size = (5u64 << 20) + 1;
    let body = data(size + 7, size as usize);
    let etag = quoted(&md5_hex(&body));
    let cases: [(&str, u64, u64); 6] = [
        ("bytes=0-0", 0, 1),
        ("bytes=0-", 0, size),
        ("bytes=3000000-", 3_000_000, size),
        ("bytes=-10", size - 10, size),
        ("bytes=-99999999", 0, size),
        ("bytes=2097150-4194305", 2_097_150, 4_194_306),
    ];
    for (range, start, end) in cases {
        let r = s3.send(Req::new("GET", &key).h("range", range)).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{}/{size}", end - 1).as_str()),
            "{range}"
        );
        assert!(
            r.body[..] == body[start as usize..end as usize],
            "{range}: bytes differ"
        );
    }
    let r = s3
        .send(Req::new("GET", &key).h("range", &format!("bytes={size}-")))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (416, "InvalidRange"));

    let get = |name: &'static str, value: String| {
        let key = key.clone();
        async move { s3.send(Req::new("GET", &key).h(name, &value)).await }
    };
    assert_eq!(get("if-match", etag.clone()).await.status, 200);
    assert_eq!(get("if-match", "*".into()).await.status, 200);
    let r = get("if-match", "\"0000\"".into()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "PreconditionFailed")
    );
    let r = get("if-none-match", etag.clone()).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty(), "a 304 has no body");
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(get("if-none-match", "\"0000\"".into()).await.status, 200);
    let future = "Wed, 21 Oct 2037 07:28:00 GMT".to_owned();
    let past = "Sat, 01 Jan 2000 00:00:00 GMT".to_owned();
    assert_eq!(get("if-modified-since", future.clone()).await.status, 304);
    assert_eq!(get("if-modified-since", past.clone()).await.status, 200);
    let r = get("if-unmodified-since", past.clone()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "PreconditionFailed")
    );
    assert_eq!(get("if-unmodified-since", future).await.status, 200);
    let r = s3
        .send(Req::new("HEAD", &key).h("if-none-match", &etag))
        .await;
    assert_eq!(r.status, 304);
    let r = s3
        .send(Req::new("HEAD", &key).h("if-match", "\"0000\""))
        .await;
    assert_eq!(r.status, 412);
}

pub async fn copies_and_multi_delete(s3: &S3) {
    let src = format!("/{BUCKET}/copy/src");
    let body = data(11, 3_000_000);
    let r = s3
        .send(
            Req::new("PUT", &src)
                .h("content-type", "text/src")
                .h("x-amz-meta-a", "1")
                .body(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200);
    let etag = quoted(&md5_hex(&body));
    let source = format!("{BUCKET}/copy/src");

    let dst = format!("/{BUCKET}/copy/kept");
    let r = s3
        .send(Req::new("PUT", &dst).h("x-amz-copy-source", &source))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        xml::one(&r.text(), "CopyObjectResult/ETag").as_deref(),
        Some(etag.as_str())
    );
    let got = s3.send(Req::new("GET", &dst)).await;
    assert!(got.body == body);
    assert_eq!(got.header("content-type"), Some("text/src"));
    assert_eq!(got.header("x-amz-meta-a"), Some("1"));

    let dst = format!("/{BUCKET}/copy/replaced");
    let r = s3
        .send(
            Req::new("PUT", &dst)
                .h("x-amz-copy-source", &source)
                .h("x-amz-metadata-directive", "REPLACE")
                .h("content-type", "text/new")
                .h("x-amz-meta-b", "2"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = s3.send(Req::new("HEAD", &dst)).await;
    assert_eq!(got.header("content-type"), Some("text/new"));
    assert_eq!(got.header("x-amz-meta-b"), Some("2"));
    assert_eq!(got.header("x-amz-meta-a"), None);
    assert_eq!(got.header("etag"), Some(etag.as_str()));

    let r = s3
        .send(Req::new("PUT", &src).h("x-amz-copy-source", &source))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "InvalidRequest"));
    let r = s3
        .send(
            Req::new("PUT", &dst)
                .h("x-amz-copy-source", &source)
                .h("x-amz-copy-source-if-match", "\"0000\""),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "PreconditionFailed")
    );
    let r = s3
        .send(Req::new("PUT", &dst).h("x-amz-copy-source", &format!("{BUCKET}/copy/none")))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchKey"));

    let doc = "<Delete><Object><Key>copy/kept</Key></Object><Object><Key>copy/replaced</Key>\
               </Object><Object><Key>copy/never</Key></Object></Delete>";
    let md5 = {
        use s3s::crypto::Checksum as _;
        let mut h = s3s::crypto::Md5::new();
        h.update(doc.as_bytes());
        B64.encode(h.finalize())
    };
    let r = s3
        .send(
            Req::new("POST", &format!("/{BUCKET}"))
                .q("delete", "")
                .h("content-md5", &md5)
                .body(doc),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deleted: BTreeSet<String> = xml::all(&r.text(), "Deleted/Key").into_iter().collect();
    assert_eq!(
        deleted,
        ["copy/kept", "copy/never", "copy/replaced"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(
        s3.send(Req::new("HEAD", &format!("/{BUCKET}/copy/kept")))
            .await
            .status,
        404
    );
}
