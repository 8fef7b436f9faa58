//! Everything `dogfs` prints on stdout goes through [`Out`]: human text, or with `--json` one
//! JSON document per line. Diagnostics go to stderr (`dogfs: ...`).

use std::io::Write;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl OutputError {
    /// The reader went away (`dogfs ls | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, OutputError::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
}

impl Out {
    /// A line of human output (nothing under `--json`, which prints documents instead).
    pub fn line(&self, text: &str) -> Result<(), OutputError> {
        if self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}").map_err(OutputError::Stdout)
    }

    /// A confirmation (`created bucket demo`): human output that `--quiet` silences.
    pub fn note(&self, text: &str) -> Result<(), OutputError> {
        if self.quiet {
            return Ok(());
        }
        self.line(text)
    }

    /// One JSON document on one line (only under `--json`).
    pub fn json<T: Serialize>(&self, value: &T) -> Result<(), OutputError> {
        if !self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, value)?;
        writeln!(out).map_err(OutputError::Stdout)
    }
}
