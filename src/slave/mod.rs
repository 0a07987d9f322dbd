//! A storage node: it holds the `own` and `previous` tables ([`Store`]), registers with the
//! coordinator, and serves the coordinator's slave operations (opcodes 0x20..=0x3F).
//!
//! Threads, and who joins them:
//! - `slave-accept`: the accept loop, joined by [`Running::wait`];
//! - `slave-<n>`: one per connection (the coordinator keeps a few open), joined by the
//!   accept loop.
//!
//! Locks: only the store's, inside its methods; none is held across socket I/O.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{info, warn};

use crate::client::{Client, ClientError};
use crate::config::SlaveConfig;
use crate::server;
use crate::shutdown::Shutdown;
use crate::store::{Applied, Entry, Store, Table, Version};
use crate::wire::{self, BulkEntry, Frame, Opcode, Status, TableSel, WireLimits};

/// Why a slave could not start or run.
#[derive(Debug)]
pub enum SlaveError {
    /// The data directory cannot be used.
    DataDir(String),
    /// The listening address cannot be bound.
    Bind(String),
    /// The coordinator could not be reached or refused the registration.
    Register(String),
}

impl fmt::Display for SlaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlaveError::DataDir(why) | SlaveError::Bind(why) | SlaveError::Register(why) => {
                write!(f, "{why}")
            }
        }
    }
}

impl std::error::Error for SlaveError {}

/// Largest bulk chunk a slave sends in one `BulkGet` reply.
pub const BULK_CHUNK_BYTES: usize = 1024 * 1024;

/// What the coordinator told a slave at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The slave's id.
    pub id: u32,
    /// Its ring token.
    pub token: u64,
    /// The coordinator's UDP heartbeat address.
    pub heartbeat: String,
}

/// A started slave: its address, its registration, and the thread [`Running::wait`] joins.
pub struct Running {
    /// The TCP address actually bound.
    pub addr: SocketAddr,
    /// What the coordinator assigned (`None` if the shutdown came before registration).
    pub registration: Option<Registration>,
    acceptor: std::thread::JoinHandle<()>,
}

impl Running {
    /// Waits until the shutdown has stopped every connection thread.
    pub fn wait(self) {
        let _ = self.acceptor.join();
        info!("slave on {} stopped", self.addr);
    }
}

/// Runs a slave until `shutdown` is triggered. See [`start`].
///
/// # Errors
/// See [`start`].
pub fn run(config: SlaveConfig, shutdown: Shutdown) -> Result<(), SlaveError> {
    start(config, shutdown).map(Running::wait)
}

/// Starts a slave: binds, prints `listening on ADDR` to stderr, starts serving on the
/// `slave-accept` thread, and registers with the coordinator (retrying until
/// `register_timeout`). Returns once registered.
///
/// # Errors
/// When the data dir is unusable, the address cannot be bound, or the coordinator cannot
/// be reached within `register_timeout`.
pub fn start(config: SlaveConfig, shutdown: Shutdown) -> Result<Running, SlaveError> {
    let listener =
        server::bind(&config.listen, "slave address", "--listen").map_err(SlaveError::Bind)?;
    let bound = listener
        .local_addr()
        .map_err(|e| SlaveError::Bind(format!("cannot read the bound address: {e}")))?;
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("./piazza-data/slave-{}", bound.port())));
    server::prepare_data_dir(&data_dir).map_err(SlaveError::DataDir)?;
    shutdown.register_listener(bound);
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());

    let store = Arc::new(Store::new());
    let limits = WireLimits {
        max_key: config.limits.max_key_bytes,
        max_value: config.limits.max_value_bytes,
    };
    // Serve before registering: the coordinator may route to us as soon as it answers.
    let serve_shutdown = shutdown.clone();
    let server_limits = config.limits;
    let acceptor = std::thread::Builder::new()
        .name("slave-accept".into())
        .spawn(move || {
            server::accept_loop(
                listener,
                &serve_shutdown,
                "slave",
                server_limits,
                Arc::new(AtomicUsize::new(0)),
                move |stream, peer| {
                    server::serve_frames(stream, peer, limits, |frame| {
                        serve_frame(&store, &limits, frame)
                    })
                },
            )
        })
        .map_err(|e| SlaveError::Bind(format!("cannot start the accept thread: {e}")))?;
    eprintln!("listening on {bound}");

    let registration = match register(
        &config.coordinator,
        &advertise,
        config.register_timeout,
        &shutdown,
    ) {
        Ok(registration) => registration,
        Err(e) => {
            shutdown.trigger();
            let _ = acceptor.join();
            return Err(e);
        }
    };
    if let Some(registration) = &registration {
        info!(
            "piazza-slave {} serving on {bound} as slave {} (token 0x{:016x}), data in {}",
            env!("CARGO_PKG_VERSION"),
            registration.id,
            registration.token,
            data_dir.display()
        );
    }
    Ok(Running {
        addr: bound,
        registration,
        acceptor,
    })
}

/// Registers with the coordinator, retrying until `timeout`. `Ok(None)` if the shutdown
/// started meanwhile.
fn register(
    coordinator: &str,
    advertise: &str,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<Option<Registration>, SlaveError> {
    let deadline = Instant::now() + timeout;
    loop {
        match try_register(coordinator, advertise) {
            Ok(registration) => return Ok(Some(registration)),
            Err(ClientError::Server { status, message }) => {
                return Err(SlaveError::Register(format!(
                    "coordinator {coordinator} refused the registration ({}): {message}",
                    status.name()
                )));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(SlaveError::Register(format!(
                    "coordinator unreachable at {coordinator}: {e} (is piazza-coordinator running? check --coordinator)"
                )));
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

fn try_register(coordinator: &str, advertise: &str) -> Result<Registration, ClientError> {
    let mut client = Client::connect(coordinator)?;
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
    Ok(Registration {
        id: reply.flags,
        token: reply.arg,
        heartbeat: reply.value_text(),
    })
}

fn table_of(frame: &Frame) -> Option<Table> {
    match frame.table {
        TableSel::Own => Some(Table::Own),
        TableSel::Previous => Some(Table::Previous),
        TableSel::None => None,
    }
}

/// Serves one slave operation against the store.
pub fn serve_frame(store: &Store, limits: &WireLimits, frame: Frame) -> Frame {
    let table = table_of(&frame);
    match frame.opcode {
        Opcode::Ping => return frame.reply(Status::Ok),
        Opcode::SlaveStats => {
            let (own, previous) = store.counts();
            let mut reply = frame.reply(Status::Ok);
            let mut value = [0u8; 32];
            NetworkEndian::write_u64(&mut value[0..], own.live);
            NetworkEndian::write_u64(&mut value[8..], own.tombstones);
            NetworkEndian::write_u64(&mut value[16..], previous.live);
            NetworkEndian::write_u64(&mut value[24..], previous.tombstones);
            reply.value = value.to_vec();
            return reply;
        }
        Opcode::Get | Opcode::Put | Opcode::Delete | Opcode::Status | Opcode::Register => {
            return frame.error_reply(
                Status::Invalid,
                "this is a slave: send client requests to the coordinator",
            );
        }
        _ => {}
    }
    let Some(table) = table else {
        return frame.error_reply(Status::Invalid, "table must be 1 (own) or 2 (previous)");
    };
    let needs_key = matches!(
        frame.opcode,
        Opcode::SlaveGet | Opcode::SlavePut | Opcode::SlaveDelete
    );
    if needs_key && frame.key.is_empty() {
        return frame.error_reply(Status::Invalid, "empty key");
    }
    match frame.opcode {
        Opcode::SlaveGet => match store.get(table, &frame.key) {
            Some(Entry {
                version,
                flags,
                value: Some(value),
            }) => {
                let mut reply = frame.reply(Status::Ok);
                reply.arg = version.0;
                reply.flags = flags;
                reply.value = value;
                reply
            }
            Some(Entry { version, .. }) => {
                let mut reply = frame.reply(Status::NotFound);
                reply.arg = version.0;
                reply
            }
            None => frame.reply(Status::NotFound),
        },
        Opcode::SlavePut => {
            let applied = store.put(
                table,
                &frame.key,
                frame.value.clone(),
                frame.flags,
                Version(frame.arg),
            );
            let mut reply = frame.reply(Status::Ok);
            reply.arg = match applied {
                Applied::Applied { .. } => frame.arg,
                Applied::Stale { current } => current.0,
            };
            reply
        }
        Opcode::SlaveDelete => {
            let applied = store.delete(table, &frame.key, Version(frame.arg));
            match applied {
                Applied::Applied { was_live: true } => frame.reply(Status::Ok),
                Applied::Applied { was_live: false } => frame.reply(Status::NotFound),
                Applied::Stale { current } => {
                    // A newer write already decided this key's fate: report what is there.
                    let live = store
                        .get(table, &frame.key)
                        .is_some_and(|e| e.value.is_some());
                    let mut reply = frame.reply(if live { Status::Ok } else { Status::NotFound });
                    reply.arg = current.0;
                    reply
                }
            }
        }
        Opcode::BulkPut => match wire::unpack_bulk(&frame.value, limits) {
            Ok(entries) => {
                let entries = entries
                    .into_iter()
                    .map(|e| {
                        (
                            e.key,
                            Entry {
                                version: Version(e.version),
                                flags: e.flags,
                                value: e.value,
                            },
                        )
                    })
                    .collect();
                let applied = store.apply_all(table, entries);
                let mut reply = frame.reply(Status::Ok);
                reply.arg = applied as u64;
                reply
            }
            Err(e) => frame.error_reply(Status::Invalid, &e.to_string()),
        },
        Opcode::BulkGet => {
            let cursor = usize::try_from(frame.arg).unwrap_or(usize::MAX);
            let (entries, next) = store.chunk(table, cursor, BULK_CHUNK_BYTES);
            let mut reply = frame.reply(Status::Ok);
            for (key, entry) in entries {
                BulkEntry {
                    key,
                    version: entry.version.0,
                    flags: entry.flags,
                    value: entry.value,
                }
                .pack_into(&mut reply.value);
            }
            reply.arg = next.map_or(0, |n| n as u64);
            reply
        }
        _ => frame.error_reply(Status::UnknownOpcode, "not served by a slave"),
    }
}
