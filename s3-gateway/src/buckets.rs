//! ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation.

use s3s::dto::{
    Bucket, BucketLocationConstraint, CreateBucketInput, CreateBucketOutput, DeleteBucketInput,
    DeleteBucketOutput, GetBucketLocationInput, GetBucketLocationOutput, HeadBucketInput,
    HeadBucketOutput, ListBucketsInput, ListBucketsOutput, Owner,
};
use s3s::{S3Request, S3Response, S3Result};
use tracing::{Instrument, info, info_span};

use crate::auth::caller_of;
use crate::errors::{Subject, s3_error};
use crate::metadata::timestamp;
use crate::service::DogS3;

impl DogS3 {
    pub(crate) async fn do_list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let caller = caller_of(req.credentials.as_ref());
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let buckets = match client.list_buckets().await {
            Ok(b) => b,
            Err(e) => return Err(s3_error(client, Subject::Service, e).await),
        };
        let buckets = buckets
            .into_iter()
            .filter(|b| b.name.starts_with(&prefix) && self.gate.sees_bucket(caller, &b.name))
            .map(|b| Bucket {
                bucket_region: Some(self.region.clone()),
                creation_date: Some(timestamp(b.created_unix)),
                name: Some(b.name),
            })
            .collect();
        let identity = self.gate.identity(caller).to_owned();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(identity.clone()),
                id: Some(identity),
            }),
            prefix: req.input.prefix,
            continuation_token: None,
        }))
    }

    pub(crate) async fn do_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let bucket = req.input.bucket;
        let span = info_span!("create_bucket", bucket = %bucket);
        let result = client.create_bucket(&bucket).instrument(span).await;
        if let Err(e) = result {
            return Err(s3_error(client, Subject::Bucket(&bucket), e).await);
        }
        info!(bucket = %bucket, "bucket created");
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    pub(crate) async fn do_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let bucket = req.input.bucket;
        if let Err(e) = client.delete_bucket(&bucket).await {
            return Err(s3_error(client, Subject::Bucket(&bucket), e).await);
        }
        info!(bucket = %bucket, "bucket deleted");
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    pub(crate) async fn do_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let bucket = req.input.bucket;
        if let Err(e) = client.head_bucket(&bucket).await {
            return Err(s3_error(client, Subject::Bucket(&bucket), e).await);
        }
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..HeadBucketOutput::default()
        }))
    }

    pub(crate) async fn do_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let client = self.client_for(req.credentials.as_ref());
        let bucket = req.input.bucket;
        if let Err(e) = client.head_bucket(&bucket).await {
            return Err(s3_error(client, Subject::Bucket(&bucket), e).await);
        }
        // S3 answers an empty LocationConstraint for us-east-1.
        let location = (self.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: location,
        }))
    }
}
