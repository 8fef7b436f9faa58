//! The command line (clap derive). Every flag is documented here; docs/cli.md follows it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dogfs_core::size::ByteSize;

use crate::human::{ByteRange, parse_duration, parse_spread};

/// The endpoint used when neither `--endpoint` nor `DOGFS_ENDPOINT` gives one.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7000";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other error
  2  usage error (bad flags or arguments)
  3  not found (bucket, object or chunk server)
  4  invalid input (bad bucket or key name, range, size, chunk server)
  5  unavailable (endpoint unreachable, no leader, timed out; for `admin ... --wait`, the
     work goes on)
  6  data loss (too many shards lost or corrupt)
  7  conflict or precondition (bucket exists, bucket not empty, server not empty)
  8  outcome unknown: a put, rm, mb, rb or admin change was sent and not answered; it may
     or may not have happened (check with `dogfs stat`, `dogfs admin nodes`)";

/// `dogfs`: the DogFS command-line tool.
#[derive(Debug, Parser)]
#[command(name = "dogfs", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Metadata service endpoints, `host:port`, comma-separated [default: 127.0.0.1:7000].
    #[arg(long, global = true, env = "DOGFS_ENDPOINT", value_delimiter = ',')]
    pub endpoint: Vec<String>,

    /// PEM CA bundle of the cluster's TLS: connect over TLS (`https://`), trusting it.
    /// Without it, plain text.
    #[arg(long, global = true, env = "DOGFS_CA")]
    pub ca: Option<std::path::PathBuf>,

    /// Bearer token, for clusters that check tokens (`dogfs admin token create` makes one).
    #[arg(long, global = true, env = "DOGFS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File holding the bearer token (e.g. a mounted Secret); --token wins when both are set.
    #[arg(long, global = true, env = "DOGFS_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Machine-readable output: one JSON document per line on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars or confirmations; results and errors only.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// How long to wait for the cluster: a command that moves no data ends within it, each
    /// metadata call (retries included) too, and a transfer fails when no byte moves for it.
    #[arg(long, global = true, env = "DOGFS_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Hedged reads: a shard read that delivers nothing for the adaptive hedge delay is read
    /// around at once (parity); the delay is at least this [default: 20ms]. A bare number is
    /// milliseconds.
    #[arg(long, global = true, env = "DOGFS_HEDGE_MIN_MS", value_parser = parse_millis)]
    pub hedge_min: Option<Duration>,

    /// The most the hedge delay grows to, from this client's recent shard latencies
    /// [default: 500ms]. A bare number is milliseconds.
    #[arg(long, global = true, env = "DOGFS_HEDGE_MAX_MS", value_parser = parse_millis)]
    pub hedge_max: Option<Duration>,

    #[command(subcommand)]
    pub command: Command,
}

/// A duration where a bare number is milliseconds, as in `DOGFS_HEDGE_MIN_MS` (the SDK's
/// variables), so the variable means the same to the SDK and to `dogfs`.
fn parse_millis(s: &str) -> Result<Duration, crate::human::ParseError> {
    match s.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => parse_duration(s),
    }
}

impl Cli {
    /// The endpoints to use; `None` when none were given (flag or environment).
    pub fn given_endpoints(&self) -> Option<Vec<String>> {
        let list: Vec<String> = self
            .endpoint
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        (!list.is_empty()).then_some(list)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.given_endpoints()
            .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_owned()])
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload FILE (`-` = stdin) as bucket/key; a key ending in `/` gets the file's name.
    Put(PutArgs),
    /// Download bucket/key to FILE (`-` = stdout; default: the key's last part, here).
    Get(GetArgs),
    /// Write an object to stdout.
    Cat(CatArgs),
    /// List buckets, or the objects of bucket[/prefix] (one level; `-r` for all).
    Ls(LsArgs),
    /// Delete an object.
    Rm(RmArgs),
    /// Show an object's size, ETag, content type, metadata and erasure scheme.
    Stat(StatArgs),
    /// Make a bucket.
    Mb(BucketArgs),
    /// Remove an empty bucket.
    Rb(BucketArgs),
    /// Cluster state: metadata groups and chunk servers.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Chunk server administration: list, drain, undrain, remove; rebalancing.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run a local cluster in this process (3 metadata + 6 chunk servers) until Ctrl-C.
    Dev(DevArgs),
    /// Measure throughput and latency against a cluster (default: a temporary dev cluster).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Local file; `-` reads stdin (spooled to a temporary file first to learn its size).
    pub file: PathBuf,
    /// Destination `bucket/key`, or `bucket/folder/` to keep the file's name.
    pub target: String,
    /// Content type recorded with the object.
    #[arg(long)]
    pub content_type: Option<String>,
    /// User metadata `NAME=VALUE`; repeat for more.
    #[arg(long = "meta", value_name = "NAME=VALUE")]
    pub metadata: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Source `bucket/key`.
    pub target: String,
    /// Destination file; `-` is stdout. Default: the key's last path segment, in the current
    /// directory. The file appears only once the download is complete.
    pub file: Option<PathBuf>,
    /// Only these bytes: `START-END` (inclusive), `START-` or `-N` (the last N).
    #[arg(long, value_parser = ByteRange::parse, allow_hyphen_values = true)]
    pub range: Option<ByteRange>,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// `bucket/key`.
    pub target: String,
    /// Only these bytes: `START-END` (inclusive), `START-` or `-N` (the last N).
    #[arg(long, value_parser = ByteRange::parse, allow_hyphen_values = true)]
    pub range: Option<ByteRange>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// `bucket` or `bucket/prefix`; none lists the buckets.
    pub target: Option<String>,
    /// Every key under the prefix, not grouped into folders at `/`.
    #[arg(long, short)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// `bucket/key`.
    pub target: String,
    /// Succeed when the object does not exist.
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// `bucket/key`.
    pub target: String,
}

#[derive(Debug, Args)]
pub struct BucketArgs {
    /// Bucket name (3-63 of a-z, 0-9, `-`, `.`).
    pub bucket: String,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Metadata nodes and groups (leader, term, indexes), chunk servers, capacity.
    Status,
    /// Chunk servers: id, address, zone, state, usage, last heartbeat.
    Nodes,
}

/// NODE, as every `admin` command takes it.
const NODE_HELP: &str = "Chunk server: its id (32 hex digits or a hyphenated UUID), a unique \
                         prefix of the id, or its address (host:port, or a host that only one \
                         server has)";

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Chunk servers: id, address, zone, state, usage, shards, and drain progress.
    Nodes,
    /// Move every shard off a chunk server (it takes no new ones); `--wait` until it is empty.
    Drain(DrainArgs),
    /// Cancel a drain: the server takes new shards again; what was moved stays moved.
    Undrain(NodeArgs),
    /// Remove a chunk server for good: only an empty (drained) one, or a down one whose shards
    /// have all been rebuilt elsewhere.
    Remove(NodeArgs),
    /// Move shards from fuller to emptier servers until usage is even.
    #[command(subcommand)]
    Rebalance(RebalanceCommand),
    /// Bearer tokens: create (printed once), list, revoke. Needs an admin token.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (stdout, the only time it is shown).
    Create(TokenCreateArgs),
    /// Every token: id, name, scope, limits, created, expiry, revocation.
    List,
    /// Revoke a token by id (the 16 hex characters after `dogfs_`); idempotent.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name for people and logs (e.g. the application using it).
    #[arg(long)]
    pub name: String,
    /// What it may do: read, read-write or admin.
    #[arg(long, value_parser = parse_scope)]
    pub scope: dogfs_security::Scope,
    /// Only this bucket; repeat for more [default: every bucket].
    #[arg(long = "bucket", value_name = "BUCKET")]
    pub buckets: Vec<String>,
    /// Only keys starting with this [default: every key].
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Lifetime (`90d`, `12h`, `30m`) [default: no expiry].
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id, or the whole token.
    pub id: String,
}

fn parse_scope(s: &str) -> Result<dogfs_security::Scope, String> {
    s.parse()
        .map_err(|e: dogfs_security::token::TokenError| e.to_string())
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[arg(help = NODE_HELP)]
    pub node: String,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    #[arg(help = NODE_HELP)]
    pub node: String,
    /// Wait, with a progress bar, until the server is empty; give up after --timeout (the
    /// drain goes on).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum RebalanceCommand {
    /// Start a rebalance (a running one keeps going); `--wait` until it is done.
    Start(RebalanceStartArgs),
    /// Stop the rebalance; what was moved stays moved.
    Stop,
    /// State, bytes moved and planned, rate, and how even usage is.
    Status,
}

#[derive(Debug, Args)]
pub struct RebalanceStartArgs {
    /// Done when every up server's usage is within this many percentage points of the mean
    /// (0 < PERCENT < 100) [default: the cluster's --rebalance-spread-percent, 10].
    #[arg(long, value_name = "PERCENT", value_parser = parse_spread)]
    pub spread: Option<f64>,
    /// Wait, with a progress bar, until it is done or stopped; give up after --timeout (the
    /// rebalance goes on).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Data directory; a second `dogfs dev` on it restarts the same cluster.
    #[arg(long, default_value = "dogfs-dev")]
    pub dir: PathBuf,
    /// Metadata servers [default: 3, or as recorded in DIR/dev.json].
    #[arg(long)]
    pub meta: Option<usize>,
    /// Chunk servers [default: 6, or as recorded].
    #[arg(long)]
    pub chunks: Option<usize>,
    /// First metadata gRPC port; the other servers' gRPC ports, then the HTTP ports, follow.
    /// 0 picks free ports. [default: 7000, or the ports recorded in DIR/dev.json]
    #[arg(long)]
    pub port: Option<u16>,
    /// Data shards of the cluster's default erasure scheme [default: 4].
    #[arg(long)]
    pub k: Option<u32>,
    /// Parity shards of the default erasure scheme [default: 2].
    #[arg(long)]
    pub m: Option<u32>,
    /// Object partitions (metadata Raft groups besides the system group), 1-1024; fixed when
    /// the cluster is created [default: 8, or as recorded].
    #[arg(long)]
    pub partitions: Option<u64>,
    /// Free disk space each chunk server leaves alone.
    #[arg(long, default_value = "1GiB")]
    pub reserve: ByteSize,
    /// Most bytes each chunk server stores [default: the file system's size].
    #[arg(long)]
    pub capacity: Option<ByteSize>,
    /// How long to wait for every group to elect a leader and every chunk server to register.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Also serve S3 (the `dogfs-s3` gateway) on this `host:port` (port 0: a free one); the
    /// URL and a key pair (kept in DIR) are printed for aws-cli and boto3.
    #[arg(long, value_name = "ADDR")]
    pub s3: Option<String>,
    /// TLS on every connection, with a CA and certificates of the cluster's own in DIR/tls
    /// (kept across restarts); prints the `DOGFS_CA` to export. Without it, plain text.
    #[arg(long)]
    pub tls: bool,
    /// Bearer tokens and shard grants (implies --tls): a bootstrap admin token in
    /// DIR/auth/admin-token (kept across restarts), printed as `DOGFS_TOKEN` to export.
    /// Without it, any client may call anything.
    #[arg(long)]
    pub auth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Synced sequential write rate of the disk under the data directory.
    Disk,
    /// PUTs of --size objects.
    Put,
    /// GETs of --size objects (from the page cache).
    Get,
    /// GETs with one chunk server stopped (in-process cluster only).
    Degraded,
    /// 1 KiB PUTs then GETs from --small-clients clients.
    Small,
    /// One --big-size PUT and GET streamed through the client; reports peak RSS.
    Big,
    /// GETs through a frozen chunk server (hedged parity reads), then the rebuild of a
    /// stopped server's shards on the spare (in-process cluster only; at least k+m+1 servers).
    Repair,
    /// Drain one of k+m+1 chunk servers until it is empty and every object reads back exact,
    /// then add 2 servers and rebalance until done (in-process cluster only).
    Drain,
    /// The S3 gateway (a `dogfs-s3` child process) against the native client on the same
    /// cluster: --size PUT/GET (bytes verified), 1 KiB PUT/GET from --small-clients clients,
    /// and one --s3-big-size PUT/GET with the gateway's peak RSS. Not part of `all`.
    S3,
    /// Puts of --etcd-value-size values to the etcd cluster at --etcd-endpoints (a peer to
    /// compare with, DESIGN §12): 1 client, then --small-clients clients, each for
    /// --small-duration. Starts no DogFS cluster. Not part of `all`.
    Etcd,
    /// disk, put, get, degraded, small, then big in a child process.
    All,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    pub workload: Workload,
    /// Use a temporary in-process cluster even when an endpoint is given (the default when
    /// neither --endpoint nor DOGFS_ENDPOINT is set).
    #[arg(long)]
    pub dev: bool,
    /// The temporary cluster serves TLS everywhere (mutual TLS between its servers), and the
    /// bench's client uses it: run a workload with and without to see what TLS costs.
    #[arg(long)]
    pub tls: bool,
    /// The temporary cluster checks tokens and shard grants (and so runs TLS), and the
    /// bench's client presents the admin token: run with and without to see what they cost.
    #[arg(long)]
    pub auth: bool,
    /// Where the temporary cluster and the disk test write [default: a temporary directory
    /// under the current one, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Object size of put/get/degraded.
    #[arg(long, default_value = "64MiB")]
    pub size: ByteSize,
    /// Concurrent transfers of put/get/degraded.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Objects per put/get/degraded run.
    #[arg(long, default_value_t = 16)]
    pub count: u64,
    /// Run put/get/degraded this long instead of --count objects.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent clients of the small workload (and of the etcd workload's second phase).
    #[arg(long, default_value_t = 16)]
    pub small_clients: usize,
    /// How long each half (PUT, GET) of the small workload runs (each etcd phase too).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub small_duration: Duration,
    /// etcd client endpoints (HOST:PORT, comma-separated) of the etcd workload.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub etcd_endpoints: Option<String>,
    /// Value size, in bytes, of the etcd workload's puts.
    #[arg(long, default_value_t = 256)]
    pub etcd_value_size: usize,
    /// Object size of the big workload.
    #[arg(long, default_value = "4GiB")]
    pub big_size: ByteSize,
    /// Bytes the disk workload writes [default: what the put workload writes to the disks,
    /// --count x --size x (k+m)/k, at least 256 MiB and at most 4 GiB].
    #[arg(long)]
    pub disk_size: Option<ByteSize>,
    /// Data shards of the temporary cluster's scheme.
    #[arg(long, default_value_t = 4)]
    pub k: u32,
    /// Parity shards of the temporary cluster's scheme.
    #[arg(long, default_value_t = 2)]
    pub m: u32,
    /// Chunk servers of the temporary cluster.
    #[arg(long, default_value_t = 6)]
    pub chunks: usize,
    /// Object partitions (metadata Raft groups) of the temporary cluster.
    #[arg(long, default_value_t = 8)]
    pub partitions: u64,
    /// Bucket the workloads write to (created if missing; objects are removed afterwards).
    #[arg(long, default_value = "dogfs-bench")]
    pub bucket: String,
    /// The `dogfs-s3` binary the s3 workload runs [default: `dogfs-s3` next to this `dogfs`].
    #[arg(long, env = "DOGFS_S3_BIN")]
    pub s3_bin: Option<PathBuf>,
    /// Object the s3 workload PUTs and GETs through the gateway while sampling its RSS
    /// (0 skips it).
    #[arg(long, default_value = "4GiB")]
    pub s3_big_size: ByteSize,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "dogfs",
            "ls",
            "--json",
            "--endpoint",
            "a:1,b:2",
            "--timeout",
            "2s",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.endpoints(), vec!["a:1", "b:2"]);
        assert_eq!(cli.timeout, Duration::from_secs(2));
    }

    #[test]
    fn admin_commands_parse() {
        let cli =
            Cli::try_parse_from(["dogfs", "admin", "drain", "0a1b", "--wait", "--json"]).unwrap();
        match cli.command {
            Command::Admin(AdminCommand::Drain(a)) => {
                assert_eq!(a.node, "0a1b");
                assert!(a.wait);
            }
            other => panic!("parsed {other:?}"),
        }
        assert!(cli.json);
        let cli = Cli::try_parse_from(["dogfs", "admin", "rebalance", "start", "--spread", "5%"])
            .unwrap();
        match cli.command {
            Command::Admin(AdminCommand::Rebalance(RebalanceCommand::Start(a))) => {
                assert_eq!(a.spread, Some(5.0));
                assert!(!a.wait);
            }
            other => panic!("parsed {other:?}"),
        }
        for bad in [
            &["dogfs", "admin", "rebalance", "start", "--spread", "0"][..],
            &["dogfs", "admin", "rebalance", "start", "--spread", "150"][..],
            &["dogfs", "admin", "drain"][..],
            &["dogfs", "admin", "undrain", "--wait", "x"][..],
        ] {
            let e = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn bad_range_is_a_usage_error() {
        let e = Cli::try_parse_from(["dogfs", "get", "b/k", "--range", "9-1"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
