//! Piazza's binary protocol, pipelined: frames from [`crate::wire`] matched by request id.
//! Gets and sets are `GET` and `PUT` frames; a `gets` is a `GET` (its reply's `arg` is the
//! version, memcached's cas unique); a cas, an incr and a set with an exptime are
//! `UPDATE` frames ([`crate::update::Update`]); a multi-key get is one `GET` frame per
//! key, sent back to back, or with `--multiget-op` one `MULTI_GET` frame.

use std::io::{self, BufReader, BufWriter, Write};
use std::net::TcpStream;

use super::conn::{CONN_BUFFER, Cmd, Done, Kind, OpError};
use crate::client::ClientError;
use crate::update::{Op, Update};
use crate::wire::{self, Frame, Opcode, Status, WireError, WireLimits};

/// Piazza's binary protocol with pipelining: each request gets the next request id, and
/// each reply must carry the id and the opcode of the oldest request not yet answered.
pub(super) struct FrameConn {
    pub(super) reader: BufReader<TcpStream>,
    pub(super) writer: BufWriter<TcpStream>,
    /// Id of the next request queued.
    pub(super) next_id: u32,
    /// Id the next reply must carry.
    pub(super) next_reply: u32,
    pub(super) limits: WireLimits,
    /// Reused to encode each request.
    pub(super) scratch: Frame,
    /// A multi-key get is one MULTI_GET frame (`--multiget-op`), not one GET per key.
    pub(super) multiget_op: bool,
}

impl FrameConn {
    pub(super) fn new(stream: TcpStream) -> io::Result<FrameConn> {
        Ok(FrameConn {
            reader: BufReader::with_capacity(CONN_BUFFER, stream.try_clone()?),
            writer: BufWriter::with_capacity(CONN_BUFFER, stream),
            next_id: 1,
            next_reply: 1,
            limits: WireLimits {
                max_key: wire::DEFAULT_MAX_KEY,
                max_value: wire::MAX_BULK_VALUE,
            },
            scratch: Frame::request(Opcode::Ping, 0, Vec::new(), Vec::new()),
            multiget_op: false,
        })
    }

    /// Encodes one request into the write buffer, its value `parts` joined.
    pub(super) fn push(
        &mut self,
        opcode: Opcode,
        key: &[u8],
        parts: &[&[u8]],
    ) -> Result<(), OpError> {
        let frame = &mut self.scratch;
        frame.opcode = opcode;
        frame.request_id = self.next_id;
        frame.key.clear();
        frame.key.extend_from_slice(key);
        frame.value.clear();
        parts
            .iter()
            .for_each(|part| frame.value.extend_from_slice(part));
        self.next_id = self.next_id.wrapping_add(1);
        frame.write_to(&mut self.writer)?;
        Ok(())
    }

    /// Encodes one `UPDATE` request: `update`'s 40 bytes, then `data`.
    fn push_update(&mut self, key: &[u8], update: &Update, data: &[u8]) -> Result<(), OpError> {
        self.push(Opcode::Update, key, &[&update.encode(), data])
    }

    pub(super) fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match cmd {
            Cmd::Get(key) | Cmd::Gets(key) => self.push(Opcode::Get, key, &[]),
            Cmd::MultiGet(keys) if self.multiget_op => {
                self.push(Opcode::MultiGet, &[], &[&wire::pack_keys(keys)])
            }
            Cmd::MultiGet(keys) => keys
                .iter()
                .try_for_each(|key| self.push(Opcode::Get, key, &[])),
            Cmd::Set(key, value) => self.push(Opcode::Put, key, &[value]),
            Cmd::SetTtl(key, value, ttl) => {
                let update = Update {
                    expires: u64::from(ttl),
                    ..Update::new(Op::Set)
                };
                self.push_update(key, &update, value)
            }
            Cmd::Cas(key, value, cas) => {
                let update = Update {
                    cas,
                    ..Update::new(Op::Set)
                };
                self.push_update(key, &update, value)
            }
            Cmd::Incr(key, delta) => {
                let update = Update {
                    delta,
                    ..Update::new(Op::Incr)
                };
                self.push_update(key, &update, &[])
            }
        }
    }

    /// Reads the next reply, which must answer request `next_reply` of `opcode`; an error
    /// status is an error reply on a healthy connection.
    pub(super) fn read_reply(&mut self, opcode: Opcode) -> Result<Frame, OpError> {
        let reply = wire::read_frame(&mut self.reader, &self.limits).map_err(|e| {
            OpError::from(match e {
                WireError::BadMagic(b'S') => ClientError::Refused,
                WireError::Closed | WireError::Truncated => ClientError::Closed,
                WireError::Io(e) => ClientError::Io(e),
                other => ClientError::Wire(other),
            })
        })?;
        let id = self.next_reply;
        self.next_reply = id.wrapping_add(1);
        if reply.request_id != id {
            return Err(ClientError::Mismatch {
                sent: id,
                got: reply.request_id,
            }
            .into());
        }
        let answered = match reply.status {
            Status::Ok | Status::NotFound => true,
            // A condition that did not hold is an answer, not an error.
            Status::Exists | Status::NotStored => opcode == Opcode::Update,
            _ => false,
        };
        if !answered {
            return Err(ClientError::Server {
                status: reply.status,
                message: reply.value_text(),
            }
            .into());
        }
        if reply.opcode != opcode {
            return Err(OpError::Broken(format!(
                "reply to request {id} is a {:?} reply, not {opcode:?}",
                reply.opcode
            )));
        }
        Ok(reply)
    }

    pub(super) fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let opcode = match kind {
            Kind::Get | Kind::Gets | Kind::MultiGet(_) => Opcode::Get,
            Kind::Set => Opcode::Put,
            Kind::SetTtl | Kind::Cas | Kind::Incr => Opcode::Update,
        };
        if let Kind::MultiGet(asked) = kind {
            return if self.multiget_op {
                self.recv_multiget_op(asked)
            } else {
                self.recv_keys(asked)
            };
        }
        let reply = self.read_reply(opcode)?;
        let unexpected = |reply: Frame| -> Result<Done, OpError> {
            Err(ClientError::Server {
                status: reply.status,
                message: reply.value_text(),
            }
            .into())
        };
        match (kind, reply.status) {
            (Kind::Get, Status::Ok) => {
                if let Some(out) = out {
                    *out = reply.value;
                }
                Ok(Done::Hit)
            }
            (Kind::Gets, Status::Ok) => Ok(Done::Unique(reply.arg)),
            (Kind::Get | Kind::Gets | Kind::Incr | Kind::Cas, Status::NotFound) => Ok(Done::Miss),
            (Kind::Set | Kind::SetTtl | Kind::Cas, Status::Ok) => Ok(Done::Stored),
            (Kind::Cas, Status::Exists) => Ok(Done::Exists),
            (Kind::Incr, Status::Ok) => match crate::update::parse_number(&reply.value) {
                Some(n) => Ok(Done::Counter(n)),
                None => Err(OpError::Reply(format!(
                    "incr answered '{}', not a number",
                    reply.value_text()
                ))),
            },
            _ => unexpected(reply),
        }
    }

    /// Reads the reply to a MULTI_GET of `asked` keys: one result per key.
    fn recv_multiget_op(&mut self, asked: usize) -> Result<Done, OpError> {
        let reply = self.read_reply(Opcode::MultiGet)?;
        let results = wire::unpack_results(&reply.value)
            .map_err(|why| OpError::Broken(format!("bad MULTI_GET reply: {why}")))?;
        if results.len() != asked {
            return Err(OpError::Broken(format!(
                "MULTI_GET answered {} results for {asked} keys",
                results.len()
            )));
        }
        Ok(Done::keys(results.iter().flatten().count(), asked))
    }

    /// Reads the `asked` replies of a multi-key get. An error reply to one key is kept
    /// until all are read, so the connection stays in step.
    fn recv_keys(&mut self, asked: usize) -> Result<Done, OpError> {
        let (mut hits, mut failed) = (0, None);
        for _ in 0..asked {
            match self.read_reply(Opcode::Get) {
                Ok(reply) => hits += usize::from(reply.status == Status::Ok),
                Err(OpError::Reply(why)) => failed = Some(OpError::Reply(why)),
                Err(broken) => return Err(broken),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(Done::keys(hits, asked)),
        }
    }

    pub(super) fn ping(&mut self) -> Result<(), OpError> {
        self.push(Opcode::Ping, &[], &[])?;
        self.writer.flush()?;
        match self.read_reply(Opcode::Ping)?.status {
            Status::Ok => Ok(()),
            status => Err(OpError::Broken(format!(
                "ping answered {}, not ok",
                status.name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::args::Protocol;
    use crate::bench::conn::Conn;
    use crate::bench::testkit::{read_binary_frame, scripted_server};
    use crate::update::Op;

    /// Encodes the replies to `requests`, in order: a get of `key:<n>` finds `value-<n>`
    /// unless n is odd; a put is stored.
    fn binary_replies(requests: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for request in requests {
            let reply = match request.opcode {
                Opcode::Get if request.key.ends_with(b"1") || request.key.ends_with(b"3") => {
                    request.reply(Status::NotFound)
                }
                Opcode::Get => {
                    let mut reply = request.reply(Status::Ok);
                    reply.value = [&b"value-"[..], &request.key[4..]].concat();
                    reply
                }
                _ => request.reply(Status::Ok),
            };
            reply.encode_into(&mut out);
        }
        out
    }

    #[test]
    fn pipelined_binary_replies_match_by_request_id() {
        let (addr, server) = scripted_server(
            read_binary_frame,
            vec![
                // First batch: all four answered in order.
                (4, Box::new(|requests: &[Frame]| binary_replies(requests))),
                // Second batch: the two requests answered in the wrong order.
                (
                    2,
                    Box::new(|requests: &[Frame]| {
                        binary_replies(&[requests[1].clone(), requests[0].clone()])
                    }),
                ),
            ],
        );
        let mut conn = Conn::open(Protocol::Binary, &addr).unwrap();
        for cmd in [
            Cmd::Get(b"key:0"),
            Cmd::Set(b"key:1", b"x"),
            Cmd::Get(b"key:3"),
            Cmd::Get(b"key:4"),
        ] {
            conn.queue(cmd).unwrap();
        }
        assert!(!conn.flush().unwrap());
        let mut out = Vec::new();
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"value-0");
        assert_eq!(conn.recv(Kind::Set, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Miss));
        assert_eq!(conn.recv(Kind::Get, Some(&mut out)), Ok(Done::Hit));
        assert_eq!(out, b"value-4");
        conn.queue(Cmd::Get(b"key:6")).unwrap();
        conn.queue(Cmd::Get(b"key:8")).unwrap();
        conn.flush().unwrap();
        match conn.recv(Kind::Get, Some(&mut out)) {
            Err(OpError::Broken(why)) => assert!(why.contains("request 6"), "{why}"),
            other => panic!("a reply to another request must break the connection: {other:?}"),
        }
        let seen = server.join().unwrap();
        let ids: Vec<u32> = seen.iter().map(|frame| frame.request_id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6], "ids count up");
        assert_eq!(seen[1].opcode, Opcode::Put);
        assert_eq!(seen[1].value, b"x");
    }

    #[test]
    fn binary_client_sends_updates_and_multigets() {
        let answer = |requests: &[Frame]| {
            let mut out = Vec::new();
            for (i, request) in requests.iter().enumerate() {
                let mut reply = request.reply(match i {
                    2 => Status::Exists,
                    6 | 8 => Status::NotFound,
                    _ => Status::Ok,
                });
                match i {
                    0 => reply.arg = 42,
                    3 => reply.value = b"8".to_vec(),
                    _ => {}
                }
                reply.encode_into(&mut out);
            }
            out
        };
        let (addr, server) = scripted_server(read_binary_frame, vec![(9, Box::new(answer))]);
        let mut conn = Conn::open(Protocol::Binary, &addr).unwrap();
        let keys = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()];
        for cmd in [
            Cmd::Gets(b"k"),
            Cmd::Cas(b"k", b"new", 42),
            Cmd::Cas(b"k", b"new", 42),
            Cmd::Incr(b"n", 1),
            Cmd::SetTtl(b"t", b"abc", 300),
            Cmd::MultiGet(&keys),
        ] {
            conn.queue(cmd).unwrap();
        }
        conn.flush().unwrap();
        assert_eq!(conn.recv(Kind::Gets, None), Ok(Done::Unique(42)));
        assert_eq!(conn.recv(Kind::Cas, None), Ok(Done::Stored));
        assert_eq!(conn.recv(Kind::Cas, None), Ok(Done::Exists));
        assert_eq!(conn.recv(Kind::Incr, None), Ok(Done::Counter(8)));
        assert_eq!(conn.recv(Kind::SetTtl, None), Ok(Done::Stored));
        assert_eq!(
            conn.recv(Kind::MultiGet(4), None),
            Ok(Done::Keys { hits: 2, misses: 2 })
        );
        let seen = server.join().unwrap();
        let update = |i: usize| Update::decode(&seen[i].value).expect("an update");
        assert_eq!(seen[0].opcode, Opcode::Get);
        assert_eq!(
            (update(1).op, update(1).cas, update(1).data),
            (Op::Set, 42, b"new".to_vec())
        );
        assert_eq!((update(3).op, update(3).delta), (Op::Incr, 1));
        assert_eq!(
            (update(4).op, update(4).expires, update(4).cas),
            (Op::Set, 300, 0)
        );
        let multi: Vec<&[u8]> = seen[5..].iter().map(|f| f.key.as_slice()).collect();
        assert_eq!(multi, [&b"a"[..], b"b", b"c", b"d"]);
        assert!(seen[5..].iter().all(|f| f.opcode == Opcode::Get));
    }

    #[test]
    fn multiget_op_sends_one_frame_and_counts_its_results() {
        // Three results, hit, miss, hit: right for the first request (3 keys), out of
        // step for the second (2 keys).
        let answer = |requests: &[Frame]| {
            let hit = wire::MultiGetHit {
                version: 7,
                flags: 0,
                expires: 0,
                value: b"v".to_vec(),
            };
            let mut out = Vec::new();
            for request in requests {
                let mut reply = request.reply(Status::Ok);
                for result in [Some(&hit), None, Some(&hit)] {
                    wire::pack_result(&mut reply.value, result);
                }
                reply.encode_into(&mut out);
            }
            out
        };
        let (addr, server) = scripted_server(read_binary_frame, vec![(2, Box::new(answer))]);
        let mut conn = match Conn::open(Protocol::Binary, &addr).unwrap() {
            Conn::Binary(mut conn) => {
                conn.multiget_op = true;
                Conn::Binary(conn)
            }
            _ => unreachable!(),
        };
        let keys = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        conn.queue(Cmd::MultiGet(&keys)).unwrap();
        conn.queue(Cmd::MultiGet(&keys[..2])).unwrap();
        conn.flush().unwrap();
        assert_eq!(
            conn.recv(Kind::MultiGet(3), None),
            Ok(Done::Keys { hits: 2, misses: 1 })
        );
        assert!(matches!(
            conn.recv(Kind::MultiGet(2), None),
            Err(OpError::Broken(_))
        ));
        let seen = server.join().unwrap();
        let [first, second] = &seen[..] else {
            panic!("two requests: {seen:?}")
        };
        assert_eq!(
            (first.opcode, second.opcode),
            (Opcode::MultiGet, Opcode::MultiGet)
        );
        assert_eq!(wire::unpack_keys(&first.value, 250).unwrap(), keys);
    }
}
