//! Certificates for `spec.tls`: the operator's own CA (`OperatorCA`, the default), cert-manager
//! `Certificate`s (`issuerRef`), or one given Secret (`secretName`).
//!
//! The `OperatorCA` flow is a pure function ([`plan_operator_ca`]) of the Secrets as they are
//! and the clock: it says which Secrets to write. The CA lives in `<c>-ca` (generated once,
//! kept); each component (meta, chunk, gateway) has `<c>-<component>-tls` with `tls.crt`,
//! `tls.key` and `ca.crt`, valid [`CERT_LIFETIME`] and reissued once less than a third of it
//! is left. Secrets are patched in place: the kubelet updates the mounted files and the
//! servers re-read them, so nothing restarts.
//!
//! CA rotation overlaps: once less than a third of the CA's life is left a next CA is made and
//! added to every `ca.crt` bundle; only after [`CA_OVERLAP`] (every pod has seen the bundle)
//! does it become the signing CA, and every component is reissued by it; the old CA stays in
//! the bundles until it expires.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dogfs_security::Role;
use dogfs_security::issue::{Authority, CertRequest, IssueError};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;
use tracing::info;

use crate::build::{self, Names};
use crate::crd::{IssuerRef, MANAGER};

/// Lifetime of a component certificate the operator issues.
pub const CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of the operator's CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before they are issued, for clocks that lag.
pub const SKEW: Duration = Duration::from_secs(3600);
/// How long a next CA sits in every bundle before it signs: far longer than the kubelet needs
/// to update mounted Secrets (about a minute) and the servers to re-read them.
pub const CA_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Keys of the CA Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const NEXT_CERT_KEY: &str = "next.crt";
pub const NEXT_KEY_KEY: &str = "next.key";
pub const PREVIOUS_CERT_KEY: &str = "previous.crt";
/// Keys of a component Secret (the kubernetes.io/tls layout plus cert-manager's `ca.crt`).
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "CA Secret {name}: {reason} (delete it to have a new CA made; every pod then gets new certificates)"
    )]
    BadCaSecret { name: String, reason: String },
    #[error("making a CA: {0}")]
    CreateCa(#[source] IssueError),
    #[error("loading the CA from {name}: {source}")]
    LoadCa { name: String, source: IssueError },
    #[error("issuing the {component} certificate: {source}")]
    Issue {
        component: &'static str,
        source: IssueError,
    },
    #[error("reading Secret {name}: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("writing Secret {name}: {source}")]
    WriteSecret { name: String, source: kube::Error },
    #[error("applying cert-manager Certificate {name}: {source}")]
    ApplyCertificate { name: String, source: kube::Error },
}

/// A component with its own certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Meta,
    Chunk,
    Gateway,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Meta, Component::Chunk, Component::Gateway];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Meta => "meta",
            Component::Chunk => "chunk",
            Component::Gateway => "gateway",
        }
    }

    /// The role its certificate carries as a `spiffe://dogfs/<role>` URI SAN.
    pub fn role(self) -> Role {
        match self {
            Component::Meta => Role::Meta,
            Component::Chunk => Role::Chunk,
            Component::Gateway => Role::Gateway,
        }
    }

    /// The names peers dial (besides `localhost`, which every certificate has).
    pub fn dns_names(self, names: &Names) -> Vec<String> {
        let ns = &names.namespace;
        match self {
            Component::Meta => vec![
                format!("{}.{ns}.svc", names.meta()),
                format!("{}.{ns}.svc.cluster.local", names.meta()),
                format!("*.{}.{ns}.svc.cluster.local", names.meta_headless()),
            ],
            Component::Chunk => vec![
                format!("{}.{ns}.svc", names.chunk()),
                format!("*.{}.{ns}.svc.cluster.local", names.chunk_headless()),
            ],
            Component::Gateway => vec![format!("{}.{ns}.svc", names.s3())],
        }
    }
}

/// The Secret a component's pods mount, per TLS mode: the given one, or its own.
pub fn secret_for(names: &Names, given: Option<&str>, component: Component) -> String {
    match given {
        Some(name) => name.to_string(),
        None => names.tls_secret(component.as_str()),
    }
}

/// A CA certificate as read back: its PEM and the fields the plan looks at.
#[derive(Debug, Clone)]
struct CaCert {
    pem: String,
    key: Option<String>,
    common_name: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// What a certificate says, as far as renewal is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub issuer_cn: String,
    pub subject_cn: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// DNS and URI SANs, sorted.
    pub sans: Vec<String>,
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Parses the first certificate of a PEM text.
pub fn parse_cert(pem: &str) -> Option<CertInfo> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                x509_parser::extensions::GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                _ => {}
            }
        }
    }
    sans.sort();
    Some(CertInfo {
        issuer_cn: cn(cert.issuer()),
        subject_cn: cn(cert.subject()),
        not_before: at(cert.validity().not_before.timestamp()),
        not_after: at(cert.validity().not_after.timestamp()),
        sans,
    })
}

fn data_str(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn ca_cert(pem: String, key: Option<String>) -> Option<CaCert> {
    let info = parse_cert(&pem)?;
    Some(CaCert {
        pem,
        key,
        common_name: info.subject_cn,
        not_before: info.not_before,
        not_after: info.not_after,
    })
}

fn remaining(not_after: SystemTime, now: SystemTime) -> Duration {
    not_after.duration_since(now).unwrap_or(Duration::ZERO)
}

fn lifetime(not_before: SystemTime, not_after: SystemTime) -> Duration {
    not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO)
}

/// Due for renewal: less than a third of its life left.
fn due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    remaining(not_after, now) < lifetime(not_before, not_after) / 3
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn new_ca(names: &Names, now: SystemTime) -> Result<CaCert, Error> {
    // The issue time in the name tells CAs apart (certificates name their issuer by it).
    let name = format!(
        "dogfs CA {}.{} {}",
        names.cluster,
        names.namespace,
        unix(now)
    );
    let ca = Authority::new_valid(&name, now - SKEW, now + CA_LIFETIME).map_err(Error::CreateCa)?;
    Ok(CaCert {
        pem: ca.cert_pem(),
        key: Some(ca.key_pem()),
        common_name: name,
        not_before: now - SKEW,
        not_after: now + CA_LIFETIME,
    })
}

/// A Normal Event about a certificate step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEvent {
    pub reason: &'static str,
    pub note: String,
}

/// What to write for the `OperatorCA` mode.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPlan {
    /// Secrets to create or patch (CA first), complete objects for server-side apply.
    pub writes: Vec<Secret>,
    /// The CA bundle every `ca.crt` carries: the signing CA first, then a next or previous one.
    pub bundle: String,
    pub events: Vec<CertEvent>,
}

/// Decides the `OperatorCA` Secrets from what exists (`ca`: the `<c>-ca` Secret;
/// `components`: each component's Secret, when it exists) and the time.
pub fn plan_operator_ca(
    names: &Names,
    owner: &OwnerReference,
    ca: Option<&Secret>,
    components: &BTreeMap<Component, Secret>,
    now: SystemTime,
) -> Result<TlsPlan, Error> {
    let ca_name = names.ca_secret();
    let bad = |reason: &str| Error::BadCaSecret {
        name: ca_name.clone(),
        reason: reason.to_string(),
    };
    let mut events = Vec::new();
    let mut ca_changed = false;

    let (mut current, mut next, mut previous) = match ca {
        None => {
            let fresh = new_ca(names, now)?;
            events.push(CertEvent {
                reason: "CACreated",
                note: format!("created CA {:?} in Secret {ca_name}", fresh.common_name),
            });
            ca_changed = true;
            (fresh, None, None)
        }
        Some(secret) => {
            let pem = data_str(Some(secret), CA_CERT_KEY).ok_or_else(|| bad("no ca.crt"))?;
            let key = data_str(Some(secret), CA_KEY_KEY).ok_or_else(|| bad("no ca.key"))?;
            let current =
                ca_cert(pem, Some(key)).ok_or_else(|| bad("ca.crt holds no certificate"))?;
            let next = match (
                data_str(Some(secret), NEXT_CERT_KEY),
                data_str(Some(secret), NEXT_KEY_KEY),
            ) {
                (Some(pem), Some(key)) => {
                    Some(ca_cert(pem, Some(key)).ok_or_else(|| bad("next.crt does not parse"))?)
                }
                _ => None,
            };
            let previous =
                data_str(Some(secret), PREVIOUS_CERT_KEY).and_then(|pem| ca_cert(pem, None));
            (current, next, previous)
        }
    };

    // Rotation, one stage per reconcile at most.
    if let Some(n) = &next {
        let published = n.not_before + SKEW;
        if now >= published + CA_OVERLAP || now >= current.not_after {
            let n = n.clone();
            events.push(CertEvent {
                reason: "CARotated",
                note: format!(
                    "CA {:?} now signs; {:?} stays trusted until it expires",
                    n.common_name, current.common_name
                ),
            });
            previous = Some(std::mem::replace(&mut current, n));
            next = None;
            ca_changed = true;
        }
    } else if now >= current.not_after {
        // Expired with no successor (the operator was not running): a new CA at once.
        let fresh = new_ca(names, now)?;
        events.push(CertEvent {
            reason: "CARotated",
            note: format!(
                "CA {:?} expired; {:?} replaces it",
                current.common_name, fresh.common_name
            ),
        });
        previous = None;
        current = fresh;
        ca_changed = true;
    } else if due(current.not_before, current.not_after, now) {
        let fresh = new_ca(names, now)?;
        events.push(CertEvent {
            reason: "CARotationStarted",
            note: format!(
                "CA {:?} expires {}s from now: added {:?} to every ca.crt; it signs after {}h",
                current.common_name,
                remaining(current.not_after, now).as_secs(),
                fresh.common_name,
                CA_OVERLAP.as_secs() / 3600
            ),
        });
        next = Some(fresh);
        ca_changed = true;
    }
    if previous.as_ref().is_some_and(|p| now >= p.not_after) {
        previous = None;
        ca_changed = true;
    }

    let mut bundle = current.pem.clone();
    for extra in [&next, &previous].into_iter().flatten() {
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(&extra.pem);
    }

    let mut writes = Vec::new();
    if ca_changed {
        let mut data = BTreeMap::from([(CA_CERT_KEY, current.pem.clone())]);
        if let Some(key) = &current.key {
            data.insert(CA_KEY_KEY, key.clone());
        }
        if let Some(n) = &next {
            data.insert(NEXT_CERT_KEY, n.pem.clone());
            if let Some(key) = &n.key {
                data.insert(NEXT_KEY_KEY, key.clone());
            }
        }
        if let Some(p) = &previous {
            data.insert(PREVIOUS_CERT_KEY, p.pem.clone());
        }
        writes.push(secret(names, owner, ca_name.clone(), "ca", None, data));
    }

    let current_key = current.key.as_deref().ok_or_else(|| bad("no ca.key"))?;
    let authority =
        Authority::from_pem(&current.pem, current_key).map_err(|source| Error::LoadCa {
            name: ca_name.clone(),
            source,
        })?;
    for component in Component::ALL {
        let name = names.tls_secret(component.as_str());
        let existing = components.get(&component);
        let cert = data_str(existing, TLS_CERT_KEY);
        let key = data_str(existing, TLS_KEY_KEY);
        let info = cert.as_deref().and_then(parse_cert);
        let wanted = wanted_sans(names, component);
        let why = match (&info, &key) {
            (None, _) | (_, None) => Some("issued"),
            (Some(info), Some(_)) if info.issuer_cn != current.common_name => {
                Some("reissued by the new CA")
            }
            (Some(info), Some(_)) if due(info.not_before, info.not_after, now) => Some("renewed"),
            (Some(info), Some(_)) if info.sans != wanted => Some("reissued with new names"),
            _ => None,
        };
        let (cert, key) = match (why, cert, key) {
            (None, Some(cert), Some(key)) => {
                if data_str(existing, build::TLS_CA_KEY).as_deref() == Some(bundle.as_str()) {
                    continue;
                }
                (cert, key)
            }
            (why, _, _) => {
                let request = CertRequest::new(format!("{}-{}", names.cluster, component.as_str()))
                    .roles(&[component.role()])
                    .dns(component.dns_names(names))
                    .valid(now - SKEW, now + CERT_LIFETIME);
                let issued = authority.issue(&request).map_err(|source| Error::Issue {
                    component: component.as_str(),
                    source,
                })?;
                let why = why.unwrap_or("issued");
                info!(secret = %name, component = component.as_str(), why, "certificate");
                events.push(CertEvent {
                    reason: if why == "issued" {
                        "CertificateIssued"
                    } else {
                        "CertificateRenewed"
                    },
                    note: format!(
                        "{} certificate {why} in Secret {name}, valid {} days",
                        component.as_str(),
                        CERT_LIFETIME.as_secs() / 86400
                    ),
                });
                (issued.cert_pem, issued.key_pem)
            }
        };
        let data = BTreeMap::from([
            (TLS_CERT_KEY, cert),
            (TLS_KEY_KEY, key),
            (build::TLS_CA_KEY, bundle.clone()),
        ]);
        writes.push(secret(
            names,
            owner,
            name,
            component.as_str(),
            Some("kubernetes.io/tls"),
            data,
        ));
    }
    Ok(TlsPlan {
        writes,
        bundle,
        events,
    })
}

/// The SANs a component's certificate must carry, as [`parse_cert`] lists them.
fn wanted_sans(names: &Names, component: Component) -> Vec<String> {
    let mut sans: Vec<String> = std::iter::once("localhost".to_string())
        .chain(component.dns_names(names))
        .map(|d| format!("DNS:{d}"))
        .collect();
    sans.push(format!("URI:{}", component.role().uri()));
    sans.sort();
    sans
}

fn secret(
    names: &Names,
    owner: &OwnerReference,
    name: String,
    component: &str,
    type_: Option<&str>,
    data: BTreeMap<&str, String>,
) -> Secret {
    Secret {
        metadata: build::metadata(names, name, component, owner),
        type_: type_.map(str::to_string),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// cert-manager's `Certificate` kind.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// The cert-manager `Certificate` of one component: same names, roles and usages as the
/// operator's own certificates, renewed by cert-manager a third of the lifetime before expiry.
pub fn certificate(
    names: &Names,
    owner: &OwnerReference,
    component: Component,
    issuer: &IssuerRef,
) -> DynamicObject {
    let name = names.tls_secret(component.as_str());
    let mut dns = vec!["localhost".to_string()];
    dns.extend(component.dns_names(names));
    let mut object = DynamicObject::new(&name, &certificate_resource()).data(json!({
        "spec": {
            "secretName": name,
            "commonName": format!("{}-{}", names.cluster, component.as_str()),
            "duration": format!("{}h", CERT_LIFETIME.as_secs() / 3600),
            "renewBefore": format!("{}h", CERT_LIFETIME.as_secs() / 3600 / 3),
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "uris": [component.role().uri()],
            "dnsNames": dns,
            "issuerRef": {
                "name": issuer.name,
                "kind": issuer.kind.as_str(),
                "group": "cert-manager.io",
            },
            // The Secret goes with the DogCluster's Certificate.
            "secretTemplate": {"labels": build::labels(names, component.as_str())},
        }
    }));
    object.metadata = build::metadata(names, name, component.as_str(), owner);
    object
}

/// Outcome of the TLS step, for the status and the admin client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsState {
    /// The CA bundle, once known (the admin client trusts it, the client ConfigMap carries it).
    pub bundle: Option<String>,
    /// `TLSReady` condition: status, reason, message.
    pub condition: (bool, String, String),
    pub events: Vec<CertEvent>,
}

impl TlsState {
    pub fn ready(bundle: String, reason: &str, message: String, events: Vec<CertEvent>) -> Self {
        TlsState {
            bundle: Some(bundle),
            condition: (true, reason.to_string(), message),
            events,
        }
    }
    pub fn pending(reason: &str, message: String) -> Self {
        TlsState {
            bundle: None,
            condition: (false, reason.to_string(), message),
            events: Vec::new(),
        }
    }
}

async fn get_secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadSecret {
            name: name.to_string(),
            source,
        })
}

/// `OperatorCA`: reads the CA and component Secrets, writes what the plan says.
pub async fn ensure_operator_ca(
    client: &Client,
    names: &Names,
    owner: &OwnerReference,
    now: SystemTime,
) -> Result<TlsState, Error> {
    let ns = &names.namespace;
    let ca = get_secret(client, ns, &names.ca_secret()).await?;
    let mut components = BTreeMap::new();
    for component in Component::ALL {
        if let Some(s) = get_secret(client, ns, &names.tls_secret(component.as_str())).await? {
            components.insert(component, s);
        }
    }
    let plan = plan_operator_ca(names, owner, ca.as_ref(), &components, now)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for secret in &plan.writes {
        let name = secret.metadata.name.clone().unwrap_or_default();
        secrets
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(secret),
            )
            .await
            .map_err(|source| Error::WriteSecret { name, source })?;
    }
    Ok(TlsState::ready(
        plan.bundle,
        "OperatorCA",
        format!(
            "certificates from the operator's CA in {}, renewed {} days before expiry",
            names.ca_secret(),
            CERT_LIFETIME.as_secs() / 86400 / 3
        ),
        plan.events,
    ))
}

/// cert-manager: applies a `Certificate` per component and reads the CA bundle cert-manager
/// wrote into the metadata Secret. Without cert-manager, or before it issued, the state says
/// so (a condition, not an error: the rest of the cluster is still applied).
pub async fn ensure_cert_manager(
    client: &Client,
    names: &Names,
    owner: &OwnerReference,
    issuer: &IssuerRef,
) -> Result<TlsState, Error> {
    let ns = &names.namespace;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &certificate_resource());
    for component in Component::ALL {
        let object = certificate(names, owner, component, issuer);
        let name = names.tls_secret(component.as_str());
        match api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
        {
            Ok(_) => {}
            // The API server does not know the kind: cert-manager is not installed.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Ok(TlsState::pending(
                    "CertManagerMissing",
                    format!(
                        "tls.issuerRef needs cert-manager, but certificates.cert-manager.io/v1 \
                         is not served: install cert-manager or choose another tls mode \
                         ({})",
                        status.message
                    ),
                ));
            }
            Err(source) => return Err(Error::ApplyCertificate { name, source }),
        }
    }
    let meta_secret = names.tls_secret(Component::Meta.as_str());
    let secret = get_secret(client, ns, &meta_secret).await?;
    match data_str(secret.as_ref(), build::TLS_CA_KEY).filter(|ca| ca.contains("BEGIN CERTIFICATE"))
    {
        Some(bundle) => Ok(TlsState::ready(
            bundle,
            "CertManager",
            format!("certificates from {} {}", issuer.kind.as_str(), issuer.name),
            Vec::new(),
        )),
        None => Ok(TlsState::pending(
            "CertificatePending",
            format!(
                "waiting for cert-manager to write {meta_secret} with a ca.crt ({} {})",
                issuer.kind.as_str(),
                issuer.name
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ns: &str) -> Names {
        Names {
            cluster: "demo".into(),
            namespace: ns.into(),
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "dogfs.io/v1alpha1".into(),
            kind: "DogCluster".into(),
            name: "demo".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// Applies a plan's writes to the Secrets as the API server would.
    fn written(
        plan: &TlsPlan,
        ca: &mut Option<Secret>,
        components: &mut BTreeMap<Component, Secret>,
    ) {
        for s in &plan.writes {
            let name = s.metadata.name.clone().unwrap();
            match Component::ALL
                .into_iter()
                .find(|c| name == format!("demo-{}-tls", c.as_str()))
            {
                Some(c) => {
                    components.insert(c, s.clone());
                }
                None => *ca = Some(s.clone()),
            }
        }
    }

    #[test]
    fn first_plan_writes_everything_and_the_next_one_nothing() {
        let n = names("ns");
        let (mut ca, mut components) = (None, BTreeMap::new());
        let plan = plan_operator_ca(&n, &owner(), None, &components, t0()).unwrap();
        let written_names: Vec<_> = plan
            .writes
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            written_names,
            [
                "demo-ca",
                "demo-meta-tls",
                "demo-chunk-tls",
                "demo-gateway-tls"
            ]
        );
        written(&plan, &mut ca, &mut components);
        let again = plan_operator_ca(&n, &owner(), ca.as_ref(), &components, t0()).unwrap();
        assert!(again.writes.is_empty(), "{:?}", again.events);
        assert_eq!(again.bundle, plan.bundle);
    }

    #[test]
    fn a_certificate_with_other_names_is_reissued() {
        let (mut ca, mut components) = (None, BTreeMap::new());
        let plan = plan_operator_ca(&names("a"), &owner(), None, &components, t0()).unwrap();
        written(&plan, &mut ca, &mut components);
        // Same CA, but the certificates name namespace `a`.
        let moved =
            plan_operator_ca(&names("b"), &owner(), ca.as_ref(), &components, t0()).unwrap();
        assert_eq!(moved.writes.len(), 3, "no CA write, three reissues");
        assert!(
            moved
                .events
                .iter()
                .all(|e| e.note.contains("reissued with new names"))
        );
    }

    #[test]
    fn a_ca_secret_without_its_key_is_an_error_naming_it() {
        let broken = Secret {
            data: Some(BTreeMap::from([(
                CA_CERT_KEY.to_string(),
                ByteString(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
            )])),
            ..Secret::default()
        };
        let error = plan_operator_ca(
            &names("ns"),
            &owner(),
            Some(&broken),
            &BTreeMap::new(),
            t0(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("demo-ca: no ca.key"), "{error}");
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_life_left() {
        let start = t0();
        let end = start + CERT_LIFETIME;
        assert!(!due(start, end, start));
        assert!(!due(
            start,
            end,
            end - CERT_LIFETIME / 3 - Duration::from_secs(1)
        ));
        assert!(due(
            start,
            end,
            end - CERT_LIFETIME / 3 + Duration::from_secs(1)
        ));
        assert!(due(start, end, end + Duration::from_secs(1)));
    }

    #[test]
    fn certificates_ask_cert_manager_for_the_same_names_and_usages() {
        let issuer = IssuerRef {
            name: "ca".into(),
            kind: crate::crd::IssuerKind::Issuer,
        };
        let object = certificate(&names("ns"), &owner(), Component::Chunk, &issuer);
        let value = serde_json::to_value(&object).unwrap();
        assert_eq!(value["apiVersion"], "cert-manager.io/v1");
        assert_eq!(value["kind"], "Certificate");
        assert_eq!(value["metadata"]["name"], "demo-chunk-tls");
        assert_eq!(value["spec"]["secretName"], "demo-chunk-tls");
        assert_eq!(value["spec"]["uris"], json!(["spiffe://dogfs/chunk"]));
        assert_eq!(
            value["spec"]["dnsNames"],
            json!([
                "localhost",
                "demo-chunk.ns.svc",
                "*.demo-chunk-headless.ns.svc.cluster.local"
            ])
        );
        assert_eq!(value["spec"]["issuerRef"]["kind"], "Issuer");
    }
}
