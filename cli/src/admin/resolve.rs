//! NODE arguments: a chunk server's id (32 hex digits as the registry prints it, or the
//! hyphenated UUID the server logs), a unique prefix of it, or its address. The form is
//! checked before any network call (a value that can be none of these is exit 4 at once); the
//! match is made against `ListNodes`, since a prefix or an address means nothing to the server.

use dogfs_proto::meta::{ChunkNode, NodeState};

use super::AdminError;

/// Hex digits in a chunk server id.
const ID_DIGITS: usize = 32;
/// Where a hyphenated UUID has its hyphens.
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// What a NODE argument can mean, decided from its form alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeQuery {
    /// As given (trimmed), for messages.
    pub raw: String,
    /// Lowercase hex digits of a whole id or a prefix of one (hyphens dropped), when the value
    /// can be one.
    pub id_prefix: Option<String>,
    /// `host:port`, or a bare host, when the value is not made of hex digits (and a UUID's
    /// hyphens) alone: such a value is always an id, never a host (`cafe`, `dead-beef`).
    pub address: Option<String>,
}

impl NodeQuery {
    pub fn parse(arg: &str) -> Result<NodeQuery, AdminError> {
        let raw = arg.trim().to_owned();
        let bad = || AdminError::BadNode { value: raw.clone() };
        if raw.is_empty() {
            return Err(bad());
        }
        // One rule a person can predict: hex digits (and a UUID's hyphens) alone are an id or
        // a prefix of one, anything else an address. An id that cannot be one (33 digits, a
        // hyphen out of place) is refused, not looked up as a host name.
        let id_like = raw.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        let (id_prefix, address) = if id_like {
            (Some(id_prefix(&raw).ok_or_else(bad)?), None)
        } else if is_address(&raw) {
            (None, Some(raw.clone()))
        } else {
            return Err(bad());
        };
        Ok(NodeQuery {
            raw,
            id_prefix,
            address,
        })
    }

    /// The one node this names among `nodes` (the `ListNodes` answer).
    pub fn resolve<'a>(&self, nodes: &'a [ChunkNode]) -> Result<&'a ChunkNode, AdminError> {
        let found: Vec<&ChunkNode> = nodes
            .iter()
            .filter(|n| match (&self.id_prefix, &self.address) {
                (Some(p), _) => normal_id(&n.node_id).starts_with(p.as_str()),
                (None, Some(a)) => address_matches(a, &n.address),
                (None, None) => false,
            })
            .collect();
        match pick(found) {
            Ok(n) => Ok(n),
            Err(found) if found.is_empty() => Err(AdminError::UnknownNode {
                value: self.raw.clone(),
                known: match nodes.len() {
                    0 => "the cluster has no chunk servers".to_owned(),
                    1 => "1 server".to_owned(),
                    n => format!("{n} servers"),
                },
            }),
            Err(found) => Err(AdminError::AmbiguousNode {
                value: self.raw.clone(),
                matches: found
                    .iter()
                    .map(|n| format!("{} at {}", n.node_id, n.address))
                    .collect(),
            }),
        }
    }
}

/// The one match; among several, the one that is not removed (a server removed for good and
/// its replacement at the same address are one server to a person); else every match.
fn pick(found: Vec<&ChunkNode>) -> Result<&ChunkNode, Vec<&ChunkNode>> {
    if let [one] = found[..] {
        return Ok(one);
    }
    let live: Vec<&ChunkNode> = found
        .iter()
        .copied()
        .filter(|n| n.state != NodeState::Removed as i32)
        .collect();
    match live[..] {
        [one] if found.len() > 1 => Ok(one),
        _ => Err(found),
    }
}

/// The registry prints ids as 32 lowercase hex digits; compare in that form whatever it sends.
fn normal_id(id: &str) -> String {
    id.chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The hex digits of `s` when it is a whole id or a prefix of one: hex digits, with hyphens
/// only where a hyphenated UUID has them, at most 32 digits.
fn id_prefix(s: &str) -> Option<String> {
    let mut digits = String::with_capacity(ID_DIGITS);
    for (i, c) in s.chars().enumerate() {
        if c == '-' {
            if !UUID_HYPHENS.contains(&i) {
                return None;
            }
        } else if c.is_ascii_hexdigit() {
            // A hyphenated UUID's hyphens are not optional once past their place.
            if UUID_HYPHENS.contains(&i) && s.contains('-') {
                return None;
            }
            digits.push(c.to_ascii_lowercase());
        } else {
            return None;
        }
    }
    (!digits.is_empty() && digits.len() <= ID_DIGITS).then_some(digits)
}

/// `host`, `host:port` or `[v6]:port`, with a host made of letters, digits, `.`, `-`, `_`.
fn is_address(s: &str) -> bool {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, tail)) => {
                let port = match tail {
                    "" => None,
                    t => match t.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    },
                };
                if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                    return false;
                }
                return port.is_none_or(valid_port);
            }
            None => return false,
        },
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    host_ok && port.is_none_or(valid_port)
}

fn valid_port(p: &str) -> bool {
    matches!(p.parse::<u16>(), Ok(n) if n > 0)
}

/// `host:port` matches exactly (host case-insensitively); a bare host matches any port.
fn address_matches(query: &str, address: &str) -> bool {
    if query.eq_ignore_ascii_case(address) {
        return true;
    }
    let has_port = query.ends_with(']') || (!query.starts_with('[') && query.contains(':'));
    if has_port {
        return false;
    }
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case(query.trim_start_matches('[').trim_end_matches(']'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::exit::{Classify, ExitKind};

    fn node(id: &str, address: &str, state: NodeState) -> ChunkNode {
        ChunkNode {
            node_id: id.to_owned(),
            address: address.to_owned(),
            state: state as i32,
            ..Default::default()
        }
    }

    const A: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const B: &str = "0a1b99990000111122223333444455bb";
    const C: &str = "ffee0000111122223333444455556666";

    fn cluster() -> Vec<ChunkNode> {
        vec![
            node(A, "chunk-0.dogfs:7100", NodeState::Up),
            node(B, "chunk-1.dogfs:7100", NodeState::Draining),
            node(C, "10.0.0.7:7100", NodeState::Up),
        ]
    }

    fn resolve(arg: &str) -> Result<String, AdminError> {
        let nodes = cluster();
        NodeQuery::parse(arg)?
            .resolve(&nodes)
            .map(|n| n.node_id.clone())
    }

    #[test]
    fn ids_prefixes_uuids_and_addresses_resolve() {
        assert_eq!(resolve(A).unwrap(), A);
        assert_eq!(resolve(&A.to_uppercase()).unwrap(), A);
        assert_eq!(resolve("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9").unwrap(), A);
        assert_eq!(resolve("0A1B2C3D-4E5F").unwrap(), A);
        assert_eq!(resolve("0a1b2").unwrap(), A);
        assert_eq!(resolve("0a1b9").unwrap(), B);
        assert_eq!(resolve("ff").unwrap(), C);
        assert_eq!(resolve("chunk-1.dogfs:7100").unwrap(), B);
        assert_eq!(resolve("CHUNK-1.dogfs:7100").unwrap(), B);
        assert_eq!(resolve("chunk-0.dogfs").unwrap(), A);
        assert_eq!(resolve(" 10.0.0.7:7100 ").unwrap(), C);
        assert_eq!(resolve("10.0.0.7").unwrap(), C);
    }

    #[test]
    fn ambiguous_and_unknown_values_are_named() {
        let e = resolve("0a1b").unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::InvalidInput);
        let msg = e.to_string();
        assert!(msg.starts_with("\"0a1b\" matches 2 chunk servers"), "{msg}");
        assert!(msg.contains(&format!("{A} at chunk-0.dogfs:7100")), "{msg}");
        assert!(msg.contains(B), "{msg}");

        let other_id = A.replace('0', "1");
        for unknown in [
            "abc",
            "chunk-9.dogfs:7100",
            "chunk-0.dogfs:7101",
            "10.0.0.8",
            &other_id,
        ] {
            let e = resolve(unknown).unwrap_err();
            assert_eq!(e.exit_kind(), ExitKind::NotFound, "{unknown}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{unknown:?}")), "{msg}");
            assert!(msg.contains("3 servers"), "{msg}");
        }
        let e = NodeQuery::parse("abc").unwrap().resolve(&[]).unwrap_err();
        assert!(
            e.to_string().contains("the cluster has no chunk servers"),
            "{e}"
        );
    }

    #[test]
    fn a_removed_server_yields_to_its_replacement_at_the_same_address() {
        let nodes = vec![
            node(A, "chunk-0.dogfs:7100", NodeState::Removed),
            node(C, "chunk-0.dogfs:7100", NodeState::Up),
        ];
        let q = NodeQuery::parse("chunk-0.dogfs:7100").unwrap();
        assert_eq!(q.resolve(&nodes).unwrap().node_id, C);
        // Still reachable by its id.
        let q = NodeQuery::parse(A).unwrap();
        assert_eq!(q.resolve(&nodes).unwrap().node_id, A);
        // Two live ones stay ambiguous.
        let both_up = vec![
            node(A, "chunk-0.dogfs:7100", NodeState::Up),
            node(C, "chunk-0.dogfs:7100", NodeState::Up),
        ];
        let q = NodeQuery::parse("chunk-0.dogfs").unwrap();
        assert!(matches!(
            q.resolve(&both_up),
            Err(AdminError::AmbiguousNode { .. })
        ));
    }

    #[test]
    fn values_that_cannot_name_a_server_fail_before_any_lookup() {
        for bad in [
            "",
            "   ",
            "no such node",
            "a/b",
            "host:port",
            "host:0",
            "host:70000",
            ":7100",
            "[::1",
            "[zz]:1",
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9a",
            "0a1b-2c3d",
        ] {
            let e = NodeQuery::parse(bad).unwrap_err();
            assert_eq!(e.exit_kind(), ExitKind::InvalidInput, "{bad:?}");
            assert!(
                e.to_string().contains(&format!("{:?}", bad.trim())),
                "{bad:?}: {e}"
            );
        }
        // Forms that may name one: hex alone is an id, never a host.
        let q = NodeQuery::parse("cafe").unwrap();
        assert_eq!(q.id_prefix.as_deref(), Some("cafe"));
        assert_eq!(q.address, None);
        assert!(NodeQuery::parse("dead-beef").is_err());
        let q = NodeQuery::parse("[::1]:7100").unwrap();
        assert_eq!(q.id_prefix, None);
        assert!(q.address.is_some());
        let q = NodeQuery::parse("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9").unwrap();
        assert_eq!(q.id_prefix.as_deref(), Some(A));
        assert_eq!(q.address, None);
    }

    #[test]
    fn a_host_with_letters_beyond_hex_is_an_address() {
        let nodes = vec![
            node(A, "cafe-box:7100", NodeState::Up),
            node(C, "10.0.0.7:7100", NodeState::Up),
        ];
        let q = NodeQuery::parse("cafe-box").unwrap();
        assert_eq!(q.resolve(&nodes).unwrap().node_id, A);
        assert!(NodeQuery::parse("cafe:7100").unwrap().id_prefix.is_none());
    }
}
