//! The Rust client: one blocking connection speaking Piazza's binary protocol.
//!
//! [`Client`] talks to the coordinator (`get`, `put`, `delete`, `status`) and, for tools and
//! tests, straight to a slave (`slave_get`, `slave_stats`). It sends one request at a time
//! and matches the reply by request id. It holds no lock and starts no thread.
//!
//! ```no_run
//! let mut client = piazza::Client::connect("127.0.0.1:7400")?;
//! client.put(b"greeting", b"hello")?;
//! assert_eq!(client.get(b"greeting")?.map(|v| v.value), Some(b"hello".to_vec()));
//! # Ok::<(), piazza::client::ClientError>(())
//! ```

use std::fmt;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::update::{Op, Update};
use crate::wire::{self, Frame, Opcode, Status, TableSel, WireError, WireLimits};

/// How long `connect` waits for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for its reply by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A stored value as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes.
    pub value: Vec<u8>,
    /// memcached flags stored with it.
    pub flags: u32,
    /// The version of the write that stored it.
    pub version: u64,
}

/// One slave's row in the ring status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveStatus {
    /// Slave id.
    pub id: u32,
    /// Address it serves on.
    pub addr: String,
    /// The lowest ring token it owns, as `0x` and 16 hex digits (`-` when it owns none):
    /// every slave owns many (section 6 of protocol.md).
    pub token: String,
    /// Its share of the hash space (of the ring's slots), as a percentage: `33.3%`.
    pub share: String,
    /// `joining`, `alive`, `suspected`, `leaving`, `dead`, or `unreachable` (alive, but it
    /// did not answer just now).
    pub state: String,
    /// Live keys in its `own` table (`None` when it did not answer).
    pub own: Option<u64>,
    /// Live keys in its `previous` table (`None` when it did not answer).
    pub previous: Option<u64>,
    /// Tombstones in both tables (`None` when unknown).
    pub tombstones: Option<u64>,
    /// Expired or flushed values it turned into tombstones since it started.
    pub purged: Option<u64>,
    /// Tombstones and expired values it dropped by collection since it started.
    pub collected: Option<u64>,
    /// When it last compacted its log (Unix seconds; `None`: not since it started, or
    /// unknown).
    pub compacted: Option<u64>,
}

/// The ring as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Copies each key has (0 with no slaves, 1 with one, else 2).
    pub copies: u32,
    /// The ring epoch (bumped at every membership change).
    pub epoch: u64,
    /// What data is being moved now (a slave died, joined or is leaving), if anything.
    pub moving: Option<String>,
    /// Slaves in id order.
    pub slaves: Vec<SlaveStatus>,
    /// The status text exactly as received (TSV; see protocol.md).
    pub raw: String,
}

pub use crate::wire::SlaveCounts;

/// A connection to a Piazza server.
pub struct Client {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    next_id: u32,
    limits: WireLimits,
    secret: Option<Vec<u8>>,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`).
    ///
    /// # Errors
    /// `ClientError::Connect` naming the address when it cannot be reached.
    pub fn connect(addr: &str) -> Result<Client, ClientError> {
        let connect_error = |source: io::Error| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect_error)?.collect();
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for candidate in addrs {
            match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
                Ok(stream) => return Client::from_stream(addr, stream).map_err(connect_error),
                Err(e) => last = e,
            }
        }
        Err(connect_error(last))
    }

    fn from_stream(addr: &str, stream: TcpStream) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        Ok(Client {
            addr: addr.to_string(),
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
            next_id: 1,
            limits: WireLimits {
                max_key: wire::DEFAULT_MAX_KEY,
                max_value: wire::MAX_BULK_VALUE,
            },
            secret: None,
        })
    }

    /// Changes how long a request waits for its reply.
    ///
    /// # Errors
    /// If the socket refuses the setting.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.writer
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::Io)
    }

    /// The address this client was connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and returns its reply, whatever its status. The request id is
    /// set by the client. If the connection turns out to be broken (the server restarted),
    /// the client connects again once and resends: a resent write is a new write with a
    /// newer version, which is harmless.
    ///
    /// # Errors
    /// I/O and decoding failures, and a reply whose id does not match.
    pub fn call(&mut self, request: Frame) -> Result<Frame, ClientError> {
        match self.call_once(request.clone()) {
            Err(e) if e.is_broken_connection() && self.reconnect().is_ok() => {
                self.call_once(request)
            }
            other => other,
        }
    }

    fn reconnect(&mut self) -> Result<(), ClientError> {
        let timeout = self.reader.get_ref().read_timeout().ok().flatten();
        let fresh = Client::connect(&self.addr)?;
        self.reader = fresh.reader;
        self.writer = fresh.writer;
        if let Some(timeout) = timeout {
            self.set_timeout(timeout)?;
        }
        if let Some(secret) = self.secret.clone() {
            let reply = self.call_once(Frame::request(Opcode::Auth, 0, Vec::new(), secret))?;
            if reply.status != Status::Ok {
                return Err(ClientError::Server {
                    status: reply.status,
                    message: reply.value_text(),
                });
            }
        }
        Ok(())
    }

    fn call_once(&mut self, mut request: Frame) -> Result<Frame, ClientError> {
        let id = self.send(&mut request)?;
        self.receive(id)
    }

    /// Writes one request (and flushes) without waiting for its reply; returns the
    /// request id to pass to [`Client::receive`]. No reconnect: on error the connection
    /// should be dropped.
    ///
    /// # Errors
    /// I/O failures.
    pub fn send(&mut self, request: &mut Frame) -> Result<u32, ClientError> {
        let id = self.queue(request)?;
        self.flush()?;
        Ok(id)
    }

    /// Like [`Client::send`], but the request may stay in the connection's buffer until
    /// [`Client::flush`] (or a full buffer) sends it: for pipelines, whose requests go out
    /// together.
    ///
    /// # Errors
    /// I/O failures.
    pub fn queue(&mut self, request: &mut Frame) -> Result<u32, ClientError> {
        request.request_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        request
            .write_to(&mut self.writer)
            .map_err(ClientError::Io)?;
        Ok(request.request_id)
    }

    /// Sends the requests [`Client::queue`] left in the buffer.
    ///
    /// # Errors
    /// I/O failures.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.writer.flush().map_err(ClientError::Io)
    }

    /// Reads the reply to the request [`Client::send`] sent as `id` (replies come in
    /// request order).
    ///
    /// # Errors
    /// I/O and decoding failures, and a reply whose id does not match.
    pub fn receive(&mut self, id: u32) -> Result<Frame, ClientError> {
        let reply = wire::read_frame(&mut self.reader, &self.limits).map_err(|e| match e {
            WireError::BadMagic(b'S') => ClientError::Refused,
            WireError::Closed | WireError::Truncated => ClientError::Closed,
            WireError::Io(e) => ClientError::Io(e),
            other => ClientError::Wire(other),
        })?;
        if reply.request_id != id {
            return Err(ClientError::Mismatch {
                sent: id,
                got: reply.request_id,
            });
        }
        Ok(reply)
    }

    /// Sends a request and turns any status but `Ok` (and `NotFound`, when `not_found_ok`)
    /// into an error.
    fn call_ok(&mut self, request: Frame, not_found_ok: bool) -> Result<Frame, ClientError> {
        ops::checked(self.call(request)?, not_found_ok)
    }

    /// Reads a key through the coordinator. `Ok(None)` when it is not there.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>, ClientError> {
        let reply = self.call(ops::get(key))?;
        Ok(ops::value_of(ops::checked(reply, true)?))
    }

    /// Stores a value (flags 0) through the coordinator; returns the write's version.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        self.put_with_flags(key, value, 0)
    }

    /// Stores a value with memcached flags; returns the write's version.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn put_with_flags(
        &mut self,
        key: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<u64, ClientError> {
        let reply = self.call(ops::put(key, value, flags))?;
        Ok(ops::checked(reply, false)?.arg)
    }

    /// Deletes a key; `Ok(true)` when it was there.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let reply = self.call(ops::delete(key))?;
        Ok(ops::checked(reply, true)?.status == Status::Ok)
    }

    /// A conditional or read-modify-write operation (the `UPDATE` opcode; its `expires`
    /// is a memcached exptime). Returns the reply whatever the operation's outcome
    /// (`Ok`, `NotFound`, `NotStored`, `Exists`); other statuses are errors.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn update(&mut self, key: &[u8], update: &Update) -> Result<Frame, ClientError> {
        let reply = self.call(ops::update(key, update))?;
        match reply.status {
            Status::Ok | Status::NotFound | Status::NotStored | Status::Exists => Ok(reply),
            status => Err(ClientError::Server {
                status,
                message: reply.value_text(),
            }),
        }
    }

    /// Stores a value with flags and a memcached exptime (0 never; up to 30 days
    /// relative seconds; larger a Unix time; negative already expired).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn put_with_ttl(
        &mut self,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: i64,
    ) -> Result<u64, ClientError> {
        let update = Update {
            flags,
            expires: exptime as u64,
            data: value.to_vec(),
            ..Update::new(Op::Set)
        };
        Ok(written(self.update(key, &update)?)
            .version()
            .unwrap_or_default())
    }

    /// `add`, `replace`, `append`, `prepend`, or `cas` (a set with `cas` non-zero): what
    /// happened.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn store(
        &mut self,
        op: Op,
        key: &[u8],
        value: &[u8],
        exptime: i64,
        cas: u64,
    ) -> Result<Written, ClientError> {
        let update = Update {
            expires: exptime as u64,
            cas,
            data: value.to_vec(),
            ..Update::new(op)
        };
        Ok(written(self.update(key, &update)?))
    }

    /// Adds `delta` to (or, with `decr`, subtracts it from) a decimal value; `Ok(None)`
    /// when the key is not there.
    ///
    /// # Errors
    /// `Server { status: NonNumeric }` when the value is not a number; see [`ClientError`].
    pub fn incr(&mut self, key: &[u8], delta: u64, decr: bool) -> Result<Option<u64>, ClientError> {
        let update = Update {
            delta,
            ..Update::new(if decr { Op::Decr } else { Op::Incr })
        };
        let reply = self.update(key, &update)?;
        if reply.status != Status::Ok {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&reply.value);
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| ClientError::BadStatus(format!("not a number in the reply: {text}")))
    }

    /// Sets a new expiry (memcached exptime); `Ok(false)` when the key is not there.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn touch(&mut self, key: &[u8], exptime: i64) -> Result<bool, ClientError> {
        let update = Update {
            expires: exptime as u64,
            ..Update::new(Op::Touch)
        };
        Ok(self.update(key, &update)?.status == Status::Ok)
    }

    /// Reads many keys in one request; one result per key, in order. Not a snapshot:
    /// each key is read from its own slave at its own moment.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn get_many<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<Vec<Option<Value>>, ClientError> {
        let request = Frame::request(Opcode::MultiGet, 0, Vec::new(), wire::pack_keys(keys));
        let reply = self.call_ok(request, false)?;
        let results = wire::unpack_results(&reply.value)
            .map_err(|e| ClientError::BadStatus(e.to_string()))?;
        if results.len() != keys.len() {
            return Err(ClientError::BadStatus(format!(
                "{} results for {} keys",
                results.len(),
                keys.len()
            )));
        }
        Ok(results
            .into_iter()
            .map(|hit| {
                hit.map(|hit| Value {
                    value: hit.value,
                    flags: hit.flags,
                    version: hit.version,
                })
            })
            .collect())
    }

    /// Forgets every key stored before now (or before `delay` seconds from now).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn flush_all(&mut self, delay: u32) -> Result<(), ClientError> {
        let mut request = Frame::request(Opcode::Flush, 0, Vec::new(), Vec::new());
        request.arg = u64::from(delay);
        self.call_ok(request, false).map(|_| ())
    }

    /// Presents the cluster secret for this connection (needed by slaves, and by a
    /// coordinator started with `--require-auth`). It is presented again after a
    /// reconnect.
    ///
    /// # Errors
    /// `Server { status: Unauthorized }` for a wrong secret (the server then closes).
    pub fn auth(&mut self, secret: &[u8]) -> Result<(), ClientError> {
        self.secret = Some(secret.to_vec());
        self.call_ok(
            Frame::request(Opcode::Auth, 0, Vec::new(), secret.to_vec()),
            false,
        )
        .map(|_| ())
    }

    /// Checks that the server answers.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.call_ok(
            Frame::request(Opcode::Ping, 0, Vec::new(), Vec::new()),
            false,
        )
        .map(|_| ())
    }

    /// The ring as the coordinator sees it.
    ///
    /// # Errors
    /// See [`ClientError`]; `BadStatus` when the text cannot be parsed.
    pub fn status(&mut self) -> Result<ClusterStatus, ClientError> {
        let reply = self.call_ok(
            Frame::request(Opcode::Status, 0, Vec::new(), Vec::new()),
            false,
        )?;
        parse_status(&reply.value_text())
    }

    /// Reads a key from one table of a slave (talking to the slave directly). Tombstones
    /// read as `None`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn slave_get(&mut self, table: TableSel, key: &[u8]) -> Result<Option<Value>, ClientError> {
        let mut request = Frame::request(Opcode::SlaveGet, 0, key.to_vec(), Vec::new());
        request.table = table;
        let reply = self.call_ok(request, true)?;
        Ok((reply.status == Status::Ok).then_some(Value {
            value: reply.value,
            flags: reply.flags,
            version: reply.arg,
        }))
    }

    /// Key counts of a slave's tables (talking to the slave directly).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn slave_stats(&mut self) -> Result<SlaveCounts, ClientError> {
        let reply = self.call_ok(
            Frame::request(Opcode::SlaveStats, 0, Vec::new(), Vec::new()),
            false,
        )?;
        parse_slave_counts(&reply.value).ok_or(ClientError::BadStatus(
            "slave stats reply is not 32 bytes".into(),
        ))
    }
}

/// Decodes the value of a `SlaveStats` reply: four big-endian u64.
pub fn parse_slave_counts(value: &[u8]) -> Option<SlaveCounts> {
    SlaveCounts::decode(value)
}

/// Parses the coordinator's status text (see protocol.md, "Status").
///
/// # Errors
/// `BadStatus` naming the line that could not be read.
pub fn parse_status(text: &str) -> Result<ClusterStatus, ClientError> {
    let mut status = ClusterStatus {
        copies: 0,
        epoch: 0,
        moving: None,
        slaves: Vec::new(),
        raw: text.to_string(),
    };
    let bad = |line: &str| ClientError::BadStatus(format!("cannot read status line '{line}'"));
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["copies", n] => status.copies = n.parse().map_err(|_| bad(line))?,
            ["epoch", n] => status.epoch = n.parse().map_err(|_| bad(line))?,
            ["moving", what] => status.moving = Some(what.to_string()),
            ["id", ..] => {}
            [id, addr, token, share, state, own, previous, rest @ ..]
                if rest.is_empty() || rest.len() == 4 =>
            {
                let extra = |i: usize| rest.get(i).and_then(|v| v.parse().ok());
                status.slaves.push(SlaveStatus {
                    id: id.parse().map_err(|_| bad(line))?,
                    addr: addr.to_string(),
                    token: token.to_string(),
                    share: share.to_string(),
                    state: state.to_string(),
                    own: own.parse().ok(),
                    previous: previous.parse().ok(),
                    tombstones: extra(0),
                    purged: extra(1),
                    collected: extra(2),
                    compacted: extra(3),
                })
            }
            _ if line.is_empty() => {}
            _ => return Err(bad(line)),
        }
    }
    Ok(status)
}

/// The key operations as frames, and their replies read back: shared by [`Client`] and
/// [`crate::direct::DirectClient`], so both speak them the same way.
pub(crate) mod ops {
    use super::{ClientError, Value};
    use crate::wire::{Frame, Opcode, Status};

    /// A GET of `key`.
    pub fn get(key: &[u8]) -> Frame {
        Frame::request(Opcode::Get, 0, key.to_vec(), Vec::new())
    }

    /// A PUT of `value` under `key` with memcached `flags`.
    pub fn put(key: &[u8], value: &[u8], flags: u32) -> Frame {
        let mut request = Frame::request(Opcode::Put, 0, key.to_vec(), value.to_vec());
        request.flags = flags;
        request
    }

    /// A DELETE of `key`.
    pub fn delete(key: &[u8]) -> Frame {
        Frame::request(Opcode::Delete, 0, key.to_vec(), Vec::new())
    }

    /// An UPDATE of `key`.
    pub fn update(key: &[u8], update: &crate::update::Update) -> Frame {
        Frame::request(Opcode::Update, 0, key.to_vec(), update.encode())
    }

    /// The reply if its status is `Ok` (or `NotFound`, when `not_found_ok`), else the
    /// server's error.
    pub fn checked(reply: Frame, not_found_ok: bool) -> Result<Frame, ClientError> {
        match reply.status {
            Status::Ok => Ok(reply),
            Status::NotFound if not_found_ok => Ok(reply),
            status => Err(ClientError::Server {
                status,
                message: reply.value_text(),
            }),
        }
    }

    /// The value a GET reply carries, if it found one.
    pub fn value_of(reply: Frame) -> Option<Value> {
        (reply.status == Status::Ok).then_some(Value {
            value: reply.value,
            flags: reply.flags,
            version: reply.arg,
        })
    }
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored, at this version (the new cas unique).
    Stored(u64),
    /// Its condition did not hold (`add` of a present key; `replace`, `append`,
    /// `prepend` of a missing one).
    NotStored,
    /// The cas unique did not match.
    Exists,
    /// The key is not there (`cas`).
    NotFound,
}

impl Written {
    /// The version written, if it was.
    pub fn version(self) -> Option<u64> {
        match self {
            Written::Stored(version) => Some(version),
            _ => None,
        }
    }
}

fn written(reply: Frame) -> Written {
    match reply.status {
        Status::Ok => Written::Stored(reply.arg),
        Status::NotStored => Written::NotStored,
        Status::Exists => Written::Exists,
        _ => Written::NotFound,
    }
}

/// Everything that can go wrong for a client.
#[derive(Debug)]
pub enum ClientError {
    /// The server could not be reached.
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// Sending or receiving failed (timeouts included).
    Io(io::Error),
    /// The server closed the connection.
    Closed,
    /// The server refused the connection (it is at its connection cap).
    Refused,
    /// The reply could not be decoded.
    Wire(WireError),
    /// The reply answers another request.
    Mismatch {
        /// Request id sent.
        sent: u32,
        /// Request id received.
        got: u32,
    },
    /// The server answered with an error status.
    Server {
        /// The status.
        status: Status,
        /// The server's message.
        message: String,
    },
    /// The status text could not be parsed.
    BadStatus(String),
}

impl ClientError {
    /// True when the connection is gone (not merely slow): worth connecting again.
    pub fn is_broken_connection(&self) -> bool {
        match self {
            ClientError::Closed => true,
            ClientError::Io(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { addr, source } => write!(
                f,
                "cannot connect to {addr}: {source} (is the coordinator running? try --coordinator)"
            ),
            ClientError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "no reply in time: {e}")
            }
            ClientError::Io(e) => write!(f, "connection failed: {e}"),
            ClientError::Closed => write!(f, "the server closed the connection"),
            ClientError::Refused => write!(
                f,
                "the server refused the connection: too many connections (try again later)"
            ),
            ClientError::Wire(e) => write!(f, "bad reply from the server: {e}"),
            ClientError::Mismatch { sent, got } => {
                write!(f, "reply for request {got} arrived for request {sent}")
            }
            ClientError::Server { status, message } => {
                write!(f, "server error ({}): {message}", status.name())
            }
            ClientError::BadStatus(what) => write!(f, "bad status reply: {what}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } => Some(source),
            ClientError::Io(e) => Some(e),
            ClientError::Wire(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_parses() {
        let text = "copies\t2\nepoch\t3\nmoving\tjoining slave 4\nid\taddr\ttoken\tshare\tstate\town\tprevious\n\
                    1\t127.0.0.1:7410\t0x003fffffffffffff\t50.0%\talive\t10\t12\t3\t1\t7\t-\n\
                    2\t127.0.0.1:7411\t0x007fffffffffffff\t50.0%\tunreachable\t-\t-\n";
        let status = parse_status(text).unwrap();
        assert_eq!(status.copies, 2);
        assert_eq!(status.epoch, 3);
        assert_eq!(status.moving.as_deref(), Some("joining slave 4"));
        assert_eq!(status.slaves.len(), 2);
        assert_eq!(status.slaves[0].own, Some(10));
        assert_eq!(status.slaves[0].share, "50.0%");
        assert_eq!(status.slaves[0].tombstones, Some(3));
        assert_eq!(status.slaves[0].collected, Some(7));
        assert_eq!(status.slaves[0].compacted, None);
        assert_eq!(status.slaves[1].purged, None);
        assert_eq!(status.slaves[1].previous, None);
        assert!(parse_status("what\n").is_err());
    }

    #[test]
    fn slave_counts_need_32_bytes() {
        assert_eq!(parse_slave_counts(&[0; 31]), None);
        let mut bytes = [0u8; 32];
        bytes[7] = 5;
        bytes[31] = 1;
        let counts = parse_slave_counts(&bytes).unwrap();
        assert_eq!(counts.own_live, 5);
        assert_eq!(counts.previous_tombstones, 1);
    }
}
