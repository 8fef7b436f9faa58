//! The fuzz target of the command line's own parsers, run for a bounded time
//! (`dogfs_core::fuzzing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn cli_parsers_fuzz() {
    let seeds: Vec<Vec<u8>> = ["0-10", "5-", "-3", "30s", "500ms", "90d", "10", "2.5%"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    dogfs_core::fuzzing::drive("cli_parsers", &seeds, dogfs_cli::human::fuzz_parsers);
}
