#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End to end: the built `dogfs` binary against a `dogfs dev` cluster run as a child process,
//! with real bytes, exit codes and messages checked as a user (or a script) would.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dogfs");

/// A `dogfs dev` child process; stopped with SIGTERM (then killed) when dropped.
struct Dev {
    child: Option<Child>,
    endpoint: String,
    /// `DOGFS_CA` as printed, with `--tls` or `--auth`.
    ca: Option<String>,
    /// `DOGFS_TOKEN` as printed, with `--auth`.
    token: Option<String>,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        Dev::start_with(dir, &[])
    }

    /// With more `dogfs dev` flags (`--chunks 7`).
    fn start_with(dir: &Path, flags: &[&str]) -> Dev {
        let mut child = Command::new(BIN)
            .args(["dev", "--dir"])
            .arg(dir)
            .args(["--port", "0", "--ready-timeout", "90s"])
            .args(flags)
            .env_remove("DOGFS_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(ep) = line.strip_prefix("DOGFS_ENDPOINT=") {
                        // With --tls (or --auth) the CA line comes next, then with --auth
                        // the token.
                        let auth = flags.contains(&"--auth");
                        let ca = (auth || flags.contains(&"--tls")).then(|| {
                            let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
                            line.strip_prefix("DOGFS_CA=").unwrap().to_owned()
                        });
                        let token = auth.then(|| {
                            let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
                            line.strip_prefix("DOGFS_TOKEN=").unwrap().to_owned()
                        });
                        return Dev {
                            child: Some(child),
                            endpoint: ep.to_owned(),
                            ca,
                            token,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    let log = std::fs::read_to_string(dir.join("dev.log")).unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    panic!(
                        "dogfs dev printed no endpoint within the deadline; stderr: {}\nlog tail:\n{tail}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }

    /// SIGTERM, then wait for a clean exit (within a deadline).
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                assert!(status.success(), "dogfs dev exited with {status}: {err}");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("dogfs dev did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with(&self.endpoint, args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with(&self.endpoint, args, Some(stdin))
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dogfs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_with(endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("DOGFS_ENDPOINT", endpoint)
        .env("DOGFS_TIMEOUT", "20s")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough, and reproducible.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn commands_against_a_dev_cluster_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let dev = Dev::start(&cluster_dir);

    // Buckets.
    dev.ok(&["mb", "demo"]);
    let again = dev.run(&["mb", "demo"]);
    assert_eq!(code(&again), 7, "{}", stderr(&again));
    assert!(stderr(&again).starts_with("dogfs: "), "{}", stderr(&again));
    let buckets = json_lines(&dev.ok(&["ls", "--json"]));
    assert!(buckets.iter().any(|b| b["name"] == "demo"), "{buckets:?}");

    // A multi-MiB object through put/get/cat/range, byte for byte.
    let big = data(3 * 1024 * 1024 + 12_345, 7);
    let big_path = work.join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    let put = json_lines(&dev.ok(&[
        "put",
        big_path.to_str().unwrap(),
        "demo/dir/big.bin",
        "--json",
        "--content-type",
        "application/x-test",
        "--meta",
        "owner=tests",
    ]));
    assert_eq!(put[0]["size"], big.len() as u64);
    let got_path = work.join("got.bin");
    dev.ok(&["get", "demo/dir/big.bin", got_path.to_str().unwrap()]);
    assert!(std::fs::read(&got_path).unwrap() == big, "get differs");
    assert!(dev.ok(&["cat", "demo/dir/big.bin"]) == big, "cat differs");
    assert!(
        dev.ok(&["get", "demo/dir/big.bin", "-"]) == big,
        "get - differs"
    );
    let part = dev.ok(&["cat", "demo/dir/big.bin", "--range", "1000-1999"]);
    assert_eq!(part, &big[1000..2000]);
    let tail = dev.ok(&["cat", "demo/dir/big.bin", "--range", "-10"]);
    assert_eq!(tail, &big[big.len() - 10..]);

    let stat = json_lines(&dev.ok(&["stat", "demo/dir/big.bin", "--json"]));
    assert_eq!(stat[0]["key"], "dir/big.bin");
    assert_eq!(stat[0]["size"], big.len() as u64);
    assert_eq!(stat[0]["content_type"], "application/x-test");
    assert_eq!(stat[0]["user_metadata"]["owner"], "tests");
    assert_eq!(stat[0]["inline"], false);
    assert_eq!(stat[0]["scheme"]["k"], 4);
    let text = String::from_utf8(dev.ok(&["stat", "demo/dir/big.bin"])).unwrap();
    assert!(text.contains("3.0 MiB"), "{text}");

    // Small objects from stdin, and a folder destination keeping the file's name.
    let small = b"hello, dogfs\n".to_vec();
    let out = dev.run_stdin(&["put", "-", "demo/dir/sub/hello.txt"], &small);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dev.ok(&["cat", "demo/dir/sub/hello.txt"]), small);
    let note_path = work.join("note.txt");
    std::fs::write(&note_path, b"note").unwrap();
    dev.ok(&["put", note_path.to_str().unwrap(), "demo/"]);
    assert_eq!(dev.ok(&["cat", "demo/note.txt"]), b"note");

    // Listing: one level by default, everything with -r, and prefixes.
    let top = String::from_utf8(dev.ok(&["ls", "demo"])).unwrap();
    assert!(top.contains("PRE  dir/"), "{top}");
    assert!(top.contains("note.txt"), "{top}");
    assert!(!top.contains("big.bin"), "{top}");
    let all = json_lines(&dev.ok(&["ls", "-r", "demo", "--json"]));
    let keys: Vec<&str> = all.iter().filter_map(|e| e["key"].as_str()).collect();
    assert_eq!(keys, ["dir/big.bin", "dir/sub/hello.txt", "note.txt"]);
    let under = json_lines(&dev.ok(&["ls", "demo/dir/", "--json"]));
    assert_eq!(under.len(), 2, "{under:?}");
    assert_eq!(under[0]["key"], "dir/big.bin");
    assert_eq!(under[1]["prefix"], "dir/sub/");

    // A key with a newline, a tab and a backslash: one escaped line for people, exact in JSON.
    let odd = "odd/line\nbreak\tand\\slash";
    let out = dev.run_stdin(&["put", "-", &format!("demo/{odd}")], b"odd");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(dev.ok(&["ls", "-r", "demo/odd/"])).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(
        text.trim_end().ends_with("odd/line\\nbreak\\tand\\\\slash"),
        "{text:?}"
    );
    let listed = json_lines(&dev.ok(&["ls", "-r", "demo/odd/", "--json"]));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["key"], odd);
    assert_eq!(dev.ok(&["cat", &format!("demo/{odd}")]), b"odd");
    dev.ok(&["rm", &format!("demo/{odd}")]);

    // Errors: exit codes and messages naming the culprit.
    let missing = dev.run(&["get", "nosuchbucket/k", "-"]);
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("nosuchbucket"),
        "{}",
        stderr(&missing)
    );
    let missing = dev.run(&["stat", "demo/no/such/key"]);
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("no/such/key"),
        "{}",
        stderr(&missing)
    );
    let missing = dev.run(&["rm", "demo/no-such-key"]);
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    dev.ok(&["rm", "-f", "demo/no-such-key"]);
    let bad = dev.run(&["put", note_path.to_str().unwrap(), "Bad_Bucket/x"]);
    assert_eq!(code(&bad), 4, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("Bad_Bucket"), "{}", stderr(&bad));
    let bad_range = dev.run(&["cat", "demo/note.txt", "--range", "100-200"]);
    assert_eq!(code(&bad_range), 4, "{}", stderr(&bad_range));
    let full = dev.run(&["rb", "demo"]);
    assert_eq!(code(&full), 7, "{}", stderr(&full));
    assert!(stderr(&full).contains("demo"), "{}", stderr(&full));

    // rm and rb.
    dev.ok(&["rm", "demo/note.txt"]);
    let gone = dev.run(&["cat", "demo/note.txt"]);
    assert_eq!(code(&gone), 3, "{}", stderr(&gone));
    dev.ok(&["mb", "scratch"]);
    dev.ok(&["rb", "scratch"]);
    let gone = dev.run(&["ls", "scratch"]);
    assert_eq!(code(&gone), 3, "{}", stderr(&gone));

    // Cluster state.
    let status = String::from_utf8(dev.ok(&["cluster", "status"])).unwrap();
    assert!(status.contains("6/6 chunk servers up"), "{status}");
    assert!(status.contains("0 (system)"), "{status}");
    let status = json_lines(&dev.ok(&["cluster", "status", "--json"]));
    let groups = status[0]["groups"].as_array().unwrap();
    assert!(!groups.is_empty());
    assert!(groups.iter().all(|g| g["leader_id"].is_u64()), "{groups:?}");
    let nodes = json_lines(&dev.ok(&["cluster", "nodes", "--json"]));
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n["state"] == "up"), "{nodes:?}");

    // Admin: the node table, and NODE arguments that name no server, or several.
    let nodes = json_lines(&dev.ok(&["admin", "nodes", "--json"]));
    assert_eq!(nodes.len(), 6);
    assert!(
        nodes
            .iter()
            .all(|n| n["state"] == "up" && n["drain"].is_null()),
        "{nodes:?}"
    );
    let table = String::from_utf8(dev.ok(&["admin", "nodes"])).unwrap();
    assert_eq!(table.lines().count(), 7, "{table}");
    assert!(table.lines().next().unwrap().ends_with("DRAIN"), "{table}");
    let unknown = "f".repeat(32);
    for (arg, want, says) in [
        (unknown.as_str(), 3, "no chunk server has"),
        ("127.0.0.1:1", 3, "no chunk server has"),
        ("127.0.0.1", 4, "matches 6 chunk servers"),
    ] {
        for cmd in ["drain", "undrain", "remove"] {
            let out = dev.run(&["admin", cmd, arg]);
            let err = stderr(&out);
            assert_eq!(code(&out), want, "admin {cmd} {arg}: {err}");
            assert!(err.contains(&format!("{arg:?}")), "{err}");
            assert!(err.contains(says), "{err}");
        }
    }

    // Restart on the same directory: same endpoint, same data.
    let endpoint = dev.endpoint.clone();
    dev.stop();
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cluster_dir.join("dev.json")).unwrap()).unwrap();
    assert_eq!(layout["meta_grpc"].as_array().unwrap().len(), 3);
    let dev = Dev::start(&cluster_dir);
    assert_eq!(dev.endpoint, endpoint);
    assert!(
        dev.ok(&["cat", "demo/dir/big.bin"]) == big,
        "data lost over a restart"
    );
    assert_eq!(dev.ok(&["cat", "demo/dir/sub/hello.txt"]), small);
    dev.stop();
}

#[test]
fn unreachable_endpoint_is_exit_5_within_the_timeout() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let out = run_with(
        &format!("127.0.0.1:{port}"),
        &["--timeout", "2s", "ls"],
        None,
    );
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("dogfs: "), "{}", stderr(&out));
    assert!(stderr(&out).contains(&port.to_string()), "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn bad_names_and_usage_fail_before_any_network_call() {
    // Port 1 is never a DogFS endpoint: an answer here means no connection was tried.
    for (args, want, names) in [
        (&["stat", "Bad_Bucket/key"][..], 4, "Bad_Bucket"),
        (&["mb", "ab"][..], 4, "ab"),
        (&["get", "bucket-only", "-"][..], 4, "bucket-only"),
        (&["ls", "UPPER/x"][..], 4, "UPPER"),
    ] {
        let out = run_with("127.0.0.1:1", args, None);
        assert_eq!(code(&out), want, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(names), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let out = run_with("127.0.0.1:1", &["put"], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    // NODE arguments that cannot name a chunk server, whatever the cluster holds.
    for (cmd, node) in [
        ("drain", "not a node"),
        ("undrain", "dead-beef"),
        ("remove", "0123456789abcdef0123456789abcdef0"),
        ("drain", "host:99999"),
    ] {
        let out = run_with("127.0.0.1:1", &["admin", cmd, node], None);
        let err = stderr(&out);
        assert_eq!(code(&out), 4, "admin {cmd} {node}: {err}");
        assert!(err.contains(&format!("{node:?}")), "{err}");
        assert!(err.contains("is not a chunk server"), "{err}");
    }
    for args in [
        &["admin", "drain"][..],
        &["admin", "rebalance", "start", "--spread", "0"][..],
        &["admin", "rebalance", "start", "--spread", "100"][..],
        &["admin", "rebalance", "go"][..],
    ] {
        let out = run_with("127.0.0.1:1", args, None);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    let out = run_with("127.0.0.1:1", &["get", "b/k", "--range", "x"], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run_with("127.0.0.1:1", &["put", "/no/such/file", "bkt/k"], None);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("/no/such/file"), "{}", stderr(&out));
}

/// A TCP listener that accepts connections and never answers (a frozen or black-holed
/// node); its thread holds the connections until the test process ends.
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

#[test]
fn a_silent_endpoint_ends_every_command_at_the_timeout() {
    let hole = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    std::fs::write(&file, data(100_000, 3)).unwrap();
    let got = dir.path().join("got.bin");
    let file = file.to_str().unwrap();
    let got = got.to_str().unwrap();
    let timeout = Duration::from_secs(2);
    for (args, want) in [
        (&["ls"][..], 5),
        (&["ls", "bkt"][..], 5),
        (&["put", file, "bkt/k"][..], 5),
        (&["get", "bkt/k", got][..], 5),
        (&["stat", "bkt/k"][..], 5),
        // A delete was sent and never answered: it may have happened.
        (&["rm", "bkt/k"][..], 8),
    ] {
        let mut full = vec!["--timeout", "2s"];
        full.extend_from_slice(args);
        let start = Instant::now();
        let out = run_with(&hole, &full, None);
        let took = start.elapsed();
        let err = stderr(&out);
        assert_eq!(code(&out), want, "{args:?}: {err}");
        assert!(
            took >= timeout - Duration::from_millis(100)
                && took < timeout + Duration::from_millis(1500),
            "{args:?} took {took:?}: {err}"
        );
        assert!(err.starts_with("dogfs: "), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("--timeout 2s"), "{args:?}: {err}");
        assert!(err.contains("did not answer"), "{args:?}: {err}");
        assert!(err.contains(&hole), "{args:?}: {err}");
        if want == 8 {
            assert!(err.contains("may or may not have been deleted"), "{err}");
            assert!(err.contains("dogfs stat bkt/k"), "{err}");
        }
    }
    assert!(!Path::new(got).exists(), "a failed get left a file");

    // --json: stdout stays for results; the error is one JSON document on stderr.
    let out = run_with(&hole, &["--timeout", "1s", "--json", "rm", "bkt/k"], None);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let doc: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(doc["outcome"], "unknown", "{doc}");
    assert_eq!(doc["kind"], "outcome_unknown", "{doc}");
    assert_eq!(doc["exit_code"], 8, "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("bkt/k"), "{doc}");
    let out = run_with(&hole, &["--timeout", "1s", "--json", "ls"], None);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(doc["outcome"], serde_json::Value::Null, "{doc}");
    assert_eq!(doc["kind"], "unavailable", "{doc}");
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let hole = black_hole();
    let out = Command::new(BIN)
        .args(["--timeout", "500ms", "ls"])
        .env("DOGFS_ENDPOINT", &hole)
        .env("RUST_LOG", "dogfs_client=debug")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    // Logs were written (the retries), and not one escape sequence among them.
    assert!(err.contains("DEBUG"), "{err}");
    assert!(!err.contains("\x1b["), "{err:?}");
}

/// The admin commands end to end on a dev cluster of 7 chunk servers (one can be drained with
/// 4+2): a drain waited for, the data read back, removal, a drain that cannot finish (stuck
/// shards) given up at the timeout and undrained, and a rebalance waited for.
#[test]
fn admin_drain_remove_undrain_and_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(&dir.path().join("cluster"), &["--chunks", "7"]);
    dev.ok(&["mb", "demo"]);
    let objects: Vec<Vec<u8>> = (0..4)
        .map(|i| data(2 * 1024 * 1024 + i, 40 + i as u64))
        .collect();
    for (i, o) in objects.iter().enumerate() {
        let out = dev.run_stdin(&["put", "-", &format!("demo/o{i}")], o);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let nodes = json_lines(&dev.ok(&["admin", "nodes", "--json"]));
    assert_eq!(nodes.len(), 7);
    // By address, as a person reading the table would.
    let victim = nodes[0]["address"].as_str().unwrap().to_owned();
    let victim_id = nodes[0]["node_id"].as_str().unwrap().to_owned();
    let done = json_lines(&dev.ok(&[
        "admin",
        "drain",
        &victim,
        "--wait",
        "--timeout",
        "120s",
        "--json",
    ]));
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["node_id"], victim_id.as_str());
    assert_eq!(done[0]["state"], "draining");
    assert_eq!(done[0]["drain"]["drained"], true, "{done:?}");
    assert_eq!(done[0]["drain"]["shards_left"], 0, "{done:?}");
    for (i, o) in objects.iter().enumerate() {
        assert!(
            dev.ok(&["cat", &format!("demo/o{i}")]) == *o,
            "o{i} differs after the drain"
        );
    }
    let status = json_lines(&dev.ok(&["cluster", "status", "--json"]));
    let drained = status[0]["chunk_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == victim_id.as_str())
        .unwrap();
    assert_eq!(drained["drain"]["drained"], true, "{drained}");
    assert!(status[0]["rebalance"]["state"].is_string(), "{status:?}");
    let text = String::from_utf8(dev.ok(&["cluster", "status"])).unwrap();
    assert!(text.contains("\ndraining:\n"), "{text}");
    assert!(text.contains("\nrebalance: "), "{text}");
    let table = String::from_utf8(dev.ok(&["admin", "nodes"])).unwrap();
    assert!(table.contains(" drained "), "{table}");

    // An up server cannot be removed; the drained one can (by an id prefix), and stays listed
    // as removed.
    let up_id = nodes[1]["node_id"].as_str().unwrap().to_owned();
    let refused = dev.run(&["admin", "remove", &up_id]);
    assert_eq!(code(&refused), 7, "{}", stderr(&refused));
    assert!(stderr(&refused).contains(&up_id), "{}", stderr(&refused));
    let removed = json_lines(&dev.ok(&["admin", "remove", &victim_id[..12], "--json"]));
    assert_eq!(removed[0]["state"], "removed", "{removed:?}");

    // Six servers left for 4+2: a second drain has shards no server can take. `--wait` gives
    // up at the timeout (exit 5), saying so; the drain goes on until undrained.
    let start = Instant::now();
    let stuck = dev.run(&["admin", "drain", &up_id, "--wait", "--timeout", "3s"]);
    let err = stderr(&stuck);
    assert_eq!(code(&stuck), 5, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    // Progress lines first (stderr is no terminal: plain lines, no bar), the error last.
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dogfs: the drain of chunk server"),
        "{err}"
    );
    assert!(last.contains("did not finish within --timeout 3s"), "{err}");
    assert!(last.contains("dogfs admin nodes"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(err.lines().all(|l| l.starts_with("dogfs: ")), "{err}");
    let back = json_lines(&dev.ok(&["admin", "undrain", &up_id, "--json"]));
    assert_eq!(back[0]["state"], "up", "{back:?}");

    let done = json_lines(&dev.ok(&[
        "admin",
        "rebalance",
        "start",
        "--spread",
        "20",
        "--wait",
        "--timeout",
        "120s",
        "--json",
    ]));
    assert_eq!(done[0]["state"], "done", "{done:?}");
    let status = json_lines(&dev.ok(&["admin", "rebalance", "status", "--json"]));
    assert_eq!(status[0]["state"], "done", "{status:?}");
    assert_eq!(status[0]["reason"], "admin", "{status:?}");
    let text = String::from_utf8(dev.ok(&["admin", "rebalance", "status"])).unwrap();
    assert!(text.starts_with("state:      done (admin)"), "{text}");
    dev.ok(&["admin", "rebalance", "stop"]);
    for (i, o) in objects.iter().enumerate() {
        assert!(
            dev.ok(&["cat", &format!("demo/o{i}")]) == *o,
            "o{i} differs at the end"
        );
    }
    dev.stop();
}

/// `dogfs dev --tls`: every server on TLS with a CA of the cluster's own (printed as
/// `DOGFS_CA`); the CLI with `--ca` writes and reads back exact bytes, without it gets
/// nothing; a restart keeps the same CA.
#[test]
fn dev_tls_serves_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--tls"]);
    let ca = dev.ca.clone().unwrap();
    let ca_pem = std::fs::read(&ca).unwrap();
    dev.ok(&["--ca", &ca, "mb", "sec"]);
    let data = data(3 << 20, 9);
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    dev.ok(&["--ca", &ca, "put", src.to_str().unwrap(), "sec/k"]);
    assert!(
        dev.ok(&["--ca", &ca, "cat", "sec/k"]) == data,
        "cat differs"
    );
    let plain = dev.run(&["--timeout", "2s", "cat", "sec/k"]);
    assert!(!plain.status.success(), "plain text was served");
    dev.stop();
    let again = Dev::start_with(dir.path(), &["--tls"]);
    assert_eq!(std::fs::read(again.ca.as_ref().unwrap()).unwrap(), ca_pem);
    assert!(
        again.ok(&["--ca", &ca, "cat", "sec/k"]) == data,
        "cat after restart"
    );
    again.stop();
}

/// `dogfs dev --auth`: TLS, bearer tokens and shard grants, the bootstrap admin token printed
/// as `DOGFS_TOKEN`; the CLI with it writes and reads back exact bytes, without it (or with a
/// token it created and then revoked) gets nothing; a restart keeps the same token.
#[test]
fn dev_auth_serves_only_token_holders() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start_with(dir.path(), &["--auth"]);
    let (ca, token) = (dev.ca.clone().unwrap(), dev.token.clone().unwrap());
    dev.ok(&["--ca", &ca, "--token", &token, "mb", "sec"]);
    let data = data(3 << 20, 11);
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    dev.ok(&[
        "--ca",
        &ca,
        "--token",
        &token,
        "put",
        src.to_str().unwrap(),
        "sec/k",
    ]);
    assert!(
        dev.ok(&["--ca", &ca, "--token", &token, "cat", "sec/k"]) == data,
        "cat differs"
    );
    let anonymous = dev.run(&["--ca", &ca, "--timeout", "5s", "cat", "sec/k"]);
    assert!(!anonymous.status.success(), "served without a token");
    let err = String::from_utf8_lossy(&anonymous.stderr);
    assert!(err.contains("requires a bearer token"), "{err}");
    // A read token created with the CLI reads; revoked, it does not.
    let made = dev.ok(&[
        "--ca", &ca, "--token", &token, "admin", "token", "create", "--name", "ci", "--scope",
        "read",
    ]);
    let reader = String::from_utf8(made).unwrap().trim().to_owned();
    assert!(
        dev.ok(&["--ca", &ca, "--token", &reader, "cat", "sec/k"]) == data,
        "cat with the read token"
    );
    let denied = dev.run(&["--ca", &ca, "--token", &reader, "rm", "sec/k"]);
    assert!(!denied.status.success(), "a read token deleted");
    dev.ok(&[
        "--ca", &ca, "--token", &token, "admin", "token", "revoke", &reader,
    ]);
    let revoked = dev.run(&[
        "--ca",
        &ca,
        "--token",
        &reader,
        "--timeout",
        "5s",
        "cat",
        "sec/k",
    ]);
    assert!(!revoked.status.success(), "a revoked token was served");
    dev.stop();
    let again = Dev::start_with(dir.path(), &["--auth"]);
    assert_eq!(again.token.as_deref(), Some(token.as_str()));
    assert!(
        again.ok(&["--ca", &ca, "--token", &token, "cat", "sec/k"]) == data,
        "cat after restart"
    );
    again.stop();
}
