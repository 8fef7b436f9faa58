//! Bearer tokens through `AdminService` (docs/security.md "Tokens"): create, list, revoke.
//! Needs an admin token.

use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use tracing::{Instrument, info_span};

use crate::client::Client;
use crate::error::Error;
use crate::meta::Route;

/// What a new token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub name: String,
    pub scope: pb::TokenScope,
    /// Only these buckets (empty: all).
    pub buckets: Vec<String>,
    /// Only keys starting with this (empty: all).
    pub prefix: String,
    /// Lifetime in seconds (0: no expiry).
    pub ttl_secs: u64,
}

/// A created token: its record and the token itself, shown once.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub info: pb::TokenInfo,
    pub token: String,
}

impl Client {
    /// Creates a token. Not retried blindly: an attempt whose answer was lost may have
    /// created one (then `OutcomeUnknown`; list the tokens to see).
    pub async fn create_token(&self, req: &TokenRequest) -> Result<CreatedToken, Error> {
        let msg = pb::CreateTokenRequest {
            name: req.name.clone(),
            scope: req.scope as i32,
            buckets: req.buckets.clone(),
            prefix: req.prefix.clone(),
            ttl_secs: req.ttl_secs,
        };
        let what = format!("token {:?}", req.name);
        let done = self
            .meta()
            .call_write(
                "CreateToken",
                &what,
                Route::System,
                self.deadline(),
                "a token may or may not have been created: list the tokens to find out (and \
                 revoke it: its secret was not received)",
                |ch| {
                    let msg = msg.clone();
                    async move { AdminServiceClient::new(ch).create_token(msg).await }
                },
            )
            .instrument(info_span!("create_token", name = %req.name))
            .await;
        let r = done.result?;
        let info = r
            .token
            .ok_or_else(|| Error::protocol(format!("{what}: CreateToken answered without it")))?;
        Ok(CreatedToken {
            info,
            token: r.secret,
        })
    }

    pub async fn list_tokens(&self) -> Result<Vec<pb::TokenInfo>, Error> {
        let r = self
            .meta()
            .call(
                "ListTokens",
                "tokens",
                Route::System,
                self.deadline(),
                |ch| async move {
                    AdminServiceClient::new(ch)
                        .list_tokens(pb::ListTokensRequest {})
                        .await
                },
            )
            .await?;
        Ok(r.tokens)
    }

    /// Revokes a token by id; idempotent.
    pub async fn revoke_token(&self, id: &str) -> Result<pb::TokenInfo, Error> {
        let what = format!("token {id:?}");
        let req = pb::RevokeTokenRequest { id: id.to_owned() };
        let done = self
            .meta()
            .call_write(
                "RevokeToken",
                &what,
                Route::System,
                self.deadline(),
                "the token may or may not have been revoked: list the tokens to find out",
                |ch| {
                    let req = req.clone();
                    async move { AdminServiceClient::new(ch).revoke_token(req).await }
                },
            )
            .instrument(info_span!("revoke_token", token = id))
            .await;
        done.result?
            .token
            .ok_or_else(|| Error::protocol(format!("{what}: RevokeToken answered without it")))
    }
}
