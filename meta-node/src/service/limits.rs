//! A token's bucket and key-prefix limits, checked by the handlers (the auth layer checked
//! the scope; only the handler knows the bucket and key). A call without an identity passed
//! a server that does not check tokens, or was forwarded by a metadata node that did.

use dogfs_security::Identity;
use dogfs_security::token::Denied;
use tonic::{Request, Status};

fn identity<T>(req: &Request<T>) -> Option<&Identity> {
    dogfs_security::auth::identity_of(req.extensions())
}

fn denied(d: Denied) -> Status {
    Status::permission_denied(d.to_string())
}

/// An object call.
pub(crate) fn key<T>(req: &Request<T>, bucket: &str, key: &str) -> Result<(), Status> {
    identity(req).map_or(Ok(()), |i| i.check_key(bucket, key).map_err(denied))
}

/// A listing of keys under `prefix`.
pub(crate) fn list<T>(req: &Request<T>, bucket: &str, prefix: &str) -> Result<(), Status> {
    identity(req).map_or(Ok(()), |i| i.check_list(bucket, prefix).map_err(denied))
}

/// Reading a bucket's record.
pub(crate) fn bucket<T>(req: &Request<T>, bucket: &str) -> Result<(), Status> {
    identity(req).map_or(Ok(()), |i| i.check_bucket(bucket).map_err(denied))
}

/// Creating or deleting a bucket.
pub(crate) fn bucket_change<T>(req: &Request<T>, bucket: &str) -> Result<(), Status> {
    identity(req).map_or(Ok(()), |i| i.check_bucket_change(bucket).map_err(denied))
}

/// Which buckets a listing of buckets may show.
pub(crate) fn visible_bucket<T>(req: &Request<T>, bucket: &str) -> bool {
    identity(req).is_none_or(|i| i.may_see_bucket(bucket))
}
