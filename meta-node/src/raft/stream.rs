//! The callee's end of the node-pair stream (`RaftService.Stream`): requests of every group
//! arrive in frames, each is handed to its group's Raft at once, and the replies that are ready
//! together go back in one frame.
//!
//! Everything runs inside the response stream's own poll (the HTTP/2 stream's task): no task
//! is spawned per message and no channel sits between a finished call and its reply frame, so a
//! frame of replies costs one wake-up of that task.

use std::pin::Pin;

use dogfs_proto::raft::{RaftFrame, RaftMessage};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream};
use futures::{FutureExt, StreamExt};
use tonic::{Status, Streaming};

use super::frame::{self, pack};
use super::server::{RaftRegistry, ServerError, dispatch};

/// The reply stream of one node-pair stream.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<RaftFrame, Status>> + Send + 'static>>;

/// Calls being handled on one stream at most; beyond it the stream stops reading new frames
/// until some finish (HTTP/2 flow control then holds the caller back). openraft keeps one
/// AppendEntries and a few votes in flight per group and peer, so only a misbehaving peer
/// gets near it.
const MAX_IN_FLIGHT: usize = 4096;

struct State {
    registry: RaftRegistry,
    inbound: Option<Streaming<RaftFrame>>,
    in_flight: FuturesUnordered<BoxFuture<'static, RaftMessage>>,
    closed: BoxFuture<'static, ()>,
}

/// Serves one node-pair stream until the caller ends it, the connection breaks, or the node
/// shuts down ([`RaftRegistry::close`]).
pub fn serve(registry: RaftRegistry, inbound: Streaming<RaftFrame>) -> ReplyStream {
    registry.stream_stats().stream_opened();
    let closed = registry.closed().boxed();
    let state = State {
        registry,
        inbound: Some(inbound),
        in_flight: FuturesUnordered::new(),
        closed,
    };
    Box::pin(futures::stream::unfold(state, next_frame))
}

async fn next_frame(mut st: State) -> Option<(Result<RaftFrame, Status>, State)> {
    loop {
        if st.inbound.is_none() && st.in_flight.is_empty() {
            return None;
        }
        let reading = st.inbound.is_some() && st.in_flight.len() < MAX_IN_FLIGHT;
        tokio::select! {
            biased;
            () = &mut st.closed => return None,
            Some(reply) = st.in_flight.next(), if !st.in_flight.is_empty() => {
                let in_flight = &mut st.in_flight;
                let frame = pack(reply, || in_flight.next().now_or_never().flatten());
                st.registry.stream_stats().sent(&frame);
                return Some((Ok(frame), st));
            }
            read = read_frame(&mut st.inbound), if reading => match read {
                Ok(Some(frame)) => {
                    st.registry.stream_stats().received(&frame);
                    for m in frame.messages {
                        st.in_flight.push(handle(st.registry.clone(), m).boxed());
                    }
                }
                Ok(None) => st.inbound = None,
                Err(status) => {
                    // The connection broke: nobody is left to read replies.
                    tracing::debug!(%status, "raft stream from a peer failed");
                    return None;
                }
            },
        }
    }
}

async fn read_frame(
    inbound: &mut Option<Streaming<RaftFrame>>,
) -> Result<Option<RaftFrame>, Status> {
    match inbound {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// Handles one request; the reply carries its `call_id`, and a transport failure of this
/// message alone as `code` and `error` (the status its unary call would have failed with).
async fn handle(registry: RaftRegistry, m: RaftMessage) -> RaftMessage {
    let mut reply = RaftMessage {
        call_id: m.call_id,
        group_id: m.group_id,
        kind: m.kind,
        ..Default::default()
    };
    let result = match frame::kind_from_proto(m.kind) {
        Some(kind) => dispatch(&registry, m.group_id, kind, &m.payload).await,
        None => Err(ServerError::UnknownKind {
            group: m.group_id,
            kind: m.kind,
        }),
    };
    match result {
        Ok(payload) => reply.payload = payload,
        Err(e) => {
            let status = Status::from(e);
            reply.code = status.code() as i32;
            reply.error = status.message().to_string();
        }
    }
    reply
}
