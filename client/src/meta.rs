//! Calls to the metadata service: routing, leader hints, retries with backoff (DESIGN §4, §5;
//! the routing rules are in meta.proto's header).
//!
//! A call goes to the leader of its Raft group when the cached cluster map knows it, otherwise
//! to one of the configured endpoints (any node forwards to the leader). A retryable failure
//! (UNAVAILABLE, ABORTED, a transport error, no answer within `request_timeout`) is retried
//! after an exponential, fully jittered backoff — at the node named by `x-dogfs-leader` when
//! the answer carried one, else at the next endpoint not seen failing in this call — until
//! `max_retries` or the call's deadline runs out. The deadline is hard: the last attempt is
//! cut short at it, so a call never outlives it whatever the nodes do.
//!
//! Changes (commit, inline put, delete) also track whether an attempt may have been applied
//! without an answer saying so (a timeout, a connection cut after sending, an UNAVAILABLE
//! that may hide a forward the leader received); when every attempt failed and one may have
//! been applied, the error is `OutcomeUnknown`, not `Unavailable`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dogfs_proto::meta::GetClusterMapRequest;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_security::{Channels, ClientTls};
use rand::Rng;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::debug;

use crate::config::{ClientConfig, normalize_endpoint};
use crate::error::Error;
use crate::pool::never_sent;

/// Response header naming the leader's gRPC address.
pub const LEADER_HEADER: &str = "x-dogfs-leader";

/// Adds a bearer token (if any) to every call on a channel, as the SDK does on its metadata
/// channels; for callers that make raw gRPC calls to a cluster that checks tokens
/// (`MetaServiceClient::with_interceptor(channel, Bearer::new(Some(token)))`).
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// An interceptor sending `Authorization: Bearer <token>`; none for `None` or for a token
    /// that is not a valid header value (the server then refuses the call as unauthenticated).
    pub fn new(token: Option<&str>) -> Bearer {
        Bearer(token.and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel to a metadata node, carrying the client's token.
pub(crate) type MetaChannel = InterceptedService<Channel, Bearer>;

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
    channels: Channels,
    bearer: Bearer,
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

/// What a change's call came to: its result, and whether some attempt may have been applied
/// although no answer said so.
#[derive(Debug)]
pub(crate) struct Written<T> {
    pub result: Result<T, Error>,
    pub maybe_applied: bool,
}

/// The shortest attempt worth making: below this a call cannot even cross a busy loopback.
const MIN_ATTEMPT: Duration = Duration::from_millis(20);

/// Whether a failed attempt of a change may nevertheless have been applied. Only answers a
/// server chose to give and that say nothing was proposed are safe: a leader hint (this node
/// is not the leader) and ABORTED (the service's conditional commit lost every rerun). A
/// plain UNAVAILABLE may come from a forward to the leader that timed out after the leader
/// received it, and a lost or cut connection after sending tells nothing.
fn may_have_been_applied(status: &Status, timed_out: bool) -> bool {
    if timed_out {
        return true;
    }
    if never_sent(status) {
        return false;
    }
    if std::error::Error::source(status).is_some() {
        return true;
    }
    match status.code() {
        Code::Unavailable => status.metadata().get(LEADER_HEADER).is_none(),
        Code::Aborted => false,
        _ => true,
    }
}

/// `850ms`, `2s`, `2.50s`: durations in messages a person reads.
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
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
    pub fn new(cfg: ClientConfig, tls: Option<Arc<ClientTls>>) -> Result<Self, Error> {
        cfg.validate()?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e, tls.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        let connect_timeout = cfg.connect_timeout;
        let channels = Channels::new(tls, move |e| {
            e.connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(20))
        });
        // Checked by `Token::new`: visible ASCII always makes a header value.
        let bearer = Bearer::new(cfg.token.as_ref().map(|t| t.as_str()));
        // Spread clients over the endpoints instead of all starting at the first.
        let start = rand::rng().random_range(0..endpoints.len());
        Ok(Meta {
            bearer,
            cfg,
            endpoints,
            next: AtomicUsize::new(start),
            channels,
            map: Mutex::default(),
            map_failed: Mutex::default(),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn channel(&self, uri: &str) -> Result<MetaChannel, Error> {
        let ch = self
            .channels
            .get(uri)
            .map_err(|e| Error::invalid(format!("metadata endpoint {uri:?}: {e}")))?;
        Ok(InterceptedService::new(ch, self.bearer.clone()))
    }

    /// `host:port` (a leader's address) as this client dials it.
    fn uri_of(&self, addr: &str) -> Result<String, Error> {
        normalize_endpoint(addr, self.channels.tls().is_some())
    }

    fn current_endpoint(&self) -> &str {
        let i = self.next.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i]
    }

    fn rotate(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
    }

    /// The current endpoint, or the next one not in `avoid` (all avoided: the current one).
    fn pick_endpoint(&self, avoid: &HashSet<String>) -> String {
        let n = self.endpoints.len();
        let start = self.next.load(Ordering::Relaxed);
        for i in 0..n {
            let e = &self.endpoints[(start + i) % n];
            if !avoid.contains(e) {
                return e.clone();
            }
        }
        self.current_endpoint().to_string()
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

    /// The longest one attempt may take within a budget of `budget`: `request_timeout`, and
    /// with several endpoints at most a third of the budget, so a node that accepts
    /// connections and never answers (frozen, black-holed) leaves time to try two others.
    pub(crate) fn attempt_cap(&self, budget: Duration) -> Duration {
        let cap = if self.endpoints.len() > 1 {
            self.cfg.request_timeout.min(budget / 3)
        } else {
            self.cfg.request_timeout.min(budget)
        };
        cap.max(MIN_ATTEMPT)
    }

    /// Runs a read (or any call safe to repeat) against a metadata node with the retry policy
    /// of the module docs, ending by `deadline` whatever happens. `what` names the call's
    /// subject in errors (`bucket "photos"`).
    pub async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        what: &str,
        route: Route,
        deadline: Instant,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnMut(MetaChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.attempts(op, what, route, deadline, None, f)
            .await
            .result
    }

    /// Runs a change (commit, inline put, delete) like [`Self::call`], and tracks whether an
    /// attempt may have been applied without its answer arriving. If every attempt failed and
    /// one of them may have been applied, the error is `OutcomeUnknown`, whose message ends
    /// with `consequence` (what may have happened and how to find out). Callers must only
    /// use this for changes whose repetition is harmless (the commit of one upload id, a
    /// delete), and look at `maybe_applied` to read a retry's answer (an ALREADY_EXISTS or
    /// NOT_FOUND may be the first attempt's doing).
    pub async fn call_write<T, F, Fut>(
        &self,
        op: &'static str,
        what: &str,
        route: Route,
        deadline: Instant,
        consequence: &'static str,
        f: F,
    ) -> Written<T>
    where
        F: FnMut(MetaChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.attempts(op, what, route, deadline, Some(consequence), f)
            .await
    }

    async fn attempts<T, F, Fut>(
        &self,
        op: &'static str,
        what: &str,
        route: Route,
        deadline: Instant,
        write: Option<&'static str>,
        mut f: F,
    ) -> Written<T>
    where
        F: FnMut(MetaChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let budget = deadline.saturating_duration_since(started);
        let cap = self.attempt_cap(budget);
        let mut hint: Option<String> = None;
        let mut attempt: u32 = 0;
        let mut maybe_applied = false;
        // Nodes that timed out or cut the connection during this call: the next attempts go
        // elsewhere while another endpoint is left, instead of waiting on a frozen node again.
        let mut avoid: HashSet<String> = HashSet::new();
        loop {
            let (uri, via_leader) = match hint.take() {
                Some(h) => (h, true),
                None => match self.leader_of(route).filter(|l| !avoid.contains(l)) {
                    Some(l) => (l, true),
                    None => (self.pick_endpoint(&avoid), false),
                },
            };
            let channel = match self.channel(&uri) {
                Ok(c) => c,
                Err(e) => {
                    return Written {
                        result: Err(e),
                        maybe_applied,
                    };
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = cap.min(left).max(MIN_ATTEMPT);
            let (status, timed_out) = match tokio::time::timeout(limit, f(channel)).await {
                Ok(Ok(r)) => {
                    return Written {
                        result: Ok(r.into_inner()),
                        maybe_applied,
                    };
                }
                Ok(Err(st)) => (st, false),
                Err(_) => (
                    Status::deadline_exceeded(format!(
                        "{uri} did not answer {op} within {}",
                        human_duration(limit)
                    )),
                    true,
                ),
            };
            if !retryable(&status) {
                return Written {
                    result: Err(Error::from_status(what, &status)),
                    maybe_applied,
                };
            }
            let leader = status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .and_then(|v| self.uri_of(v).ok())
                .filter(|l| *l != uri);
            if timed_out || std::error::Error::source(&status).is_some() {
                // No answer, or no connection: not a node to wait on again in this call.
                avoid.insert(uri.clone());
            }
            maybe_applied |= write.is_some() && may_have_been_applied(&status, timed_out);
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
            let now = Instant::now();
            if attempt > self.cfg.max_retries || now + delay + MIN_ATTEMPT > deadline {
                let took = human_duration(started.elapsed());
                let tail = format!(
                    "gave up after {attempt} attempt{} in {took}",
                    if attempt == 1 { "" } else { "s" },
                );
                let result = match write {
                    Some(consequence) if maybe_applied => {
                        let msg = status.message();
                        Err(Error::outcome_unknown(format!(
                            "{what}: {op} was sent but no answer came ({msg}; {tail}); \
                             {consequence}"
                        )))
                    }
                    _ => {
                        let mut e = Error::from_status(what, &status);
                        if let Error::Unavailable { message } | Error::Precondition { message } =
                            &mut e
                        {
                            message.push_str(&format!(" ({tail})"));
                        }
                        Err(e)
                    }
                };
                return Written {
                    result,
                    maybe_applied,
                };
            }
            debug!(op, %uri, code = ?status.code(), attempt, ?delay, leader = ?leader,
                maybe_applied, "metadata call failed; retrying");
            hint = leader;
            tokio::time::sleep(delay).await;
        }
    }

    /// The cluster map, from cache when fresh; a read ends by `deadline`.
    pub async fn cluster_map(&self, deadline: Instant) -> Result<Arc<ClusterMap>, Error> {
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
                deadline,
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
                && let Ok(uri) = self.uri_of(&g.leader_address)
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
