//! Fuzz entry points of this crate's parsers (`dogfs_core::fuzzing` explains how they run).

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::grant::{GRANT_LEN, GrantKeys, Op};
use crate::token;

/// Tokens and bearer headers as they arrive: errors, never panics; an issued token parses to
/// its id and a 32-byte hash.
pub fn token(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(p) = token::parse(&s) {
        assert_eq!(p.id.len(), token::ID_HEX);
        assert!(s.starts_with(token::TOKEN_PREFIX));
    }
    let _ = token::bootstrap_hash(&s);
    if let Some(t) = token::from_bearer(&s) {
        assert!(t.len() < s.len());
    }
}

const KEY: &str = "6b0f8c2a1d9e4f7b3c5a6e8d0f1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3\n";

/// Grants from the wire against a fixed key: only what `sign` made for that shard and
/// operation, unexpired, verifies; anything else is an error, never a panic.
pub fn grant(data: &[u8]) {
    let Ok(keys) = GrantKeys::parse(Path::new("fuzz"), KEY) else {
        return;
    };
    let now = SystemTime::now();
    let shard = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128;
    for op in [Op::Put, Op::Get, Op::Delete] {
        if keys.verify(data, op, shard, now).is_ok() {
            // Only a signed grant can pass: the bytes must be one `sign` would make.
            assert_eq!(data.len(), GRANT_LEN);
        }
    }
    let signed = keys.sign(Op::Get, shard, now + Duration::from_secs(60));
    assert!(keys.verify(&signed, Op::Get, shard, now).is_ok());
    assert!(keys.verify(&signed, Op::Get, shard ^ 1, now).is_err());
}

/// Grant key files: errors name the line; what parses holds 1 to 16 keys.
pub fn grant_keys(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(k) = GrantKeys::parse(Path::new("fuzz"), &s) {
        let g = k.sign(Op::Put, 7, SystemTime::now() + Duration::from_secs(5));
        assert_eq!(g.len(), GRANT_LEN);
    }
}
