//! Placement and rebalance planning cost, so the metadata service knows what one call takes:
//! `place` and `replacement` on a 120-server, 3-zone cluster (per segment of an upload), and
//! `plan_rebalance` over a batch of 20,000 RS 4+2 segments (120,000 shards) on 60 servers after
//! a scale-up, and while one server drains. Run: `cargo bench -p dogfs-core --bench placement`.

// A benchmark whose setup fails should stop loudly, as a test does.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dogfs_core::placement::{
    NodeId, NodeState, NodeView, SegmentPlacement, ShardLocation, place, plan_rebalance,
    replacement, segment_seed,
};

const GIB: u64 = 1 << 30;
const SHARD: u64 = 16 << 20;

fn cluster(n: u128) -> Vec<NodeView> {
    (0..n)
        .map(|i| NodeView {
            id: NodeId::from_u128(i),
            zone: Some(format!("zone-{}", i % 3)),
            state: NodeState::Up,
            capacity_bytes: 4096 * GIB,
            used_bytes: (i as u64 % 7) * 300 * GIB,
        })
        .collect()
}

fn placement(c: &mut Criterion) {
    let nodes = cluster(120);
    let mut g = c.benchmark_group("place");
    g.measurement_time(Duration::from_secs(3));
    let mut s = 0u64;
    g.bench_function("120 nodes, 3 zones, 4+2", |b| {
        b.iter(|| {
            s += 1;
            black_box(place(&nodes, 6, SHARD, segment_seed(1, s), &[]).unwrap())
        })
    });
    let current: Vec<NodeId> = place(&nodes, 6, SHARD, 7, &[]).unwrap();
    g.bench_function("replacement, 120 nodes", |b| {
        b.iter(|| {
            s += 1;
            black_box(replacement(&nodes, &current[1..], current[0], SHARD, s, &[]).unwrap())
        })
    });
    g.finish();
}

/// 60 servers: the first 40 hold 20,000 segments placed by `place`, the last 20 are new.
fn catalogue() -> (Vec<NodeView>, Vec<SegmentPlacement>) {
    let mut nodes: Vec<NodeView> = cluster(60)
        .into_iter()
        .map(|n| NodeView { used_bytes: 0, ..n })
        .collect();
    let segs: Vec<SegmentPlacement> = (0..20_000u64)
        .map(|s| {
            let targets = place(&nodes[..40], 6, SHARD, segment_seed(2, s), &[]).unwrap();
            let shards = targets
                .into_iter()
                .enumerate()
                .map(|(i, node)| ShardLocation {
                    index: i as u8,
                    node,
                    bytes: SHARD,
                })
                .collect();
            SegmentPlacement { segment: s, shards }
        })
        .collect();
    for n in nodes.iter_mut() {
        n.used_bytes = segs
            .iter()
            .flat_map(|s| &s.shards)
            .filter(|x| x.node == n.id)
            .map(|x| x.bytes)
            .sum();
    }
    (nodes, segs)
}

fn rebalance(c: &mut Criterion) {
    let (nodes, segs) = catalogue();
    let mut g = c.benchmark_group("plan_rebalance");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("scale-up, 120k shards, 2000 moves", |b| {
        b.iter(|| black_box(plan_rebalance(&nodes, &segs, 0.05, 2000).unwrap()))
    });
    let mut draining = nodes.clone();
    draining[0].state = NodeState::Draining;
    g.bench_function("drain one of 60, 120k shards", |b| {
        b.iter(|| black_box(plan_rebalance(&draining, &segs, 0.05, 100_000).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, placement, rebalance);
criterion_main!(benches);
