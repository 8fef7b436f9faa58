//! The HTTP side port: `/metrics`, `/healthz` (the process is alive) and `/readyz`.
//!
//! Ready means: every group has a known leader, and this node has applied its log up to within
//! [`READY_LAG`] entries of the end of its own log (a node that was down and is being caught up
//! has a known leader but is not ready until it applied what it received).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::service::Core;

/// Entries a ready node may still have to apply.
pub const READY_LAG: u64 = 100;

pub(crate) fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(core)
}

async fn metrics(State(c): State<Arc<Core>>) -> impl IntoResponse {
    match c.metrics.render(&c.raft) {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response(),
    }
}

/// `Ok` when ready, else the first reason it is not.
pub(crate) fn readiness(c: &Core) -> Result<(), String> {
    for g in c.raft.group_ids() {
        let raft = c.raft.raft(g).map_err(|e| e.to_string())?;
        let m = raft.metrics().borrow().clone();
        if m.current_leader.is_none() {
            return Err(format!("group {g}: no known leader"));
        }
        let applied = m.last_applied.map_or(0, |l| l.index);
        let last = m.last_log_index.unwrap_or(0);
        if last.saturating_sub(applied) > READY_LAG {
            return Err(format!(
                "group {g}: applied {applied} of {last} log entries"
            ));
        }
    }
    Ok(())
}

async fn readyz(State(c): State<Arc<Core>>) -> (StatusCode, String) {
    match readiness(&c) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}
