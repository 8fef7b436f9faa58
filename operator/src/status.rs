//! Observation and status: what the cluster looks like, turned into `DogClusterStatus`.
//!
//! [`Observed`] holds everything the operator reads back from the cluster. Today that is the
//! StatefulSets' status (returned by the apply calls, so observing costs no extra request);
//! the metadata service's admin API (nodes draining, shards left, capacity and usage) adds a
//! field here once it exists, and [`compute`] then fills the matching status fields.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{DogCluster, DogClusterStatus, Phase, ReplicaStatus};
use crate::validate::{InvalidSpec, erasure_label};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

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

/// Everything observed about a cluster after applying its objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub meta: Workload,
    pub chunk: Workload,
}

/// The phase and conditions for a valid spec, given what was observed.
pub fn compute(cluster: &DogCluster, observed: &Observed, now: &Time) -> DogClusterStatus {
    let spec = &cluster.spec;
    let previous = cluster.status.clone().unwrap_or_default();
    let chunk_target = spec.chunk.replicas.max(spec.erasure.k + spec.erasure.m);
    let (meta, chunk) = (&observed.meta, &observed.chunk);

    let rolled_out = meta.rolled_out && chunk.rolled_out;
    let all_ready = meta.all_ready() && chunk.all_ready();
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
        || (previous.phase == Some(Phase::Scaling) && !chunk.all_ready());
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

    let counts = format!(
        "{}/{} metadata nodes and {}/{} chunk servers ready",
        meta.ready, meta.desired, chunk.ready, chunk_target
    );
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
    set_condition(
        &mut conditions,
        condition(
            PROGRESSING,
            progressing,
            reason,
            &progressing_message,
            generation,
            now,
        ),
    );
    let degraded = phase == Phase::Degraded;
    let reason = if degraded {
        "PodsNotReady"
    } else {
        "AsExpected"
    };
    set_condition(
        &mut conditions,
        condition(DEGRADED, degraded, reason, &counts, generation, now),
    );

    DogClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        meta: Some(meta.replica_status(spec.meta.replicas)),
        chunk: Some(chunk.replica_status(chunk_target)),
        erasure: Some(erasure_label(spec.erasure.k, spec.erasure.m)),
    }
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
    fn scaling_and_updating() {
        let mut c = cluster();
        c.spec.chunk.replicas = 8;
        let s = compute(
            &c,
            &Observed {
                meta: workload(3, 3),
                chunk: workload(6, 6),
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
        };
        let s = compute(&c, &adding, &time(2));
        assert_eq!(s.phase, Some(Phase::Scaling));
        c.status = Some(s);
        let done = Observed {
            meta: workload(3, 3),
            chunk: workload(8, 8),
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
}
