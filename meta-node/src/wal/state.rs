//! The in-memory log of every group, and which records in which segment are still live.
//!
//! The same [`LogState::apply`] runs when a record is submitted and when it is replayed, so
//! the state after recovery is exactly the state the records on disk describe.
//!
//! Rules, per group:
//! - `Entry(i)`: if the log is non-empty, `i` must be `last + 1`; if it is empty, `i` must be
//!   above the purged index (a gap after a purge is allowed: a snapshot was installed).
//! - `Truncate(i)`: removes entries `>= i`; a no-op (never written) when there are none.
//! - `Purge(i)`: removes entries `<= i` and remembers `(i, payload)`; `i` below the current
//!   purged index is a no-op (never written), an equal `i` replaces the payload.
//! - `Vote`, `Committed`: the latest one wins.
//! - `Image`: replaces the group's whole state (written by space reclamation).
//!
//! A record is *live* while it contributes to this state: an entry still in the log, the
//! purge record that set the purged index, the latest vote and committed marker (an image
//! counts once for each of those it holds). Truncate records are never live. Each segment
//! counts its live records; see `docs/wal.md` for why
//! deleting a prefix of segments whose counts are zero never changes what replay yields.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use thiserror::Error;

use super::record::{Kind, Record};

/// A record that the log of its group cannot take.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    #[error("group {group}: entry {got} does not follow the last entry {last}")]
    NotContiguous { group: u64, last: u64, got: u64 },
    #[error("group {group}: entry {got} is at or below the purged index {purged}")]
    BelowPurged { group: u64, purged: u64, got: u64 },
    #[error("group {group}: malformed group image: {reason}")]
    BadImage { group: u64, reason: &'static str },
    #[error("group {group}: {count} entries from index {first} overflow the index space")]
    IndexOverflow {
        group: u64,
        first: u64,
        count: usize,
    },
}

/// A stored value and the segment holding the record it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub seg: u64,
    pub payload: Bytes,
}

/// One group's log.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupState {
    /// Index of `entries[0]` (meaningless while `entries` is empty).
    pub first: u64,
    pub entries: VecDeque<Slot>,
    pub purged: Option<(u64, Slot)>,
    pub vote: Option<Slot>,
    pub committed: Option<Slot>,
}

impl GroupState {
    pub fn last(&self) -> Option<u64> {
        // `first + (len - 1)`: `first + len` overflows for an entry at index `u64::MAX`.
        (!self.entries.is_empty()).then(|| self.first + (self.entries.len() as u64 - 1))
    }

    pub fn entry(&self, index: u64) -> Option<&Bytes> {
        let off = index.checked_sub(self.first)?;
        self.entries
            .get(usize::try_from(off).ok()?)
            .map(|s| &s.payload)
    }

    /// The oldest segment any live record of this group is in.
    pub fn oldest_segment(&self) -> Option<u64> {
        [
            self.entries.front().map(|s| s.seg),
            self.purged.as_ref().map(|(_, s)| s.seg),
            self.vote.as_ref().map(|s| s.seg),
            self.committed.as_ref().map(|s| s.seg),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Payload bytes of the live records (what a rewrite would copy).
    pub fn live_bytes(&self) -> u64 {
        let e: usize = self.entries.iter().map(|s| s.payload.len()).sum();
        let p = self.purged.as_ref().map_or(0, |(_, s)| s.payload.len());
        let v = self.vote.as_ref().map_or(0, |s| s.payload.len());
        let c = self.committed.as_ref().map_or(0, |s| s.payload.len());
        (e + p + v + c) as u64
    }

    /// One `Image` record holding this group's whole live state (see `Wal::reclaim`).
    ///
    /// Payload: flags (u8: 1 purged, 2 vote, 4 committed), first index (u64), entry count
    /// (u64), each entry as length (u32) + bytes, then if flagged: purged index (u64) +
    /// length + bytes, vote length + bytes, committed length + bytes. All little endian.
    pub fn image(&self, group: u64) -> Record {
        let mut p = Vec::with_capacity(self.live_bytes() as usize + 64);
        let flags = u8::from(self.purged.is_some())
            | (u8::from(self.vote.is_some()) << 1)
            | (u8::from(self.committed.is_some()) << 2);
        p.push(flags);
        p.extend_from_slice(&self.first.to_le_bytes());
        p.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        let put = |p: &mut Vec<u8>, b: &Bytes| {
            p.extend_from_slice(&(b.len() as u32).to_le_bytes());
            p.extend_from_slice(b);
        };
        for s in &self.entries {
            put(&mut p, &s.payload);
        }
        if let Some((i, s)) = &self.purged {
            p.extend_from_slice(&i.to_le_bytes());
            put(&mut p, &s.payload);
        }
        if let Some(s) = &self.vote {
            put(&mut p, &s.payload);
        }
        if let Some(s) = &self.committed {
            put(&mut p, &s.payload);
        }
        Record {
            group,
            kind: Kind::Image,
            index: 0,
            payload: Bytes::from(p),
        }
    }

    /// Decodes an image written by [`GroupState::image`], its slots in segment `seg`.
    fn from_image(group: u64, payload: &Bytes, seg: u64) -> Result<GroupState, StateError> {
        let bad = |reason| StateError::BadImage { group, reason };
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Result<Bytes, StateError> {
            let end = at.checked_add(n).filter(|&e| e <= payload.len());
            let end = end.ok_or(bad("truncated"))?;
            let out = payload.slice(*at..end);
            *at = end;
            Ok(out)
        };
        let u64_at = |at: &mut usize| -> Result<u64, StateError> {
            let b = take(at, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(&b);
            Ok(u64::from_le_bytes(a))
        };
        let blob = |at: &mut usize| -> Result<Bytes, StateError> {
            let b = take(at, 4)?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            take(at, len)
        };
        let flags = take(&mut at, 1)?[0];
        if flags & !7 != 0 {
            return Err(bad("unknown flags"));
        }
        let first = u64_at(&mut at)?;
        let count = u64_at(&mut at)?;
        if count > 0 && first.checked_add(count - 1).is_none() {
            return Err(bad("index overflow"));
        }
        let slot = |payload| Slot { seg, payload };
        let mut entries = VecDeque::new();
        for _ in 0..count {
            entries.push_back(slot(blob(&mut at)?));
        }
        let purged = if flags & 1 != 0 {
            let i = u64_at(&mut at)?;
            Some((i, slot(blob(&mut at)?)))
        } else {
            None
        };
        let vote = (flags & 2 != 0)
            .then(|| blob(&mut at))
            .transpose()?
            .map(slot);
        let committed = (flags & 4 != 0)
            .then(|| blob(&mut at))
            .transpose()?
            .map(slot);
        if at != payload.len() {
            return Err(bad("trailing bytes"));
        }
        if let (Some((p, _)), false) = (&purged, entries.is_empty())
            && first <= *p
        {
            return Err(bad("entries at or below the purged index"));
        }
        Ok(GroupState {
            first,
            entries,
            purged,
            vote,
            committed,
        })
    }

    /// Live records (slots) this group holds.
    fn slots(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries
            .iter()
            .map(|s| s.seg)
            .chain(self.purged.as_ref().map(|(_, s)| s.seg))
            .chain(self.vote.as_ref().map(|s| s.seg))
            .chain(self.committed.as_ref().map(|s| s.seg))
    }
}

/// Every group's log plus the live-record count of every segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogState {
    pub groups: BTreeMap<u64, GroupState>,
    /// Live records per segment, for every segment that exists (or is about to).
    pub segs: BTreeMap<u64, u64>,
}

impl LogState {
    pub fn add_segment(&mut self, seq: u64) {
        self.segs.entry(seq).or_insert(0);
    }

    fn live(&mut self, seg: u64) {
        *self.segs.entry(seg).or_insert(0) += 1;
    }

    fn dead(&mut self, seg: u64) {
        if let Some(c) = self.segs.get_mut(&seg) {
            *c = c.saturating_sub(1);
        }
    }

    /// Whether `rec` would change the state (`Ok(false)`: a no-op, not worth writing).
    pub fn check(&self, rec: &Record) -> Result<bool, StateError> {
        let g = self.groups.get(&rec.group);
        match rec.kind {
            Kind::Entry => {
                if let Some(last) = g.and_then(GroupState::last) {
                    if rec.index != last.wrapping_add(1) || last == u64::MAX {
                        return Err(StateError::NotContiguous {
                            group: rec.group,
                            last,
                            got: rec.index,
                        });
                    }
                } else if let Some((purged, _)) = g.and_then(|g| g.purged.as_ref())
                    && rec.index <= *purged
                {
                    return Err(StateError::BelowPurged {
                        group: rec.group,
                        purged: *purged,
                        got: rec.index,
                    });
                }
                Ok(true)
            }
            Kind::Truncate => Ok(g
                .and_then(GroupState::last)
                .is_some_and(|last| last >= rec.index)),
            Kind::Purge => Ok(g
                .and_then(|g| g.purged.as_ref())
                .is_none_or(|(p, _)| rec.index >= *p)),
            Kind::Vote | Kind::Committed | Kind::Image => Ok(true),
        }
    }

    /// Applies `rec`, stored in segment `seg`. No-ops change nothing.
    pub fn apply(&mut self, rec: &Record, seg: u64) -> Result<(), StateError> {
        if !self.check(rec)? {
            return Ok(());
        }
        if rec.kind == Kind::Image {
            let new = GroupState::from_image(rec.group, &rec.payload, seg)?;
            let added = new.slots().count() as u64;
            let old = self.groups.insert(rec.group, new);
            *self.segs.entry(seg).or_insert(0) += added;
            for s in old.iter().flat_map(GroupState::slots) {
                self.dead(s);
            }
            return Ok(());
        }
        let g = self.groups.entry(rec.group).or_default();
        let slot = Slot {
            seg,
            payload: rec.payload.clone(),
        };
        let mut killed = Vec::new();
        match rec.kind {
            Kind::Entry => {
                if g.entries.is_empty() {
                    g.first = rec.index;
                }
                g.entries.push_back(slot);
            }
            Kind::Truncate => {
                while g.last().is_some_and(|l| l >= rec.index) {
                    if let Some(s) = g.entries.pop_back() {
                        killed.push(s.seg);
                    }
                }
            }
            Kind::Purge => {
                while !g.entries.is_empty() && g.first <= rec.index {
                    if let Some(s) = g.entries.pop_front() {
                        killed.push(s.seg);
                    }
                    // Wraps only past an entry at `u64::MAX`, leaving the log empty.
                    g.first = g.first.wrapping_add(1);
                }
                if let Some((_, old)) = g.purged.replace((rec.index, slot)) {
                    killed.push(old.seg);
                }
            }
            Kind::Vote => {
                if let Some(old) = g.vote.replace(slot) {
                    killed.push(old.seg);
                }
            }
            Kind::Committed => {
                if let Some(old) = g.committed.replace(slot) {
                    killed.push(old.seg);
                }
            }
            Kind::Image => {}
        }
        if rec.kind != Kind::Truncate {
            self.live(seg);
        }
        for s in killed {
            self.dead(s);
        }
        Ok(())
    }

    /// Removes and returns the leading segments below `active` without live records.
    pub fn take_dead_prefix(&mut self, active: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((&seq, &live)) = self.segs.first_key_value() {
            if seq >= active || live > 0 {
                break;
            }
            self.segs.remove(&seq);
            out.push(seq);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(group: u64, kind: Kind, index: u64, p: &'static [u8]) -> Record {
        Record {
            group,
            kind,
            index,
            payload: Bytes::from_static(p),
        }
    }

    #[test]
    fn rules_and_liveness() {
        let mut s = LogState::default();
        s.add_segment(1);
        s.add_segment(2);
        for i in 5..=9 {
            s.apply(&rec(1, Kind::Entry, i, b"x"), 1).unwrap();
        }
        assert!(matches!(
            s.check(&rec(1, Kind::Entry, 11, b"")),
            Err(StateError::NotContiguous { last: 9, .. })
        ));
        s.apply(&rec(1, Kind::Vote, 0, b"v1"), 1).unwrap();
        assert_eq!(s.segs[&1], 6);
        // Truncate 8.. and rewrite 8 in segment 2.
        s.apply(&rec(1, Kind::Truncate, 8, b""), 2).unwrap();
        s.apply(&rec(1, Kind::Entry, 8, b"y"), 2).unwrap();
        assert_eq!(s.groups[&1].last(), Some(8));
        assert_eq!(s.groups[&1].entry(8).unwrap().as_ref(), b"y");
        assert_eq!((s.segs[&1], s.segs[&2]), (4, 1));
        // A truncate with nothing to remove is a no-op.
        assert!(!s.check(&rec(1, Kind::Truncate, 9, b"")).unwrap());
        // Purge past the end empties the log; the next entry must be above it.
        s.apply(&rec(1, Kind::Purge, 20, b"p"), 2).unwrap();
        assert_eq!(s.groups[&1].last(), None);
        assert!(matches!(
            s.check(&rec(1, Kind::Entry, 20, b"")),
            Err(StateError::BelowPurged { purged: 20, .. })
        ));
        assert!(s.check(&rec(1, Kind::Entry, 25, b"")).unwrap());
        assert!(!s.check(&rec(1, Kind::Purge, 19, b"")).unwrap());
        s.apply(&rec(1, Kind::Vote, 0, b"v2"), 2).unwrap();
        assert_eq!((s.segs[&1], s.segs[&2]), (0, 2));
        assert_eq!(s.take_dead_prefix(2), vec![1]);
        assert_eq!(s.take_dead_prefix(2), Vec::<u64>::new());
    }

    #[test]
    fn image_round_trip_and_liveness() {
        let mut s = LogState::default();
        s.add_segment(1);
        for i in 3..=6 {
            s.apply(&rec(4, Kind::Entry, i, b"e"), 1).unwrap();
        }
        s.apply(&rec(4, Kind::Purge, 2, b"p"), 1).unwrap();
        s.apply(&rec(4, Kind::Vote, 0, b"v"), 1).unwrap();
        let image = s.groups[&4].image(4);
        let before = s.groups[&4].clone();
        s.add_segment(2);
        s.apply(&image, 2).unwrap();
        let after = &s.groups[&4];
        assert_eq!(after.first, before.first);
        assert_eq!(after.entries.len(), 4);
        assert_eq!(after.entry(5), before.entry(5));
        assert_eq!(
            after.purged.as_ref().map(|(i, s)| (*i, s.payload.clone())),
            Some((2, Bytes::from_static(b"p")))
        );
        assert_eq!(
            after.vote.as_ref().map(|s| s.payload.clone()),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(after.committed, None);
        assert_eq!((s.segs[&1], s.segs[&2]), (0, 6));
        // Malformed images are errors, never panics.
        for cut in 0..image.payload.len() {
            let mut bad = image.clone();
            bad.payload = image.payload.slice(..cut);
            assert!(
                matches!(s.apply(&bad, 2), Err(StateError::BadImage { .. })),
                "cut {cut}"
            );
        }
    }
}
