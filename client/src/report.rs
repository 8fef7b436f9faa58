//! Reports of shards a GET could not use (`MetaService.ReportShards`, DESIGN §4 and §7), so
//! metadata can check them and queue their segments for repair without waiting for the
//! scrubber or the liveness timeouts.
//!
//! Best effort by design: the report is sent from a task of its own after the GET has its
//! result, bounded by [`REPORT_TIMEOUT`] (retries included), and a failure (an old metadata
//! service answers UNIMPLEMENTED, a leader change, a partition) is only logged at debug. The
//! scrubber and the registry find the same shards later; a GET never fails or waits for this.

use std::time::{Duration, Instant};

use dogfs_proto::meta::meta_service_client::MetaServiceClient;
use dogfs_proto::meta::{ReportShardsRequest, ShardProblem};
use tracing::{Instrument, debug, info_span};

use crate::client::Client;
use crate::meta::Route;

/// The most a report may take, retries included.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `shards` (one entry per shard, as `get::health::Health` collects them) for the object version
/// in the background. Nothing is sent when there is nothing to report.
pub(crate) fn spawn(
    client: &Client,
    route: Route,
    bucket: &str,
    key: &str,
    version_id: &str,
    shards: Vec<ShardProblem>,
) {
    if shards.is_empty() {
        return;
    }
    let client = client.clone();
    let count = shards.len();
    let req = ReportShardsRequest {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version_id: version_id.to_string(),
        shards,
    };
    let what = format!("shard report for object {bucket:?}/{key:?}");
    let span = info_span!("report_shards", bucket, key, version_id, shards = count);
    tokio::spawn(
        async move {
            let deadline = Instant::now() + REPORT_TIMEOUT;
            let call = client
                .meta()
                .call("ReportShards", &what, route, deadline, |ch| {
                    let req = req.clone();
                    async move { MetaServiceClient::new(ch).report_shards(req).await }
                });
            // The call's deadline bounds its retries; this also bounds an attempt that hangs.
            match tokio::time::timeout(REPORT_TIMEOUT, call).await {
                Ok(Ok(r)) => debug!(queued = r.queued, "shards reported"),
                Ok(Err(e)) => debug!(error = %e, "reporting unusable shards failed"),
                Err(_) => debug!(timeout = ?REPORT_TIMEOUT, "reporting unusable shards timed out"),
            }
        }
        .instrument(span),
    );
}
