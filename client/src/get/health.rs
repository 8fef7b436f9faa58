//! Shards and servers found bad or slow during one read, shared by its window tasks: what
//! later windows avoid, why a segment is unreadable, and the problems `ReportShards` sends.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use dogfs_proto::meta::{NodeState, ShardLocation, ShardProblem};
use tracing::{debug, warn};

use super::fetch::{ShardFailure, describe};

/// A shard this read could not use, for the report and for error messages.
#[derive(Debug, Clone)]
struct Problem {
    shard_id: String,
    corrupt: bool,
    /// Only read around for being slow; dropped if the shard delivers after all.
    hedged: bool,
    reason: String,
}

/// Shards and servers found bad or slow during one operation, shared by its window tasks.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Transport failures and timeouts: not asked again during this read.
    bad_nodes: HashSet<String>,
    /// Hedged around: asked only when no healthy shard is left.
    slow_nodes: HashSet<String>,
    bad_shards: HashSet<(u64, u32)>,
    /// One entry per shard, in (segment, index) order.
    problems: BTreeMap<(u64, u32), Problem>,
}

impl Health {
    /// Never asked during this read.
    pub(super) fn excluded(&self, segment: u64, loc: &ShardLocation) -> bool {
        loc.missing
            || loc.address.is_empty()
            || self.bad_nodes.contains(&loc.address)
            || self.bad_shards.contains(&(segment, loc.index))
    }

    /// Asked only after every healthy shard. UNSPECIFIED (a layout from a metadata service
    /// that does not fill the state) and DRAINING (still serving) count as up.
    pub(super) fn avoided(&self, loc: &ShardLocation) -> bool {
        self.slow_nodes.contains(&loc.address)
            || matches!(
                NodeState::try_from(loc.node_state),
                Ok(NodeState::Down | NodeState::Suspect | NodeState::Removed)
            )
    }

    pub(super) fn mark(&mut self, segment: u64, loc: &ShardLocation, f: &ShardFailure) {
        warn!(segment, shard = loc.index, address = %loc.address, corrupt = f.corrupt,
            error = %f.message, "shard read failed; using parity");
        self.bad_shards.insert((segment, loc.index));
        if f.node_down {
            self.bad_nodes.insert(loc.address.clone());
        }
        let p = self
            .problems
            .entry((segment, loc.index))
            .or_insert_with(|| Problem {
                shard_id: loc.shard_id.clone(),
                corrupt: false,
                hedged: false,
                reason: String::new(),
            });
        // A corrupt verdict is kept over a later transport failure of the same shard.
        if !p.corrupt || f.corrupt {
            p.corrupt = f.corrupt;
            p.reason.clone_from(&f.message);
        }
        p.hedged = false;
    }

    pub(super) fn hedged(
        &mut self,
        segment: u64,
        loc: &ShardLocation,
        idle: Duration,
        delay: Duration,
    ) {
        if self.slow_nodes.insert(loc.address.clone()) {
            warn!(segment, shard = loc.index, address = %loc.address, ?idle, ?delay,
                "shard read slow; reading around its server for the rest of this read");
        } else {
            debug!(segment, shard = loc.index, address = %loc.address, ?idle, "hedged");
        }
        self.problems
            .entry((segment, loc.index))
            .or_insert_with(|| Problem {
                shard_id: loc.shard_id.clone(),
                corrupt: false,
                hedged: true,
                reason: format!(
                    "{}: no data for {idle:?} (hedge delay {delay:?}); read around",
                    describe(loc)
                ),
            });
    }

    /// A hedged-around shard delivered after all: slow, not unusable.
    pub(super) fn delivered(&mut self, segment: u64, index: u32) {
        if self
            .problems
            .get(&(segment, index))
            .is_some_and(|p| p.hedged)
        {
            self.problems.remove(&(segment, index));
        }
    }

    /// Why shard `loc` of `segment` is not readable, for a data-loss message.
    pub(super) fn why(&self, segment: u64, loc: &ShardLocation) -> String {
        if let Some(p) = self.problems.get(&(segment, loc.index)) {
            return p.reason.clone();
        }
        if loc.missing {
            format!(
                "shard {} (index {}) recorded missing",
                loc.shard_id, loc.index
            )
        } else if loc.address.is_empty() {
            format!("shard {} (index {}) has no server", loc.shard_id, loc.index)
        } else {
            format!("{}: its server failed earlier in this read", describe(loc))
        }
    }

    /// Every shard the read could not use, once each.
    pub(crate) fn problems(&self) -> Vec<ShardProblem> {
        self.problems
            .iter()
            .map(|(&(segment, index), p)| ShardProblem {
                segment,
                index,
                shard_id: p.shard_id.clone(),
                corrupt: p.corrupt,
                reason: p.reason.clone(),
            })
            .collect()
    }
}

pub(super) fn lock(h: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    // A panic elsewhere while holding the lock leaves only a set of bad shards behind; the
    // data is still valid to read.
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
