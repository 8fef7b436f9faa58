//! Reconcile against a mocked API server (tower-test, as kube-rs' controller-rs does): every
//! request the operator sends is checked for method, path and body, in order, and answered the
//! way the API server would.

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_admin::FakeAdmin;
use dogfs_operator::admin;
use dogfs_operator::build::{self, Inputs, Names};
use dogfs_operator::crd::{DogCluster, DogClusterStatus, Phase, ScalingStatus};
use dogfs_operator::metrics::Metrics;
use dogfs_operator::reconcile::{Context, error_policy, reconcile};
use dogfs_operator::status::{AdminObserved, Observed, Scaling, Workload, compute};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Respond = tower_test::mock::SendResponse<Response<Body>>;

const NS: &str = "default";
/// kube's query string for a forced server-side apply (its serializer starts with `&`).
const APPLY: &str = "?&force=true&fieldManager=dogfs-operator";

fn fixed_clock() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

/// The example users apply, as the API server would hand it to the operator.
fn example() -> DogCluster {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dogcluster.yaml");
    let mut cluster: DogCluster =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cluster.metadata.namespace = Some(NS.to_string());
    cluster.metadata.uid = Some("5d3c8f1e-0000-4000-8000-000000000001".to_string());
    cluster.metadata.generation = Some(1);
    common::without_tls_and_auth(&mut cluster);
    cluster
}

fn names() -> Names {
    Names {
        cluster: "demo".into(),
        namespace: NS.into(),
    }
}

/// A fake admin API of `servers` registered, running chunk servers.
fn fake(servers: i32) -> FakeAdmin {
    FakeAdmin::new(names(), 4, 2, servers, 12)
}

/// Starts `reconcile` on a client whose HTTP service is the returned handle; admin calls go
/// to a fake of 6 chunk servers.
fn start(cluster: DogCluster) -> (JoinHandle<Result<Action, String>>, Handle, Arc<Context>) {
    start_with(cluster, fake(6))
}

fn start_with(
    cluster: DogCluster,
    admin: FakeAdmin,
) -> (JoinHandle<Result<Action, String>>, Handle, Arc<Context>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let ctx = Context::with_admin(client, Metrics::new(), fixed_clock, Arc::new(admin));
    let task_ctx = ctx.clone();
    let task = tokio::spawn(async move {
        reconcile(Arc::new(cluster), task_ctx)
            .await
            .map_err(|e| e.to_string())
    });
    (task, handle, ctx)
}

/// Waits for the next request and checks its method and full URI; returns its JSON body.
async fn expect(handle: &mut Handle, method: Method, uri: &str) -> (Value, Respond) {
    let (request, respond) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {method} {uri}"))
        .unwrap_or_else(|| panic!("client gone while waiting for {method} {uri}"));
    assert_eq!(
        (request.method(), request.uri().to_string().as_str()),
        (&method, uri),
        "unexpected request"
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, respond)
}

/// The first request of every reconcile that gets past validation: the chunk StatefulSet is
/// read (a GET with no body) to plan the replica count.
async fn expect_chunk_lookup(handle: &mut Handle) -> Respond {
    let (body, respond) = expect(
        handle,
        Method::GET,
        &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/demo-chunk"),
    )
    .await;
    assert_eq!(body, Value::Null);
    respond
}

fn reply(respond: Respond, status: StatusCode, body: &Value) {
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()));
    respond.send_response(response.unwrap());
}

/// Once the chunk StatefulSet exists: the chunk pods are listed (metadata only, by label).
async fn expect_pod_list(handle: &mut Handle, pods: std::ops::Range<i32>) {
    let selector = "labelSelector=app.kubernetes.io%2Fcomponent%3Dchunk%2C\
                    app.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fname%3Ddogfs";
    let (body, respond) = expect(
        handle,
        Method::GET,
        &format!("/api/v1/namespaces/{NS}/pods?&{selector}"),
    )
    .await;
    assert_eq!(body, Value::Null);
    let items: Vec<Value> = pods
        .map(|o| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": format!("demo-chunk-{o}"), "namespace": NS}})
        })
        .collect();
    reply(
        respond,
        StatusCode::OK,
        &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                "metadata": {}, "items": items}),
    );
}

/// What the fake admin API shows a reconcile (a fresh fake of the same cluster).
async fn admin_view(servers: i32) -> admin::View {
    admin::observe(&fake(servers)).await.unwrap()
}

fn not_found(respond: Respond, name: &str) {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("statefulsets.apps \"{name}\" not found"),
        "reason": "NotFound", "code": 404,
    });
    reply(respond, StatusCode::NOT_FOUND, &status);
}

/// A server-side apply: the body must equal `expected`; the answer echoes it with `status`.
async fn expect_apply(handle: &mut Handle, path: &str, expected: &Value, status: Option<Value>) {
    let (body, respond) = expect(handle, Method::PATCH, &format!("{path}{APPLY}")).await;
    assert_eq!(&body, expected, "apply body of {path}");
    let mut answer = body;
    answer["metadata"]["generation"] = json!(1);
    if let Some(status) = status {
        answer["status"] = status;
    }
    reply(respond, StatusCode::OK, &answer);
}

fn sts_status(replicas: i32, ready: i32) -> Value {
    json!({
        "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
        "currentReplicas": replicas, "observedGeneration": 1,
        "currentRevision": "r1", "updateRevision": "r1",
    })
}

/// Every child apply, in order, with bodies exactly as the builders make them.
async fn expect_children(
    handle: &mut Handle,
    cluster: &DogCluster,
    chunk_replicas: i32,
    meta_status: Value,
    chunk_status: Value,
) {
    expect_children_with_ca(
        handle,
        cluster,
        chunk_replicas,
        None,
        meta_status,
        chunk_status,
    )
    .await;
}

async fn expect_children_with_ca(
    handle: &mut Handle,
    cluster: &DogCluster,
    chunk_replicas: i32,
    ca_bundle: Option<String>,
    meta_status: Value,
    chunk_status: Value,
) {
    expect_all_children(
        handle,
        cluster,
        chunk_replicas,
        ca_bundle,
        meta_status,
        chunk_status,
        s3_status(0, 0),
    )
    .await;
}

/// Every child apply, the gateway's Deployment answered with `s3_deployment_status` when S3
/// is on; with S3 off, the gateway lookup answered "not found".
async fn expect_all_children(
    handle: &mut Handle,
    cluster: &DogCluster,
    chunk_replicas: i32,
    ca_bundle: Option<String>,
    meta_status: Value,
    chunk_status: Value,
    s3_deployment_status: Value,
) {
    let d = build::build(
        cluster,
        &Inputs {
            chunk_replicas,
            ca_bundle,
        },
    )
    .unwrap();
    expect_server_children(handle, &d, meta_status, chunk_status).await;
    match &d.s3 {
        Some(s3) => expect_s3_applies(handle, s3, s3_deployment_status).await,
        // S3 off: the operator looks for a gateway of its own to remove; there is none.
        None => {
            let respond = expect_s3_lookup(handle).await;
            not_found(respond, "demo-s3");
        }
    }
}

/// The ConfigMaps, Services, StatefulSets and PDBs of the servers, in order.
async fn expect_server_children(
    handle: &mut Handle,
    d: &build::Desired,
    meta_status: Value,
    chunk_status: Value,
) {
    let core = format!("/api/v1/namespaces/{NS}");
    let apps = format!("/apis/apps/v1/namespaces/{NS}");
    let policy = format!("/apis/policy/v1/namespaces/{NS}");
    expect_apply(
        handle,
        &format!("{core}/configmaps/demo-config"),
        &v(&d.config),
        None,
    )
    .await;
    expect_apply(
        handle,
        &format!("{core}/configmaps/demo-client"),
        &v(&d.client_config),
        None,
    )
    .await;
    for (name, svc) in [
        ("demo-meta-headless", &d.meta_headless),
        ("demo-meta", &d.meta_service),
        ("demo-chunk-headless", &d.chunk_headless),
        ("demo-chunk", &d.chunk_service),
    ] {
        expect_apply(handle, &format!("{core}/services/{name}"), &v(svc), None).await;
    }
    expect_apply(
        handle,
        &format!("{apps}/statefulsets/demo-meta"),
        &v(&d.meta),
        Some(meta_status),
    )
    .await;
    expect_apply(
        handle,
        &format!("{apps}/statefulsets/demo-chunk"),
        &v(&d.chunk),
        Some(chunk_status),
    )
    .await;
    expect_apply(
        handle,
        &format!("{policy}/poddisruptionbudgets/demo-meta"),
        &v(&d.meta_pdb),
        None,
    )
    .await;
    expect_apply(
        handle,
        &format!("{policy}/poddisruptionbudgets/demo-chunk"),
        &v(&d.chunk_pdb),
        None,
    )
    .await;
    expect_network_policies(handle, d).await;
}

/// The NetworkPolicies `demo-meta` and `demo-chunk` (on by default).
async fn expect_network_policies(handle: &mut Handle, d: &build::Desired) {
    let networking = format!("/apis/networking.k8s.io/v1/namespaces/{NS}");
    assert_eq!(d.network_policies.len(), 2);
    for (name, policy) in ["demo-meta", "demo-chunk"].iter().zip(&d.network_policies) {
        expect_apply(
            handle,
            &format!("{networking}/networkpolicies/{name}"),
            &v(policy),
            None,
        )
        .await;
    }
}

/// The gateway's Service, Deployment (answered with `status`) and PDB, in that order.
async fn expect_s3_applies(handle: &mut Handle, s3: &build::S3Gateway, status: Value) {
    expect_apply(
        handle,
        &format!("/api/v1/namespaces/{NS}/services/demo-s3"),
        &v(&s3.service),
        None,
    )
    .await;
    expect_apply(
        handle,
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/demo-s3"),
        &v(&s3.deployment),
        Some(status),
    )
    .await;
    expect_apply(
        handle,
        &format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/demo-s3"),
        &v(&s3.pdb),
        None,
    )
    .await;
}

/// With S3 off: a metadata-only GET of the gateway Deployment.
async fn expect_s3_lookup(handle: &mut Handle) -> Respond {
    let (body, respond) = expect(
        handle,
        Method::GET,
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/demo-s3"),
    )
    .await;
    assert_eq!(body, Value::Null);
    respond
}

fn s3_status(replicas: i32, ready: i32) -> Value {
    json!({"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
           "availableReplicas": ready, "observedGeneration": 1})
}

fn v<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

/// An Event about the DogCluster `demo`; returns its body for further checks.
async fn expect_event(handle: &mut Handle, type_: &str, reason: &str) -> Value {
    let uri = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?");
    let (body, respond) = expect(handle, Method::POST, &uri).await;
    assert_eq!(body["type"], type_, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["reportingController"], "dogfs-operator");
    assert_eq!(body["regarding"]["kind"], "DogCluster");
    assert_eq!(body["regarding"]["name"], "demo");
    reply(respond, StatusCode::CREATED, &body);
    body
}

/// The status apply; the body must be exactly `expected`.
async fn expect_status(handle: &mut Handle, expected: &DogClusterStatus) {
    let uri = format!("/apis/dogfs.io/v1alpha1/namespaces/{NS}/dogclusters/demo/status{APPLY}");
    let (body, respond) = expect(handle, Method::PATCH, &uri).await;
    let want = json!({"apiVersion": "dogfs.io/v1alpha1", "kind": "DogCluster", "status": expected});
    assert_eq!(body, want);
    reply(
        respond,
        StatusCode::OK,
        &json!({"apiVersion": "dogfs.io/v1alpha1", "kind": "DogCluster",
        "metadata": {"name": "demo", "namespace": NS}, "spec": {"image": "x"}, "status": body["status"]}),
    );
}

/// The reconcile finished with `action` and sent nothing more.
async fn finish(
    task: JoinHandle<Result<Action, String>>,
    mut handle: Handle,
    ctx: Arc<Context>,
) -> Action {
    let action = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(ctx);
    let extra = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await;
    if let Ok(Some((request, _))) = extra {
        panic!(
            "unexpected extra request {} {}",
            request.method(),
            request.uri()
        );
    }
    action
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

#[tokio::test]
async fn create_applies_every_child_then_reports_creating() {
    let cluster = example();
    let (task, mut handle, ctx) = start(cluster.clone());

    let respond = expect_chunk_lookup(&mut handle).await;
    not_found(respond, "demo-chunk");

    // Brand new StatefulSets: no pods yet.
    expect_children(
        &mut handle,
        &cluster,
        6,
        json!({"replicas": 0}),
        json!({"replicas": 0}),
    )
    .await;

    let event = expect_event(&mut handle, "Normal", "Creating").await;
    assert_eq!(
        event["note"],
        "0/3 metadata nodes and 0/6 chunk servers ready"
    );
    let observed = Observed {
        meta: Workload {
            desired: 3,
            current: 0,
            ready: 0,
            rolled_out: false,
        },
        chunk: Workload {
            desired: 6,
            current: 0,
            ready: 0,
            rolled_out: false,
        },
        ..Observed::default()
    };
    let expected = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(expected.phase, Some(Phase::Creating));
    expect_status(&mut handle, &expected).await;
    let status = serde_json::to_value(&expected).unwrap();
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Progressing")["status"], "True");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["erasure"], "4+2");

    assert_eq!(
        finish(task, handle, ctx).await,
        Action::requeue(Duration::from_secs(300))
    );
}

/// A cluster that has been running with 6 chunk servers, all ready.
fn running(mut cluster: DogCluster) -> DogCluster {
    let observed = Observed {
        meta: Workload {
            desired: 3,
            current: 3,
            ready: 3,
            rolled_out: true,
        },
        chunk: Workload {
            desired: 6,
            current: 6,
            ready: 6,
            rolled_out: true,
        },
        ..Observed::default()
    };
    let status = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(status.phase, Some(Phase::Running));
    cluster.status = Some(status);
    cluster
}

fn chunk_sts(replicas: i32, ready: i32) -> Value {
    let sts = StatefulSet {
        metadata: kube::api::ObjectMeta {
            name: Some("demo-chunk".into()),
            namespace: Some(NS.into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::apps::v1::StatefulSetSpec {
            replicas: Some(replicas),
            ..Default::default()
        }),
        status: Some(StatefulSetStatus {
            replicas,
            ready_replicas: Some(ready),
            observed_generation: Some(1),
            ..Default::default()
        }),
    };
    serde_json::to_value(sts).unwrap()
}

#[tokio::test]
async fn update_scales_chunk_up_and_rolls_out_a_new_image() {
    let mut cluster = running(example());
    cluster.metadata.generation = Some(2);
    cluster.spec.chunk.replicas = 8;
    cluster.spec.image = "ghcr.io/dogfs/dogfs:0.2.0".to_string();
    let (task, mut handle, ctx) = start(cluster.clone());

    let respond = expect_chunk_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &chunk_sts(6, 6));
    expect_pod_list(&mut handle, 0..6).await;

    // The StatefulSets' status right after the apply: 8 wanted, 6 exist.
    expect_children(&mut handle, &cluster, 8, sts_status(3, 3), sts_status(6, 6)).await;

    // What went out, checked field by field as a user would read it.
    let d = build::build(
        &cluster,
        &Inputs {
            chunk_replicas: 8,
            ca_bundle: None,
        },
    )
    .unwrap();
    let chunk = serde_json::to_value(&d.chunk).unwrap();
    assert_eq!(chunk["spec"]["replicas"], 8);
    assert_eq!(
        chunk["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/dogfs/dogfs:0.2.0"
    );
    let meta = serde_json::to_value(&d.meta).unwrap();
    assert_eq!(
        meta["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/dogfs/dogfs:0.2.0"
    );
    assert_eq!(meta["spec"]["replicas"], 3);

    let event = expect_event(&mut handle, "Normal", "ReplicasRaised").await;
    assert_eq!(event["note"], "chunk StatefulSet 6 -> 8 replicas");
    assert_eq!(event["related"]["kind"], "StatefulSet");
    assert_eq!(event["related"]["name"], "demo-chunk");
    expect_event(&mut handle, "Normal", "Scaling").await;
    let observed = Observed {
        tls: None,
        meta: Workload {
            desired: 3,
            current: 3,
            ready: 3,
            rolled_out: false,
        },
        chunk: Workload {
            desired: 8,
            current: 6,
            ready: 6,
            rolled_out: false,
        },
        admin: Some(AdminObserved {
            view: Some(admin_view(6).await),
            error: None,
        }),
        scaling: Scaling {
            progress: Some((
                "ScalingUp".into(),
                "chunk StatefulSet raised from 6 to 8 replicas".into(),
            )),
            refused: false,
            // A rebalance follows once demo-chunk-6 and -7 have registered.
            memory: ScalingStatus {
                draining_node: None,
                new_servers_from: Some(6),
            },
        },
        s3: None,
    };
    let expected = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(expected.phase, Some(Phase::Scaling));
    assert_eq!(expected.chunk.as_ref().unwrap().ready, "6/8");
    expect_status(&mut handle, &expected).await;

    assert_eq!(
        finish(task, handle, ctx).await,
        Action::requeue(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn update_scales_chunk_down_by_draining_the_highest_ordinal_first() {
    let mut cluster = running(example());
    cluster.metadata.generation = Some(3);
    cluster.spec.chunk.replicas = 6;
    let admin = fake(8);
    let node = admin.id_of(7).unwrap();
    let (task, mut handle, ctx) = start_with(cluster.clone(), admin.clone());

    let respond = expect_chunk_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &chunk_sts(8, 8));
    expect_pod_list(&mut handle, 0..8).await;

    // Replicas stay at 8 while demo-chunk-7 drains; nothing is shrunk blindly.
    expect_children(&mut handle, &cluster, 8, sts_status(3, 3), sts_status(8, 8)).await;
    let event = expect_event(&mut handle, "Normal", "DrainStarted").await;
    assert_eq!(
        event["note"],
        format!("draining demo-chunk-7 (node {node}) to scale chunk servers 8 -> 6")
    );
    assert_eq!(event["related"]["kind"], "Pod");
    assert_eq!(event["related"]["name"], "demo-chunk-7");
    expect_event(&mut handle, "Normal", "Scaling").await;

    let mut view = admin_view(8).await;
    view.nodes[7].state = admin::NodeState::Draining;
    let observed = Observed {
        tls: None,
        meta: Workload {
            desired: 3,
            current: 3,
            ready: 3,
            rolled_out: true,
        },
        chunk: Workload {
            desired: 8,
            current: 8,
            ready: 8,
            rolled_out: true,
        },
        admin: Some(AdminObserved {
            view: Some(view),
            error: None,
        }),
        scaling: Scaling {
            progress: Some((
                "Draining".into(),
                format!("draining demo-chunk-7 (node {node}) to scale 8 -> 6"),
            )),
            refused: false,
            memory: ScalingStatus {
                draining_node: Some(node.clone()),
                new_servers_from: None,
            },
        },
        s3: None,
    };
    let expected = compute(&cluster, &observed, &fixed_clock());
    let status = serde_json::to_value(&expected).unwrap();
    assert_eq!(condition(&status, "Draining")["status"], "True");
    assert_eq!(
        condition(&status, "Draining")["message"],
        "demo-chunk-7: not surveyed yet"
    );
    assert_eq!(condition(&status, "AdminReachable")["status"], "True");
    assert_eq!(status["scaling"]["drainingNode"], json!(node));
    expect_status(&mut handle, &expected).await;

    assert_eq!(admin.calls(), [format!("DrainNode {node}")]);
    // No spec.tls: the admin API is reached in plaintext, no CA handed over.
    assert_eq!(admin.connections(), [None]);
    assert_eq!(
        finish(task, handle, ctx).await,
        Action::requeue(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn invalid_spec_reports_ready_false_naming_the_field_and_touches_no_child() {
    let mut cluster = running(example());
    cluster.metadata.generation = Some(4);
    cluster.spec.chunk.replicas = 4; // below k + m = 6
    let (task, mut handle, ctx) = start(cluster.clone());

    let event = expect_event(&mut handle, "Warning", "Invalid").await;
    assert_eq!(
        event["note"],
        "spec.chunk.replicas: 4 is less than erasure.k + erasure.m = 6"
    );

    let uri = format!("/apis/dogfs.io/v1alpha1/namespaces/{NS}/dogclusters/demo/status{APPLY}");
    let (body, respond) = expect(&mut handle, Method::PATCH, &uri).await;
    let status = &body["status"];
    assert_eq!(status["phase"], "Invalid");
    assert_eq!(status["observedGeneration"], 4);
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(
        ready["message"],
        "spec.chunk.replicas: 4 is less than erasure.k + erasure.m = 6"
    );
    assert_eq!(ready["observedGeneration"], 4);
    // The counts of the running cluster are kept: nothing was changed.
    assert_eq!(status["chunk"]["ready"], "6/6");
    let mut answer = serde_json::to_value(&cluster).unwrap();
    answer["status"] = status.clone();
    reply(respond, StatusCode::OK, &answer);

    // No GET, PATCH or DELETE of any StatefulSet, Service, ConfigMap or PDB; no retry either.
    assert_eq!(finish(task, handle, ctx).await, Action::await_change());
}

#[tokio::test]
async fn invalid_repair_settings_take_the_same_path_and_touch_no_child() {
    // dogfs-meta would refuse to start with these, so no metadata pod may be rolled to them.
    let mut cluster = running(example());
    cluster.metadata.generation = Some(5);
    cluster.spec.repair = Some(dogfs_operator::crd::RepairSpec {
        min_write_shards: Some(7),
        after_seconds: Some(-1),
    });
    let (task, mut handle, ctx) = start(cluster.clone());
    let message = "spec.repair.minWriteShards: 7 must be in 5..=6 \
                   (erasure.k + 1 ..= erasure.k + erasure.m for 4+2); \
                   spec.repair.afterSeconds: -1 must be in 0..=604800 (at most 7 days)";

    let event = expect_event(&mut handle, "Warning", "Invalid").await;
    assert_eq!(event["note"], message);

    let uri = format!("/apis/dogfs.io/v1alpha1/namespaces/{NS}/dogclusters/demo/status{APPLY}");
    let (body, respond) = expect(&mut handle, Method::PATCH, &uri).await;
    let status = &body["status"];
    assert_eq!(status["phase"], "Invalid");
    assert_eq!(status["observedGeneration"], 5);
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(ready["message"], message);
    let mut answer = serde_json::to_value(&cluster).unwrap();
    answer["status"] = status.clone();
    reply(respond, StatusCode::OK, &answer);

    assert_eq!(finish(task, handle, ctx).await, Action::await_change());
}

#[tokio::test]
async fn deletion_sends_nothing_and_leaves_children_to_the_garbage_collector() {
    let mut cluster = running(example());
    cluster.metadata.deletion_timestamp = Some(fixed_clock());
    let (task, handle, ctx) = start(cluster);
    assert_eq!(finish(task, handle, ctx).await, Action::await_change());
}

#[tokio::test]
async fn apply_failure_is_an_error_and_retries_back_off() {
    let cluster = example();
    let (task, mut handle, ctx) = start(cluster.clone());
    let respond = expect_chunk_lookup(&mut handle).await;
    not_found(respond, "demo-chunk");
    let (_, respond) = expect(
        &mut handle,
        Method::PATCH,
        &format!("/api/v1/namespaces/{NS}/configmaps/demo-config{APPLY}"),
    )
    .await;
    let failure = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "etcd is sad", "reason": "InternalError", "code": 500});
    reply(respond, StatusCode::INTERNAL_SERVER_ERROR, &failure);
    let error = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        error.starts_with("applying ConfigMap demo-config"),
        "{error}"
    );

    // Backoff grows per failure of this cluster: 5 s, 10 s, 20 s ...
    let cluster = Arc::new(cluster);
    let err = dogfs_operator::reconcile::Error::MissingNamespace;
    assert_eq!(
        error_policy(cluster.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(cluster.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        error_policy(cluster, &err, ctx),
        Action::requeue(Duration::from_secs(20))
    );
}

#[tokio::test]
async fn tls_copies_the_ca_bundle_into_the_client_config_map() {
    let mut cluster = example();
    cluster.spec.tls = common::tls_secret("demo-tls");
    let (task, mut handle, ctx) = start(cluster.clone());

    let respond = expect_chunk_lookup(&mut handle).await;
    not_found(respond, "demo-chunk");
    let (_, respond) = expect(
        &mut handle,
        Method::GET,
        &format!("/api/v1/namespaces/{NS}/secrets/demo-tls"),
    )
    .await;
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";
    // Secret data is base64 on the wire.
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "demo-tls", "namespace": NS}, "type": "kubernetes.io/tls",
        "data": {"ca.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJ0ZXN0Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K",
                 "tls.crt": "", "tls.key": ""}});
    reply(respond, StatusCode::OK, &secret);

    expect_children_with_ca(
        &mut handle,
        &cluster,
        6,
        Some(ca.to_string()),
        json!({"replicas": 0}),
        json!({"replicas": 0}),
    )
    .await;
    let d = build::build(
        &cluster,
        &Inputs {
            chunk_replicas: 6,
            ca_bundle: Some(ca.into()),
        },
    )
    .unwrap();
    let client = d.client_config.data.unwrap();
    assert_eq!(
        client["DOGFS_ENDPOINT"],
        "https://demo-meta.default.svc:7000"
    );
    assert_eq!(client["ca.crt"], ca);

    expect_event(&mut handle, "Normal", "Creating").await;
    let observed = Observed {
        meta: Workload {
            desired: 3,
            current: 0,
            ready: 0,
            rolled_out: false,
        },
        chunk: Workload {
            desired: 6,
            current: 0,
            ready: 0,
            rolled_out: false,
        },
        tls: secret_tls(),
        ..Observed::default()
    };
    expect_status(&mut handle, &compute(&cluster, &observed, &fixed_clock())).await;
    assert_eq!(
        finish(task, handle, ctx).await,
        Action::requeue(Duration::from_secs(300))
    );
}

const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

/// The TLS Secret `demo-tls` as the API server returns it, with `ca` as its `ca.crt`.
fn tls_secret(ca: &str) -> Value {
    use k8s_openapi::ByteString;
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("demo-tls".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        // Base64 on the wire (k8s-openapi encodes it).
        data: Some(
            [("ca.crt", ca), ("tls.crt", "cert"), ("tls.key", "key")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}

#[tokio::test]
async fn tls_admin_client_and_gateway_trust_the_secret_ca() {
    // A running cluster with its gateway up, and spec.tls.
    let mut cluster = with_s3(running(example()), true);
    let gateway = Workload {
        desired: 2,
        current: 2,
        ready: 2,
        rolled_out: true,
    };
    cluster.status = Some(compute(
        &cluster,
        &all_up(Some(gateway.clone())),
        &fixed_clock(),
    ));
    cluster.spec.tls = common::tls_secret("demo-tls");
    cluster.metadata.generation = Some(2);
    let admin = fake(6);
    let (task, mut handle, ctx) = start_with(cluster.clone(), admin.clone());

    let respond = expect_chunk_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &chunk_sts(6, 6));
    // The CA is read before the admin API is: the admin client needs it.
    let (_, respond) = expect(
        &mut handle,
        Method::GET,
        &format!("/api/v1/namespaces/{NS}/secrets/demo-tls"),
    )
    .await;
    reply(respond, StatusCode::OK, &tls_secret(TEST_CA));
    expect_pod_list(&mut handle, 0..6).await;
    expect_all_children(
        &mut handle,
        &cluster,
        6,
        Some(TEST_CA.to_string()),
        sts_status(3, 3),
        sts_status(6, 6),
        s3_status(2, 2),
    )
    .await;
    let mut observed = with_view(all_up(Some(gateway)), admin_view(6).await);
    observed.tls = secret_tls();
    let expected = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(expected.phase, Some(Phase::Running));
    expect_status(&mut handle, &expected).await;
    assert_eq!(
        finish(task, handle, ctx).await,
        Action::requeue(Duration::from_secs(300))
    );

    // The connector was handed the Secret's CA: the admin API is reached over TLS.
    assert_eq!(admin.connections(), [Some(TEST_CA.to_string())]);
    assert_eq!(
        names().admin_endpoint(true),
        "https://demo-meta.default.svc:7000"
    );
    // The gateway that went out dials https:// and trusts the mounted ca.crt.
    let d = build::build(
        &cluster,
        &Inputs {
            chunk_replicas: 6,
            ca_bundle: Some(TEST_CA.into()),
        },
    )
    .unwrap();
    let pod = v(&d.s3.unwrap().deployment)["spec"]["template"]["spec"].clone();
    let env = &pod["containers"][0]["env"];
    assert!(
        env.as_array().unwrap().contains(
            &json!({"name": "DOGFS_ENDPOINT", "value": "https://demo-meta.default.svc:7000"})
        ),
        "{env}"
    );
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "DOGFS_CA", "value": "/etc/dogfs/tls/ca.crt"})),
        "{env}"
    );
}

#[tokio::test]
async fn a_tls_secret_without_a_pem_certificate_fails_before_anything_is_applied() {
    let mut cluster = example();
    cluster.spec.tls = common::tls_secret("demo-tls");
    let (task, mut handle, ctx) = start(cluster);
    let respond = expect_chunk_lookup(&mut handle).await;
    not_found(respond, "demo-chunk");
    let (_, respond) = expect(
        &mut handle,
        Method::GET,
        &format!("/api/v1/namespaces/{NS}/secrets/demo-tls"),
    )
    .await;
    reply(respond, StatusCode::OK, &tls_secret("not a certificate\n"));
    let error = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        error,
        "TLS Secret demo-tls: ca.crt holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    );
    drop(ctx);
    let extra = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await;
    assert!(
        !matches!(extra, Ok(Some(_))),
        "nothing applied after the error"
    );
}

/// The example with the gateway on, as `examples/dogcluster.yaml` shows it commented out.
fn with_s3(mut cluster: DogCluster, enabled: bool) -> DogCluster {
    cluster.spec.s3 = Some(
        serde_json::from_value(json!({"enabled": enabled,
            "credentialsSecret": "demo-s3-credentials"}))
        .unwrap(),
    );
    cluster
}

fn all_up(s3: Option<Workload>) -> Observed {
    let up = |n| Workload {
        desired: n,
        current: n,
        ready: n,
        rolled_out: true,
    };
    Observed {
        meta: up(3),
        chunk: up(6),
        admin: None,
        scaling: Scaling::default(),
        s3,
        tls: None,
    }
}

/// `TLSReady` with `tls.secretName: demo-tls`.
fn secret_tls() -> Option<(bool, String, String)> {
    Some((
        true,
        "Secret".to_string(),
        "certificate from Secret demo-tls".to_string(),
    ))
}

fn with_view(mut observed: Observed, view: admin::View) -> Observed {
    observed.admin = Some(AdminObserved {
        view: Some(view),
        error: None,
    });
    observed
}

#[tokio::test]
async fn enabling_s3_applies_the_gateway_and_ready_waits_for_it() {
    let mut cluster = with_s3(running(example()), true);
    cluster.metadata.generation = Some(2);

    // Round 1: the gateway is new, none of its pods ready yet.
    let (task, mut handle, ctx) = start(cluster.clone());
    let respond = expect_chunk_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &chunk_sts(6, 6));
    expect_pod_list(&mut handle, 0..6).await;
    expect_all_children(
        &mut handle,
        &cluster,
        6,
        None,
        sts_status(3, 3),
        sts_status(6, 6),
        json!({"observedGeneration": 1}),
    )
    .await;
    let event = expect_event(&mut handle, "Normal", "Updating").await;
    assert_eq!(
        event["note"],
        "3/3 metadata nodes, 6/6 chunk servers and 0/2 S3 gateways ready"
    );
    let gateway = Workload {
        desired: 2,
        current: 0,
        ready: 0,
        rolled_out: false,
    };
    let observed = with_view(all_up(Some(gateway)), admin_view(6).await);
    let expected = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(expected.phase, Some(Phase::Updating));
    assert_eq!(expected.s3.as_ref().unwrap().ready, "0/2");
    expect_status(&mut handle, &expected).await;
    finish(task, handle, ctx).await;

    // What went out: the client ConfigMap points S3 users at the gateway Service.
    let d = build::build(
        &cluster,
        &Inputs {
            chunk_replicas: 6,
            ca_bundle: None,
        },
    )
    .unwrap();
    assert_eq!(
        d.client_config.data.as_ref().unwrap()["DOGFS_S3_ENDPOINT"],
        "http://demo-s3.default.svc:9000"
    );

    // Round 2: both gateway pods ready: the cluster is Ready again.
    cluster.status = Some(expected);
    let (task, mut handle, ctx) = start(cluster.clone());
    let respond = expect_chunk_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &chunk_sts(6, 6));
    expect_pod_list(&mut handle, 0..6).await;
    expect_all_children(
        &mut handle,
        &cluster,
        6,
        None,
        sts_status(3, 3),
        sts_status(6, 6),
        s3_status(2, 2),
    )
    .await;
    expect_event(&mut handle, "Normal", "Running").await;
    let gateway = Workload {
        desired: 2,
        current: 2,
        ready: 2,
        rolled_out: true,
    };
    let observed = with_view(all_up(Some(gateway)), admin_view(6).await);
    let expected = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(expected.phase, Some(Phase::Running));
    let status = serde_json::to_value(&expected).unwrap();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(status["s3"]["ready"], "2/2");
    expect_status(&mut handle, &expected).await;
    assert_eq!(
        finish(task, handle, ctx).await,
        Action::requeue(Duration::from_secs(300))
    );
}

/// The gateway Deployment as a metadata-only GET returns it, controlled by `owner_uid`.
fn gateway_metadata(owner_uid: &str) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
           "metadata": {"name": "demo-s3", "namespace": NS, "ownerReferences": [
               {"apiVersion": "dogfs.io/v1alpha1", "kind": "DogCluster", "name": "demo",
                "uid": owner_uid, "controller": true, "blockOwnerDeletion": true}]}})
}

/// A running cluster whose gateway (2/2 ready) has just been switched off.
fn s3_switched_off() -> DogCluster {
    let mut cluster = with_s3(running(example()), true);
    let gateway = Workload {
        desired: 2,
        current: 2,
        ready: 2,
        rolled_out: true,
    };
    cluster.status = Some(compute(&cluster, &all_up(Some(gateway)), &fixed_clock()));
    cluster.metadata.generation = Some(3);
    with_s3(cluster, false)
}

#[tokio::test]
async fn disabling_s3_deletes_the_gateway_deployment_service_and_pdb() {
    let cluster = s3_switched_off();
    let uid = cluster.metadata.uid.clone().unwrap();
    let (task, mut handle, ctx) = start(cluster.clone());
    let respond = expect_chunk_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &chunk_sts(6, 6));
    expect_pod_list(&mut handle, 0..6).await;
    // The children without the gateway (and no DOGFS_S3_ENDPOINT), then the lookup.
    let d = build::build(
        &cluster,
        &Inputs {
            chunk_replicas: 6,
            ca_bundle: None,
        },
    )
    .unwrap();
    assert!(d.s3.is_none());
    assert!(
        !d.client_config
            .data
            .as_ref()
            .unwrap()
            .contains_key("DOGFS_S3_ENDPOINT")
    );
    expect_children_without_s3_lookup(&mut handle, &cluster).await;
    let respond = expect_s3_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &gateway_metadata(&uid));

    // PDB and Service first, the Deployment (the marker the lookup finds) last.
    for path in [
        format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/demo-s3"),
        format!("/api/v1/namespaces/{NS}/services/demo-s3"),
        format!("/apis/apps/v1/namespaces/{NS}/deployments/demo-s3"),
    ] {
        let (body, respond) = expect(&mut handle, Method::DELETE, &format!("{path}?")).await;
        assert_eq!(body["propagationPolicy"], "Background", "{path}: {body}");
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 200});
        reply(respond, StatusCode::OK, &status);
    }
    let event = expect_event(&mut handle, "Normal", "S3GatewayRemoved").await;
    assert_eq!(
        event["note"],
        "s3.enabled is off: deleted Deployment, Service and PodDisruptionBudget demo-s3"
    );

    let observed = with_view(all_up(None), admin_view(6).await);
    let expected = compute(&cluster, &observed, &fixed_clock());
    assert_eq!(expected.phase, Some(Phase::Running));
    assert_eq!(expected.s3, None);
    expect_status(&mut handle, &expected).await;
    assert_eq!(
        finish(task, handle, ctx).await,
        Action::requeue(Duration::from_secs(300))
    );
}

#[tokio::test]
async fn a_gateway_deployment_this_cluster_does_not_control_is_left_alone() {
    let cluster = s3_switched_off();
    let (task, mut handle, ctx) = start(cluster.clone());
    let respond = expect_chunk_lookup(&mut handle).await;
    reply(respond, StatusCode::OK, &chunk_sts(6, 6));
    expect_pod_list(&mut handle, 0..6).await;
    expect_children_without_s3_lookup(&mut handle, &cluster).await;
    let respond = expect_s3_lookup(&mut handle).await;
    // Same name, another owner (say, a DogCluster of the same name deleted and recreated).
    reply(
        respond,
        StatusCode::OK,
        &gateway_metadata("11111111-0000-4000-8000-000000000000"),
    );
    // No DELETE: straight to the status.
    let observed = with_view(all_up(None), admin_view(6).await);
    expect_status(&mut handle, &compute(&cluster, &observed, &fixed_clock())).await;
    finish(task, handle, ctx).await;
}

/// The server children of a cluster with S3 off, up to (not including) the gateway lookup.
async fn expect_children_without_s3_lookup(handle: &mut Handle, cluster: &DogCluster) {
    let d = build::build(
        cluster,
        &Inputs {
            chunk_replicas: 6,
            ca_bundle: None,
        },
    )
    .unwrap();
    assert!(d.s3.is_none());
    expect_server_children(handle, &d, sts_status(3, 3), sts_status(6, 6)).await;
}
