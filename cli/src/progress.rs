//! Transfer progress bars on stderr, shown only to a person watching: stderr is a terminal,
//! output is not `--quiet` or `--json`, and the object is large enough to take a while.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Objects smaller than this finish before a bar would be worth drawing.
pub const MIN_BAR_BYTES: u64 = 8 << 20;

/// A bar for a transfer of `len` bytes, or `None` when none should be drawn.
pub fn transfer_bar(label: &str, len: u64, quiet: bool) -> Option<ProgressBar> {
    if quiet || len < MIN_BAR_BYTES || !std::io::stderr().is_terminal() {
        return None;
    }
    // A template error is a bug in the literal below; fall back to the default bar.
    let style = ProgressStyle::with_template(
        "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(10))
        .with_style(style)
        .with_message(label.to_owned());
    Some(bar)
}

/// The SDK's progress callback driving `bar`: it reports the bytes transferred so far.
pub fn callback(bar: &ProgressBar) -> dogfs_client::Progress {
    let bar = bar.clone();
    Arc::new(move |done: u64| bar.set_position(done))
}

/// A bar for work the cluster does while the command waits (`admin drain --wait`, `admin
/// rebalance start --wait`): bytes done of `len`, the rate, and `label` (updated with what is
/// left). Drawn under the same conditions as a transfer bar, whatever the size: stderr is a
/// terminal and neither `--quiet` nor `--json` was given; otherwise `None` (no escape codes in
/// a pipe or a log).
pub fn work_bar(label: &str, len: u64, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template(
        "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} \
         elapsed {elapsed}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4))
        .with_style(style)
        .with_message(label.to_owned());
    Some(bar)
}
