//! Pure chunk scaling planner: from the spec, the chunk StatefulSet, the registry and the
//! rebalance, decide the chunk StatefulSet's replicas for this reconcile and ONE step.
//!
//! Scale-down, one server at a time, in this order: drain the highest ordinal → wait until the
//! registry reports it empty → lower `replicas` by one → wait until its pod is gone → remove it
//! from the registry → delete (or keep) its claim → next server. `replicas` only ever drops
//! past a server the registry reports empty, so no shard is lost by shrinking.
//!
//! Scale-up: grow the StatefulSet → wait until every new server has registered and is up →
//! start a rebalance. Raising `replicas` while the operator drains a server cancels that drain
//! (the server stays). Nothing below `erasure.k + erasure.m`, and no drain that would leave
//! fewer than k+m servers able to take its shards.
//!
//! Without an admin view (metadata unreachable, no leader) the planner only grows or holds:
//! shrinking needs the registry's word that the server is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::admin::{Drain, Node, NodeState, RebalanceState, View};
use crate::build::Names;
use crate::crd::{RetentionPolicy, ScalingStatus};

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// `spec.chunk.replicas`.
    pub target: i32,
    /// `erasure.k + erasure.m`.
    pub floor: i32,
    /// The chunk StatefulSet's `spec.replicas`; `None` when it does not exist yet.
    pub replicas: Option<i32>,
    /// The admin API's view; `None` when it could not be read.
    pub admin: Option<&'a View>,
    pub names: &'a Names,
    /// Ordinals of the chunk pods that exist (terminating ones included).
    pub pods: &'a BTreeSet<i32>,
    /// Ordinals of the chunk claims that exist (only looked at with `Delete`).
    pub claims: &'a BTreeSet<i32>,
    /// `spec.pvcRetention.whenScaled`.
    pub retention: RetentionPolicy,
    /// The operator's record from the previous status.
    pub memory: &'a ScalingStatus,
}

/// The decision for one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Chunk StatefulSet replicas to apply.
    pub replicas: i32,
    pub step: Step,
    /// The record to keep once the step succeeded.
    pub memory: ScalingStatus,
}

/// Why a scale-down does not proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `chunk.replicas` below k+m (normally rejected on admission already).
    BelowFloor { target: i32, floor: i32 },
    /// Draining `pod` would leave fewer up servers than k+m to take its shards.
    TooFewServers {
        pod: String,
        eligible: usize,
        floor: i32,
    },
    /// `pod` has no registry entry, but some entries name no pod of this cluster: one of them
    /// may be that pod's server (advertising another address), so it is not shrunk blind.
    UnknownServers { pod: String, ids: Vec<String> },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BelowFloor { target, floor } => write!(
                f,
                "chunk.replicas {target} is below erasure.k + erasure.m = {floor}; \
                 replicas left unchanged"
            ),
            Refusal::TooFewServers {
                pod,
                eligible,
                floor,
            } => write!(
                f,
                "draining {pod} would leave {eligible} chunk servers up to take its shards, \
                 fewer than erasure.k + erasure.m = {floor}; waiting for servers to come back"
            ),
            Refusal::UnknownServers { pod, ids } => write!(
                f,
                "{pod} is not in the registry, but chunk servers {} advertise addresses of no \
                 pod of this cluster; remove them (dogfs admin remove) if they are gone",
                ids.join(", ")
            ),
        }
    }
}

/// The one thing to do in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No StatefulSet yet: create it at the target.
    Create,
    /// Nothing to do.
    Steady,
    /// The admin API could not be read and nothing may grow: keep the StatefulSet as it is.
    Hold,
    /// Raise the StatefulSet's replicas.
    Grow { from: i32, to: i32 },
    /// Cancel the operator's drain of a server that is wanted again.
    Undrain { ordinal: i32, node: String },
    /// Start draining the highest ordinal.
    Drain { ordinal: i32, node: String },
    /// The highest ordinal still holds shards.
    AwaitDrain {
        ordinal: i32,
        node: String,
        progress: Option<Drain>,
    },
    /// Lower replicas by one past an empty (or never registered) server.
    Shrink { ordinal: i32, node: Option<String> },
    /// The removed ordinal's pod still exists; removing it from the registry now would make
    /// the still-running server re-register.
    AwaitPodGone { ordinal: i32, node: String },
    /// Remove the (empty, stopped) server from the registry.
    Remove { ordinal: i32, node: String },
    /// Delete the claim of a removed ordinal (`whenScaled: Delete`).
    DeleteClaim { ordinal: i32 },
    /// New servers from a scale-up have not all registered (or are not up) yet.
    AwaitRegistration { ordinals: Vec<i32> },
    /// Every new server is up: start a rebalance (unless one already runs).
    StartRebalance { already_running: bool },
    /// Leave replicas unchanged and say why.
    Refuse(Refusal),
}

impl Step {
    /// Whether the step is part of a scaling (for the phase and the requeue).
    pub fn is_scaling(&self) -> bool {
        !matches!(self, Step::Create | Step::Steady | Step::Hold)
    }

    /// Whether the step does something (rather than wait or refuse).
    pub fn acts(&self) -> bool {
        matches!(
            self,
            Step::Grow { .. }
                | Step::Undrain { .. }
                | Step::Drain { .. }
                | Step::Shrink { .. }
                | Step::Remove { .. }
                | Step::DeleteClaim { .. }
                | Step::StartRebalance { .. }
        )
    }

    /// `Progressing` condition reason and message for a scaling step.
    pub fn progress(&self, names: &Names, replicas: i32, target: i32) -> Option<(String, String)> {
        let pod = |o: i32| names.chunk_pod(o);
        let (reason, message) = match self {
            Step::Create | Step::Steady => return None,
            Step::Hold if replicas <= target => return None,
            Step::Hold => (
                "WaitingForAdminApi",
                format!(
                    "scaling {replicas} -> {target} waits for the metadata service's admin API"
                ),
            ),
            Step::Grow { from, to } => (
                "ScalingUp",
                format!("chunk StatefulSet raised from {from} to {to} replicas"),
            ),
            Step::Undrain { ordinal, .. } => (
                "DrainCancelled",
                format!(
                    "target raised to {target}: cancelling the drain of {}",
                    pod(*ordinal)
                ),
            ),
            Step::Drain { ordinal, node } => (
                "Draining",
                format!(
                    "draining {} (node {node}) to scale {replicas} -> {target}",
                    pod(*ordinal)
                ),
            ),
            Step::AwaitDrain {
                ordinal,
                node,
                progress,
            } => (
                "Draining",
                format!(
                    "draining {} (node {node}): {}; scaling {replicas} -> {target}",
                    pod(*ordinal),
                    left(progress.as_ref())
                ),
            ),
            Step::Shrink { ordinal, .. } => (
                "ScalingDown",
                format!(
                    "{} is empty: replicas lowered to {replicas} (target {target})",
                    pod(*ordinal)
                ),
            ),
            Step::AwaitPodGone { ordinal, node } => (
                "ScalingDown",
                format!(
                    "waiting for pod {} to stop before removing node {node}",
                    pod(*ordinal)
                ),
            ),
            Step::Remove { ordinal, node } => (
                "ScalingDown",
                format!("removing node {node} ({}) from the registry", pod(*ordinal)),
            ),
            Step::DeleteClaim { ordinal } => (
                "ScalingDown",
                format!("deleting claim {}", names.chunk_claim(*ordinal)),
            ),
            Step::AwaitRegistration { ordinals } => (
                "WaitingForRegistration",
                format!(
                    "waiting for {} to register with the metadata service",
                    ordinals
                        .iter()
                        .map(|o| pod(*o))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Step::StartRebalance { .. } => (
                "Rebalancing",
                "new chunk servers registered: rebalancing".to_string(),
            ),
            Step::Refuse(refusal) => ("ScaleDownRefused", refusal.to_string()),
        };
        Some((reason.to_string(), message))
    }
}

/// `120 shards, 1.2 GiB left` (`not surveyed yet` before the first survey).
pub fn left(progress: Option<&Drain>) -> String {
    match progress {
        Some(d) if d.surveyed => {
            let mut text = format!(
                "{} shards, {} left",
                d.shards_left,
                human_bytes(d.bytes_left)
            );
            if d.shards_stuck > 0 {
                text.push_str(&format!(" ({} stuck)", d.shards_stuck));
            }
            text
        }
        _ => "not surveyed yet".to_string(),
    }
}

/// Binary units with one decimal, as `dogfs` prints them.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The registry entry of each chunk pod ordinal: entries whose address names one of this
/// cluster's chunk pods, removed ones left out. When an ordinal has several (a pod whose
/// volume was replaced registers a new id; the old one lingers, down), the latest registered
/// one is the pod's.
pub fn by_ordinal<'a>(nodes: &'a [Node], names: &Names) -> BTreeMap<i32, &'a Node> {
    let mut map: BTreeMap<i32, &Node> = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.state != NodeState::Removed) {
        let Some(ordinal) = names.chunk_ordinal_of_address(&node.address) else {
            continue;
        };
        let newer = map
            .get(&ordinal)
            .is_none_or(|old| (node.registered_unix, &node.id) > (old.registered_unix, &old.id));
        if newer {
            map.insert(ordinal, node);
        }
    }
    map
}

/// Decides this reconcile's replicas and step.
pub fn plan(input: &Input<'_>) -> Plan {
    let Input {
        target,
        floor,
        names,
        pods,
        claims,
        ..
    } = *input;
    let mut memory = input.memory.clone();
    let Some(replicas) = input.replicas else {
        // A new cluster: every server starts empty, nothing to drain or rebalance.
        return Plan {
            replicas: target.max(floor),
            step: Step::Create,
            memory: ScalingStatus::default(),
        };
    };
    let keep = |step: Step, memory: ScalingStatus| Plan {
        replicas,
        step,
        memory,
    };
    if target < floor {
        return keep(Step::Refuse(Refusal::BelowFloor { target, floor }), memory);
    }
    let grow = |mut memory: ScalingStatus| {
        memory.new_servers_from = Some(
            memory
                .new_servers_from
                .map_or(replicas, |f| f.min(replicas)),
        );
        Plan {
            replicas: target,
            step: Step::Grow {
                from: replicas,
                to: target,
            },
            memory,
        }
    };
    let Some(view) = input.admin else {
        // Growing needs nothing from the registry and loses nothing; any shrink would.
        return if target > replicas {
            grow(memory)
        } else {
            keep(Step::Hold, memory)
        };
    };
    let live = by_ordinal(&view.nodes, names);

    // The record of the operator's drain goes once that node has left the registry.
    if let Some(id) = &memory.draining_node
        && !view
            .nodes
            .iter()
            .any(|n| &n.id == id && n.state != NodeState::Removed)
    {
        memory.draining_node = None;
    }

    // 1. Replicas went back up past the server the operator is draining: keep it.
    if let Some(id) = memory.draining_node.clone()
        && let Some((&ordinal, node)) = live.iter().find(|(_, n)| n.id == id)
        && ordinal < target
        && node.is_draining()
    {
        memory.draining_node = None;
        return keep(Step::Undrain { ordinal, node: id }, memory);
    }

    // 2. Scale-up: grow at once (a pending removal at an ordinal being re-added is then
    // simply a server that came back).
    if target > replicas {
        return grow(memory);
    }

    // 3. Finish removing servers past the StatefulSet's end before touching the next one.
    if let Some((&ordinal, node)) = live.range(replicas..).next_back() {
        let node_id = node.id.clone();
        if pods.contains(&ordinal) {
            return keep(
                Step::AwaitPodGone {
                    ordinal,
                    node: node_id,
                },
                memory,
            );
        }
        if memory.draining_node.as_deref() == Some(node_id.as_str()) {
            memory.draining_node = None;
        }
        return keep(
            Step::Remove {
                ordinal,
                node: node_id,
            },
            memory,
        );
    }
    if input.retention == RetentionPolicy::Delete
        && let Some(&ordinal) = claims
            .range(replicas..)
            .rev()
            .find(|o| !pods.contains(o) && !live.contains_key(o))
    {
        return keep(Step::DeleteClaim { ordinal }, memory);
    }

    // 4. Scale-down: the highest ordinal, one at a time.
    if target < replicas {
        let ordinal = replicas - 1;
        let Some(node) = live.get(&ordinal) else {
            // Never registered (or already removed): nothing of it is referenced, unless its
            // server is an entry the address mapping did not recognise.
            let unknown: Vec<String> = view
                .nodes
                .iter()
                .filter(|n| n.state != NodeState::Removed)
                .filter(|n| names.chunk_ordinal_of_address(&n.address).is_none())
                .map(|n| n.id.clone())
                .collect();
            if !unknown.is_empty() {
                return keep(
                    Step::Refuse(Refusal::UnknownServers {
                        pod: names.chunk_pod(ordinal),
                        ids: unknown,
                    }),
                    memory,
                );
            }
            return Plan {
                replicas: ordinal,
                step: Step::Shrink {
                    ordinal,
                    node: None,
                },
                memory,
            };
        };
        if node.is_empty() {
            return Plan {
                replicas: ordinal,
                step: Step::Shrink {
                    ordinal,
                    node: Some(node.id.clone()),
                },
                memory,
            };
        }
        if node.is_draining() {
            // Ours, or started by hand: either way it is the server to remove now.
            memory.draining_node = Some(node.id.clone());
            return keep(
                Step::AwaitDrain {
                    ordinal,
                    node: node.id.clone(),
                    progress: node.drain,
                },
                memory,
            );
        }
        let eligible = view
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Up && n.id != node.id)
            .count();
        if eligible < usize::try_from(floor).unwrap_or(usize::MAX) {
            return keep(
                Step::Refuse(Refusal::TooFewServers {
                    pod: names.chunk_pod(ordinal),
                    eligible,
                    floor,
                }),
                memory,
            );
        }
        memory.draining_node = Some(node.id.clone());
        return keep(
            Step::Drain {
                ordinal,
                node: node.id.clone(),
            },
            memory,
        );
    }

    // 5. After a scale-up: every new server registered and up, then one rebalance.
    if let Some(from) = memory.new_servers_from {
        if from < replicas {
            let missing: Vec<i32> = (from..replicas)
                .filter(|o| !live.get(o).is_some_and(|n| n.state == NodeState::Up))
                .collect();
            if !missing.is_empty() {
                return keep(Step::AwaitRegistration { ordinals: missing }, memory);
            }
            memory.new_servers_from = None;
            let already_running = view.rebalance.state == RebalanceState::Running;
            return keep(Step::StartRebalance { already_running }, memory);
        }
        // The new servers were scaled away again before they registered.
        memory.new_servers_from = None;
    }
    keep(Step::Steady, memory)
}

/// The view as it is once `step`'s admin call succeeded, so the status written in the same
/// reconcile agrees with the Events about it (the registry is read again next time).
pub fn assume_done(view: &mut View, step: &Step) {
    fn node<'a>(view: &'a mut View, id: &str) -> Option<&'a mut Node> {
        view.nodes.iter_mut().find(|n| n.id == id)
    }
    match step {
        Step::Drain { node: id, .. } => {
            if let Some(n) = node(view, id) {
                n.state = NodeState::Draining;
            }
        }
        Step::Undrain { node: id, .. } => {
            if let Some(n) = node(view, id) {
                n.state = NodeState::Up;
                n.drain = None;
            }
        }
        Step::Remove { node: id, .. } => {
            if let Some(n) = node(view, id) {
                n.state = NodeState::Removed;
                n.drain = None;
            }
        }
        Step::StartRebalance { .. } => {
            view.rebalance.state = RebalanceState::Running;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{Rebalance, RebalanceState};

    fn names() -> Names {
        Names {
            cluster: "demo".into(),
            namespace: "ns".into(),
        }
    }

    fn node(ordinal: i32, state: NodeState) -> Node {
        Node {
            id: format!("n{ordinal}"),
            address: names().chunk_address(ordinal),
            state,
            registered_unix: 1,
            drain: None,
            capacity_bytes: 100,
            used_bytes: 10,
        }
    }

    fn draining(ordinal: i32, shards_left: u64) -> Node {
        Node {
            drain: Some(Drain {
                shards_left,
                bytes_left: shards_left * 1024,
                surveyed: true,
                ..Drain::default()
            }),
            ..node(ordinal, NodeState::Draining)
        }
    }

    fn up(n: i32) -> Vec<Node> {
        (0..n).map(|o| node(o, NodeState::Up)).collect()
    }

    fn view(nodes: Vec<Node>) -> View {
        View {
            nodes,
            ..View::default()
        }
    }

    struct Case {
        target: i32,
        replicas: Option<i32>,
        admin: Option<View>,
        pods: BTreeSet<i32>,
        claims: BTreeSet<i32>,
        retention: RetentionPolicy,
        memory: ScalingStatus,
    }

    impl Case {
        fn new(target: i32, replicas: i32, nodes: Vec<Node>) -> Case {
            Case {
                target,
                replicas: Some(replicas),
                admin: Some(view(nodes)),
                pods: (0..replicas).collect(),
                claims: (0..replicas).collect(),
                retention: RetentionPolicy::Retain,
                memory: ScalingStatus::default(),
            }
        }

        fn plan(&self) -> Plan {
            let names = names();
            plan(&Input {
                target: self.target,
                floor: 6,
                replicas: self.replicas,
                admin: self.admin.as_ref(),
                names: &names,
                pods: &self.pods,
                claims: &self.claims,
                retention: self.retention,
                memory: &self.memory,
            })
        }
    }

    fn drained_record(id: &str) -> ScalingStatus {
        ScalingStatus {
            draining_node: Some(id.into()),
            new_servers_from: None,
        }
    }

    #[test]
    fn a_new_cluster_is_created_at_the_target_without_the_admin_api() {
        let mut case = Case::new(8, 0, vec![]);
        case.replicas = None;
        case.admin = None;
        let p = case.plan();
        assert_eq!((p.replicas, p.step), (8, Step::Create));
        assert!(p.memory.is_empty());
    }

    #[test]
    fn steady_when_replicas_match_and_nothing_is_pending() {
        let p = Case::new(6, 6, up(6)).plan();
        assert_eq!((p.replicas, p.step), (6, Step::Steady));
    }

    #[test]
    fn scale_down_drains_the_highest_ordinal_first_and_keeps_replicas() {
        let p = Case::new(6, 8, up(8)).plan();
        assert_eq!(p.replicas, 8);
        assert_eq!(
            p.step,
            Step::Drain {
                ordinal: 7,
                node: "n7".into()
            }
        );
        assert_eq!(p.memory, drained_record("n7"));
    }

    #[test]
    fn replicas_stay_while_the_drained_server_holds_shards() {
        let mut nodes = up(7);
        nodes.push(draining(7, 3));
        let mut case = Case::new(6, 8, nodes);
        case.memory = drained_record("n7");
        let p = case.plan();
        assert_eq!(p.replicas, 8);
        assert!(
            matches!(&p.step, Step::AwaitDrain { ordinal: 7, progress: Some(d), .. } if d.shards_left == 3)
        );
        // Zero left but not surveyed yet is not empty either.
        let mut nodes = up(7);
        let mut n7 = draining(7, 0);
        n7.drain = Some(Drain::default());
        nodes.push(n7);
        let p = Case::new(6, 8, nodes).plan();
        assert_eq!(p.replicas, 8);
        assert!(matches!(
            p.step,
            Step::AwaitDrain {
                progress: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn an_empty_server_is_shrunk_past_by_exactly_one() {
        let mut nodes = up(7);
        nodes.push(draining(7, 0));
        let mut case = Case::new(6, 8, nodes);
        case.memory = drained_record("n7");
        let p = case.plan();
        assert_eq!(p.replicas, 7);
        assert_eq!(
            p.step,
            Step::Shrink {
                ordinal: 7,
                node: Some("n7".into())
            }
        );
        // The record stays until the node is removed (or the drain is cancelled).
        assert_eq!(p.memory, drained_record("n7"));
    }

    #[test]
    fn a_drained_server_that_went_down_counts_as_empty() {
        let mut nodes = up(7);
        let mut n7 = draining(7, 0);
        n7.state = NodeState::Down;
        nodes.push(n7);
        let p = Case::new(6, 8, nodes).plan();
        assert_eq!(p.replicas, 7);
    }

    #[test]
    fn a_server_that_never_registered_is_shrunk_without_a_drain() {
        let p = Case::new(6, 8, up(7)).plan();
        assert_eq!(
            (p.replicas, p.step),
            (
                7,
                Step::Shrink {
                    ordinal: 7,
                    node: None
                }
            )
        );
    }

    #[test]
    fn an_unregistered_server_is_not_shrunk_past_while_unknown_entries_exist() {
        // An entry whose address names no pod might be demo-chunk-7 advertising something
        // else: shrinking blind could lose its shards.
        let mut nodes = up(7);
        let mut stranger = node(7, NodeState::Up);
        stranger.id = "stranger".into();
        stranger.address = "10.0.0.7:7100".into();
        nodes.push(stranger);
        let p = Case::new(6, 8, nodes).plan();
        assert_eq!(p.replicas, 8);
        match &p.step {
            Step::Refuse(r @ Refusal::UnknownServers { .. }) => assert_eq!(
                r.to_string(),
                "demo-chunk-7 is not in the registry, but chunk servers stranger advertise \
                 addresses of no pod of this cluster; remove them (dogfs admin remove) if they \
                 are gone"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn removal_waits_for_the_pod_then_removes_then_the_next_drain_starts() {
        let mut nodes = up(7);
        nodes.push(draining(7, 0));
        let mut case = Case::new(6, 7, nodes.clone());
        case.memory = drained_record("n7");
        case.pods = (0..8).collect();
        let p = case.plan();
        assert_eq!(
            (p.replicas, &p.step),
            (
                7,
                &Step::AwaitPodGone {
                    ordinal: 7,
                    node: "n7".into()
                }
            )
        );
        case.pods = (0..7).collect();
        let p = case.plan();
        assert_eq!(
            (p.replicas, &p.step),
            (
                7,
                &Step::Remove {
                    ordinal: 7,
                    node: "n7".into()
                }
            )
        );
        assert_eq!(p.memory.draining_node, None);
        // Removed: the next server is drained.
        nodes[7].state = NodeState::Removed;
        case.admin = Some(view(nodes));
        case.memory = p.memory;
        let p = case.plan();
        assert_eq!(
            (p.replicas, p.step),
            (
                7,
                Step::Drain {
                    ordinal: 6,
                    node: "n6".into()
                }
            )
        );
    }

    #[test]
    fn claims_are_deleted_only_with_delete_and_only_past_the_end() {
        let mut nodes = up(7);
        let mut n7 = node(7, NodeState::Removed);
        n7.drain = None;
        nodes.push(n7);
        let mut case = Case::new(6, 7, nodes);
        case.claims = (0..8).collect();
        // Retain: nothing to do for the claim, on to the next drain.
        assert!(matches!(case.plan().step, Step::Drain { ordinal: 6, .. }));
        case.retention = RetentionPolicy::Delete;
        assert_eq!(case.plan().step, Step::DeleteClaim { ordinal: 7 });
        assert_eq!(case.plan().replicas, 7);
        // A claim whose pod still exists (terminating) waits.
        case.pods = (0..8).collect();
        assert!(matches!(case.plan().step, Step::Drain { ordinal: 6, .. }));
    }

    #[test]
    fn a_removal_the_server_refuses_is_retried_before_anything_else() {
        // A node left down by an older operator's blind scale-down: RemoveNode succeeds only
        // once its shards are repaired, and until then no further server is drained.
        let mut nodes = up(7);
        nodes.push(node(7, NodeState::Down));
        let mut case = Case::new(6, 7, nodes);
        case.pods = (0..7).collect();
        assert_eq!(
            case.plan().step,
            Step::Remove {
                ordinal: 7,
                node: "n7".into()
            }
        );
    }

    #[test]
    fn raising_replicas_during_a_drain_cancels_it_and_keeps_the_server() {
        let mut nodes = up(7);
        nodes.push(draining(7, 5));
        let mut case = Case::new(8, 8, nodes);
        case.memory = drained_record("n7");
        let p = case.plan();
        assert_eq!(
            (p.replicas, &p.step),
            (
                8,
                &Step::Undrain {
                    ordinal: 7,
                    node: "n7".into()
                }
            )
        );
        assert!(p.memory.is_empty());
        // Raised further: cancel first, grow next.
        case.target = 10;
        let p = case.plan();
        assert_eq!(p.replicas, 8);
        assert!(matches!(p.step, Step::Undrain { .. }));
    }

    #[test]
    fn raising_replicas_after_the_shrink_brings_the_drained_server_back() {
        let mut nodes = up(7);
        nodes.push(draining(7, 0));
        let mut case = Case::new(8, 7, nodes);
        case.memory = drained_record("n7");
        case.pods = (0..7).collect();
        let p = case.plan();
        assert!(matches!(p.step, Step::Undrain { ordinal: 7, .. }));
        case.memory = p.memory;
        case.admin.as_mut().unwrap().nodes[7] = node(7, NodeState::Suspect);
        let p = case.plan();
        assert_eq!((p.replicas, &p.step), (8, &Step::Grow { from: 7, to: 8 }));
        assert_eq!(p.memory.new_servers_from, Some(7));
    }

    #[test]
    fn a_drain_started_by_hand_is_not_cancelled() {
        // Someone drains chunk-7 for maintenance while the target is 8: not the operator's.
        let mut nodes = up(7);
        nodes.push(draining(7, 5));
        let p = Case::new(8, 8, nodes).plan();
        assert_eq!(p.step, Step::Steady);
    }

    #[test]
    fn refuses_below_k_plus_m_with_replicas_unchanged() {
        let p = Case::new(5, 6, up(6)).plan();
        assert_eq!(p.replicas, 6);
        assert_eq!(
            p.step,
            Step::Refuse(Refusal::BelowFloor {
                target: 5,
                floor: 6
            })
        );
        // Even without the admin API.
        let mut case = Case::new(4, 7, vec![]);
        case.admin = None;
        assert_eq!(case.plan().replicas, 7);
    }

    #[test]
    fn refuses_a_drain_that_would_leave_fewer_than_k_plus_m_up_servers() {
        let mut nodes = up(8);
        nodes[2].state = NodeState::Down;
        nodes[3].state = NodeState::Suspect;
        let p = Case::new(6, 8, nodes).plan();
        assert_eq!(p.replicas, 8);
        match &p.step {
            Step::Refuse(r @ Refusal::TooFewServers { eligible: 5, .. }) => assert_eq!(
                r.to_string(),
                "draining demo-chunk-7 would leave 5 chunk servers up to take its shards, \
                 fewer than erasure.k + erasure.m = 6; waiting for servers to come back"
            ),
            other => panic!("{other:?}"),
        }
        assert!(p.memory.is_empty());
    }

    #[test]
    fn without_the_admin_api_nothing_shrinks_but_growth_goes_ahead() {
        for replicas in [6, 7, 8] {
            let mut case = Case::new(6, replicas, vec![]);
            case.admin = None;
            let p = case.plan();
            assert_eq!(p.replicas, replicas, "from {replicas}");
            assert_eq!(p.step, Step::Hold);
        }
        let mut case = Case::new(8, 6, vec![]);
        case.admin = None;
        let p = case.plan();
        assert_eq!((p.replicas, p.step), (8, Step::Grow { from: 6, to: 8 }));
    }

    #[test]
    fn scale_up_grows_then_waits_for_registration_then_rebalances_once() {
        let p = Case::new(8, 6, up(6)).plan();
        assert_eq!((p.replicas, &p.step), (8, &Step::Grow { from: 6, to: 8 }));
        let memory = p.memory;
        assert_eq!(memory.new_servers_from, Some(6));

        let mut nodes = up(7);
        nodes[6].state = NodeState::Suspect;
        let mut case = Case::new(8, 8, nodes);
        case.memory = memory.clone();
        assert_eq!(
            case.plan().step,
            Step::AwaitRegistration {
                ordinals: vec![6, 7]
            }
        );
        case.admin = Some(view(up(8)));
        let p = case.plan();
        assert_eq!(
            (p.replicas, &p.step),
            (
                8,
                &Step::StartRebalance {
                    already_running: false
                }
            )
        );
        assert!(p.memory.is_empty());
        // The metadata service may have started one itself when the servers joined.
        let mut running = view(up(8));
        running.rebalance = Rebalance {
            state: RebalanceState::Running,
            ..Rebalance::default()
        };
        case.admin = Some(running);
        assert_eq!(
            case.plan().step,
            Step::StartRebalance {
                already_running: true
            }
        );
        // Done once: afterwards steady.
        case.memory = ScalingStatus::default();
        assert_eq!(case.plan().step, Step::Steady);
    }

    #[test]
    fn new_servers_scaled_away_before_registering_need_no_rebalance() {
        let mut case = Case::new(6, 6, up(6));
        case.memory = ScalingStatus {
            draining_node: None,
            new_servers_from: Some(6),
        };
        let p = case.plan();
        assert_eq!(p.step, Step::Steady);
        assert!(p.memory.is_empty());
    }

    #[test]
    fn the_latest_registration_of_an_ordinal_is_its_server() {
        let mut old = node(7, NodeState::Down);
        old.id = "old".into();
        old.registered_unix = 1;
        let mut new = node(7, NodeState::Up);
        new.id = "new".into();
        new.registered_unix = 9;
        let mut removed = node(7, NodeState::Removed);
        removed.id = "zzz".into();
        removed.registered_unix = 99;
        let mut foreign = node(9, NodeState::Up);
        foreign.address = "elsewhere:7100".into();
        let nodes = vec![old, new.clone(), removed, foreign];
        let map = by_ordinal(&nodes, &names());
        assert_eq!(map.len(), 1);
        assert_eq!(map[&7].id, "new");
    }

    #[test]
    fn ordinals_come_only_from_this_clusters_pod_addresses() {
        let n = names();
        assert_eq!(
            n.chunk_address(7),
            "demo-chunk-7.demo-chunk-headless.ns.svc.cluster.local:7100"
        );
        assert_eq!(n.chunk_ordinal_of_address(&n.chunk_address(12)), Some(12));
        for bad in [
            "demo-chunk-07.demo-chunk-headless.ns.svc.cluster.local:7100",
            "demo-chunk--1.demo-chunk-headless.ns.svc.cluster.local:7100",
            "demo-chunk-x.demo-chunk-headless.ns.svc.cluster.local:7100",
            "demo-chunk-7.demo-chunk-headless.other.svc.cluster.local:7100",
            "demo-chunk-7.demo-chunk-headless.ns.svc.cluster.local:7000",
            "demo-meta-1.demo-meta-headless.ns.svc.cluster.local:7100",
            "demo-chunk-99999999999.demo-chunk-headless.ns.svc.cluster.local:7100",
        ] {
            assert_eq!(n.chunk_ordinal_of_address(bad), None, "{bad}");
        }
        assert_eq!(n.chunk_ordinal_of_claim("data-demo-chunk-3"), Some(3));
        assert_eq!(n.chunk_ordinal_of_claim("data-demo-meta-3"), None);
        assert_eq!(n.chunk_claim(3), "data-demo-chunk-3");
    }

    /// Walks the planner through a whole 8 → 6 scale-down against a tiny model of the
    /// registry and the StatefulSet controller, checking the invariant at every step: the
    /// StatefulSet never drops past a server that holds shards.
    #[test]
    fn whole_scale_down_never_shrinks_past_a_server_with_shards() {
        let mut nodes = up(8);
        let mut replicas = 8;
        let mut pods: BTreeSet<i32> = (0..8).collect();
        let mut claims: BTreeSet<i32> = (0..8).collect();
        let mut memory = ScalingStatus::default();
        let mut shards: BTreeMap<i32, u64> = (0..8).map(|o| (o, 2)).collect();
        let mut steps = Vec::new();
        for _ in 0..40 {
            let names = names();
            let admin = view(nodes.clone());
            let p = plan(&Input {
                target: 6,
                floor: 6,
                replicas: Some(replicas),
                admin: Some(&admin),
                names: &names,
                pods: &pods,
                claims: &claims,
                retention: RetentionPolicy::Delete,
                memory: &memory,
            });
            for gone in p.replicas..replicas {
                assert_eq!(shards[&gone], 0, "shrunk past ordinal {gone} with shards");
            }
            steps.push(
                format!("{:?}", p.step)
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string(),
            );
            memory = p.memory.clone();
            match &p.step {
                Step::Drain { ordinal, .. } => {
                    nodes[*ordinal as usize] = draining(*ordinal, shards[ordinal]);
                }
                Step::AwaitDrain { ordinal, .. } => {
                    // The mover takes one shard per round.
                    let left = shards.get_mut(ordinal).unwrap();
                    *left -= 1;
                    nodes[*ordinal as usize] = draining(*ordinal, *left);
                }
                Step::Remove { ordinal, .. } => nodes[*ordinal as usize].state = NodeState::Removed,
                Step::DeleteClaim { ordinal } => {
                    claims.remove(ordinal);
                }
                Step::Steady => break,
                Step::Shrink { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
            replicas = p.replicas;
            // The StatefulSet controller deletes pods past the end before the next round.
            pods.retain(|o| *o < replicas);
        }
        assert_eq!(
            steps,
            [
                "Drain",
                "AwaitDrain",
                "AwaitDrain",
                "Shrink",
                "Remove",
                "DeleteClaim",
                "Drain",
                "AwaitDrain",
                "AwaitDrain",
                "Shrink",
                "Remove",
                "DeleteClaim",
                "Steady"
            ]
        );
        assert_eq!(replicas, 6);
        assert_eq!(claims, (0..6).collect());
        assert!(memory.is_empty());
    }

    #[test]
    fn byte_counts_read_like_the_cli() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        let d = Drain {
            shards_left: 120,
            bytes_left: 1288490189,
            shards_stuck: 2,
            surveyed: true,
            ..Drain::default()
        };
        assert_eq!(left(Some(&d)), "120 shards, 1.2 GiB left (2 stuck)");
        assert_eq!(left(None), "not surveyed yet");
    }
}
