//! `#[serde(with = "bytes_serde")]` for `Vec<u8>` fields: (de)serialized as one byte string
//! instead of a sequence of `u8`s. bincode's encoding is the same either way (a `u64` length,
//! then the bytes), so stored logs, snapshots and records stay readable; only the per-byte
//! visitor calls go (~1.5 % of the metadata commit path's CPU, docs/benchmarks.md).

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    // Formats without a byte-string type (JSON, for one) hand over a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::{Deserialize, Serialize};

    #[derive(Serialize)]
    struct New<'a>(&'a str, #[serde(with = "super")] &'a Vec<u8>);

    #[derive(Deserialize)]
    struct Back(String, #[serde(with = "super")] Vec<u8>);

    #[test]
    fn bincode_encoding_is_unchanged_and_round_trips() {
        for data in [
            Vec::new(),
            vec![0u8],
            (0..=255u8).collect::<Vec<_>>(),
            vec![7; 5000],
        ] {
            // What a plain `Vec<u8>` field wrote (logs and records stored before this module).
            let plain = bincode::serialize(&("tree".to_string(), data.clone())).unwrap();
            let new = bincode::serialize(&New("tree", &data)).unwrap();
            assert_eq!(plain, new, "{} bytes", data.len());
            let back: Back = bincode::deserialize(&plain).unwrap();
            assert_eq!((back.0.as_str(), back.1), ("tree", data));
        }
    }
}
