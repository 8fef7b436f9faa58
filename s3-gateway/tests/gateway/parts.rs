//! UploadPartCopy (ranges, conditions, errors) completed into an object read back; `partNumber`
//! GET and HEAD of that object; ListMultipartUploads with a delimiter and URL encoding; a
//! `<Message>` in the errors `s3s` raises itself.

use bytes::Bytes;

use crate::common::{Gateway, LIMITED, Req, S3, data, md5_hex, xml};
use crate::{BUCKET, quoted};

const MIB: usize = 1 << 20;

async fn create(s3: &S3, path: &str) -> String {
    let r = s3.send(Req::new("POST", path).q("uploads", "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    xml::one(&r.text(), "UploadId").unwrap_or_else(|| panic!("no UploadId: {}", r.text()))
}

/// An UploadPartCopy request of part `n` from `source` (`/bucket/key[?versionId=v]`).
fn copy_part<'a>(path: &'a str, id: &str, n: u32, source: &str) -> Req<'a> {
    Req::new("PUT", path)
        .q("partNumber", &n.to_string())
        .q("uploadId", id)
        .h("x-amz-copy-source", source)
}

pub async fn upload_part_copy_and_part_reads(gw: &Gateway, s3: &S3) {
    let src = data(31, 5 * MIB + 4321);
    let small = data(32, 1000);
    let (src_path, small_path) = (
        format!("/{BUCKET}/parts/src"),
        format!("/{BUCKET}/parts/small"),
    );
    for (p, b) in [(&src_path, &src), (&small_path, &small)] {
        assert_eq!(
            s3.send(Req::new("PUT", p).body(b.clone())).await.status,
            200
        );
    }
    let small_etag = quoted(&md5_hex(&small));
    let path = format!("/{BUCKET}/parts/copied");
    let id = create(s3, &path).await;

    // Part 1: the source's first 5 MiB; its ETag is the MD5 of the bytes copied.
    let r = s3
        .send(copy_part(&path, &id, 1, &src_path).h(
            "x-amz-copy-source-range",
            &format!("bytes=0-{}", 5 * MIB - 1),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let e1 = quoted(&md5_hex(&src[..5 * MIB]));
    assert_eq!(xml::one(&r.text(), "CopyPartResult/ETag"), Some(e1.clone()));
    assert!(xml::one(&r.text(), "CopyPartResult/LastModified").is_some());
    // Part 2: a whole object whose conditions hold (`null` is its version).
    let r = s3
        .send(
            copy_part(&path, &id, 2, &format!("{small_path}?versionId=null"))
                .h("x-amz-copy-source-if-match", &small_etag)
                .h("x-amz-copy-source-if-none-match", "\"other\"")
                .h(
                    "x-amz-copy-source-if-unmodified-since",
                    "Wed, 21 Oct 2037 07:28:00 GMT",
                ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let e2 = xml::one(&r.text(), "CopyPartResult/ETag").unwrap();
    assert_eq!(e2, small_etag);

    // Refusals, each as S3 answers it; none changes the upload.
    for (req, want) in [
        (
            copy_part(&path, &id, 3, &src_path).h("x-amz-copy-source-range", "bytes=10-"),
            (400, "InvalidArgument"),
        ),
        (
            copy_part(&path, &id, 3, &src_path)
                .h("x-amz-copy-source-range", &format!("bytes=0-{}", src.len())),
            (400, "InvalidArgument"),
        ),
        (
            copy_part(&path, &id, 3, &small_path).h("x-amz-copy-source-if-match", "\"other\""),
            (412, "PreconditionFailed"),
        ),
        (
            copy_part(&path, &id, 3, &small_path).h("x-amz-copy-source-if-none-match", &small_etag),
            (412, "PreconditionFailed"),
        ),
        (
            copy_part(&path, &id, 3, &small_path).h(
                "x-amz-copy-source-if-modified-since",
                "Wed, 21 Oct 2037 07:28:00 GMT",
            ),
            (412, "PreconditionFailed"),
        ),
        (
            copy_part(&path, &id, 3, &format!("/{BUCKET}/parts/none")),
            (404, "NoSuchKey"),
        ),
        (
            copy_part(&path, &id, 3, "/no-such-bucket/k"),
            (404, "NoSuchBucket"),
        ),
        (
            copy_part(&path, &id, 3, &format!("{small_path}?versionId=3f2a")),
            (404, "NoSuchVersion"),
        ),
        (
            copy_part(&path, "0123456789abcdef0123456789abcdef", 3, &small_path),
            (404, "NoSuchUpload"),
        ),
    ] {
        let r = s3.send(req).await;
        assert_eq!((r.status, r.error_code().as_str()), want, "{}", r.text());
    }
    // An unknown upload is found out before the whole source is read: also for a big one.
    let r = s3
        .send(copy_part(
            &path,
            "0123456789abcdef0123456789abcdef",
            3,
            &src_path,
        ))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchUpload"));
    // A key limited to another bucket may not read the source.
    let r = gw
        .client(LIMITED)
        .send(copy_part("/limited/copied", &id, 1, &src_path))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));

    let done = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{e1}</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>{e2}</ETag></Part></CompleteMultipartUpload>"
    );
    let r = s3
        .send(Req::new("POST", &path).q("uploadId", &id).body(done))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let whole: Vec<u8> = [&src[..5 * MIB], &small[..]].concat();
    let r = s3.send(Req::new("GET", &path)).await;
    assert!(r.body == whole, "the copied object's bytes differ");

    // partNumber: each part's bytes, 206, its place and the parts count.
    let total = whole.len();
    for (n, range) in [(1usize, 0..5 * MIB), (2, 5 * MIB..total)] {
        let r = s3
            .send(Req::new("GET", &path).q("partNumber", &n.to_string()))
            .await;
        assert_eq!(r.status, 206, "part {n}: {}", r.text());
        assert!(
            r.body[..] == whole[range.clone()],
            "part {n}'s bytes differ"
        );
        let cr = format!("bytes {}-{}/{total}", range.start, range.end - 1);
        assert_eq!(r.header("content-range"), Some(cr.as_str()));
        assert_eq!(r.header("x-amz-mp-parts-count"), Some("2"));
        assert_eq!(
            r.header("content-length"),
            Some(range.len().to_string().as_str())
        );
        let r = s3
            .send(Req::new("HEAD", &path).q("partNumber", &n.to_string()))
            .await;
        assert_eq!(r.status, 206, "HEAD part {n}");
        assert_eq!(r.header("content-range"), Some(cr.as_str()));
        assert_eq!(r.header("x-amz-mp-parts-count"), Some("2"));
        assert_eq!(
            r.header("content-length"),
            Some(range.len().to_string().as_str())
        );
    }
    let r = s3.send(Req::new("GET", &path).q("partNumber", "3")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (416, "InvalidPartNumber")
    );
    assert_eq!(
        s3.send(Req::new("HEAD", &path).q("partNumber", "3"))
            .await
            .status,
        416
    );
    let r = s3.send(Req::new("GET", &path).q("partNumber", "0")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "InvalidArgument")
    );
    let r = s3
        .send(
            Req::new("GET", &path)
                .q("partNumber", "1")
                .h("range", "bytes=0-1"),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "InvalidRequest"));
    // An object of one PUT is its only part: 200, the whole object, no parts count.
    let r = s3
        .send(Req::new("GET", &small_path).q("partNumber", "1"))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == small);
    assert_eq!(r.header("x-amz-mp-parts-count"), None);
    let r = s3
        .send(Req::new("GET", &small_path).q("partNumber", "2"))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (416, "InvalidPartNumber")
    );
    for p in [&src_path, &small_path, &path] {
        assert_eq!(s3.send(Req::new("DELETE", p)).await.status, 204);
    }
}

pub async fn list_uploads_with_a_delimiter(s3: &S3) {
    let keys = [
        "lmu/a/1",
        "lmu/a/2",
        "lmu/b/x/1",
        "lmu/c",
        "lmu/d/1",
        "lmu/sp ace",
    ];
    let mut ids = Vec::new();
    for k in keys {
        ids.push(create(s3, &format!("/{BUCKET}/{k}")).await);
    }
    let bucket = format!("/{BUCKET}");
    let list = |extra: &[(&str, &str)]| {
        let mut req = Req::new("GET", &bucket)
            .q("uploads", "")
            .q("prefix", "lmu/")
            .q("delimiter", "/");
        for (k, v) in extra {
            req = req.q(k, v);
        }
        s3.send(req)
    };
    let r = list(&[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.text();
    assert_eq!(
        xml::all(&doc, "CommonPrefixes/Prefix"),
        ["lmu/a/", "lmu/b/", "lmu/d/"],
        "{doc}"
    );
    assert_eq!(xml::all(&doc, "Upload/Key"), ["lmu/c", "lmu/sp ace"]);
    assert_eq!(xml::one(&doc, "Delimiter").as_deref(), Some("/"));
    assert_eq!(xml::one(&doc, "IsTruncated").as_deref(), Some("false"));

    // Pages of two entries (prefixes and uploads count alike), resumed from NextKeyMarker.
    let mut seen = Vec::new();
    let (mut key_marker, mut id_marker) = (String::new(), String::new());
    for page in 0.. {
        assert!(page < 5, "too many pages");
        let r = list(&[
            ("max-uploads", "2"),
            ("key-marker", &key_marker),
            ("upload-id-marker", &id_marker),
        ])
        .await;
        let doc = r.text();
        seen.extend(xml::all(&doc, "CommonPrefixes/Prefix"));
        seen.extend(xml::all(&doc, "Upload/Key"));
        if xml::one(&doc, "IsTruncated").as_deref() != Some("true") {
            break;
        }
        key_marker = xml::one(&doc, "NextKeyMarker").unwrap();
        id_marker = xml::one(&doc, "NextUploadIdMarker").unwrap_or_default();
    }
    seen.sort();
    assert_eq!(seen, ["lmu/a/", "lmu/b/", "lmu/c", "lmu/d/", "lmu/sp ace"]);

    // encoding-type=url: keys and prefixes percent-encoded.
    let r = list(&[("encoding-type", "url")]).await;
    let doc = r.text();
    assert_eq!(
        xml::all(&doc, "Upload/Key"),
        ["lmu/c", "lmu/sp%20ace"],
        "{doc}"
    );
    assert_eq!(xml::one(&doc, "EncodingType").as_deref(), Some("url"));
    let r = list(&[("encoding-type", "base64")]).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "InvalidArgument")
    );

    for (k, id) in keys.iter().zip(&ids) {
        let r = s3
            .send(Req::new("DELETE", &format!("/{BUCKET}/{k}")).q("uploadId", id))
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

/// Errors s3s raises before the gateway's code runs carry a `<Message>` too.
pub async fn s3s_errors_have_messages(gw: &Gateway) {
    let key = format!("/{BUCKET}/parts/any");
    let wrong = gw.client((crate::common::ADMIN.0, "not-the-secret"));
    for (r, code) in [
        (
            wrong.send(Req::new("GET", &key)).await,
            "SignatureDoesNotMatch",
        ),
        (
            gw.client(crate::common::ADMIN)
                .send(Req::new("GET", "/Bad_Bucket!/k"))
                .await,
            "InvalidBucketName",
        ),
        (
            gw.anonymous().send(Req::new("GET", &key)).await,
            "AccessDenied",
        ),
        (
            gw.anonymous()
                .send(Req::new("PUT", &key).body(Bytes::from_static(b"x")))
                .await,
            "AccessDenied",
        ),
    ] {
        assert_eq!(r.error_code(), code, "{}", r.text());
        assert!(
            r.error_message().len() > 5,
            "{code}: no message: {}",
            r.text()
        );
    }
}
