//! The SDK's public data types.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Called with the bytes done so far (read from the reader on PUT, written on GET).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub created_unix: i64,
}

/// The erasure scheme an object version was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub k: u32,
    pub m: u32,
    pub cell_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// `hex(CRC32C(object))`, with `-<segments>` appended when the object has more than one
    /// segment (docs/client.md).
    pub etag: String,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    pub created_unix: i64,
    pub version_id: String,
    pub scheme: Scheme,
    pub segment_size: u64,
    /// Stored inside its metadata record (at most `inline_max` bytes), no shards.
    pub inline: bool,
}

#[derive(Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    pub progress: Option<Progress>,
}

impl fmt::Debug for PutOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutOptions")
            .field("content_type", &self.content_type)
            .field("user_metadata", &self.user_metadata)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

#[derive(Clone, Default)]
pub struct GetOptions {
    /// Object bytes `[start, end)`; `None` reads the whole object. `end` past the object's
    /// size is an `InvalidInput` error.
    pub range: Option<Range<u64>>,
    pub progress: Option<Progress>,
}

impl fmt::Debug for GetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetOptions")
            .field("range", &self.range)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// S3 ListObjectsV2 parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    /// Empty: no grouping.
    pub delimiter: String,
    pub start_after: String,
    /// Keys per page, 1..=1000 (the server clamps); `None`: 1000.
    pub max_keys: Option<u32>,
    /// From a previous page's `next_token`; wins over `start_after`.
    pub continuation_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub created_unix: i64,
    pub version_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEntry {
    Object(ObjectSummary),
    CommonPrefix(String),
}

impl ListEntry {
    /// The key or the common prefix: what entries are ordered by.
    pub fn name(&self) -> &str {
        match self {
            ListEntry::Object(o) => &o.key,
            ListEntry::CommonPrefix(p) => p,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Objects and common prefixes, in key order.
    pub entries: Vec<ListEntry>,
    pub truncated: bool,
    /// Set when truncated: pass as `ListQuery::continuation_token`.
    pub next_token: Option<String>,
}
