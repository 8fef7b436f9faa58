//! Pure builders: a validated `DogCluster` in, the exact child objects out.
//!
//! Nothing here talks to the API server, so the output can be compared against reviewed golden
//! files and validated against the Kubernetes schemas offline.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::auth::{self, AUTH_DIR, GRANT_KEY, TOKEN_KEY};
use crate::certs::{self, Component};
use crate::crd::{DogCluster, MANAGER, RepairSpec, RetentionPolicy, S3Spec, StorageSpec, TlsMode};
use crate::netpol;

pub const META_GRPC_PORT: i32 = 7000;
pub const CHUNK_GRPC_PORT: i32 = 7100;
pub const HTTP_PORT: i32 = 9100;
/// Where each server keeps its data (the PVC mount).
pub const DATA_DIR: &str = "/var/lib/dogfs";
/// Name of the volume claim template, so pod `<sts>-<i>` has the claim `data-<sts>-<i>`.
pub const DATA_VOLUME: &str = "data";
/// Where the TLS Secret is mounted (on the servers all of it; on the S3 gateway only
/// [`TLS_CA_KEY`]).
pub const TLS_DIR: &str = "/etc/dogfs/tls";
/// The TLS Secret's key (and file) holding the CA bundle (cert-manager's layout).
pub const TLS_CA_KEY: &str = "ca.crt";
/// Port every S3 gateway pod listens on; the Service maps `spec.s3.service.port` to it, so
/// changing the Service port does not restart the pods.
pub const S3_PORT: i32 = 9000;
/// `app.kubernetes.io/component` of the gateway's objects and pods.
pub const S3_COMPONENT: &str = "s3";
/// Where the S3 credentials Secret is mounted, and the Secret key (file) the gateway reads.
pub const S3_CREDENTIALS_DIR: &str = "/etc/dogfs/s3";
pub const S3_CREDENTIALS_KEY: &str = "credentials.yaml";
/// UID/GID of the image's unprivileged user.
pub const RUN_AS: i64 = 65532;
/// Pod template annotation that changes whenever the shared ConfigMap does, so pods that read
/// it through `envFrom` restart with the new values.
pub const CONFIG_HASH_ANNOTATION: &str = "dogfs.io/config-hash";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Owner references and names need these; objects read from the API server always have them.
    #[error("DogCluster has no metadata.{0}")]
    MissingMetadata(&'static str),
}

/// Everything the builders need beyond the spec, decided before building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// Chunk StatefulSet replicas for this round (decided by [`crate::scale::plan`]).
    pub chunk_replicas: i32,
    /// PEM CA bundle for the client ConfigMap: read from the TLS Secret, or the operator's
    /// CA bundle. `None` with TLS off, or while cert-manager has not issued yet.
    pub ca_bundle: Option<String>,
}

/// The child objects of one DogCluster, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config: ConfigMap,
    pub client_config: ConfigMap,
    pub meta_headless: Service,
    pub meta_service: Service,
    pub chunk_headless: Service,
    pub chunk_service: Service,
    pub meta: StatefulSet,
    pub chunk: StatefulSet,
    pub meta_pdb: PodDisruptionBudget,
    pub chunk_pdb: PodDisruptionBudget,
    /// The S3 gateway, when `spec.s3.enabled`.
    pub s3: Option<S3Gateway>,
    /// `<c>-meta` and `<c>-chunk`; empty when `networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
}

/// The S3 gateway's objects, applied in this order (the Service first, so the client
/// ConfigMap's `DOGFS_S3_ENDPOINT` resolves as soon as pods are ready).
#[derive(Debug, Clone, PartialEq)]
pub struct S3Gateway {
    pub service: Service,
    pub deployment: Deployment,
    pub pdb: PodDisruptionBudget,
}

/// Object names derived from the cluster name; the single place that spells them.
#[derive(Debug, Clone)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
}

impl Names {
    pub fn of(cluster: &DogCluster) -> Result<Names, Error> {
        Ok(Names {
            cluster: cluster
                .metadata
                .name
                .clone()
                .ok_or(Error::MissingMetadata("name"))?,
            namespace: cluster
                .metadata
                .namespace
                .clone()
                .ok_or(Error::MissingMetadata("namespace"))?,
        })
    }
    pub fn meta(&self) -> String {
        format!("{}-meta", self.cluster)
    }
    pub fn meta_headless(&self) -> String {
        format!("{}-meta-headless", self.cluster)
    }
    pub fn chunk(&self) -> String {
        format!("{}-chunk", self.cluster)
    }
    pub fn chunk_headless(&self) -> String {
        format!("{}-chunk-headless", self.cluster)
    }
    pub fn config(&self) -> String {
        format!("{}-config", self.cluster)
    }
    pub fn client_config(&self) -> String {
        format!("{}-client", self.cluster)
    }
    /// The operator's CA (`OperatorCA` mode): certificate and key, kept across reconciles.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }
    /// A component's TLS Secret in the `OperatorCA` and cert-manager modes (`meta`, `chunk`,
    /// `gateway`); cert-manager's `Certificate` has the same name.
    pub fn tls_secret(&self, component: &str) -> String {
        format!("{}-{component}-tls", self.cluster)
    }
    /// The generated auth Secret (bootstrap token and shard-grant key).
    pub fn auth_secret(&self) -> String {
        format!("{}-auth", self.cluster)
    }
    /// The NetworkPolicy of one server role (`meta` or `chunk`), named like its StatefulSet.
    pub fn network_policy(&self, component: &str) -> String {
        format!("{}-{component}", self.cluster)
    }
    /// The S3 gateway's Deployment, Service and PodDisruptionBudget.
    pub fn s3(&self) -> String {
        format!("{}-s3", self.cluster)
    }
    /// What S3 clients in the cluster use: the gateway Service.
    pub fn s3_endpoint(&self, port: i32) -> String {
        format!("http://{}.{}.svc:{port}", self.s3(), self.namespace)
    }
    /// Stable DNS name of meta pod `ordinal`, with the gRPC port.
    pub fn meta_peer(&self, ordinal: i32) -> String {
        format!(
            "{}-{ordinal}.{}.{}.svc.cluster.local:{META_GRPC_PORT}",
            self.meta(),
            self.meta_headless(),
            self.namespace
        )
    }
    /// Pod `ordinal` of the chunk StatefulSet.
    pub fn chunk_pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.chunk())
    }
    /// The PersistentVolumeClaim of chunk pod `ordinal` (named after the claim template).
    pub fn chunk_claim(&self, ordinal: i32) -> String {
        format!("{DATA_VOLUME}-{}", self.chunk_pod(ordinal))
    }
    /// The address chunk pod `ordinal` advertises (`DOGFS_ADVERTISE_ADDR`), which is how the
    /// metadata service's registry names it.
    pub fn chunk_address(&self, ordinal: i32) -> String {
        format!("{}{}", self.chunk_pod(ordinal), self.chunk_address_suffix())
    }
    fn chunk_address_suffix(&self) -> String {
        format!(
            ".{}.{}.svc.cluster.local:{CHUNK_GRPC_PORT}",
            self.chunk_headless(),
            self.namespace
        )
    }
    /// The ordinal of the chunk pod behind a registry address; `None` for any other address
    /// (a server outside this StatefulSet, another cluster's, a different port).
    pub fn chunk_ordinal_of_address(&self, address: &str) -> Option<i32> {
        let pod = address.strip_suffix(&self.chunk_address_suffix())?;
        self.chunk_ordinal_of_pod(pod)
    }
    /// The ordinal in a chunk pod name `<c>-chunk-<ordinal>`.
    pub fn chunk_ordinal_of_pod(&self, pod: &str) -> Option<i32> {
        let digits = pod.strip_prefix(&self.chunk())?.strip_prefix('-')?;
        ordinal(digits)
    }
    /// The ordinal in a chunk claim name `data-<c>-chunk-<ordinal>`.
    pub fn chunk_ordinal_of_claim(&self, claim: &str) -> Option<i32> {
        let pod = claim.strip_prefix(DATA_VOLUME)?.strip_prefix('-')?;
        self.chunk_ordinal_of_pod(pod)
    }
    /// Label selector of the chunk pods and of their claims (the claim template carries the
    /// same labels).
    pub fn chunk_selector(&self) -> String {
        selector_labels(self, Role::Chunk.component())
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
    /// Where the operator reaches the admin API: the metadata client Service, which spreads
    /// calls over the metadata nodes (any of them answers, forwarding to the leader).
    /// `https://` with TLS, trusting the cluster's CA bundle (see
    /// [`crate::admin::GrpcConnector`]).
    pub fn admin_endpoint(&self, tls: bool) -> String {
        self.endpoint(tls)
    }
    /// What clients in the cluster dial: the meta client Service.
    pub fn endpoint(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!(
            "{scheme}://{}.{}.svc:{META_GRPC_PORT}",
            self.meta(),
            self.namespace
        )
    }
}

/// The two server roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Meta,
    Chunk,
}

impl Role {
    fn component(self) -> &'static str {
        match self {
            Role::Meta => "meta",
            Role::Chunk => "chunk",
        }
    }
}

/// A StatefulSet ordinal: decimal digits only, no sign or leading zero (as the controller
/// writes them), within `i32`.
fn ordinal(digits: &str) -> Option<i32> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// Builds every child object of `cluster`.
pub fn build(cluster: &DogCluster, inputs: &Inputs) -> Result<Desired, Error> {
    let names = Names::of(cluster)?;
    let owner = owner_reference(cluster)?;
    let spec = &cluster.spec;
    let tls = spec.tls_mode().is_enabled();

    let config_data = shared_config(cluster, &names);
    let config_hash = format!("{:016x}", fnv1a(&config_data));
    let config = ConfigMap {
        metadata: metadata(&names, names.config(), "config", &owner),
        data: Some(config_data),
        ..ConfigMap::default()
    };

    let mut client_data = BTreeMap::from([("DOGFS_ENDPOINT".to_string(), names.endpoint(tls))]);
    if let Some(ca) = &inputs.ca_bundle {
        client_data.insert(TLS_CA_KEY.to_string(), ca.clone());
    }
    let s3 = spec.s3.as_ref().filter(|s3| s3.enabled);
    if let Some(s3) = s3 {
        client_data.insert(
            "DOGFS_S3_ENDPOINT".to_string(),
            names.s3_endpoint(s3.service.port),
        );
    }
    let client_config = ConfigMap {
        metadata: metadata(&names, names.client_config(), "client", &owner),
        data: Some(client_data),
        ..ConfigMap::default()
    };

    Ok(Desired {
        config,
        client_config,
        meta_headless: service(&names, &owner, Role::Meta, true),
        meta_service: service(&names, &owner, Role::Meta, false),
        chunk_headless: service(&names, &owner, Role::Chunk, true),
        chunk_service: service(&names, &owner, Role::Chunk, false),
        meta: stateful_set(
            cluster,
            &names,
            &owner,
            Role::Meta,
            spec.meta.replicas,
            &config_hash,
        ),
        chunk: stateful_set(
            cluster,
            &names,
            &owner,
            Role::Chunk,
            inputs.chunk_replicas,
            &config_hash,
        ),
        meta_pdb: pdb(&names, &owner, names.meta(), Role::Meta.component()),
        chunk_pdb: pdb(&names, &owner, names.chunk(), Role::Chunk.component()),
        s3: s3.map(|s3| S3Gateway {
            service: s3_service(&names, &owner, s3),
            deployment: s3_deployment(cluster, &names, &owner, s3),
            pdb: pdb(&names, &owner, names.s3(), S3_COMPONENT),
        }),
        network_policies: if spec.network_policy_enabled() {
            netpol::network_policies(cluster, &names, &owner)
        } else {
            Vec::new()
        },
    })
}

pub fn owner_reference(cluster: &DogCluster) -> Result<OwnerReference, Error> {
    let mut owner = cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    // Foreground deletion of the DogCluster waits for its children.
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// Settings both servers read through `envFrom`; clap ignores variables a binary has no flag for.
fn shared_config(cluster: &DogCluster, names: &Names) -> BTreeMap<String, String> {
    let peers: Vec<String> = (0..cluster.spec.meta.replicas)
        .map(|i| names.meta_peer(i))
        .collect();
    let peers = peers.join(",");
    BTreeMap::from([
        ("DOGFS_PEERS".to_string(), peers.clone()),
        ("DOGFS_META_ENDPOINTS".to_string(), peers),
        (
            "DOGFS_PARTITIONS".to_string(),
            cluster.spec.meta.partitions.to_string(),
        ),
        ("DOGFS_EC_K".to_string(), cluster.spec.erasure.k.to_string()),
        ("DOGFS_EC_M".to_string(), cluster.spec.erasure.m.to_string()),
    ])
}

/// `dogfs-meta`'s repair settings, only those the spec sets: an unset one has no variable, so
/// the server's own default applies (for the write quorum, `0` = k+1).
///
/// These go on the metadata container rather than into the shared ConfigMap: unlike the other
/// meta-only settings there (partitions, scheme), they can change, and a ConfigMap change
/// restarts chunk servers too (the config-hash annotation is on both pod templates) for
/// settings they never read. On the pod template, a change rolls only the metadata pods.
fn repair_env(repair: Option<&RepairSpec>) -> Vec<EnvVar> {
    let Some(repair) = repair else {
        return Vec::new();
    };
    let mut vars = Vec::new();
    if let Some(quorum) = repair.min_write_shards {
        vars.push(env("DOGFS_MIN_WRITE_SHARDS", quorum.to_string()));
    }
    if let Some(after) = repair.after_seconds {
        vars.push(env("DOGFS_REPAIR_AFTER_SECS", after.to_string()));
    }
    vars
}

/// Stable, dependency-free hash for the config annotation (the golden files pin its value).
fn fnv1a(data: &BTreeMap<String, String>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in data {
        for byte in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Labels that select one role's pods; also part of every object's labels.
pub(crate) fn selector_labels(names: &Names, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "dogfs".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            names.cluster.clone(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

pub(crate) fn labels(names: &Names, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(names, component);
    labels.insert("app.kubernetes.io/part-of".to_string(), "dogfs".to_string());
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        MANAGER.to_string(),
    );
    labels
}

pub(crate) fn metadata(
    names: &Names,
    name: String,
    component: &str,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(names, component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn grpc_port(role: Role) -> i32 {
    match role {
        Role::Meta => META_GRPC_PORT,
        Role::Chunk => CHUNK_GRPC_PORT,
    }
}

fn service(names: &Names, owner: &OwnerReference, role: Role, headless: bool) -> Service {
    let name = match (role, headless) {
        (Role::Meta, true) => names.meta_headless(),
        (Role::Meta, false) => names.meta(),
        (Role::Chunk, true) => names.chunk_headless(),
        (Role::Chunk, false) => names.chunk(),
    };
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    };
    Service {
        metadata: metadata(names, name, role.component(), owner),
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".to_string()),
            // Raft peers and registering chunk servers must resolve each other before any of
            // them is ready, so the headless names exist from pod start.
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(selector_labels(names, role.component())),
            ports: Some(vec![port("grpc", grpc_port(role)), port("http", HTTP_PORT)]),
            type_: (!headless).then(|| "ClusterIP".to_string()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pdb(
    names: &Names,
    owner: &OwnerReference,
    name: String,
    component: &str,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(names, name, component, owner),
        spec: Some(PodDisruptionBudgetSpec {
            // Meta: a 3-node Raft group keeps quorum with one down. Chunk: voluntary evictions
            // one at a time, so with m >= 1 no segment loses more than one shard to them.
            // S3: stateless, but a drain should not take every gateway at once.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(names, component)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn storage_claim(names: &Names, role: Role, storage: &StorageSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(selector_labels(names, role.component())),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The StatefulSet's own `whenScaled`. Chunk claims are always `Retain` here: the operator
/// deletes a scaled-down server's claim itself (per `pvcRetention.whenScaled`), and only after
/// the server has been removed from the registry; the StatefulSet controller would delete it
/// as soon as the pod goes, before the operator has checked anything. Metadata replicas never
/// change, so the spec's value is passed through there.
fn when_scaled(role: Role, policy: RetentionPolicy) -> String {
    match role {
        Role::Meta => policy.as_str().to_string(),
        Role::Chunk => RetentionPolicy::Retain.as_str().to_string(),
    }
}

fn stateful_set(
    cluster: &DogCluster,
    names: &Names,
    owner: &OwnerReference,
    role: Role,
    replicas: i32,
    config_hash: &str,
) -> StatefulSet {
    let spec = &cluster.spec;
    let (name, headless, storage, resources, binary) = match role {
        Role::Meta => (
            names.meta(),
            names.meta_headless(),
            &spec.meta.storage,
            spec.meta.resources.clone(),
            "dogfs-meta",
        ),
        Role::Chunk => (
            names.chunk(),
            names.chunk_headless(),
            &spec.chunk.storage,
            spec.chunk.resources.clone(),
            "dogfs-chunk",
        ),
    };
    let port = grpc_port(role);

    let mut env_vars = vec![env_field("POD_NAME", "metadata.name")];
    if role == Role::Meta {
        // The StatefulSet controller labels each pod with its ordinal (Kubernetes >= 1.28).
        env_vars.push(env_field(
            "DOGFS_NODE_ID",
            "metadata.labels['apps.kubernetes.io/pod-index']",
        ));
    }
    env_vars.push(env(
        "DOGFS_ADVERTISE_ADDR",
        format!(
            "$(POD_NAME).{headless}.{}.svc.cluster.local:{port}",
            names.namespace
        ),
    ));
    env_vars.push(env("DOGFS_GRPC_ADDR", format!("0.0.0.0:{port}")));
    env_vars.push(env("DOGFS_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}")));
    env_vars.push(env("DOGFS_DATA_DIR", DATA_DIR));
    if role == Role::Chunk
        && let Some(reserve) = &spec.chunk.reserve
    {
        env_vars.push(env("DOGFS_RESERVE", reserve.clone()));
    }
    if role == Role::Chunk {
        // A retained claim reused after a scale-down and scale-up holds the id of a server the
        // registry removed: the server then wipes those (unreferenced) shards and registers
        // under a new id instead of crash-looping on the refusal.
        env_vars.push(env("DOGFS_REJOIN_WHEN_REMOVED", "true"));
    }
    if role == Role::Meta {
        env_vars.extend(repair_env(spec.repair.as_ref()));
    }
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_string(),
            mount_path: DATA_DIR.to_string(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let tls_secret = match spec.tls_mode() {
        TlsMode::Disabled => None,
        TlsMode::Secret(name) => Some(name.to_string()),
        TlsMode::CertManager(_) | TlsMode::OperatorCa => Some(names.tls_secret(match role {
            Role::Meta => Component::Meta.as_str(),
            Role::Chunk => Component::Chunk.as_str(),
        })),
    };
    if let Some(secret) = tls_secret {
        env_vars.push(env("DOGFS_TLS_CERT", format!("{TLS_DIR}/tls.crt")));
        env_vars.push(env("DOGFS_TLS_KEY", format!("{TLS_DIR}/tls.key")));
        env_vars.push(env("DOGFS_TLS_CA", format!("{TLS_DIR}/{TLS_CA_KEY}")));
        mounts.push(VolumeMount {
            name: "tls".to_string(),
            mount_path: TLS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "tls".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(secret) = auth::secret_name(cluster, names) {
        // Files, not variables: the servers re-read them when the Secret changes (rotation
        // without a restart). Chunk servers only verify grants, so they get only the key.
        let keys: &[&str] = match role {
            Role::Meta => &[TOKEN_KEY, GRANT_KEY],
            Role::Chunk => &[GRANT_KEY],
        };
        if role == Role::Meta {
            env_vars.push(env(
                "DOGFS_AUTH_TOKEN_FILE",
                format!("{AUTH_DIR}/{TOKEN_KEY}"),
            ));
        }
        env_vars.push(env(
            "DOGFS_GRANT_KEY_FILE",
            format!("{AUTH_DIR}/{GRANT_KEY}"),
        ));
        mounts.push(VolumeMount {
            name: "auth".to_string(),
            mount_path: AUTH_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "auth".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                items: Some(
                    keys.iter()
                        .map(|k| KeyToPath {
                            key: k.to_string(),
                            path: k.to_string(),
                            ..KeyToPath::default()
                        })
                        .collect(),
                ),
                // Readable by the pod's group (fsGroup) only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: role.component().to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec![binary.to_string()]),
        env: Some(env_vars),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config(),
                ..ConfigMapEnvSource::default()
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".to_string()),
                container_port: port,
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".to_string()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
        ]),
        // Startup allows a slow first start (WAL recovery, Raft catch-up) without letting the
        // liveness probe kill it.
        startup_probe: Some(http_probe("/healthz", 5, 60)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        resources,
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context()),
        ..Container::default()
    };

    let selector = selector_labels(names, role.component());
    let pod_labels = labels(names, role.component());

    StatefulSet {
        metadata: metadata(names, name, role.component(), owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless),
            // Raft needs a quorum before any meta pod is ready, and chunk servers do not depend
            // on each other: start all pods at once instead of one by one.
            pod_management_policy: Some("Parallel".to_string()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(spec.pvc_retention.when_deleted.as_str().to_string()),
                    when_scaled: Some(when_scaled(role, spec.pvc_retention.when_scaled)),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(match role {
                        Role::Meta => 30,
                        // In-flight shard streams get time to finish.
                        Role::Chunk => 60,
                    }),
                    security_context: Some(pod_security_context()),
                    topology_spread_constraints: Some(spread(&selector)),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![storage_claim(names, role, storage)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Every DogFS pod runs as the image's unprivileged user under the runtime's seccomp profile.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        fs_group_change_policy: Some("OnRootMismatch".to_string()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Spread the pods of one selector over nodes and zones.
fn spread(selector: &BTreeMap<String, String>) -> Vec<TopologySpreadConstraint> {
    let one = |topology_key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: topology_key.to_string(),
        // Preferences, not rules: a small cluster (or kind) still schedules every pod.
        when_unsatisfiable: "ScheduleAnyway".to_string(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    };
    vec![
        one("kubernetes.io/hostname"),
        one("topology.kubernetes.io/zone"),
    ]
}

/// The gateway's Service: `spec.s3.service.port` of the chosen type, to the pods' port.
fn s3_service(names: &Names, owner: &OwnerReference, s3: &S3Spec) -> Service {
    Service {
        metadata: metadata(names, names.s3(), S3_COMPONENT, owner),
        spec: Some(ServiceSpec {
            type_: Some(s3.service.type_.as_str().to_string()),
            selector: Some(selector_labels(names, S3_COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("s3".to_string()),
                port: s3.service.port,
                target_port: Some(IntOrString::String("s3".to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn tcp_probe(period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("s3".to_string()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The gateway's Deployment: `dogfs-s3` pods, stateless, talking to the metadata Service.
fn s3_deployment(
    cluster: &DogCluster,
    names: &Names,
    owner: &OwnerReference,
    s3: &S3Spec,
) -> Deployment {
    let spec = &cluster.spec;
    let mut env_vars = vec![
        // With spec.tls the servers speak TLS only: the gateway dials `https://` and trusts
        // the TLS Secret's CA (`DOGFS_CA`, below). It is an ordinary client (no certificate
        // of its own): the methods it calls are open to any TLS client.
        env(
            "DOGFS_ENDPOINT",
            names.endpoint(spec.tls_mode().is_enabled()),
        ),
        env("DOGFS_S3_LISTEN", format!("0.0.0.0:{S3_PORT}")),
    ];
    if let Some(region) = &s3.region {
        env_vars.push(env("DOGFS_S3_REGION", region.clone()));
    }
    if s3.anonymous {
        env_vars.push(env("DOGFS_S3_ANONYMOUS", "true"));
    }
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_string(),
        mount_path: "/tmp".to_string(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if let Some(secret) = &s3.credentials_secret {
        env_vars.push(env(
            "DOGFS_S3_CREDENTIALS",
            format!("{S3_CREDENTIALS_DIR}/{S3_CREDENTIALS_KEY}"),
        ));
        mounts.push(VolumeMount {
            name: "credentials".to_string(),
            mount_path: S3_CREDENTIALS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "credentials".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                // Only the one key: a Secret without it fails the pod with an event naming
                // the key, rather than a gateway that starts and cannot find its file.
                items: Some(vec![KeyToPath {
                    key: S3_CREDENTIALS_KEY.to_string(),
                    path: S3_CREDENTIALS_KEY.to_string(),
                    ..KeyToPath::default()
                }]),
                // Readable by the pod's group (fsGroup) only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let tls_volume = match spec.tls_mode() {
        TlsMode::Disabled => None,
        // Only the CA bundle: the given Secret's key is the servers', so it is not in the
        // gateway's pods at all.
        TlsMode::Secret(name) => Some(SecretVolumeSource {
            secret_name: Some(name.to_string()),
            items: Some(vec![KeyToPath {
                key: TLS_CA_KEY.to_string(),
                path: TLS_CA_KEY.to_string(),
                ..KeyToPath::default()
            }]),
            ..SecretVolumeSource::default()
        }),
        // Its own certificate (role gateway), presented as a client certificate.
        TlsMode::CertManager(_) | TlsMode::OperatorCa => {
            env_vars.push(env("DOGFS_TLS_CERT", format!("{TLS_DIR}/tls.crt")));
            env_vars.push(env("DOGFS_TLS_KEY", format!("{TLS_DIR}/tls.key")));
            Some(SecretVolumeSource {
                secret_name: Some(certs::secret_for(names, None, Component::Gateway)),
                ..SecretVolumeSource::default()
            })
        }
    };
    if let Some(source) = tls_volume {
        env_vars.push(env("DOGFS_CA", format!("{TLS_DIR}/{TLS_CA_KEY}")));
        mounts.push(VolumeMount {
            name: "tls".to_string(),
            mount_path: TLS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "tls".to_string(),
            secret: Some(source),
            ..Volume::default()
        });
    }
    if let Some(secret) = auth::secret_name(cluster, names) {
        // The gateway is a DogFS client: it presents the cluster's admin token.
        env_vars.push(EnvVar {
            name: "DOGFS_TOKEN".to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret,
                    key: TOKEN_KEY.to_string(),
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }

    let container = Container {
        name: S3_COMPONENT.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec!["dogfs-s3".to_string()]),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("s3".to_string()),
            container_port: S3_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        // TCP, not HTTP: the gateway has no health path, and every unsigned S3 request
        // (ListBuckets on `/`) answers 403, which an HTTP probe counts as a failure.
        readiness_probe: Some(tcp_probe(5, 2)),
        liveness_probe: Some(tcp_probe(10, 3)),
        // Endpoints are removed from Services asynchronously: keep accepting for a moment
        // after the pod is marked terminating so no new connection is refused.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".to_string(), "5".to_string()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: s3.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context()),
        ..Container::default()
    };

    let selector = selector_labels(names, S3_COMPONENT);
    Deployment {
        metadata: metadata(names, names.s3(), S3_COMPONENT, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(s3.replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            // Surge rather than shrink: a rollout never lowers serving capacity.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(names, S3_COMPONENT)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    enable_service_links: Some(false),
                    // preStop (5 s) plus the gateway's own drain of requests in flight (30 s).
                    termination_grace_period_seconds: Some(45),
                    security_context: Some(pod_security_context()),
                    topology_spread_constraints: Some(spread(&selector)),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
