use clap::Parser;
use dogfs_meta::{LogFormat, MetaConfig, MetaServer};
use tracing::info;
use tracing_subscriber::EnvFilter;

// glibc malloc took ~20 % of the metadata path's CPU; mimalloc (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = MetaConfig::parse();
    init_tracing(cfg.log_format);
    cfg.validate()?;
    let grpc = tokio::net::TcpListener::bind(cfg.grpc_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding gRPC on {}: {e}", cfg.grpc_addr))?;
    let http = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding HTTP on {}: {e}", cfg.http_addr))?;
    let server = MetaServer::start(cfg, grpc, Some(http)).await?;
    shutdown_signal().await;
    info!("shutdown signal received");
    server.shutdown().await?;
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
