//! [`Client`]: the SDK's entry point.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use dogfs_core::codec::{ErasureCodec, codec_for};
use dogfs_core::layout::ObjectLayout;
use dogfs_core::names::{BucketName, ObjectKey, partition_of};
use dogfs_core::scheme::ErasureScheme;
use dogfs_proto::meta as pb;
use dogfs_proto::meta::admin_service_client::AdminServiceClient;
use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use futures::Stream;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, debug, info_span, warn};

use crate::config::ClientConfig;
use crate::convert;
use crate::error::{Error, ErrorKind};
use crate::get::{DataPlaneConfig, download};
use crate::meta::{Meta, Route};
use crate::pool::ChunkPool;
use crate::put::{TargetReplacer, etag, etag_crc, upload};
use crate::types::{
    BucketInfo, GetOptions, ListEntry, ListPage, ListQuery, ObjectInfo, PutOptions,
};

/// A DogFS client. Cheap to clone; clones share connections and caches.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
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
        };
        let pool = ChunkPool::new(cfg.connect_timeout);
        let meta = Meta::new(cfg)?;
        let client = Client {
            inner: Arc::new(Inner {
                meta,
                pool,
                data,
                codecs: Mutex::default(),
            }),
        };
        if let Err(e) =
            tokio::time::timeout(Duration::from_secs(2), client.inner.meta.cluster_map())
                .await
                .unwrap_or_else(|_| Err(Error::unavailable("cluster map: no answer yet")))
        {
            debug!(error = %e, "no cluster map yet; routing through the configured endpoints");
        }
        Ok(client)
    }

    /// [`ClientConfig::from_env`] then [`Client::connect`].
    pub async fn from_env() -> Result<Client, Error> {
        Client::connect(ClientConfig::from_env()?).await
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
        let r = self
            .inner
            .meta
            .call("CreateBucket", &what, Route::System, |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).create_bucket(req).await }
            })
            .instrument(info_span!("create_bucket", bucket))
            .await?;
        convert::bucket(r.bucket, bucket)
    }

    /// Only an empty bucket can be deleted (`Precondition` otherwise).
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), Error> {
        BucketName::parse(bucket)?;
        let what = format!("bucket {bucket:?}");
        let req = pb::DeleteBucketRequest {
            bucket: bucket.to_string(),
        };
        self.inner
            .meta
            .call("DeleteBucket", &what, Route::System, |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).delete_bucket(req).await }
            })
            .instrument(info_span!("delete_bucket", bucket))
            .await?;
        Ok(())
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
            .call("HeadBucket", &what, Route::System, |ch| {
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
        self.put_inner(bucket, key, reader, size, opts)
            .instrument(span)
            .await
    }

    async fn put_inner<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        mut reader: R,
        size: u64,
        opts: PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let (b, k) = names(bucket, key)?;
        let what = object_what(bucket, key);
        let meta = &self.inner.meta;
        let inline_max = meta.cluster_map().await.ok().map(|m| m.inline_max);
        let content_type = opts.content_type.clone().unwrap_or_default();
        let user_metadata: HashMap<String, String> =
            opts.user_metadata.clone().into_iter().collect();
        if inline_max.is_some_and(|max| size <= max) {
            let data = read_small(&mut reader, size).await?;
            let req = pb::PutInlineObjectRequest {
                bucket: bucket.to_string(),
                key: key.to_string(),
                etag: etag(crc32c::crc32c(&data), 1),
                data,
                content_type,
                user_metadata,
            };
            let r = meta
                .call("PutInlineObject", &what, self.route(&b, &k), |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).put_inline_object(req).await }
                })
                .await?;
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
            .call("BeginPut", &what, route, |ch| {
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
                content_type,
                user_metadata,
            )
            .await;
        if result.is_err() {
            self.abort_upload(bucket, key, &upload_id, route);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_data<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        reader: &mut R,
        size: u64,
        opts: &PutOptions,
        begun: pb::BeginPutResponse,
        route: Route,
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
        if begun.segments.is_empty() && size <= begun.inline_max {
            let data = read_small(reader, size).await?;
            req.etag = etag(crc32c::crc32c(&data), 1);
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
            let out = upload(
                &self.inner.pool,
                &self.inner.data,
                self.codec(&scheme)?,
                layout,
                &begun.segments,
                reader,
                &replacer,
                opts.progress.as_ref(),
            )
            .await?;
            req.etag = out.etag;
            req.segments = out.reports;
        }
        let meta = &self.inner.meta;
        let committed = meta
            .call("CommitObject", &what, route, |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).commit_object(req).await }
            })
            .await;
        match committed {
            Ok(r) => convert::object(r.object, &what),
            // A retried commit whose first attempt got through: the object is this upload.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let info = self.head(bucket, key).await?;
                if info.version_id == begun.upload_id {
                    Ok(info)
                } else {
                    Err(e)
                }
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
                .call("AbortUpload", &what, route, |ch| {
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
            .call("GetObject", &what, self.route(&b, &k), |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).get_object(req).await }
            })
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
        let layout = ObjectLayout::new(info.size, info.segment_size, scheme)
            .map_err(|e| Error::protocol(format!("{what}: {e}")))?;
        download(
            &self.inner.pool,
            &self.inner.data,
            self.codec(&scheme)?,
            layout,
            Arc::new(r.segments),
            range,
            &mut writer,
            opts.progress.as_ref(),
            etag_crc(&info.etag),
        )
        .await
        .map_err(|e| match e {
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
            .call("HeadObject", &what, self.route(&b, &k), |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).head_object(req).await }
            })
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
        let r = self
            .inner
            .meta
            .call("DeleteObject", &what, self.route(&b, &k), |ch| {
                let req = req.clone();
                async move { MetaServiceClient::new(ch).delete_object(req).await }
            })
            .instrument(info_span!("delete", bucket, key))
            .await?;
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
            .call("ListObjects", &what, Route::System, |ch| {
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
                .call("ReplaceTarget", &what, self.route, |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).replace_target(req).await }
                })
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
