//! Persistent, multiplexed connections to one slave: the coordinator's to every slave,
//! and a slave's to the replicas of its direct writes (`Forward`).
//!
//! A [`SlaveLink`] is one TCP connection that carries many requests at once: callers write
//! a frame with a fresh request id (under the writer lock) and wait for the reply with
//! that id. Frames queued together go out in one write: a sender that sees others waiting
//! for the writer leaves the flush to the last of them, and a *deferred* send (a pipelined
//! request) leaves it to the first wait on the link.
//!
//! Replies are read by the callers themselves, leader/follower style, not by a thread of
//! the link's own: of the callers waiting on a link, one (the *leader*) reads frames from
//! the connection and hands each to its caller (waking it); the others sleep until their
//! reply is handed over or the leader leaves, when one of them takes its place. A caller
//! alone on a link (one client, or a multi-get waiting on each slave in turn) thus gets
//! its reply straight from the socket: one thread wake-up fewer per request than with a
//! reader thread, which on a small machine is much of a request's cost. Replies nobody
//! waits for any more (timed out) are read and dropped by the next leader. A link nobody
//! reads can break unseen (the slave restarted): before a request on a link that has been
//! quiet for a while, [`SlaveLink::send`] checks it without blocking, so a stale link is
//! replaced before the request is sent rather than failing it.
//!
//! Threads: a link has none; [`SlaveLink::close`] shuts the connection down, which ends a
//! leader's read. Locks: `writer`, then `reader` (only tried, never waited for, while the
//! writer is held), then `inbox`; none is held while sleeping, and `reader` only while
//! reading. The writer lock is held across one frame's write, which is the point of it
//! (frames must not interleave); slaves read continuously, so it is short.

use crate::sync::lock;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use log::debug;

use crate::ring::SlaveId;
use crate::wire::{self, Frame, HEADER_LEN, TableSel, WireError, WireLimits};

/// Why a request to a slave failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The slave could not be reached.
    Connect(String),
    /// The connection broke before the reply came.
    Broken(String),
    /// No reply within the timeout.
    Timeout,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Connect(why) => write!(f, "cannot connect: {why}"),
            LinkError::Broken(why) => write!(f, "connection lost: {why}"),
            LinkError::Timeout => write!(f, "no reply in time"),
        }
    }
}

impl std::error::Error for LinkError {}

/// A link with no read for this long is checked before its next request.
const QUIET: Duration = Duration::from_millis(1);

/// Bytes read from a link at a time (a larger frame grows the buffer).
const READ_BUFFER: usize = 64 * 1024;

/// A request sent on a link, by request id.
enum Slot {
    /// No reply yet; the thread that sleeps waiting for it, once one does.
    Waiting(Option<Thread>),
    /// The reply (or why there is none), not yet taken.
    Done(Result<Frame, LinkError>),
}

/// The requests under way on a link, and who reads for them.
#[derive(Default)]
struct Inbox {
    slots: HashMap<u32, Slot>,
    /// A caller is reading the connection.
    leading: bool,
    /// Callers asleep in [`PendingReply::wait`].
    sleepers: usize,
}

impl Inbox {
    /// Wakes one sleeping waiter, to read in the leader's place.
    fn promote(&self) {
        if self.sleepers == 0 {
            return;
        }
        let sleeper = self.slots.values().find_map(|slot| match slot {
            Slot::Waiting(Some(thread)) => Some(thread),
            _ => None,
        });
        if let Some(thread) = sleeper {
            thread.unpark();
        }
    }

    /// Hands `frame` to its caller; a reply nobody waits for is dropped.
    fn deliver(&mut self, frame: Frame, peer: &str) {
        match self.slots.get_mut(&frame.request_id) {
            Some(slot @ Slot::Waiting(_)) => {
                if let Slot::Waiting(Some(thread)) = std::mem::replace(slot, Slot::Done(Ok(frame)))
                {
                    thread.unpark();
                }
            }
            _ => debug!(
                "{peer}: reply for request {} nobody waits for (timed out?)",
                frame.request_id
            ),
        }
    }
}

/// The read half of a link and the bytes read from it that are not frames yet: a read cut
/// short by a timeout loses nothing.
struct FrameReader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limits: WireLimits,
    /// The read timeout set on the socket.
    timeout: Option<Duration>,
}

impl FrameReader {
    fn new(stream: TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            limits: WireLimits {
                max_key: wire::DEFAULT_MAX_KEY,
                max_value: wire::MAX_BULK_VALUE,
            },
            timeout: None,
        }
    }

    /// The next whole frame already read, if any.
    fn buffered(&mut self) -> Result<Option<Frame>, WireError> {
        match wire::decode(&self.buf[self.start..self.end], &self.limits) {
            Ok((frame, used)) => {
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                    // A large reply grew the buffer: give the memory back.
                    if self.buf.len() > READ_BUFFER {
                        self.buf.truncate(READ_BUFFER);
                        self.buf.shrink_to_fit();
                    }
                }
                Ok(Some(frame))
            }
            Err(WireError::Incomplete) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads once more into the buffer (making room for the frame begun in it), waiting
    /// up to `timeout` (`None`: without blocking).
    fn fill(&mut self, timeout: Option<Duration>) -> Result<(), WireError> {
        let held = self.end - self.start;
        let needed = match self.buf.get(self.start..self.start + HEADER_LEN) {
            Some(header) => HEADER_LEN + wire::body_len(header),
            None => HEADER_LEN,
        };
        if self.start + needed > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = held;
            if needed > self.buf.len() {
                self.buf.resize(needed, 0);
            }
        }
        if let Some(timeout) = timeout {
            // A timeout only shortened by more than a little is set again (a syscall).
            let stale = self
                .timeout
                .is_none_or(|set| set > timeout + Duration::from_millis(5) || set < timeout / 2);
            if stale {
                let timeout = timeout.max(Duration::from_millis(1));
                self.stream
                    .set_read_timeout(Some(timeout))
                    .map_err(WireError::Io)?;
                self.timeout = Some(timeout);
            }
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) if held == 0 => return Err(WireError::Closed),
                Ok(0) => return Err(WireError::Truncated),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WireError::Io(e)),
            }
        }
    }
}

/// True for the errors of a read that only ran out of time (or would have blocked).
fn timed_out(e: &WireError) -> bool {
    matches!(e, WireError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

struct Shared {
    inbox: Mutex<Inbox>,
    reader: Mutex<FrameReader>,
    broken: AtomicBool,
    writer: Mutex<BufWriter<TcpStream>>,
    /// Frames are in the writer's buffer, not yet flushed.
    unflushed: AtomicBool,
    /// Senders waiting for the writer lock.
    queued: AtomicUsize,
    /// The slave's address, for messages.
    peer: String,
    /// When the link was made, and how long after that it was last read (microseconds).
    born: Instant,
    last_read: AtomicU64,
}

impl Shared {
    /// Flushes frames left in the writer's buffer, if any; a failure breaks the link.
    fn flush_pending(&self) {
        if !self.unflushed.load(Ordering::SeqCst) {
            return;
        }
        let flushed = {
            let mut writer = lock(&self.writer);
            self.unflushed.store(false, Ordering::SeqCst);
            writer.flush()
        };
        if let Err(e) = flushed {
            self.fail_all(&e.to_string());
        }
    }

    /// Marks the link broken and fails every request under way on it.
    fn fail_all(&self, why: &str) {
        self.broken.store(true, Ordering::SeqCst);
        let mut inbox = lock(&self.inbox);
        for slot in inbox.slots.values_mut() {
            if let Slot::Waiting(waiter) =
                std::mem::replace(slot, Slot::Done(Err(LinkError::Broken(why.to_string()))))
                && let Some(thread) = waiter
            {
                thread.unpark();
            }
        }
    }

    fn mark_read(&self) {
        let micros = self.born.elapsed().as_micros() as u64;
        self.last_read.store(micros, Ordering::Relaxed);
    }

    fn quiet(&self) -> bool {
        let last = Duration::from_micros(self.last_read.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last) >= QUIET
    }

    /// As the leader: reads frames and hands them to their callers until the reply to
    /// `request_id` has come (it is left in its slot), `deadline` passes or the link
    /// fails. The caller clears `leading` afterwards.
    fn lead(&self, request_id: u32, deadline: Instant) {
        let mut reader = lock(&self.reader);
        let why = loop {
            match reader.buffered() {
                Ok(Some(frame)) => {
                    let mine = frame.request_id == request_id;
                    lock(&self.inbox).deliver(frame, &self.peer);
                    if mine {
                        return;
                    }
                }
                Ok(None) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    match reader.fill(Some(left)) {
                        Ok(()) => self.mark_read(),
                        Err(e) if timed_out(&e) => {}
                        Err(e) => break e,
                    }
                }
                Err(e) => break e,
            }
        };
        drop(reader);
        self.ended(&why);
    }

    /// Before a request on a quiet link: reads what the slave sent meanwhile without
    /// blocking (replies left behind by requests that timed out: dropped), and breaks the
    /// link if the slave closed it. Called with the writer lock held (the socket is
    /// non-blocking for a moment) and nobody reading.
    fn check_quiet(&self) {
        let Ok(mut reader) = self.reader.try_lock() else {
            return;
        };
        if reader.stream.set_nonblocking(true).is_err() {
            return;
        }
        let why = loop {
            match reader.buffered() {
                Ok(Some(frame)) => lock(&self.inbox).deliver(frame, &self.peer),
                Ok(None) => match reader.fill(None) {
                    Ok(()) => {}
                    Err(e) if timed_out(&e) => break None,
                    Err(e) => break Some(e),
                },
                Err(e) => break Some(e),
            }
        };
        let restored = reader.stream.set_nonblocking(false);
        drop(reader);
        self.mark_read();
        match (why, restored) {
            (Some(why), _) => self.ended(&why),
            (None, Err(e)) => self.ended(&e),
            (None, Ok(())) => {}
        }
    }

    /// The connection failed (or the slave closed it): every request on it fails.
    fn ended(&self, why: &dyn fmt::Display) {
        debug!("link to {} ended: {why}", self.peer);
        self.fail_all(&why.to_string());
    }
}

/// One multiplexed connection to a slave.
pub struct SlaveLink {
    stream: TcpStream,
    shared: Arc<Shared>,
    next_id: AtomicU32,
}

/// A reply on its way.
pub struct PendingReply {
    request_id: u32,
    shared: Arc<Shared>,
}

impl PendingReply {
    /// Sends what is left in the link's buffer (this request, if it was deferred), so
    /// that a caller about to wait on several links has them all under way first.
    pub fn flush(&self) {
        self.shared.flush_pending();
    }

    /// Waits for the reply: reads the link itself when nobody else does (see the module
    /// doc), sleeps otherwise.
    ///
    /// # Errors
    /// `Timeout` after `timeout`; `Broken` if the connection fails first.
    pub fn wait(&self, timeout: Duration) -> Result<Frame, LinkError> {
        // A deferred request (or one behind it) may still sit in the writer's buffer.
        self.shared.flush_pending();
        let deadline = Instant::now() + timeout;
        let id = self.request_id;
        let mut inbox = lock(&self.shared.inbox);
        let result = loop {
            if matches!(inbox.slots.get(&id), Some(Slot::Done(_))) {
                if let Some(Slot::Done(result)) = inbox.slots.remove(&id) {
                    break result;
                }
            }
            if !matches!(inbox.slots.get(&id), Some(Slot::Waiting(_))) {
                break Err(LinkError::Broken("the reply was already taken".into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                inbox.slots.remove(&id);
                break Err(LinkError::Timeout);
            }
            if inbox.leading {
                inbox
                    .slots
                    .insert(id, Slot::Waiting(Some(thread::current())));
                inbox.sleepers += 1;
                drop(inbox);
                thread::park_timeout(left);
                inbox = lock(&self.shared.inbox);
                inbox.sleepers -= 1;
            } else {
                inbox.slots.insert(id, Slot::Waiting(None));
                inbox.leading = true;
                drop(inbox);
                // Returns once our reply is in its slot, the deadline has passed or the
                // link has failed: the next turn of the loop returns.
                self.shared.lead(id, deadline);
                inbox = lock(&self.shared.inbox);
                inbox.leading = false;
            }
        };
        // Whoever leaves while nobody reads (the leader, or a waiter woken to lead whose
        // reply had come meanwhile) hands the reading on, if anyone sleeps.
        if !inbox.leading {
            inbox.promote();
        }
        result
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        // Not waited for (or waited for in vain): a reply that still comes is dropped.
        lock(&self.shared.inbox).slots.remove(&self.request_id);
    }
}

impl SlaveLink {
    /// Connects to a slave.
    ///
    /// # Errors
    /// `Connect` when the slave cannot be reached or refuses the secret.
    pub fn connect(
        addr: &str,
        timeout: Duration,
        secret: Option<&[u8]>,
    ) -> Result<SlaveLink, LinkError> {
        let connect = |e: io::Error| LinkError::Connect(format!("{addr}: {e}"));
        let target: SocketAddr = addr
            .to_socket_addrs()
            .map_err(connect)?
            .next()
            .ok_or_else(|| LinkError::Connect(format!("{addr}: no address")))?;
        let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        if let Some(secret) = secret {
            authenticate(&mut stream, secret, timeout).map_err(|why| match why {
                Refused::Io(e) => connect(e),
                Refused::Status(status) => LinkError::Connect(format!(
                    "{addr}: the slave refused the cluster secret ({}): check --secret-file on both",
                    status.name()
                )),
            })?;
        }
        let read_half = stream.try_clone().map_err(connect)?;
        let write_half = stream.try_clone().map_err(connect)?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            reader: Mutex::new(FrameReader::new(read_half)),
            broken: AtomicBool::new(false),
            writer: Mutex::new(BufWriter::with_capacity(64 * 1024, write_half)),
            unflushed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            peer: addr.to_string(),
            born: Instant::now(),
            last_read: AtomicU64::new(0),
        });
        Ok(SlaveLink {
            stream,
            shared,
            next_id: AtomicU32::new(1),
        })
    }

    /// True once the connection has failed; the link must be replaced.
    pub fn is_broken(&self) -> bool {
        self.shared.broken.load(Ordering::SeqCst)
    }

    /// Sends a request with the link's own request id and table `table` (the frame is
    /// written from where it is, not copied) and returns a handle to wait for the reply
    /// with. With `deferred`, the frame may stay in the writer's buffer until someone
    /// waits on the link (or another send flushes it), so that a connection's pipelined
    /// requests go out together.
    ///
    /// # Errors
    /// `Broken` when the connection has failed (found out now if the link was quiet) or
    /// the write fails.
    pub fn send(
        &self,
        frame: &Frame,
        table: TableSel,
        deferred: bool,
    ) -> Result<PendingReply, LinkError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = &self.shared;
        let idle = {
            let mut inbox = lock(&shared.inbox);
            let idle = inbox.slots.is_empty() && !inbox.leading;
            inbox.slots.insert(request_id, Slot::Waiting(None));
            idle
        };
        let pending = PendingReply {
            request_id,
            shared: Arc::clone(shared),
        };
        let written = {
            shared.queued.fetch_add(1, Ordering::SeqCst);
            let mut writer = lock(&shared.writer);
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            if idle && shared.quiet() {
                shared.check_quiet();
            }
            // Marked broken before the requests under way are failed: either that saw
            // our slot or we see the flag here.
            if self.is_broken() {
                return Err(LinkError::Broken("connection already failed".into()));
            }
            frame
                .write_as(request_id, table, &mut *writer)
                .and_then(|()| {
                    // The last of the senders queued together flushes for all of them.
                    if deferred || shared.queued.load(Ordering::SeqCst) > 0 {
                        shared.unflushed.store(true, Ordering::SeqCst);
                        Ok(())
                    } else {
                        shared.unflushed.store(false, Ordering::SeqCst);
                        writer.flush()
                    }
                })
        };
        if let Err(e) = written {
            drop(pending);
            shared.fail_all(&e.to_string());
            let _ = self.stream.shutdown(NetShutdown::Both);
            return Err(LinkError::Broken(e.to_string()));
        }
        Ok(pending)
    }

    /// Closes the connection: a caller reading it stops, and every request under way
    /// fails.
    pub fn close(&self) {
        let _ = self.stream.shutdown(NetShutdown::Both);
        self.shared.fail_all("the link was closed");
    }
}

impl Drop for SlaveLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Why a slave did not take the cluster secret.
enum Refused {
    /// The connection failed (or the reply was not a frame).
    Io(io::Error),
    /// The slave answered with this status.
    Status(crate::wire::Status),
}

/// Presents the cluster secret as the connection's first frame and waits for OK.
fn authenticate(stream: &mut TcpStream, secret: &[u8], timeout: Duration) -> Result<(), Refused> {
    let frame = Frame::request(crate::wire::Opcode::Auth, 0, Vec::new(), secret.to_vec());
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| frame.write_to(stream))
        .and_then(|()| stream.flush())
        .map_err(Refused::Io)?;
    let reply = wire::read_frame(stream, &WireLimits::default())
        .map_err(|e| Refused::Io(io::Error::other(e.to_string())))?;
    stream.set_read_timeout(None).map_err(Refused::Io)?;
    match reply.status {
        crate::wire::Status::Ok => Ok(()),
        status => Err(Refused::Status(status)),
    }
}

/// A slave as the coordinator reaches it: its id, address, and a few links.
pub struct SlaveHandle {
    /// The slave's id.
    pub id: SlaveId,
    /// The address it serves on.
    pub addr: String,
    slots: Vec<Mutex<Option<Arc<SlaveLink>>>>,
    next_slot: AtomicUsize,
    timeout: Duration,
    secret: Option<Arc<Vec<u8>>>,
}

impl SlaveHandle {
    /// A handle with `links` connection slots, connected lazily; each connection presents
    /// `secret` first, if there is one.
    pub fn new(
        id: SlaveId,
        addr: String,
        links: usize,
        timeout: Duration,
        secret: Option<Arc<Vec<u8>>>,
    ) -> SlaveHandle {
        SlaveHandle {
            id,
            addr,
            slots: (0..links.max(1)).map(|_| Mutex::new(None)).collect(),
            next_slot: AtomicUsize::new(0),
            timeout,
            secret,
        }
    }

    /// The reply timeout for this slave.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A working link, connecting one if its slot is empty or broken. The connection is
    /// made without holding the slot's lock.
    /// `pin` picks the slot; `None`, the next in turn.
    fn link(&self, pin: Option<u64>) -> Result<Arc<SlaveLink>, LinkError> {
        let turn = || self.next_slot.fetch_add(1, Ordering::Relaxed) as u64;
        let index = (pin.unwrap_or_else(turn) % self.slots.len() as u64) as usize;
        let slot = &self.slots[index];
        if let Some(link) = lock(slot).as_ref()
            && !link.is_broken()
        {
            return Ok(Arc::clone(link));
        }
        let fresh = Arc::new(SlaveLink::connect(
            &self.addr,
            self.timeout,
            self.secret.as_deref().map(Vec::as_slice),
        )?);
        let mut guard = lock(slot);
        match guard.as_ref() {
            // Someone else reconnected meanwhile: use theirs, drop ours.
            Some(link) if !link.is_broken() => Ok(Arc::clone(link)),
            _ => {
                if let Some(old) = guard.replace(Arc::clone(&fresh)) {
                    drop(guard);
                    old.close();
                }
                Ok(fresh)
            }
        }
    }

    /// Sends a request on one of the links.
    ///
    /// # Errors
    /// See [`SlaveLink::send`] and [`SlaveLink::connect`].
    pub fn send(&self, frame: Frame) -> Result<PendingReply, LinkError> {
        self.send_as(&frame, frame.table, false)
    }

    /// Like [`SlaveHandle::send`], but the frame may wait in the link's buffer until a
    /// reply is waited for: for requests begun in a pipeline, so they go out together.
    ///
    /// # Errors
    /// See [`SlaveHandle::send`].
    pub fn send_deferred(&self, frame: Frame) -> Result<PendingReply, LinkError> {
        self.send_as(&frame, frame.table, true)
    }

    /// Sends `frame` as a request to table `table` (`deferred` as in
    /// [`SlaveHandle::send_deferred`]), writing it from where it is: the one frame of a
    /// write goes to each of its slaves, and again on a retry, without a copy.
    ///
    /// # Errors
    /// See [`SlaveHandle::send`].
    pub fn send_as(
        &self,
        frame: &Frame,
        table: TableSel,
        deferred: bool,
    ) -> Result<PendingReply, LinkError> {
        self.send_on(None, frame, table, deferred)
    }

    /// Like [`SlaveHandle::send_as`], on the link that `pin` picks: requests with the same
    /// `pin` travel one connection, so the slave serves them in the order sent (a
    /// primary's forwards of one key, for example).
    ///
    /// # Errors
    /// See [`SlaveHandle::send`].
    pub fn send_pinned(
        &self,
        pin: u64,
        frame: &Frame,
        table: TableSel,
        deferred: bool,
    ) -> Result<PendingReply, LinkError> {
        self.send_on(Some(pin), frame, table, deferred)
    }

    fn send_on(
        &self,
        pin: Option<u64>,
        frame: &Frame,
        table: TableSel,
        deferred: bool,
    ) -> Result<PendingReply, LinkError> {
        let link = self.link(pin)?;
        match link.send(frame, table, deferred) {
            // A link that broke while idle (the slave restarted) is replaced once.
            Err(LinkError::Broken(_)) => self.link(pin)?.send(frame, table, deferred),
            other => other,
        }
    }

    /// Sends a request and waits for its reply.
    ///
    /// # Errors
    /// See [`SlaveHandle::send`] and [`PendingReply::wait`].
    pub fn call(&self, frame: Frame) -> Result<Frame, LinkError> {
        self.send(frame)?.wait(self.timeout)
    }

    /// Sends one request on a connection of its own, waits up to `timeout`, and closes
    /// it. For long operations (transfers), which would hold up every request queued
    /// behind them on a shared link: the slave serves one connection's requests in order.
    ///
    /// # Errors
    /// See [`SlaveLink::connect`] and [`PendingReply::wait`].
    pub fn call_alone(&self, frame: Frame, timeout: Duration) -> Result<Frame, LinkError> {
        let link = SlaveLink::connect(
            &self.addr,
            self.timeout,
            self.secret.as_deref().map(Vec::as_slice),
        )?;
        let result = link
            .send(&frame, frame.table, false)
            .and_then(|pending| pending.wait(timeout));
        link.close();
        result
    }

    /// Closes every link (callers reading one stop; its requests fail).
    pub fn close(&self) {
        for slot in &self.slots {
            let link = lock(slot).take();
            if let Some(link) = link {
                link.close();
            }
        }
    }
}

impl Drop for SlaveHandle {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Opcode, Status};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A stand-in slave on loopback: accepts `connections` connections one after the
    /// other and hands each to `serve`; says on `closed` when each has been closed.
    fn fake_slave(
        connections: usize,
        serve: impl Fn(TcpStream) + Send + 'static,
    ) -> (String, mpsc::Receiver<()>, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        let (closed, on_close) = mpsc::channel();
        let server = thread::spawn(move || {
            for _ in 0..connections {
                let (stream, _) = listener.accept().expect("accept");
                serve(stream);
                let _ = closed.send(());
            }
        });
        (addr, on_close, server)
    }

    fn request(key: &str) -> Frame {
        Frame::request(Opcode::SlaveGet, 0, key.as_bytes().to_vec(), Vec::new())
    }

    /// Answers `frame` with its own key as the value.
    fn echo(stream: &mut TcpStream, frame: &Frame) {
        let mut reply = frame.reply(Status::Ok);
        reply.value = frame.key.clone();
        reply.write_to(stream).expect("write reply");
    }

    #[test]
    fn replies_in_any_order_reach_the_callers_that_wait_for_them() {
        const CALLERS: usize = 16;
        let (addr, _closed, server) = fake_slave(1, |mut stream| {
            // Every caller is waiting before the first reply goes out; the replies go out
            // first, last, second, second to last...: whoever reads for the others gets
            // its own early on and must hand the reading on.
            let mut frames: std::collections::VecDeque<Frame> = (0..CALLERS)
                .map(|_| wire::read_frame(&mut stream, &WireLimits::default()).expect("frame"))
                .collect();
            while let Some(frame) = frames.pop_front() {
                echo(&mut stream, &frame);
                if let Some(frame) = frames.pop_back() {
                    echo(&mut stream, &frame);
                }
            }
        });
        let link = Arc::new(SlaveLink::connect(&addr, Duration::from_secs(5), None).expect("link"));
        let callers: Vec<_> = (0..CALLERS)
            .map(|n| {
                let link = Arc::clone(&link);
                thread::spawn(move || {
                    let key = format!("caller-{n}");
                    let pending = link.send(&request(&key), TableSel::Own, false)?;
                    pending
                        .wait(Duration::from_secs(10))
                        .map(|reply| (key, reply))
                })
            })
            .collect();
        for caller in callers {
            let (key, reply) = caller.join().expect("caller").expect("reply");
            assert_eq!(reply.value, key.as_bytes(), "a caller got another's reply");
        }
        server.join().expect("server");
    }

    #[test]
    fn a_caller_that_gives_up_leaves_the_reading_to_the_others() {
        let (addr, _closed, server) = fake_slave(1, |mut stream| {
            let first = wire::read_frame(&mut stream, &WireLimits::default()).expect("frame");
            let second = wire::read_frame(&mut stream, &WireLimits::default()).expect("frame");
            // "never" gets no answer; "later" is answered after its caller's patience
            // with "never" has run out.
            let later = if first.key == b"later" { first } else { second };
            thread::sleep(Duration::from_millis(300));
            echo(&mut stream, &later);
            // Hold the connection until the client is done with it.
            let _ = wire::read_frame(&mut stream, &WireLimits::default());
        });
        let link = Arc::new(SlaveLink::connect(&addr, Duration::from_secs(5), None).expect("link"));
        let impatient = {
            let link = Arc::clone(&link);
            thread::spawn(move || {
                let pending = link.send(&request("never"), TableSel::Own, false)?;
                pending.wait(Duration::from_millis(100))
            })
        };
        let patient = link
            .send(&request("later"), TableSel::Own, false)
            .expect("send");
        let reply = patient.wait(Duration::from_secs(10)).expect("the reply");
        assert_eq!(reply.value, b"later");
        assert_eq!(impatient.join().expect("thread"), Err(LinkError::Timeout));
        link.close();
        server.join().expect("server");
    }

    #[test]
    fn a_link_closed_while_quiet_is_replaced_before_the_next_request() {
        // Two connections in turn, each answering one request and closing: a slave that
        // restarted while nobody used the link.
        let (addr, closed, server) = fake_slave(2, |mut stream| {
            let frame = wire::read_frame(&mut stream, &WireLimits::default()).expect("frame");
            echo(&mut stream, &frame);
        });
        let handle = SlaveHandle::new(SlaveId(1), addr, 1, Duration::from_secs(5), None);
        let first = handle.call(request("one")).expect("first call");
        assert_eq!(first.value, b"one");
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect("the first connection closed");
        // The link must have been quiet for a while before it is checked.
        thread::sleep(QUIET * 5);
        let second = handle
            .call(request("two"))
            .expect("second call, on a new link");
        assert_eq!(second.value, b"two");
        server.join().expect("server");
    }
}
