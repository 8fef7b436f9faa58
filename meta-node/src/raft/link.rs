//! The caller's end of the node-pair stream: one [`Link`] per peer address, shared by every
//! group of the node, multiplexes their Vote and AppendEntries calls over one long-lived
//! `RaftService.Stream` (`docs/raft-network.md`, "Node-pair stream").
//!
//! A call registers a reply slot under a fresh `call_id` and queues its message; the request
//! stream, polled by the HTTP/2 connection itself, packs everything queued into one frame; a
//! reader task matches reply frames to slots. When the stream ends or breaks, every waiting call
//! fails as unreachable (openraft retries) and the next call opens a new stream. A peer that
//! does not serve the stream (an older version) is called unary for a while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use dogfs_proto::raft::raft_service_client::RaftServiceClient;
use dogfs_proto::raft::{RaftFrame, RaftMessage, RaftMessageKind};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::frame::{TransportStats, pack};
use crate::wal::GroupId;

/// How long a peer that answered `UNIMPLEMENTED` to the stream is called unary before the
/// stream is tried again (it may have been upgraded).
const UNARY_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A link that sent a frame this recently is busy and is not held for heartbeats.
const BUSY_WITHIN: Duration = Duration::from_millis(20);

/// How a call over the stream failed.
#[derive(Debug, Error)]
pub enum LinkError {
    /// No stream could be opened, or it closed before the reply came.
    #[error("raft stream to {addr}: {reason}")]
    Unreachable {
        /// The peer.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No reply within the call's time.
    #[error("raft stream to {addr}: no reply within {ttl:?}")]
    Timeout {
        /// The peer.
        addr: String,
        /// The call's time.
        ttl: Duration,
    },
    /// The peer does not serve the stream: call it unary.
    #[error("raft stream to {addr}: the peer does not serve it")]
    Unsupported {
        /// The peer.
        addr: String,
    },
    /// Opening the stream failed with this status, or the peer answered this message with it.
    #[error("raft stream to {addr}: {status}")]
    Status {
        /// The peer.
        addr: String,
        /// The status.
        status: Status,
    },
}

/// Calls waiting for their replies on one stream.
#[derive(Debug, Default)]
struct Pending {
    /// False once the stream ended: nothing is matched any more, new calls must not wait.
    open: bool,
    calls: HashMap<u64, oneshot::Sender<RaftMessage>>,
}

/// One open stream.
#[derive(Debug)]
struct Session {
    tx: mpsc::UnboundedSender<RaftMessage>,
    /// Shared with the reader task; the task does not hold `tx`, so dropping the session ends
    /// the request stream and with it the peer's side.
    pending: Arc<Mutex<Pending>>,
}

#[derive(Debug, Default)]
struct LinkState {
    session: Option<Arc<Session>>,
    unary_until: Option<Instant>,
    /// Frames wait until then before they are sent ([`Link::hold_until`]).
    held_until: Option<Instant>,
    /// When the last frame was taken for sending.
    last_frame: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The node-pair stream to one peer address.
#[derive(Debug)]
pub struct Link {
    addr: String,
    client: RaftServiceClient<Channel>,
    state: Arc<Mutex<LinkState>>,
    /// One opener at a time; the others wait for its stream.
    opening: tokio::sync::Mutex<()>,
    next_call: AtomicU64,
    stats: Arc<TransportStats>,
    /// Ends a hold early: an urgent message was queued behind it.
    urgent: Arc<tokio::sync::Notify>,
}

impl Link {
    /// A link to `addr` over `client` (which carries the message size limits); nothing is
    /// opened before the first call.
    pub fn new(
        addr: String,
        client: RaftServiceClient<Channel>,
        stats: Arc<TransportStats>,
    ) -> Link {
        Link {
            addr,
            client,
            state: Arc::default(),
            opening: tokio::sync::Mutex::new(()),
            next_call: AtomicU64::new(1),
            stats,
            urgent: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Whether calls should use the stream now (false for a while after the peer turned out
    /// not to serve it).
    pub fn streams(&self) -> bool {
        lock(&self.state)
            .unary_until
            .is_none_or(|t| Instant::now() >= t)
    }

    /// Holds the next frame until `until` (at most), so messages queued meanwhile join it: the
    /// node's heartbeat tick calls it before triggering every group's heartbeat, so they leave
    /// as one frame per peer. An urgent message ends the hold at once (see [`Link::call`]).
    /// Only an idle link is held: on a busy one heartbeats ride along with other messages
    /// anyway, and holding a group's commit-index update would hold up its next entries
    /// (openraft keeps one AppendEntries in flight per follower), which showed as +0.7 ms at a
    /// lone client's p99.
    pub fn hold_until(&self, until: Instant) {
        let mut st = lock(&self.state);
        let busy = st
            .last_frame
            .is_some_and(|t| Instant::now().saturating_duration_since(t) < BUSY_WITHIN);
        if !busy {
            st.held_until = Some(until);
        }
    }

    /// Sends one request of `group` and waits at most `ttl` for its reply's payload. An
    /// `urgent` request (entries to append, a vote) is never held back for heartbeats to join
    /// it ([`Link::hold_until`]): a client's commit waits on it. Heartbeats and commit-index
    /// updates are not urgent.
    pub async fn call(
        &self,
        group: GroupId,
        kind: RaftMessageKind,
        payload: Bytes,
        ttl: Duration,
        urgent: bool,
    ) -> Result<Bytes, LinkError> {
        let deadline = Instant::now() + ttl;
        let timeout = || LinkError::Timeout {
            addr: self.addr.clone(),
            ttl,
        };
        let session = tokio::time::timeout_at(deadline, self.session())
            .await
            .map_err(|_| timeout())??;
        let call_id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut p = lock(&session.pending);
            if !p.open {
                return Err(self.closed());
            }
            p.calls.insert(call_id, reply_tx);
        }
        let message = RaftMessage {
            call_id,
            group_id: group,
            kind: kind as i32,
            payload,
            ..Default::default()
        };
        if session.tx.send(message).is_err() {
            lock(&session.pending).calls.remove(&call_id);
            return Err(self.closed());
        }
        if urgent {
            let held = lock(&self.state)
                .held_until
                .is_some_and(|t| t > Instant::now());
            if held {
                self.urgent.notify_one();
            }
        }
        let reply = match tokio::time::timeout_at(deadline, reply_rx).await {
            Err(_elapsed) => {
                lock(&session.pending).calls.remove(&call_id);
                return Err(timeout());
            }
            Ok(Err(_dropped)) => return Err(self.closed()),
            Ok(Ok(reply)) => reply,
        };
        if reply.code == 0 {
            return Ok(reply.payload);
        }
        Err(LinkError::Status {
            addr: self.addr.clone(),
            status: Status::new(Code::from(reply.code), reply.error),
        })
    }

    fn closed(&self) -> LinkError {
        LinkError::Unreachable {
            addr: self.addr.clone(),
            reason: "the stream closed before the reply came".to_string(),
        }
    }

    fn current(&self) -> Option<Arc<Session>> {
        lock(&self.state).session.clone()
    }

    /// The open stream, opening one if there is none.
    async fn session(&self) -> Result<Arc<Session>, LinkError> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _opening = self.opening.lock().await;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let (tx, rx) = mpsc::unbounded_channel::<RaftMessage>();
        let stats = Arc::clone(&self.stats);
        // Polled by the HTTP/2 connection whenever it can send: takes the first queued message
        // and everything queued behind it.
        let state = Arc::clone(&self.state);
        let urgent = Arc::clone(&self.urgent);
        let outbound = futures::stream::unfold((rx, stats), move |(mut rx, stats)| {
            let state = Arc::clone(&state);
            let urgent = Arc::clone(&urgent);
            async move {
                let first = rx.recv().await?;
                let held = {
                    let mut st = lock(&state);
                    st.last_frame = Some(Instant::now());
                    st.held_until
                };
                if let Some(until) = held
                    && until > Instant::now()
                {
                    // The heartbeat tick is gathering every group's heartbeat for this frame;
                    // an urgent message cuts the wait short.
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = urgent.notified() => {}
                    }
                }
                let frame = pack(first, || rx.try_recv().ok());
                stats.sent(&frame);
                Some((frame, (rx, stats)))
            }
        });
        let mut client = self.client.clone();
        let inbound = match client.stream(tonic::Request::new(outbound)).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::info!(peer = %self.addr, "peer does not serve the raft stream; calling it unary");
                lock(&self.state).unary_until = Some(Instant::now() + UNARY_RETRY_AFTER);
                return Err(LinkError::Unsupported {
                    addr: self.addr.clone(),
                });
            }
            Err(status) => {
                return Err(LinkError::Status {
                    addr: self.addr.clone(),
                    status,
                });
            }
        };
        self.stats.stream_opened();
        let pending = Arc::new(Mutex::new(Pending {
            open: true,
            calls: HashMap::new(),
        }));
        let session = Arc::new(Session {
            tx,
            pending: Arc::clone(&pending),
        });
        {
            let mut st = lock(&self.state);
            st.session = Some(Arc::clone(&session));
            st.unary_until = None;
        }
        tracing::debug!(peer = %self.addr, "raft stream opened");
        tokio::spawn(read_replies(
            self.addr.clone(),
            inbound,
            pending,
            Arc::clone(&self.state),
            Arc::downgrade(&session),
            Arc::clone(&self.stats),
        ));
        Ok(session)
    }
}

/// Hands each reply to its waiting call until the stream ends; then fails the calls still
/// waiting and forgets the session so the next call opens a new stream.
async fn read_replies(
    addr: String,
    mut inbound: Streaming<RaftFrame>,
    pending: Arc<Mutex<Pending>>,
    state: Arc<Mutex<LinkState>>,
    session: std::sync::Weak<Session>,
    stats: Arc<TransportStats>,
) {
    loop {
        match inbound.message().await {
            Ok(Some(frame)) => {
                stats.received(&frame);
                let mut p = lock(&pending);
                for m in frame.messages {
                    // A call that timed out meanwhile has no slot any more.
                    if let Some(tx) = p.calls.remove(&m.call_id) {
                        let _ = tx.send(m);
                    }
                }
            }
            Ok(None) => {
                tracing::debug!(peer = %addr, "raft stream ended by the peer");
                break;
            }
            Err(status) => {
                tracing::debug!(peer = %addr, %status, "raft stream failed");
                break;
            }
        }
    }
    {
        let mut p = lock(&pending);
        p.open = false;
        // Dropping the reply senders wakes every waiting call with "closed".
        p.calls.clear();
    }
    let mut st = lock(&state);
    let ours = match (&st.session, session.upgrade()) {
        (Some(current), Some(ended)) => Arc::ptr_eq(current, &ended),
        _ => false,
    };
    if ours {
        st.session = None;
    }
}
