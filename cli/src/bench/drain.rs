//! `dogfs bench drain` (DESIGN §12: "drain and rebalance move ≥ 100 MB/s"): on a temporary
//! in-process cluster of k+m+1 chunk servers whose capacities make usage ratios meaningful,
//!
//! 1. PUTs `--count` objects of `--size` and reads each back byte for byte (the healthy GET
//!    rate, one of the floor's inputs);
//! 2. **drains** chunk server 0 until metadata counts nothing left on it — shard bytes moved
//!    per second — and reads every object back exact; then stops and removes the server;
//! 3. adds two empty chunk servers and **rebalances** until DONE — shard bytes moved per second,
//!    and how even usage ended — and reads every object back exact again.
//!
//! Each rate is measured from the last poll that saw nothing moved (so the mover's idle
//! interval and the first survey are not counted against it; the row's note gives the time
//! from the admin call too), checked against the bar, and set beside the floor of this
//! machine in the same run: a move reads the shard from its source (at most as fast as a GET
//! reads shards) and writes every byte durably on the target (the disk's synced write rate);
//! the mover runs several moves at once, so one's reading overlaps another's writing, and the
//! moves cannot beat the slower of the two, min(get, disk). (A rebuild in `bench repair`
//! reads k shards per shard written, which is why its floor adds the two instead.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use dogfs_client::{Client, GetOptions};
use dogfs_core::size::ByteSize;
use dogfs_proto::meta::{ChunkNode, NodeState};

use super::disk::{self, DiskError};
use super::pattern::Pattern;
use super::stats::{BarCheck, Samples, Summary};
use crate::admin::view::{DrainView, RebalanceView};
use crate::args::BenchArgs;
use crate::dev::{DevCluster, DevError, DevOptions, Mover};
use crate::human;

/// How often progress is read: fine enough to time moves of a few seconds.
const POLL: Duration = Duration::from_millis(100);
/// The longest each phase may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(1800);
/// Servers added before the rebalance.
const ADDED: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum DrainBenchError {
    #[error("{step}: {source}")]
    Client {
        step: String,
        source: dogfs_client::Error,
    },
    #[error("GET {key}: {source}")]
    Get {
        key: String,
        source: dogfs_client::Error,
    },
    #[error("{key} read back wrong {when}: {detail}")]
    Corrupt {
        key: String,
        when: String,
        detail: String,
    },
    #[error("no chunk server registered at {address} (chunk server {index})")]
    NotRegistered { address: String, index: usize },
    #[error("{what} did not finish within {secs} s (last: {last})")]
    Timeout {
        what: &'static str,
        secs: u64,
        last: String,
    },
    #[error("the drain of chunk server 0 ended before it was empty: the server is {state} now")]
    DrainEnded { state: String },
    #[error("the rebalance ended before it was done: {summary}")]
    RebalanceEnded { summary: String },
    #[error(transparent)]
    Dev(Box<DevError>),
    #[error("disk workload: {0}")]
    Disk(#[from] DiskError),
}

impl From<DevError> for DrainBenchError {
    fn from(e: DevError) -> Self {
        DrainBenchError::Dev(Box::new(e))
    }
}

impl DrainBenchError {
    /// The SDK error inside, for the exit code.
    pub fn client_error(&self) -> Option<&dogfs_client::Error> {
        match self {
            DrainBenchError::Client { source, .. } | DrainBenchError::Get { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

fn client_err(step: impl Into<String>) -> impl FnOnce(dogfs_client::Error) -> DrainBenchError {
    let step = step.into();
    move |source| DrainBenchError::Client { step, source }
}

/// Shard bytes `--count` objects of `--size` put on the disks at k+m.
fn stored_bytes(args: &BenchArgs) -> u64 {
    let k = u64::from(args.k.max(1));
    args.size
        .bytes()
        .saturating_mul(args.count)
        .saturating_mul(k + u64::from(args.m))
        / k
}

/// The cluster the workload needs: k+m+1 chunk servers at least (one can be drained without
/// leaving fewer than k+m), the mover's defaults but no rebalance started by a join (the
/// bench starts and times it), and a capacity per server such that the servers left after
/// the drain are half full: usage ratios then differ enough, once two empty servers join, for
/// the rebalance to have work (with the disk's whole size as capacity every ratio would be
/// within any spread of the mean, and there would be nothing to move). A chunk server keeps
/// its free-space reserve out of its capacity too (what it reports available is capacity
/// less usage less reserve), so the reserve is added on top.
pub fn tune(opts: &mut DevOptions, args: &BenchArgs) {
    let chunks = args.chunks.max((args.k + args.m) as usize + 1);
    opts.chunks = Some(chunks);
    let after_drain = (chunks - 1).max(1) as u64;
    let usable = (2 * stored_bytes(args)).div_ceil(after_drain).max(1 << 20);
    opts.capacity = Some(ByteSize(usable.saturating_add(opts.reserve.bytes())));
    opts.mover = Some(Mover {
        rebalance_on_join: false,
        ..Mover::default()
    });
}

/// What the workload needs from the bench.
#[derive(Debug)]
pub struct Setup<'a> {
    pub client: &'a Client,
    pub dev: &'a mut DevCluster,
    pub bucket: &'a str,
    pub keys: &'a [String],
    pub size: u64,
    pub pattern: &'a Pattern,
    pub data_dir: &'a Path,
}

/// Rows and bars of the run.
#[derive(Debug, Default)]
pub struct DrainRun {
    pub rows: Vec<Summary>,
    pub bars: Vec<BarCheck>,
}

/// Steps 1 to 3 of the module docs, after the objects were put.
pub async fn run(s: Setup<'_>) -> Result<DrainRun, DrainBenchError> {
    let mut out = DrainRun::default();
    let healthy = verify(&s, "get+check healthy").await?;
    let get_mb = healthy.mb_per_s;
    out.rows.push(healthy);

    let address = chunk_address(s.dev, 0)?;
    let nodes = s
        .client
        .list_nodes()
        .await
        .map_err(client_err("listing chunk servers"))?;
    let node = nodes
        .iter()
        .find(|n| n.address == address)
        .ok_or_else(|| DrainBenchError::NotRegistered {
            address: address.clone(),
            index: 0,
        })?
        .clone();
    let mut drain = measure_drain(s.client, &node).await?;
    out.rows.push(verify(&s, "get+check drained").await?);
    // Stopped first: a removed server that still heartbeats is told it was removed.
    s.dev.stop_chunk(0).await?;
    s.client
        .remove_node(&node.node_id)
        .await
        .map_err(client_err(format!(
            "removing drained chunk server {}",
            node.node_id
        )))?;

    let mut added = Vec::new();
    for _ in 0..ADDED {
        let index = s.dev.add_chunk().await?;
        added.push(chunk_address(s.dev, index)?);
    }
    wait_up(s.client, &added).await?;
    let mut rebalance = measure_rebalance(s.client).await?;
    out.rows.push(verify(&s, "get+check rebalanced").await?);

    // The floor's other input, for as many bytes as the larger move wrote.
    let moved = drain.bytes.max(rebalance.bytes);
    let disk_row = disk::synced_write_rate(s.data_dir, moved.max(64 << 20), 1 << 20).await?;
    let floor = floor_mb_per_s(get_mb, disk_row.mb_per_s);
    for (row, bar) in [
        (&mut drain, "drain move rate"),
        (&mut rebalance, "rebalance move rate"),
    ] {
        out.bars
            .push(BarCheck::at_least(bar, row.mb_per_s, 100.0, "MB/s"));
        if let Some(n) = row.note.as_mut() {
            let ratio = if floor > 0.0 {
                row.mb_per_s / floor
            } else {
                0.0
            };
            n.push_str(&format!(
                "; floor here min(get, disk) = {floor:.0} MB/s (ratio {ratio:.2})"
            ));
        }
    }
    out.rows.insert(1, drain);
    out.rows.insert(3, rebalance);
    out.rows.push(disk_row);
    Ok(out)
}

/// Moves read shards and write them durably, several at once: the slower side bounds them.
pub fn floor_mb_per_s(get_mb: f64, disk_mb: f64) -> f64 {
    if get_mb > 0.0 && disk_mb > 0.0 {
        get_mb.min(disk_mb)
    } else {
        0.0
    }
}

fn chunk_address(dev: &DevCluster, index: usize) -> Result<String, DrainBenchError> {
    dev.chunk_grpc_addr(index)
        .map(|a: SocketAddr| a.to_string())
        .ok_or_else(|| {
            DrainBenchError::Dev(Box::new(DevError::NoSuchChunk {
                index,
                count: dev.chunk_count(),
            }))
        })
}

/// GETs every object once, one at a time, each checked byte for byte against the pattern.
async fn verify(s: &Setup<'_>, name: &str) -> Result<Summary, DrainBenchError> {
    let mut samples = Samples::new();
    let started = Instant::now();
    for (i, key) in s.keys.iter().enumerate() {
        let t = Instant::now();
        // The workloads put key i from seed i.
        let mut check = s.pattern.checker(i as u64);
        let info = s
            .client
            .get(s.bucket, key, &mut check, GetOptions::default())
            .await
            .map_err(|source| DrainBenchError::Get {
                key: key.clone(),
                source,
            })?;
        let corrupt = |detail: String| DrainBenchError::Corrupt {
            key: key.clone(),
            when: name.to_owned(),
            detail,
        };
        if let Some(at) = check.first_mismatch() {
            return Err(corrupt(format!("first wrong byte at offset {at}")));
        }
        if check.seen() != s.size || info.size != s.size {
            return Err(corrupt(format!(
                "{} bytes read, {} in its metadata, {} written",
                check.seen(),
                info.size,
                s.size
            )));
        }
        samples.record(t.elapsed(), s.size);
    }
    let mut row = samples.summarise(name, started.elapsed());
    row.note = Some(format!(
        "every object read back exact, one at a time ({} objects)",
        s.keys.len()
    ));
    Ok(row)
}

/// The start of the moving: the last poll at which nothing had moved yet.
#[derive(Debug)]
struct MoveClock {
    called: Instant,
    idle_until: Instant,
}

impl MoveClock {
    fn new() -> Self {
        let now = Instant::now();
        MoveClock {
            called: now,
            idle_until: now,
        }
    }

    fn saw(&mut self, moved: u64, at: Instant) {
        if moved == 0 {
            self.idle_until = at;
        }
    }

    /// A row for `shards` shards of `bytes` moved, done at `end`.
    fn row(&self, name: &str, shards: u64, bytes: u64, end: Instant, what: String) -> Summary {
        let moving = end.duration_since(self.idle_until);
        let mut samples = Samples::new();
        samples.record(moving, bytes);
        let mut row = samples.summarise(name, moving);
        row.ops = shards;
        row.ops_per_s = shards as f64 / moving.as_secs_f64().max(1e-9);
        row.note = Some(format!(
            "{what}: {shards} shards ({}) moved; {} from the admin call to the end; data \
             column = shard bytes moved",
            human::size(bytes),
            human::elapsed(end.duration_since(self.called))
        ));
        row
    }
}

/// Drains `node` until metadata counts nothing left on it.
async fn measure_drain(client: &Client, node: &ChunkNode) -> Result<Summary, DrainBenchError> {
    let id = &node.node_id;
    let mut clock = MoveClock::new();
    let mut n = client
        .drain_node(id)
        .await
        .map_err(client_err(format!("draining chunk server {id}")))?;
    // What was on the server when the drain began: left + moved at the first count (the
    // server's own figures come with heartbeats, seconds behind).
    let mut held: Option<(u64, u64)> = None;
    loop {
        let now = Instant::now();
        if n.state != NodeState::Draining as i32 {
            return Err(DrainBenchError::DrainEnded {
                state: crate::cluster::state_name(n.state).to_owned(),
            });
        }
        let view = n.drain.as_ref().map(DrainView::from);
        if let Some(d) = &view {
            clock.saw(d.bytes_moved, now);
            if d.surveyed_unix != 0 && held.is_none() {
                held = Some((d.shards_left + d.shards_moved, d.bytes_left + d.bytes_moved));
            }
            if d.drained {
                let (shards, bytes) = held.unwrap_or_default();
                let what = format!(
                    "chunk server 0 drained ({shards} shards, {} on it when the drain began)",
                    human::size(bytes)
                );
                return Ok(clock.row("drain (move)", d.shards_moved, d.bytes_moved, now, what));
            }
        } else {
            clock.saw(0, now);
        }
        if now.duration_since(clock.called) > PHASE_LIMIT {
            return Err(DrainBenchError::Timeout {
                what: "the drain",
                secs: PHASE_LIMIT.as_secs(),
                last: view.map_or_else(|| "not counted yet".to_owned(), |d| d.summary()),
            });
        }
        tokio::time::sleep(POLL).await;
        n = client
            .node_status(id)
            .await
            .map_err(client_err(format!("reading chunk server {id}")))?;
    }
}

/// Waits until a server registered at each of `addresses` is up.
async fn wait_up(client: &Client, addresses: &[String]) -> Result<(), DrainBenchError> {
    let limit = Duration::from_secs(60);
    let start = Instant::now();
    loop {
        let nodes = client
            .list_nodes()
            .await
            .map_err(client_err("listing chunk servers"))?;
        let up = addresses
            .iter()
            .filter(|a| {
                nodes
                    .iter()
                    .any(|n| &n.address == *a && n.state == NodeState::Up as i32)
            })
            .count();
        if up == addresses.len() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(DrainBenchError::Timeout {
                what: "the registration of the added chunk servers",
                secs: limit.as_secs(),
                last: format!("{up} of {} up", addresses.len()),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts a rebalance with the cluster's spread and waits until it is done.
async fn measure_rebalance(client: &Client) -> Result<Summary, DrainBenchError> {
    let mut clock = MoveClock::new();
    let mut r = RebalanceView::from(
        &client
            .start_rebalance(None)
            .await
            .map_err(client_err("starting the rebalance"))?,
    );
    loop {
        let now = Instant::now();
        clock.saw(r.bytes_moved, now);
        match r.state.as_str() {
            "done" => {
                let what = format!(
                    "{ADDED} empty servers added, rebalanced to usage mean {:.1}%, max \
                     deviation {:.1} points (spread {:.1})",
                    r.mean_used_percent, r.max_deviation_percent, r.spread_percent
                );
                return Ok(clock.row("rebalance (move)", r.shards_moved, r.bytes_moved, now, what));
            }
            "running" => {}
            _ => return Err(DrainBenchError::RebalanceEnded { summary: r.line() }),
        }
        if now.duration_since(clock.called) > PHASE_LIMIT {
            return Err(DrainBenchError::Timeout {
                what: "the rebalance",
                secs: PHASE_LIMIT.as_secs(),
                last: r.line(),
            });
        }
        tokio::time::sleep(POLL).await;
        r = RebalanceView::from(
            &client
                .rebalance_status()
                .await
                .map_err(client_err("reading the rebalance status"))?,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn bench_args(flags: &[&str]) -> BenchArgs {
        let argv = ["dogfs", "bench", "drain"].iter().chain(flags).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Bench(a) => a,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn the_cluster_has_a_spare_server_and_half_full_capacities() {
        let mut o = DevOptions::new("d");
        tune(&mut o, &bench_args(&[]));
        // 4+2 needs 7 servers to drain one; 16 x 64 MiB at 4+2 is 1.5 GiB of shards, which
        // fill the 6 servers left after the drain to half of 512 MiB (above the 1 GiB reserve).
        assert_eq!(o.chunks, Some(7));
        assert_eq!(o.capacity, Some(ByteSize((512 << 20) + (1 << 30))));
        let mover = o.mover.unwrap();
        assert!(!mover.rebalance_on_join);
        assert_eq!(mover.concurrency, 4);
        assert_eq!(mover.interval_ms, 2000);
        assert!((mover.spread_percent - 10.0).abs() < f64::EPSILON);

        let mut o = DevOptions::new("d");
        tune(
            &mut o,
            &bench_args(&["--chunks", "9", "--count", "2", "--size", "1MiB"]),
        );
        assert_eq!(o.chunks, Some(9));
        // 3 MiB of shards over 8: under the 1 MiB floor.
        assert_eq!(o.capacity, Some(ByteSize((1 << 20) + (1 << 30))));
    }

    #[test]
    fn the_floor_is_the_slower_of_reading_and_durable_writing() {
        assert!((floor_mb_per_s(1000.0, 250.0) - 250.0).abs() < 1e-9);
        assert!((floor_mb_per_s(300.0, 600.0) - 300.0).abs() < 1e-9);
        assert_eq!(floor_mb_per_s(0.0, 250.0), 0.0);
    }

    #[test]
    fn a_move_is_timed_from_the_last_idle_poll() {
        let mut c = MoveClock::new();
        let t0 = c.called;
        c.saw(0, t0 + Duration::from_secs(2));
        c.saw(5, t0 + Duration::from_secs(3));
        // Later polls that saw progress do not move the start.
        c.saw(9, t0 + Duration::from_secs(4));
        let row = c.row(
            "drain (move)",
            10,
            400_000_000,
            t0 + Duration::from_secs(6),
            "x".into(),
        );
        assert!((row.seconds - 4.0).abs() < 1e-9, "{row:?}");
        assert!((row.mb_per_s - 100.0).abs() < 1e-9, "{row:?}");
        assert!((row.ops_per_s - 2.5).abs() < 1e-9, "{row:?}");
        let note = row.note.unwrap();
        assert!(note.starts_with("x: 10 shards (381.5 MiB) moved; 6.0s from the admin call"));
    }
}
