//! Fuzzing support (docs/security.md, "Hostile input: fuzzing").
//!
//! Each parser the project owns has an entry point `fn(&[u8])` in its crate's `fuzzing`
//! module that feeds the bytes to the parser and asserts its contract (an error, never a
//! panic; what parses, round-trips). The same entry points run two ways:
//!
//! - under libFuzzer, as the `cargo fuzz` targets in `fuzz/` (coverage-guided, as long as you
//!   let it run);
//! - in `cargo test`, through [`drive`]: the committed regression inputs of the target
//!   (`fuzz/regressions/<target>/`, where every crash found is kept), the given seeds, and
//!   then seeded random and mutated inputs for a bounded time (`DOGFS_FUZZ_SECS`, default 1 s
//!   per target), so the test script fuzzes on every run without a nightly toolchain.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository's `fuzz/regressions/<target>/` directory.
pub fn regressions_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target)
}

/// xorshift64*: reproducible from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One mutation of `input`: bit flips, byte changes, truncation, insertion, deletion, an
/// interesting value (0, 0xFF.., a huge little- or big-endian length) over 4 or 8 bytes, or
/// a splice of two seeds.
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            5 if v.len() >= 8 => {
                let i = rng.below(v.len() - 7);
                let value: u64 = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => u64::from(u32::MAX),
                    _ => 1 << rng.below(64),
                };
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let n = if rng.below(2) == 0 { 4 } else { 8 };
                v[i..i + n].copy_from_slice(&bytes[..n]);
            }
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = rng.below(64);
                v.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
    v
}

/// The time each target runs for in `cargo test`.
pub fn budget() -> Duration {
    let secs = std::env::var("DOGFS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs.max(0.0))
}

/// Runs `target` over the regression inputs of `name`, the `seeds`, then random and mutated
/// inputs until [`budget`] is spent. A panic names the input's seed and iteration, and the
/// input is written to `target/fuzz-failures/<name>-<seed>-<i>` to keep as a regression.
/// Returns how many inputs ran.
// A test driver: failing the test, naming the input, is what it is for.
#[allow(clippy::panic)]
pub fn drive(name: &str, seeds: &[Vec<u8>], target: impl Fn(&[u8])) -> u64 {
    let mut corpus: Vec<Vec<u8>> = seeds.to_vec();
    if let Ok(dir) = std::fs::read_dir(regressions_dir(name)) {
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            if let Ok(bytes) = std::fs::read(&f) {
                corpus.push(bytes);
            }
        }
    }
    let seed = std::env::var("DOGFS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let mut rng = Rng(seed);
    let run = |i: u64, input: &[u8]| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(input)));
        if r.is_err() {
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&out);
            let file = out.join(format!("{name}-{seed}-{i}"));
            let _ = std::fs::write(&file, input);
            panic!(
                "fuzz target {name}: input {i} (DOGFS_FUZZ_SEED={seed}) panicked; kept in {}",
                file.display()
            );
        }
    };
    let mut i = 0u64;
    for input in &corpus {
        run(i, input);
        i += 1;
    }
    let end = Instant::now() + budget();
    while Instant::now() < end {
        let input = if corpus.is_empty() || rng.below(4) == 0 {
            let n = rng.below(256);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let base = &corpus[rng.below(corpus.len())];
            mutate(&mut rng, base, &corpus)
        };
        run(i, &input);
        i += 1;
    }
    i
}

/// Bucket and object names: what parses round-trips, the rest is an error.
pub fn names(data: &[u8]) {
    use crate::names::{BucketName, ObjectKey};
    let s = String::from_utf8_lossy(data);
    if let Ok(b) = BucketName::parse(&s) {
        assert_eq!(b.as_str(), s);
    }
    if let Ok(k) = ObjectKey::parse(&s) {
        assert_eq!(k.as_str(), s);
    }
    if let Ok(k) = ObjectKey::from_bytes(data) {
        assert_eq!(k.as_str().as_bytes(), data);
    }
    if let Ok(id) = s.parse::<crate::ids::ShardId>() {
        assert_eq!(id.to_string().parse::<crate::ids::ShardId>().ok(), Some(id));
    }
}
