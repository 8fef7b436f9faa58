//! [`DogS3`]: the `s3s::S3` implementation. Each operation lives in its module (buckets,
//! objects, list, multipart); this file only routes, so the trait impl stays one block.

use std::collections::HashMap;
use std::sync::Arc;

use dogfs_client::Client;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::auth::{Credentials, Gatekeeper};

/// The S3 service over DogFS clients: one per access key that has a DogFS token of its own
/// (the cluster then enforces that token's scope and limits too), and the gateway's own for
/// the others.
#[derive(Debug, Clone)]
pub struct DogS3 {
    pub(crate) client: Client,
    /// Access key → a client presenting that key's DogFS token.
    pub(crate) key_clients: Arc<HashMap<String, Client>>,
    pub(crate) region: String,
    pub(crate) gate: Gatekeeper,
}

impl DogS3 {
    pub fn new(
        client: Client,
        key_clients: HashMap<String, Client>,
        region: String,
        credentials: Credentials,
        anonymous: bool,
    ) -> Self {
        DogS3 {
            client,
            key_clients: Arc::new(key_clients),
            region,
            gate: Gatekeeper {
                credentials,
                anonymous,
            },
        }
    }

    /// The client a request is served with: its access key's, else the gateway's.
    pub(crate) fn client_for(&self, creds: Option<&s3s::auth::Credentials>) -> &Client {
        creds
            .and_then(|c| self.key_clients.get(c.access_key.as_str()))
            .unwrap_or(&self.client)
    }
}

macro_rules! route {
    ($($op:ident => $imp:ident ($input:ty, $output:ty);)*) => {
        #[async_trait::async_trait]
        impl S3 for DogS3 {
            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.$imp(req).await
                }
            )*
        }
    };
}

route! {
    list_buckets => do_list_buckets(ListBucketsInput, ListBucketsOutput);
    create_bucket => do_create_bucket(CreateBucketInput, CreateBucketOutput);
    delete_bucket => do_delete_bucket(DeleteBucketInput, DeleteBucketOutput);
    head_bucket => do_head_bucket(HeadBucketInput, HeadBucketOutput);
    get_bucket_location => do_get_bucket_location(GetBucketLocationInput, GetBucketLocationOutput);
    put_object => do_put_object(PutObjectInput, PutObjectOutput);
    get_object => do_get_object(GetObjectInput, GetObjectOutput);
    head_object => do_head_object(HeadObjectInput, HeadObjectOutput);
    delete_object => do_delete_object(DeleteObjectInput, DeleteObjectOutput);
    delete_objects => do_delete_objects(DeleteObjectsInput, DeleteObjectsOutput);
    copy_object => do_copy_object(CopyObjectInput, CopyObjectOutput);
    list_objects_v2 => do_list_objects_v2(ListObjectsV2Input, ListObjectsV2Output);
    list_objects => do_list_objects(ListObjectsInput, ListObjectsOutput);
    list_object_versions => do_list_object_versions(ListObjectVersionsInput, ListObjectVersionsOutput);
    create_multipart_upload => do_create_multipart_upload(CreateMultipartUploadInput, CreateMultipartUploadOutput);
    upload_part => do_upload_part(UploadPartInput, UploadPartOutput);
    upload_part_copy => do_upload_part_copy(UploadPartCopyInput, UploadPartCopyOutput);
    complete_multipart_upload => do_complete_multipart_upload(CompleteMultipartUploadInput, CompleteMultipartUploadOutput);
    abort_multipart_upload => do_abort_multipart_upload(AbortMultipartUploadInput, AbortMultipartUploadOutput);
    list_parts => do_list_parts(ListPartsInput, ListPartsOutput);
    list_multipart_uploads => do_list_multipart_uploads(ListMultipartUploadsInput, ListMultipartUploadsOutput);
}
