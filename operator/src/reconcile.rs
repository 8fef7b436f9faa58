//! The reconcile loop: validate → build → server-side apply → observe → status.
//!
//! Kept thin: decisions live in the pure modules ([`crate::validate`], [`crate::build`],
//! [`crate::status`]); this module only reads, applies and reports.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, info_span, warn};

use crate::build::{self, Inputs, Names};
use crate::crd::{DogCluster, DogClusterStatus, MANAGER, Phase};
use crate::metrics::Metrics;
use crate::status::{self, Observed, Workload};
use crate::validate;

/// Periodic resync: repairs drift in objects nobody touched and refreshes the status.
const RESYNC: Duration = Duration::from_secs(300);
/// While chunk servers are removed one at a time, look again soon.
const SCALE_DOWN_POLL: Duration = Duration::from_secs(15);
/// First retry after an error; doubles per consecutive failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DogCluster has no namespace")]
    MissingNamespace,
    #[error("reading the chunk StatefulSet {name}: {source}")]
    ReadChunkStatefulSet { name: String, source: kube::Error },
    #[error("reading TLS Secret {name}: {source}")]
    ReadTlsSecret { name: String, source: kube::Error },
    #[error("TLS Secret {name} has no ca.crt (or it is not UTF-8)")]
    MissingCaBundle { name: String },
    #[error("building child objects: {0}")]
    Build(#[from] build::Error),
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("patching the DogCluster status: {0}")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// Metric label: the step that failed.
    pub fn step(&self) -> &'static str {
        match self {
            Error::MissingNamespace => "missing_namespace",
            Error::ReadChunkStatefulSet { .. } => "read_chunk_statefulset",
            Error::ReadTlsSecret { .. } | Error::MissingCaBundle { .. } => "read_tls_secret",
            Error::Build(_) => "build",
            Error::Apply { .. } => "apply",
            Error::PatchStatus(_) => "patch_status",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Condition timestamps; tests pin it.
    pub clock: fn() -> Time,
    /// Consecutive failures per DogCluster, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, clock: fn() -> Time) -> Arc<Context> {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            clock,
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
        Ok(_) => "ok",
        Err(e) => e.step(),
    };
    ctx.metrics.record(label, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key(&cluster));
    }
    result.map(|(action, _)| action)
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    Invalid,
    Deleting,
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
    let floor = spec.erasure.k + spec.erasure.m;
    let chunk_replicas =
        build::plan_chunk_replicas(spec.chunk.replicas, floor, current_chunk.as_ref());
    let ca_bundle = match &spec.tls {
        Some(tls) => Some(read_ca_bundle(&ctx.client, &ns, &tls.secret_name).await?),
        None => None,
    };
    let desired = build::build(
        cluster,
        &Inputs {
            chunk_replicas,
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

    // The admin API (drain progress, capacity) joins the StatefulSet view here once it exists.
    let observed = Observed {
        meta: Workload::of(&meta),
        chunk: Workload::of(&chunk),
    };

    let previous_replicas = current_chunk
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.replicas);
    if let Some(before) = previous_replicas
        && before != chunk_replicas
    {
        let (reason, direction) = if chunk_replicas > before {
            ("ScalingUp", "up")
        } else {
            ("ScalingDown", "down")
        };
        info!(
            before,
            after = chunk_replicas,
            "scaling chunk servers {direction}"
        );
        publish(
            cluster,
            ctx,
            EventType::Normal,
            reason,
            format!(
                "chunk servers {before} -> {chunk_replicas} (target {})",
                spec.chunk.replicas
            ),
        )
        .await;
    }

    let status = status::compute(cluster, &observed, &now);
    report(cluster, ctx, status).await?;

    let scaling_down = chunk_replicas > spec.chunk.replicas.max(floor);
    let action = if scaling_down {
        Action::requeue(SCALE_DOWN_POLL)
    } else {
        Action::requeue(RESYNC)
    };
    Ok((action, Outcome::Applied))
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

async fn read_ca_bundle(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get(name)
        .await
        .map_err(|source| Error::ReadTlsSecret {
            name: name.to_string(),
            source,
        })?;
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| Error::MissingCaBundle {
            name: name.to_string(),
        })
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
        publish(cluster, ctx, type_, phase.as_str(), note).await;
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
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
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
        Controller::new(
            api::<DogCluster>(&client, &scope),
            watcher::Config::default(),
        )
        .owns(api::<StatefulSet>(&client, &scope), owned.clone())
        .owns(api::<Service>(&client, &scope), owned.clone())
        .owns(api::<ConfigMap>(&client, &scope), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, &scope), owned.clone())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object_key(&object), "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile error"),
            }
        })
    });
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    futures::future::join_all(controllers).await;
}

fn object_key(object: &ObjectRef<DogCluster>) -> String {
    format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name
    )
}
