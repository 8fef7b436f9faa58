//! The gateway under test: a `dogfs-s3` child process (so its RSS is its own), with a key pair
//! written to its scratch directory, on a free loopback port. Killed when dropped, so every
//! error path of the bench stops it too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// The access key the bench signs with.
pub const ACCESS_KEY: &str = "dogfs-bench";
/// How long the child may take to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(30);
const READY_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "no dogfs-s3 binary at {0} (build it with `cargo build --release -p dogfs-s3`, or pass --s3-bin PATH / DOGFS_S3_BIN)"
    )]
    Missing(PathBuf),
    #[error("locating the dogfs executable (to find dogfs-s3 beside it): {0}")]
    CurrentExe(std::io::Error),
    #[error("writing the gateway's credentials {path}: {source}")]
    WriteCredentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the gateway's log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("finding a free port for the gateway: {0}")]
    Port(std::io::Error),
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("the gateway exited before it was ready ({status}); its log {log}:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the gateway did not accept connections on {addr} within {secs} s; its log {log}:\n{tail}"
    )]
    NotReady {
        addr: SocketAddr,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
}

/// `--s3-bin` (or `DOGFS_S3_BIN`), else `dogfs-s3` next to the running `dogfs`; it must exist.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, GatewayError> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .map_err(GatewayError::CurrentExe)?
            .with_file_name("dogfs-s3"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(GatewayError::Missing(path))
    }
}

/// Memory of the child as `/proc/PID/status` reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now.
    pub rss: u64,
    /// The most ever resident (the high-water mark).
    pub hwm: u64,
}

/// A running gateway child.
#[derive(Debug)]
pub struct Gateway {
    child: tokio::process::Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub secret_key: String,
    log: PathBuf,
}

impl Gateway {
    /// Starts `bin` for the cluster at `endpoints`, its files under `dir`, and waits until it
    /// accepts connections.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        endpoints: &[String],
        ca: Option<&Path>,
        token: Option<&str>,
    ) -> Result<Gateway, GatewayError> {
        // 128 random bits: the gateway lives as long as this run.
        let secret_key = format!("{:032x}", rand::random::<u128>());
        let creds = dir.join("s3-credentials.yaml");
        let text = format!(
            "credentials:\n  - access_key: {ACCESS_KEY}\n    secret_key: {secret_key}\n    identity: bench\n    scope: admin\n"
        );
        write_private(&creds, &text).map_err(|source| GatewayError::WriteCredentials {
            path: creds.clone(),
            source,
        })?;
        let log = dir.join("dogfs-s3.log");
        let log_file = std::fs::File::create(&log).map_err(|source| GatewayError::Log {
            path: log.clone(),
            source,
        })?;
        // A port the kernel just handed out and released: free unless something races for
        // it in the instant before the child binds, which the readiness error would show.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(GatewayError::Port)?;
        let mut command = tokio::process::Command::new(bin);
        if let Some(ca) = ca {
            command.arg("--ca").arg(ca);
        }
        if let Some(t) = token {
            // In the environment, not argv: other users can read a process's arguments.
            command.env("DOGFS_TOKEN", t);
        }
        let child = command
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--endpoint")
            .arg(endpoints.join(","))
            .arg("--credentials")
            .arg(&creds)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| GatewayError::Spawn {
                bin: bin.to_owned(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let mut gw = Gateway {
            child,
            pid,
            addr,
            secret_key,
            log,
        };
        gw.wait_ready().await?;
        info!(pid, %addr, "S3 gateway child ready");
        Ok(gw)
    }

    async fn wait_ready(&mut self) -> Result<(), GatewayError> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(GatewayError::Exited {
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_DEADLINE {
                return Err(GatewayError::NotReady {
                    addr: self.addr,
                    secs: READY_DEADLINE.as_secs(),
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The last lines of the child's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The child's memory now; None once it is gone (or off Linux).
    pub fn memory(&self) -> Option<Memory> {
        memory_of(self.pid)
    }

    /// Kills the child and waits for it.
    pub async fn stop(mut self) {
        if let Err(e) = self.child.kill().await {
            warn!(pid = self.pid, error = %e, "stopping the S3 gateway child");
        }
    }
}

/// VmRSS and VmHWM of `pid`.
pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status)
}

/// The two `kB` lines of a `/proc/PID/status` text, in bytes.
fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_high_water_mark() {
        let text =
            "Name:\tdogfs-s3\nVmPeak:\t  900000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
        let m = parse_status(text).unwrap();
        assert_eq!((m.rss, m.hwm), (20 << 20, 40 << 20));
        assert!(parse_status("Name:\tx\n").is_none());
        // This process has both lines.
        assert!(memory_of(std::process::id()).unwrap().hwm > 0);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let e = locate(Some(Path::new("/nonexistent/dogfs-s3"))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/dogfs-s3"), "{msg}");
        assert!(msg.contains("cargo build --release -p dogfs-s3"), "{msg}");
    }
}
