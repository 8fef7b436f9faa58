//! [`Client`]: the SDK's entry point.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_core::codec::{ErasureCodec, codec_for};
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey, partition_of};
use dogfs_core::scheme::ErasureScheme;
use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_security::ClientTls;
use futures::Stream;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, debug, info_span, warn};

use crate::config::ClientConfig;
use crate::convert;
use crate::error::{Error, ErrorKind};
use crate::etag::{EtagKind, EtagReader, etag_of_small};
use crate::get::DataPlaneConfig;
use crate::hedge::Hedger;
use crate::meta::{Meta, Route};
use crate::pool::ChunkPool;
use crate::put::{TargetReplacer, upload_with_quorum};
use crate::types::{
    BucketInfo, GetOptions, ListEntry, ListPage, ListQuery, ObjectInfo, PutOptions,
};

/// A DogFS client. Cheap to clone; clones share connections and caches.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Set by [`Client::with_deadline`]: the metadata calls an operation makes before it has
    /// moved any data end by then.
    deadline: Option<Instant>,
}

struct Inner {
    meta: Meta,
    pool: ChunkPool,
    data: DataPlaneConfig,
    codecs: Mutex<HashMap<ErasureScheme, Arc<dyn ErasureCodec>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.meta.config().endpoints)
            .finish()
    }
}

#[path = "multipart.rs"]
pub(crate) mod multipart;
#[path = "object_parts.rs"]
pub(crate) mod object_parts;

fn names(bucket: &str, key: &str) -> Result<(BucketName, ObjectKey), Error> {
    Ok((BucketName::parse(bucket)?, ObjectKey::parse(key)?))
}

fn object_what(bucket: &str, key: &str) -> String {
    format!("object {bucket:?}/{key:?}")
}

impl Client {
    /// Builds a client and, best effort, reads the cluster map (leaders, limits). Connections
    /// are made lazily, so this succeeds while the cluster is still starting.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, Error> {
        let data = DataPlaneConfig {
            shard_timeout: cfg.shard_timeout,
            read_ahead: cfg.read_ahead,
            window_bytes: cfg.read_window_bytes,
            hedge: Hedger::new(cfg.hedge_min, cfg.hedge_max),
        };
        let tls = match &cfg.tls {
            Some(paths) => Some(Arc::new(
                ClientTls::load(paths.clone()).map_err(|e| Error::invalid(format!("TLS: {e}")))?,
            )),
            None => None,
        };
        let pool = ChunkPool::new(cfg.connect_timeout, tls.clone());
        let meta = Meta::new(cfg, tls)?;
        let client = Client {
            inner: Arc::new(Inner {
                meta,
                pool,
                data,
                codecs: Mutex::default(),
            }),
            deadline: None,
        };
        // Best effort and short: the map only speeds routing up, and a frozen node must not
        // cost more than a fraction of one attempt here (a failure is remembered, so the first operation
        // does not wait for it again).
        let meta = &client.inner.meta;
        let wait = MAP_AT_CONNECT.min(meta.attempt_cap(meta.config().retry_deadline) / 3);
        if let Err(e) = meta.cluster_map(Instant::now() + wait).await {
            debug!(error = %e, "no cluster map yet; routing through the configured endpoints");
        }
        Ok(client)
    }

    /// A handle (sharing everything with this one) whose operations finish every metadata
    /// call they make before moving data by `at`, on top of each call's `retry_deadline`:
    /// a command-line tool's overall timeout. An operation that moves data (a PUT's or GET's
    /// shard streams, a listing's later pages) is not cut while that data moves: shard
    /// streams fail only after `shard_timeout` without progress, and each metadata call
    /// after data moved (a PUT's commit, the next page) has `retry_deadline` of its own.
    pub fn with_deadline(&self, at: Instant) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            deadline: Some(at),
        }
    }

    /// The deadline of a metadata call made before the operation moved any data.
    pub(crate) fn deadline(&self) -> Instant {
        let own = Instant::now() + self.config().retry_deadline;
        self.deadline.map_or(own, |d| d.min(own))
    }

    /// The deadline of a metadata call made after the operation moved data.
    fn fresh_deadline(&self) -> Instant {
        Instant::now() + self.config().retry_deadline
    }

    /// [`ClientConfig::from_env`] then [`Client::connect`].
    pub async fn from_env() -> Result<Client, Error> {
        Client::connect(ClientConfig::from_env()?).await
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.inner.meta
    }

    pub fn config(&self) -> &ClientConfig {
        self.inner.meta.config()
    }

    fn codec(&self, scheme: &ErasureScheme) -> Result<Arc<dyn ErasureCodec>, Error> {
        let mut m = self
            .inner
            .codecs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = m.get(scheme) {
            return Ok(Arc::clone(c));
        }
        let c = codec_for(scheme).map_err(|e| Error::protocol(format!("scheme {scheme}: {e}")))?;
        m.insert(*scheme, Arc::clone(&c));
        Ok(c)
    }

    fn route(&self, bucket: &BucketName, key: &ObjectKey) -> Route {
        match self.inner.meta.partitions() {
            Some(p) if p > 0 => Route::Partition(partition_of(bucket, key, p)),
            // Without a map, any node forwards to the right leader.
            _ => Route::System,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Buckets.

    pub async fn create_bucket(&self, bucket: &str) -> Result<BucketInfo, Error> {
        BucketName::parse(bucket)?;
        let what = format!("bucket {bucket:?}");
        let req = pb::CreateBucketRequest {
            bucket: bucket.to_string(),
        };
        let done = self
            .inner
            .meta
            .call_write(
                "CreateBucket",
                &what,
                Route::System,
                self.deadline(),
                "the bucket may or may not have been created: look it up (HeadBucket) to find out",
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).create_bucket(req).await }
                },
            )
            .instrument(info_span!("create_bucket", bucket))
            .await;
        match done.result {
            Ok(r) => convert::bucket(r.bucket, bucket),
            // Exists now, but perhaps through the unanswered attempt: neither "created" nor
            // "already existed" would be true for sure.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && done.maybe_applied => {
                Err(Error::outcome_unknown(format!(
                    "{what}: CreateBucket was sent but no answer came, and the retry found the \
                     bucket existing ({e}); it may or may not have been created by this call"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Only an empty bucket can be deleted (`Precondition` otherwise).
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), Error> {
        BucketName::parse(bucket)?;
        let what = format!("bucket {bucket:?}");
        let req = pb::DeleteBucketRequest {
            bucket: bucket.to_string(),
        };
        let done = self
            .inner
            .meta
            .call_write(
                "DeleteBucket",
                &what,
                Route::System,
                self.deadline(),
                "the bucket may or may not have been removed: look it up (HeadBucket) to find out",
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).delete_bucket(req).await }
                },
            )
            .instrument(info_span!("delete_bucket", bucket))
            .await;
        match done.result {
            Ok(_) => Ok(()),
            // Gone after an unanswered attempt: that attempt removed it.
            Err(e) if e.kind() == ErrorKind::NotFound && done.maybe_applied => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn head_bucket(&self, bucket: &str) -> Result<BucketInfo, Error> {
        BucketName::parse(bucket)?;
        let what = format!("bucket {bucket:?}");
        let req = pb::HeadBucketRequest {
            bucket: bucket.to_string(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        };
        let r = self
            .inner
            .meta
            .call("HeadBucket", &what, Route::System, self.deadline(), |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).head_bucket(req).await }
            })
            .instrument(info_span!("head_bucket", bucket))
            .await?;
        convert::bucket(r.bucket, bucket)
    }

    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>, Error> {
        let req = pb::ListBucketsRequest {
            consistency: pb::ReadConsistency::Linearizable as i32,
        };
        let r = self
            .inner
            .meta
            .call(
                "ListBuckets",
                "bucket list",
                Route::System,
                self.deadline(),
                |ch| async move { MetaServiceClient::new(ch).list_buckets(req).await },
            )
            .instrument(info_span!("list_buckets"))
            .await?;
        Ok(r.buckets
            .into_iter()
            .map(|b| BucketInfo {
                name: b.name,
                created_unix: b.created_unix,
            })
            .collect())
    }

    // ---------------------------------------------------------------------------------------
    // Objects.

    /// Stores exactly `size` bytes read from `reader` as `bucket/key` (bytes after `size` are
    /// not read; a reader that ends early is an `InvalidInput` error and nothing is stored).
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        size: u64,
        opts: PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let span = info_span!("put", bucket, key, size);
        self.put_inner(bucket, key, reader, size, opts, EtagKind::Crc32c)
            .instrument(span)
            .await
    }

    /// [`Client::put`], but the stored ETag is `hex(MD5(bytes))`, computed while the bytes
    /// stream (what S3 clients expect of a single PUT; the S3 gateway uses it). Such an ETag
    /// carries no CRC32C, so a GET of the object checks every shard against its recorded
    /// checksum but skips the whole-object CRC32C check the default ETag allows.
    pub async fn put_with_md5_etag<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        size: u64,
        opts: PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let span = info_span!("put", bucket, key, size, etag = "md5");
        self.put_inner(bucket, key, reader, size, opts, EtagKind::Md5)
            .instrument(span)
            .await
    }

    async fn put_inner<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        size: u64,
        opts: PutOptions,
        etag_kind: EtagKind,
    ) -> Result<ObjectInfo, Error> {
        let mut reader = EtagReader::new(reader, etag_kind);
        let (b, k) = names(bucket, key)?;
        let what = object_what(bucket, key);
        let meta = &self.inner.meta;
        let deadline = self.deadline();
        // The map only tells whether the object goes inline (BeginPut says so too): it gets a
        // third of the budget, so a frozen node leaves BeginPut the rest.
        let map_deadline = Instant::now() + deadline.saturating_duration_since(Instant::now()) / 3;
        let inline_max = meta
            .cluster_map(map_deadline)
            .await
            .ok()
            .map(|m| m.inline_max);
        let content_type = opts.content_type.clone().unwrap_or_default();
        let user_metadata: HashMap<String, String> =
            opts.user_metadata.clone().into_iter().collect();
        if inline_max.is_some_and(|max| size <= max) {
            let data = read_small(&mut reader, size).await?;
            let req = pb::PutInlineObjectRequest {
                bucket: bucket.to_string(),
                key: key.to_string(),
                etag: etag_of_small(etag_kind, &data),
                data,
                content_type,
                user_metadata,
            };
            // Repeating an inline put stores the same bytes again (a new version id): harmless,
            // as any S3 PUT retry, so it is retried like a commit.
            let r = meta
                .call_write(
                    "PutInlineObject",
                    &what,
                    self.route(&b, &k),
                    deadline,
                    "the object may or may not have been written: read it (HeadObject) to find out",
                    |ch| {
                        let req = req.clone();
                        async move { MetaServiceClient::new(ch).put_inline_object(req).await }
                    },
                )
                .await
                .result?;
            if let Some(p) = &opts.progress {
                p(size);
            }
            return convert::object(r.object, &what);
        }

        let route = self.route(&b, &k);
        let req = pb::BeginPutRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
            scheme: None,
        };
        let begun = meta
            .call("BeginPut", &what, route, deadline, |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).begin_put(req).await }
            })
            .await?;
        let upload_id = begun.upload_id.clone();
        let result = self
            .put_data(
                bucket,
                key,
                &mut reader,
                size,
                &opts,
                begun,
                route,
                deadline,
                content_type,
                user_metadata,
            )
            .await;
        match &result {
            // The commit may have happened: aborting would only race it.
            Err(e) if e.kind() == ErrorKind::OutcomeUnknown => {}
            Err(_) => self.abort_upload(bucket, key, &upload_id, route),
            Ok(_) => {}
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_data<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        reader: &mut EtagReader<R>,
        size: u64,
        opts: &PutOptions,
        begun: pb::BeginPutResponse,
        route: Route,
        deadline: Instant,
        content_type: String,
        user_metadata: HashMap<String, String>,
    ) -> Result<ObjectInfo, Error> {
        let what = object_what(bucket, key);
        let mut req = pb::CommitObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: begun.upload_id.clone(),
            size,
            etag: String::new(),
            content_type,
            user_metadata,
            segments: Vec::new(),
            inline_data: Bytes::new(),
        };
        // No data moves to the cluster for an inline commit: it shares BeginPut's deadline.
        let mut commit_deadline = deadline;
        if begun.segments.is_empty() && size <= begun.inline_max {
            let data = read_small(reader, size).await?;
            req.etag = etag_of_small(reader.kind(), &data);
            req.inline_data = data;
            if let Some(p) = &opts.progress {
                p(size);
            }
        } else {
            let scheme = begun
                .scheme
                .as_ref()
                .ok_or_else(|| Error::protocol(format!("BeginPut for {what} gave no scheme")))
                .and_then(convert::scheme_from_proto)?;
            let layout = ObjectLayout::new(size, begun.segment_size, scheme)
                .map_err(|e| Error::protocol(format!("BeginPut for {what}: {e}")))?;
            let replacer = MetaReplacer {
                client: self,
                bucket,
                key,
                upload_id: &begun.upload_id,
                route,
            };
            let out = upload_with_quorum(
                &self.inner.pool,
                &self.inner.data,
                self.codec(&scheme)?,
                layout,
                &begun.segments,
                reader,
                &replacer,
                opts.progress.as_ref(),
                begun.min_write_shards as usize,
            )
            .await?;
            req.etag = reader.md5_hex().unwrap_or(out.etag);
            req.segments = out.reports;
            commit_deadline = self.fresh_deadline();
        }
        let meta = &self.inner.meta;
        // Committing one upload id is idempotent (docs/catalog.md): a repeat is answered
        // ALREADY_EXISTS "already committed as the current version", so retrying is safe.
        let committed = meta
            .call_write(
                "CommitObject",
                &what,
                route,
                commit_deadline,
                "the object may or may not have been written: read it (HeadObject) to find out",
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).commit_object(req).await }
                },
            )
            .await;
        match committed.result {
            Ok(r) => convert::object(r.object, &what),
            // A retried commit whose first attempt got through: the object is this upload.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                match self.with_deadline(commit_deadline).head(bucket, key).await {
                    Ok(info) if info.version_id == begun.upload_id => Ok(info),
                    Ok(_) => Err(e),
                    // The server said the upload is the current version; only the read-back
                    // failed, so answer from what was committed.
                    Err(_) => convert::object(Some(committed_info(&req, &begun)), &what),
                }
            }
            // The upload is gone: an unanswered attempt may have committed it before it was
            // replaced or deleted, or it expired uncommitted. Nobody can tell which.
            Err(e) if e.kind() == ErrorKind::NotFound && committed.maybe_applied => {
                Err(Error::outcome_unknown(format!(
                    "{what}: CommitObject was sent but no answer came, and the retry found \
                     the upload gone ({e}); the object may or may not have been written: read \
                     the object (HeadObject) to find out"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Best effort, in the background: an upload never committed expires anyway.
    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str, route: Route) {
        let client = self.clone();
        let req = pb::AbortUploadRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
        };
        let what = object_what(bucket, key);
        tokio::spawn(async move {
            let r = client
                .inner
                .meta
                .call("AbortUpload", &what, route, client.fresh_deadline(), |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).abort_upload(req).await }
                })
                .await;
            if let Err(e) = r {
                warn!(error = %e, "aborting the failed upload did not work; it will expire");
            }
        });
    }

    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
    ) -> Result<ObjectInfo, Error> {
        let size = data.len() as u64;
        self.put(bucket, key, &data[..], size, PutOptions::default())
            .await
    }

    /// Writes the object (or `opts.range` of it) to `writer`; returns the object's info.
    pub async fn get<W: AsyncWrite + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        writer: W,
        opts: GetOptions,
    ) -> Result<ObjectInfo, Error> {
        let span = info_span!("get", bucket, key, size = tracing::field::Empty);
        self.get_inner(bucket, key, writer, opts)
            .instrument(span)
            .await
    }

    async fn get_inner<W: AsyncWrite + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        mut writer: W,
        opts: GetOptions,
    ) -> Result<ObjectInfo, Error> {
        let (b, k) = names(bucket, key)?;
        let what = object_what(bucket, key);
        let req = pb::GetObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        };
        let r = self
            .inner
            .meta
            .call(
                "GetObject",
                &what,
                self.route(&b, &k),
                self.deadline(),
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).get_object(req).await }
                },
            )
            .await?;
        let info = convert::object(r.object.clone(), &what)?;
        tracing::Span::current().record("size", info.size);
        let range = checked_range(opts.range.clone(), info.size, &what)?;
        if info.inline {
            if r.inline_data.len() as u64 != info.size {
                return Err(Error::protocol(format!(
                    "{what}: inline data is {} bytes, the object {}",
                    r.inline_data.len(),
                    info.size
                )));
            }
            let part = r
                .inline_data
                .slice(range.start as usize..range.end as usize);
            writer.write_all(&part).await?;
            writer.flush().await?;
            if let Some(p) = &opts.progress {
                p(part.len() as u64);
            }
            return Ok(info);
        }
        let scheme = r
            .object
            .as_ref()
            .and_then(|o| o.scheme.as_ref())
            .ok_or_else(|| Error::protocol(format!("{what}: no erasure scheme")))
            .and_then(convert::scheme_from_proto)?;
        // One layout, or one per part for an object completed from parts (multipart.rs).
        let (result, unusable) = self
            .download_object(
                &what,
                &info,
                scheme,
                r.segments,
                r.parts,
                range,
                &mut writer,
                opts.progress.as_ref(),
            )
            .await;
        // In the background, success or not: repair wants to hear of every unusable shard.
        crate::report::spawn(
            self,
            self.route(&b, &k),
            bucket,
            key,
            &info.version_id,
            unusable,
        );
        result.map_err(|e| match e {
            Error::DataLoss { message } => Error::DataLoss {
                message: format!("{what}: {message}"),
            },
            e => e,
        })?;
        Ok(info)
    }

    pub async fn get_bytes(&self, bucket: &str, key: &str) -> Result<Bytes, Error> {
        let mut out: Vec<u8> = Vec::new();
        self.get(bucket, key, &mut out, GetOptions::default())
            .await?;
        Ok(Bytes::from(out))
    }

    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, Error> {
        let (b, k) = names(bucket, key)?;
        let what = object_what(bucket, key);
        let req = pb::HeadObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        };
        let r = self
            .inner
            .meta
            .call(
                "HeadObject",
                &what,
                self.route(&b, &k),
                self.deadline(),
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).head_object(req).await }
                },
            )
            .instrument(info_span!("head", bucket, key))
            .await?;
        convert::object(r.object, &what)
    }

    /// Deletes the object; `Ok(false)` when there was none (as S3, not an error).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool, Error> {
        let (b, k) = names(bucket, key)?;
        let what = object_what(bucket, key);
        let req = pb::DeleteObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        let done = self
            .inner
            .meta
            .call_write(
                "DeleteObject",
                &what,
                self.route(&b, &k),
                self.deadline(),
                "the object may or may not have been deleted: read it (HeadObject) to find out",
                |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).delete_object(req).await }
                },
            )
            .instrument(info_span!("delete", bucket, key))
            .await;
        let r = done.result?;
        if !r.existed && done.maybe_applied {
            // A retry found nothing to delete after an unanswered attempt, which most likely
            // deleted it. The object is gone either way; saying it did not exist would turn a
            // successful `rm` into "not found".
            debug!(
                bucket,
                key, "delete retried after an unanswered attempt found no object"
            );
            return Ok(true);
        }
        Ok(r.existed)
    }

    /// One page of S3 ListObjectsV2 results.
    pub async fn list_page(&self, bucket: &str, q: &ListQuery) -> Result<ListPage, Error> {
        BucketName::parse(bucket)?;
        let what = format!("bucket {bucket:?}");
        let req = pb::ListObjectsRequest {
            bucket: bucket.to_string(),
            prefix: q.prefix.clone(),
            delimiter: q.delimiter.clone(),
            start_after: q.start_after.clone(),
            continuation_token: q.continuation_token.clone().unwrap_or_default(),
            max_keys: q.max_keys,
            consistency: pb::ReadConsistency::Linearizable as i32,
            ..Default::default()
        };
        let r = self
            .inner
            .meta
            .call("ListObjects", &what, Route::System, self.deadline(), |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).list_objects(req).await }
            })
            .instrument(info_span!("list", bucket, prefix = %q.prefix))
            .await?;
        Ok(convert::list_page(r))
    }

    /// Every entry of the listing, page after page.
    pub fn list(
        &self,
        bucket: &str,
        q: ListQuery,
    ) -> impl Stream<Item = Result<ListEntry, Error>> + Send + use<> {
        struct State {
            client: Client,
            bucket: String,
            q: ListQuery,
            buf: std::vec::IntoIter<ListEntry>,
            done: bool,
        }
        let state = State {
            client: self.clone(),
            bucket: bucket.to_string(),
            q,
            buf: Vec::new().into_iter(),
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(e) = s.buf.next() {
                    return Some((Ok(e), s));
                }
                if s.done {
                    return None;
                }
                match s.client.list_page(&s.bucket, &s.q).await {
                    Ok(page) => {
                        // Output moved: the next pages each get a budget of their own.
                        s.client.deadline = None;
                        match page.next_token {
                            Some(t) if page.truncated => s.q.continuation_token = Some(t),
                            _ => s.done = true,
                        }
                        s.buf = page.entries.into_iter();
                    }
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
    }

    // ---------------------------------------------------------------------------------------
    // Administration.

    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, Error> {
        self.inner
            .meta
            .call(
                "ClusterStatus",
                "cluster status",
                Route::System,
                self.deadline(),
                |ch| async move {
                    AdminServiceClient::new(ch)
                        .cluster_status(pb::ClusterStatusRequest {})
                        .await
                },
            )
            .await
    }

    pub async fn list_nodes(&self) -> Result<Vec<pb::ChunkNode>, Error> {
        let r = self
            .inner
            .meta
            .call(
                "ListNodes",
                "chunk server list",
                Route::System,
                self.deadline(),
                |ch| async move {
                    AdminServiceClient::new(ch)
                        .list_nodes(pb::ListNodesRequest {})
                        .await
                },
            )
            .await?;
        Ok(r.nodes)
    }
}

/// How long `connect` waits for the cluster map at most.
const MAP_AT_CONNECT: Duration = Duration::from_secs(2);

/// The info of a version the service said was committed from `req`, for when reading it back
/// failed (the creation time is then unknown: 0).
fn committed_info(req: &pb::CommitObjectRequest, begun: &pb::BeginPutResponse) -> pb::ObjectInfo {
    let inline = begun.segments.is_empty();
    pb::ObjectInfo {
        bucket: req.bucket.clone(),
        key: req.key.clone(),
        version_id: req.upload_id.clone(),
        size: req.size,
        etag: req.etag.clone(),
        content_type: req.content_type.clone(),
        user_metadata: req.user_metadata.clone(),
        created_unix: 0,
        scheme: begun.scheme.clone(),
        segment_size: begun.segment_size,
        inline,
        parts_count: 0,
    }
}

/// The requested range, checked against the object's size.
fn checked_range(range: Option<Range<u64>>, size: u64, what: &str) -> Result<Range<u64>, Error> {
    let r = range.unwrap_or(0..size);
    if r.start > r.end || r.end > size {
        return Err(Error::invalid(format!(
            "range {}..{} of {what} is outside its {size} bytes",
            r.start, r.end
        )));
    }
    Ok(r)
}

/// Reads exactly `size` bytes (an inline object: small by definition).
async fn read_small<R: AsyncRead + Unpin + Send>(
    reader: &mut R,
    size: u64,
) -> Result<Bytes, Error> {
    let len = usize::try_from(size)
        .map_err(|_| Error::invalid(format!("size {size} does not fit in memory")))?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(Error::invalid(format!(
                "the reader ended after {filled} bytes, before the declared size {size}"
            )));
        }
        filled += n;
    }
    Ok(Bytes::from(buf))
}

/// `ReplaceTarget` through the metadata service.
struct MetaReplacer<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    upload_id: &'a str,
    route: Route,
}

impl TargetReplacer for MetaReplacer<'_> {
    fn replace<'a>(
        &'a self,
        segment: u64,
        shard_index: u32,
        exclude_node_ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Option<pb::ShardLocation>, Error>> {
        Box::pin(async move {
            let req = pb::ReplaceTargetRequest {
                bucket: self.bucket.to_string(),
                key: self.key.to_string(),
                upload_id: self.upload_id.to_string(),
                segment,
                shard_index,
                exclude_node_ids,
            };
            let what = object_what(self.bucket, self.key);
            let r = self
                .client
                .inner
                .meta
                .call(
                    "ReplaceTarget",
                    &what,
                    self.route,
                    self.client.fresh_deadline(),
                    |ch| {
                        let req = req.clone();
                        async move { MetaServiceClient::new(ch).replace_target(req).await }
                    },
                )
                .await;
            match r {
                Ok(r) => Ok(r.target),
                // No server can take the shard: it is committed as missing.
                Err(e) if e.kind() == ErrorKind::ResourceExhausted => Ok(None),
                Err(e) => Err(e),
            }
        })
    }
}
