//! Content-MD5 and x-amz-checksum-* (header and aws-chunked trailer): verified, and a
//! mismatch commits nothing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;

use crate::common::{Req, S3, data, md5_hex};
use crate::{BUCKET, quoted};

/// An aws-chunked body with an unsigned payload and a CRC32 trailer, as current boto3 and
/// aws-cli send by default.
fn aws_chunked(data: &[u8], crc32_b64: &str) -> Bytes {
    let mut out = Vec::new();
    for chunk in data.chunks(64 << 10) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{crc32_b64}\r\n\r\n").as_bytes());
    out.into()
}

fn crc32_b64(data: &[u8]) -> String {
    use s3s::crypto::Checksum as _;
    let mut h = s3s::crypto::Crc32::new();
    h.update(data);
    B64.encode(h.finalize())
}

pub async fn digests(s3: &S3) {
    let body = data(3, 300_000);
    let md5 = {
        use s3s::crypto::Checksum as _;
        let mut h = s3s::crypto::Md5::new();
        h.update(&body);
        B64.encode(h.finalize())
    };
    let key = format!("/{BUCKET}/digest/md5");
    let r = s3
        .send(
            Req::new("PUT", &key)
                .h("content-md5", &md5)
                .body(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A wrong Content-MD5 fails and commits nothing: the earlier version stays.
    let other = data(4, 300_000);
    let r = s3
        .send(
            Req::new("PUT", &key)
                .h("content-md5", &md5)
                .body(other.clone()),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "BadDigest"));
    assert!(s3.send(Req::new("GET", &key)).await.body == body);
    let r = s3
        .send(
            Req::new("PUT", &key)
                .h("content-md5", "not-base64!")
                .body(other.clone()),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "InvalidDigest"));
    // Small (inline) and empty objects are checked too.
    let key0 = format!("/{BUCKET}/digest/empty");
    let r = s3
        .send(
            Req::new("PUT", &key0)
                .h("content-md5", &md5)
                .body(Bytes::new()),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "BadDigest"));
    assert_eq!(s3.send(Req::new("HEAD", &key0)).await.status, 404);

    // x-amz-checksum-crc32 as a header.
    let key = format!("/{BUCKET}/digest/crc-header");
    let r = s3
        .send(
            Req::new("PUT", &key)
                .h("x-amz-checksum-crc32", &crc32_b64(&body))
                .body(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-amz-checksum-crc32"),
        Some(crc32_b64(&body).as_str())
    );
    let r = s3
        .send(
            Req::new("PUT", &key)
                .h("x-amz-checksum-crc32", &crc32_b64(&other))
                .body(body.clone()),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "BadDigest"));

    // aws-chunked with the checksum in a trailer: right, then wrong.
    for (name, crc, ok) in [
        ("right", crc32_b64(&body), true),
        ("wrong", crc32_b64(&other), false),
    ] {
        let key = format!("/{BUCKET}/digest/trailer-{name}");
        let r = s3
            .send(
                Req::new("PUT", &key)
                    .h("content-encoding", "aws-chunked")
                    .h("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
                    .h("x-amz-decoded-content-length", &body.len().to_string())
                    .h("x-amz-trailer", "x-amz-checksum-crc32")
                    .body(aws_chunked(&body, &crc)),
            )
            .await;
        if ok {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("etag"), Some(quoted(&md5_hex(&body)).as_str()));
            let got = s3.send(Req::new("GET", &key)).await;
            assert!(got.body == body, "trailer PUT bytes");
            assert_eq!(
                got.header("content-encoding"),
                None,
                "aws-chunked is not stored"
            );
        } else {
            assert_eq!((r.status, r.error_code().as_str()), (400, "BadDigest"));
            assert_eq!(
                s3.send(Req::new("HEAD", &key)).await.status,
                404,
                "not committed"
            );
        }
    }
}
