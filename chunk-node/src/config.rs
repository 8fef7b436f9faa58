//! Server settings: every one a clap flag with a `DOGFS_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use dogfs_core::size::ByteSize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `dogfs-chunk`: stores erasure-coded shards as flat files and serves them over gRPC.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dogfs-chunk", version, about)]
pub struct ChunkConfig {
    /// Directory holding the shards, the node identity and temp files.
    #[arg(long, env = "DOGFS_DATA_DIR")]
    pub data_dir: PathBuf,

    /// gRPC listen address (ChunkService).
    #[arg(long, env = "DOGFS_GRPC_ADDR", default_value = "0.0.0.0:7100")]
    pub grpc_addr: SocketAddr,

    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "DOGFS_HTTP_ADDR", default_value = "0.0.0.0:9100")]
    pub http_addr: SocketAddr,

    /// Free space never used for shards; writes that would eat into it are refused.
    #[arg(long, env = "DOGFS_RESERVE", default_value = "1GiB")]
    pub reserve: ByteSize,

    /// Most bytes shard files may use, when lower than the file system's size.
    #[arg(long, env = "DOGFS_CAPACITY")]
    pub capacity: Option<ByteSize>,

    /// Scrubber read rate per second; 0 turns the scrubber off.
    #[arg(long, env = "DOGFS_SCRUB_RATE", default_value = "32MiB")]
    pub scrub_rate: ByteSize,

    /// Seconds of rest between two scrub passes.
    #[arg(long, env = "DOGFS_SCRUB_INTERVAL_SECS", default_value_t = 86_400)]
    pub scrub_interval_secs: u64,

    /// Seconds in-flight requests get to finish after SIGTERM before the server exits anyway.
    #[arg(long, env = "DOGFS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Metadata nodes (`host:port`, comma-separated) to register with and heartbeat to. Any
    /// one of them forwards to the leader. Empty: standalone, no registration.
    #[arg(
        long,
        env = "DOGFS_META_ENDPOINTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub meta_endpoints: Vec<String>,

    /// `host:port` clients and peers use to reach this server's gRPC port, as registered with
    /// metadata. Default: the bound gRPC address, unless that is a wildcard (0.0.0.0, ::),
    /// which nobody can dial: then it must be set whenever --meta-endpoints is.
    #[arg(long, env = "DOGFS_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Failure domain (zone) reported at registration; empty when there are none.
    #[arg(long, env = "DOGFS_ZONE", default_value = "")]
    pub zone: String,

    /// When metadata refuses this server's id because the server was removed from the cluster:
    /// delete every shard and unfinished upload here (none is referenced any more), take a new
    /// id and register as a new server. Off: log how to fix it and exit with code 3.
    #[arg(
        long,
        env = "DOGFS_REJOIN_WHEN_REMOVED",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub rejoin_when_removed: bool,

    /// Repairs (`ReconstructShard`) and copies (`CopyShard`) this server runs at once, together
    /// (they compete for the same disk); more are refused with RESOURCE_EXHAUSTED so metadata
    /// retries them elsewhere or later. 0 refuses every repair and copy.
    #[arg(long, env = "DOGFS_REPAIR_CONCURRENCY", default_value_t = 4)]
    pub repair_concurrency: usize,

    /// Bytes per second all repairs and copies together may read from source servers (a token
    /// bucket); 0 means unlimited.
    #[arg(long, env = "DOGFS_REPAIR_BANDWIDTH", default_value = "0")]
    pub repair_bandwidth: ByteSize,

    /// Milliseconds a repair or copy waits for a source server to connect or send its next
    /// message before giving that source up (for another one, or failing the copy).
    #[arg(long, env = "DOGFS_REPAIR_SOURCE_TIMEOUT_MS", default_value_t = 10_000)]
    pub repair_source_timeout_ms: u64,

    /// TLS of the gRPC port and of this server's connections (plain text when not given).
    #[command(flatten)]
    pub tls: dogfs_security::TlsArgs,

    /// File of shard-grant keys, the same as the metadata nodes' (lines of 64 hex
    /// characters). When set, clients need a grant from the metadata service for every
    /// PutShard, GetShard, StatShard and DeleteShard (docs/security.md). Re-read when it
    /// changes. Needs TLS.
    #[arg(long, env = "DOGFS_GRANT_KEY_FILE")]
    pub grant_key_file: Option<PathBuf>,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "DOGFS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ChunkConfig {
    /// Settings for tests and embedding: loopback on ephemeral ports, no reserve, scrubber off.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        ChunkConfig {
            data_dir: data_dir.into(),
            grpc_addr: loopback,
            http_addr: loopback,
            reserve: ByteSize(0),
            capacity: None,
            scrub_rate: ByteSize(0),
            scrub_interval_secs: 86_400,
            shutdown_grace_secs: 5,
            meta_endpoints: Vec::new(),
            advertise_addr: None,
            zone: String::new(),
            rejoin_when_removed: false,
            repair_concurrency: 4,
            repair_bandwidth: ByteSize(0),
            repair_source_timeout_ms: 10_000,
            tls: dogfs_security::TlsArgs::default(),
            grant_key_file: None,
            log_format: LogFormat::Text,
        }
    }

    /// The metadata endpoints with blanks removed (`DOGFS_META_ENDPOINTS=""` or a trailing
    /// comma must not count as an endpoint).
    pub fn meta_endpoints(&self) -> Vec<String> {
        self.meta_endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[test]
    fn rejoin_when_removed_is_off_by_default_and_takes_a_bare_flag_or_a_value() {
        let parse = |extra: &[&str]| {
            let args = ["dogfs-chunk", "--data-dir", "/d"].iter().chain(extra);
            ChunkConfig::try_parse_from(args).map(|c| c.rejoin_when_removed)
        };
        // The environment is process-wide; the process tests cover DOGFS_REJOIN_WHEN_REMOVED.
        if std::env::var_os("DOGFS_REJOIN_WHEN_REMOVED").is_none() {
            assert!(!parse(&[]).unwrap());
        }
        assert!(parse(&["--rejoin-when-removed"]).unwrap());
        assert!(parse(&["--rejoin-when-removed=true"]).unwrap());
        assert!(!parse(&["--rejoin-when-removed=false"]).unwrap());
        assert!(parse(&["--rejoin-when-removed=maybe"]).is_err());
    }
}
