//! A mocked Kubernetes API server for multi-round flows (tower-test, like the exact-request
//! tests in reconcile.rs): it answers every request the operator sends from a small model —
//! the applied objects, the chunk pods and claims, Events, the DogCluster status — and checks
//! each one: method and path must be one the operator is allowed to send, and every applied
//! object must be exactly what the builders make. Between reconciles, [`World::settle`] plays
//! the StatefulSet controller (pods and claims follow `replicas`) and tells the fake admin API
//! which pods run.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dogfs_operator::build::{self, Inputs};
use dogfs_operator::crd::{DogCluster, DogClusterStatus};
use dogfs_operator::reconcile::{Context, reconcile};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fake_admin::FakeAdmin;

pub const NS: &str = "default";
/// `ca.crt` of the TLS Secret `demo-tls`, served when the cluster has `spec.tls`.
pub const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBworld\n-----END CERTIFICATE-----\n";

#[derive(Debug, Default)]
struct Model {
    /// The chunk StatefulSet's `spec.replicas`, once applied.
    chunk_replicas: Option<i32>,
    pods: BTreeSet<i32>,
    claims: BTreeSet<i32>,
    /// Pods still terminating: gone at the next `settle`.
    stopping: BTreeSet<i32>,
    status: Option<Value>,
    /// Everything of note, in order, for the current round.
    log: Vec<String>,
    /// The cluster as the builders should see it this round.
    cluster: Option<DogCluster>,
    /// Requests that were wrong; the test fails on any.
    errors: Vec<String>,
}

/// The simulated cluster: the API server, the StatefulSet controller and the fake admin API.
#[derive(Debug)]
pub struct World {
    model: Arc<Mutex<Model>>,
    pub admin: FakeAdmin,
    pub ctx: Arc<Context>,
    pub cluster: DogCluster,
    /// Pods of a lowered StatefulSet take one more round to stop (as a terminating pod does).
    pub slow_pod_stop: bool,
}

/// What one reconcile did.
#[derive(Debug, Clone)]
pub struct Round {
    pub action: Action,
    /// Requests of note and admin calls, in order.
    pub log: Vec<String>,
    pub status: DogClusterStatus,
}

impl Round {
    /// `(status, reason, message)` of a condition.
    pub fn condition(&self, type_: &str) -> (String, String, String) {
        let c = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", self.status.conditions));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }
}

fn fixed_clock() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    )
}

impl World {
    /// A running cluster: the chunk StatefulSet at `replicas`, every pod up with its claim.
    pub fn running(mut cluster: DogCluster, admin: FakeAdmin, replicas: i32) -> World {
        cluster.metadata.namespace = Some(NS.to_string());
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, NS);
        let ctx = Context::with_admin(
            client,
            dogfs_operator::metrics::Metrics::new(),
            fixed_clock,
            Arc::new(admin.clone()),
        );
        let model = Arc::new(Mutex::new(Model {
            chunk_replicas: Some(replicas),
            pods: (0..replicas).collect(),
            claims: (0..replicas).collect(),
            status: cluster
                .status
                .as_ref()
                .map(|s| serde_json::to_value(s).unwrap()),
            ..Model::default()
        }));
        tokio::spawn(serve(handle, model.clone()));
        World {
            model,
            admin,
            ctx,
            cluster,
            slow_pod_stop: false,
        }
    }

    pub fn chunk_replicas(&self) -> Option<i32> {
        self.model.lock().unwrap().chunk_replicas
    }

    pub fn pods(&self) -> BTreeSet<i32> {
        self.model.lock().unwrap().pods.clone()
    }

    pub fn claims(&self) -> BTreeSet<i32> {
        self.model.lock().unwrap().claims.clone()
    }

    /// Runs one reconcile of the current spec against the current status, then lets the
    /// StatefulSet controller act.
    pub async fn round(&mut self) -> Round {
        let mut cluster = self.cluster.clone();
        {
            let mut m = self.model.lock().unwrap();
            cluster.status = m.status.clone().map(|s| serde_json::from_value(s).unwrap());
            m.cluster = Some(cluster.clone());
            m.log.clear();
        }
        let calls_before = self.admin.calls().len();
        let action = tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(Arc::new(cluster), self.ctx.clone()),
        )
        .await
        .expect("reconcile timed out")
        .unwrap_or_else(|e| panic!("reconcile failed: {e}"));
        let mut m = self.model.lock().unwrap();
        assert!(m.errors.is_empty(), "bad requests: {:#?}", m.errors);
        let mut log = std::mem::take(&mut m.log);
        // Admin calls that changed something go first: they come before the Events about them.
        let calls: Vec<String> = self.admin.calls()[calls_before..].to_vec();
        log.splice(0..0, calls);
        let status = m
            .status
            .clone()
            .map(|s| serde_json::from_value(s).unwrap())
            .unwrap_or_default();
        drop(m);
        self.settle();
        Round {
            action,
            log,
            status,
        }
    }

    /// The StatefulSet controller: pods (and their claims) follow `replicas`; the fake admin
    /// API learns which pods run.
    pub fn settle(&self) {
        let mut m = self.model.lock().unwrap();
        let replicas = m.chunk_replicas.unwrap_or(0);
        let stopped: Vec<i32> = m.stopping.iter().copied().collect();
        for o in stopped {
            m.pods.remove(&o);
        }
        m.stopping.clear();
        let beyond: Vec<i32> = m.pods.iter().copied().filter(|o| *o >= replicas).collect();
        for o in beyond {
            if self.slow_pod_stop {
                m.stopping.insert(o);
            } else {
                m.pods.remove(&o);
            }
        }
        for o in 0..replicas {
            m.pods.insert(o);
            m.claims.insert(o);
        }
        let pods = m.pods.clone();
        drop(m);
        self.admin.sync_pods(&pods);
    }
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn metadata_list(names: impl Iterator<Item = String>) -> Value {
    let items: Vec<Value> = names
        .map(|name| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": {"name": name, "namespace": NS}})
        })
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
           "metadata": {}, "items": items})
}

const CHUNK_SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fcomponent%3Dchunk%2Capp.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fname%3Ddogfs";

async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    model: Arc<Mutex<Model>>,
) {
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let path = uri.path().to_string();
        let query = uri.query().unwrap_or("").to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let answer = handle_request(&model, &method, &path, &query, body);
        send.send_response(answer);
    }
}

fn handle_request(
    model: &Arc<Mutex<Model>>,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
) -> Response<Body> {
    let mut m = model.lock().unwrap();
    let core = format!("/api/v1/namespaces/{NS}");
    let apps = format!("/apis/apps/v1/namespaces/{NS}");
    let events = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    let status_path = format!("/apis/dogfs.io/v1alpha1/namespaces/{NS}/dogclusters/demo/status");
    let apply_query = "&force=true&fieldManager=dogfs-operator";

    if *method == Method::GET && path == format!("{apps}/statefulsets/demo-chunk") {
        return match m.chunk_replicas {
            Some(replicas) => respond(
                StatusCode::OK,
                &json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "metadata": {"name": "demo-chunk", "namespace": NS, "generation": 1},
                        "spec": {"replicas": replicas, "selector": {}, "serviceName": "x",
                                 "template": {}}}),
            ),
            None => respond(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        };
    }
    // No S3 gateway in these scenarios: the lookup made while S3 is off finds none.
    if *method == Method::GET && path == format!("{apps}/deployments/demo-s3") {
        return respond(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "NotFound", "code": 404}),
        );
    }
    // With spec.tls, the operator reads the Secret's CA bundle each round.
    if *method == Method::GET && path == format!("{core}/secrets/demo-tls") {
        let tls = m.cluster.as_ref().and_then(|c| c.spec.tls.as_ref());
        if tls.and_then(|t| t.secret_name.as_deref()) != Some("demo-tls") {
            m.errors
                .push("TLS Secret read without spec.tls".to_string());
        }
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("demo-tls".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [("ca.crt", CA), ("tls.crt", "cert"), ("tls.key", "key")]
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        return respond(StatusCode::OK, &serde_json::to_value(secret).unwrap());
    }
    if *method == Method::GET && path == format!("{core}/pods") {
        if !query.contains(CHUNK_SELECTOR) {
            m.errors.push(format!("pods listed with {query}"));
        }
        m.log.push("list pods".to_string());
        let pods: Vec<String> = m.pods.iter().map(|o| format!("demo-chunk-{o}")).collect();
        return respond(StatusCode::OK, &metadata_list(pods.into_iter()));
    }
    if *method == Method::GET && path == format!("{core}/persistentvolumeclaims") {
        if !query.contains(CHUNK_SELECTOR) {
            m.errors.push(format!("claims listed with {query}"));
        }
        let claims: Vec<String> = m
            .claims
            .iter()
            .map(|o| format!("data-demo-chunk-{o}"))
            .collect();
        return respond(StatusCode::OK, &metadata_list(claims.into_iter()));
    }
    if *method == Method::DELETE
        && let Some(name) = path.strip_prefix(&format!("{core}/persistentvolumeclaims/"))
    {
        let ordinal: i32 = name
            .strip_prefix("data-demo-chunk-")
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("deleting claim {name}"));
        if m.pods.contains(&ordinal) || m.stopping.contains(&ordinal) {
            m.errors
                .push(format!("claim {name} deleted while its pod exists"));
        }
        m.claims.remove(&ordinal);
        m.log.push(format!("DELETE pvc {name}"));
        return respond(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": NS}}),
        );
    }
    if (*method == Method::POST && path == events)
        || (*method == Method::PATCH && path.starts_with(&format!("{events}/")))
    {
        m.log.push(format!(
            "event {} {}: {}",
            body["type"].as_str().unwrap_or_default(),
            body["reason"].as_str().unwrap_or_default(),
            body["note"].as_str().unwrap_or_default()
        ));
        return respond(StatusCode::CREATED, &body);
    }
    if *method == Method::PATCH && path == status_path {
        if query != apply_query {
            m.errors.push(format!("status patched with {query}"));
        }
        m.status = Some(body["status"].clone());
        return respond(
            StatusCode::OK,
            &json!({"apiVersion": "dogfs.io/v1alpha1", "kind": "DogCluster",
                    "metadata": {"name": "demo", "namespace": NS}, "spec": {"image": "x"},
                    "status": body["status"]}),
        );
    }
    if *method == Method::PATCH {
        if query != apply_query {
            m.errors.push(format!("{path} applied with {query}"));
        }
        return apply(&mut m, path, body);
    }
    m.errors.push(format!("unexpected {method} {path}?{query}"));
    respond(
        StatusCode::FORBIDDEN,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "Forbidden", "code": 403}),
    )
}

/// A server-side apply of a child: must be exactly what the builders make for this round's
/// chunk replicas; the StatefulSets get a status from the pods.
fn apply(m: &mut Model, path: &str, body: Value) -> Response<Body> {
    let cluster = m.cluster.clone().unwrap();
    let replicas = if path.ends_with("/statefulsets/demo-chunk") {
        let r = body["spec"]["replicas"].as_i64().unwrap() as i32;
        if m.chunk_replicas != Some(r) {
            m.log.push(format!("chunk replicas {}", r));
        }
        m.chunk_replicas = Some(r);
        r
    } else {
        m.chunk_replicas.unwrap_or(0)
    };
    let ca = cluster.spec.tls_mode().is_enabled().then(|| CA.to_string());
    let desired = build::build(
        &cluster,
        &Inputs {
            chunk_replicas: replicas,
            ca_bundle: ca,
        },
    )
    .unwrap();
    let all = [
        serde_json::to_value(&desired.config).unwrap(),
        serde_json::to_value(&desired.client_config).unwrap(),
        serde_json::to_value(&desired.meta_headless).unwrap(),
        serde_json::to_value(&desired.meta_service).unwrap(),
        serde_json::to_value(&desired.chunk_headless).unwrap(),
        serde_json::to_value(&desired.chunk_service).unwrap(),
        serde_json::to_value(&desired.meta).unwrap(),
        serde_json::to_value(&desired.chunk).unwrap(),
        serde_json::to_value(&desired.meta_pdb).unwrap(),
        serde_json::to_value(&desired.chunk_pdb).unwrap(),
        serde_json::to_value(&desired.network_policies[0]).unwrap(),
        serde_json::to_value(&desired.network_policies[1]).unwrap(),
    ];
    if !all.contains(&body) {
        m.errors.push(format!("{path}: not what the builders make"));
    }
    let mut answer = body;
    answer["metadata"]["generation"] = json!(1);
    if path.ends_with("/statefulsets/demo-meta") {
        answer["status"] = json!({"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
            "currentReplicas": 3, "observedGeneration": 1,
            "currentRevision": "r1", "updateRevision": "r1"});
    }
    if path.ends_with("/statefulsets/demo-chunk") {
        let n = m.pods.len() as i32;
        answer["status"] = json!({"replicas": n, "readyReplicas": n, "updatedReplicas": n,
            "currentReplicas": n, "observedGeneration": 1,
            "currentRevision": "r1", "updateRevision": "r1"});
    }
    respond(StatusCode::OK, &answer)
}
