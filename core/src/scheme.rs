//! The erasure scheme recorded in every object version: `{codec, k, m, cell_size}`.
//!
//! Text form: `<codec>-<k>-<m>-<cell size>`, e.g. `rs-4-2-1MiB` or `rs-10-4-256KiB`. The cell
//! size uses [`ByteSize`] syntax and is printed in its exact, canonical form, so
//! `Display` and `FromStr` round-trip.

use std::fmt;
use std::str::FromStr;

use crate::size::ByteSize;

/// Most shards (k + m) one segment may have. Every shard of a segment goes to a distinct chunk
/// server, and decoding cost grows with k; 32 also keeps a shard set in a `u32` bit mask.
pub const MAX_TOTAL_SHARDS: usize = 32;

/// Cell sizes are multiples of this: the SIMD kernels work on 32- and 64-byte vectors, so
/// whole-vector cells never fall back to the byte-at-a-time tail, and cells start on cache
/// lines inside a stripe buffer.
pub const CELL_ALIGN: u32 = 64;

/// Smallest configurable cell size. Below a page, the per-cell costs (one call into the codec,
/// one range in a read, a message on the wire) outweigh the bytes moved. Short last segments
/// still use smaller cells, derived by the layout, not configured (see `layout`).
pub const MIN_CELL_SIZE: u32 = 4 * 1024;

/// Largest configurable cell size. A streaming client holds a few stripes of (k + m) cells in
/// memory; 32 shards × 16 MiB is already 512 MiB per stripe, and larger cells would also make
/// range reads fetch far more than asked.
pub const MAX_CELL_SIZE: u32 = 16 * 1024 * 1024;

/// Errors from building or parsing a scheme. Each names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error(
        "invalid erasure scheme {input:?}: expected <codec>-<k>-<m>-<cell size>, e.g. rs-4-2-1MiB"
    )]
    Parse { input: String },
    #[error("invalid erasure codec {codec:?}: the only codec is \"rs\" (Reed-Solomon)")]
    Codec { codec: String },
    #[error("invalid erasure k {k}: need at least 1 data shard")]
    DataShards { k: u32 },
    #[error("invalid erasure m {m}: need at least 1 parity shard")]
    ParityShards { m: u32 },
    #[error("invalid erasure k+m {k}+{m}: at most {MAX_TOTAL_SHARDS} shards in total")]
    TotalShards { k: u32, m: u32 },
    #[error(
        "invalid erasure cell_size {cell_size}: must be a multiple of {CELL_ALIGN} bytes within \
         [{MIN_CELL_SIZE}, {MAX_CELL_SIZE}] (4KiB to 16MiB)"
    )]
    CellSize { cell_size: u64 },
}

/// The erasure code family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// Reed-Solomon over GF(2^8), as `reed-solomon-erasure` computes it.
    #[default]
    ReedSolomon,
}

impl Codec {
    pub const fn as_str(self) -> &'static str {
        match self {
            Codec::ReedSolomon => "rs",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = SchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rs" => Ok(Codec::ReedSolomon),
            _ => Err(SchemeError::Codec {
                codec: s.chars().take(64).collect(),
            }),
        }
    }
}

/// A validated erasure scheme. Fields are private so every value went through [`Self::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErasureScheme {
    codec: Codec,
    k: u8,
    m: u8,
    cell_size: u32,
}

impl ErasureScheme {
    /// Validates and builds a scheme. `k` and `m` are taken as `u32` so that an out-of-range
    /// value from the wire is reported as itself rather than truncated.
    pub fn new(codec: Codec, k: u32, m: u32, cell_size: u64) -> Result<Self, SchemeError> {
        let (k, m) = Self::check_shards(k, m)?;
        let ok = cell_size.is_multiple_of(u64::from(CELL_ALIGN))
            && (u64::from(MIN_CELL_SIZE)..=u64::from(MAX_CELL_SIZE)).contains(&cell_size);
        if !ok {
            return Err(SchemeError::CellSize { cell_size });
        }
        Ok(Self {
            codec,
            k,
            m,
            // In range by the check above.
            cell_size: cell_size as u32,
        })
    }

    fn check_shards(k: u32, m: u32) -> Result<(u8, u8), SchemeError> {
        if k < 1 {
            return Err(SchemeError::DataShards { k });
        }
        if m < 1 {
            return Err(SchemeError::ParityShards { m });
        }
        if u64::from(k) + u64::from(m) > MAX_TOTAL_SHARDS as u64 {
            return Err(SchemeError::TotalShards { k, m });
        }
        // Both are now at most 31.
        Ok((k as u8, m as u8))
    }

    /// Tests elsewhere in the crate use tiny cells (64 bytes and up) so that many stripes fit in
    /// a debug-build test; the alignment and shard limits still apply.
    #[cfg(test)]
    pub(crate) fn for_tests(k: u32, m: u32, cell_size: u32) -> Self {
        let (k, m) = Self::check_shards(k, m).unwrap();
        assert!(cell_size >= CELL_ALIGN && cell_size.is_multiple_of(CELL_ALIGN));
        Self {
            codec: Codec::ReedSolomon,
            k,
            m,
            cell_size,
        }
    }

    pub const fn codec(&self) -> Codec {
        self.codec
    }

    /// Data shards per segment.
    pub const fn k(&self) -> u8 {
        self.k
    }

    /// Parity shards per segment: how many may be lost.
    pub const fn m(&self) -> u8 {
        self.m
    }

    /// Bytes per cell of a full stripe.
    pub const fn cell_size(&self) -> u32 {
        self.cell_size
    }

    /// Shards per segment, k + m.
    pub const fn total(&self) -> usize {
        self.k as usize + self.m as usize
    }

    /// Data bytes in one full stripe, k × cell_size.
    pub const fn stripe_data_size(&self) -> u64 {
        self.k as u64 * self.cell_size as u64
    }
}

impl Default for ErasureScheme {
    /// RS 4+2 with 1 MiB cells: survives two lost servers at 1.5× storage.
    fn default() -> Self {
        Self {
            codec: Codec::ReedSolomon,
            k: 4,
            m: 2,
            cell_size: 1024 * 1024,
        }
    }
}

impl fmt::Display for ErasureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}",
            self.codec,
            self.k,
            self.m,
            ByteSize(u64::from(self.cell_size))
        )
    }
}

impl FromStr for ErasureScheme {
    type Err = SchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse_err = || SchemeError::Parse {
            input: s.chars().take(64).collect(),
        };
        let mut parts = s.split('-');
        let (Some(codec), Some(k), Some(m), Some(cell), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(parse_err());
        };
        let codec: Codec = codec.parse()?;
        // Digits only: `u32::from_str` would also take a leading `+`.
        let number = |t: &str| -> Result<u32, SchemeError> {
            if t.is_empty() || t.len() > 9 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(parse_err());
            }
            t.parse().map_err(|_| parse_err())
        };
        let (k, m) = (number(k)?, number(m)?);
        if cell.trim() != cell {
            return Err(parse_err());
        }
        let cell: ByteSize = cell.parse().map_err(|_| parse_err())?;
        Self::new(codec, k, m, cell.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_is_rs_4_2_1mib() {
        let s = ErasureScheme::default();
        assert_eq!(s.to_string(), "rs-4-2-1MiB");
        assert_eq!(s.total(), 6);
        assert_eq!(s.stripe_data_size(), 4 << 20);
        assert_eq!("rs-4-2-1MiB".parse::<ErasureScheme>().unwrap(), s);
        assert_eq!(
            ErasureScheme::new(Codec::ReedSolomon, 4, 2, 1 << 20).unwrap(),
            s
        );
    }

    #[test]
    fn limits() {
        let rs = Codec::ReedSolomon;
        assert!(ErasureScheme::new(rs, 1, 1, 4096).is_ok());
        assert!(ErasureScheme::new(rs, 31, 1, 4096).is_ok());
        assert!(ErasureScheme::new(rs, 16, 16, 16 << 20).is_ok());
        assert_eq!(
            ErasureScheme::new(rs, 0, 2, 4096),
            Err(SchemeError::DataShards { k: 0 })
        );
        assert_eq!(
            ErasureScheme::new(rs, 4, 0, 4096),
            Err(SchemeError::ParityShards { m: 0 })
        );
        assert_eq!(
            ErasureScheme::new(rs, 30, 3, 4096),
            Err(SchemeError::TotalShards { k: 30, m: 3 })
        );
        assert_eq!(
            ErasureScheme::new(rs, u32::MAX, u32::MAX, 4096),
            Err(SchemeError::TotalShards {
                k: u32::MAX,
                m: u32::MAX
            })
        );
        for bad in [0, 64, 4032, 4097, 4096 + 32, (16 << 20) + 64, u64::MAX] {
            assert_eq!(
                ErasureScheme::new(rs, 4, 2, bad),
                Err(SchemeError::CellSize { cell_size: bad }),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_name_field_and_value() {
        let e = ErasureScheme::new(Codec::ReedSolomon, 30, 5, 4096).unwrap_err();
        assert!(e.to_string().contains("k+m 30+5"), "{e}");
        let e = ErasureScheme::new(Codec::ReedSolomon, 4, 2, 100).unwrap_err();
        assert!(e.to_string().contains("cell_size 100"), "{e}");
        let e = "xor-4-2-1MiB".parse::<ErasureScheme>().unwrap_err();
        assert!(e.to_string().contains("\"xor\""), "{e}");
    }

    #[test]
    fn parses_and_prints() {
        let cases = [
            ("rs-10-4-256KiB", 10, 4, 256 << 10),
            ("rs-1-1-4KiB", 1, 1, 4096),
            ("rs-4-2-4160B", 4, 2, 4160),
            ("rs-6-3-16MiB", 6, 3, 16 << 20),
        ];
        for (text, k, m, cell) in cases {
            let s: ErasureScheme = text.parse().unwrap();
            assert_eq!((s.k(), s.m(), s.cell_size()), (k, m, cell), "{text}");
            assert_eq!(s.to_string(), text);
        }
        // Accepted spellings that print differently.
        let s: ErasureScheme = "rs-4-2-1048576".parse().unwrap();
        assert_eq!(s.to_string(), "rs-4-2-1MiB");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "rs",
            "rs-4-2",
            "rs-4-2-1MiB-x",
            "RS-4-2-1MiB",
            "rs-+4-2-1MiB",
            "rs--4-2-1MiB",
            "rs-4-2- 1MiB",
            "rs-4-2-1XiB",
            "rs-99999999999999999999-2-1MiB",
            "rs-4-2-100B",
            "rs-0-2-1MiB",
            "rs-4-0-1MiB",
            "rs-20-20-1MiB",
        ] {
            assert!(bad.parse::<ErasureScheme>().is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(k in 1u32..32, m in 1u32..32, cells in 64u64..=4096) {
            prop_assume!(k + m <= 32);
            let s = ErasureScheme::new(Codec::ReedSolomon, k, m, cells * 64).unwrap();
            prop_assert_eq!(s.to_string().parse::<ErasureScheme>().unwrap(), s);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<ErasureScheme>();
        }
    }
}
