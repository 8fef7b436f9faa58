//! Conversions between wire types and store types, and the one mapping from store errors to
//! gRPC status codes.

use dogfs_core::ids::ShardId;
use dogfs_proto::chunk::ShardInfo;
use tonic::Status;

use crate::store::{ShardMeta, StoreError};

pub fn shard_info(m: &ShardMeta) -> ShardInfo {
    ShardInfo {
        shard_id: m.id.to_string(),
        size: m.size,
        crc32c: m.crc32c,
        created_unix: m.created_unix,
    }
}

/// Parses a shard id from a request field, naming the field in the error.
pub fn parse_shard_id(field: &str, s: &str) -> Result<ShardId, Status> {
    s.parse()
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::NotFound(_) => Status::not_found(msg),
            StoreError::NoSpace { .. } => Status::resource_exhausted(msg),
            StoreError::TooMuchData { .. } | StoreError::ShortData { .. } => {
                Status::invalid_argument(msg)
            }
            StoreError::UploadChecksum { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Damaged { .. } => Status::data_loss(msg),
            StoreError::AlreadyExists { .. } => Status::already_exists(msg),
            StoreError::OutOfRange { .. } => Status::out_of_range(msg),
            StoreError::Wiped { .. } => Status::failed_precondition(msg),
            StoreError::CreateDir { .. }
            | StoreError::Locked { .. }
            | StoreError::Lock { .. }
            | StoreError::Identity { .. }
            | StoreError::Scan { .. }
            | StoreError::Io { .. }
            | StoreError::Fs { .. } => Status::internal(msg),
        }
    }
}
