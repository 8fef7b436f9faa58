//! Identifiers chosen by the metadata service.

use std::fmt;
use std::str::FromStr;

/// Errors from parsing an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid shard id {input:?}: expected 32 lowercase hex characters")]
    ParseShardId { input: String },
}

/// A shard's id: 128 bits, printed as 32 lowercase hex characters. A chunk server derives the
/// shard's file path from this value alone, never from a client-supplied path.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(u128);

impl ShardId {
    pub const fn from_u128(v: u128) -> Self {
        Self(v)
    }

    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// A fresh random id (the metadata service's allocator; tests).
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The two fan-out folder names (`aa`, `bb`): the first two bytes of the id, so a million
    /// shards spread over 65,536 folders of ~15 files.
    pub fn fanout(self) -> (String, String) {
        let b = self.0.to_be_bytes();
        (format!("{:02x}", b[0]), format!("{:02x}", b[1]))
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardId({self})")
    }
}

impl FromStr for ShardId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Exactly one spelling per id: lowercase, fixed width. Anything else would let two
        // strings name one file, or a string name a path.
        let ok = s.len() == 32 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(IdError::ParseShardId {
                input: s.chars().take(80).collect(),
            });
        }
        u128::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| IdError::ParseShardId {
                input: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "abc",
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcdef0",
            "../../../../etc/passwd0123456789a",
            "0123456789abcdef0123456789abcde/",
            "+123456789abcdef0123456789abcdef",
            "0123456789abcdef 123456789abcdef",
        ] {
            assert!(bad.parse::<ShardId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn fanout_is_first_two_bytes() {
        let id: ShardId = "ab12ffffffffffffffffffffffffffff".parse().unwrap();
        assert_eq!(id.fanout(), ("ab".to_owned(), "12".to_owned()));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v: u128) {
            let id = ShardId::from_u128(v);
            let s = id.to_string();
            prop_assert_eq!(s.len(), 32);
            prop_assert_eq!(s.parse::<ShardId>().unwrap(), id);
        }

        #[test]
        fn order_matches_string_order(a: u128, b: u128) {
            let (x, y) = (ShardId::from_u128(a), ShardId::from_u128(b));
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
        }
    }
}
