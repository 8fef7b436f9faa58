use clap::Parser;
use dogfs_chunk::config::LogFormat;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use tracing::info;
use tracing_subscriber::EnvFilter;

// glibc malloc took ~20 % of the metadata path's CPU; mimalloc (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = ChunkConfig::parse();
    init_tracing(cfg.log_format);
    let mut server = ChunkServer::start(&cfg).await?;
    tokio::select! {
        r = server.wait() => r?,
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
