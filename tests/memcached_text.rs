//! memcached's text protocol on the coordinator port, end to end: a real cluster, raw
//! bytes over TCP, every reply compared byte for byte with what memcached 1.6 sends for
//! the same input (checked against a real memcached 1.6.18).
//!
//! The tests named `core_*` need the router to serve add/replace/append/prepend, cas,
//! incr/decr, touch/gat, flush_all and expiry; the others need only get, set and delete.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, DEADLINE, wait_until};

/// How long a reply may take before the test fails (kept short: a missing reply should
/// fail fast, not hang the file).
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// A raw text connection.
struct Conn {
    stream: TcpStream,
    /// Bytes received but not yet checked.
    pending: Vec<u8>,
}

impl Conn {
    fn open(cluster: &Cluster) -> Conn {
        let stream = TcpStream::connect(&cluster.addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Conn {
            stream,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until at least `n` bytes are pending, the peer closes, or `REPLY_WAIT`
    /// passes; true if `n` bytes are there.
    fn fill(&mut self, n: usize) -> bool {
        let deadline = Instant::now() + REPLY_WAIT;
        let mut chunk = [0u8; 64 * 1024];
        while self.pending.len() < n && Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(got) => self.pending.extend_from_slice(&chunk[..got]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        self.pending.len() >= n
    }

    /// Asserts that the next bytes received are exactly `want`.
    fn expect(&mut self, want: &[u8]) {
        let complete = self.fill(want.len());
        let got = &self.pending[..self.pending.len().min(want.len())];
        assert!(
            complete && got == want,
            "expected {:?}\n     got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&self.pending)
        );
        self.pending.drain(..want.len());
    }

    /// Asserts that nothing was sent back before the reply to a marker command (a
    /// `verbosity`, whose `OK` the session writes without asking the router).
    fn expect_silence(&mut self) {
        self.send(b"verbosity 0\r\n");
        self.expect(b"OK\r\n");
    }

    /// The next reply line, without its `\r\n`.
    fn line(&mut self) -> String {
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                self.pending.drain(..end + 2);
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no reply line: {:?}",
                self.pending
            );
            let want = self.pending.len() + 1;
            self.fill(want);
        }
    }

    /// `gets key`: the cas unique of a present key.
    fn cas_of(&mut self, key: &str) -> u64 {
        self.send(format!("gets {key}\r\n").as_bytes());
        let line = self.line();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 5, "{line:?}");
        assert_eq!(&parts[..2], ["VALUE", key], "{line:?}");
        let len: usize = parts[3].parse().unwrap();
        self.fill(len + 2);
        self.pending.drain(..len + 2);
        self.expect(b"END\r\n");
        parts[4].parse().unwrap()
    }

    /// Sends `get key` and reads the reply (values without `\r\n` inside): true if the
    /// key was found.
    fn present(&mut self, key: &str) -> bool {
        self.send(format!("get {key}\r\n").as_bytes());
        let mut found = false;
        loop {
            match self.line().as_str() {
                "END" => return found,
                line if line.starts_with("VALUE ") => {
                    found = true;
                    self.line();
                }
                other => panic!("unexpected reply line {other:?}"),
            }
        }
    }

    /// Everything the server sends until it closes the connection.
    fn read_to_close(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + REPLY_WAIT;
        let mut chunk = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "connection not closed");
            match self.stream.read(&mut chunk) {
                Ok(0) => return std::mem::take(&mut self.pending),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A reset after the reply also means closed.
                Err(_) => return std::mem::take(&mut self.pending),
            }
        }
    }
}

/// `VALUE <key> <flags> <bytes>\r\n<data>\r\n`
fn value(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A storage command line with its data block.
fn storage(line: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("{line} {}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn cluster() -> Cluster {
    Cluster::start(2)
}

#[test]
fn classic_commands_pipelined_in_one_write_answer_in_order_byte_for_byte() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(
        b"set a 5 0 1\r\nA\r\nset b 4294967295 0 4 noreply\r\nb\r\nb\r\nget a b missing\r\n\
          bogus\r\ndelete a\r\ndelete a\r\ndelete b 0 noreply\r\nget a b\r\n\
          set c 0 0 0\r\n\r\nbget c\r\ndelete c 0\r\nset d 0 0 1 whatever\r\nd\r\n",
    );
    let mut want = b"STORED\r\n".to_vec();
    want.extend(value("a", 5, b"A"));
    want.extend(value("b", u32::MAX, b"b\r\nb"));
    want.extend_from_slice(b"END\r\nERROR\r\nDELETED\r\nNOT_FOUND\r\nEND\r\nSTORED\r\n");
    want.extend(value("c", 0, b""));
    want.extend_from_slice(b"END\r\nDELETED\r\nSTORED\r\n");
    c.expect(&want);

    // gets: the cas unique is the write's version, and a rewrite raises it.
    let first = c.cas_of("d");
    c.send(&storage("set d 0 0", b"dd"));
    c.expect(b"STORED\r\n");
    assert!(c.cas_of("d") > first);

    // Errors are answered and the connection carries on.
    c.send(b"get\r\nset k 0 0\r\ndelete k 5\r\nset k 0 0 x\r\n");
    c.expect(
        b"ERROR\r\nERROR\r\nCLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n\
          CLIENT_ERROR bad command line format\r\n",
    );
    c.send(format!("get {}\r\n", "k".repeat(251)).as_bytes());
    c.expect(b"CLIENT_ERROR bad command line format\r\n");
    c.send(b"set k 0 0 3\r\nabcde\r\n");
    // memcached takes exactly 3 + 2 bytes as the block, then reads the "\r\n" left over
    // as an empty command.
    c.expect(b"CLIENT_ERROR bad data chunk\r\nERROR\r\n");
    c.send(b"  get   d  \r\nget d\n");
    let mut want = value("d", 0, b"dd");
    want.extend_from_slice(b"END\r\n");
    want.extend(value("d", 0, b"dd"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
}

#[test]
fn refused_data_blocks_are_never_run_as_commands() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(b"set victim 0 0 6\r\nintact\r\n");
    c.expect(b"STORED\r\n");
    // Each line is refused, but its <bytes> (15) is valid: the block is swallowed.
    let attack = "delete victim\r\n\r\n";
    for (line, reply) in [
        (
            "set other x 0 15",
            &b"CLIENT_ERROR bad command line format\r\n"[..],
        ),
        (
            "set other 0 x 15",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        ("set other 0 0 15 noreply extra", b"ERROR\r\n"),
        ("cas other 0 0 15", b"ERROR\r\n"),
        (
            "cas other 0 0 15 x",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            "add other x 0 15",
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            "append other\t 0 0 15",
            b"CLIENT_ERROR key has control characters\r\n",
        ),
        (
            &format!("set {} 0 0 15", "k".repeat(251)),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
    ] {
        c.send(format!("{line}\r\n{attack}").as_bytes());
        c.expect(reply);
        c.expect_silence();
    }
    // A block that does not end where declared: exactly bytes + 2 are taken as data.
    c.send(b"set other 0 0 3\r\ndelete victim\r\n");
    c.expect(b"CLIENT_ERROR bad data chunk\r\nERROR\r\n");

    // The commands that used to be unknown (their blocks were then read as commands):
    // whatever they answer, it is one reply, and the victim stays.
    for line in [
        "append other 0 0 15",
        "prepend other 0 0 15",
        "replace other 0 0 15",
        "add :1:newkey 0 300 15",
        "cas other 0 0 15 1",
    ] {
        c.send(format!("{line}\r\n{attack}").as_bytes());
        let reply = c.line();
        assert_ne!(reply, "DELETED", "{line}");
        assert_ne!(reply, "ERROR", "{line}");
        c.expect_silence();
    }
    c.send(b"get victim\r\n");
    let mut want = value("victim", 0, b"intact");
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
}

#[test]
fn noreply_silences_replies_and_errors_but_not_a_wrong_token_count() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    // Every one of these is silent, errors included (memcached's set_noreply_maybe).
    c.send(b"set a 0 0 1 noreply\r\nA\r\n");
    c.send(b"set b x 0 1 noreply\r\nB\r\n");
    // A bad data chunk is silent too; the "\r\n" after the 3 bytes taken as its block is
    // an empty line, which memcached answers ERROR.
    c.send(b"set c 0 0 1 noreply\r\nCCC\r\n");
    c.expect(b"ERROR\r\n");
    c.send(b"set d 0 0 noreply\r\n");
    c.send(b"delete a noreply\r\ndelete a noreply\r\ndelete a x noreply\r\n");
    c.send(b"incr a x noreply\r\ndecr a 1 noreply\r\nincr a noreply\r\n");
    c.send(b"touch a x noreply\r\ntouch a 1 noreply\r\n");
    c.send(b"flush_all x noreply\r\nverbosity x noreply\r\nverbosity 1 noreply\r\n");
    c.send(b"add a 0 0 1 noreply\r\nA\r\nappend a 0 0 1 noreply\r\nA\r\n");
    c.send(b"cas a 0 0 1 1 noreply\r\nA\r\ncas a 0 0 1 x noreply\r\nA\r\n");
    c.send(format!("delete {} noreply\r\n", "k".repeat(251)).as_bytes());
    c.expect_silence();
    // Refused before noreply is looked at: a wrong number of tokens.
    c.send(b"set a 0 0 1 noreply extra\r\nA\r\n");
    c.expect(b"ERROR\r\n");
    c.send(b"incr a 1 2 noreply\r\n");
    c.expect(b"ERROR\r\n");
    // noreply is the last token only.
    c.send(b"delete a noreply 0\r\n");
    c.expect(b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
    // get has no noreply: it is a key.
    c.send(b"get fresh noreply\r\n");
    c.expect(b"END\r\n");
    c.expect_silence();
}

#[test]
fn a_400_key_get_line_of_100_kb_is_served_whole_and_in_pieces() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    let keys: Vec<String> = (0..400).map(|i| format!("{i:0>249}k")).collect();
    let mut sets = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if i % 2 == 0 {
            sets.extend(format!("set {key} {i} 0 8 noreply\r\n{}\r\n", &key[..8]).into_bytes());
        }
    }
    c.send(&sets);
    c.expect_silence();
    let line = format!("get {}\r\n", keys.join(" "));
    assert!(line.len() > 100_000);
    let mut want = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if i % 2 == 0 {
            want.extend(value(key, i as u32, &key.as_bytes()[..8]));
        }
    }
    want.extend_from_slice(b"END\r\n");
    c.send(line.as_bytes());
    c.expect(&want);
    // The same line in 1000-byte writes, then gets over all of them in one line too.
    for piece in line.as_bytes().chunks(1000) {
        c.send(piece);
    }
    c.expect(&want);
    c.send(format!("gets {}\r\n", keys.join(" ")).as_bytes());
    for (i, key) in keys.iter().enumerate() {
        if i % 2 == 0 {
            let line = c.line();
            assert!(line.starts_with(&format!("VALUE {key} {i} 8 ")), "{line}");
            c.expect(format!("{}\r\n", &key[..8]).as_bytes());
        }
    }
    c.expect(b"END\r\n");
}

#[test]
fn lines_too_long_are_refused_and_close_the_connection() {
    let cluster = cluster();
    // A retrieval line may be 2 MiB long; one byte more without a newline is refused.
    let mut c = Conn::open(&cluster);
    let cap = 2 * 1024 * 1024;
    let mut line = b"get".to_vec();
    while line.len() < cap + 1 {
        line.extend_from_slice(b" key");
    }
    line.truncate(cap + 1);
    c.send(&line);
    assert_eq!(c.read_to_close(), b"CLIENT_ERROR line too long\r\n");
    // Any other command keeps the short limit (8192 bytes).
    let mut c = Conn::open(&cluster);
    let mut line = b"delete ".to_vec();
    line.resize(8193, b'k');
    c.send(&line);
    assert_eq!(c.read_to_close(), b"CLIENT_ERROR line too long\r\n");
    // A line of exactly the retrieval cap (its \r counts) is fine; runs of spaces split
    // tokens, so it asks for one key.
    let mut c = Conn::open(&cluster);
    let mut line = b"get".to_vec();
    line.resize(cap - 5, b' ');
    line.extend_from_slice(b" key\r\n");
    assert_eq!(
        line.len(),
        cap + 1,
        "cap bytes, \\r included, before the \\n"
    );
    c.send(&line);
    c.expect(b"END\r\n");
}

#[test]
fn a_set_refused_as_too_large_forgets_the_old_value_and_swallows_its_block() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(b"set k 1 0 3\r\nold\r\nset victim 0 0 1\r\nv\r\n");
    c.expect(b"STORED\r\nSTORED\r\n");
    let mut big = b"delete victim\r\n".repeat(70_000);
    big.truncate(1024 * 1024 + 1);
    // append/prepend/add/replace/cas too large: refused, the old value stays.
    for line in [
        "append k 0 0",
        "prepend k 0 0",
        "add k 0 0",
        "replace k 0 0",
    ] {
        c.send(&storage(line, &big));
        c.expect(b"SERVER_ERROR object too large for cache\r\n");
    }
    c.send(format!("cas k 0 0 {} 1\r\n", big.len()).as_bytes());
    c.send(&big);
    c.send(b"\r\nget k\r\n");
    let mut want = b"SERVER_ERROR object too large for cache\r\n".to_vec();
    want.extend(value("k", 1, b"old"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    // set too large: refused, and the old value is deleted as memcached does.
    c.send(&storage("set k 0 0", &big));
    c.send(b"get k\r\n");
    c.expect(b"SERVER_ERROR object too large for cache\r\nEND\r\n");
    // Silent under noreply, and still forgets.
    c.send(b"set k 0 0 3\r\nnew\r\n");
    c.expect(b"STORED\r\n");
    c.send(format!("set k 0 0 {} noreply\r\n", big.len()).as_bytes());
    c.send(&big);
    c.send(b"\r\n");
    c.send(b"get k victim\r\n");
    let mut want = value("victim", 0, b"v");
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
}

#[test]
fn version_verbosity_stats_shutdown_quit_and_http_answer_like_memcached() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(b"version\r\nversion extra\r\n");
    let first = c.line();
    assert!(first.starts_with("VERSION 1.6"), "{first}");
    assert_eq!(c.line(), first);
    c.send(b"verbosity 1\r\nverbosity 1 x\r\nverbosity\r\nverbosity x\r\n");
    c.expect(b"OK\r\nOK\r\nERROR\r\nCLIENT_ERROR bad command line format\r\n");
    c.send(b"stats detail on\r\nstats detail off\r\nstats detail dump\r\nstats detail\r\n");
    c.expect(b"OK\r\nOK\r\nEND\r\nCLIENT_ERROR usage: stats detail on|off|dump\r\n");
    c.send(b"stats reset\r\nstats reset now\r\nstats bogus\r\nstats cachedump 1 1\r\n");
    c.expect(b"RESET\r\nRESET\r\nERROR\r\nEND\r\n");
    c.send(b"stats cachedump\r\nstats cachedump 64 1\r\nshutdown\r\n");
    c.expect(
        b"CLIENT_ERROR bad command line\r\nCLIENT_ERROR Illegal slab id\r\n\
          ERROR: shutdown not enabled\r\n",
    );
    // Every section clients ask for is STAT lines then END, never ERROR.
    for section in ["", " settings", " items", " slabs", " sizes", " conns"] {
        c.send(format!("stats{section}\r\n").as_bytes());
        loop {
            let line = c.line();
            if line == "END" {
                break;
            }
            let parts: Vec<&str> = line.splitn(3, ' ').collect();
            assert!(
                parts.len() == 3 && parts[0] == "STAT",
                "stats{section}: {line:?}"
            );
        }
    }
    // quit closes after the replies before it.
    c.send(b"verbosity 0\r\nquit\r\nverbosity 0\r\n");
    assert_eq!(c.read_to_close(), b"OK\r\n");
    // An HTTP request line closes the connection without a reply.
    let mut c = Conn::open(&cluster);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_to_close(), b"");
    let mut c = Conn::open(&cluster);
    c.send(b"quit now\r\n");
    assert_eq!(c.read_to_close(), b"");
}

#[test]
fn a_pipeline_sent_one_byte_at_a_time_answers_the_same() {
    let cluster = cluster();
    let pipeline: &[u8] = b"set a 1 0 3\r\nabc\r\nget a b\r\nset b x 0 5\r\nget a\r\n\
        set c 0 0 2 noreply\r\nhi\r\ndelete a noreply\r\ndelete a\r\nbogus\r\nget c\r\n\
        stats detail on\r\nverbosity 1\r\n";
    let mut want = b"STORED\r\n".to_vec();
    want.extend(value("a", 1, b"abc"));
    want.extend_from_slice(
        b"END\r\nCLIENT_ERROR bad command line format\r\nNOT_FOUND\r\nERROR\r\n",
    );
    want.extend(value("c", 0, b"hi"));
    want.extend_from_slice(b"END\r\nOK\r\nOK\r\n");
    let mut whole = Conn::open(&cluster);
    whole.send(pipeline);
    whole.expect(&want);
    whole.send(b"delete c\r\n");
    whole.expect(b"DELETED\r\n");
    let mut bytes = Conn::open(&cluster);
    for byte in pipeline {
        bytes.send(&[*byte]);
    }
    bytes.expect(&want);
}

// ---- needs the core: add/replace/append/prepend, cas, incr/decr, touch, flush, expiry --

#[test]
fn core_add_replace_append_prepend_answer_like_memcached() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(
        b"set a 5 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nadd b 7 0 1\r\ny\r\nreplace a 9 0 2\r\nzz\r\n\
          replace c 0 0 1\r\nz\r\nappend a 0 0 2\r\n++\r\nprepend a 0 0 2\r\n--\r\n\
          append c 0 0 1\r\nz\r\nprepend c 0 0 1\r\nz\r\nget a b c\r\n",
    );
    let mut want = b"STORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\n\
        STORED\r\nNOT_STORED\r\nNOT_STORED\r\n"
        .to_vec();
    want.extend(value("a", 9, b"--zz++"));
    want.extend(value("b", 7, b"y"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    // The Django-style attack: the value is stored as data.
    c.send(b"set :1:victim 0 0 1\r\nv\r\nadd :1:newkey 0 300 16\r\ndelete :1:victim\r\n");
    c.expect(b"STORED\r\nSTORED\r\n");
    c.send(b"get :1:newkey :1:victim\r\n");
    let mut want = value(":1:newkey", 0, b"delete :1:victim");
    want.extend(value(":1:victim", 0, b"v"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    c.send(b"append other 0 0 15\r\ndelete victim\r\n\r\n");
    c.expect(b"NOT_STORED\r\n");
}

#[test]
fn core_cas_answers_stored_exists_and_not_found() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(b"cas x 0 0 1 5\r\nz\r\nset k 3 0 1\r\na\r\n");
    c.expect(b"NOT_FOUND\r\nSTORED\r\n");
    let unique = c.cas_of("k");
    c.send(format!("cas k 4 0 1 {}\r\nb\r\n", unique + 1000).as_bytes());
    c.expect(b"EXISTS\r\n");
    // memcached compares a unique of 0 too: no item has it.
    c.send(b"cas k 4 0 1 0\r\nb\r\ncas nokey 4 0 1 0\r\nb\r\n");
    c.expect(b"EXISTS\r\nNOT_FOUND\r\n");
    c.send(format!("cas k 4 0 1 {unique}\r\nb\r\n").as_bytes());
    c.expect(b"STORED\r\n");
    c.send(format!("cas k 4 0 1 {unique}\r\nc\r\nget k\r\n").as_bytes());
    let mut want = b"EXISTS\r\n".to_vec();
    want.extend(value("k", 4, b"b"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    let newer = c.cas_of("k");
    assert!(newer > unique);
    c.send(format!("cas k 0 0 1 {newer} noreply\r\nd\r\n").as_bytes());
    c.expect_silence();
}

#[test]
fn core_incr_and_decr_answer_like_memcached() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(
        b"set n 3 0 2\r\n99\r\nincr n 1\r\nget n\r\ndecr n 1000\r\nincr n 18446744073709551615\r\n\
          incr n 2\r\ndecr n 0\r\nincr m 1\r\ndecr m 1\r\nset t 0 0 2\r\nab\r\nincr t 1\r\n\
          incr t x\r\nincr n +5\r\n",
    );
    let mut want = b"STORED\r\n100\r\n".to_vec();
    want.extend(value("n", 3, b"100"));
    want.extend_from_slice(
        b"END\r\n0\r\n18446744073709551615\r\n1\r\n1\r\nNOT_FOUND\r\nNOT_FOUND\r\nSTORED\r\n\
          CLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
          CLIENT_ERROR invalid numeric delta argument\r\n6\r\n",
    );
    c.expect(&want);
    c.send(b"set v 0 0 2\r\n10\r\nincr v 5 noreply\r\nget v\r\n");
    let mut want = b"STORED\r\n".to_vec();
    want.extend(value("v", 0, b"15"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
}

#[test]
fn core_touch_gat_gats_and_expiry_answer_like_memcached() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(
        b"set a 0 0 1\r\nx\r\ngat -1 a\r\nget a\r\nset b 0 0 1\r\nx\r\ntouch b -1\r\nget b\r\n\
          set c 0 -1 1\r\nx\r\nget c\r\ntouch c 10\r\nset d 2 0 1\r\nx\r\ngat 100 d e d\r\n",
    );
    let mut want = b"STORED\r\n".to_vec();
    want.extend(value("a", 0, b"x"));
    want.extend_from_slice(
        b"END\r\nEND\r\nSTORED\r\nTOUCHED\r\nEND\r\nSTORED\r\nEND\r\nNOT_FOUND\r\nSTORED\r\n",
    );
    want.extend(value("d", 2, b"x"));
    want.extend(value("d", 2, b"x"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    // A relative exptime: there now, gone within a couple of seconds.
    c.send(b"set e 0 1 1\r\ny\r\nget e\r\n");
    let mut want = b"STORED\r\n".to_vec();
    want.extend(value("e", 0, b"y"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    wait_until(DEADLINE, "e expires", || !c.present("e"));
    // touch gives a key an expiry; a Unix time in the past expires it at once.
    c.send(b"set f 0 0 1\r\nz\r\ntouch f 1000000000\r\nget f\r\n");
    c.expect(b"STORED\r\nTOUCHED\r\nEND\r\n");
    // gats lists the cas unique, as gets does. Here a touch is a versioned write on both
    // copies, so it gives the item a new cas unique (memcached keeps the old one: a
    // documented difference); the unique gats and gets list is the current one.
    let before = c.cas_of("d");
    c.send(b"touch d 200\r\n");
    c.expect(b"TOUCHED\r\n");
    let unique = c.cas_of("d");
    assert!(unique > before, "a touch is a newer write");
    c.send(format!("cas d 2 0 1 {before}\r\ny\r\n").as_bytes());
    c.expect(b"EXISTS\r\n");
    c.send(b"gats 100 d\r\n");
    let line = c.line();
    let touched: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(line.starts_with("VALUE d 2 1 "), "{line:?}");
    assert!(touched > unique, "gats touches too");
    c.expect(b"x\r\nEND\r\n");
    c.send(format!("cas d 2 0 1 {touched}\r\ny\r\n").as_bytes());
    c.expect(b"STORED\r\n");
}

#[test]
fn core_flush_all_forgets_everything_now_or_later() {
    let cluster = cluster();
    let mut c = Conn::open(&cluster);
    c.send(b"set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\nadd a 0 0 1\r\ny\r\nget a\r\n");
    let mut want = b"STORED\r\nOK\r\nEND\r\nSTORED\r\n".to_vec();
    want.extend(value("a", 0, b"y"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    c.send(b"flush_all -1\r\nget a\r\nset b 0 0 1\r\nz\r\nflush_all 0 noreply\r\nget b\r\n");
    c.expect(b"OK\r\nEND\r\nSTORED\r\nEND\r\n");
    // A delayed flush: the key is there now, gone after the delay.
    c.send(b"set c 0 0 1\r\nw\r\nflush_all 2\r\nget c\r\n");
    let mut want = b"STORED\r\nOK\r\n".to_vec();
    want.extend(value("c", 0, b"w"));
    want.extend_from_slice(b"END\r\n");
    c.expect(&want);
    wait_until(DEADLINE, "the delayed flush", || !c.present("c"));
}

#[test]
fn failures_are_server_errors_that_noreply_silences() {
    // No slaves: nothing can be served, and every command says so in memcached's form.
    let cluster = Cluster::start(0);
    let mut c = Conn::open(&cluster);
    for command in [
        &b"set k 0 0 1\r\nx\r\n"[..],
        b"get k\r\n",
        b"get a b c\r\n",
        b"gets a b\r\n",
        b"gat 10 a b\r\n",
        b"delete k\r\n",
        b"incr k 1\r\n",
        b"touch k 1\r\n",
        b"add k 0 0 1\r\nx\r\n",
    ] {
        c.send(command);
        let line = c.line();
        assert!(
            line.starts_with("SERVER_ERROR ") && line.len() > 13,
            "{command:?}: {line:?}"
        );
        // A failed retrieval answers the error alone, without END.
        c.expect_silence();
    }
    c.send(b"set k 0 0 1 noreply\r\nx\r\ndelete k noreply\r\nincr k 1 noreply\r\n");
    c.send(b"touch k 1 noreply\r\nflush_all noreply\r\ncas k 0 0 1 1 noreply\r\nx\r\n");
    c.expect_silence();
    // The parser's own errors need no slave.
    c.send(b"get\r\nset k x 0 1\r\nx\r\n");
    c.expect(b"ERROR\r\nCLIENT_ERROR bad command line format\r\n");
}
