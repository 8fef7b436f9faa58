//! ListObjectsV2, ListObjects and ListObjectVersions against a model of S3's listing.

use std::collections::BTreeSet;

use crate::common::{Req, S3, xml};

/// S3's listing of `keys` for a prefix and delimiter: (keys, common prefixes).
fn model(keys: &BTreeSet<String>, prefix: &str, delimiter: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys.iter().filter(|k| k.starts_with(prefix)) {
        let rest = &k[prefix.len()..];
        let entry = match (!delimiter.is_empty())
            .then(|| rest.find(delimiter))
            .flatten()
        {
            Some(i) => format!("{prefix}{}", &rest[..i + delimiter.len()]),
            None => k.clone(),
        };
        if out.last() != Some(&entry) {
            out.push(entry);
        }
    }
    out
}

async fn list_v2_all(
    s3: &S3,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    max: u32,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let mut req = Req::new("GET", bucket)
            .q("list-type", "2")
            .q("prefix", prefix)
            .q("max-keys", &max.to_string());
        if !delimiter.is_empty() {
            req = req.q("delimiter", delimiter);
        }
        if let Some(t) = &token {
            req = req.q("continuation-token", t);
        }
        let r = s3.send(req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let doc = r.text();
        let mut page: Vec<String> = xml::all(&doc, "Contents/Key");
        page.extend(xml::all(&doc, "CommonPrefixes/Prefix"));
        page.sort();
        assert!(page.len() <= max as usize);
        let count: usize = xml::one(&doc, "KeyCount").unwrap().parse().unwrap();
        assert_eq!(count, page.len());
        got.extend(page);
        if xml::one(&doc, "IsTruncated").as_deref() == Some("true") {
            token = Some(xml::one(&doc, "NextContinuationToken").unwrap());
        } else {
            return got;
        }
    }
    panic!("listing never ended");
}

async fn list_v1_all(
    s3: &S3,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    max: u32,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut marker = String::new();
    for _ in 0..1000 {
        let mut req = Req::new("GET", bucket)
            .q("prefix", prefix)
            .q("max-keys", &max.to_string())
            .q("marker", &marker);
        if !delimiter.is_empty() {
            req = req.q("delimiter", delimiter);
        }
        let r = s3.send(req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let doc = r.text();
        let mut page: Vec<String> = xml::all(&doc, "Contents/Key");
        page.extend(xml::all(&doc, "CommonPrefixes/Prefix"));
        page.sort();
        got.extend(page.iter().cloned());
        if xml::one(&doc, "IsTruncated").as_deref() != Some("true") {
            return got;
        }
        // With a delimiter S3 gives NextMarker; without, clients go on from the last key.
        marker = xml::one(&doc, "NextMarker").unwrap_or_else(|| page.last().unwrap().clone());
    }
    panic!("listing never ended");
}

pub async fn listing_against_a_model(s3: &S3) {
    let bucket = "/listing";
    assert_eq!(s3.send(Req::new("PUT", bucket)).await.status, 200);
    let mut keys = BTreeSet::new();
    for i in 0..12 {
        keys.insert(format!("a/{i:02}"));
        keys.insert(format!("a/sub{}/x{i}", i % 3));
        keys.insert(format!("b{i}"));
    }
    keys.insert("c/deep/er/key".to_owned());
    keys.insert("space key+plus".to_owned());
    for k in &keys {
        let r = s3
            .send(Req::new("PUT", &format!("{bucket}/{k}")).body(k.clone()))
            .await;
        assert_eq!(r.status, 200, "{k}");
    }
    for (prefix, delimiter) in [
        ("", ""),
        ("", "/"),
        ("a/", "/"),
        ("a/", ""),
        ("a/sub1", "/"),
        ("zz", "/"),
    ] {
        let want = model(&keys, prefix, delimiter);
        for max in [1, 7, 1000] {
            let got = list_v2_all(s3, bucket, prefix, delimiter, max).await;
            assert_eq!(
                got, want,
                "V2 prefix {prefix:?} delimiter {delimiter:?} max {max}"
            );
            let got = list_v1_all(s3, bucket, prefix, delimiter, max).await;
            assert_eq!(
                got, want,
                "V1 prefix {prefix:?} delimiter {delimiter:?} max {max}"
            );
        }
    }
    // start-after, encoding-type=url, versions.
    let r = s3
        .send(
            Req::new("GET", bucket)
                .q("list-type", "2")
                .q("start-after", "b9")
                .q("encoding-type", "url"),
        )
        .await;
    let got = xml::all(&r.text(), "Contents/Key");
    assert_eq!(
        got,
        vec!["c/deep/er/key".to_owned(), "space%20key%2Bplus".to_owned()]
    );
    let r = s3
        .send(Req::new("GET", bucket).q("versions", "").q("prefix", "b1"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(xml::all(&r.text(), "Version/Key"), vec!["b1", "b10", "b11"]);
    assert!(
        xml::all(&r.text(), "Version/VersionId")
            .iter()
            .all(|v| v == "null")
    );
}
