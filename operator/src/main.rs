//! `dogfs-operator`: runs the DogCluster controllers and serves metrics.
//!
//! In a pod it uses the service account; elsewhere the current kubeconfig context
//! (`KUBECONFIG`, `~/.kube/config`), so `cargo run -p dogfs-operator` works against any cluster.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use dogfs_operator::{metrics, reconcile};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Kubernetes operator for DogFS clusters.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "DOGFS_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Namespaces to watch, comma separated; all namespaces when empty.
    #[arg(
        long,
        env = "DOGFS_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "DOGFS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let namespaces: Vec<String> = args
        .watch_namespaces
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();

    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster config or kubeconfig)")?;
    let metrics = metrics::Metrics::new();
    let http = tokio::spawn(metrics::serve(args.http_addr, metrics.clone()));
    tokio::select! {
        () = reconcile::run(client, namespaces, metrics) => {
            tracing::info!("controllers stopped");
            Ok(())
        }
        served = http => {
            served.context("HTTP server task")?.context("HTTP server")?;
            anyhow::bail!("HTTP server stopped")
        }
    }
}
