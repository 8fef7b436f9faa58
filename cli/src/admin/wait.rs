//! `--wait`: polls the admin API until a drain is empty or a rebalance has ended, drawing a
//! progress bar (stderr at a terminal only) or, for a log, a line every few seconds; gives up
//! at the command's deadline with a message saying the work goes on.

use std::io::Write;
use std::time::{Duration, Instant};

use dogfs_client::{Client, ErrorKind};
use dogfs_proto::meta::{ChunkNode, NodeState};
use indicatif::ProgressBar;

use super::AdminError;
use super::view::{DrainView, RebalanceView};
use crate::cluster::state_name;
use crate::commands::{CommandError, client_err};
use crate::human;
use crate::output::Out;
use crate::progress;

/// How often the admin API is asked; the mover surveys and moves on a scale of seconds.
pub const POLL: Duration = Duration::from_secs(1);
/// Without a bar (stderr is not a terminal), how often a progress line is written.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bytes done of a total that only grows, from the bytes left: the bar of a drain, whose
/// "left" can grow when uploads begun before the drain commit shards on the server.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeftToDone {
    done: u64,
    total: u64,
}

impl LeftToDone {
    /// `(done, total)` after seeing `left` bytes left. Never goes backwards.
    pub fn update(&mut self, left: u64) -> (u64, u64) {
        self.total = self.total.max(self.done.saturating_add(left));
        self.done = self.total - left.min(self.total);
        (self.done, self.total)
    }
}

/// The bar of a rebalance: bytes moved of moved + still planned (the plan is redone every
/// round, so the total moves with it).
pub fn rebalance_position(r: &RebalanceView) -> (u64, u64) {
    (r.bytes_moved, r.bytes_moved.saturating_add(r.bytes_planned))
}

/// A bar, or timed log lines, or nothing (`--quiet`, `--json`).
struct Reporter {
    bar: Option<ProgressBar>,
    log: bool,
    /// When a line was last written; the first comes at once.
    last_log: Option<Instant>,
    label: String,
}

impl Reporter {
    fn new(label: String, out: Out) -> Self {
        let quiet = out.quiet || out.json;
        let bar = progress::work_bar(&label, 0, quiet);
        Reporter {
            log: bar.is_none() && !quiet,
            bar,
            last_log: None,
            label,
        }
    }

    fn show(&mut self, done: u64, total: u64, text: &str) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
            b.set_message(format!("{}: {text}", self.label));
        } else if self.log && self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.last_log = Some(Instant::now());
            let _ = writeln!(std::io::stderr(), "dogfs: {}: {text}", self.label);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// What a poll that failed means: a passing outage (leader change, a node restarting) is
/// waited out until the deadline; anything else ends the wait.
fn transient(e: &dogfs_client::Error) -> bool {
    e.kind() == ErrorKind::Unavailable
}

/// Waits until `node` (being drained) is empty, or `deadline`. Answers the last state seen.
pub async fn drained(
    client: &Client,
    node: ChunkNode,
    deadline: Instant,
    timeout: Duration,
    out: Out,
) -> Result<ChunkNode, CommandError> {
    let id = node.node_id.clone();
    let mut reporter = Reporter::new(format!("draining {id}"), out);
    let mut bar = LeftToDone::default();
    let mut last = node;
    let mut last_error: Option<String> = None;
    let r = loop {
        if last.state == NodeState::Removed as i32 {
            break Ok(last);
        }
        if last.state != NodeState::Draining as i32 {
            break Err(AdminError::DrainEnded {
                node: id.clone(),
                state: state_name(last.state).to_owned(),
            }
            .into());
        }
        let view = last.drain.as_ref().map(DrainView::from);
        if let Some(d) = &view {
            if d.drained {
                break Ok(last);
            }
            let (done, total) = bar.update(d.bytes_left);
            reporter.show(done, total, &d.summary());
        }
        if Instant::now() >= deadline {
            let progress = view.map_or_else(|| "not counted yet".to_owned(), |d| d.summary());
            break Err(AdminError::WaitTimeout {
                what: format!("the drain of chunk server {id}"),
                timeout: human::duration(timeout),
                last: match last_error {
                    Some(e) => format!("{progress}; the last poll failed: {e}"),
                    None => progress,
                },
                watch: "dogfs admin nodes".to_owned(),
            }
            .into());
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        match client.node_status(&id).await {
            Ok(n) => {
                last = n;
                last_error = None;
            }
            Err(e) if transient(&e) => last_error = Some(e.to_string()),
            Err(e) => break Err(client_err("waiting for the drain of", &id)(e)),
        }
    };
    reporter.finish();
    r
}

/// Waits until the rebalance is done, or `deadline`; a rebalance stopped meanwhile (or never
/// running) is an error, since usage may still be uneven.
pub async fn rebalanced(
    client: &Client,
    first: RebalanceView,
    deadline: Instant,
    timeout: Duration,
    out: Out,
) -> Result<RebalanceView, CommandError> {
    let mut reporter = Reporter::new("rebalancing".to_owned(), out);
    let mut last = first;
    let mut last_error: Option<String> = None;
    let r = loop {
        match last.state.as_str() {
            "done" => break Ok(last),
            "running" => {}
            _ => {
                break Err(AdminError::RebalanceEnded {
                    summary: last.line(),
                }
                .into());
            }
        }
        let (done, total) = rebalance_position(&last);
        reporter.show(
            done,
            total,
            &format!(
                "{} shards moved, max deviation {:.1} points (spread {:.1})",
                last.shards_moved, last.max_deviation_percent, last.spread_percent
            ),
        );
        if Instant::now() >= deadline {
            break Err(AdminError::WaitTimeout {
                what: "the rebalance".to_owned(),
                timeout: human::duration(timeout),
                last: match last_error {
                    Some(e) => format!("{}; the last poll failed: {e}", last.line()),
                    None => last.line(),
                },
                watch: "dogfs admin rebalance status".to_owned(),
            }
            .into());
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        match client.rebalance_status().await {
            Ok(s) => {
                last = RebalanceView::from(&s);
                last_error = None;
            }
            Err(e) if transient(&e) => last_error = Some(e.to_string()),
            Err(e) => break Err(client_err("waiting for", "the rebalance")(e)),
        }
    };
    reporter.finish();
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn drain_bar_only_moves_forward_and_grows_with_late_shards() {
        let mut b = LeftToDone::default();
        assert_eq!(b.update(100), (0, 100));
        assert_eq!(b.update(60), (40, 100));
        // 20 bytes committed late onto the server: the total grows, done stays.
        assert_eq!(b.update(80), (40, 120));
        assert_eq!(b.update(0), (120, 120));
        assert_eq!(b.update(0), (120, 120));
        let mut empty = LeftToDone::default();
        assert_eq!(empty.update(0), (0, 0));
    }

    #[test]
    fn rebalance_bar_is_moved_of_moved_plus_planned() {
        let r = RebalanceView {
            state: "running".into(),
            reason: String::new(),
            started_unix: 1,
            finished_unix: 0,
            spread_percent: 10.0,
            mean_used_percent: 0.0,
            max_deviation_percent: 0.0,
            shards_moved: 3,
            bytes_moved: 30,
            bytes_planned: 70,
            failures: 0,
            bytes_per_sec: 0.0,
        };
        assert_eq!(rebalance_position(&r), (30, 100));
    }
}
