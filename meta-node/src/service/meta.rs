//! MetaService: buckets and objects (meta.proto), routed per call to the group's leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dogfs_core::ids::ShardId;
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey};
use dogfs_core::placement::{self, NodeId, NodeView};
use dogfs_proto::meta as pb;
use dogfs_proto::meta::meta_service_server::MetaService;
use tonic::{Request, Response, Status};
use tracing::field::Empty;

use super::convert::{self, hex_id};
use super::limits;
use super::{Core, Route, ServiceError, now_unix, observe, peer_request, with_retries};
use crate::catalog::{
    self, BeginPut, CatalogError, CommitObject, ListQuery, ObjectBody, PartitionPage, PutInline,
    ShardReport, ops,
};
use crate::registry::{self, format_node_id};

/// The MetaService of one node.
#[derive(Debug, Clone)]
pub struct MetaSvc {
    core: Arc<Core>,
}

impl MetaSvc {
    pub fn new(core: Arc<Core>) -> MetaSvc {
        MetaSvc { core }
    }
}

fn stale(consistency: i32) -> bool {
    consistency == pb::ReadConsistency::Stale as i32
}

pub(super) fn span(method: &'static str, bucket: &str, key: &str) -> tracing::Span {
    tracing::info_span!("rpc", method, bucket, key, group = Empty)
}

/// Forwards the call to the leader, or falls through to serve it here.
macro_rules! route_or_forward {
    ($core:expr, $group:expr, $req:ident, $method:ident) => {
        match $core.route($group, &$req)? {
            Route::Local => {}
            Route::Forward(ch) => {
                let reply = $core
                    .meta_client(ch)
                    .$method(peer_request($req.into_inner()))
                    .await
                    .map_err(ServiceError::Remote)?;
                return Ok(Response::new(reply.into_inner()));
            }
        }
    };
}

impl Core {
    pub(super) fn partition(&self, bucket: &BucketName, key: &ObjectKey) -> u64 {
        catalog::partition_of(bucket, key, self.partitions())
    }

    /// Placement's view of the registry (local system-group state: placement is advisory, a
    /// slightly stale view is fine) and every node's address.
    pub(super) fn node_views(
        &self,
    ) -> Result<(Vec<NodeView>, HashMap<u128, String>), ServiceError> {
        let nodes = registry::list_nodes(&self.reader(0)?)?;
        let addrs = nodes.iter().map(|n| (n.id, n.address.clone())).collect();
        Ok((nodes.iter().map(|n| n.view()).collect(), addrs))
    }

    /// Every chunk server's address and state, for layouts.
    pub(super) fn holders(&self) -> Result<HashMap<u128, convert::Holder>, ServiceError> {
        let nodes = registry::list_nodes(&self.reader(0)?)?;
        Ok(nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    convert::Holder {
                        address: n.address.clone(),
                        state: n.state(),
                    },
                )
            })
            .collect())
    }

    async fn delete_bucket_local(&self, name: &BucketName) -> Result<(), ServiceError> {
        self.read_barrier(0).await?;
        let (_, inc) = ops::get_bucket(&self.reader(0)?, name)?;
        let mut sealed = Vec::new();
        let result = self.seal_check_delete(name, inc, &mut sealed).await;
        if result.is_err() {
            for p in sealed {
                if let Err(e) = self
                    .propose_anywhere(p, &ops::unseal_bucket(name, inc))
                    .await
                {
                    // The seal stays: uploads of this incarnation are refused until a later
                    // delete of the same bucket succeeds or an operator steps in.
                    tracing::warn!(bucket = %name, partition = p, error = %e, "unsealing failed");
                }
            }
        }
        self.remember_bucket(name.as_str(), None);
        result
    }

    async fn seal_check_delete(
        &self,
        name: &BucketName,
        inc: u64,
        sealed: &mut Vec<u64>,
    ) -> Result<(), ServiceError> {
        for p in 1..=self.partitions() {
            self.propose_anywhere(p, &ops::seal_bucket(name, inc))
                .await?;
            sealed.push(p);
        }
        for p in 1..=self.partitions() {
            self.check_empty(p, name).await?;
        }
        self.propose(0, &ops::delete_bucket_record(name, inc))
            .await?;
        Ok(())
    }

    async fn check_empty(&self, p: u64, name: &BucketName) -> Result<(), ServiceError> {
        if self.is_leader(p) {
            self.read_barrier(p).await?;
            return Ok(ops::check_partition_empty(&self.reader(p)?, p, name)?);
        }
        let page = self
            .meta_client(self.leader_channel(p)?)
            .list_objects(peer_request(pb::ListObjectsRequest {
                bucket: name.to_string(),
                max_keys: Some(1),
                partition: Some(p),
                ..Default::default()
            }))
            .await
            .map_err(ServiceError::Remote)?
            .into_inner();
        match page.objects.first() {
            None => Ok(()),
            Some(o) => Err(CatalogError::BucketNotEmpty {
                bucket: name.to_string(),
                partition: p,
                key: o.key.clone(),
            }
            .into()),
        }
    }

    async fn partition_page(
        &self,
        p: u64,
        bucket: &BucketName,
        req: &pb::ListObjectsRequest,
        query: &ListQuery,
        stale: bool,
    ) -> Result<PartitionPage, ServiceError> {
        if stale || self.is_leader(p) {
            if !stale {
                self.read_barrier(p).await?;
            }
            return Ok(catalog::list_partition(&self.reader(p)?, bucket, query)?);
        }
        let mut r = req.clone();
        r.partition = Some(p);
        let resp = self
            .meta_client(self.leader_channel(p)?)
            .list_objects(peer_request(r))
            .await
            .map_err(ServiceError::Remote)?
            .into_inner();
        let truncated = resp.truncated;
        Ok(PartitionPage {
            entries: convert::entries_from_pb(resp)?,
            truncated,
        })
    }

    pub(super) fn targets(
        &self,
        upload_id: u128,
        layout: &ObjectLayout,
        views: &[NodeView],
    ) -> Result<catalog::Targets, ServiceError> {
        let mut targets = Vec::new();
        let quorum = self.cfg.write_quorum(&layout.scheme());
        for seg in layout.segments() {
            // As many distinct servers as are eligible, down to the write quorum; the rest
            // are written as missing and repaired (DESIGN §4 step 1).
            let nodes = placement::place_available(
                views,
                seg.total_shards(),
                quorum,
                seg.shard_len(),
                placement::segment_seed(upload_id, seg.index()),
                &[],
            )?;
            targets.push(
                nodes
                    .into_iter()
                    .map(|n| (ShardId::random(), n))
                    .collect::<Vec<_>>(),
            );
        }
        Ok(targets)
    }
}

fn query_of(r: &pb::ListObjectsRequest) -> ListQuery {
    ListQuery {
        prefix: r.prefix.clone(),
        delimiter: r.delimiter.clone(),
        start_after: (!r.start_after.is_empty()).then(|| r.start_after.clone()),
        continuation_token: (!r.continuation_token.is_empty())
            .then(|| r.continuation_token.clone()),
        max_keys: r
            .max_keys
            .map_or(catalog::list::MAX_KEYS_LIMIT, |m| m as usize),
    }
}

/// Most shard problems one ReportShards may carry.
const MAX_REPORTED_SHARDS: usize = 1024;

/// A target for the client; `None` (no eligible server) is a shard to report missing.
pub(super) fn location(
    index: usize,
    shard: u128,
    node: Option<u128>,
    addrs: &HashMap<u128, String>,
) -> pb::ShardLocation {
    let Some(node) = node else {
        return pb::ShardLocation {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            shard_id: hex_id(shard),
            missing: true,
            ..Default::default()
        };
    };
    pb::ShardLocation {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        shard_id: hex_id(shard),
        node_id: format_node_id(node),
        address: addrs.get(&node).cloned().unwrap_or_default(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl MetaService for MetaSvc {
    async fn create_bucket(
        &self,
        req: Request<pb::CreateBucketRequest>,
    ) -> Result<Response<pb::CreateBucketResponse>, Status> {
        let c = &self.core;
        let s = span("CreateBucket", &req.get_ref().bucket, "");
        limits::bucket_change(&req, &req.get_ref().bucket)?;
        observe(&c.metrics, "CreateBucket", s, async move {
            let name = convert::bucket(&req.get_ref().bucket)?;
            route_or_forward!(c, 0, req, create_bucket);
            let now = now_unix();
            let inc = c.propose(0, &ops::create_bucket(&name, now)?).await?;
            c.remember_bucket(name.as_str(), Some(inc));
            Ok(Response::new(pb::CreateBucketResponse {
                bucket: Some(pb::Bucket {
                    name: name.to_string(),
                    created_unix: i64::try_from(now).unwrap_or(i64::MAX),
                }),
            }))
        })
        .await
    }

    async fn delete_bucket(
        &self,
        req: Request<pb::DeleteBucketRequest>,
    ) -> Result<Response<pb::DeleteBucketResponse>, Status> {
        let c = &self.core;
        let s = span("DeleteBucket", &req.get_ref().bucket, "");
        limits::bucket_change(&req, &req.get_ref().bucket)?;
        observe(&c.metrics, "DeleteBucket", s, async move {
            let name = convert::bucket(&req.get_ref().bucket)?;
            route_or_forward!(c, 0, req, delete_bucket);
            with_retries(|_| c.delete_bucket_local(&name)).await?;
            Ok(Response::new(pb::DeleteBucketResponse {}))
        })
        .await
    }

    async fn head_bucket(
        &self,
        req: Request<pb::HeadBucketRequest>,
    ) -> Result<Response<pb::HeadBucketResponse>, Status> {
        let c = &self.core;
        let s = span("HeadBucket", &req.get_ref().bucket, "");
        limits::bucket(&req, &req.get_ref().bucket)?;
        observe(&c.metrics, "HeadBucket", s, async move {
            let name = convert::bucket(&req.get_ref().bucket)?;
            if !stale(req.get_ref().consistency) {
                route_or_forward!(c, 0, req, head_bucket);
                c.read_barrier(0).await?;
            }
            let (b, inc) = ops::get_bucket(&c.reader(0)?, &name)?;
            Ok(Response::new(pb::HeadBucketResponse {
                bucket: Some(pb::Bucket {
                    name: b.name,
                    created_unix: i64::try_from(b.created_unix).unwrap_or(i64::MAX),
                }),
                incarnation: inc,
            }))
        })
        .await
    }

    async fn list_buckets(
        &self,
        req: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<pb::ListBucketsResponse>, Status> {
        let c = &self.core;
        let s = span("ListBuckets", "", "");
        observe(&c.metrics, "ListBuckets", s, async move {
            let fresh = !stale(req.get_ref().consistency);
            let route = if fresh {
                c.route(0, &req)?
            } else {
                Route::Local
            };
            let mut buckets: Vec<pb::Bucket> = match route {
                Route::Forward(ch) => {
                    c.meta_client(ch)
                        .list_buckets(peer_request(*req.get_ref()))
                        .await
                        .map_err(ServiceError::Remote)?
                        .into_inner()
                        .buckets
                }
                Route::Local => {
                    if fresh {
                        c.read_barrier(0).await?;
                    }
                    ops::list_buckets(&c.reader(0)?, None, usize::MAX)?
                        .into_iter()
                        .map(|b| pb::Bucket {
                            name: b.name,
                            created_unix: i64::try_from(b.created_unix).unwrap_or(i64::MAX),
                        })
                        .collect()
                }
            };
            // A token limited to some buckets sees only those (the leader a call was
            // forwarded to does not know the token, so the filter is applied here).
            buckets.retain(|b| limits::visible_bucket(&req, &b.name));
            Ok(Response::new(pb::ListBucketsResponse { buckets }))
        })
        .await
    }

    async fn begin_put(
        &self,
        req: Request<pb::BeginPutRequest>,
    ) -> Result<Response<pb::BeginPutResponse>, Status> {
        let c = &self.core;
        let s = span("BeginPut", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "BeginPut", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            route_or_forward!(c, c.partition(&bucket, &key), req, begin_put);
            let r = req.get_ref();
            let scheme = match &r.scheme {
                Some(s) => convert::scheme_from_pb(s)?,
                None => c.scheme,
            };
            let segment_size = c.cfg.segment_size.0;
            let layout =
                ObjectLayout::new(r.size, segment_size, scheme).map_err(CatalogError::from)?;
            let group = c.partition(&bucket, &key);
            let inline_max = c.inline_max();
            let (upload, addrs) = with_retries(|attempt| {
                let (bucket, key) = (bucket.clone(), key.clone());
                async move {
                    let inc = c.incarnation(&bucket, attempt > 0).await?;
                    let upload_id: u128 = rand::random();
                    let (views, addrs) = c.node_views()?;
                    let targets = if r.size <= inline_max {
                        Vec::new()
                    } else {
                        c.targets(upload_id, &layout, &views)?
                    };
                    let req = BeginPut {
                        upload_id,
                        bucket,
                        key,
                        size: r.size,
                        scheme,
                        segment_size,
                        targets,
                        now_unix: now_unix(),
                        ttl_secs: c.cfg.upload_ttl_secs,
                    };
                    c.propose(group, &ops::begin_put(&req, inc, inline_max)?)
                        .await?;
                    Ok((req, addrs))
                }
            })
            .await?;
            let mut resp = pb::BeginPutResponse {
                upload_id: hex_id(upload.upload_id),
                scheme: Some(convert::scheme_to_pb(&scheme)),
                segment_size,
                inline_max,
                min_write_shards: u32::try_from(c.cfg.write_quorum(&scheme)).unwrap_or(u32::MAX),
                expires_unix: i64::try_from(upload.now_unix + upload.ttl_secs).unwrap_or(i64::MAX),
                segments: (0u64..)
                    .zip(&upload.targets)
                    .map(|(index, t)| pb::Segment {
                        index,
                        shards: t
                            .iter()
                            .enumerate()
                            .map(|(i, (shard, node))| {
                                location(i, shard.as_u128(), node.map(NodeId::as_u128), &addrs)
                            })
                            .collect(),
                    })
                    .collect(),
            };
            c.grant_put(resp.expires_unix, &mut resp.segments);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn replace_target(
        &self,
        req: Request<pb::ReplaceTargetRequest>,
    ) -> Result<Response<pb::ReplaceTargetResponse>, Status> {
        let c = &self.core;
        let s = span("ReplaceTarget", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "ReplaceTarget", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let upload_id = convert::upload_id(&r.upload_id)?;
            let exclude = r
                .exclude_node_ids
                .iter()
                .map(|n| registry::parse_node_id(n).map(NodeId::from_u128))
                .collect::<Result<Vec<_>, _>>()?;
            let group = c.partition(&bucket, &key);
            route_or_forward!(c, group, req, replace_target);
            let r = req.get_ref();
            let shard = r.shard_index as usize;
            let (new, addrs) = with_retries(|_| {
                let (bucket, key, exclude) = (bucket.clone(), key.clone(), exclude.clone());
                async move {
                    c.read_barrier(group).await?;
                    let reader = c.reader(group)?;
                    let (upload, _) = ops::get_upload(&reader, upload_id)?
                        .filter(|(u, _)| u.bucket == bucket.as_str() && u.key == key.as_str())
                        .ok_or(CatalogError::NoSuchUpload { upload: upload_id })?;
                    let targets = usize::try_from(r.segment)
                        .ok()
                        .and_then(|i| upload.segments.get(i))
                        .ok_or(CatalogError::NoSuchTarget {
                            upload: upload_id,
                            segment: r.segment,
                            shard,
                            segments: upload.segments.len(),
                        })?;
                    let (_, failed) =
                        *targets
                            .shards
                            .get(shard)
                            .ok_or(CatalogError::NoSuchTarget {
                                upload: upload_id,
                                segment: r.segment,
                                shard,
                                segments: upload.segments.len(),
                            })?;
                    let current: Vec<NodeId> = targets
                        .shards
                        .iter()
                        .map(|(_, n)| NodeId::from_u128(*n))
                        .collect();
                    let layout = ObjectLayout::new(
                        upload.size,
                        upload.segment_size,
                        upload.scheme.scheme()?,
                    )
                    .map_err(CatalogError::from)?;
                    let shard_len = layout
                        .segment(r.segment)
                        .map_err(CatalogError::from)?
                        .shard_len();
                    let (views, addrs) = c.node_views()?;
                    let node = placement::replacement(
                        &views,
                        &current,
                        NodeId::from_u128(failed),
                        shard_len,
                        placement::segment_seed(upload_id, r.segment),
                        &exclude,
                    )?;
                    let new = (ShardId::random(), node);
                    let p = ops::replace_target(
                        &reader,
                        upload_id,
                        &bucket,
                        &key,
                        r.segment,
                        shard,
                        new,
                        now_unix(),
                    )?;
                    c.propose(group, &p).await?;
                    Ok((new, addrs))
                }
            })
            .await?;
            let mut target = location(shard, new.0.as_u128(), Some(new.1.as_u128()), &addrs);
            c.grant_put_one(&mut target);
            Ok(Response::new(pb::ReplaceTargetResponse {
                target: Some(target),
            }))
        })
        .await
    }

    async fn commit_object(
        &self,
        req: Request<pb::CommitObjectRequest>,
    ) -> Result<Response<pb::CommitObjectResponse>, Status> {
        let c = &self.core;
        let s = span("CommitObject", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "CommitObject", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let upload_id = convert::upload_id(&r.upload_id)?;
            let group = c.partition(&bucket, &key);
            route_or_forward!(c, group, req, commit_object);
            let r = req.into_inner();
            let inline_max = c.inline_max();
            let commit = CommitObject {
                upload_id,
                bucket: bucket.clone(),
                key: key.clone(),
                size: r.size,
                etag: r.etag,
                content_type: r.content_type,
                user_metadata: r.user_metadata.into_iter().collect::<BTreeMap<_, _>>(),
                segments: r
                    .segments
                    .iter()
                    .map(|s| {
                        s.shards
                            .iter()
                            .map(|sh| {
                                if sh.missing {
                                    ShardReport::Missing
                                } else {
                                    ShardReport::Stored {
                                        client_crc32c: sh.client_crc32c,
                                        server_crc32c: sh.server_crc32c,
                                        size: sh.size,
                                    }
                                }
                            })
                            .collect()
                    })
                    .collect(),
                inline: (r.size <= inline_max || !r.inline_data.is_empty())
                    .then(|| r.inline_data.to_vec()),
                now_unix: 0,
                min_write_shards: c.cfg.min_write_shards,
            };
            let version = with_retries(|_| {
                let mut commit = commit.clone();
                async move {
                    c.read_barrier(group).await?;
                    let reader = c.reader(group)?;
                    commit.now_unix = now_unix();
                    c.propose(group, &ops::commit_object(&reader, &commit, inline_max)?)
                        .await?;
                    // Applied here (the leader) before client_write returned.
                    Ok(ops::get_object(&reader, &commit.bucket, &commit.key)?)
                }
            })
            .await?;
            Ok(Response::new(pb::CommitObjectResponse {
                object: Some(convert::object_info(&version)),
            }))
        })
        .await
    }

    async fn abort_upload(
        &self,
        req: Request<pb::AbortUploadRequest>,
    ) -> Result<Response<pb::AbortUploadResponse>, Status> {
        let c = &self.core;
        let s = span("AbortUpload", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "AbortUpload", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let upload_id = convert::upload_id(&r.upload_id)?;
            let group = c.partition(&bucket, &key);
            route_or_forward!(c, group, req, abort_upload);
            with_retries(|_| async {
                c.read_barrier(group).await?;
                let p = ops::abort_upload(&c.reader(group)?, upload_id, &bucket, &key, now_unix())?;
                c.propose(group, &p).await
            })
            .await?;
            Ok(Response::new(pb::AbortUploadResponse {}))
        })
        .await
    }

    async fn put_inline_object(
        &self,
        req: Request<pb::PutInlineObjectRequest>,
    ) -> Result<Response<pb::PutInlineObjectResponse>, Status> {
        let c = &self.core;
        let s = span("PutInlineObject", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "PutInlineObject", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let group = c.partition(&bucket, &key);
            route_or_forward!(c, group, req, put_inline_object);
            let r = req.into_inner();
            let inline_max = c.inline_max();
            let mut put = PutInline {
                version_id: 0,
                bucket,
                key,
                data: r.data.to_vec(),
                etag: r.etag,
                content_type: r.content_type,
                user_metadata: r.user_metadata.into_iter().collect(),
                scheme: c.scheme,
                segment_size: c.cfg.segment_size.0,
                now_unix: 0,
            };
            let put = with_retries(|attempt| {
                put.version_id = rand::random();
                put.now_unix = now_unix();
                let put = put.clone();
                async move {
                    let inc = c.incarnation(&put.bucket, attempt > 0).await?;
                    // No read barrier: the conditions (object version unchanged, bucket not
                    // sealed) are checked at apply time; a stale read only costs a rerun.
                    let p = ops::put_inline(&c.reader(group)?, &put, inc, inline_max)?;
                    c.propose(group, &p).await?;
                    Ok(put)
                }
            })
            .await?;
            let size = put.data.len() as u64;
            Ok(Response::new(pb::PutInlineObjectResponse {
                object: Some(pb::ObjectInfo {
                    bucket: put.bucket.to_string(),
                    key: put.key.to_string(),
                    version_id: hex_id(put.version_id),
                    size,
                    etag: put.etag,
                    content_type: put.content_type,
                    user_metadata: put.user_metadata.into_iter().collect(),
                    created_unix: i64::try_from(put.now_unix).unwrap_or(i64::MAX),
                    scheme: Some(convert::scheme_to_pb(&put.scheme)),
                    segment_size: put.segment_size,
                    inline: true,
                    parts_count: 0,
                }),
            }))
        })
        .await
    }

    async fn get_object(
        &self,
        req: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::GetObjectResponse>, Status> {
        let c = &self.core;
        let s = span("GetObject", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "GetObject", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let group = c.partition(&bucket, &key);
            if !stale(r.consistency) {
                route_or_forward!(c, group, req, get_object);
                c.read_barrier(group).await?;
            }
            let v = ops::get_object(&c.reader(group)?, &bucket, &key)?;
            // An inline object names no chunk server: skip the registry scan.
            let addresses = match v.body {
                ObjectBody::Inline(_) => HashMap::new(),
                ObjectBody::Segments(_) | ObjectBody::Parts(_) => c.holders()?,
            };
            let mut resp = convert::get_object_response(v, &addresses);
            c.grant_get(&mut resp.segments);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn head_object(
        &self,
        req: Request<pb::HeadObjectRequest>,
    ) -> Result<Response<pb::HeadObjectResponse>, Status> {
        let c = &self.core;
        let s = span("HeadObject", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "HeadObject", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let group = c.partition(&bucket, &key);
            if !stale(r.consistency) {
                route_or_forward!(c, group, req, head_object);
                c.read_barrier(group).await?;
            }
            let v = ops::head_object(&c.reader(group)?, &bucket, &key)?;
            Ok(Response::new(pb::HeadObjectResponse {
                object: Some(convert::object_info(&v)),
            }))
        })
        .await
    }

    async fn delete_object(
        &self,
        req: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let c = &self.core;
        let s = span("DeleteObject", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "DeleteObject", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let group = c.partition(&bucket, &key);
            route_or_forward!(c, group, req, delete_object);
            let existed = with_retries(|_| async {
                c.read_barrier(group).await?;
                match ops::delete_object(&c.reader(group)?, &bucket, &key, now_unix())? {
                    Some(p) => c.propose(group, &p).await.map(|_| true),
                    None => Ok(false),
                }
            })
            .await?;
            if !existed {
                // S3: deleting a missing key succeeds, but the bucket must exist.
                c.incarnation(&bucket, true).await?;
            }
            Ok(Response::new(pb::DeleteObjectResponse { existed }))
        })
        .await
    }

    async fn list_objects(
        &self,
        req: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let c = &self.core;
        let s = span("ListObjects", &req.get_ref().bucket, &req.get_ref().prefix);
        limits::list(&req, &req.get_ref().bucket, &req.get_ref().prefix)?;
        observe(&c.metrics, "ListObjects", s, async move {
            let r = req.get_ref();
            let bucket = convert::bucket(&r.bucket)?;
            let query = query_of(r);
            let stale = stale(r.consistency);
            if let Some(p) = r.partition {
                // One partition's page, for another metadata node's merge.
                if p == 0 || p > c.partitions() {
                    return Err(ServiceError::Invalid(format!(
                        "partition {p} does not exist (1..={})",
                        c.partitions()
                    )));
                }
                if !stale {
                    route_or_forward!(c, p, req, list_objects);
                    c.read_barrier(p).await?;
                }
                let page = catalog::list_partition(&c.reader(p)?, &bucket, &query)?;
                return Ok(Response::new(convert::list_response(
                    &page.entries,
                    page.truncated,
                    None,
                )));
            }
            if stale {
                ops::get_bucket(&c.reader(0)?, &bucket)?;
            } else {
                c.incarnation(&bucket, true).await?;
            }
            let pages = futures::future::try_join_all(
                (1..=c.partitions()).map(|p| c.partition_page(p, &bucket, r, &query, stale)),
            )
            .await?;
            let page = catalog::merge_pages(&query, pages)?;
            Ok(Response::new(convert::list_response(
                &page.entries,
                page.is_truncated,
                page.next_continuation_token,
            )))
        })
        .await
    }

    async fn create_multipart_upload(
        &self,
        req: Request<pb::CreateMultipartUploadRequest>,
    ) -> Result<Response<pb::CreateMultipartUploadResponse>, Status> {
        let c = &self.core;
        let s = span(
            "CreateMultipartUpload",
            &req.get_ref().bucket,
            &req.get_ref().key,
        );
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "CreateMultipartUpload", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            route_or_forward!(c, c.partition(&bucket, &key), req, create_multipart_upload);
            Ok(Response::new(
                c.create_multipart_upload(req.get_ref(), bucket, key)
                    .await?,
            ))
        })
        .await
    }

    async fn upload_part(
        &self,
        req: Request<pb::UploadPartRequest>,
    ) -> Result<Response<pb::UploadPartResponse>, Status> {
        let c = &self.core;
        let s = span("UploadPart", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "UploadPart", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            route_or_forward!(c, c.partition(&bucket, &key), req, upload_part);
            Ok(Response::new(
                c.upload_part(req.get_ref(), bucket, key).await?,
            ))
        })
        .await
    }

    async fn complete_part(
        &self,
        req: Request<pb::CompletePartRequest>,
    ) -> Result<Response<pb::CompletePartResponse>, Status> {
        let c = &self.core;
        let s = span("CompletePart", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "CompletePart", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            route_or_forward!(c, c.partition(&bucket, &key), req, complete_part);
            Ok(Response::new(
                c.complete_part(req.get_ref(), bucket, key).await?,
            ))
        })
        .await
    }

    async fn list_parts(
        &self,
        req: Request<pb::ListPartsRequest>,
    ) -> Result<Response<pb::ListPartsResponse>, Status> {
        let c = &self.core;
        let s = span("ListParts", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "ListParts", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            route_or_forward!(c, c.partition(&bucket, &key), req, list_parts);
            Ok(Response::new(
                c.list_parts(req.get_ref(), bucket, key).await?,
            ))
        })
        .await
    }

    async fn abort_multipart_upload(
        &self,
        req: Request<pb::AbortMultipartUploadRequest>,
    ) -> Result<Response<pb::AbortMultipartUploadResponse>, Status> {
        let c = &self.core;
        let s = span(
            "AbortMultipartUpload",
            &req.get_ref().bucket,
            &req.get_ref().key,
        );
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "AbortMultipartUpload", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            route_or_forward!(c, c.partition(&bucket, &key), req, abort_multipart_upload);
            Ok(Response::new(
                c.abort_multipart_upload(req.get_ref(), bucket, key).await?,
            ))
        })
        .await
    }

    async fn complete_multipart_upload(
        &self,
        req: Request<pb::CompleteMultipartUploadRequest>,
    ) -> Result<Response<pb::CompleteMultipartUploadResponse>, Status> {
        let c = &self.core;
        let s = span(
            "CompleteMultipartUpload",
            &req.get_ref().bucket,
            &req.get_ref().key,
        );
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "CompleteMultipartUpload", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            route_or_forward!(
                c,
                c.partition(&bucket, &key),
                req,
                complete_multipart_upload
            );
            Ok(Response::new(
                c.complete_multipart_upload(req.get_ref(), bucket, key)
                    .await?,
            ))
        })
        .await
    }

    async fn list_multipart_uploads(
        &self,
        req: Request<pb::ListMultipartUploadsRequest>,
    ) -> Result<Response<pb::ListMultipartUploadsResponse>, Status> {
        let c = &self.core;
        let s = span(
            "ListMultipartUploads",
            &req.get_ref().bucket,
            &req.get_ref().prefix,
        );
        limits::list(&req, &req.get_ref().bucket, &req.get_ref().prefix)?;
        observe(&c.metrics, "ListMultipartUploads", s, async move {
            let r = req.get_ref();
            let bucket = convert::bucket(&r.bucket)?;
            if let Some(p) = r.partition {
                if p == 0 || p > c.partitions() {
                    return Err(ServiceError::Invalid(format!(
                        "partition {p} does not exist (1..={})",
                        c.partitions()
                    )));
                }
                route_or_forward!(c, p, req, list_multipart_uploads);
            }
            Ok(Response::new(
                c.list_multipart_uploads(req.get_ref(), bucket).await?,
            ))
        })
        .await
    }

    async fn get_cluster_map(
        &self,
        _req: Request<pb::GetClusterMapRequest>,
    ) -> Result<Response<pb::GetClusterMapResponse>, Status> {
        let c = &self.core;
        let s = span("GetClusterMap", "", "");
        observe(&c.metrics, "GetClusterMap", s, async move {
            let mut groups = Vec::new();
            for group in c.raft.group_ids() {
                let (leader, addr) = c.leader(group)?;
                let term = c.raft.raft(group)?.metrics().borrow().current_term;
                groups.push(pb::GroupLeader {
                    group_id: group,
                    leader_id: leader,
                    leader_address: addr.unwrap_or_default(),
                    term,
                });
            }
            Ok(Response::new(pb::GetClusterMapResponse {
                nodes: c
                    .peers
                    .iter()
                    .map(|(id, a)| pb::MetaNode {
                        node_id: *id,
                        address: a.clone(),
                    })
                    .collect(),
                groups,
                partitions: c.partitions(),
                default_scheme: Some(convert::scheme_to_pb(&c.scheme)),
                segment_size: c.cfg.segment_size.0,
                inline_max: c.inline_max(),
            }))
        })
        .await
    }

    async fn report_shards(
        &self,
        req: Request<pb::ReportShardsRequest>,
    ) -> Result<Response<pb::ReportShardsResponse>, Status> {
        let c = &self.core;
        let s = span("ReportShards", &req.get_ref().bucket, &req.get_ref().key);
        limits::key(&req, &req.get_ref().bucket, &req.get_ref().key)?;
        observe(&c.metrics, "ReportShards", s, async move {
            let r = req.get_ref();
            let (bucket, key) = (convert::bucket(&r.bucket)?, convert::key(&r.key)?);
            let version_id = convert::upload_id(&r.version_id)?;
            if r.shards.len() > MAX_REPORTED_SHARDS {
                return Err(ServiceError::Invalid(format!(
                    "report: {} shards, at most {MAX_REPORTED_SHARDS} per call",
                    r.shards.len()
                )));
            }
            let group = c.partition(&bucket, &key);
            route_or_forward!(c, group, req, report_shards);
            let queued = crate::repair::on_client_report(
                c,
                group,
                &bucket,
                &key,
                version_id,
                &req.get_ref().shards,
            )
            .await?;
            Ok(Response::new(pb::ReportShardsResponse { queued }))
        })
        .await
    }
}
