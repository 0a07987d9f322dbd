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
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::clock::{self, VersionClock};
use crate::coordinator::link::{LinkError, SlaveHandle};
use crate::coordinator::membership::{Membership, Route};
use crate::request::{Failure, Found, Outcome, Request};
use crate::wire::{Frame, Opcode, Status, TableSel};

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

/// The request router.
pub struct Router {
    membership: std::sync::Arc<Membership>,
    clock: VersionClock,
    /// Counters for `stats`.
    pub counters: Counters,
    max_value_bytes: usize,
    write_timeout: Duration,
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
        }
    }

    /// Serves one request.
    pub fn serve(&self, request: Request) -> Outcome {
        match request {
            Request::Get { key } => self.get(&key),
            Request::Put { key, value, flags } => self.put(key, value, flags),
            Request::Delete { key, cas: 0 } => self.delete(key),
            _ => Outcome::Failed(Failure::Unavailable("not served yet".into())),
        }
    }

    fn next_version(&self) -> Result<u64, Outcome> {
        self.clock
            .next(|floor| self.membership.reserve_versions(floor))
            .map_err(|e| {
                Outcome::Failed(Failure::Unavailable(format!(
                    "cannot save the version floor: {e}"
                )))
            })
    }

    fn route(&self, key: &[u8]) -> Result<Route, Outcome> {
        check_key(key)?;
        self.membership
            .route(key)
            .map_err(|why| Outcome::Failed(Failure::Unavailable(why)))
    }

    fn get(&self, key: &[u8]) -> Outcome {
        self.counters.cmd_get.fetch_add(1, Ordering::Relaxed);
        let route = match self.route(key) {
            Ok(route) => route,
            Err(outcome) => return outcome,
        };
        let reply = match self.read(&route, key) {
            Ok(reply) => reply,
            Err(outcome) => return outcome,
        };
        match reply.status {
            Status::Ok => {
                self.counters.get_hits.fetch_add(1, Ordering::Relaxed);
                Outcome::Found(Found {
                    value: reply.value,
                    flags: reply.flags,
                    version: reply.arg,
                    expires: 0,
                })
            }
            Status::NotFound => {
                self.counters.get_misses.fetch_add(1, Ordering::Relaxed);
                Outcome::NotFound
            }
            status => slave_refused(status, &reply),
        }
    }

    /// Reads `key` from the primary's `own` (and `previous`, while data moves), falling
    /// back to the replica's `previous` if the primary does not answer.
    fn read(&self, route: &Route, key: &[u8]) -> Result<Frame, Outcome> {
        let mut request = Frame::request(Opcode::SlaveGet, 0, key.to_vec(), Vec::new());
        request.table = TableSel::Own;
        let primary_result = if route.recovering {
            // Ranges are moving between the primary's tables: ask for the newer of both,
            // read under one lock on the slave.
            let mut both = request.clone();
            both.table = TableSel::None;
            route.primary.call(both)
        } else {
            route.primary.call(request.clone())
        };
        let primary_error = match primary_result {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        self.membership
            .suspect(route.primary.id, &format!("a read failed: {primary_error}"));
        let Some(replica) = &route.replica else {
            return Err(unavailable(&route.primary, &primary_error));
        };
        debug!(
            "read from primary {} failed ({primary_error}); reading from replica {}",
            route.primary.addr, replica.addr
        );
        // The replica holds the key in `previous`, or in `own` once it has absorbed the
        // failed primary's range: ask for the newer of both, read under one lock.
        request.table = TableSel::None;
        replica.call(request).map_err(|e| {
            self.membership
                .suspect(replica.id, &format!("a read failed: {e}"));
            unavailable(replica, &e)
        })
    }

    fn put(&self, key: Vec<u8>, value: Vec<u8>, flags: u32) -> Outcome {
        self.counters.cmd_set.fetch_add(1, Ordering::Relaxed);
        if value.len() > self.max_value_bytes {
            return Outcome::Failed(Failure::TooLarge);
        }
        if let Err(outcome) = check_key(&key) {
            return outcome;
        }
        let version = match self.next_version() {
            Ok(version) => version,
            Err(outcome) => return outcome,
        };
        let mut frame = Frame::request(Opcode::SlavePut, 0, key, value);
        frame.flags = flags;
        frame.arg = version;
        match self.write_all(frame) {
            Ok(_) => Outcome::Stored { version },
            Err(outcome) => outcome,
        }
    }

    fn delete(&self, key: Vec<u8>) -> Outcome {
        self.counters.cmd_delete.fetch_add(1, Ordering::Relaxed);
        if let Err(outcome) = check_key(&key) {
            return outcome;
        }
        let mut frame = Frame::request(Opcode::SlaveDelete, 0, key, Vec::new());
        frame.arg = match self.next_version() {
            Ok(version) => version,
            Err(outcome) => return outcome,
        };
        match self.write_all(frame) {
            Ok(replies) if replies.iter().any(|r| r.status == Status::Ok) => Outcome::Deleted,
            Ok(_) => Outcome::NotFound,
            Err(outcome) => outcome,
        }
    }

    /// Sends `frame` to every slave that must hold its key, all at once, and waits for all.
    /// A slave that fails is declared dead; the write then waits for the ring to change and
    /// tries again on the new placement (same version, so a repeat is harmless).
    fn write_all(&self, frame: Frame) -> Result<Vec<Frame>, Outcome> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let (targets, ticket) = self
                .membership
                .write_targets(&frame.key)
                .map_err(|why| Outcome::Failed(Failure::Unavailable(why)))?;
            let sent: Vec<_> = targets
                .iter()
                .map(|(slave, table)| {
                    let mut copy = frame.clone();
                    copy.table = *table;
                    (slave, slave.send(copy))
                })
                .collect();
            let mut replies = Vec::with_capacity(sent.len());
            let mut failed = None;
            for (slave, pending) in sent {
                match pending.and_then(|p| p.wait(slave.timeout())) {
                    Ok(reply) if matches!(reply.status, Status::Ok | Status::NotFound) => {
                        replies.push(reply)
                    }
                    // The slave answered but refused: retrying will not help.
                    Ok(reply) => return Err(slave_refused(reply.status, &reply)),
                    Err(e) => {
                        self.membership
                            .suspect(slave.id, &format!("a write failed: {e}"));
                        failed = Some(unavailable(slave, &e));
                    }
                }
            }
            let epoch = ticket.epoch();
            drop(ticket);
            let Some(failure) = failed else {
                return Ok(replies);
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(failure);
            }
            // Wait for the failed slave to be taken off the ring, then write again.
            self.membership.wait_epoch(epoch, deadline - now);
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), Outcome> {
    if key.is_empty() {
        return Err(Outcome::Failed(Failure::Invalid("empty key".into())));
    }
    Ok(())
}

fn unavailable(slave: &SlaveHandle, error: &LinkError) -> Outcome {
    debug!("slave {} at {}: {error}", slave.id, slave.addr);
    Outcome::Failed(Failure::Unavailable(format!(
        "slave {} at {} did not answer: {error}",
        slave.id, slave.addr
    )))
}

fn slave_refused(status: Status, reply: &Frame) -> Outcome {
    warn!(
        "slave refused a request: {}: {}",
        status.name(),
        reply.value_text()
    );
    match status {
        Status::TooLarge => Outcome::Failed(Failure::TooLarge),
        _ => Outcome::Failed(Failure::Unavailable(format!(
            "slave answered {}: {}",
            status.name(),
            reply.value_text()
        ))),
    }
}
