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
//!   a time, and between events sends slaves the collection horizon (`collection`); ends when [`Running::wait`] closes its channel, and is joined there;
//! - `ring-save`: the only writer of the `ring` file (persist.rs): saves it when a
//!   membership change or the version floor asks for it (the floor about once every 5 s
//!   under writes, ahead of need); stopped and joined last by [`Running::wait`], after a
//!   final save;
//! - `collect-<id>`: one per slave during a collection round (`collection`), scoped
//!   threads joined by the `recovery` thread before the round ends.
//!
//! Links to slaves have no threads: the callers waiting on a link read its replies in turn
//! (`link.rs`).
//!
//! Lock order: membership, then nothing. The router and sessions take no other lock, and
//! no lock is held across socket I/O.

mod binary_session;
pub mod collection;
mod failures;
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
use std::time::Instant;

use log::{debug, info};

use crate::config::{ConfigError, CoordinatorConfig};
use crate::server::{self, ServerError};
use crate::shutdown::{Shutdown, StartGuard};
use crate::wal::{DirLock, WalError};
use crate::wire::SlaveCounts;
use crate::wire::{self, Frame, Opcode, WireLimits};
use membership::Membership;
use persist::PersistError;
use router::Router;

/// Why the coordinator could not start or run.
#[derive(Debug)]
pub enum CoordinatorError {
    /// The data directory cannot be created or written, or an address cannot be resolved
    /// or bound.
    Server(ServerError),
    /// Protected mode refuses the listening address.
    Unprotected(ConfigError),
    /// The data directory's lock is held (another coordinator uses it) or cannot be taken.
    Locked(WalError),
    /// The saved ring cannot be read.
    Ring(PersistError),
    /// A thread could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for CoordinatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoordinatorError::Server(e) => write!(f, "{e}"),
            CoordinatorError::Unprotected(e) => write!(f, "{e}"),
            CoordinatorError::Locked(e) => write!(f, "{e}"),
            CoordinatorError::Ring(e) => write!(f, "{e}"),
            CoordinatorError::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for CoordinatorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CoordinatorError::Server(e) => Some(e),
            CoordinatorError::Unprotected(e) => Some(e),
            CoordinatorError::Locked(e) => Some(e),
            CoordinatorError::Ring(e) => Some(e),
            CoordinatorError::Thread(e) => Some(e),
        }
    }
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
    ring_save: thread::JoinHandle<()>,
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
        self.membership.stop_saver();
        let _ = self.ring_save.join();
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
    server::prepare_data_dir(&config.data_dir).map_err(CoordinatorError::Server)?;
    // Protected mode is checked before anything is bound.
    for addr in
        server::resolve(&config.listen, "coordinator address").map_err(CoordinatorError::Server)?
    {
        config
            .security
            .check_bind(addr, "--listen")
            .map_err(CoordinatorError::Unprotected)?;
    }
    let listener = server::bind(&config.listen, "coordinator address", "--listen")
        .map_err(CoordinatorError::Server)?;
    let heartbeat = UdpSocket::bind(&config.heartbeat).map_err(|source| {
        CoordinatorError::Server(ServerError::Bind {
            what: "heartbeat address",
            addr: config.heartbeat.clone(),
            flag: "--heartbeat",
            source,
        })
    })?;
    let addr = listener.local_addr().map_err(CoordinatorError::Thread)?;
    let heartbeat_addr = heartbeat.local_addr().map_err(CoordinatorError::Thread)?;
    shutdown.register_listener(addr);

    let lock = DirLock::acquire(&config.data_dir).map_err(CoordinatorError::Locked)?;
    let membership = Arc::new(
        Membership::persistent(
            &config.data_dir,
            config.links_per_slave,
            config.slave_timeout,
            config.failure_timeout,
            config.security.secret.clone(),
        )
        .map_err(CoordinatorError::Ring)?
        .with_tombstone_grace(config.tombstone_grace),
    );
    if config.tombstone_grace < config.slave_timeout * 2 {
        log::warn!(
            "--tombstone-grace-secs {} is shorter than twice --slave-timeout-ms {}: a write retried that long could come back after its delete was collected",
            config.tombstone_grace.as_secs(),
            config.slave_timeout.as_millis()
        );
    }
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

    // From here on, a failure stops and joins the threads started so far.
    let mut guard = StartGuard::new(&shutdown);
    let saver_membership = Arc::clone(&membership);
    let stop_membership = Arc::clone(&membership);
    let ring_save = guard
        .spawn_stopped_by(
            "ring-save",
            move || stop_membership.stop_saver(),
            move || saver_membership.run_saver(),
        )
        .map_err(CoordinatorError::Thread)?;
    let recovery_membership = Arc::clone(&membership);
    let stop_membership = Arc::clone(&membership);
    let recovery = guard
        .spawn_stopped_by(
            "recovery",
            move || stop_membership.close_events(),
            move || recovery::run(&recovery_membership, &events_rx),
        )
        .map_err(CoordinatorError::Thread)?;
    let (hb_shutdown, hb_membership) = (shutdown.clone(), Arc::clone(&membership));
    let hb_listener = guard
        .spawn("hb-listen", move || {
            failures::listen_heartbeats(&heartbeat, &hb_membership, &hb_shutdown)
        })
        .map_err(CoordinatorError::Thread)?;
    let (fd_shutdown, fd_membership) = (shutdown.clone(), Arc::clone(&membership));
    let (interval, timeout) = (config.heartbeat_interval, config.failure_timeout);
    let fd_timer = guard
        .spawn("fd-timer", move || {
            failures::detect_failures(&fd_membership, interval, timeout, &fd_shutdown)
        })
        .map_err(CoordinatorError::Thread)?;

    let handler = Arc::clone(&coordinator);
    let limits = config.limits;
    let accept_shutdown = shutdown.clone();
    let acceptor = guard
        .spawn("coord-accept", move || {
            server::accept_loop(
                listener,
                &accept_shutdown,
                "conn",
                limits,
                Arc::clone(&handler.active),
                move |stream, peer| handler.serve_connection(stream, peer),
            );
            info!("coordinator stopped accepting");
        })
        .map_err(CoordinatorError::Thread)?;
    let mut threads = guard.finish();
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
        acceptor: threads.take(acceptor),
        hb_listener: threads.take(hb_listener),
        fd_timer: threads.take(fd_timer),
        recovery: threads.take(recovery),
        ring_save: threads.take(ring_save),
        membership,
        _lock: lock,
    })
}

impl Coordinator {
    /// Picks the protocol from the first byte and serves the connection.
    fn serve_connection(&self, stream: TcpStream, peer: SocketAddr) {
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        let mut first = [0u8; 1];
        match stream.peek(&mut first) {
            Ok(1) if first[0] == wire::MAGIC => {
                binary_session::serve(self, stream, peer);
            }
            Ok(1) if first[0] == crate::mcbin::MAGIC_REQUEST => {
                mcbin_session::serve(self, stream, peer)
            }
            Ok(1) => text_session::serve(self, stream, peer),
            Ok(_) => {}
            Err(e) => debug!("{peer}: closed before the first byte: {e}"),
        }
    }

    /// Asks every slave in `rows` that is not dead for its counts, all at once (no lock
    /// held), and waits for the answers; `None` for a slave that did not answer.
    fn slave_counts(&self, rows: &[membership::StatusRow]) -> Vec<Option<SlaveCounts>> {
        let pending: Vec<_> = rows
            .iter()
            .map(|row| {
                row.handle.as_ref().map(|handle| {
                    (
                        handle.send(Frame::request(
                            Opcode::SlaveStats,
                            0,
                            Vec::new(),
                            Vec::new(),
                        )),
                        handle.timeout(),
                    )
                })
            })
            .collect();
        pending
            .into_iter()
            .map(|pending| {
                let (pending, timeout) = pending?;
                let reply = pending.and_then(|p| p.wait(timeout)).ok()?;
                SlaveCounts::decode(&reply.value)
            })
            .collect()
    }

    /// The ring as TSV (protocol.md, "Status"): `copies`, `epoch`, `moving` (what data is
    /// being moved, if any), a header row, then one row per slave with its counts.
    fn status_text(&self) -> String {
        let membership::StatusReport {
            rows,
            epoch,
            copies,
            progress,
        } = self.membership.status();
        let counts = self.slave_counts(&rows);
        let mut text = String::new();
        let _ = writeln!(text, "copies\t{copies}");
        let _ = writeln!(text, "epoch\t{epoch}");
        if !progress.is_empty() {
            let _ = writeln!(text, "moving\t{progress}");
        }
        let _ = writeln!(
            text,
            "id\taddr\ttoken\tshare\tstate\town\tprevious\ttombstones\tpurged\tcollected\tcompacted"
        );
        for (row, counts) in rows.iter().zip(counts) {
            let state = match (&counts, row.state) {
                (None, membership::SlaveState::Alive) => "unreachable".to_string(),
                (_, state) => state.to_string(),
            };
            let numbers = match counts {
                Some(c) => [
                    c.own_live.to_string(),
                    c.previous_live.to_string(),
                    (c.own_tombstones + c.previous_tombstones).to_string(),
                    c.purged.to_string(),
                    (c.collected_tombstones + c.collected_values).to_string(),
                    match c.last_compaction {
                        0 => "-".to_string(),
                        at => at.to_string(),
                    },
                ]
                .join("\t"),
                None => ["-"; 6].join("\t"),
            };
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{:.1}%\t{state}\t{numbers}",
                row.member.id,
                row.member.addr,
                row.token.map_or_else(|| "-".to_string(), |t| t.to_string()),
                share(row.member.slots)
            );
        }
        text
    }

    /// Live keys across the cluster (sum of every slave's `own`), and per slave on the
    /// ring its share and counts, for `stats`.
    fn slave_stats(&self) -> (u64, Vec<(String, String)>) {
        let rows: Vec<membership::StatusRow> = self
            .membership
            .status()
            .rows
            .into_iter()
            .filter(|row| row.member.slots > 0)
            .collect();
        let counts = self.slave_counts(&rows);
        let mut items = 0;
        let mut lines = Vec::new();
        for (row, counts) in rows.iter().zip(counts) {
            let id = row.member.id;
            lines.push((
                format!("slave_{id}_share"),
                format!("{:.1}", share(row.member.slots)),
            ));
            let Some(c) = counts else {
                continue;
            };
            items += c.own_live;
            let values = [
                ("live", c.own_live + c.previous_live),
                ("tombstones", c.own_tombstones + c.previous_tombstones),
                ("expired_purged", c.purged),
                ("collected", c.collected_tombstones + c.collected_values),
                ("last_compaction", c.last_compaction),
            ];
            for (name, value) in values {
                lines.push((format!("slave_{id}_{name}"), value.to_string()));
            }
        }
        (items, lines)
    }
}

/// A slave's share of the ring, in per cent, from its slot count.
fn share(slots: usize) -> f64 {
    slots as f64 * 100.0 / crate::ring::SLOTS as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("piazza-coord-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A port nobody listens on now (bound, then let go).
    fn free_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    fn config(dir: &std::path::Path, heartbeat: String) -> CoordinatorConfig {
        CoordinatorConfig {
            listen: free_port().to_string(),
            heartbeat,
            data_dir: dir.to_path_buf(),
            ..CoordinatorConfig::default()
        }
    }

    #[test]
    fn a_taken_heartbeat_port_fails_the_start_and_frees_the_client_port() {
        let dir = temp_dir("hb-taken");
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let config = config(&dir, taken.local_addr().unwrap().to_string());
        let listen = config.listen.clone();
        let err = match start(config, Shutdown::new()) {
            Ok(_) => panic!("started on a heartbeat port that is taken"),
            Err(e) => e,
        };
        assert!(
            matches!(err, CoordinatorError::Server(ServerError::Bind { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("--heartbeat"), "{err}");
        TcpListener::bind(&listen).expect("the client port is free again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_locked_data_dir_fails_the_start_after_binding_and_frees_both_ports() {
        let dir = temp_dir("locked");
        std::fs::create_dir_all(&dir).unwrap();
        // Held by a process that runs (init), as far as the lock can tell.
        std::fs::write(dir.join("LOCK"), "1\n").unwrap();
        let heartbeat = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = config(&dir, heartbeat.to_string());
        let listen = config.listen.clone();
        let err = match start(config, Shutdown::new()) {
            Ok(_) => panic!("started on a locked data dir"),
            Err(e) => e,
        };
        assert!(matches!(err, CoordinatorError::Locked(_)), "{err}");
        TcpListener::bind(&listen).expect("the client port is free again");
        UdpSocket::bind(heartbeat).expect("the heartbeat port is free again");
        // And a start that succeeds, stopped at once, joins every thread it started.
        std::fs::remove_file(dir.join("LOCK")).unwrap();
        let shutdown = Shutdown::new();
        let running = start(self::config(&dir, heartbeat.to_string()), shutdown.clone()).unwrap();
        let addr = running.addr;
        shutdown.trigger();
        running.wait();
        TcpListener::bind(addr).expect("the client port is free after the stop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
