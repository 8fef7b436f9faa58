use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use dogfs_client::{Client, ClientConfig};
use dogfs_s3::{Credentials, GatewayConfig};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `dogfs-s3`: an S3-compatible gateway to a DogFS cluster (docs/s3.md).
#[derive(Debug, Parser)]
#[command(name = "dogfs-s3", version, about)]
struct Args {
    /// Address the S3 API listens on.
    #[arg(long, env = "DOGFS_S3_LISTEN", default_value = "0.0.0.0:9000")]
    listen: SocketAddr,

    /// Metadata service endpoints, `host:port`, comma-separated.
    #[arg(
        long,
        env = "DOGFS_ENDPOINT",
        value_delimiter = ',',
        default_value = "127.0.0.1:7000"
    )]
    endpoint: Vec<String>,

    /// The region the gateway answers for.
    #[arg(long, env = "DOGFS_S3_REGION", default_value = GatewayConfig::DEFAULT_REGION)]
    region: String,

    /// Access keys: a YAML file (format in docs/s3.md).
    #[arg(long, env = "DOGFS_S3_CREDENTIALS")]
    credentials: Option<PathBuf>,

    /// Allow unsigned requests, with full rights (development only).
    #[arg(long, env = "DOGFS_S3_ANONYMOUS")]
    anonymous: bool,

    /// Base domain(s) for virtual-hosted-style requests (`bucket.DOMAIN`), comma-separated;
    /// without one, requests are path-style.
    #[arg(long, env = "DOGFS_S3_DOMAIN", value_delimiter = ',')]
    domain: Vec<String>,

    /// PEM CA bundle of the cluster's TLS: reach metadata and chunk servers over TLS
    /// trusting it (plain text without it).
    #[arg(long, env = "DOGFS_CA")]
    ca: Option<PathBuf>,

    /// The gateway's own bearer token, for clusters that check tokens (read-write, or admin
    /// to create buckets anywhere); every S3 request is served with it, after the gateway
    /// checked the request's access key and its limits.
    #[arg(long, env = "DOGFS_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// File holding the gateway's bearer token (a mounted Secret).
    #[arg(long, env = "DOGFS_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// How long a metadata call may retry before the request answers ServiceUnavailable.
    #[arg(long, env = "DOGFS_S3_META_DEADLINE_SECS", default_value_t = 15)]
    meta_deadline_secs: u64,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "DOGFS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    let credentials = match &args.credentials {
        Some(path) => Some(Credentials::load(path)?),
        None => None,
    };
    let config = GatewayConfig {
        region: args.region,
        credentials,
        anonymous: args.anonymous,
        domains: args.domain,
    };
    let endpoints: Vec<String> = args
        .endpoint
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    let mut client_config = ClientConfig::new(endpoints);
    client_config.retry_deadline = Duration::from_secs(args.meta_deadline_secs.max(1));
    client_config.tls = args.ca.clone().map(dogfs_client::ClientTlsPaths::ca_only);
    client_config.token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(dogfs_client::Token::new(t, "--token")?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --token-file {}", path.display()))?;
            Some(dogfs_client::Token::new(&text, "--token-file")?)
        }
        (None, None) => None,
    };
    let client = Client::connect(client_config)
        .await
        .context("configuring the DogFS client")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the S3 listener on {}", args.listen))?;
    dogfs_s3::serve(config, listener, client, shutdown_signal()).await?;
    Ok(())
}

/// Without RUST_LOG: info, but `s3s` only for its own warnings: it logs every refused request
/// (a wrong signature, a missing key) as an error, which the gateway's own per-request log
/// covers at the right level.
const DEFAULT_LOG: &str = "info,s3s=warn,s3s::service=off,s3s::ops=off";

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
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
    tracing::info!("shutdown signal received");
}
