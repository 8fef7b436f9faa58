//! Golden-file tests of the pure builders: for the sample spec in `fixtures/sample.yaml`, every
//! child object must equal its reviewed manifest in `golden/`. After an intended change, rerun
//! with `UPDATE_GOLDEN=1` and review the diff like code.

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use dogfs_operator::build::{self, Desired, Inputs};
use dogfs_operator::crd::DogCluster;
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
