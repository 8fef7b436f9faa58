//! NetworkPolicies: only the cluster's components, the operator and labelled clients reach the
//! gRPC ports; the metrics port is open to the namespace (or `networkPolicy.metricsFrom`).
//!
//! One policy per server role, selecting its pods, ingress only (egress is left alone: the
//! servers dial DNS, each other and nothing else, and egress rules would also have to allow
//! the API server and DNS, which differ per cluster).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::{self, CHUNK_GRPC_PORT, HTTP_PORT, META_GRPC_PORT, Names, S3_COMPONENT};
use crate::crd::DogCluster;

/// Label a client pod carries (value: the DogCluster's name) to reach the cluster's gRPC
/// ports when NetworkPolicies are on.
pub const CLIENT_LABEL: &str = "dogfs.io/client";
/// `app.kubernetes.io/name` of the operator's pods (the Helm chart's name), in any namespace.
pub const OPERATOR_NAME: &str = "dogfs-operator";

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_string()),
        ..NetworkPolicyPort::default()
    }
}

/// Who may open gRPC connections to a role's pods.
fn grpc_peers(names: &Names, meta: bool) -> Vec<NetworkPolicyPeer> {
    let mut peers = vec![
        pods(build::selector_labels(names, "meta")),
        pods(build::selector_labels(names, "chunk")),
        pods(build::selector_labels(names, S3_COMPONENT)),
        pods(BTreeMap::from([(
            CLIENT_LABEL.to_string(),
            names.cluster.clone(),
        )])),
    ];
    if meta {
        // The operator calls the admin API from its own namespace, whichever that is.
        peers.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    OPERATOR_NAME.to_string(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    peers
}

/// The NetworkPolicies `<c>-meta` and `<c>-chunk`.
pub fn network_policies(
    cluster: &DogCluster,
    names: &Names,
    owner: &OwnerReference,
) -> Vec<NetworkPolicy> {
    let metrics_from = cluster
        .spec
        .network_policy
        .as_ref()
        .and_then(|n| n.metrics_from.clone())
        // Every pod of the namespace (an empty pod selector).
        .unwrap_or_else(|| {
            vec![NetworkPolicyPeer {
                pod_selector: Some(LabelSelector::default()),
                ..NetworkPolicyPeer::default()
            }]
        });
    [("meta", META_GRPC_PORT), ("chunk", CHUNK_GRPC_PORT)]
        .into_iter()
        .map(|(component, grpc)| NetworkPolicy {
            metadata: build::metadata(names, names.network_policy(component), component, owner),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(build::selector_labels(names, component)),
                    ..LabelSelector::default()
                }),
                policy_types: Some(vec!["Ingress".to_string()]),
                ingress: Some(vec![
                    NetworkPolicyIngressRule {
                        from: Some(grpc_peers(names, component == "meta")),
                        ports: Some(vec![port(grpc)]),
                    },
                    NetworkPolicyIngressRule {
                        from: Some(metrics_from.clone()),
                        ports: Some(vec![port(HTTP_PORT)]),
                    },
                ]),
                ..NetworkPolicySpec::default()
            }),
        })
        .collect()
}
