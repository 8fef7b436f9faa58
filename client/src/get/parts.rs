//! Reads of an object completed from parts (multipart upload): each part has its own geometry
//! (size, segment size), so a range is cut at part boundaries and each piece is read with its
//! part's layout and its segments renumbered from 0; shard problems are numbered back as the
//! object's segments for `ReportShards`.

use std::ops::Range;
use std::sync::Arc;

use dogfs_core::codec::ErasureCodec;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::scheme::ErasureScheme;
use dogfs_proto::meta::{PartExtent, Segment, ShardProblem};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{DataPlaneConfig, download_reporting};
use crate::error::Error;
use crate::pool::ChunkPool;
use crate::types::Progress;

/// Object bytes `range` of an object of `size` bytes made of `parts`, whose `segments` are
/// numbered across the parts. Returns the bytes written and every shard the read could not use.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn download_parts<W: AsyncWrite + Unpin + Send>(
    pool: &ChunkPool,
    cfg: &DataPlaneConfig,
    codec: Arc<dyn ErasureCodec>,
    what: &str,
    size: u64,
    scheme: ErasureScheme,
    mut segments: Vec<Segment>,
    parts: Vec<PartExtent>,
    range: Range<u64>,
    writer: &mut W,
    progress: Option<&Progress>,
) -> (Result<u64, Error>, Vec<ShardProblem>) {
    // Each part takes the next segments in order.
    segments.sort_by_key(|s| s.index);
    if range.start > range.end || range.end > size {
        let e = Error::invalid(format!(
            "range {}..{} of {what} is outside its {size} bytes",
            range.start, range.end
        ));
        return (Err(e), Vec::new());
    }
    let plan = match plan_parts(what, size, scheme, &parts, segments.len()) {
        Ok(p) => p,
        Err(e) => return (Err(e), Vec::new()),
    };
    let mut problems = Vec::new();
    let mut done = 0u64;
    let mut segments = segments.into_iter();
    for part in plan {
        let own: Vec<Segment> = segments
            .by_ref()
            .take(part.segments as usize)
            .map(|mut s| {
                s.index = s.index.saturating_sub(part.first_segment);
                s
            })
            .collect();
        let start = range.start.max(part.offset);
        let end = range.end.min(part.offset + part.layout.size());
        if start >= end {
            continue;
        }
        let before = done;
        let part_progress: Option<Progress> = progress.map(|p| -> Progress {
            let p = Arc::clone(p);
            Arc::new(move |n| p(before + n))
        });
        let (r, mut unusable) = download_reporting(
            pool,
            cfg,
            Arc::clone(&codec),
            part.layout,
            Arc::new(own),
            start - part.offset..end - part.offset,
            writer,
            part_progress.as_ref(),
            // A multipart ETag carries no CRC32C; every shard's own checksum is checked.
            None,
        )
        .await;
        for p in &mut unusable {
            p.segment += part.first_segment;
        }
        problems.append(&mut unusable);
        match r {
            Ok(n) => done += n,
            Err(e) => return (Err(e), problems),
        }
    }
    if let Err(e) = writer.flush().await {
        return (Err(e.into()), problems);
    }
    if let Err(e) = writer.flush().await {
        return (Err(e.into()), problems);
    }
    (Ok(done), problems)
}

/// One part of an object completed from parts, as a read sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartPlan {
    /// Object offset of the part's first byte.
    offset: u64,
    first_segment: u64,
    segments: u64,
    layout: ObjectLayout,
}

/// The parts' layouts, checked against the object's size and segment count.
fn plan_parts(
    what: &str,
    size: u64,
    scheme: ErasureScheme,
    parts: &[PartExtent],
    segment_count: usize,
) -> Result<Vec<PartPlan>, Error> {
    let mut out = Vec::with_capacity(parts.len());
    let (mut offset, mut first) = (0u64, 0u64);
    for p in parts {
        let layout = ObjectLayout::new(p.size, p.segment_size, scheme)
            .map_err(|e| Error::protocol(format!("{what}: part {}: {e}", p.part_number)))?;
        out.push(PartPlan {
            offset,
            first_segment: first,
            segments: layout.segment_count(),
            layout,
        });
        offset = offset.saturating_add(p.size);
        first += layout.segment_count();
    }
    if offset != size || first != segment_count as u64 {
        return Err(Error::protocol(format!(
            "{what}: its {} parts hold {offset} bytes in {first} segments; the object has {size} \
             bytes and the layout {segment_count} segments",
            parts.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_planned_in_order_and_checked() {
        let scheme =
            ErasureScheme::new(dogfs_core::scheme::Codec::ReedSolomon, 2, 1, 4096).unwrap();
        let parts = [
            PartExtent {
                part_number: 1,
                size: 20_000,
                segment_size: 8192,
            },
            PartExtent {
                part_number: 3,
                size: 10,
                segment_size: 16384,
            },
        ];
        let plan = plan_parts("o", 20_010, scheme, &parts, 4).unwrap();
        assert_eq!(
            plan.iter()
                .map(|p| (p.offset, p.first_segment, p.segments))
                .collect::<Vec<_>>(),
            vec![(0, 0, 3), (20_000, 3, 1)]
        );
        assert!(plan_parts("o", 20_011, scheme, &parts, 4).is_err());
        assert!(plan_parts("o", 20_010, scheme, &parts, 5).is_err());
    }
}
