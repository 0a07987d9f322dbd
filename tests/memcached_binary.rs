//! memcached's binary protocol on the coordinator port, end to end: real coordinator and
//! slave processes on loopback, raw binary packets over a `TcpStream`, replies checked
//! field by field against what memcached 1.6 answers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, DEADLINE, TempDir, wait_until};
use piazza::mcbin::encode_request as packet;

// Opcodes.
const GET: u8 = 0x00;
const SET: u8 = 0x01;
const ADD: u8 = 0x02;
const REPLACE: u8 = 0x03;
const DELETE: u8 = 0x04;
const INCR: u8 = 0x05;
const DECR: u8 = 0x06;
const QUIT: u8 = 0x07;
const FLUSH: u8 = 0x08;
const GETQ: u8 = 0x09;
const NOOP: u8 = 0x0a;
const VERSION: u8 = 0x0b;
const GETK: u8 = 0x0c;
const GETKQ: u8 = 0x0d;
const APPEND: u8 = 0x0e;
const PREPEND: u8 = 0x0f;
const STAT: u8 = 0x10;
const SETQ: u8 = 0x11;
const ADDQ: u8 = 0x12;
const DELETEQ: u8 = 0x14;
const INCRQ: u8 = 0x15;
const QUITQ: u8 = 0x17;
const FLUSHQ: u8 = 0x18;
const APPENDQ: u8 = 0x19;
const TOUCH: u8 = 0x1c;
const GAT: u8 = 0x1d;
const GATQ: u8 = 0x1e;
const SASL_LIST: u8 = 0x20;
const GATK: u8 = 0x23;

// Statuses.
const OK: u16 = 0x0000;
const NOT_FOUND: u16 = 0x0001;
const EXISTS: u16 = 0x0002;
const TOO_LARGE: u16 = 0x0003;
const INVALID: u16 = 0x0004;
const NOT_STORED: u16 = 0x0005;
const NON_NUMERIC: u16 = 0x0006;
const AUTH_ERROR: u16 = 0x0020;
const UNKNOWN: u16 = 0x0081;

/// A set/add/replace (and quiet forms) packet.
fn store(op: u8, key: &[u8], value: &[u8], flags: u32, exptime: u32, cas: u64) -> Vec<u8> {
    let mut extras = flags.to_be_bytes().to_vec();
    extras.extend_from_slice(&exptime.to_be_bytes());
    packet(op, &extras, key, value, 0xdead_beef, cas)
}

/// An incr/decr packet.
fn arith(op: u8, key: &[u8], delta: u64, initial: u64, exptime: u32, cas: u64) -> Vec<u8> {
    let mut extras = delta.to_be_bytes().to_vec();
    extras.extend_from_slice(&initial.to_be_bytes());
    extras.extend_from_slice(&exptime.to_be_bytes());
    packet(op, &extras, key, b"", 0xdead_beef, cas)
}

/// A packet with a key only (get, delete, ...).
fn keyed(op: u8, key: &[u8]) -> Vec<u8> {
    packet(op, b"", key, b"", 0xdead_beef, 0)
}

/// A packet with nothing but its opcode.
fn bare(op: u8) -> Vec<u8> {
    packet(op, b"", b"", b"", 0xdead_beef, 0)
}

/// A response, decoded.
#[derive(Debug)]
struct Reply {
    magic: u8,
    opcode: u8,
    data_type: u8,
    status: u16,
    opaque: u32,
    cas: u64,
    extras: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Reply {
    fn flags(&self) -> u32 {
        u32::from_be_bytes(self.extras[..4].try_into().unwrap())
    }

    fn number(&self) -> u64 {
        u64::from_be_bytes(self.value[..].try_into().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    /// Checks opcode and status, and what memcached's own test (memccapable) checks of
    /// every reply.
    fn expect(self, opcode: u8, status: u16) -> Reply {
        assert_eq!(self.magic, 0x81, "{self:?}");
        assert_eq!(self.data_type, 0, "{self:?}");
        assert_eq!(
            (self.opcode, self.status),
            (opcode, status),
            "{self:?} ({})",
            self.text()
        );
        if status != OK {
            assert_eq!(self.cas, 0, "errors carry no cas: {self:?}");
            assert!(self.extras.is_empty(), "{self:?}");
        }
        self
    }
}

/// A raw binary-protocol connection.
struct Mc {
    stream: TcpStream,
}

impl Mc {
    fn connect(addr: &str) -> Mc {
        Mc {
            stream: common::connect(addr),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn recv(&mut self) -> Reply {
        let mut header = [0u8; 24];
        self.stream.read_exact(&mut header).unwrap();
        let key_len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let extras_len = header[4] as usize;
        let body_len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
        let mut body = vec![0u8; body_len];
        self.stream.read_exact(&mut body).unwrap();
        let value = body.split_off(extras_len + key_len);
        let key = body.split_off(extras_len);
        Reply {
            magic: header[0],
            opcode: header[1],
            data_type: header[5],
            status: u16::from_be_bytes([header[6], header[7]]),
            opaque: u32::from_be_bytes(header[12..16].try_into().unwrap()),
            cas: u64::from_be_bytes(header[16..24].try_into().unwrap()),
            extras: body,
            key,
            value,
        }
    }

    fn call(&mut self, bytes: &[u8]) -> Reply {
        self.send(bytes);
        self.recv()
    }

    /// Sends `bytes` then a noop, and returns every reply before the noop's.
    fn quiet(&mut self, bytes: &[u8]) -> Vec<Reply> {
        let mut all = bytes.to_vec();
        all.extend(packet(NOOP, b"", b"", b"", 0x4e4f_4f50, 0));
        self.send(&all);
        let mut replies = Vec::new();
        loop {
            let reply = self.recv();
            if reply.opcode == NOOP && reply.opaque == 0x4e4f_4f50 {
                assert_eq!(reply.status, OK);
                return replies;
            }
            replies.push(reply);
        }
    }

    /// Whether the server closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ),
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8], flags: u32) -> u64 {
        let reply = self
            .call(&store(SET, key, value, flags, 0, 0))
            .expect(SET, OK);
        assert_ne!(reply.cas, 0, "a set answers the new cas");
        reply.cas
    }

    fn get(&mut self, key: &[u8]) -> Option<Reply> {
        let reply = self.call(&keyed(GET, key));
        match reply.status {
            OK => Some(reply.expect(GET, OK)),
            _ => {
                let reply = reply.expect(GET, NOT_FOUND);
                assert_eq!(reply.value, b"Not found");
                None
            }
        }
    }
}

#[test]
fn get_set_delete_and_their_quiet_and_key_forms_answer_as_memcached() {
    let cluster = Cluster::start(2);
    let mut mc = Mc::connect(&cluster.addr);

    // set answers the new cas, get returns flags, value and the same cas.
    let value = b"zero\0bytes\r\nand newlines".to_vec();
    let set = mc.call(&packet(
        SET,
        &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0],
        b"key",
        &value,
        0x1122_3344,
        0,
    ));
    let set = set.expect(SET, OK);
    assert_eq!(set.opaque, 0x1122_3344);
    assert!(set.key.is_empty() && set.extras.is_empty() && set.value.is_empty());
    let got = mc.get(b"key").expect("hit");
    assert_eq!(got.opaque, 0xdead_beef);
    assert_eq!(got.flags(), 0xdead_beef);
    assert_eq!(got.value, value);
    assert_eq!(got.cas, set.cas);
    assert!(got.key.is_empty());

    // getk returns the key, on a hit and on a miss (then with no message).
    let getk = mc.call(&keyed(GETK, b"key")).expect(GETK, OK);
    assert_eq!(
        (getk.key.as_slice(), getk.value.as_slice()),
        (&b"key"[..], &value[..])
    );
    let miss = mc.call(&keyed(GETK, b"nope")).expect(GETK, NOT_FOUND);
    assert_eq!((miss.key.as_slice(), miss.value.len()), (&b"nope"[..], 0));
    assert!(mc.get(b"nope").is_none());

    // Quiet gets say nothing on a miss; hits keep their quiet opcode.
    assert!(mc.quiet(&keyed(GETQ, b"nope")).is_empty());
    assert!(mc.quiet(&keyed(GETKQ, b"nope")).is_empty());
    let hits = mc.quiet(&keyed(GETQ, b"key"));
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!((hit.opcode, hit.status, hit.cas), (GETQ, OK, set.cas));
    let hits = mc.quiet(&keyed(GETKQ, b"key"));
    assert_eq!((hits[0].opcode, &hits[0].key[..]), (GETKQ, &b"key"[..]));

    // A setq says nothing; the value is there.
    assert!(mc.quiet(&store(SETQ, b"q", b"quiet", 7, 0, 0)).is_empty());
    let got = mc.get(b"q").expect("setq stored");
    assert_eq!((got.flags(), got.value.as_slice()), (7, &b"quiet"[..]));

    // delete answers cas 0; a second delete is Not found; deleteq is silent on success
    // and reports the miss.
    let deleted = mc.call(&keyed(DELETE, b"key")).expect(DELETE, OK);
    assert_eq!(deleted.cas, 0);
    assert!(mc.get(b"key").is_none());
    let again = mc.call(&keyed(DELETE, b"key")).expect(DELETE, NOT_FOUND);
    assert_eq!(again.value, b"Not found");
    assert!(mc.quiet(&keyed(DELETEQ, b"q")).is_empty());
    let replies = mc.quiet(&keyed(DELETEQ, b"q"));
    assert_eq!(replies.len(), 1);
    replies
        .into_iter()
        .next()
        .unwrap()
        .expect(DELETEQ, NOT_FOUND);

    // The other clients see what the binary protocol wrote, and the other way round.
    mc.set(b"shared", b"from-binary", 42);
    let mut client = cluster.client();
    let seen = client
        .get(b"shared")
        .unwrap()
        .expect("binary write visible");
    assert_eq!(
        (seen.value.as_slice(), seen.flags),
        (&b"from-binary"[..], 42)
    );
    client.put_with_flags(b"native", b"from-piazza", 9).unwrap();
    let got = mc.get(b"native").expect("native write visible");
    assert_eq!(
        (got.value.as_slice(), got.flags()),
        (&b"from-piazza"[..], 9)
    );
    assert!(mc.closed_after_quit());
}

impl Mc {
    /// quit answers, then the connection closes.
    fn closed_after_quit(&mut self) -> bool {
        self.call(&bare(QUIT)).expect(QUIT, OK);
        self.closed()
    }
}

#[test]
fn pipelines_split_packets_large_values_and_protocol_errors() {
    let cluster = Cluster::start(2);
    let mut mc = Mc::connect(&cluster.addr);

    // 200 setq in one write: only the noop answers. Then 200 getkq, half of them for
    // missing keys: exactly the hits come back, in order.
    let mut batch = Vec::new();
    for i in 0..200u32 {
        batch.extend(store(
            SETQ,
            format!("p{i}").as_bytes(),
            &i.to_be_bytes(),
            i,
            0,
            0,
        ));
    }
    assert!(mc.quiet(&batch).is_empty());
    let mut batch = Vec::new();
    for i in 0..400u32 {
        batch.extend(keyed(GETKQ, format!("p{i}").as_bytes()));
    }
    let hits = mc.quiet(&batch);
    assert_eq!(hits.len(), 200);
    for (i, hit) in hits.iter().enumerate() {
        assert_eq!(hit.key, format!("p{i}").as_bytes());
        assert_eq!(hit.value, (i as u32).to_be_bytes());
        assert_eq!(hit.flags(), i as u32);
    }

    // A packet dribbled a byte at a time is served once whole.
    let mut dribble = store(SET, b"slow", b"value", 1, 0, 0);
    dribble.extend(keyed(GET, b"slow"));
    for byte in &dribble {
        mc.send(std::slice::from_ref(byte));
    }
    mc.recv().expect(SET, OK);
    assert_eq!(mc.recv().expect(GET, OK).value, b"value");

    // A value at the limit round-trips; one byte more is Too large. (quiet or not), is
    // skipped, and the connection goes on. As memcached, a set refused so removes the
    // key's old value; an add, replace or append does not.
    let limit = 1024 * 1024;
    let big: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    mc.set(b"big", &big, 0);
    assert_eq!(mc.get(b"big").expect("big value").value, big);
    let mut too_big = big.clone();
    too_big.push(0);
    let reply = mc.call(&store(REPLACE, b"big", &too_big, 0, 0, 0));
    assert_eq!(reply.expect(REPLACE, TOO_LARGE).value, b"Too large.");
    let reply = mc.call(&packet(APPEND, b"", b"big", &too_big, 0, 0));
    reply.expect(APPEND, TOO_LARGE);
    assert_eq!(mc.get(b"big").expect("old value kept").value, big);
    let reply = mc.call(&store(SET, b"big", &too_big, 0, 0, 0));
    assert_eq!(reply.expect(SET, TOO_LARGE).value, b"Too large.");
    assert!(
        mc.get(b"big").is_none(),
        "a refused set removes the old value"
    );
    mc.set(b"big", b"small", 0);
    let replies = mc.quiet(&store(SETQ, b"big", &too_big, 0, 0, 0));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, TOO_LARGE);
    assert!(
        mc.get(b"big").is_none(),
        "a refused setq removes the old value"
    );

    // version, noop, stat.
    let version = mc.call(&bare(VERSION)).expect(VERSION, OK);
    assert!(version.text().starts_with("1.6.0-piazza-"), "{version:?}");
    assert_eq!(version.cas, 0);
    mc.call(&bare(NOOP)).expect(NOOP, OK);
    mc.send(&bare(STAT));
    let mut stats = Vec::new();
    loop {
        let reply = mc.recv().expect(STAT, OK);
        assert_eq!((reply.cas, reply.opaque), (0, 0xdead_beef));
        if reply.key.is_empty() {
            assert!(reply.value.is_empty());
            break;
        }
        stats.push((
            String::from_utf8(reply.key).unwrap(),
            String::from_utf8(reply.value).unwrap(),
        ));
    }
    let stat = |name: &str| {
        stats
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert!(stat("version").unwrap().starts_with("1.6.0-piazza-"));
    assert!(stat("cmd_get").unwrap().parse::<u64>().unwrap() > 0);
    mc.send(&keyed(STAT, b"settings"));
    let mut names = Vec::new();
    loop {
        let reply = mc.recv().expect(STAT, OK);
        if reply.key.is_empty() {
            break;
        }
        names.push(String::from_utf8(reply.key).unwrap());
    }
    assert!(names.iter().any(|n| n == "item_size_max"), "{names:?}");
    let unknown = mc.call(&keyed(STAT, b"nosuch")).expect(STAT, NOT_FOUND);
    assert_eq!(unknown.value, b"Not found");

    // Unknown opcodes and SASL (memcached without SASL): Unknown command, the body is
    // skipped, the connection goes on.
    let reply = mc.call(&packet(0x50, b"", b"", b"body", 1, 0));
    assert_eq!(reply.expect(0x50, UNKNOWN).value, b"Unknown command");
    let reply = mc.call(&bare(SASL_LIST));
    assert_eq!(reply.expect(SASL_LIST, UNKNOWN).value, b"Unknown command");
    let reply = mc.call(&packet(0x21, b"", b"PLAIN", b"\0user\0pass", 1, 0));
    reply.expect(0x21, UNKNOWN);
    mc.call(&bare(NOOP)).expect(NOOP, OK);

    // A get with extras: Invalid arguments, then the connection is closed.
    let reply = mc.call(&packet(GET, b"abcd", b"k", b"", 2, 0));
    assert_eq!(reply.expect(GET, INVALID).value, b"Invalid arguments");
    assert!(mc.closed());
    // A key over 250 bytes: the same.
    let mut mc = Mc::connect(&cluster.addr);
    mc.call(&keyed(GET, &[b'k'; 251])).expect(GET, INVALID);
    assert!(mc.closed());
    // Bad magic after a good packet: closed without a reply.
    let mut mc = Mc::connect(&cluster.addr);
    let mut bytes = bare(NOOP);
    bytes.extend([0x81; 24]);
    mc.call(&bytes).expect(NOOP, OK);
    assert!(mc.closed());
    // quit answers and closes; quitq closes without a word.
    let mut mc = Mc::connect(&cluster.addr);
    assert!(mc.closed_after_quit());
    let mut mc = Mc::connect(&cluster.addr);
    mc.send(&bare(QUITQ));
    assert!(mc.closed());
}

#[test]
fn a_cluster_that_requires_the_secret_refuses_memcached_binary_clients() {
    let dir = TempDir::new("mcbin-auth");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret = secret.display().to_string();
    let cluster = Cluster::start_secure(
        1,
        &["--secret-file", &secret, "--require-auth"],
        &["--secret-file", &secret],
        b"s3cret",
    );
    for opcode in [GET, VERSION, SASL_LIST] {
        let mut mc = Mc::connect(&cluster.addr);
        let reply = mc.call(&packet(opcode, b"", b"", b"", 3, 0));
        let reply = reply.expect(opcode, AUTH_ERROR);
        assert_eq!(
            (reply.value.as_slice(), reply.opaque),
            (&b"Auth failure."[..], 3)
        );
        assert!(mc.closed());
    }
}

// What follows needs the core semantics (add/replace/cas, append/prepend, incr/decr,
// touch and expiry, flush) in the router and slaves.

#[test]
fn add_replace_and_cas_answer_as_memcached() {
    let cluster = Cluster::start(2);
    let mut mc = Mc::connect(&cluster.addr);

    // add: once, then Data exists for key.; addq reports the failure.
    let added = mc.call(&store(ADD, b"a", b"1", 0, 0, 0)).expect(ADD, OK);
    assert_ne!(added.cas, 0);
    let again = mc
        .call(&store(ADD, b"a", b"2", 0, 0, 0))
        .expect(ADD, EXISTS);
    assert_eq!(again.value, b"Data exists for key.");
    let replies = mc.quiet(&store(ADDQ, b"a", b"2", 0, 0, 0));
    assert_eq!((replies.len(), replies[0].status), (1, EXISTS));
    assert!(mc.quiet(&store(ADDQ, b"aq", b"2", 0, 0, 0)).is_empty());

    // replace: Not found on a missing key, then works.
    let missing = mc.call(&store(REPLACE, b"r", b"1", 0, 0, 0));
    assert_eq!(missing.expect(REPLACE, NOT_FOUND).value, b"Not found");
    let first = mc.set(b"r", b"1", 0);
    let replaced = mc
        .call(&store(REPLACE, b"r", b"2", 3, 0, 0))
        .expect(REPLACE, OK);
    assert!(replaced.cas > first);
    let got = mc.get(b"r").unwrap();
    assert_eq!(
        (got.value.as_slice(), got.flags(), got.cas),
        (&b"2"[..], 3, replaced.cas)
    );

    // set with the right cas stores; with a stale one, Data exists for key.; on a
    // missing key, Not found. add and replace with a cas are a cas (memcached).
    let current = got.cas;
    let stored = mc
        .call(&store(SET, b"r", b"3", 0, 0, current))
        .expect(SET, OK);
    let stale = mc.call(&store(SET, b"r", b"4", 0, 0, current));
    assert_eq!(stale.expect(SET, EXISTS).value, b"Data exists for key.");
    mc.call(&store(SET, b"gone", b"4", 0, 0, current))
        .expect(SET, NOT_FOUND);
    mc.call(&store(REPLACE, b"r", b"5", 0, 0, current))
        .expect(REPLACE, EXISTS);
    mc.call(&store(ADD, b"r", b"5", 0, 0, stored.cas))
        .expect(ADD, OK);
    assert_eq!(mc.get(b"r").unwrap().value, b"5");

    // delete with a stale cas: Data exists for key.; with the right one, deleted.
    let current = mc.get(b"r").unwrap().cas;
    mc.call(&packet(DELETE, b"", b"r", b"", 1, current - 1))
        .expect(DELETE, EXISTS);
    mc.call(&packet(DELETE, b"", b"r", b"", 1, current))
        .expect(DELETE, OK);
    assert!(mc.get(b"r").is_none());
}

#[test]
fn append_and_prepend_answer_as_memcached() {
    let cluster = Cluster::start(2);
    let mut mc = Mc::connect(&cluster.addr);
    let missing = mc.call(&packet(APPEND, b"", b"c", b"x", 1, 0));
    assert_eq!(missing.expect(APPEND, NOT_STORED).value, b"Not stored.");
    let replies = mc.quiet(&packet(APPENDQ, b"", b"c", b"x", 1, 0));
    assert_eq!((replies.len(), replies[0].status), (1, NOT_STORED));

    mc.set(b"c", b"hello", 17);
    let appended = mc
        .call(&packet(APPEND, b"", b"c", b" world", 1, 0))
        .expect(APPEND, OK);
    assert_ne!(appended.cas, 0);
    mc.call(&packet(PREPEND, b"", b"c", b">> ", 1, 0))
        .expect(PREPEND, OK);
    assert!(mc.quiet(&packet(APPENDQ, b"", b"c", b"!", 1, 0)).is_empty());
    let got = mc.get(b"c").unwrap();
    assert_eq!(got.value, b">> hello world!");
    assert_eq!(got.flags(), 17, "append keeps the flags");
    // With a stale cas: Data exists for key.
    mc.call(&packet(APPEND, b"", b"c", b"?", 1, got.cas - 1))
        .expect(APPEND, EXISTS);
    // Growing the value past the limit: Not stored. (memcached), the value is kept.
    mc.set(b"c", &vec![b'a'; 1024 * 1024 - 1], 0);
    let reply = mc.call(&packet(PREPEND, b"", b"c", b"bb", 1, 0));
    assert_eq!(reply.expect(PREPEND, NOT_STORED).value, b"Not stored.");
    assert_eq!(mc.get(b"c").unwrap().value.len(), 1024 * 1024 - 1);
}

#[test]
fn incr_and_decr_answer_as_memcached() {
    let cluster = Cluster::start(2);
    let mut mc = Mc::connect(&cluster.addr);

    // A missing key is created with the initial value (the delta is not applied).
    let created = mc.call(&arith(INCR, b"n", 5, 10, 0, 0)).expect(INCR, OK);
    assert_eq!(created.number(), 10);
    assert_ne!(created.cas, 0);
    let incr = mc.call(&arith(INCR, b"n", 5, 10, 0, 0)).expect(INCR, OK);
    assert_eq!(incr.number(), 15);
    assert!(incr.cas > created.cas);
    let got = mc.get(b"n").unwrap();
    assert_eq!((got.value.as_slice(), got.cas), (&b"15"[..], incr.cas));
    // decr stops at 0; incr wraps at 2^64.
    assert_eq!(
        mc.call(&arith(DECR, b"n", 100, 0, 0, 0))
            .expect(DECR, OK)
            .number(),
        0
    );
    mc.set(b"w", b"18446744073709551615", 0);
    assert_eq!(
        mc.call(&arith(INCR, b"w", 2, 0, 0, 0))
            .expect(INCR, OK)
            .number(),
        1
    );
    // exptime 0xffffffff: a missing key is not created.
    let missing = mc.call(&arith(INCR, b"none", 1, 0, 0xffff_ffff, 0));
    assert_eq!(missing.expect(INCR, NOT_FOUND).value, b"Not found");
    assert!(mc.get(b"none").is_none());
    // A non-numeric value.
    mc.set(b"t", b"text", 0);
    let reply = mc
        .call(&arith(INCR, b"t", 1, 0, 0, 0))
        .expect(INCR, NON_NUMERIC);
    assert_eq!(
        reply.value,
        b"Non-numeric server-side value for incr or decr"
    );
    // cas: stale is Data exists for key.
    let current = mc.get(b"n").unwrap().cas;
    mc.call(&arith(INCR, b"n", 1, 0, 0, current + 1))
        .expect(INCR, EXISTS);
    mc.call(&arith(INCR, b"n", 1, 0, 0, current))
        .expect(INCR, OK);
    // incrq: silent.
    assert!(mc.quiet(&arith(INCRQ, b"n", 1, 0, 0, 0)).is_empty());
    // memcached writes a shorter number in place, padded with spaces: "15" went to "0 ".
    assert_eq!(mc.get(b"n").unwrap().value, b"2 ");
}

#[test]
fn touch_gat_and_expiry_answer_as_memcached() {
    let cluster = Cluster::start(2);
    let mut mc = Mc::connect(&cluster.addr);
    let one_second = 1u32.to_be_bytes();
    let long = 3600u32.to_be_bytes();

    // A key expiring in a second, and one in three seconds (expiry is counted in whole
    // seconds: a one-second key may be gone a moment after it was set) that is touched
    // to an hour before then.
    let set = mc
        .call(&store(SET, b"short", b"s", 5, 1, 0))
        .expect(SET, OK);
    mc.call(&store(SET, b"kept", b"k", 6, 3, 0)).expect(SET, OK);
    let touched = mc
        .call(&packet(TOUCH, &long, b"kept", b"", 1, 0))
        .expect(TOUCH, OK);
    assert_eq!((touched.flags(), touched.value.len()), (6, 0));
    let gat = mc
        .call(&packet(GAT, &long, b"kept", b"", 1, 0))
        .expect(GAT, OK);
    assert_eq!((gat.flags(), gat.value.as_slice()), (6, &b"k"[..]));
    let gatk = mc
        .call(&packet(GATK, &long, b"kept", b"", 1, 0))
        .expect(GATK, OK);
    assert_eq!(gatk.key, b"kept");
    assert!(set.cas != 0);

    wait_until(DEADLINE, "the unreached key expires", || {
        mc.get(b"short").is_none()
    });
    assert_eq!(mc.get(b"kept").expect("touched key lives").value, b"k");

    // Misses.
    let reply = mc.call(&packet(TOUCH, &one_second, b"short", b"", 1, 0));
    assert_eq!(reply.expect(TOUCH, NOT_FOUND).value, b"Not found");
    mc.call(&packet(GAT, &one_second, b"short", b"", 1, 0))
        .expect(GAT, NOT_FOUND);
    let miss = mc
        .call(&packet(GATK, &one_second, b"short", b"", 1, 0))
        .expect(GATK, NOT_FOUND);
    assert_eq!(miss.key, b"short");
    assert!(
        mc.quiet(&packet(GATQ, &one_second, b"short", b"", 1, 0))
            .is_empty()
    );
}

#[test]
fn flush_answers_as_memcached() {
    let cluster = Cluster::start(2);
    let mut mc = Mc::connect(&cluster.addr);
    mc.set(b"f1", b"1", 0);
    mc.call(&bare(FLUSH)).expect(FLUSH, OK);
    assert!(mc.get(b"f1").is_none());
    // With the 4-byte extras, and quiet.
    mc.set(b"f2", b"2", 0);
    assert!(
        mc.quiet(&packet(FLUSHQ, &0u32.to_be_bytes(), b"", b"", 1, 0))
            .is_empty()
    );
    assert!(mc.get(b"f2").is_none());
    // Delayed: the key is still there, then gone.
    mc.set(b"f3", b"3", 0);
    mc.call(&packet(FLUSH, &2u32.to_be_bytes(), b"", b"", 1, 0))
        .expect(FLUSH, OK);
    assert!(mc.get(b"f3").is_some(), "a delayed flush waits");
    wait_until(DEADLINE, "the delayed flush", || mc.get(b"f3").is_none());
}

#[test]
fn limits_and_the_request_timeout_follow_the_coordinators_flags() {
    let cluster = Cluster::start_with(
        2,
        &["--request-timeout-ms", "300", "--max-value-bytes", "100"],
    );
    let mut mc = Mc::connect(&cluster.addr);
    mc.set(b"v", &[b'x'; 100], 0);
    mc.call(&store(SET, b"w", &[b'x'; 101], 0, 0, 0))
        .expect(SET, TOO_LARGE);
    // A set declaring a 512 MiB value is refused from its header, before any of the
    // value is sent (nothing that size is held); what arrives of it is skipped.
    let mut huge = store(SET, b"h", b"", 0, 0, 0);
    huge[8..12].copy_from_slice(&(8 + 1 + (512u32 << 20)).to_be_bytes());
    mc.send(&huge);
    mc.recv().expect(SET, TOO_LARGE);
    mc.send(&[0u8; 4096]);
    // It never arrives whole: the connection is closed after the request timeout.
    let started = std::time::Instant::now();
    assert!(mc.closed());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Half a header, then nothing: the same.
    let mut mc = Mc::connect(&cluster.addr);
    mc.send(&bare(NOOP)[..10]);
    assert!(mc.closed());
    // Between requests the idle timeout applies, not the request timeout.
    let mut mc = Mc::connect(&cluster.addr);
    mc.call(&bare(NOOP)).expect(NOOP, OK);
    std::thread::sleep(Duration::from_millis(500)); // longer than the request timeout
    assert_eq!(mc.get(b"v").expect("still connected").value.len(), 100);
}
