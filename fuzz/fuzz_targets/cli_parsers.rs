#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dogfs_cli::human::fuzz_parsers(data));
