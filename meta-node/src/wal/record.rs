//! The record codec: one framed, checksummed record of the write-ahead log.
//!
//! ```text
//! offset size field
//!      0    4 payload length n (u32, little endian)
//!      4    4 CRC32C over bytes [0, 4) and [8, 25 + n): length, group, kind, index, payload
//!      8    8 group id (u64 LE): the Raft group the record belongs to
//!     16    1 kind (1 entry, 2 truncate, 3 purge, 4 vote, 5 committed, 6 group image)
//!     17    8 index (u64 LE): entry index / truncate-since index / purge-up-to index / 0
//!     25    n payload, opaque to the WAL
//! ```
//!
//! The checksum covers the length field too, so a damaged length is caught by the checksum
//! when it still points inside the file, and reported as a short record when it does not.

use bytes::{BufMut, Bytes};
use dogfs_core::checksum::{crc32c, crc32c_append};
use thiserror::Error;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 25;

/// The largest payload the format allows. Decoding treats any larger length as corruption, so
/// this is a format constant, never a setting: lowering it would turn valid records into
/// "corrupt" ones on the next recovery.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// What a record does to its group's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A log entry at `index`; the payload is the serialized entry.
    Entry = 1,
    /// Removes every entry with an index `>= index` (a conflicting suffix).
    Truncate = 2,
    /// Removes every entry with an index `<= index` (behind a snapshot); the payload is the
    /// caller's description of the last purged entry (e.g. its serialized log id).
    Purge = 3,
    /// The group's vote; the latest one wins.
    Vote = 4,
    /// The group's committed log id; the latest one wins.
    Committed = 5,
    /// The group's whole live state (entries, purge point, vote, committed) in one record,
    /// written by space reclamation; replaces the group's state on replay. One record, one
    /// checksum: a torn image is dropped whole, and the copies it replaces stay valid.
    Image = 6,
}

impl Kind {
    /// The kind for a stored tag byte.
    pub fn from_u8(tag: u8) -> Option<Kind> {
        match tag {
            1 => Some(Kind::Entry),
            2 => Some(Kind::Truncate),
            3 => Some(Kind::Purge),
            4 => Some(Kind::Vote),
            5 => Some(Kind::Committed),
            6 => Some(Kind::Image),
            _ => None,
        }
    }
}

/// One decoded (or to-be-encoded) record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Raft group.
    pub group: u64,
    /// What the record does.
    pub kind: Kind,
    /// The index argument of `kind` (0 for votes and committed markers).
    pub index: u64,
    /// Opaque bytes.
    pub payload: Bytes,
}

/// Why bytes do not decode as a record. Offsets are relative to the start of the record; the
/// segment layer adds the file and absolute offset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Fewer bytes remain than the header or the declared payload needs (a torn write).
    #[error("short record: {need} bytes needed, {have} present")]
    Short { need: usize, have: usize },
    /// The length field exceeds the format's maximum payload.
    #[error("impossible payload length {len} (max {MAX_PAYLOAD})")]
    ImpossibleLength { len: usize },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    /// The checksum matched but the kind byte is unknown (a newer format, or a CRC collision).
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u8 },
    /// Encoding: the payload is larger than the format allows.
    #[error("payload of {len} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    PayloadTooLarge { len: usize },
}

impl Record {
    /// Bytes this record takes on disk.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the framed record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let len = self.payload.len();
        if len > MAX_PAYLOAD {
            return Err(RecordError::PayloadTooLarge { len });
        }
        let start = out.len();
        out.reserve(self.encoded_len());
        // `len <= MAX_PAYLOAD < u32::MAX`, so the cast is lossless.
        out.put_u32_le(len as u32);
        out.put_u32_le(0);
        out.put_u64_le(self.group);
        out.put_u8(self.kind as u8);
        out.put_u64_le(self.index);
        out.extend_from_slice(&self.payload);
        let crc = checksum(&out[start..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// The framed record as a new buffer.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes the record starting at `at` in `buf`; returns it and its encoded length. The
    /// payload shares `buf`'s memory.
    pub fn decode(buf: &Bytes, at: usize) -> Result<(Record, usize), RecordError> {
        let have = buf.len().saturating_sub(at);
        if have < HEADER_LEN {
            return Err(RecordError::Short {
                need: HEADER_LEN,
                have,
            });
        }
        let rec = &buf[at..];
        let len = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(RecordError::ImpossibleLength { len });
        }
        let total = HEADER_LEN + len;
        if have < total {
            return Err(RecordError::Short { need: total, have });
        }
        let stored = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let computed = checksum(&rec[..total]);
        if stored != computed {
            return Err(RecordError::Checksum { stored, computed });
        }
        let tag = rec[16];
        let kind = Kind::from_u8(tag).ok_or(RecordError::UnknownKind { kind: tag })?;
        let group = u64::from_le_bytes(le8(&rec[8..16]));
        let index = u64::from_le_bytes(le8(&rec[17..25]));
        let payload = buf.slice(at + HEADER_LEN..at + total);
        Ok((
            Record {
                group,
                kind,
                index,
                payload,
            },
            total,
        ))
    }
}

/// CRC32C over a framed record, skipping the checksum field itself.
fn checksum(framed: &[u8]) -> u32 {
    crc32c_append(crc32c(&framed[0..4]), &framed[8..])
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record {
                group: 7,
                kind: Kind::Entry,
                index: 42,
                payload: Bytes::from_static(b"hello raft"),
            },
            Record {
                group: 0,
                kind: Kind::Vote,
                index: 0,
                payload: Bytes::from_static(b"term=3,node=2"),
            },
            Record {
                group: u64::MAX,
                kind: Kind::Truncate,
                index: 9,
                payload: Bytes::new(),
            },
            Record {
                group: 3,
                kind: Kind::Purge,
                index: 100,
                payload: Bytes::from_static(b"log-id"),
            },
            Record {
                group: 1,
                kind: Kind::Committed,
                index: 0,
                payload: Bytes::from(vec![0u8; 300]),
            },
        ]
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        for r in samples() {
            r.encode_into(&mut buf).unwrap();
        }
        let buf = Bytes::from(buf);
        let mut at = 0;
        for r in samples() {
            let (d, n) = Record::decode(&buf, at).unwrap();
            assert_eq!(d, r);
            assert_eq!(n, r.encoded_len());
            at += n;
        }
        assert_eq!(at, buf.len());
        assert!(matches!(
            Record::decode(&buf, at),
            Err(RecordError::Short {
                need: HEADER_LEN,
                have: 0
            })
        ));
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        for r in samples() {
            let good = r.encode().unwrap();
            for pos in 0..good.len() {
                for delta in [0x01u8, 0x80, 0xff, 0x5a] {
                    let mut bad = good.clone();
                    bad[pos] ^= delta;
                    let res = Record::decode(&Bytes::from(bad), 0);
                    assert!(
                        res.is_err(),
                        "{r:?}: byte {pos} ^ {delta:#x} decoded as {res:?}"
                    );
                }
                // And every value a byte could be replaced with, for the header bytes.
                if pos < HEADER_LEN {
                    for v in 0..=255u8 {
                        if v == good[pos] {
                            continue;
                        }
                        let mut bad = good.clone();
                        bad[pos] = v;
                        assert!(Record::decode(&Bytes::from(bad), 0).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_short() {
        for r in samples() {
            let good = r.encode().unwrap();
            for cut in 0..good.len() {
                let res = Record::decode(&Bytes::copy_from_slice(&good[..cut]), 0);
                assert!(
                    matches!(res, Err(RecordError::Short { .. })),
                    "cut at {cut}: {res:?}"
                );
            }
        }
    }

    #[test]
    fn impossible_length_and_unknown_kind() {
        let mut bad = samples()[0].encode().unwrap();
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Record::decode(&Bytes::from(bad), 0),
            Err(RecordError::ImpossibleLength { .. })
        ));
        // A record with a valid checksum over an unknown kind.
        let mut raw = samples()[0].encode().unwrap();
        raw[16] = 99;
        let crc = checksum(&raw);
        raw[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Record::decode(&Bytes::from(raw), 0),
            Err(RecordError::UnknownKind { kind: 99 })
        );
        // Zeroes (a preallocated or zero-filled tail) never decode.
        assert!(Record::decode(&Bytes::from(vec![0u8; 64]), 0).is_err());
    }

    #[test]
    fn oversize_payload_is_refused() {
        let r = Record {
            group: 1,
            kind: Kind::Entry,
            index: 1,
            payload: Bytes::from(vec![0u8; MAX_PAYLOAD + 1]),
        };
        assert!(matches!(
            r.encode(),
            Err(RecordError::PayloadTooLarge { .. })
        ));
    }
}
