//! The `dogfs-chunk` binary as a real process: configuration from `DOGFS_*` variables,
//! SIGTERM, and kill -9 in the middle of an upload.

// Test and benchmark code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::client::{connect, get_shard, put_messages, put_shard};
use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::NodeInfoRequest;

struct Proc {
    child: Child,
    grpc: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on ephemeral ports and waits (with a deadline) for its "serving" log
/// line, which names the bound address.
fn spawn(dir: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dogfs-chunk"))
        .env("DOGFS_DATA_DIR", dir)
        .env("DOGFS_GRPC_ADDR", "127.0.0.1:0")
        .env("DOGFS_HTTP_ADDR", "127.0.0.1:0")
        .env("DOGFS_RESERVE", "0")
        .env("DOGFS_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("chunk server serving") {
                let addr = line
                    .split("\"grpc_addr\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(str::to_owned);
                let _ = tx.send(addr);
            }
        }
    });
    let grpc = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("dogfs-chunk did not report serving in time")
        .expect("serving line without grpc_addr");
    Proc { child, grpc }
}

async fn wait_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < end, "process did not exit in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

#[tokio::test]
async fn binary_serves_survives_kill_9_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path());
    let mut c = connect(&p.grpc).await.unwrap();
    let node_id = c
        .node_info(NodeInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .node_id;
    let kept = ShardId::random();
    let kept_data = Bytes::from(vec![7u8; 3_000_000]);
    put_shard(&mut c, kept, &kept_data).await.unwrap();

    // kill -9 while an upload is half sent: the server dies holding a temp file.
    let cut = ShardId::random();
    let msgs = put_messages(cut, &Bytes::from(vec![9u8; 4_000_000]));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut c2 = c.clone();
    let upload = tokio::spawn(async move {
        c2.put_shard(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for m in msgs.into_iter().take(3) {
        tx.send(m).await.unwrap();
    }
    let tmp = dir.path().join("tmp");
    let end = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&tmp).unwrap().count() == 0 {
        assert!(Instant::now() < end, "upload never reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&p.child, "KILL");
    wait_exit(&mut p.child, Duration::from_secs(10)).await;
    assert!(upload.await.unwrap().is_err());
    drop(p);

    // Restarted: same identity, the finished shard intact, the cut one absent, tmp empty.
    let mut p = spawn(dir.path());
    let mut c = connect(&p.grpc).await.unwrap();
    let info = c.node_info(NodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, node_id);
    assert_eq!(info.shard_count, 1);
    assert_eq!(get_shard(&mut c, kept, 0, None).await.unwrap(), kept_data);
    assert_eq!(
        get_shard(&mut c, cut, 0, None).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

    // SIGTERM: a clean exit, also with a client connection still open.
    signal(&p.child, "TERM");
    let st = wait_exit(&mut p.child, Duration::from_secs(20)).await;
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_dogfs-chunk"))
        .args(["--data-dir", "/tmp/x", "--reserve", "12 parsecs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("12 parsecs"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_dogfs-chunk"))
        .args(["--grpc-addr", "nowhere"])
        .env("DOGFS_DATA_DIR", "/tmp/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));

    // Registering needs an address others can dial; the wildcard default is not one.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dogfs-chunk"))
        .env("DOGFS_DATA_DIR", dir.path())
        .env("DOGFS_META_ENDPOINTS", "meta-0:7000,meta-1:7000")
        .env_remove("DOGFS_ADVERTISE_ADDR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DOGFS_ADVERTISE_ADDR"), "{err}");
}
