use std::process::ExitCode;

use clap::Parser;
use dogfs_chunk::config::LogFormat;
use dogfs_chunk::{ChunkConfig, ChunkServer, ServerError};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

// glibc malloc took ~20 % of the metadata path's CPU; mimalloc (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: 0 stopped by a signal, 1 an error, 2 bad flags (clap), 3 removed from the
/// cluster (`dogfs_chunk::EXIT_REMOVED`, docs/chunk-server.md).
#[tokio::main]
async fn main() -> ExitCode {
    let cfg = ChunkConfig::parse();
    init_tracing(cfg.log_format);
    match run(&cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cfg: &ChunkConfig) -> Result<(), ServerError> {
    let mut server = ChunkServer::start(cfg).await?;
    tokio::select! {
        r = server.wait() => {
            if let Err(e) = r {
                // The same graceful stop as SIGTERM (readiness off, in-flight requests get
                // the grace period), then the exit code says why.
                error!(error = %e, "stopping");
                if let Err(stop) = server.shutdown().await {
                    error!(error = %stop, "stopping the server failed");
                }
                return Err(e);
            }
        }
        _ = shutdown_signal() => {
            info!("shutdown signal received");
            server.shutdown().await?;
        }
    }
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still works.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
