#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `dogfs bench all` end to end with tiny sizes: every workload runs against a temporary
//! in-process cluster (including the degraded one, which stops and restarts a chunk server,
//! and the big one in a child process), the JSON report parses, and nothing is left behind.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bench_all_runs_every_workload_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dogfs"))
        .args([
            "bench",
            "all",
            "--json",
            "--quiet",
            "--size",
            "1MiB",
            "--count",
            "3",
            "--concurrency",
            "2",
            "--small-clients",
            "4",
            "--small-duration",
            "300ms",
            "--big-size",
            "9MiB",
            "--disk-size",
            "4MiB",
            "--partitions",
            "3",
            "--dir",
        ])
        .arg(dir.path())
        .env_remove("DOGFS_ENDPOINT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(120));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    for want in [
        "disk (synced)",
        "put 1.0 MiB",
        "get 1.0 MiB",
        "degraded get 1.0 MiB",
        "small put 1 KiB",
        "small get 1 KiB",
        "big put 9.0 MiB",
        "big get 9.0 MiB",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for row in report["rows"].as_array().unwrap() {
        assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
        assert!(row["mb_per_s"].as_f64().unwrap() > 0.0, "{row}");
    }
    let put = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == "put 1.0 MiB")
        .unwrap();
    assert_eq!(put["ops"], 3);
    assert_eq!(put["bytes"], 3 << 20);
    let bars: Vec<&str> = report["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bar"].as_str().unwrap())
        .collect();
    assert!(
        bars.iter().any(|b| b.contains("disk synced write rate")),
        "{bars:?}"
    );
    assert!(bars.iter().any(|b| b.contains("RSS")), "{bars:?}");
    // The scheme and the partitions as the cluster itself reports them.
    assert_eq!(
        (report["k"].as_u64(), report["m"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(report["partitions"].as_u64(), Some(3));
    // The temporary cluster is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `dogfs bench drain` with tiny sizes: the drain and the rebalance both move shards, every
/// object reads back exact after each (the workload checks bytes and fails otherwise), the
/// bars are reported, and the temporary cluster is gone afterwards.
#[test]
fn bench_drain_moves_shards_and_reads_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dogfs"))
        .args([
            "bench",
            "drain",
            "--json",
            "--quiet",
            "--size",
            "2MiB",
            "--count",
            "6",
            "--partitions",
            "2",
            "--dir",
        ])
        .arg(dir.path())
        .env_remove("DOGFS_ENDPOINT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(120));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["workload"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {rows:?}"))
    };
    for name in ["drain (move)", "rebalance (move)"] {
        let r = row(name);
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["note"].as_str().unwrap().contains("floor here"), "{r}");
    }
    for name in [
        "get+check healthy",
        "get+check drained",
        "get+check rebalanced",
    ] {
        assert_eq!(row(name)["ops"], 6, "{name}");
        assert_eq!(row(name)["bytes"], 6 * (2 << 20), "{name}");
    }
    let bars: Vec<&str> = report["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bar"].as_str().unwrap())
        .collect();
    assert_eq!(bars, ["drain move rate", "rebalance move rate"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_drain_needs_the_in_process_cluster() {
    let out = Command::new(env!("CARGO_BIN_EXE_dogfs"))
        .args([
            "bench",
            "drain",
            "--endpoint",
            "127.0.0.1:1",
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    // Refused before any call, with the reason: it would drain and remove a real server.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("needs the in-process cluster"), "{err}");
}

/// The gateway binary the s3 workload runs: beside `dogfs` in the same target directory
/// (`cargo test --workspace` builds every binary; `cargo test -p dogfs-cli` alone does not).
fn dogfs_s3_bin() -> Option<std::path::PathBuf> {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_dogfs")).with_file_name("dogfs-s3");
    bin.is_file().then_some(bin)
}

/// `dogfs bench s3` with tiny sizes: the gateway child starts, every phase reports native and
/// gateway rows (the GETs check bytes, failing the run otherwise), the big object's RSS bar
/// is there, and the temporary cluster and the gateway's scratch files are gone afterwards.
#[test]
fn bench_s3_compares_the_gateway_with_the_native_client() {
    let Some(s3_bin) = dogfs_s3_bin() else {
        println!(
            "skipped: dogfs-s3 is not built (cargo build -p dogfs-s3, or cargo test --workspace)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dogfs"))
        .args([
            "bench",
            "s3",
            "--json",
            "--quiet",
            "--size",
            "1MiB",
            "--count",
            "2",
            "--concurrency",
            "2",
            "--small-clients",
            "4",
            "--small-duration",
            "200ms",
            "--s3-big-size",
            "5MiB",
            "--partitions",
            "1",
            "--dir",
        ])
        .arg(dir.path())
        .arg("--s3-bin")
        .arg(&s3_bin)
        .env_remove("DOGFS_ENDPOINT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(120));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["workload"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {rows:?}"))
    };
    for op in ["put", "get"] {
        for path in ["native", "s3"] {
            let r = row(&format!("{path} {op} 1.0 MiB"));
            assert_eq!(
                (r["ops"].as_u64(), r["bytes"].as_u64()),
                (Some(2), Some(2 << 20))
            );
        }
        for path in ["native", "s3"] {
            let r = row(&format!("{path} small {op} 1 KiB"));
            assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        }
        if op == "put" {
            let r = row("native put+md5 1.0 MiB");
            assert_eq!(r["ops"].as_u64(), Some(2), "{r}");
        }
        let big = row(&format!("s3 big {op} 5.0 MiB"));
        assert!(big["note"].as_str().unwrap().contains("RSS"), "{big}");
    }
    let bars: Vec<&str> = report["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bar"].as_str().unwrap())
        .collect();
    assert_eq!(
        bars,
        [
            "S3 gateway 1.0 MiB PUT >= 0.7 x native",
            "S3 gateway 1.0 MiB GET >= 0.7 x native",
            "S3 gateway peak RSS through a 5.0 MiB PUT+GET under 256 MiB",
        ]
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_s3_names_a_missing_gateway_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_dogfs"))
        .args(["bench", "s3", "--s3-bin", "/nonexistent/dogfs-s3"])
        .args(["--endpoint", "127.0.0.1:1", "--timeout", "2s"])
        .output()
        .unwrap();
    // Refused before any cluster starts or any call is made.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("/nonexistent/dogfs-s3"), "{err}");
    assert!(err.contains("cargo build --release -p dogfs-s3"), "{err}");
}
