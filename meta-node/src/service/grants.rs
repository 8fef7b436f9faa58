//! Shard grants on the locations handed to clients (docs/security.md "Shard grants"): a
//! PutShard grant, valid as long as the upload, on every upload target; a GetShard grant,
//! valid `--grant-ttl-secs`, on every location of a GetObject answer. Without a key file the
//! locations go out without grants, as before.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dogfs_proto::meta as pb;
use dogfs_security::GrantOp;

use super::Core;

impl Core {
    fn grant(&self, op: GrantOp, until: SystemTime, loc: &mut pb::ShardLocation) {
        let Some(keys) = &self.grants else {
            return;
        };
        if loc.missing || loc.node_id.is_empty() {
            return;
        }
        // Ids in answers are built by this node from stored records, so they parse.
        if let Ok(shard) = u128::from_str_radix(&loc.shard_id, 16) {
            loc.grant = keys.keys().sign(op, shard, until).into();
        }
    }

    /// PutShard grants for an upload's targets, valid until it expires.
    pub(crate) fn grant_put(&self, expires_unix: i64, segments: &mut [pb::Segment]) {
        let until = UNIX_EPOCH + Duration::from_secs(u64::try_from(expires_unix).unwrap_or(0));
        for s in segments {
            for loc in &mut s.shards {
                self.grant(GrantOp::Put, until, loc);
            }
        }
    }

    /// A PutShard grant for one replacement target.
    pub(crate) fn grant_put_one(&self, loc: &mut pb::ShardLocation) {
        let until = SystemTime::now() + Duration::from_secs(self.cfg.upload_ttl_secs);
        self.grant(GrantOp::Put, until, loc);
    }

    /// GetShard grants for a read.
    pub(crate) fn grant_get(&self, segments: &mut [pb::Segment]) {
        if self.grants.is_none() {
            return;
        }
        let until = SystemTime::now() + Duration::from_secs(self.cfg.grant_ttl_secs);
        for s in segments {
            for loc in &mut s.shards {
                self.grant(GrantOp::Get, until, loc);
            }
        }
    }
}
