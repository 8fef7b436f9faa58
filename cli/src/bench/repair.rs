//! `dogfs bench repair` (DESIGN §12 "repair" and "tail"): on a temporary in-process cluster
//! with one spare chunk server and shortened failure detection,
//!
//! 1. GETs of the stored objects, healthy, then with chunk server 0 **frozen** (a relay in
//!    front of it stops moving bytes, as a SIGSTOPped process would: connections open, nothing
//!    answered) — the extra latency is what hedged parity reads cost;
//! 2. chunk server 0 **stopped for good**: the time from the first due repair to a cluster
//!    with every segment back to k+m shards, and the rebuilt bytes per second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dogfs_client::{Client, GetOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::stats::{BarCheck, Samples, Summary};
use super::workloads::WorkloadError;

/// A TCP relay that can be frozen: while frozen it reads nothing from either side, so the
/// peer sees exactly what a stopped process shows (the kernel accepts connections and buffers
/// a little, then nothing moves).
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
    frozen: watch::Sender<bool>,
    /// Bytes relayed in both directions: shows that clients did reach the server through it.
    moved: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port; relays nowhere until [`Relay::set_target`].
    pub async fn bind() -> std::io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (target, target_rx) = watch::channel(None);
        let (frozen, frozen_rx) = watch::channel(false);
        let moved = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(listener, target_rx, frozen_rx, Arc::clone(&moved)));
        Ok(Relay {
            addr,
            target,
            frozen,
            moved,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_target(&self, to: SocketAddr) {
        self.target.send_replace(Some(to));
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    pub fn bytes_moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    target: watch::Receiver<Option<SocketAddr>>,
    frozen: watch::Receiver<bool>,
    moved: Arc<AtomicU64>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        let (target, frozen, moved) = (target.clone(), frozen.clone(), Arc::clone(&moved));
        tokio::spawn(async move {
            // No target yet: the connection closes, the caller retries.
            let Some(to) = *target.borrow() else { return };
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::join!(
                pump(ri, wo, frozen.clone(), Arc::clone(&moved)),
                pump(ro, wi, frozen, moved)
            );
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    moved: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = frozen.wait_for(|f| *f) => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// GETs every key once, one at a time, timing each.
pub async fn timed_gets(
    client: &Client,
    bucket: &str,
    keys: &[String],
    size: u64,
    name: &str,
) -> Result<Summary, WorkloadError> {
    let mut samples = Samples::new();
    let started = Instant::now();
    for key in keys {
        let t = Instant::now();
        let info = client
            .get(bucket, key, tokio::io::sink(), GetOptions::default())
            .await
            .map_err(|source| WorkloadError::Op {
                op: "GET",
                bucket: bucket.to_owned(),
                key: key.clone(),
                source,
            })?;
        if info.size != size {
            return Err(WorkloadError::ShortRead {
                bucket: bucket.to_owned(),
                key: key.clone(),
                got: info.size,
                want: size,
            });
        }
        samples.record(t.elapsed(), info.size);
    }
    Ok(samples.summarise(name, started.elapsed()))
}

/// What the repair run saw.
#[derive(Debug)]
pub struct RepairRun {
    pub row: Summary,
    pub bar: BarCheck,
}

/// Errors of the repair run beyond the workloads'.
#[derive(Debug, thiserror::Error)]
pub enum RepairBenchError {
    #[error("reading the cluster status: {0}")]
    Status(#[source] dogfs_client::Error),
    #[error("the stopped server's shards were not rebuilt within {secs} s (last status: {last})")]
    NotHealed { secs: u64, last: String },
}

/// Waits, after a chunk server was stopped at `stopped`, until repair has begun and then until
/// metadata reports no segment short of shards; measures the rebuild from the first due repair
/// to the end.
pub async fn measure_rebuild(
    client: &Client,
    stopped: Instant,
    within: Duration,
) -> Result<RepairRun, RepairBenchError> {
    let poll = Duration::from_millis(100);
    let before = client
        .cluster_status()
        .await
        .map_err(RepairBenchError::Status)?
        .repair
        .unwrap_or_default();
    let mut began: Option<Instant> = None;
    loop {
        let r = client
            .cluster_status()
            .await
            .map_err(RepairBenchError::Status)?
            .repair
            .unwrap_or_default();
        let now = Instant::now();
        if began.is_none() && (r.backlog_segments > 0 || r.repaired_bytes > before.repaired_bytes) {
            began = Some(now);
        }
        let last = format!(
            "{} degraded groups, backlog {}, waiting {}, {} bytes rebuilt",
            r.degraded.len(),
            r.backlog_segments,
            r.waiting_segments,
            r.repaired_bytes.saturating_sub(before.repaired_bytes)
        );
        if let Some(start) = began
            && r.degraded.is_empty()
            && r.backlog_segments == 0
            && r.waiting_segments == 0
        {
            let bytes = r.repaired_bytes.saturating_sub(before.repaired_bytes);
            let shards = r.repaired_shards.saturating_sub(before.repaired_shards);
            let elapsed = now.duration_since(start);
            let mut samples = Samples::new();
            samples.record(elapsed, bytes);
            let mut row = samples.summarise("repair (rebuild)", elapsed);
            row.ops = shards;
            row.ops_per_s = shards as f64 / elapsed.as_secs_f64().max(1e-9);
            row.note = Some(format!(
                "chunk server 0 stopped: {shards} shards ({}) rebuilt; {:.1} s from the stop \
                 to healed (failure detection and repair_after included); data column = shard \
                 bytes rebuilt",
                crate::human::size(bytes),
                now.duration_since(stopped).as_secs_f64()
            ));
            let bar = BarCheck::at_least("repair rebuild rate", row.mb_per_s, 100.0, "MB/s");
            return Ok(RepairRun { row, bar });
        }
        if now.duration_since(stopped) > within {
            return Err(RepairBenchError::NotHealed {
                secs: within.as_secs(),
                last,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Shared with `mod.rs`: the relay lives as long as the bench context.
pub type SharedRelay = Arc<Relay>;
