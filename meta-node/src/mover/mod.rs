//! The mover (DESIGN §7, `docs/elasticity.md`): drains and rebalancing, run by the system
//! group's leader.
//!
//! Work is derived from durable facts only — servers whose admin state is `Draining` and the
//! rebalance record, both in the system group, and the shard index of every partition — so a
//! new leader carries on where a dead one stopped. Each round:
//!
//! 1. gathers candidate segments from the index ranges of draining servers (all of their
//!    shards are counted for progress) and, while a rebalance runs, of servers fuller than the
//!    mean ([`survey`]);
//! 2. plans a batch with the pure planner (`placement::plan_rebalance`: drain moves first, then
//!    balance moves; never onto a server holding the segment, zone spread kept) over the
//!    servers' usage as last reported plus the moves committed since;
//! 3. runs the batch, `mover_concurrency` moves at once, one per segment ([`transfer`]); when
//!    it is done, the next round starts at once.
//!
//! A rebalance ends (Done) when the servers are within the spread, or when rounds in a row find
//! no move that improves the balance.

mod survey;
mod transfer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dogfs_core::placement::{self, MoveReason, NodeState, NodeView};
use dogfs_proto::meta as pb;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::Instrument;

use crate::registry::rebalance::{self, Phase};
use crate::registry::{self, AdminState, NodeRecord};
use crate::service::{Core, ServiceError, now_unix};
pub use survey::Left;
use transfer::Planned;

/// Moves planned per round, per allowed concurrent move.
const BATCH_PER_SLOT: usize = 8;
/// A target whose copy failed is not planned onto for this long.
const AVOID_FOR: Duration = Duration::from_secs(30);
/// Committed moves are added to the servers' reported usage until a report newer than the
/// move arrives; older than this they are dropped (usage is persisted at least every minute
/// while it changes).
const DELTA_TTL_SECS: u64 = 180;
/// Rounds in a row without a balance move that end a rebalance still outside the spread.
const IDLE_ROUNDS_TO_FINISH: u32 = 3;
/// How often a rebalance waiting for usage reports is judged again.
const AWAIT_REPORTS_EVERY: Duration = Duration::from_millis(200);
/// While moves settle, the rebalance record is updated at most this often.
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// The window of the move rate.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The mover's state on one metadata node (meaningful while it leads the system group).
#[derive(Debug)]
pub(crate) struct MoverState {
    permits: Arc<Semaphore>,
    wake: Notify,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The system-group term the state belongs to; a new term starts afresh.
    term: Option<u64>,
    queue: VecDeque<Planned>,
    in_flight: usize,
    /// (version, segment) queued or moving: one move per segment at a time.
    busy: HashSet<(u128, u64)>,
    cursors: HashMap<u128, (u64, Option<u128>)>,
    drain: HashMap<u128, DrainFigures>,
    /// Recent moves, for the usage the planner sees until reports include them.
    deltas: Vec<Delta>,
    avoid: HashMap<u128, Instant>,
    /// Balance moves (shards, bytes, failures) of the run started at `rebalance_started` not
    /// yet added to its record, and when the record was last updated.
    unrecorded: (u64, u64, u64),
    rebalance_started: u64,
    recorded_at: Option<Instant>,
    idle_rounds: u32,
    /// A running rebalance has nothing to move but its last moves are not in the usage
    /// reports yet.
    awaiting_reports: bool,
    mean: f64,
    deviation: f64,
    planned_bytes: u64,
    failures: u64,
    recent: VecDeque<(Instant, u64)>,
}

/// A committed move whose bytes the servers' usage reports may not include yet.
#[derive(Debug, Clone, Copy)]
struct Delta {
    at: Instant,
    unix: u64,
    from: u128,
    to: u128,
    bytes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct DrainFigures {
    left: Left,
    moved_shards: u64,
    moved_bytes: u64,
    stuck: u64,
    failures: u64,
    surveyed_unix: u64,
}

impl Inner {
    /// The state for a new term (or for no leadership): everything starts afresh but the
    /// rebalance moves not yet counted in Raft.
    fn carried_over(&self, term: Option<u64>) -> Inner {
        Inner {
            term,
            rebalance_started: self.rebalance_started,
            unrecorded: self.unrecorded,
            ..Inner::default()
        }
    }
}

impl MoverState {
    pub(crate) fn new(concurrency: usize) -> MoverState {
        MoverState {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            wake: Notify::new(),
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks for work now (a drain or a rebalance was just started).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// A draining node's progress, as this node (the system group's leader) last saw it.
    pub(crate) fn drain_progress(&self, node: u128) -> pb::DrainProgress {
        let inner = self.inner();
        let f = inner.drain.get(&node).copied().unwrap_or_default();
        pb::DrainProgress {
            shards_left: f.left.shards,
            bytes_left: f.left.bytes,
            shards_moved: f.moved_shards,
            bytes_moved: f.moved_bytes,
            shards_stuck: f.stuck,
            failures: f.failures,
            surveyed_unix: i64::try_from(f.surveyed_unix).unwrap_or(i64::MAX),
            upload_shards: f.left.uploads,
        }
    }

    /// Moved bytes per second over the last minute.
    fn rate(inner: &mut Inner) -> f64 {
        let now = Instant::now();
        while inner
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            inner.recent.pop_front();
        }
        let bytes: u64 = inner.recent.iter().map(|(_, b)| *b).sum();
        let span = inner
            .recent
            .front()
            .map_or(RATE_WINDOW, |(t, _)| now.duration_since(*t))
            .clamp(Duration::from_secs(1), RATE_WINDOW);
        bytes as f64 / span.as_secs_f64()
    }
}

/// The rebalance as the system group's leader sees it: the Raft record, with this node's live
/// figures when it leads.
pub(crate) fn rebalance_status(core: &Core) -> Result<pb::RebalanceStatus, ServiceError> {
    let record = rebalance::get(&core.reader(0)?)?;
    let mut inner = core.mover.inner();
    let rate = MoverState::rate(&mut inner);
    let Some((r, _)) = record else {
        return Ok(pb::RebalanceStatus {
            state: pb::RebalanceState::Idle as i32,
            spread_percent: core.cfg.rebalance_spread_percent,
            bytes_per_sec: rate,
            ..Default::default()
        });
    };
    let running = r.phase == Phase::Running;
    // Moves of this run committed since the record was last updated.
    let (shards, bytes, failures) = if inner.rebalance_started == r.started_unix {
        inner.unrecorded
    } else {
        (0, 0, 0)
    };
    Ok(pb::RebalanceStatus {
        state: match r.phase {
            Phase::Running => pb::RebalanceState::Running,
            Phase::Stopped => pb::RebalanceState::Stopped,
            Phase::Done => pb::RebalanceState::Done,
        } as i32,
        reason: r.trigger.as_str().to_owned(),
        started_unix: i64::try_from(r.started_unix).unwrap_or(i64::MAX),
        finished_unix: i64::try_from(r.finished_unix).unwrap_or(i64::MAX),
        spread_percent: r.spread * 100.0,
        mean_used_percent: inner.mean * 100.0,
        max_deviation_percent: inner.deviation * 100.0,
        shards_moved: r.shards_moved + shards,
        bytes_moved: r.bytes_moved + bytes,
        bytes_planned: if running { inner.planned_bytes } else { 0 },
        failures: r.failures + failures,
        bytes_per_sec: rate,
    })
}

/// The mover's loop: a step every `mover_interval`, and at once when woken (a move ended, a
/// drain or rebalance started).
pub(crate) async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(core.cfg.mover_interval_ms.max(10));
    loop {
        // A run that only waits for usage reports to include its last moves is judged again
        // as soon as they may have arrived, not a whole interval later.
        let wait = if core.mover.inner().awaiting_reports {
            every.min(AWAIT_REPORTS_EVERY)
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = core.mover.wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = step(&core).await {
            tracing::debug!(error = %e, "mover step failed");
        }
    }
}

fn leading_term(core: &Core) -> Option<u64> {
    if !core.is_leader(0) {
        return None;
    }
    core.raft
        .raft(0)
        .ok()
        .map(|r| r.metrics().borrow().current_term)
}

async fn step(core: &Arc<Core>) -> Result<(), ServiceError> {
    let Some(term) = leading_term(core) else {
        let unrecorded = {
            let mut inner = core.mover.inner();
            if inner.term.is_some() {
                *inner = inner.carried_over(None);
            }
            inner.unrecorded != (0, 0, 0)
        };
        // Moves in flight when the leadership was lost still settle here: their count goes
        // to the run's record through the new leader.
        if unrecorded {
            record_progress(core).await?;
        }
        return Ok(());
    };
    {
        let mut inner = core.mover.inner();
        if inner.term != Some(term) {
            *inner = inner.carried_over(Some(term));
        }
    }
    let system = core.reader(0)?;
    let records: HashMap<u128, NodeRecord> = registry::list_nodes(&system)?
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    let rebalance = rebalance::get(&system)?.map(|(r, _)| r);
    let nodes = Arc::new(records);
    start_queued(core, &nodes, rebalance.as_ref());
    let idle = {
        let inner = core.mover.inner();
        inner.queue.is_empty() && inner.in_flight == 0
    };
    let record_due = {
        let inner = core.mover.inner();
        inner.unrecorded != (0, 0, 0)
            && (idle
                || inner
                    .recorded_at
                    .is_none_or(|t| t.elapsed() >= RECORD_EVERY))
    };
    if record_due {
        record_progress(core).await?;
    }
    if idle {
        let rebalance = rebalance::get(&core.reader(0)?)?.map(|(r, _)| r);
        if plan_round(core, &nodes, rebalance.as_ref())?
            && let Some((p, r)) = rebalance::finish(&core.reader(0)?, Phase::Done, now_unix())?
        {
            core.propose(0, &p).await?;
            tracing::info!(
                shards_moved = r.shards_moved,
                bytes_moved = r.bytes_moved,
                "rebalance done"
            );
        }
        start_queued(core, &nodes, rebalance.as_ref());
    }
    Ok(())
}

/// Starts queued moves while permits last; drops those whose reason is gone (the server was
/// undrained, the rebalance stopped).
fn start_queued(
    core: &Arc<Core>,
    nodes: &Arc<HashMap<u128, NodeRecord>>,
    rebalance: Option<&rebalance::RebalanceRecord>,
) {
    let running = rebalance.is_some_and(|r| r.phase == Phase::Running);
    loop {
        let Ok(permit) = Arc::clone(&core.mover.permits).try_acquire_owned() else {
            return;
        };
        let mv = {
            let mut inner = core.mover.inner();
            let Some(mv) = inner.queue.pop_front() else {
                return;
            };
            let wanted = match mv.reason {
                MoveReason::Drain => nodes
                    .get(&mv.from)
                    .is_some_and(|n| n.admin == AdminState::Draining),
                MoveReason::Balance => running,
            };
            if !wanted {
                inner.busy.remove(&(mv.seg.version_id, mv.seg.segment));
                continue;
            }
            inner.in_flight += 1;
            mv
        };
        let core = Arc::clone(core);
        let nodes = Arc::clone(nodes);
        let span = tracing::info_span!(
            "move",
            reason = ?mv.reason,
            partition = mv.seg.partition,
            bucket = %mv.seg.bucket,
            key = %mv.seg.key,
            version = %format_args!("{:032x}", mv.seg.version_id),
            segment = mv.seg.segment,
            shard_index = mv.index,
            bytes = mv.bytes,
        );
        tokio::spawn(
            async move {
                let result = transfer::run(&core, &mv, &nodes).await;
                drop(permit);
                settle(&core, &mv, result);
                core.mover.wake();
            }
            .instrument(span),
        );
    }
}

fn settle(core: &Core, mv: &Planned, result: Result<transfer::Moved, transfer::MoveError>) {
    let mut inner = core.mover.inner();
    inner.in_flight = inner.in_flight.saturating_sub(1);
    inner.busy.remove(&(mv.seg.version_id, mv.seg.segment));
    match result {
        Ok(moved) => {
            core.metrics.moved_shards.inc();
            core.metrics.moved_bytes.inc_by(moved.bytes);
            inner.recent.push_back((Instant::now(), moved.bytes));
            inner.deltas.push(Delta {
                at: Instant::now(),
                unix: now_unix(),
                from: mv.from,
                to: mv.to,
                bytes: moved.bytes,
            });
            match mv.reason {
                MoveReason::Drain => {
                    let f = inner.drain.entry(mv.from).or_default();
                    f.moved_shards += 1;
                    f.moved_bytes += moved.bytes;
                    f.left.shards = f.left.shards.saturating_sub(1);
                    f.left.bytes = f.left.bytes.saturating_sub(moved.bytes);
                }
                MoveReason::Balance => {
                    inner.unrecorded.0 += 1;
                    inner.unrecorded.1 += moved.bytes;
                    inner.planned_bytes = inner.planned_bytes.saturating_sub(moved.bytes);
                }
            }
        }
        Err(e) if e.busy() => {
            tracing::debug!(error = %e, "move postponed: the target is busy");
        }
        Err(e) => {
            core.metrics.move_failures.inc();
            inner.failures += 1;
            if e.target_failed() {
                inner.avoid.insert(mv.to, Instant::now());
            }
            match mv.reason {
                MoveReason::Drain => inner.drain.entry(mv.from).or_default().failures += 1,
                MoveReason::Balance => inner.unrecorded.2 += 1,
            }
            tracing::warn!(error = %e, "shard move failed; planned again later");
        }
    }
}

/// Adds the balance moves settled since the last call to the run's record in Raft, so a new
/// leader continues the count (a run started since gets none of them).
async fn record_progress(core: &Core) -> Result<(), ServiceError> {
    let (started, (shards, bytes, failures)) = {
        let mut inner = core.mover.inner();
        inner.recorded_at = Some(Instant::now());
        (inner.rebalance_started, inner.unrecorded)
    };
    if started == 0 {
        return Ok(());
    }
    if let Some(p) = rebalance::add_progress(&core.reader(0)?, started, shards, bytes, failures)? {
        core.propose_anywhere(0, &p).await?;
    }
    let mut inner = core.mover.inner();
    inner.unrecorded.0 = inner.unrecorded.0.saturating_sub(shards);
    inner.unrecorded.1 = inner.unrecorded.1.saturating_sub(bytes);
    inner.unrecorded.2 = inner.unrecorded.2.saturating_sub(failures);
    Ok(())
}

/// Usage as heartbeated to this node (the system group's leader), with when it arrived.
type Reports = HashMap<u128, (registry::Usage, Instant)>;

/// A heartbeat older than this does not stand for the server's usage now.
fn fresh_for(core: &Core) -> Duration {
    Duration::from_millis(core.cfg.heartbeat_interval_ms.saturating_mul(3).max(1000))
}

/// The servers as the planner sees them: their usage as last heartbeated (else as last
/// persisted) plus the moves committed since that report; a target that failed recently is not
/// a destination; a draining server is draining even while down (its shards are then rebuilt
/// rather than copied). Also whether some move is not in the reports yet (a rebalance is not
/// judged finished on estimates).
fn views(
    records: &HashMap<u128, NodeRecord>,
    reports: &Reports,
    fresh: Duration,
    inner: &mut Inner,
) -> (Vec<NodeView>, bool) {
    let now = now_unix();
    inner
        .deltas
        .retain(|d| now.saturating_sub(d.unix) < DELTA_TTL_SECS);
    inner.avoid.retain(|_, t| t.elapsed() < AVOID_FOR);
    let mut pending = false;
    let views = records
        .values()
        .map(|n| {
            let mut v = n.view();
            let report = reports.get(&n.id).filter(|(_, at)| at.elapsed() < fresh);
            if let Some((u, _)) = report {
                v.used_bytes = u.used_bytes;
                v.capacity_bytes = u.used_bytes.saturating_add(u.available_bytes);
            }
            let mut used = i128::from(v.used_bytes);
            for d in &inner.deltas {
                // Not in the report yet: it arrived before the move ended (or, without a
                // fresh report, the persisted usage is older than the move).
                let applies = match report {
                    Some((_, at)) => d.at >= *at,
                    None => d.unix >= n.usage_unix,
                };
                if !applies || (d.from != n.id && d.to != n.id) {
                    continue;
                }
                if report.is_some() {
                    pending = true;
                }
                if d.from == n.id {
                    used -= i128::from(d.bytes);
                }
                if d.to == n.id {
                    used += i128::from(d.bytes);
                }
            }
            v.used_bytes = u64::try_from(used.max(0)).unwrap_or(u64::MAX);
            if n.admin == AdminState::Draining {
                v.state = NodeState::Draining;
            } else if v.state == NodeState::Up && inner.avoid.contains_key(&n.id) {
                v.state = NodeState::Suspect;
            }
            v
        })
        .collect();
    (views, pending)
}

/// Plans the next batch into the queue; whether a running rebalance is finished.
fn plan_round(
    core: &Core,
    records: &HashMap<u128, NodeRecord>,
    rebalance: Option<&rebalance::RebalanceRecord>,
) -> Result<bool, ServiceError> {
    let running = rebalance.filter(|r| r.phase == Phase::Running);
    let draining: Vec<u128> = records
        .values()
        .filter(|n| n.admin == AdminState::Draining)
        .map(|n| n.id)
        .collect();
    let mut inner = core.mover.inner();
    inner.drain.retain(|id, _| draining.contains(id));
    if draining.is_empty() && running.is_none() {
        return Ok(false);
    }
    let reports: Reports = core
        .liveness
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .usage
        .clone();
    let (views, pending) = views(records, &reports, fresh_for(core), &mut inner);
    let up = || {
        views
            .iter()
            .filter(|v| v.state == NodeState::Up && v.capacity_bytes > 0)
    };
    let (used, cap) = up().fold((0f64, 0f64), |(u, c), v| {
        (u + v.used_bytes as f64, c + v.capacity_bytes as f64)
    });
    let mean = if cap > 0.0 { used / cap } else { 0.0 };
    let fuller: Vec<u128> = if running.is_some() {
        up().filter(|v| v.used_bytes as f64 / v.capacity_bytes as f64 > mean)
            .map(|v| v.id.as_u128())
            .collect()
    } else {
        Vec::new()
    };
    let partitions: Vec<_> = (1..=core.partitions())
        .map(|p| Ok((p, core.reader(p)?)))
        .collect::<Result<_, ServiceError>>()?;
    if let Some(r) = running
        && inner.rebalance_started != r.started_unix
    {
        inner.rebalance_started = r.started_unix;
        inner.unrecorded = (0, 0, 0);
    }
    let busy = inner.busy.clone();
    let gathered = survey::gather(&partitions, &draining, &fuller, &mut inner.cursors, &busy)?;
    // Without a rebalance, no balance move: no server is that far from the mean.
    let spread = running.map_or(1.0, |r| r.spread);
    let max_moves = core.cfg.mover_concurrency.max(1) * BATCH_PER_SLOT;
    let plan = placement::plan_rebalance(&views, &gathered.placements(), spread, max_moves)?;
    let now = now_unix();
    for node in &draining {
        let f = inner.drain.entry(*node).or_default();
        f.left = gathered.left.get(node).copied().unwrap_or_default();
        f.stuck = plan
            .stuck
            .iter()
            .filter(|s| s.node.as_u128() == *node)
            .count() as u64;
        f.surveyed_unix = now;
    }
    inner.mean = mean;
    inner.deviation = plan.spread_before;
    let mut balance_bytes = 0u64;
    for m in &plan.moves {
        let Some(seg) = usize::try_from(m.segment)
            .ok()
            .and_then(|i| gathered.segments.get(i))
        else {
            continue;
        };
        if m.reason == MoveReason::Balance {
            balance_bytes += m.bytes;
        }
        inner.busy.insert((seg.version_id, seg.segment));
        inner.queue.push_back(Planned {
            seg: seg.clone(),
            index: m.shard_index,
            from: m.from.as_u128(),
            to: m.to.as_u128(),
            bytes: m.bytes,
            reason: m.reason,
        });
    }
    inner.planned_bytes = balance_bytes;
    if running.is_some() {
        // A batch filled by drain moves left the balance no room: that says nothing.
        if balance_bytes == 0 && plan.moves.len() < max_moves {
            inner.idle_rounds += 1;
        } else {
            inner.idle_rounds = 0;
        }
    }
    inner.awaiting_reports = running.is_some() && pending && plan.moves.is_empty();
    let finished = running.is_some()
        && !pending
        && balance_bytes == 0
        && plan.moves.len() < max_moves
        && (plan.spread_before <= spread || inner.idle_rounds >= IDLE_ROUNDS_TO_FINISH);
    drop(inner);
    if !plan.moves.is_empty() {
        tracing::info!(
            moves = plan.moves.len(),
            balance_bytes,
            stuck = plan.stuck.len(),
            spread_before = plan.spread_before,
            spread_after = plan.spread_after,
            "mover planned a batch"
        );
    }
    if finished {
        core.mover.inner().idle_rounds = 0;
    }
    Ok(finished)
}
