//! Bucket names and object keys, validated once here. Every other crate takes these types, so
//! an unvalidated name cannot reach metadata or a chunk server. Names are never used to build
//! a file path (shard files are named by `ShardId`).

use std::fmt;
use std::str::FromStr;

/// Longest object key in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// Shortest and longest bucket names (S3's limits).
pub const MIN_BUCKET_LEN: usize = 3;
pub const MAX_BUCKET_LEN: usize = 63;

/// Prefixes and suffixes S3 reserves for its own endpoints (punycode, access point aliases,
/// Object Lambda, directory and table buckets, multi-region access points). Rejecting them keeps
/// our names portable to and from S3.
const RESERVED_PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
const RESERVED_SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

/// Errors name the bad value (shortened when long) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid bucket name {name:?}: must be 3-63 characters long (is {len})")]
    BucketLength { name: String, len: usize },
    #[error(
        "invalid bucket name {name:?}: may contain only lowercase letters, digits, '-' and '.' \
         (found {found:?} at byte {position})"
    )]
    BucketCharacter {
        name: String,
        found: char,
        position: usize,
    },
    #[error("invalid bucket name {name:?}: must start and end with a lowercase letter or digit")]
    BucketEdge { name: String },
    #[error("invalid bucket name {name:?}: must not contain two adjacent periods")]
    BucketAdjacentPeriods { name: String },
    #[error("invalid bucket name {name:?}: must not be formatted as an IP address")]
    BucketIpAddress { name: String },
    #[error("invalid bucket name {name:?}: the prefix {prefix:?} is reserved")]
    BucketReservedPrefix { name: String, prefix: &'static str },
    #[error("invalid bucket name {name:?}: the suffix {suffix:?} is reserved")]
    BucketReservedSuffix { name: String, suffix: &'static str },
    #[error("invalid object key \"\": must be 1-{MAX_KEY_BYTES} bytes of UTF-8 (is empty)")]
    KeyEmpty,
    #[error(
        "invalid object key {key:?}: must be 1-{MAX_KEY_BYTES} bytes of UTF-8 (is {len} bytes)"
    )]
    KeyLength { key: String, len: usize },
    #[error("invalid object key {key:?}: must not contain NUL (found at byte {position})")]
    KeyNul { key: String, position: usize },
    #[error("invalid object key: must be UTF-8 (invalid byte at {position})")]
    KeyUtf8 { position: usize },
}

/// The start of a possibly huge or hostile value, for error messages.
fn preview(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A bucket name that follows the S3 naming rules.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketName(String);

impl BucketName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        validate_bucket(name)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn validate_bucket(name: &str) -> Result<(), NameError> {
    let owned = || preview(name);
    // Length first (in characters, as S3 counts them), then the allowed characters.
    let len = name.chars().count();
    if !(MIN_BUCKET_LEN..=MAX_BUCKET_LEN).contains(&len) {
        return Err(NameError::BucketLength { name: owned(), len });
    }
    if let Some((position, found)) = name
        .char_indices()
        .find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Err(NameError::BucketCharacter {
            name: owned(),
            found,
            position,
        });
    }
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(name.as_bytes().first()) || !edge_ok(name.as_bytes().last()) {
        return Err(NameError::BucketEdge { name: owned() });
    }
    if name.contains("..") {
        return Err(NameError::BucketAdjacentPeriods { name: owned() });
    }
    if looks_like_ipv4(name) {
        return Err(NameError::BucketIpAddress { name: owned() });
    }
    if let Some(prefix) = RESERVED_PREFIXES.into_iter().find(|p| name.starts_with(p)) {
        return Err(NameError::BucketReservedPrefix {
            name: owned(),
            prefix,
        });
    }
    if let Some(suffix) = RESERVED_SUFFIXES.into_iter().find(|s| name.ends_with(s)) {
        return Err(NameError::BucketReservedSuffix {
            name: owned(),
            suffix,
        });
    }
    Ok(())
}

/// Four dot-separated groups of 1-3 digits, whatever their values: `999.1.1.1` is no more a
/// sensible bucket name than `192.168.1.1`, and virtual-host addressing would misread both.
fn looks_like_ipv4(name: &str) -> bool {
    let mut groups = 0;
    for part in name.split('.') {
        groups += 1;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    groups == 4
}

impl FromStr for BucketName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for BucketName {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate_bucket(&s)?;
        Ok(Self(s))
    }
}

impl TryFrom<&str> for BucketName {
    type Error = NameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for BucketName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BucketName({:?})", self.0)
    }
}

/// An object key: 1-1024 bytes of UTF-8 without NUL. Any other character is allowed (as in S3),
/// including `/`, `..` and control characters, which is safe because keys never become paths.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(key: &str) -> Result<Self, NameError> {
        validate_key(key)?;
        Ok(Self(key.to_owned()))
    }

    /// From raw bytes, e.g. a key taken from a URL path after percent-decoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NameError> {
        let key = std::str::from_utf8(bytes).map_err(|e| NameError::KeyUtf8 {
            position: e.valid_up_to(),
        })?;
        Self::parse(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn validate_key(key: &str) -> Result<(), NameError> {
    let len = key.len();
    if len == 0 {
        return Err(NameError::KeyEmpty);
    }
    if len > MAX_KEY_BYTES {
        return Err(NameError::KeyLength {
            key: preview(key),
            len,
        });
    }
    if let Some(position) = key.bytes().position(|b| b == 0) {
        return Err(NameError::KeyNul {
            key: preview(key),
            position,
        });
    }
    Ok(())
}

impl FromStr for ObjectKey {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = NameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate_key(&s)?;
        Ok(Self(s))
    }
}

impl TryFrom<&str> for ObjectKey {
    type Error = NameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.0)
    }
}

/// The object partition (1..=`partitions`) of a key: `1 + fnv1a64(bucket ‖ 0x00 ‖ key) mod P`.
/// FNV-1a 64 is fixed forever (DESIGN §5): changing it would move every object. Here rather
/// than in the metadata service so that clients can route to a partition's leader with the
/// same function. `partitions` of 0 is treated as 1.
pub fn partition_of(bucket: &BucketName, key: &ObjectKey, partitions: u64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let bytes = bucket
        .as_str()
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(key.as_str().as_bytes());
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    1 + h % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_good_buckets() {
        for good in [
            "abc",
            "my-bucket",
            "my.bucket.example",
            "0bucket9",
            "a-b.c-d",
            "123",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.a",
            "xn-a",
            "a-s3aliasx",
            &"a".repeat(63),
        ] {
            let b = BucketName::parse(good).unwrap();
            assert_eq!(b.as_str(), good);
            assert_eq!(b.to_string(), good);
            assert_eq!(good.parse::<BucketName>().unwrap(), b);
            assert_eq!(BucketName::try_from(good.to_owned()).unwrap(), b);
        }
    }

    #[test]
    fn rejects_bad_buckets_with_the_rule() {
        use NameError::*;
        type Check = fn(&NameError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, BucketLength { len: 0, .. })),
            ("ab", |e| matches!(e, BucketLength { len: 2, .. })),
            (&"a".repeat(64), |e| {
                matches!(e, BucketLength { len: 64, .. })
            }),
            ("Ab", |e| matches!(e, BucketLength { len: 2, .. })),
            ("Abc", |e| {
                matches!(
                    e,
                    BucketCharacter {
                        found: 'A',
                        position: 0,
                        ..
                    }
                )
            }),
            ("my_bucket", |e| {
                matches!(e, BucketCharacter { found: '_', .. })
            }),
            ("my bucket", |e| {
                matches!(e, BucketCharacter { found: ' ', .. })
            }),
            ("bück", |e| matches!(e, BucketCharacter { found: 'ü', .. })),
            ("a/b/c", |e| matches!(e, BucketCharacter { found: '/', .. })),
            ("abc\0", |e| {
                matches!(e, BucketCharacter { found: '\0', .. })
            }),
            ("-abc", |e| matches!(e, BucketEdge { .. })),
            ("abc-", |e| matches!(e, BucketEdge { .. })),
            (".abc", |e| matches!(e, BucketEdge { .. })),
            ("abc.", |e| matches!(e, BucketEdge { .. })),
            ("a..b", |e| matches!(e, BucketAdjacentPeriods { .. })),
            ("192.168.5.4", |e| matches!(e, BucketIpAddress { .. })),
            ("999.0.0.1", |e| matches!(e, BucketIpAddress { .. })),
            ("xn--abc", |e| {
                matches!(e, BucketReservedPrefix { prefix: "xn--", .. })
            }),
            ("sthree-abc", |e| matches!(e, BucketReservedPrefix { .. })),
            ("abc-s3alias", |e| {
                matches!(
                    e,
                    BucketReservedSuffix {
                        suffix: "-s3alias",
                        ..
                    }
                )
            }),
            ("abc--ol-s3", |e| {
                matches!(
                    e,
                    BucketReservedSuffix {
                        suffix: "--ol-s3",
                        ..
                    }
                )
            }),
            ("abc--x-s3", |e| matches!(e, BucketReservedSuffix { .. })),
            ("abc.mrap", |e| matches!(e, BucketReservedSuffix { .. })),
        ];
        for (bad, check) in cases {
            let e = BucketName::parse(bad).unwrap_err();
            assert!(check(&e), "{bad:?}: {e:?}");
            assert!(BucketName::try_from(bad.to_string()).is_err());
        }
    }

    #[test]
    fn bucket_messages_name_value_and_rule() {
        let e = BucketName::parse("Ab").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid bucket name \"Ab\": must be 3-63 characters long (is 2)"
        );
        let e = BucketName::parse("Abc").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid bucket name \"Abc\": may contain only lowercase"),
            "{e}"
        );
        let e = BucketName::parse("1.2.3.4").unwrap_err().to_string();
        assert!(e.contains("\"1.2.3.4\"") && e.contains("IP address"), "{e}");
        // A huge name is shortened in the message.
        let e = BucketName::parse(&"a".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn partition_is_fnv1a64_of_bucket_nul_key() {
        let b = BucketName::parse("photos").unwrap();
        let k = ObjectKey::parse("a/b.jpg").unwrap();
        // Reference FNV-1a 64 over b"photos\0a/b.jpg", computed independently.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for x in b"photos\0a/b.jpg" {
            h = (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(partition_of(&b, &k, 8), 1 + h % 8);
        assert_eq!(partition_of(&b, &k, 0), 1);
        assert_eq!(partition_of(&b, &k, 1), 1);
    }

    #[test]
    fn keys() {
        for good in [
            "a",
            "a/b/c",
            "../../etc/passwd",
            "ünïcödé 🐕",
            " ",
            &"k".repeat(1024),
        ] {
            let key = ObjectKey::parse(good).unwrap();
            assert_eq!(key.as_str(), good);
            assert_eq!(ObjectKey::from_bytes(good.as_bytes()).unwrap(), key);
        }
        // 1024 bytes, but in 2-byte characters: 512 of them.
        assert!(ObjectKey::parse(&"é".repeat(512)).is_ok());
        assert!(matches!(
            ObjectKey::parse(&"é".repeat(513)),
            Err(NameError::KeyLength { len: 1026, .. })
        ));
        assert_eq!(ObjectKey::parse(""), Err(NameError::KeyEmpty));
        assert!(matches!(
            ObjectKey::parse(&"k".repeat(1025)),
            Err(NameError::KeyLength { len: 1025, .. })
        ));
        assert!(matches!(
            ObjectKey::parse("a\0b"),
            Err(NameError::KeyNul { position: 1, .. })
        ));
        assert_eq!(
            ObjectKey::from_bytes(b"ab\xffc"),
            Err(NameError::KeyUtf8 { position: 2 })
        );
        let e = ObjectKey::parse("a\0b").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid object key \"a\\0b\": must not contain NUL (found at byte 1)"
        );
        let e = ObjectKey::parse(&"k".repeat(5000)).unwrap_err().to_string();
        assert!(e.contains("is 5000 bytes") && e.len() < 250, "{e}");
    }

    /// Brute-force model of the bucket rules, written differently from the code.
    fn bucket_ok_model(s: &str) -> bool {
        let b = s.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ip = {
            let parts: Vec<&str> = s.split('.').collect();
            parts.len() == 4
                && parts
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()))
        };
        (3..=63).contains(&b.len())
            && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'.')
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && !b.windows(2).any(|w| w == b"..")
            && !ip
            && !RESERVED_PREFIXES.iter().any(|p| s.starts_with(p))
            && !RESERVED_SUFFIXES.iter().any(|p| s.ends_with(p))
    }

    proptest! {
        #[test]
        fn bucket_never_panics(s in "\\PC{0,80}") {
            let _ = BucketName::parse(&s);
        }

        #[test]
        fn bucket_matches_model(s in "[a-z0-9.\\-A_]{0,70}") {
            prop_assert_eq!(BucketName::parse(&s).is_ok(), bucket_ok_model(&s), "{:?}", s);
        }

        #[test]
        fn bucket_matches_model_ipish(s in "[0-9.]{1,16}") {
            prop_assert_eq!(BucketName::parse(&s).is_ok(), bucket_ok_model(&s), "{:?}", s);
        }

        #[test]
        fn key_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let r = ObjectKey::from_bytes(&bytes);
            let expect = !bytes.is_empty()
                && bytes.len() <= MAX_KEY_BYTES
                && !bytes.contains(&0)
                && std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(r.is_ok(), expect);
        }

        #[test]
        fn key_strings(s in "\\PC{0,1100}") {
            let r = ObjectKey::parse(&s);
            prop_assert_eq!(r.is_ok(), !s.is_empty() && s.len() <= 1024 && !s.contains('\0'));
            if let Ok(k) = r {
                prop_assert_eq!(k.to_string(), s);
            }
        }
    }
}
