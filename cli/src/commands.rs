//! The object, bucket and cluster commands: argument checks first (so a bad name fails with
//! exit 4 before any network call), then one SDK call or stream, then output.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use dogfs_client::{
    Client, ClientConfig, GetOptions, ListEntry, ListQuery, ObjectInfo, PutOptions,
};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tracing::debug;

use crate::args::{
    AdminCommand, BucketArgs, CatArgs, Cli, ClusterCommand, Command, GetArgs, LsArgs, PutArgs,
    RmArgs, StatArgs,
};
use crate::cluster::{ChunkNodeView, StatusView, render_nodes};
use crate::exit::{Classify, ExitKind};
use crate::human::{self, ByteRange};
use crate::output::{Out, OutputError};
use crate::progress;
use crate::target::{self, ObjectTarget, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("invalid metadata {0:?}: expected NAME=VALUE")]
    Metadata(String),
    #[error("connecting to {endpoints}: {source}")]
    Connect {
        endpoints: String,
        source: dogfs_client::Error,
    },
    #[error("{step} {what}: {source}")]
    Client {
        step: &'static str,
        what: String,
        source: dogfs_client::Error,
    },
    #[error("no such object {0}")]
    NoSuchObject(String),
    #[error("range {range} selects no bytes of {target} ({size} bytes)")]
    EmptyRange {
        range: String,
        target: String,
        size: u64,
    },
    #[error("{0:?} is a directory")]
    IsDirectory(PathBuf),
    #[error("cannot derive a file name from key {0:?}; name the destination file")]
    NoFileName(String),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading stdin: {0}")]
    SpoolStdin(std::io::Error),
    #[error("writing {path}: {source}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing to stdout: {0}")]
    WriteStdout(std::io::Error),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// An unavailable cluster: the message adds where the command looked for it and how long.
    #[error("{inner} (cluster endpoint {endpoints}, --timeout {timeout})")]
    Unreachable {
        endpoints: String,
        timeout: String,
        inner: Box<CommandError>,
    },
    /// A change sent and never answered: the message says how to find out what happened.
    #[error("{inner} (--timeout {timeout}); check with `{check}`")]
    OutcomeUnknown {
        timeout: String,
        /// The command that tells what happened (`dogfs stat bucket/key`, `dogfs ls`).
        check: String,
        inner: Box<CommandError>,
    },
}

impl Classify for CommandError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            CommandError::Target(_)
            | CommandError::Metadata(_)
            | CommandError::EmptyRange { .. }
            | CommandError::IsDirectory(_)
            | CommandError::NoFileName(_) => ExitKind::InvalidInput,
            CommandError::ReadFile { source, .. } | CommandError::WriteFile { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                ExitKind::NotFound
            }
            CommandError::NoSuchObject(_) => ExitKind::NotFound,
            CommandError::Connect { source, .. } => match ExitKind::of_client(source) {
                // Whatever the SDK says, not reaching the cluster is "unavailable".
                ExitKind::Other => ExitKind::Unavailable,
                k => k,
            },
            CommandError::Client { source, .. } => ExitKind::of_client(source),
            CommandError::Admin(e) => e.exit_kind(),
            CommandError::Unreachable { .. } => ExitKind::Unavailable,
            CommandError::OutcomeUnknown { .. } => ExitKind::OutcomeUnknown,
            _ => ExitKind::Other,
        }
    }
}

impl CommandError {
    /// stdout closed under us (`dogfs cat ... | head`): exit quietly.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            CommandError::WriteStdout(e) => e.kind() == std::io::ErrorKind::BrokenPipe,
            CommandError::Output(e) => e.is_broken_pipe(),
            // The SDK's writer was stdout (`cat`, `get -`).
            CommandError::Client {
                source: dogfs_client::Error::Io(e),
                ..
            } => e.kind() == std::io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }
}

pub(crate) fn client_err(
    step: &'static str,
    what: impl ToString,
) -> impl FnOnce(dogfs_client::Error) -> CommandError {
    let what = what.to_string();
    move |source| CommandError::Client { step, what, source }
}

/// The client configuration every command uses: `--endpoint` and `--timeout` (docs/cli.md,
/// "Timeouts"). Every metadata call, retries included, ends within the timeout; a shard stream
/// fails after that long without progress, so a transfer that moves bytes is never cut.
pub fn client_config(endpoints: Vec<String>, timeout: std::time::Duration) -> ClientConfig {
    let mut cfg = ClientConfig::new(endpoints);
    cfg.connect_timeout = timeout.min(std::time::Duration::from_secs(10));
    cfg.request_timeout = timeout;
    cfg.shard_timeout = timeout;
    // Retries of an unreachable cluster stop at the timeout too, so `dogfs` never hangs for
    // longer than the user asked.
    cfg.retry_deadline = timeout;
    cfg
}

/// The bearer token of `--token` or `--token-file` (`DOGFS_TOKEN`, `DOGFS_TOKEN_FILE`).
pub fn token_of(cli: &Cli) -> Result<Option<dogfs_client::Token>, dogfs_client::Error> {
    if let Some(t) = cli.token.as_deref().filter(|t| !t.trim().is_empty()) {
        return dogfs_client::Token::new(t, "--token").map(Some);
    }
    let Some(path) = &cli.token_file else {
        return Ok(None);
    };
    let what = format!("--token-file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| dogfs_client::Error::InvalidInput {
        message: format!("{what}: reading it: {e}"),
    })?;
    dogfs_client::Token::new(&text, &what).map(Some)
}

/// A client whose operations finish their metadata work before data moves within `--timeout`
/// of now: a command that moves no data ends by then, whatever the cluster does. Local work
/// before this (spooling stdin) is not waiting on the cluster and does not count.
pub async fn connect(cli: &Cli) -> Result<Client, CommandError> {
    let deadline = std::time::Instant::now() + cli.timeout;
    let endpoints = cli.endpoints();
    let joined = endpoints.join(",");
    debug!(endpoints = %joined, "connecting");
    let mut cfg = client_config(endpoints, cli.timeout);
    cfg.hedge_min = cli.hedge_min.unwrap_or(cfg.hedge_min);
    cfg.hedge_max = cli.hedge_max.unwrap_or(cfg.hedge_max);
    cfg.tls = cli.ca.clone().map(dogfs_client::ClientTlsPaths::ca_only);
    cfg.token = token_of(cli).map_err(|source| CommandError::Connect {
        endpoints: joined.clone(),
        source,
    })?;
    Client::connect(cfg)
        .await
        .map(|c| c.with_deadline(deadline))
        .map_err(|source| CommandError::Connect {
            endpoints: joined,
            source,
        })
}

/// Runs an object, bucket or cluster command (`dev` and `bench` have modules of their own).
pub async fn run(cli: &Cli) -> Result<(), CommandError> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    let r = match &cli.command {
        Command::Put(a) => put(cli, out, a).await,
        Command::Get(a) => get(cli, out, a).await,
        Command::Cat(a) => cat(cli, a).await,
        Command::Ls(a) => ls(cli, out, a).await,
        Command::Rm(a) => rm(cli, out, a).await,
        Command::Stat(a) => stat(cli, out, a).await,
        Command::Mb(a) => mb(cli, out, a).await,
        Command::Rb(a) => rb(cli, out, a).await,
        Command::Cluster(c) => cluster(cli, out, c).await,
        Command::Admin(a) => crate::admin::run(cli, out, a).await,
        // main dispatches these elsewhere; nothing to do here.
        Command::Dev(_) | Command::Bench(_) => Ok(()),
    };
    let timeout = human::duration(cli.timeout);
    r.map_err(|e| match e {
        CommandError::Client { ref source, .. }
            if source.kind() == dogfs_client::ErrorKind::Unavailable =>
        {
            CommandError::Unreachable {
                endpoints: cli.endpoints().join(","),
                timeout,
                inner: Box::new(e),
            }
        }
        CommandError::Client {
            ref source,
            ref what,
            ..
        } if source.kind() == dogfs_client::ErrorKind::OutcomeUnknown => {
            let check = outcome_check(&cli.command, what);
            CommandError::OutcomeUnknown {
                timeout,
                check,
                inner: Box::new(e),
            }
        }
        e => e,
    })
}

/// The command that tells whether an unanswered change happened.
fn outcome_check(command: &Command, what: &str) -> String {
    match command {
        Command::Admin(AdminCommand::Rebalance(_)) => "dogfs admin rebalance status".to_owned(),
        Command::Admin(_) => "dogfs admin nodes".to_owned(),
        // An object's `what` is `bucket/key`; a bucket's is its name (`mb`, `rb`).
        _ if what.contains('/') => format!("dogfs stat {what}"),
        _ => "dogfs ls".to_owned(),
    }
}

/// An object as `stat --json`, `put --json` and `get --json` print it.
#[derive(Debug, Serialize)]
pub struct ObjectJson {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    pub created_unix: i64,
    pub version_id: String,
    pub inline: bool,
    /// The erasure scheme; absent for an inline object (no shards).
    pub scheme: Option<SchemeJson>,
    pub segment_size: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SchemeJson {
    pub k: u32,
    pub m: u32,
    pub cell_size: u64,
}

impl From<&ObjectInfo> for ObjectJson {
    fn from(o: &ObjectInfo) -> Self {
        ObjectJson {
            bucket: o.bucket.clone(),
            key: o.key.clone(),
            size: o.size,
            etag: o.etag.clone(),
            content_type: o.content_type.clone(),
            user_metadata: o.user_metadata.clone(),
            created_unix: o.created_unix,
            version_id: o.version_id.clone(),
            inline: o.inline,
            scheme: (!o.inline).then_some(SchemeJson {
                k: o.scheme.k,
                m: o.scheme.m,
                cell_size: o.scheme.cell_size,
            }),
            segment_size: o.segment_size,
        }
    }
}

/// `stat`'s storage line.
fn storage_text(j: &ObjectJson) -> String {
    match j.scheme {
        None => "inline (in the metadata record)".to_owned(),
        Some(s) => format!(
            "rs {}+{}, {} cells, {} segments",
            s.k,
            s.m,
            human::size(s.cell_size),
            human::size(j.segment_size)
        ),
    }
}

fn parse_metadata(pairs: &[String]) -> Result<BTreeMap<String, String>, CommandError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(CommandError::Metadata(p.clone())),
        })
        .collect()
}

async fn put(cli: &Cli, out: Out, a: &PutArgs) -> Result<(), CommandError> {
    let stdin = a.file.as_os_str() == "-";
    let file_name = if stdin {
        None
    } else {
        a.file.file_name().and_then(|n| n.to_str())
    };
    let target = target::parse_put_target(&a.target, file_name)?;
    let user_metadata = parse_metadata(&a.metadata)?;

    let (mut file, size, shown) = if stdin {
        let (f, size) = spool_stdin().await?;
        (f, size, "stdin".to_owned())
    } else {
        let read_err = |source| CommandError::ReadFile {
            path: a.file.clone(),
            source,
        };
        let f = tokio::fs::File::open(&a.file).await.map_err(read_err)?;
        let meta = f.metadata().await.map_err(read_err)?;
        if meta.is_dir() {
            return Err(CommandError::IsDirectory(a.file.clone()));
        }
        (f, meta.len(), a.file.display().to_string())
    };
    // Positioned at the start whatever happened before (a spooled stdin was just written).
    file.rewind()
        .await
        .map_err(|source| CommandError::ReadFile {
            path: a.file.clone(),
            source,
        })?;

    let client = connect(cli).await?;
    let bar = progress::transfer_bar(&format!("put {target}"), size, cli.quiet || cli.json);
    let opts = PutOptions {
        content_type: a.content_type.clone(),
        user_metadata,
        progress: bar.as_ref().map(progress::callback),
    };
    let result = client
        .put(
            target.bucket.as_str(),
            target.key.as_str(),
            file,
            size,
            opts,
        )
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let info = result.map_err(client_err("uploading to", &target))?;
    out.json(&ObjectJson::from(&info))?;
    out.note(&format!(
        "uploaded {shown} to {target} ({}, etag {})",
        human::size(info.size),
        info.etag
    ))?;
    Ok(())
}

/// Copies stdin to an unnamed temporary file (gone when closed), to learn the size a PUT
/// must declare up front.
async fn spool_stdin() -> Result<(tokio::fs::File, u64), CommandError> {
    let spool = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|e| CommandError::SpoolStdin(std::io::Error::other(e)))?
        .map_err(CommandError::SpoolStdin)?;
    let mut spool = tokio::fs::File::from_std(spool);
    let size = tokio::io::copy(&mut tokio::io::stdin(), &mut spool)
        .await
        .map_err(CommandError::SpoolStdin)?;
    spool.flush().await.map_err(CommandError::SpoolStdin)?;
    Ok((spool, size))
}

/// The byte range to fetch, checked against the object's size; `None` is the whole object.
async fn resolve_range(
    client: &Client,
    target: &ObjectTarget,
    range: Option<ByteRange>,
    raw: Option<&str>,
) -> Result<(Option<std::ops::Range<u64>>, Option<u64>), CommandError> {
    let Some(range) = range else {
        return Ok((None, None));
    };
    let info = client
        .head(target.bucket.as_str(), target.key.as_str())
        .await
        .map_err(client_err("reading", target))?;
    match range.resolve(info.size) {
        Some(r) => {
            let len = r.end - r.start;
            Ok((Some(r), Some(len)))
        }
        None => Err(CommandError::EmptyRange {
            range: raw.unwrap_or_default().to_owned(),
            target: target.to_string(),
            size: info.size,
        }),
    }
}

fn range_text(r: Option<ByteRange>) -> Option<String> {
    r.map(|r| match r {
        ByteRange::Closed { start, end } => format!("{start}-{end}"),
        ByteRange::From { start } => format!("{start}-"),
        ByteRange::Suffix { len } => format!("-{len}"),
    })
}

/// Whether a progress bar could be drawn, so the object's size is worth a HEAD up front.
fn wants_bar(cli: &Cli) -> bool {
    !cli.quiet && !cli.json && std::io::stderr().is_terminal()
}

async fn get(cli: &Cli, out: Out, a: &GetArgs) -> Result<(), CommandError> {
    let target = target::parse_object(&a.target)?;
    let to_stdout = a.file.as_ref().is_some_and(|f| f.as_os_str() == "-");
    let dest = if to_stdout {
        None
    } else {
        Some(destination(a.file.as_deref(), target.key.as_str())?)
    };
    let client = connect(cli).await?;
    let raw = range_text(a.range);
    let (range, mut len) = resolve_range(&client, &target, a.range, raw.as_deref()).await?;
    if len.is_none() && wants_bar(cli) {
        len = client
            .head(target.bucket.as_str(), target.key.as_str())
            .await
            .ok()
            .map(|i| i.size);
    }
    let bar = progress::transfer_bar(
        &format!("get {target}"),
        len.unwrap_or(0),
        cli.quiet || cli.json,
    );
    let opts = GetOptions {
        range: range.clone(),
        progress: bar.as_ref().map(progress::callback),
    };

    let Some(dest) = dest else {
        let mut stdout = tokio::io::stdout();
        let r = client
            .get(
                target.bucket.as_str(),
                target.key.as_str(),
                &mut stdout,
                opts,
            )
            .await;
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        r.map_err(client_err("downloading", &target))?;
        stdout.flush().await.map_err(CommandError::WriteStdout)?;
        return Ok(());
    };

    // Download into a temporary file beside the destination and rename it into place at the
    // end, so a failed or interrupted download never leaves a partial file under the name.
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let write_err = |source| CommandError::WriteFile {
        path: dest.clone(),
        source,
    };
    // 0666 less the umask, as any new file; tempfile's default 0600 would surprise.
    let tmp = tempfile::Builder::new()
        .prefix(".dogfs-get-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(write_err)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(write_err)?);
    let r = client
        .get(target.bucket.as_str(), target.key.as_str(), &mut file, opts)
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let info = r.map_err(client_err("downloading", &target))?;
    file.flush().await.map_err(write_err)?;
    file.sync_all().await.map_err(write_err)?;
    drop(file);
    tmp.persist(&dest).map_err(|e| CommandError::WriteFile {
        path: dest.clone(),
        source: e.error,
    })?;
    let written = range.map_or(info.size, |r| r.end - r.start);

    #[derive(Serialize)]
    struct GetJson<'a> {
        #[serde(flatten)]
        object: ObjectJson,
        file: &'a Path,
        bytes_written: u64,
    }
    out.json(&GetJson {
        object: ObjectJson::from(&info),
        file: &dest,
        bytes_written: written,
    })?;
    out.note(&format!(
        "downloaded {target} to {} ({})",
        dest.display(),
        human::size(written)
    ))?;
    Ok(())
}

/// Where `get` writes: the given file, inside the given directory, or the key's last path
/// segment in the current directory.
fn destination(file: Option<&Path>, key: &str) -> Result<PathBuf, CommandError> {
    let base = || {
        let name = key.rsplit('/').next().unwrap_or_default();
        // Never let a key choose a path outside the directory: `..` and `.` are refused.
        if name.is_empty() || name == "." || name == ".." {
            Err(CommandError::NoFileName(key.to_owned()))
        } else {
            Ok(PathBuf::from(name))
        }
    };
    match file {
        None => base(),
        Some(f) if f.is_dir() => Ok(f.join(base()?)),
        Some(f) => Ok(f.to_owned()),
    }
}

async fn cat(cli: &Cli, a: &CatArgs) -> Result<(), CommandError> {
    let target = target::parse_object(&a.target)?;
    let client = connect(cli).await?;
    let raw = range_text(a.range);
    let (range, _) = resolve_range(&client, &target, a.range, raw.as_deref()).await?;
    let mut stdout = tokio::io::stdout();
    let opts = GetOptions {
        range,
        ..Default::default()
    };
    client
        .get(
            target.bucket.as_str(),
            target.key.as_str(),
            &mut stdout,
            opts,
        )
        .await
        .map_err(client_err("reading", &target))?;
    stdout.flush().await.map_err(CommandError::WriteStdout)?;
    Ok(())
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum LsJson<'a> {
    Bucket {
        name: &'a str,
        created_unix: i64,
    },
    Object {
        key: &'a str,
        size: u64,
        etag: &'a str,
        created_unix: i64,
        version_id: &'a str,
    },
    Prefix {
        prefix: &'a str,
    },
}

async fn ls(cli: &Cli, out: Out, a: &LsArgs) -> Result<(), CommandError> {
    let Some(arg) = &a.target else {
        let client = connect(cli).await?;
        let buckets = client
            .list_buckets()
            .await
            .map_err(client_err("listing", "buckets"))?;
        for b in &buckets {
            out.json(&LsJson::Bucket {
                name: &b.name,
                created_unix: b.created_unix,
            })?;
            out.line(&format!("{}  {}", human::time(b.created_unix), b.name))?;
        }
        return Ok(());
    };
    let t = target::parse_prefix(arg)?;
    let client = connect(cli).await?;
    let query = ListQuery {
        prefix: t.prefix.clone(),
        delimiter: if a.recursive {
            String::new()
        } else {
            "/".to_owned()
        },
        ..Default::default()
    };
    let mut entries = std::pin::pin!(client.list(t.bucket.as_str(), query));
    while let Some(entry) = entries.next().await {
        let entry = entry.map_err(client_err("listing", arg))?;
        match &entry {
            ListEntry::Object(o) => {
                out.json(&LsJson::Object {
                    key: &o.key,
                    size: o.size,
                    etag: &o.etag,
                    created_unix: o.created_unix,
                    version_id: &o.version_id,
                })?;
                // A key may hold any character but NUL; escaped, one key is one line.
                out.line(&format!(
                    "{}  {:>10}  {}",
                    human::time(o.created_unix),
                    human::size(o.size),
                    human::escape(&o.key)
                ))?;
            }
            ListEntry::CommonPrefix(p) => {
                out.json(&LsJson::Prefix { prefix: p.as_str() })?;
                out.line(&format!("{:>19}  {:>10}  {}", "", "PRE", human::escape(p)))?;
            }
        }
    }
    Ok(())
}

async fn rm(cli: &Cli, out: Out, a: &RmArgs) -> Result<(), CommandError> {
    let target = target::parse_object(&a.target)?;
    let client = connect(cli).await?;
    let existed = client
        .delete(target.bucket.as_str(), target.key.as_str())
        .await
        .map_err(client_err("deleting", &target))?;
    if !existed && !a.force {
        return Err(CommandError::NoSuchObject(target.to_string()));
    }
    #[derive(Serialize)]
    struct RmJson<'a> {
        bucket: &'a str,
        key: &'a str,
        existed: bool,
    }
    out.json(&RmJson {
        bucket: target.bucket.as_str(),
        key: target.key.as_str(),
        existed,
    })?;
    out.note(&format!("removed {target}"))?;
    Ok(())
}

async fn stat(cli: &Cli, out: Out, a: &StatArgs) -> Result<(), CommandError> {
    let target = target::parse_object(&a.target)?;
    let client = connect(cli).await?;
    let info = client
        .head(target.bucket.as_str(), target.key.as_str())
        .await
        .map_err(client_err("reading", &target))?;
    let j = ObjectJson::from(&info);
    out.json(&j)?;
    if !out.json {
        let meta: Vec<String> = j
            .user_metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let storage = storage_text(&j);
        let lines = [
            format!("object:        {target}"),
            format!("size:          {} ({} bytes)", human::size(j.size), j.size),
            format!("etag:          {}", j.etag),
            format!("content type:  {}", j.content_type),
            format!("created:       {} UTC", human::time(j.created_unix)),
            format!("version:       {}", j.version_id),
            format!("storage:       {storage}"),
            format!("metadata:      {}", meta.join(", ")),
        ];
        for l in lines {
            out.line(&l)?;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct BucketJson<'a> {
    bucket: &'a str,
    created_unix: Option<i64>,
}

async fn mb(cli: &Cli, out: Out, a: &BucketArgs) -> Result<(), CommandError> {
    let bucket = target::parse_bucket(&a.bucket)?;
    let client = connect(cli).await?;
    let info = client
        .create_bucket(bucket.as_str())
        .await
        .map_err(client_err("creating bucket", bucket.as_str()))?;
    out.json(&BucketJson {
        bucket: bucket.as_str(),
        created_unix: Some(info.created_unix),
    })?;
    out.note(&format!("created bucket {}", bucket.as_str()))?;
    Ok(())
}

async fn rb(cli: &Cli, out: Out, a: &BucketArgs) -> Result<(), CommandError> {
    let bucket = target::parse_bucket(&a.bucket)?;
    let client = connect(cli).await?;
    client
        .delete_bucket(bucket.as_str())
        .await
        .map_err(client_err("removing bucket", bucket.as_str()))?;
    out.json(&BucketJson {
        bucket: bucket.as_str(),
        created_unix: None,
    })?;
    out.note(&format!("removed bucket {}", bucket.as_str()))?;
    Ok(())
}

async fn cluster(cli: &Cli, out: Out, c: &ClusterCommand) -> Result<(), CommandError> {
    let client = connect(cli).await?;
    match c {
        ClusterCommand::Status => {
            let status = client
                .cluster_status()
                .await
                .map_err(client_err("reading", "cluster status"))?;
            let view = StatusView::from(&status);
            out.json(&view)?;
            if !out.json {
                out.line(view.render().trim_end())?;
            }
        }
        ClusterCommand::Nodes => {
            let nodes = client
                .list_nodes()
                .await
                .map_err(client_err("listing", "chunk servers"))?;
            let views: Vec<ChunkNodeView> = nodes.iter().map(ChunkNodeView::from).collect();
            for v in &views {
                out.json(v)?;
            }
            if !out.json {
                out.line(render_nodes(&views).trim_end())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn metadata_pairs() {
        let m = parse_metadata(&["a=1".into(), "b=x=y".into(), "c=".into()]).unwrap();
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x=y");
        assert_eq!(m["c"], "");
        assert!(parse_metadata(&["=1".into()]).is_err());
        assert!(parse_metadata(&["novalue".into()]).is_err());
    }

    #[test]
    fn destination_never_escapes_the_directory() {
        assert_eq!(
            destination(None, "a/b/c.txt").unwrap(),
            PathBuf::from("c.txt")
        );
        assert!(destination(None, "a/..").is_err());
        assert!(destination(None, "dir/").is_err());
        assert_eq!(
            destination(Some(Path::new("out.bin")), "x").unwrap(),
            PathBuf::from("out.bin")
        );
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            destination(Some(d.path()), "k/name").unwrap(),
            d.path().join("name")
        );
    }
}
