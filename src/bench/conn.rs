//! What a connection says, in any protocol: requests ([`Cmd`]), what their replies said
//! ([`Done`]) or how they failed ([`OpError`]), and [`Conn`], one connection of any
//! protocol with one queue/flush/recv interface.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::args::Protocol;
use super::binary::FrameConn;
use super::direct::DirectConn;
use super::memcache::{TextConn, read_line};
use super::resp::resp_error;
use crate::client::{CONNECT_TIMEOUT, ClientError, REQUEST_TIMEOUT};
use crate::direct::DirectClient;

/// How long the start-up check waits for an answer: a server that speaks another
/// protocol may say nothing at all, and a bad flag should not cost the full request timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How an operation failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OpError {
    /// The server answered with an error; the connection is still usable.
    Reply(String),
    /// The connection is broken or out of step; it must be replaced.
    Broken(String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Reply(why) | OpError::Broken(why) => f.write_str(why),
        }
    }
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> OpError {
        match e {
            ClientError::Server { .. } => OpError::Reply(e.to_string()),
            other => OpError::Broken(other.to_string()),
        }
    }
}

impl From<io::Error> for OpError {
    fn from(e: io::Error) -> OpError {
        OpError::Broken(format!("connection failed: {e}"))
    }
}

/// Why a connection could not be opened ([`Conn::open`]). Each message names the
/// address.
#[derive(Debug)]
pub(super) enum OpenError {
    /// Nothing answered at the address.
    Connect {
        /// The address.
        addr: String,
        /// What should be running there (`coordinator`, `server`).
        server: &'static str,
        /// Why.
        source: io::Error,
    },
    /// Connected, but the connection could not be set up.
    Setup {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The direct-routing client could not connect or fetch the cluster's view.
    Direct(ClientError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Connect {
                addr,
                server,
                source,
            } => write!(
                f,
                "cannot connect to {addr}: {source} (is the {server} running? try --coordinator)"
            ),
            OpenError::Setup { addr, source } => {
                write!(f, "cannot set up the connection to {addr}: {source}")
            }
            OpenError::Direct(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Connect { source, .. } | OpenError::Setup { source, .. } => Some(source),
            OpenError::Direct(e) => Some(e),
        }
    }
}

/// What an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A get of one key.
    Get,
    /// A get of this many keys in one request (`--multiget`).
    MultiGet(usize),
    /// A set (no expiry).
    Set,
    /// A set with an exptime (`--workload set-ttl`).
    SetTtl,
    /// A get that also returns the cas unique (memcached `gets`).
    Gets,
    /// A set that holds only if the cas unique still matches.
    Cas,
    /// Add 1 to a decimal value.
    Incr,
}

impl Kind {
    /// A set of some kind: `--verify` records what it wrote.
    pub(super) fn is_set(self) -> bool {
        matches!(self, Kind::Set | Kind::SetTtl)
    }
}

/// One request, as queued on a connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cmd<'a> {
    /// Key.
    Get(&'a [u8]),
    /// Keys, asked in one request (binary: one GET frame each, back to back).
    MultiGet(&'a [Vec<u8>]),
    /// Key and value.
    Set(&'a [u8], &'a [u8]),
    /// Key, value and exptime in seconds.
    SetTtl(&'a [u8], &'a [u8], u32),
    /// Key.
    Gets(&'a [u8]),
    /// Key, value and the cas unique a `gets` returned.
    Cas(&'a [u8], &'a [u8], u64),
    /// Key and delta.
    Incr(&'a [u8], u64),
}

impl Cmd<'_> {
    /// The kind of reply this request gets.
    pub(super) fn kind(&self) -> Kind {
        match self {
            Cmd::Get(_) => Kind::Get,
            Cmd::MultiGet(keys) => Kind::MultiGet(keys.len()),
            Cmd::Set(..) => Kind::Set,
            Cmd::SetTtl(..) => Kind::SetTtl,
            Cmd::Gets(_) => Kind::Gets,
            Cmd::Cas(..) => Kind::Cas,
            Cmd::Incr(..) => Kind::Incr,
        }
    }
}

/// What a successful reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    /// A get found the key.
    Hit,
    /// A get, gets or incr found nothing (or a cas found the key gone).
    Miss,
    /// A set (or cas) was stored.
    Stored,
    /// A gets found the key; its cas unique.
    Unique(u64),
    /// A cas found another cas unique: someone wrote the key since the `gets`.
    Exists,
    /// An incr's new value.
    Counter(u64),
    /// A multi-key get: how many of its keys were found, and how many were not.
    Keys {
        /// Keys found.
        hits: u32,
        /// Keys not found.
        misses: u32,
    },
}

impl Done {
    /// A multi-key get's outcome: `hits` found among `asked`.
    pub(super) fn keys(hits: usize, asked: usize) -> Done {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Done::Keys {
            hits: clamp(hits),
            misses: clamp(asked.saturating_sub(hits)),
        }
    }
}

/// Buffer size of every bench connection's reader and writer: a batch of requests is
/// written with one flush, and a batch of replies read with few reads.
pub(super) const CONN_BUFFER: usize = 64 * 1024;

/// One connection of any protocol. Requests are queued ([`Conn::queue`]), sent together
/// ([`Conn::flush`]), and their replies read one by one, in the order sent
/// ([`Conn::recv`]).
pub(super) enum Conn {
    Binary(FrameConn),
    Memcache(TextConn),
    /// Redis; `true`: `WAIT 1 0` after every batch that holds a SET.
    Resp(TextConn, bool),
    /// Direct routing: a flush serves the batch, many requests in flight per slave.
    Direct(Box<DirectConn>),
}

impl Conn {
    /// Connects.
    ///
    /// # Errors
    /// When nothing answers at `addr` or the connection cannot be set up; the message
    /// names the address.
    pub(super) fn open(protocol: Protocol, addr: &str) -> Result<Conn, OpenError> {
        let setup = |source| OpenError::Setup {
            addr: addr.into(),
            source,
        };
        let stream = || {
            connect(addr).map_err(|source| OpenError::Connect {
                addr: addr.into(),
                server: if protocol == Protocol::Binary {
                    "coordinator"
                } else {
                    "server"
                },
                source,
            })
        };
        match protocol {
            Protocol::Direct => {
                let mut client = DirectClient::connect(addr).map_err(OpenError::Direct)?;
                client
                    .set_timeout(REQUEST_TIMEOUT)
                    .map_err(|e| setup(io::Error::other(e)))?;
                // Connected to every slave before the clock starts, as the other
                // protocols are to their server.
                client.connect_slaves().map_err(OpenError::Direct)?;
                Ok(Conn::Direct(Box::new(DirectConn::new(client))))
            }
            Protocol::Binary => FrameConn::new(stream()?).map(Conn::Binary).map_err(setup),
            Protocol::Memcache => TextConn::new(stream()?).map(Conn::Memcache).map_err(setup),
            Protocol::Resp => TextConn::new(stream()?)
                .map(|conn| Conn::Resp(conn, false))
                .map_err(setup),
        }
    }

    /// The connection as `plan` wants it: Redis's `WAIT` (`--redis-wait`), the binary
    /// protocol's MULTI_GET (`--multiget-op`).
    pub(super) fn configured(self, plan: &super::args::Plan) -> Conn {
        match self.with_wait(plan.redis_wait) {
            Conn::Binary(mut conn) => {
                conn.multiget_op = plan.multiget_op;
                Conn::Binary(conn)
            }
            other => other,
        }
    }

    /// With `wait`, a Redis connection sends `WAIT 1 0` after every batch holding a SET.
    pub(super) fn with_wait(self, wait: bool) -> Conn {
        match self {
            Conn::Resp(conn, _) => Conn::Resp(conn, wait),
            other => other,
        }
    }

    /// Checks within [`PROBE_TIMEOUT`] that the server speaks the protocol: a binary
    /// ping, memcached `version` or Redis `PING`. Meant for a connection used for nothing
    /// else.
    pub(super) fn check(&mut self) -> Result<(), OpError> {
        match self {
            Conn::Binary(conn) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.ping()
            }
            Conn::Memcache(conn) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.version()
            }
            Conn::Direct(conn) => conn.client.refresh().map_err(OpError::from),
            Conn::Resp(conn, _) => {
                conn.writer
                    .get_ref()
                    .set_read_timeout(Some(PROBE_TIMEOUT))?;
                conn.resp_command(&[b"PING"])?;
                conn.writer.flush()?;
                match read_line(&mut conn.reader, &mut conn.line)? {
                    "+PONG" => Ok(()),
                    other => Err(OpError::Broken(format!("not a Redis server: '{other}'"))),
                }
            }
        }
    }

    /// Adds a request to the batch being built; nothing is sent before [`Conn::flush`].
    /// A request the protocol's client cannot send is an error reply (the run checks the
    /// workload against the protocol before it starts).
    pub(super) fn queue(&mut self, cmd: Cmd<'_>) -> Result<(), OpError> {
        match self {
            Conn::Binary(conn) => conn.queue(cmd),
            Conn::Memcache(conn) => conn.queue(cmd),
            Conn::Resp(conn, _) => conn.resp_queue(cmd),
            Conn::Direct(conn) => conn.queue(cmd),
        }
    }

    /// Sends the batch. A Redis connection with `WAIT` adds `WAIT 1 0` first if the batch
    /// holds a SET, and then returns `true`: read its reply with [`Conn::recv_wait`] after
    /// the batch's own.
    pub(super) fn flush(&mut self) -> Result<bool, OpError> {
        let wait = match self {
            Conn::Resp(conn, true) if conn.sets_queued => {
                conn.resp_command(&[b"WAIT", b"1", b"0"])?;
                true
            }
            _ => false,
        };
        match self {
            Conn::Binary(conn) => conn.writer.flush()?,
            Conn::Memcache(conn) | Conn::Resp(conn, _) => {
                conn.sets_queued = false;
                conn.writer.flush()?;
            }
            Conn::Direct(conn) => conn.flush(),
        }
        Ok(wait)
    }

    /// Reads the reply to the oldest request not yet answered, a `kind` one. With `out`,
    /// a hit's value is copied into it (single-key gets only).
    pub(super) fn recv(&mut self, kind: Kind, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        match self {
            Conn::Binary(conn) => conn.recv(kind, out),
            Conn::Direct(conn) => conn.recv(kind, out),
            Conn::Memcache(conn) => conn.recv(kind, out),
            Conn::Resp(conn, _) => conn.resp_recv(kind, out),
        }
    }

    /// Reads the reply to the `WAIT 1 0` that [`Conn::flush`] sent: at least one replica.
    pub(super) fn recv_wait(&mut self) -> Result<(), OpError> {
        match self {
            Conn::Resp(conn, _) => match read_line(&mut conn.reader, &mut conn.line)? {
                line if line
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= 1) =>
                {
                    Ok(())
                }
                other => Err(resp_error(other)),
            },
            _ => Err(OpError::Broken("no WAIT was sent".into())),
        }
    }

    /// One request and its reply (and, for a Redis SET with `WAIT`, the WAIT's).
    pub(super) fn one(&mut self, cmd: Cmd<'_>, out: Option<&mut Vec<u8>>) -> Result<Done, OpError> {
        let kind = cmd.kind();
        self.queue(cmd)?;
        let wait = self.flush()?;
        let done = self.recv(kind, out);
        if !wait || matches!(done, Err(OpError::Broken(_))) {
            return done;
        }
        match (done, self.recv_wait()) {
            (_, Err(broken @ OpError::Broken(_))) => Err(broken),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(done), Ok(())) => Ok(done),
        }
    }

    pub(super) fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.one(Cmd::Set(key, value), None).map(|_| ())
    }

    /// Like [`Conn::get`], copying the value into `out` on a hit.
    #[cfg(test)]
    pub(super) fn get_value(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, OpError> {
        self.one(Cmd::Get(key), Some(out))
            .map(|done| done == Done::Hit)
    }

    /// `Ok(true)` for a hit, `Ok(false)` for a miss.
    #[cfg(test)]
    pub(super) fn get(&mut self, key: &[u8]) -> Result<bool, OpError> {
        self.one(Cmd::Get(key), None).map(|done| done == Done::Hit)
    }
}

impl From<bool> for Done {
    /// A get's outcome: `true` for a hit.
    fn from(found: bool) -> Done {
        if found { Done::Hit } else { Done::Miss }
    }
}

/// Connects to `addr` with `TCP_NODELAY`, and read and write timeouts of
/// [`REQUEST_TIMEOUT`] (a pipeline whose replies cannot drain fails instead of hanging).
pub(super) fn connect(addr: &str) -> io::Result<TcpStream> {
    let candidates: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
                stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
