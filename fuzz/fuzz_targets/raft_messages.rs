#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dogfs_meta::fuzzing::raft_messages(data));
