//! Registration with the metadata service and heartbeats (DESIGN §6, §7; `meta.proto`,
//! service `ChunkRegistry`).
//!
//! One task per server: `Register` (idempotent, at every start), then `Heartbeat` every
//! `heartbeat_interval_ms` the metadata service asks for, each carrying the node's usage. Any
//! metadata node accepts the calls and forwards them to the system group's leader; when it
//! cannot, it answers UNAVAILABLE, naming the leader in `x-dogfs-leader` when it knows it, and
//! the task goes there directly. Other failures move on to the next endpoint, with exponential
//! backoff and jitter once every endpoint failed in a row. A heartbeat answered NOT_FOUND
//! means metadata lost the node (e.g. a registry restored from an older snapshot): the task
//! registers again.
//!
//! A removed server's id is never reused: metadata refuses its `Register` with
//! FAILED_PRECONDITION "... was removed ...". By default the task then ends with
//! `RegistrationError::Removed` and the process exits with `EXIT_REMOVED` (a wiped data
//! directory is the operator's decision); with `--rejoin-when-removed` it wipes the store,
//! takes a new id and registers as a new server. A heartbeat that reports REMOVED while running
//! is only logged: the server keeps serving reads until it is stopped.
//!
//! Registration never gates serving: shards stay readable and writable while metadata is
//! unreachable (clients with a layout in hand still need them), so `/readyz` ignores it.

use std::sync::Arc;
use std::time::Duration;

use dogfs_proto::meta::chunk_registry_client::ChunkRegistryClient;
use dogfs_proto::meta::{HeartbeatRequest, NodeState, NodeUsage, RegisterRequest};
use dogfs_security::{Channels, ClientTls};
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Response header naming the leader's gRPC address (see the routing note in `meta.proto`).
pub const LEADER_HEADER: &str = "x-dogfs-leader";

/// Used when the metadata service answers an interval of 0 (unset).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);
/// Bounds on the interval metadata may ask for: a misconfigured 0 or 1 ms must not turn the
/// task into a busy loop, and a huge value must not make the node look dead.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds of the per-call deadline, two heartbeat intervals: a metadata node that hangs
/// (SIGSTOP, a partition) must not stall heartbeats long enough for the node to turn suspect
/// (`suspect_after` is many intervals), yet a slow fsync on the leader must not fail a call.
const RPC_TIMEOUT_MIN: Duration = Duration::from_secs(1);
const RPC_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// Leader hints followed in a row before counting the call as failed: hints can chase each
/// other during an election.
const MAX_HINTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} {value:?} is not host:port: {reason}")]
    BadAddress {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "--advertise-addr (DOGFS_ADVERTISE_ADDR) is required with --meta-endpoints when the gRPC \
         address {grpc_addr} is a wildcard: other nodes cannot dial it"
    )]
    NoAdvertiseAddr { grpc_addr: std::net::SocketAddr },
}

/// Why the registration task stopped before shutdown; the server stops with it.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(
        "this chunk server (id {node_id}) was removed from the cluster; its id is not reused. Its \
         shards are no longer referenced. Wipe the data directory, or start it with \
         --rejoin-when-removed (DOGFS_REJOIN_WHEN_REMOVED=true), to join as a new server"
    )]
    Removed { node_id: String },
    #[error("wiping the data directory to rejoin as a new server (was {node_id}): {source}")]
    Rejoin { node_id: String, source: StoreError },
    #[error("wiping the data directory to rejoin as a new server: task failed: {0}")]
    RejoinTask(String),
}

/// What the server registers as.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Metadata nodes, `host:port`; at least one.
    pub endpoints: Vec<String>,
    /// The address registered for this server's ChunkService.
    pub advertise_addr: String,
    pub zone: String,
    /// Refused as removed: wipe the store and register under a new id instead of stopping.
    pub rejoin_when_removed: bool,
    /// TLS to metadata (this server's certificate as client identity); none: plain text.
    pub tls: Option<Arc<ClientTls>>,
}

/// True for metadata's refusal of a removed node's id (`meta.proto`, Register).
pub fn is_removed_refusal(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition && status.message().contains("was removed")
}

/// Checks that `value` looks like `host:port` (host non-empty, port 1..=65535). DNS names are
/// allowed; they are resolved at each connect, which is what a StatefulSet's stable names need.
pub fn check_host_port(what: &'static str, value: &str) -> Result<(), RegistryError> {
    let bad = |reason| RegistryError::BadAddress {
        what,
        value: value.to_owned(),
        reason,
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    if host.contains('/') || host.contains(' ') {
        return Err(bad("not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("port must be 1..=65535")),
    }
}

/// The node id metadata knows the server by: its UUID as 32 lowercase hex characters.
pub fn registry_node_id(store: &Store) -> String {
    store.node_id().simple().to_string()
}

/// The `node_state` metric label for a state.
pub fn state_label(state: NodeState) -> &'static str {
    match state {
        NodeState::Unspecified => "unspecified",
        NodeState::Up => "up",
        NodeState::Suspect => "suspect",
        NodeState::Down => "down",
        NodeState::Draining => "draining",
        NodeState::Removed => "removed",
    }
}

/// Runs until `shutdown` turns true (then `Ok`), or until metadata refuses this server as
/// removed (see the module docs). `state` receives every state metadata reports.
pub async fn run(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    opts: RegistryOptions,
    state: watch::Sender<Option<NodeState>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RegistrationError> {
    if opts.endpoints.is_empty() {
        return Ok(());
    }
    let mut node_id = registry_node_id(&store);
    metrics.set_node_state("unregistered");
    info!(%node_id, endpoints = ?opts.endpoints, address = %opts.advertise_addr,
        zone = %opts.zone, "registering with metadata");
    let clients = Channels::new(opts.tls.clone(), |e| {
        e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true)
    });
    let mut next = 0usize;
    // Where the last call succeeded (possibly a leader outside the endpoint list): stay there.
    let mut current: Option<String> = None;
    let mut hint: Option<String> = None;
    let mut hints_followed = 0u32;
    let mut registered = false;
    let mut failures = 0u32;
    let mut backoff = BACKOFF_MIN;
    let mut last: Option<NodeState> = None;
    let mut rpc_timeout = RPC_TIMEOUT_MAX;
    let mut interval = DEFAULT_INTERVAL;
    // One rejoin per process: a fresh id refused again means something else is wrong, and
    // wiping in a loop would hide it.
    let mut rejoined = false;

    loop {
        if *shutdown.borrow() {
            break;
        }
        let target = match hint.take().or_else(|| current.clone()) {
            Some(t) => t,
            None => opts.endpoints[next % opts.endpoints.len()].clone(),
        };
        let usage = usage(&store).await;
        let report = HealthReport::now(&store, &metrics);
        let call = call(
            &clients,
            &target,
            registered,
            &node_id,
            &opts,
            usage,
            report,
            rpc_timeout,
        );
        let result = tokio::select! {
            r = call => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match result {
            Ok((s, interval_ms)) => {
                metrics.registry_calls.inc();
                if !registered {
                    info!(%node_id, metadata = %target, address = %opts.advertise_addr,
                        zone = %opts.zone, "registered with metadata");
                    registered = true;
                } else if failures > 0 {
                    info!(metadata = %target, failures, "heartbeats reach metadata again");
                }
                failures = 0;
                hints_followed = 0;
                backoff = BACKOFF_MIN;
                current = Some(target);
                interval = if interval_ms == 0 {
                    DEFAULT_INTERVAL
                } else {
                    Duration::from_millis(interval_ms).clamp(MIN_INTERVAL, MAX_INTERVAL)
                };
                rpc_timeout = (interval * 2).clamp(RPC_TIMEOUT_MIN, RPC_TIMEOUT_MAX);
                if last != Some(s) {
                    log_state_change(last, s);
                    metrics.set_node_state(state_label(s));
                    last = Some(s);
                    state.send_replace(Some(s));
                }
                if sleep_or_shutdown(interval, &mut shutdown).await {
                    break;
                }
            }
            Err(status) if is_removed_refusal(&status) => {
                metrics.registry_errors.inc();
                current = Some(target.clone());
                if registered {
                    // A heartbeat refused like a registration: removed while running. Same as
                    // a heartbeat answering REMOVED: say so once, keep serving, keep calling.
                    if last != Some(NodeState::Removed) {
                        log_state_change(last, NodeState::Removed);
                        metrics.set_node_state(state_label(NodeState::Removed));
                        last = Some(NodeState::Removed);
                        state.send_replace(Some(NodeState::Removed));
                    }
                    if sleep_or_shutdown(interval, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
                metrics.set_node_state(state_label(NodeState::Removed));
                state.send_replace(Some(NodeState::Removed));
                if !opts.rejoin_when_removed || rejoined {
                    let e = RegistrationError::Removed {
                        node_id: node_id.clone(),
                    };
                    error!(%node_id, metadata = %target, refusal = status.message(),
                        data_dir = %store.root().display(), rejoined, "{e}");
                    return Err(e);
                }
                node_id = rejoin(&store, &node_id, &target, status.message()).await?;
                rejoined = true;
                last = None;
                metrics.set_node_state("unregistered");
                state.send_replace(None);
                // Register the new id at once, same endpoint.
                continue;
            }
            Err(status) => {
                metrics.registry_errors.inc();
                if registered && status.code() == Code::NotFound {
                    // Metadata forgot the node: register again right away, same endpoint.
                    warn!(metadata = %target, "metadata does not know this node; registering again");
                    registered = false;
                    continue;
                }
                if let Some(leader) = leader_hint(&status)
                    && leader != target
                    && hints_followed < MAX_HINTS
                {
                    debug!(metadata = %target, %leader, "following leader hint");
                    hints_followed += 1;
                    current = None;
                    hint = Some(leader);
                    continue;
                }
                failures += 1;
                hints_followed = 0;
                current = None;
                next = next.wrapping_add(1);
                let call_name = if registered { "Heartbeat" } else { "Register" };
                // Loud on the first failure and now and then; quiet while metadata stays away.
                // The cause of a transport error (a refused TLS certificate, say) is only in
                // the source chain; "transport error" alone tells an operator nothing.
                let cause = causes(&status);
                if failures == 1 || failures.is_multiple_of(20) {
                    warn!(metadata = %target, call = call_name, code = ?status.code(),
                        message = status.message(), %cause, failures, "metadata call failed");
                } else {
                    debug!(metadata = %target, call = call_name, code = ?status.code(),
                        message = status.message(), %cause, failures, "metadata call failed");
                }
                // Every endpoint failed in a row: wait before the next round.
                if (failures as usize).is_multiple_of(opts.endpoints.len()) {
                    let delay = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if sleep_or_shutdown(delay, &mut shutdown).await {
                        break;
                    }
                }
            }
        }
    }
    debug!("registration task stopped");
    Ok(())
}

/// The messages of `status`'s source chain, joined.
fn causes(status: &Status) -> String {
    let mut out = Vec::new();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        out.push(e.to_string());
        source = e.source();
    }
    out.join(": ")
}

/// `--rejoin-when-removed`: wipes the store and takes a new id; answers the new registry id.
async fn rejoin(
    store: &Arc<Store>,
    node_id: &str,
    metadata: &str,
    refusal: &str,
) -> Result<String, RegistrationError> {
    warn!(%node_id, %metadata, %refusal,
        "this chunk server was removed from the cluster and --rejoin-when-removed is set: \
         deleting every shard and unfinished upload here (none is referenced any more) and \
         joining as a new server under a new id");
    let s = Arc::clone(store);
    let report = tokio::task::spawn_blocking(move || s.wipe_for_new_identity())
        .await
        .map_err(|e| RegistrationError::RejoinTask(e.to_string()))?
        .map_err(|source| RegistrationError::Rejoin {
            node_id: node_id.to_owned(),
            source,
        })?;
    let new_id = registry_node_id(store);
    warn!(old_node_id = %node_id, new_node_id = %new_id, shards_deleted = report.shards,
        bytes_deleted = report.bytes, uploads_deleted = report.uploads,
        "data directory wiped; registering as a new chunk server");
    Ok(new_id)
}

/// Most corrupt shard ids one heartbeat names (`meta.proto`). The rest follow once metadata
/// has had the first ones repaired and GC deleted them here.
pub const MAX_CORRUPT_IDS: usize = 1000;

/// What a heartbeat says besides usage: the corrupt shards to repair and the scrubber's state.
#[derive(Debug, Clone, Default, PartialEq)]
struct HealthReport {
    corrupt_shard_ids: Vec<String>,
    scrub_passes: u64,
    scrub_progress: f64,
}

impl HealthReport {
    fn now(store: &Store, metrics: &Metrics) -> Self {
        HealthReport {
            corrupt_shard_ids: store
                .corrupt_shards_limited(MAX_CORRUPT_IDS)
                .iter()
                .map(ToString::to_string)
                .collect(),
            scrub_passes: metrics.scrub_passes.get(),
            scrub_progress: metrics.scrub.fraction(),
        }
    }
}

/// One Register or Heartbeat call; answers the state and interval metadata returned.
#[allow(clippy::too_many_arguments)] // one call's inputs; a struct would only rename them
async fn call(
    clients: &Channels,
    target: &str,
    registered: bool,
    node_id: &str,
    opts: &RegistryOptions,
    usage: NodeUsage,
    report: HealthReport,
    timeout: Duration,
) -> Result<(NodeState, u64), Status> {
    let mut client = client_for(clients, target)?;
    let (state, interval_ms) = if registered {
        let mut req = tonic::Request::new(HeartbeatRequest {
            node_id: node_id.to_owned(),
            usage: Some(usage),
            corrupt_shard_ids: report.corrupt_shard_ids,
            scrub_passes: report.scrub_passes,
            scrub_progress: report.scrub_progress,
        });
        req.set_timeout(timeout);
        let r = client.heartbeat(req).await?.into_inner();
        (r.state, r.heartbeat_interval_ms)
    } else {
        let mut req = tonic::Request::new(RegisterRequest {
            node_id: node_id.to_owned(),
            address: opts.advertise_addr.clone(),
            zone: opts.zone.clone(),
            usage: Some(usage),
        });
        req.set_timeout(timeout);
        let r = client.register(req).await?.into_inner();
        (r.state, r.heartbeat_interval_ms)
    };
    Ok((
        NodeState::try_from(state).unwrap_or(NodeState::Unspecified),
        interval_ms,
    ))
}

/// A client per address, connected lazily: a down metadata node costs a failed call, not a
/// failed start, and the channel reconnects by itself when the node comes back.
fn client_for(clients: &Channels, addr: &str) -> Result<ChunkRegistryClient<Channel>, Status> {
    let channel = clients
        .get(addr)
        .map_err(|e| Status::invalid_argument(format!("metadata address {addr:?}: {e}")))?;
    Ok(ChunkRegistryClient::new(channel))
}

fn leader_hint(status: &Status) -> Option<String> {
    if status.code() != Code::Unavailable {
        return None;
    }
    let v = status.metadata().get(LEADER_HEADER)?.to_str().ok()?.trim();
    (check_host_port("leader hint", v).is_ok()).then(|| v.to_owned())
}

fn log_state_change(previous: Option<NodeState>, now: NodeState) {
    let prev = previous.map_or("unregistered", state_label);
    let now_label = state_label(now);
    match now {
        NodeState::Up | NodeState::Unspecified => {
            info!(state = now_label, previous = prev, "node state changed");
        }
        NodeState::Draining => {
            info!(
                state = now_label,
                previous = prev,
                "node state changed: draining, no new shards"
            );
        }
        NodeState::Suspect | NodeState::Down => {
            warn!(state = now_label, previous = prev, "node state changed");
        }
        NodeState::Removed => {
            warn!(
                state = now_label,
                previous = prev,
                "node state changed: this chunk server was removed from the cluster; it keeps \
                 serving reads until it is stopped, and metadata refuses its id when it \
                 registers again"
            );
        }
    }
}

/// The usage reported to metadata. A failing `statvfs` reports no available space (so no
/// new placements) but still heartbeats: liveness matters more than the numbers.
async fn usage(store: &Arc<Store>) -> NodeUsage {
    let s = Arc::clone(store);
    let space = tokio::task::spawn_blocking(move || s.space()).await;
    let (capacity, used, available) = match space {
        Ok(Ok(sp)) => (sp.capacity, sp.used, sp.available),
        _ => (0, 0, 0),
    };
    NodeUsage {
        capacity_bytes: capacity,
        used_bytes: used,
        available_bytes: available,
        shard_count: store.shard_count(),
        corrupt_shards: store.corrupt_count() as u64,
        io_errors: store
            .faults
            .io_errors
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Between half and all of `d`, so servers that lost metadata together do not retry together.
fn jitter(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

/// Sleeps `d`; answers true when shutdown started meanwhile.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_port_checks() {
        for ok in [
            "a:1",
            "meta-0.meta.ns.svc:7000",
            "127.0.0.1:7000",
            "[::1]:7000",
        ] {
            check_host_port("x", ok).unwrap();
        }
        for bad in [
            "",
            "a",
            ":7000",
            "a:0",
            "a:70000",
            "a:x",
            "http://a:1",
            "a b:1",
        ] {
            assert!(check_host_port("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn leader_hint_only_from_unavailable() {
        let mut s = Status::unavailable("no leader here");
        s.metadata_mut()
            .insert(LEADER_HEADER, "10.0.0.2:7000".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.2:7000"));
        let mut s = Status::internal("x");
        s.metadata_mut()
            .insert(LEADER_HEADER, "10.0.0.2:7000".parse().unwrap());
        assert_eq!(leader_hint(&s), None);
        assert_eq!(leader_hint(&Status::unavailable("x")), None);
    }
}
