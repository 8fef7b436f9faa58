//! Conversions between the wire types (`dogfs_proto::meta`) and the SDK's and core's types,
//! all in one place.

use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_proto::meta as pb;

use crate::error::Error;
use crate::types::{BucketInfo, ListEntry, ListPage, ObjectInfo, ObjectSummary, Scheme};

pub(crate) fn scheme_from_proto(s: &pb::ErasureScheme) -> Result<ErasureScheme, Error> {
    let codec: Codec = s
        .codec
        .parse()
        .map_err(|e| Error::protocol(format!("object scheme: {e}")))?;
    ErasureScheme::new(codec, s.k, s.m, s.cell_size)
        .map_err(|e| Error::protocol(format!("object scheme: {e}")))
}

pub(crate) fn bucket(b: Option<pb::Bucket>, name: &str) -> Result<BucketInfo, Error> {
    let b = b.ok_or_else(|| Error::protocol(format!("answer for bucket {name:?} lacks it")))?;
    Ok(BucketInfo {
        name: b.name,
        created_unix: b.created_unix,
    })
}

pub(crate) fn object(o: Option<pb::ObjectInfo>, what: &str) -> Result<ObjectInfo, Error> {
    let o = o.ok_or_else(|| Error::protocol(format!("answer for {what} lacks its info")))?;
    let scheme = o.scheme.unwrap_or_default();
    Ok(ObjectInfo {
        bucket: o.bucket,
        key: o.key,
        size: o.size,
        etag: o.etag,
        content_type: o.content_type,
        user_metadata: o.user_metadata.into_iter().collect(),
        created_unix: o.created_unix,
        version_id: o.version_id,
        scheme: Scheme {
            k: scheme.k,
            m: scheme.m,
            cell_size: scheme.cell_size,
        },
        segment_size: o.segment_size,
        inline: o.inline,
    })
}

/// Objects and common prefixes merged into one list in key order (S3's order).
pub(crate) fn list_page(r: pb::ListObjectsResponse) -> ListPage {
    let mut entries: Vec<ListEntry> = r
        .objects
        .into_iter()
        .map(|o| {
            ListEntry::Object(ObjectSummary {
                key: o.key,
                size: o.size,
                etag: o.etag,
                created_unix: o.created_unix,
                version_id: o.version_id,
            })
        })
        .chain(r.common_prefixes.into_iter().map(ListEntry::CommonPrefix))
        .collect();
    entries.sort_by(|a, b| a.name().as_bytes().cmp(b.name().as_bytes()));
    let next_token =
        (r.truncated && !r.next_continuation_token.is_empty()).then_some(r.next_continuation_token);
    ListPage {
        entries,
        truncated: r.truncated,
        next_token,
    }
}
