//! The workloads: each drives the SDK from `concurrency` tasks and returns what it measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dogfs_client::{Client, GetOptions, PutOptions};
use tokio::task::JoinSet;

use super::pattern::Pattern;
use super::stats::Samples;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{op} {bucket}/{key}: {source}")]
    Op {
        op: &'static str,
        bucket: String,
        key: String,
        source: dogfs_client::Error,
    },
    #[error("GET {bucket}/{key} returned {got} bytes, expected {want}")]
    ShortRead {
        bucket: String,
        key: String,
        got: u64,
        want: u64,
    },
    #[error("workload task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// When a workload stops: after `count` operations, or once `duration` has passed (the
/// operations under way then still finish and count).
#[derive(Debug, Clone, Copy)]
pub enum Until {
    Count(u64),
    Duration(Duration),
}

/// Hands out operation numbers to the tasks until the workload is over.
#[derive(Debug)]
struct Ticket {
    next: AtomicU64,
    until: Until,
    start: Instant,
}

impl Ticket {
    fn new(until: Until) -> Arc<Self> {
        Arc::new(Ticket {
            next: AtomicU64::new(0),
            until,
            start: Instant::now(),
        })
    }

    fn take(&self) -> Option<u64> {
        match self.until {
            Until::Count(n) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                (i < n).then_some(i)
            }
            Until::Duration(d) => {
                (self.start.elapsed() < d).then(|| self.next.fetch_add(1, Ordering::Relaxed))
            }
        }
    }
}

/// Runs `op(i)` from `concurrency` tasks until `until`; returns the merged samples and the
/// wall-clock time of the whole run. Every number taken is carried out, so a count run does
/// exactly 0..n.
pub(crate) async fn drive<F, Fut, E>(
    concurrency: usize,
    until: Until,
    op: F,
) -> Result<(Samples, Duration), E>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, E>> + Send,
    E: From<tokio::task::JoinError> + Send + 'static,
{
    let op = Arc::new(op);
    let ticket = Ticket::new(until);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let op = Arc::clone(&op);
        let ticket = Arc::clone(&ticket);
        tasks.spawn(async move {
            let mut samples = Samples::new();
            while let Some(i) = ticket.take() {
                let t = Instant::now();
                let bytes = op(i).await?;
                samples.record(t.elapsed(), bytes);
            }
            Ok::<_, E>(samples)
        });
    }
    let mut all = Samples::new();
    while let Some(r) = tasks.join_next().await {
        all.merge(r??);
    }
    Ok((all, start.elapsed()))
}

fn op_err(
    op: &'static str,
    bucket: &str,
    key: &str,
) -> impl FnOnce(dogfs_client::Error) -> WorkloadError {
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    move |source| WorkloadError::Op {
        op,
        bucket,
        key,
        source,
    }
}

/// PUTs of `size` bytes streamed from the pattern, under `prefix{i}`; returns the keys written.
pub async fn put(
    client: &Client,
    bucket: &str,
    prefix: &str,
    size: u64,
    concurrency: usize,
    until: Until,
    pattern: &Pattern,
) -> Result<(Samples, Duration, Vec<String>), WorkloadError> {
    let (client, bucket, pfx, pattern) = (
        client.clone(),
        bucket.to_owned(),
        prefix.to_owned(),
        pattern.clone(),
    );
    let (samples, elapsed) = drive::<_, _, WorkloadError>(concurrency, until, move |i| {
        let (client, bucket, pattern) = (client.clone(), bucket.clone(), pattern.clone());
        let key = format!("{pfx}{i:08}");
        async move {
            client
                .put(
                    &bucket,
                    &key,
                    pattern.reader(size, i),
                    size,
                    PutOptions::default(),
                )
                .await
                .map_err(op_err("PUT", &bucket, &key))?;
            Ok(size)
        }
    })
    .await?;
    // Tickets are handed out in order and every one taken is carried out, so the keys written
    // are exactly 0..ops.
    let keys = (0..samples.ops())
        .map(|i| format!("{prefix}{i:08}"))
        .collect();
    Ok((samples, elapsed, keys))
}

/// GETs of the given keys (round robin) into a discarding writer, checking each length.
pub async fn get(
    client: &Client,
    bucket: &str,
    keys: Arc<Vec<String>>,
    size: u64,
    concurrency: usize,
    until: Until,
) -> Result<(Samples, Duration), WorkloadError> {
    let (client, bucket) = (client.clone(), bucket.to_owned());
    drive::<_, _, WorkloadError>(concurrency, until, move |i| {
        let (client, bucket, keys) = (client.clone(), bucket.clone(), Arc::clone(&keys));
        async move {
            let key = keys
                .get((i % keys.len().max(1) as u64) as usize)
                .cloned()
                .unwrap_or_default();
            let mut sink = tokio::io::sink();
            let info = client
                .get(&bucket, &key, &mut sink, GetOptions::default())
                .await
                .map_err(op_err("GET", &bucket, &key))?;
            if info.size != size {
                return Err(WorkloadError::ShortRead {
                    bucket: bucket.to_string(),
                    key,
                    got: info.size,
                    want: size,
                });
            }
            Ok(info.size)
        }
    })
    .await
}

/// Small objects held in memory: PUT with `put_bytes`, GET with `get_bytes`.
pub async fn small_put(
    client: &Client,
    bucket: &str,
    prefix: &str,
    size: usize,
    clients: usize,
    until: Until,
    pattern: &Pattern,
) -> Result<(Samples, Duration), WorkloadError> {
    let (client, bucket, prefix, pattern) = (
        client.clone(),
        bucket.to_owned(),
        prefix.to_owned(),
        pattern.clone(),
    );
    drive::<_, _, WorkloadError>(clients, until, move |i| {
        let (client, bucket) = (client.clone(), bucket.clone());
        let key = format!("{prefix}{i:08}");
        let data = pattern.bytes(size, i);
        async move {
            client
                .put_bytes(&bucket, &key, data)
                .await
                .map_err(op_err("PUT", &bucket, &key))?;
            Ok(size as u64)
        }
    })
    .await
}

pub async fn small_get(
    client: &Client,
    bucket: &str,
    prefix: &str,
    written: u64,
    clients: usize,
    until: Until,
) -> Result<(Samples, Duration), WorkloadError> {
    let (client, bucket, prefix) = (client.clone(), bucket.to_owned(), prefix.to_owned());
    drive::<_, _, WorkloadError>(clients, until, move |i| {
        let (client, bucket) = (client.clone(), bucket.clone());
        // Spread reads over every key written, not just the first few.
        let key = format!("{prefix}{:08}", i.wrapping_mul(7919) % written.max(1));
        async move {
            let data = client
                .get_bytes(&bucket, &key)
                .await
                .map_err(op_err("GET", &bucket, &key))?;
            Ok(data.len() as u64)
        }
    })
    .await
}

/// Deletes what a workload wrote; failures are ignored (the bench reports figures, and a
/// temporary cluster is removed anyway).
pub async fn cleanup(client: &Client, bucket: &str, keys: impl IntoIterator<Item = String>) {
    let mut tasks = JoinSet::new();
    for key in keys {
        let (client, bucket) = (client.clone(), bucket.to_owned());
        tasks.spawn(async move { client.delete(&bucket, &key).await });
        // Bounded, so a big cleanup does not open thousands of calls at once.
        if tasks.len() >= 32 {
            let _ = tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn drive_runs_exactly_count_ops() {
        let (s, _) = drive::<_, _, WorkloadError>(4, Until::Count(10), |_| async { Ok(3) })
            .await
            .unwrap();
        assert_eq!((s.ops(), s.bytes()), (10, 30));
    }

    #[tokio::test]
    async fn drive_stops_after_the_duration() {
        let start = Instant::now();
        let (s, elapsed) = drive::<_, _, WorkloadError>(
            2,
            Until::Duration(Duration::from_millis(100)),
            |_| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(1)
            },
        )
        .await
        .unwrap();
        assert!(s.ops() >= 2, "{}", s.ops());
        assert!(elapsed >= Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn drive_gives_every_op_a_distinct_number() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        drive::<_, _, WorkloadError>(3, Until::Count(20), move |i| {
            let s = Arc::clone(&s2);
            async move {
                s.lock().unwrap().push(i);
                Ok(0)
            }
        })
        .await
        .unwrap();
        let mut v = seen.lock().unwrap().clone();
        v.sort_unstable();
        assert_eq!(v, (0..20).collect::<Vec<_>>());
    }
}
