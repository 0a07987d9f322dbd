//! What every Piazza TCP server shares: binding with a helpful error, the accept loop with
//! its connection cap, and the loop that serves binary frames on one connection.
//!
//! Threads: [`accept_loop`] runs on its caller's thread and spawns one named thread per
//! connection (`<prefix>-<n>`); it owns their `JoinHandle`s, reaps finished ones as it goes,
//! and joins all of them before it returns. Blocked connection threads are woken by the
//! [`Shutdown`] (it shuts their sockets down) or by their idle timeout.

use std::fmt;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::config::ServerLimits;
use crate::shutdown::Shutdown;
use crate::wire::{self, Frame, Opcode, Status, WireError, WireLimits};

/// Stack size of a connection thread: small, so `--max-connections` threads fit easily.
pub const CONNECTION_STACK: usize = 256 * 1024;

/// The reply a connection past the cap gets before it is closed. It is text, since the
/// protocol is not known yet; binary clients report it as "server busy".
pub const BUSY_REPLY: &[u8] = b"SERVER_ERROR too many connections\r\n";

/// Why a server cannot take its address or its data directory. Each message names the
/// address or directory and says what to do.
#[derive(Debug)]
pub enum ServerError {
    /// An address names no socket address.
    Resolve {
        /// What the address is for (`coordinator address`, ...).
        what: &'static str,
        /// The address as given.
        addr: String,
        /// Why it names none.
        source: io::Error,
    },
    /// An address cannot be bound (TCP or UDP).
    Bind {
        /// What the address is for.
        what: &'static str,
        /// The address as given.
        addr: String,
        /// The flag that sets it (`--listen`, ...).
        flag: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The data directory cannot be created.
    CreateDataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The data directory is not writable.
    DataDirNotWritable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Resolve { what, addr, source } => write!(
                f,
                "cannot use {what} '{addr}': {source} (expected HOST:PORT)"
            ),
            ServerError::Bind {
                what,
                addr,
                flag,
                source,
            } => match source.kind() {
                io::ErrorKind::AddrInUse => write!(
                    f,
                    "cannot bind {what} {addr}: address in use (another piazza running? try {flag} with another port, or port 0)"
                ),
                io::ErrorKind::PermissionDenied => write!(
                    f,
                    "cannot bind {what} {addr}: permission denied (ports below 1024 need privileges; try {flag} with a higher port)"
                ),
                _ => write!(f, "cannot bind {what} {addr}: {source} (check {flag})"),
            },
            ServerError::CreateDataDir { dir, source } => write!(
                f,
                "data dir {} cannot be created: {source} (choose another with --data-dir)",
                dir.display()
            ),
            ServerError::DataDirNotWritable { dir, source } => write!(
                f,
                "data dir {} is not writable: {source} (fix its permissions or choose another with --data-dir)",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Resolve { source, .. }
            | ServerError::Bind { source, .. }
            | ServerError::CreateDataDir { source, .. }
            | ServerError::DataDirNotWritable { source, .. } => Some(source),
        }
    }
}

/// Binds a TCP listener on `addr`, the `what` address set by `flag`.
///
/// # Errors
/// When `addr` names no address, or it cannot be bound: the message names the address
/// and the likely cause.
pub fn bind(
    addr: &str,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, ServerError> {
    let addrs = resolve(addr, what)?;
    TcpListener::bind(&addrs[..]).map_err(|source| ServerError::Bind {
        what,
        addr: addr.into(),
        flag,
        source,
    })
}

/// The socket addresses `addr` (`HOST:PORT`) names.
///
/// # Errors
/// When it names none.
pub fn resolve(addr: &str, what: &'static str) -> Result<Vec<SocketAddr>, ServerError> {
    addr.to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|source| ServerError::Resolve {
            what,
            addr: addr.into(),
            source,
        })
}

/// Creates `dir` if needed and checks that it is writable.
///
/// # Errors
/// When it cannot be created or written to.
pub fn prepare_data_dir(dir: &Path) -> Result<(), ServerError> {
    fs::create_dir_all(dir).map_err(|source| ServerError::CreateDataDir {
        dir: dir.into(),
        source,
    })?;
    let probe = dir.join(".piazza-write-test");
    fs::write(&probe, b"ok")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|source| ServerError::DataDirNotWritable {
            dir: dir.into(),
            source,
        })
}

/// Accepts connections until the shutdown starts, handing each to `handle` on its own
/// named thread. Past `limits.max_connections` live connections, a new one gets
/// [`BUSY_REPLY`] and is closed. Returns once every connection thread has been joined.
///
/// `active` counts the live connections (shared, so servers can report it).
pub fn accept_loop<F>(
    listener: TcpListener,
    shutdown: &Shutdown,
    prefix: &str,
    limits: ServerLimits,
    active: Arc<AtomicUsize>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut serial: u64 = 0;
    loop {
        let accepted = listener.accept();
        if shutdown.is_triggered() {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: back off a
                // little instead of spinning, and carry on.
                warn!("accept failed: {e}");
                if shutdown.wait_timeout(Duration::from_millis(50)) {
                    break;
                }
                continue;
            }
        };
        reap(&mut threads);
        if active.load(Ordering::SeqCst) >= limits.max_connections {
            warn!(
                "connection cap of {} reached: refusing {peer}",
                limits.max_connections
            );
            let _ = (&stream).write_all(BUSY_REPLY);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(limits.idle_timeout));
        // A client that does not read its replies cannot block a thread forever.
        let _ = stream.set_write_timeout(Some(limits.request_timeout));
        serial += 1;
        let name = format!("{prefix}-{serial}");
        active.fetch_add(1, Ordering::SeqCst);
        let counter = ActiveGuard(Arc::clone(&active));
        let handle = Arc::clone(&handle);
        let shutdown = shutdown.clone();
        let spawned = thread::Builder::new()
            .name(name)
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _counter = counter;
                let _registered = shutdown.register_stream(&stream);
                debug!("connection from {peer}");
                handle(stream, peer);
                debug!("connection from {peer} closed");
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => warn!("cannot start a thread for {peer}: {e}"),
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// Joins the connection threads that have finished, keeping the others.
fn reap(threads: &mut Vec<JoinHandle<()>>) {
    let mut index = 0;
    while index < threads.len() {
        if threads[index].is_finished() {
            let _ = threads.swap_remove(index).join();
        } else {
            index += 1;
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's read side with two timeouts: `idle` while waiting for a request to
/// begin, `request` for the rest of a request once its first bytes arrived (so a client
/// that sends a request a byte at a time, slowloris-style, is cut off).
pub struct Phased {
    stream: TcpStream,
    idle: Duration,
    request: Duration,
    started: Option<Instant>,
    /// The read timeout the socket has now (each change is a system call).
    applied: Option<Duration>,
}

impl Phased {
    /// Wraps a stream.
    pub fn new(stream: TcpStream, limits: &ServerLimits) -> Phased {
        Phased {
            stream,
            idle: limits.idle_timeout,
            request: limits.request_timeout,
            started: None,
            applied: None,
        }
    }

    /// No request is under way: the next read may wait up to the idle timeout. (Inside a
    /// request each read waits up to the idle timeout too, and the whole request up to
    /// the request timeout.)
    pub fn between_requests(&mut self) {
        self.started = None;
    }

    /// A request is under way from now on (if one was not already).
    pub fn inside_request(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }
}

impl Read for Phased {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = match self.started {
            None => self.idle,
            // Inside a request the client must also keep sending: silence for the idle
            // timeout ends a half-sent request as it ends an idle connection.
            Some(started) => match self.request.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => left.min(self.idle),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request not complete within the request timeout",
                    ));
                }
            },
        };
        // Between requests the timeout is always the idle one: set it once, not per read.
        if self.applied != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.applied = Some(timeout);
        }
        let n = self.stream.read(buf)?;
        if n > 0 {
            self.inside_request();
        }
        Ok(n)
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Who must present the cluster secret on a connection before what.
#[derive(Clone, Copy)]
pub struct Guard<'a> {
    /// The secret; `None`: nothing is checked.
    pub secret: Option<&'a [u8]>,
    /// Which opcodes need an authenticated connection.
    pub needs_auth: fn(Opcode) -> bool,
}

impl Guard<'_> {
    /// No secret: every request is served.
    pub const OPEN: Guard<'static> = Guard {
        secret: None,
        needs_auth: |_| false,
    };
}

/// One place in a connection's window: a reply ready to write (a frame, or an error reply
/// already encoded), or a request under way.
enum Slot<P> {
    Ready(Frame),
    Encoded(Vec<u8>),
    Pending(P),
}

/// Sends on what every request under way left buffered, before the first wait.
fn send_buffered<P: UnderWay>(window: &std::collections::VecDeque<Slot<P>>) {
    for slot in window {
        if let Slot::Pending(pending) = slot {
            pending.send_buffered();
        }
    }
}

/// A request a frame loop leaves under way (see [`serve_frames`]).
pub trait UnderWay {
    /// Sends on whatever the request left in a buffer. The loop calls it for every
    /// request under way before it waits for the oldest, so that all of them are being
    /// worked on meanwhile. Nothing by default.
    fn send_buffered(&self) {}
}

/// Serves binary frames on one connection, pipelined: every whole request already
/// received is started with `begin` (up to `timeouts.pipeline_window` under way), and the
/// replies are collected with `finish` and written in request order, flushed whenever no
/// further whole request is buffered, so pipelined requests share one write and never
/// wait for each other's slave round trips. Reading stops while the window is full (a
/// client that sends without reading gets back-pressure). Malformed frames get an error
/// reply where one can be framed; the connection is closed when the stream cannot be
/// resynchronised. A server whose requests are answered at once passes `|reply| reply` as
/// `finish`.
pub fn serve_frames<P: UnderWay, B, F>(
    stream: TcpStream,
    peer: SocketAddr,
    timeouts: &ServerLimits,
    limits: WireLimits,
    guard: Guard<'_>,
    mut begin: B,
    mut finish: F,
) where
    B: FnMut(Frame) -> P,
    F: FnMut(P) -> Frame,
{
    serve_frames_ordered(
        stream,
        peer,
        timeouts,
        limits,
        guard,
        |_, _| false,
        &mut begin,
        &mut finish,
    );
}

/// [`serve_frames`], where `waits(frame, under_way)` says whether a request must not be
/// begun while `under_way` ones are: then every request under way is answered first.
#[allow(clippy::too_many_arguments)] // serve_frames' arguments, and the ordering rule
pub fn serve_frames_ordered<P: UnderWay, W, B, F>(
    stream: TcpStream,
    peer: SocketAddr,
    timeouts: &ServerLimits,
    limits: WireLimits,
    guard: Guard<'_>,
    waits: W,
    mut begin: B,
    mut finish: F,
) where
    W: Fn(&Frame, &mut dyn Iterator<Item = &P>) -> bool,
    B: FnMut(Frame) -> P,
    F: FnMut(P) -> Frame,
{
    let read_half = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot clone the socket of {peer}: {e}");
            return;
        }
    };
    let mut reader = BufReader::with_capacity(64 * 1024, Phased::new(read_half, timeouts));
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    let mut authenticated = false;
    let mut window: std::collections::VecDeque<Slot<P>> = std::collections::VecDeque::new();
    let mut closing = false;
    loop {
        // Answer what is under way when nothing more can be started: the window is full,
        // the connection is closing, or no whole request is waiting in the buffer. All of
        // it (the next window's requests then go out together too), each request's
        // buffered sends first.
        let answer_all = !window.is_empty()
            && (closing
                || window.len() >= timeouts.pipeline_window.max(1)
                || !wire::holds_whole_frame(reader.buffer()));
        if answer_all {
            send_buffered(&window);
        }
        while answer_all && !window.is_empty() {
            let written = match window.pop_front() {
                Some(Slot::Ready(reply)) => reply.write_to(&mut writer),
                Some(Slot::Encoded(bytes)) => writer.write_all(&bytes),
                Some(Slot::Pending(pending)) => finish(pending).write_to(&mut writer),
                None => break,
            };
            if let Err(e) = written {
                debug!("{peer}: write failed: {e}");
                return;
            }
            if window.is_empty()
                && !wire::holds_whole_frame(reader.buffer())
                && let Err(e) = writer.flush()
            {
                debug!("{peer}: write failed: {e}");
                return;
            }
        }
        if closing {
            let _ = writer.flush();
            return;
        }
        // Each request gets the request timeout from its first byte on.
        reader.get_mut().between_requests();
        if !reader.buffer().is_empty() {
            reader.get_mut().inside_request();
        }
        let slot = match wire::read_frame(&mut reader, &limits) {
            Ok(frame) if frame.opcode == Opcode::Auth => match guard.secret {
                Some(secret) if same_secret(&frame.value, secret) => {
                    authenticated = true;
                    Slot::Ready(frame.reply(Status::Ok))
                }
                Some(_) => {
                    warn!("{peer}: wrong cluster secret; closing");
                    closing = true;
                    Slot::Ready(frame.error_reply(Status::Unauthorized, "wrong secret"))
                }
                None => Slot::Ready(frame.reply(Status::Ok)),
            },
            Ok(frame)
                if guard.secret.is_some() && !authenticated && (guard.needs_auth)(frame.opcode) =>
            {
                warn!(
                    "{peer}: {:?} without the cluster secret; closing",
                    frame.opcode
                );
                closing = true;
                Slot::Ready(frame.error_reply(
                    Status::Unauthorized,
                    "this server requires the cluster secret: send AUTH first",
                ))
            }
            Ok(frame) => {
                let mut under_way = window.iter().filter_map(|slot| match slot {
                    Slot::Pending(pending) => Some(pending),
                    _ => None,
                });
                if waits(&frame, &mut under_way) {
                    send_buffered(&window);
                    for slot in window.drain(..) {
                        let written = match slot {
                            Slot::Ready(reply) => reply.write_to(&mut writer),
                            Slot::Encoded(bytes) => writer.write_all(&bytes),
                            Slot::Pending(pending) => finish(pending).write_to(&mut writer),
                        };
                        if let Err(e) = written {
                            debug!("{peer}: write failed: {e}");
                            return;
                        }
                    }
                }
                Slot::Pending(begin(frame))
            }
            Err(WireError::Closed) => break,
            Err(WireError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                debug!("{peer}: {e}; closing");
                break;
            }
            Err(e) => match e.server_reply() {
                Some((reply, close)) => {
                    if close {
                        warn!("{peer}: {e}; closing the connection");
                        closing = true;
                    } else {
                        debug!("{peer}: {e}");
                    }
                    Slot::Encoded(reply)
                }
                None => {
                    debug!("{peer}: {e}; closing the connection");
                    break;
                }
            },
        };
        window.push_back(slot);
    }
    // Requests already under way are still answered, in order (their writes happen
    // anyway), before the connection closes.
    for slot in window {
        let written = match slot {
            Slot::Ready(reply) => reply.write_to(&mut writer),
            Slot::Encoded(bytes) => writer.write_all(&bytes),
            Slot::Pending(pending) => finish(pending).write_to(&mut writer),
        };
        if written.is_err() {
            return;
        }
    }
    let _ = writer.flush();
}

/// Bytes read from a socket at a time by [`BufferedReader`].
pub const READ_CHUNK: usize = 16 * 1024;

/// The read side of a session that parses a byte buffer (memcached text and binary):
/// reads with the idle and request timeouts ([`Phased`]) and throws away the bytes of a
/// refused body as they arrive, without buffering them.
pub struct BufferedReader {
    reader: Phased,
    chunk: Vec<u8>,
    /// Bytes of a refused body still to be thrown away.
    skip: usize,
}

impl BufferedReader {
    /// Wraps the read half of a connection.
    pub fn new(stream: TcpStream, limits: &ServerLimits) -> BufferedReader {
        BufferedReader {
            reader: Phased::new(stream, limits),
            chunk: vec![0u8; READ_CHUNK],
            skip: 0,
        }
    }

    /// Reads what comes next onto the end of `buf` (dropping bytes still to be skipped).
    /// A request cut in the middle, or a body being skipped, must be completed within the
    /// request timeout. False when the connection ended: closed, timed out, or failed.
    pub fn fill(&mut self, buf: &mut Vec<u8>, peer: SocketAddr) -> bool {
        if buf.is_empty() && self.skip == 0 {
            self.reader.between_requests();
        }
        let n = loop {
            match self.reader.read(&mut self.chunk) {
                Ok(0) => return false,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("{peer}: {e}; closing");
                    return false;
                }
            }
        };
        let dropped = self.skip.min(n);
        self.skip -= dropped;
        buf.extend_from_slice(&self.chunk[dropped..n]);
        true
    }

    /// Discards `more` bytes from position `start` of `buf` (of length `len`): those
    /// already there, and the rest as they arrive. Returns the position after the ones
    /// already there.
    pub fn discard(&mut self, len: usize, start: usize, more: usize) -> usize {
        let dropped = more.min(len - start);
        self.skip = more - dropped;
        start + dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_address_or_directory_and_what_to_do() {
        let err = resolve("nohost", "coordinator address").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot use coordinator address 'nohost': "),
            "{err}"
        );
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = bind(&addr, "slave address", "--listen").unwrap_err();
        assert!(matches!(err, ServerError::Bind { .. }), "{err}");
        assert!(err.to_string().contains("address in use"), "{err}");
        assert!(err.to_string().contains("--listen"), "{err}");
        // A directory under a file cannot be created.
        let file = std::env::temp_dir().join(format!("piazza-server-{}", std::process::id()));
        fs::write(&file, b"").unwrap();
        let err = prepare_data_dir(&file.join("data")).unwrap_err();
        let _ = fs::remove_file(&file);
        assert!(matches!(err, ServerError::CreateDataDir { .. }), "{err}");
        assert!(err.to_string().contains("--data-dir"), "{err}");
    }
}
