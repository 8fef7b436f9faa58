//! Pure validation of a `DogCluster` before anything is built or applied.
//!
//! The CRD schema enforces the same rules on admission; these run again because a stored object
//! may predate the current schema, and because the status must name the offending field.

use std::fmt;

use crate::crd::{
    DogCluster, DogClusterSpec, MAX_REPAIR_AFTER_SECONDS, MAX_S3_REPLICAS, MAX_SHARDS, S3Spec,
};

/// Longest cluster name: `<name>-chunk-headless` must stay a 63-character DNS label and
/// `<name>-chunk` leaves room for the StatefulSet's `controller-revision-hash` suffix.
pub const MAX_NAME_LEN: usize = 40;

/// One rule a spec broke, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path from the object root, e.g. `spec.chunk.replicas`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every rule a spec broke, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(.0))]
pub struct InvalidSpec(pub Vec<FieldError>);

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a cluster's name and spec; `Err` lists every broken rule.
pub fn validate(cluster: &DogCluster) -> Result<(), InvalidSpec> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        });
    };

    match cluster.metadata.name.as_deref() {
        None => fail("metadata.name", "is missing".to_string()),
        Some(name) if !is_dns_label(name) || name.len() > MAX_NAME_LEN => fail(
            "metadata.name",
            format!(
                "{name:?} must be a DNS label of at most {MAX_NAME_LEN} characters \
                 (lowercase letters, digits and '-', starting with a letter)"
            ),
        ),
        Some(_) => {}
    }
    if cluster.metadata.namespace.is_none() {
        fail("metadata.namespace", "is missing".to_string());
    }

    let spec: &DogClusterSpec = &cluster.spec;
    if spec.image.trim().is_empty() || spec.image.chars().any(char::is_whitespace) {
        fail(
            "spec.image",
            format!("{:?} is not an image reference", spec.image),
        );
    }

    if ![1, 3, 5].contains(&spec.meta.replicas) {
        fail(
            "spec.meta.replicas",
            format!("{} must be 1, 3 or 5", spec.meta.replicas),
        );
    }
    if !(1..=1024).contains(&spec.meta.partitions) {
        fail(
            "spec.meta.partitions",
            format!("{} must be in 1..=1024", spec.meta.partitions),
        );
    }
    check_size(&mut fail, "spec.meta.storage.size", &spec.meta.storage.size);
    check_class(
        &mut fail,
        "spec.meta.storage.storageClassName",
        &spec.meta.storage.storage_class_name,
    );

    let (k, m) = (spec.erasure.k, spec.erasure.m);
    if k < 1 {
        fail("spec.erasure.k", format!("{k} must be at least 1"));
    }
    if m < 1 {
        fail("spec.erasure.m", format!("{m} must be at least 1"));
    }
    let shards = i64::from(k) + i64::from(m);
    if shards > i64::from(MAX_SHARDS) {
        fail(
            "spec.erasure",
            format!("k + m = {shards} must be at most {MAX_SHARDS}"),
        );
    }
    // The erasure scheme is immutable; the status records the one the cluster was built with.
    let recorded = cluster.status.as_ref().and_then(|s| s.erasure.as_deref());
    let requested = erasure_label(k, m);
    if let Some(recorded) = recorded
        && recorded != requested
    {
        fail(
            "spec.erasure",
            format!(
                "is immutable: the cluster was created with {recorded}, the spec asks for {requested}"
            ),
        );
    }

    if i64::from(spec.chunk.replicas) < shards {
        fail(
            "spec.chunk.replicas",
            format!(
                "{} is less than erasure.k + erasure.m = {shards}",
                spec.chunk.replicas
            ),
        );
    }
    check_size(
        &mut fail,
        "spec.chunk.storage.size",
        &spec.chunk.storage.size,
    );
    check_class(
        &mut fail,
        "spec.chunk.storage.storageClassName",
        &spec.chunk.storage.storage_class_name,
    );
    if let Some(reserve) = &spec.chunk.reserve
        && !is_reserve(reserve)
    {
        fail(
            "spec.chunk.reserve",
            format!("{reserve:?} must be whole bytes or Ki/Mi/Gi/Ti, such as 1Gi"),
        );
    }

    if let Some(tls) = &spec.tls {
        let given = [
            tls.secret_name.is_some().then_some("secretName"),
            tls.issuer_ref.is_some().then_some("issuerRef"),
            tls.mode.is_some().then_some("mode"),
        ];
        let given: Vec<&str> = given.into_iter().flatten().collect();
        if given.len() > 1 {
            fail(
                "spec.tls",
                format!(
                    "give at most one of secretName, issuerRef and mode, not {}",
                    given.join(" and ")
                ),
            );
        }
        if let Some(secret) = &tls.secret_name
            && !is_dns_subdomain(secret)
        {
            fail(
                "spec.tls.secretName",
                format!("{secret:?} is not a valid Secret name"),
            );
        }
        if let Some(issuer) = &tls.issuer_ref
            && !is_dns_subdomain(&issuer.name)
        {
            fail(
                "spec.tls.issuerRef.name",
                format!("{:?} is not a valid issuer name", issuer.name),
            );
        }
    }
    // `dogfs-meta` refuses tokens and grants without TLS (they would cross the network in
    // plain text), so the combination must stop here rather than crash-loop every pod.
    if spec.auth_enabled() && matches!(spec.tls_mode(), crate::crd::TlsMode::Disabled) {
        fail(
            "spec.auth",
            "tokens and shard grants need TLS: with tls.mode Disabled, set auth.enabled: false"
                .to_string(),
        );
    }
    if let Some(auth) = &spec.auth
        && let Some(secret) = &auth.secret_name
        && !is_dns_subdomain(secret)
    {
        fail(
            "spec.auth.secretName",
            format!("{secret:?} is not a valid Secret name"),
        );
    }

    if let Some(repair) = &spec.repair {
        // `dogfs-meta` refuses to start with a quorum outside k+1..=k+m of its default scheme,
        // so a bad value must stop here rather than crash-loop every metadata pod. Skipped
        // when the scheme itself is invalid: that error is already reported, and a range
        // computed from it would only mislead.
        if let Some(quorum) = repair.min_write_shards
            && k >= 1
            && m >= 1
        {
            let (floor, total) = (i64::from(k) + 1, shards);
            if !(floor..=total).contains(&i64::from(quorum)) {
                fail(
                    "spec.repair.minWriteShards",
                    format!(
                        "{quorum} must be in {floor}..={total} \
                         (erasure.k + 1 ..= erasure.k + erasure.m for {})",
                        erasure_label(k, m)
                    ),
                );
            }
        }
        if let Some(after) = repair.after_seconds
            && !(0..=MAX_REPAIR_AFTER_SECONDS).contains(&after)
        {
            fail(
                "spec.repair.afterSeconds",
                format!("{after} must be in 0..={MAX_REPAIR_AFTER_SECONDS} (at most 7 days)"),
            );
        }
    }

    if let Some(s3) = &spec.s3 {
        check_s3(&mut fail, s3);
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec(errors))
    }
}

/// Checks `spec.s3`. Formats are checked even while disabled (the CRD's rules apply to a
/// disabled gateway too); the credentials requirement only when enabled.
fn check_s3(fail: &mut impl FnMut(&str, String), s3: &S3Spec) {
    if !(1..=MAX_S3_REPLICAS).contains(&s3.replicas) {
        fail(
            "spec.s3.replicas",
            format!("{} must be in 1..={MAX_S3_REPLICAS}", s3.replicas),
        );
    }
    if !(1..=65535).contains(&s3.service.port) {
        fail(
            "spec.s3.service.port",
            format!("{} must be in 1..=65535", s3.service.port),
        );
    }
    match &s3.credentials_secret {
        Some(name) if !is_dns_subdomain(name) => fail(
            "spec.s3.credentialsSecret",
            format!("{name:?} is not a valid Secret name"),
        ),
        Some(_) => {}
        None if s3.enabled && !s3.anonymous => fail(
            "spec.s3.credentialsSecret",
            "is required when s3.enabled is true, unless s3.anonymous is true".to_string(),
        ),
        None => {}
    }
    if let Some(region) = &s3.region
        && !is_region(region)
    {
        fail(
            "spec.s3.region",
            format!("{region:?} must be 1 to 64 letters, digits, '.', '_' or '-'"),
        );
    }
}

/// An S3 region as the gateway may announce it: it ends up in SigV4 credential scopes, where
/// `/` separates the parts, and in an environment variable.
fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// `k+m`, as shown in the status.
pub fn erasure_label(k: i32, m: i32) -> String {
    format!("{k}+{m}")
}

fn check_size(fail: &mut impl FnMut(&str, String), field: &str, size: &str) {
    if !is_positive_quantity(size) {
        fail(
            field,
            format!("{size:?} is not a positive quantity such as 10Gi"),
        );
    }
}

fn check_class(fail: &mut impl FnMut(&str, String), field: &str, class: &Option<String>) {
    if let Some(class) = class
        && !is_dns_subdomain(class)
    {
        fail(field, format!("{class:?} is not a valid StorageClass name"));
    }
}

/// RFC 1035 label as Kubernetes uses it for Service names.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// RFC 1123 subdomain, the rule for most object names.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Parses a Kubernetes quantity (`<sign><number><suffix>`); returns whether its number is > 0.
fn parse_quantity(s: &str) -> Option<bool> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let negative = s.starts_with('-');
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| {
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
        })
        .unwrap_or(false);
    if !suffix_ok {
        return None;
    }
    let nonzero = int.bytes().chain(frac.bytes()).any(|c| c != b'0');
    Some(nonzero && !negative)
}

#[cfg(test)]
fn is_quantity(s: &str) -> bool {
    parse_quantity(s).is_some()
}

/// The chunk server's `--reserve` parser (dogfs-core `ByteSize`) reads these forms the same
/// way Kubernetes does; decimal SI units it reads as binary, so they are refused here.
/// The reserve goes to `dogfs-chunk --reserve`, so it must parse with the server's own
/// parser; only the units Kubernetes and `ByteSize` read alike are allowed (`1G` is 10^9 to
/// Kubernetes but 2^30 to `ByteSize`).
fn is_reserve(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && matches!(unit, "" | "Ki" | "Mi" | "Gi" | "Ti")
        && s.parse::<dogfs_core::size::ByteSize>().is_ok()
}

fn is_positive_quantity(s: &str) -> bool {
    parse_quantity(s) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DogClusterSpec, RepairSpec};

    fn cluster(spec: DogClusterSpec) -> DogCluster {
        let mut c = DogCluster::new("demo", spec);
        c.metadata.namespace = Some("default".to_string());
        c
    }

    fn spec() -> DogClusterSpec {
        serde_json::from_value(serde_json::json!({"image": "dogfs:dev"})).unwrap()
    }

    fn fields(c: &DogCluster) -> Vec<String> {
        match validate(c) {
            Ok(()) => vec![],
            Err(InvalidSpec(errors)) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&cluster(spec())), Ok(()));
    }

    #[test]
    fn quantities() {
        for ok in [
            "10Gi", "1", "0.5Ti", "1e3", "100M", "1.5Gi", "+2Ki", ".5Gi", "3E+2",
        ] {
            assert!(is_positive_quantity(ok), "{ok}");
        }
        for bad in [
            "", "Gi", "10GB", "10 Gi", "-1Gi", "0", "0Gi", "1.2.3", "1e", "abc", "10gi",
        ] {
            assert!(!is_positive_quantity(bad), "{bad}");
        }
        assert!(is_quantity("0"));
        for ok in ["0", "1048576", "512Mi", "2Gi", "1Ti"] {
            assert!(is_reserve(ok), "{ok}");
        }
        for bad in ["", "1G", "1GiB", "1.5Gi", "-1Gi", "1e9", "Gi"] {
            assert!(!is_reserve(bad), "{bad}");
        }
    }

    #[test]
    fn chunk_replicas_below_k_plus_m_names_the_field() {
        let mut s = spec();
        s.chunk.replicas = 5;
        let err = validate(&cluster(s)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.chunk.replicas: 5 is less than erasure.k + erasure.m = 6"
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let mut s = spec();
        s.meta.replicas = 2;
        s.erasure.k = 0;
        s.erasure.m = 40;
        s.meta.storage.size = "ten".to_string();
        s.chunk.reserve = Some("lots".to_string());
        s.image = " ".to_string();
        let mut c = cluster(s);
        c.metadata.name = Some("Demo".to_string());
        assert_eq!(
            fields(&c),
            [
                "metadata.name",
                "spec.image",
                "spec.meta.replicas",
                "spec.meta.storage.size",
                "spec.erasure.k",
                "spec.erasure",
                "spec.chunk.replicas",
                "spec.chunk.reserve",
            ]
        );
    }

    #[test]
    fn erasure_change_is_rejected_once_recorded() {
        let mut c = cluster(spec());
        c.status = Some(crate::crd::DogClusterStatus {
            erasure: Some("3+2".to_string()),
            ..Default::default()
        });
        let err = validate(&c).unwrap_err();
        assert!(
            err.to_string().starts_with("spec.erasure: is immutable"),
            "{err}"
        );
    }

    fn with_repair(min_write_shards: Option<i32>, after_seconds: Option<i64>) -> DogCluster {
        let mut s = spec();
        s.repair = Some(RepairSpec {
            min_write_shards,
            after_seconds,
        });
        cluster(s)
    }

    #[test]
    fn repair_settings_in_range_are_valid() {
        // Default scheme 4+2: the quorum may be 5 or 6.
        for quorum in [None, Some(5), Some(6)] {
            for after in [None, Some(0), Some(600), Some(MAX_REPAIR_AFTER_SECONDS)] {
                assert_eq!(
                    validate(&with_repair(quorum, after)),
                    Ok(()),
                    "{quorum:?} {after:?}"
                );
            }
        }
        let mut s = spec();
        s.repair = Some(RepairSpec::default());
        assert_eq!(validate(&cluster(s)), Ok(()));
    }

    #[test]
    fn min_write_shards_outside_k_plus_1_to_k_plus_m_names_value_and_range() {
        for bad in [0, 4, 7, -1] {
            let err = validate(&with_repair(Some(bad), None)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "spec.repair.minWriteShards: {bad} must be in 5..=6 \
                     (erasure.k + 1 ..= erasure.k + erasure.m for 4+2)"
                )
            );
        }
        // The range follows the scheme: 6 is fine for 4+2 but not for 3+2.
        let mut s = spec();
        s.erasure.k = 3;
        s.repair = Some(RepairSpec {
            min_write_shards: Some(6),
            after_seconds: None,
        });
        assert_eq!(
            validate(&cluster(s)).unwrap_err().to_string(),
            "spec.repair.minWriteShards: 6 must be in 4..=5 \
             (erasure.k + 1 ..= erasure.k + erasure.m for 3+2)"
        );
    }

    #[test]
    fn min_write_shards_is_not_judged_against_an_invalid_scheme() {
        let mut s = spec();
        s.erasure.k = 0;
        s.repair = Some(RepairSpec {
            min_write_shards: Some(9),
            after_seconds: None,
        });
        assert_eq!(fields(&cluster(s)), ["spec.erasure.k"]);
    }

    #[test]
    fn repair_after_seconds_out_of_range_names_value_and_range() {
        for bad in [-1, MAX_REPAIR_AFTER_SECONDS + 1, i64::MAX] {
            let err = validate(&with_repair(None, Some(bad))).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("spec.repair.afterSeconds: {bad} must be in 0..=604800 (at most 7 days)")
            );
        }
    }

    #[test]
    fn both_repair_errors_are_reported_together() {
        assert_eq!(
            fields(&with_repair(Some(1), Some(-5))),
            ["spec.repair.minWriteShards", "spec.repair.afterSeconds"]
        );
    }

    fn with_s3(s3: serde_json::Value) -> DogCluster {
        let mut s = spec();
        s.s3 = Some(serde_json::from_value(s3).unwrap());
        cluster(s)
    }

    #[test]
    fn s3_defaults_and_complete_settings_are_valid() {
        for s3 in [
            serde_json::json!({}),
            serde_json::json!({"enabled": false}),
            serde_json::json!({"enabled": true, "anonymous": true}),
            serde_json::json!({"enabled": true, "credentialsSecret": "demo-s3-credentials",
                "replicas": 1, "service": {"type": "LoadBalancer", "port": 443},
                "region": "eu-west-3"}),
        ] {
            assert_eq!(validate(&with_s3(s3.clone())), Ok(()), "{s3}");
        }
        let s3 = with_s3(serde_json::json!({})).spec.s3.unwrap();
        assert_eq!((s3.enabled, s3.replicas, s3.service.port), (false, 2, 9000));
        assert_eq!(s3.service.type_, crate::crd::ServiceType::ClusterIP);
    }

    #[test]
    fn s3_enabled_without_credentials_or_anonymous_names_the_field() {
        let err = validate(&with_s3(serde_json::json!({"enabled": true}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.s3.credentialsSecret: is required when s3.enabled is true, \
             unless s3.anonymous is true"
        );
        // Disabled, the missing Secret does not matter.
        assert_eq!(
            validate(&with_s3(serde_json::json!({"enabled": false}))),
            Ok(())
        );
    }

    #[test]
    fn every_bad_s3_field_is_reported() {
        let c = with_s3(serde_json::json!({"enabled": true, "replicas": 0,
            "service": {"port": 70000}, "credentialsSecret": "Bad_Name", "region": "us/east"}));
        assert_eq!(
            fields(&c),
            [
                "spec.s3.replicas",
                "spec.s3.service.port",
                "spec.s3.credentialsSecret",
                "spec.s3.region",
            ]
        );
        let err = validate(&c).unwrap_err().to_string();
        assert!(
            err.contains("spec.s3.replicas: 0 must be in 1..=1000"),
            "{err}"
        );
        assert!(err.contains("spec.s3.region: \"us/east\" must be"), "{err}");
        assert!(is_region("us-east-1") && is_region("garage") && !is_region(""));
        assert!(!is_region(&"a".repeat(65)));
    }

    #[test]
    fn names() {
        assert!(is_dns_label("demo-1"));
        assert!(!is_dns_label("1demo"));
        assert!(!is_dns_label("demo-"));
        assert!(is_dns_subdomain("fast.ssd"));
        assert!(!is_dns_subdomain("Fast"));
        let mut c = cluster(spec());
        c.metadata.name = Some("a".repeat(MAX_NAME_LEN + 1));
        assert_eq!(fields(&c), ["metadata.name"]);
    }

    #[test]
    fn tls_modes_are_exclusive_and_names_checked() {
        use crate::crd::{AuthSpec, IssuerKind, IssuerRef, TlsModeSpec, TlsSpec};
        let mut c = cluster(spec());
        c.spec.tls = Some(TlsSpec {
            secret_name: Some("t".into()),
            issuer_ref: Some(IssuerRef {
                name: "ca".into(),
                kind: IssuerKind::Issuer,
            }),
            mode: Some(TlsModeSpec::Disabled),
        });
        assert_eq!(fields(&c), ["spec.tls"]);
        let message = validate(&c).unwrap_err().to_string();
        assert!(
            message.contains("not secretName and issuerRef and mode"),
            "{message}"
        );
        c.spec.tls = Some(TlsSpec {
            issuer_ref: Some(IssuerRef {
                name: "Not_A_Name".into(),
                kind: IssuerKind::ClusterIssuer,
            }),
            ..TlsSpec::default()
        });
        assert_eq!(fields(&c), ["spec.tls.issuerRef.name"]);
        c.spec.tls = None;
        c.spec.auth = Some(AuthSpec {
            enabled: true,
            secret_name: Some("UPPER".into()),
        });
        assert_eq!(fields(&c), ["spec.auth.secretName"]);
        // Tokens without TLS: refused, naming the way out.
        c.spec.auth = None;
        c.spec.tls = Some(TlsSpec {
            mode: Some(TlsModeSpec::Disabled),
            ..TlsSpec::default()
        });
        assert_eq!(fields(&c), ["spec.auth"]);
        assert!(
            validate(&c)
                .unwrap_err()
                .to_string()
                .contains("auth.enabled: false"),
            "{c:?}"
        );
        c.spec.auth = Some(AuthSpec {
            enabled: false,
            secret_name: None,
        });
        assert_eq!(fields(&c), Vec::<String>::new());
    }
}
