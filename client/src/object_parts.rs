//! The parts of an object completed from a multipart upload, as S3's `partNumber` reads
//! (GetObject, HeadObject) and `x-amz-mp-parts-count` see them: each part's number, size and
//! place in the object, from the layout the metadata service keeps (`PartExtent`).

use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use tracing::{Instrument, info_span};

use super::{Client, names, object_what};
use crate::convert;
use crate::error::Error;
use crate::types::ObjectInfo;

/// One part of an object completed from parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectPart {
    /// The number it was uploaded under (completions may skip numbers).
    pub part_number: u32,
    /// Object offset of its first byte.
    pub offset: u64,
    pub size: u64,
}

/// An object version and, when it was completed from a multipart upload, its parts in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectParts {
    pub info: ObjectInfo,
    /// Empty for an object written in one PUT (or copy).
    pub parts: Vec<ObjectPart>,
}

impl ObjectParts {
    /// The `n`th part (1-based, S3's `partNumber`: its position among the parts), if any.
    pub fn nth(&self, n: u32) -> Option<ObjectPart> {
        let i = usize::try_from(n.checked_sub(1)?).ok()?;
        self.parts.get(i).copied()
    }
}

/// The parts' places, checked against the object's size.
fn place(extents: &[pb::PartExtent], size: u64, what: &str) -> Result<Vec<ObjectPart>, Error> {
    let mut out = Vec::with_capacity(extents.len());
    let mut offset = 0u64;
    for p in extents {
        out.push(ObjectPart {
            part_number: p.part_number,
            offset,
            size: p.size,
        });
        offset = offset
            .checked_add(p.size)
            .ok_or_else(|| Error::protocol(format!("{what}: part sizes overflow")))?;
    }
    if !extents.is_empty() && offset != size {
        return Err(Error::protocol(format!(
            "{what}: its {} parts hold {offset} bytes, the object {size}",
            extents.len()
        )));
    }
    Ok(out)
}

impl Client {
    /// The object's info and its parts (empty unless it was completed from a multipart
    /// upload). One metadata call; no object bytes are read.
    pub async fn object_parts(&self, bucket: &str, key: &str) -> Result<ObjectParts, Error> {
        let (b, k) = names(bucket, key)?;
        let what = object_what(bucket, key);
        // GetObject is the call that answers the layout; the segments it also names are
        // dropped (HeadObject carries no parts).
        let req = pb::GetObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        };
        let r = self
            .inner
            .meta
            .call(
                "GetObject",
                &what,
                self.route(&b, &k),
                self.deadline(),
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).get_object(req).await }
                },
            )
            .instrument(info_span!("object_parts", bucket, key))
            .await?;
        let info = convert::object(r.object, &what)?;
        let parts = place(&r.parts, info.size, &what)?;
        Ok(ObjectParts { info, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(part_number: u32, size: u64) -> pb::PartExtent {
        pb::PartExtent {
            part_number,
            size,
            segment_size: 1 << 20,
        }
    }

    #[test]
    fn parts_are_placed_in_order_and_checked() {
        let parts = place(&[extent(1, 10), extent(3, 5)], 15, "o").unwrap();
        assert_eq!(
            parts,
            vec![
                ObjectPart {
                    part_number: 1,
                    offset: 0,
                    size: 10
                },
                ObjectPart {
                    part_number: 3,
                    offset: 10,
                    size: 5
                },
            ]
        );
        assert!(place(&[extent(1, 10)], 11, "o").is_err());
        assert!(place(&[], 11, "o").unwrap().is_empty());
    }
}
