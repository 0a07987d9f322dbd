//! Redis's RESP on a [`TextConn`]: `SET` (with `EX` for a ttl), `GET`, `MGET`, `INCRBY`,
//! `WAIT`, `PING`, arrays of bulk strings. Redis has no memcached-style cas.

use std::io::{Read, Write};

use super::conn::{Cmd, Done, Kind, OpError};
use super::memcache::{MAX_TEXT_VALUE, TextConn, read_line};

impl TextConn {
    /// Queues one RESP command (an array of bulk strings).
    pub(super) fn resp_command(&mut self, parts: &[&[u8]]) -> Result<(), OpError> {
        write!(self.writer, "*{}\r\n", parts.len())?;
        for part in parts {
            write!(self.writer, "${}\r\n", part.len())?;
            self.writer.write_all(part)?;
            self.writer.write_all(b"\r\n")?;
        }
        Ok(())
    }

    /// Queues a Redis `SET` (`SET … EX` for a ttl), `GET`, `MGET` or `INCRBY`.
    pub(super) fn resp_queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match cmd {
            Cmd::Get(key) => self.resp_command(&[b"GET", key]),
            Cmd::MultiGet(keys) => {
                let mut parts: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
                parts.push(b"MGET");
                parts.extend(keys.iter().map(Vec::as_slice));
                self.resp_command(&parts)
            }
            Cmd::Set(key, value) => {
                self.sets_queued = true;
                self.resp_command(&[b"SET", key, value])
            }
            Cmd::SetTtl(key, value, ttl) => {
                self.sets_queued = true;
                let ttl = ttl.to_string();
                self.resp_command(&[b"SET", key, value, b"EX", ttl.as_bytes()])
            }
            Cmd::Incr(key, delta) => {
                let delta = delta.to_string();
                self.resp_command(&[b"INCRBY", key, delta.as_bytes()])
            }
            Cmd::Gets(_) | Cmd::Cas(..) => Err(OpError::Broken(
                "Redis has no memcached-style gets and cas".into(),
            )),
        }
    }

    /// Reads the reply to the oldest request not yet answered, a `kind` one. With `out`,
    /// a single-key get's value is copied into it.
    pub(super) fn resp_recv(
        &mut self,
        kind: Kind,
        out: Option<&mut Vec<u8>>,
    ) -> Result<Done, OpError> {
        let done = match kind {
            Kind::Get => self.resp_get_reply()?.into(),
            Kind::MultiGet(asked) => {
                let line = read_line(&mut self.reader, &mut self.line)?;
                let count = match line.strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n == asked => n,
                    _ => return Err(resp_error(line)),
                };
                let mut hits = 0;
                for _ in 0..count {
                    hits += usize::from(self.resp_get_reply()?);
                }
                Done::keys(hits, asked)
            }
            Kind::Set | Kind::SetTtl => match read_line(&mut self.reader, &mut self.line)? {
                "+OK" => Done::Stored,
                other => return Err(resp_error(other)),
            },
            Kind::Incr => {
                let line = read_line(&mut self.reader, &mut self.line)?;
                match line.strip_prefix(':').and_then(|n| n.parse::<i64>().ok()) {
                    Some(n) => Done::Counter(n as u64),
                    None => return Err(resp_error(line)),
                }
            }
            Kind::Gets | Kind::Cas => {
                return Err(OpError::Broken(
                    "Redis has no memcached-style gets and cas".into(),
                ));
            }
        };
        self.copy_value(done, out);
        Ok(done)
    }

    /// Reads a `GET` reply: `Ok(true)` for a hit (the value, with its CRLF, is in `data`).
    pub(super) fn resp_get_reply(&mut self) -> Result<bool, OpError> {
        let length = match read_line(&mut self.reader, &mut self.line)? {
            "$-1" => return Ok(false),
            line => match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n <= MAX_TEXT_VALUE => n,
                _ => return Err(resp_error(line)),
            },
        };
        self.data.clear();
        self.data.resize(length + 2, 0);
        self.reader.read_exact(&mut self.data)?;
        if !self.data.ends_with(b"\r\n") {
            return Err(OpError::Broken("RESP bulk string without CRLF".into()));
        }
        Ok(true)
    }
}

/// An unexpected RESP reply: a Redis error (`-ERR ...`) is a reply error, anything else
/// breaks the connection.
pub(super) fn resp_error(line: &str) -> OpError {
    match line.strip_prefix('-') {
        Some(message) => OpError::Reply(message.to_string()),
        None => OpError::Broken(format!("unexpected RESP reply '{line}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::Protocol;
    use crate::bench::conn::{Conn, Done, Kind};
    use crate::bench::testkit::{canned_server, read_resp_command};

    #[test]
    fn resp_client_speaks_redis_replies() {
        let (addr, server) = canned_server(
            read_resp_command,
            vec![
                (2, b"+OK\r\n:1\r\n".to_vec()),   // SET, then its WAIT
                (1, b"$5\r\nhello\r\n".to_vec()), // GET hit
                (1, b"$-1\r\n".to_vec()),         // GET miss
                (1, b"-ERR wrong\r\n".to_vec()),  // SET refused
            ],
        );
        let mut conn = Conn::open(Protocol::Resp, &addr).unwrap().with_wait(true);
        conn.set(b"k", b"hello").unwrap();
        let mut out = Vec::new();
        assert!(conn.get_value(b"k", &mut out).unwrap());
        assert_eq!(out, b"hello");
        assert!(!conn.get(b"nope").unwrap());
        let mut conn = match conn {
            Conn::Resp(text, _) => Conn::Resp(text, false),
            other => other,
        };
        assert!(matches!(conn.set(b"k", b"v"), Err(OpError::Reply(m)) if m.contains("wrong")));
        assert_eq!(
            server.join().unwrap(),
            ["SET k hello", "WAIT 1 0", "GET k", "GET nope", "SET k v"]
        );
    }

    #[test]
    fn pipelined_resp_replies_match_their_requests_and_wait_follows_the_batch() {
        let (addr, server) = canned_server(
            read_resp_command,
            vec![
                // The server sees the whole batch, WAIT last, before it answers anything.
                (
                    5,
                    b"+OK\r\n$2\r\nv1\r\n$-1\r\n-ERR no room\r\n:1\r\n".to_vec(),
                ),
                // Gets only: no WAIT.
                (2, b"$1\r\nx\r\n$-1\r\n".to_vec()),
            ],
        );
        let mut conn = Conn::open(Protocol::Resp, &addr).unwrap().with_wait(true);
        for cmd in [
            Cmd::Set(b"a", b"v1"),
            Cmd::Get(b"a"),
            Cmd::Get(b"b"),
            Cmd::Set(b"c", b"v2"),
        ] {
            conn.queue(cmd).unwrap();
        }
        assert!(conn.flush().unwrap(), "a batch with a SET ends with WAIT");
        let mut out = Vec::new();
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"v1");
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Miss));
        assert_eq!(
            conn.recv(Kind::Set, None),
            Err(OpError::Reply("ERR no room".into()))
        );
        assert_eq!(conn.recv_wait(), Ok(()));
        conn.queue(Cmd::Get(b"x")).unwrap();
        conn.queue(Cmd::Get(b"y")).unwrap();
        assert!(!conn.flush().unwrap(), "no SET, no WAIT");
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"x");
        assert_eq!(conn.recv(Kind::Get, None), Ok(Done::Miss));
        assert_eq!(
            server.join().unwrap(),
            [
                "SET a v1", "GET a", "GET b", "SET c v2", "WAIT 1 0", "GET x", "GET y"
            ]
        );
    }

    #[test]
    fn resp_client_speaks_mget_incrby_and_set_ex() {
        let (addr, server) = canned_server(
            read_resp_command,
            vec![(
                3,
                b"*3\r\n$1\r\nx\r\n$-1\r\n$2\r\nzz\r\n:5\r\n+OK\r\n".to_vec(),
            )],
        );
        let mut conn = Conn::open(Protocol::Resp, &addr).unwrap();
        let keys = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        conn.queue(Cmd::MultiGet(&keys)).unwrap();
        conn.queue(Cmd::Incr(b"n", 1)).unwrap();
        conn.queue(Cmd::SetTtl(b"t", b"v", 300)).unwrap();
        assert!(!conn.flush().unwrap());
        assert_eq!(
            conn.recv(Kind::MultiGet(3), None),
            Ok(Done::Keys { hits: 2, misses: 1 })
        );
        assert_eq!(conn.recv(Kind::Incr, None), Ok(Done::Counter(5)));
        assert_eq!(conn.recv(Kind::SetTtl, None), Ok(Done::Stored));
        assert!(conn.queue(Cmd::Gets(b"k")).is_err(), "Redis has no cas");
        assert_eq!(
            server.join().unwrap(),
            ["MGET a b c", "INCRBY n 1", "SET t v EX 300"]
        );
    }
}
