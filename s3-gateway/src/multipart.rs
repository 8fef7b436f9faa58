//! Multipart upload. These answer `NotImplemented` until the metadata service stores parts
//! as segments of their own and completes them into one version without copying data
//! (issue 14, item 3); a gateway-side emulation that copies parts is deliberately not done.

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput,
    ListMultipartUploadsInput, ListMultipartUploadsOutput, ListPartsInput, ListPartsOutput,
    UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::service::DogS3;

fn not_yet<T>(op: &str) -> S3Result<T> {
    Err(S3Error::with_message(
        S3ErrorCode::NotImplemented,
        format!(
            "{op}: multipart upload is not supported by this DogFS gateway yet; upload objects \
             with a single PUT (e.g. aws-cli: `aws configure set default.s3.multipart_threshold 5GB`)"
        ),
    ))
}

impl DogS3 {
    pub(crate) async fn do_create_multipart_upload(
        &self,
        _req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        not_yet("CreateMultipartUpload")
    }

    pub(crate) async fn do_upload_part(
        &self,
        _req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        not_yet("UploadPart")
    }

    pub(crate) async fn do_upload_part_copy(
        &self,
        _req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        not_yet("UploadPartCopy")
    }

    pub(crate) async fn do_complete_multipart_upload(
        &self,
        _req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        not_yet("CompleteMultipartUpload")
    }

    pub(crate) async fn do_abort_multipart_upload(
        &self,
        _req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        not_yet("AbortMultipartUpload")
    }

    pub(crate) async fn do_list_parts(
        &self,
        _req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        not_yet("ListParts")
    }

    pub(crate) async fn do_list_multipart_uploads(
        &self,
        _req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        not_yet("ListMultipartUploads")
    }
}
