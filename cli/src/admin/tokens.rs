//! `dogfs admin token create|list|revoke` (docs/security.md "Tokens").

use std::time::{SystemTime, UNIX_EPOCH};

use dogfs_client::{TokenInfo, TokenRequest, TokenScope};
use dogfs_security::Scope;
use serde::Serialize;

use crate::args::{Cli, TokenCommand, TokenCreateArgs, TokenRevokeArgs};
use crate::commands::{CommandError, client_err, connect};
use crate::output::Out;

/// A token as `list` and `create` show it (never its secret, except `create`'s `token`).
#[derive(Debug, Serialize)]
struct TokenView {
    id: String,
    name: String,
    scope: &'static str,
    buckets: Vec<String>,
    prefix: String,
    created_unix: i64,
    /// 0: never.
    expires_unix: i64,
    /// 0: not revoked.
    revoked_unix: i64,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn scope_name(v: i32) -> &'static str {
    match TokenScope::try_from(v) {
        Ok(TokenScope::Read) => "read",
        Ok(TokenScope::ReadWrite) => "read-write",
        Ok(TokenScope::Admin) => "admin",
        _ => "unknown",
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl From<&TokenInfo> for TokenView {
    fn from(t: &TokenInfo) -> Self {
        let state = if t.revoked_unix != 0 {
            "revoked"
        } else if t.expires_unix != 0 && t.expires_unix <= now_unix() {
            "expired"
        } else {
            "active"
        };
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            scope: scope_name(t.scope),
            buckets: t.buckets.clone(),
            prefix: t.prefix.clone(),
            created_unix: t.created_unix,
            expires_unix: t.expires_unix,
            revoked_unix: t.revoked_unix,
            state,
            token: None,
        }
    }
}

fn limits(v: &TokenView) -> String {
    let buckets = if v.buckets.is_empty() {
        "all buckets".to_string()
    } else {
        v.buckets.join(",")
    };
    if v.prefix.is_empty() {
        buckets
    } else {
        format!("{buckets}, keys {:?}*", v.prefix)
    }
}

/// The id of `dogfs_<id>_<secret>`, or the argument itself.
fn id_of(arg: &str) -> &str {
    arg.strip_prefix(dogfs_security::token::TOKEN_PREFIX)
        .and_then(|rest| rest.split('_').next())
        .unwrap_or(arg)
}

pub async fn run(cli: &Cli, out: Out, cmd: &TokenCommand) -> Result<(), CommandError> {
    match cmd {
        TokenCommand::Create(a) => create(cli, out, a).await,
        TokenCommand::List => list(cli, out).await,
        TokenCommand::Revoke(a) => revoke(cli, out, a).await,
    }
}

async fn create(cli: &Cli, out: Out, a: &TokenCreateArgs) -> Result<(), CommandError> {
    let client = connect(cli).await?;
    let req = TokenRequest {
        name: a.name.clone(),
        scope: match a.scope {
            Scope::Read => TokenScope::Read,
            Scope::ReadWrite => TokenScope::ReadWrite,
            Scope::Admin => TokenScope::Admin,
        },
        buckets: a.buckets.clone(),
        prefix: a.prefix.clone(),
        ttl_secs: a.expires.map_or(0, |d| d.as_secs().max(1)),
    };
    let created = client
        .create_token(&req)
        .await
        .map_err(client_err("creating", format!("token {:?}", a.name)))?;
    let mut view = TokenView::from(&created.info);
    view.token = Some(created.token.clone());
    out.json(&view)?;
    // The token alone on stdout, so `TOKEN=$(dogfs admin token create ...)` works; the rest
    // on stderr.
    out.line(&created.token)?;
    if !out.json && !out.quiet {
        eprintln!(
            "created token {} ({}, scope {}, {}); it is shown only this once",
            view.id,
            view.name,
            view.scope,
            limits(&view)
        );
    }
    Ok(())
}

async fn list(cli: &Cli, out: Out) -> Result<(), CommandError> {
    let client = connect(cli).await?;
    let tokens = client
        .list_tokens()
        .await
        .map_err(client_err("listing", "tokens"))?;
    let views: Vec<TokenView> = tokens.iter().map(TokenView::from).collect();
    for v in &views {
        out.json(v)?;
    }
    if out.json {
        return Ok(());
    }
    out.line(&format!(
        "{:<16}  {:<20}  {:<10}  {:<8}  LIMITS",
        "ID", "NAME", "SCOPE", "STATE"
    ))?;
    for v in &views {
        out.line(&format!(
            "{:<16}  {:<20}  {:<10}  {:<8}  {}",
            v.id,
            crate::human::escape(&v.name),
            v.scope,
            v.state,
            limits(v)
        ))?;
    }
    Ok(())
}

async fn revoke(cli: &Cli, out: Out, a: &TokenRevokeArgs) -> Result<(), CommandError> {
    let id = id_of(&a.id);
    let client = connect(cli).await?;
    let t = client
        .revoke_token(id)
        .await
        .map_err(client_err("revoking", format!("token {id}")))?;
    let view = TokenView::from(&t);
    out.json(&view)?;
    out.note(&format!(
        "revoked token {} ({}); every metadata node refuses it now",
        view.id, view.name
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_whole_tokens_too() {
        assert_eq!(id_of("0123456789abcdef"), "0123456789abcdef");
        assert_eq!(
            id_of(&format!("dogfs_0123456789abcdef_{}", "a".repeat(64))),
            "0123456789abcdef"
        );
    }
}
