//! A value built from files, rebuilt when any of them changes. Kubernetes updates a mounted
//! Secret by swapping a symlink, cert-manager and operators by rewriting the files: both
//! change what `metadata()` (which follows links) reports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

/// What identifies one version of a file without reading it.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

struct State<T> {
    stamp: Stamp,
    checked: Instant,
    value: Arc<T>,
    generation: u64,
}

pub(crate) struct Reloading<T, E> {
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, E> + Send + Sync>,
    /// Files are looked at no more often than this (0: on every call).
    every: Duration,
    state: Mutex<State<T>>,
}

impl<T, E: std::fmt::Display> Reloading<T, E> {
    /// Builds the first value now, so a bad file fails the start with its error.
    pub(crate) fn new(
        paths: Vec<PathBuf>,
        every: Duration,
        build: impl Fn() -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Self, E> {
        let stamp = stamp(&paths);
        let value = Arc::new(build()?);
        Ok(Reloading {
            paths,
            build: Box::new(build),
            every,
            state: Mutex::new(State {
                stamp,
                checked: Instant::now(),
                value,
                generation: 0,
            }),
        })
    }

    /// The current value and its generation (bumped on each reload). A file that changed but
    /// does not build (half written, a key not matching its certificate) keeps the previous
    /// value, with a warning, and is tried again on the next change.
    pub(crate) fn current(&self) -> (Arc<T>, u64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.checked.elapsed() >= self.every {
            s.checked = Instant::now();
            let now = stamp(&self.paths);
            if now != s.stamp {
                s.stamp = now;
                match (self.build)() {
                    Ok(v) => {
                        s.value = Arc::new(v);
                        s.generation += 1;
                        info!(files = ?self.paths, generation = s.generation, "watched files reloaded");
                    }
                    Err(e) => {
                        warn!(files = ?self.paths, error = %e, "watched files changed but do not load; keeping the previous ones");
                    }
                }
            }
        }
        (Arc::clone(&s.value), s.generation)
    }
}
