//! A storage node: it holds the `own` and `previous` tables ([`Store`]), registers with the
//! coordinator, and serves the coordinator's slave operations (opcodes 0x20..=0x3F).
//!
//! Threads, and who joins them:
//! - `slave-accept`: the accept loop, joined by [`Running::wait`];
//! - `wal-sync` (with `--fsync everysec`): syncs the log once a second, joined by
//!   [`Running::wait`];
//! - `hb-send`: sends a heartbeat every `--heartbeat-interval-ms` and registers again if
//!   the coordinator answers that it does not know us, joined by [`Running::wait`];
//! - `slave-<n>`: one per connection (the coordinator keeps a few open), joined by the
//!   accept loop.
//!
//! Locks: the store's, inside its methods, and the registration's, for a copy; neither
//! is held across socket I/O.

pub mod data;
pub mod direct;
mod heartbeat;
mod ops;

use ops::Batch;
pub use ops::{BULK_CHUNK_BYTES, WITH_EXPIRY, serve_frame};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{debug, info, warn};

use crate::client::{Client, ClientError};
use crate::config::{ConfigError, SlaveConfig};
use crate::server::{self, ServerError};
use crate::shutdown::{Shutdown, StartGuard};
use crate::store::FlushMarker;
use crate::wal::WalError;
use crate::wire::{Frame, Opcode, Status, WireLimits};
use data::Data;
use direct::Direct;

/// Why a slave could not start or run.
#[derive(Debug)]
pub enum SlaveError {
    /// The data directory cannot be created or written, or the address cannot be
    /// resolved or bound.
    Server(ServerError),
    /// Protected mode refuses the listening address.
    Unprotected(ConfigError),
    /// The log in the data directory cannot be opened, replayed or written.
    Log(WalError),
    /// A thread could not be started, or the bound address read.
    Io(&'static str, std::io::Error),
    /// The coordinator refused the registration: its status and message.
    Refused {
        /// The coordinator's address.
        coordinator: String,
        /// What it answered.
        status: Status,
        /// Its message.
        message: String,
    },
    /// The coordinator could not be reached before `--register-timeout`.
    Unreachable {
        /// The coordinator's address.
        coordinator: String,
        /// The last attempt's error.
        error: ClientError,
    },
}

impl fmt::Display for SlaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlaveError::Server(e) => write!(f, "{e}"),
            SlaveError::Unprotected(e) => write!(f, "{e}"),
            SlaveError::Log(e) => write!(f, "{e}"),
            SlaveError::Io(what, e) => write!(f, "cannot {what}: {e}"),
            SlaveError::Refused {
                coordinator,
                status,
                message,
            } => write!(
                f,
                "coordinator {coordinator} refused the registration ({}): {message}",
                status.name()
            ),
            SlaveError::Unreachable { coordinator, error } => write!(
                f,
                "coordinator unreachable at {coordinator}: {error} (is piazza-coordinator running? check --coordinator)"
            ),
        }
    }
}

impl std::error::Error for SlaveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SlaveError::Server(e) => Some(e),
            SlaveError::Unprotected(e) => Some(e),
            SlaveError::Log(e) => Some(e),
            SlaveError::Io(_, e) => Some(e),
            SlaveError::Refused { .. } => None,
            SlaveError::Unreachable { error, .. } => Some(error),
        }
    }
}

/// What the coordinator told a slave at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The slave's id.
    pub id: u32,
    /// The session heartbeats must carry.
    pub session: u64,
    /// The coordinator's UDP heartbeat address.
    pub heartbeat: String,
    /// The `flush_all` markers in force.
    pub flushes: Vec<FlushMarker>,
    /// The collection horizon: tombstones and expired values older than this version
    /// may be dropped (0: none yet, or a coordinator that does not collect).
    pub horizon: u64,
}

/// What a slave's threads share.
pub struct Node {
    /// The two tables and their log.
    pub data: Arc<Data>,
    limits: WireLimits,
    coordinator: String,
    advertise: String,
    registration: Mutex<Option<Registration>>,
    register_timeout: Duration,
    /// The cluster secret, presented to the coordinator and to other slaves.
    secret: Option<Vec<u8>>,
    /// Direct routing: the coordinator's view, the version clock, the heartbeat lease.
    pub direct: Direct,
}

impl Node {
    /// The current registration, if any.
    pub fn registration(&self) -> Option<Registration> {
        crate::sync::lock(&self.registration).clone()
    }

    /// Registers (again) with the coordinator. The slave keeps what it holds: the join
    /// that follows copies the current entries of its ranges to it, merging by version,
    /// so newer values and tombstones replace anything stale. `Ok(None)` if the shutdown
    /// started first.
    fn register(&self, shutdown: &Shutdown) -> Result<Option<Registration>, SlaveError> {
        let registration = register(
            &self.coordinator,
            &self.advertise,
            self.register_timeout,
            self.secret.as_deref(),
            shutdown,
        )?;
        if let Some(registration) = &registration {
            for marker in &registration.flushes {
                if marker.at == 0 {
                    self.direct.observe(marker.threshold);
                }
                if !self.data.store.flush_markers().contains(marker)
                    && let Err(e) = self.data.flush(*marker)
                {
                    return Err(SlaveError::Log(e));
                }
            }
        }
        if let Some(registration) = registration.as_ref().filter(|r| r.horizon > 0) {
            // A restart replayed what the last collections had dropped from memory.
            let collected = self
                .data
                .collect(crate::store::Version(registration.horizon));
            if collected.total() > 0 {
                info!(
                    "collected {} tombstones and {} expired values older than the coordinator's horizon",
                    collected.tombstones, collected.values
                );
            }
        }
        *crate::sync::lock(&self.registration) = registration.clone();
        // A new registration: the coordinator sends a view for it.
        self.direct.forget();
        Ok(registration)
    }
}

/// A started slave: its address, and the threads [`Running::wait`] joins.
pub struct Running {
    /// The TCP address actually bound.
    pub addr: SocketAddr,
    /// Shared state (the store, the registration).
    pub node: Arc<Node>,
    shutdown: Shutdown,
    acceptor: std::thread::JoinHandle<()>,
    heartbeat: std::thread::JoinHandle<()>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits until the shutdown has stopped every thread, then syncs the log.
    pub fn wait(self) {
        let _ = self.acceptor.join();
        let _ = self.heartbeat.join();
        if let Some(syncer) = self.syncer {
            let _ = syncer.join();
        }
        self.node.direct.close();
        match self.node.data.sync() {
            Ok(()) => info!("slave on {} stopped; log synced", self.addr),
            Err(e) => log::error!("slave on {} stopped, but {e}", self.addr),
        }
    }

    /// Leaves gracefully: asks the coordinator to hand this slave's ranges on (it keeps
    /// serving meanwhile), then stops and waits.
    pub fn leave(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.node.registration().is_some() {
            info!("leaving: asking the coordinator to hand our ranges on");
        }
        // A coordinator that restarted answers UNAVAILABLE until its slaves are back:
        // ask again (with the registration we have then) until the time is up.
        while let Some(registration) = self.node.registration() {
            let left = deadline.saturating_duration_since(Instant::now());
            match deregister(
                &self.node.coordinator,
                &registration,
                left.max(Duration::from_millis(100)),
                self.node.secret.as_deref(),
            ) {
                Ok(()) => {
                    info!("ranges handed on; stopping");
                    break;
                }
                Err(ClientError::Server {
                    status: Status::Unavailable,
                    message,
                }) if left > RETRY_LEAVE => {
                    debug!("the coordinator cannot take our leave yet ({message}); asking again");
                    std::thread::sleep(RETRY_LEAVE);
                }
                Err(e) => {
                    warn!("leaving without a hand-off: {e}");
                    break;
                }
            }
        }
        self.shutdown.trigger();
        self.wait();
    }
}

/// How long a leaving slave waits before asking a coordinator that could not take its
/// leave yet (it restarted and waits for its slaves) again.
const RETRY_LEAVE: Duration = Duration::from_millis(200);

/// Runs a slave until `stop` is triggered (Ctrl-C), then leaves gracefully. See
/// [`start`].
///
/// # Errors
/// See [`start`].
pub fn run(config: SlaveConfig, stop: Shutdown) -> Result<(), SlaveError> {
    let leave_timeout = config.leave_timeout;
    let running = start(config, Shutdown::new())?;
    while !stop.wait_timeout(Duration::from_secs(1)) {}
    running.leave(leave_timeout);
    Ok(())
}

/// Starts a slave: binds, prints `listening on ADDR` to stderr, starts serving on the
/// `slave-accept` thread, registers with the coordinator (retrying until
/// `register_timeout`), and starts the `hb-send` heartbeat thread. Returns once
/// registered.
///
/// # Errors
/// When the data dir is unusable, the address cannot be bound, or the coordinator cannot
/// be reached within `register_timeout`.
pub fn start(config: SlaveConfig, shutdown: Shutdown) -> Result<Running, SlaveError> {
    // Protected mode is checked before anything is bound.
    for addr in server::resolve(&config.listen, "slave address").map_err(SlaveError::Server)? {
        config
            .security
            .check_bind(addr, "--listen")
            .map_err(SlaveError::Unprotected)?;
    }
    let listener =
        server::bind(&config.listen, "slave address", "--listen").map_err(SlaveError::Server)?;
    let bound = listener
        .local_addr()
        .map_err(|e| SlaveError::Io("read the bound address", e))?;
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("./piazza-data/slave-{}", bound.port())));
    server::prepare_data_dir(&data_dir).map_err(SlaveError::Server)?;
    let data = Data::open(
        &data_dir,
        config.fsync,
        config.salvage,
        config.compact_min_bytes,
    )
    .map_err(SlaveError::Log)?;
    shutdown.register_listener(bound);
    let node = Arc::new(Node {
        data: Arc::new(data),
        limits: WireLimits {
            max_key: config.limits.max_key_bytes,
            max_value: config.limits.max_value_bytes,
        },
        coordinator: config.coordinator.clone(),
        advertise: config
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string()),
        registration: Mutex::new(None),
        register_timeout: config.register_timeout,
        secret: config.security.secret.clone(),
        direct: Direct::new(config.heartbeat_interval, config.security.secret.clone()),
    });

    // From here on, a failure stops and joins the threads started so far.
    let mut guard = StartGuard::new(&shutdown);
    // Serve before registering: the coordinator may send data as soon as it answers.
    let serve_shutdown = shutdown.clone();
    let server_limits = config.limits;
    let serve_node = Arc::clone(&node);
    let acceptor = guard
        .spawn("slave-accept", move || {
            server::accept_loop(
                listener,
                &serve_shutdown,
                "slave",
                server_limits,
                Arc::new(AtomicUsize::new(0)),
                move |stream, peer| {
                    let limits = serve_node.limits;
                    let guard = server::Guard {
                        secret: serve_node.secret.as_deref(),
                        needs_auth: |opcode| opcode != Opcode::Ping,
                    };
                    // Writes that arrive together are logged together.
                    let batch = std::cell::RefCell::new(Batch::default());
                    server::serve_frames(
                        stream,
                        peer,
                        &server_limits,
                        limits,
                        guard,
                        |frame| batch.borrow_mut().begin(&serve_node, frame),
                        |slot| batch.borrow_mut().finish(&serve_node, slot),
                    )
                },
            )
        })
        .map_err(|e| SlaveError::Io("start the accept thread", e))?;
    eprintln!("listening on {bound}");

    let syncer = Data::start_syncer(&node.data, &shutdown)
        .map_err(|e| SlaveError::Io("start the log sync thread", e))?;
    let syncer = guard.keep(syncer);
    let registration = node.register(&shutdown)?;
    if let Some(registration) = &registration {
        info!(
            "piazza-slave {} serving on {bound} as slave {}, data in {}",
            env!("CARGO_PKG_VERSION"),
            registration.id,
            data_dir.display()
        );
    }
    let hb_node = Arc::clone(&node);
    let hb_shutdown = shutdown.clone();
    let interval = config.heartbeat_interval;
    let heartbeat = guard
        .spawn("hb-send", move || {
            heartbeat::run(&hb_node, interval, &hb_shutdown)
        })
        .map_err(|e| SlaveError::Io("start the heartbeat thread", e))?;
    let mut threads = guard.finish();
    Ok(Running {
        addr: bound,
        node,
        shutdown,
        acceptor: threads.take(acceptor),
        heartbeat: threads.take(heartbeat),
        syncer: Some(threads.take(syncer)),
    })
}

/// Registers with the coordinator, retrying until `timeout`. `Ok(None)` if the shutdown
/// started meanwhile.
fn register(
    coordinator: &str,
    advertise: &str,
    timeout: Duration,
    secret: Option<&[u8]>,
    shutdown: &Shutdown,
) -> Result<Option<Registration>, SlaveError> {
    let deadline = Instant::now() + timeout;
    loop {
        match try_register(coordinator, advertise, secret) {
            Ok(registration) => return Ok(Some(registration)),
            Err(ClientError::Server { status, message }) => {
                return Err(SlaveError::Refused {
                    coordinator: coordinator.to_string(),
                    status,
                    message,
                });
            }
            Err(error) if Instant::now() >= deadline => {
                return Err(SlaveError::Unreachable {
                    coordinator: coordinator.to_string(),
                    error,
                });
            }
            Err(e) => {
                warn!("cannot register with {coordinator} yet: {e}; retrying");
                if shutdown.wait_timeout(Duration::from_millis(200)) {
                    return Ok(None);
                }
            }
        }
    }
}

/// A client to `addr` that has presented `secret`, if there is one.
fn connect_with(addr: &str, secret: Option<&[u8]>) -> Result<Client, ClientError> {
    let mut client = Client::connect(addr)?;
    if let Some(secret) = secret {
        client.auth(secret)?;
    }
    Ok(client)
}

fn try_register(
    coordinator: &str,
    advertise: &str,
    secret: Option<&[u8]>,
) -> Result<Registration, ClientError> {
    let mut client = connect_with(coordinator, secret)?;
    let reply = client.call(Frame::request(
        Opcode::Register,
        0,
        advertise.as_bytes().to_vec(),
        Vec::new(),
    ))?;
    if reply.status != Status::Ok {
        return Err(ClientError::Server {
            status: reply.status,
            message: reply.value_text(),
        });
    }
    let short = || ClientError::BadStatus("registration reply too short".into());
    let (session, rest) = reply.value.split_first_chunk::<8>().ok_or_else(short)?;
    let (&count, mut rest) = rest.split_first().ok_or_else(short)?;
    let mut flushes = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (marker, after) = rest.split_first_chunk::<16>().ok_or_else(short)?;
        flushes.push(FlushMarker {
            threshold: NetworkEndian::read_u64(&marker[..8]),
            at: NetworkEndian::read_u64(&marker[8..]),
        });
        rest = after;
    }
    // The collection horizon rides in the reply's key (8 bytes; none from a coordinator
    // that does not collect), where a slave that does not know it never looks.
    let horizon = reply
        .key
        .first_chunk::<8>()
        .map_or(0, |h| u64::from_be_bytes(*h));
    Ok(Registration {
        id: reply.flags,
        session: u64::from_be_bytes(*session),
        heartbeat: String::from_utf8_lossy(rest).into_owned(),
        flushes,
        horizon,
    })
}

fn deregister(
    coordinator: &str,
    registration: &Registration,
    timeout: Duration,
    secret: Option<&[u8]>,
) -> Result<(), ClientError> {
    let mut client = connect_with(coordinator, secret)?;
    client.set_timeout(timeout)?;
    let mut request = Frame::request(Opcode::Deregister, 0, Vec::new(), Vec::new());
    request.flags = registration.id;
    request.arg = registration.session;
    let reply = client.call(request)?;
    match reply.status {
        Status::Ok => Ok(()),
        status => Err(ClientError::Server {
            status,
            message: reply.value_text(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A port nobody listens on now (bound, then let go).
    fn free_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn a_start_that_cannot_register_leaves_no_thread_behind() {
        let dir = std::env::temp_dir().join(format!("piazza-slave-start-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listen = free_port();
        let config = SlaveConfig {
            listen: listen.to_string(),
            coordinator: free_port().to_string(),
            data_dir: Some(dir.clone()),
            register_timeout: Duration::from_millis(300),
            ..SlaveConfig::default()
        };
        // `slave-accept` and `wal-sync` are running when the registration fails.
        let err = match start(config, Shutdown::new()) {
            Ok(_) => panic!("registered with a coordinator that is not there"),
            Err(e) => e,
        };
        assert!(matches!(err, SlaveError::Unreachable { .. }), "{err}");
        // Both were joined before the error came back: the listener is closed, and the
        // data, which `wal-sync` held, is dropped, and with it its `LOCK` file.
        TcpListener::bind(listen).expect("the slave's port is free again");
        assert!(!dir.join("LOCK").exists(), "the data dir is unlocked again");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
