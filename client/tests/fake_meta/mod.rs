//! An in-memory metadata service that follows meta.proto's contract closely enough to drive
//! the SDK end to end (placement over real chunk servers, uploads, commit, inline objects,
//! S3 listing), plus fault injection: answering UNAVAILABLE, with or without a leader hint.
//! It is a test double for the client, not a model of Raft.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dogfs_core::ids::ShardId;
use dogfs_proto::meta::admin_service_server::{AdminService, AdminServiceServer};
use dogfs_proto::meta::meta_service_server::{MetaService, MetaServiceServer};
use dogfs_proto::meta::*;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

pub const INLINE_MAX: u64 = 4096;

#[derive(Debug, Clone)]
struct Stored {
    info: ObjectInfo,
    inline: bytes::Bytes,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
struct Upload {
    bucket: String,
    key: String,
    size: u64,
    segments: Vec<Segment>,
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<String, i64>,
    objects: BTreeMap<(String, String), Stored>,
    uploads: HashMap<String, Upload>,
}

/// Fault injection shared by a fake node and the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer this many upcoming calls with UNAVAILABLE.
    pub fail_next: AtomicU32,
    /// When set, every call is refused with UNAVAILABLE and this `x-dogfs-leader` (a follower
    /// that cannot forward).
    pub redirect_to: Mutex<Option<String>>,
    pub calls: AtomicUsize,
    pub replace_calls: AtomicUsize,
    /// The next this many changes (CommitObject, PutInlineObject, DeleteObject) are never
    /// answered: the request is lost, or with `apply_before_hang` only its answer is.
    pub hang_writes: AtomicU32,
    pub apply_before_hang: AtomicBool,
    /// When set, the cluster map names this address as every group's leader (a frozen
    /// leader the client must get around).
    pub map_leader: Mutex<Option<String>>,
    /// Answer ReportShards with UNIMPLEMENTED (a metadata service without it).
    pub reports_unimplemented: AtomicBool,
}

#[derive(Clone)]
pub struct FakeMeta {
    state: Arc<Mutex<State>>,
    /// (node id, address) of the chunk servers placement uses, in order.
    pub servers: Arc<Mutex<Vec<(String, String)>>>,
    pub faults: Arc<Faults>,
    pub scheme: ErasureScheme,
    pub segment_size: u64,
    pub address: Arc<Mutex<String>>,
    /// Every ReportShards request received, in order.
    pub reports: Arc<tokio::sync::watch::Sender<Vec<ReportShardsRequest>>>,
}

impl FakeMeta {
    pub fn new(servers: Vec<(String, String)>, scheme: ErasureScheme, segment_size: u64) -> Self {
        FakeMeta {
            state: Arc::default(),
            servers: Arc::new(Mutex::new(servers)),
            faults: Arc::default(),
            scheme,
            segment_size,
            address: Arc::default(),
            reports: Arc::new(tokio::sync::watch::channel(Vec::new()).0),
        }
    }

    /// Another node of the same "cluster" (shared state), with its own faults.
    pub fn peer(&self) -> Self {
        FakeMeta {
            faults: Arc::default(),
            address: Arc::default(),
            ..self.clone()
        }
    }

    pub async fn serve(self) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        *self.address.lock().unwrap() = addr.to_string();
        let admin = self.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(MetaServiceServer::new(self))
                .add_service(AdminServiceServer::new(admin))
                .serve_with_incoming(TcpListenerStream::new(l))
                .await
                .unwrap();
        });
        addr
    }

    fn gate(&self) -> Result<(), Status> {
        self.faults.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(leader) = self.faults.redirect_to.lock().unwrap().clone() {
            let mut st = Status::unavailable("not the leader");
            st.metadata_mut()
                .insert("x-dogfs-leader", leader.parse().unwrap());
            return Err(st);
        }
        let n = self.faults.fail_next.load(Ordering::SeqCst);
        if n > 0 {
            self.faults.fail_next.store(n - 1, Ordering::SeqCst);
            return Err(Status::unavailable("election in progress"));
        }
        Ok(())
    }

    /// Whether this change is to go unanswered: `Some(true)` after applying it, `Some(false)`
    /// without.
    fn hang_decision(&self) -> Option<bool> {
        let taken = self
            .faults
            .hang_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        taken
            .is_ok()
            .then(|| self.faults.apply_before_hang.load(Ordering::SeqCst))
    }

    fn place(&self, segments: u64) -> Vec<Segment> {
        let servers = self.servers.lock().unwrap();
        let n = (self.scheme.k + self.scheme.m) as usize;
        (0..segments)
            .map(|s| Segment {
                index: s,
                shards: (0..n)
                    .map(|i| {
                        let (id, addr) = &servers[(s as usize + i) % servers.len()];
                        ShardLocation {
                            index: i as u32,
                            shard_id: ShardId::random().to_string(),
                            node_id: id.clone(),
                            address: addr.clone(),
                            ..Default::default()
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Changes the layout metadata records for an object (what later GETs see).
    pub fn edit_segments(&self, bucket: &str, key: &str, f: impl FnOnce(&mut Vec<Segment>)) {
        let mut st = self.state.lock().unwrap();
        let o = st
            .objects
            .get_mut(&(bucket.to_string(), key.to_string()))
            .unwrap();
        f(&mut o.segments);
    }

    pub fn object_version(&self, bucket: &str, key: &str) -> String {
        let st = self.state.lock().unwrap();
        st.objects[&(bucket.to_string(), key.to_string())]
            .info
            .version_id
            .clone()
    }

    /// Waits (up to `within`) until at least `n` ReportShards requests have arrived; returns
    /// them all.
    pub async fn wait_reports(
        &self,
        n: usize,
        within: std::time::Duration,
    ) -> Vec<ReportShardsRequest> {
        let mut rx = self.reports.subscribe();
        tokio::time::timeout(within, rx.wait_for(|r| r.len() >= n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} ReportShards calls within {within:?}"))
            .unwrap()
            .clone()
    }

    /// CommitObject's effect (no lock is held across an await in the handler).
    fn commit_now(&self, r: CommitObjectRequest) -> Result<ObjectInfo, Status> {
        let mut st = self.state.lock().unwrap();
        let Some(up) = st.uploads.remove(&r.upload_id) else {
            // As the real service: a repeated commit of the current version says so.
            let current = st.objects.get(&(r.bucket.clone(), r.key.clone()));
            if current.is_some_and(|o| o.info.version_id == r.upload_id) {
                return Err(Status::already_exists(format!(
                    "upload {} was already committed as the current version",
                    r.upload_id
                )));
            }
            return Err(Status::not_found("no such upload"));
        };
        if up.size != r.size || up.bucket != r.bucket || up.key != r.key {
            return Err(Status::invalid_argument("commit does not match the upload"));
        }
        let inline = up.segments.is_empty();
        if inline && r.inline_data.len() as u64 != r.size {
            return Err(Status::invalid_argument("inline data of the wrong size"));
        }
        if r.segments.len() != up.segments.len() {
            return Err(Status::invalid_argument("wrong number of segment reports"));
        }
        let mut segments = up.segments.clone();
        for (seg, rep) in segments.iter_mut().zip(&r.segments) {
            for (loc, s) in seg.shards.iter_mut().zip(&rep.shards) {
                if !s.missing && s.client_crc32c != s.server_crc32c {
                    return Err(Status::invalid_argument("checksums disagree"));
                }
                loc.missing = s.missing;
                loc.crc32c = s.server_crc32c;
                loc.size = s.size;
            }
        }
        let info = ObjectInfo {
            bucket: r.bucket.clone(),
            key: r.key.clone(),
            version_id: r.upload_id.clone(),
            size: r.size,
            etag: r.etag,
            content_type: r.content_type,
            user_metadata: r.user_metadata,
            created_unix: now(),
            scheme: Some(self.scheme.clone()),
            segment_size: self.segment_size,
            inline,
            parts_count: 0,
        };
        st.objects.insert(
            (r.bucket, r.key),
            Stored {
                info: info.clone(),
                inline: r.inline_data,
                segments,
            },
        );
        Ok(info)
    }

    /// PutInlineObject's effect.
    fn put_inline_now(&self, r: PutInlineObjectRequest) -> Result<ObjectInfo, Status> {
        if r.data.len() as u64 > INLINE_MAX {
            return Err(Status::invalid_argument("too large for inline"));
        }
        let mut st = self.state.lock().unwrap();
        if !st.buckets.contains_key(&r.bucket) {
            return Err(Status::not_found(format!("no bucket {}", r.bucket)));
        }
        let info = ObjectInfo {
            bucket: r.bucket.clone(),
            key: r.key.clone(),
            version_id: format!("{:032x}", ShardId::random().as_u128()),
            size: r.data.len() as u64,
            etag: r.etag,
            content_type: r.content_type,
            user_metadata: r.user_metadata,
            created_unix: now(),
            scheme: Some(self.scheme.clone()),
            segment_size: self.segment_size,
            inline: true,
            parts_count: 0,
        };
        st.objects.insert(
            (r.bucket, r.key),
            Stored {
                info: info.clone(),
                inline: r.data,
                segments: Vec::new(),
            },
        );
        Ok(info)
    }

    pub fn object_segments(&self, bucket: &str, key: &str) -> Vec<Segment> {
        let st = self.state.lock().unwrap();
        st.objects[&(bucket.to_string(), key.to_string())]
            .segments
            .clone()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tonic::async_trait]
impl MetaService for FakeMeta {
    // Multipart is tested against real servers (tests/multipart.rs).
    async fn create_multipart_upload(
        &self,
        _: Request<CreateMultipartUploadRequest>,
    ) -> Result<Response<CreateMultipartUploadResponse>, Status> {
        Err(Status::unimplemented("the fake has no multipart uploads"))
    }

    async fn upload_part(
        &self,
        _: Request<UploadPartRequest>,
    ) -> Result<Response<UploadPartResponse>, Status> {
        Err(Status::unimplemented("the fake has no multipart uploads"))
    }

    async fn complete_part(
        &self,
        _: Request<CompletePartRequest>,
    ) -> Result<Response<CompletePartResponse>, Status> {
        Err(Status::unimplemented("the fake has no multipart uploads"))
    }

    async fn list_parts(
        &self,
        _: Request<ListPartsRequest>,
    ) -> Result<Response<ListPartsResponse>, Status> {
        Err(Status::unimplemented("the fake has no multipart uploads"))
    }

    async fn abort_multipart_upload(
        &self,
        _: Request<AbortMultipartUploadRequest>,
    ) -> Result<Response<AbortMultipartUploadResponse>, Status> {
        Err(Status::unimplemented("the fake has no multipart uploads"))
    }

    async fn complete_multipart_upload(
        &self,
        _: Request<CompleteMultipartUploadRequest>,
    ) -> Result<Response<CompleteMultipartUploadResponse>, Status> {
        Err(Status::unimplemented("the fake has no multipart uploads"))
    }

    async fn list_multipart_uploads(
        &self,
        _: Request<ListMultipartUploadsRequest>,
    ) -> Result<Response<ListMultipartUploadsResponse>, Status> {
        Err(Status::unimplemented("the fake has no multipart uploads"))
    }
    async fn create_bucket(
        &self,
        r: Request<CreateBucketRequest>,
    ) -> Result<Response<CreateBucketResponse>, Status> {
        self.gate()?;
        let name = r.into_inner().bucket;
        let mut st = self.state.lock().unwrap();
        if st.buckets.contains_key(&name) {
            return Err(Status::already_exists(format!("bucket {name} exists")));
        }
        let t = now();
        st.buckets.insert(name.clone(), t);
        Ok(Response::new(CreateBucketResponse {
            bucket: Some(Bucket {
                name,
                created_unix: t,
            }),
        }))
    }

    async fn delete_bucket(
        &self,
        r: Request<DeleteBucketRequest>,
    ) -> Result<Response<DeleteBucketResponse>, Status> {
        self.gate()?;
        let name = r.into_inner().bucket;
        let mut st = self.state.lock().unwrap();
        if !st.buckets.contains_key(&name) {
            return Err(Status::not_found(format!("no bucket {name}")));
        }
        if let Some(((_, k), _)) = st.objects.iter().find(|((b, _), _)| *b == name) {
            return Err(Status::failed_precondition(format!(
                "bucket {name} is not empty: it holds {k}"
            )));
        }
        st.buckets.remove(&name);
        Ok(Response::new(DeleteBucketResponse {}))
    }

    async fn head_bucket(
        &self,
        r: Request<HeadBucketRequest>,
    ) -> Result<Response<HeadBucketResponse>, Status> {
        self.gate()?;
        let name = r.into_inner().bucket;
        let st = self.state.lock().unwrap();
        let t = st
            .buckets
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("no bucket {name}")))?;
        Ok(Response::new(HeadBucketResponse {
            bucket: Some(Bucket {
                name,
                created_unix: *t,
            }),
            ..Default::default()
        }))
    }

    async fn list_buckets(
        &self,
        _r: Request<ListBucketsRequest>,
    ) -> Result<Response<ListBucketsResponse>, Status> {
        self.gate()?;
        let st = self.state.lock().unwrap();
        Ok(Response::new(ListBucketsResponse {
            buckets: st
                .buckets
                .iter()
                .map(|(n, t)| Bucket {
                    name: n.clone(),
                    created_unix: *t,
                })
                .collect(),
        }))
    }

    async fn begin_put(
        &self,
        r: Request<BeginPutRequest>,
    ) -> Result<Response<BeginPutResponse>, Status> {
        self.gate()?;
        let r = r.into_inner();
        if !self.state.lock().unwrap().buckets.contains_key(&r.bucket) {
            return Err(Status::not_found(format!("no bucket {}", r.bucket)));
        }
        let segments = if r.size <= INLINE_MAX {
            Vec::new()
        } else {
            self.place(r.size.div_ceil(self.segment_size))
        };
        let id = format!("{:032x}", ShardId::random().as_u128());
        self.state.lock().unwrap().uploads.insert(
            id.clone(),
            Upload {
                bucket: r.bucket,
                key: r.key,
                size: r.size,
                segments: segments.clone(),
            },
        );
        Ok(Response::new(BeginPutResponse {
            upload_id: id,
            scheme: Some(self.scheme.clone()),
            segment_size: self.segment_size,
            inline_max: INLINE_MAX,
            expires_unix: now() + 3600,
            segments,
            min_write_shards: 0,
        }))
    }

    async fn replace_target(
        &self,
        r: Request<ReplaceTargetRequest>,
    ) -> Result<Response<ReplaceTargetResponse>, Status> {
        self.gate()?;
        self.faults.replace_calls.fetch_add(1, Ordering::SeqCst);
        let r = r.into_inner();
        let mut st = self.state.lock().unwrap();
        let up = st
            .uploads
            .get_mut(&r.upload_id)
            .ok_or_else(|| Status::not_found("no such upload"))?;
        let seg = &mut up.segments[r.segment as usize];
        let used: Vec<String> = seg.shards.iter().map(|s| s.node_id.clone()).collect();
        let servers = self.servers.lock().unwrap();
        let Some((id, addr)) = servers
            .iter()
            .find(|(id, _)| !used.contains(id) && !r.exclude_node_ids.contains(id))
        else {
            return Err(Status::resource_exhausted("no server left for the shard"));
        };
        let loc = ShardLocation {
            index: r.shard_index,
            shard_id: ShardId::random().to_string(),
            node_id: id.clone(),
            address: addr.clone(),
            ..Default::default()
        };
        seg.shards[r.shard_index as usize] = loc.clone();
        Ok(Response::new(ReplaceTargetResponse { target: Some(loc) }))
    }

    async fn commit_object(
        &self,
        r: Request<CommitObjectRequest>,
    ) -> Result<Response<CommitObjectResponse>, Status> {
        self.gate()?;
        let hang = self.hang_decision();
        if hang == Some(false) {
            std::future::pending::<()>().await;
        }
        let info = self.commit_now(r.into_inner())?;
        if hang == Some(true) {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(CommitObjectResponse { object: Some(info) }))
    }

    async fn abort_upload(
        &self,
        r: Request<AbortUploadRequest>,
    ) -> Result<Response<AbortUploadResponse>, Status> {
        self.gate()?;
        self.state
            .lock()
            .unwrap()
            .uploads
            .remove(&r.into_inner().upload_id);
        Ok(Response::new(AbortUploadResponse {}))
    }

    async fn put_inline_object(
        &self,
        r: Request<PutInlineObjectRequest>,
    ) -> Result<Response<PutInlineObjectResponse>, Status> {
        self.gate()?;
        let hang = self.hang_decision();
        if hang == Some(false) {
            std::future::pending::<()>().await;
        }
        let info = self.put_inline_now(r.into_inner())?;
        if hang == Some(true) {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(PutInlineObjectResponse {
            object: Some(info),
        }))
    }

    async fn get_object(
        &self,
        r: Request<GetObjectRequest>,
    ) -> Result<Response<GetObjectResponse>, Status> {
        self.gate()?;
        let r = r.into_inner();
        let st = self.state.lock().unwrap();
        let o = st
            .objects
            .get(&(r.bucket.clone(), r.key.clone()))
            .ok_or_else(|| Status::not_found(format!("no object {}/{}", r.bucket, r.key)))?;
        Ok(Response::new(GetObjectResponse {
            object: Some(o.info.clone()),
            inline_data: o.inline.clone(),
            segments: o.segments.clone(),
            parts: Vec::new(),
        }))
    }

    async fn head_object(
        &self,
        r: Request<HeadObjectRequest>,
    ) -> Result<Response<HeadObjectResponse>, Status> {
        self.gate()?;
        let r = r.into_inner();
        let st = self.state.lock().unwrap();
        let o = st
            .objects
            .get(&(r.bucket.clone(), r.key.clone()))
            .ok_or_else(|| Status::not_found(format!("no object {}/{}", r.bucket, r.key)))?;
        Ok(Response::new(HeadObjectResponse {
            object: Some(o.info.clone()),
        }))
    }

    async fn delete_object(
        &self,
        r: Request<DeleteObjectRequest>,
    ) -> Result<Response<DeleteObjectResponse>, Status> {
        self.gate()?;
        let hang = self.hang_decision();
        if hang == Some(false) {
            std::future::pending::<()>().await;
        }
        let r = r.into_inner();
        let existed = self
            .state
            .lock()
            .unwrap()
            .objects
            .remove(&(r.bucket, r.key))
            .is_some();
        if hang == Some(true) {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(DeleteObjectResponse { existed }))
    }

    async fn list_objects(
        &self,
        r: Request<ListObjectsRequest>,
    ) -> Result<Response<ListObjectsResponse>, Status> {
        self.gate()?;
        let r = r.into_inner();
        let st = self.state.lock().unwrap();
        let after = if r.continuation_token.is_empty() {
            r.start_after.clone()
        } else {
            r.continuation_token.clone()
        };
        let max = r.max_keys.unwrap_or(1000).min(1000) as usize;
        let mut out = ListObjectsResponse::default();
        let mut count = 0;
        let mut last = String::new();
        for ((b, k), o) in &st.objects {
            if *b != r.bucket || !k.starts_with(&r.prefix) || *k <= after {
                continue;
            }
            let rest = &k[r.prefix.len()..];
            let entry = match (!r.delimiter.is_empty())
                .then(|| rest.find(&r.delimiter))
                .flatten()
            {
                Some(i) => {
                    let p = format!("{}{}", r.prefix, &rest[..i + r.delimiter.len()]);
                    if p <= after || out.common_prefixes.last() == Some(&p) {
                        continue;
                    }
                    Err(p)
                }
                None => Ok(o),
            };
            if count == max {
                out.truncated = true;
                out.next_continuation_token = last.clone();
                break;
            }
            count += 1;
            match entry {
                Ok(o) => {
                    last = k.clone();
                    out.objects.push(ObjectSummary {
                        key: k.clone(),
                        size: o.info.size,
                        etag: o.info.etag.clone(),
                        created_unix: o.info.created_unix,
                        version_id: o.info.version_id.clone(),
                    });
                }
                Err(p) => {
                    // Everything under the prefix sorts before prefix + 0xFF.
                    last = format!("{p}\u{10FFFF}");
                    out.common_prefixes.push(p);
                }
            }
        }
        Ok(Response::new(out))
    }

    async fn get_cluster_map(
        &self,
        _r: Request<GetClusterMapRequest>,
    ) -> Result<Response<GetClusterMapResponse>, Status> {
        self.gate()?;
        let addr = self.address.lock().unwrap().clone();
        let leader = self
            .faults
            .map_leader
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| addr.clone());
        Ok(Response::new(GetClusterMapResponse {
            nodes: vec![MetaNode {
                node_id: 1,
                address: addr.clone(),
            }],
            groups: (0..=8)
                .map(|g| GroupLeader {
                    group_id: g,
                    leader_id: Some(1),
                    leader_address: leader.clone(),
                    term: 1,
                })
                .collect(),
            partitions: 8,
            default_scheme: Some(self.scheme.clone()),
            segment_size: self.segment_size,
            inline_max: INLINE_MAX,
        }))
    }

    async fn report_shards(
        &self,
        req: Request<ReportShardsRequest>,
    ) -> Result<Response<ReportShardsResponse>, Status> {
        self.gate()?;
        let req = req.into_inner();
        let queued = req.shards.len() as u32;
        self.reports.send_modify(|r| r.push(req));
        if self.faults.reports_unimplemented.load(Ordering::SeqCst) {
            return Err(Status::unimplemented("ReportShards"));
        }
        Ok(Response::new(ReportShardsResponse { queued }))
    }
}

#[tonic::async_trait]
impl AdminService for FakeMeta {
    async fn cluster_status(
        &self,
        _r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.gate()?;
        Ok(Response::new(ClusterStatusResponse {
            node_id: 1,
            partitions: 8,
            default_scheme: Some(self.scheme.clone()),
            ..Default::default()
        }))
    }

    async fn list_nodes(
        &self,
        _r: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.gate()?;
        let servers = self.servers.lock().unwrap();
        Ok(Response::new(ListNodesResponse {
            nodes: servers
                .iter()
                .map(|(id, addr)| ChunkNode {
                    node_id: id.clone(),
                    address: addr.clone(),
                    state: NodeState::Up as i32,
                    ..Default::default()
                })
                .collect(),
        }))
    }

    async fn node_status(
        &self,
        _r: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn drain_node(
        &self,
        _r: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn undrain_node(
        &self,
        _r: Request<UndrainNodeRequest>,
    ) -> Result<Response<UndrainNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn remove_node(
        &self,
        _r: Request<dogfs_proto::meta::RemoveNodeRequest>,
    ) -> Result<Response<dogfs_proto::meta::RemoveNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rebalance(
        &self,
        _r: Request<dogfs_proto::meta::RebalanceRequest>,
    ) -> Result<Response<dogfs_proto::meta::RebalanceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rebalance_status(
        &self,
        _r: Request<dogfs_proto::meta::RebalanceStatusRequest>,
    ) -> Result<Response<dogfs_proto::meta::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_token(
        &self,
        _r: Request<dogfs_proto::meta::CreateTokenRequest>,
    ) -> Result<Response<dogfs_proto::meta::CreateTokenResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_tokens(
        &self,
        _r: Request<dogfs_proto::meta::ListTokensRequest>,
    ) -> Result<Response<dogfs_proto::meta::ListTokensResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn revoke_token(
        &self,
        _r: Request<dogfs_proto::meta::RevokeTokenRequest>,
    ) -> Result<Response<dogfs_proto::meta::RevokeTokenResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}
