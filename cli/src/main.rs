//! `dogfs`: parses the command line, sets up logging and the runtime, runs the command, and
//! turns its error into `dogfs: <message>` on stderr and a documented exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use dogfs_cli::args::{Cli, Command};
use dogfs_cli::bench::BenchError;
use dogfs_cli::commands::{self, CommandError};
use dogfs_cli::dev::{self, DevCluster, DevError};
use dogfs_cli::exit::{Classify, ExitKind};
use dogfs_cli::output::Out;
use tracing_subscriber::EnvFilter;

// glibc malloc took ~20 % of the metadata path's CPU; mimalloc (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints usage errors (exit 2) and --help/--version (exit 0) itself.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let kind = classify(&e);
            if let Some(kind) = kind {
                report(&e, kind, json);
                ExitCode::from(kind.code())
            } else {
                // A closed stdout (`dogfs cat ... | head`) is how the reader says "enough".
                ExitCode::SUCCESS
            }
        }
    }
}

/// Prints the error on stderr: `dogfs: <message>`, or with `--json` one JSON document
/// `{"error", "kind", "exit_code", "outcome"}` (stdout keeps only results, so a listing cut
/// short by an error still parses line by line). `outcome` is `"unknown"` when a change was
/// sent and never answered, `null` otherwise.
fn report(e: &anyhow::Error, kind: ExitKind, json: bool) {
    let mut err = std::io::stderr().lock();
    if json {
        let doc = serde_json::json!({
            "error": e.to_string(),
            "kind": kind.name(),
            "exit_code": kind.code(),
            "outcome": (kind == ExitKind::OutcomeUnknown).then_some("unknown"),
        });
        let _ = writeln!(err, "{doc}");
    } else {
        let _ = writeln!(err, "dogfs: {e}");
    }
}

/// The exit kind of an error; `None` for a broken pipe, which is not an error to report.
fn classify(e: &anyhow::Error) -> Option<ExitKind> {
    if let Some(c) = e.downcast_ref::<CommandError>() {
        return (!c.is_broken_pipe()).then(|| c.exit_kind());
    }
    if let Some(d) = e.downcast_ref::<DevError>() {
        return Some(d.exit_kind());
    }
    if let Some(b) = e.downcast_ref::<BenchError>() {
        return Some(b.exit_kind());
    }
    Some(ExitKind::Other)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let out = Out {
            json: cli.json,
            quiet: cli.quiet,
        };
        match &cli.command {
            Command::Dev(args) => dev::run(args, out).await?,
            Command::Bench(args) => {
                let token = commands::token_of(&cli)?;
                dogfs_cli::bench::run(args, cli.given_endpoints(), token, cli.timeout, out).await?;
            }
            _ => commands::run(&cli).await?,
        }
        Ok(())
    })
}

/// `dogfs dev` logs the servers at info to DIR/dev.log (the terminal shows the endpoint);
/// `bench` logs nothing; every other command logs warnings to stderr. RUST_LOG overrides.
fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    let filter = |default: &str| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    };
    if let Command::Dev(args) = &cli.command {
        std::fs::create_dir_all(&args.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(DevCluster::log_path(&args.dir))?;
        tracing_subscriber::fmt()
            .with_env_filter(filter("info"))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(log))
            .init();
    } else {
        // The bench's in-process servers log elections and a stopped chunk server as
        // warnings; the report says what matters, so its default is silence.
        let default = if matches!(cli.command, Command::Bench(_)) {
            "off"
        } else {
            "warn"
        };
        // Colour only for a person at a terminal: escape codes in a pipe or a captured log are
        // noise (and `NO_COLOR` turns it off, as https://no-color.org asks).
        let ansi = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        tracing_subscriber::fmt()
            .with_env_filter(filter(default))
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .init();
    }
    Ok(())
}
