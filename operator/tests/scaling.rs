//! Chunk scaling flows, reconcile after reconcile, against a mocked Kubernetes API server
//! (tests/common/world.rs) whose admin calls go to a recorded fake of the admin API with the
//! same semantics (tests/common/fake_admin.rs). Each test asserts the exact sequence of what
//! the operator did (admin calls, replicas, claims, Events), the conditions along the way, and
//! that no segment was ever short of a shard.

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::fake_admin::FakeAdmin;
use common::world::{CA, NS, Round, World};
use dogfs_operator::admin::Failure;
use dogfs_operator::build::Names;
use dogfs_operator::crd::{DogCluster, Phase, RetentionPolicy};
use dogfs_operator::status::{Observed, Workload, compute};
use kube::runtime::controller::Action;

fn fixed_clock() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    )
}

/// `examples/dogcluster.yaml` (RS 4+2), running with `running` chunk servers, all ready.
fn cluster(running: i32, target: i32, retention: RetentionPolicy) -> DogCluster {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dogcluster.yaml");
    let mut cluster: DogCluster =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cluster.metadata.namespace = Some(NS.to_string());
    cluster.metadata.uid = Some("5d3c8f1e-0000-4000-8000-000000000001".to_string());
    cluster.metadata.generation = Some(1);
    common::without_tls_and_auth(&mut cluster);
    cluster.spec.chunk.replicas = running;
    let ready = |n| Workload {
        desired: n,
        current: n,
        ready: n,
        rolled_out: true,
    };
    let observed = Observed {
        meta: ready(3),
        chunk: ready(running),
        ..Observed::default()
    };
    let status = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(status.phase, Some(Phase::Running));
    cluster.status = Some(status);
    cluster.metadata.generation = Some(2);
    cluster.spec.chunk.replicas = target;
    cluster.spec.pvc_retention.when_scaled = retention;
    cluster
}

fn names() -> Names {
    Names {
        cluster: "demo".into(),
        namespace: NS.into(),
    }
}

/// A world of `servers` running chunk servers holding 12 segments of RS 4+2.
fn world(servers: i32, target: i32, retention: RetentionPolicy) -> World {
    let admin = FakeAdmin::new(names(), 4, 2, servers, 12);
    World::running(cluster(servers, target, retention), admin, servers)
}

/// Rounds until the operator has nothing left to do (a resync requeue and nothing done),
/// checking after every round that no segment lost a shard. Returns every round.
async fn run_to_steady(world: &mut World, max_rounds: usize) -> Vec<Round> {
    let mut rounds = Vec::new();
    for _ in 0..max_rounds {
        let round = world.round().await;
        assert_eq!(
            world.admin.losses(),
            Vec::<String>::new(),
            "after {:?}",
            round.log
        );
        assert_eq!(world.admin.min_available(), 6);
        let steady = round.action == Action::requeue(Duration::from_secs(300))
            && round.log.iter().all(|l| l == "list pods");
        rounds.push(round);
        if steady {
            return rounds;
        }
    }
    panic!(
        "not steady after {max_rounds} rounds: {:#?}",
        transcript(&rounds)
    );
}

/// One line per round: what was done (`list pods` left out, it happens every round).
fn transcript(rounds: &[Round]) -> Vec<String> {
    rounds
        .iter()
        .map(|r| {
            let done: Vec<&str> = r
                .log
                .iter()
                .map(String::as_str)
                .filter(|l| *l != "list pods")
                .collect();
            if done.is_empty() {
                "-".to_string()
            } else {
                done.join(" | ")
            }
        })
        .collect()
}

fn progressing(round: &Round) -> String {
    let (status, reason, message) = round.condition("Progressing");
    format!("{status} {reason}: {message}")
}

#[tokio::test]
async fn scale_down_8_to_6_drains_waits_shrinks_removes_and_deletes_claims_one_at_a_time() {
    let mut world = world(8, 6, RetentionPolicy::Delete);
    world.slow_pod_stop = true;
    let (n6, n7) = (world.admin.id_of(6).unwrap(), world.admin.id_of(7).unwrap());
    assert_eq!(world.admin.shards_per_ordinal()[&7], 8);

    let rounds = run_to_steady(&mut world, 30).await;
    let t = transcript(&rounds);
    let drain = |o: i32, n: &str, from: i32| {
        format!(
            "DrainNode {n} | event Normal DrainStarted: draining demo-chunk-{o} (node {n}) to \
             scale chunk servers {from} -> 6"
        )
    };
    let shrink = |o: i32, n: &str| {
        format!(
            "chunk replicas {o} | event Normal Drained: demo-chunk-{o} (node {n}) is empty | \
             event Normal ReplicasLowered: chunk StatefulSet {} -> {o} replicas (target 6); \
             demo-chunk-{o} stops",
            o + 1
        )
    };
    let remove = |o: i32, n: &str| {
        format!(
            "RemoveNode {n} | event Normal NodeRemoved: node {n} (demo-chunk-{o}) removed from \
             the registry"
        )
    };
    let delete = |o: i32| {
        format!(
            "DELETE pvc data-demo-chunk-{o} | event Normal ClaimDeleted: deleted \
             PersistentVolumeClaim data-demo-chunk-{o} (pvcRetention.whenScaled: Delete)"
        )
    };
    let wait = || "-".to_string();
    assert_eq!(
        t,
        [
            drain(7, &n7, 8)
                + " | event Normal Scaling: 3/3 metadata nodes and 8/6 chunk servers ready",
            wait(), // 4 shards left
            shrink(7, &n7),
            // The pod terminates: the server is not removed while it could still re-register.
            wait(),
            remove(7, &n7),
            delete(7),
            drain(6, &n6, 7),
            wait(), // it got some of demo-chunk-7's shards: more to move
            wait(),
            shrink(6, &n6),
            wait(),
            remove(6, &n6),
            delete(6),
            "event Normal Running: 3/3 metadata nodes and 6/6 chunk servers ready".to_string(),
            wait(),
        ],
        "{t:#?}"
    );

    // The conditions along the way.
    let p: Vec<String> = rounds.iter().map(progressing).collect();
    assert_eq!(
        p[0],
        format!("True Draining: draining demo-chunk-7 (node {n7}) to scale 8 -> 6")
    );
    assert_eq!(
        p[1],
        format!(
            "True Draining: draining demo-chunk-7 (node {n7}): 4 shards, 4.0 MiB left; \
             scaling 8 -> 6"
        )
    );
    assert_eq!(
        p[2],
        "True ScalingDown: demo-chunk-7 is empty: replicas lowered to 7 (target 6)"
    );
    assert_eq!(
        p[3],
        format!("True ScalingDown: waiting for pod demo-chunk-7 to stop before removing node {n7}")
    );
    assert_eq!(
        p[4],
        format!("True ScalingDown: removing node {n7} (demo-chunk-7) from the registry")
    );
    assert_eq!(p[5], "True ScalingDown: deleting claim data-demo-chunk-7");
    assert_eq!(p[14], "False Reconciled: nothing in progress");
    // Draining shows from the round that started it, before the first survey.
    assert_eq!(
        rounds[0].condition("Draining"),
        (
            "True".into(),
            "Draining".into(),
            "demo-chunk-7: not surveyed yet".into()
        )
    );

    // Draining: the node and what is left, also in the printer column's field.
    let (status, reason, message) = rounds[1].condition("Draining");
    assert_eq!(
        (status.as_str(), reason.as_str(), message.as_str()),
        ("True", "Draining", "demo-chunk-7: 4 shards, 4.0 MiB left")
    );
    let drain = rounds[1].status.drain.clone().unwrap();
    assert_eq!(drain.summary, "demo-chunk-7: 4 shards, 4.0 MiB left");
    assert_eq!(drain.nodes[0].node_id, n7);
    assert_eq!(drain.nodes[0].pod.as_deref(), Some("demo-chunk-7"));
    assert_eq!(drain.nodes[0].shards_left, Some(4));
    assert_eq!(drain.nodes[0].bytes_left, Some(4 << 20));
    assert_eq!(rounds[1].status.phase, Some(Phase::Scaling));
    assert_eq!(rounds[1].condition("Ready").0, "False");
    // The operator remembers whose drain it is until the node is removed.
    assert_eq!(
        rounds[3].status.scaling.as_ref().unwrap().draining_node,
        Some(n7.clone())
    );
    assert_eq!(rounds[4].status.scaling, None);

    // Requeues: soon after acting, a poll while waiting, a resync when done.
    assert_eq!(rounds[0].action, Action::requeue(Duration::from_secs(2)));
    assert_eq!(rounds[1].action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(
        rounds.last().unwrap().action,
        Action::requeue(Duration::from_secs(300))
    );

    let last = rounds.last().unwrap();
    assert_eq!(last.status.phase, Some(Phase::Running));
    assert_eq!(last.condition("Draining").0, "False");
    assert_eq!(last.condition("Degraded").1, "AsExpected");
    assert_eq!(last.status.drain, None);
    assert_eq!(world.chunk_replicas(), Some(6));
    assert_eq!(world.claims(), (0..6).collect());
    // Every shard is now on the six servers left.
    assert_eq!(world.admin.shards_per_ordinal().values().sum::<usize>(), 72);
    assert_eq!(world.admin.shards_per_ordinal().len(), 6);
}

#[tokio::test]
async fn with_tls_every_admin_connection_trusts_the_secret_ca_and_scaling_is_unchanged() {
    // Without spec.tls: plaintext, no CA at any connect.
    let mut plain = world(8, 6, RetentionPolicy::Retain);
    let plain_rounds = run_to_steady(&mut plain, 30).await;
    let connections = plain.admin.connections();
    assert_eq!(connections.len(), plain_rounds.len(), "one connect a round");
    assert!(connections.iter().all(Option::is_none), "{connections:?}");

    // With it: the same steps, every connect handed the TLS Secret's ca.crt.
    let mut secure = world(8, 6, RetentionPolicy::Retain);
    secure.cluster.spec.tls = common::tls_secret("demo-tls");
    let rounds = run_to_steady(&mut secure, 30).await;
    assert_eq!(transcript(&rounds), transcript(&plain_rounds));
    let connections = secure.admin.connections();
    assert_eq!(connections.len(), rounds.len(), "one connect a round");
    assert!(
        connections.iter().all(|ca| ca.as_deref() == Some(CA)),
        "{connections:?}"
    );
    assert_eq!(secure.chunk_replicas(), Some(6));
}

#[tokio::test]
async fn scale_up_6_to_8_grows_waits_for_registration_then_rebalances() {
    let mut world = world(6, 8, RetentionPolicy::Retain);
    let rounds = run_to_steady(&mut world, 30).await;
    let t = transcript(&rounds);
    assert_eq!(
        t[..3],
        [
            "chunk replicas 8 | event Normal ReplicasRaised: chunk StatefulSet 6 -> 8 replicas \
             | event Normal Scaling: 3/3 metadata nodes and 6/8 chunk servers ready"
                .to_string(),
            // The new pods start; they register at the next look.
            "-".to_string(),
            "Rebalance START | event Normal RebalanceStarted: new chunk servers registered; \
             started a rebalance"
                .to_string(),
        ],
        "{t:#?}"
    );
    assert_eq!(
        progressing(&rounds[1]),
        "True WaitingForRegistration: waiting for demo-chunk-6, demo-chunk-7 to register \
         with the metadata service"
    );
    assert_eq!(
        rounds[1].status.scaling.as_ref().unwrap().new_servers_from,
        Some(6)
    );
    // While it runs: Rebalancing with bytes moved and planned, the printer column too.
    let (status, reason, message) = rounds[3].condition("Rebalancing");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Running"));
    assert_eq!(
        message,
        "4.0 MiB moved (4 shards), about 1.0 MiB still planned"
    );
    let summary = rounds[3].status.rebalance.clone().unwrap();
    assert_eq!(summary.summary.as_deref(), Some("4.0 MiB/5.0 MiB"));
    // Polled while it runs, then done and steady.
    assert_eq!(rounds[3].action, Action::requeue(Duration::from_secs(10)));
    let last = rounds.last().unwrap();
    assert_eq!(last.condition("Rebalancing").0, "False");
    assert_eq!(last.condition("Rebalancing").1, "Done");
    assert_eq!(last.status.rebalance.as_ref().unwrap().summary, None);
    assert_eq!(last.status.phase, Some(Phase::Running));
    assert_eq!(last.status.scaling, None);
    assert!(t[3..].iter().all(|l| !l.contains("START")), "{t:#?}");
    // The new servers took their share.
    let shards = world.admin.shards_per_ordinal();
    assert_eq!(shards.len(), 8);
    assert!(shards.values().all(|n| (8..=10).contains(n)), "{shards:?}");
}

#[tokio::test]
async fn raising_replicas_mid_drain_cancels_the_drain_and_keeps_the_server() {
    let mut world = world(8, 6, RetentionPolicy::Delete);
    let n7 = world.admin.id_of(7).unwrap();
    let first = world.round().await;
    assert!(first.log[0].starts_with("DrainNode"));
    let waiting = world.round().await;
    assert_eq!(waiting.condition("Draining").0, "True");

    world.cluster.spec.chunk.replicas = 8;
    world.cluster.metadata.generation = Some(3);
    let rounds = run_to_steady(&mut world, 10).await;
    let t = transcript(&rounds);
    assert_eq!(
        t[0],
        format!(
            "UndrainNode {n7} | event Normal DrainCancelled: chunk.replicas raised to 8: \
             cancelled the drain of demo-chunk-7 (node {n7}); the server stays"
        ),
        "{t:#?}"
    );
    assert!(
        world
            .admin
            .calls()
            .iter()
            .all(|c| !c.starts_with("RemoveNode")),
        "{:?}",
        world.admin.calls()
    );
    let last = rounds.last().unwrap();
    assert_eq!(last.condition("Draining").0, "False");
    assert_eq!(last.status.scaling, None);
    assert_eq!(world.chunk_replicas(), Some(8));
    assert_eq!(world.admin.id_of(7), Some(n7));
    assert_eq!(world.claims(), (0..8).collect());
}

#[tokio::test]
async fn scale_down_is_refused_when_too_few_servers_could_take_the_shards() {
    let mut world = world(8, 6, RetentionPolicy::Retain);
    // Two servers down: draining demo-chunk-7 would leave 5 up ones for 4+2 segments.
    world.admin.stop_pod(2);
    world.admin.stop_pod(3);
    let first = world.round().await;
    let message = "draining demo-chunk-7 would leave 5 chunk servers up to take its shards, \
                   fewer than erasure.k + erasure.m = 6; waiting for servers to come back";
    assert_eq!(
        transcript(std::slice::from_ref(&first))[0],
        format!(
            "event Warning ScaleDownRefused: {message} | event Normal Scaling: 3/3 metadata \
             nodes and 8/6 chunk servers ready"
        )
    );
    assert_eq!(
        first.condition("Progressing"),
        ("False".into(), "ScaleDownRefused".into(), message.into())
    );
    // The repair backlog shows in Degraded.
    let (status, reason, message_d) = first.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "RepairBacklog")
    );
    assert!(
        message_d.contains("0 segments unreadable, 11 waiting for repair"),
        "{message_d}"
    );
    assert_eq!(first.action, Action::requeue(Duration::from_secs(10)));
    // Once per refusal, not every poll; replicas unchanged throughout.
    let second = world.round().await;
    assert_eq!(transcript(&[second])[0], "-");
    assert_eq!(world.chunk_replicas(), Some(8));
    assert!(world.admin.calls().is_empty(), "{:?}", world.admin.calls());
}

#[tokio::test]
async fn admin_errors_never_shrink_and_back_off_until_it_answers() {
    let mut world = world(8, 6, RetentionPolicy::Retain);
    world.admin.set_moves_per_poll(100);
    let drain = world.round().await;
    assert!(drain.log[0].starts_with("DrainNode"));

    // Demo-chunk-7 is empty now, but the metadata service stops answering before the
    // operator sees it: nothing may shrink.
    world.admin.set_failing(Some(Failure::Unreachable(
        "tcp connect error: Connection refused".into(),
    )));
    let r = world.round().await;
    assert_eq!(world.chunk_replicas(), Some(8));
    assert_eq!(
        transcript(std::slice::from_ref(&r))[0],
        "event Warning AdminUnavailable: ListNodes: metadata service unreachable: tcp connect \
         error: Connection refused (Unreachable); nothing is shrunk until it answers"
    );
    assert_eq!(
        r.condition("AdminReachable"),
        (
            "False".into(),
            "Unreachable".into(),
            "ListNodes: metadata service unreachable: tcp connect error: Connection refused".into()
        )
    );
    // The last known drain stays in the status, flagged by AdminReachable.
    assert_eq!(r.condition("Draining").0, "True");
    assert_eq!(
        r.condition("Progressing"),
        (
            "True".into(),
            "WaitingForAdminApi".into(),
            "scaling 8 -> 6 waits for the metadata service's admin API".into()
        )
    );
    assert_eq!(r.action, Action::requeue(Duration::from_secs(5)));

    world.admin.set_failing(Some(Failure::NoLeader(
        "group 0: this node is not the leader (leader: unknown, election in progress)".into(),
    )));
    let r = world.round().await;
    assert_eq!(world.chunk_replicas(), Some(8));
    assert_eq!(r.condition("AdminReachable").1, "NoLeader");
    // Backoff doubles; the Warning is not repeated while it stays unavailable.
    assert_eq!(r.action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(transcript(&[r])[0], "-");

    world.admin.set_failing(None);
    let r = world.round().await;
    assert_eq!(r.condition("AdminReachable").0, "True");
    assert_eq!(world.chunk_replicas(), Some(7));
    assert!(
        r.log.iter().any(|l| l.contains("ReplicasLowered")),
        "{:?}",
        r.log
    );
}

#[tokio::test]
async fn a_failed_drain_call_is_reported_and_retried_without_shrinking() {
    let mut world = world(8, 7, RetentionPolicy::Retain);
    world
        .admin
        .set_failing(Some(Failure::Timeout(Duration::from_secs(10))));
    let r = world.round().await;
    assert_eq!(r.condition("AdminReachable").1, "Timeout");
    assert_eq!(world.chunk_replicas(), Some(8));
    // The operator's record of the drain is not kept: it did not start.
    assert_eq!(r.status.scaling, None);
    world.admin.set_failing(None);
    let rounds = run_to_steady(&mut world, 20).await;
    assert_eq!(world.chunk_replicas(), Some(7));
    assert_eq!(rounds.last().unwrap().condition("AdminReachable").0, "True");
}

#[tokio::test]
async fn retained_claim_comes_back_as_a_new_server_on_the_next_scale_up() {
    let mut world = world(7, 6, RetentionPolicy::Retain);
    let old = world.admin.id_of(6).unwrap();
    let rounds = run_to_steady(&mut world, 20).await;
    let t = transcript(&rounds);
    let removed = t.iter().find(|l| l.starts_with("RemoveNode")).unwrap();
    assert_eq!(
        removed,
        &format!(
            "RemoveNode {old} | event Normal NodeRemoved: node {old} (demo-chunk-6) removed \
             from the registry | event Normal ClaimKept: kept PersistentVolumeClaim \
             data-demo-chunk-6 (pvcRetention.whenScaled: Retain)"
        )
    );
    assert_eq!(world.claims(), (0..7).collect(), "claim kept");

    world.cluster.spec.chunk.replicas = 7;
    world.cluster.metadata.generation = Some(3);
    let rounds = run_to_steady(&mut world, 20).await;
    let t = transcript(&rounds);
    assert!(t.iter().any(|l| l.starts_with("Rebalance START")), "{t:#?}");
    // The removed id is not reused: the pod on the old claim is a new server.
    let new = world.admin.id_of(6).unwrap();
    assert_ne!(new, old);
    assert!(world.admin.shards_per_ordinal()[&6] > 0);
}

#[tokio::test]
async fn the_fake_sees_a_server_with_shards_stop_so_the_checks_above_mean_something() {
    // What the old blind scale-down did: the StatefulSet shrinks past a server that still
    // holds shards. The model must notice, or "no loss" in the flows proves nothing.
    let admin = FakeAdmin::new(names(), 4, 2, 8, 12);
    assert!(admin.losses().is_empty());
    admin.sync_pods(&(0..7).collect());
    assert_eq!(admin.min_available(), 5);
    assert!(
        admin.losses()[0].starts_with("pods synced: segment"),
        "{:?}",
        admin.losses()
    );
}

#[tokio::test]
async fn a_new_cluster_whose_metadata_does_not_answer_yet_waits_quietly() {
    let mut cluster = cluster(6, 6, RetentionPolicy::Retain);
    cluster.status = None;
    // Still coming up: no Running phase recorded yet.
    let starting = Workload {
        desired: 3,
        current: 3,
        ready: 0,
        rolled_out: false,
    };
    let observed = Observed {
        meta: starting.clone(),
        chunk: Workload {
            desired: 6,
            ..starting
        },
        ..Observed::default()
    };
    cluster.status = Some(compute(&cluster, &observed, &fixed_clock()));
    assert_eq!(
        cluster.status.as_ref().unwrap().phase,
        Some(Phase::Creating)
    );
    let admin = FakeAdmin::new(names(), 4, 2, 6, 12);
    admin.set_failing(Some(Failure::Unreachable("dns error".into())));
    let mut world = World::running(cluster, admin, 6);
    let r = world.round().await;
    assert_eq!(r.condition("AdminReachable").1, "Unreachable");
    assert!(
        r.log.iter().all(|l| !l.contains("AdminUnavailable")),
        "{:?}",
        r.log
    );
    assert_eq!(world.chunk_replicas(), Some(6));
    assert_eq!(r.action, Action::requeue(Duration::from_secs(5)));
}
