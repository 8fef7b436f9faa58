//! AWS Signature Version 4 for S3, written from the AWS documentation: header signing with
//! a signed payload hash, and presigned URLs (UNSIGNED-PAYLOAD).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    /// Lowercase names; `host` among them.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// `YYYYMMDDTHHMMSSZ` of now.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
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
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

pub fn sha256_hex(data: &[u8]) -> String {
    super::hex(&Sha256::digest(data))
}

/// RFC 3986 encoding as SigV4 wants it; `/` kept in paths.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
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
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let sig = super::hex(&hmac(&signing_key(secret, date, region), &to_sign));
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
    let date = &amz_date[..8];
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
    let date = &amz_date[..8];
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
        "UNSIGNED-PAYLOAD",
        secret,
        region,
        &amz_date,
    );
    query.push(("X-Amz-Signature".to_owned(), sig));
    format!("{}{}", encode_path(path), query_string(&query))
}
