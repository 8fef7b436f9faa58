//! `dogfs bench s3` (DESIGN §12 "S3 gateway": 64 MiB PUT/GET within 30 % of the native
//! client; RSS < 256 MiB through a 4 GiB object). On one cluster, in one run:
//!
//! 1. `--count` objects of `--size` PUT then GET (`--concurrency` at once) through the native
//!    client and through a `dogfs-s3` child process, every GET checked byte for byte against
//!    the pattern; the gateway's rate as a share of native is the bar (≥ 0.7);
//! 2. 1 KiB PUT then GET from `--small-clients` clients for `--small-duration` each, native
//!    and through the gateway;
//! 3. one `--s3-big-size` object PUT and GET (checked) through the gateway while its VmRSS is
//!    sampled; its VmHWM afterwards is the bar (< 256 MiB). Then the object is deleted.
//!
//! The gateway is a child process so its memory is its own; the cluster (in-process by
//! default) and the load generator share this one.

pub mod client;
pub mod gateway;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dogfs_client::{Client, GetOptions, PutOptions};
use tracing::info;

use super::pattern::Pattern;
use super::stats::{BarCheck, Samples, Summary};
use super::workloads::{self, Until, WorkloadError, drive};
use crate::args::BenchArgs;
use crate::human;
use client::{S3Client, S3ClientError};
use gateway::{Gateway, GatewayError};

/// How often the gateway's RSS is sampled during the big transfer.
const RSS_SAMPLE: Duration = Duration::from_millis(100);
/// The bars.
const MIN_SHARE: f64 = 0.7;
const MAX_RSS_MIB: f64 = 256.0;
const SMALL: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum S3BenchError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("creating the gateway's scratch directory under {dir}: {source}")]
    Scratch { dir: String, source: std::io::Error },
    #[error("through the gateway: {0}")]
    S3(#[from] S3ClientError),
    #[error("{op} {key} (native client): {source}")]
    Native {
        op: &'static str,
        key: String,
        source: dogfs_client::Error,
    },
    #[error("{key} read back wrong {path}: {detail}")]
    Corrupt {
        key: String,
        path: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Workload(#[from] WorkloadError),
    #[error("workload task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl S3BenchError {
    /// The cluster's error, for the exit code.
    pub fn client_error(&self) -> Option<&dogfs_client::Error> {
        match self {
            S3BenchError::Native { source, .. }
            | S3BenchError::Workload(WorkloadError::Op { source, .. }) => Some(source),
            _ => None,
        }
    }
}

/// What the workload needs of the bench.
#[derive(Debug)]
pub struct Setup<'a> {
    pub client: &'a Client,
    pub args: &'a BenchArgs,
    pub endpoints: &'a [String],
    pub pattern: &'a Pattern,
    /// The gateway's credentials and log go in a temporary directory under it.
    pub data_dir: &'a Path,
    pub timeout: Duration,
    /// Keys written, for the bench's cleanup (also when this fails half-way).
    pub stored: &'a mut Vec<String>,
    /// The cluster's CA when it runs TLS (the gateway connects with it).
    pub ca: Option<&'a Path>,
    /// The cluster's admin token when it checks tokens (the gateway presents it).
    pub token: Option<&'a str>,
}

#[derive(Debug, Default)]
pub struct S3Run {
    pub rows: Vec<Summary>,
    pub bars: Vec<BarCheck>,
}

pub async fn run(setup: Setup<'_>) -> Result<S3Run, S3BenchError> {
    let bin = gateway::locate(setup.args.s3_bin.as_deref())?;
    let scratch = tempfile::Builder::new()
        .prefix(".s3-gateway-")
        .tempdir_in(setup.data_dir)
        .map_err(|source| S3BenchError::Scratch {
            dir: setup.data_dir.display().to_string(),
            source,
        })?;
    let gw = Gateway::start(&bin, scratch.path(), setup.endpoints, setup.ca, setup.token).await?;
    let r = measure(setup, &gw).await;
    gw.stop().await;
    drop(scratch);
    r
}

async fn measure(setup: Setup<'_>, gw: &Gateway) -> Result<S3Run, S3BenchError> {
    let Setup {
        client,
        args,
        pattern,
        timeout,
        stored,
        ..
    } = setup;
    let s3 = S3Client::new(gw.addr, gateway::ACCESS_KEY, &gw.secret_key, timeout);
    let bucket = args.bucket.as_str();
    // The bench made the bucket natively; through S3 it answers "already yours".
    s3.create_bucket(bucket).await?;
    let mut run = S3Run::default();
    let via = format!("through dogfs-s3 (pid {})", gw.pid);

    // 1. Big-ish objects, native then gateway, PUT then GET.
    let size = args.size.bytes();
    let n = args.count.max(1);
    let conc = args.concurrency;
    let sz = human::size(size);
    let native_keys: Arc<Vec<String>> =
        Arc::new((0..n).map(|i| format!("bench/s3/native/{i:08}")).collect());
    let gw_keys: Arc<Vec<String>> =
        Arc::new((0..n).map(|i| format!("bench/s3/gateway/{i:08}")).collect());
    let md5_keys: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|i| format!("bench/s3/native-md5/{i:08}"))
            .collect(),
    );
    stored.extend(native_keys.iter().cloned());
    stored.extend(gw_keys.iter().cloned());
    stored.extend(md5_keys.iter().cloned());
    info!(
        objects = n,
        size, "s3 bench: PUT native, then through the gateway"
    );
    let plain_put = native_put(client, bucket, &native_keys, size, conc, pattern, false).await?;
    let s3_put = s3_put(&s3, bucket, &gw_keys, size, conc, pattern).await?;
    // Where the PUT's floor is: S3's ETag is the MD5 of every byte, which the gateway must
    // compute however cheap its transport.
    let (ms, me) = native_put(client, bucket, &md5_keys, size, conc, pattern, true).await?;
    info!("s3 bench: GET native, then through the gateway");
    let native_get = native_get(client, bucket, &native_keys, size, conc, pattern).await?;
    let s3_get = s3_get(&s3, bucket, &gw_keys, size, conc, pattern).await?;
    for (op, (ns, ne), (gs, ge)) in [("put", plain_put, s3_put), ("get", native_get, s3_get)] {
        let mut native = ns.summarise(&format!("native {op} {sz}"), ne);
        native.note = Some(format!("concurrency {conc}, native client"));
        let mut g = gs.summarise(&format!("s3 {op} {sz}"), ge);
        let ratio = if native.mb_per_s > 0.0 {
            g.mb_per_s / native.mb_per_s
        } else {
            0.0
        };
        g.note = Some(format!(
            "concurrency {conc}, {via}: {ratio:.2} x native, the gateway costs {:.0} %",
            (1.0 - ratio) * 100.0
        ));
        run.bars.push(BarCheck::at_least(
            &format!("S3 gateway {sz} {} >= 0.7 x native", op.to_uppercase()),
            g.mb_per_s,
            MIN_SHARE * native.mb_per_s,
            "MB/s",
        ));
        run.rows.push(native);
        run.rows.push(g);
    }
    let mut md5 = ms.summarise(&format!("native put+md5 {sz}"), me);
    let (plain, gateway) = (run.rows[0].mb_per_s, run.rows[1].mb_per_s);
    md5.note = Some(format!(
        "concurrency {conc}, native client computing the S3 ETag (MD5): {:.2} x native; the \
         gateway is {:.2} x this",
        if plain > 0.0 {
            md5.mb_per_s / plain
        } else {
            0.0
        },
        if md5.mb_per_s > 0.0 {
            gateway / md5.mb_per_s
        } else {
            0.0
        },
    ));
    run.rows.insert(2, md5);

    // 2. 1 KiB objects from many clients.
    let clients = args.small_clients;
    let dur = args.small_duration;
    info!(
        clients,
        "s3 bench: 1 KiB PUT/GET, native, then through the gateway"
    );
    let pfx = "bench/s3/small-native/";
    let (ps, pe) = workloads::small_put(
        client,
        bucket,
        pfx,
        SMALL,
        clients,
        Until::Duration(dur),
        pattern,
    )
    .await?;
    stored.extend((0..ps.ops()).map(|i| format!("{pfx}{i:08}")));
    let (gs, ge) =
        workloads::small_get(client, bucket, pfx, ps.ops(), clients, Until::Duration(dur)).await?;
    let gpfx = "bench/s3/small-gateway/";
    let (sps, spe) = s3_small_put(&s3, bucket, gpfx, clients, dur, pattern).await?;
    stored.extend((0..sps.ops()).map(|i| format!("{gpfx}{i:08}")));
    let (sgs, sge) = s3_small_get(&s3, bucket, gpfx, sps.ops(), clients, dur).await?;
    let mut rows = [
        ps.summarise("native small put 1 KiB", pe),
        sps.summarise("s3 small put 1 KiB", spe),
        gs.summarise("native small get 1 KiB", ge),
        sgs.summarise("s3 small get 1 KiB", sge),
    ];
    for (i, r) in rows.iter_mut().enumerate() {
        r.note = Some(if i % 2 == 0 {
            format!("{clients} clients, native client")
        } else {
            format!("{clients} clients, {via}")
        });
    }
    let ratio = |g: &Summary, n: &Summary| {
        if n.ops_per_s > 0.0 {
            g.ops_per_s / n.ops_per_s
        } else {
            0.0
        }
    };
    let (put_ratio, get_ratio) = (ratio(&rows[1], &rows[0]), ratio(&rows[3], &rows[2]));
    if let Some(n) = rows[1].note.as_mut() {
        n.push_str(&format!(": {put_ratio:.2} x native ops/s"));
    }
    if let Some(n) = rows[3].note.as_mut() {
        n.push_str(&format!(": {get_ratio:.2} x native ops/s"));
    }
    run.rows.extend(rows);

    // 3. One big object through the gateway, its memory watched.
    let big = args.s3_big_size.bytes();
    if big > 0 {
        big_object(
            &s3, client, gw, bucket, big, pattern, &via, stored, &mut run,
        )
        .await?;
    }
    Ok(run)
}

/// Per-op latencies and the wall-clock time of a phase.
type Timed = (Samples, Duration);

fn key_of(keys: &[String], i: u64) -> String {
    keys.get(i as usize).cloned().unwrap_or_default()
}

/// Native PUTs; with `md5`, each also computes the S3 ETag (`put_with_md5_etag`), the hashing
/// every PUT through the gateway pays whatever its transport costs.
async fn native_put(
    client: &Client,
    bucket: &str,
    keys: &Arc<Vec<String>>,
    size: u64,
    concurrency: usize,
    pattern: &Pattern,
    md5: bool,
) -> Result<Timed, S3BenchError> {
    let (client, bucket, keys, pattern) = (
        client.clone(),
        bucket.to_owned(),
        Arc::clone(keys),
        pattern.clone(),
    );
    drive::<_, _, S3BenchError>(concurrency, Until::Count(keys.len() as u64), move |i| {
        let (client, bucket, pattern) = (client.clone(), bucket.clone(), pattern.clone());
        let key = key_of(&keys, i);
        async move {
            let reader = pattern.reader(size, i);
            let put = if md5 {
                client
                    .put_with_md5_etag(&bucket, &key, reader, size, PutOptions::default())
                    .await
            } else {
                client
                    .put(&bucket, &key, reader, size, PutOptions::default())
                    .await
            };
            put.map_err(|source| S3BenchError::Native {
                op: "PUT",
                key,
                source,
            })?;
            Ok(size)
        }
    })
    .await
}

async fn s3_put(
    s3: &S3Client,
    bucket: &str,
    keys: &Arc<Vec<String>>,
    size: u64,
    concurrency: usize,
    pattern: &Pattern,
) -> Result<Timed, S3BenchError> {
    let (s3, bucket, keys, pattern) = (
        s3.clone(),
        bucket.to_owned(),
        Arc::clone(keys),
        pattern.clone(),
    );
    drive::<_, _, S3BenchError>(concurrency, Until::Count(keys.len() as u64), move |i| {
        let (s3, bucket, pattern) = (s3.clone(), bucket.clone(), pattern.clone());
        let key = key_of(&keys, i);
        async move {
            s3.put_stream(&bucket, &key, pattern.reader(size, i), size)
                .await?;
            Ok(size)
        }
    })
    .await
}

/// Checks what a GET wrote into the pattern checker.
fn verify(
    check: &super::pattern::PatternCheck,
    size: u64,
    key: &str,
    path: &'static str,
) -> Result<(), S3BenchError> {
    let detail = if let Some(at) = check.first_mismatch() {
        format!("first differing byte at offset {at}")
    } else if check.seen() != size {
        format!("{} bytes, expected {size}", check.seen())
    } else {
        return Ok(());
    };
    Err(S3BenchError::Corrupt {
        key: key.to_owned(),
        path,
        detail,
    })
}

async fn native_get(
    client: &Client,
    bucket: &str,
    keys: &Arc<Vec<String>>,
    size: u64,
    concurrency: usize,
    pattern: &Pattern,
) -> Result<Timed, S3BenchError> {
    let (client, bucket, keys, pattern) = (
        client.clone(),
        bucket.to_owned(),
        Arc::clone(keys),
        pattern.clone(),
    );
    drive::<_, _, S3BenchError>(concurrency, Until::Count(keys.len() as u64), move |i| {
        let (client, bucket) = (client.clone(), bucket.clone());
        let key = key_of(&keys, i);
        let mut check = pattern.checker(i);
        async move {
            client
                .get(&bucket, &key, &mut check, GetOptions::default())
                .await
                .map_err(|source| S3BenchError::Native {
                    op: "GET",
                    key: key.clone(),
                    source,
                })?;
            verify(&check, size, &key, "through the native client")?;
            Ok(size)
        }
    })
    .await
}

async fn s3_get(
    s3: &S3Client,
    bucket: &str,
    keys: &Arc<Vec<String>>,
    size: u64,
    concurrency: usize,
    pattern: &Pattern,
) -> Result<Timed, S3BenchError> {
    let (s3, bucket, keys, pattern) = (
        s3.clone(),
        bucket.to_owned(),
        Arc::clone(keys),
        pattern.clone(),
    );
    drive::<_, _, S3BenchError>(concurrency, Until::Count(keys.len() as u64), move |i| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        let key = key_of(&keys, i);
        let mut check = pattern.checker(i);
        async move {
            s3.get_into(&bucket, &key, &mut check).await?;
            verify(&check, size, &key, "through the gateway")?;
            Ok(size)
        }
    })
    .await
}

async fn s3_small_put(
    s3: &S3Client,
    bucket: &str,
    prefix: &str,
    clients: usize,
    dur: Duration,
    pattern: &Pattern,
) -> Result<Timed, S3BenchError> {
    let (s3, bucket, prefix, pattern) = (
        s3.clone(),
        bucket.to_owned(),
        prefix.to_owned(),
        pattern.clone(),
    );
    drive::<_, _, S3BenchError>(clients, Until::Duration(dur), move |i| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        let key = format!("{prefix}{i:08}");
        let data = pattern.bytes(SMALL, i);
        async move {
            s3.put_bytes(&bucket, &key, data).await?;
            Ok(SMALL as u64)
        }
    })
    .await
}

async fn s3_small_get(
    s3: &S3Client,
    bucket: &str,
    prefix: &str,
    written: u64,
    clients: usize,
    dur: Duration,
) -> Result<Timed, S3BenchError> {
    let (s3, bucket, prefix) = (s3.clone(), bucket.to_owned(), prefix.to_owned());
    drive::<_, _, S3BenchError>(clients, Until::Duration(dur), move |i| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        // Spread reads over every key written, as the native small GETs do.
        let key = format!("{prefix}{:08}", i.wrapping_mul(7919) % written.max(1));
        async move {
            let data = s3.get_bytes(&bucket, &key).await?;
            Ok(data.len() as u64)
        }
    })
    .await
}

/// The largest VmRSS seen while a transfer runs.
#[derive(Debug)]
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(m) = gateway::memory_of(pid) {
                    max = max.max(m.rss);
                }
                tokio::time::sleep(RSS_SAMPLE).await;
            }
            max
        });
        RssSampler { stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

#[allow(clippy::too_many_arguments)]
async fn big_object(
    s3: &S3Client,
    client: &Client,
    gw: &Gateway,
    bucket: &str,
    size: u64,
    pattern: &Pattern,
    via: &str,
    stored: &mut Vec<String>,
    run: &mut S3Run,
) -> Result<(), S3BenchError> {
    let key = "bench/s3/big";
    let sz = human::size(size);
    let before = gw.memory().unwrap_or_default();
    info!(size, "s3 bench: one big object through the gateway");
    stored.push(key.to_owned());

    let sampler = RssSampler::start(gw.pid);
    let t = Instant::now();
    s3.put_stream(bucket, key, pattern.reader(size, 1), size)
        .await?;
    let put_elapsed = t.elapsed();
    let put_rss = sampler.finish().await;

    let sampler = RssSampler::start(gw.pid);
    let t = Instant::now();
    let mut check = pattern.checker(1);
    let got = s3.get_into(bucket, key, &mut check).await;
    let get_elapsed = t.elapsed();
    let get_rss = sampler.finish().await;
    got?;
    verify(&check, size, key, "through the gateway")?;
    let after = gw.memory().unwrap_or_default();
    // Frees the disk at once (a 4 GiB object is 6 GiB of shards at 4+2).
    if let Err(e) = client.delete(bucket, key).await {
        tracing::warn!(error = %e, "deleting the big object (the cleanup retries)");
    } else {
        stored.retain(|k| k != key);
    }

    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let row = |name: &str, elapsed: Duration, sampled: u64| {
        let mut s = Samples::new();
        s.record(elapsed, size);
        let mut r = s.summarise(&format!("{name} {sz}"), elapsed);
        r.note = Some(format!(
            "{via}, bytes checked; gateway RSS max sampled {}",
            human::size(sampled)
        ));
        r
    };
    let put = row("s3 big put", put_elapsed, put_rss);
    let mut get = row("s3 big get", get_elapsed, get_rss);
    if let Some(n) = get.note.as_mut() {
        n.push_str(&format!(
            "; gateway peak RSS (VmHWM) {} over its life, {} before the big object",
            human::size(after.hwm),
            human::size(before.hwm)
        ));
    }
    run.rows.push(put);
    run.rows.push(get);
    run.bars.push(BarCheck::at_most(
        &format!("S3 gateway peak RSS through a {sz} PUT+GET under 256 MiB"),
        mib(after.hwm.max(put_rss).max(get_rss)),
        MAX_RSS_MIB,
        "MiB",
    ));
    Ok(())
}
