//! Calls to the metadata service: routing, leader hints, retries with backoff (DESIGN §4, §5;
//! the routing rules are in meta.proto's header).
//!
//! A call goes to the leader of its Raft group when the cached cluster map knows it, otherwise
//! to one of the configured endpoints (any node forwards to the leader). A retryable failure
//! (UNAVAILABLE, ABORTED, a transport error, no answer within `request_timeout`) is retried
//! after an exponential, fully jittered backoff — at the node named by `x-dogfs-leader` when
//! the answer carried one, else at the next endpoint — until `max_retries` or
//! `retry_deadline` runs out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dogfs_proto::meta::GetClusterMapRequest;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use rand::Rng;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::debug;

use crate::config::{ClientConfig, normalize_endpoint};
use crate::error::Error;

/// Response header naming the leader's gRPC address.
pub const LEADER_HEADER: &str = "x-dogfs-leader";

/// Which Raft group serves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Buckets, the chunk registry, administration.
    System,
    /// An object partition, 1..=P.
    Partition(u64),
}

/// What the client caches from `GetClusterMap`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterMap {
    pub partitions: u64,
    /// Group id → leader endpoint URI.
    pub leaders: HashMap<u64, String>,
    pub inline_max: u64,
}

#[derive(Debug)]
pub(crate) struct Meta {
    cfg: ClientConfig,
    endpoints: Vec<String>,
    next: AtomicUsize,
    channels: Mutex<HashMap<String, Channel>>,
    map: Mutex<Option<(Instant, Arc<ClusterMap>)>>,
    /// When reading the map last failed: callers fall back to plain routing for a while
    /// instead of paying a failing call each time.
    map_failed: Mutex<Option<Instant>>,
}

/// How long a failed `GetClusterMap` is not retried.
const MAP_RETRY_AFTER: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are caches; one left half-updated by a panic is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::Cancelled => true,
        // A connection cut mid-call (a node killed) can surface as UNKNOWN or INTERNAL with
        // the transport error as its source; a status the server sent has none.
        Code::Unknown | Code::Internal => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

impl Meta {
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        cfg.validate()?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        // Spread clients over the endpoints instead of all starting at the first.
        let start = rand::rng().random_range(0..endpoints.len());
        Ok(Meta {
            cfg,
            endpoints,
            next: AtomicUsize::new(start),
            channels: Mutex::default(),
            map: Mutex::default(),
            map_failed: Mutex::default(),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn channel(&self, uri: &str) -> Result<Channel, Error> {
        let mut map = lock(&self.channels);
        if let Some(c) = map.get(uri) {
            return Ok(c.clone());
        }
        let c = Endpoint::from_shared(uri.to_string())
            .map_err(|e| Error::invalid(format!("metadata endpoint {uri:?}: {e}")))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .connect_lazy();
        map.insert(uri.to_string(), c.clone());
        Ok(c)
    }

    fn current_endpoint(&self) -> &str {
        let i = self.next.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i]
    }

    fn rotate(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
    }

    fn cached_map(&self) -> Option<Arc<ClusterMap>> {
        let g = lock(&self.map);
        g.as_ref()
            .filter(|(at, _)| at.elapsed() < self.cfg.cluster_map_ttl)
            .map(|(_, m)| Arc::clone(m))
    }

    fn forget_map(&self) {
        *lock(&self.map) = None;
    }

    fn leader_of(&self, route: Route) -> Option<String> {
        let map = self.cached_map()?;
        let group = match route {
            Route::System => 0,
            Route::Partition(p) => p,
        };
        map.leaders.get(&group).cloned()
    }

    /// The partition count, when the cluster map is cached (routing is an optimisation: any
    /// node forwards).
    pub fn partitions(&self) -> Option<u64> {
        self.cached_map().map(|m| m.partitions)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.backoff_base.as_micros() as u64;
        let cap = self.cfg.backoff_max.as_micros() as u64;
        let exp = base.saturating_mul(1u64 << attempt.min(20)).min(cap).max(1);
        // Full jitter: retries of many clients spread out instead of arriving together.
        Duration::from_micros(rand::rng().random_range(exp / 2..=exp))
    }

    /// Runs `f` against a metadata node, with the retry policy of the module docs. `what`
    /// names the call's subject in errors (`bucket "photos"`).
    pub async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        what: &str,
        route: Route,
        mut f: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut hint: Option<String> = None;
        let mut attempt: u32 = 0;
        loop {
            let (uri, via_leader) = match hint.take() {
                Some(h) => (h, true),
                None => match self.leader_of(route) {
                    Some(l) => (l, true),
                    None => (self.current_endpoint().to_string(), false),
                },
            };
            let channel = self.channel(&uri)?;
            let status = match tokio::time::timeout(self.cfg.request_timeout, f(channel)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(st)) => st,
                Err(_) => Status::deadline_exceeded(format!(
                    "{uri} did not answer {op} within {:?}",
                    self.cfg.request_timeout
                )),
            };
            if !retryable(&status) {
                return Err(Error::from_status(what, &status));
            }
            let leader = status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .and_then(|v| normalize_endpoint(v).ok())
                .filter(|l| *l != uri);
            if via_leader {
                self.forget_map();
            }
            if leader.is_none() {
                self.rotate();
            }
            let delay = if leader.is_some() && attempt == 0 {
                Duration::ZERO
            } else {
                self.backoff(attempt)
            };
            attempt += 1;
            if attempt > self.cfg.max_retries || started.elapsed() + delay > self.cfg.retry_deadline
            {
                let mut e = Error::from_status(what, &status);
                if let Error::Unavailable { message } = &mut e {
                    message.push_str(&format!(
                        " (gave up after {attempt} attempts in {:?})",
                        started.elapsed()
                    ));
                }
                return Err(e);
            }
            debug!(op, %uri, code = ?status.code(), attempt, ?delay, leader = ?leader,
                "metadata call failed; retrying");
            hint = leader;
            tokio::time::sleep(delay).await;
        }
    }

    /// The cluster map, from cache when fresh.
    pub async fn cluster_map(&self) -> Result<Arc<ClusterMap>, Error> {
        if let Some(m) = self.cached_map() {
            return Ok(m);
        }
        if lock(&self.map_failed).is_some_and(|at| at.elapsed() < MAP_RETRY_AFTER) {
            return Err(Error::unavailable(
                "cluster map: the last attempt failed moments ago",
            ));
        }
        let resp = self
            .call(
                "GetClusterMap",
                "cluster map",
                Route::System,
                |ch| async move {
                    MetaServiceClient::new(ch)
                        .get_cluster_map(GetClusterMapRequest {})
                        .await
                },
            )
            .await
            .inspect_err(|_| *lock(&self.map_failed) = Some(Instant::now()))?;
        let mut leaders = HashMap::new();
        for g in &resp.groups {
            if g.leader_id.is_some()
                && !g.leader_address.is_empty()
                && let Ok(uri) = normalize_endpoint(&g.leader_address)
            {
                leaders.insert(g.group_id, uri);
            }
        }
        let map = Arc::new(ClusterMap {
            partitions: resp.partitions,
            leaders,
            inline_max: resp.inline_max,
        });
        *lock(&self.map) = Some((Instant::now(), Arc::clone(&map)));
        Ok(map)
    }
}
