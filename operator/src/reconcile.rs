//! The reconcile loop: validate → observe (chunk StatefulSet, admin API, pods, claims) →
//! plan ([`crate::scale`]) → build → server-side apply → the step's action → status.
//!
//! Kept thin: decisions live in the pure modules ([`crate::validate`], [`crate::scale`],
//! [`crate::build`], [`crate::status`]); this module only reads, applies, acts and reports.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, info_span, warn};

use crate::admin::{self, Admin, Connector, GrpcConnector};
use crate::auth;
use crate::build::{self, Inputs, Names};
use crate::certs::{self, TlsState};
use crate::crd::{DogCluster, DogClusterStatus, MANAGER, Phase, RetentionPolicy, TlsMode};
use crate::metrics::Metrics;
use crate::scale::{self, Step};
use crate::status::{self, AdminObserved, Observed, Scaling, Workload};
use crate::validate;

/// Periodic resync: repairs drift in objects nobody touched and refreshes the status.
const RESYNC: Duration = Duration::from_secs(300);
/// While a scaling waits (a drain, a pod stopping, servers registering) or a drain or
/// rebalance runs, look again this often; status patches do not trigger reconciles (the
/// DogCluster watch passes generation changes only), so this is also the progress refresh.
pub const SCALING_POLL: Duration = Duration::from_secs(10);
/// After a scaling step acted, the next step follows soon.
pub const NEXT_STEP: Duration = Duration::from_secs(2);
/// While certificates are pending (cert-manager has not issued, or is not installed), look
/// again this often: no watch tells the operator when cert-manager writes the Secret.
pub const TLS_PENDING_POLL: Duration = Duration::from_secs(30);
/// First retry after an error; doubles per consecutive failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DogCluster has no namespace")]
    MissingNamespace,
    #[error("reading the chunk StatefulSet {name}: {source}")]
    ReadChunkStatefulSet { name: String, source: kube::Error },
    #[error("listing the chunk pods: {0}")]
    ListChunkPods(#[source] kube::Error),
    #[error("listing the chunk PersistentVolumeClaims: {0}")]
    ListChunkClaims(#[source] kube::Error),
    #[error("deleting PersistentVolumeClaim {name}: {source}")]
    DeleteChunkClaim { name: String, source: kube::Error },
    #[error("reading TLS Secret {name}: {source}")]
    ReadTlsSecret { name: String, source: kube::Error },
    #[error("TLS Secret {name} has no ca.crt (or it is not UTF-8)")]
    MissingCaBundle { name: String },
    #[error("TLS Secret {name}: ca.crt holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    BadCaBundle { name: String },
    #[error("building child objects: {0}")]
    Build(#[from] build::Error),
    #[error("TLS certificates: {0}")]
    Certificates(#[from] certs::Error),
    #[error("auth: {0}")]
    Auth(#[from] auth::Error),
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("patching the DogCluster status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("reading the S3 gateway Deployment {name}: {source}")]
    ReadS3Deployment { name: String, source: kube::Error },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: String,
        name: String,
        source: kube::Error,
    },
}

impl Error {
    /// Metric label: the step that failed.
    pub fn step(&self) -> &'static str {
        match self {
            Error::MissingNamespace => "missing_namespace",
            Error::ReadChunkStatefulSet { .. } => "read_chunk_statefulset",
            Error::ListChunkPods(_) => "list_chunk_pods",
            Error::ListChunkClaims(_) => "list_chunk_claims",
            Error::DeleteChunkClaim { .. } => "delete_chunk_claim",
            Error::ReadTlsSecret { .. }
            | Error::MissingCaBundle { .. }
            | Error::BadCaBundle { .. } => "read_tls_secret",
            Error::Build(_) => "build",
            Error::Certificates(_) => "certificates",
            Error::Auth(_) => "auth_secret",
            Error::Apply { .. } => "apply",
            Error::PatchStatus(_) => "patch_status",
            Error::ReadS3Deployment { .. } => "read_s3_deployment",
            Error::Delete { .. } => "delete",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Condition timestamps, and "now" for certificate issue and renewal; tests pin or move
    /// it.
    pub clock: fn() -> Time,
    /// Hands out the admin API of a cluster; tests put a fake behind it.
    pub admin: Arc<dyn Connector>,
    /// Consecutive failures per DogCluster, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose admin client speaks gRPC to each cluster's metadata Service.
    pub fn new(client: Client, metrics: Arc<Metrics>, clock: fn() -> Time) -> Arc<Context> {
        Context::with_admin(client, metrics, clock, Arc::new(GrpcConnector::default()))
    }

    pub fn with_admin(
        client: Client,
        metrics: Arc<Metrics>,
        clock: fn() -> Time,
        admin: Arc<dyn Connector>,
    ) -> Arc<Context> {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            clock,
            admin,
            failures: Mutex::new(HashMap::new()),
        })
    }

    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        MIN_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// The current wall clock, for production use.
pub fn system_clock() -> Time {
    Time(Timestamp::now())
}

fn key(cluster: &DogCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

/// Reconciles one DogCluster. Each call is independent and idempotent.
pub async fn reconcile(cluster: Arc<DogCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        cluster = %cluster.name_any(),
        namespace = cluster.namespace().unwrap_or_default(),
        generation = cluster.metadata.generation.unwrap_or_default(),
    );
    let started = Instant::now();
    // Boxed: the future holds every built object and is large.
    let result = Box::pin(reconcile_inner(&cluster, &ctx).instrument(span)).await;
    let label = match &result {
        Ok((_, Outcome::Invalid)) => "invalid",
        Ok((_, Outcome::AdminUnavailable)) => "admin_unavailable",
        Ok(_) => "ok",
        Err(e) => e.step(),
    };
    ctx.metrics.record(label, started.elapsed());
    match result {
        // Applied, but the admin API did not answer: back off like an error (the status says
        // why), and keep counting failures.
        Ok((_, Outcome::AdminUnavailable)) => Ok(Action::requeue(ctx.backoff(&key(&cluster)))),
        Ok((action, _)) => {
            ctx.succeeded(&key(&cluster));
            Ok(action)
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    Invalid,
    Deleting,
    /// Applied, but the admin API failed (reading or acting).
    AdminUnavailable,
}

/// What the cluster looks like before planning.
struct Seen {
    admin: Option<Arc<dyn Admin>>,
    observed: Option<AdminObserved>,
    pods: BTreeSet<i32>,
    claims: BTreeSet<i32>,
}

async fn reconcile_inner(cluster: &DogCluster, ctx: &Context) -> Result<(Action, Outcome), Error> {
    // Children carry owner references, so the garbage collector removes them (and, per
    // pvcRetention, the StatefulSet controller the claims): no finalizer, nothing to do.
    if cluster.metadata.deletion_timestamp.is_some() {
        info!("being deleted; children go with it");
        return Ok((Action::await_change(), Outcome::Deleting));
    }
    let ns = cluster.namespace().ok_or(Error::MissingNamespace)?;
    let now = (ctx.clock)();

    if let Err(invalid) = validate::validate(cluster) {
        warn!(error = %invalid, "invalid spec; nothing applied");
        let status = status::invalid(cluster, &invalid, &now);
        report(cluster, ctx, status).await?;
        // A spec edit triggers the next reconcile; retrying the same spec cannot help.
        return Ok((Action::await_change(), Outcome::Invalid));
    }

    let names = Names::of(cluster)?;
    let spec = &cluster.spec;
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let current_chunk = statefulsets
        .get_opt(&names.chunk())
        .await
        .map_err(|source| Error::ReadChunkStatefulSet {
            name: names.chunk(),
            source,
        })?;
    let replicas = current_chunk
        .as_ref()
        .map(|s| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    // Before observing: with TLS the admin client trusts this bundle, and the client
    // ConfigMap carries it; with auth the admin client sends the token.
    let tls = ensure_tls(cluster, ctx, &names, &ns, &now).await?;
    for event in &tls.events {
        info!(reason = event.reason, note = %event.note, "certificates");
        publish(
            cluster,
            ctx,
            EventType::Normal,
            event.reason,
            "Certificates",
            event.note.clone(),
        )
        .await;
    }
    let token = auth::ensure(&ctx.client, cluster, &names).await?;
    let ca_bundle = tls.bundle.clone();
    let seen = observe(
        cluster,
        ctx,
        &names,
        &ns,
        replicas.is_some(),
        &Access {
            tls: spec.tls_mode().is_enabled(),
            ca: ca_bundle.as_deref(),
            token: token.as_deref(),
        },
    )
    .await?;
    let memory = cluster
        .status
        .as_ref()
        .and_then(|s| s.scaling.clone())
        .unwrap_or_default();
    let view = seen.observed.as_ref().and_then(|o| o.view.as_ref());
    let floor = spec.erasure.k + spec.erasure.m;
    let plan = scale::plan(&scale::Input {
        target: spec.chunk.replicas,
        floor,
        replicas,
        admin: view,
        names: &names,
        pods: &seen.pods,
        claims: &seen.claims,
        retention: spec.pvc_retention.when_scaled,
        memory: &memory,
    });
    info!(replicas = plan.replicas, step = ?plan.step, "chunk scaling plan");

    let desired = build::build(
        cluster,
        &Inputs {
            chunk_replicas: plan.replicas,
            ca_bundle,
        },
    )?;

    apply(&ctx.client, &ns, &desired.config).await?;
    apply(&ctx.client, &ns, &desired.client_config).await?;
    for service in [
        &desired.meta_headless,
        &desired.meta_service,
        &desired.chunk_headless,
        &desired.chunk_service,
    ] {
        apply(&ctx.client, &ns, service).await?;
    }
    let meta = apply(&ctx.client, &ns, &desired.meta).await?;
    let chunk = apply(&ctx.client, &ns, &desired.chunk).await?;
    apply(&ctx.client, &ns, &desired.meta_pdb).await?;
    apply(&ctx.client, &ns, &desired.chunk_pdb).await?;
    if spec.network_policy_enabled() {
        for policy in &desired.network_policies {
            apply(&ctx.client, &ns, policy).await?;
        }
    } else {
        // Switched off: remove the ones an earlier reconcile made (gone already is fine).
        for component in ["meta", "chunk"] {
            delete::<NetworkPolicy>(&ctx.client, &ns, &names.network_policy(component)).await?;
        }
    }
    let s3 = match &desired.s3 {
        Some(gateway) => {
            apply(&ctx.client, &ns, &gateway.service).await?;
            let deployment = apply(&ctx.client, &ns, &gateway.deployment).await?;
            apply(&ctx.client, &ns, &gateway.pdb).await?;
            Some(Workload::of_deployment(&deployment))
        }
        None => {
            remove_s3_gateway(cluster, ctx, &names, &ns).await?;
            None
        }
    };

    let done = act(cluster, ctx, &names, &ns, &seen, &plan, replicas).await?;

    let admin_observed = admin_outcome(cluster, ctx, &seen, &done, &plan.step).await;
    let observed = Observed {
        meta: Workload::of(&meta),
        chunk: Workload::of(&chunk),
        admin: admin_observed,
        scaling: done.scaling,
        s3,
        tls: spec.tls_mode().is_enabled().then(|| tls.condition.clone()),
    };
    let status = status::compute(cluster, &observed, &now);
    report(cluster, ctx, status).await?;

    let unavailable = observed.admin.as_ref().is_some_and(|a| a.error.is_some());
    if unavailable {
        return Ok((Action::requeue(MIN_BACKOFF), Outcome::AdminUnavailable));
    }
    let busy = view.is_some_and(|v| {
        v.rebalance.state == admin::RebalanceState::Running
            || v.nodes
                .iter()
                .any(|n| n.state == admin::NodeState::Draining)
    });
    let action = if plan.step.acts() && !done.waiting {
        Action::requeue(NEXT_STEP)
    } else if plan.step.is_scaling() || busy || plan.replicas != spec.chunk.replicas {
        Action::requeue(SCALING_POLL)
    } else if spec.tls_mode().is_enabled() && !tls.condition.0 {
        Action::requeue(TLS_PENDING_POLL)
    } else {
        Action::requeue(RESYNC)
    };
    Ok((action, Outcome::Applied))
}

/// What the status reports about the admin API after the step: the failure if the step's call
/// failed, else the view as the step left it. Warns once when it stops answering.
async fn admin_outcome(
    cluster: &DogCluster,
    ctx: &Context,
    seen: &Seen,
    done: &Done,
    step: &Step,
) -> Option<AdminObserved> {
    let mut admin_observed = seen.observed.clone();
    if let Some(observed) = admin_observed.as_mut() {
        match &done.admin_error {
            Some(error) => observed.error = Some((error.reason().to_string(), error.to_string())),
            None if !done.waiting => {
                if let Some(view) = observed.view.as_mut() {
                    scale::assume_done(view, step);
                }
            }
            None => {}
        }
    }
    let previous = cluster.status.as_ref();
    let previous_admin_error = previous
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == status::ADMIN_REACHABLE)
        })
        .is_some_and(|c| c.status == "False");
    // While a new cluster comes up its metadata nodes are expected not to answer yet.
    let was_up = previous.and_then(|s| s.phase).is_some_and(|p| {
        matches!(
            p,
            Phase::Running | Phase::Degraded | Phase::Updating | Phase::Scaling
        )
    });
    if let Some((reason, message)) = admin_observed.as_ref().and_then(|o| o.error.as_ref())
        && !previous_admin_error
        && was_up
    {
        publish(
            cluster,
            ctx,
            EventType::Warning,
            "AdminUnavailable",
            "Observe",
            format!("{message} ({reason}); nothing is shrunk until it answers"),
        )
        .await;
    }
    admin_observed
}

/// How the operator reaches a cluster's admin API.
struct Access<'a> {
    /// The cluster has TLS: without a CA bundle (not issued yet) the API is not called.
    tls: bool,
    ca: Option<&'a str>,
    token: Option<&'a str>,
}

/// The TLS step for the cluster's mode: certificates made or read, the CA bundle, the
/// `TLSReady` condition.
async fn ensure_tls(
    cluster: &DogCluster,
    ctx: &Context,
    names: &Names,
    ns: &str,
    now: &Time,
) -> Result<TlsState, Error> {
    Ok(match cluster.spec.tls_mode() {
        TlsMode::Disabled => {
            TlsState::pending("Disabled", "plain text (tls.mode: Disabled)".into())
        }
        TlsMode::Secret(name) => TlsState::ready(
            read_ca_bundle(&ctx.client, ns, name).await?,
            "Secret",
            format!("certificate from Secret {name}"),
            Vec::new(),
        ),
        TlsMode::CertManager(issuer) => {
            let owner = build::owner_reference(cluster)?;
            certs::ensure_cert_manager(&ctx.client, names, &owner, issuer).await?
        }
        TlsMode::OperatorCa => {
            let owner = build::owner_reference(cluster)?;
            let now = std::time::SystemTime::from(now.0);
            certs::ensure_operator_ca(&ctx.client, names, &owner, now).await?
        }
    })
}

/// Reads the admin API, and with it the chunk pods and claims, once the chunk StatefulSet
/// exists (before that no metadata node runs and there is nothing to scale).
async fn observe(
    cluster: &DogCluster,
    ctx: &Context,
    names: &Names,
    ns: &str,
    exists: bool,
    access: &Access<'_>,
) -> Result<Seen, Error> {
    let mut seen = Seen {
        admin: None,
        observed: None,
        pods: BTreeSet::new(),
        claims: BTreeSet::new(),
    };
    if !exists {
        return Ok(seen);
    }
    if access.tls && access.ca.is_none() {
        seen.observed = Some(AdminObserved {
            view: None,
            error: Some((
                "TLSPending".to_string(),
                "no CA bundle yet (see TLSReady): the admin API is not called".to_string(),
            )),
        });
        return Ok(seen);
    }
    let admin = match ctx.admin.connect(names, access.ca, access.token) {
        Ok(admin) => admin,
        Err(error) => {
            warn!(%error, "admin API");
            seen.observed = Some(AdminObserved {
                view: None,
                error: Some((error.reason().to_string(), error.to_string())),
            });
            return Ok(seen);
        }
    };
    let view = match admin::observe(admin.as_ref()).await {
        Ok(view) => view,
        Err(error) => {
            warn!(%error, "admin API");
            seen.observed = Some(AdminObserved {
                view: None,
                error: Some((error.reason().to_string(), error.to_string())),
            });
            return Ok(seen);
        }
    };
    seen.admin = Some(admin);
    seen.observed = Some(AdminObserved {
        view: Some(view),
        error: None,
    });
    let selector = ListParams::default().labels(&names.chunk_selector());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    seen.pods = pods
        .list_metadata(&selector)
        .await
        .map_err(Error::ListChunkPods)?
        .items
        .iter()
        .filter_map(|p| names.chunk_ordinal_of_pod(p.metadata.name.as_deref()?))
        .collect();
    // Claims matter only when the operator deletes them.
    if cluster.spec.pvc_retention.when_scaled == RetentionPolicy::Delete {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        seen.claims = claims
            .list_metadata(&selector)
            .await
            .map_err(Error::ListChunkClaims)?
            .items
            .iter()
            .filter_map(|c| names.chunk_ordinal_of_claim(c.metadata.name.as_deref()?))
            .collect();
    }
    Ok(seen)
}

/// What carrying out the step left behind.
struct Done {
    scaling: Scaling,
    /// The step's admin call failed for want of an answer (not a refusal).
    admin_error: Option<admin::Error>,
    /// The step could not act yet (a refused removal): wait rather than hurry.
    waiting: bool,
}

/// Carries out the plan's step after the apply (which already moved `replicas`), then
/// records an Event for each thing done.
async fn act(
    cluster: &DogCluster,
    ctx: &Context,
    names: &Names,
    ns: &str,
    seen: &Seen,
    plan: &scale::Plan,
    before: Option<i32>,
) -> Result<Done, Error> {
    let target = cluster.spec.chunk.replicas;
    let previous = cluster.status.as_ref();
    let previous_memory = previous.and_then(|s| s.scaling.clone()).unwrap_or_default();
    let mut done = Done {
        scaling: Scaling {
            progress: plan.step.progress(names, plan.replicas, target),
            refused: matches!(plan.step, Step::Refuse(_)),
            memory: plan.memory.clone(),
        },
        admin_error: None,
        waiting: false,
    };
    // Admin calls only run for steps planned from an admin view, which `seen.admin` came with.
    let admin = seen.admin.as_deref();
    let result = match (&plan.step, admin) {
        (Step::Drain { node, .. }, Some(admin)) => Some(admin.drain_node(node).await),
        (Step::Undrain { node, .. }, Some(admin)) => Some(admin.undrain_node(node).await),
        (Step::Remove { node, .. }, Some(admin)) => Some(admin.remove_node(node).await),
        (Step::StartRebalance { already_running }, Some(admin)) if !already_running => {
            Some(admin.start_rebalance().await)
        }
        (Step::DeleteClaim { ordinal }, _) => {
            let name = names.chunk_claim(*ordinal);
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            match claims.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                // Gone already (deleted by hand, or by an earlier round): done all the same.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(Error::DeleteChunkClaim { name, source }),
            }
            None
        }
        _ => None,
    };
    if let Some(Err(error)) = result {
        warn!(%error, "admin call failed");
        // The step did not happen: keep the record as it was.
        done.scaling.memory = previous_memory;
        if error.is_refusal() {
            // RemoveNode said what is left; it is asked again at the next poll.
            done.waiting = true;
            done.scaling.progress = Some(("WaitingForRemoval".to_string(), error.to_string()));
        } else {
            done.admin_error = Some(error);
        }
        return Ok(done);
    }

    let refused_before = |message: &str| {
        previous.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == status::PROGRESSING
                    && c.reason == status::SCALE_DOWN_REFUSED
                    && c.message == message
            })
        })
    };
    for event in step_events(&plan.step, names, cluster, plan.replicas, before) {
        // A refusal is announced once, not at every poll.
        if event.reason == status::SCALE_DOWN_REFUSED && refused_before(&event.note) {
            continue;
        }
        if event.type_ == EventType::Warning {
            warn!(reason = event.reason, note = %event.note, "scaling");
        } else {
            info!(reason = event.reason, note = %event.note, "scaling");
        }
        publish_about(
            cluster,
            ctx,
            event.type_,
            event.reason,
            event.action,
            event.note,
            event.related,
        )
        .await;
    }
    Ok(done)
}

/// An Event about a scaling step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
    /// The pod, claim or StatefulSet the step is about.
    pub related: Option<ObjectReference>,
}

/// The Events of a step that was carried out (none for the waiting ones).
pub fn step_events(
    step: &Step,
    names: &Names,
    cluster: &DogCluster,
    replicas: i32,
    before: Option<i32>,
) -> Vec<StepEvent> {
    let target = cluster.spec.chunk.replicas;
    let before = before.unwrap_or_default();
    let event = |reason, action, note: String, related| StepEvent {
        type_: EventType::Normal,
        reason,
        action,
        note,
        related,
    };
    match step {
        Step::Grow { from, to } => vec![event(
            "ReplicasRaised",
            "Scale",
            format!("chunk StatefulSet {from} -> {to} replicas"),
            Some(reference("apps/v1", "StatefulSet", names.chunk(), names)),
        )],
        Step::Drain { ordinal, node } => vec![event(
            "DrainStarted",
            "Drain",
            format!(
                "draining {} (node {node}) to scale chunk servers {before} -> {target}",
                names.chunk_pod(*ordinal)
            ),
            pod_ref(names, *ordinal),
        )],
        Step::Undrain { ordinal, node } => vec![event(
            "DrainCancelled",
            "Undrain",
            format!(
                "chunk.replicas raised to {target}: cancelled the drain of {} (node {node}); \
                 the server stays",
                names.chunk_pod(*ordinal)
            ),
            pod_ref(names, *ordinal),
        )],
        Step::Shrink { ordinal, node } => {
            let pod = names.chunk_pod(*ordinal);
            let mut events = Vec::new();
            if let Some(node) = node {
                events.push(event(
                    "Drained",
                    "Drain",
                    format!("{pod} (node {node}) is empty"),
                    pod_ref(names, *ordinal),
                ));
            }
            events.push(event(
                "ReplicasLowered",
                "Scale",
                format!(
                    "chunk StatefulSet {before} -> {replicas} replicas (target {target}); {pod} stops"
                ),
                pod_ref(names, *ordinal),
            ));
            events
        }
        Step::Remove { ordinal, node } => {
            let mut events = vec![event(
                "NodeRemoved",
                "Remove",
                format!(
                    "node {node} ({}) removed from the registry",
                    names.chunk_pod(*ordinal)
                ),
                pod_ref(names, *ordinal),
            )];
            if cluster.spec.pvc_retention.when_scaled == RetentionPolicy::Retain {
                events.push(event(
                    "ClaimKept",
                    "Remove",
                    format!(
                        "kept PersistentVolumeClaim {} (pvcRetention.whenScaled: Retain)",
                        names.chunk_claim(*ordinal)
                    ),
                    claim_ref(names, *ordinal),
                ));
            }
            events
        }
        Step::DeleteClaim { ordinal } => vec![event(
            "ClaimDeleted",
            "Delete",
            format!(
                "deleted PersistentVolumeClaim {} (pvcRetention.whenScaled: Delete)",
                names.chunk_claim(*ordinal)
            ),
            claim_ref(names, *ordinal),
        )],
        Step::StartRebalance { already_running } => vec![event(
            "RebalanceStarted",
            "Rebalance",
            if *already_running {
                "new chunk servers registered; a rebalance is already running".to_string()
            } else {
                "new chunk servers registered; started a rebalance".to_string()
            },
            None,
        )],
        Step::Refuse(refusal) => vec![StepEvent {
            type_: EventType::Warning,
            ..event(
                status::SCALE_DOWN_REFUSED,
                "Scale",
                refusal.to_string(),
                None,
            )
        }],
        Step::Create
        | Step::Steady
        | Step::Hold
        | Step::AwaitDrain { .. }
        | Step::AwaitPodGone { .. }
        | Step::AwaitRegistration { .. } => Vec::new(),
    }
}

/// Server-side apply as `dogfs-operator`, taking ownership of conflicting fields: the operator
/// is the only writer of these objects, and `kubectl edit` drift should be undone.
async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Apply { kind, name, source })
}

/// With `spec.s3` off, deletes the gateway's objects if this cluster's gateway is there.
/// Owner references alone would keep them until the DogCluster itself is deleted.
///
/// The Deployment is the marker: one GET per reconcile, and it is deleted last, so a failure
/// part-way leaves it behind and the next reconcile finishes the job.
async fn remove_s3_gateway(
    cluster: &DogCluster,
    ctx: &Context,
    names: &Names,
    ns: &str,
) -> Result<(), Error> {
    let name = names.s3();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let Some(existing) = deployments
        .get_metadata_opt(&name)
        .await
        .map_err(|source| Error::ReadS3Deployment {
            name: name.clone(),
            source,
        })?
    else {
        return Ok(());
    };
    // A Deployment of that name that this DogCluster does not control is someone else's.
    let ours = existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == cluster.metadata.uid.as_ref());
    if !ours {
        warn!(deployment = %name, "not controlled by this DogCluster; left alone");
        return Ok(());
    }
    delete::<PodDisruptionBudget>(&ctx.client, ns, &name).await?;
    delete::<Service>(&ctx.client, ns, &name).await?;
    delete::<Deployment>(&ctx.client, ns, &name).await?;
    info!(deployment = %name, "S3 gateway removed");
    publish(
        cluster,
        ctx,
        EventType::Normal,
        "S3GatewayRemoved",
        "Delete",
        format!("s3.enabled is off: deleted Deployment, Service and PodDisruptionBudget {name}"),
    )
    .await;
    Ok(())
}

/// Deletes a child; one already gone counts as deleted.
async fn delete<K>(client: &Client, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    // Background: the Deployment's ReplicaSets and pods go with it.
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: K::kind(&()).to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

/// `ca.crt` of the TLS Secret: what the operator's admin client and the gateway trust, and
/// what the client ConfigMap hands out. A bundle without a certificate would make every TLS
/// handshake fail with an unknown issuer, so it is refused here, naming the Secret.
async fn read_ca_bundle(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get(name)
        .await
        .map_err(|source| Error::ReadTlsSecret {
            name: name.to_string(),
            source,
        })?;
    let bundle = secret
        .data
        .as_ref()
        .and_then(|d| d.get(build::TLS_CA_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| Error::MissingCaBundle {
            name: name.to_string(),
        })?;
    if !bundle.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::BadCaBundle {
            name: name.to_string(),
        });
    }
    Ok(bundle)
}

/// Patches the status when it changed, and records phase changes as Events.
async fn report(
    cluster: &DogCluster,
    ctx: &Context,
    status: DogClusterStatus,
) -> Result<(), Error> {
    let previous = cluster.status.as_ref();
    if previous == Some(&status) {
        return Ok(());
    }
    let old_phase = previous.and_then(|s| s.phase);
    if let Some(phase) = status.phase
        && old_phase != Some(phase)
    {
        let type_ = match phase {
            Phase::Degraded | Phase::Invalid => EventType::Warning,
            _ => EventType::Normal,
        };
        let ready = status.conditions.iter().find(|c| c.type_ == status::READY);
        let note = ready.map(|c| c.message.clone()).unwrap_or_default();
        publish(cluster, ctx, type_, phase.as_str(), "Reconcile", note).await;
    }
    let api: Api<DogCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "dogfs.io/v1alpha1",
        "kind": "DogCluster",
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

/// Events are for humans; failing to record one must not fail the reconcile.
async fn publish(
    cluster: &DogCluster,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_about(cluster, ctx, type_, reason, action, note, None).await;
}

/// An Event with a related object (the pod drained, the claim deleted). The recorder folds
/// Events with the same reason and related object into one series that keeps the first note,
/// so steps about different pods must name them here to be told apart.
async fn publish_about(
    cluster: &DogCluster,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: related,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        warn!(%error, reason, "could not record event");
    }
}

/// Requeue with per-cluster exponential backoff; other clusters are unaffected.
pub fn error_policy(cluster: Arc<DogCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(&cluster));
    warn!(cluster = %key(&cluster), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs one controller per watched namespace (all namespaces when `namespaces` is empty) until
/// a shutdown signal.
pub async fn run(client: Client, namespaces: Vec<String>, metrics: Arc<Metrics>) {
    let ctx = Context::new(client.clone(), metrics.clone(), system_clock);
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    // Only the operator's own children are watched, not every ConfigMap in the cluster.
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let controllers = scopes.into_iter().map(|scope| {
        fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
        where
            K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
        {
            match scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        info!(
            namespace = scope.as_deref().unwrap_or("<all>"),
            "watching DogClusters"
        );
        // Only spec (generation) changes of a DogCluster trigger a reconcile: the operator's
        // own status patches carry drain and rebalance progress, and would otherwise trigger
        // reconcile after reconcile while a drain runs. Progress is polled instead
        // (`SCALING_POLL`); the store still sees every change, status included.
        let (reader, writer) = reflector::store();
        let clusters = watcher(
            api::<DogCluster>(&client, &scope),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
        Controller::for_stream(clusters, reader)
            .owns(api::<StatefulSet>(&client, &scope), owned.clone())
            // The S3 gateway's readiness goes into the status.
            .owns(api::<Deployment>(&client, &scope), owned.clone())
            .owns(api::<Service>(&client, &scope), owned.clone())
            .owns(api::<ConfigMap>(&client, &scope), owned.clone())
            .owns(api::<PodDisruptionBudget>(&client, &scope), owned.clone())
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => {
                        tracing::debug!(cluster = %object_key(&object), "reconciled")
                    }
                    Err(error) => tracing::debug!(%error, "reconcile error"),
                }
            })
    });
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    futures::future::join_all(controllers).await;
}

fn reference(api_version: &str, kind: &str, name: String, names: &Names) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        ..ObjectReference::default()
    }
}

fn pod_ref(names: &Names, ordinal: i32) -> Option<ObjectReference> {
    Some(reference("v1", "Pod", names.chunk_pod(ordinal), names))
}

fn claim_ref(names: &Names, ordinal: i32) -> Option<ObjectReference> {
    Some(reference(
        "v1",
        "PersistentVolumeClaim",
        names.chunk_claim(ordinal),
        names,
    ))
}

fn object_key(object: &ObjectRef<DogCluster>) -> String {
    format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name
    )
}
