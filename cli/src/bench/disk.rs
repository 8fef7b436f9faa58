//! The disk's synced sequential write rate, the yardstick of the durable-PUT bar (DESIGN §12):
//! `total` bytes in `block`-sized writes to a new file, one `fdatasync` at the end, as a
//! chunk server writes a shard.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::stats::{Samples, Summary};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("syncing {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk benchmark task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Writes and syncs a scratch file in `dir`, then removes it. The data is random so no layer
/// can compress or deduplicate it.
pub async fn synced_write_rate(dir: &Path, total: u64, block: usize) -> Result<Summary, DiskError> {
    let path = dir.join(format!(".dogfs-bench-disk-{}", std::process::id()));
    let task_path = path.clone();
    let result = tokio::task::spawn_blocking(move || write_synced(&task_path, total, block)).await;
    // Remove the scratch file whatever happened; a missing one is fine.
    let _ = std::fs::remove_file(&path);
    let (elapsed, written) = result??;
    let mut samples = Samples::new();
    samples.record(elapsed, written);
    let mut summary = samples.summarise("disk (synced)", elapsed);
    summary.note = Some(format!(
        "{} in {} KiB writes + fdatasync, in {}",
        crate::human::size(written),
        block / 1024,
        dir.display()
    ));
    Ok(summary)
}

fn write_synced(path: &Path, total: u64, block: usize) -> Result<(Duration, u64), DiskError> {
    let mut buf = vec![0u8; block.max(1)];
    rand::fill(&mut buf[..]);
    let mut file = std::fs::File::create(path).map_err(|source| DiskError::Create {
        path: path.to_owned(),
        source,
    })?;
    let start = Instant::now();
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(buf.len() as u64) as usize;
        // Vary the block a little so identical blocks cannot be deduplicated either.
        buf[0] = buf[0].wrapping_add(1);
        file.write_all(&buf[..n])
            .map_err(|source| DiskError::Write {
                path: path.to_owned(),
                source,
            })?;
        written += n as u64;
    }
    file.sync_data().map_err(|source| DiskError::Sync {
        path: path.to_owned(),
        source,
    })?;
    Ok((start.elapsed(), written))
}

/// The process's peak resident set size (`VmHWM` in /proc/self/status), in bytes; `None`
/// where there is no /proc.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn writes_syncs_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let s = synced_write_rate(dir.path(), (3 << 20) + 5, 1 << 20)
            .await
            .unwrap();
        assert_eq!(s.bytes, (3 << 20) + 5);
        assert_eq!(s.ops, 1);
        assert!(s.mb_per_s > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn reads_vm_hwm() {
        assert_eq!(
            parse_vm_hwm("Name:\tdogfs\nVmPeak:\t  100 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 0);
        }
    }
}
