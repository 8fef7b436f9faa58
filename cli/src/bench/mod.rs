//! `dogfs bench` (DESIGN §12): throughput and latency of a cluster, and the bars of the same
//! run checked against each other.
//!
//! The cluster is `--endpoint` (or `DOGFS_ENDPOINT`), or by default a temporary [`DevCluster`]
//! in this process. `degraded` needs the in-process cluster (it stops a chunk server). `big`
//! measures the client's peak RSS; in `all` it runs in a child `dogfs bench big` process
//! against the same cluster, because the in-process servers' memory would count otherwise.
//! `s3` runs the S3 gateway as a `dogfs-s3` child process beside the native client (`s3/`).
//! `etcd` measures a peer, an etcd cluster at `--etcd-endpoints`, and starts no cluster (`etcd.rs`).

pub mod disk;
pub mod drain;
pub mod etcd;
pub mod pattern;
pub mod repair;
pub mod s3;
pub mod stats;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dogfs_client::{Client, ErrorKind, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::args::{BenchArgs, Workload};
use crate::dev::{DevCluster, DevError, DevOptions};
use crate::exit::{Classify, ExitKind};
use crate::output::{Out, OutputError};
use pattern::Pattern;
use stats::{BarCheck, Samples, Summary};
use workloads::{Until, WorkloadError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("creating the temporary cluster directory under {dir}: {source}")]
    TempDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the temporary cluster: {0}")]
    Dev(Box<DevError>),
    #[error("connecting to {endpoints}: {source}")]
    Connect {
        endpoints: String,
        source: dogfs_client::Error,
    },
    #[error("reading the cluster status: {0}")]
    Status(dogfs_client::Error),
    #[error("creating bucket {bucket}: {source}")]
    CreateBucket {
        bucket: String,
        source: dogfs_client::Error,
    },
    #[error(
        "the degraded workload stops a chunk server, so it needs the in-process cluster (leave out --endpoint, or pass --dev)"
    )]
    DegradedNeedsDev,
    #[error(
        "the repair workload freezes and stops a chunk server, so it needs the in-process cluster (leave out --endpoint, or pass --dev)"
    )]
    RepairNeedsDev,
    #[error(
        "the drain workload drains, stops and adds chunk servers, so it needs the in-process cluster (leave out --endpoint, or pass --dev)"
    )]
    DrainNeedsDev,
    #[error(transparent)]
    Drain(#[from] drain::DrainBenchError),
    #[error("etcd workload: {0}")]
    Etcd(#[from] etcd::EtcdBenchError),
    #[error("s3 workload: {0}")]
    S3(#[from] s3::S3BenchError),
    #[error("starting the relay in front of chunk server 0: {source}")]
    Relay { source: std::io::Error },
    #[error("{0}")]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Repair(#[from] repair::RepairBenchError),
    #[error("disk workload: {0}")]
    Disk(#[from] disk::DiskError),
    #[error("running the big workload in a child process: {0}")]
    Child(std::io::Error),
    #[error("the big workload's child process failed ({status}): {stderr}")]
    ChildFailed { status: String, stderr: String },
    #[error("reading the big workload's child output: {0}")]
    ChildOutput(serde_json::Error),
    #[error("big object {op}: {source}")]
    Big {
        op: &'static str,
        source: dogfs_client::Error,
    },
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl From<DevError> for BenchError {
    fn from(e: DevError) -> Self {
        BenchError::Dev(Box::new(e))
    }
}

impl Classify for BenchError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            BenchError::Dev(e) => e.exit_kind(),
            BenchError::Connect { .. } => ExitKind::Unavailable,
            BenchError::Status(e) | BenchError::CreateBucket { source: e, .. } => {
                ExitKind::of_client(e)
            }
            BenchError::Workload(WorkloadError::Op { source, .. }) => ExitKind::of_client(source),
            BenchError::Drain(e) => e
                .client_error()
                .map_or(ExitKind::Other, ExitKind::of_client),
            BenchError::Etcd(e) => e.exit_kind(),
            BenchError::S3(s3::S3BenchError::Gateway(s3::gateway::GatewayError::Missing(_))) => {
                ExitKind::InvalidInput
            }
            BenchError::S3(e) => e
                .client_error()
                .map_or(ExitKind::Other, ExitKind::of_client),
            BenchError::DegradedNeedsDev
            | BenchError::RepairNeedsDev
            | BenchError::DrainNeedsDev => ExitKind::InvalidInput,
            _ => ExitKind::Other,
        }
    }
}

/// What `dogfs bench --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Report {
    /// `in-process dev cluster (DIR)` or the endpoint.
    pub cluster: String,
    pub k: u32,
    pub m: u32,
    /// Object partitions of the cluster (0 for the disk workload alone, which has none).
    #[serde(default)]
    pub partitions: u64,
    pub rows: Vec<Summary>,
    pub bars: Vec<BarCheck>,
}

struct Ctx {
    client: Client,
    dev: Option<DevCluster>,
    /// In front of chunk server 0 (the repair workload).
    relay: Option<repair::SharedRelay>,
    args: BenchArgs,
    pattern: Pattern,
    endpoints: Vec<String>,
    timeout: Duration,
    data_dir: PathBuf,
    rows: Vec<Summary>,
    bars: Vec<BarCheck>,
    k: u32,
    m: u32,
    partitions: u64,
    /// Keys the put workload left for get/degraded.
    stored: Vec<String>,
}

/// Runs the workload(s) and prints the table (or the JSON report).
pub async fn run(
    args: &BenchArgs,
    endpoints: Option<Vec<String>>,
    token: Option<dogfs_client::Token>,
    timeout: Duration,
    out: Out,
) -> Result<Report, BenchError> {
    // A peer, not DogFS: no cluster of ours to start or connect to.
    if args.workload == Workload::Etcd {
        return Ok(etcd::run(args, timeout, out).await?);
    }
    let use_dev = args.dev || endpoints.is_none();
    // Refused before touching anything: it drains, stops and removes servers of the cluster.
    if args.workload == Workload::Drain && !use_dev {
        return Err(BenchError::DrainNeedsDev);
    }
    // Before the cluster starts: without the gateway binary there is nothing to measure.
    if args.workload == Workload::S3 {
        s3::gateway::locate(args.s3_bin.as_deref()).map_err(s3::S3BenchError::from)?;
    }
    // The temporary cluster lives under the current directory by default: /tmp is often a
    // RAM file system, which would make the disk and PUT figures meaningless.
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&base).map_err(|source| BenchError::TempDir {
        dir: base.clone(),
        source,
    })?;
    let base = std::path::absolute(&base).unwrap_or(base);
    let tmp = tempfile::Builder::new()
        .prefix(".dogfs-bench-")
        .tempdir_in(&base)
        .map_err(|source| BenchError::TempDir {
            dir: base.clone(),
            source,
        })?;

    // The repair workload freezes chunk server 0 through a relay it registers behind.
    let relay = if args.workload == Workload::Repair && use_dev {
        Some(std::sync::Arc::new(
            repair::Relay::bind()
                .await
                .map_err(|source| BenchError::Relay { source })?,
        ))
    } else {
        None
    };
    let (dev, endpoints, label) = if use_dev && args.workload != Workload::Disk {
        let mut opts = DevOptions::new(tmp.path().join("cluster"));
        opts.port = Some(0);
        opts.tls = args.tls || args.auth;
        opts.auth = args.auth;
        opts.chunks = Some(args.chunks);
        if let Some(r) = &relay {
            // A spare server to rebuild on, and failure detection in seconds.
            opts.chunks = Some(args.chunks.max((args.k + args.m) as usize + 1));
            opts.healing = Some(crate::dev::Healing {
                suspect_after_secs: 2,
                down_after_secs: 4,
                repair_after_secs: 1,
            });
            opts.chunk_advertise = vec![(0, r.addr().to_string())];
        }
        if args.workload == Workload::Drain {
            drain::tune(&mut opts, args);
        }
        opts.k = Some(args.k);
        opts.m = Some(args.m);
        opts.partitions = Some(args.partitions);
        // The bench writes gigabytes: keep the default 1 GiB floor of free space.
        if !out.quiet {
            eprintln_note(&format!(
                "starting a temporary in-process cluster ({} chunk servers, {}+{}, {}) in {}",
                opts.chunks.unwrap_or(args.chunks),
                args.k,
                args.m,
                crate::human::partitions(args.partitions),
                tmp.path().display()
            ));
        }
        let dev = DevCluster::start(&opts).await?;
        if let (Some(r), Some(a)) = (&relay, dev.chunk_grpc_addr(0)) {
            r.set_target(a);
        }
        // Measure the settled cluster, not the leader moves of a fresh one.
        if let Err(e) = dev.wait_leaders_placed(Duration::from_secs(60)).await {
            dev.shutdown().await;
            return Err(e.into());
        }
        let eps = dev.endpoints();
        let label = format!("in-process dev cluster ({})", tmp.path().display());
        (Some(dev), eps, label)
    } else {
        let eps = endpoints.unwrap_or_default();
        let label = eps.join(",");
        (None, eps, label)
    };

    let result = run_with(
        args,
        dev,
        relay,
        endpoints,
        token,
        timeout,
        tmp.path(),
        label,
        out,
    )
    .await;
    drop(tmp);
    result
}

fn eprintln_note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "dogfs bench: {text}");
}

/// Bytes the disk workload writes: `--disk-size`, else as much as the put workload writes to
/// the disks. A smaller write can fit in the write-back caches between the file system and
/// the device (a VM's host cache absorbs hundreds of MiB) and measure them instead of the
/// disk: on the build machines 256 MiB measured 1.2–1.7 GB/s, 3 GiB ~400 MB/s.
pub fn disk_bytes(args: &BenchArgs) -> u64 {
    if let Some(s) = args.disk_size {
        return s.bytes();
    }
    let k = u64::from(args.k.max(1));
    let stored = args
        .size
        .bytes()
        .saturating_mul(args.count)
        .saturating_mul(k + u64::from(args.m))
        / k;
    stored.clamp(256 << 20, 4 << 30)
}

#[allow(clippy::too_many_arguments)]
async fn run_with(
    args: &BenchArgs,
    dev: Option<DevCluster>,
    relay: Option<repair::SharedRelay>,
    endpoints: Vec<String>,
    token: Option<dogfs_client::Token>,
    timeout: Duration,
    scratch: &Path,
    label: String,
    out: Out,
) -> Result<Report, BenchError> {
    // Only the disk workload needs no cluster.
    if args.workload == Workload::Disk {
        let row = disk::synced_write_rate(scratch, disk_bytes(args), 1 << 20).await?;
        let report = Report {
            cluster: label,
            k: args.k,
            m: args.m,
            partitions: 0,
            rows: vec![row],
            bars: Vec::new(),
        };
        return finish(out, report);
    }
    let mut cfg = crate::commands::client_config(endpoints.clone(), timeout);
    cfg.tls = dev
        .as_ref()
        .and_then(|d| d.ca())
        .map(|ca| dogfs_client::ClientTlsPaths::ca_only(ca.to_path_buf()));
    // A dev cluster's own token; against a given endpoint, the global --token.
    cfg.token = match &dev {
        Some(d) => d.client_token().map_err(|source| BenchError::Connect {
            endpoints: endpoints.join(","),
            source,
        })?,
        None => token,
    };
    let client = match Client::connect(cfg).await {
        Ok(c) => c,
        Err(source) => {
            if let Some(d) = dev {
                d.shutdown().await;
            }
            return Err(BenchError::Connect {
                endpoints: endpoints.join(","),
                source,
            });
        }
    };
    let mut ctx = Ctx {
        client,
        data_dir: dev
            .as_ref()
            .map_or_else(|| scratch.to_owned(), |d| d.dir().to_owned()),
        dev,
        relay,
        args: args.clone(),
        pattern: Pattern::new(),
        endpoints,
        timeout,
        rows: Vec::new(),
        bars: Vec::new(),
        k: args.k,
        m: args.m,
        partitions: 0,
        stored: Vec::new(),
    };
    let r = ctx.run_all().await;
    let keys = std::mem::take(&mut ctx.stored);
    workloads::cleanup(&ctx.client, &ctx.args.bucket, keys).await;
    if let Some(d) = ctx.dev.take() {
        d.shutdown().await;
    }
    r?;
    let report = Report {
        cluster: label,
        k: ctx.k,
        m: ctx.m,
        partitions: ctx.partitions,
        rows: ctx.rows,
        bars: ctx.bars,
    };
    finish(out, report)
}

fn finish(out: Out, report: Report) -> Result<Report, BenchError> {
    out.json(&report)?;
    if !out.json {
        let Report {
            cluster,
            k,
            m,
            partitions,
            ..
        } = &report;
        let groups = if *partitions > 0 {
            format!(", {}", crate::human::partitions(*partitions))
        } else {
            String::new()
        };
        out.line(&format!("cluster: {cluster}, scheme {k}+{m}{groups}"))?;
        out.line(stats::table(&report.rows).trim_end())?;
        if !report.bars.is_empty() {
            out.line("")?;
            out.line(stats::bar_lines(&report.bars).trim_end())?;
        }
    }
    Ok(report)
}

impl Ctx {
    fn until(&self) -> Until {
        self.args
            .duration
            .map_or(Until::Count(self.args.count), Until::Duration)
    }

    fn note(&self, what: &str) {
        info!(workload = what, "bench");
    }

    async fn run_all(&mut self) -> Result<(), BenchError> {
        // The figures are of the cluster's scheme, whatever the flags said.
        let status = self
            .client
            .cluster_status()
            .await
            .map_err(BenchError::Status)?;
        if let Some(s) = status.default_scheme {
            self.k = s.k;
            self.m = s.m;
        }
        self.partitions = status.partitions;
        match self.client.create_bucket(&self.args.bucket).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(BenchError::CreateBucket {
                    bucket: self.args.bucket.clone(),
                    source,
                });
            }
        }
        match self.args.workload {
            // The etcd workload returns from `run` before any cluster exists.
            Workload::Disk | Workload::Etcd => {}
            Workload::Put => self.put().await?,
            Workload::Get => self.get().await?,
            Workload::Degraded => self.degraded().await?,
            Workload::Small => self.small().await?,
            Workload::Big => self.big().await?,
            Workload::Repair => self.repair().await?,
            Workload::Drain => self.drain().await?,
            Workload::S3 => self.s3().await?,
            Workload::All => {
                self.disk().await?;
                self.put().await?;
                self.get().await?;
                if self.dev.is_some() {
                    self.degraded().await?;
                } else {
                    eprintln_note("skipping degraded: it needs the in-process cluster (--dev)");
                }
                self.small().await?;
                self.big_in_child().await?;
            }
        }
        self.check_bars();
        Ok(())
    }

    async fn disk(&mut self) -> Result<(), BenchError> {
        self.note("disk");
        let row = disk::synced_write_rate(&self.data_dir, disk_bytes(&self.args), 1 << 20).await?;
        self.rows.push(row);
        Ok(())
    }

    async fn put(&mut self) -> Result<(), BenchError> {
        self.note("put");
        let size = self.args.size.bytes();
        let (samples, elapsed, keys) = workloads::put(
            &self.client,
            &self.args.bucket,
            "bench/put/",
            size,
            self.args.concurrency,
            self.until(),
            &self.pattern,
        )
        .await?;
        self.stored = keys;
        let mut row = samples.summarise(&format!("put {}", crate::human::size(size)), elapsed);
        row.note = Some(format!("concurrency {}", self.args.concurrency));
        self.rows.push(row);
        Ok(())
    }

    /// The objects get/degraded read: those put wrote, or a fresh set.
    async fn ensure_stored(&mut self) -> Result<(), BenchError> {
        if self.stored.is_empty() {
            let n = self.args.count.max(self.args.concurrency as u64).min(16);
            let (_, _, keys) = workloads::put(
                &self.client,
                &self.args.bucket,
                "bench/put/",
                self.args.size.bytes(),
                self.args.concurrency,
                Until::Count(n),
                &self.pattern,
            )
            .await?;
            self.stored = keys;
        }
        Ok(())
    }

    async fn get_row(&mut self, name: &str) -> Result<Summary, BenchError> {
        self.ensure_stored().await?;
        let size = self.args.size.bytes();
        let (samples, elapsed) = workloads::get(
            &self.client,
            &self.args.bucket,
            Arc::new(self.stored.clone()),
            size,
            self.args.concurrency,
            self.until(),
        )
        .await?;
        Ok(samples.summarise(&format!("{name} {}", crate::human::size(size)), elapsed))
    }

    async fn get(&mut self) -> Result<(), BenchError> {
        self.note("get");
        let mut row = self.get_row("get").await?;
        row.note = Some(format!("concurrency {}", self.args.concurrency));
        self.rows.push(row);
        Ok(())
    }

    async fn degraded(&mut self) -> Result<(), BenchError> {
        self.note("degraded");
        self.ensure_stored().await?;
        let Some(dev) = self.dev.as_mut() else {
            return Err(BenchError::DegradedNeedsDev);
        };
        // Server 0 holds a shard of every segment when there are exactly k+m servers, and of
        // most segments otherwise; a data shard for most of them.
        dev.stop_chunk(0).await?;
        let r = self.get_row("degraded get").await;
        if let Some(dev) = self.dev.as_mut() {
            dev.start_chunk(0).await?;
        }
        let mut row = r?;
        row.note = Some("chunk server 0 stopped".to_owned());
        self.rows.push(row);
        Ok(())
    }

    async fn repair(&mut self) -> Result<(), BenchError> {
        self.note("repair");
        let relay = self.relay.clone().ok_or(BenchError::RepairNeedsDev)?;
        // --count objects (not at most 16 as for get): the rebuild needs volume to measure.
        if self.stored.is_empty() {
            let (_, _, keys) = workloads::put(
                &self.client,
                &self.args.bucket,
                "bench/put/",
                self.args.size.bytes(),
                self.args.concurrency,
                Until::Count(self.args.count),
                &self.pattern,
            )
            .await?;
            self.stored = keys;
        }
        let size = self.args.size.bytes();
        let keys = self.stored.clone();
        let healthy = repair::timed_gets(
            &self.client,
            &self.args.bucket,
            &keys,
            size,
            "get (healthy)",
        )
        .await?;
        let moved_healthy = relay.bytes_moved();
        relay.freeze(true);
        let frozen = repair::timed_gets(
            &self.client,
            &self.args.bucket,
            &keys,
            size,
            "get, server 0 frozen",
        )
        .await;
        relay.freeze(false);
        let mut frozen = frozen?;
        let extra_ms = frozen.p50_ms - healthy.p50_ms;
        frozen.note = Some(format!(
            "chunk server 0 frozen (relay stops moving bytes; it had moved {} while \
             healthy): p50 {:+.0} ms, max {:+.0} ms over healthy",
            crate::human::size(moved_healthy),
            extra_ms,
            frozen.max_ms - healthy.max_ms
        ));
        self.bars.push(BarCheck::at_most(
            "frozen server adds to a GET (p50)",
            extra_ms,
            1000.0,
            "ms",
        ));
        self.rows.push(healthy);
        self.rows.push(frozen);

        let Some(dev) = self.dev.as_mut() else {
            return Err(BenchError::RepairNeedsDev);
        };
        dev.stop_chunk(0).await?;
        let stopped = std::time::Instant::now();
        let run = repair::measure_rebuild(&self.client, stopped, Duration::from_secs(1800)).await;
        // Back, holding only stale copies, which garbage collection deletes.
        if let Some(dev) = self.dev.as_mut() {
            dev.start_chunk(0).await?;
        }
        let run = run?;
        // The floor on this machine, same run: a rebuild reads k shards (as a healthy GET
        // reads its k data shards) and writes one durably (the disk's synced write rate, for
        // as many bytes as were rebuilt). Done one after the other on the same cores, the
        // rebuilt rate cannot beat 1 / (k / get + 1 / disk).
        let disk_row =
            disk::synced_write_rate(&self.data_dir, run.row.bytes.max(64 << 20), 1 << 20).await?;
        let get_mb = self
            .rows
            .iter()
            .find(|r| r.workload == "get (healthy)")
            .map_or(0.0, |r| r.mb_per_s);
        let k = f64::from(self.k.max(1));
        let floor = if get_mb > 0.0 && disk_row.mb_per_s > 0.0 {
            1.0 / (k / get_mb + 1.0 / disk_row.mb_per_s)
        } else {
            0.0
        };
        let mut row = run.row;
        if let Some(n) = row.note.as_mut() {
            n.push_str(&format!(
                "; floor here 1/(k/get + 1/disk) = {floor:.0} MB/s (ratio {:.2})",
                if floor > 0.0 {
                    row.mb_per_s / floor
                } else {
                    0.0
                }
            ));
        }
        self.rows.push(row);
        self.rows.push(disk_row);
        self.bars.push(run.bar);
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), BenchError> {
        self.note("drain");
        if self.dev.is_none() {
            return Err(BenchError::DrainNeedsDev);
        }
        let size = self.args.size.bytes();
        let (samples, elapsed, keys) = workloads::put(
            &self.client,
            &self.args.bucket,
            "bench/drain/",
            size,
            self.args.concurrency,
            Until::Count(self.args.count),
            &self.pattern,
        )
        .await?;
        self.stored = keys;
        // Not `put ...`: this PUT is setup, and the durable-PUT bar wants a disk row measured
        // beside it, which this workload does not make.
        let mut row =
            samples.summarise(&format!("setup put {}", crate::human::size(size)), elapsed);
        row.note = Some(format!("concurrency {}", self.args.concurrency));
        self.rows.push(row);
        let Some(dev) = self.dev.as_mut() else {
            return Err(BenchError::DrainNeedsDev);
        };
        let run = drain::run(drain::Setup {
            client: &self.client,
            dev,
            bucket: &self.args.bucket,
            keys: &self.stored,
            size,
            pattern: &self.pattern,
            data_dir: &self.data_dir,
        })
        .await?;
        self.rows.extend(run.rows);
        self.bars.extend(run.bars);
        Ok(())
    }

    async fn s3(&mut self) -> Result<(), BenchError> {
        self.note("s3");
        let run = s3::run(s3::Setup {
            client: &self.client,
            args: &self.args,
            endpoints: &self.endpoints,
            pattern: &self.pattern,
            data_dir: &self.data_dir,
            timeout: self.timeout,
            stored: &mut self.stored,
            ca: self.dev.as_ref().and_then(|d| d.ca()),
            token: self.dev.as_ref().and_then(|d| d.token()),
        })
        .await?;
        self.rows.extend(run.rows);
        self.bars.extend(run.bars);
        Ok(())
    }

    async fn small(&mut self) -> Result<(), BenchError> {
        self.note("small");
        const SMALL: usize = 1024;
        let clients = self.args.small_clients;
        let (ps, pe) = workloads::small_put(
            &self.client,
            &self.args.bucket,
            "bench/small/",
            SMALL,
            clients,
            Until::Duration(self.args.small_duration),
            &self.pattern,
        )
        .await?;
        let written = ps.ops();
        let (gs, ge) = workloads::small_get(
            &self.client,
            &self.args.bucket,
            "bench/small/",
            written,
            clients,
            Until::Duration(self.args.small_duration),
        )
        .await?;
        let mut put = ps.summarise("small put 1 KiB", pe);
        put.note = Some(format!("{clients} clients"));
        let mut get = gs.summarise("small get 1 KiB", ge);
        get.note = Some(format!("{clients} clients"));
        self.rows.push(put);
        self.rows.push(get);
        self.stored
            .extend((0..written).map(|i| format!("bench/small/{i:08}")));
        Ok(())
    }

    /// One big object PUT from a generated reader and GET into a discarding writer, with this
    /// process's peak RSS.
    async fn big(&mut self) -> Result<(), BenchError> {
        self.note("big");
        let size = self.args.big_size.bytes();
        let key = "bench/big";
        let t = Instant::now();
        self.client
            .put(
                &self.args.bucket,
                key,
                self.pattern.reader(size, 1),
                size,
                PutOptions::default(),
            )
            .await
            .map_err(|source| BenchError::Big { op: "PUT", source })?;
        let put_elapsed = t.elapsed();
        self.stored.push(key.to_owned());
        let mut s = Samples::new();
        s.record(put_elapsed, size);
        let mut put = s.summarise(
            &format!("big put {}", crate::human::size(size)),
            put_elapsed,
        );
        put.note = disk::peak_rss_bytes().map(|b| self.rss_note(b));

        let t = Instant::now();
        let mut sink = tokio::io::sink();
        self.client
            .get(&self.args.bucket, key, &mut sink, GetOptions::default())
            .await
            .map_err(|source| BenchError::Big { op: "GET", source })?;
        let get_elapsed = t.elapsed();
        let mut s = Samples::new();
        s.record(get_elapsed, size);
        let mut get = s.summarise(
            &format!("big get {}", crate::human::size(size)),
            get_elapsed,
        );
        let peak = disk::peak_rss_bytes();
        get.note = peak.map(|b| self.rss_note(b));
        self.rows.push(put);
        self.rows.push(get);
        // With the servers in this process their memory counts too: no client bar then.
        if let Some(peak) = peak.filter(|_| self.dev.is_none()) {
            self.bars.push(BarCheck::at_most(
                "client peak RSS of a big PUT+GET under 128 MiB",
                peak as f64 / f64::from(1u32 << 20),
                128.0,
                "MiB",
            ));
        }
        Ok(())
    }

    /// `big` in a child `dogfs bench big` process, so its RSS is the client's alone.
    async fn big_in_child(&mut self) -> Result<(), BenchError> {
        self.note("big (child process)");
        let exe = std::env::current_exe().map_err(BenchError::Child)?;
        let child = tokio::process::Command::new(exe)
            .arg("bench")
            .arg("big")
            .arg("--json")
            .arg("--quiet")
            .arg("--endpoint")
            .arg(self.endpoints.join(","))
            .arg("--timeout")
            .arg(format!("{}ms", self.timeout.as_millis()))
            .arg("--big-size")
            .arg(self.args.big_size.bytes().to_string())
            .arg("--bucket")
            .arg(&self.args.bucket)
            // Its scratch directory inside ours, not in whatever the current directory is.
            .arg("--dir")
            .arg(&self.data_dir)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(BenchError::Child)?;
        if !child.status.success() {
            return Err(BenchError::ChildFailed {
                status: child.status.to_string(),
                stderr: String::from_utf8_lossy(&child.stderr).trim().to_owned(),
            });
        }
        let report: Report =
            serde_json::from_slice(&child.stdout).map_err(BenchError::ChildOutput)?;
        for mut row in report.rows {
            row.note = Some(match row.note {
                Some(n) => format!("{n} (client in a child process)"),
                None => "client in a child process".to_owned(),
            });
            self.rows.push(row);
        }
        self.bars.extend(report.bars);
        Ok(())
    }

    fn rss_note(&self, bytes: u64) -> String {
        let whose = if self.dev.is_some() {
            "process peak RSS, in-process servers included"
        } else {
            "client peak RSS"
        };
        format!("{whose} {}", crate::human::size(bytes))
    }

    /// The bars of DESIGN §12 whose figures this run measured.
    fn check_bars(&mut self) {
        let find = |prefix: &str| self.rows.iter().find(|r| r.workload.starts_with(prefix));
        let (k, m) = (f64::from(self.k), f64::from(self.m));
        let mut bars = Vec::new();
        if let (Some(disk), Some(put)) = (find("disk"), find("put ")) {
            bars.push(BarCheck::at_least(
                "durable PUT >= 0.8 x disk synced write rate x k/(k+m)",
                put.mb_per_s,
                0.8 * disk.mb_per_s * k / (k + m),
                "MB/s",
            ));
        }
        if let Some(get) = find("get ") {
            bars.push(BarCheck::at_least(
                "GET >= 1 GB/s",
                get.mb_per_s,
                1000.0,
                "MB/s",
            ));
            if let Some(deg) = find("degraded get") {
                bars.push(BarCheck::at_least(
                    "GET with one server down >= 0.7 x healthy GET",
                    deg.mb_per_s,
                    0.7 * get.mb_per_s,
                    "MB/s",
                ));
            }
        }
        if let Some(p) = find("small put") {
            bars.push(BarCheck::at_least(
                "1 KiB PUT >= 8k ops/s",
                p.ops_per_s,
                8000.0,
                "ops/s",
            ));
            bars.push(BarCheck::at_most(
                "1 KiB PUT p99 <= 10 ms",
                p.p99_ms,
                10.0,
                "ms",
            ));
        }
        if let Some(g) = find("small get") {
            bars.push(BarCheck::at_least(
                "1 KiB GET >= 20k ops/s",
                g.ops_per_s,
                20_000.0,
                "ops/s",
            ));
        }
        // Bars the child reported come after ours.
        bars.append(&mut self.bars);
        self.bars = bars;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use clap::Parser;

    use super::disk_bytes;
    use crate::args::{BenchArgs, Cli, Command};

    fn bench_args(flags: &[&str]) -> BenchArgs {
        let argv = ["dogfs", "bench"].iter().chain(flags).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Bench(a) => a,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn the_disk_test_writes_what_the_put_workload_stores() {
        // 16 x 64 MiB at 4+2: 1.5 GiB reach the disks.
        assert_eq!(disk_bytes(&bench_args(&[])), 1536 << 20);
        assert_eq!(
            disk_bytes(&bench_args(&["--count", "4", "--k", "2", "--m", "1"])),
            384 << 20
        );
        // Bounded both ways, and an explicit size wins.
        assert_eq!(disk_bytes(&bench_args(&["--count", "1"])), 256 << 20);
        assert_eq!(disk_bytes(&bench_args(&["--size", "1GiB"])), 4 << 30);
        assert_eq!(disk_bytes(&bench_args(&["--disk-size", "8MiB"])), 8 << 20);
    }
}
