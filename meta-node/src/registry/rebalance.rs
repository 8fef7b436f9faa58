//! The rebalance in progress, in the system group (DESIGN §7, `docs/elasticity.md`): started by
//! an admin call or by a new server's registration, stopped by an admin call, finished by the
//! mover. Kept in Raft so a new system-group leader carries on with the same run; the moved
//! counters are added at the end of each of the mover's rounds.

use serde::{Deserialize, Serialize};

use crate::catalog::records;
use crate::catalog::{CatalogError, Check, Prepared};
use crate::raft::{Key, KvReader, KvSpace, Write};

/// System group tree: `"state"` → [`RebalanceRecord`].
pub const REBALANCE: &str = "rebalance";
const STATE_KEY: &[u8] = b"state";

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Running,
    /// Stopped by an admin call; what was moved stays moved.
    Stopped,
    /// No move improves the balance any more (normally: every up server within the spread).
    Done,
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    Admin,
    NodeJoined,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Admin => "admin",
            Trigger::NodeJoined => "server joined",
        }
    }
}

/// The current (or last) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebalanceRecord {
    pub phase: Phase,
    pub trigger: Trigger,
    /// Allowed distance of a server's usage ratio from the mean, as a fraction (0.1 = 10 points).
    pub spread: f64,
    pub started_unix: u64,
    /// When it became Stopped or Done; 0 while running.
    pub finished_unix: u64,
    pub shards_moved: u64,
    pub bytes_moved: u64,
    pub failures: u64,
}

/// Invalid rebalance requests.
#[derive(Debug, thiserror::Error)]
pub enum RebalanceError {
    #[error(
        "invalid rebalance spread {percent}%: expected a number of percentage points above 0 and below 100"
    )]
    Spread { percent: f64 },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A spread in percentage points → the fraction the planner takes.
pub fn spread_fraction(percent: f64) -> Result<f64, RebalanceError> {
    if percent.is_finite() && percent > 0.0 && percent < 100.0 {
        Ok(percent / 100.0)
    } else {
        Err(RebalanceError::Spread { percent })
    }
}

fn key() -> Key {
    Key::new(REBALANCE, STATE_KEY.to_vec())
}

/// The run and its record version, if one was ever started.
pub fn get<S: KvSpace>(
    system: &KvReader<S>,
) -> Result<Option<(RebalanceRecord, u64)>, CatalogError> {
    system
        .get(&key())?
        .map(|v| Ok((records::decode("rebalance record", &v.value)?, v.version)))
        .transpose()
}

fn put(record: &RebalanceRecord, version: Option<u64>) -> Result<Prepared, CatalogError> {
    let mut p = Prepared::new("updating the rebalance");
    let k = key();
    p.require(
        crate::catalog::ops::unchanged(k.clone(), version),
        Check::Unchanged,
    );
    p.write(Write::Put(k, records::encode("rebalance record", record)?));
    Ok(p)
}

/// Starts a run: a new one (counters from zero) unless one is running, which keeps going with
/// the new spread. `None` when nothing changes.
pub fn start<S: KvSpace>(
    system: &KvReader<S>,
    trigger: Trigger,
    spread: f64,
    now_unix: u64,
) -> Result<Option<(Prepared, RebalanceRecord)>, CatalogError> {
    let current = get(system)?;
    let record = match &current {
        Some((r, _)) if r.phase == Phase::Running => {
            if r.spread == spread {
                return Ok(None);
            }
            RebalanceRecord {
                spread,
                ..r.clone()
            }
        }
        _ => RebalanceRecord {
            phase: Phase::Running,
            trigger,
            spread,
            started_unix: now_unix,
            finished_unix: 0,
            shards_moved: 0,
            bytes_moved: 0,
            failures: 0,
        },
    };
    Ok(Some((put(&record, current.map(|(_, v)| v))?, record)))
}

/// Ends a running run as `phase` (Stopped or Done); `None` when none is running.
pub fn finish<S: KvSpace>(
    system: &KvReader<S>,
    phase: Phase,
    now_unix: u64,
) -> Result<Option<(Prepared, RebalanceRecord)>, CatalogError> {
    let Some((r, version)) = get(system)? else {
        return Ok(None);
    };
    if r.phase != Phase::Running {
        return Ok(None);
    }
    let record = RebalanceRecord {
        phase,
        finished_unix: now_unix,
        ..r
    };
    Ok(Some((put(&record, Some(version))?, record)))
}

/// Adds a round's moves to the running run started at `started_unix` (a run started since is
/// left alone); `None` when there is nothing to add or no such run.
pub fn add_progress<S: KvSpace>(
    system: &KvReader<S>,
    started_unix: u64,
    shards: u64,
    bytes: u64,
    failures: u64,
) -> Result<Option<Prepared>, CatalogError> {
    if shards == 0 && bytes == 0 && failures == 0 {
        return Ok(None);
    }
    let Some((r, version)) = get(system)? else {
        return Ok(None);
    };
    if r.started_unix != started_unix {
        return Ok(None);
    }
    let record = RebalanceRecord {
        shards_moved: r.shards_moved.saturating_add(shards),
        bytes_moved: r.bytes_moved.saturating_add(bytes),
        failures: r.failures.saturating_add(failures),
        ..r
    };
    Ok(Some(put(&record, Some(version))?))
}
