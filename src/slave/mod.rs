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

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{info, warn};

use crate::client::{Client, ClientError};
use crate::config::SlaveConfig;
use crate::ring::{Token, in_arc, key_hash};
use crate::server;
use crate::shutdown::Shutdown;
use crate::store::{Applied, Entry, FlushMarker, Store, Table, Version};
use crate::update::{Decision, Update};
use crate::wal::WalError;
use crate::wire::{self, BulkEntry, Frame, Opcode, Status, TableSel, WireLimits};
use data::{Data, Updated};
use direct::{Direct, Forwarder};

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
    /// The session heartbeats must carry.
    pub session: u64,
    /// The coordinator's UDP heartbeat address.
    pub heartbeat: String,
    /// The `flush_all` markers in force.
    pub flushes: Vec<FlushMarker>,
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
        self.registration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
                    return Err(SlaveError::DataDir(format!(
                        "cannot log the coordinator's flush_all: {e}"
                    )));
                }
            }
        }
        *self.registration.lock().unwrap_or_else(|p| p.into_inner()) = registration.clone();
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
        match self.node.data.sync() {
            Ok(()) => info!("slave on {} stopped; log synced", self.addr),
            Err(e) => log::error!("slave on {} stopped, but {e}", self.addr),
        }
    }

    /// Leaves gracefully: asks the coordinator to hand this slave's ranges on (it keeps
    /// serving meanwhile), then stops and waits.
    pub fn leave(self, timeout: Duration) {
        if let Some(registration) = self.node.registration() {
            info!("leaving: asking the coordinator to hand our ranges on");
            match deregister(
                &self.node.coordinator,
                &registration,
                timeout,
                self.node.secret.as_deref(),
            ) {
                Ok(()) => info!("ranges handed on; stopping"),
                Err(e) => warn!("leaving without a hand-off: {e}"),
            }
        }
        self.shutdown.trigger();
        self.wait();
    }
}

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
    for addr in server::resolve(&config.listen, "slave address").map_err(SlaveError::Bind)? {
        config
            .security
            .check_bind(addr, "--listen")
            .map_err(SlaveError::Bind)?;
    }
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
    let data = Data::open(
        &data_dir,
        config.fsync,
        config.salvage,
        config.compact_min_bytes,
    )
    .map_err(|e| SlaveError::DataDir(e.to_string()))?;
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
        direct: Direct::new(config.heartbeat_interval),
    });

    // Serve before registering: the coordinator may send data as soon as it answers.
    let serve_shutdown = shutdown.clone();
    let server_limits = config.limits;
    let serve_node = Arc::clone(&node);
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
                    let limits = serve_node.limits;
                    let mut forwarder = Forwarder::default();
                    let guard = server::Guard {
                        secret: serve_node.secret.as_deref(),
                        needs_auth: |opcode| opcode != Opcode::Ping,
                    };
                    server::serve_frames(
                        stream,
                        peer,
                        &server_limits,
                        limits,
                        guard,
                        |frame| serve_frame(&serve_node, frame, &mut forwarder),
                        |reply| reply,
                    )
                },
            )
        })
        .map_err(|e| SlaveError::Bind(format!("cannot start the accept thread: {e}")))?;
    eprintln!("listening on {bound}");

    let syncer = match Data::start_syncer(&node.data, &shutdown) {
        Ok(syncer) => Some(syncer),
        Err(e) => {
            shutdown.trigger();
            let _ = acceptor.join();
            return Err(SlaveError::DataDir(format!(
                "cannot start the log sync thread: {e}"
            )));
        }
    };
    let stop = |e: SlaveError, acceptor: std::thread::JoinHandle<()>| {
        shutdown.trigger();
        let _ = acceptor.join();
        Err(e)
    };
    let registration = match node.register(&shutdown) {
        Ok(registration) => registration,
        Err(e) => return stop(e, acceptor),
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
    let hb_node = Arc::clone(&node);
    let hb_shutdown = shutdown.clone();
    let interval = config.heartbeat_interval;
    let heartbeat = std::thread::Builder::new()
        .name("hb-send".into())
        .spawn(move || heartbeat::run(&hb_node, interval, &hb_shutdown));
    let heartbeat = match heartbeat {
        Ok(heartbeat) => heartbeat,
        Err(e) => {
            return stop(
                SlaveError::Bind(format!("cannot start the heartbeat thread: {e}")),
                acceptor,
            );
        }
    };
    Ok(Running {
        addr: bound,
        node,
        shutdown,
        acceptor,
        heartbeat,
        syncer,
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
    Ok(Registration {
        id: reply.flags,
        token: reply.arg,
        session: u64::from_be_bytes(*session),
        heartbeat: String::from_utf8_lossy(rest).into_owned(),
        flushes,
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

fn table_of(frame: &Frame) -> Option<Table> {
    match frame.table {
        TableSel::Own => Some(Table::Own),
        TableSel::Previous => Some(Table::Previous),
        TableSel::None => None,
    }
}

/// Serves one slave operation against the store, or a direct request (`forwarder` is the
/// connection's link to our successor).
pub fn serve_frame(node: &Node, frame: Frame, forwarder: &mut Forwarder) -> Frame {
    let (data, limits) = (&*node.data, &node.limits);
    let store = &data.store;
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
        Opcode::Get | Opcode::Put | Opcode::Delete => {
            return node.direct.serve(node, frame, forwarder);
        }
        Opcode::Forward => return node.direct.serve_forward(node, frame),
        Opcode::SetView => return node.direct.set_view(node, &frame),
        Opcode::Status
        | Opcode::Register
        | Opcode::Deregister
        | Opcode::RingGet
        | Opcode::Update
        | Opcode::Flush => {
            return frame.error_reply(
                Status::Invalid,
                "this is a slave: send this request to the coordinator",
            );
        }
        _ => {}
    }
    if frame.opcode == Opcode::Clear {
        return match data.clear() {
            Ok(_) => frame.reply(Status::Ok),
            Err(e) => storage_error(&frame, &e),
        };
    }
    if frame.opcode == Opcode::SlaveFlush {
        let Some(at) = frame.value.first_chunk::<8>() else {
            return frame.error_reply(Status::Invalid, "a flush carries its time (u64)");
        };
        let marker = crate::store::FlushMarker {
            threshold: frame.arg,
            at: u64::from_be_bytes(*at),
        };
        if marker.at == 0 {
            // Direct writes from now on must be newer than the flush. (A delayed flush's
            // threshold is the wall clock at its time: the clock passes it by itself.)
            node.direct.observe(marker.threshold);
        }
        return match data.flush(marker) {
            Ok(()) => frame.reply(Status::Ok),
            Err(e) => storage_error(&frame, &e),
        };
    }
    if frame.opcode == Opcode::SlaveMultiGet {
        let keys = match wire::unpack_keys(&frame.value, limits.max_key) {
            Ok(keys) => keys,
            Err(e) => return frame.error_reply(Status::Invalid, &e),
        };
        let now = crate::store::now_micros();
        let mut reply = frame.reply(Status::Ok);
        let too_large = store.with_tables(|tables| {
            for key in &keys {
                let hit = tables.read(table, key, now).and_then(|entry| {
                    entry.value.map(|value| wire::MultiGetHit {
                        version: entry.version.0,
                        flags: entry.flags,
                        expires: entry.expires,
                        value,
                    })
                });
                wire::pack_result(&mut reply.value, hit.as_ref());
                if reply.value.len() > wire::MAX_BULK_VALUE {
                    return true;
                }
            }
            false
        });
        if too_large {
            return frame.error_reply(
                Status::TooLarge,
                "the values asked for are over 8 MiB: ask fewer keys at once",
            );
        }
        return reply;
    }
    if frame.opcode == Opcode::SlaveGet && frame.table == TableSel::None && !frame.key.is_empty() {
        return entry_reply(&frame, store.read(None, &frame.key));
    }
    let Some(table) = table else {
        return frame.error_reply(Status::Invalid, "table must be 1 (own) or 2 (previous)");
    };
    let needs_key = matches!(
        frame.opcode,
        Opcode::SlaveGet
            | Opcode::SlavePut
            | Opcode::SlavePutEx
            | Opcode::SlaveDelete
            | Opcode::SlaveUpdate
    );
    if needs_key && frame.key.is_empty() {
        return frame.error_reply(Status::Invalid, "empty key");
    }
    match frame.opcode {
        Opcode::SlaveGet => entry_reply(&frame, store.read(Some(table), &frame.key)),
        Opcode::SlavePut | Opcode::SlavePutEx | Opcode::SlaveDelete => {
            let mut frame = frame;
            let mut entry = Entry::tombstone(Version(frame.arg));
            entry.flags = frame.flags;
            if frame.opcode == Opcode::SlavePutEx {
                let Some(expires) = frame.value.first_chunk::<8>() else {
                    return frame.error_reply(Status::Invalid, "an expiry (u64) comes first");
                };
                entry.expires = u64::from_be_bytes(*expires);
                frame.value.drain(..8);
            }
            if frame.opcode != Opcode::SlaveDelete {
                entry.value = Some(std::mem::take(&mut frame.value));
            }
            let applied = match data.write(table, &frame.key, entry) {
                Ok(applied) => applied,
                Err(e) => return storage_error(&frame, &e),
            };
            let live = live_after(store, table, &frame.key, applied);
            let current = match applied {
                Applied::Applied { .. } => frame.arg,
                Applied::Stale { current } => current.0,
            };
            let status = if frame.opcode == Opcode::SlaveDelete && !live {
                Status::NotFound
            } else {
                Status::Ok
            };
            let mut reply = frame.reply(status);
            reply.arg = current;
            reply
        }
        Opcode::SlaveUpdate => {
            let Some(update) = Update::decode(&frame.value) else {
                return frame.error_reply(Status::Invalid, "malformed update operation");
            };
            match data.update(
                table,
                &frame.key,
                Version(frame.arg),
                &update,
                limits.max_value,
            ) {
                Ok(Updated::Written(entry)) => {
                    let mut reply = frame.reply(Status::Ok);
                    reply.arg = entry.version.0;
                    reply.flags = entry.flags;
                    reply.value = crate::update::encode_entry(&entry);
                    reply
                }
                Ok(Updated::Stale(held)) => {
                    let mut reply = frame.reply(Status::Stale);
                    reply.arg = held.0;
                    reply
                }
                Ok(Updated::Refused(decision)) => frame.reply(match decision {
                    Decision::NotFound => Status::NotFound,
                    Decision::NotStored => Status::NotStored,
                    Decision::Exists => Status::Exists,
                    Decision::NonNumeric => Status::NonNumeric,
                    Decision::TooLarge | Decision::Write(_) => Status::TooLarge,
                }),
                Err(e) => storage_error(&frame, &e),
            }
        }
        Opcode::BulkPut => match wire::unpack_bulk(&frame.value, limits) {
            Ok(entries) => {
                let entries: Vec<(Vec<u8>, Entry)> = entries
                    .into_iter()
                    .map(|e| {
                        (
                            e.key,
                            Entry {
                                version: Version(e.version),
                                flags: e.flags,
                                expires: e.expires,
                                value: e.value,
                            },
                        )
                    })
                    .collect();
                match data.apply_all(table, &entries) {
                    Ok(applied) => {
                        let mut reply = frame.reply(Status::Ok);
                        reply.arg = applied;
                        reply
                    }
                    Err(e) => storage_error(&frame, &e),
                }
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
                    expires: entry.expires,
                    value: entry.value,
                }
                .pack_into(&mut reply.value);
            }
            reply.arg = next.map_or(0, |n| n as u64);
            reply
        }
        Opcode::Absorb | Opcode::Split | Opcode::DropArc | Opcode::Transfer => {
            let Some(arc) = wire::decode_arc(&frame.value) else {
                return frame.error_reply(Status::Invalid, "an arc is 16 bytes: start, end");
            };
            let inside = move |key: &[u8]| {
                arc.is_some_and(|(start, end)| in_arc(key_hash(key), Token(start), Token(end)))
            };
            let mut reply = frame.reply(Status::Ok);
            let done = match (frame.opcode, arc) {
                // Everything in previous outside the arc (with no arc: everything).
                (Opcode::Absorb, arc) => data.absorb(arc),
                (Opcode::Split, Some(arc)) => data.split(arc),
                (Opcode::DropArc, Some(arc)) => data.drop_arc(table, arc),
                (Opcode::Transfer, _) => {
                    let filter = move |key: &[u8]| arc.is_none() || inside(key);
                    return match transfer(store, table, filter, &frame, node.secret.as_deref()) {
                        Ok((keys, bytes)) => {
                            reply.arg = keys;
                            reply.value = bytes.to_be_bytes().to_vec();
                            reply
                        }
                        Err(e) => frame.error_reply(Status::Unavailable, &e),
                    };
                }
                _ => return frame.error_reply(Status::Invalid, "this operation needs an arc"),
            };
            match done {
                Ok(count) => {
                    reply.arg = count;
                    reply
                }
                Err(e) => storage_error(&frame, &e),
            }
        }
        _ => frame.error_reply(Status::UnknownOpcode, "not served by a slave"),
    }
}

/// Whether `key` held a live value around a write that `applied` describes: before it, if
/// it was applied; now, if a newer write had already decided the key's fate.
fn live_after(store: &Store, table: Table, key: &[u8], applied: Applied) -> bool {
    match applied {
        Applied::Applied { was_live } => was_live,
        Applied::Stale { .. } => store.is_live(table, key),
    }
}

/// The reply when the log could not take a mutation: the write is not acknowledged.
fn storage_error(frame: &Frame, error: &WalError) -> Frame {
    log::error!("cannot make a write durable: {error}");
    frame.error_reply(Status::ServerError, &format!("slave storage: {error}"))
}

/// The reply to a read: the value, or `NotFound` (with a tombstone's version in `arg`).
/// With flags bit 0 set in the request, the value is preceded by its expiry (u64, Unix
/// seconds, 0 never).
fn entry_reply(frame: &Frame, entry: Option<Entry>) -> Frame {
    match entry {
        Some(Entry {
            version,
            flags,
            expires,
            value: Some(value),
        }) => {
            let mut reply = frame.reply(Status::Ok);
            reply.arg = version.0;
            reply.flags = flags;
            reply.value = if frame.flags & WITH_EXPIRY != 0 {
                let mut with = Vec::with_capacity(8 + value.len());
                with.extend_from_slice(&expires.to_be_bytes());
                with.extend_from_slice(&value);
                with
            } else {
                value
            };
            reply
        }
        Some(Entry { version, .. }) => {
            let mut reply = frame.reply(Status::NotFound);
            reply.arg = version.0;
            reply
        }
        None => frame.reply(Status::NotFound),
    }
}

/// `SlaveGet` request flag: put the expiry in front of the value in the reply.
pub const WITH_EXPIRY: u32 = 1;

/// Entries per `BulkPut` chunk at most, and bytes.
const TRANSFER_CHUNK_KEYS: usize = 4096;

/// Sends the entries of `table` that pass `filter` to another slave (the frame's key is
/// its address; its flags, the table there), in `BulkPut` chunks. The keys are listed
/// first, then read in batches, so the table is never locked for long and no key present
/// at the start is missed; writes that arrive meanwhile reach the target directly.
fn transfer(
    store: &Store,
    table: Table,
    filter: impl Fn(&[u8]) -> bool,
    frame: &Frame,
    secret: Option<&[u8]>,
) -> Result<(u64, u64), String> {
    let target_table = match TableSel::from_u8(frame.flags as u8) {
        Some(TableSel::Own) => TableSel::Own,
        Some(TableSel::Previous) => TableSel::Previous,
        _ => return Err("target table must be 1 (own) or 2 (previous)".into()),
    };
    let target = String::from_utf8_lossy(&frame.key).into_owned();
    let mut client = connect_with(&target, secret).map_err(|e| e.to_string())?;
    client
        .set_timeout(Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    let keys = store.keys_where(table, filter);
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut chunk = Vec::new();
    let mut send = |chunk: &mut Vec<u8>| -> Result<(), String> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut request = Frame::request(Opcode::BulkPut, 0, Vec::new(), std::mem::take(chunk));
        request.table = target_table;
        let reply = client.call(request).map_err(|e| e.to_string())?;
        if reply.status != Status::Ok {
            return Err(format!(
                "{target} answered {}: {}",
                reply.status.name(),
                reply.value_text()
            ));
        }
        Ok(())
    };
    for batch in keys.chunks(TRANSFER_CHUNK_KEYS) {
        for (key, entry) in store.entries(table, batch) {
            let entry = BulkEntry {
                key,
                version: entry.version.0,
                flags: entry.flags,
                expires: entry.expires,
                value: entry.value,
            };
            if chunk.len() + entry.packed_len() > BULK_CHUNK_BYTES {
                send(&mut chunk)?;
            }
            sent += 1;
            bytes += entry.packed_len() as u64;
            entry.pack_into(&mut chunk);
        }
    }
    send(&mut chunk)?;
    Ok((sent, bytes))
}
