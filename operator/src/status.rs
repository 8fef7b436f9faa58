//! Observation and status: what the cluster looks like, turned into `DogClusterStatus`.
//!
//! [`Observed`] holds everything the operator reads back from the cluster: the StatefulSets'
//! status (returned by the apply calls, so observing costs no extra request), the metadata
//! service's admin API (chunk servers draining, the rebalance, redundancy, usage) and where the
//! chunk scaling stands ([`crate::scale`]). [`compute`] turns it into phase, conditions and
//! fields.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::admin::{NodeState, RebalanceState, View};
use crate::build::Names;
use crate::crd::{
    DogCluster, DogClusterStatus, DrainStatus, DrainingNode, Phase, RebalanceSummary,
    RepairSummary, ReplicaStatus, ScalingStatus, UsageStatus,
};
use crate::scale::{self, human_bytes};
use crate::validate::{InvalidSpec, erasure_label};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DRAINING: &str = "Draining";
pub const REBALANCING: &str = "Rebalancing";
/// Whether the metadata service's admin API answered in the last reconcile.
pub const ADMIN_REACHABLE: &str = "AdminReachable";
/// Certificates in place for the TLS mode (absent with `tls.mode: Disabled`).
pub const TLS_READY: &str = "TLSReady";
/// `Progressing` reason while a scale-down is refused.
pub const SCALE_DOWN_REFUSED: &str = "ScaleDownRefused";

/// The state of one StatefulSet as its status reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// `spec.replicas` as applied.
    pub desired: i32,
    /// Pods that exist (`status.replicas`).
    pub current: i32,
    pub ready: i32,
    /// The StatefulSet controller has seen the latest spec and every pod runs its revision.
    pub rolled_out: bool,
}

impl Workload {
    pub fn of(sts: &StatefulSet) -> Workload {
        let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let Some(status) = sts.status.as_ref() else {
            return Workload {
                desired,
                ..Workload::default()
            };
        };
        let seen = status.observed_generation.is_some()
            && status.observed_generation == sts.metadata.generation;
        let same_revision =
            status.update_revision.is_none() || status.current_revision == status.update_revision;
        Workload {
            desired,
            current: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            rolled_out: seen && same_revision && status.updated_replicas.unwrap_or(0) >= desired,
        }
    }

    /// A Deployment's state: rolled out once its controller has seen the latest spec and only
    /// pods of the new template are left.
    pub fn of_deployment(deployment: &Deployment) -> Workload {
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        let Some(status) = deployment.status.as_ref() else {
            return Workload {
                desired,
                ..Workload::default()
            };
        };
        let seen = status.observed_generation.is_some()
            && status.observed_generation >= deployment.metadata.generation;
        let current = status.replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        Workload {
            desired,
            current,
            ready: status.ready_replicas.unwrap_or(0),
            rolled_out: seen && updated >= desired && current == updated,
        }
    }

    fn all_ready(&self) -> bool {
        self.current == self.desired && self.ready >= self.desired
    }

    fn replica_status(&self, desired: i32) -> ReplicaStatus {
        ReplicaStatus {
            desired,
            current: self.current,
            ready_replicas: self.ready,
            ready: format!("{}/{desired}", self.ready),
        }
    }
}

/// What the admin API gave in this reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminObserved {
    /// The view, when reading it succeeded.
    pub view: Option<View>,
    /// A failed read or action: condition reason and message.
    pub error: Option<(String, String)>,
}

/// Where the chunk scaling stands after this reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scaling {
    /// `Progressing` reason and message of the step under way; `None` when not scaling.
    pub progress: Option<(String, String)>,
    /// The step is a refusal: `Progressing` is false.
    pub refused: bool,
    /// The operator's record to keep.
    pub memory: ScalingStatus,
}

/// Everything observed about a cluster after applying its objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub meta: Workload,
    pub chunk: Workload,
    /// `None`: the admin API was not asked (no chunk StatefulSet yet).
    pub admin: Option<AdminObserved>,
    pub scaling: Scaling,
    /// The S3 gateway's Deployment; `None` when the gateway is not enabled.
    pub s3: Option<Workload>,
    /// `TLSReady`: status, reason, message; `None` with TLS disabled (no condition).
    pub tls: Option<(bool, String, String)>,
}

/// The phase and conditions for a valid spec, given what was observed.
pub fn compute(cluster: &DogCluster, observed: &Observed, now: &Time) -> DogClusterStatus {
    let spec = &cluster.spec;
    let previous = cluster.status.clone().unwrap_or_default();
    let chunk_target = spec.chunk.replicas.max(spec.erasure.k + spec.erasure.m);
    let (meta, chunk) = (&observed.meta, &observed.chunk);

    // An enabled gateway is part of the cluster: Ready waits for it, and a gateway pod down
    // degrades the cluster like a server pod would.
    let s3 = observed.s3.as_ref();
    let rolled_out = meta.rolled_out && chunk.rolled_out && s3.is_none_or(|w| w.rolled_out);
    let all_ready = meta.all_ready() && chunk.all_ready() && s3.is_none_or(Workload::all_ready);
    // Once a cluster has been up, missing pods mean trouble rather than a slow start.
    let was_up = matches!(
        previous.phase,
        Some(Phase::Running | Phase::Degraded | Phase::Updating | Phase::Scaling)
    );
    // A StatefulSet short of the target is a scale-down in steps; pods still being added to
    // a running cluster are a scale-up, until the new ones are ready too. On first creation,
    // missing pods are just "Creating".
    let scaling = chunk.desired != chunk_target
        || (was_up && chunk.current != chunk.desired)
        || (previous.phase == Some(Phase::Scaling) && !chunk.all_ready())
        || observed.scaling.progress.is_some();
    let phase = if scaling {
        Phase::Scaling
    } else if all_ready && rolled_out {
        Phase::Running
    } else if !rolled_out && was_up {
        Phase::Updating
    } else if was_up {
        Phase::Degraded
    } else {
        Phase::Creating
    };

    let counts = match s3 {
        None => format!(
            "{}/{} metadata nodes and {}/{} chunk servers ready",
            meta.ready, meta.desired, chunk.ready, chunk_target
        ),
        Some(s3) => format!(
            "{}/{} metadata nodes, {}/{} chunk servers and {}/{} S3 gateways ready",
            meta.ready, meta.desired, chunk.ready, chunk_target, s3.ready, s3.desired
        ),
    };
    let generation = cluster.metadata.generation;
    let mut conditions = previous.conditions.clone();
    let ready = phase == Phase::Running;
    set_condition(
        &mut conditions,
        condition(READY, ready, phase.as_str(), &counts, generation, now),
    );
    let progressing_message = match phase {
        Phase::Scaling => format!(
            "chunk servers: {} running, StatefulSet at {}, target {chunk_target}",
            chunk.current, chunk.desired
        ),
        Phase::Updating => "rolling out a new pod template".to_string(),
        Phase::Creating => counts.clone(),
        _ => "nothing in progress".to_string(),
    };
    let progressing = matches!(phase, Phase::Creating | Phase::Scaling | Phase::Updating);
    let reason = if progressing {
        phase.as_str()
    } else {
        "Reconciled"
    };
    let progressing = match &observed.scaling.progress {
        Some((reason, message)) => condition(
            PROGRESSING,
            !observed.scaling.refused,
            reason,
            message,
            generation,
            now,
        ),
        None => condition(
            PROGRESSING,
            progressing,
            reason,
            &progressing_message,
            generation,
            now,
        ),
    };
    set_condition(&mut conditions, progressing);

    let view = observed.admin.as_ref().and_then(|a| a.view.as_ref());
    let pods_degraded = phase == Phase::Degraded;
    let (degraded, reason, message) = degraded(pods_degraded, &counts, view);
    set_condition(
        &mut conditions,
        condition(DEGRADED, degraded, reason, &message, generation, now),
    );

    let names = Names::of(cluster).ok();
    let mut status = DogClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        meta: Some(meta.replica_status(spec.meta.replicas)),
        chunk: Some(chunk.replica_status(chunk_target)),
        s3: s3.map(|w| w.replica_status(w.desired)),
        erasure: Some(erasure_label(spec.erasure.k, spec.erasure.m)),
        // Carried over while the admin API is not answering: stale, but flagged by
        // `AdminReachable`, and better than blanking what was last known.
        drain: previous.drain.clone(),
        rebalance: previous.rebalance.clone(),
        usage: previous.usage.clone(),
        repair: previous.repair.clone(),
        scaling: Some(observed.scaling.memory.clone()).filter(|m| !m.is_empty()),
    };
    if let Some(admin) = &observed.admin {
        let (reachable, reason, message) = match &admin.error {
            Some((reason, message)) => (false, reason.as_str(), message.clone()),
            None => (
                true,
                "Reachable",
                "the metadata service answered".to_string(),
            ),
        };
        set_condition(
            &mut status.conditions,
            condition(
                ADMIN_REACHABLE,
                reachable,
                reason,
                &message,
                generation,
                now,
            ),
        );
    }
    match &observed.tls {
        Some((ready, reason, message)) => set_condition(
            &mut status.conditions,
            condition(TLS_READY, *ready, reason, message, generation, now),
        ),
        None => status.conditions.retain(|c| c.type_ != TLS_READY),
    }
    if let Some(view) = view {
        admin_fields(&mut status, view, names.as_ref(), generation, now);
    }
    status
}

/// `Degraded`: pods not ready, or segments short of shards as the metadata service reports.
fn degraded(pods: bool, counts: &str, view: Option<&View>) -> (bool, &'static str, String) {
    let health = view.map(|v| v.health).unwrap_or_default();
    let mut message = counts.to_string();
    if view.is_some() {
        message.push_str(&format!(
            "; {} segments unreadable, {} waiting for repair, {} more short of shards \
             on servers down for less than repair.afterSeconds",
            health.unreadable_segments, health.backlog_segments, health.waiting_segments
        ));
    }
    let reason = if health.unreadable_segments > 0 {
        "UnreadableSegments"
    } else if pods {
        "PodsNotReady"
    } else if health.backlog_segments > 0 {
        "RepairBacklog"
    } else {
        "AsExpected"
    };
    (reason != "AsExpected", reason, message)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Status fields and conditions that come from the admin API.
fn admin_fields(
    status: &mut DogClusterStatus,
    view: &View,
    names: Option<&Names>,
    generation: Option<i64>,
    now: &Time,
) {
    let pod_of = |address: &str| {
        names.and_then(|n| n.chunk_ordinal_of_address(address).map(|o| n.chunk_pod(o)))
    };
    let draining: Vec<_> = view
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Removed && n.is_draining())
        .collect();
    let lines: Vec<String> = draining
        .iter()
        .map(|n| {
            let who = pod_of(&n.address).unwrap_or_else(|| n.id.clone());
            format!("{who}: {}", scale::left(n.drain.as_ref()))
        })
        .collect();
    status.drain = (!draining.is_empty()).then(|| DrainStatus {
        summary: lines.join("; "),
        nodes: draining
            .iter()
            .map(|n| {
                let surveyed = n.drain.filter(|d| d.surveyed);
                DrainingNode {
                    node_id: n.id.clone(),
                    pod: pod_of(&n.address),
                    shards_left: surveyed.map(|d| count(d.shards_left)),
                    bytes_left: surveyed.map(|d| count(d.bytes_left)),
                    shards_stuck: count(n.drain.map_or(0, |d| d.shards_stuck)),
                }
            })
            .collect(),
    });
    let (reason, message) = if draining.is_empty() {
        ("NoDrain", "no chunk server is draining".to_string())
    } else {
        ("Draining", lines.join("; "))
    };
    set_condition(
        &mut status.conditions,
        condition(
            DRAINING,
            !draining.is_empty(),
            reason,
            &message,
            generation,
            now,
        ),
    );

    let r = &view.rebalance;
    let running = r.state == RebalanceState::Running;
    let moved = format!(
        "{} moved ({} shards), about {} still planned",
        human_bytes(r.bytes_moved),
        r.shards_moved,
        human_bytes(r.bytes_planned)
    );
    status.rebalance = Some(RebalanceSummary {
        state: r.state.as_str().to_string(),
        summary: running.then(|| {
            format!(
                "{}/{}",
                human_bytes(r.bytes_moved),
                human_bytes(r.bytes_moved.saturating_add(r.bytes_planned))
            )
        }),
        shards_moved: count(r.shards_moved),
        bytes_moved: count(r.bytes_moved),
        bytes_planned: count(r.bytes_planned),
    });
    let message = match r.state {
        RebalanceState::Running => moved,
        RebalanceState::Idle => "no rebalance has run".to_string(),
        _ => format!(
            "last rebalance {}: {moved}",
            r.state.as_str().to_lowercase()
        ),
    };
    set_condition(
        &mut status.conditions,
        condition(
            REBALANCING,
            running,
            r.state.as_str(),
            &message,
            generation,
            now,
        ),
    );

    let h = &view.health;
    status.usage = Some(UsageStatus {
        capacity_bytes: count(h.capacity_bytes),
        used_bytes: count(h.used_bytes),
        available_bytes: count(h.available_bytes),
    });
    status.repair = Some(RepairSummary {
        backlog_segments: count(h.backlog_segments),
        unreadable_segments: count(h.unreadable_segments),
        waiting_segments: count(h.waiting_segments),
    });
}

/// Status for a spec that failed validation: nothing was applied, the rest is carried over.
pub fn invalid(cluster: &DogCluster, error: &InvalidSpec, now: &Time) -> DogClusterStatus {
    let mut status = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let message = error.to_string();
    set_condition(
        &mut status.conditions,
        condition(READY, false, "InvalidSpec", &message, generation, now),
    );
    set_condition(
        &mut status.conditions,
        condition(
            PROGRESSING,
            false,
            "InvalidSpec",
            "waiting for a valid spec",
            generation,
            now,
        ),
    );
    status.observed_generation = generation;
    status.phase = Some(Phase::Invalid);
    status
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Replaces the condition of the same type, keeping its transition time when the status did
/// not flip (the Kubernetes API conventions).
fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DogClusterSpec;
    use k8s_openapi::jiff::Timestamp;

    fn cluster() -> DogCluster {
        let spec: DogClusterSpec =
            serde_json::from_value(serde_json::json!({"image": "dogfs:dev"})).unwrap();
        let mut c = DogCluster::new("demo", spec);
        c.metadata.generation = Some(2);
        c
    }

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn workload(desired: i32, ready: i32) -> Workload {
        Workload {
            desired,
            current: desired,
            ready,
            rolled_out: true,
        }
    }

    fn get<'a>(s: &'a DogClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn creating_then_running_then_degraded() {
        let mut c = cluster();
        let starting = Observed {
            meta: workload(3, 1),
            chunk: workload(6, 0),
            ..Observed::default()
        };
        let s = compute(&c, &starting, &time(10));
        assert_eq!(s.phase, Some(Phase::Creating));
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, PROGRESSING).status, "True");
        assert_eq!(get(&s, DEGRADED).status, "False");
        assert_eq!(s.meta.as_ref().unwrap().ready, "1/3");
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.erasure.as_deref(), Some("4+2"));

        c.status = Some(s);
        let up = Observed {
            meta: workload(3, 3),
            chunk: workload(6, 6),
            ..Observed::default()
        };
        let s = compute(&c, &up, &time(20));
        assert_eq!(s.phase, Some(Phase::Running));
        let ready = get(&s, READY);
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", time(20))
        );
        // Degraded did not flip, so its transition time stays.
        assert_eq!(get(&s, DEGRADED).last_transition_time, time(10));

        c.status = Some(s);
        let down = Observed {
            meta: workload(3, 3),
            chunk: workload(6, 5),
            ..Observed::default()
        };
        let s = compute(&c, &down, &time(30));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(get(&s, DEGRADED).status, "True");
        assert_eq!(
            get(&s, DEGRADED).message,
            "3/3 metadata nodes and 5/6 chunk servers ready"
        );
    }

    #[test]
    fn an_enabled_gateway_counts_toward_ready_and_degraded() {
        let mut c = cluster();
        let with_gateway = |ready| Observed {
            meta: workload(3, 3),
            chunk: workload(6, 6),
            s3: Some(workload(2, ready)),
            ..Observed::default()
        };
        let s = compute(&c, &with_gateway(2), &time(1));
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.s3.as_ref().unwrap().ready, "2/2");
        c.status = Some(s);
        let s = compute(&c, &with_gateway(1), &time(2));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(get(&s, DEGRADED).reason, "PodsNotReady");
        assert_eq!(
            get(&s, READY).message,
            "3/3 metadata nodes, 6/6 chunk servers and 1/2 S3 gateways ready"
        );
        // Disabled: no S3 field, and the message is the servers' alone.
        let s = compute(
            &c,
            &Observed {
                s3: None,
                ..with_gateway(0)
            },
            &time(3),
        );
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.s3, None);
    }

    #[test]
    fn a_deployment_is_rolled_out_once_only_new_pods_are_left() {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
        let deployment = |observed, replicas, updated, ready| Deployment {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
        };
        let w = Workload::of_deployment(&deployment(2, 2, 2, 2));
        assert_eq!(
            (w.desired, w.current, w.ready, w.rolled_out),
            (2, 2, 2, true)
        );
        // An old pod still running beside the two new ones (surge).
        assert!(!Workload::of_deployment(&deployment(2, 3, 2, 3)).rolled_out);
        // The controller has not seen the new spec yet.
        assert!(!Workload::of_deployment(&deployment(1, 2, 2, 2)).rolled_out);
        // Just created: no status at all.
        let fresh = Deployment {
            status: None,
            ..deployment(0, 0, 0, 0)
        };
        assert_eq!(Workload::of_deployment(&fresh).desired, 2);
    }

    #[test]
    fn scaling_and_updating() {
        let mut c = cluster();
        c.spec.chunk.replicas = 8;
        let s = compute(
            &c,
            &Observed {
                meta: workload(3, 3),
                chunk: workload(6, 6),
                ..Observed::default()
            },
            &time(1),
        );
        assert_eq!(s.phase, Some(Phase::Scaling));
        assert_eq!(s.chunk.as_ref().unwrap().ready, "6/8");
        // The new pods exist but are not ready yet: still scaling, not degraded.
        c.status = Some(s);
        let adding = Observed {
            meta: workload(3, 3),
            chunk: workload(8, 6),
            ..Observed::default()
        };
        let s = compute(&c, &adding, &time(2));
        assert_eq!(s.phase, Some(Phase::Scaling));
        c.status = Some(s);
        let done = Observed {
            meta: workload(3, 3),
            chunk: workload(8, 8),
            ..Observed::default()
        };
        assert_eq!(compute(&c, &done, &time(3)).phase, Some(Phase::Running));

        c.spec.chunk.replicas = 6;
        c.status = Some(DogClusterStatus {
            phase: Some(Phase::Running),
            ..Default::default()
        });
        let rolling = Workload {
            rolled_out: false,
            ..workload(6, 5)
        };
        let s = compute(
            &c,
            &Observed {
                meta: workload(3, 3),
                chunk: rolling,
                ..Observed::default()
            },
            &time(1),
        );
        assert_eq!(s.phase, Some(Phase::Updating));
        assert_eq!(get(&s, PROGRESSING).reason, "Updating");
    }

    #[test]
    fn invalid_keeps_counts_and_names_the_field() {
        let mut c = cluster();
        let up = Observed {
            meta: workload(3, 3),
            chunk: workload(6, 6),
            ..Observed::default()
        };
        c.status = Some(compute(&c, &up, &time(1)));
        let err = InvalidSpec(vec![crate::validate::FieldError {
            field: "spec.chunk.replicas".into(),
            message: "5 is less than erasure.k + erasure.m = 6".into(),
        }]);
        let s = invalid(&c, &err, &time(2));
        assert_eq!(s.phase, Some(Phase::Invalid));
        let ready = get(&s, READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "InvalidSpec");
        assert!(ready.message.contains("spec.chunk.replicas"));
        assert_eq!(s.chunk.as_ref().unwrap().ready, "6/6");
    }

    fn view() -> View {
        use crate::admin::{Drain, Health, Node, Rebalance};
        let node = |o: i32, state| Node {
            id: format!("n{o}"),
            address: format!("demo-chunk-{o}.demo-chunk-headless.default.svc.cluster.local:7100"),
            state,
            registered_unix: 1,
            drain: None,
            capacity_bytes: 0,
            used_bytes: 0,
        };
        let mut nodes: Vec<Node> = (0..7).map(|o| node(o, NodeState::Up)).collect();
        let mut seven = node(7, NodeState::Draining);
        seven.drain = Some(Drain {
            shards_left: 120,
            bytes_left: 3 << 30,
            shards_stuck: 2,
            surveyed: true,
            ..Drain::default()
        });
        nodes.push(seven);
        View {
            nodes,
            rebalance: Rebalance {
                state: RebalanceState::Running,
                reason: "server joined".into(),
                shards_moved: 10,
                bytes_moved: 1 << 30,
                bytes_planned: 2 << 30,
            },
            health: Health {
                backlog_segments: 4,
                unreadable_segments: 1,
                waiting_segments: 3,
                capacity_bytes: 800,
                used_bytes: 200,
                available_bytes: 600,
            },
        }
    }

    fn seen(view: Option<View>, error: Option<(&str, &str)>) -> Observed {
        Observed {
            meta: workload(3, 3),
            chunk: workload(8, 8),
            admin: Some(AdminObserved {
                view,
                error: error.map(|(r, m)| (r.to_string(), m.to_string())),
            }),
            ..Observed::default()
        }
    }

    #[test]
    fn admin_view_fills_draining_rebalancing_degraded_and_usage() {
        let mut c = cluster();
        c.metadata.namespace = Some("default".into());
        c.spec.chunk.replicas = 8;
        let s = compute(&c, &seen(Some(view()), None), &time(5));
        let drain = get(&s, DRAINING);
        assert_eq!(
            (drain.status.as_str(), drain.reason.as_str()),
            ("True", "Draining")
        );
        assert_eq!(
            drain.message,
            "demo-chunk-7: 120 shards, 3.0 GiB left (2 stuck)"
        );
        let d = s.drain.as_ref().unwrap();
        assert_eq!(d.summary, drain.message);
        assert_eq!(d.nodes[0].pod.as_deref(), Some("demo-chunk-7"));
        assert_eq!(d.nodes[0].shards_stuck, 2);
        let r = get(&s, REBALANCING);
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("True", "Running"));
        assert_eq!(
            r.message,
            "1.0 GiB moved (10 shards), about 2.0 GiB still planned"
        );
        assert_eq!(
            s.rebalance.as_ref().unwrap().summary.as_deref(),
            Some("1.0 GiB/3.0 GiB")
        );
        // One unreadable segment outranks everything else.
        let degraded = get(&s, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "UnreadableSegments")
        );
        assert!(
            degraded
                .message
                .contains("1 segments unreadable, 4 waiting for repair, 3 more")
        );
        assert_eq!(s.usage.as_ref().unwrap().available_bytes, 600);
        assert_eq!(s.repair.as_ref().unwrap().backlog_segments, 4);
        assert_eq!(get(&s, ADMIN_REACHABLE).status, "True");
    }

    #[test]
    fn an_unreachable_admin_api_keeps_the_last_known_figures_and_says_why() {
        let mut c = cluster();
        c.metadata.namespace = Some("default".into());
        c.spec.chunk.replicas = 8;
        c.status = Some(compute(&c, &seen(Some(view()), None), &time(5)));
        let s = compute(
            &c,
            &seen(
                None,
                Some(("NoLeader", "ListNodes: no metadata leader: election")),
            ),
            &time(9),
        );
        let admin = get(&s, ADMIN_REACHABLE);
        assert_eq!(
            (
                admin.status.as_str(),
                admin.reason.as_str(),
                admin.message.as_str()
            ),
            (
                "False",
                "NoLeader",
                "ListNodes: no metadata leader: election"
            )
        );
        assert_eq!(admin.last_transition_time, time(9));
        // Last known: still draining, as last seen.
        assert_eq!(get(&s, DRAINING).status, "True");
        assert_eq!(get(&s, DRAINING).last_transition_time, time(5));
        assert_eq!(s.drain, c.status.as_ref().unwrap().drain);
    }

    #[test]
    fn a_refused_scale_down_is_progressing_false_with_the_reason() {
        let mut c = cluster();
        c.spec.chunk.replicas = 6;
        let observed = Observed {
            meta: workload(3, 3),
            chunk: workload(8, 8),
            scaling: Scaling {
                progress: Some((SCALE_DOWN_REFUSED.into(), "too few servers".into())),
                refused: true,
                memory: ScalingStatus::default(),
            },
            ..Observed::default()
        };
        let s = compute(&c, &observed, &time(1));
        assert_eq!(s.phase, Some(Phase::Scaling));
        let p = get(&s, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            ("False", SCALE_DOWN_REFUSED, "too few servers")
        );
        assert_eq!(s.scaling, None);
    }
}
