//! The admin API's tokens (CreateToken, ListTokens, RevokeToken), served by the system
//! group's leader; the records are `crate::tokens`.

use std::time::{Duration, Instant};

use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_security::Scope;
use dogfs_security::token;

use super::{Core, ServiceError, now_unix, peer_request, with_retries};
use crate::tokens::{self as store, TokenRecord, TokenSpec};

/// How long RevokeToken waits for every metadata node to apply the revocation.
const REVOKE_WAIT: Duration = Duration::from_secs(2);

fn unix(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

pub(crate) fn scope_to_pb(s: Scope) -> pb::TokenScope {
    match s {
        Scope::Read => pb::TokenScope::Read,
        Scope::ReadWrite => pb::TokenScope::ReadWrite,
        Scope::Admin => pb::TokenScope::Admin,
    }
}

fn scope_from_pb(v: i32) -> Option<Scope> {
    match pb::TokenScope::try_from(v).ok()? {
        pb::TokenScope::Read => Some(Scope::Read),
        pb::TokenScope::ReadWrite => Some(Scope::ReadWrite),
        pb::TokenScope::Admin => Some(Scope::Admin),
        pb::TokenScope::Unspecified => None,
    }
}

pub(crate) fn info(r: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        scope: scope_to_pb(r.scope) as i32,
        buckets: r.limits.buckets.clone(),
        prefix: r.limits.prefix.clone(),
        created_unix: unix(r.created_unix),
        expires_unix: unix(r.expires_unix),
        revoked_unix: unix(r.revoked_unix),
    }
}

impl Core {
    pub(crate) async fn create_token(
        &self,
        req: &pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, ServiceError> {
        let spec = TokenSpec {
            name: req.name.clone(),
            scope: scope_from_pb(req.scope),
            buckets: req.buckets.clone(),
            prefix: req.prefix.clone(),
            ttl_secs: req.ttl_secs,
        };
        // Checked before anything is generated or proposed.
        store::build(&spec, &token::generate(), now_unix())?;
        let (record, secret) = with_retries(|_| async {
            self.read_barrier(0).await?;
            let new = token::generate();
            let record = store::build(&spec, &new, now_unix())?;
            self.propose(0, &store::create(&self.reader(0)?, &record)?)
                .await?;
            Ok((record, new.token))
        })
        .await?;
        tracing::info!(token = %record.id, name = %record.name, scope = %record.scope, "token created");
        Ok(pb::CreateTokenResponse {
            token: Some(info(&record)),
            secret,
        })
    }

    pub(crate) async fn list_tokens(&self) -> Result<Vec<pb::TokenInfo>, ServiceError> {
        self.read_barrier(0).await?;
        Ok(store::list(&self.reader(0)?)?.iter().map(info).collect())
    }

    pub(crate) async fn revoke_token(&self, id: &str) -> Result<pb::TokenInfo, ServiceError> {
        let (record, version) = with_retries(|_| async {
            self.read_barrier(0).await?;
            let (prepared, record) = store::revoke(&self.reader(0)?, id, now_unix())?;
            let version = match prepared {
                Some(p) => Some(self.propose(0, &p).await?),
                None => None,
            };
            Ok((record, version))
        })
        .await?;
        if let Some(v) = version {
            tracing::info!(token = %record.id, name = %record.name, "token revoked");
            self.await_applied_everywhere(0, v).await;
        }
        Ok(info(&record))
    }

    /// Waits (at most [`REVOKE_WAIT`]) until every other metadata node reports having applied
    /// `index` of `group`, so the next call anywhere sees it. A node that does not answer is
    /// not waited for: it cannot serve calls either until it catches up with the leader.
    async fn await_applied_everywhere(&self, group: u64, index: u64) {
        let deadline = Instant::now() + REVOKE_WAIT;
        for (id, addr) in &self.peers {
            if *id == self.node_id {
                continue;
            }
            while Instant::now() < deadline {
                let Ok(ch) = self.raft.connections().channel(addr) else {
                    break;
                };
                let mut client = AdminServiceClient::new(ch);
                let call = client.cluster_status(peer_request(pb::ClusterStatusRequest {}));
                let applied = match tokio::time::timeout(Duration::from_millis(500), call).await {
                    Ok(Ok(r)) => r
                        .into_inner()
                        .groups
                        .iter()
                        .find(|g| g.group_id == group)
                        .map(|g| g.applied_index),
                    _ => None,
                };
                match applied {
                    Some(a) if a >= index => break,
                    Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    None => break,
                }
            }
        }
    }
}
