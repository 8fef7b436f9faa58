//! `dogfs admin`: chunk servers (list, drain, undrain, remove) and the rebalance, through the
//! metadata service's admin API (DESIGN §7; docs/cli.md "Administration").
//!
//! - [`resolve`]: NODE arguments (id, id prefix, address) to one registered server;
//! - [`view`]: drain and rebalance figures as text and JSON (also used by `cluster status`);
//! - [`wait`]: `--wait`, with progress, until a drain is empty or a rebalance done;
//! - [`tokens`]: bearer tokens (create, list, revoke).

pub mod resolve;
pub mod tokens;
pub mod view;
pub mod wait;

use std::time::Instant;

use dogfs_client::Client;
use dogfs_proto::meta::ChunkNode;

use crate::args::{AdminCommand, Cli, DrainArgs, NodeArgs, RebalanceCommand, RebalanceStartArgs};
use crate::cluster::ChunkNodeView;
use crate::commands::{CommandError, client_err, connect};
use crate::exit::{Classify, ExitKind};
use crate::human;
use crate::output::Out;
use resolve::NodeQuery;
use view::{DrainView, RebalanceView, render_admin_nodes};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "{value:?} is not a chunk server: expected its id (32 hex digits or a hyphenated UUID), \
         a prefix of the id, or its address (host:port)"
    )]
    BadNode { value: String },
    #[error(
        "no chunk server has the id, id prefix or address {value:?} ({known}; `dogfs admin \
         nodes` lists them)"
    )]
    UnknownNode { value: String, known: String },
    #[error(
        "{value:?} matches {} chunk servers ({}); give more of the id, or the address with its \
         port",
        matches.len(),
        some(matches)
    )]
    AmbiguousNode { value: String, matches: Vec<String> },
    /// `--wait` ran out of time; the work itself goes on.
    #[error(
        "{what} did not finish within --timeout {timeout} ({last}); it goes on without this \
         command: watch it with `{watch}`, or wait longer with a larger --timeout"
    )]
    WaitTimeout {
        what: String,
        timeout: String,
        last: String,
        watch: String,
    },
    #[error(
        "the drain of chunk server {node} ended before it was empty: the server is {state} now \
         (undrained by another command?)"
    )]
    DrainEnded { node: String, state: String },
    #[error("the rebalance ended before usage was within the spread: {summary}")]
    RebalanceEnded { summary: String },
}

/// The first few of a list, and how many more there are: one line, whatever the cluster size.
fn some(items: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", and {} more", items.len() - SHOWN));
    }
    s
}

impl Classify for AdminError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            AdminError::BadNode { .. } | AdminError::AmbiguousNode { .. } => ExitKind::InvalidInput,
            AdminError::UnknownNode { .. } => ExitKind::NotFound,
            AdminError::WaitTimeout { .. } => ExitKind::Unavailable,
            AdminError::DrainEnded { .. } | AdminError::RebalanceEnded { .. } => ExitKind::Conflict,
        }
    }
}

/// Runs an `admin` command. NODE arguments are checked before connecting (exit 4 at once for
/// a value that cannot name a server).
pub async fn run(cli: &Cli, out: Out, cmd: &AdminCommand) -> Result<(), CommandError> {
    // `--wait` waits until this deadline, the one every call of the command shares.
    let deadline = Instant::now() + cli.timeout;
    match cmd {
        AdminCommand::Nodes => nodes(&connect(cli).await?, out).await,
        AdminCommand::Drain(a) => drain(cli, out, a, deadline).await,
        AdminCommand::Undrain(a) => undrain(cli, out, a).await,
        AdminCommand::Remove(a) => remove(cli, out, a).await,
        AdminCommand::Rebalance(RebalanceCommand::Start(a)) => {
            rebalance_start(cli, out, a, deadline).await
        }
        AdminCommand::Rebalance(RebalanceCommand::Stop) => rebalance_stop(cli, out).await,
        AdminCommand::Rebalance(RebalanceCommand::Status) => rebalance_status(cli, out).await,
        AdminCommand::Token(t) => tokens::run(cli, out, t).await,
    }
}

async fn list(client: &Client) -> Result<Vec<ChunkNode>, CommandError> {
    client
        .list_nodes()
        .await
        .map_err(client_err("listing", "chunk servers"))
}

/// Parses NODE, connects, and finds the server it names.
async fn target(cli: &Cli, node: &str) -> Result<(Client, ChunkNode), CommandError> {
    let query = NodeQuery::parse(node)?;
    let client = connect(cli).await?;
    let nodes = list(&client).await?;
    let found = query.resolve(&nodes)?.clone();
    Ok((client, found))
}

/// `chunk server <id> (<address>)`, as confirmations name a server.
fn named(n: &ChunkNode) -> String {
    format!("chunk server {} ({})", n.node_id, n.address)
}

async fn nodes(client: &Client, out: Out) -> Result<(), CommandError> {
    let views: Vec<ChunkNodeView> = list(client)
        .await?
        .iter()
        .map(ChunkNodeView::from)
        .collect();
    for v in &views {
        out.json(v)?;
    }
    if !out.json {
        out.line(render_admin_nodes(&views).trim_end())?;
    }
    Ok(())
}

async fn drain(cli: &Cli, out: Out, a: &DrainArgs, deadline: Instant) -> Result<(), CommandError> {
    let (client, node) = target(cli, &a.node).await?;
    let started = Instant::now();
    let answered = client
        .drain_node(&node.node_id)
        .await
        .map_err(client_err("draining", named(&node)))?;
    let progress = |n: &ChunkNode| {
        n.drain.as_ref().map_or_else(
            || "not counted yet".to_owned(),
            |d| DrainView::from(d).summary(),
        )
    };
    if !a.wait {
        out.json(&ChunkNodeView::from(&answered))?;
        out.note(&format!(
            "draining {}: {}; follow it with `dogfs admin nodes` (or `--wait`), then remove it \
             with `dogfs admin remove {}`",
            named(&answered),
            progress(&answered),
            answered.node_id
        ))?;
        return Ok(());
    }
    let done = wait::drained(&client, answered, deadline, cli.timeout, out).await?;
    out.json(&ChunkNodeView::from(&done))?;
    let moved = done.drain.as_ref().map_or_else(String::new, |d| {
        format!(
            "moved {} shards ({}) off it, ",
            d.shards_moved,
            human::size(d.bytes_moved)
        )
    });
    out.note(&format!(
        "{} is empty: {moved}{} after the drain call; remove it with `dogfs admin remove {}`",
        named(&done),
        human::elapsed(started.elapsed()),
        done.node_id
    ))?;
    Ok(())
}

async fn undrain(cli: &Cli, out: Out, a: &NodeArgs) -> Result<(), CommandError> {
    let (client, node) = target(cli, &a.node).await?;
    let answered = client
        .undrain_node(&node.node_id)
        .await
        .map_err(client_err("undraining", named(&node)))?;
    let view = ChunkNodeView::from(&answered);
    out.json(&view)?;
    out.note(&format!(
        "{} takes new shards again (state {}); what was moved stays moved",
        named(&answered),
        view.state
    ))?;
    Ok(())
}

async fn remove(cli: &Cli, out: Out, a: &NodeArgs) -> Result<(), CommandError> {
    let (client, node) = target(cli, &a.node).await?;
    let answered = client
        .remove_node(&node.node_id)
        .await
        .map_err(client_err("removing", named(&node)))?;
    out.json(&ChunkNodeView::from(&answered))?;
    out.note(&format!(
        "removed {} from the cluster; its id is not reused",
        named(&answered)
    ))?;
    Ok(())
}

async fn rebalance_start(
    cli: &Cli,
    out: Out,
    a: &RebalanceStartArgs,
    deadline: Instant,
) -> Result<(), CommandError> {
    let client = connect(cli).await?;
    let started = Instant::now();
    let status = client
        .start_rebalance(a.spread)
        .await
        .map_err(client_err("starting", "the rebalance"))?;
    let view = RebalanceView::from(&status);
    if !a.wait {
        out.json(&view)?;
        let hint = if view.is_running() {
            "; follow it with `dogfs admin rebalance status` (or `--wait`)"
        } else {
            ""
        };
        out.note(&format!("rebalance {}{hint}", view.line()))?;
        return Ok(());
    }
    let done = wait::rebalanced(&client, view, deadline, cli.timeout, out).await?;
    out.json(&done)?;
    out.note(&format!(
        "rebalance {} (waited {})",
        done.line(),
        human::elapsed(started.elapsed())
    ))?;
    Ok(())
}

async fn rebalance_stop(cli: &Cli, out: Out) -> Result<(), CommandError> {
    let client = connect(cli).await?;
    let status = client
        .stop_rebalance()
        .await
        .map_err(client_err("stopping", "the rebalance"))?;
    let view = RebalanceView::from(&status);
    out.json(&view)?;
    out.note(&format!("rebalance {}", view.line()))?;
    Ok(())
}

async fn rebalance_status(cli: &Cli, out: Out) -> Result<(), CommandError> {
    let client = connect(cli).await?;
    let status = client
        .rebalance_status()
        .await
        .map_err(client_err("reading", "the rebalance status"))?;
    let view = RebalanceView::from(&status);
    out.json(&view)?;
    if !out.json {
        out.line(view.render().trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn errors_name_the_value_and_map_to_exit_codes() {
        let many: Vec<String> = (0..7).map(|i| format!("n{i} at h:{i}")).collect();
        let e = AdminError::AmbiguousNode {
            value: "h".into(),
            matches: many,
        };
        assert_eq!(e.exit_kind(), ExitKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "\"h\" matches 7 chunk servers (n0 at h:0, n1 at h:1, n2 at h:2, n3 at h:3, and 3 \
             more); give more of the id, or the address with its port"
        );
        let e = AdminError::WaitTimeout {
            what: "the rebalance".into(),
            timeout: "30s".into(),
            last: "running".into(),
            watch: "dogfs admin rebalance status".into(),
        };
        assert_eq!(e.exit_kind(), ExitKind::Unavailable);
        let msg = e.to_string();
        assert!(
            msg.starts_with("the rebalance did not finish within --timeout 30s"),
            "{msg}"
        );
        assert!(msg.contains("`dogfs admin rebalance status`"), "{msg}");
        let e = AdminError::DrainEnded {
            node: "abc".into(),
            state: "up".into(),
        };
        assert_eq!(e.exit_kind(), ExitKind::Conflict);
        assert_eq!(
            AdminError::RebalanceEnded {
                summary: String::new()
            }
            .exit_kind(),
            ExitKind::Conflict
        );
        assert_eq!(
            AdminError::UnknownNode {
                value: "x".into(),
                known: "1 server".into()
            }
            .exit_kind(),
            ExitKind::NotFound
        );
    }
}
