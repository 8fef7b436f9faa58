//! gRPC transport settings shared by servers and clients. Shard streams move megabytes per
//! call, so HTTP/2's 64 KiB defaults would cap one stream at a window per round trip.

/// Payload bytes in one shard data message.
pub const DATA_MESSAGE_BYTES: usize = 1024 * 1024;

/// Largest gRPC message either side accepts. Data messages are 1 MiB; the limit leaves room
/// for a sender that batches up to 4 MiB while bounding what one message can make a peer hold.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 64 * 1024;

/// HTTP/2 flow-control window of one stream: several messages in flight per stream.
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// HTTP/2 flow-control window of one connection, shared by its streams (k+m shards of one
/// stripe go to different servers, but one server may carry several streams at once).
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// Largest HTTP/2 frame: fewer, larger frames cost less per byte on fast links.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;
