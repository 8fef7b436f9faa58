//! The HTTP side port: `/metrics`, `/healthz` (the process is alive) and `/readyz` (the
//! store answers and the gRPC server is serving).
//!
//! Readiness deliberately ignores registration with metadata: a chunk server can serve reads
//! (and writes placed earlier) while metadata is down or electing, and a Service that dropped
//! every chunk pod during a metadata outage would turn it into a full read outage. The
//! registry state is on `/metrics` (`dogfs_chunk_node_state`) instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct HttpState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub serving: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let rendered = tokio::task::spawn_blocking(move || s.metrics.render(&s.store)).await;
    match rendered {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response(),
    }
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    if !s.serving.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not serving\n".into());
    }
    let store = Arc::clone(&s.store);
    match tokio::task::spawn_blocking(move || store.space()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
    }
}
