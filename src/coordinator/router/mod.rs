//! Serves client [`Request`]s: finds the key's primary and replica on the ring, assigns
//! write versions, fans writes out to both replicas in parallel and waits for both, and
//! reads from the primary with the replica as fallback.
//!
//! Rules (README.md, "Consistency"):
//! - every write gets a fresh version from a [`VersionClock`]; slaves keep the newest version
//!   of a key, so concurrent writes end in the same value on both replicas;
//! - a write is acknowledged only when every slave that must hold it applied it: the
//!   key's primary and replica, and while a slave joins, its future place too. A slave that
//!   does not answer is declared dead at once; the write then waits for the ring to change
//!   and is sent again, with the same version, to the new placement, until it succeeds or
//!   the write timeout passes (then the client gets an error and may retry);
//! - a read asks the primary's `own`; if the primary cannot be reached, the replica's
//!   `previous`. While ranges are being moved after a failure, a read asks both tables of
//!   the primary and takes the newest version.
//!
//! No lock is held across slave I/O: routes are looked up under the membership lock and
//! the I/O happens after it is released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::clock::{self, VersionClock};
use crate::coordinator::membership::NO_SLAVES;
use crate::coordinator::membership::{Membership, Route, WriteTicket};
use crate::link::{LinkError, PendingReply, SlaveHandle};
use crate::request::{Failure, Found, Outcome, Request, StoreMode, expires_at, unix_now};
use crate::ring::SlaveId;
use crate::ring::key_hash;
use crate::slave::WITH_EXPIRY;
use crate::store::{Entry, FlushMarker, Version, now_micros};
use crate::update::{self, Op, Update, decode_entry};
use crate::wire::{self, Frame, Opcode, Status, TableSel};

mod multi_get;
mod rmw;

pub use multi_get::MULTI_GET_BATCH;
use rmw::entry_frame;

/// Counters the memcached `stats` command reports.
#[derive(Default)]
pub struct Counters {
    /// `get` keys asked for.
    pub cmd_get: AtomicU64,
    /// Storage commands.
    pub cmd_set: AtomicU64,
    /// `flush_all` commands.
    pub cmd_flush: AtomicU64,
    /// `touch`/`gat` commands.
    pub cmd_touch: AtomicU64,
    /// `get` keys found.
    pub get_hits: AtomicU64,
    /// `get` keys not found.
    pub get_misses: AtomicU64,
    /// `delete` commands.
    pub cmd_delete: AtomicU64,
    /// `delete` of a present key.
    pub delete_hits: AtomicU64,
    /// `delete` of a missing key.
    pub delete_misses: AtomicU64,
    /// `incr` of a present key.
    pub incr_hits: AtomicU64,
    /// `incr` of a missing key.
    pub incr_misses: AtomicU64,
    /// `decr` of a present key.
    pub decr_hits: AtomicU64,
    /// `decr` of a missing key.
    pub decr_misses: AtomicU64,
    /// `cas` that stored.
    pub cas_hits: AtomicU64,
    /// `cas` of a missing key.
    pub cas_misses: AtomicU64,
    /// `cas` with a stale unique.
    pub cas_badval: AtomicU64,
    /// `touch` of a present key.
    pub touch_hits: AtomicU64,
    /// `touch` of a missing key.
    pub touch_misses: AtomicU64,
}

impl Counters {
    /// Sets every counter to zero (`stats reset`).
    pub fn reset(&self) {
        for counter in [
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_flush,
            &self.cmd_touch,
            &self.get_hits,
            &self.get_misses,
            &self.cmd_delete,
            &self.delete_hits,
            &self.delete_misses,
            &self.incr_hits,
            &self.incr_misses,
            &self.decr_hits,
            &self.decr_misses,
            &self.cas_hits,
            &self.cas_misses,
            &self.cas_badval,
            &self.touch_hits,
            &self.touch_misses,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Per-key locks for read-modify-writes: a key's operations take the lock of its stripe
/// for their whole run (decision at the primary, copies, retries), so each key has one
/// sequencer at a time.
const STRIPES: usize = 1024;

/// The request router.
pub struct Router {
    membership: std::sync::Arc<Membership>,
    clock: VersionClock,
    /// Counters for `stats`.
    pub counters: Counters,
    max_value_bytes: usize,
    write_timeout: Duration,
    stripes: Vec<Mutex<()>>,
}

impl Router {
    /// A router over `membership`.
    pub fn new(
        membership: std::sync::Arc<Membership>,
        max_value_bytes: usize,
        write_timeout: Duration,
    ) -> Router {
        Router {
            clock: VersionClock::new(membership.version_floor(), clock::COORDINATOR),
            membership,
            counters: Counters::default(),
            max_value_bytes,
            write_timeout,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Serves one request.
    pub fn serve(&self, request: Request) -> Outcome {
        let pending = self.begin(request);
        self.finish(pending)
    }

    /// Starts serving a request: a read or a plain write is sent to its slaves and left
    /// under way, so a connection can have many in flight ([`Router::finish`] collects
    /// each); anything else (read-modify-writes, flush) is served at once. Requests begun
    /// in order on one key take effect in that order: their frames reach the key's
    /// slaves in order on the links, and a slave serves a link's frames in order.
    pub fn begin(&self, request: Request) -> Pending<'_> {
        let started = match request {
            Request::Get { key } => self.begin_get(key),
            Request::Put { key, value, flags } => self.begin_put(key, value, flags, 0),
            Request::Store {
                mode: StoreMode::Set,
                key,
                value,
                flags,
                exptime,
                cas: 0,
            } => self.begin_put(key, value, flags, expires_at(exptime, unix_now())),
            Request::Delete { key, cas: 0 } => self.begin_delete(key),
            other => Ok(Pending::Done(self.serve_at_once(other))),
        };
        started.unwrap_or_else(|failure| Pending::Done(failure.into()))
    }

    /// Waits for a request begun with [`Router::begin`] and returns its outcome. A read
    /// whose primary failed asks the replica; a write whose slave failed is retried on
    /// the new placement, as [`Router::serve`] does.
    pub fn finish(&self, pending: Pending<'_>) -> Outcome {
        match pending {
            Pending::Done(outcome) => outcome,
            Pending::Get { key, route, sent } => {
                let reply = sent.and_then(|p| p.wait(route.primary.timeout()));
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => match self.read_replica(&route, &key, e) {
                        Ok(reply) => reply,
                        Err(failure) => return failure.into(),
                    },
                };
                self.found(reply)
            }
            Pending::Write {
                frame,
                targets,
                ticket,
                sent,
            } => {
                let delete = frame.opcode == Opcode::SlaveDelete;
                let (replies, failure) = self.collect_each(&targets, sent);
                drop(ticket);
                // Whether a delete found the key: the first time's answer of the key's
                // primary (the first target) or, if it failed, of the replica. A retry's
                // answer cannot say: later requests of the same pipeline may have changed
                // the key since.
                let primary_answered = replies.first().is_some_and(Option::is_some);
                let first_answer = replies.into_iter().flatten().next();
                let result = match (failure, &first_answer) {
                    (Some(Missed::Refused(refused)), _) => Err(refused),
                    (None, Some(primary)) if primary_answered && primary.arg > frame.arg => {
                        // Superseded at the primary: again, at a version above what it holds.
                        match self.next_version_above(primary.arg) {
                            Ok(version) => {
                                let mut frame = frame;
                                frame.arg = version;
                                self.write_all(frame, true)
                                    .map(|(replies, version)| (replies.into_iter().next(), version))
                            }
                            Err(failure) => Err(failure),
                        }
                    }
                    (None, _) => Ok((first_answer, frame.arg)),
                    // A slave failed: the same version, on the new placement.
                    (Some(Missed::Failed(_)), _) => {
                        let version = frame.arg;
                        self.write_all(frame, false).map(|(replies, _)| {
                            (first_answer.or_else(|| replies.into_iter().next()), version)
                        })
                    }
                };
                match result {
                    Ok((_, version)) if !delete => Outcome::Stored { version },
                    // The key's primary says whether it was there: a copy elsewhere may
                    // lag behind (a move under way, a retry pending).
                    Ok((Some(primary), _)) if primary.status == Status::Ok => {
                        self.counters.delete_hits.fetch_add(1, Ordering::Relaxed);
                        Outcome::Deleted
                    }
                    Ok(_) => {
                        self.counters.delete_misses.fetch_add(1, Ordering::Relaxed);
                        Outcome::NotFound
                    }
                    Err(failure) => failure.into(),
                }
            }
        }
    }

    fn next_version(&self) -> Result<u64, Failure> {
        self.next_version_above(0)
    }

    fn next_version_above(&self, stored: u64) -> Result<u64, Failure> {
        self.clock
            .next_above(stored, |floor| self.membership.reserve_versions(floor))
            .map_err(|e| Failure::Unavailable(format!("cannot save the version floor: {e}")))
    }

    fn route(&self, key: &[u8]) -> Result<Route, Failure> {
        check_key(key)?;
        self.membership
            .route(key)
            .map_err(|why| Failure::Unavailable(why.to_string()))
    }

    /// Every slave that must hold `key` now, with the ticket that counts a write to them
    /// as under way.
    fn write_targets(&self, key: &[u8]) -> Result<(Vec<Target>, WriteTicket<'_>), Failure> {
        self.membership
            .write_targets(key)
            .map_err(|why| Failure::Unavailable(why.to_string()))
    }

    fn begin_get(&self, key: Vec<u8>) -> Result<Pending<'_>, Failure> {
        self.counters.cmd_get.fetch_add(1, Ordering::Relaxed);
        let route = self.route(&key)?;
        let mut request = Frame::request(Opcode::SlaveGet, 0, key.clone(), Vec::new());
        // While ranges move between the primary's tables: the newer of both, read under
        // one lock on the slave.
        request.table = if route.recovering {
            TableSel::None
        } else {
            TableSel::Own
        };
        request.flags = WITH_EXPIRY;
        let sent = route.primary.send_deferred(request);
        Ok(Pending::Get { key, route, sent })
    }

    fn get(&self, key: &[u8]) -> Outcome {
        self.serve(Request::Get { key: key.to_vec() })
    }

    /// The outcome of a `SlaveGet` reply (with the expiry in front of the value).
    fn found(&self, reply: Frame) -> Outcome {
        match reply.status {
            Status::Ok => {
                let Some((expires, _)) = reply.value.split_first_chunk::<8>() else {
                    return Failure::Unavailable("a slave's read reply lacks the expiry".into())
                        .into();
                };
                let expires = u64::from_be_bytes(*expires);
                let mut value = reply.value;
                value.drain(..8);
                self.counters.get_hits.fetch_add(1, Ordering::Relaxed);
                Outcome::Found(Found {
                    value,
                    flags: reply.flags,
                    version: reply.arg,
                    expires,
                })
            }
            Status::NotFound => {
                self.counters.get_misses.fetch_add(1, Ordering::Relaxed);
                Outcome::NotFound
            }
            status => slave_refused(status, &reply).into(),
        }
    }

    /// A single get whose `cmd_get` was already counted.
    fn get_uncounted(&self, key: &[u8]) -> Outcome {
        self.counters.cmd_get.fetch_sub(1, Ordering::Relaxed);
        self.get(key)
    }

    /// The primary did not answer a read: it is declared dead, and the replica is asked
    /// for the newer of its two tables (it holds the key in `previous`, or in `own` once
    /// it has absorbed the failed primary's range), read under one lock.
    fn read_replica(
        &self,
        route: &Route,
        key: &[u8],
        primary_error: LinkError,
    ) -> Result<Frame, Failure> {
        self.membership
            .suspect(route.primary.id, &format!("a read failed: {primary_error}"));
        let Some(replica) = &route.replica else {
            return Err(unavailable(&route.primary, &primary_error));
        };
        debug!(
            "read from primary {} failed ({primary_error}); reading from replica {}",
            route.primary.addr, replica.addr
        );
        let mut request = Frame::request(Opcode::SlaveGet, 0, key.to_vec(), Vec::new());
        request.table = TableSel::None;
        request.flags = WITH_EXPIRY;
        replica.call(request).map_err(|e| {
            self.membership
                .suspect(replica.id, &format!("a read failed: {e}"));
            unavailable(replica, &e)
        })
    }

    /// A `set`: sent to every place at once, at a fresh version. A value over the limit
    /// is refused and, as memcached does, removes the key's old value.
    fn begin_put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
        expires: u64,
    ) -> Result<Pending<'_>, Failure> {
        self.counters.cmd_set.fetch_add(1, Ordering::Relaxed);
        check_key(&key)?;
        if value.len() > self.max_value_bytes {
            let _ = self.delete(key);
            return Err(Failure::TooLarge);
        }
        let version = self.next_version()?;
        let entry = Entry {
            version: Version(version),
            flags,
            expires,
            value: Some(value),
        };
        self.begin_write(entry_frame(key, entry))
    }

    fn begin_delete(&self, key: Vec<u8>) -> Result<Pending<'_>, Failure> {
        self.counters.cmd_delete.fetch_add(1, Ordering::Relaxed);
        check_key(&key)?;
        let version = self.next_version()?;
        self.begin_write(entry_frame(key, Entry::tombstone(Version(version))))
    }

    fn begin_write(&self, frame: Frame) -> Result<Pending<'_>, Failure> {
        let (targets, ticket) = self.write_targets(&frame.key)?;
        let sent = send_all(&targets, &frame, true);
        Ok(Pending::Write {
            frame,
            targets,
            ticket,
            sent,
        })
    }

    fn delete(&self, key: Vec<u8>) -> Outcome {
        self.serve(Request::Delete { key, cas: 0 })
    }

    /// Sends `frame` to every slave that must hold its key, all at once, and waits for all.
    /// A slave that fails is declared dead; the write then waits for the ring to change and
    /// tries again on the new placement (same version, so a repeat is harmless). With
    /// `may_reissue`, until a slave has failed: if the key's primary already holds a newer
    /// version (a concurrent write got there first with a higher one), the write is sent
    /// again at a version above it, so what the primary holds, and then every copy, is the
    /// order writes took effect in. (After a failure a newer version may be one built on
    /// this very write, by a read-modify-write on the new primary: then it is not sent
    /// again.) Returns the replies and the version written.
    fn write_all(
        &self,
        mut frame: Frame,
        mut may_reissue: bool,
    ) -> Result<(Vec<Frame>, u64), Failure> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let (targets, ticket) = self.write_targets(&frame.key)?;
            let failure = match self.send_to(&targets, &frame) {
                Ok(replies) => {
                    let held = replies.first().map_or(0, |r| r.arg);
                    if !may_reissue || held <= frame.arg {
                        return Ok((replies, frame.arg));
                    }
                    drop(ticket);
                    frame.arg = self.next_version_above(held)?;
                    continue;
                }
                Err(Missed::Refused(refused)) => return Err(refused),
                Err(Missed::Failed(failure)) => failure,
            };
            may_reissue = false;
            self.await_new_placement(ticket, deadline, failure)?;
        }
    }

    /// After a slave failed a write: lets the write's ticket go and waits for the ring to
    /// change (the failed slave taken off), so the write can be sent again to the new
    /// placement; `failure` once `deadline` has passed.
    fn await_new_placement(
        &self,
        ticket: WriteTicket<'_>,
        deadline: Instant,
        failure: Failure,
    ) -> Result<(), Failure> {
        let epoch = ticket.epoch();
        drop(ticket);
        let now = Instant::now();
        if now >= deadline {
            return Err(failure);
        }
        self.membership.wait_epoch(epoch, deadline - now);
        Ok(())
    }

    /// Sends `frame` to `targets` at once and waits for every reply (in target order).
    /// A slave that does not answer is declared dead; the error says why.
    fn send_to(&self, targets: &[Target], frame: &Frame) -> Result<Vec<Frame>, Missed> {
        let sent = send_all(targets, frame, false);
        self.collect(targets, sent)
    }

    /// Waits for the replies of frames [`send_all`] sent to `targets`: each target's reply
    /// (`None` where it failed), and the failure if one did. A slave that does not answer
    /// is declared dead.
    fn collect_each(
        &self,
        targets: &[Target],
        sent: Vec<Result<PendingReply, LinkError>>,
    ) -> (Vec<Option<Frame>>, Option<Missed>) {
        let mut replies = Vec::with_capacity(sent.len());
        let mut missed = None;
        for ((slave, _), pending) in targets.iter().zip(sent) {
            match pending.and_then(|p| p.wait(slave.timeout())) {
                Ok(reply) if matches!(reply.status, Status::Ok | Status::NotFound) => {
                    replies.push(Some(reply))
                }
                Ok(reply) => {
                    missed = Some(Missed::Refused(slave_refused(reply.status, &reply)));
                    replies.push(None);
                }
                Err(e) => {
                    self.membership
                        .suspect(slave.id, &format!("a write failed: {e}"));
                    if !matches!(missed, Some(Missed::Refused(_))) {
                        missed = Some(Missed::Failed(unavailable(slave, &e)));
                    }
                    replies.push(None);
                }
            }
        }
        (replies, missed)
    }

    /// Waits for the replies of frames [`send_all`] sent to `targets`; a failure of any
    /// of them is the error.
    fn collect(
        &self,
        targets: &[Target],
        sent: Vec<Result<PendingReply, LinkError>>,
    ) -> Result<Vec<Frame>, Missed> {
        match self.collect_each(targets, sent) {
            (_, Some(missed)) => Err(missed),
            (replies, None) => Ok(replies.into_iter().flatten().collect()),
        }
    }
}

/// A slave a write goes to, and the table it goes to there.
pub type Target = (Arc<SlaveHandle>, TableSel);

/// Why a write did not reach every slave it must.
enum Missed {
    /// A slave answered, refusing it: trying again will not help.
    Refused(Failure),
    /// A slave did not answer (it is declared dead): try again on the new placement.
    Failed(Failure),
}

/// A request under way: see [`Router::begin`] and [`Router::finish`].
pub enum Pending<'a> {
    /// Already served.
    Done(Outcome),
    /// A read sent to the key's primary.
    Get {
        /// The key.
        key: Vec<u8>,
        /// Its primary and replica.
        route: Route,
        /// The read sent to the primary.
        sent: Result<PendingReply, LinkError>,
    },
    /// A write sent to every slave that must hold it.
    Write {
        /// The slave frame (its version in `arg`).
        frame: Frame,
        /// Where it went.
        targets: Vec<Target>,
        /// Counts the write as under way for data moves.
        ticket: WriteTicket<'a>,
        /// One send per target.
        sent: Vec<Result<PendingReply, LinkError>>,
    },
}

impl Pending<'_> {
    /// Sends what this request left in its links' buffers (a pipelined request is
    /// deferred): a connection about to wait flushes all it has in flight first, so that
    /// every slave works on its share at once.
    pub fn flush(&self) {
        let sent: &[Result<PendingReply, LinkError>] = match self {
            Pending::Done(_) => &[],
            Pending::Get { sent, .. } => std::slice::from_ref(sent),
            Pending::Write { sent, .. } => sent,
        };
        for pending in sent.iter().flatten() {
            pending.flush();
        }
    }
}

/// Sends `frame` to every target (with the target's table), without waiting; `deferred`
/// as in [`SlaveHandle::send_deferred`]. The frame is written from where it is on each
/// link (each with its own header): a write's value is not copied per replica, nor
/// again when the caller keeps the frame for a retry.
fn send_all(
    targets: &[Target],
    frame: &Frame,
    deferred: bool,
) -> Vec<Result<PendingReply, LinkError>> {
    targets
        .iter()
        .map(|(slave, table)| slave.send_as(frame, *table, deferred))
        .collect()
}

fn check_key(key: &[u8]) -> Result<(), Failure> {
    if key.is_empty() {
        return Err(Failure::Invalid("empty key".into()));
    }
    Ok(())
}

fn unavailable(slave: &SlaveHandle, error: &LinkError) -> Failure {
    debug!("slave {} at {}: {error}", slave.id, slave.addr);
    Failure::Unavailable(format!(
        "slave {} at {} did not answer: {error}",
        slave.id, slave.addr
    ))
}

fn slave_refused(status: Status, reply: &Frame) -> Failure {
    warn!(
        "slave refused a request: {}: {}",
        status.name(),
        reply.value_text()
    );
    match status {
        Status::TooLarge => Failure::TooLarge,
        _ => Failure::Unavailable(format!(
            "slave answered {}: {}",
            status.name(),
            reply.value_text()
        )),
    }
}
