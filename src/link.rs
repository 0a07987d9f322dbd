//! Persistent, multiplexed connections to one slave: the coordinator's to every slave,
//! and a slave's to the replicas of its direct writes (`Forward`).
//!
//! A [`SlaveLink`] is one TCP connection that carries many requests at once: callers write
//! a frame with a fresh request id (under the writer lock) and wait on their own channel.
//! Frames queued together go out in one write: a sender that sees others waiting for the
//! writer leaves the flush to the last of them, and a *deferred* send (a pipelined request)
//! leaves it to the first wait on the link; the link's reader thread (`link-<id>-<n>`) matches each reply to its
//! caller by request id. A [`SlaveHandle`] keeps a few links to one slave and reconnects a
//! broken one on next use; its links' reader threads are named `<prefix>-<slave id>-<n>`
//! (`link` on the coordinator, `fwd` on a slave).
//!
//! Threads: each link owns its reader thread and joins it in [`SlaveLink::close`] (also
//! called on drop). Locks: `writer` and `pending` are never held together, and neither is
//! held while waiting for a reply. The writer lock is held across one frame's write, which
//! is the point of it (frames must not interleave); slaves read continuously, so it is short.

use crate::sync::lock;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::debug;

use crate::ring::SlaveId;
use crate::wire::{self, Frame, TableSel, WireLimits};

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

type ReplySender = SyncSender<Result<Frame, LinkError>>;

struct Shared {
    pending: Mutex<HashMap<u32, ReplySender>>,
    broken: AtomicBool,
    writer: Mutex<BufWriter<TcpStream>>,
    /// Frames are in the writer's buffer, not yet flushed.
    unflushed: AtomicBool,
    /// Senders waiting for the writer lock.
    queued: AtomicUsize,
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
}

impl Shared {
    fn fail_all(&self, why: &str) {
        self.broken.store(true, Ordering::SeqCst);
        let pending: Vec<ReplySender> = lock(&self.pending).drain().map(|(_, tx)| tx).collect();
        for tx in pending {
            let _ = tx.try_send(Err(LinkError::Broken(why.to_string())));
        }
    }
}

/// One multiplexed connection to a slave.
pub struct SlaveLink {
    stream: TcpStream,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    reader: Mutex<Option<JoinHandle<()>>>,
}

/// A reply on its way.
pub struct PendingReply {
    rx: Receiver<Result<Frame, LinkError>>,
    request_id: u32,
    shared: Arc<Shared>,
}

impl PendingReply {
    /// Sends what is left in the link's buffer (this request, if it was deferred), so
    /// that a caller about to wait on several links has them all under way first.
    pub fn flush(&self) {
        self.shared.flush_pending();
    }

    /// Waits for the reply.
    ///
    /// # Errors
    /// `Timeout` after `timeout`; `Broken` if the connection fails first.
    pub fn wait(&self, timeout: Duration) -> Result<Frame, LinkError> {
        // A deferred request (or one behind it) may still sit in the writer's buffer.
        self.shared.flush_pending();
        match self.rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.shared.pending).remove(&self.request_id);
                Err(LinkError::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(LinkError::Broken("the reader stopped".into()))
            }
        }
    }
}

impl SlaveLink {
    /// Connects to a slave and starts the reader thread named `name`.
    ///
    /// # Errors
    /// `Connect` when the slave cannot be reached or the thread cannot start.
    pub fn connect(
        addr: &str,
        name: String,
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
            pending: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
            writer: Mutex::new(BufWriter::with_capacity(64 * 1024, write_half)),
            unflushed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        });
        let reader_shared = Arc::clone(&shared);
        let peer = addr.to_string();
        let reader = thread::Builder::new()
            .name(name)
            .spawn(move || read_replies(read_half, &reader_shared, &peer))
            .map_err(connect)?;
        Ok(SlaveLink {
            stream,
            shared,
            next_id: AtomicU32::new(1),
            reader: Mutex::new(Some(reader)),
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
    /// `Broken` when the connection has failed or the write fails.
    pub fn send(
        &self,
        frame: &Frame,
        table: TableSel,
        deferred: bool,
    ) -> Result<PendingReply, LinkError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        lock(&self.shared.pending).insert(request_id, tx);
        // The reader marks the link broken before failing the pending map, so either it
        // saw our entry or we see the flag here.
        if self.is_broken() {
            lock(&self.shared.pending).remove(&request_id);
            return Err(LinkError::Broken("connection already failed".into()));
        }
        let written = {
            let shared = &self.shared;
            shared.queued.fetch_add(1, Ordering::SeqCst);
            let mut writer = lock(&shared.writer);
            shared.queued.fetch_sub(1, Ordering::SeqCst);
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
            lock(&self.shared.pending).remove(&request_id);
            self.shared.fail_all(&e.to_string());
            let _ = self.stream.shutdown(NetShutdown::Both);
            return Err(LinkError::Broken(e.to_string()));
        }
        Ok(PendingReply {
            rx,
            request_id,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Closes the connection and joins the reader thread.
    pub fn close(&self) {
        let _ = self.stream.shutdown(NetShutdown::Both);
        let reader = lock(&self.reader).take();
        if let Some(reader) = reader {
            let _ = reader.join();
        }
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

/// The reader thread: hands each reply to the caller waiting for its request id.
fn read_replies(stream: TcpStream, shared: &Shared, peer: &str) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let limits = WireLimits {
        max_key: wire::DEFAULT_MAX_KEY,
        max_value: wire::MAX_BULK_VALUE,
    };
    let why = loop {
        match wire::read_frame(&mut reader, &limits) {
            Ok(frame) => {
                let waiter = lock(&shared.pending).remove(&frame.request_id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.try_send(Ok(frame));
                    }
                    None => debug!(
                        "{peer}: reply for request {} nobody waits for (timed out?)",
                        frame.request_id
                    ),
                }
            }
            Err(e) => break e.to_string(),
        }
    };
    debug!("link to {peer} ended: {why}");
    shared.fail_all(&why);
}

/// A slave as the coordinator reaches it: its id, address, and a few links.
pub struct SlaveHandle {
    /// The slave's id.
    pub id: SlaveId,
    /// The address it serves on.
    pub addr: String,
    slots: Vec<Mutex<Option<Arc<SlaveLink>>>>,
    next_slot: AtomicUsize,
    serial: AtomicUsize,
    timeout: Duration,
    secret: Option<Arc<Vec<u8>>>,
    /// The first part of the reader threads' names.
    prefix: &'static str,
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
            serial: AtomicUsize::new(0),
            timeout,
            secret,
            prefix: "link",
        }
    }

    /// The same handle, its reader threads named `<prefix>-<id>-<n>`.
    #[must_use]
    pub fn named(mut self, prefix: &'static str) -> SlaveHandle {
        self.prefix = prefix;
        self
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
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{serial}", self.prefix, self.id);
        let fresh = Arc::new(SlaveLink::connect(
            &self.addr,
            name,
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
            format!("move-{}", self.id),
            self.timeout,
            self.secret.as_deref().map(Vec::as_slice),
        )?;
        let result = link
            .send(&frame, frame.table, false)
            .and_then(|pending| pending.wait(timeout));
        link.close();
        result
    }

    /// Closes every link and joins their reader threads.
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
