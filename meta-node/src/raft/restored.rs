//! Reads on a leadership resumed at startup (`docs/meta-service.md`, "Read index after a
//! restart").
//!
//! openraft 0.9 restarts a node whose saved vote is committed for itself as the leader of that
//! same term, without an election. Its read index is then `max(committed, first entry of the
//! term)`, and both can lag what was acknowledged before the crash: the committed marker is
//! saved lazily (it rides on the group's next append, `log_store.rs`), and the state machine's
//! engine may have lost its unflushed tail. An entry at the end of the restored log may have
//! been committed by the followers' acks and answered to a client, and a read that does not
//! wait for it is stale. So a read in the restored term waits until the whole log the node
//! restarted with is applied: every entry of it is this term's leader's own log, which that
//! leader commits as soon as a quorum answers (the read index round just proved one does).

use openraft::{LogId, Vote};

/// Node ids, as in [`TypeConfig`](super::TypeConfig).
type NodeId = u64;

/// Leadership of `term` resumed at startup, with the log ending at `last_log_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredLead {
    /// The term this node led when it stopped, and leads again without an election.
    pub term: u64,
    /// The index of the last entry in its log at startup.
    pub last_log_index: u64,
}

/// What a group's saved vote and log end say about leadership at startup: `Some` when openraft
/// will resume it (the vote is committed and names this node) and the log is not empty.
pub fn restored_lead(
    node_id: NodeId,
    vote: Option<&Vote<NodeId>>,
    last_log_id: Option<&LogId<NodeId>>,
) -> Option<RestoredLead> {
    let vote = vote?;
    let leader = vote.leader_id();
    if !vote.is_committed() || leader.voted_for() != Some(node_id) {
        return None;
    }
    Some(RestoredLead {
        term: leader.get_term(),
        last_log_index: last_log_id?.index,
    })
}

/// The index the state machine must reach, beyond openraft's `read_log_id`, before a read on
/// the leader that returned `read_log_id` is linearizable. `None`: openraft's wait suffices.
///
/// `read_log_id` is at least the first entry of the serving leader's term, so its term names
/// the term being served: only reads in the restored term wait for the restored log.
pub fn extra_read_point(
    read_log_id: Option<&LogId<NodeId>>,
    restored: Option<RestoredLead>,
) -> Option<u64> {
    let (rid, r) = (read_log_id?, restored?);
    (rid.leader_id.get_term() == r.term && rid.index < r.last_log_index).then_some(r.last_log_index)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn committed_vote(term: u64, node: NodeId) -> Vote<NodeId> {
        Vote::new_committed(term, node)
    }

    #[test]
    fn only_a_committed_vote_for_this_node_with_a_log_is_restored_leadership() {
        let last = log_id(3, 1, 40);
        assert_eq!(
            restored_lead(1, Some(&committed_vote(3, 1)), Some(&last)),
            Some(RestoredLead {
                term: 3,
                last_log_index: 40
            })
        );
        // The log may end with entries of an earlier term (this leader's own not yet appended).
        assert_eq!(
            restored_lead(1, Some(&committed_vote(4, 1)), Some(&last)),
            Some(RestoredLead {
                term: 4,
                last_log_index: 40
            })
        );
        // Another node's leadership, a vote only granted (a candidate's), no vote, no log.
        assert_eq!(
            restored_lead(1, Some(&committed_vote(3, 2)), Some(&last)),
            None
        );
        assert_eq!(restored_lead(1, Some(&Vote::new(3, 1)), Some(&last)), None);
        assert_eq!(restored_lead(1, None, Some(&last)), None);
        assert_eq!(restored_lead(1, Some(&committed_vote(3, 1)), None), None);
    }

    #[test]
    fn reads_in_the_restored_term_wait_for_the_whole_restored_log() {
        let r = Some(RestoredLead {
            term: 3,
            last_log_index: 40,
        });
        // The crash case: committed marker (and the first entry of the term) behind the log.
        assert_eq!(extra_read_point(Some(&log_id(3, 1, 37)), r), Some(40));
        assert_eq!(extra_read_point(Some(&log_id(3, 1, 1)), r), Some(40));
        // Caught up: openraft's own wait covers it.
        assert_eq!(extra_read_point(Some(&log_id(3, 1, 40)), r), None);
        assert_eq!(extra_read_point(Some(&log_id(3, 1, 55)), r), None);
        // A later term won by election: its first entry follows everything it had, so its
        // read index already covers the restored log (which a new leader may even have cut).
        assert_eq!(extra_read_point(Some(&log_id(4, 1, 38)), r), None);
        // Not restored, or nothing to read.
        assert_eq!(extra_read_point(Some(&log_id(3, 1, 37)), None), None);
        assert_eq!(extra_read_point(None, r), None);
    }
}
