//! memcached's text protocol: a minimal client ([`TextConn`], shared with [`super::resp`])
//! and the reply parsers.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

use super::conn::{CONN_BUFFER, Cmd, Done, OpError};

/// Largest data block accepted in a memcached `VALUE` reply.
pub(super) const MAX_TEXT_VALUE: usize = 128 << 20;
/// Longest memcached reply line read (a `VALUE` line with a 250-byte key fits easily).
const MAX_TEXT_LINE: u64 = 1024;

/// A minimal memcached text (or Redis RESP) client: `set`, single-key `get`, `version`
/// (RESP: `SET`, `GET`, `WAIT`, `PING`), requests queued and sent together, with
/// `TCP_NODELAY`.
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

    /// Queues a memcached `set` or `get`.
    pub(super) fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match cmd {
            Cmd::Get(key) => {
                self.writer.write_all(b"get ")?;
                self.writer.write_all(key)?;
                self.writer.write_all(b"\r\n")?;
            }
            Cmd::Set(key, value) => {
                self.writer.write_all(b"set ")?;
                self.writer.write_all(key)?;
                write!(self.writer, " 0 0 {}\r\n", value.len())?;
                self.writer.write_all(value)?;
                self.writer.write_all(b"\r\n")?;
                self.sets_queued = true;
            }
        }
        Ok(())
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

/// Reads the reply to a single-key `get`: `Ok(false)` for a miss (`END` alone),
/// `Ok(true)` for a hit (`VALUE <key> <flags> <bytes>[ <cas>]`, the data, `END`).
pub(super) fn read_get_reply(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> Result<bool, OpError> {
    let length = match read_line(reader, line)? {
        "END" => return Ok(false),
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
    match read_line(reader, line)? {
        "END" => Ok(true),
        other => Err(OpError::Broken(format!(
            "expected END after the value, got '{other}'"
        ))),
    }
}

/// Reads the data length from `VALUE <key> <flags> <bytes>[ <cas>]`.
pub(super) fn parse_value_header(line: &str) -> Result<usize, OpError> {
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["VALUE", _key, flags, bytes] | ["VALUE", _key, flags, bytes, _] => {
            let bad = || OpError::Broken(format!("bad VALUE line '{line}'"));
            flags.parse::<u32>().map_err(|_| bad())?;
            match bytes.parse::<usize>() {
                Ok(n) if n <= MAX_TEXT_VALUE => Ok(n),
                Ok(n) => Err(OpError::Broken(format!(
                    "value of {n} bytes is over the {MAX_TEXT_VALUE}-byte limit"
                ))),
                Err(_) => Err(bad()),
            }
        }
        _ => Err(error_line(line)),
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
}
