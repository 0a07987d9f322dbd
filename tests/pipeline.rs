//! Pipelining on Piazza's binary protocol: many requests in flight on one connection,
//! answered in order, matching a sequential model exactly — also while a slave is killed.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use common::{Cluster, Rng};
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

fn check(replies: &[Frame], expected: &[Expect]) {
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
        assert!(
            ok,
            "request {i}: expected {expect:?}, got {:?} {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.value)
        );
    }
}

#[test]
fn a_random_pipeline_matches_a_sequential_model_exactly() {
    let cluster = Cluster::start(3);
    let (frames, expected) = random_pipeline(&mut Rng(0x5eed_0001), 10_000);
    let replies = pipeline(&cluster.addr, &frames, |_| {});
    check(&replies, &expected);
}

#[test]
fn a_random_pipeline_matches_the_model_while_a_slave_is_killed() {
    let mut cluster = Cluster::start(3);
    let (frames, expected) = random_pipeline(&mut Rng(0x5eed_0002), 10_000);
    let mut victim = Some(cluster.slaves.remove(0));
    let replies = pipeline(&cluster.addr, &frames, |read| {
        if read == 2_000
            && let Some(mut slave) = victim.take()
        {
            slave.proc.kill();
        }
    });
    check(&replies, &expected);
    assert!(victim.is_none(), "the slave was killed mid-pipeline");
}
