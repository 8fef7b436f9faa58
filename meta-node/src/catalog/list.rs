//! ListObjects (S3 semantics) over P partitions: [`list_partition`] pages through one
//! partition's keys of a bucket, [`merge_pages`] merges the P pages into one.
//!
//! Entries are object keys and common prefixes (`prefix` + the rest of the key up to and
//! including the first `delimiter` after the prefix), in UTF-8 byte order; a common prefix
//! counts once toward `max_keys`. The continuation token is opaque: it encodes where the page
//! ended — after a key, or past every key under a common prefix.
//!
//! Why merging is exact: each partition returns the first `max_keys` entries of its own
//! rolled-up sequence after the cursor; any entry among the first `max_keys` of the global
//! sequence is preceded in its partition by fewer than `max_keys` entries, so it is in that
//! partition's page. The same common prefix may come from several partitions and is kept once.

use dogfs_core::names::{BucketName, MAX_KEY_BYTES};

use super::keys::{self, PAST_PREFIX};
use super::records::{self};
use super::{CatalogError, ObjectVersion};
use crate::raft::{KvReader, KvSpace};

/// S3's largest page.
pub const MAX_KEYS_LIMIT: usize = 1000;

const TOKEN_FORMAT: u8 = 1;

/// A ListObjects request (V2 parameters; `start_after` is ignored when a continuation token is
/// given, as in S3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    /// Empty: no grouping.
    pub delimiter: String,
    pub start_after: Option<String>,
    pub continuation_token: Option<String>,
    /// Clamped to [`MAX_KEYS_LIMIT`]; 0 gives an empty, untruncated page.
    pub max_keys: usize,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub created_unix: u64,
    pub version_id: u128,
}

impl ObjectSummary {
    fn of(v: &ObjectVersion) -> ObjectSummary {
        ObjectSummary {
            key: v.key.clone(),
            size: v.size,
            etag: v.etag.clone(),
            created_unix: v.created_unix,
            version_id: v.version_id,
        }
    }
}

/// An entry of a listing.
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

/// One partition's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionPage {
    pub entries: Vec<ListEntry>,
    /// The partition has more entries after the last one.
    pub truncated: bool,
}

/// The merged page returned to the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    /// Objects and common prefixes, in order.
    pub entries: Vec<ListEntry>,
    pub is_truncated: bool,
    /// Set iff truncated.
    pub next_continuation_token: Option<String>,
}

impl ListPage {
    pub fn objects(&self) -> impl Iterator<Item = &ObjectSummary> {
        self.entries.iter().filter_map(|e| match e {
            ListEntry::Object(o) => Some(o),
            ListEntry::CommonPrefix(_) => None,
        })
    }

    pub fn common_prefixes(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match e {
            ListEntry::CommonPrefix(p) => Some(p.as_str()),
            ListEntry::Object(_) => None,
        })
    }
}

/// Where a page ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContinuationToken {
    /// Resume after this key.
    After(String),
    /// Resume past every key starting with this common prefix.
    PastPrefix(String),
}

impl ContinuationToken {
    /// Opaque text form: hex of `format ‖ kind ‖ name`.
    pub fn encode(&self) -> String {
        let (kind, name) = match self {
            ContinuationToken::After(k) => (0u8, k),
            ContinuationToken::PastPrefix(p) => (1u8, p),
        };
        let mut s = String::with_capacity(4 + 2 * name.len());
        for b in [TOKEN_FORMAT, kind].iter().chain(name.as_bytes()) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn decode(token: &str) -> Result<ContinuationToken, CatalogError> {
        let bad = |reason: &str| CatalogError::InvalidToken {
            reason: reason.to_owned(),
        };
        if !token.len().is_multiple_of(2) || token.len() > 2 * (MAX_KEY_BYTES + 2) {
            return Err(bad("wrong length"));
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| {
                token
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("not hexadecimal"))
            })
            .collect::<Result<Vec<u8>, _>>()?;
        let [format, kind, name @ ..] = bytes.as_slice() else {
            return Err(bad("too short"));
        };
        if *format != TOKEN_FORMAT {
            return Err(bad("unknown format"));
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad("not UTF-8"))?;
        match kind {
            0 => Ok(ContinuationToken::After(name)),
            1 => Ok(ContinuationToken::PastPrefix(name)),
            _ => Err(bad("unknown kind")),
        }
    }
}

/// The checked query: `max_keys` clamped, the start position (relative to the bucket).
struct Plan {
    max_keys: usize,
    start: Option<Vec<u8>>,
}

fn plan(query: &ListQuery) -> Result<Plan, CatalogError> {
    if query.prefix.len() > MAX_KEY_BYTES || query.delimiter.len() > MAX_KEY_BYTES {
        return Err(CatalogError::InvalidListing {
            reason: format!("prefix and delimiter must be at most {MAX_KEY_BYTES} bytes"),
        });
    }
    let start = match &query.continuation_token {
        Some(t) => {
            let token = ContinuationToken::decode(t)?;
            let (ContinuationToken::After(name) | ContinuationToken::PastPrefix(name)) = &token;
            if !name.starts_with(&query.prefix) {
                return Err(CatalogError::InvalidToken {
                    reason: "it does not belong to this prefix".into(),
                });
            }
            let mut s = name.as_bytes().to_vec();
            if matches!(token, ContinuationToken::PastPrefix(_)) {
                s.push(PAST_PREFIX);
            }
            Some(s)
        }
        None => query.start_after.as_ref().map(|s| s.as_bytes().to_vec()),
    };
    Ok(Plan {
        max_keys: query.max_keys.min(MAX_KEYS_LIMIT),
        start,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first `max_keys` entries of one partition's keys of `bucket` for `query`.
pub fn list_partition<S: KvSpace>(
    partition: &KvReader<S>,
    bucket: &BucketName,
    query: &ListQuery,
) -> Result<PartitionPage, CatalogError> {
    let plan = plan(query)?;
    let base = keys::object_prefix(bucket);
    let mut range_prefix = base.clone();
    range_prefix.extend_from_slice(query.prefix.as_bytes());
    let mut cursor: Option<Vec<u8>> = plan.start.map(|s| [base.as_slice(), &s].concat());
    let prefix_len = query.prefix.len();
    let delimiter = query.delimiter.as_bytes();
    let mut page = PartitionPage::default();
    if plan.max_keys == 0 {
        return Ok(page);
    }
    'outer: loop {
        let want = plan.max_keys - page.entries.len() + 1;
        let batch = partition.list(keys::OBJECTS, &range_prefix, cursor.as_deref(), want)?;
        let got = batch.len();
        for (raw, value) in batch {
            if page.entries.len() == plan.max_keys {
                page.truncated = true;
                break 'outer;
            }
            let key = raw.get(base.len()..).unwrap_or_default();
            let rest = key.get(prefix_len..).unwrap_or_default();
            if let Some(pos) = find(rest, delimiter) {
                let end = prefix_len + pos + delimiter.len();
                let cp = key.get(..end).unwrap_or_default();
                let cp = String::from_utf8(cp.to_vec()).map_err(|e| CatalogError::Corrupt {
                    what: "object key",
                    reason: e.to_string(),
                })?;
                let mut next = raw.get(..base.len() + end).unwrap_or_default().to_vec();
                next.push(PAST_PREFIX);
                cursor = Some(next);
                page.entries.push(ListEntry::CommonPrefix(cp));
                continue 'outer;
            }
            let version: ObjectVersion = records::decode("object version", &value.value)?;
            page.entries
                .push(ListEntry::Object(ObjectSummary::of(&version)));
            cursor = Some(raw);
        }
        if got < want {
            break;
        }
    }
    Ok(page)
}

/// Merges the pages of every partition (all asked with the same `query`) into the page the
/// client sees.
pub fn merge_pages(query: &ListQuery, pages: Vec<PartitionPage>) -> Result<ListPage, CatalogError> {
    let max_keys = plan(query)?.max_keys;
    let any_truncated = pages.iter().any(|p| p.truncated);
    let mut all: Vec<ListEntry> = pages.into_iter().flat_map(|p| p.entries).collect();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all.dedup_by(|a, b| a.name() == b.name());
    let is_truncated = all.len() > max_keys || (any_truncated && max_keys > 0);
    all.truncate(max_keys);
    let next_continuation_token = if is_truncated {
        all.last().map(|e| match e {
            ListEntry::Object(o) => ContinuationToken::After(o.key.clone()).encode(),
            ListEntry::CommonPrefix(p) => ContinuationToken::PastPrefix(p.clone()).encode(),
        })
    } else {
        None
    };
    Ok(ListPage {
        entries: all,
        is_truncated,
        next_continuation_token,
    })
}
