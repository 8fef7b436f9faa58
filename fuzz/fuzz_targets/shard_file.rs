#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dogfs_chunk::fuzzing::shard_file(data));
