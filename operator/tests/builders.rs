//! Golden-file tests of the pure builders: for the sample spec in `fixtures/sample.yaml`, every
//! child object must equal its reviewed manifest in `golden/`. After an intended change, rerun
//! with `UPDATE_GOLDEN=1` and review the diff like code.

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use dogfs_operator::build::{self, Desired, Inputs};
use dogfs_operator::crd::{AuthSpec, DogCluster, NetworkPolicySpec, TlsModeSpec, TlsSpec};
use kube::Resource;
use serde::Serialize;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBsample\n-----END CERTIFICATE-----\n";

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn sample() -> DogCluster {
    let text = std::fs::read_to_string(dir("fixtures").join("sample.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn desired() -> Desired {
    let cluster = sample();
    dogfs_operator::validate::validate(&cluster).unwrap();
    let inputs = Inputs {
        chunk_replicas: cluster.spec.chunk.replicas,
        ca_bundle: Some(CA.into()),
    };
    build::build(&cluster, &inputs).unwrap()
}

/// `(file name, YAML)` for every object, in apply order.
fn rendered(d: &Desired) -> Vec<(String, String)> {
    let s3 = d.s3.as_ref().unwrap();
    fn one<K: Resource<DynamicType = ()> + Serialize>(obj: &K) -> (String, String) {
        let name = format!(
            "{}-{}.yaml",
            K::kind(&()).to_lowercase(),
            obj.meta().name.clone().unwrap()
        );
        (name, serde_yaml::to_string(obj).unwrap())
    }
    vec![
        one(&d.config),
        one(&d.client_config),
        one(&d.meta_headless),
        one(&d.meta_service),
        one(&d.chunk_headless),
        one(&d.chunk_service),
        one(&d.meta),
        one(&d.chunk),
        one(&d.meta_pdb),
        one(&d.chunk_pdb),
        one(&s3.service),
        one(&s3.deployment),
        one(&s3.pdb),
        one(&d.network_policies[0]),
        one(&d.network_policies[1]),
    ]
}

#[test]
fn children_match_golden_files() {
    let golden = dir("golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    let objects = rendered(&desired());
    for (name, yaml) in &objects {
        let path = golden.join(name);
        if update {
            std::fs::write(&path, yaml).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if &expected == yaml => {}
            Ok(expected) => mismatches.push(format!(
                "{name} differs:\n--- expected\n{expected}\n--- actual\n{yaml}"
            )),
            Err(e) => mismatches.push(format!("{name}: {e} (run with UPDATE_GOLDEN=1)")),
        }
    }
    // No stale golden files either: each one must be produced by the builders.
    for entry in std::fs::read_dir(&golden).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if !objects.iter().any(|(name, _)| *name == file) && !update {
            mismatches.push(format!("{file} is not produced by the builders any more"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn every_child_is_owned_by_the_cluster_and_labelled() {
    let cluster = sample();
    let d = desired();
    let s3 = d.s3.as_ref().unwrap();
    let metas = [
        &d.config.metadata,
        &d.client_config.metadata,
        &d.meta_headless.metadata,
        &d.meta_service.metadata,
        &d.chunk_headless.metadata,
        &d.chunk_service.metadata,
        &d.meta.metadata,
        &d.chunk.metadata,
        &d.meta_pdb.metadata,
        &d.chunk_pdb.metadata,
        &s3.service.metadata,
        &s3.deployment.metadata,
        &s3.pdb.metadata,
    ];
    for meta in metas {
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        let owner = &owners[0];
        assert_eq!(owner.api_version, "dogfs.io/v1alpha1");
        assert_eq!(owner.kind, "DogCluster");
        assert_eq!(owner.name, "demo");
        assert_eq!(Some(&owner.uid), cluster.metadata.uid.as_ref());
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("storage"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "dogfs-operator");
    }
}

#[test]
fn meta_peers_are_stable_dns_names_in_ordinal_order() {
    let d = desired();
    let data = d.config.data.as_ref().unwrap();
    assert_eq!(
        data["DOGFS_PEERS"],
        "demo-meta-0.demo-meta-headless.storage.svc.cluster.local:7000,\
         demo-meta-1.demo-meta-headless.storage.svc.cluster.local:7000,\
         demo-meta-2.demo-meta-headless.storage.svc.cluster.local:7000"
    );
    let client = d.client_config.data.as_ref().unwrap();
    assert_eq!(
        client["DOGFS_ENDPOINT"],
        "https://demo-meta.storage.svc:7000"
    );
    assert_eq!(client["ca.crt"], CA);
}

#[test]
fn chunk_claims_are_left_to_the_operator_on_scale_down() {
    // The sample asks for `whenScaled: Delete`: the operator deletes a claim itself once the
    // server is drained and removed, so the StatefulSet controller must not on its own.
    let cluster = sample();
    assert_eq!(
        cluster.spec.pvc_retention.when_scaled,
        dogfs_operator::crd::RetentionPolicy::Delete
    );
    let d = desired();
    let chunk = d.chunk.spec.as_ref().unwrap();
    let policy = chunk
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
    assert_eq!(policy.when_deleted.as_deref(), Some("Retain"));
    // The claim template's name is what `Names::chunk_claim` assumes.
    let template = &chunk.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(template.metadata.name.as_deref(), Some(build::DATA_VOLUME));
    let names = build::Names::of(&cluster).unwrap();
    assert_eq!(names.chunk_claim(4), "data-demo-chunk-4");
    // What a chunk pod advertises is what the operator maps registry entries back from.
    let env = env_of(&d.chunk);
    assert_eq!(
        var(&env, "DOGFS_ADVERTISE_ADDR"),
        Some("$(POD_NAME).demo-chunk-headless.storage.svc.cluster.local:7100")
    );
    assert_eq!(
        names.chunk_address(4),
        "demo-chunk-4.demo-chunk-headless.storage.svc.cluster.local:7100"
    );
    // A retained claim reused after a scale-down and up holds a removed id: rejoin as new.
    assert_eq!(var(&env, "DOGFS_REJOIN_WHEN_REMOVED"), Some("true"));
    assert_eq!(var(&env_of(&d.meta), "DOGFS_REJOIN_WHEN_REMOVED"), None);
}

/// `name=value` of every plain variable of the one container of a StatefulSet.
fn env_of(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> Vec<(String, Option<String>)> {
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

fn var<'a>(env: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

fn config_hash(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> String {
    let template = &sts.spec.as_ref().unwrap().template;
    template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[build::CONFIG_HASH_ANNOTATION]
        .clone()
}

fn build_with(repair: Option<dogfs_operator::crd::RepairSpec>) -> Desired {
    let mut cluster = sample();
    cluster.spec.repair = repair;
    dogfs_operator::validate::validate(&cluster).unwrap();
    let inputs = Inputs {
        chunk_replicas: cluster.spec.chunk.replicas,
        ca_bundle: None,
    };
    build::build(&cluster, &inputs).unwrap()
}

const REPAIR_VARS: [&str; 2] = ["DOGFS_MIN_WRITE_SHARDS", "DOGFS_REPAIR_AFTER_SECS"];

#[test]
fn repair_settings_reach_every_metadata_pod_and_only_them() {
    use dogfs_operator::crd::RepairSpec;
    let d = build_with(Some(RepairSpec {
        min_write_shards: Some(6),
        after_seconds: Some(1800),
    }));
    // One pod template for every metadata pod, so each of them gets the same values.
    let meta = env_of(&d.meta);
    assert_eq!(var(&meta, "DOGFS_MIN_WRITE_SHARDS"), Some("6"));
    assert_eq!(var(&meta, "DOGFS_REPAIR_AFTER_SECS"), Some("1800"));
    // Chunk servers have no such flags, and the shared ConfigMap would restart them on a change.
    let chunk = env_of(&d.chunk);
    let config = d.config.data.as_ref().unwrap();
    for name in REPAIR_VARS {
        assert_eq!(var(&chunk, name), None, "{name} on chunk servers");
        assert!(!config.contains_key(name), "{name} in the shared ConfigMap");
    }
}

#[test]
fn unset_repair_settings_have_no_variable_so_server_defaults_apply() {
    use dogfs_operator::crd::RepairSpec;
    for repair in [None, Some(RepairSpec::default())] {
        let d = build_with(repair.clone());
        let meta = env_of(&d.meta);
        for name in REPAIR_VARS {
            assert!(
                meta.iter().all(|(n, _)| n != name),
                "{name} set for {repair:?}"
            );
        }
    }
    // Each one alone: only its own variable.
    let d = build_with(Some(RepairSpec {
        min_write_shards: None,
        after_seconds: Some(0),
    }));
    let meta = env_of(&d.meta);
    assert_eq!(var(&meta, "DOGFS_REPAIR_AFTER_SECS"), Some("0"));
    assert!(meta.iter().all(|(n, _)| n != "DOGFS_MIN_WRITE_SHARDS"));
    let d = build_with(Some(RepairSpec {
        min_write_shards: Some(5),
        after_seconds: None,
    }));
    let meta = env_of(&d.meta);
    assert_eq!(var(&meta, "DOGFS_MIN_WRITE_SHARDS"), Some("5"));
    assert!(meta.iter().all(|(n, _)| n != "DOGFS_REPAIR_AFTER_SECS"));
}

#[test]
fn changing_repair_settings_rolls_metadata_pods_but_not_chunk_servers() {
    use dogfs_operator::crd::RepairSpec;
    let before = build_with(None);
    let after = build_with(Some(RepairSpec {
        min_write_shards: Some(6),
        after_seconds: Some(60),
    }));
    assert_eq!(before.config, after.config);
    assert_eq!(config_hash(&before.chunk), config_hash(&after.chunk));
    assert_eq!(
        before.chunk, after.chunk,
        "chunk StatefulSet must not change"
    );
    assert_ne!(
        before.meta.spec.as_ref().unwrap().template,
        after.meta.spec.as_ref().unwrap().template,
        "a changed pod template is what restarts the metadata pods"
    );
}

fn build_s3(s3: Option<serde_json::Value>) -> Desired {
    let mut cluster = sample();
    cluster.spec.s3 = s3.map(|v| serde_json::from_value(v).unwrap());
    dogfs_operator::validate::validate(&cluster).unwrap();
    let inputs = Inputs {
        chunk_replicas: cluster.spec.chunk.replicas,
        ca_bundle: None,
    };
    build::build(&cluster, &inputs).unwrap()
}

/// The gateway pod template's one container.
fn s3_container(d: &Desired) -> k8s_openapi::api::core::v1::Container {
    let deployment = &d.s3.as_ref().unwrap().deployment;
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    pod.containers[0].clone()
}

fn plain_env(c: &k8s_openapi::api::core::v1::Container) -> Vec<(String, Option<String>)> {
    c.env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

#[test]
fn s3_gateway_runs_dogfs_s3_against_the_metadata_service_with_the_mounted_keys() {
    let d = desired();
    let s3 = d.s3.as_ref().unwrap();
    let c = s3_container(&d);
    assert_eq!(c.command.as_deref(), Some(&["dogfs-s3".to_string()][..]));
    assert_eq!(c.image.as_deref(), Some("registry.example.com/dogfs:0.1.0"));
    let env = plain_env(&c);
    // The sample has spec.tls: TLS to the metadata Service, trusting the Secret's CA.
    assert_eq!(
        var(&env, "DOGFS_ENDPOINT"),
        Some("https://demo-meta.storage.svc:7000")
    );
    assert_eq!(var(&env, "DOGFS_CA"), Some("/etc/dogfs/tls/ca.crt"));
    assert_eq!(var(&env, "DOGFS_S3_LISTEN"), Some("0.0.0.0:9000"));
    assert_eq!(var(&env, "DOGFS_S3_REGION"), Some("eu-west-3"));
    assert_eq!(
        var(&env, "DOGFS_S3_CREDENTIALS"),
        Some("/etc/dogfs/s3/credentials.yaml")
    );
    assert_eq!(var(&env, "DOGFS_S3_ANONYMOUS"), None);
    // The Secret named in the spec, read-only, only its credentials.yaml.
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/etc/dogfs/s3")
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    let pod = s3
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("demo-s3-credentials"));
    assert_eq!(secret.items.as_ref().unwrap()[0].key, "credentials.yaml");
    // TCP probes on the S3 port: an unsigned HTTP request would answer 403.
    let ready = c.readiness_probe.as_ref().unwrap();
    assert!(ready.http_get.is_none());
    assert_eq!(
        ready.tcp_socket.as_ref().unwrap().port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("s3".into())
    );
    // Same pod conventions as the servers.
    let sts_pod = d.meta.spec.as_ref().unwrap().template.spec.clone().unwrap();
    assert_eq!(pod.security_context, sts_pod.security_context);
    let sts_container = &sts_pod.containers[0];
    assert_eq!(c.security_context, sts_container.security_context);
    assert_eq!(pod.topology_spread_constraints.as_ref().unwrap().len(), 2);
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "512Mi"
    );
    assert_eq!(s3.deployment.spec.as_ref().unwrap().replicas, Some(3));

    // The Service maps the spec's port and type to the pods' named port.
    let svc = s3.service.spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    let port = &svc.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 80);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("s3".into()))
    );
    // One gateway at a time may be evicted.
    assert_eq!(
        s3.pdb.spec.as_ref().unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    // In-cluster S3 clients find the gateway in the client ConfigMap.
    let client = d.client_config.data.as_ref().unwrap();
    assert_eq!(client["DOGFS_S3_ENDPOINT"], "http://demo-s3.storage.svc:80");
}

#[test]
fn s3_disabled_or_absent_builds_no_gateway_and_no_endpoint() {
    for s3 in [
        None,
        Some(serde_json::json!({"enabled": false, "credentialsSecret": "demo-s3-credentials"})),
        Some(serde_json::json!({})),
    ] {
        let d = build_s3(s3.clone());
        assert!(d.s3.is_none(), "{s3:?}");
        let client = d.client_config.data.as_ref().unwrap();
        assert!(!client.contains_key("DOGFS_S3_ENDPOINT"), "{s3:?}");
    }
}

#[test]
fn s3_anonymous_gateway_has_no_credentials_and_says_so() {
    let d = build_s3(Some(
        serde_json::json!({"enabled": true, "anonymous": true}),
    ));
    let c = s3_container(&d);
    let env = plain_env(&c);
    assert_eq!(var(&env, "DOGFS_S3_ANONYMOUS"), Some("true"));
    assert_eq!(var(&env, "DOGFS_S3_CREDENTIALS"), None);
    // Unset region: the gateway's own default.
    assert_eq!(var(&env, "DOGFS_S3_REGION"), None);
    assert!(
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .all(|m| m.mount_path != "/etc/dogfs/s3")
    );
    let d = d.s3.unwrap();
    assert_eq!(d.deployment.spec.as_ref().unwrap().replicas, Some(2));
    let svc = d.service.spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc.ports.unwrap()[0].port, 9000);
}

#[test]
fn turning_s3_on_or_off_restarts_no_server() {
    let off = build_s3(None);
    let on = build_s3(Some(
        serde_json::json!({"enabled": true, "anonymous": true}),
    ));
    assert_eq!(off.config, on.config);
    assert_eq!(off.meta, on.meta);
    assert_eq!(off.chunk, on.chunk);
}

/// The gateway's volume mounted at `path` and the volume itself, if any.
fn s3_volume_at(
    d: &Desired,
    path: &str,
) -> Option<(
    k8s_openapi::api::core::v1::VolumeMount,
    k8s_openapi::api::core::v1::Volume,
)> {
    let c = s3_container(d);
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == path)?
        .clone();
    let deployment = &d.s3.as_ref().unwrap().deployment;
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref();
    let volume = pod
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap()
        .clone();
    Some((mount, volume))
}

/// The sample with `tls.secretName: demo-tls`, or with `tls.mode: Disabled` (tokens off in
/// both).
fn build_tls(tls: bool) -> Desired {
    let mut cluster = sample();
    cluster.spec.tls = Some(if tls {
        TlsSpec {
            secret_name: Some("demo-tls".into()),
            ..TlsSpec::default()
        }
    } else {
        TlsSpec {
            mode: Some(TlsModeSpec::Disabled),
            ..TlsSpec::default()
        }
    });
    // Tokens need TLS; off in both, so the two differ only in TLS.
    cluster.spec.auth = Some(dogfs_operator::crd::AuthSpec {
        enabled: false,
        secret_name: None,
    });
    dogfs_operator::validate::validate(&cluster).unwrap();
    let inputs = Inputs {
        chunk_replicas: cluster.spec.chunk.replicas,
        ca_bundle: tls.then(|| CA.to_string()),
    };
    build::build(&cluster, &inputs).unwrap()
}

#[test]
fn with_tls_the_gateway_dials_https_and_trusts_only_the_mounted_ca() {
    let d = build_tls(true);
    let env = plain_env(&s3_container(&d));
    assert_eq!(
        var(&env, "DOGFS_ENDPOINT"),
        Some("https://demo-meta.storage.svc:7000")
    );
    assert_eq!(var(&env, "DOGFS_CA"), Some("/etc/dogfs/tls/ca.crt"));
    // The gateway is a plain TLS client: no certificate or key of its own, no server
    // variables.
    for name in ["DOGFS_TLS_CERT", "DOGFS_TLS_KEY", "DOGFS_TLS_CA"] {
        assert_eq!(var(&env, name), None, "{name}");
    }
    let (mount, volume) = s3_volume_at(&d, "/etc/dogfs/tls").unwrap();
    assert_eq!(mount.read_only, Some(true));
    let secret = volume.secret.unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("demo-tls"));
    // Only ca.crt is projected: the servers' private key never reaches the gateway's pods.
    let items = secret.items.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("ca.crt", "ca.crt")
    );
    // The servers still get the whole Secret, as before.
    let meta = env_of(&d.meta);
    assert_eq!(var(&meta, "DOGFS_TLS_CERT"), Some("/etc/dogfs/tls/tls.crt"));
    assert_eq!(var(&meta, "DOGFS_TLS_KEY"), Some("/etc/dogfs/tls/tls.key"));
    assert_eq!(var(&meta, "DOGFS_TLS_CA"), Some("/etc/dogfs/tls/ca.crt"));
}

#[test]
fn without_tls_the_gateway_is_plaintext_with_nothing_mounted() {
    let d = build_tls(false);
    let env = plain_env(&s3_container(&d));
    assert_eq!(
        var(&env, "DOGFS_ENDPOINT"),
        Some("http://demo-meta.storage.svc:7000")
    );
    assert_eq!(var(&env, "DOGFS_CA"), None);
    assert!(s3_volume_at(&d, "/etc/dogfs/tls").is_none());
    let deployment = &d.s3.as_ref().unwrap().deployment;
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert!(
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "tls"),
        "no TLS volume"
    );
    // The client ConfigMap: plaintext endpoint, no CA; the servers: no TLS variables.
    let client = d.client_config.data.as_ref().unwrap();
    assert_eq!(
        client["DOGFS_ENDPOINT"],
        "http://demo-meta.storage.svc:7000"
    );
    assert!(!client.contains_key("ca.crt"));
    for sts in [&d.meta, &d.chunk] {
        let env = env_of(sts);
        assert!(
            env.iter().all(|(n, _)| !n.starts_with("DOGFS_TLS_")),
            "{env:?}"
        );
    }
}

#[test]
fn turning_tls_on_changes_only_what_tls_needs() {
    let off = build_tls(false);
    let on = build_tls(true);
    // Same names, Services and PDBs; the shared ConfigMap (and so its hash) is unchanged.
    assert_eq!(off.config, on.config);
    assert_eq!(off.meta_service, on.meta_service);
    assert_eq!(off.chunk_headless, on.chunk_headless);
    assert_eq!(
        off.s3.as_ref().unwrap().service,
        on.s3.as_ref().unwrap().service
    );
    // The gateway's container differs only in the endpoint, DOGFS_CA and the mount.
    let (mut a, b) = (s3_container(&off), s3_container(&on));
    let mut env = a.env.take().unwrap();
    for e in &mut env {
        if e.name == "DOGFS_ENDPOINT" {
            e.value = Some("https://demo-meta.storage.svc:7000".into());
        }
    }
    let mounts = a.volume_mounts.take().unwrap();
    let (b_env, b_mounts) = (b.env.clone().unwrap(), b.volume_mounts.clone().unwrap());
    assert_eq!(
        b_env
            .iter()
            .filter(|e| !env.contains(e))
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["DOGFS_CA"]
    );
    assert_eq!(
        b_mounts
            .iter()
            .filter(|m| !mounts.contains(m))
            .map(|m| m.mount_path.as_str())
            .collect::<Vec<_>>(),
        ["/etc/dogfs/tls"]
    );
    let b_rest = k8s_openapi::api::core::v1::Container {
        env: None,
        volume_mounts: None,
        ..b
    };
    assert_eq!(a, b_rest);
}

/// The pod's volume with `name`, from a StatefulSet.
fn sts_volume(
    sts: &k8s_openapi::api::apps::v1::StatefulSet,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::Volume> {
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == name)
        .cloned()
}

fn items(volume: &k8s_openapi::api::core::v1::Volume) -> Vec<String> {
    volume
        .secret
        .as_ref()
        .unwrap()
        .items
        .iter()
        .flatten()
        .map(|i| i.key.clone())
        .collect()
}

#[test]
fn operator_ca_pods_mount_their_own_component_certificates() {
    // The sample leaves tls unset: the operator's CA.
    let d = desired();
    for (sts, secret) in [(&d.meta, "demo-meta-tls"), (&d.chunk, "demo-chunk-tls")] {
        let tls = sts_volume(sts, "tls").unwrap();
        let source = tls.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some(secret));
        assert!(
            source.items.is_none(),
            "the whole Secret: tls.crt, tls.key, ca.crt"
        );
        let env = env_of(sts);
        assert_eq!(var(&env, "DOGFS_TLS_CERT"), Some("/etc/dogfs/tls/tls.crt"));
        assert_eq!(var(&env, "DOGFS_TLS_CA"), Some("/etc/dogfs/tls/ca.crt"));
    }
    // The gateway has a certificate of its own (role gateway) and trusts the bundle.
    let env = plain_env(&s3_container(&d));
    assert_eq!(var(&env, "DOGFS_CA"), Some("/etc/dogfs/tls/ca.crt"));
    assert_eq!(var(&env, "DOGFS_TLS_CERT"), Some("/etc/dogfs/tls/tls.crt"));
    assert_eq!(var(&env, "DOGFS_TLS_KEY"), Some("/etc/dogfs/tls/tls.key"));
    let (_, volume) = s3_volume_at(&d, "/etc/dogfs/tls").unwrap();
    assert_eq!(
        volume.secret.unwrap().secret_name.as_deref(),
        Some("demo-gateway-tls")
    );
    // The client ConfigMap: https and the bundle.
    let client = d.client_config.data.as_ref().unwrap();
    assert_eq!(
        client["DOGFS_ENDPOINT"],
        "https://demo-meta.storage.svc:7000"
    );
    assert_eq!(client["ca.crt"], CA);
}

#[test]
fn a_renewed_bundle_changes_only_the_client_config_map() {
    // Renewals and CA rotation patch Secrets; the pod templates never name a certificate, so
    // nothing restarts. Only the client ConfigMap carries the bundle.
    let cluster = sample();
    let build_with = |ca: &str| {
        build::build(
            &cluster,
            &Inputs {
                chunk_replicas: 6,
                ca_bundle: Some(ca.to_string()),
            },
        )
        .unwrap()
    };
    let (a, b) = (build_with(CA), build_with(&format!("{CA}{CA}")));
    assert_eq!(a.meta, b.meta);
    assert_eq!(a.chunk, b.chunk);
    assert_eq!(a.s3, b.s3);
    assert_eq!(a.config, b.config);
    assert_ne!(a.client_config, b.client_config);
}

#[test]
fn auth_files_reach_the_servers_and_the_token_the_gateway() {
    let d = desired();
    let meta = sts_volume(&d.meta, "auth").unwrap();
    assert_eq!(
        meta.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("demo-auth")
    );
    assert_eq!(items(&meta), ["token", "grant.key"]);
    assert_eq!(meta.secret.as_ref().unwrap().default_mode, Some(0o440));
    let env = env_of(&d.meta);
    assert_eq!(
        var(&env, "DOGFS_AUTH_TOKEN_FILE"),
        Some("/etc/dogfs/auth/token")
    );
    assert_eq!(
        var(&env, "DOGFS_GRANT_KEY_FILE"),
        Some("/etc/dogfs/auth/grant.key")
    );
    // Chunk servers verify grants only: the key, never the admin token.
    let chunk = sts_volume(&d.chunk, "auth").unwrap();
    assert_eq!(items(&chunk), ["grant.key"]);
    let env = env_of(&d.chunk);
    assert_eq!(
        var(&env, "DOGFS_GRANT_KEY_FILE"),
        Some("/etc/dogfs/auth/grant.key")
    );
    assert!(env.iter().all(|(n, _)| n != "DOGFS_AUTH_TOKEN_FILE"));
    // The gateway presents the token as a client; nobody gets the old DOGFS_AUTH_TOKEN.
    let gateway = s3_container(&d);
    let token = gateway
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "DOGFS_TOKEN")
        .unwrap();
    let from = token
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("demo-auth", "token")
    );
    for env in [env_of(&d.meta), env_of(&d.chunk), plain_env(&gateway)] {
        assert!(env.iter().all(|(n, _)| n != "DOGFS_AUTH_TOKEN"), "{env:?}");
    }

    // A given Secret is used as is; auth off mounts and sets nothing.
    let mut cluster = sample();
    cluster.spec.auth = Some(AuthSpec {
        enabled: true,
        secret_name: Some("my-auth".into()),
    });
    let inputs = Inputs {
        chunk_replicas: 6,
        ca_bundle: Some(CA.into()),
    };
    let given = build::build(&cluster, &inputs).unwrap();
    let volume = sts_volume(&given.meta, "auth").unwrap();
    assert_eq!(
        volume.secret.unwrap().secret_name.as_deref(),
        Some("my-auth")
    );
    cluster.spec.auth = Some(AuthSpec {
        enabled: false,
        secret_name: None,
    });
    let off = build::build(&cluster, &inputs).unwrap();
    assert!(sts_volume(&off.meta, "auth").is_none());
    assert!(sts_volume(&off.chunk, "auth").is_none());
    for env in [env_of(&off.meta), env_of(&off.chunk)] {
        assert!(
            env.iter()
                .all(|(n, _)| n != "DOGFS_GRANT_KEY_FILE" && n != "DOGFS_AUTH_TOKEN_FILE")
        );
    }
    assert!(
        plain_env(&s3_container(&off))
            .iter()
            .all(|(n, _)| n != "DOGFS_TOKEN")
    );
}

#[test]
fn network_policies_admit_the_components_the_operator_and_labelled_clients() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let d = desired();
    assert_eq!(d.network_policies.len(), 2);
    for (policy, grpc, operator) in [
        (&d.network_policies[0], 7000, true),
        (&d.network_policies[1], 7100, false),
    ] {
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string()][..])
        );
        let rules = spec.ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        let ports = |i: usize| -> Vec<IntOrString> {
            rules[i]
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.clone())
                .collect()
        };
        assert_eq!(ports(0), [IntOrString::Int(grpc)]);
        assert_eq!(ports(1), [IntOrString::Int(9100)]);
        let from = rules[0].from.as_ref().unwrap();
        let labels: Vec<_> = from
            .iter()
            .map(|p| {
                p.pod_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .clone()
                    .unwrap()
            })
            .collect();
        for component in ["meta", "chunk", "s3"] {
            assert!(
                labels
                    .iter()
                    .any(|l| l.get("app.kubernetes.io/component").map(String::as_str)
                        == Some(component)
                        && l["app.kubernetes.io/instance"] == "demo"),
                "{component}"
            );
        }
        assert!(
            labels
                .iter()
                .any(|l| l.get("dogfs.io/client").map(String::as_str) == Some("demo"))
        );
        // The operator, from any namespace, reaches only the metadata (admin) port.
        let from_operator = from.iter().any(|p| {
            p.namespace_selector.is_some()
                && p.pod_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap()["app.kubernetes.io/name"]
                    == "dogfs-operator"
        });
        assert_eq!(from_operator, operator);
    }
    // Default metrics peers: the namespace. Off: no policies.
    let mut cluster = sample();
    cluster.spec.network_policy = None;
    let inputs = Inputs {
        chunk_replicas: 6,
        ca_bundle: Some(CA.into()),
    };
    let d = build::build(&cluster, &inputs).unwrap();
    let metrics = d.network_policies[0]
        .spec
        .as_ref()
        .unwrap()
        .ingress
        .as_ref()
        .unwrap()[1]
        .from
        .clone()
        .unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        metrics[0].pod_selector,
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default())
    );
    assert!(metrics[0].namespace_selector.is_none());
    cluster.spec.network_policy = Some(NetworkPolicySpec {
        enabled: false,
        metrics_from: None,
    });
    assert!(
        build::build(&cluster, &inputs)
            .unwrap()
            .network_policies
            .is_empty()
    );
}
