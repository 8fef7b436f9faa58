//! One tower layer for the per-request checks in front of a gRPC server: a [`Gate`] looks at
//! a request's path, headers and connection (the extensions: the verified client
//! certificate) and admits it — possibly adding an extension, such as the caller's identity —
//! or answers it with a status. The component policy and token authentication are gates.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;
use tower::{Layer, Service};

/// A check every request passes before reaching the services.
pub trait Gate: Clone + Send + Sync + 'static {
    /// Admits the request (adding to `ext` what the services need) or refuses it.
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        ext: &mut http::Extensions,
    ) -> Result<(), Status>;
}

/// Applies a [`Gate`]; with `None` it lets everything through.
#[derive(Debug, Clone)]
pub struct GateLayer<G> {
    gate: Option<G>,
}

impl<G> GateLayer<G> {
    pub fn with(gate: Option<G>) -> Self {
        GateLayer { gate }
    }
}

impl<G: Clone, S> Layer<S> for GateLayer<G> {
    type Service = GateService<G, S>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GateService<G, S> {
    inner: S,
    gate: Option<G>,
}

impl<G, S, B, RB> Service<http::Request<B>> for GateService<G, S>
where
    G: Gate,
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(gate) = &self.gate else {
            return Either::Right(self.inner.call(req));
        };
        let (mut parts, body) = req.into_parts();
        if let Err(status) = gate.admit(parts.uri.path(), &parts.headers, &mut parts.extensions) {
            tracing::info!(path = parts.uri.path(), code = ?status.code(), message = status.message(), "call refused");
            return Either::Left(ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(http::Request::from_parts(parts, body)))
    }
}
