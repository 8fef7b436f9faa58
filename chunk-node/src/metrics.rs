//! Prometheus metrics of a chunk server, served on `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::scrub::ScrubProgress;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// The values `node_state` can take: `unregistered` until metadata first answers, then the
/// state metadata last reported (`NodeState` names, lowercased).
pub const NODE_STATES: [&str; 7] = [
    "unregistered",
    "unspecified",
    "up",
    "suspect",
    "down",
    "draining",
    "removed",
];

/// Every metric of the process, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub rpcs: Family<RpcLabels, Counter>,
    pub rpc_seconds: Family<MethodLabel, Histogram>,
    pub bytes_written: Counter,
    pub bytes_read: Counter,
    pub scrub_bytes: Counter,
    pub scrub_passes: Counter,
    /// Where the scrubber is in its current pass (heartbeats read it too).
    pub scrub: ScrubProgress,
    scrub_progress: Gauge<f64, AtomicU64>,
    /// `ReconstructShard` calls admitted (past validation and the concurrency limit).
    pub repairs_started: Counter,
    pub repairs_succeeded: Counter,
    pub repairs_failed: Counter,
    pub repairs_running: Gauge,
    /// Bytes read from repair sources (all attempts, including sources later rejected).
    pub repair_fetched_bytes: Counter,
    /// Bytes of rebuilt shards stored.
    pub repair_written_bytes: Counter,
    /// Sources a repair could not use (error, timeout, checksum or size mismatch).
    pub repair_bad_sources: Counter,
    /// `CopyShard` calls admitted (past validation, the already-stored check and the
    /// concurrency limit, which copies share with repairs).
    pub copies_started: Counter,
    pub copies_succeeded: Counter,
    pub copies_failed: Counter,
    pub copies_running: Gauge,
    /// Bytes read from copy sources.
    pub copy_fetched_bytes: Counter,
    /// Bytes of copied shards stored.
    pub copy_written_bytes: Counter,
    /// Successful Register and Heartbeat calls.
    pub registry_calls: Counter,
    /// Failed Register and Heartbeat calls (any endpoint, any reason).
    pub registry_errors: Counter,
    node_state: Family<StateLabel, Gauge>,
    shards: Gauge,
    used: Gauge,
    available: Gauge,
    capacity: Gauge,
    checksum_errors: Gauge,
    io_errors: Gauge,
    corrupt: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("dogfs_chunk");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "gRPC requests by method and status code",
            rpcs.clone(),
        );
        let rpc_seconds = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~52 s
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        registry.register(
            "rpc_duration_seconds",
            "gRPC request latency (streams: until the handler finishes)",
            rpc_seconds.clone(),
        );
        let counter = |reg: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            reg.register(name, help, c.clone());
            c
        };
        let gauge = |reg: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            reg.register(name, help, g.clone());
            g
        };
        let bytes_written = counter(&mut registry, "written_bytes", "shard bytes stored");
        let bytes_read = counter(&mut registry, "read_bytes", "shard bytes served");
        let scrub_bytes = counter(
            &mut registry,
            "scrub_bytes",
            "bytes verified by the scrubber",
        );
        let scrub_passes = counter(&mut registry, "scrub_passes", "completed scrub passes");
        let scrub_progress = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "scrub_progress",
            "fraction of the current scrub pass done (1 while resting after a pass)",
            scrub_progress.clone(),
        );
        let repairs_started = counter(
            &mut registry,
            "repairs_started",
            "ReconstructShard repairs admitted",
        );
        let repairs_succeeded = counter(
            &mut registry,
            "repairs_succeeded",
            "repairs that stored their shard",
        );
        let repairs_failed = counter(
            &mut registry,
            "repairs_failed",
            "admitted repairs that stored nothing",
        );
        let repairs_running = gauge(&mut registry, "repairs_running", "repairs in progress");
        let repair_fetched_bytes = counter(
            &mut registry,
            "repair_fetched_bytes",
            "bytes read from repair sources",
        );
        let repair_written_bytes = counter(
            &mut registry,
            "repair_written_bytes",
            "bytes of rebuilt shards stored",
        );
        let repair_bad_sources = counter(
            &mut registry,
            "repair_bad_sources",
            "repair sources rejected (error, timeout, checksum or size mismatch)",
        );
        let copies_started = counter(&mut registry, "copies_started", "CopyShard copies admitted");
        let copies_succeeded = counter(
            &mut registry,
            "copies_succeeded",
            "copies that stored their shard",
        );
        let copies_failed = counter(
            &mut registry,
            "copies_failed",
            "admitted copies that stored nothing",
        );
        let copies_running = gauge(&mut registry, "copies_running", "copies in progress");
        let copy_fetched_bytes = counter(
            &mut registry,
            "copy_fetched_bytes",
            "bytes read from copy sources",
        );
        let copy_written_bytes = counter(
            &mut registry,
            "copy_written_bytes",
            "bytes of copied shards stored",
        );
        let registry_calls = counter(
            &mut registry,
            "registry_calls",
            "successful Register and Heartbeat calls to metadata",
        );
        let registry_errors = counter(
            &mut registry,
            "registry_errors",
            "failed Register and Heartbeat calls to metadata",
        );
        let node_state = Family::<StateLabel, Gauge>::default();
        registry.register(
            "node_state",
            "1 for the registry state metadata last reported for this node (unregistered until it answers)",
            node_state.clone(),
        );
        let shards = gauge(&mut registry, "shards", "shards stored");
        let used = gauge(&mut registry, "used_bytes", "bytes used by shard files");
        let available = gauge(
            &mut registry,
            "available_bytes",
            "bytes writable above the reserve",
        );
        let capacity = gauge(&mut registry, "capacity_bytes", "bytes this node may use");
        let checksum_errors = gauge(
            &mut registry,
            "checksum_errors",
            "blocks that failed their checksum since start",
        );
        let io_errors = gauge(&mut registry, "io_errors", "I/O errors since start");
        let corrupt = gauge(
            &mut registry,
            "corrupt_shards",
            "shards known to be corrupt",
        );
        Arc::new(Metrics {
            registry,
            rpcs,
            rpc_seconds,
            bytes_written,
            bytes_read,
            scrub_bytes,
            scrub_passes,
            scrub: ScrubProgress::default(),
            scrub_progress,
            repairs_started,
            repairs_succeeded,
            repairs_failed,
            repairs_running,
            repair_fetched_bytes,
            repair_written_bytes,
            repair_bad_sources,
            copies_started,
            copies_succeeded,
            copies_failed,
            copies_running,
            copy_fetched_bytes,
            copy_written_bytes,
            registry_calls,
            registry_errors,
            node_state,
            shards,
            used,
            available,
            capacity,
            checksum_errors,
            io_errors,
            corrupt,
        })
    }

    /// Records one finished RPC.
    pub fn rpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.rpcs
            .get_or_create(&RpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.rpc_seconds
            .get_or_create(&MethodLabel { method })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets `node_state{state}` to 1 for `state` (one of [`NODE_STATES`]) and 0 for the others,
    /// so a dashboard can plot the state as one series per value.
    pub fn set_node_state(&self, state: &'static str) {
        for s in NODE_STATES {
            self.node_state
                .get_or_create(&StateLabel { state: s })
                .set(i64::from(s == state));
        }
    }

    /// Renders the text exposition, refreshing gauges from the store first.
    pub fn render(&self, store: &Store) -> Result<String, std::fmt::Error> {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Ok(space) = store.space() {
            self.used.set(as_i64(space.used));
            self.available.set(as_i64(space.available));
            self.capacity.set(as_i64(space.capacity));
        }
        self.shards.set(as_i64(store.shard_count()));
        self.checksum_errors
            .set(as_i64(store.faults.checksum_errors.load(Ordering::Relaxed)));
        self.io_errors
            .set(as_i64(store.faults.io_errors.load(Ordering::Relaxed)));
        self.corrupt.set(as_i64(store.corrupt_count() as u64));
        self.scrub_progress.set(self.scrub.fraction());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
