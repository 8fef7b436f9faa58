//! Server settings: every one a clap flag with a `DOGFS_*` environment variable
//! (`docs/meta-service.md` has the table).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dogfs_core::scheme::{Codec, ErasureScheme, SchemeError};
use dogfs_core::size::ByteSize;

use crate::raft::TransportMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Invalid settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--peers is empty: list every metadata node's host:port in node-id order")]
    NoPeers,
    #[error("--node-id {node_id} is not an index into --peers ({peers} entries)")]
    NodeId { node_id: u64, peers: usize },
    #[error("--partitions {0} is out of range: it must be in 1..={max}", max = MAX_PARTITIONS)]
    Partitions(u64),
    #[error("erasure scheme: {0}")]
    Scheme(#[from] SchemeError),
    #[error("--down-after-secs ({down}) must be greater than --suspect-after-secs ({suspect})")]
    Liveness { suspect: u64, down: u64 },
    #[error(
        "--min-write-shards {got} is out of range: with the default scheme {k}+{m} it must be \
         0 (k+1) or in {floor}..={total}"
    )]
    MinWriteShards {
        got: usize,
        k: u32,
        m: u32,
        floor: u32,
        total: u32,
    },
    #[error("--{flag} must be greater than 0")]
    Zero { flag: &'static str },
    #[error(
        "--{flag} needs TLS (--tls-cert, --tls-key, --tls-ca): tokens and grants sent in plain \
         text could be read off the network, and without certificates the servers cannot tell \
         components from clients"
    )]
    NeedsTls { flag: &'static str },
    #[error(
        "--rebalance-spread-percent {0} is out of range: percentage points above 0 and below 100"
    )]
    Spread(f64),
}

/// The most object partitions a cluster may have (the operator's `spec.meta.partitions`
/// has the same limit).
pub const MAX_PARTITIONS: u64 = 1024;

/// `dogfs-meta`: the metadata service (Raft groups, object catalogue, chunk registry, admin API).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dogfs-meta", version, about)]
pub struct MetaConfig {
    /// This node's id: its index in --peers.
    #[arg(long, env = "DOGFS_NODE_ID")]
    pub node_id: u64,

    /// Every metadata node's gRPC `host:port`, comma-separated, in node-id order.
    #[arg(long, env = "DOGFS_PEERS", value_delimiter = ',', required = true)]
    pub peers: Vec<String>,

    /// gRPC listen address (clients, admin, chunk servers and Raft).
    #[arg(long, env = "DOGFS_GRPC_ADDR", default_value = "0.0.0.0:7000")]
    pub grpc_addr: SocketAddr,

    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "DOGFS_HTTP_ADDR", default_value = "0.0.0.0:9100")]
    pub http_addr: SocketAddr,

    /// Address peers and clients reach this node at (its entry in the Raft membership when it
    /// bootstraps); default: peers[node_id]. Must name the same node as peers[node_id].
    #[arg(long, env = "DOGFS_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Directory for the WAL, the state database and snapshots.
    #[arg(long, env = "DOGFS_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Object partitions (Raft groups 1..=P); recorded at bootstrap, fixed afterwards.
    #[arg(long, env = "DOGFS_PARTITIONS", default_value_t = 8)]
    pub partitions: u64,

    /// Default erasure scheme: data shards.
    #[arg(long, env = "DOGFS_EC_K", default_value_t = 4)]
    pub ec_k: u32,

    /// Default erasure scheme: parity shards.
    #[arg(long, env = "DOGFS_EC_M", default_value_t = 2)]
    pub ec_m: u32,

    /// Default erasure cell size.
    #[arg(long, env = "DOGFS_CELL_SIZE", default_value = "1MiB")]
    pub cell_size: ByteSize,

    /// Data bytes per segment (one set of k+m shards).
    #[arg(long, env = "DOGFS_SEGMENT_SIZE", default_value = "64MiB")]
    pub segment_size: ByteSize,

    /// Objects of at most this many bytes are stored in their metadata record.
    #[arg(long, env = "DOGFS_INLINE_MAX", default_value = "4KiB")]
    pub inline_max: ByteSize,

    /// An upload not committed within this many seconds expires; its shards are collected.
    #[arg(long, env = "DOGFS_UPLOAD_TTL_SECS", default_value_t = 86_400)]
    pub upload_ttl_secs: u64,

    /// CompleteMultipartUpload refuses parts smaller than this, except the last (S3:
    /// EntityTooSmall).
    #[arg(long, env = "DOGFS_MULTIPART_MIN_PART_SIZE", default_value = "5MiB")]
    pub multipart_min_part_size: ByteSize,

    /// A chunk server without a heartbeat for this long becomes suspect (no new placements).
    #[arg(long, env = "DOGFS_SUSPECT_AFTER_SECS", default_value_t = 30)]
    pub suspect_after_secs: u64,

    /// A chunk server without a heartbeat for this long becomes down.
    #[arg(long, env = "DOGFS_DOWN_AFTER_SECS", default_value_t = 600)]
    pub down_after_secs: u64,

    /// The heartbeat interval chunk servers are told to use.
    #[arg(long, env = "DOGFS_HEARTBEAT_INTERVAL_MS", default_value_t = 3000)]
    pub heartbeat_interval_ms: u64,

    /// How often each partition leader runs garbage collection and upload expiry.
    #[arg(long, env = "DOGFS_GC_INTERVAL_MS", default_value_t = 5000)]
    pub gc_interval_ms: u64,

    /// Shard deletions per partition per GC pass (the GC rate bound).
    #[arg(long, env = "DOGFS_GC_BATCH", default_value_t = 64)]
    pub gc_batch: usize,

    /// Write quorum: the fewest shards of a segment that must be stored for a PUT to commit
    /// when chunk servers are down or fail (the rest are recorded missing and repaired).
    /// 0 means k+1; otherwise k+1..=k+m (clamped into that range for objects of other schemes).
    #[arg(long, env = "DOGFS_MIN_WRITE_SHARDS", default_value_t = 0)]
    pub min_write_shards: usize,

    /// Seconds a chunk server must have been down before its shards are rebuilt elsewhere
    /// (Ceph's down-out interval). Missing and corrupt shards are rebuilt at once.
    #[arg(long, env = "DOGFS_REPAIR_AFTER_SECS", default_value_t = 600)]
    pub repair_after_secs: u64,

    /// How often each partition leader looks for segments to repair.
    #[arg(long, env = "DOGFS_REPAIR_INTERVAL_MS", default_value_t = 5000)]
    pub repair_interval_ms: u64,

    /// Shard rebuilds this metadata node runs at once (over the partitions it leads); each
    /// runs on a chunk server, which has its own limits.
    #[arg(long, env = "DOGFS_REPAIR_CONCURRENCY", default_value_t = 4)]
    pub repair_concurrency: usize,

    /// A shard file on a chunk server that nothing references is deleted once it is this old
    /// (orphans of killed uploads, failed writes, interrupted repairs).
    #[arg(long, env = "DOGFS_ORPHAN_GRACE_SECS", default_value_t = 3600)]
    pub orphan_grace_secs: u64,

    /// How often the system group's leader checks each chunk server's inventory for orphans.
    #[arg(long, env = "DOGFS_ORPHAN_INTERVAL_MS", default_value_t = 600_000)]
    pub orphan_interval_ms: u64,

    /// Shard moves (drains and rebalancing) the system group's leader runs at once; each is a
    /// CopyShard on the target chunk server, which shares its repair limits.
    #[arg(long, env = "DOGFS_MOVER_CONCURRENCY", default_value_t = 4)]
    pub mover_concurrency: usize,

    /// How often the mover looks for work when it has none (it plans the next batch at once
    /// when a batch ends).
    #[arg(long, env = "DOGFS_MOVER_INTERVAL_MS", default_value_t = 2000)]
    pub mover_interval_ms: u64,

    /// A rebalance ends when every up server's usage ratio is within this many percentage
    /// points of the cluster's mean ratio.
    #[arg(long, env = "DOGFS_REBALANCE_SPREAD_PERCENT", default_value_t = 10.0)]
    pub rebalance_spread_percent: f64,

    /// Start a rebalance when a new chunk server registers.
    #[arg(
        long,
        env = "DOGFS_REBALANCE_ON_JOIN",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub rebalance_on_join: bool,

    /// TLS of the gRPC port and of this node's connections (plain text when not given).
    #[command(flatten)]
    pub tls: dogfs_security::TlsArgs,

    /// File holding the bootstrap admin token. When set, every client and admin call needs a
    /// bearer token (this one, or one created with `dogfs admin token create`); re-read when
    /// it changes. Needs TLS.
    #[arg(long, env = "DOGFS_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// File of shard-grant keys (lines of 64 hex characters; the first signs, all verify),
    /// shared with the chunk servers. When set, every shard location handed to a client
    /// carries a grant (docs/security.md). Re-read when it changes. Needs TLS.
    #[arg(long, env = "DOGFS_GRANT_KEY_FILE")]
    pub grant_key_file: Option<PathBuf>,

    /// Lifetime of the GetShard grants in a GetObject answer (PutShard grants live as long as
    /// their upload).
    #[arg(long, env = "DOGFS_GRANT_TTL_SECS", default_value_t = 3600)]
    pub grant_ttl_secs: u64,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "DOGFS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Raft snapshot every this many log entries per group (tests use small values).
    #[arg(
        long,
        env = "DOGFS_SNAPSHOT_EVERY",
        default_value_t = 10_000,
        hide = true
    )]
    pub snapshot_every: u64,

    /// Log entries kept behind a snapshot for lagging followers.
    #[arg(long, env = "DOGFS_SNAPSHOT_KEEP", default_value_t = 1000, hide = true)]
    pub snapshot_keep: u64,

    /// Batch entries each group's proposer keeps in flight (group commit at the proposer).
    #[arg(
        long,
        env = "DOGFS_PROPOSER_IN_FLIGHT",
        default_value_t = 1,
        hide = true
    )]
    pub proposer_in_flight: usize,

    /// How Raft messages travel between metadata nodes: `stream` (one node-pair stream per
    /// peer, every group's messages framed together) or `unary` (one call per message, as
    /// before the stream; for comparison). Snapshot chunks are unary either way.
    #[arg(
        long,
        env = "DOGFS_RAFT_TRANSPORT",
        default_value = "stream",
        hide = true
    )]
    pub raft_transport: TransportMode,

    /// One heartbeat tick for all groups the node leads (true) or openraft's timer per group.
    #[arg(
        long,
        env = "DOGFS_RAFT_COALESCE_HEARTBEATS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        hide = true
    )]
    pub raft_coalesce_heartbeats: bool,

    /// Seconds the HTTP side port gets to drain after SIGTERM (gRPC drains with the Raft node).
    #[arg(long, env = "DOGFS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl MetaConfig {
    /// Settings for tests and embedding: loopback, ephemeral HTTP port, 2 partitions,
    /// short liveness and GC timings, 1 s suspect / 3 s down.
    pub fn for_tests(node_id: u64, peers: Vec<String>, data_dir: impl Into<PathBuf>) -> Self {
        MetaConfig {
            node_id,
            peers,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_addr: None,
            tls: dogfs_security::TlsArgs::default(),
            auth_token_file: None,
            grant_key_file: None,
            grant_ttl_secs: 3600,
            data_dir: data_dir.into(),
            partitions: 2,
            ec_k: 4,
            ec_m: 2,
            cell_size: ByteSize(64 * 1024),
            segment_size: ByteSize(1 << 20),
            inline_max: ByteSize(4096),
            upload_ttl_secs: 3600,
            multipart_min_part_size: ByteSize(5 << 20),
            suspect_after_secs: 1,
            down_after_secs: 3,
            heartbeat_interval_ms: 200,
            gc_interval_ms: 200,
            gc_batch: 64,
            min_write_shards: 0,
            repair_after_secs: 2,
            repair_interval_ms: 200,
            repair_concurrency: 4,
            orphan_grace_secs: 3600,
            orphan_interval_ms: 1000,
            mover_concurrency: 4,
            mover_interval_ms: 200,
            rebalance_spread_percent: 10.0,
            rebalance_on_join: true,
            log_format: LogFormat::Text,
            snapshot_every: 10_000,
            snapshot_keep: 1000,
            proposer_in_flight: 1,
            raft_transport: TransportMode::default(),
            raft_coalesce_heartbeats: true,
            shutdown_grace_secs: 2,
        }
    }

    /// Checks the settings that clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.is_empty() {
            return Err(ConfigError::NoPeers);
        }
        if usize::try_from(self.node_id).map_or(true, |i| i >= self.peers.len()) {
            return Err(ConfigError::NodeId {
                node_id: self.node_id,
                peers: self.peers.len(),
            });
        }
        // Every node hosts every group: far more groups than this is resources, not scale.
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(ConfigError::Partitions(self.partitions));
        }
        let scheme = self.default_scheme()?;
        let total = scheme.total();
        let floor = usize::from(scheme.k()) + 1;
        if self.min_write_shards != 0 && !(floor..=total).contains(&self.min_write_shards) {
            return Err(ConfigError::MinWriteShards {
                got: self.min_write_shards,
                k: self.ec_k,
                m: self.ec_m,
                floor: self.ec_k + 1,
                total: self.ec_k + self.ec_m,
            });
        }
        for (flag, v) in [
            ("repair-interval-ms", self.repair_interval_ms),
            ("repair-concurrency", self.repair_concurrency as u64),
            ("orphan-interval-ms", self.orphan_interval_ms),
            ("mover-concurrency", self.mover_concurrency as u64),
            ("mover-interval-ms", self.mover_interval_ms),
            ("grant-ttl-secs", self.grant_ttl_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        if crate::registry::rebalance::spread_fraction(self.rebalance_spread_percent).is_err() {
            return Err(ConfigError::Spread(self.rebalance_spread_percent));
        }
        let tls = self.tls.tls_cert.is_some();
        if self.auth_token_file.is_some() && !tls {
            return Err(ConfigError::NeedsTls {
                flag: "auth-token-file",
            });
        }
        if self.grant_key_file.is_some() && !tls {
            return Err(ConfigError::NeedsTls {
                flag: "grant-key-file",
            });
        }
        if self.down_after_secs <= self.suspect_after_secs {
            return Err(ConfigError::Liveness {
                suspect: self.suspect_after_secs,
                down: self.down_after_secs,
            });
        }
        Ok(())
    }

    /// The default erasure scheme.
    pub fn default_scheme(&self) -> Result<ErasureScheme, SchemeError> {
        ErasureScheme::new(Codec::ReedSolomon, self.ec_k, self.ec_m, self.cell_size.0)
    }

    /// The peers as id → address, this node's own entry being its advertised address.
    pub fn peer_map(&self) -> BTreeMap<u64, String> {
        let mut m: BTreeMap<u64, String> = (0u64..).zip(self.peers.iter().cloned()).collect();
        m.insert(self.node_id, self.advertised());
        m
    }

    /// This node's advertised address.
    pub fn advertised(&self) -> String {
        self.advertise_addr.clone().unwrap_or_else(|| {
            usize::try_from(self.node_id)
                .ok()
                .and_then(|i| self.peers.get(i).cloned())
                .unwrap_or_default()
        })
    }

    pub(crate) fn suspect_after(&self) -> Duration {
        Duration::from_secs(self.suspect_after_secs)
    }

    pub(crate) fn down_after(&self) -> Duration {
        Duration::from_secs(self.down_after_secs)
    }

    /// The write quorum for segments of `scheme` (the setting clamped to k+1..=k+m).
    pub fn write_quorum(&self, scheme: &ErasureScheme) -> usize {
        crate::catalog::ops::write_quorum(
            self.min_write_shards,
            usize::from(scheme.k()),
            scheme.total(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn write_quorum_is_checked_against_the_default_scheme() {
        let peers = vec!["127.0.0.1:1".to_string()];
        let mut cfg = MetaConfig::for_tests(0, peers, "d");
        for ok in [0, 5, 6] {
            cfg.min_write_shards = ok;
            assert!(cfg.validate().is_ok(), "{ok}");
        }
        for bad in [1, 4, 7] {
            cfg.min_write_shards = bad;
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("--min-write-shards {bad}")), "{e}");
            assert!(e.contains("5..=6"), "{e}");
        }
        cfg.min_write_shards = 0;
        let s = cfg.default_scheme().unwrap();
        assert_eq!(cfg.write_quorum(&s), 5);
        cfg.min_write_shards = 6;
        assert_eq!(cfg.write_quorum(&s), 6);
        // Another scheme: clamped into its own range.
        let small = ErasureScheme::new(Codec::ReedSolomon, 2, 1, 4096).unwrap();
        assert_eq!(cfg.write_quorum(&small), 3);
    }

    #[test]
    fn partitions_out_of_range_are_refused_by_name() {
        let peers = vec!["127.0.0.1:1".to_string()];
        let mut cfg = MetaConfig::for_tests(0, peers, "d");
        for ok in [1, 8, MAX_PARTITIONS] {
            cfg.partitions = ok;
            assert!(cfg.validate().is_ok(), "{ok}");
        }
        for bad in [0, MAX_PARTITIONS + 1, u64::MAX] {
            cfg.partitions = bad;
            let e = cfg.validate().unwrap_err();
            assert!(
                e.to_string().contains(&format!("--partitions {bad}")),
                "{e}"
            );
        }
    }
}
