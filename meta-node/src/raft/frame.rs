//! The framing of the node-pair stream (`RaftService.Stream`, `docs/raft-network.md`): which
//! calls travel on it, how ready messages are packed into one frame, and the counters both
//! ends keep. Pure: the I/O lives in [`super::link`] (caller) and [`super::stream`] (callee).

use std::sync::atomic::{AtomicU64, Ordering};

use dogfs_proto::raft::{RaftFrame, RaftMessage, RaftMessageKind};

use super::server::CallKind;

/// A frame is closed once its payloads reach this many bytes (one larger message travels alone).
pub const FRAME_BYTES: usize = 1 << 20;

/// At most this many messages in one frame.
pub const FRAME_MESSAGES: usize = 1024;

/// Requests larger than this take the unary call instead of the stream, as snapshot chunks do:
/// on the shared stream a large message would hold up every other group's messages behind it
/// (one HTTP/2 stream is delivered in order), while unary calls interleave.
pub const STREAM_MAX_REQUEST_BYTES: usize = 1 << 20;

/// The stream's message kind of a call, or `None` for calls that stay unary.
pub fn kind_to_proto(kind: CallKind) -> Option<RaftMessageKind> {
    match kind {
        CallKind::Vote => Some(RaftMessageKind::Vote),
        CallKind::AppendEntries => Some(RaftMessageKind::AppendEntries),
        CallKind::InstallSnapshot => None,
    }
}

/// The call a stream message asks for; `None` for an unknown or unspecified kind.
pub fn kind_from_proto(kind: i32) -> Option<CallKind> {
    match RaftMessageKind::try_from(kind).ok()? {
        RaftMessageKind::Vote => Some(CallKind::Vote),
        RaftMessageKind::AppendEntries => Some(CallKind::AppendEntries),
        RaftMessageKind::Unspecified => None,
    }
}

/// One frame: `first`, then whatever `next` has ready, until it has nothing more or the frame
/// is full ([`FRAME_BYTES`], [`FRAME_MESSAGES`]). `next` is only called while there is room,
/// so no message it hands out is ever left behind.
pub fn pack(first: RaftMessage, mut next: impl FnMut() -> Option<RaftMessage>) -> RaftFrame {
    let mut bytes = first.payload.len();
    let mut messages = vec![first];
    while bytes < FRAME_BYTES && messages.len() < FRAME_MESSAGES {
        match next() {
            Some(m) => {
                bytes += m.payload.len();
                messages.push(m);
            }
            None => break,
        }
    }
    RaftFrame { messages }
}

/// Counters of one end of the transport (the node's outgoing calls, or its server).
#[derive(Debug, Default)]
pub struct TransportStats {
    frames_sent: AtomicU64,
    messages_sent: AtomicU64,
    frames_received: AtomicU64,
    messages_received: AtomicU64,
    streams_opened: AtomicU64,
    unary_calls: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCounts {
    /// Frames written to node-pair streams.
    pub frames_sent: u64,
    /// Messages in them.
    pub messages_sent: u64,
    /// Frames read from node-pair streams.
    pub frames_received: u64,
    /// Messages in them.
    pub messages_received: u64,
    /// Node-pair streams opened (by the caller) or accepted (by the server).
    pub streams_opened: u64,
    /// Unary calls (snapshot chunks, large requests, peers without the stream).
    pub unary_calls: u64,
}

impl TransportStats {
    /// Counts a frame written.
    pub fn sent(&self, frame: &RaftFrame) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.messages_sent
            .fetch_add(frame.messages.len() as u64, Ordering::Relaxed);
    }

    /// Counts a frame read.
    pub fn received(&self, frame: &RaftFrame) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        self.messages_received
            .fetch_add(frame.messages.len() as u64, Ordering::Relaxed);
    }

    /// Counts a stream opened or accepted.
    pub fn stream_opened(&self) {
        self.streams_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a unary call.
    pub fn unary_call(&self) {
        self.unary_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> TransportCounts {
        TransportCounts {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            streams_opened: self.streams_opened.load(Ordering::Relaxed),
            unary_calls: self.unary_calls.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(id: u64, len: usize) -> RaftMessage {
        RaftMessage {
            call_id: id,
            group_id: id % 3,
            kind: RaftMessageKind::AppendEntries as i32,
            payload: Bytes::from(vec![0u8; len]),
            ..Default::default()
        }
    }

    fn ids(f: &RaftFrame) -> Vec<u64> {
        f.messages.iter().map(|m| m.call_id).collect()
    }

    #[test]
    fn packs_everything_ready_in_order() {
        let mut ready: std::collections::VecDeque<_> = (1..=5).map(|i| msg(i, 10)).collect();
        let f = pack(msg(0, 10), || ready.pop_front());
        assert_eq!(ids(&f), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_full_frame_leaves_the_rest_queued() {
        let mut ready: std::collections::VecDeque<_> =
            (1..=5).map(|i| msg(i, FRAME_BYTES / 2)).collect();
        let f = pack(msg(0, 10), || ready.pop_front());
        // 10 + 512 KiB + 512 KiB reaches the budget: three messages, the rest stay queued.
        assert_eq!(ids(&f), vec![0, 1, 2]);
        assert_eq!(ready.len(), 3);
        let next_first = ready.pop_front().unwrap();
        let f = pack(next_first, || ready.pop_front());
        // 512 KiB + 512 KiB is full: message 5 waits for the next frame.
        assert_eq!(ids(&f), vec![3, 4]);
        assert_eq!(ready.len(), 1);
    }

    #[test]
    fn a_large_message_travels_alone_and_counts_are_bounded() {
        let mut pulled = 0;
        let f = pack(msg(0, FRAME_BYTES + 1), || {
            pulled += 1;
            Some(msg(1, 1))
        });
        assert_eq!(ids(&f), vec![0]);
        assert_eq!(pulled, 0, "nothing pulled into a full frame");
        let mut n = 0;
        let f = pack(msg(0, 0), || {
            n += 1;
            Some(msg(n, 0))
        });
        assert_eq!(f.messages.len(), FRAME_MESSAGES);
        assert_eq!(n as usize, FRAME_MESSAGES - 1);
    }

    #[test]
    fn kinds_round_trip_and_snapshots_stay_unary() {
        for k in [CallKind::Vote, CallKind::AppendEntries] {
            let p = kind_to_proto(k).unwrap();
            assert_eq!(kind_from_proto(p as i32), Some(k));
        }
        assert_eq!(kind_to_proto(CallKind::InstallSnapshot), None);
        assert_eq!(kind_from_proto(0), None);
        assert_eq!(kind_from_proto(99), None);
        assert_eq!(kind_from_proto(-1), None);
    }

    #[test]
    fn stats_count_frames_and_messages() {
        let s = TransportStats::default();
        let f = pack(msg(0, 1), {
            let mut v = vec![msg(1, 1)];
            move || v.pop()
        });
        s.sent(&f);
        s.received(&f);
        s.stream_opened();
        s.unary_call();
        let c = s.counts();
        assert_eq!(
            c,
            TransportCounts {
                frames_sent: 1,
                messages_sent: 2,
                frames_received: 1,
                messages_received: 2,
                streams_opened: 1,
                unary_calls: 1
            }
        );
    }
}
