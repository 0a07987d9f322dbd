//! Piazza's binary protocol, pipelined: frames from [`crate::wire`] matched by request id.

use std::io::{self, BufReader, BufWriter, Write};
use std::net::TcpStream;

use super::conn::{CONN_BUFFER, Cmd, Done, Kind, OpError};
use crate::client::ClientError;
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
        })
    }

    /// Encodes one request into the write buffer.
    pub(super) fn push(&mut self, opcode: Opcode, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        let frame = &mut self.scratch;
        frame.opcode = opcode;
        frame.request_id = self.next_id;
        frame.key.clear();
        frame.key.extend_from_slice(key);
        frame.value.clear();
        frame.value.extend_from_slice(value);
        self.next_id = self.next_id.wrapping_add(1);
        frame.write_to(&mut self.writer)?;
        Ok(())
    }

    pub(super) fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match cmd {
            Cmd::Get(key) => self.push(Opcode::Get, key, &[]),
            Cmd::Set(key, value) => self.push(Opcode::Put, key, value),
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
        if !matches!(reply.status, Status::Ok | Status::NotFound) {
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
            Kind::Get => Opcode::Get,
            Kind::Set => Opcode::Put,
        };
        let reply = self.read_reply(opcode)?;
        match (kind, reply.status) {
            (Kind::Get, Status::Ok) => {
                if let Some(out) = out {
                    *out = reply.value;
                }
                Ok(Done::Hit)
            }
            (Kind::Get, _) => Ok(Done::Miss),
            (Kind::Set, Status::Ok) => Ok(Done::Stored),
            (Kind::Set, status) => Err(ClientError::Server {
                status,
                message: reply.value_text(),
            }
            .into()),
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
    use std::io::Write;

    use crate::bench::args::Protocol;
    use crate::bench::conn::Conn;
    use crate::bench::testkit::read_binary_frame;

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
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            // First batch: read all four, answer all four in order.
            let first: Vec<Frame> = (0..4)
                .map(|_| read_binary_frame(&mut reader).expect("a frame"))
                .collect();
            writer.write_all(&binary_replies(&first)).unwrap();
            // Second batch: answer the two requests in the wrong order.
            let mut second: Vec<Frame> = (0..2)
                .map(|_| read_binary_frame(&mut reader).expect("a frame"))
                .collect();
            second.swap(0, 1);
            writer.write_all(&binary_replies(&second)).unwrap();
            first.into_iter().chain(second).collect::<Vec<Frame>>()
        });
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
        assert_eq!(
            ids,
            [1, 2, 3, 4, 6, 5],
            "ids count up; the server swapped the last two"
        );
        assert_eq!(seen[1].opcode, Opcode::Put);
        assert_eq!(seen[1].value, b"x");
    }
}
