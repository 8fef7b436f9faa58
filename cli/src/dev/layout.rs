//! DIR/dev.json (the ports, server counts, scheme and partitions of a dev cluster, so a
//! restart brings back the same cluster) and the free ports a new one binds.

use std::net::SocketAddr;
use std::path::Path;

use dogfs_meta::config::MAX_PARTITIONS;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::{DevError, DevOptions, LAYOUT_FILE};

/// DIR/dev.json. A port of 0 (only before the first start) means "pick a free one".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub meta_grpc: Vec<u16>,
    pub chunk_grpc: Vec<u16>,
    pub meta_http: Vec<u16>,
    pub chunk_http: Vec<u16>,
    pub k: u32,
    pub m: u32,
    /// Object partitions; layouts recorded before the flag existed had the default.
    #[serde(default = "default_partitions")]
    pub partitions: u64,
}

const DEFAULT_META: usize = 3;
const DEFAULT_CHUNKS: usize = 6;
const DEFAULT_PORT: u16 = 7000;
/// As the operator's `spec.meta.partitions` default.
const DEFAULT_PARTITIONS: u64 = 8;

fn default_partitions() -> u64 {
    DEFAULT_PARTITIONS
}

impl Layout {
    /// The layout to start: the recorded one (checked against any flags given), or a new one.
    pub fn plan(opts: &DevOptions, recorded: Option<Layout>) -> Result<Layout, DevError> {
        if let Some(rec) = recorded {
            let mismatch = |what, recorded: String, asked: String| DevError::LayoutMismatch {
                dir: opts.dir.clone(),
                what,
                recorded,
                asked,
            };
            if let Some(n) = opts.meta.filter(|n| *n != rec.meta_grpc.len()) {
                return Err(mismatch(
                    "--meta",
                    rec.meta_grpc.len().to_string(),
                    n.to_string(),
                ));
            }
            if let Some(n) = opts.chunks.filter(|n| *n != rec.chunk_grpc.len()) {
                return Err(mismatch(
                    "--chunks",
                    rec.chunk_grpc.len().to_string(),
                    n.to_string(),
                ));
            }
            if let Some(k) = opts.k.filter(|k| *k != rec.k) {
                return Err(mismatch("--k", rec.k.to_string(), k.to_string()));
            }
            if let Some(m) = opts.m.filter(|m| *m != rec.m) {
                return Err(mismatch("--m", rec.m.to_string(), m.to_string()));
            }
            if let Some(p) = opts.partitions.filter(|p| *p != rec.partitions) {
                return Err(mismatch(
                    "--partitions",
                    rec.partitions.to_string(),
                    p.to_string(),
                ));
            }
            let first = rec.meta_grpc.first().copied().unwrap_or_default();
            if let Some(p) = opts.port.filter(|p| *p != 0 && *p != first) {
                return Err(mismatch("--port", first.to_string(), p.to_string()));
            }
            return Ok(rec);
        }
        let meta = opts.meta.unwrap_or(DEFAULT_META);
        let chunks = opts.chunks.unwrap_or(DEFAULT_CHUNKS);
        let k = opts.k.unwrap_or(4);
        let m = opts.m.unwrap_or(2);
        if meta == 0 {
            return Err(DevError::NoMeta);
        }
        let partitions = opts.partitions.unwrap_or(DEFAULT_PARTITIONS);
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(DevError::Partitions { partitions });
        }
        if chunks < (k + m) as usize {
            return Err(DevError::TooFewChunks { chunks, k, m });
        }
        let first = opts.port.unwrap_or(DEFAULT_PORT);
        let total = 2 * (meta + chunks);
        let port = |i: usize| -> Result<u16, DevError> {
            if first == 0 {
                return Ok(0);
            }
            u16::try_from(usize::from(first) + i).map_err(|_| DevError::PortRange {
                first,
                count: total,
            })
        };
        let span =
            |from: usize, n: usize| (from..from + n).map(port).collect::<Result<Vec<_>, _>>();
        Ok(Layout {
            meta_grpc: span(0, meta)?,
            chunk_grpc: span(meta, chunks)?,
            meta_http: span(meta + chunks, meta)?,
            chunk_http: span(2 * meta + chunks, chunks)?,
            k,
            m,
            partitions,
        })
    }

    pub(super) fn load(dir: &Path) -> Result<Option<Layout>, DevError> {
        let path = dir.join(LAYOUT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| DevError::ParseLayout { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DevError::ReadLayout { path, source }),
        }
    }

    /// Written with a temp file and rename, so a crash never leaves half a layout.
    pub(super) fn save(&self, dir: &Path) -> Result<(), DevError> {
        let path = dir.join(LAYOUT_FILE);
        let tmp = dir.join(format!("{LAYOUT_FILE}.tmp"));
        let werr = |source| DevError::WriteLayout {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| werr(std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(werr)?;
        std::fs::rename(&tmp, &path).map_err(werr)
    }
}

/// Binds 127.0.0.1:`port`; port 0 picks a free port outside the kernel's ephemeral range.
pub(super) async fn bind(what: String, port: u16) -> Result<TcpListener, DevError> {
    if port == 0 {
        // A port from the ephemeral range could, once released for a chunk server to bind,
        // be taken meanwhile by an outgoing connection (the metadata nodes dial each other
        // as they start), and on restart it may be in use by one. Outside it, only another
        // listener can hold it.
        let (low, high) = non_ephemeral_range();
        for _ in 0..200 {
            let candidate = rand::random_range(low..=high);
            if let Ok(l) = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], candidate))).await {
                return Ok(l);
            }
        }
    }
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|source| DevError::Bind { what, port, source })
}

/// A port range the kernel does not hand out to outgoing connections: below
/// `ip_local_port_range` (Linux; 32768-60999 by default), or above it when it starts low.
fn non_ephemeral_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    pick_range(range)
}

fn pick_range(ephemeral: Option<(u16, u16)>) -> (u16, u16) {
    const FLOOR: u16 = 10_000;
    match ephemeral {
        Some((low, _)) if low > FLOOR + 1000 => (FLOOR, low - 1),
        Some((_, high)) if high < 64_000 => (high + 1, 65_000),
        // No room outside it (or no /proc): anywhere above the well-known ports.
        _ => (FLOOR, 65_000),
    }
}

pub(super) fn local_port(l: &TcpListener, what: &str) -> Result<u16, DevError> {
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| DevError::Bind {
            what: what.to_owned(),
            port: 0,
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn default_layout_numbers_ports_in_order() {
        let l = Layout::plan(&DevOptions::new("d"), None).unwrap();
        assert_eq!(l.meta_grpc, vec![7000, 7001, 7002]);
        assert_eq!(l.chunk_grpc, (7003..7009).collect::<Vec<_>>());
        assert_eq!(l.meta_http, vec![7009, 7010, 7011]);
        assert_eq!(l.chunk_http, (7012..7018).collect::<Vec<_>>());
        assert_eq!((l.k, l.m), (4, 2));
    }

    #[test]
    fn port_zero_means_pick() {
        let mut o = DevOptions::new("d");
        o.port = Some(0);
        o.meta = Some(1);
        o.chunks = Some(3);
        o.k = Some(2);
        o.m = Some(1);
        let l = Layout::plan(&o, None).unwrap();
        assert_eq!(l.meta_grpc, vec![0]);
        assert_eq!(l.chunk_http, vec![0, 0, 0]);
    }

    #[test]
    fn bad_options_are_refused() {
        let mut o = DevOptions::new("d");
        o.chunks = Some(5);
        assert!(matches!(
            Layout::plan(&o, None),
            Err(DevError::TooFewChunks { chunks: 5, .. })
        ));
        let mut o = DevOptions::new("d");
        o.port = Some(65_530);
        assert!(matches!(
            Layout::plan(&o, None),
            Err(DevError::PortRange { .. })
        ));
        let mut o = DevOptions::new("d");
        o.meta = Some(0);
        assert!(matches!(Layout::plan(&o, None), Err(DevError::NoMeta)));
        for bad in [0, MAX_PARTITIONS + 1] {
            let mut o = DevOptions::new("d");
            o.partitions = Some(bad);
            let e = Layout::plan(&o, None).unwrap_err();
            assert!(matches!(e, DevError::Partitions { partitions } if partitions == bad));
            assert!(
                e.to_string().contains(&format!("--partitions {bad}")),
                "{e}"
            );
        }
        let mut o = DevOptions::new("d");
        assert_eq!(Layout::plan(&o, None).unwrap().partitions, 8);
        o.partitions = Some(1);
        assert_eq!(Layout::plan(&o, None).unwrap().partitions, 1);
    }

    #[test]
    fn recorded_layout_wins_and_conflicting_flags_are_refused() {
        let rec = Layout {
            meta_grpc: vec![40_000, 40_001, 40_002],
            chunk_grpc: (40_003..40_009).collect(),
            meta_http: vec![41_000, 41_001, 41_002],
            chunk_http: (41_003..41_009).collect(),
            k: 4,
            m: 2,
            partitions: 3,
        };
        let mut o = DevOptions::new("d");
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.partitions = Some(3);
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.partitions = Some(8);
        let e = Layout::plan(&o, Some(rec.clone())).unwrap_err();
        assert!(e.to_string().contains("--partitions"), "{e}");
        o.partitions = None;
        o.port = Some(0);
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.port = Some(40_000);
        assert_eq!(Layout::plan(&o, Some(rec.clone())).unwrap(), rec);
        o.port = Some(7000);
        let e = Layout::plan(&o, Some(rec.clone())).unwrap_err();
        assert!(e.to_string().contains("--port 40000"), "{e}");
        let mut o = DevOptions::new("d");
        o.chunks = Some(8);
        assert!(Layout::plan(&o, Some(rec)).is_err());
    }

    #[test]
    fn free_ports_avoid_the_ephemeral_range() {
        assert_eq!(pick_range(Some((32_768, 60_999))), (10_000, 32_767));
        assert_eq!(pick_range(Some((1024, 40_000))), (40_001, 65_000));
        assert_eq!(pick_range(Some((1024, 65_535))), (10_000, 65_000));
        assert_eq!(pick_range(None), (10_000, 65_000));
    }

    #[tokio::test]
    async fn port_zero_binds_outside_the_ephemeral_range() {
        let l = bind("test".into(), 0).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (low, high) = non_ephemeral_range();
        assert!((low..=high).contains(&port), "{port} not in {low}..={high}");
    }

    #[test]
    fn layout_round_trips_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Layout::load(d.path()).unwrap(), None);
        let l = Layout::plan(&DevOptions::new(d.path()), None).unwrap();
        l.save(d.path()).unwrap();
        assert_eq!(Layout::load(d.path()).unwrap(), Some(l));
        // A layout recorded before --partitions existed had the default.
        let mut old: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join(LAYOUT_FILE)).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("partitions");
        std::fs::write(d.path().join(LAYOUT_FILE), old.to_string()).unwrap();
        assert_eq!(Layout::load(d.path()).unwrap().unwrap().partitions, 8);
        std::fs::write(d.path().join(LAYOUT_FILE), b"{").unwrap();
        assert!(matches!(
            Layout::load(d.path()),
            Err(DevError::ParseLayout { .. })
        ));
    }
}
