//! The coordination server: it keeps the ring, accepts clients (binary protocol and
//! memcached text on one port, told apart by the first byte) and slave registrations, and
//! routes every request to the key's primary and replica.
//!
//! Threads, and who joins them:
//! - `coord-accept`: the accept loop, joined by [`Running::wait`];
//! - `conn-<n>`: one per client or slave connection, joined by the accept loop;
//! - `hb-listen`: receives UDP heartbeats and answers them, joined by [`Running::wait`];
//! - `fd-timer`: the failure detector: declares dead a slave silent for longer than
//!   `--failure-timeout-ms`, joined by [`Running::wait`];
//! - `recovery`: moves data when the ring changes (`replicate()` and joins), one event at
//!   a time; ends when [`Running::wait`] closes its channel, and is joined there;
//! - `link-<id>-<n>`: one reader per connection to a slave, joined when its slave handle
//!   is closed (at re-registration, removal, or shutdown in [`Running::wait`]).
//!
//! Lock order: membership, then nothing. The router and sessions take no other lock, and
//! no lock is held across socket I/O.

pub mod link;
mod mcbin_session;
pub mod membership;
mod meta_exec;
pub mod persist;
pub mod recovery;
pub mod router;
mod stats;
mod text_session;
pub mod views;

use std::fmt;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::client::parse_slave_counts;
use crate::config::CoordinatorConfig;
use crate::request::{Failure, Outcome, Request};
use crate::ring::SlaveId;
use crate::server;
use crate::shutdown::Shutdown;
use crate::wal::DirLock;
use crate::wire::{self, Frame, Heartbeat, HeartbeatKind, Opcode, Status, WireLimits};
use membership::{Heard, Membership};
use router::Router;

/// Why the coordinator could not start or run.
#[derive(Debug)]
pub enum CoordinatorError {
    /// The data directory cannot be used.
    DataDir(String),
    /// A listening address cannot be bound.
    Bind(String),
    /// A thread could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for CoordinatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoordinatorError::DataDir(why) | CoordinatorError::Bind(why) => write!(f, "{why}"),
            CoordinatorError::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for CoordinatorError {}

/// A binary request under way on a connection.
enum FramePending<'a> {
    /// Answered already.
    Ready(Frame),
    /// With the router: the reply's header, and the request under way.
    Routed {
        reply: Frame,
        pending: router::Pending<'a>,
        /// The key a GET reads.
        read: Option<Vec<u8>>,
    },
}

/// Everything the coordinator's threads share.
pub struct Coordinator {
    membership: Arc<Membership>,
    router: Router,
    heartbeat_addr: SocketAddr,
    server_limits: crate::config::ServerLimits,
    security: crate::config::Security,
    limits: WireLimits,
    text_limits: crate::text::TextLimits,
    started: Instant,
    active: Arc<AtomicUsize>,
    total_connections: AtomicU64,
}

/// A started coordinator: its bound addresses and the threads [`Running::wait`] joins.
pub struct Running {
    /// The TCP address actually bound.
    pub addr: SocketAddr,
    /// The UDP heartbeat address actually bound.
    pub heartbeat_addr: SocketAddr,
    acceptor: thread::JoinHandle<()>,
    hb_listener: thread::JoinHandle<()>,
    fd_timer: thread::JoinHandle<()>,
    recovery: thread::JoinHandle<()>,
    membership: Arc<Membership>,
    _lock: DirLock,
}

impl Running {
    /// Waits until the shutdown has stopped every thread, then closes the slave links.
    pub fn wait(self) {
        let _ = self.acceptor.join();
        let _ = self.hb_listener.join();
        let _ = self.fd_timer.join();
        // The recovery thread ends when its channel closes; a move under way stops at the
        // next slave call, whose links are closed below.
        self.membership.close_events();
        self.membership.close_all();
        let _ = self.recovery.join();
        info!("coordinator on {} stopped", self.addr);
    }
}

/// Runs a coordinator until `shutdown` is triggered. See [`start`].
///
/// # Errors
/// See [`start`].
pub fn run(config: CoordinatorConfig, shutdown: Shutdown) -> Result<(), CoordinatorError> {
    start(config, shutdown).map(Running::wait)
}

/// Starts a coordinator: binds both addresses, prints `listening on ADDR` and
/// `heartbeat on ADDR` to stderr, and serves on background threads (`coord-accept`,
/// `hb-listen`) until `shutdown` is triggered.
///
/// # Errors
/// When the data dir is unusable, an address cannot be bound, or a thread cannot start.
pub fn start(config: CoordinatorConfig, shutdown: Shutdown) -> Result<Running, CoordinatorError> {
    server::prepare_data_dir(&config.data_dir).map_err(CoordinatorError::DataDir)?;
    // Protected mode is checked before anything is bound.
    for addr in
        server::resolve(&config.listen, "coordinator address").map_err(CoordinatorError::Bind)?
    {
        config
            .security
            .check_bind(addr, "--listen")
            .map_err(CoordinatorError::Bind)?;
    }
    let listener = server::bind(&config.listen, "coordinator address", "--listen")
        .map_err(CoordinatorError::Bind)?;
    let heartbeat = UdpSocket::bind(&config.heartbeat).map_err(|e| {
        CoordinatorError::Bind(server::bind_message(
            &config.heartbeat,
            "heartbeat address",
            "--heartbeat",
            &e,
        ))
    })?;
    let addr = listener.local_addr().map_err(CoordinatorError::Thread)?;
    let heartbeat_addr = heartbeat.local_addr().map_err(CoordinatorError::Thread)?;
    shutdown.register_listener(addr);

    let lock =
        DirLock::acquire(&config.data_dir).map_err(|e| CoordinatorError::DataDir(e.to_string()))?;
    let membership = Arc::new(
        Membership::persistent(
            &config.data_dir,
            config.links_per_slave,
            config.slave_timeout,
            config.failure_timeout,
            config.security.secret.clone(),
        )
        .map_err(CoordinatorError::DataDir)?,
    );
    let (events, events_rx) = mpsc::channel();
    membership.set_events(events);
    let coordinator = Arc::new(Coordinator {
        router: Router::new(
            Arc::clone(&membership),
            config.limits.max_value_bytes,
            config.slave_timeout * 2,
        ),
        membership: Arc::clone(&membership),
        heartbeat_addr,
        server_limits: config.limits,
        security: config.security.clone(),
        limits: WireLimits {
            max_key: config.limits.max_key_bytes,
            max_value: config.limits.max_value_bytes,
        },
        text_limits: crate::text::TextLimits {
            max_value_bytes: config.limits.max_value_bytes,
            ..crate::text::TextLimits::default()
        },
        started: Instant::now(),
        active: Arc::new(AtomicUsize::new(0)),
        total_connections: AtomicU64::new(0),
    });

    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|e| {
                shutdown.trigger();
                CoordinatorError::Thread(e)
            })
    };
    let recovery_membership = Arc::clone(&membership);
    let recovery = spawn(
        "recovery",
        Box::new(move || recovery::run(&recovery_membership, &events_rx)),
    )?;
    let (hb_shutdown, hb_membership) = (shutdown.clone(), Arc::clone(&membership));
    let hb_listener = spawn(
        "hb-listen",
        Box::new(move || listen_heartbeats(&heartbeat, &hb_membership, &hb_shutdown)),
    )?;
    let (fd_shutdown, fd_membership) = (shutdown.clone(), Arc::clone(&membership));
    let (interval, timeout) = (config.heartbeat_interval, config.failure_timeout);
    let fd_timer = spawn(
        "fd-timer",
        Box::new(move || detect_failures(&fd_membership, interval, timeout, &fd_shutdown)),
    )?;

    let handler = Arc::clone(&coordinator);
    let limits = config.limits;
    let accept_shutdown = shutdown.clone();
    let acceptor = thread::Builder::new()
        .name("coord-accept".into())
        .spawn(move || {
            server::accept_loop(
                listener,
                &accept_shutdown,
                "conn",
                limits,
                Arc::clone(&handler.active),
                move |stream, peer| handler.serve_connection(stream, peer),
            );
            info!("coordinator stopped accepting");
        });
    let acceptor = match acceptor {
        Ok(acceptor) => acceptor,
        Err(e) => {
            shutdown.trigger();
            let _ = hb_listener.join();
            let _ = fd_timer.join();
            membership.close_events();
            let _ = recovery.join();
            return Err(CoordinatorError::Thread(e));
        }
    };
    info!(
        "piazza-coordinator {} on {addr} (heartbeats on {heartbeat_addr}, data in {})",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );
    eprintln!("listening on {addr}");
    eprintln!("heartbeat on {heartbeat_addr}");
    Ok(Running {
        addr,
        heartbeat_addr,
        acceptor,
        hb_listener,
        fd_timer,
        recovery,
        membership,
        _lock: lock,
    })
}

/// Receives heartbeat datagrams until shutdown: records each known slave's, and tells an
/// unknown or stale one to register again.
fn listen_heartbeats(socket: &UdpSocket, membership: &Membership, shutdown: &Shutdown) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 64];
    while !shutdown.is_triggered() {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let Some(beat) = Heartbeat::decode(&buf[..n]) else {
                    debug!("ignored a {n}-byte datagram from {from}: not a heartbeat");
                    continue;
                };
                if beat.kind != HeartbeatKind::Alive {
                    continue;
                }
                let kind = match membership.heard(SlaveId(beat.id), beat.session) {
                    Heard::Known => HeartbeatKind::Ack,
                    Heard::Unknown => {
                        debug!(
                            "heartbeat from unknown slave {} (session {:x}) at {from}",
                            beat.id, beat.session
                        );
                        HeartbeatKind::Rejoin
                    }
                };
                let reply = Heartbeat { kind, ..beat };
                let _ = socket.send_to(&reply.encode(), from);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                warn!("heartbeat socket: {e}");
                if shutdown.wait_timeout(Duration::from_millis(200)) {
                    break;
                }
            }
        }
    }
}

/// The failure detector (the original's `timer()`, with last-seen times instead of
/// counters reset every 20 s): every half interval, declares dead each slave not heard
/// from for `timeout`.
fn detect_failures(
    membership: &Membership,
    interval: Duration,
    timeout: Duration,
    shutdown: &Shutdown,
) {
    let tick = (interval / 2).max(Duration::from_millis(10));
    while !shutdown.wait_timeout(tick) {
        membership.end_warmup_if_due();
        for (id, silent) in membership.silent_for(timeout) {
            membership.suspect(id, &format!("no heartbeat for {} ms", silent.as_millis()));
        }
    }
}

impl Coordinator {
    /// Picks the protocol from the first byte and serves the connection.
    fn serve_connection(&self, stream: TcpStream, peer: SocketAddr) {
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        let mut first = [0u8; 1];
        match stream.peek(&mut first) {
            Ok(1) if first[0] == wire::MAGIC => {
                let guard = server::Guard {
                    secret: self.security.secret.as_deref(),
                    needs_auth: if self.security.require_auth {
                        |opcode| opcode != Opcode::Ping
                    } else {
                        |opcode| matches!(opcode, Opcode::Register | Opcode::Deregister)
                    },
                };
                // A write of a key waits for a read of it under way (a read whose
                // primary fails is asked again of the replica when it is answered, and
                // must not see a write sent after it).
                let waits =
                    |frame: &Frame, under_way: &mut dyn Iterator<Item = &FramePending<'_>>| {
                        let write =
                            matches!(frame.opcode, Opcode::Put | Opcode::Delete | Opcode::Update);
                        let mut under_way = under_way;
                        write
                            && Iterator::any(
                                &mut under_way,
                                |pending| matches!(pending, FramePending::Routed { read: Some(key), .. } if *key == frame.key),
                            )
                    };
                server::serve_frames_ordered(
                    stream,
                    peer,
                    &self.server_limits,
                    self.limits,
                    guard,
                    waits,
                    |frame| self.begin_frame(frame),
                    |pending| self.finish_frame(pending),
                );
            }
            Ok(1) if first[0] == crate::mcbin::MAGIC_REQUEST => {
                mcbin_session::serve(self, stream, peer)
            }
            Ok(1) => text_session::serve(self, stream, peer),
            Ok(_) => {}
            Err(e) => debug!("{peer}: closed before the first byte: {e}"),
        }
    }

    /// Starts serving one binary frame: a request for the router is begun (left under
    /// way for reads and plain writes); anything else is answered at once.
    fn begin_frame(&self, mut frame: Frame) -> FramePending<'_> {
        // Key and value move into the request: no copy on the request path.
        let request = match frame.opcode {
            Opcode::Get => Request::Get {
                key: std::mem::take(&mut frame.key),
            },
            Opcode::Put => Request::Put {
                key: std::mem::take(&mut frame.key),
                value: std::mem::take(&mut frame.value),
                flags: frame.flags,
            },
            Opcode::Delete => Request::Delete {
                key: std::mem::take(&mut frame.key),
                cas: 0,
            },
            Opcode::Update => match crate::update::Update::decode(&frame.value) {
                Some(update) => update.into_request(std::mem::take(&mut frame.key)),
                None => {
                    return FramePending::Ready(
                        frame.error_reply(Status::Invalid, "malformed operation"),
                    );
                }
            },
            Opcode::Flush => Request::FlushAll {
                delay: u32::try_from(frame.arg).unwrap_or(u32::MAX),
            },
            Opcode::MultiGet => return FramePending::Ready(self.multi_get(&frame)),
            Opcode::Ping => return FramePending::Ready(frame.reply(Status::Ok)),
            Opcode::RingGet => {
                let view = self.membership.view();
                let mut reply = frame.reply(Status::Ok);
                reply.arg = view.epoch;
                reply.flags = view.flags();
                reply.value = view.encode_members();
                return FramePending::Ready(reply);
            }
            Opcode::Status => {
                let mut reply = frame.reply(Status::Ok);
                reply.value = self.status_text().into_bytes();
                return FramePending::Ready(reply);
            }
            Opcode::Register => return FramePending::Ready(self.register(&frame)),
            Opcode::Deregister => return FramePending::Ready(self.deregister(&frame)),
            _ => {
                return FramePending::Ready(frame.error_reply(
                    Status::Invalid,
                    "this is the coordinator: slave operations go to a slave",
                ));
            }
        };
        let read = match &request {
            Request::Get { key } => Some(key.clone()),
            _ => None,
        };
        FramePending::Routed {
            reply: frame.reply(Status::Ok),
            pending: self.router.begin(request),
            read,
        }
    }

    /// The reply to a frame begun with [`Coordinator::begin_frame`].
    fn finish_frame(&self, pending: FramePending<'_>) -> Frame {
        let (mut reply, pending) = match pending {
            FramePending::Ready(reply) => return reply,
            FramePending::Routed { reply, pending, .. } => (reply, pending),
        };
        match self.router.finish(pending) {
            Outcome::Found(found) => {
                reply.value = found.value;
                reply.flags = found.flags;
                reply.arg = found.version;
            }
            Outcome::NotFound => reply.status = Status::NotFound,
            Outcome::Stored { version } => reply.arg = version,
            Outcome::Deleted | Outcome::Flushed => {}
            Outcome::NotStored => reply.status = Status::NotStored,
            Outcome::Exists => reply.status = Status::Exists,
            Outcome::Number { value, version } => {
                reply.arg = version;
                reply.value = value.to_string().into_bytes();
            }
            Outcome::Failed(failure) => {
                let status = match failure {
                    Failure::Invalid(_) => Status::Invalid,
                    Failure::NonNumeric => Status::NonNumeric,
                    Failure::TooLarge => Status::TooLarge,
                    Failure::Unavailable(_) => Status::Unavailable,
                };
                reply = reply.error_reply(status, &failure.to_string());
            }
        }
        reply
    }

    /// MULTI_GET: value = packed keys; the reply lists one result per key, in order.
    fn multi_get(&self, frame: &Frame) -> Frame {
        let keys = match wire::unpack_keys(&frame.value, self.limits.max_key) {
            Ok(keys) => keys,
            Err(e) => return frame.error_reply(Status::Invalid, &e),
        };
        let mut reply = frame.reply(Status::Ok);
        for outcome in self.router.get_many(&keys) {
            match outcome {
                Outcome::Found(found) => wire::pack_result(
                    &mut reply.value,
                    Some(&wire::MultiGetHit {
                        version: found.version,
                        flags: found.flags,
                        expires: found.expires,
                        value: found.value,
                    }),
                ),
                Outcome::NotFound => wire::pack_result(&mut reply.value, None),
                other => {
                    let why = match other {
                        Outcome::Failed(failure) => failure.to_string(),
                        other => format!("unexpected outcome {other:?}"),
                    };
                    return frame.error_reply(Status::Unavailable, &why);
                }
            }
            if reply.value.len() > wire::MAX_BULK_VALUE {
                return frame.error_reply(
                    Status::TooLarge,
                    "the values asked for are over 8 MiB: ask fewer keys at once",
                );
            }
        }
        reply
    }

    /// A slave registers: key = the address it serves on.
    fn register(&self, frame: &Frame) -> Frame {
        let Ok(addr) = std::str::from_utf8(&frame.key) else {
            return frame.error_reply(Status::Invalid, "slave address is not UTF-8");
        };
        if addr.parse::<SocketAddr>().is_err() {
            return frame.error_reply(
                Status::Invalid,
                "slave address must be IP:PORT (use --advertise on the slave)",
            );
        }
        let registered = self.membership.register(addr);
        info!(
            "slave {} at {addr} {} with token {}; it joins once it has its data",
            registered.id,
            if registered.returning {
                "registered again"
            } else {
                "registered"
            },
            registered.token,
        );
        let mut reply = frame.reply(Status::Ok);
        reply.arg = registered.token.0;
        reply.flags = registered.id.0;
        reply.value = registered.session.to_be_bytes().to_vec();
        // The flush markers in force, so a slave that missed a flush_all never serves
        // what it flushed: a count (u8), then threshold and time (u64 each) per marker.
        let flushes = self.membership.flushes();
        reply.value.push(flushes.len() as u8);
        for marker in flushes {
            reply
                .value
                .extend_from_slice(&marker.threshold.to_be_bytes());
            reply.value.extend_from_slice(&marker.at.to_be_bytes());
        }
        reply
            .value
            .extend_from_slice(self.heartbeat_addr.to_string().as_bytes());
        reply
    }

    /// A slave leaves gracefully (flags = id, arg = session): its ranges are handed on
    /// while it still serves, and the reply comes once that is done.
    fn deregister(&self, frame: &Frame) -> Frame {
        let id = SlaveId(frame.flags);
        let (done, finished) = mpsc::sync_channel(1);
        if !self.membership.leave(id, frame.arg, done) {
            return frame.error_reply(
                Status::Invalid,
                "not a live slave under that session (already declared dead?)",
            );
        }
        info!("slave {id} is leaving: handing its ranges on");
        match finished.recv_timeout(Duration::from_secs(600)) {
            Ok(()) => frame.reply(Status::Ok),
            Err(_) => frame.error_reply(Status::Unavailable, "hand-off did not finish in time"),
        }
    }

    /// The ring as TSV (protocol.md, "Status"): `copies`, `epoch`, `moving` (what data is
    /// being moved, if any), a header row, then one row per slave. Asks each slave for its
    /// counts (in parallel, without any lock held).
    fn status_text(&self) -> String {
        let (rows, epoch, copies, progress) = self.membership.status();
        let pending: Vec<_> = rows
            .iter()
            .map(|row| {
                row.handle.as_ref().map(|handle| {
                    handle.send(Frame::request(
                        Opcode::SlaveStats,
                        0,
                        Vec::new(),
                        Vec::new(),
                    ))
                })
            })
            .collect();
        let mut text = String::new();
        let _ = writeln!(text, "copies\t{copies}");
        let _ = writeln!(text, "epoch\t{epoch}");
        if !progress.is_empty() {
            let _ = writeln!(text, "moving\t{progress}");
        }
        let _ = writeln!(text, "id\taddr\ttoken\tstate\town\tprevious");
        for (row, pending) in rows.iter().zip(pending) {
            let counts = match (pending, &row.handle) {
                (Some(pending), Some(handle)) => pending
                    .and_then(|p| p.wait(handle.timeout()))
                    .ok()
                    .and_then(|reply| parse_slave_counts(&reply.value)),
                _ => None,
            };
            let state = match (&counts, row.state) {
                (None, membership::SlaveState::Alive) => "unreachable".to_string(),
                (_, state) => state.to_string(),
            };
            let (own, previous) = match counts {
                Some(c) => (c.own_live.to_string(), c.previous_live.to_string()),
                None => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{state}\t{own}\t{previous}",
                row.member.id, row.member.addr, row.member.token
            );
        }
        text
    }

    /// Live keys across the cluster (sum of every slave's `own`), for `stats`.
    fn curr_items(&self) -> u64 {
        self.membership
            .live_handles()
            .iter()
            .filter_map(|handle| {
                handle
                    .call(Frame::request(
                        Opcode::SlaveStats,
                        0,
                        Vec::new(),
                        Vec::new(),
                    ))
                    .ok()
            })
            .filter_map(|reply| parse_slave_counts(&reply.value))
            .map(|c| c.own_live)
            .sum()
    }
}
