//! The fuzz targets of this crate, run for a bounded time (`dogfs_core::fuzzing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use dogfs_core::fuzzing::drive;
use dogfs_security::fuzzing;
use dogfs_security::grant::{GrantKeys, Op};

#[test]
fn token_fuzz() {
    let t = dogfs_security::token::generate().token;
    let seeds = vec![
        t.clone().into_bytes(),
        format!("Bearer {t}").into_bytes(),
        b"dogfs-dev-admin-0123456789abcdef".to_vec(),
    ];
    drive("token", &seeds, fuzzing::token);
}

#[test]
fn grant_fuzz() {
    let keys = GrantKeys::parse(Path::new("k"), &GrantKeys::generate_text()).unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    let seeds = vec![
        keys.sign(Op::Get, 1, later),
        keys.sign(Op::Put, u128::MAX, later),
        keys.sign(Op::Delete, 0, SystemTime::UNIX_EPOCH),
    ];
    drive("grant", &seeds, fuzzing::grant);
}

#[test]
fn grant_keys_fuzz() {
    let seeds = vec![
        GrantKeys::generate_text().into_bytes(),
        format!(
            "# rotated\n{}{}",
            GrantKeys::generate_text(),
            GrantKeys::generate_text()
        )
        .into_bytes(),
    ];
    drive("grant_keys", &seeds, fuzzing::grant_keys);
}
