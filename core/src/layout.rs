//! Segment, stripe and cell arithmetic (DESIGN §3).
//!
//! An object of `size` bytes is cut into segments of `segment_size` data bytes (the last may be
//! shorter). A segment is encoded stripe by stripe; stripe s carries segment bytes
//! `[s·k·c, (s+1)·k·c)` where c is the segment's effective cell size, split into k data cells
//! of c bytes (cell i = bytes `[i·c, (i+1)·c)` of the stripe) plus m parity cells. Shard i of a
//! segment is cell i of every stripe back to back, so the cell of stripe s sits at
//! `[s·c, (s+1)·c)` in the shard file and a shard is `stripes × c` bytes. Bytes past the end of
//! the segment's data in its last stripe are zeros (they are encoded, stored, and never read
//! back as object data).
//!
//! **Effective cell size.** A full segment uses the scheme's `cell_size`. A short segment (the
//! last one, or the only one of a small object) of L bytes uses the smallest 64-byte multiple
//! that carries L bytes in the same number of stripes a full-size cell would need:
//! `stripes₀ = ⌈L / (k·cell_size)⌉`, `c = min(cell_size, ⌈⌈L / (k·stripes₀)⌉⌉₆₄)`, and then
//! `stripes = ⌈L / (k·c)⌉`. For L ≤ k·cell_size that is `⌈L/k⌉` rounded up to 64; for a longer
//! short segment the data is spread evenly over its stripes, so padding stays under 64·k bytes
//! per stripe instead of up to a whole stripe. A full segment (L = segment_size, a multiple of
//! k·cell_size) gets exactly `cell_size`.
//!
//! **Empty objects** have no segments (and no shards); a range read of an empty object may only
//! ask for the empty range at offset 0.

use std::ops::Range;

use crate::scheme::{CELL_ALIGN, ErasureScheme};

/// Default data bytes per segment: 64 MiB, i.e. 16 stripes of RS 4+2 with 1 MiB cells.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "invalid segment_size {segment_size}: must be a positive multiple of k × cell_size = \
         {stripe_data} for scheme {scheme}"
    )]
    SegmentSize {
        segment_size: u64,
        stripe_data: u64,
        scheme: ErasureScheme,
    },
    #[error("segment {index} does not exist: the object has {count} segments")]
    SegmentIndex { index: u64, count: u64 },
    #[error("stripe {stripe} does not exist: segment {segment} has {count} stripes")]
    StripeIndex {
        segment: u64,
        stripe: u64,
        count: u64,
    },
    #[error("position {position} is past the end of segment {segment} ({len} data bytes)")]
    SegmentPosition {
        segment: u64,
        position: u64,
        len: u64,
    },
    #[error("range at offset {offset} with length {len} overflows a 64-bit offset")]
    RangeOverflow { offset: u64, len: u64 },
    #[error("range [{offset}, {end}) is past the end of the object ({size} bytes)")]
    RangeEnd { offset: u64, end: u64, size: u64 },
}

/// How one object's bytes are spread over segments, stripes and cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    size: u64,
    segment_size: u64,
    scheme: ErasureScheme,
}

impl ObjectLayout {
    pub fn new(size: u64, segment_size: u64, scheme: ErasureScheme) -> Result<Self, LayoutError> {
        let stripe_data = scheme.stripe_data_size();
        if segment_size == 0 || !segment_size.is_multiple_of(stripe_data) {
            return Err(LayoutError::SegmentSize {
                segment_size,
                stripe_data,
                scheme,
            });
        }
        Ok(Self {
            size,
            segment_size,
            scheme,
        })
    }

    pub const fn size(&self) -> u64 {
        self.size
    }

    pub const fn segment_size(&self) -> u64 {
        self.segment_size
    }

    pub const fn scheme(&self) -> ErasureScheme {
        self.scheme
    }

    /// `⌈size / segment_size⌉`; 0 for an empty object.
    pub const fn segment_count(&self) -> u64 {
        self.size.div_ceil(self.segment_size)
    }

    pub fn segment(&self, index: u64) -> Result<SegmentLayout, LayoutError> {
        let count = self.segment_count();
        if index >= count {
            return Err(LayoutError::SegmentIndex { index, count });
        }
        Ok(self.segment_unchecked(index))
    }

    /// `index` < segment_count.
    fn segment_unchecked(&self, index: u64) -> SegmentLayout {
        let object_offset = index * self.segment_size;
        let data_len = (self.size - object_offset).min(self.segment_size);
        SegmentLayout::new(index, object_offset, data_len, self.scheme)
    }

    /// Every segment in order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentLayout> + '_ {
        (0..self.segment_count()).map(|i| self.segment_unchecked(i))
    }

    /// The segment holding object byte `offset`, and the byte's position inside it.
    pub fn segment_at(&self, offset: u64) -> Result<(SegmentLayout, u64), LayoutError> {
        if offset >= self.size {
            return Err(LayoutError::RangeEnd {
                offset,
                end: offset.saturating_add(1),
                size: self.size,
            });
        }
        let index = offset / self.segment_size;
        Ok((self.segment_unchecked(index), offset % self.segment_size))
    }

    /// The cells that hold object bytes `[offset, offset + len)`, in object order, one
    /// [`Piece`] per touched cell. Only the cells holding requested bytes are listed. An empty
    /// range (len 0, offset ≤ size) yields nothing.
    ///
    /// A degraded read that lacks a data shard can rebuild exactly a piece's bytes: Reed-Solomon
    /// works per byte column, so the same `[shard_offset, shard_offset + len)` of any k other
    /// shards of the segment suffices.
    pub fn pieces(&self, offset: u64, len: u64) -> Result<Pieces, LayoutError> {
        let end = offset
            .checked_add(len)
            .ok_or(LayoutError::RangeOverflow { offset, len })?;
        if end > self.size {
            return Err(LayoutError::RangeEnd {
                offset,
                end,
                size: self.size,
            });
        }
        Ok(Pieces {
            layout: *self,
            start: offset,
            next: offset,
            end,
        })
    }
}

/// One segment's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLayout {
    index: u64,
    object_offset: u64,
    data_len: u64,
    k: u8,
    m: u8,
    cell_size: u32,
}

/// Where one data byte of a segment lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellPosition {
    pub stripe: u64,
    /// Data shard index, < k.
    pub shard: usize,
    /// Offset inside the cell.
    pub cell_offset: u64,
    /// Offset inside the shard file: `stripe · cell + cell_offset`.
    pub shard_offset: u64,
}

/// How a writer fills one data cell of a stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCut {
    /// Data shard index, < k.
    pub shard: usize,
    /// Segment-relative data bytes in this cell; empty when the data ended in an earlier cell.
    pub data: Range<u64>,
    /// Zero bytes after the data, so that `data.len() + padding` = the cell size.
    pub padding: u64,
}

impl SegmentLayout {
    /// Geometry of a segment with `data_len` ≥ 1 bytes; see the module docs for the cell rule.
    fn new(index: u64, object_offset: u64, data_len: u64, scheme: ErasureScheme) -> Self {
        Self {
            index,
            object_offset,
            data_len,
            k: scheme.k(),
            m: scheme.m(),
            cell_size: effective_cell_size(data_len, &scheme),
        }
    }

    pub const fn index(&self) -> u64 {
        self.index
    }

    /// Object offset of the segment's first byte.
    pub const fn object_offset(&self) -> u64 {
        self.object_offset
    }

    /// Data bytes in the segment.
    pub const fn data_len(&self) -> u64 {
        self.data_len
    }

    pub const fn k(&self) -> usize {
        self.k as usize
    }

    pub const fn m(&self) -> usize {
        self.m as usize
    }

    /// k + m: shard files of this segment.
    pub const fn total_shards(&self) -> usize {
        self.k as usize + self.m as usize
    }

    /// This segment's effective cell size (the scheme's, or smaller when short).
    pub const fn cell_size(&self) -> u64 {
        self.cell_size as u64
    }

    /// Data bytes in a stripe of this segment, k × cell.
    pub const fn stripe_data_size(&self) -> u64 {
        self.k as u64 * self.cell_size as u64
    }

    pub const fn stripe_count(&self) -> u64 {
        self.data_len.div_ceil(self.stripe_data_size())
    }

    /// Bytes in each of the segment's k + m shard files: stripes × cell.
    pub const fn shard_len(&self) -> u64 {
        self.stripe_count() * self.cell_size()
    }

    fn check_stripe(&self, stripe: u64) -> Result<(), LayoutError> {
        let count = self.stripe_count();
        if stripe >= count {
            return Err(LayoutError::StripeIndex {
                segment: self.index,
                stripe,
                count,
            });
        }
        Ok(())
    }

    /// Segment-relative data bytes carried by `stripe`; shorter than k × cell only for the last.
    pub fn stripe_data_range(&self, stripe: u64) -> Result<Range<u64>, LayoutError> {
        self.check_stripe(stripe)?;
        let start = stripe * self.stripe_data_size();
        Ok(start..(start + self.stripe_data_size()).min(self.data_len))
    }

    /// Where `stripe`'s cells sit in every shard file: `[stripe·cell, (stripe+1)·cell)`.
    pub fn stripe_shard_range(&self, stripe: u64) -> Result<Range<u64>, LayoutError> {
        self.check_stripe(stripe)?;
        let start = stripe * self.cell_size();
        Ok(start..start + self.cell_size())
    }

    /// How `stripe`'s data is cut into its k data cells. Equivalently: copy
    /// [`Self::stripe_data_range`] into a zeroed buffer of k × cell bytes and take cell i as
    /// bytes `[i·cell, (i+1)·cell)` (what [`crate::codec::ErasureCodec::encode_stripe`] takes).
    pub fn stripe_cells(
        &self,
        stripe: u64,
    ) -> Result<impl ExactSizeIterator<Item = CellCut> + use<>, LayoutError> {
        let range = self.stripe_data_range(stripe)?;
        let cell = self.cell_size();
        Ok((0..self.k()).map(move |shard| {
            let start = (range.start + shard as u64 * cell).min(range.end);
            let end = (start + cell).min(range.end);
            CellCut {
                shard,
                data: start..end,
                padding: cell - (end - start),
            }
        }))
    }

    /// Where segment data byte `position` lives.
    pub fn locate(&self, position: u64) -> Result<CellPosition, LayoutError> {
        if position >= self.data_len {
            return Err(LayoutError::SegmentPosition {
                segment: self.index,
                position,
                len: self.data_len,
            });
        }
        let cell = self.cell_size();
        let stripe = position / self.stripe_data_size();
        let in_stripe = position % self.stripe_data_size();
        let cell_offset = in_stripe % cell;
        Ok(CellPosition {
            stripe,
            // < k, so it fits.
            shard: (in_stripe / cell) as usize,
            cell_offset,
            shard_offset: stripe * cell + cell_offset,
        })
    }
}

/// `cell_size`, or for a short segment the smallest multiple of 64 that spreads `data_len`
/// evenly over the stripes a full-size cell would need (module docs).
fn effective_cell_size(data_len: u64, scheme: &ErasureScheme) -> u32 {
    let k = u64::from(scheme.k());
    let full = u64::from(scheme.cell_size());
    let align = u64::from(CELL_ALIGN);
    let stripes = data_len.div_ceil(k * full).max(1);
    let cell = data_len
        .div_ceil(k * stripes)
        .next_multiple_of(align)
        .clamp(align, full);
    // At most the scheme's cell size, a u32.
    cell as u32
}

/// One cell's part of a requested range (see [`ObjectLayout::pieces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub segment: u64,
    pub stripe: u64,
    /// Data shard index, < k.
    pub shard: usize,
    /// Offset inside the shard file.
    pub shard_offset: u64,
    /// Bytes, ≥ 1; never crosses a cell boundary.
    pub len: u64,
    /// Offset of these bytes inside the requested range.
    pub range_offset: u64,
}

/// Iterator over the pieces of a range, computed lazily: a multi-gigabyte range does not
/// materialise thousands of pieces up front.
#[derive(Debug, Clone)]
pub struct Pieces {
    layout: ObjectLayout,
    start: u64,
    next: u64,
    end: u64,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.next >= self.end {
            return None;
        }
        let offset = self.next;
        let segment = offset / self.layout.segment_size;
        let seg = self.layout.segment_unchecked(segment);
        // Cannot fail: offset < end ≤ size.
        let at = seg.locate(offset - seg.object_offset).ok()?;
        // A cell never extends past its segment's data except as padding, and `end` ≤ size,
        // so the piece stays inside the segment's data.
        let len = (seg.cell_size() - at.cell_offset).min(self.end - offset);
        self.next = offset + len;
        Some(Piece {
            segment,
            stripe: at.stripe,
            shard: at.shard,
            shard_offset: at.shard_offset,
            len,
            range_offset: offset - self.start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ErasureCodec, ReedSolomonCodec};
    use crate::scheme::Codec;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn rs(k: u32, m: u32, cell: u32) -> ErasureScheme {
        ErasureScheme::for_tests(k, m, cell)
    }

    #[test]
    fn default_geometry() {
        let s = ErasureScheme::default();
        let l = ObjectLayout::new(200 << 20, DEFAULT_SEGMENT_SIZE, s).unwrap();
        assert_eq!(l.segment_count(), 4);
        let full = l.segment(0).unwrap();
        assert_eq!(full.cell_size(), 1 << 20);
        assert_eq!(full.stripe_count(), 16);
        assert_eq!(full.shard_len(), 16 << 20);
        // 200 MiB = 3 × 64 + 8 MiB: the last segment is 2 stripes of 1 MiB cells.
        let last = l.segment(3).unwrap();
        assert_eq!(last.data_len(), 8 << 20);
        assert_eq!(last.cell_size(), 1 << 20);
        assert_eq!(last.stripe_count(), 2);
        assert!(matches!(
            l.segment(4),
            Err(LayoutError::SegmentIndex { index: 4, count: 4 })
        ));
    }

    #[test]
    fn short_segment_cells() {
        let s = ErasureScheme::default();
        let cell = |size: u64| {
            let l = ObjectLayout::new(size, DEFAULT_SEGMENT_SIZE, s).unwrap();
            let seg = l.segment(l.segment_count() - 1).unwrap();
            (seg.cell_size(), seg.stripe_count(), seg.shard_len())
        };
        assert_eq!(cell(1), (64, 1, 64));
        assert_eq!(cell(256), (64, 1, 64));
        assert_eq!(cell(257), (128, 1, 128));
        assert_eq!(cell(10_000), (2560, 1, 2560));
        assert_eq!(cell(4 << 20), (1 << 20, 1, 1 << 20));
        // 5 MiB: two stripes of 640 KiB cells rather than 1 MiB cells plus 3 MiB of padding.
        assert_eq!(cell(5 << 20), (640 << 10, 2, 1280 << 10));
        assert_eq!(cell((64 << 20) + 1), (64, 1, 64));
    }

    #[test]
    fn empty_object_has_no_segments() {
        let l = ObjectLayout::new(0, DEFAULT_SEGMENT_SIZE, ErasureScheme::default()).unwrap();
        assert_eq!(l.segment_count(), 0);
        assert_eq!(l.segments().count(), 0);
        assert_eq!(l.pieces(0, 0).unwrap().count(), 0);
        assert!(matches!(l.pieces(0, 1), Err(LayoutError::RangeEnd { .. })));
        assert!(matches!(l.pieces(1, 0), Err(LayoutError::RangeEnd { .. })));
        assert!(l.segment_at(0).is_err());
    }

    #[test]
    fn bad_segment_sizes_and_ranges() {
        let s = ErasureScheme::new(Codec::ReedSolomon, 4, 2, 4096).unwrap();
        for bad in [0, 4096, 16384 + 64, 3 * 16384 + 1] {
            let e = ObjectLayout::new(1, bad, s).unwrap_err();
            assert!(
                matches!(e, LayoutError::SegmentSize { segment_size, .. } if segment_size == bad)
            );
        }
        let e = ObjectLayout::new(1, 4096, s).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid segment_size 4096: must be a positive multiple of k × cell_size = 16384 \
             for scheme rs-4-2-4KiB"
        );
        let l = ObjectLayout::new(u64::MAX, 16384, s).unwrap();
        assert_eq!(l.segment_count(), u64::MAX.div_ceil(16384));
        assert!(matches!(
            l.pieces(u64::MAX, 1),
            Err(LayoutError::RangeOverflow { .. })
        ));
        let last = l.pieces(u64::MAX - 10, 10).unwrap().collect::<Vec<_>>();
        assert_eq!(last.iter().map(|p| p.len).sum::<u64>(), 10);
        let l = ObjectLayout::new(100, 16384, s).unwrap();
        assert!(matches!(
            l.pieces(50, 51),
            Err(LayoutError::RangeEnd {
                offset: 50,
                end: 101,
                size: 100
            })
        ));
        assert_eq!(l.pieces(100, 0).unwrap().count(), 0);
        let seg = l.segment(0).unwrap();
        assert!(matches!(
            seg.locate(100),
            Err(LayoutError::SegmentPosition { .. })
        ));
        assert!(matches!(
            seg.stripe_data_range(1),
            Err(LayoutError::StripeIndex { .. })
        ));
    }

    /// Test scheme, segment size and object size, biased to the edges: 0, 1, cell ± 1, a stripe
    /// ± 1, several stripes and several segments.
    fn geometry() -> impl Strategy<Value = (ErasureScheme, u64, u64)> {
        (1u32..=8, 1u32..=4, 1u32..=16, 1u64..=3).prop_flat_map(|(k, m, cells, stripes)| {
            let scheme = rs(k, m, cells * 64);
            let cell = u64::from(cells) * 64;
            let stripe = cell * u64::from(k);
            let segment = stripe * stripes;
            let size = prop_oneof![
                Just(0u64),
                Just(1),
                Just(cell - 1),
                Just(cell),
                Just(cell + 1),
                Just(stripe - 1),
                Just(stripe + 1),
                Just(segment),
                Just(segment + 1),
                0..=4 * segment,
            ];
            (Just(scheme), Just(segment), size)
        })
    }

    /// The shard files of every segment, built by the obvious procedure: cut the segment into
    /// stripes of k × cell bytes, zero-pad the last, cell i of each stripe appended to shard i.
    /// Each "byte" is the object offset it holds (None for padding).
    fn model_shards(l: &ObjectLayout) -> Vec<Vec<Vec<Option<u64>>>> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        for seg in l.segments() {
            let cell = seg.cell_size() as usize;
            let mut shards = vec![Vec::new(); seg.k()];
            let mut bytes: Vec<Option<u64>> = (offset..offset + seg.data_len()).map(Some).collect();
            offset += seg.data_len();
            let stripe = cell * seg.k();
            bytes.resize(bytes.len().next_multiple_of(stripe), None);
            for stripe_bytes in bytes.chunks(stripe) {
                for (i, c) in stripe_bytes.chunks(cell).enumerate() {
                    shards[i].extend_from_slice(c);
                }
            }
            out.push(shards);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn segment_invariants((scheme, segment_size, size) in geometry()) {
            let l = ObjectLayout::new(size, segment_size, scheme).unwrap();
            let mut total = 0;
            for seg in l.segments() {
                let cell = seg.cell_size();
                prop_assert!(cell >= 64 && cell % 64 == 0 && cell <= u64::from(scheme.cell_size()));
                prop_assert!(seg.data_len() >= 1 && seg.data_len() <= segment_size);
                prop_assert_eq!(seg.object_offset(), total);
                // The stripes hold the data, and the last one holds at least one byte.
                let cap = seg.stripe_count() * seg.stripe_data_size();
                prop_assert!(cap >= seg.data_len() && cap - seg.data_len() < seg.stripe_data_size());
                if seg.data_len() == segment_size {
                    prop_assert_eq!(cell, u64::from(scheme.cell_size()));
                }
                total += seg.data_len();
            }
            prop_assert_eq!(total, size);
        }

        /// Range → pieces against the byte-by-byte model.
        #[test]
        fn pieces_match_model(
            (scheme, segment_size, size) in geometry(),
            a in any::<u64>(),
            b in any::<u64>(),
        ) {
            let l = ObjectLayout::new(size, segment_size, scheme).unwrap();
            let model = model_shards(&l);
            let (x, y) = (a % (size + 1), b % (size + 1));
            let (offset, end) = (x.min(y), x.max(y));
            let pieces: Vec<Piece> = l.pieces(offset, end - offset).unwrap().collect();
            let mut next = 0;
            let mut cells = BTreeSet::new();
            for p in &pieces {
                prop_assert!(p.len >= 1);
                prop_assert_eq!(p.range_offset, next, "pieces are contiguous and in order");
                next += p.len;
                let seg = l.segment(p.segment).unwrap();
                let cell = seg.cell_size();
                prop_assert!(p.shard < seg.k());
                prop_assert_eq!(p.shard_offset / cell, p.stripe, "inside the stripe's cell");
                prop_assert!((p.shard_offset % cell) + p.len <= cell, "never crosses a cell");
                prop_assert!(cells.insert((p.segment, p.stripe, p.shard)), "each cell once");
                let shard = &model[p.segment as usize][p.shard];
                for j in 0..p.len {
                    let want = offset + p.range_offset + j;
                    prop_assert_eq!(shard[(p.shard_offset + j) as usize], Some(want));
                }
            }
            prop_assert_eq!(next, end - offset);
            // Exactly the cells that hold requested bytes.
            let mut needed = BTreeSet::new();
            for (s, shards) in model.iter().enumerate() {
                for (i, shard) in shards.iter().enumerate() {
                    let cell = l.segment(s as u64).unwrap().cell_size() as usize;
                    for (pos, byte) in shard.iter().enumerate() {
                        if matches!(byte, Some(o) if (offset..end).contains(o)) {
                            needed.insert((s as u64, (pos / cell) as u64, i));
                        }
                    }
                }
            }
            prop_assert_eq!(cells, needed);
            // The model's shard files have the layout's length.
            for (s, shards) in model.iter().enumerate() {
                let seg = l.segment(s as u64).unwrap();
                for shard in shards {
                    prop_assert_eq!(shard.len() as u64, seg.shard_len());
                }
            }
        }

        /// `locate` and `stripe_cells` agree with the model too.
        #[test]
        fn locate_and_cut_match_model((scheme, segment_size, size) in geometry()) {
            let l = ObjectLayout::new(size, segment_size, scheme).unwrap();
            let model = model_shards(&l);
            for seg in l.segments() {
                let shards = &model[seg.index() as usize];
                for pos in 0..seg.data_len() {
                    let at = seg.locate(pos).unwrap();
                    prop_assert_eq!(
                        shards[at.shard][at.shard_offset as usize],
                        Some(seg.object_offset() + pos)
                    );
                    let (s2, p2) = l.segment_at(seg.object_offset() + pos).unwrap();
                    prop_assert_eq!((s2, p2), (seg, pos));
                }
                for stripe in 0..seg.stripe_count() {
                    let cuts: Vec<CellCut> = seg.stripe_cells(stripe).unwrap().collect();
                    prop_assert_eq!(cuts.len(), seg.k());
                    let range = seg.stripe_shard_range(stripe).unwrap();
                    for cut in cuts {
                        let cell = &shards[cut.shard][range.start as usize..range.end as usize];
                        let want: Vec<Option<u64>> = cut
                            .data
                            .clone()
                            .map(|p| Some(seg.object_offset() + p))
                            .chain((0..cut.padding).map(|_| None))
                            .collect();
                        prop_assert_eq!(cell, &want[..]);
                    }
                }
            }
        }
    }

    fn object_bytes(size: u64, seed: u64) -> Vec<u8> {
        (0..size)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed).rotate_left(17) as u8)
            .collect()
    }

    /// Encodes every segment stripe by stripe as a streaming client would; returns, per
    /// segment, the k + m shard files.
    fn encode_object(l: &ObjectLayout, data: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let codec = ReedSolomonCodec::from_scheme(&l.scheme()).unwrap();
        let mut out = Vec::new();
        for seg in l.segments() {
            let cell = seg.cell_size() as usize;
            let (k, m) = (seg.k(), seg.m());
            let mut shards = vec![Vec::new(); k + m];
            let mut stripe_buf = vec![0u8; k * cell];
            let mut parity = vec![0u8; m * cell];
            for stripe in 0..seg.stripe_count() {
                let r = seg.stripe_data_range(stripe).unwrap();
                let src = &data[(seg.object_offset() + r.start) as usize
                    ..(seg.object_offset() + r.end) as usize];
                stripe_buf.fill(0);
                stripe_buf[..src.len()].copy_from_slice(src);
                codec.encode_stripe(&stripe_buf, &mut parity).unwrap();
                for (i, c) in stripe_buf
                    .chunks(cell)
                    .chain(parity.chunks(cell))
                    .enumerate()
                {
                    shards[i].extend_from_slice(c);
                }
            }
            out.push(shards);
        }
        out
    }

    /// Reads the whole object back through `pieces` from the data shards.
    fn read_back(l: &ObjectLayout, shards: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut out = vec![0u8; l.size() as usize];
        for p in l.pieces(0, l.size()).unwrap() {
            let src = &shards[p.segment as usize][p.shard];
            let at = p.shard_offset as usize;
            out[p.range_offset as usize..(p.range_offset + p.len) as usize]
                .copy_from_slice(&src[at..at + p.len as usize]);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Through layout and codec: lose any m shards of every segment and the object still
        /// reads back exactly; lose m + 1 and decoding fails instead of returning bytes.
        #[test]
        fn lose_any_m_shards(
            (scheme, segment_size, size) in geometry(),
            seed: u64,
            lose_seed: u64,
        ) {
            let l = ObjectLayout::new(size, segment_size, scheme).unwrap();
            let data = object_bytes(size, seed);
            let encoded = encode_object(&l, &data);
            prop_assert_eq!(read_back(&l, &encoded), data.clone());
            let codec = ReedSolomonCodec::from_scheme(&scheme).unwrap();
            let n = scheme.total();
            let m = usize::from(scheme.m());
            let mut rebuilt = Vec::new();
            for (s, shards) in encoded.iter().enumerate() {
                // A different random set of exactly m lost shards per segment.
                let mut order: Vec<usize> = (0..n).collect();
                let mut x = lose_seed ^ (s as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
                for i in (1..n).rev() {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    order.swap(i, (x >> 33) as usize % (i + 1));
                }
                let mut slots: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
                for &i in &order[..m] {
                    slots[i] = None;
                }
                let mut one_more = slots.clone();
                one_more[order[m]] = None;
                prop_assert_eq!(
                    codec.reconstruct_options(&mut one_more, false),
                    Err(crate::codec::CodecError::TooFewShards { present: n - m - 1, needed: n - m })
                );
                prop_assert!(one_more.iter().filter(|s| s.is_none()).count() == m + 1);
                codec.reconstruct_options(&mut slots, false).unwrap();
                let slots: Vec<Vec<u8>> = slots.into_iter().map(Option::unwrap).collect();
                prop_assert_eq!(&slots, shards);
                rebuilt.push(slots);
            }
            prop_assert_eq!(read_back(&l, &rebuilt), data);
        }
    }
}
