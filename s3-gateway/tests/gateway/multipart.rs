//! Multipart upload: three parts (5 MiB, 5 MiB, 1 B) with a replaced part, S3's ETag and the
//! bytes back; ListParts and ListMultipartUploads pages; refused completions (order, ETag,
//! size); abort; digests and scopes on UploadPart.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;

use crate::common::{Gateway, READER, Req, S3, data, md5_hex, xml};
use crate::{BUCKET, quoted};

const MIB: usize = 1 << 20;

fn md5_raw(b: &[u8]) -> Vec<u8> {
    use s3s::crypto::Checksum as _;
    let mut h = s3s::crypto::Md5::new();
    h.update(b);
    h.finalize().to_vec()
}

/// S3's ETag of an object completed from these parts: MD5 of the part MD5s, `-N`.
fn multipart_etag(parts: &[&[u8]]) -> String {
    let all: Vec<u8> = parts.iter().flat_map(|p| md5_raw(p)).collect();
    format!("{}-{}", md5_hex(&all), parts.len())
}

async fn create(s3: &S3, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = Req::new("POST", path).q("uploads", "");
    for (k, v) in headers {
        req = req.h(k, v);
    }
    let r = s3.send(req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    xml::one(&r.text(), "InitiateMultipartUploadResult/UploadId")
        .unwrap_or_else(|| panic!("no UploadId: {}", r.text()))
}

async fn upload_part(s3: &S3, path: &str, id: &str, n: u32, body: Bytes) -> String {
    let r = s3
        .send(
            Req::new("PUT", path)
                .q("partNumber", &n.to_string())
                .q("uploadId", id)
                .h("content-md5", &B64.encode(md5_raw(&body)))
                .body(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "part {n}: {}", r.text());
    let etag = r.header("etag").unwrap().to_owned();
    assert_eq!(etag, quoted(&md5_hex(&body)), "part {n}'s ETag");
    etag
}

fn complete_xml(parts: &[(u32, &str)]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

async fn complete(s3: &S3, path: &str, id: &str, parts: &[(u32, &str)]) -> crate::common::Response {
    s3.send(
        Req::new("POST", path)
            .q("uploadId", id)
            .body(complete_xml(parts)),
    )
    .await
}

pub async fn multipart(gw: &Gateway, s3: &S3) {
    let path = format!("/{BUCKET}/mp/three");
    let id = create(
        s3,
        &path,
        &[("content-type", "text/plain"), ("x-amz-meta-color", "blue")],
    )
    .await;

    let p1 = data(21, 5 * MIB);
    let first2 = data(22, 5 * MIB);
    let p2 = data(23, 5 * MIB);
    let p3 = data(24, 1);
    let e1 = upload_part(s3, &path, &id, 1, p1.clone()).await;
    let old2 = upload_part(s3, &path, &id, 2, first2.clone()).await;
    // Part 2 again: replaces the first one.
    let e2 = upload_part(s3, &path, &id, 2, p2.clone()).await;
    let e3 = upload_part(s3, &path, &id, 3, p3.clone()).await;

    // A wrong Content-MD5 is BadDigest and leaves part 3 as it was.
    let r = s3
        .send(
            Req::new("PUT", &path)
                .q("partNumber", "3")
                .q("uploadId", &id)
                .h("content-md5", &B64.encode(md5_raw(b"other")))
                .body(Bytes::from_static(b"x")),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "BadDigest"));

    // ListParts: every part, then pages of max-parts.
    let r = s3.send(Req::new("GET", &path).q("uploadId", &id)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.text();
    assert_eq!(xml::all(&doc, "Part/PartNumber"), ["1", "2", "3"], "{doc}");
    assert_eq!(
        xml::all(&doc, "Part/ETag"),
        [e1.clone(), e2.clone(), e3.clone()],
        "{doc}"
    );
    assert_eq!(
        xml::all(&doc, "Part/Size"),
        [(5 * MIB).to_string(), (5 * MIB).to_string(), "1".to_owned()]
    );
    assert_eq!(xml::one(&doc, "IsTruncated").as_deref(), Some("false"));
    let r = s3
        .send(
            Req::new("GET", &path)
                .q("uploadId", &id)
                .q("max-parts", "2"),
        )
        .await;
    let doc = r.text();
    assert_eq!(xml::all(&doc, "Part/PartNumber"), ["1", "2"], "{doc}");
    assert_eq!(xml::one(&doc, "IsTruncated").as_deref(), Some("true"));
    assert_eq!(xml::one(&doc, "NextPartNumberMarker").as_deref(), Some("2"));
    let r = s3
        .send(
            Req::new("GET", &path)
                .q("uploadId", &id)
                .q("part-number-marker", "2"),
        )
        .await;
    assert_eq!(
        xml::all(&r.text(), "Part/PartNumber"),
        ["3"],
        "{}",
        r.text()
    );

    // ListMultipartUploads: this upload, under its prefix only.
    let other = create(s3, &format!("/{BUCKET}/mp/zz-other"), &[]).await;
    let r = s3
        .send(
            Req::new("GET", &format!("/{BUCKET}"))
                .q("uploads", "")
                .q("prefix", "mp/"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.text();
    assert_eq!(
        xml::all(&doc, "Upload/Key"),
        ["mp/three", "mp/zz-other"],
        "{doc}"
    );
    assert_eq!(
        xml::all(&doc, "Upload/UploadId"),
        [id.clone(), other.clone()],
        "{doc}"
    );
    let r = s3
        .send(
            Req::new("GET", &format!("/{BUCKET}"))
                .q("uploads", "")
                .q("prefix", "mp/")
                .q("max-uploads", "1"),
        )
        .await;
    let doc = r.text();
    assert_eq!(xml::all(&doc, "Upload/Key"), ["mp/three"], "{doc}");
    assert_eq!(xml::one(&doc, "IsTruncated").as_deref(), Some("true"));
    let (nk, nu) = (
        xml::one(&doc, "NextKeyMarker").unwrap(),
        xml::one(&doc, "NextUploadIdMarker").unwrap(),
    );
    let r = s3
        .send(
            Req::new("GET", &format!("/{BUCKET}"))
                .q("uploads", "")
                .q("prefix", "mp/")
                .q("key-marker", &nk)
                .q("upload-id-marker", &nu),
        )
        .await;
    assert_eq!(
        xml::all(&r.text(), "Upload/Key"),
        ["mp/zz-other"],
        "{}",
        r.text()
    );

    // Refused completions leave the upload as it was.
    let r = complete(s3, &path, &id, &[(2, &e2), (1, &e1), (3, &e3)]).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "InvalidPartOrder")
    );
    let r = complete(s3, &path, &id, &[(1, &e1), (2, &old2), (3, &e3)]).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "InvalidPart"));
    let r = complete(s3, &path, &id, &[(1, &e1), (2, &e2), (4, &e3)]).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "InvalidPart"));
    let r = complete(s3, &path, &id, &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "MalformedXML"));
    let r = complete(s3, &path, "no-such-upload", &[(1, &e1)]).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchUpload"));

    // Completion: S3's ETag, the bytes, the headers given at creation.
    let r = complete(s3, &path, &id, &[(1, &e1), (2, &e2), (3, &e3)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let want = quoted(&multipart_etag(&[&p1, &p2, &p3]));
    assert_eq!(
        xml::one(&r.text(), "CompleteMultipartUploadResult/ETag").as_deref(),
        Some(want.as_str()),
        "{}",
        r.text()
    );
    let r = s3.send(Req::new("GET", &path)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(want.as_str()));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-amz-meta-color"), Some("blue"));
    let whole: Vec<u8> = [&p1[..], &p2[..], &p3[..]].concat();
    assert!(r.body == whole, "multipart object's bytes differ");
    // A range across the part boundary.
    let r = s3
        .send(Req::new("GET", &path).h("range", &format!("bytes={}-{}", 5 * MIB - 10, 5 * MIB + 9)))
        .await;
    assert_eq!(r.status, 206);
    assert!(r.body[..] == whole[5 * MIB - 10..5 * MIB + 10]);
    // partNumber of an object uploaded in parts is that part (parts.rs has more).
    let r = s3.send(Req::new("GET", &path).q("partNumber", "3")).await;
    assert_eq!(r.status, 206);
    assert!(r.body[..] == whole[10 * MIB..]);
    assert_eq!(r.header("x-amz-mp-parts-count"), Some("3"));
    // A completed upload is gone.
    let r = s3.send(Req::new("GET", &path).q("uploadId", &id)).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchUpload"));

    // Too small a part (not the last) is EntityTooSmall at completion.
    let small = format!("/{BUCKET}/mp/small");
    let sid = create(s3, &small, &[]).await;
    let s1 = upload_part(s3, &small, &sid, 1, data(25, 1000)).await;
    let s2 = upload_part(s3, &small, &sid, 2, data(26, 1000)).await;
    let r = complete(s3, &small, &sid, &[(1, &s1), (2, &s2)]).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "EntityTooSmall"));

    // Abort: the upload and its parts are gone; the key was never written.
    let r = s3
        .send(Req::new("DELETE", &small).q("uploadId", &sid))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = s3.send(Req::new("GET", &small).q("uploadId", &sid)).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchUpload"));
    let r = s3
        .send(Req::new("DELETE", &small).q("uploadId", &sid))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchUpload"));
    let r = s3
        .send(
            Req::new("PUT", &small)
                .q("partNumber", "1")
                .q("uploadId", &sid)
                .body(Bytes::from_static(b"late")),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchUpload"));
    let r = s3.send(Req::new("GET", &small)).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchKey"));
    let r = s3
        .send(Req::new("DELETE", &format!("/{BUCKET}/mp/zz-other")).q("uploadId", &other))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = s3
        .send(
            Req::new("GET", &format!("/{BUCKET}"))
                .q("uploads", "")
                .q("prefix", "mp/"),
        )
        .await;
    assert!(xml::all(&r.text(), "Upload/Key").is_empty(), "{}", r.text());

    // Part numbers outside 1..=10000; a missing bucket.
    let r = s3
        .send(
            Req::new("PUT", &small)
                .q("partNumber", "10001")
                .q("uploadId", &sid)
                .body(Bytes::from_static(b"x")),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "InvalidArgument")
    );
    let r = s3
        .send(Req::new("POST", "/no-such-bucket/k").q("uploads", ""))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "NoSuchBucket"));

    // Read scope cannot start, list or abort uploads.
    let reader = gw.client(READER);
    let r = reader.send(Req::new("POST", &path).q("uploads", "")).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));
    let r = reader
        .send(Req::new("GET", &format!("/{BUCKET}")).q("uploads", ""))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "AccessDenied"));
}
