//! The CRD schema's own rules (OpenAPI bounds are checked by scripts/test-k8s; CEL rules here,
//! evaluated client-side by kube-cel the way the API server evaluates them on admission).

// Test helpers outside #[test] functions may unwrap and panic too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dogfs_operator::crd::DogCluster;
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = DogCluster::crd();
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// The object as the API server would see it after defaulting: fill the Rust defaults in.
fn defaulted(object: Value) -> Value {
    let cluster: DogCluster = serde_json::from_value(object).unwrap();
    serde_json::to_value(cluster).unwrap()
}

fn errors(object: Value, old: Option<Value>) -> Vec<String> {
    let old = old.map(defaulted);
    match Validator::new().validate(&schema(), &defaulted(object), old.as_ref()) {
        Ok(()) => vec![],
        Err(e) => e
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn object(spec: Value) -> Value {
    json!({"apiVersion": "dogfs.io/v1alpha1", "kind": "DogCluster",
           "metadata": {"name": "demo", "namespace": "default"}, "spec": spec})
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn examples_pass_every_cel_rule() {
    for path in [
        "examples/dogcluster.yaml",
        "examples/dogcluster-secure.yaml",
    ] {
        for doc in serde_yaml::Deserializer::from_str(&repo_file(path)) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if value["kind"] == "DogCluster" {
                assert_eq!(errors(value, None), Vec::<String>::new(), "{path}");
            }
        }
    }
}

#[test]
fn each_tls_mode_alone_is_valid() {
    for tls in [
        json!({}),
        json!({"mode": "OperatorCA"}),
        json!({"mode": "Disabled"}),
        json!({"secretName": "demo-tls"}),
        json!({"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}),
    ] {
        let spec = json!({"image": "x", "tls": tls, "auth": {"enabled": false},
                          "networkPolicy": {"enabled": true}});
        assert_eq!(errors(object(spec), None), Vec::<String>::new(), "{tls}");
    }
}

#[test]
fn minimal_spec_is_valid_with_defaults() {
    assert_eq!(
        errors(object(json!({"image": "dogfs:dev"})), None),
        Vec::<String>::new()
    );
}

#[test]
fn cel_rejects_what_validation_rejects() {
    let cases = [
        (
            json!({"image": "x", "meta": {"replicas": 2}}),
            "meta.replicas must be 1, 3 or 5",
        ),
        (
            json!({"image": "x", "chunk": {"replicas": 5}}),
            "chunk.replicas must be at least erasure.k + erasure.m",
        ),
        (
            json!({"image": "x", "erasure": {"k": 20, "m": 13}, "chunk": {"replicas": 40}}),
            "erasure.k + erasure.m must be at most 32",
        ),
        (
            json!({"image": "x", "chunk": {"storage": {"size": "10GB"}}}),
            "storage size must be a positive quantity",
        ),
        (
            json!({"image": "x", "meta": {"storage": {"size": "0"}}}),
            "storage size must be a positive quantity",
        ),
        (
            json!({"image": "x", "chunk": {"reserve": "lots"}}),
            "chunk.reserve must be whole bytes",
        ),
        (
            json!({"image": "x", "chunk": {"reserve": "1G"}}),
            "chunk.reserve must be whole bytes",
        ),
        (json!({"image": ""}), "image must not be empty"),
        (
            json!({"image": "x", "repair": {"minWriteShards": 4}}),
            "repair.minWriteShards must be in erasure.k + 1 ..= erasure.k + erasure.m",
        ),
        (
            json!({"image": "x", "repair": {"minWriteShards": 7}}),
            "repair.minWriteShards must be in erasure.k + 1 ..= erasure.k + erasure.m",
        ),
        (
            // In range for the default 4+2, not for the spec's own 3+2.
            json!({"image": "x", "erasure": {"k": 3, "m": 2}, "repair": {"minWriteShards": 6}}),
            "repair.minWriteShards must be in erasure.k + 1 ..= erasure.k + erasure.m",
        ),
        (
            json!({"image": "x", "tls": {"secretName": "t", "mode": "Disabled"}}),
            "tls: give at most one of secretName, issuerRef and mode",
        ),
        (
            json!({"image": "x", "tls": {"secretName": "t", "issuerRef": {"name": "ca"}}}),
            "tls: give at most one of secretName, issuerRef and mode",
        ),
        (
            json!({"image": "x", "tls": {"secretName": ""}}),
            "tls.secretName must not be empty",
        ),
        (
            json!({"image": "x", "auth": {"secretName": ""}}),
            "auth.secretName must not be empty",
        ),
    ];
    for (spec, message) in cases {
        let errs = errors(object(spec.clone()), None);
        assert!(errs.iter().any(|e| e.contains(message)), "{spec}: {errs:?}");
    }
}

#[test]
fn immutable_fields_cannot_change_but_chunk_replicas_can() {
    let old = object(json!({"image": "x"}));
    let immutable = [
        (
            json!({"image": "x", "erasure": {"k": 3, "m": 2}}),
            "erasure is immutable",
        ),
        (
            json!({"image": "x", "meta": {"replicas": 5}}),
            "meta.replicas is immutable",
        ),
        (
            json!({"image": "x", "meta": {"partitions": 16}}),
            "meta.partitions is immutable",
        ),
        (
            json!({"image": "x", "chunk": {"storage": {"size": "1Ti"}}}),
            "chunk.storage is immutable",
        ),
    ];
    for (spec, message) in immutable {
        let errs = errors(object(spec.clone()), Some(old.clone()));
        assert!(errs.iter().any(|e| e.contains(message)), "{spec}: {errs:?}");
    }
    let scaled = object(json!({"image": "y", "chunk": {"replicas": 9}}));
    assert_eq!(errors(scaled, Some(old)), Vec::<String>::new());
}

#[test]
fn repair_settings_pass_cel_when_in_range_or_absent() {
    for repair in [
        json!(null),
        json!({}),
        json!({"minWriteShards": 5}),
        json!({"minWriteShards": 6, "afterSeconds": 0}),
        json!({"minWriteShards": null, "afterSeconds": 3600}),
    ] {
        let spec = json!({"image": "x", "repair": repair});
        assert_eq!(
            errors(object(spec.clone()), None),
            Vec::<String>::new(),
            "{spec}"
        );
    }
    // Repair settings are not immutable: a running cluster may change them.
    let old = object(json!({"image": "x", "repair": {"minWriteShards": 5}}));
    let new = object(json!({"image": "x", "repair": {"minWriteShards": 6, "afterSeconds": 60}}));
    assert_eq!(errors(new, Some(old)), Vec::<String>::new());
}

#[test]
fn s3_rules_match_validation() {
    for (s3, message) in [
        (
            json!({"enabled": true}),
            "s3.credentialsSecret is required when s3.enabled is true, unless s3.anonymous is true",
        ),
        (
            json!({"enabled": true, "credentialsSecret": ""}),
            "s3.credentialsSecret must not be empty",
        ),
        (
            json!({"enabled": true, "anonymous": true, "region": "us/east"}),
            "s3.region must be letters, digits",
        ),
    ] {
        let spec = json!({"image": "x", "s3": s3});
        let errs = errors(object(spec.clone()), None);
        assert!(errs.iter().any(|e| e.contains(message)), "{spec}: {errs:?}");
    }
    for s3 in [
        json!({}),
        json!({"enabled": false}),
        json!({"enabled": true, "anonymous": true}),
        json!({"enabled": true, "credentialsSecret": "demo-s3-credentials", "replicas": 1,
               "service": {"type": "NodePort", "port": 443}, "region": "us-east-1"}),
    ] {
        let spec = json!({"image": "x", "s3": s3});
        assert_eq!(
            errors(object(spec.clone()), None),
            Vec::<String>::new(),
            "{spec}"
        );
    }
}

/// The `s3:` block `examples/dogcluster.yaml` ships commented out, uncommented: it must pass
/// the CEL rules and validation, and name the Secret of `examples/s3-credentials.yaml`.
#[test]
fn the_commented_s3_example_is_valid_and_matches_the_example_secret() {
    let text = repo_file("examples/dogcluster.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "  # s3:")
        .expect("a commented `s3:` block in examples/dogcluster.yaml");
    let block: Vec<String> = lines[start..]
        .iter()
        .take_while(|l| l.starts_with("  #"))
        .map(|l| format!("  {}", l.get(4..).unwrap_or("")))
        // Explanations inside the block stay comments.
        .collect();
    let uncommented = lines[..start]
        .iter()
        .map(|l| l.to_string())
        .chain(block)
        .collect::<Vec<_>>()
        .join("\n");
    let value: Value = serde_yaml::from_str(&uncommented).unwrap();
    assert_eq!(value["spec"]["s3"]["enabled"], true, "{uncommented}");
    assert_eq!(errors(value.clone(), None), Vec::<String>::new());
    let mut cluster: DogCluster = serde_json::from_value(value.clone()).unwrap();
    // Every field of the block is one the CRD knows (serde would drop a misspelt one).
    let parsed = serde_json::to_value(&cluster.spec.s3).unwrap();
    assert!(
        contains(&parsed, &value["spec"]["s3"]),
        "{parsed} lacks part of {}",
        value["spec"]["s3"]
    );
    cluster.metadata.namespace = Some("default".into());
    dogfs_operator::validate::validate(&cluster).unwrap();

    let secret: Value = serde_yaml::from_str(&repo_file("examples/s3-credentials.yaml")).unwrap();
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(
        Some(secret["metadata"]["name"].as_str().unwrap()),
        cluster
            .spec
            .s3
            .as_ref()
            .unwrap()
            .credentials_secret
            .as_deref()
    );
    // The key the Deployment mounts, in the format dogfs-s3 reads.
    let file = secret["stringData"]["credentials.yaml"].as_str().unwrap();
    let file: Value = serde_yaml::from_str(file).unwrap();
    let entry = &file["credentials"][0];
    for field in ["access_key", "secret_key", "identity", "scope"] {
        assert!(entry[field].is_string(), "{field} in {file}");
    }
}

/// Whether `outer` has every field of `inner` with the same value (defaults may add more).
fn contains(outer: &Value, inner: &Value) -> bool {
    match (outer, inner) {
        (Value::Object(o), Value::Object(i)) => i
            .iter()
            .all(|(k, v)| o.get(k).is_some_and(|ov| contains(ov, v))),
        _ => outer == inner,
    }
}
