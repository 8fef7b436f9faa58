//! Conversions between meta.proto messages and catalogue/registry types (the crate's one
//! conversion module, DESIGN §2).

use std::collections::HashMap;

use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::NodeState;
use dogfs_core::scheme::{Codec, ErasureScheme};
use dogfs_proto::meta as pb;

use super::ServiceError;
use crate::catalog::{
    CatalogError, ListEntry, ObjectBody, ObjectSummary, ObjectVersion, SchemeRecord,
};
use crate::registry::{NodeRecord, format_node_id};

pub(crate) fn bucket(name: &str) -> Result<BucketName, ServiceError> {
    Ok(BucketName::parse(name).map_err(CatalogError::from)?)
}

pub(crate) fn key(name: &str) -> Result<ObjectKey, ServiceError> {
    Ok(ObjectKey::parse(name).map_err(CatalogError::from)?)
}

/// Upload and version ids: 32 lowercase hex characters.
pub(crate) fn upload_id(s: &str) -> Result<u128, ServiceError> {
    let ok = s.len() == 32 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let bad = || {
        ServiceError::Invalid(format!(
            "invalid upload id {s:?}: expected 32 lowercase hex characters"
        ))
    };
    if !ok {
        return Err(bad());
    }
    u128::from_str_radix(s, 16).map_err(|_| bad())
}

pub(crate) fn hex_id(id: u128) -> String {
    format!("{id:032x}")
}

pub(crate) fn scheme_to_pb(s: &ErasureScheme) -> pb::ErasureScheme {
    pb::ErasureScheme {
        codec: s.codec().as_str().to_owned(),
        k: u32::from(s.k()),
        m: u32::from(s.m()),
        cell_size: u64::from(s.cell_size()),
    }
}

pub(crate) fn scheme_record_to_pb(s: &SchemeRecord) -> pb::ErasureScheme {
    pb::ErasureScheme {
        codec: s.codec.clone(),
        k: u32::from(s.k),
        m: u32::from(s.m),
        cell_size: u64::from(s.cell_size),
    }
}

pub(crate) fn scheme_from_pb(s: &pb::ErasureScheme) -> Result<ErasureScheme, ServiceError> {
    let codec: Codec = s.codec.parse().map_err(CatalogError::from)?;
    Ok(ErasureScheme::new(codec, s.k, s.m, s.cell_size).map_err(CatalogError::from)?)
}

fn unix(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn object_info(v: &ObjectVersion) -> pb::ObjectInfo {
    pb::ObjectInfo {
        bucket: v.bucket.clone(),
        key: v.key.clone(),
        version_id: hex_id(v.version_id),
        size: v.size,
        etag: v.etag.clone(),
        content_type: v.content_type.clone(),
        user_metadata: v
            .user_metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_unix: unix(v.created_unix),
        scheme: Some(scheme_record_to_pb(&v.scheme)),
        segment_size: v.segment_size,
        inline: matches!(v.body, ObjectBody::Inline(_)),
        parts_count: v
            .parts()
            .map_or(0, |p| u32::try_from(p.len()).unwrap_or(u32::MAX)),
    }
}

/// A shard holder as a layout shows it.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub address: String,
    pub state: NodeState,
}

/// GetObject's answer: the version, its inline data or its segments with every shard's
/// current address and its server's state (so readers ask down or suspect servers last).
pub(crate) fn get_object_response(
    v: ObjectVersion,
    holders: &HashMap<u128, Holder>,
) -> pb::GetObjectResponse {
    let object = Some(object_info(&v));
    let (segs, parts) = match v.body {
        ObjectBody::Inline(data) => {
            return pb::GetObjectResponse {
                object,
                inline_data: data.into(),
                ..Default::default()
            };
        }
        ObjectBody::Segments(segs) => (segs, Vec::new()),
        ObjectBody::Parts(body) => (
            body.segments,
            body.parts
                .into_iter()
                .map(|p| pb::PartExtent {
                    part_number: p.number,
                    size: p.size,
                    segment_size: p.segment_size,
                })
                .collect(),
        ),
    };
    pb::GetObjectResponse {
        object,
        inline_data: Default::default(),
        parts,
        segments: segs
            .into_iter()
            .map(|s| pb::Segment {
                index: s.index,
                shards: s
                    .shards
                    .into_iter()
                    .map(|sh| pb::ShardLocation {
                        index: u32::from(sh.index),
                        shard_id: hex_id(sh.shard_id),
                        node_id: format_node_id(sh.node),
                        address: holders
                            .get(&sh.node)
                            .map(|h| h.address.clone())
                            .unwrap_or_default(),
                        crc32c: sh.crc32c,
                        size: sh.size,
                        missing: sh.missing,
                        // A server missing from the registry is as good as removed.
                        node_state: holders
                            .get(&sh.node)
                            .map_or(pb::NodeState::Removed, |h| node_state(h.state))
                            as i32,
                        grant: Default::default(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub(crate) fn summary_to_pb(o: &ObjectSummary) -> pb::ObjectSummary {
    pb::ObjectSummary {
        key: o.key.clone(),
        size: o.size,
        etag: o.etag.clone(),
        created_unix: unix(o.created_unix),
        version_id: hex_id(o.version_id),
    }
}

/// A partition page that came back over the wire, as entries in name order.
pub(crate) fn entries_from_pb(
    resp: pb::ListObjectsResponse,
) -> Result<Vec<ListEntry>, ServiceError> {
    let mut entries = Vec::with_capacity(resp.objects.len() + resp.common_prefixes.len());
    for o in resp.objects {
        let version_id = upload_id(&o.version_id)?;
        entries.push(ListEntry::Object(ObjectSummary {
            key: o.key,
            size: o.size,
            etag: o.etag,
            created_unix: u64::try_from(o.created_unix).unwrap_or(0),
            version_id,
        }));
    }
    entries.extend(
        resp.common_prefixes
            .into_iter()
            .map(ListEntry::CommonPrefix),
    );
    entries.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(entries)
}

pub(crate) fn list_response(
    entries: &[ListEntry],
    truncated: bool,
    token: Option<String>,
) -> pb::ListObjectsResponse {
    let mut resp = pb::ListObjectsResponse {
        truncated,
        next_continuation_token: token.unwrap_or_default(),
        ..Default::default()
    };
    for e in entries {
        match e {
            ListEntry::Object(o) => resp.objects.push(summary_to_pb(o)),
            ListEntry::CommonPrefix(p) => resp.common_prefixes.push(p.clone()),
        }
    }
    resp
}

pub(crate) fn node_state(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Up => pb::NodeState::Up,
        NodeState::Suspect => pb::NodeState::Suspect,
        NodeState::Down => pb::NodeState::Down,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Removed => pb::NodeState::Removed,
    }
}

pub(crate) fn chunk_node(r: &NodeRecord, last_heartbeat_unix: i64) -> pb::ChunkNode {
    pb::ChunkNode {
        node_id: format_node_id(r.id),
        address: r.address.clone(),
        zone: r.zone.clone(),
        state: node_state(r.state()) as i32,
        usage: Some(pb::NodeUsage {
            capacity_bytes: r.usage.capacity_bytes,
            used_bytes: r.usage.used_bytes,
            available_bytes: r.usage.available_bytes,
            shard_count: r.usage.shard_count,
            corrupt_shards: r.usage.corrupt_shards,
            io_errors: r.usage.io_errors,
        }),
        registered_unix: unix(r.registered_unix),
        last_heartbeat_unix,
        ..Default::default()
    }
}
