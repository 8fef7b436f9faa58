//! The certificate, auth and NetworkPolicy flows against a mocked API server (tower-test):
//! a small model keeps the Secrets the operator writes between reconciles, the clock is moved
//! between rounds, and every request is logged in order.
//!
//! - `OperatorCA`: the first reconcile creates the CA and the component Secrets; a reconcile
//!   past the renewal point patches the component Secrets in place with new certificates
//!   (later `notAfter`, chaining to the same CA) and changes no pod template; a CA near its end
//!   is rotated with overlap (next CA in every bundle first, signing only later).
//! - cert-manager: `Certificate` objects, the pending and missing-CRD conditions.
//! - auth: `<c>-auth` generated once, completed but never regenerated; the admin client gets
//!   the token and the CA bundle.

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::fake_admin::FakeAdmin;
use dogfs_operator::build::{self, Inputs, Names};
use dogfs_operator::certs::{self, CA_LIFETIME, CA_OVERLAP, CERT_LIFETIME, Component};
use dogfs_operator::crd::{
    AuthSpec, DogCluster, IssuerKind, IssuerRef, NetworkPolicySpec, TlsSpec,
};
use dogfs_operator::metrics::Metrics;
use dogfs_operator::reconcile::{Context, reconcile};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};

const NS: &str = "default";
const T0: i64 = 1_700_000_000;

thread_local! {
    /// The operator's clock in these tests (each `#[tokio::test]` runs on one thread).
    static NOW: Cell<i64> = const { Cell::new(T0) };
}

fn clock() -> Time {
    Time(Timestamp::from_second(NOW.with(Cell::get)).unwrap())
}

fn set_now(at: SystemTime) {
    NOW.with(|n| n.set(at.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64));
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 as u64)
}

/// `examples/dogcluster.yaml`, which leaves `tls` and `auth` at their defaults.
fn example() -> DogCluster {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dogcluster.yaml");
    let mut cluster: DogCluster =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cluster.metadata.namespace = Some(NS.to_string());
    cluster.metadata.uid = Some("5d3c8f1e-0000-4000-8000-000000000001".to_string());
    cluster.metadata.generation = Some(1);
    assert!(cluster.spec.tls.is_none() && cluster.spec.auth.is_none());
    cluster
}

fn names() -> Names {
    Names {
        cluster: "demo".into(),
        namespace: NS.into(),
    }
}

/// What the mocked API server holds and saw.
#[derive(Debug, Default)]
struct Model {
    /// Secrets by name, as the API server would return them (JSON).
    secrets: BTreeMap<String, Value>,
    /// Chunk StatefulSet replicas; `None`: not created yet.
    chunk_replicas: Option<i32>,
    /// cert-manager's CRD is installed.
    cert_manager: bool,
    /// `METHOD path` of every request, in order.
    log: Vec<String>,
    /// Bodies of applies and creates, by path.
    bodies: Vec<(String, Value)>,
    /// Event reasons, in order.
    events: Vec<String>,
    status: Option<Value>,
}

impl Model {
    fn secret_data(&self, name: &str, key: &str) -> Option<String> {
        let b64 = self.secrets.get(name)?["data"][key].as_str()?.to_string();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    }

    /// The last body applied at a path ending in `suffix`.
    fn applied(&self, suffix: &str) -> Option<&Value> {
        self.bodies
            .iter()
            .rev()
            .find(|(p, _)| p.ends_with(suffix))
            .map(|(_, b)| b)
    }

    /// Requests of one kind of object (by path fragment), without the query.
    fn requests(&self, fragment: &str) -> Vec<String> {
        self.log
            .iter()
            .filter(|l| l.contains(fragment))
            .cloned()
            .collect()
    }
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn not_found() -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn answer(
    model: &Mutex<Model>,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
) -> Response<Body> {
    let mut m = model.lock().unwrap();
    m.log.push(format!("{method} {path}"));
    let core = format!("/api/v1/namespaces/{NS}");
    let secrets = format!("{core}/secrets");
    if *method == Method::GET
        && path == format!("/apis/apps/v1/namespaces/{NS}/statefulsets/demo-chunk")
    {
        return match m.chunk_replicas {
            Some(r) => respond(
                StatusCode::OK,
                &json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "metadata": {"name": "demo-chunk", "namespace": NS, "generation": 1},
                        "spec": {"replicas": r, "selector": {}, "serviceName": "x", "template": {}}}),
            ),
            None => not_found(),
        };
    }
    if let Some(name) = path.strip_prefix(&format!("{secrets}/")) {
        let name = name.to_string();
        if *method == Method::GET {
            return match m.secrets.get(&name) {
                Some(s) => respond(StatusCode::OK, s),
                None => not_found(),
            };
        }
        if *method == Method::PATCH {
            m.bodies.push((path.to_string(), body.clone()));
            let merged = if query.contains("fieldManager") {
                // Server-side apply of the whole object (the operator sends complete Secrets).
                body
            } else {
                // A merge patch: add keys.
                let mut existing = m.secrets.get(&name).cloned().unwrap();
                for (k, v) in body["data"].as_object().unwrap() {
                    existing["data"][k] = v.clone();
                }
                existing
            };
            m.secrets.insert(name, merged.clone());
            return respond(StatusCode::OK, &merged);
        }
    }
    if *method == Method::POST && path == secrets {
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        m.bodies.push((format!("{secrets}/{name}"), body.clone()));
        if m.secrets.contains_key(&name) {
            return respond(
                StatusCode::CONFLICT,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "reason": "AlreadyExists", "code": 409}),
            );
        }
        m.secrets.insert(name, body.clone());
        return respond(StatusCode::CREATED, &body);
    }
    if path.contains("/cert-manager.io/") && !m.cert_manager {
        return not_found();
    }
    if *method == Method::GET
        && path == format!("/apis/apps/v1/namespaces/{NS}/deployments/demo-s3")
    {
        return not_found();
    }
    if *method == Method::GET && path == format!("{core}/pods") {
        let items: Vec<Value> = (0..m.chunk_replicas.unwrap_or(0))
            .map(|o| {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                            "metadata": {"name": format!("demo-chunk-{o}"), "namespace": NS}})
            })
            .collect();
        return respond(
            StatusCode::OK,
            &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": {}, "items": items}),
        );
    }
    if path.starts_with(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")) {
        m.events
            .push(body["reason"].as_str().unwrap_or_default().to_string());
        return respond(StatusCode::CREATED, &body);
    }
    if *method == Method::DELETE {
        return not_found();
    }
    if *method == Method::PATCH {
        m.bodies.push((path.to_string(), body.clone()));
        if path.ends_with("/status") {
            m.status = Some(body["status"].clone());
        }
        let mut answer = body;
        answer["metadata"]["generation"] = json!(1);
        if path.ends_with("/status") {
            answer["metadata"] = json!({"name": "demo", "namespace": NS});
            answer["spec"] = json!({"image": "x"});
        }
        return respond(StatusCode::OK, &answer);
    }
    panic!("unexpected {method} {path}?{query}");
}

/// One reconcile of `cluster` at the current [`NOW`] against the model.
async fn round(
    model: &Arc<Mutex<Model>>,
    cluster: &DogCluster,
    admin: &FakeAdmin,
) -> Result<(), String> {
    model.lock().unwrap().log.clear();
    model.lock().unwrap().events.clear();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, NS);
    let ctx = Context::with_admin(client, Metrics::new(), clock, Arc::new(admin.clone()));
    let served = model.clone();
    let server = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            send.send_response(answer(&served, &method, &path, &query, body));
        }
    });
    let result = reconcile(Arc::new(cluster.clone()), ctx)
        .await
        .map(drop)
        .map_err(|e| e.to_string());
    server.abort();
    result
}

fn fake() -> FakeAdmin {
    FakeAdmin::new(names(), 4, 2, 6, 12)
}

fn certs_of(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

/// Whether `cert_pem` verifies as a server certificate for `dns` at `at`, trusting `ca_pem`
/// (every certificate in it), as the servers' and clients' rustls would.
fn verify(ca_pem: &str, cert_pem: &str, dns: &str, at: SystemTime) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs_of(ca_pem) {
        roots.add(ca).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let leaf = certs_of(cert_pem).remove(0);
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(dns.to_string()).unwrap(),
            &[],
            UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap()),
        )
        .map(drop)
}

const META_DNS: &str = "demo-meta.default.svc";

#[tokio::test]
async fn operator_ca_first_reconcile_creates_the_ca_component_and_auth_secrets() {
    set_now(t0());
    let model = Arc::new(Mutex::new(Model::default()));
    let cluster = example();
    round(&model, &cluster, &fake()).await.unwrap();
    let m = model.lock().unwrap();

    // Order: the chunk StatefulSet, the CA and component Secrets read, then written (CA first),
    // then the auth Secret read and created, before any child is applied.
    let secret_requests = m.requests("/secrets");
    assert_eq!(
        secret_requests,
        [
            "GET /api/v1/namespaces/default/secrets/demo-ca",
            "GET /api/v1/namespaces/default/secrets/demo-meta-tls",
            "GET /api/v1/namespaces/default/secrets/demo-chunk-tls",
            "GET /api/v1/namespaces/default/secrets/demo-gateway-tls",
            "PATCH /api/v1/namespaces/default/secrets/demo-ca",
            "PATCH /api/v1/namespaces/default/secrets/demo-meta-tls",
            "PATCH /api/v1/namespaces/default/secrets/demo-chunk-tls",
            "PATCH /api/v1/namespaces/default/secrets/demo-gateway-tls",
            "GET /api/v1/namespaces/default/secrets/demo-auth",
            "POST /api/v1/namespaces/default/secrets",
        ]
    );
    let first_child = m.log.iter().position(|l| l.contains("configmaps")).unwrap();
    let last_secret = m.log.iter().rposition(|l| l.contains("secrets")).unwrap();
    assert!(last_secret < first_child, "{:#?}", m.log);
    assert_eq!(
        m.events[..4],
        [
            "CACreated",
            "CertificateIssued",
            "CertificateIssued",
            "CertificateIssued"
        ]
    );

    let ca = m.secret_data("demo-ca", "ca.crt").unwrap();
    assert!(
        m.secret_data("demo-ca", "ca.key")
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert_eq!(
        m.secrets["demo-ca"]["metadata"]["ownerReferences"][0]["name"],
        "demo"
    );
    for (component, role, dns) in [
        ("meta", "meta", META_DNS),
        (
            "chunk",
            "chunk",
            "demo-chunk-3.demo-chunk-headless.default.svc.cluster.local",
        ),
        ("gateway", "gateway", "demo-s3.default.svc"),
    ] {
        let name = format!("demo-{component}-tls");
        assert_eq!(m.secrets[&name]["type"], "kubernetes.io/tls");
        let cert = m.secret_data(&name, "tls.crt").unwrap();
        assert!(
            m.secret_data(&name, "tls.key")
                .unwrap()
                .contains("PRIVATE KEY")
        );
        assert_eq!(
            m.secret_data(&name, "ca.crt").unwrap(),
            ca,
            "{name}: the bundle"
        );
        verify(&ca, &cert, dns, t0()).unwrap_or_else(|e| panic!("{name}: {e}"));
        verify(&ca, &cert, "localhost", t0()).unwrap();
        let info = certs::parse_cert(&cert).unwrap();
        assert!(
            info.sans.contains(&format!("URI:spiffe://dogfs/{role}")),
            "{:?}",
            info.sans
        );
        assert_eq!(
            info.sans.iter().filter(|s| s.starts_with("URI:")).count(),
            1
        );
        assert_eq!(info.not_after, t0() + CERT_LIFETIME);
    }
    // The metadata certificate also names the headless pods (Raft peers, chunk servers dial them).
    let meta_cert = m.secret_data("demo-meta-tls", "tls.crt").unwrap();
    verify(
        &ca,
        &meta_cert,
        "demo-meta-2.demo-meta-headless.default.svc.cluster.local",
        t0(),
    )
    .unwrap();
    // A chunk certificate is no metadata certificate.
    let chunk_cert = m.secret_data("demo-chunk-tls", "tls.crt").unwrap();
    assert!(verify(&ca, &chunk_cert, META_DNS, t0()).is_err());

    // The generated auth Secret.
    let token = m.secret_data("demo-auth", "token").unwrap();
    assert!(
        token.starts_with("dogfs_") && token.len() == 6 + 43,
        "{token}"
    );
    assert!(
        token[6..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let grant = m.secret_data("demo-auth", "grant.key").unwrap();
    assert_eq!(grant.trim().len(), 64);
    assert!(grant.trim().bytes().all(|b| b.is_ascii_hexdigit()));

    // The pods mount their own Secrets; the client ConfigMap carries the endpoint and bundle.
    let meta = m.applied("/statefulsets/demo-meta").unwrap();
    let volumes = &meta["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "demo-meta-tls")
    );
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "demo-auth")
    );
    let client = m.applied("/configmaps/demo-client").unwrap();
    assert_eq!(
        client["data"]["DOGFS_ENDPOINT"],
        "https://demo-meta.default.svc:7000"
    );
    assert_eq!(client["data"]["ca.crt"], ca.as_str());
    // The children are exactly what the builders make with that bundle.
    let desired = build::build(
        &cluster,
        &Inputs {
            chunk_replicas: 6,
            ca_bundle: Some(ca.clone()),
        },
    )
    .unwrap();
    assert_eq!(meta, &serde_json::to_value(&desired.meta).unwrap());
    assert_eq!(
        client,
        &serde_json::to_value(&desired.client_config).unwrap()
    );
    for policy in ["demo-meta", "demo-chunk"] {
        assert!(
            m.applied(&format!("/networkpolicies/{policy}")).is_some(),
            "{policy}"
        );
    }

    let status = m.status.as_ref().unwrap();
    let tls = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "TLSReady")
        .unwrap();
    assert_eq!(
        (tls["status"].as_str(), tls["reason"].as_str()),
        (Some("True"), Some("OperatorCA"))
    );
}

/// Round one at t0 with the chunk StatefulSet present; returns the model.
async fn created(cluster: &DogCluster, admin: &FakeAdmin) -> Arc<Mutex<Model>> {
    set_now(t0());
    let model = Arc::new(Mutex::new(Model {
        chunk_replicas: Some(6),
        ..Model::default()
    }));
    round(&model, cluster, admin).await.unwrap();
    model
}

#[tokio::test]
async fn the_admin_client_trusts_the_bundle_and_sends_the_generated_token() {
    let admin = fake();
    let model = created(&example(), &admin).await;
    let m = model.lock().unwrap();
    let ca = m.secret_data("demo-ca", "ca.crt").unwrap();
    let token = m.secret_data("demo-auth", "token").unwrap();
    assert_eq!(admin.connections(), [Some(ca)]);
    assert_eq!(admin.tokens(), [Some(token)]);
}

#[tokio::test]
async fn a_steady_cluster_writes_no_secret() {
    let cluster = example();
    let admin = fake();
    let model = created(&cluster, &admin).await;
    let before = model.lock().unwrap().secrets.clone();
    set_now(t0() + Duration::from_secs(24 * 3600));
    round(&model, &cluster, &admin).await.unwrap();
    let m = model.lock().unwrap();
    assert!(
        m.requests("/secrets").iter().all(|r| r.starts_with("GET ")),
        "{:#?}",
        m.log
    );
    assert_eq!(m.secrets, before);
    assert!(
        m.events
            .iter()
            .all(|e| !e.starts_with("Certificate") && !e.starts_with("CA"))
    );
}

#[tokio::test]
async fn renewal_before_expiry_patches_the_component_secrets_in_place() {
    let cluster = example();
    let admin = fake();
    let model = created(&cluster, &admin).await;
    let (old, sts_before) = {
        let m = model.lock().unwrap();
        let old: BTreeMap<String, (String, String)> = Component::ALL
            .iter()
            .map(|c| {
                let name = format!("demo-{}-tls", c.as_str());
                (
                    name.clone(),
                    (
                        m.secret_data(&name, "tls.crt").unwrap(),
                        m.secret_data(&name, "tls.key").unwrap(),
                    ),
                )
            })
            .collect();
        let sts = (
            m.applied("/statefulsets/demo-meta").unwrap().clone(),
            m.applied("/statefulsets/demo-chunk").unwrap().clone(),
            m.applied("/configmaps/demo-config").unwrap().clone(),
        );
        (old, sts)
    };

    // Just before the renewal point (a third of 90 days left): nothing.
    let renew_at = t0() + CERT_LIFETIME - CERT_LIFETIME / 3;
    set_now(renew_at - Duration::from_secs(3600 * 2));
    round(&model, &cluster, &admin).await.unwrap();
    assert!(
        model
            .lock()
            .unwrap()
            .requests("/secrets")
            .iter()
            .all(|r| r.starts_with("GET "))
    );

    // Past it: each component Secret is patched, the CA is not.
    let now = renew_at + Duration::from_secs(3600);
    set_now(now);
    round(&model, &cluster, &admin).await.unwrap();
    let m = model.lock().unwrap();
    let writes: Vec<String> = m
        .requests("/secrets")
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect();
    assert_eq!(
        writes,
        [
            "PATCH /api/v1/namespaces/default/secrets/demo-meta-tls",
            "PATCH /api/v1/namespaces/default/secrets/demo-chunk-tls",
            "PATCH /api/v1/namespaces/default/secrets/demo-gateway-tls",
        ]
    );
    assert_eq!(
        m.events[..3],
        [
            "CertificateRenewed",
            "CertificateRenewed",
            "CertificateRenewed"
        ]
    );
    let ca = m.secret_data("demo-ca", "ca.crt").unwrap();
    for (name, (old_cert, old_key)) in &old {
        let cert = m.secret_data(name, "tls.crt").unwrap();
        assert_ne!(&cert, old_cert, "{name}");
        assert_ne!(
            &m.secret_data(name, "tls.key").unwrap(),
            old_key,
            "{name}: a new key too"
        );
        let (before, after) = (
            certs::parse_cert(old_cert).unwrap(),
            certs::parse_cert(&cert).unwrap(),
        );
        assert!(after.not_after > before.not_after, "{name}");
        assert_eq!(after.not_after, now + CERT_LIFETIME);
        assert_eq!(after.sans, before.sans);
        assert_eq!(after.issuer_cn, before.issuer_cn);
        let dns = if name == "demo-meta-tls" {
            META_DNS
        } else {
            "localhost"
        };
        verify(&ca, &cert, dns, now).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The old certificate would have expired within the month.
        assert!(
            verify(
                &ca,
                old_cert,
                dns,
                t0() + CERT_LIFETIME + Duration::from_secs(1)
            )
            .is_err()
        );
    }
    // In place: the pod templates and the shared ConfigMap did not change, so nothing rolls;
    // the kubelet updates the mounted files and the servers re-read them.
    assert_eq!(m.applied("/statefulsets/demo-meta").unwrap(), &sts_before.0);
    assert_eq!(
        m.applied("/statefulsets/demo-chunk").unwrap(),
        &sts_before.1
    );
    assert_eq!(m.applied("/configmaps/demo-config").unwrap(), &sts_before.2);
}

#[tokio::test]
async fn the_ca_rotates_with_overlap_then_reissues_every_component() {
    let cluster = example();
    let admin = fake();
    let model = created(&cluster, &admin).await;
    let old_ca = model
        .lock()
        .unwrap()
        .secret_data("demo-ca", "ca.crt")
        .unwrap();

    // A third of the CA's life left: a next CA joins every bundle but does not sign yet.
    let due = t0() + CA_LIFETIME - CA_LIFETIME / 3 + Duration::from_secs(24 * 3600);
    set_now(due);
    round(&model, &cluster, &admin).await.unwrap();
    let next_ca = {
        let m = model.lock().unwrap();
        assert!(
            m.events.contains(&"CARotationStarted".to_string()),
            "{:?}",
            m.events
        );
        assert_eq!(
            m.secret_data("demo-ca", "ca.crt").unwrap(),
            old_ca,
            "the old CA still signs"
        );
        let next = m.secret_data("demo-ca", "next.crt").unwrap();
        assert!(m.secret_data("demo-ca", "next.key").is_some());
        let bundle = m.secret_data("demo-meta-tls", "ca.crt").unwrap();
        assert_eq!(
            certs_of(&bundle),
            [certs_of(&old_ca), certs_of(&next)].concat()
        );
        // (The component certificates, long expired by now, were renewed by the old CA.)
        let cert = m.secret_data("demo-meta-tls", "tls.crt").unwrap();
        verify(&old_ca, &cert, META_DNS, due).unwrap();
        assert!(verify(&next, &cert, META_DNS, due).is_err());
        next
    };

    // Within the overlap: nothing changes.
    set_now(due + CA_OVERLAP / 2);
    round(&model, &cluster, &admin).await.unwrap();
    assert!(
        model
            .lock()
            .unwrap()
            .requests("/secrets")
            .iter()
            .all(|r| r.starts_with("GET "))
    );

    // After it: the next CA signs, every component is reissued by it, and the old CA stays in
    // the bundles (connections made with old certificates keep verifying until they expire).
    let promoted = due + CA_OVERLAP + Duration::from_secs(3600);
    set_now(promoted);
    round(&model, &cluster, &admin).await.unwrap();
    let m = model.lock().unwrap();
    assert!(
        m.events.contains(&"CARotated".to_string()),
        "{:?}",
        m.events
    );
    assert_eq!(m.secret_data("demo-ca", "ca.crt").unwrap(), next_ca);
    assert_eq!(m.secret_data("demo-ca", "previous.crt").unwrap(), old_ca);
    assert!(m.secret_data("demo-ca", "next.crt").is_none());
    for component in Component::ALL {
        let name = format!("demo-{}-tls", component.as_str());
        let cert = m.secret_data(&name, "tls.crt").unwrap();
        verify(&next_ca, &cert, "localhost", promoted).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            verify(&old_ca, &cert, "localhost", promoted).is_err(),
            "{name}"
        );
        let bundle = m.secret_data(&name, "ca.crt").unwrap();
        assert_eq!(
            certs_of(&bundle),
            [certs_of(&next_ca), certs_of(&old_ca)].concat()
        );
    }
    // The admin client now trusts the new bundle.
    assert_eq!(
        admin.connections().last().unwrap().as_deref(),
        m.secret_data("demo-meta-tls", "ca.crt").as_deref()
    );
}

#[tokio::test]
async fn a_changed_tls_secret_rolls_the_pods_and_is_read_for_the_admin_client() {
    let mut cluster = example();
    cluster.spec.tls = common::tls_secret("demo-tls-2");
    let admin = fake();
    set_now(t0());
    // A given Secret: made elsewhere (here by the operator's own issuing code, for realism).
    let ca = dogfs_security::issue::Authority::new("test-ca").unwrap();
    let issued = ca
        .issue(&dogfs_security::issue::CertRequest::new("demo").dns([META_DNS]))
        .unwrap();
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let model = Arc::new(Mutex::new(Model {
        chunk_replicas: Some(6),
        ..Model::default()
    }));
    model.lock().unwrap().secrets.insert(
        "demo-tls-2".into(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-tls-2", "namespace": NS},
               "data": {"tls.crt": b64(&issued.cert_pem), "tls.key": b64(&issued.key_pem),
                        "ca.crt": b64(&ca.cert_pem())}}),
    );
    round(&model, &cluster, &admin).await.unwrap();
    let m = model.lock().unwrap();
    // Only the given Secret is read: no CA, no component Secrets.
    assert_eq!(
        m.requests("/secrets")[0],
        "GET /api/v1/namespaces/default/secrets/demo-tls-2"
    );
    assert!(m.secrets.keys().all(|k| !k.ends_with("-ca")));
    assert_eq!(admin.connections(), [Some(ca.cert_pem())]);
    let meta = m.applied("/statefulsets/demo-meta").unwrap();
    assert!(
        meta["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "demo-tls-2")
    );
    // A different Secret name is a different pod template: the StatefulSet rolls its pods.
    let mut before = cluster.clone();
    before.spec.tls = common::tls_secret("demo-tls");
    let inputs = Inputs {
        chunk_replicas: 6,
        ca_bundle: Some(ca.cert_pem()),
    };
    let (a, b) = (
        build::build(&before, &inputs).unwrap(),
        build::build(&cluster, &inputs).unwrap(),
    );
    let template = |d: &build::Desired| d.meta.spec.as_ref().unwrap().template.clone();
    assert_ne!(template(&a), template(&b));
}

#[tokio::test]
async fn cert_manager_certificates_are_applied_and_the_cluster_waits_for_the_secret() {
    let mut cluster = example();
    cluster.spec.tls = Some(TlsSpec {
        issuer_ref: Some(IssuerRef {
            name: "dogfs-ca".into(),
            kind: IssuerKind::ClusterIssuer,
        }),
        ..TlsSpec::default()
    });
    let admin = fake();
    set_now(t0());
    let model = Arc::new(Mutex::new(Model {
        chunk_replicas: Some(6),
        cert_manager: true,
        ..Model::default()
    }));
    round(&model, &cluster, &admin).await.unwrap();
    {
        let m = model.lock().unwrap();
        let certificates = m.requests("/certificates/");
        assert_eq!(
            certificates,
            [
                "PATCH /apis/cert-manager.io/v1/namespaces/default/certificates/demo-meta-tls",
                "PATCH /apis/cert-manager.io/v1/namespaces/default/certificates/demo-chunk-tls",
                "PATCH /apis/cert-manager.io/v1/namespaces/default/certificates/demo-gateway-tls",
            ]
        );
        let meta = m.applied("/certificates/demo-meta-tls").unwrap();
        assert_eq!(meta["spec"]["secretName"], "demo-meta-tls");
        assert_eq!(meta["spec"]["uris"], json!(["spiffe://dogfs/meta"]));
        assert_eq!(meta["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(
            meta["spec"]["usages"],
            json!([
                "digital signature",
                "key encipherment",
                "server auth",
                "client auth"
            ])
        );
        assert_eq!(meta["spec"]["duration"], "2160h");
        assert_eq!(meta["spec"]["renewBefore"], "720h");
        assert!(
            meta["spec"]["dnsNames"]
                .as_array()
                .unwrap()
                .contains(&json!(META_DNS))
        );
        // No Secret from cert-manager yet: pending, the admin API is not called, the rest
        // of the cluster is applied all the same.
        let status = m.status.as_ref().unwrap();
        let tls = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "TLSReady")
            .unwrap();
        assert_eq!(
            (tls["status"].as_str(), tls["reason"].as_str()),
            (Some("False"), Some("CertificatePending"))
        );
        assert!(admin.connections().is_empty());
        assert!(m.applied("/statefulsets/demo-meta").is_some());
        let client = m.applied("/configmaps/demo-client").unwrap();
        assert!(client["data"].get("ca.crt").is_none());
    }
    // cert-manager writes the Secret: the next reconcile trusts its ca.crt.
    use base64::Engine as _;
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBcm\n-----END CERTIFICATE-----\n";
    model.lock().unwrap().secrets.insert(
        "demo-meta-tls".into(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-meta-tls"},
               "data": {"ca.crt": base64::engine::general_purpose::STANDARD.encode(ca)}}),
    );
    round(&model, &cluster, &admin).await.unwrap();
    let m = model.lock().unwrap();
    assert_eq!(admin.connections(), [Some(ca.to_string())]);
    let tls = m.status.as_ref().unwrap()["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "TLSReady")
        .unwrap()
        .clone();
    assert_eq!(
        (tls["status"].as_str(), tls["reason"].as_str()),
        (Some("True"), Some("CertManager"))
    );
}

#[tokio::test]
async fn without_cert_manager_the_condition_says_so_and_nothing_crash_loops() {
    let mut cluster = example();
    cluster.spec.tls = Some(TlsSpec {
        issuer_ref: Some(IssuerRef {
            name: "dogfs-ca".into(),
            kind: IssuerKind::Issuer,
        }),
        ..TlsSpec::default()
    });
    set_now(t0());
    let model = Arc::new(Mutex::new(Model::default()));
    // Not an error: the reconcile finishes, applies the cluster and reports.
    round(&model, &cluster, &fake()).await.unwrap();
    let m = model.lock().unwrap();
    let status = m.status.as_ref().unwrap();
    let tls = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "TLSReady")
        .unwrap();
    assert_eq!(
        (tls["status"].as_str(), tls["reason"].as_str()),
        (Some("False"), Some("CertManagerMissing"))
    );
    assert!(
        tls["message"]
            .as_str()
            .unwrap()
            .contains("install cert-manager"),
        "{tls}"
    );
    assert!(m.applied("/statefulsets/demo-chunk").is_some());
}

#[tokio::test]
async fn the_auth_secret_is_generated_once_then_completed_but_never_regenerated() {
    let cluster = example();
    let admin = fake();
    let model = created(&cluster, &admin).await;
    let token = model
        .lock()
        .unwrap()
        .secret_data("demo-auth", "token")
        .unwrap();
    // Someone removed grant.key: only that key is added back, by a merge patch.
    model.lock().unwrap().secrets.get_mut("demo-auth").unwrap()["data"]
        .as_object_mut()
        .unwrap()
        .remove("grant.key");
    set_now(t0() + Duration::from_secs(60));
    round(&model, &cluster, &admin).await.unwrap();
    let m = model.lock().unwrap();
    let auth: Vec<String> = m
        .requests("/secrets")
        .into_iter()
        .filter(|r| r.contains("demo-auth") || r.starts_with("POST"))
        .collect();
    assert_eq!(
        auth,
        [
            "GET /api/v1/namespaces/default/secrets/demo-auth",
            "PATCH /api/v1/namespaces/default/secrets/demo-auth",
        ]
    );
    let patch = m.applied("/secrets/demo-auth").unwrap();
    assert_eq!(
        patch["data"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["grant.key"]
    );
    assert_eq!(m.secret_data("demo-auth", "token").unwrap(), token);
    assert_eq!(
        admin.tokens().last().unwrap().as_deref(),
        Some(token.as_str())
    );
}

#[tokio::test]
async fn a_given_auth_secret_without_the_grant_key_fails_naming_it() {
    let mut cluster = example();
    cluster.spec.auth = Some(AuthSpec {
        enabled: true,
        secret_name: Some("my-auth".into()),
    });
    set_now(t0());
    let model = Arc::new(Mutex::new(Model::default()));
    use base64::Engine as _;
    model.lock().unwrap().secrets.insert(
        "my-auth".into(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "my-auth"},
               "data": {"token": base64::engine::general_purpose::STANDARD.encode("a-long-enough-admin-token")}}),
    );
    let error = round(&model, &cluster, &fake()).await.unwrap_err();
    assert!(
        error.contains("my-auth") && error.contains("grant.key"),
        "{error}"
    );
    // Never written by the operator, and nothing applied.
    let m = model.lock().unwrap();
    assert!(m.requests("my-auth").iter().all(|r| r.starts_with("GET ")));
    assert!(m.applied("/statefulsets/demo-meta").is_none());
}

#[tokio::test]
async fn network_policies_switched_off_are_deleted() {
    let mut cluster = example();
    common::without_tls_and_auth(&mut cluster);
    cluster.spec.network_policy = Some(NetworkPolicySpec {
        enabled: false,
        metrics_from: None,
    });
    let model = Arc::new(Mutex::new(Model::default()));
    round(&model, &cluster, &fake()).await.unwrap();
    let m = model.lock().unwrap();
    assert_eq!(
        m.requests("networkpolicies"),
        [
            "DELETE /apis/networking.k8s.io/v1/namespaces/default/networkpolicies/demo-meta",
            "DELETE /apis/networking.k8s.io/v1/namespaces/default/networkpolicies/demo-chunk",
        ]
    );
    // TLS and auth off: no Secret is read or written, no TLSReady condition.
    assert!(m.requests("/secrets").is_empty());
    let status = m.status.as_ref().unwrap();
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "TLSReady")
    );
}

#[tokio::test]
async fn two_tls_modes_at_once_are_an_invalid_spec_reported_in_the_status() {
    let mut cluster = example();
    cluster.spec.tls = Some(TlsSpec {
        secret_name: Some("demo-tls".into()),
        mode: Some(dogfs_operator::crd::TlsModeSpec::Disabled),
        ..TlsSpec::default()
    });
    let model = Arc::new(Mutex::new(Model::default()));
    round(&model, &cluster, &fake()).await.unwrap();
    let m = model.lock().unwrap();
    assert!(m.requests("/secrets").is_empty() && m.applied("/statefulsets/demo-meta").is_none());
    let status = m.status.as_ref().unwrap();
    assert_eq!(status["phase"], "Invalid");
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.tls: give at most one of secretName, issuerRef and mode"),
        "{ready}"
    );
}
