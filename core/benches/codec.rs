//! Codec throughput against the DESIGN §12 bars, measured as ratios inside one run:
//! RS 4+2 encode with 1 MiB cells ≥ 8 GB/s and ≥ 0.8 × a 256 MiB memcpy; reconstruct with two
//! shards lost ≥ 6 GB/s. All on one thread. Run: `cargo bench -p dogfs-core --bench codec`.

// A benchmark whose setup fails should stop loudly, as a test does.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dogfs_core::codec::{COLUMN_BYTES, ErasureCodec, ReedSolomonCodec};

const MIB: usize = 1024 * 1024;
const K: usize = 4;
const M: usize = 2;
const CELL: usize = MIB;

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn memcpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let src = bytes(256 * MIB, 1);
    let mut dst = vec![0u8; 256 * MIB];
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function("256MiB", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)));
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_rs_4_2_1MiB");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes((K * CELL) as u64));
    let stripe = bytes(K * CELL, 2);
    let mut parity = vec![0u8; M * CELL];

    // One stripe, reused: the data is warm in L3, as right after the client filled it.
    let codec = ReedSolomonCodec::new(K, M).unwrap();
    g.bench_function("stripe", |b| {
        b.iter(|| {
            codec
                .encode_stripe(black_box(&stripe), &mut parity)
                .unwrap()
        });
    });

    // Column widths around the default, to show the tuning.
    for column in [4 * 1024, 8 * 1024, 16 * 1024, 32 * 1024, 64 * 1024, CELL] {
        if column == COLUMN_BYTES {
            continue;
        }
        let codec = ReedSolomonCodec::new(K, M)
            .unwrap()
            .with_column_bytes(column);
        g.bench_with_input(BenchmarkId::new("column", column), &column, |b, _| {
            b.iter(|| {
                codec
                    .encode_stripe(black_box(&stripe), &mut parity)
                    .unwrap()
            });
        });
    }

    // The crate's own whole-cell encode, the baseline column blocking improves on.
    let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(K, M).unwrap();
    g.bench_function("crate_encode_sep", |b| {
        let data: Vec<&[u8]> = stripe.chunks(CELL).collect();
        let mut par: Vec<&mut [u8]> = parity.chunks_mut(CELL).collect();
        b.iter(|| rs.encode_sep(black_box(&data), &mut par).unwrap());
    });
    g.finish();

    // A whole 64 MiB segment, 16 stripes: the data streams from memory, as in a large PUT.
    let mut g = c.benchmark_group("encode_rs_4_2_1MiB_segment");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let segment = bytes(64 * MIB, 3);
    g.throughput(Throughput::Bytes(segment.len() as u64));
    g.bench_function("64MiB", |b| {
        b.iter(|| {
            for s in segment.chunks(K * CELL) {
                codec.encode_stripe(black_box(s), &mut parity).unwrap();
            }
        });
    });
    g.bench_function("64MiB_crate_encode_sep", |b| {
        b.iter(|| {
            for s in segment.chunks(K * CELL) {
                let data: Vec<&[u8]> = s.chunks(CELL).collect();
                let mut par: Vec<&mut [u8]> = parity.chunks_mut(CELL).collect();
                rs.encode_sep(black_box(&data), &mut par).unwrap();
            }
        });
    });
    g.finish();
}

fn reconstruct(c: &mut Criterion) {
    let mut g = c.benchmark_group("reconstruct_rs_4_2_1MiB");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes((K * CELL) as u64));
    let codec = ReedSolomonCodec::new(K, M).unwrap();
    let stripe = bytes(K * CELL, 4);
    let mut parity = vec![0u8; M * CELL];
    codec.encode_stripe(&stripe, &mut parity).unwrap();
    let mut shards: Vec<Vec<u8>> = stripe
        .chunks(CELL)
        .chain(parity.chunks(CELL))
        .map(<[u8]>::to_vec)
        .collect();

    for (name, lost) in [("lost_d0_d1", [0, 1]), ("lost_d0_p0", [0, 4])] {
        let mut present = [true; K + M];
        for i in lost {
            present[i] = false;
        }
        g.bench_function(name, |b| {
            let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(Vec::as_mut_slice).collect();
            b.iter(|| codec.reconstruct(black_box(&mut refs), &present).unwrap());
        });
    }
    // Check the benchmark rebuilt the right bytes, not just fast ones.
    assert_eq!(shards[..K].concat(), stripe);

    let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(K, M).unwrap();
    g.bench_function("crate_reconstruct_d0_d1", |b| {
        let mut refs: Vec<(&mut [u8], bool)> = shards
            .iter_mut()
            .enumerate()
            .map(|(i, s)| (s.as_mut_slice(), i > 1))
            .collect();
        b.iter(|| {
            refs[0].1 = false;
            refs[1].1 = false;
            rs.reconstruct(black_box(&mut refs)).unwrap()
        });
    });
    g.finish();
}

criterion_group!(benches, memcpy, encode, reconstruct);
criterion_main!(benches);
