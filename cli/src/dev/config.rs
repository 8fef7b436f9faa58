//! The servers' configurations in a dev cluster, and starting a chunk server on a port that
//! was just released.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_core::size::ByteSize;
use dogfs_meta::MetaConfig;

use super::{DevError, DevOptions, Healing, Layout, Mover};

pub(super) async fn start_chunk_server(
    index: usize,
    cfg: &ChunkConfig,
) -> Result<ChunkServer, DevError> {
    // A port just released (a restart, or a free port found by binding) is bound again by
    // the server; retry briefly in case the kernel has not let go of it yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ChunkServer::start(cfg).await {
            Ok(s) => return Ok(s),
            Err(dogfs_chunk::ServerError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => return Err(DevError::StartChunk { index, source }),
        }
    }
}

/// Production-like settings (1 MiB cells, 64 MiB segments), with quicker
/// heartbeats so `cluster status` reflects a stopped server soon.
pub(super) fn meta_config(
    index: usize,
    peers: &[String],
    dir: &Path,
    layout: &Layout,
    healing: Option<Healing>,
    mover: Option<Mover>,
) -> MetaConfig {
    let mut cfg = MetaConfig::for_tests(
        index as u64,
        peers.to_vec(),
        dir.join(format!("meta-{index}")),
    );
    cfg.partitions = layout.partitions;
    cfg.ec_k = layout.k;
    cfg.ec_m = layout.m;
    cfg.cell_size = ByteSize(1 << 20);
    cfg.segment_size = ByteSize(64 << 20);
    cfg.inline_max = ByteSize(4096);
    cfg.upload_ttl_secs = 86_400;
    cfg.suspect_after_secs = 10;
    cfg.down_after_secs = 600;
    cfg.heartbeat_interval_ms = 1000;
    cfg.gc_interval_ms = 5000;
    // The service's defaults (MetaConfig::for_tests shortens them for tests).
    cfg.repair_after_secs = 600;
    cfg.repair_interval_ms = 5000;
    cfg.orphan_grace_secs = 3600;
    cfg.orphan_interval_ms = 600_000;
    let mover = mover.unwrap_or_default();
    cfg.mover_concurrency = mover.concurrency;
    cfg.mover_interval_ms = mover.interval_ms;
    cfg.rebalance_spread_percent = mover.spread_percent;
    cfg.rebalance_on_join = mover.rebalance_on_join;
    // The metadata server reads these from its environment too; for in-process clusters
    // (`dogfs dev`, `dogfs bench`) they allow the same comparisons.
    if let Ok(v) = std::env::var("DOGFS_RAFT_TRANSPORT") {
        match v.parse() {
            Ok(t) => cfg.raft_transport = t,
            Err(e) => tracing::warn!(value = %v, error = %e, "ignoring DOGFS_RAFT_TRANSPORT"),
        }
    }
    if let Ok(v) = std::env::var("DOGFS_RAFT_COALESCE_HEARTBEATS") {
        match v.parse() {
            Ok(b) => cfg.raft_coalesce_heartbeats = b,
            Err(e) => {
                tracing::warn!(value = %v, error = %e, "ignoring DOGFS_RAFT_COALESCE_HEARTBEATS");
            }
        }
    }
    if let Some(h) = healing {
        cfg.suspect_after_secs = h.suspect_after_secs;
        cfg.down_after_secs = h.down_after_secs;
        cfg.repair_after_secs = h.repair_after_secs;
        cfg.heartbeat_interval_ms = 250;
        cfg.repair_interval_ms = 250;
    }
    cfg
}

pub(super) fn chunk_config(
    index: usize,
    peers: &[String],
    dir: &Path,
    layout: &Layout,
    opts: &DevOptions,
) -> ChunkConfig {
    let mut cfg = ChunkConfig::for_tests(dir.join(format!("chunk-{index}")));
    let port = |ports: &[u16]| ports.get(index).copied().unwrap_or(0);
    cfg.grpc_addr = SocketAddr::from(([127, 0, 0, 1], port(&layout.chunk_grpc)));
    cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], port(&layout.chunk_http)));
    cfg.reserve = opts.reserve;
    cfg.capacity = opts.capacity;
    cfg.meta_endpoints = peers.to_vec();
    cfg.advertise_addr = opts
        .chunk_advertise
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, a)| a.clone());
    cfg
}
