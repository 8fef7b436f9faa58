//! The `DogCluster` custom resource (`dogfs.io/v1alpha1`).
//!
//! The schema carries the checks the API server can enforce on admission (OpenAPI bounds and CEL
//! rules); [`crate::validate`] repeats them for objects that reached the cluster another way (an
//! older CRD, a disabled admission path) and reports the failing field in the status.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the operator as a field manager and event reporter.
pub const MANAGER: &str = "dogfs-operator";

/// Most shards a segment may have (k + m): `dogfs-core`'s limit, the one the servers enforce.
pub const MAX_SHARDS: u32 = dogfs_core::scheme::MAX_TOTAL_SHARDS as u32;

/// A DogFS cluster: metadata nodes, chunk servers and the erasure scheme they use.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dogfs.io",
    version = "v1alpha1",
    kind = "DogCluster",
    plural = "dogclusters",
    shortname = "dog",
    namespaced,
    status = "DogClusterStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Meta","type":"string","jsonPath":".status.meta.ready","description":"ready/desired metadata nodes"}"#,
    printcolumn = r#"{"name":"Chunk","type":"string","jsonPath":".status.chunk.ready","description":"ready/desired chunk servers"}"#,
    printcolumn = r#"{"name":"S3","type":"string","jsonPath":".status.s3.ready","description":"ready/desired S3 gateways","priority":1}"#,
    printcolumn = r#"{"name":"EC","type":"string","jsonPath":".status.erasure","description":"erasure scheme k+m"}"#,
    printcolumn = r#"{"name":"Draining","type":"string","jsonPath":".status.drain.summary","description":"chunk servers being drained and what is left on them"}"#,
    printcolumn = r#"{"name":"Rebalancing","type":"string","jsonPath":".status.rebalance.summary","description":"bytes moved and still planned by a running rebalance"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.chunk.replicas >= self.erasure.k + self.erasure.m"
).message("chunk.replicas must be at least erasure.k + erasure.m").field_path(".chunk.replicas"))]
// On the spec, not on `repair`: the range depends on `erasure`, and CEL only sees a field's
// own subtree. `dogfs-meta` refuses to start outside this range, so admission must catch it.
#[x_kube(validation = Rule::new(
    "!has(self.repair) || !has(self.repair.minWriteShards) || \
     (self.repair.minWriteShards > self.erasure.k && \
      self.repair.minWriteShards <= self.erasure.k + self.erasure.m)"
).message("repair.minWriteShards must be in erasure.k + 1 ..= erasure.k + erasure.m")
 .field_path(".repair.minWriteShards"))]
pub struct DogClusterSpec {
    /// Container image holding `dogfs-meta`, `dogfs-chunk` and `dogfs`.
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("image must not be empty"))]
    pub image: String,

    /// Pull policy for `image`; Kubernetes' default rule applies when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// The metadata service (a Raft group of `replicas` nodes).
    #[serde(default)]
    pub meta: MetaSpec,

    /// The chunk servers.
    #[serde(default)]
    pub chunk: ChunkSpec,

    /// Default erasure scheme for new objects. Immutable: stored objects record their own
    /// scheme, but placement and the `chunk.replicas` floor depend on this one.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("erasure is immutable"))]
    pub erasure: ErasureSpec,

    /// TLS for every gRPC connection. Unset: on, with certificates from the operator's own CA
    /// (`mode: OperatorCA`); plain text only with `mode: Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Bearer-token authentication for clients and the admin API, and the shard-grant key.
    /// Unset: on, with a token and key the operator generates into `<cluster>-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// NetworkPolicies letting only the cluster's components and labelled clients reach the
    /// gRPC ports. Unset: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// What happens to the PersistentVolumeClaims of removed pods.
    #[serde(default)]
    pub pvc_retention: PvcRetention,

    /// Writes while chunk servers are down, and when their shards are rebuilt elsewhere; the
    /// metadata service's defaults when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairSpec>,

    /// The S3-compatible gateway (`dogfs-s3`); not deployed when unset or not enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
}

/// Kubernetes image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Metadata service settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetaSpec {
    /// Raft group size: 1 (no fault tolerance), 3 or 5. Fixed at creation: the peers bootstrap
    /// from a static list and membership changes are not offered by the metadata service yet.
    #[serde(default = "default_meta_replicas")]
    #[x_kube(
        validation = Rule::new("self in [1, 3, 5]").message("meta.replicas must be 1, 3 or 5"),
        validation = Rule::new("self == oldSelf").message("meta.replicas is immutable")
    )]
    pub replicas: i32,

    /// Number of object partitions (Raft groups besides the system group). Fixed at creation
    /// because the key-to-partition hash depends on it.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("meta.partitions is immutable"))]
    pub partitions: i32,

    /// Volume for each metadata node (Raft log and state machine). Immutable: a StatefulSet's
    /// volume claim templates cannot change.
    #[serde(default = "default_meta_storage")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("meta.storage is immutable"))]
    pub storage: StorageSpec,

    /// CPU and memory for each metadata node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for MetaSpec {
    fn default() -> Self {
        MetaSpec {
            replicas: default_meta_replicas(),
            partitions: default_partitions(),
            storage: default_meta_storage(),
            resources: None,
        }
    }
}

fn default_meta_replicas() -> i32 {
    3
}

fn default_partitions() -> i32 {
    8
}

fn default_meta_storage() -> StorageSpec {
    StorageSpec {
        size: "10Gi".to_string(),
        storage_class_name: None,
    }
}

/// Chunk server settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChunkSpec {
    /// Number of chunk servers; at least erasure.k + erasure.m.
    #[serde(default = "default_chunk_replicas")]
    #[schemars(range(min = 2, max = 10000))]
    pub replicas: i32,

    /// Volume for each chunk server (shard files). Immutable: a StatefulSet's volume claim
    /// templates cannot change.
    #[serde(default = "default_chunk_storage")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("chunk.storage is immutable"))]
    pub storage: StorageSpec,

    /// Free space a chunk server keeps back; it refuses writes below it. Whole bytes or binary
    /// units only (`512Mi`, `2Gi`), the subset of quantities `dogfs-chunk --reserve` parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(Ki|Mi|Gi|Ti)?$')").message("chunk.reserve must be whole bytes or Ki, Mi, Gi, Ti"))]
    pub reserve: Option<String>,

    /// CPU and memory for each chunk server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ChunkSpec {
    fn default() -> Self {
        ChunkSpec {
            replicas: default_chunk_replicas(),
            storage: default_chunk_storage(),
            reserve: None,
            resources: None,
        }
    }
}

fn default_chunk_replicas() -> i32 {
    6
}

fn default_chunk_storage() -> StorageSpec {
    StorageSpec {
        size: "100Gi".to_string(),
        storage_class_name: None,
    }
}

/// A PersistentVolumeClaim per pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, a Kubernetes quantity such as `10Gi`.
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(
        "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))"
    ).message("storage size must be a positive quantity such as 10Gi"))]
    pub size: String,

    /// StorageClass of the claims; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

/// Reed-Solomon parameters: k data shards and m parity shards per stripe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.k + self.m <= 32").message("erasure.k + erasure.m must be at most 32"))]
pub struct ErasureSpec {
    /// Data shards per stripe.
    #[serde(default = "default_k")]
    #[schemars(range(min = 1, max = 31))]
    pub k: i32,
    /// Parity shards per stripe: how many chunk servers may be lost without losing data.
    #[serde(default = "default_m")]
    #[schemars(range(min = 1, max = 31))]
    pub m: i32,
}

impl Default for ErasureSpec {
    fn default() -> Self {
        ErasureSpec {
            k: default_k(),
            m: default_m(),
        }
    }
}

fn default_k() -> i32 {
    4
}

fn default_m() -> i32 {
    2
}

/// TLS material for servers and clients: at most one of `secretName`, `issuerRef` and
/// `mode`. None of them (or no `tls` at all) is `mode: OperatorCA`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.secretName), has(self.issuerRef), has(self.mode)].filter(x, x).size() <= 1"
).message("tls: give at most one of secretName, issuerRef and mode"))]
pub struct TlsSpec {
    /// Secret of type kubernetes.io/tls with `tls.crt`, `tls.key` and `ca.crt` (the layout
    /// cert-manager writes), mounted into metadata and chunk pods (the gateway gets only
    /// `ca.crt`). The certificate serves both ends of mutual TLS, so it needs the URI SANs
    /// `spiffe://dogfs/meta` and `spiffe://dogfs/chunk`, the DNS names
    /// `*.<cluster>-meta-headless.<ns>.svc.cluster.local`,
    /// `*.<cluster>-chunk-headless.<ns>.svc.cluster.local`, `<cluster>-meta.<ns>.svc` and
    /// `localhost`, and both server and client auth usages (docs/kubernetes.md, "TLS").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("tls.secretName must not be empty"))]
    pub secret_name: Option<String>,

    /// A cert-manager Issuer or ClusterIssuer: the operator creates a cert-manager
    /// `Certificate` per component (meta, chunk, gateway), written to
    /// `<cluster>-{meta,chunk,gateway}-tls`; cert-manager issues and renews them. The issuer
    /// must fill `ca.crt` (a CA issuer does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// `OperatorCA` (what an empty `tls` means): the operator keeps a CA in `<cluster>-ca` and
    /// issues and renews per-component certificates itself. `Disabled`: plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsModeSpec>,
}

/// The operator-managed TLS modes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsModeSpec {
    #[serde(rename = "OperatorCA")]
    #[schemars(rename = "OperatorCA")]
    OperatorCa,
    Disabled,
}

/// A cert-manager issuer in the cluster's namespace (`Issuer`) or cluster-wide
/// (`ClusterIssuer`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default)]
    pub kind: IssuerKind,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

/// How a cluster's TLS is provided, resolved from [`TlsSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode<'a> {
    /// Plain text, asked for explicitly.
    Disabled,
    /// One given Secret for every component.
    Secret(&'a str),
    /// cert-manager issues per-component Secrets.
    CertManager(&'a IssuerRef),
    /// The operator's own CA issues per-component Secrets.
    OperatorCa,
}

impl TlsMode<'_> {
    pub fn is_enabled(self) -> bool {
        self != TlsMode::Disabled
    }
}

/// Bearer-token authentication and shard grants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Off: no bearer tokens and no shard grants (anyone who reaches the ports may call the
    /// client and admin APIs).
    #[serde(default = "enabled")]
    pub enabled: bool,

    /// Secret with the bootstrap admin token under `token` (16 to 1024 visible ASCII
    /// characters) and the shard-grant key file under `grant.key` (lines of 64 hex
    /// characters; the first signs, all verify). Unset: the operator generates
    /// `<cluster>-auth` once and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("auth.secretName must not be empty"))]
    pub secret_name: Option<String>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        AuthSpec {
            enabled: true,
            secret_name: None,
        }
    }
}

fn enabled() -> bool {
    true
}

/// NetworkPolicies for the metadata and chunk pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Off: no NetworkPolicies (existing ones the operator made are deleted).
    #[serde(default = "enabled")]
    pub enabled: bool,

    /// Who may reach the metrics and health port (9100) besides the kubelet; unset: every pod
    /// in the cluster's namespace. E.g. a Prometheus in another namespace:
    /// `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_from: Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            metrics_from: None,
        }
    }
}

impl DogClusterSpec {
    /// The TLS mode in force (an empty or absent `tls` is the operator's own CA).
    pub fn tls_mode(&self) -> TlsMode<'_> {
        let Some(tls) = &self.tls else {
            return TlsMode::OperatorCa;
        };
        if let Some(secret) = &tls.secret_name {
            return TlsMode::Secret(secret);
        }
        if let Some(issuer) = &tls.issuer_ref {
            return TlsMode::CertManager(issuer);
        }
        match tls.mode {
            Some(TlsModeSpec::Disabled) => TlsMode::Disabled,
            Some(TlsModeSpec::OperatorCa) | None => TlsMode::OperatorCa,
        }
    }

    /// Whether bearer tokens and shard grants are on (the default).
    pub fn auth_enabled(&self) -> bool {
        self.auth.as_ref().is_none_or(|a| a.enabled)
    }

    /// Whether the operator applies NetworkPolicies (the default).
    pub fn network_policy_enabled(&self) -> bool {
        self.network_policy.as_ref().is_none_or(|n| n.enabled)
    }
}

/// Longest `repair.afterSeconds`: 7 days. A server down longer than that is not coming back
/// soon, and a larger value is far more likely a unit mistake (milliseconds) than a plan.
pub const MAX_REPAIR_AFTER_SECONDS: i64 = 7 * 24 * 3600;

/// Self-healing settings of the metadata service, the same on every metadata node
/// (`dogfs-meta --min-write-shards`, `--repair-after-secs`). Changing them restarts the
/// metadata pods one at a time; chunk servers are not restarted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RepairSpec {
    /// Write quorum: the fewest of a segment's k+m shards that must be stored for a PUT to
    /// commit while chunk servers are down (the rest are recorded missing and rebuilt). In
    /// erasure.k + 1 ..= erasure.k + erasure.m; erasure.k + 1 when unset, the floor, so a new
    /// object survives one more loss. Raising it toward k+m makes every acknowledged write more
    /// redundant, but writes stop once fewer than this many chunk servers can take a shard (at
    /// k+m: with a single server down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = MAX_SHARDS))]
    pub min_write_shards: Option<i32>,

    /// Seconds a chunk server must have been down before its shards are rebuilt on other
    /// servers, counted from when it is marked down (after 10 minutes without a heartbeat,
    /// which this does not change); 600 when unset. Longer: reboots and short maintenance
    /// never trigger a rebuild, but redundancy stays reduced for longer after a real loss.
    /// Shorter: redundancy comes back sooner, at the price of rebuilding (network and disk
    /// load) for servers that would have returned. Missing and corrupt shards are rebuilt at
    /// once regardless. At most 604800 (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_REPAIR_AFTER_SECONDS))]
    pub after_seconds: Option<i64>,
}

/// Most S3 gateway pods: far beyond any need, low enough to catch a typo.
pub const MAX_S3_REPLICAS: i32 = 1000;

/// The S3 gateway: a stateless Deployment `<cluster>-s3` behind a Service of the same name,
/// speaking S3 over plain HTTP to clients and gRPC to the metadata and chunk servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
// A gateway without keys refuses to start unless anonymous access was asked for, so admission
// catches the missing Secret instead of a crash-looping Deployment.
#[x_kube(validation = Rule::new(
    "!self.enabled || self.anonymous || has(self.credentialsSecret)"
).message("s3.credentialsSecret is required when s3.enabled is true, unless s3.anonymous is true")
 .field_path(".credentialsSecret"))]
pub struct S3Spec {
    /// Deploy the gateway. Turning it off deletes its Deployment, Service and
    /// PodDisruptionBudget.
    #[serde(default)]
    pub enabled: bool,

    /// Gateway pods; any number, since they keep no state.
    #[serde(default = "default_s3_replicas")]
    #[schemars(range(min = 1, max = MAX_S3_REPLICAS))]
    pub replicas: i32,

    /// How clients reach the gateway.
    #[serde(default)]
    pub service: S3ServiceSpec,

    /// Secret holding the access keys under the key `credentials.yaml` (the gateway's
    /// credentials file: access key id, secret key, identity and scope per entry; docs/s3.md).
    /// Mounted read-only; the gateway reads it at start, so restart the Deployment after
    /// changing it. Required unless `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("s3.credentialsSecret must not be empty"))]
    pub credentials_secret: Option<String>,

    /// Accept unsigned requests with full rights. For development only: anyone who can reach
    /// the Service can read, write and delete everything.
    #[serde(default)]
    pub anonymous: bool,

    /// The region the gateway answers for (`GetBucketLocation`); the gateway's default
    /// (`us-east-1`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    // It becomes part of SigV4 credential scopes, where `/` separates the parts.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._-]+$')").message("s3.region must be letters, digits, '.', '_' or '-'"))]
    pub region: Option<String>,

    /// CPU and memory for each gateway pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for S3Spec {
    fn default() -> Self {
        S3Spec {
            enabled: false,
            replicas: default_s3_replicas(),
            service: S3ServiceSpec::default(),
            credentials_secret: None,
            anonymous: false,
            region: None,
            resources: None,
        }
    }
}

impl S3Spec {
    /// Whether the gateway should run.
    pub fn is_enabled(s3: Option<&S3Spec>) -> bool {
        s3.is_some_and(|s| s.enabled)
    }
}

fn default_s3_replicas() -> i32 {
    2
}

/// The gateway's Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3ServiceSpec {
    /// `ClusterIP` (in-cluster clients only), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Port of the Service (the pods always listen on 9000).
    #[serde(default = "default_s3_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for S3ServiceSpec {
    fn default() -> Self {
        S3ServiceSpec {
            type_: ServiceType::default(),
            port: default_s3_port(),
        }
    }
}

fn default_s3_port() -> i32 {
    9000
}

/// Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Kubernetes' StatefulSet PVC retention, applied to both StatefulSets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// Claims of a deleted DogCluster. `Retain` (the default) keeps the data.
    #[serde(default = "retain")]
    pub when_deleted: RetentionPolicy,
    /// Claims of chunk servers removed by a scale-down. The operator applies it itself, once
    /// the server is drained, its pod gone and the server removed from the registry (the
    /// StatefulSet's own `whenScaled` stays `Retain`). `Retain` (the default) keeps the volume
    /// for a later scale-up, whose server wipes the volume's old (moved) shards and registers
    /// as a new server; `Delete` frees the volume.
    #[serde(default = "retain")]
    pub when_scaled: RetentionPolicy,
}

impl Default for PvcRetention {
    fn default() -> Self {
        PvcRetention {
            when_deleted: retain(),
            when_scaled: retain(),
        }
    }
}

fn retain() -> RetentionPolicy {
    RetentionPolicy::Retain
}

/// Keep or delete a claim.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionPolicy {
    Retain,
    Delete,
}

impl RetentionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Retain => "Retain",
            RetentionPolicy::Delete => "Delete",
        }
    }
}

/// Observed state, written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DogClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// One word for humans: Creating, Scaling, Updating, Running, Degraded or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// `Ready`, `Progressing`, `Degraded`, `Draining`, `Rebalancing`, `AdminReachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_string()]))]
    pub conditions: Vec<Condition>,

    /// Metadata nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ReplicaStatus>,

    /// Chunk servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ReplicaStatus>,

    /// S3 gateway pods; absent when the gateway is not enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<ReplicaStatus>,

    /// The erasure scheme in force, as `k+m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<String>,

    /// Chunk servers being drained, from the metadata service's admin API; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,

    /// The rebalance, from the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceSummary>,

    /// Capacity and usage of the chunk servers (not removed), from the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageStatus>,

    /// Redundancy, from the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairSummary>,

    /// Where a chunk scaling stands, kept between reconciles (the operator's own record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
}

/// Chunk servers in the registry's draining state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// One line for the printer column, e.g. `demo-chunk-7: 120 shards, 1.2 GiB left`.
    pub summary: String,
    pub nodes: Vec<DrainingNode>,
}

/// One draining chunk server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainingNode {
    /// Registry id.
    pub node_id: String,
    /// The pod, when the server is one of this cluster's chunk pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Shards still referenced on it, and their bytes; unknown (absent) until surveyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_left: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_left: Option<i64>,
    /// Shards no other server can take now (they wait for the cluster to change).
    pub shards_stuck: i64,
}

/// The metadata service's rebalance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSummary {
    /// `Idle`, `Running`, `Stopped` or `Done`.
    pub state: String,
    /// While running, one line for the printer column: bytes moved and still planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub shards_moved: i64,
    pub bytes_moved: i64,
    /// Bytes the current round still plans to move (an estimate).
    pub bytes_planned: i64,
}

/// Capacity and usage summed over the chunk servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    pub capacity_bytes: i64,
    pub used_bytes: i64,
    pub available_bytes: i64,
}

/// Redundancy as the metadata service reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RepairSummary {
    /// Segments waiting for or under repair now.
    pub backlog_segments: i64,
    /// Segments with fewer than k readable shards.
    pub unreadable_segments: i64,
    /// Segments short of shards only on servers down for less than `repair.afterSeconds`.
    pub waiting_segments: i64,
}

/// The operator's record of a chunk scaling in progress, so it resumes after a restart.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// Registry id of the server the operator is draining to remove it. Only this drain is
    /// cancelled when `chunk.replicas` goes back up; drains started by hand are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_node: Option<String>,
    /// First ordinal added by a scale-up whose servers must register before the operator
    /// starts a rebalance; cleared when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_servers_from: Option<i32>,
}

impl ScalingStatus {
    pub fn is_empty(&self) -> bool {
        self.draining_node.is_none() && self.new_servers_from.is_none()
    }
}

/// Replica counts of one StatefulSet or Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Replicas the spec asks for.
    pub desired: i32,
    /// Pods that exist now (differs from `desired` while scaling or rolling out).
    pub current: i32,
    /// Pods passing their readiness probe.
    pub ready_replicas: i32,
    /// `ready/desired`, for the printer columns.
    pub ready: String,
}

/// Coarse state of a DogCluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Objects applied, pods not all ready yet.
    Creating,
    /// Chunk servers being added or removed.
    Scaling,
    /// A rolling update (new image or settings) is under way.
    Updating,
    /// Every pod ready.
    Running,
    /// Was running; some pods are not ready.
    Degraded,
    /// The spec failed validation; nothing was changed.
    Invalid,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Scaling => "Scaling",
            Phase::Updating => "Updating",
            Phase::Running => "Running",
            Phase::Degraded => "Degraded",
            Phase::Invalid => "Invalid",
        }
    }
}
