//! Validation of a `ReconstructShard` request, naming the bad field, and the geometry of its
//! segment (effective cell size, stripes, shard length), derived with `dogfs_core::layout`
//! from `segment_len` and the scheme alone.

use dogfs_core::ids::ShardId;
use dogfs_core::layout::{ObjectLayout, SegmentLayout};
use dogfs_core::scheme::{Codec, ErasureScheme, MAX_TOTAL_SHARDS};
use dogfs_proto::chunk::ReconstructShardRequest;

use super::{MAX_SEGMENT_LEN, RepairError};
use crate::heartbeat::check_host_port;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RepairError {
    RepairError::Validate {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One source of a validated request.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub(super) index: usize,
    pub(super) id: ShardId,
    pub(super) address: String,
    pub(super) crc32c: u32,
}

/// A validated request.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) id: ShardId,
    pub(super) index: usize,
    pub(super) scheme: ErasureScheme,
    pub(super) segment: SegmentLayout,
    pub(super) expected: Option<u32>,
    pub(super) sources: Vec<Source>,
}

impl Plan {
    pub(super) fn shard_len(&self) -> u64 {
        self.segment.shard_len()
    }

    pub(super) fn k(&self) -> usize {
        self.segment.k()
    }
}

/// Checks every field, naming the bad one, and derives the segment's geometry.
pub(super) fn validate(req: &ReconstructShardRequest) -> Result<Plan, RepairError> {
    let id: ShardId = req
        .shard_id
        .parse()
        .map_err(|e| invalid("shard_id", format!("{e}")))?;
    let codec: Codec = req
        .codec
        .parse()
        .map_err(|e| invalid("codec", format!("{e}")))?;
    let scheme = ErasureScheme::new(codec, req.k, req.m, req.cell_size)
        .map_err(|e| invalid("scheme", e.to_string()))?;
    if req.segment_len == 0 || req.segment_len > MAX_SEGMENT_LEN {
        return Err(invalid(
            "segment_len",
            format!(
                "{} is not within 1..={MAX_SEGMENT_LEN} bytes",
                req.segment_len
            ),
        ));
    }
    let total = scheme.total();
    let index = req.index as usize;
    if index >= total {
        return Err(invalid(
            "index",
            format!("{index} is not a shard of {scheme} (0..{total})"),
        ));
    }
    let k = usize::from(scheme.k());
    if req.sources.len() < k {
        return Err(invalid(
            "sources",
            format!(
                "{} given, at least k = {k} are needed for {scheme}",
                req.sources.len()
            ),
        ));
    }
    let mut seen = [false; MAX_TOTAL_SHARDS];
    let mut sources = Vec::with_capacity(req.sources.len());
    for (n, s) in req.sources.iter().enumerate() {
        let si = s.index as usize;
        let field = |name: &str| format!("sources[{n}].{name}");
        if si >= total {
            return Err(invalid(
                field("index"),
                format!("{si} is not a shard of {scheme} (0..{total})"),
            ));
        }
        if si == index {
            return Err(invalid(
                field("index"),
                format!("{si} is the index being rebuilt"),
            ));
        }
        if std::mem::replace(&mut seen[si], true) {
            return Err(invalid(
                field("index"),
                format!("{si} is given by more than one source"),
            ));
        }
        let sid: ShardId = s
            .shard_id
            .parse()
            .map_err(|e| invalid(field("shard_id"), format!("{e}")))?;
        if sid == id {
            return Err(invalid(
                field("shard_id"),
                format!("{sid} is the id being rebuilt"),
            ));
        }
        check_host_port("source address", &s.address)
            .map_err(|e| invalid(field("address"), e.to_string()))?;
        sources.push(Source {
            index: si,
            id: sid,
            address: s.address.clone(),
            crc32c: s.crc32c,
        });
    }
    // The segment as the only segment of an object of segment_len bytes: the effective cell
    // size depends on the segment's length and the scheme alone (docs/erasure.md), so this
    // is the geometry the writer used, whichever segment of its object this was.
    let segment_size = req.segment_len.next_multiple_of(scheme.stripe_data_size());
    let segment = ObjectLayout::new(req.segment_len, segment_size, scheme)?.segment(0)?;
    Ok(Plan {
        id,
        index,
        scheme,
        segment,
        expected: req.expected_crc32c,
        sources,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dogfs_proto::chunk::ReconstructSource;
    use tonic::Status;

    fn request() -> ReconstructShardRequest {
        ReconstructShardRequest {
            shard_id: ShardId::random().to_string(),
            index: 0,
            codec: "rs".into(),
            k: 4,
            m: 2,
            cell_size: 64 * 1024,
            segment_len: 1_000_000,
            expected_crc32c: None,
            sources: (1..6)
                .map(|i| ReconstructSource {
                    index: i,
                    shard_id: ShardId::random().to_string(),
                    address: format!("127.0.0.1:{}", 7000 + i),
                    crc32c: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn geometry_matches_the_writer_layout() {
        let plan = validate(&request()).unwrap();
        // 1 000 000 bytes over 4 × 64 KiB stripes: 4 stripes; cells spread evenly, rounded up
        // to 64: ⌈1 000 000 / 16⌉ = 62 500 → 62 528.
        assert_eq!(plan.segment.stripe_count(), 4);
        assert_eq!(plan.segment.cell_size(), 62_528);
        assert_eq!(plan.shard_len(), 4 * 62_528);
        let scheme = ErasureScheme::new(Codec::ReedSolomon, 4, 2, 64 * 1024).unwrap();
        // The same segment as the last of a longer object.
        let obj = ObjectLayout::new(3 * 1024 * 1024 + 1_000_000, 1024 * 1024, scheme).unwrap();
        let last = obj.segment(3).unwrap();
        assert_eq!(last.cell_size(), plan.segment.cell_size());
        assert_eq!(last.shard_len(), plan.shard_len());
    }

    #[test]
    fn every_bad_field_is_named() {
        type Mutate = Box<dyn Fn(&mut ReconstructShardRequest)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (Box::new(|r| r.shard_id = "xyz".into()), "shard_id"),
            (Box::new(|r| r.codec = "lrc".into()), "codec"),
            (Box::new(|r| r.k = 0), "scheme"),
            (Box::new(|r| r.m = 40), "scheme"),
            (Box::new(|r| r.cell_size = 100), "scheme"),
            (Box::new(|r| r.segment_len = 0), "segment_len"),
            (
                Box::new(|r| r.segment_len = MAX_SEGMENT_LEN + 1),
                "segment_len",
            ),
            (Box::new(|r| r.index = 6), "index"),
            (Box::new(|r| r.sources.truncate(3)), "sources"),
            (Box::new(|r| r.sources[1].index = 0), "sources[1].index"),
            (Box::new(|r| r.sources[2].index = 1), "sources[2].index"),
            (Box::new(|r| r.sources[0].index = 9), "sources[0].index"),
            (
                Box::new(|r| r.sources[3].shard_id = "zz".into()),
                "sources[3].shard_id",
            ),
            (
                Box::new(|r| r.sources[3].shard_id = r.shard_id.clone()),
                "sources[3].shard_id",
            ),
            (
                Box::new(|r| r.sources[4].address = "nohost".into()),
                "sources[4].address",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = request();
            mutate(&mut r);
            let e = validate(&r).unwrap_err();
            assert!(
                matches!(&e, RepairError::Validate { field: f, .. } if f == field),
                "{field}: {e}"
            );
            assert_eq!(Status::from(e).code(), tonic::Code::InvalidArgument);
        }
        validate(&request()).unwrap();
    }
}
