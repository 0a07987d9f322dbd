//! The slave operations (opcodes 0x20..=0x3F, and direct requests): one function per
//! group: reads and writes of keys, bulk chunks, table operations (absorb, split, drop,
//! transfer, clear), flush markers, counts; and the batch that logs writes arriving
//! together with one append.

use std::time::Duration;

use byteorder::{ByteOrder, NetworkEndian};

use super::data::{Data, Updated};
use super::direct::Forwarder;
use super::{Node, connect_with};
use crate::client::ClientError;
use crate::ring::RangeSet;
use crate::store::{Applied, Cursor, Entry, Store, Table, Version};
use crate::update::{Decision, Update};
use crate::wal::{RangeOp, WalError};
use crate::wire::{self, BulkEntry, Frame, Opcode, Status, TableSel};

/// Largest bulk chunk a slave sends in one `BulkGet` reply.
pub const BULK_CHUNK_BYTES: usize = 1024 * 1024;

fn table_of(frame: &Frame) -> Option<Table> {
    match frame.table {
        TableSel::Own => Some(Table::Own),
        TableSel::Previous => Some(Table::Previous),
        TableSel::None => None,
    }
}

/// Serves one slave operation against the store, or a direct read: dispatches to one
/// function per group. Direct writes and `Forward`s are not served here but by the
/// connection's [`Batch`], which pipelines them.
pub fn serve_frame(node: &Node, frame: Frame) -> Frame {
    match frame.opcode {
        Opcode::Ping => frame.reply(Status::Ok),
        Opcode::SlaveStats => counts(&node.data, &frame),
        Opcode::Get => node.direct.get(node, &frame),
        // Never reaches here from a connection (its batch takes these first).
        Opcode::Put | Opcode::Delete | Opcode::Forward => frame.error_reply(
            Status::ServerError,
            "direct writes and forwards are served by their connection's batch",
        ),
        Opcode::SetView => node.direct.set_view(node, &frame),
        Opcode::Status
        | Opcode::Register
        | Opcode::Deregister
        | Opcode::RingGet
        | Opcode::Update
        | Opcode::Flush
        | Opcode::MultiGet => frame.error_reply(
            Status::Invalid,
            "this is a slave: send this request to the coordinator",
        ),
        Opcode::Clear => match node.data.clear() {
            Ok(_) => frame.reply(Status::Ok),
            Err(e) => storage_error(&frame, &e),
        },
        Opcode::SlaveFlush => flush(node, &frame),
        Opcode::SlaveCollect => collect(node, &frame),
        Opcode::SlaveMultiGet => multi_get(node, &frame),
        Opcode::SlaveGet if frame.table == TableSel::None && !frame.key.is_empty() => {
            entry_reply(&frame, node.data.store.read(None, &frame.key))
        }
        Opcode::SlaveGet
        | Opcode::SlavePut
        | Opcode::SlavePutEx
        | Opcode::SlaveDelete
        | Opcode::SlaveUpdate => with_table(frame, |frame, table| key_op(node, frame, table)),
        Opcode::BulkPut | Opcode::BulkGet => {
            with_table(frame, |frame, table| bulk(node, frame, table))
        }
        Opcode::Absorb | Opcode::Demote | Opcode::DropArc | Opcode::Transfer => {
            with_table(frame, |frame, table| table_op(node, frame, table))
        }
        _ => frame.error_reply(Status::UnknownOpcode, "not served by a slave"),
    }
}

/// Serves an operation that addresses table 1 or 2 (the table rule: anything else is
/// `INVALID`).
fn with_table(frame: Frame, serve: impl FnOnce(Frame, Table) -> Frame) -> Frame {
    match table_of(&frame) {
        Some(table) => serve(frame, table),
        None => frame.error_reply(Status::Invalid, "table must be 1 (own) or 2 (previous)"),
    }
}

/// SLAVE_STATS: live keys and tombstones of both tables.
fn counts(data: &Data, frame: &Frame) -> Frame {
    let (own, previous) = data.store.counts();
    let activity = &data.activity;
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let counts = wire::SlaveCounts {
        own_live: own.live,
        own_tombstones: own.tombstones,
        previous_live: previous.live,
        previous_tombstones: previous.tombstones,
        purged: load(&activity.purged),
        collected_tombstones: load(&activity.collected_tombstones),
        collected_values: load(&activity.collected_values),
        last_compaction: load(&activity.last_compaction),
    };
    let mut reply = frame.reply(Status::Ok);
    reply.value = counts.encode();
    reply
}

/// SLAVE_FLUSH: a `flush_all` marker, logged.
fn flush(node: &Node, frame: &Frame) -> Frame {
    let data = &*node.data;
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
    match data.flush(marker) {
        Ok(()) => frame.reply(Status::Ok),
        Err(e) => storage_error(frame, &e),
    }
}

/// SLAVE_COLLECT: drop what is older than the horizon (arg): tombstones and expired
/// values, in memory; with the forget flag, every entry, logged.
fn collect(node: &Node, frame: &Frame) -> Frame {
    let horizon = Version(frame.arg);
    let started = std::time::Instant::now();
    let collected = if frame.flags & wire::COLLECT_FORGET != 0 {
        match node.data.forget(horizon) {
            Ok(forgotten) => {
                log::info!(
                    "forgot {} values and {} tombstones older than version {} before joining",
                    forgotten.values,
                    forgotten.tombstones,
                    horizon.0
                );
                forgotten
            }
            Err(e) => return storage_error(frame, &e),
        }
    } else {
        let collected = node.data.collect(horizon);
        log::debug!(
            "collected {} tombstones and {} expired values older than version {} in {} ms",
            collected.tombstones,
            collected.values,
            horizon.0,
            started.elapsed().as_millis()
        );
        collected
    };
    let mut reply = frame.reply(Status::Ok);
    reply.arg = collected.total();
    let mut value = [0u8; 16];
    NetworkEndian::write_u64(&mut value[0..], collected.tombstones);
    NetworkEndian::write_u64(&mut value[8..], collected.values);
    reply.value = value.to_vec();
    reply
}

/// SLAVE_MULTI_GET: many keys of a table (or the newer of both), read under one lock.
fn multi_get(node: &Node, frame: &Frame) -> Frame {
    let (store, limits, table) = (&node.data.store, &node.limits, table_of(frame));
    let keys = match wire::unpack_keys(&frame.value, limits.max_key) {
        Ok(keys) => keys,
        Err(e) => return frame.error_reply(Status::Invalid, &e.to_string()),
    };
    let now = crate::store::now_micros();
    let mut reply = frame.reply(Status::Ok);
    // Room for small values without growing; larger ones grow it as they come.
    reply.value = Vec::with_capacity(keys.len() * (wire::MULTI_GET_HIT_HEADER + 128));
    let too_large = store.with_tables_shared(|tables| {
        for key in &keys {
            match tables.read_visible(table, key, now) {
                Some(item) => wire::pack_hit(
                    &mut reply.value,
                    item.version(),
                    item.flags(),
                    u64::from(item.expires()),
                    item.value().unwrap_or_default(),
                ),
                None => wire::pack_result(&mut reply.value, None),
            }
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
    reply
}

/// SLAVE_GET, SLAVE_PUT(_EX), SLAVE_DELETE (outside a batch) and SLAVE_UPDATE of one key.
fn key_op(node: &Node, frame: Frame, table: Table) -> Frame {
    let (data, limits) = (&*node.data, &node.limits);
    let store = &data.store;
    if frame.key.is_empty() {
        return frame.error_reply(Status::Invalid, "empty key");
    }
    match frame.opcode {
        Opcode::SlaveGet => entry_reply(&frame, store.read(Some(table), &frame.key)),
        Opcode::SlavePut | Opcode::SlavePutEx | Opcode::SlaveDelete => {
            let (frame, table, entry) = match write_of(frame, table) {
                Ok(write) => write,
                Err(reply) => return reply,
            };
            let applied = data.write(table, &frame.key, entry);
            write_reply(store, &frame, table, applied)
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
        _ => frame.error_reply(Status::UnknownOpcode, "not a key operation"),
    }
}

/// BULK_PUT and BULK_GET: chunks of packed entries.
fn bulk(node: &Node, frame: Frame, table: Table) -> Frame {
    let (data, limits) = (&*node.data, &node.limits);
    let store = &data.store;
    match frame.opcode {
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
            let (entries, next) = store.chunk(table, Cursor(frame.arg), BULK_CHUNK_BYTES);
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
            reply.arg = next.map_or(0, |n| n.0);
            reply
        }
        _ => frame.error_reply(Status::UnknownOpcode, "not a bulk operation"),
    }
}

/// ABSORB, DEMOTE, DROP_ARC and TRANSFER: operations on the entries of a table inside a
/// set of arcs.
fn table_op(node: &Node, frame: Frame, table: Table) -> Frame {
    let data = &*node.data;
    let store = &data.store;
    let Some(arcs) = wire::decode_arcs(&frame.value) else {
        return frame.error_reply(
            Status::Invalid,
            "a set of arcs is a count (u32), then a start and an end (u64) per arc",
        );
    };
    let mut reply = frame.reply(Status::Ok);
    let done = match (frame.opcode, arcs) {
        (Opcode::Transfer, arcs) => {
            let set = arcs.as_deref().map(RangeSet::from_arcs);
            let filter = move |key: &[u8]| set.as_ref().is_none_or(|set| set.contains_key(key));
            return match transfer(store, table, filter, &frame, node.secret.as_deref()) {
                Ok((keys, bytes)) => {
                    reply.arg = keys;
                    reply.value = bytes.to_be_bytes().to_vec();
                    reply
                }
                Err(e @ TransferError::TargetTable) => {
                    frame.error_reply(Status::Invalid, &e.to_string())
                }
                Err(e) => frame.error_reply(Status::Unavailable, &e.to_string()),
            };
        }
        (Opcode::Absorb, Some(arcs)) => data.ranges(RangeOp::Absorb, arcs),
        (Opcode::Demote, Some(arcs)) => data.ranges(RangeOp::Demote, arcs),
        (Opcode::DropArc, Some(arcs)) => data.ranges(RangeOp::Drop(table), arcs),
        _ => return frame.error_reply(Status::Invalid, "this operation needs a set of arcs"),
    };
    match done {
        Ok(count) => {
            reply.arg = count;
            reply
        }
        Err(e) => storage_error(&frame, &e),
    }
}

/// A SLAVE_PUT, SLAVE_PUT_EX or SLAVE_DELETE as the entry it writes (the frame keeps its
/// key, for the reply), or the error reply.
fn write_of(mut frame: Frame, table: Table) -> Result<(Frame, Table, Entry), Frame> {
    let mut entry = Entry::tombstone(Version(frame.arg));
    entry.flags = frame.flags;
    if frame.opcode == Opcode::SlavePutEx {
        let Some(expires) = frame.value.first_chunk::<8>() else {
            return Err(frame.error_reply(Status::Invalid, "an expiry (u64) comes first"));
        };
        entry.expires = u64::from_be_bytes(*expires);
        frame.value.drain(..8);
    }
    if frame.opcode != Opcode::SlaveDelete {
        entry.value = Some(std::mem::take(&mut frame.value));
    }
    Ok((frame, table, entry))
}

/// The reply to a write: `OK` (a delete of nothing: `NOT_FOUND`), arg = the version the
/// table holds now.
fn write_reply(
    store: &Store,
    frame: &Frame,
    table: Table,
    applied: Result<Applied, WalError>,
) -> Frame {
    let applied = match applied {
        Ok(applied) => applied,
        Err(e) => return storage_error(frame, &e),
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

/// Writes that arrived together on one connection, logged with one append (and, with
/// `--fsync always`, one sync) when the first of them is answered, or before any other
/// request of the connection is served; likewise `Forward`s from a primary (one view
/// check, one append); and the connection's direct writes waiting for their replicas
/// (in its [`Forwarder`]).
#[derive(Default)]
pub(super) struct Batch {
    /// Writes not yet logged: the frame (for the reply), table and entry.
    waiting: Vec<(Frame, Table, Entry)>,
    /// Replies of the writes logged, in order, not yet taken.
    replies: std::collections::VecDeque<Frame>,
    /// `Forward`s not yet applied.
    forwards: Vec<Frame>,
    /// Replies of the forwards applied, in order, not yet taken.
    forward_replies: std::collections::VecDeque<Frame>,
    /// The connection's links to replicas, and its direct writes forwarded on them.
    forwarder: Forwarder,
}

/// A request of a slave connection: answered, a write in the connection's [`Batch`], or
/// a direct write waiting for its replica.
pub(super) enum SlaveSlot {
    Answered(Frame),
    Batched,
    /// A `Forward` in the batch (this slave is the key's replica).
    ForwardBatched,
    Forwarded,
}

/// A slave's requests have nothing buffered elsewhere: direct writes' forwards are sent
/// on by [`Forwarder::settle`] in `finish`.
impl crate::server::UnderWay for SlaveSlot {}

impl Batch {
    /// Checks and applies every waiting `Forward`, keeping their replies.
    fn commit_forwards(&mut self, node: &Node) {
        if self.forwards.is_empty() {
            return;
        }
        let forwards = std::mem::take(&mut self.forwards);
        self.forward_replies
            .extend(node.direct.serve_forwards(node, forwards));
    }

    /// Logs and applies every waiting write, keeping their replies.
    fn commit(&mut self, data: &Data) {
        if self.waiting.is_empty() {
            return;
        }
        let (heads, entries): (Vec<(Frame, Table)>, Vec<Entry>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|(frame, table, entry)| ((frame, table), entry))
            .unzip();
        let writes: Vec<(Table, &[u8], Entry)> = heads
            .iter()
            .zip(entries)
            .map(|((frame, table), entry)| (*table, frame.key.as_slice(), entry))
            .collect();
        match data.write_many(writes) {
            Ok(applied) => {
                for ((frame, table), applied) in heads.iter().zip(applied) {
                    self.replies
                        .push_back(write_reply(&data.store, frame, *table, Ok(applied)));
                }
            }
            Err(e) => {
                for (frame, _) in &heads {
                    self.replies.push_back(storage_error(frame, &e));
                }
            }
        }
    }

    /// Starts serving a request: a plain write joins the batch; anything else first logs
    /// the batch (so it sees those writes), then is served.
    pub(super) fn begin(&mut self, node: &Node, frame: Frame) -> SlaveSlot {
        if frame.opcode == Opcode::Forward {
            self.commit(&node.data);
            self.forwards.push(frame);
            return SlaveSlot::ForwardBatched;
        }
        self.commit_forwards(node);
        let table = table_of(&frame);
        if matches!(
            frame.opcode,
            Opcode::SlavePut | Opcode::SlavePutEx | Opcode::SlaveDelete
        ) && !frame.key.is_empty()
            && let Some(table) = table
        {
            return match write_of(frame, table) {
                Ok(write) => {
                    self.waiting.push(write);
                    SlaveSlot::Batched
                }
                Err(reply) => {
                    self.commit(&node.data);
                    SlaveSlot::Answered(reply)
                }
            };
        }
        self.commit(&node.data);
        match frame.opcode {
            // Direct writes are pipelined: forwarded and applied now, answered later.
            Opcode::Put | Opcode::Delete => {
                return match node.direct.begin_write(node, frame, &mut self.forwarder) {
                    Some(reply) => SlaveSlot::Answered(reply),
                    None => SlaveSlot::Forwarded,
                };
            }
            // A direct read sees the writes applied here before it.
            Opcode::Get => {}
            _ => self.forwarder.settle(node),
        }
        SlaveSlot::Answered(serve_frame(node, frame))
    }

    /// The reply of a request begun with [`Batch::begin`], in order. Direct writes under
    /// way are settled first, so no reply is written while one holds its view.
    pub(super) fn finish(&mut self, node: &Node, slot: SlaveSlot) -> Frame {
        let data = &*node.data;
        self.forwarder.settle(node);
        match slot {
            SlaveSlot::Answered(reply) => reply,
            SlaveSlot::Forwarded => self.forwarder.take_reply(),
            SlaveSlot::ForwardBatched => {
                if self.forward_replies.is_empty() {
                    self.commit_forwards(node);
                }
                self.forward_replies
                    .pop_front()
                    .unwrap_or_else(|| lost_reply(Opcode::Forward, "a batched forward"))
            }
            SlaveSlot::Batched => {
                if self.replies.is_empty() {
                    self.commit(data);
                }
                self.replies
                    .pop_front()
                    .unwrap_or_else(|| lost_reply(Opcode::SlavePut, "a batched write"))
            }
        }
    }
}

/// The reply for a request whose own reply went missing (`what` lost its reply): a
/// server error, never a panic. Nothing should ever send it.
pub(super) fn lost_reply(opcode: Opcode, what: &str) -> Frame {
    Frame::request(opcode, 0, Vec::new(), Vec::new())
        .error_reply(Status::ServerError, &format!("{what} lost its reply"))
}

/// Whether `key` held a live value around a write that `applied` describes: before it, if
/// it was applied; now, if a newer write had already decided the key's fate.
pub(super) fn live_after(store: &Store, table: Table, key: &[u8], applied: Applied) -> bool {
    match applied {
        Applied::Applied { was_live } => was_live,
        Applied::Stale { .. } => store.is_live(table, key),
    }
}

/// The reply when the log could not take a mutation: the write is not acknowledged.
pub(super) fn storage_error(frame: &Frame, error: &WalError) -> Frame {
    log::error!("cannot make a write durable: {error}");
    frame.error_reply(Status::ServerError, &format!("slave storage: {error}"))
}

/// The reply to a read: the value, or `NotFound` (with a tombstone's version in `arg`).
/// With flags bit 0 set in the request, the value is preceded by its expiry (u64, Unix
/// seconds, 0 never).
pub(super) fn entry_reply(frame: &Frame, entry: Option<Entry>) -> Frame {
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

/// Why a TRANSFER did not complete.
#[derive(Debug)]
pub enum TransferError {
    /// The frame's flags name no table to write to on the target.
    TargetTable,
    /// The target could not be reached, or failed or refused a chunk.
    Target {
        /// Its address.
        target: String,
        /// What went wrong.
        error: ClientError,
    },
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::TargetTable => {
                write!(f, "target table (flags) must be 1 (own) or 2 (previous)")
            }
            TransferError::Target { target, error } => write!(f, "{target}: {error}"),
        }
    }
}

/// Sends the entries of `table` that pass `filter` to another slave (the frame's key is
/// its address; its flags, the table there), in `BulkPut` chunks of at most
/// [`BULK_CHUNK_BYTES`]. The table is walked in steps ([`Store::scan`]), each a short hold
/// of the store's lock, so writes to this slave go on while the transfer runs.
///
/// Why nothing is missed: a walk visits every entry present for its whole length exactly
/// once (see [`crate::store::Cursor`]), in its state at that step. A write that lands
/// during the walk may be behind the cursor and not sent; but the coordinator starts
/// sending writes for the moving range to the target before it asks for the transfer
/// (`coordinator::recovery`: "writes start going to both the old and the new places"),
/// so the target receives that write itself. The target merges by version, so an entry
/// it gets both ways (or an older copy after a newer one) changes nothing.
fn transfer(
    store: &Store,
    table: Table,
    filter: impl Fn(&[u8]) -> bool,
    frame: &Frame,
    secret: Option<&[u8]>,
) -> Result<(u64, u64), TransferError> {
    let target_table = match TableSel::from_u8(frame.flags as u8) {
        Some(TableSel::Own) => TableSel::Own,
        Some(TableSel::Previous) => TableSel::Previous,
        _ => return Err(TransferError::TargetTable),
    };
    let target = String::from_utf8_lossy(&frame.key).into_owned();
    let failed = |error| TransferError::Target {
        target: target.clone(),
        error,
    };
    let mut client = connect_with(&target, secret).map_err(failed)?;
    client
        .set_timeout(Duration::from_secs(120))
        .map_err(failed)?;
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut chunk = Vec::new();
    let mut send = |chunk: &mut Vec<u8>| -> Result<(), TransferError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut request = Frame::request(Opcode::BulkPut, 0, Vec::new(), std::mem::take(chunk));
        request.table = target_table;
        let reply = client.call(request).map_err(failed)?;
        if reply.status != Status::Ok {
            return Err(failed(ClientError::Server {
                status: reply.status,
                message: reply.value_text(),
            }));
        }
        Ok(())
    };
    let mut cursor = Some(Cursor::START);
    while let Some(at) = cursor {
        let (entries, next) = store.scan(table, at, &filter);
        cursor = next;
        for (key, entry) in entries {
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
