//! AWS Signature Version 4 for S3 clients, written from the AWS documentation: header signing
//! (with a signed payload hash, or `UNSIGNED-PAYLOAD` for a streamed body) and presigned URLs.
//!
//! The gateway verifies signatures through `s3s`; this is the signing side, for the gateway's
//! tests and `dogfs bench s3`, so that one copy of it exists.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The payload hash of a body that is not hashed (streamed bodies, presigned URLs).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The object path as the client means it (`/bucket/key`), not yet percent-encoded.
    pub path: &'a str,
    pub query: &'a [(String, String)],
    /// Lowercase names; `host` among them. An `x-amz-content-sha256` header here is the
    /// payload hash signed (e.g. [`UNSIGNED_PAYLOAD`]); without one, `body` is hashed.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// `YYYYMMDDTHHMMSSZ` of now.
pub fn now() -> String {
    amz_date(time::OffsetDateTime::now_utc())
}

/// `YYYYMMDDTHHMMSSZ` of `t` (UTC).
pub fn amz_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC takes keys of any length (longer ones are hashed): this cannot fail.
    #[allow(clippy::expect_used)]
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// RFC 3986 encoding as SigV4 wants it; `/` kept in paths.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path as sent and as signed (S3 does not double-encode).
pub fn encode_path(path: &str) -> String {
    encode(path, true)
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode(k, false), encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `?k=v&…` (or empty), encoded like the canonical query.
pub fn query_string(query: &[(String, String)]) -> String {
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", canonical_query(query))
    }
}

fn signing_key(secret: &str, date: &str, region: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, "s3");
    hmac(&k, "aws4_request")
}

/// The signature and the signed-headers list of a request whose headers are all signed.
#[allow(clippy::too_many_arguments)]
fn signature(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload_hash: &str,
    secret: &str,
    region: &str,
    amz_date: &str,
) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    hs.sort();
    let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        encode_path(path),
        canonical_query(query)
    );
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let sig = hex(&hmac(&signing_key(secret, date, region), &to_sign));
    (sig, signed_headers)
}

/// The request's headers plus `x-amz-date`, `x-amz-content-sha256` (unless given) and
/// `authorization`.
pub fn sign_headers(
    req: &Request<'_>,
    access_key: &str,
    secret: &str,
    region: &str,
    amz_date: String,
) -> Vec<(String, String)> {
    let mut headers = req.headers.to_vec();
    let payload_hash = match headers.iter().find(|(k, _)| k == "x-amz-content-sha256") {
        Some((_, v)) => v.clone(),
        None => {
            let h = sha256_hex(req.body);
            headers.push(("x-amz-content-sha256".to_owned(), h.clone()));
            h
        }
    };
    headers.push(("x-amz-date".to_owned(), amz_date.clone()));
    let (sig, signed) = signature(
        req.method,
        req.path,
        req.query,
        &headers,
        &payload_hash,
        secret,
        region,
        &amz_date,
    );
    let date = amz_date.get(..8).unwrap_or(&amz_date);
    headers.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/{date}/{region}/s3/aws4_request, \
             SignedHeaders={signed}, Signature={sig}"
        ),
    ));
    headers
}

/// A presigned URL's path and query.
#[allow(clippy::too_many_arguments)]
pub fn presign(
    method: &str,
    path: &str,
    host: &str,
    access_key: &str,
    secret: &str,
    region: &str,
    expires: u64,
    amz_date: String,
) -> String {
    let date = amz_date.get(..8).unwrap_or(&amz_date);
    let mut query = vec![
        ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
        (
            "X-Amz-Credential".to_owned(),
            format!("{access_key}/{date}/{region}/s3/aws4_request"),
        ),
        ("X-Amz-Date".to_owned(), amz_date.clone()),
        ("X-Amz-Expires".to_owned(), expires.to_string()),
        ("X-Amz-SignedHeaders".to_owned(), "host".to_owned()),
    ];
    let headers = vec![("host".to_owned(), host.to_owned())];
    let (sig, _) = signature(
        method,
        path,
        &query,
        &headers,
        UNSIGNED_PAYLOAD,
        secret,
        region,
        &amz_date,
    );
    query.push(("X-Amz-Signature".to_owned(), sig));
    format!("{}{}", encode_path(path), query_string(&query))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of the S3 API reference, "Signature Calculations for the Authorization
    // Header: Transferring Payload in a Single Chunk (AWS Signature Version 4)" and
    // "Authenticating Requests: Using Query Parameters".
    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const HOST: &str = "examplebucket.s3.amazonaws.com";
    const DATE: &str = "20130524T000000Z";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn h(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    fn authorization(headers: &[(String, String)]) -> &str {
        headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn get_object_matches_the_aws_example() {
        let headers = [
            h("host", HOST),
            h("range", "bytes=0-9"),
            h("x-amz-content-sha256", EMPTY_SHA256),
        ];
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            body: b"",
        };
        let signed = sign_headers(&req, AK, SK, "us-east-1", DATE.to_owned());
        assert_eq!(
            authorization(&signed),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn put_object_hashes_the_body_like_the_aws_example() {
        let headers = [
            h("host", HOST),
            h("date", "Fri, 24 May 2013 00:00:00 GMT"),
            h("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ];
        let req = Request {
            method: "PUT",
            path: "/test$file.text",
            query: &[],
            headers: &headers,
            body: b"Welcome to Amazon S3.",
        };
        let signed = sign_headers(&req, AK, SK, "us-east-1", DATE.to_owned());
        assert!(signed.contains(&h(
            "x-amz-content-sha256",
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        )));
        assert!(
            authorization(&signed).ends_with(
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, \
                 Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            ),
            "{}",
            authorization(&signed)
        );
    }

    #[test]
    fn list_objects_signs_the_sorted_query_like_the_aws_example() {
        let headers = [h("host", HOST), h("x-amz-content-sha256", EMPTY_SHA256)];
        // Given out of order: the canonical query sorts it.
        let query = [h("prefix", "J"), h("max-keys", "2")];
        let req = Request {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            body: b"",
        };
        let signed = sign_headers(&req, AK, SK, "us-east-1", DATE.to_owned());
        assert!(
            authorization(&signed).ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{}",
            authorization(&signed)
        );
        assert_eq!(query_string(&query), "?max-keys=2&prefix=J");
    }

    #[test]
    fn presigned_get_matches_the_aws_example() {
        let url = presign(
            "GET",
            "/test.txt",
            HOST,
            AK,
            SK,
            "us-east-1",
            86400,
            DATE.to_owned(),
        );
        assert_eq!(
            url,
            "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404\
             &X-Amz-SignedHeaders=host"
        );
    }

    #[test]
    fn dates_and_encoding() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_369_353_600).unwrap();
        assert_eq!(amz_date(t), DATE);
        assert_eq!(encode_path("/b/a key+é"), "/b/a%20key%2B%C3%A9");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
