//! `dogfs bench etcd`: durable puts to an etcd v3 cluster, the peer the metadata-commit bar of
//! DESIGN §12 is set against ("≥ 2 × a 3-member etcd 3.5 in the same sitting").
//!
//! It speaks etcd's own gRPC API (`KV.Put`, the subset in `proto/etcd_kv.proto`), the way
//! etcd's `benchmark put` tool does, so no etcd tool beyond the server is needed:
//! `--small-clients` clients, each a sequential loop of puts of `--etcd-value-size` bytes to
//! keys of its own (every key of a run is distinct), for `--small-duration`. A 1-client phase
//! runs first (the p50 of a lone writer), then the `--small-clients` phase.
//!
//! Connections: one HTTP/2 connection (tonic `Channel`) per endpoint, opened before the
//! clock starts; client `i` sends every put over the connection to endpoint `i mod E`, so the
//! clients are spread round-robin over the endpoints, as etcd's benchmark spreads its
//! connections. gRPC multiplexes a client's calls on the connection as concurrent streams.
//! Puts sent to a follower are forwarded to the leader by etcd itself.
//!
//! Nothing here touches a DogFS cluster; the comparison with `dogfs bench small` is made by
//! `scripts/bench-peers`, which runs both in one sitting.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_proto::etcd::PutRequest;
use dogfs_proto::etcd::kv_client::KvClient;

use tokio::task::JoinSet;

use super::Report;
use super::stats::{Samples, Summary};
use crate::args::BenchArgs;
use crate::exit::{Classify, ExitKind};
use crate::output::{Out, OutputError};

#[derive(Debug, thiserror::Error)]
pub enum EtcdBenchError {
    #[error(
        "the etcd workload needs --etcd-endpoints HOST:PORT[,HOST:PORT...] (the etcd members' client URLs)"
    )]
    MissingEndpoints,
    #[error("--etcd-endpoints: {0}")]
    Endpoints(String),
    /// `reason` is the whole cause chain: tonic's own message is only "transport error".
    #[error("connecting to etcd at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("etcd put of {key} via {endpoint}: {} ({})", status.message(), status.code())]
    Put {
        endpoint: String,
        key: String,
        status: Box<tonic::Status>,
    },
    #[error("etcd put task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl Classify for EtcdBenchError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            EtcdBenchError::MissingEndpoints | EtcdBenchError::Endpoints(_) => {
                ExitKind::InvalidInput
            }
            EtcdBenchError::Connect { .. } => ExitKind::Unavailable,
            EtcdBenchError::Put { status, .. } => match status.code() {
                tonic::Code::Unavailable => ExitKind::Unavailable,
                tonic::Code::DeadlineExceeded => ExitKind::OutcomeUnknown,
                tonic::Code::InvalidArgument => ExitKind::InvalidInput,
                _ => ExitKind::Other,
            },
            EtcdBenchError::Task(_) | EtcdBenchError::Output(_) => ExitKind::Other,
        }
    }
}

/// `--etcd-endpoints` as `host:port` strings: comma-separated, blanks around entries ignored,
/// an `http://` prefix (as etcdctl takes them) accepted and dropped. `https://` is refused: the
/// bench speaks plain text only.
pub fn parse_endpoints(s: &str) -> Result<Vec<String>, EtcdBenchError> {
    let mut out = Vec::new();
    for raw in s.split(',') {
        let e = raw.trim();
        if e.is_empty() {
            return Err(EtcdBenchError::Endpoints(format!(
                "empty entry in {s:?} (expected HOST:PORT[,HOST:PORT...])"
            )));
        }
        if e.starts_with("https://") {
            return Err(EtcdBenchError::Endpoints(format!(
                "{e}: TLS is not supported by the bench; give the plain-text client URL"
            )));
        }
        let e = e.strip_prefix("http://").unwrap_or(e).trim_end_matches('/');
        let Some((host, port)) = e.rsplit_once(':') else {
            return Err(EtcdBenchError::Endpoints(format!(
                "{e}: expected HOST:PORT"
            )));
        };
        if host.is_empty() || host.contains('/') {
            return Err(EtcdBenchError::Endpoints(format!(
                "{e}: expected HOST:PORT"
            )));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(EtcdBenchError::Endpoints(format!(
                    "{e}: port {port:?} is not a number from 1 to 65535"
                )));
            }
        }
        out.push(e.to_owned());
    }
    Ok(out)
}

/// The key client `client` writes in its `seq`th put of phase `phase`: distinct across
/// clients, puts and phases (and across runs, by `run`).
fn key(run: u64, phase: usize, client: usize, seq: u64) -> String {
    format!("dogfs-bench/{run:016x}/p{phase}/c{client:04}/{seq:010}")
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// One connection per endpoint, opened now (so a missing etcd fails here, not mid-run).
async fn connect(
    endpoints: &[String],
    timeout: Duration,
) -> Result<Vec<(String, KvClient<tonic::transport::Channel>)>, EtcdBenchError> {
    let mut out = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        let err = |e: tonic::transport::Error| EtcdBenchError::Connect {
            endpoint: ep.clone(),
            reason: error_chain(&e),
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
            .map_err(err)?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(err)?;
        out.push((ep.clone(), KvClient::new(channel)));
    }
    Ok(out)
}

/// `clients` sequential put loops for `duration` (puts under way at the end finish and
/// count); the merged latencies and the wall-clock time until the last client stopped.
async fn phase(
    conns: &[(String, KvClient<tonic::transport::Channel>)],
    run: u64,
    phase: usize,
    clients: usize,
    duration: Duration,
    value: &Bytes,
) -> Result<(Samples, Duration), EtcdBenchError> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for c in 0..clients.max(1) {
        let Some((endpoint, kv)) = conns.get(c % conns.len().max(1)).cloned() else {
            return Err(EtcdBenchError::MissingEndpoints);
        };
        let value = value.clone();
        let mut kv = kv;
        tasks.spawn(async move {
            let mut samples = Samples::new();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let k = key(run, phase, c, seq);
                seq += 1;
                let req = PutRequest {
                    key: Bytes::from(k.clone().into_bytes()),
                    value: value.clone(),
                    ..PutRequest::default()
                };
                let t = Instant::now();
                kv.put(req).await.map_err(|status| EtcdBenchError::Put {
                    endpoint: endpoint.clone(),
                    key: k,
                    status: Box::new(status),
                })?;
                samples.record(t.elapsed(), value.len() as u64);
            }
            Ok::<_, EtcdBenchError>(samples)
        });
    }
    let mut all = Samples::new();
    while let Some(r) = tasks.join_next().await {
        all.merge(r??);
    }
    Ok((all, start.elapsed()))
}

/// Runs the 1-client phase, then the `--small-clients` phase (when more than 1), and prints
/// the table (or the JSON report).
pub async fn run(args: &BenchArgs, timeout: Duration, out: Out) -> Result<Report, EtcdBenchError> {
    let raw = args
        .etcd_endpoints
        .as_deref()
        .ok_or(EtcdBenchError::MissingEndpoints)?;
    let endpoints = parse_endpoints(raw)?;
    let conns = connect(&endpoints, timeout).await?;
    let value = Bytes::from(vec![b'v'; args.etcd_value_size]);
    // Distinct keys across runs against the same cluster too.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let size = crate::human::size(args.etcd_value_size as u64);
    let n = args.small_clients.max(1);
    let mut phases = vec![1];
    if n > 1 {
        phases.push(n);
    }
    let mut rows: Vec<Summary> = Vec::new();
    for (i, &clients) in phases.iter().enumerate() {
        let (samples, elapsed) =
            phase(&conns, run, i, clients, args.small_duration, &value).await?;
        let unit = if clients == 1 { "client" } else { "clients" };
        let mut row = samples.summarise(&format!("etcd put {clients} {unit}"), elapsed);
        row.note = Some(format!(
            "{size} values, {} endpoint(s), 1 connection each, clients round-robin",
            endpoints.len()
        ));
        rows.push(row);
    }
    let report = Report {
        cluster: format!("etcd at {}", endpoints.join(",")),
        k: 0,
        m: 0,
        partitions: 0,
        rows,
        bars: Vec::new(),
    };
    out.json(&report)?;
    if !out.json {
        out.line(&format!("peer: {}", report.cluster))?;
        out.line(super::stats::table(&report.rows).trim_end())?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoints("127.0.0.1:2379,127.0.0.1:22379, localhost:32379").unwrap(),
            vec!["127.0.0.1:2379", "127.0.0.1:22379", "localhost:32379"]
        );
        // etcdctl-style client URLs.
        assert_eq!(
            parse_endpoints("http://10.0.0.1:2379/,http://[::1]:2379").unwrap(),
            vec!["10.0.0.1:2379", "[::1]:2379"]
        );
        for bad in [
            "",
            "a:1,,b:2",
            "a:1,",
            "localhost",
            ":2379",
            "a:0",
            "a:65536",
            "a:port",
            "https://a:2379",
            "a/b:1",
        ] {
            let e = parse_endpoints(bad).unwrap_err();
            assert!(
                matches!(e, EtcdBenchError::Endpoints(_)),
                "{bad:?} gave {e:?}"
            );
            assert!(e.to_string().starts_with("--etcd-endpoints"), "{e}");
        }
    }

    #[test]
    fn keys_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for phase in 0..2 {
            for client in [0, 1, 255, 1000] {
                for seq in [0, 1, 9_999_999_999] {
                    assert!(seen.insert(key(7, phase, client, seq)));
                }
            }
        }
        assert_ne!(key(1, 0, 0, 0), key(2, 0, 0, 0));
    }

    #[test]
    fn missing_endpoints_names_the_flag() {
        assert!(
            EtcdBenchError::MissingEndpoints
                .to_string()
                .contains("--etcd-endpoints")
        );
        assert_eq!(
            EtcdBenchError::MissingEndpoints.exit_kind(),
            ExitKind::InvalidInput
        );
    }
}
