//! End-to-end tests of the core port: real coordinator and slave processes on loopback,
//! the binary client, raw memcached-text sockets, and both replicas checked directly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, DEADLINE, Expected, Proc, TempDir, bin, run_client, wait_until};
use piazza::Client;
use piazza::rng::Rng;
use piazza::wire::TableSel;

/// A value with `\r\n` and zero bytes in it, of a random size up to 100 KiB (most small).
fn awkward_value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => rng.below(100 * 1024 + 1) as usize,
        1 => 0,
        _ => rng.below(300) as usize,
    };
    let mut value = rng.bytes(len);
    if len >= 4 {
        value[0] = b'\r';
        value[1] = b'\n';
        value[2] = 0;
    }
    value
}

#[test]
fn binary_client_stores_reads_and_deletes_with_two_copies() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let mut rng = Rng::new(0x5EED, 0);
    let mut data = Vec::new();
    for i in 0..1000 {
        let mut key = format!("bin-{i}-").into_bytes();
        key.extend(rng.bytes(3)); // binary keys are fine in this protocol
        let value = awkward_value(&mut rng);
        let flags = rng.next() as u32;
        client.put_with_flags(&key, &value, flags).unwrap();
        data.push((key, value, flags));
    }
    for (key, value, flags) in &data {
        let got = client.get(key).unwrap().expect("stored key is readable");
        assert_eq!(&got.value, value);
        assert_eq!(got.flags, *flags);
    }
    let mut expected: Expected = data
        .iter()
        .map(|(key, value, _)| (key.clone(), Some(value.clone())))
        .collect();
    cluster.assert_two_copies(&expected);
    // Keys spread over all three slaves.
    let status = cluster.status();
    assert_eq!(status.copies, 2);
    assert!(
        status.slaves.iter().all(|s| s.own.unwrap() > 100),
        "{}",
        status.raw
    );
    let total_own: u64 = status.slaves.iter().map(|s| s.own.unwrap()).sum();
    let total_previous: u64 = status.slaves.iter().map(|s| s.previous.unwrap()).sum();
    assert_eq!(total_own, 1000);
    assert_eq!(total_previous, 1000);

    for (key, _, _) in &data {
        assert!(
            client.delete(key).unwrap(),
            "delete of a stored key says it existed"
        );
    }
    for (key, _, _) in data.iter() {
        assert_eq!(client.get(key).unwrap(), None);
        assert!(!client.delete(key).unwrap(), "second delete finds nothing");
        expected.insert(key.clone(), None);
    }
    cluster.assert_two_copies(&expected);
}

/// A raw memcached-text connection.
struct Text {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Text {
    fn connect(addr: &str) -> Text {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Text {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Reads a get reply: (key, flags, data, cas) per hit, up to END.
    fn values(&mut self) -> Vec<(String, u32, Vec<u8>, Option<u64>)> {
        let mut hits = Vec::new();
        loop {
            let line = self.line();
            if line == "END" {
                return hits;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts[0], "VALUE", "unexpected line {line:?}");
            let len: usize = parts[3].parse().unwrap();
            let mut data = vec![0; len + 2];
            self.reader.read_exact(&mut data).unwrap();
            assert_eq!(&data[len..], b"\r\n");
            data.truncate(len);
            hits.push((
                parts[1].to_string(),
                parts[2].parse().unwrap(),
                data,
                parts.get(4).map(|c| c.parse().unwrap()),
            ));
        }
    }

    fn set(&mut self, key: &str, flags: u32, data: &[u8]) -> String {
        let mut command = format!("set {key} {flags} 0 {}\r\n", data.len()).into_bytes();
        command.extend_from_slice(data);
        command.extend_from_slice(b"\r\n");
        self.send(&command);
        self.line()
    }
}

#[test]
fn memcached_text_clients_store_read_and_delete_binary_values() {
    let cluster = Cluster::start(3);
    let mut text = Text::connect(&cluster.addr);
    let mut rng = Rng::new(77, 0);
    let mut data = Vec::new();
    for i in 0..1000 {
        let key = format!("txt:{i}:{}", rng.next());
        let value = awkward_value(&mut rng);
        let flags = (rng.next() % 65536) as u32;
        assert_eq!(text.set(&key, flags, &value), "STORED");
        data.push((key, value, flags));
    }
    for (key, value, flags) in &data {
        text.send(format!("get {key}\r\n").as_bytes());
        let hits = text.values();
        assert_eq!(hits.len(), 1);
        assert_eq!(&hits[0].0, key);
        assert_eq!(hits[0].1, *flags);
        assert_eq!(&hits[0].2, value);
    }
    let mut expected: Expected = data
        .iter()
        .map(|(key, value, _)| (key.clone().into_bytes(), Some(value.clone())))
        .collect();
    cluster.assert_two_copies(&expected);
    // The binary client sees what the text client wrote.
    let (key, value, flags) = &data[0];
    let got = cluster.client().get(key.as_bytes()).unwrap().unwrap();
    assert_eq!((&got.value, got.flags), (value, *flags));

    for (key, _, _) in &data {
        text.send(format!("delete {key}\r\n").as_bytes());
        assert_eq!(text.line(), "DELETED");
    }
    for (key, _, _) in data.iter() {
        text.send(format!("delete {key}\r\n").as_bytes());
        assert_eq!(text.line(), "NOT_FOUND");
        text.send(format!("get {key}\r\n").as_bytes());
        assert!(text.values().is_empty());
        expected.insert(key.clone().into_bytes(), None);
    }
    cluster.assert_two_copies(&expected);
}

#[test]
fn text_protocol_handles_pipelines_splits_multi_get_and_errors_byte_for_byte() {
    let cluster = Cluster::start(3);
    let mut text = Text::connect(&cluster.addr);

    // Pipelined: three commands in one write, replies in order.
    text.send(b"set a 5 0 1\r\nA\r\nset b 6 0 2 noreply\r\nBB\r\nget a b missing\r\n");
    assert_eq!(text.line(), "STORED");
    let hits = text.values();
    assert_eq!(
        hits,
        vec![
            ("a".into(), 5, b"A".to_vec(), None),
            ("b".into(), 6, b"BB".to_vec(), None)
        ]
    );

    // Split across TCP segments, one byte at a time.
    for byte in b"set split 0 0 4\r\nx\r\ny\r\nget split\r\n" {
        text.send(&[*byte]);
        text.writer.flush().unwrap();
    }
    assert_eq!(text.line(), "STORED");
    assert_eq!(text.values()[0].2, b"x\r\ny");

    // gets returns the version as cas, and a rewrite raises it.
    text.send(b"gets a\r\n");
    let first = text.values()[0].3.expect("gets has cas");
    text.set("a", 0, b"A2");
    text.send(b"gets a\r\n");
    assert!(text.values()[0].3.unwrap() > first);

    // noreply delete, then the key is gone.
    text.send(b"delete b noreply\r\nget b\r\n");
    assert!(text.values().is_empty());

    // Errors, each exactly as memcached spells it; the connection survives each.
    text.send(b"bogus\r\n");
    assert_eq!(text.line(), "ERROR");
    text.send(b"set k 0 0 3\r\nabcde\r\n");
    assert_eq!(text.line(), "CLIENT_ERROR bad data chunk");
    // memcached swallows the 3 bytes and "\r\n" it expected ("abcde" here), then reads the
    // trailing "\r\n" as an empty command line: ERROR. We match it byte for byte.
    assert_eq!(text.line(), "ERROR");
    text.send(b"set k 0 0 notanumber\r\n");
    assert!(text.line().starts_with("CLIENT_ERROR "));
    let big = 1024 * 1024 + 1;
    text.send(format!("set big 0 0 {big}\r\n").as_bytes());
    text.send(&vec![b'x'; big]);
    text.send(b"\r\n");
    assert_eq!(text.line(), "SERVER_ERROR object too large for cache");
    text.send(b"set exp 0 100 1\r\nx\r\n");
    assert_eq!(text.line(), "STORED");
    text.send(format!("get {}\r\n", "k".repeat(251)).as_bytes());
    assert!(text.line().starts_with("CLIENT_ERROR"));
    text.send(b"get\r\n");
    assert_eq!(text.line(), "ERROR");

    text.send(b"version\r\n");
    assert_eq!(
        text.line(),
        format!("VERSION 1.6.0-piazza-{}", env!("CARGO_PKG_VERSION"))
    );
    text.send(b"stats\r\n");
    let mut stats = std::collections::HashMap::new();
    loop {
        let line = text.line();
        if line == "END" {
            break;
        }
        let parts: Vec<&str> = line.splitn(3, ' ').collect();
        assert_eq!(parts[0], "STAT");
        stats.insert(parts[1].to_string(), parts[2].to_string());
    }
    for name in [
        "curr_items",
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
        "curr_connections",
        "uptime",
    ] {
        assert!(stats.contains_key(name), "stats lacks {name}: {stats:?}");
    }
    assert_eq!(stats["curr_items"], "3"); // a, split and exp
    // Still serving after all of that.
    assert_eq!(text.set("after", 0, b"ok"), "STORED");
    text.send(b"quit\r\n");
    let mut rest = Vec::new();
    assert_eq!(
        text.reader.read_to_end(&mut rest).unwrap(),
        0,
        "quit closes"
    );
}

#[test]
fn concurrent_writers_to_the_same_keys_leave_both_replicas_identical() {
    let cluster = Arc::new(Cluster::start(3));
    let keys: Vec<String> = (0..20).map(|i| format!("hot-{i}")).collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let addr = cluster.addr.clone();
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&addr).unwrap();
                for round in 0..150 {
                    let key = &keys[(round * 7 + w) % keys.len()];
                    let value = format!("writer {w} round {round}");
                    if round % 13 == 0 {
                        client.delete(key.as_bytes()).unwrap();
                    } else {
                        client.put(key.as_bytes(), value.as_bytes()).unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    for key in &keys {
        let (primary, replica) = cluster.placement(key.as_bytes());
        let own = Client::connect(&primary)
            .unwrap()
            .slave_get(TableSel::Own, key.as_bytes())
            .unwrap();
        let previous = Client::connect(&replica.unwrap())
            .unwrap()
            .slave_get(TableSel::Previous, key.as_bytes())
            .unwrap();
        assert_eq!(own, previous, "replicas of {key} differ");
        let read = cluster.client().get(key.as_bytes()).unwrap();
        assert_eq!(
            read, own,
            "coordinator read of {key} differs from the primary"
        );
    }
}

#[test]
fn reads_fall_back_to_the_replica_when_the_primary_is_killed() {
    let mut cluster = Cluster::start(3);
    let mut client = cluster.client();
    for i in 0..300 {
        client
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    let victim = cluster.slaves[1].addr.clone();
    let on_victim: Vec<usize> = (0..300)
        .filter(|i| cluster.placement(format!("k{i}").as_bytes()).0 == victim)
        .collect();
    assert!(!on_victim.is_empty(), "the victim is primary for some keys");
    cluster.slaves[1].proc.kill();
    // Its keys first: the first read finds the primary gone and reads the replica.
    let mut client = cluster.client();
    for i in on_victim.iter().copied().chain(0..300) {
        let key = format!("k{i}");
        let got = client.get(key.as_bytes()).unwrap();
        assert_eq!(
            got.map(|v| v.value),
            Some(format!("v{i}").into_bytes()),
            "{key}"
        );
    }
    // The failed read got the slave declared dead.
    cluster.wait_state(&victim, "dead");
}

#[test]
fn one_slave_holds_one_copy_and_status_says_so() {
    let cluster = Cluster::start(1);
    cluster.client().put(b"solo", b"1").unwrap();
    let status = cluster.status();
    assert_eq!(status.copies, 1);
    assert_eq!(status.slaves[0].own, Some(1));
    assert_eq!(status.slaves[0].previous, Some(0));
    let run = run_client(&[], &["--coordinator", &cluster.addr, "status"], "");
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("ONE copy"), "{run:?}");
}

/// piazza-client against the coordinator at `addr`: (exit code, stdout, stderr).
fn client_at(addr: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--coordinator", addr];
    all.extend_from_slice(args);
    let run = run_client(&[], &all, "");
    (run.code.unwrap_or(-1), run.stdout, run.stderr)
}

#[test]
fn piazza_client_exit_codes_follow_the_contract() {
    let cluster = Cluster::start(2);
    let addr = cluster.addr.as_str();
    assert_eq!(client_at(addr, &["put", "greeting", "hello world"]).0, 0);
    let (code, out, _) = client_at(addr, &["get", "greeting"]);
    assert_eq!((code, out.as_str()), (0, "hello world\n"));
    let (code, out, err) = client_at(addr, &["get", "nothing-here"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("not found"), "{err}");
    assert_eq!(client_at(addr, &["del", "greeting"]).0, 0);
    assert_eq!(client_at(addr, &["del", "greeting"]).0, 1);
    let (code, out, _) = client_at(addr, &["status"]);
    assert_eq!(code, 0);
    for slave in &cluster.slaves {
        assert!(out.contains(&slave.addr), "{out}");
    }
    // Unreachable coordinator, bad flag, missing argument: exit 2 with one line.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let (code, _, err) = client_at(&dead_addr, &["get", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect"), "{err}");
    let (code, _, err) = client_at(addr, &["--frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = client_at(addr, &["get"]);
    assert_eq!(code, 2);
    let (code, out, _) = client_at(addr, &["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("status"), "{out}");

    // The interactive prompt reads the same commands from stdin.
    let run = run_client(
        &[],
        &["--coordinator", addr],
        "put k1 v one\nget k1\nget missing\ndel k1\nquit\n",
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "stored\nv one\ndeleted\n");
}

#[test]
fn bad_binary_frames_get_an_error_and_nothing_else_is_disturbed() {
    let cluster = Cluster::start(2);
    let mut client = cluster.client();
    client.put(b"keep", b"safe").unwrap();
    // A frame with a flipped CRC: BAD_FRAME reply, then the server closes.
    let mut frame =
        piazza::wire::Frame::request(piazza::wire::Opcode::Get, 9, b"keep".to_vec(), vec![])
            .encode();
    frame[piazza::wire::OFF_CRC] ^= 0xff;
    let mut raw = TcpStream::connect(&cluster.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&frame).unwrap();
    let mut reply = Vec::new();
    raw.read_to_end(&mut reply).unwrap();
    let (decoded, _) = piazza::wire::decode(&reply, &Default::default()).unwrap();
    assert_eq!(decoded.status, piazza::wire::Status::BadFrame);
    assert_eq!(decoded.request_id, 9);
    // The earlier connection and the data are untouched.
    assert_eq!(client.get(b"keep").unwrap().unwrap().value, b"safe");
}

#[test]
fn servers_refuse_a_port_in_use_with_one_line_and_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("busy");
    let err = common::exits_with_2(
        std::process::Command::new(bin("coordinator"))
            .args([
                "--listen",
                &port,
                "--heartbeat",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path()),
    );
    assert!(err.contains("address in use"), "{err}");
    common::exits_with_2(
        std::process::Command::new(bin("slave"))
            .args(["--listen", &port, "--data-dir"])
            .arg(dir.path()),
    );
    // A slave whose coordinator is not there gives up with a clear message.
    let err = common::exits_with_2(
        std::process::Command::new(bin("slave"))
            .args(["--listen", "127.0.0.1:0", "--register-timeout-ms", "300"])
            .args(["--coordinator", "127.0.0.1:1", "--data-dir"])
            .arg(dir.path().join("s")),
    );
    assert!(err.contains("coordinator unreachable"), "{err}");
}

#[test]
fn piazza_cluster_starts_serves_and_stops_cleanly_on_sigint() {
    let dir = TempDir::new("pcluster");
    let mut cluster = Proc::start(
        bin("cluster"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--heartbeat",
            "127.0.0.1:0",
            "--slave-port",
            "0",
            "--slaves",
            "3",
            "--data-dir",
            &dir.path().display().to_string(),
        ]
        .map(String::from),
    );
    let mut addr = String::new();
    wait_until(DEADLINE, "piazza-cluster prints its addresses", || {
        let stdout = cluster.stdout.lock().unwrap();
        if let Some(line) = stdout
            .iter()
            .find(|l| l.starts_with("piazza cluster: coordinator "))
        {
            addr = line["piazza cluster: coordinator ".len()..]
                .split(' ')
                .next()
                .unwrap()
                .to_string();
            true
        } else {
            false
        }
    });
    let mut client = Client::connect(&addr).unwrap();
    client.put(b"k", b"v").unwrap();
    assert_eq!(client.get(b"k").unwrap().unwrap().value, b"v");
    // Registered slaves join the ring one move at a time (slower on a busy machine):
    // two copies once the second has joined.
    wait_until(DEADLINE, "three slaves, two copies", || {
        let status = client.status().unwrap();
        status.slaves.len() == 3 && status.copies == 2
    });
    drop(client);
    cluster.signal("INT");
    assert_eq!(
        cluster.wait_exit(DEADLINE),
        Some(0),
        "{}",
        cluster.stderr_text()
    );
    assert!(!cluster.stderr_text().contains("panicked"));
    // Everything is gone: the port no longer accepts.
    assert!(TcpStream::connect(&addr).is_err());
}

#[test]
fn piazza_bench_drives_both_protocols_and_reports_json() {
    let cluster = Cluster::start(3);
    for protocol in ["binary", "memcache"] {
        let line = common::run_bench(
            &cluster.addr,
            &[
                "--protocol",
                protocol,
                "--connections",
                "4",
                "--ops",
                "400",
                "--keys",
                "50",
                "--preload",
            ],
        );
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("\"ops\":400"), "{line}");
        assert!(line.contains("\"misses\":0"), "{line}");
    }
    // Verify mode under a skewed load: every read returns what was last stored.
    let line = common::run_bench(
        &cluster.addr,
        &[
            "--connections",
            "4",
            "--ops",
            "2000",
            "--keys",
            "200",
            "--preload",
            "--verify",
            "--zipf",
            "0.99",
            "--get-ratio",
            "0.5",
        ],
    );
    assert!(line.contains("\"wrong\":0"), "{line}");
    // Nothing listening: one line, exit 2.
    let mut bench = std::process::Command::new(bin("bench"));
    let err = common::exits_with_2(bench.args(["--coordinator", "127.0.0.1:1", "--ops", "1"]));
    assert!(err.contains("127.0.0.1:1"));
}
