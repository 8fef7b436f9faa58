//! The amnesia guard (docs/meta-service.md, "Amnesia guard").
//!
//! A metadata node that comes back with no state for a group (its disk was lost or wiped)
//! must not vote in that group before it has caught up. Before the loss it may have
//! acknowledged entries that a leader then counted as committed with its ack; an empty voter
//! would now grant its vote to a candidate that lacks them, and that candidate could win with
//! it and overwrite them. Such a group opens with its votes refused
//! ([`NodeConfig::amnesia_guard`](crate::raft::NodeConfig)); this task lifts the refusal when
//! it is safe:
//!
//! - **Caught up**: a peer that leads the group was seen, and this node has applied up to that
//!   leader's last log index as it was then. Every entry a leader could count with an ack this
//!   node gave before the loss was in that leader's log already (later leaders were elected
//!   without this node's vote, so they hold every committed entry too).
//! - **New cluster**: every peer answers and none has an entry past the bootstrap membership,
//!   so nothing was ever committed and there is nothing to lose. Every node of a new cluster
//!   starts empty, so this is how a new cluster gets its first votes.
//!
//! Until then the group runs without this node's vote: with two of three nodes remembering,
//! nothing changes; with fewer, no leader is elected until a node that remembers comes back,
//! which is the point.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_proto::meta::{ClusterStatusRequest, GroupStatus};
use tokio::sync::watch;

use crate::service::{Core, peer_request};

/// How often a guarded node asks its peers.
const TICK: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A peer's view of one group (from its `ClusterStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerGroup {
    /// The peer.
    pub node_id: u64,
    /// The leader the peer knows of.
    pub leader_id: Option<u64>,
    /// The peer's last log index (0: nothing past the bootstrap membership).
    pub last_index: u64,
    /// The peer's applied index.
    pub applied: u64,
}

/// The guard's next step for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Safe to vote again.
    Lift(&'static str),
    /// A leader was seen: vote again once the applied index reaches this.
    Target(u64),
    /// Nothing to go on yet.
    Wait,
}

/// Decides the next step from every peer's answer (`None`: no answer, or no such group),
/// this node's applied index and the target fixed earlier, if any.
pub fn step(peers: &[Option<PeerGroup>], applied: u64, target: Option<u64>) -> Step {
    if let Some(t) = target {
        return if applied >= t {
            Step::Lift("caught up with a leader")
        } else {
            Step::Wait
        };
    }
    let new_cluster = !peers.is_empty()
        && peers
            .iter()
            .all(|p| p.is_some_and(|p| p.last_index == 0 && p.applied == 0));
    if new_cluster {
        return Step::Lift("new cluster: no peer has an entry past the bootstrap membership");
    }
    peers
        .iter()
        .flatten()
        .filter(|p| p.leader_id == Some(p.node_id))
        .map(|p| p.last_index)
        .max()
        .map_or(Step::Wait, Step::Target)
}

/// Runs until no group of this node is guarded, or the node stops.
pub(crate) async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut targets: HashMap<u64, u64> = HashMap::new();
    loop {
        let guarded = core.raft.vote_guarded();
        if guarded.is_empty() {
            return;
        }
        let mut answers = Vec::new();
        for (&id, addr) in &core.peers {
            if id != core.node_id {
                answers.push((id, peer_groups(&core, addr).await));
            }
        }
        for group in guarded {
            let peers: Vec<Option<PeerGroup>> = answers
                .iter()
                .map(|(id, groups)| {
                    let g = groups.as_ref()?.iter().find(|g| g.group_id == group)?;
                    Some(PeerGroup {
                        node_id: *id,
                        leader_id: g.leader_id,
                        last_index: g.commit_index,
                        applied: g.applied_index,
                    })
                })
                .collect();
            let Ok(raft) = core.raft.raft(group) else {
                continue;
            };
            let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
            match step(&peers, applied, targets.get(&group).copied()) {
                Step::Lift(why) => {
                    if let Err(e) = core.raft.lift_vote_guard(group) {
                        tracing::warn!(group, error = %e, "lifting the amnesia guard failed");
                        continue;
                    }
                    targets.remove(&group);
                    tracing::info!(group, applied, why, "amnesia guard lifted: voting again");
                }
                Step::Target(t) => {
                    targets.insert(group, t);
                    tracing::info!(
                        group,
                        target = t,
                        applied,
                        "amnesia guard: voting again once applied up to the leader's log"
                    );
                }
                Step::Wait => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A peer's group statuses (`ClusterStatus`, never forwarded), or `None` when it does not
/// answer in time.
pub(crate) async fn peer_groups(core: &Core, addr: &str) -> Option<Vec<GroupStatus>> {
    let channel = core.raft.connections().channel(addr).ok()?;
    let mut client = AdminServiceClient::new(channel);
    let call = client.cluster_status(peer_request(ClusterStatusRequest {}));
    let status = tokio::time::timeout(PROBE_TIMEOUT, call).await.ok()?.ok()?;
    Some(status.into_inner().groups)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn peer(node_id: u64, leader_id: Option<u64>, last_index: u64, applied: u64) -> PeerGroup {
        PeerGroup {
            node_id,
            leader_id,
            last_index,
            applied,
        }
    }

    #[test]
    fn a_new_cluster_needs_every_peer_empty() {
        let empty = [Some(peer(1, None, 0, 0)), Some(peer(2, None, 0, 0))];
        assert!(matches!(step(&empty, 0, None), Step::Lift(_)));
        // The initializer holds the bootstrap membership at index 0 and campaigns.
        let campaigning = [Some(peer(0, None, 0, 0)), Some(peer(2, None, 0, 0))];
        assert!(matches!(step(&campaigning, 0, None), Step::Lift(_)));
        // A silent peer may be the one that remembers: wait.
        assert_eq!(
            step(&[Some(peer(1, None, 0, 0)), None], 0, None),
            Step::Wait
        );
        assert_eq!(step(&[], 0, None), Step::Wait);
        // Any entry past the membership (a leader's first entry) means a used cluster.
        let used = [Some(peer(1, None, 1, 0)), Some(peer(2, None, 0, 0))];
        assert_eq!(step(&used, 0, None), Step::Wait);
        let applied = [Some(peer(1, None, 0, 1)), Some(peer(2, None, 0, 0))];
        assert_eq!(step(&applied, 0, None), Step::Wait);
    }

    #[test]
    fn a_used_cluster_needs_catching_up_with_a_leader() {
        // No peer leads (the leader is the one that is down): wait, whatever else is known.
        let leaderless = [Some(peer(1, None, 40, 40)), Some(peer(2, Some(0), 38, 38))];
        assert_eq!(step(&leaderless, 0, None), Step::Wait);
        // A follower naming a leader is not the leader's own word.
        let hearsay = [Some(peer(1, Some(2), 40, 40)), None];
        assert_eq!(step(&hearsay, 0, None), Step::Wait);
        // The leader's last index is the target...
        let led = [
            Some(peer(1, Some(1), 42, 41)),
            Some(peer(2, Some(1), 40, 40)),
        ];
        assert_eq!(step(&led, 0, None), Step::Target(42));
        // ...kept once fixed, and reached by the applied index.
        assert_eq!(step(&led, 41, Some(42)), Step::Wait);
        assert!(matches!(step(&led, 42, Some(42)), Step::Lift(_)));
        assert!(matches!(step(&[None, None], 50, Some(42)), Step::Lift(_)));
        // Two nodes claiming the lead (one deposed, not yet aware): the longer log.
        let two = [
            Some(peer(1, Some(1), 42, 41)),
            Some(peer(2, Some(2), 45, 40)),
        ];
        assert_eq!(step(&two, 0, None), Step::Target(45));
    }
}
