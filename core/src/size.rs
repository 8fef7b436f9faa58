//! Byte sizes in configuration: `1048576`, `64KiB`, `1.5GiB`, `100MB`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "invalid size {input:?}: expected a number with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
    )]
    Parse { input: String },
    #[error("size {input:?} is too large")]
    Overflow { input: String },
}

/// A byte count parsed from a human-friendly string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteSize({})", self.0)
    }
}

impl fmt::Display for ByteSize {
    /// Exact when the value is a whole number of a binary unit, otherwise in bytes, so the
    /// printed value always parses back to the same size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, unit) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{}", self.0 / unit, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse_err = || SizeError::Parse {
            input: s.to_owned(),
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "Ki" | "k" | "K" => 1 << 10,
            "MiB" | "Mi" | "M" => 1 << 20,
            "GiB" | "Gi" | "G" => 1 << 30,
            "TiB" | "Ti" | "T" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(parse_err()),
        };
        if num.is_empty() {
            return Err(parse_err());
        }
        let value = if let Some((int, frac)) = num.split_once('.') {
            if int.is_empty() || frac.is_empty() || frac.contains('.') || frac.len() > 9 {
                return Err(parse_err());
            }
            let int: u64 = int.parse().map_err(|_| parse_err())?;
            let frac_digits = frac.len() as u32;
            let frac: u64 = frac.parse().map_err(|_| parse_err())?;
            let scale = 10u64.pow(frac_digits);
            let whole = int.checked_mul(mult);
            let part = (frac as u128 * mult as u128 / scale as u128) as u64;
            whole.and_then(|w| w.checked_add(part))
        } else {
            let int: u64 = num.parse().map_err(|_| SizeError::Overflow {
                input: s.to_owned(),
            })?;
            int.checked_mul(mult)
        };
        value.map(ByteSize).ok_or_else(|| SizeError::Overflow {
            input: s.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("0", 0),
            ("17", 17),
            ("17B", 17),
            ("64KiB", 65_536),
            ("1MiB", 1 << 20),
            ("1.5GiB", 3 << 29),
            ("100MB", 100_000_000),
            (" 2 GiB ", 2 << 30),
            ("1T", 1 << 40),
        ];
        for (s, v) in cases {
            assert_eq!(s.parse::<ByteSize>().unwrap(), ByteSize(v), "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "MiB",
            "1XB",
            "-1",
            "1..5M",
            ".5M",
            "1.M",
            "99999999999999999999",
        ] {
            assert!(s.parse::<ByteSize>().is_err(), "{s:?} parsed");
        }
        assert!(matches!(
            "20000000TiB".parse::<ByteSize>(),
            Err(SizeError::Overflow { .. })
        ));
    }

    proptest! {
        #[test]
        fn display_round_trips(v: u64) {
            let b = ByteSize(v);
            prop_assert_eq!(b.to_string().parse::<ByteSize>().unwrap(), b);
        }
    }
}
