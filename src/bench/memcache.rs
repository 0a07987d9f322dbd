//! memcached's text protocol: a minimal client ([`TextConn`], shared with [`super::resp`])
//! and the reply parsers.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

use super::conn::{CONN_BUFFER, Cmd, Done, Kind, OpError};

/// Largest data block accepted in a memcached `VALUE` reply.
pub(super) const MAX_TEXT_VALUE: usize = 128 << 20;
/// Longest memcached reply line read (a `VALUE` line with a 250-byte key fits easily).
const MAX_TEXT_LINE: u64 = 1024;

/// A minimal memcached text (or Redis RESP) client: `get` (one key or many), `gets`,
/// `set` (with or without an exptime), `cas`, `incr`, `version` (RESP: see
/// [`super::resp`]), requests queued and sent together, with `TCP_NODELAY`.
pub(super) struct TextConn {
    pub(super) reader: BufReader<TcpStream>,
    pub(super) writer: BufWriter<TcpStream>,
    /// Reused for every reply line and data block.
    pub(super) line: Vec<u8>,
    pub(super) data: Vec<u8>,
    /// A SET was queued since the last flush (for Redis's `WAIT`).
    pub(super) sets_queued: bool,
}

impl TextConn {
    pub(super) fn new(stream: TcpStream) -> io::Result<TextConn> {
        Ok(TextConn {
            reader: BufReader::with_capacity(CONN_BUFFER, stream.try_clone()?),
            writer: BufWriter::with_capacity(CONN_BUFFER, stream),
            line: Vec::with_capacity(64),
            data: Vec::new(),
            sets_queued: false,
        })
    }

    /// After a hit, copies the value just read (without its CRLF) into `out`.
    pub(super) fn copy_value(&self, done: Done, out: Option<&mut Vec<u8>>) {
        if let (Done::Hit, Some(out)) = (done, out) {
            out.clear();
            out.extend_from_slice(&self.data[..self.data.len().saturating_sub(2)]);
        }
    }

    /// Queues one memcached command (with its data block, if it has one).
    pub(super) fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        let w = &mut self.writer;
        match cmd {
            Cmd::Get(key) => {
                w.write_all(b"get ")?;
                w.write_all(key)?;
            }
            Cmd::MultiGet(keys) => {
                w.write_all(b"get")?;
                for key in keys {
                    w.write_all(b" ")?;
                    w.write_all(key)?;
                }
            }
            Cmd::Gets(key) => {
                w.write_all(b"gets ")?;
                w.write_all(key)?;
            }
            Cmd::Incr(key, delta) => {
                w.write_all(b"incr ")?;
                w.write_all(key)?;
                write!(w, " {delta}")?;
            }
            Cmd::Set(key, value) | Cmd::SetTtl(key, value, _) | Cmd::Cas(key, value, _) => {
                let (verb, ttl, cas) = match cmd {
                    Cmd::SetTtl(_, _, ttl) => (&b"set "[..], ttl, None),
                    Cmd::Cas(_, _, cas) => (&b"cas "[..], 0, Some(cas)),
                    _ => (&b"set "[..], 0, None),
                };
                w.write_all(verb)?;
                w.write_all(key)?;
                write!(w, " 0 {ttl} {}", value.len())?;
                if let Some(cas) = cas {
                    write!(w, " {cas}")?;
                }
                w.write_all(b"\r\n")?;
                w.write_all(value)?;
                self.sets_queued = true;
            }
        }
        self.writer.write_all(b"\r\n")?;
        Ok(())
    }

    /// Reads the reply to the oldest request not yet answered, a `kind` one. With `out`,
    /// a single-key get's value is copied into it.
    pub(super) fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let (reader, line, data) = (&mut self.reader, &mut self.line, &mut self.data);
        let done = match kind {
            Kind::Get => read_get_reply(reader, line, data)?.into(),
            Kind::MultiGet(asked) => Done::keys(read_values(reader, line, data, asked)?.0, asked),
            Kind::Gets => match read_values(reader, line, data, 1)? {
                (0, _) => Done::Miss,
                (_, Some(cas)) => Done::Unique(cas),
                (_, None) => {
                    return Err(OpError::Broken(
                        "gets answered a VALUE without a cas unique".into(),
                    ));
                }
            },
            Kind::Set | Kind::SetTtl => {
                read_set_reply(reader, line)?;
                Done::Stored
            }
            Kind::Cas => read_cas_reply(reader, line)?,
            Kind::Incr => read_incr_reply(reader, line)?,
        };
        self.copy_value(done, out);
        Ok(done)
    }

    pub(super) fn version(&mut self) -> Result<(), OpError> {
        self.writer.write_all(b"version\r\n")?;
        self.writer.flush()?;
        let line = read_line(&mut self.reader, &mut self.line)?;
        if line.starts_with("VERSION ") {
            Ok(())
        } else {
            Err(error_line(line))
        }
    }
}

/// Reads one `\r\n`-terminated reply line (at most [`MAX_TEXT_LINE`] bytes) into `buf`
/// and returns it without the line end.
pub(super) fn read_line<'a>(
    reader: &mut impl BufRead,
    buf: &'a mut Vec<u8>,
) -> Result<&'a str, OpError> {
    buf.clear();
    let n = reader.by_ref().take(MAX_TEXT_LINE).read_until(b'\n', buf)?;
    if n == 0 {
        return Err(OpError::Broken("the server closed the connection".into()));
    }
    if !buf.ends_with(b"\r\n") {
        return Err(OpError::Broken(format!(
            "reply line not ended by \\r\\n within {MAX_TEXT_LINE} bytes"
        )));
    }
    std::str::from_utf8(&buf[..buf.len() - 2])
        .map_err(|_| OpError::Broken("reply line is not UTF-8".into()))
}

/// Classifies an unexpected reply line: memcached's three error classes are replies on
/// a healthy connection; anything else means we are out of step.
pub(super) fn error_line(line: &str) -> OpError {
    if line == "ERROR" || line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") {
        OpError::Reply(line.to_string())
    } else {
        OpError::Broken(format!("unexpected reply '{line}'"))
    }
}

/// Reads the reply to a `set`: `STORED`, or an error.
pub(super) fn read_set_reply(reader: &mut impl BufRead, line: &mut Vec<u8>) -> Result<(), OpError> {
    match read_line(reader, line)? {
        "STORED" => Ok(()),
        "NOT_STORED" => Err(OpError::Reply("NOT_STORED".into())),
        other => Err(error_line(other)),
    }
}

/// Reads the reply to a `cas`: `STORED`, `EXISTS` (another write came first) or
/// `NOT_FOUND` (the key is gone: a miss).
pub(super) fn read_cas_reply(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
) -> Result<Done, OpError> {
    match read_line(reader, line)? {
        "STORED" => Ok(Done::Stored),
        "EXISTS" => Ok(Done::Exists),
        "NOT_FOUND" => Ok(Done::Miss),
        other => Err(error_line(other)),
    }
}

/// Reads the reply to an `incr`: the new value, or `NOT_FOUND` (a miss).
pub(super) fn read_incr_reply(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
) -> Result<Done, OpError> {
    match read_line(reader, line)? {
        "NOT_FOUND" => Ok(Done::Miss),
        number => match number.parse::<u64>() {
            Ok(n) => Ok(Done::Counter(n)),
            Err(_) => Err(error_line(number)),
        },
    }
}

/// Reads the reply to a single-key `get`: `Ok(false)` for a miss (`END` alone),
/// `Ok(true)` for a hit (`VALUE <key> <flags> <bytes>[ <cas>]`, the data, `END`).
pub(super) fn read_get_reply(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> Result<bool, OpError> {
    read_values(reader, line, data, 1).map(|(hits, _)| hits == 1)
}

/// Reads the reply to a `get` or `gets` of up to `most` keys: `VALUE` blocks, then `END`.
/// Returns how many values came and the cas unique of the last (`gets`); the last value,
/// with its CRLF, is left in `data`.
pub(super) fn read_values(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    data: &mut Vec<u8>,
    most: usize,
) -> Result<(usize, Option<u64>), OpError> {
    let (mut hits, mut cas) = (0, None);
    loop {
        let (length, unique) = match read_line(reader, line)? {
            "END" => return Ok((hits, cas)),
            header if hits == most => {
                return Err(OpError::Broken(format!(
                    "expected END after {most} values, got '{header}'"
                )));
            }
            header => parse_value_header(header)?,
        };
        // Checked against the limit above, before allocating.
        data.clear();
        data.resize(length + 2, 0);
        reader.read_exact(data)?;
        if !data.ends_with(b"\r\n") {
            return Err(OpError::Broken(format!(
                "data block of {length} bytes not followed by \\r\\n"
            )));
        }
        hits += 1;
        cas = unique;
    }
}

/// Reads the data length and the cas unique (`gets`) from
/// `VALUE <key> <flags> <bytes>[ <cas>]`.
pub(super) fn parse_value_header(line: &str) -> Result<(usize, Option<u64>), OpError> {
    let fields: Vec<&str> = line.split(' ').collect();
    let bad = || OpError::Broken(format!("bad VALUE line '{line}'"));
    let (flags, bytes, cas) = match fields.as_slice() {
        ["VALUE", _key, flags, bytes] => (flags, bytes, None),
        ["VALUE", _key, flags, bytes, cas] => {
            (flags, bytes, Some(cas.parse::<u64>().map_err(|_| bad())?))
        }
        _ => return Err(error_line(line)),
    };
    flags.parse::<u32>().map_err(|_| bad())?;
    match bytes.parse::<usize>() {
        Ok(n) if n <= MAX_TEXT_VALUE => Ok((n, cas)),
        Ok(n) => Err(OpError::Broken(format!(
            "value of {n} bytes is over the {MAX_TEXT_VALUE}-byte limit"
        ))),
        Err(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    use crate::bench::args::Protocol;
    use crate::bench::conn::{Conn, Kind};
    use crate::bench::testkit::{canned_server, read_memcache_command};

    fn set_reply(bytes: &[u8]) -> Result<(), OpError> {
        read_set_reply(&mut Cursor::new(bytes), &mut Vec::new())
    }

    fn get_reply(bytes: &[u8]) -> Result<bool, OpError> {
        read_get_reply(&mut Cursor::new(bytes), &mut Vec::new(), &mut Vec::new())
    }

    #[test]
    fn memcache_set_replies_parse() {
        assert_eq!(set_reply(b"STORED\r\n"), Ok(()));
        assert_eq!(
            set_reply(b"SERVER_ERROR out of memory\r\n"),
            Err(OpError::Reply("SERVER_ERROR out of memory".into()))
        );
        assert!(matches!(
            set_reply(b"CLIENT_ERROR bad data chunk\r\n"),
            Err(OpError::Reply(_))
        ));
        assert!(matches!(set_reply(b"ERROR\r\n"), Err(OpError::Reply(_))));
        assert!(matches!(set_reply(b"STORED"), Err(OpError::Broken(_))));
        assert!(matches!(set_reply(b""), Err(OpError::Broken(_))));
        assert!(matches!(set_reply(b"VALUE x\r\n"), Err(OpError::Broken(_))));
    }

    #[test]
    fn memcache_get_replies_parse() {
        assert_eq!(get_reply(b"VALUE key:1 0 5\r\nhello\r\nEND\r\n"), Ok(true));
        assert_eq!(
            get_reply(b"VALUE key:1 7 5 42\r\nhe\r\nl\r\nEND\r\n"),
            Ok(true)
        );
        assert_eq!(get_reply(b"VALUE key:1 0 0\r\n\r\nEND\r\n"), Ok(true));
        assert_eq!(get_reply(b"END\r\n"), Ok(false));
        assert_eq!(
            get_reply(b"SERVER_ERROR no slaves\r\n"),
            Err(OpError::Reply("SERVER_ERROR no slaves".into()))
        );
        for broken in [
            &b"VALUE key:1 0 5\r\nhello!!END\r\n"[..],
            b"VALUE key:1 0 5\r\nhello\r\n",
            b"VALUE key:1 0 5\r\nhel",
            b"VALUE key:1 0 x\r\n",
            b"VALUE key:1 0 99999999999\r\n",
            b"VALUE key:1\r\n",
            b"STORED\r\n",
        ] {
            assert!(
                matches!(get_reply(broken), Err(OpError::Broken(_))),
                "{:?}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn pipelined_memcache_replies_match_their_requests() {
        let (addr, server) = canned_server(
            read_memcache_command,
            vec![
                (
                    5,
                    b"VALUE k1 0 3\r\none\r\nEND\r\nSTORED\r\nEND\r\nSERVER_ERROR out of memory\r\nVALUE k3 0 5\r\nthree\r\nEND\r\n"
                        .to_vec(),
                ),
                // A set answered like a get: out of step, the connection is broken.
                (2, b"STORED\r\nSTORED\r\n".to_vec()),
            ],
        );
        let mut conn = Conn::open(Protocol::Memcache, &addr).unwrap();
        for cmd in [
            Cmd::Get(b"k1"),
            Cmd::Set(b"k2", b"two"),
            Cmd::Get(b"k2x"),
            Cmd::Set(b"k3", b"three"),
            Cmd::Get(b"k3"),
        ] {
            conn.queue(cmd).unwrap();
        }
        assert!(!conn.flush().unwrap(), "memcache never sends WAIT");
        let mut out = Vec::new();
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"one");
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Miss));
        assert_eq!(out, b"one", "a miss leaves the buffer alone");
        assert!(matches!(conn.recv(Kind::Set, None), Err(OpError::Reply(_))));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"three");
        conn.queue(Cmd::Set(b"a", b"1")).unwrap();
        conn.queue(Cmd::Get(b"a")).unwrap();
        conn.flush().unwrap();
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert!(matches!(
            conn.recv(Kind::Get, None),
            Err(OpError::Broken(_))
        ));
        assert_eq!(
            server.join().unwrap(),
            [
                "get k1",
                "set k2 0 0 3",
                "get k2x",
                "set k3 0 0 5",
                "get k3",
                "set a 0 0 1",
                "get a"
            ]
        );
    }

    #[test]
    fn memcache_client_speaks_gets_cas_incr_ttl_and_multiget() {
        let (addr, server) = canned_server(
            read_memcache_command,
            vec![
                (
                    7,
                    b"VALUE k 0 3 42\r\nabc\r\nEND\r\nSTORED\r\nEXISTS\r\nNOT_FOUND\r\n7\r\nNOT_FOUND\r\nSTORED\r\n"
                        .to_vec(),
                ),
                (
                    3,
                    b"VALUE a 0 1\r\nx\r\nVALUE c 0 1\r\nz\r\nEND\r\nEND\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
                        .to_vec(),
                ),
                // A gets answered without a cas unique: out of step.
                (1, b"VALUE k 0 1\r\nx\r\nEND\r\n".to_vec()),
            ],
        );
        let mut conn = Conn::open(Protocol::Memcache, &addr).unwrap();
        let keys = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        for cmd in [
            Cmd::Gets(b"k"),
            Cmd::Cas(b"k", b"new", 42),
            Cmd::Cas(b"k", b"new", 42),
            Cmd::Cas(b"gone", b"new", 43),
            Cmd::Incr(b"n", 1),
            Cmd::Incr(b"nope", 1),
            Cmd::SetTtl(b"t", b"abc", 300),
        ] {
            conn.queue(cmd).unwrap();
        }
        conn.flush().unwrap();
        assert_eq!(conn.recv(Kind::Gets, None), Ok(Done::Unique(42)));
        assert_eq!(conn.recv(Kind::Cas, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Cas, None), Ok(Done::Exists));
        assert_eq!(conn.recv(Kind::Cas, None), Ok(Done::Miss));
        assert_eq!(conn.recv(Kind::Incr, None), Ok(Done::Counter(7)));
        assert_eq!(conn.recv(Kind::Incr, None), Ok(Done::Miss));
        assert_eq!(conn.recv(Kind::SetTtl, None), Ok(Done::Stored));
        conn.queue(Cmd::MultiGet(&keys)).unwrap();
        conn.queue(Cmd::MultiGet(&keys[..1])).unwrap();
        conn.queue(Cmd::Incr(b"s", 1)).unwrap();
        conn.flush().unwrap();
        assert_eq!(
            conn.recv(Kind::MultiGet(3), None),
            Ok(Done::Keys { hits: 2, misses: 1 })
        );
        assert_eq!(
            conn.recv(Kind::MultiGet(1), None),
            Ok(Done::Keys { hits: 0, misses: 1 })
        );
        assert!(matches!(
            conn.recv(Kind::Incr, None),
            Err(OpError::Reply(_))
        ));
        conn.queue(Cmd::Gets(b"k")).unwrap();
        conn.flush().unwrap();
        assert!(matches!(
            conn.recv(Kind::Gets, None),
            Err(OpError::Broken(_))
        ));
        assert_eq!(
            server.join().unwrap(),
            [
                "gets k",
                "cas k 0 0 3 42",
                "cas k 0 0 3 42",
                "cas gone 0 0 3 43",
                "incr n 1",
                "incr nope 1",
                "set t 0 300 3",
                "get a b c",
                "get a",
                "incr s 1",
                "gets k"
            ]
        );
    }

    #[test]
    fn multiget_replies_stop_at_the_keys_asked() {
        let values = |bytes: &[u8], most| {
            read_values(
                &mut Cursor::new(bytes),
                &mut Vec::new(),
                &mut Vec::new(),
                most,
            )
        };
        assert_eq!(values(b"END\r\n", 3), Ok((0, None)));
        assert_eq!(
            values(b"VALUE a 0 1 9\r\nx\r\nVALUE b 0 2 10\r\nyy\r\nEND\r\n", 2),
            Ok((2, Some(10)))
        );
        assert!(matches!(
            values(b"VALUE a 0 1\r\nx\r\nVALUE b 0 1\r\ny\r\nEND\r\n", 1),
            Err(OpError::Broken(_))
        ));
        assert!(matches!(
            values(b"VALUE a 0 1 x\r\nx\r\nEND\r\n", 1),
            Err(OpError::Broken(_))
        ));
    }
}
