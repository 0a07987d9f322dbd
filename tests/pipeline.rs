//! Pipelining on Piazza's binary protocol: many requests in flight on one connection,
//! answered in order, matching a sequential model exactly — also while a slave is killed.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use common::Cluster;
use piazza::rng::Rng;
use piazza::update::{Op, Update};
use piazza::wire::{self, Frame, Opcode, Status, WireLimits};

/// Writes every frame on one connection while another thread reads the replies; calls
/// `at_reply` with the number of replies read so far after each one.
fn pipeline(addr: &str, frames: &[Frame], mut at_reply: impl FnMut(usize)) -> Vec<Frame> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let read_half = stream.try_clone().unwrap();
    read_half
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let count = frames.len();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(read_half);
        let limits = WireLimits {
            max_value: wire::MAX_BULK_VALUE,
            ..WireLimits::default()
        };
        for _ in 0..count {
            let reply = wire::read_frame(&mut reader, &limits).expect("a reply");
            tx.send(reply).unwrap();
        }
    });
    let mut bytes = Vec::new();
    for frame in frames {
        frame.encode_into(&mut bytes);
    }
    let mut writer = stream;
    let writing = std::thread::spawn(move || {
        for chunk in bytes.chunks(64 * 1024) {
            writer.write_all(chunk).unwrap();
        }
        writer
    });
    let mut replies = Vec::with_capacity(count);
    for reply in rx.iter() {
        replies.push(reply);
        at_reply(replies.len());
    }
    reader.join().unwrap();
    drop(writing.join().unwrap());
    replies
}

#[test]
fn requests_on_one_key_in_one_write_take_effect_in_order() {
    let cluster = Cluster::start(3);
    let put = |id, value: &[u8]| {
        let mut f = Frame::request(Opcode::Put, id, b"k".to_vec(), value.to_vec());
        f.flags = 7;
        f
    };
    let get = |id| Frame::request(Opcode::Get, id, b"k".to_vec(), Vec::new());
    let del = |id| Frame::request(Opcode::Delete, id, b"k".to_vec(), Vec::new());
    let frames = vec![
        put(1, b"one"),
        get(2),
        del(3),
        get(4),
        put(5, b"two"),
        get(6),
    ];
    let replies = pipeline(&cluster.addr, &frames, |_| {});
    let ids: Vec<u32> = replies.iter().map(|r| r.request_id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    let statuses: Vec<Status> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![
            Status::Ok,
            Status::Ok,
            Status::Ok,
            Status::NotFound,
            Status::Ok,
            Status::Ok
        ]
    );
    assert_eq!(replies[1].value, b"one");
    assert_eq!(replies[5].value, b"two");
}

/// A random pipeline of puts, gets, deletes, incrs and multi-gets over a few keys, and
/// what a sequential model says each reply must be.
fn random_pipeline(rng: &mut Rng, n: usize) -> (Vec<Frame>, Vec<Expect>) {
    let keys: Vec<Vec<u8>> = (0..6).map(|i| format!("pk{i}").into_bytes()).collect();
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut frames = Vec::with_capacity(n);
    let mut expected = Vec::with_capacity(n);
    for id in 0..n as u32 {
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        match rng.below(10) {
            0..=2 => {
                let value = rng.below(1000).to_string().into_bytes();
                frames.push(Frame::request(Opcode::Put, id, key.clone(), value.clone()));
                model.insert(key, value);
                expected.push(Expect::Stored);
            }
            3..=4 => {
                frames.push(Frame::request(Opcode::Get, id, key.clone(), Vec::new()));
                expected.push(Expect::Value(model.get(&key).cloned()));
            }
            5 => {
                frames.push(Frame::request(Opcode::Delete, id, key.clone(), Vec::new()));
                expected.push(Expect::Deleted(model.remove(&key).is_some()));
            }
            6..=7 => {
                let delta = rng.below(10);
                let update = Update {
                    delta,
                    ..Update::new(Op::Incr)
                };
                frames.push(Frame::request(
                    Opcode::Update,
                    id,
                    key.clone(),
                    update.encode(),
                ));
                match model.get_mut(&key) {
                    Some(value) => {
                        let n: u64 = String::from_utf8_lossy(value).trim().parse().unwrap();
                        *value = (n + delta).to_string().into_bytes();
                        expected.push(Expect::Number(Some(n + delta)));
                    }
                    None => expected.push(Expect::Number(None)),
                }
            }
            _ => {
                let asked: Vec<Vec<u8>> = (0..1 + rng.below(4))
                    .map(|_| keys[rng.below(keys.len() as u64) as usize].clone())
                    .collect();
                let results = asked.iter().map(|k| model.get(k).cloned()).collect();
                frames.push(Frame::request(
                    Opcode::MultiGet,
                    id,
                    Vec::new(),
                    wire::pack_keys(&asked),
                ));
                expected.push(Expect::Many(results));
            }
        }
    }
    (frames, expected)
}

#[derive(Debug)]
enum Expect {
    Stored,
    Value(Option<Vec<u8>>),
    Deleted(bool),
    Number(Option<u64>),
    Many(Vec<Option<Vec<u8>>>),
}

fn check(frames: &[Frame], replies: &[Frame], expected: &[Expect]) {
    assert_eq!(replies.len(), expected.len());
    for (i, (reply, expect)) in replies.iter().zip(expected).enumerate() {
        assert_eq!(reply.request_id, i as u32, "replies in request order");
        let ok = match expect {
            Expect::Stored => reply.status == Status::Ok,
            Expect::Value(None) => reply.status == Status::NotFound,
            Expect::Value(Some(v)) => reply.status == Status::Ok && &reply.value == v,
            Expect::Deleted(true) => reply.status == Status::Ok,
            Expect::Deleted(false) => reply.status == Status::NotFound,
            Expect::Number(None) => reply.status == Status::NotFound,
            Expect::Number(Some(n)) => {
                reply.status == Status::Ok && reply.value == n.to_string().into_bytes()
            }
            Expect::Many(values) => {
                reply.status == Status::Ok
                    && wire::unpack_results(&reply.value)
                        .unwrap()
                        .into_iter()
                        .map(|hit| hit.map(|h| h.value))
                        .collect::<Vec<_>>()
                        == *values
            }
        };
        if !ok {
            // The history of the key, to see what went wrong.
            let key = &frames[i].key;
            for (j, frame) in frames[..i].iter().enumerate().rev().take(400) {
                if &frame.key == key {
                    eprintln!(
                        "  {j}: {:?} -> {:?} v{} {:?} (expected {:?})",
                        frame.opcode,
                        replies[j].status,
                        replies[j].arg,
                        String::from_utf8_lossy(&replies[j].value),
                        expected[j]
                    );
                }
            }
        }
        assert!(
            ok,
            "request {i} on {:?}: expected {expect:?}, got {:?} v{} {:?}",
            String::from_utf8_lossy(&frames[i].key),
            reply.status,
            reply.arg,
            String::from_utf8_lossy(&reply.value)
        );
    }
}

#[test]
fn a_random_pipeline_matches_a_sequential_model_exactly() {
    let cluster = Cluster::start(3);
    let (frames, expected) = random_pipeline(&mut Rng::new(0x5eed_0001, 0), 10_000);
    let replies = pipeline(&cluster.addr, &frames, |_| {});
    check(&frames, &replies, &expected);
}

#[test]
fn a_random_pipeline_matches_the_model_while_a_slave_is_killed() {
    let mut cluster = Cluster::start(3);
    let (frames, expected) = random_pipeline(&mut Rng::new(0x5eed_0002, 0), 10_000);
    let mut victim = Some(cluster.slaves.remove(0));
    let replies = pipeline(&cluster.addr, &frames, |read| {
        if read == 2_000
            && let Some(mut slave) = victim.take()
        {
            slave.proc.kill();
        }
    });
    // Shown only on failure: where each key's copies stand.
    for addr in cluster.live_addrs() {
        let mut slave = piazza::Client::connect(&addr).unwrap();
        for i in 0..6 {
            let key = format!("pk{i}").into_bytes();
            for table in [wire::TableSel::Own, wire::TableSel::Previous] {
                if let Ok(Some(v)) = slave.slave_get(table, &key) {
                    eprintln!(
                        "{addr} {table:?} pk{i}: v{} {:?}",
                        v.version,
                        String::from_utf8_lossy(&v.value)
                    );
                }
            }
        }
    }
    check(&frames, &replies, &expected);
    assert!(victim.is_none(), "the slave was killed mid-pipeline");
}

/// A random text pipeline and the exact bytes a sequential memcached would answer.
fn random_text_pipeline(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<u8>) {
    let keys: Vec<String> = (0..6).map(|i| format!("tk{i}")).collect();
    let mut model: HashMap<String, String> = HashMap::new();
    let (mut sent, mut want) = (Vec::new(), Vec::new());
    let value_line = |want: &mut Vec<u8>, key: &str, value: &str| {
        want.extend_from_slice(format!("VALUE {key} 0 {}\r\n{value}\r\n", value.len()).as_bytes());
    };
    for _ in 0..n {
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let noreply = rng.below(4) == 0;
        let suffix = if noreply { " noreply" } else { "" };
        match rng.below(12) {
            0..=3 => {
                let value = rng.below(1000).to_string();
                sent.extend_from_slice(
                    format!("set {key} 0 0 {}{suffix}\r\n{value}\r\n", value.len()).as_bytes(),
                );
                model.insert(key, value);
                if !noreply {
                    want.extend_from_slice(b"STORED\r\n");
                }
            }
            4..=5 => {
                sent.extend_from_slice(format!("get {key}\r\n").as_bytes());
                if let Some(value) = model.get(&key) {
                    value_line(&mut want, &key, value);
                }
                want.extend_from_slice(b"END\r\n");
            }
            6 => {
                sent.extend_from_slice(format!("delete {key}{suffix}\r\n").as_bytes());
                let existed = model.remove(&key).is_some();
                if !noreply {
                    want.extend_from_slice(if existed {
                        b"DELETED\r\n"
                    } else {
                        b"NOT_FOUND\r\n"
                    });
                }
            }
            7..=8 => {
                let delta = rng.below(10);
                sent.extend_from_slice(format!("incr {key} {delta}{suffix}\r\n").as_bytes());
                let reply = match model.get_mut(&key) {
                    Some(value) => {
                        let n: u64 = value.trim().parse().unwrap();
                        let next = (n + delta).to_string();
                        // memcached pads a shorter number; incr never shortens one here.
                        *value = format!("{next:<width$}", width = value.len());
                        format!("{next}\r\n")
                    }
                    None => "NOT_FOUND\r\n".to_string(),
                };
                if !noreply {
                    want.extend_from_slice(reply.as_bytes());
                }
            }
            9..=10 => {
                let asked: Vec<&String> = (0..2 + rng.below(4))
                    .map(|_| &keys[rng.below(keys.len() as u64) as usize])
                    .collect();
                let line: Vec<&str> = asked.iter().map(|k| k.as_str()).collect();
                sent.extend_from_slice(format!("get {}\r\n", line.join(" ")).as_bytes());
                for k in asked {
                    if let Some(value) = model.get(k) {
                        value_line(&mut want, k, value);
                    }
                }
                want.extend_from_slice(b"END\r\n");
            }
            _ => {
                sent.extend_from_slice(b"bogus command\r\n");
                want.extend_from_slice(b"ERROR\r\n");
            }
        }
    }
    (sent, want)
}

/// Sends `sent` on one text connection while reading until `want.len()` bytes came back.
fn text_pipeline(addr: &str, sent: Vec<u8>, want_len: usize, mut at: impl FnMut(usize)) -> Vec<u8> {
    use std::io::Read;
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        for chunk in sent.chunks(16 * 1024) {
            writer.write_all(chunk).unwrap();
        }
        writer
    });
    let mut reader = stream;
    let mut got = Vec::with_capacity(want_len);
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < want_len {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        at(got.len());
    }
    drop(writing.join().unwrap());
    got
}

#[test]
fn a_random_text_pipeline_matches_a_sequential_model_byte_for_byte() {
    let cluster = Cluster::start(3);
    let (sent, want) = random_text_pipeline(&mut Rng::new(0x5eed_0003, 0), 10_000);
    let got = text_pipeline(&cluster.addr, sent, want.len(), |_| {});
    assert!(got == want, "the replies differ from the sequential model");
}

#[test]
fn a_random_text_pipeline_matches_the_model_while_a_slave_is_killed() {
    let mut cluster = Cluster::start(3);
    let (sent, want) = random_text_pipeline(&mut Rng::new(0x5eed_0004, 0), 10_000);
    let mut victim = Some(cluster.slaves.remove(1));
    let got = text_pipeline(&cluster.addr, sent, want.len(), |read| {
        if read >= want.len() / 5
            && let Some(mut slave) = victim.take()
        {
            slave.proc.kill();
        }
    });
    assert!(victim.is_none(), "the slave was killed mid-pipeline");
    assert!(got == want, "the replies differ from the sequential model");
}

/// The coordinator's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_client_that_does_not_read_cannot_grow_the_coordinators_memory() {
    use std::io::Read;
    let cluster = Cluster::start(2);
    let mut client = cluster.client();
    let big = vec![b'x'; 512 * 1024];
    client.put(b"big", &big).unwrap();
    let pid = cluster.coordinator.child.id();
    let before = rss_kib(pid);
    // 2,000 gets of a 512 KiB value (about 1 GiB of replies) on both protocols, and
    // nothing read back for a while.
    let text = TcpStream::connect(&cluster.addr).unwrap();
    let binary = TcpStream::connect(&cluster.addr).unwrap();
    let mut writers = Vec::new();
    for (stream, request) in [
        (text.try_clone().unwrap(), b"get big\r\n".to_vec()),
        (
            binary.try_clone().unwrap(),
            Frame::request(Opcode::Get, 1, b"big".to_vec(), Vec::new()).encode(),
        ),
    ] {
        writers.push(std::thread::spawn(move || {
            let mut stream = stream;
            for _ in 0..2_000 {
                if stream.write_all(&request).is_err() {
                    break;
                }
            }
        }));
    }
    let mut peak = before;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two windows of 64 replies of 512 KiB, plus buffers: well under 200 MiB more.
    assert!(
        peak < before + 200 * 1024,
        "resident memory grew from {before} KiB to {peak} KiB"
    );
    // Reading resumes: every reply arrives.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut text_reader = text;
    text_reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let want = 2_000 * (b"VALUE big 0 524288\r\n".len() + big.len() + 2 + b"END\r\n".len());
    while total < want {
        let n = text_reader.read(&mut buf).unwrap();
        assert!(n > 0);
        total += n;
    }
    assert_eq!(total, want);
    drop(binary);
    for writer in writers {
        let _ = writer.join();
    }
}
