//! memcached's meta commands (`mn mg ms md ma me`) on the coordinator's text port, against
//! a real cluster: exact reply bytes, as memcached 1.6.18 writes them (cas values aside,
//! which are Piazza's versions).
//!
//! Every exchange ends with `mn`, so a reply is read up to its `MN` and compared whole:
//! a missing or extra line fails the test, and nothing waits blindly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Cluster;

/// A raw text connection to the coordinator.
struct Meta {
    stream: TcpStream,
}

impl Meta {
    fn connect(cluster: &Cluster) -> Meta {
        Meta {
            stream: common::connect(&cluster.addr),
        }
    }

    /// Sends `request` then `mn`, and returns everything before the `MN`.
    fn send(&mut self, request: &[u8]) -> Vec<u8> {
        self.stream.write_all(request).unwrap();
        self.stream.write_all(b"mn\r\n").unwrap();
        self.until_mn()
    }

    /// Reads up to and including `MN\r\n`; returns what came before it.
    fn until_mn(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + common::DEADLINE;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.ends_with(b"MN\r\n") {
            assert!(Instant::now() < deadline, "no MN after {buf:?}");
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed after {buf:?}"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read failed after {buf:?}: {e}"),
            }
        }
        buf.truncate(buf.len() - 4);
        buf
    }

    /// Sends `request` then `mn`, and asserts the exact reply. Reads at least as many
    /// bytes as expected (a reply may itself hold `MN`), and briefly waits for more after a
    /// short one, so an early `MN` cannot leave bytes behind for the next exchange.
    fn expect(&mut self, request: &[u8], reply: &[u8]) {
        self.stream.write_all(request).unwrap();
        self.stream.write_all(b"mn\r\n").unwrap();
        let want = reply.len() + 4;
        let deadline = Instant::now() + common::DEADLINE;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let done = got.ends_with(b"MN\r\n");
            if done && got.len() >= want {
                break;
            }
            assert!(Instant::now() < deadline, "no MN after {got:?}");
            let wait = if done { 300 } else { 10_000 };
            self.stream
                .set_read_timeout(Some(Duration::from_millis(wait)))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed after {got:?}"),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(_) if done => break,
                Err(e) => panic!("read failed after {got:?}: {e}"),
            }
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        got.truncate(got.len() - 4);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }
}

/// The number after ` c` in a reply line.
fn cas_of(reply: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(reply);
    let line = text.lines().next().unwrap_or_default();
    line.split(' ')
        .find_map(|t| t.strip_prefix('c').and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no cas in {text:?}"))
}

/// Replaces the cas in ` c<digits>` with `c#` (and `cas=` in `me`), for exact compares.
fn without_cas(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    text.split("\r\n")
        .map(|line| {
            line.split(' ')
                .map(|t| match t.strip_prefix('c') {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                        "c#".to_string()
                    }
                    _ => match t.strip_prefix("cas=") {
                        Some(_) => "cas=#".to_string(),
                        None => t.to_string(),
                    },
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

// ---- Served by what the router already does (get, classic set, delete) ----

#[test]
fn noop_errors_and_misses_are_byte_exact() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    c.expect(b"mn\r\n", b"MN\r\n");
    c.expect(b"mn extra tokens\r\n", b"MN\r\n");
    c.expect(b"mg nope v\r\n", b"EN\r\n");
    c.expect(b"mg nope O5 k s v\r\n", b"EN O5 knope\r\n");
    c.expect(b"mg nope q v\r\n", b"");
    c.expect(b"mg Zm9vYmFy b k O1\r\n", b"EN kZm9vYmFy b O1\r\n");
    c.expect(b"md nope\r\n", b"NF\r\n");
    c.expect(b"md nope q k\r\n", b"NF knope\r\n");
    c.expect(b"me nope\r\n", b"EN\r\n");
    let errors: [(&[u8], &[u8]); 20] = [
        (b"mg\r\n", b"ERROR\r\n"),
        (b"ms\r\n", b"ERROR\r\n"),
        (b"mx foo\r\n", b"ERROR\r\n"),
        (b"me\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"mg foo y\r\n", b"CLIENT_ERROR invalid flag\r\n"),
        (b"mg foo E5\r\n", b"CLIENT_ERROR invalid flag\r\n"),
        (b"mg foo v v\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
        (
            b"mg foo Tx\r\n",
            b"CLIENT_ERROR bad token in command line format\r\n",
        ),
        (b"mg foo b\r\n", b"CLIENT_ERROR error decoding key\r\n"),
        (
            b"mg foo a b c d e f g h i j k l m n o p q r\r\n",
            b"CLIENT_ERROR options flags are too long\r\n",
        ),
        (
            b"md foo Tx\r\n",
            b"CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        (
            b"ma foo Mx\r\n",
            b"CLIENT_ERROR invalid mode for ma M token\r\n",
        ),
        (
            b"ma foo Dx\r\n",
            b"CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        (b"ms foo\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (
            b"ms foo -1\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"ms foo 2 Me\r\nhi\r\n",
            b"CLIENT_ERROR invalid mode for ms M token\r\n",
        ),
        (
            b"ms foo 2 MEE\r\nhi\r\n",
            b"CLIENT_ERROR incorrect length for M token\r\n",
        ),
        (
            b"ms foo 2 c c\r\nhi\r\n",
            b"CLIENT_ERROR duplicate flag\r\n",
        ),
        (
            b"ms foo 2\r\nhiX\r\n",
            b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
        ),
        (
            b"md foo O123456789012345678901234567890123\r\n",
            b"CLIENT_ERROR opaque token too long\r\n",
        ),
    ];
    for (request, reply) in errors {
        c.expect(request, reply);
    }
    let long = format!("mg {}\r\n", "k".repeat(251));
    c.expect(long.as_bytes(), b"CLIENT_ERROR bad command line format\r\n");
    // The connection is still in step.
    c.expect(b"mg nope\r\n", b"EN\r\n");
}

#[test]
fn refused_ms_blocks_are_swallowed_never_run() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    // Each refused `ms` carries a block that would be a command if it were read as one.
    let block = b"md victim\r\n";
    let len = block.len() - 2;
    c.expect(b"set victim 0 0 1\r\nv\r\n", b"STORED\r\n");
    for flags in [
        "z",
        "c c",
        "Me",
        "Tx",
        "a b c d e f g h i j k l m n o p q",
        "O123456789012345678901234567890123",
    ] {
        let mut request = format!("ms foo {len} {flags}\r\n").into_bytes();
        request.extend_from_slice(block);
        let reply = c.send(&request);
        assert!(reply.starts_with(b"CLIENT_ERROR "), "{flags}: {reply:?}");
        assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1, "{flags}");
    }
    // A key too long with a valid length: memcached would read the block as a command.
    let mut request = format!("ms {} {len}\r\n", "k".repeat(251)).into_bytes();
    request.extend_from_slice(block);
    c.expect(&request, b"CLIENT_ERROR bad command line format\r\n");
    // Too large: refused at once, the block dropped as it arrives.
    let big = 2 * 1024 * 1024;
    c.stream
        .write_all(format!("ms big {big} T0\r\n").as_bytes())
        .unwrap();
    let mut rest = vec![b'x'; big];
    rest.extend_from_slice(b"\r\n");
    c.stream.write_all(&rest).unwrap();
    c.expect(b"", b"SERVER_ERROR object too large for cache\r\n");
    c.expect(b"mg victim v\r\n", b"VA 1\r\nv\r\n");
}

#[test]
fn mg_reads_what_classic_set_stored_and_md_deletes_it() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    c.expect(b"set k1 5 0 2\r\nhi\r\n", b"STORED\r\n");
    let reply = c.send(b"mg k1 v c f t s k h l O99 u\r\n");
    let cas = cas_of(&reply);
    assert_eq!(
        without_cas(&reply),
        "VA 2 c# f5 t-1 s2 kk1 h0 l0 O99\r\nhi\r\n"
    );
    assert!(cas > 0);
    c.expect(b"mg k1\r\n", b"HD\r\n");
    c.expect(b"mg k1 q\r\n", b"HD\r\n");
    c.expect(b"mg k1 s f\r\n", b"HD s2 f5\r\n");
    c.expect(b"mg azE= b k v\r\n", b"VA 2 kazE= b\r\nhi\r\n");
    let me = c.send(b"me k1\r\n");
    assert_eq!(
        without_cas(&me),
        "ME k1 exp=-1 la=0 cas=# fetch=no cls=1 size=67\r\n"
    );
    // Pipelined with quiet misses: only the hits answer.
    c.expect(
        b"mg m1 q v O1\r\nmg k1 q v O2\r\nmg m2 q v O3\r\n",
        b"VA 2 O2\r\nhi\r\n",
    );
    // A split command waits for its end.
    for byte in b"mg k1 s v\r\n" {
        c.stream.write_all(&[*byte]).unwrap();
    }
    c.expect(b"", b"VA 2 s2\r\nhi\r\n");
    c.expect(b"md k1 q\r\n", b"");
    c.expect(b"md k1 k O7\r\n", b"NF kk1 O7\r\n");
    c.expect(b"set k2 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"md k2 k\r\n", b"HD kk2\r\n");
}

// ---- Need the core's store modes, cas, touch and arithmetic ----

#[test]
fn ms_stores_with_every_mode_and_cas() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    let reply = c.send(b"ms a 2 T0 F5 c k O12\r\nhi\r\n");
    assert_eq!(without_cas(&reply), "HD c# ka O12\r\n");
    let cas = cas_of(&reply);
    let reply = c.send(b"mg a v c f\r\n");
    assert_eq!(reply, format!("VA 2 c{cas} f5\r\nhi\r\n").as_bytes());
    c.expect(b"ms a 2 q\r\nHI\r\n", b"");
    c.expect(b"ms a 2 ME c\r\nhi\r\n", b"NS c0\r\n");
    c.expect(b"ms new 2 ME\r\nhi\r\n", b"HD\r\n");
    c.expect(b"ms nope 2 MR\r\nhi\r\n", b"NS\r\n");
    c.expect(b"ms nope 2 MA c\r\nhi\r\n", b"NS c0\r\n");
    c.expect(b"ms nope 2 MP\r\nhi\r\n", b"NS\r\n");
    c.expect(b"ms a 1 MA\r\n!\r\nms a 1 MP\r\n<\r\n", b"HD\r\nHD\r\n");
    c.expect(b"mg a v f\r\n", b"VA 4 f0\r\n<HI!\r\n");
    // cas compare: stale, zero, missing, then the right one.
    c.expect(format!("ms a 1 C{cas}\r\nx\r\n").as_bytes(), b"EX\r\n");
    c.expect(b"ms a 1 C0\r\nx\r\n", b"EX\r\n");
    c.expect(b"ms nope 1 C5\r\nx\r\n", b"NF\r\n");
    c.expect(b"ms nope 1 C0\r\nx\r\n", b"NF\r\n");
    let now = cas_of(&c.send(b"mg a c\r\n"));
    let reply = c.send(format!("ms a 1 C{now} c\r\ny\r\n").as_bytes());
    assert!(reply.starts_with(b"HD c"), "{reply:?}");
    assert_ne!(cas_of(&reply), now);
    c.expect(format!("ms a 1 MA C{now}\r\nz\r\n").as_bytes(), b"EX\r\n");
    // Autovivify on append.
    c.expect(b"ms viv 2 MA N100 F3\r\nab\r\n", b"HD\r\n");
    c.expect(b"ms viv 2 MA N100\r\ncd\r\n", b"HD\r\n");
    c.expect(b"mg viv v f\r\n", b"VA 4 f3\r\nabcd\r\n");
    // Binary keys and data.
    let reply = c.send(b"ms AAEC/w== 4 b k c\r\n\r\n\0\n\r\n");
    assert_eq!(without_cas(&reply), "HD kAAEC/w== b c#\r\n");
    c.expect(
        b"mg AAEC/w== b v k\r\n",
        b"VA 4 kAAEC/w== b\r\n\r\n\0\n\r\n",
    );
}

#[test]
fn mg_touches_vivifies_and_reports_ttl() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    c.expect(b"ms t 2 T100\r\nhi\r\n", b"HD\r\n");
    c.expect(b"mg t t v\r\n", b"VA 2 t100\r\nhi\r\n");
    c.expect(b"mg t t T200\r\n", b"HD t100\r\n");
    c.expect(b"mg t T300 t\r\n", b"HD t300\r\n");
    c.expect(b"mg t t\r\n", b"HD t300\r\n");
    c.expect(b"mg gone T30\r\n", b"EN\r\n");
    // Vivify: the first client wins an empty item.
    let reply = c.send(b"mg v t N30 v c\r\n");
    assert_eq!(without_cas(&reply), "VA 0 t-1 c# W\r\n\r\n");
    // Later readers learn that someone else holds the token.
    c.expect(b"mg v N30 t s f\r\n", b"HD t30 s0 f0 Z\r\n");
    c.expect(b"mg v R50 t\r\n", b"HD t30 Z\r\n");
    c.expect(b"mg v T30 t\r\n", b"HD t30 Z\r\n");
    // The winner stores the value: a new item, whose token can be won once by `R`.
    c.expect(b"ms v 1 T30\r\nx\r\n", b"HD\r\n");
    c.expect(b"mg v R10 t v\r\n", b"VA 1 t30\r\nx\r\n");
    c.expect(b"mg v R50 t\r\n", b"HD t30 W\r\n");
    c.expect(b"mg v R50 t\r\n", b"HD t30 Z\r\n");
    // Expiry: a 1-second TTL is gone within a few seconds.
    c.expect(b"ms short 1 T1\r\nx\r\n", b"HD\r\n");
    common::wait_until(Duration::from_secs(5), "short expires", || {
        c.send(b"mg short\r\n") == b"EN\r\n"
    });
}

#[test]
fn md_compares_cas_and_empties_values() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    let cas = cas_of(&c.send(b"ms d 1 F4 c\r\nx\r\n"));
    c.expect(format!("md d C{}\r\n", cas + 1).as_bytes(), b"EX\r\n");
    c.expect(b"md d C0 k\r\n", b"EX kd\r\n");
    c.expect(b"md d x F7\r\n", b"HD\r\n");
    c.expect(b"mg d v f\r\n", b"VA 0 f7\r\n\r\n");
    let cas = cas_of(&c.send(b"mg d c\r\n"));
    c.expect(format!("md d C{cas} q\r\n").as_bytes(), b"");
    c.expect(b"mg d\r\n", b"EN\r\n");
    c.expect(
        b"ms i 1\r\nx\r\nmd i I T30\r\nmg i\r\n",
        b"HD\r\nHD\r\nEN\r\n",
    );
}

#[test]
fn ma_counts_creates_and_refuses_non_numbers() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    c.expect(b"ma n\r\n", b"NF\r\n");
    c.expect(b"ma n O5 k\r\n", b"NF O5 kn\r\n");
    let reply = c.send(b"ma n N0 J10 v t c\r\n");
    assert_eq!(without_cas(&reply), "VA 2 t-1 c#\r\n10\r\n");
    c.expect(b"ma n v q\r\nma n v\r\n", b"VA 2\r\n12\r\n");
    c.expect(b"ma n MD D100 v\r\n", b"VA 1\r\n0\r\n");
    c.expect(
        b"ma n M+ D18446744073709551615 v\r\n",
        b"VA 20\r\n18446744073709551615\r\n",
    );
    c.expect(b"ma n MI v\r\n", b"VA 1\r\n0\r\n");
    c.expect(b"ma n M- v\r\n", b"VA 1\r\n0\r\n");
    let cas = cas_of(&c.send(b"mg n c\r\n"));
    c.expect(format!("ma n C{} k\r\n", cas + 1).as_bytes(), b"EX kn\r\n");
    let reply = c.send(format!("ma n C{cas} c v\r\n").as_bytes());
    assert!(reply.ends_with(b"\r\n1\r\n"), "{reply:?}");
    assert_ne!(cas_of(&reply), cas);
    c.expect(b"ma n t T50\r\n", b"HD t-1\r\n");
    c.expect(b"ma n t\r\n", b"HD t50\r\n");
    c.expect(b"ma fresh N90 t\r\n", b"HD t90\r\n");
    c.expect(
        b"ms s 1\r\nx\r\nma s\r\nma s q\r\n",
        b"HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
          CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
}

#[test]
fn one_client_wins_a_vivified_key_the_rest_see_z() {
    let cluster = Cluster::start(2);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut c = Meta::connect(&cluster);
            std::thread::spawn(move || c.send(b"mg hot N30 s\r\n"))
        })
        .collect();
    let replies: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wins = replies
        .iter()
        .filter(|r| r.as_slice() == b"HD s0 W\r\n")
        .count();
    assert_eq!(wins, 1, "{replies:?}");
    for reply in &replies {
        assert!(
            [&b"HD s0 W\r\n"[..], b"HD s0 Z\r\n", b"HD s0\r\n"].contains(&reply.as_slice()),
            "{reply:?}"
        );
    }
    let mut c = Meta::connect(&cluster);
    c.expect(b"mg hot s\r\n", b"HD s0 Z\r\n");
}

#[test]
fn quiet_pipelines_answer_only_what_matters() {
    let cluster = Cluster::start(2);
    let mut c = Meta::connect(&cluster);
    c.expect(
        b"ms p1 1 q\r\na\r\nms p2 1 q ME\r\nb\r\nms p2 1 q ME O7\r\nc\r\nms p3 1 q\r\nd\r\n",
        b"NS O7\r\n",
    );
    c.expect(
        b"mg p1 q v k\r\nmg p9 q v k\r\nmg p3 q v k\r\n",
        b"VA 1 kp1\r\na\r\nVA 1 kp3\r\nd\r\n",
    );
    c.expect(
        b"md p1 q\r\nmd p9 q\r\nma p3 q\r\n",
        b"NF\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.expect(
        b"ms n 1 q\r\n5\r\nma n q\r\nma n q D4\r\nmg n v\r\n",
        b"VA 2\r\n10\r\n",
    );
}
