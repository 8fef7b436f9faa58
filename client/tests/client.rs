//! The whole `Client` against six real chunk servers and an in-memory metadata service that
//! follows meta.proto (tests/fake_meta): buckets, inline and erasure-coded objects, ranges,
//! listing, leader hints, retries, replacement of a dead target, local validation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_meta;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dogfs_chunk::{ChunkConfig, ChunkServer};
use dogfs_client::{Client, ClientConfig, ErrorKind, GetOptions, ListEntry, ListQuery, PutOptions};
use dogfs_proto::meta::ErasureScheme;
use fake_meta::{FakeMeta, INLINE_MAX};
use futures::TryStreamExt;
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;

struct Env {
    _chunks: Vec<ChunkServer>,
    _dirs: Vec<TempDir>,
    meta: FakeMeta,
    client: Client,
}

fn config(endpoints: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::new(endpoints);
    c.shard_timeout = Duration::from_secs(2);
    c.backoff_base = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(50);
    c.retry_deadline = Duration::from_secs(10);
    c
}

/// Six chunk servers (plus `extra` addresses placed after them) and one fake metadata node;
/// RS 4+2 with 16 KiB cells and 128 KiB segments, so small objects have many segments.
async fn env(extra: Vec<(String, String)>) -> Env {
    let mut chunks = Vec::new();
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkServer::start(&ChunkConfig::for_tests(dir.path()))
            .await
            .unwrap();
        servers.push((
            format!("{:032x}", s.store().node_id().as_u128()),
            s.grpc_addr().to_string(),
        ));
        chunks.push(s);
        dirs.push(dir);
    }
    let mut placed = extra;
    placed.extend(servers);
    let scheme = ErasureScheme {
        codec: "rs".into(),
        k: 4,
        m: 2,
        cell_size: 16 * 1024,
    };
    let meta = FakeMeta::new(placed, scheme, 128 * 1024);
    let addr = meta.clone().serve().await;
    let client = Client::connect(config(vec![addr.to_string()]))
        .await
        .unwrap();
    Env {
        _chunks: chunks,
        _dirs: dirs,
        meta,
        client,
    }
}

fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets() {
    let e = env(Vec::new()).await;
    let c = &e.client;
    let b = c.create_bucket("photos").await.unwrap();
    assert_eq!(b.name, "photos");
    assert_eq!(c.head_bucket("photos").await.unwrap().name, "photos");
    let err = c.create_bucket("photos").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("photos"), "{err}");
    c.create_bucket("docs").await.unwrap();
    let names: Vec<String> = c
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, vec!["docs", "photos"]);
    c.put_bytes("photos", "a.jpg", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let err = c.delete_bucket("photos").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Precondition, "{err}");
    assert!(c.delete("photos", "a.jpg").await.unwrap());
    assert!(!c.delete("photos", "a.jpg").await.unwrap());
    c.delete_bucket("photos").await.unwrap();
    let err = c.head_bucket("photos").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("photos"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_without_a_round_trip() {
    // Nothing listens there: an answer can only come from local validation.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let c = Client::connect(config(vec![dead])).await.unwrap();
    let t = Instant::now();
    for err in [
        c.create_bucket("Bad_Bucket").await.unwrap_err(),
        c.head("ok-bucket", "").await.unwrap_err(),
        c.get_bytes("ab", "k").await.unwrap_err(),
        c.put_bytes("ok-bucket", "a\0b", Bytes::new())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    let err = c.create_bucket("Bad_Bucket").await.unwrap_err();
    assert!(err.to_string().contains("Bad_Bucket"), "{err}");
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_every_size_round_trip() {
    let e = env(Vec::new()).await;
    let c = &e.client;
    c.create_bucket("data").await.unwrap();
    let sizes = [
        0usize,
        1,
        INLINE_MAX as usize,
        INLINE_MAX as usize + 1,
        64 * 1024 - 1,
        128 * 1024,
        1024 * 1024 + 3,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let key = format!("obj/{size}");
        let data = random_bytes(size, i as u64);
        let mut meta = BTreeMap::new();
        meta.insert("owner".to_string(), "test".to_string());
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = Arc::clone(&seen);
        let info = c
            .put(
                "data",
                &key,
                &data[..],
                size as u64,
                PutOptions {
                    content_type: Some("application/x-test".into()),
                    user_metadata: meta.clone(),
                    progress: Some(Arc::new(move |n| {
                        assert!(n >= s2.load(Ordering::SeqCst));
                        s2.store(n, Ordering::SeqCst);
                    })),
                },
            )
            .await
            .unwrap();
        assert_eq!(info.size, size as u64);
        assert_eq!(info.inline, size as u64 <= INLINE_MAX, "size {size}");
        assert_eq!(info.user_metadata, meta);
        assert_eq!(info.content_type, "application/x-test");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            size as u64,
            "progress of {size}"
        );
        let crc = format!("{:08x}", crc32c::crc32c(&data));
        assert!(info.etag.starts_with(&crc), "etag {} of {size}", info.etag);
        let got = c.get_bytes("data", &key).await.unwrap();
        assert!(got == data, "size {size}");
        let head = c.head("data", &key).await.unwrap();
        assert_eq!(head.etag, info.etag);
        if size > 10 {
            let r = 3..size as u64 - 2;
            let mut out = Vec::new();
            let written = Arc::new(AtomicU64::new(0));
            let w2 = Arc::clone(&written);
            c.get(
                "data",
                &key,
                &mut out,
                GetOptions {
                    range: Some(r.clone()),
                    progress: Some(Arc::new(move |n| w2.store(n, Ordering::SeqCst))),
                },
            )
            .await
            .unwrap();
            assert!(
                out[..] == data[r.start as usize..r.end as usize],
                "range of {size}"
            );
            assert_eq!(written.load(Ordering::SeqCst), r.end - r.start);
        }
    }
    // A range past the end names the object.
    let err = c
        .get(
            "data",
            "obj/1",
            &mut Vec::new(),
            GetOptions {
                range: Some(0..2),
                progress: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("obj/1"), "{err}");
    let err = c.get_bytes("data", "nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // A reader shorter than the declared size stores nothing.
    let err = c
        .put("data", "short", &b"abc"[..], 100_000, PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(
        c.head("data", "short").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_and_common_prefixes() {
    let e = env(Vec::new()).await;
    let c = &e.client;
    c.create_bucket("list").await.unwrap();
    let keys = ["a", "b/1", "b/2", "b/3", "c", "d/x/y", "e"];
    for k in keys {
        c.put_bytes("list", k, Bytes::from_static(b"v"))
            .await
            .unwrap();
    }
    let all: Vec<String> = c
        .list(
            "list",
            ListQuery {
                max_keys: Some(2),
                ..Default::default()
            },
        )
        .map_ok(|e| e.name().to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all, keys);
    let grouped: Vec<ListEntry> = c
        .list(
            "list",
            ListQuery {
                delimiter: "/".into(),
                max_keys: Some(1),
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    let names: Vec<&str> = grouped.iter().map(ListEntry::name).collect();
    assert_eq!(names, ["a", "b/", "c", "d/", "e"]);
    assert!(matches!(grouped[1], ListEntry::CommonPrefix(_)));
    let page = c
        .list_page(
            "list",
            &ListQuery {
                prefix: "b/".into(),
                max_keys: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(page.truncated);
    assert_eq!(page.entries.len(), 2);
    assert!(page.next_token.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_leader_hint_and_retries_elections() {
    let e = env(Vec::new()).await;
    // A follower that cannot forward: refuses everything, naming the leader.
    let follower = e.meta.peer();
    let leader_addr = e.meta.address.lock().unwrap().clone();
    *follower.faults.redirect_to.lock().unwrap() = Some(leader_addr);
    let f_addr = follower.clone().serve().await;
    let c = Client::connect(config(vec![f_addr.to_string()]))
        .await
        .unwrap();
    c.create_bucket("hinted").await.unwrap();
    c.put_bytes("hinted", "k", random_bytes(300_000, 1))
        .await
        .unwrap();
    assert_eq!(c.get_bytes("hinted", "k").await.unwrap().len(), 300_000);
    assert!(follower.faults.calls.load(Ordering::SeqCst) >= 1);

    // An election: the next calls are refused without a hint, then it is over.
    e.meta.faults.fail_next.store(3, Ordering::SeqCst);
    let t = Instant::now();
    e.client.create_bucket("after-election").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));

    // A cluster that never recovers: a clear Unavailable within the retry budget.
    let mut cfg = config(vec![f_addr.to_string()]);
    cfg.max_retries = 3;
    let c = Client::connect(cfg).await.unwrap();
    e.meta.faults.fail_next.store(1000, Ordering::SeqCst);
    let t = Instant::now();
    let err = c.head_bucket("hinted").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("hinted"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_is_replaced_through_metadata() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    // The dead server is first in the placement list, so every segment has a shard on it.
    let e = env(vec![("d".repeat(32), dead.clone())]).await;
    let c = &e.client;
    c.create_bucket("repl").await.unwrap();
    let data = random_bytes(600_000, 5);
    c.put_bytes("repl", "obj", data.clone()).await.unwrap();
    assert!(e.meta.faults.replace_calls.load(Ordering::SeqCst) >= 1);
    let segments = e.meta.object_segments("repl", "obj");
    for s in &segments {
        assert!(s.shards.iter().all(|l| !l.missing && l.address != dead));
    }
    assert!(c.get_bytes("repl", "obj").await.unwrap() == data);
    // Admin calls pass through.
    assert_eq!(c.list_nodes().await.unwrap().len(), 7);
    assert_eq!(c.cluster_status().await.unwrap().partitions, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_connections() {
    let e = env(Vec::new()).await;
    e.client.create_bucket("par").await.unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let c = e.client.clone();
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(100_000 + i as usize * 7_000, i);
            let key = format!("k{i}");
            if let Err(err) = c.put_bytes("par", &key, data.clone()).await {
                errors.lock().unwrap().push(err.to_string());
                return;
            }
            let got = c.get_bytes("par", &key).await.unwrap();
            assert!(got == data);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
}

/// A TCP listener that accepts connections and never answers, as a frozen (SIGSTOPped) node
/// or a black-holed one looks to a client. Its thread holds the connections until the test
/// process ends.
fn black_hole() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    addr
}

/// `timeout` per attempt and `deadline` per call, with quick backoff.
fn bounded(endpoints: Vec<String>, timeout: Duration, deadline: Duration) -> ClientConfig {
    let mut c = config(endpoints);
    c.request_timeout = timeout;
    c.retry_deadline = deadline;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_changes_are_outcome_unknown_within_the_deadline() {
    let e = env(Vec::new()).await;
    let addr = e.meta.address.lock().unwrap().clone();
    let deadline = Duration::from_secs(2);
    let c = Client::connect(bounded(vec![addr], Duration::from_millis(400), deadline))
        .await
        .unwrap();
    c.create_bucket("amb").await.unwrap();
    c.put_bytes("amb", "exists", Bytes::from_static(b"x"))
        .await
        .unwrap();
    // Every change from now on is received and never answered, nor applied.
    e.meta.faults.hang_writes.store(1000, Ordering::SeqCst);
    e.meta
        .faults
        .apply_before_hang
        .store(false, Ordering::SeqCst);

    // An erasure-coded PUT: the data goes out, the commit is never answered. The commit has
    // the whole deadline after the data moved, and no more.
    let data = random_bytes(300_000, 9);
    let t = Instant::now();
    let err = c
        .put(
            "amb",
            "big",
            &data[..],
            data.len() as u64,
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.kind(), ErrorKind::OutcomeUnknown, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("CommitObject"), "{msg}");
    assert!(msg.contains("may or may not have been written"), "{msg}");
    assert!(msg.contains("\"amb\"/\"big\""), "{msg}");
    assert!(took >= deadline && took < deadline * 2, "{took:?}");

    // An inline PUT and a DELETE: the same, within the deadline.
    for (what, result) in [
        ("inline put", {
            let t = Instant::now();
            let r = c
                .put_bytes("amb", "small", Bytes::from_static(b"tiny"))
                .await;
            (r.map(|_| ()), t.elapsed())
        }),
        ("delete", {
            let t = Instant::now();
            let r = c.delete("amb", "exists").await;
            (r.map(|_| ()), t.elapsed())
        }),
    ] {
        let (r, took) = result;
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutcomeUnknown, "{what}: {err}");
        assert!(err.to_string().contains("may or may not"), "{what}: {err}");
        assert!(
            took < deadline + Duration::from_millis(500),
            "{what}: {took:?}"
        );
    }
    let msg = c.delete("amb", "exists").await.unwrap_err().to_string();
    assert!(msg.contains("may or may not have been deleted"), "{msg}");

    // Reads are not changes: a lost read is plainly unavailable... but reads answer here.
    e.meta.faults.hang_writes.store(0, Ordering::SeqCst);
    assert_eq!(
        c.head("amb", "big").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(c.head("amb", "exists").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_answer_was_lost_is_retried_to_success() {
    let e = env(Vec::new()).await;
    let addr = e.meta.address.lock().unwrap().clone();
    let c = Client::connect(bounded(
        vec![addr],
        Duration::from_millis(400),
        Duration::from_secs(3),
    ))
    .await
    .unwrap();
    c.create_bucket("lost").await.unwrap();
    e.meta
        .faults
        .apply_before_hang
        .store(true, Ordering::SeqCst);

    // The commit is applied and its answer lost; the retry is told "already committed as
    // the current version", which is success.
    e.meta.faults.hang_writes.store(1, Ordering::SeqCst);
    let data = random_bytes(300_000, 3);
    let info = c.put_bytes("lost", "big", data.clone()).await.unwrap();
    assert_eq!(e.meta.faults.hang_writes.load(Ordering::SeqCst), 0);
    assert_eq!(
        c.head("lost", "big").await.unwrap().version_id,
        info.version_id
    );
    assert!(c.get_bytes("lost", "big").await.unwrap() == data);

    // An inline put repeated stores the same bytes again.
    e.meta.faults.hang_writes.store(1, Ordering::SeqCst);
    c.put_bytes("lost", "small", Bytes::from_static(b"abc"))
        .await
        .unwrap();
    assert_eq!(&c.get_bytes("lost", "small").await.unwrap()[..], b"abc");

    // A delete applied whose answer was lost: the retry finds nothing, and the SDK still
    // reports that the object existed (it was there; this call deleted it).
    e.meta.faults.hang_writes.store(1, Ordering::SeqCst);
    assert!(c.delete("lost", "small").await.unwrap());
    assert_eq!(
        c.head("lost", "small").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_endpoint_among_three_costs_at_most_one_attempt() {
    let e = env(Vec::new()).await;
    let a1 = e.meta.address.lock().unwrap().clone();
    let a2 = e.meta.peer().serve().await.to_string();
    let frozen = black_hole();
    // The map even names the frozen node as every group's leader.
    *e.meta.faults.map_leader.lock().unwrap() = Some(frozen.clone());
    // A long per-request timeout, as the SDK's default: the call's deadline must still win.
    let deadline = Duration::from_secs(3);
    let cfg = bounded(
        vec![frozen.clone(), a1, a2],
        Duration::from_secs(30),
        deadline,
    );
    let t = Instant::now();
    let c = Client::connect(cfg).await.unwrap();
    assert!(t.elapsed() < deadline, "connect took {:?}", t.elapsed());
    let limit = deadline + Duration::from_millis(500);
    let timed = |what: &str, t: Instant| {
        let took = t.elapsed();
        assert!(took < limit, "{what} took {took:?}");
    };
    let t = Instant::now();
    c.create_bucket("frz").await.unwrap();
    timed("create_bucket", t);
    for i in 0..4u64 {
        let key = format!("k{i}");
        let data = random_bytes(if i % 2 == 0 { 200_000 } else { 100 }, i);
        let t = Instant::now();
        c.put_bytes("frz", &key, data.clone()).await.unwrap();
        timed("put", t);
        let t = Instant::now();
        assert!(c.get_bytes("frz", &key).await.unwrap() == data);
        timed("get", t);
        let t = Instant::now();
        let n = c
            .list("frz", ListQuery::default())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len();
        assert_eq!(n, 1);
        timed("list", t);
        let t = Instant::now();
        assert!(c.delete("frz", &key).await.unwrap());
        timed("delete", t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_alone_ends_every_call_at_its_deadline() {
    let hole = black_hole();
    let deadline = Duration::from_secs(1);
    let t = Instant::now();
    // 30 s per attempt, as the default: only the call's deadline can end it in time.
    let c = Client::connect(bounded(
        vec![hole.clone()],
        Duration::from_secs(30),
        deadline,
    ))
    .await
    .unwrap();
    assert!(t.elapsed() < deadline, "connect took {:?}", t.elapsed());
    for what in ["head", "create_bucket", "list", "put"] {
        let t = Instant::now();
        let err = match what {
            "head" => c.head("bkt", "k").await.map(|_| ()),
            "create_bucket" => c.create_bucket("bkt").await.map(|_| ()),
            "list" => c.list_page("bkt", &ListQuery::default()).await.map(|_| ()),
            _ => c
                .put_bytes("bkt", "k", random_bytes(100_000, 1))
                .await
                .map(|_| ()),
        }
        .unwrap_err();
        let took = t.elapsed();
        // A change sent to a node that never answers may have been applied; a read, or a
        // BeginPut (an upload record that expires), is plainly unavailable.
        let want = if what == "create_bucket" {
            ErrorKind::OutcomeUnknown
        } else {
            ErrorKind::Unavailable
        };
        assert_eq!(err.kind(), want, "{what}: {err}");
        assert!(err.to_string().contains(&hole), "{what}: {err}");
        assert!(err.to_string().contains("did not answer"), "{what}: {err}");
        assert!(
            took < deadline + Duration::from_millis(300),
            "{what} took {took:?}"
        );
    }
    // A handle with an overall deadline: the operation ends by it, though each call alone
    // would have its full second.
    let short = c.with_deadline(Instant::now() + Duration::from_millis(300));
    let t = Instant::now();
    let err = short.head("bkt", "k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}
