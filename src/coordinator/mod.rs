//! The coordination server: it keeps the ring, accepts clients (binary protocol and
//! memcached text on one port, told apart by the first byte) and slave registrations, and
//! routes every request to the key's primary and replica.
//!
//! Threads, and who joins them:
//! - `coord-accept`: the accept loop, joined by [`Running::wait`];
//! - `conn-<n>`: one per client or slave connection, joined by the accept loop;
//! - `hb-listen`: receives UDP heartbeats, joined by [`Running::wait`];
//! - `link-<id>-<n>`: one reader per connection to a slave, joined when its slave handle
//!   is closed (at re-registration, removal, or shutdown in [`Running::wait`]).
//!
//! Lock order: membership, then nothing. The router and sessions take no other lock, and
//! no lock is held across socket I/O.

pub mod link;
pub mod membership;
pub mod router;
mod text_session;

use std::fmt;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::client::parse_slave_counts;
use crate::config::CoordinatorConfig;
use crate::request::{Failure, Outcome, Request};
use crate::server;
use crate::shutdown::Shutdown;
use crate::wire::{self, Frame, Opcode, Status, WireLimits};
use membership::Membership;
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

/// Everything the coordinator's threads share.
pub struct Coordinator {
    membership: Arc<Membership>,
    router: Router,
    heartbeat_addr: SocketAddr,
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
    membership: Arc<Membership>,
}

impl Running {
    /// Waits until the shutdown has stopped every thread, then closes the slave links.
    pub fn wait(self) {
        let _ = self.acceptor.join();
        let _ = self.hb_listener.join();
        self.membership.close_all();
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

    let membership = Arc::new(Membership::new(
        config.links_per_slave,
        config.slave_timeout,
    ));
    let coordinator = Arc::new(Coordinator {
        router: Router::new(Arc::clone(&membership), config.limits.max_value_bytes),
        membership: Arc::clone(&membership),
        heartbeat_addr,
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

    let hb_shutdown = shutdown.clone();
    let hb_listener = thread::Builder::new()
        .name("hb-listen".into())
        .spawn(move || listen_heartbeats(&heartbeat, &hb_shutdown))
        .map_err(CoordinatorError::Thread)?;

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
        membership,
    })
}

/// Receives heartbeat datagrams until shutdown. Failure detection builds on this.
fn listen_heartbeats(socket: &UdpSocket, shutdown: &Shutdown) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 64];
    while !shutdown.is_triggered() {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => debug!("heartbeat of {n} bytes from {from}"),
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

impl Coordinator {
    /// Picks the protocol from the first byte and serves the connection.
    fn serve_connection(&self, stream: TcpStream, peer: SocketAddr) {
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        let mut first = [0u8; 1];
        match stream.peek(&mut first) {
            Ok(1) if first[0] == wire::MAGIC => {
                server::serve_frames(stream, peer, self.limits, |frame| self.serve_frame(frame));
            }
            Ok(1) => text_session::serve(self, stream, peer),
            Ok(_) => {}
            Err(e) => debug!("{peer}: closed before the first byte: {e}"),
        }
    }

    /// Serves one binary frame.
    fn serve_frame(&self, frame: Frame) -> Frame {
        let request = match frame.opcode {
            Opcode::Get => Request::Get {
                key: frame.key.clone(),
            },
            Opcode::Put => Request::Put {
                key: frame.key.clone(),
                value: frame.value.clone(),
                flags: frame.flags,
            },
            Opcode::Delete => Request::Delete {
                key: frame.key.clone(),
            },
            Opcode::Ping => return frame.reply(Status::Ok),
            Opcode::Status => {
                let mut reply = frame.reply(Status::Ok);
                reply.value = self.status_text().into_bytes();
                return reply;
            }
            Opcode::Register => return self.register(&frame),
            _ => {
                return frame.error_reply(
                    Status::Invalid,
                    "this is the coordinator: slave operations go to a slave",
                );
            }
        };
        let mut reply = frame.reply(Status::Ok);
        match self.router.serve(request) {
            Outcome::Found(found) => {
                reply.value = found.value;
                reply.flags = found.flags;
                reply.arg = found.version;
            }
            Outcome::NotFound => reply.status = Status::NotFound,
            Outcome::Stored { version } => reply.arg = version,
            Outcome::Deleted => {}
            Outcome::Failed(failure) => {
                let status = match failure {
                    Failure::Invalid(_) => Status::Invalid,
                    Failure::TooLarge => Status::TooLarge,
                    Failure::Unavailable(_) => Status::Unavailable,
                };
                reply = frame.error_reply(status, &failure.to_string());
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
            "slave {} at {addr} {} with token {}; {} slaves in the ring",
            registered.id,
            if registered.returning {
                "registered again"
            } else {
                "joined"
            },
            registered.token,
            self.membership.len()
        );
        let mut reply = frame.reply(Status::Ok);
        reply.arg = registered.token.0;
        reply.flags = registered.id.0;
        reply.value = self.heartbeat_addr.to_string().into_bytes();
        reply
    }

    /// The ring as TSV (protocol.md, "Status"): `copies`, `epoch`, a header row, then one
    /// row per slave. Asks each slave for its counts (in parallel, without any lock held).
    fn status_text(&self) -> String {
        let (members, epoch) = self.membership.members();
        let pending: Vec<_> = members
            .iter()
            .map(|(_, handle)| {
                handle.send(Frame::request(
                    Opcode::SlaveStats,
                    0,
                    Vec::new(),
                    Vec::new(),
                ))
            })
            .collect();
        let mut text = String::new();
        let copies = members.len().min(2);
        let _ = writeln!(text, "copies\t{copies}");
        let _ = writeln!(text, "epoch\t{epoch}");
        let _ = writeln!(text, "id\taddr\ttoken\tstate\town\tprevious");
        for ((member, handle), pending) in members.iter().zip(pending) {
            let counts = pending
                .and_then(|p| p.wait(handle.timeout()))
                .ok()
                .and_then(|reply| parse_slave_counts(&reply.value));
            let (state, own, previous) = match counts {
                Some(c) => ("alive", c.own_live.to_string(), c.previous_live.to_string()),
                None => ("unreachable", "-".into(), "-".into()),
            };
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{state}\t{own}\t{previous}",
                member.id, member.addr, member.token
            );
        }
        text
    }

    /// Live keys across the cluster (sum of every slave's `own`), for `stats`.
    fn curr_items(&self) -> u64 {
        let (members, _) = self.membership.members();
        members
            .iter()
            .filter_map(|(_, handle)| {
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
