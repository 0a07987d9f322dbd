//! Serves client [`Request`]s: finds the key's primary and replica on the ring, assigns
//! write versions, fans writes out to both replicas in parallel and waits for both, and
//! reads from the primary with the replica as fallback.
//!
//! Rules (README.md, "Consistency"):
//! - every write gets a fresh version from [`VersionClock`]; slaves keep the newest version
//!   of a key, so concurrent writes end in the same value on both replicas;
//! - a write is acknowledged only when every replica of its key applied it; if one could
//!   not be reached the client gets an error, and may retry (a retry is a new, newer write);
//! - a read asks the primary's `own`; if the primary cannot be reached, the replica's
//!   `previous`.
//!
//! No lock is held across slave I/O: routes are looked up under the membership lock and
//! the I/O happens after it is released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, warn};

use crate::coordinator::link::{LinkError, PendingReply, SlaveHandle};
use crate::coordinator::membership::{Membership, Route};
use crate::request::{Failure, Found, Outcome, Request};
use crate::wire::{Frame, Opcode, Status, TableSel};

/// Hands out write versions: strictly increasing, starting from the wall clock in
/// microseconds so that a restarted coordinator (before it keeps its high-water mark on
/// disk) continues above every version it issued unless it issued more than a million a
/// second on average.
pub struct VersionClock {
    last: AtomicU64,
}

impl VersionClock {
    /// A clock starting at the current time in microseconds.
    pub fn new() -> VersionClock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        VersionClock {
            last: AtomicU64::new(now),
        }
    }

    /// The next version.
    pub fn next(&self) -> u64 {
        self.last.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl Default for VersionClock {
    fn default() -> Self {
        VersionClock::new()
    }
}

/// Counters the memcached `stats` command reports.
#[derive(Default)]
pub struct Counters {
    /// `get` keys asked for.
    pub cmd_get: AtomicU64,
    /// `set` commands.
    pub cmd_set: AtomicU64,
    /// `get` keys found.
    pub get_hits: AtomicU64,
    /// `get` keys not found.
    pub get_misses: AtomicU64,
    /// `delete` commands.
    pub cmd_delete: AtomicU64,
}

/// The request router.
pub struct Router {
    membership: std::sync::Arc<Membership>,
    clock: VersionClock,
    /// Counters for `stats`.
    pub counters: Counters,
    max_value_bytes: usize,
}

impl Router {
    /// A router over `membership`.
    pub fn new(membership: std::sync::Arc<Membership>, max_value_bytes: usize) -> Router {
        Router {
            membership,
            clock: VersionClock::new(),
            counters: Counters::default(),
            max_value_bytes,
        }
    }

    /// Serves one request.
    pub fn serve(&self, request: Request) -> Outcome {
        match request {
            Request::Get { key } => self.get(&key),
            Request::Put { key, value, flags } => self.put(key, value, flags),
            Request::Delete { key } => self.delete(key),
        }
    }

    fn route(&self, key: &[u8]) -> Result<Route, Outcome> {
        if key.is_empty() {
            return Err(Outcome::Failed(Failure::Invalid("empty key".into())));
        }
        self.membership.route(key).ok_or_else(|| {
            Outcome::Failed(Failure::Unavailable(
                "no slaves in the ring (start a piazza-slave)".into(),
            ))
        })
    }

    fn get(&self, key: &[u8]) -> Outcome {
        self.counters.cmd_get.fetch_add(1, Ordering::Relaxed);
        let route = match self.route(key) {
            Ok(route) => route,
            Err(outcome) => return outcome,
        };
        let mut request = Frame::request(Opcode::SlaveGet, 0, key.to_vec(), Vec::new());
        request.table = TableSel::Own;
        let reply = match route.primary.call(request.clone()) {
            Ok(reply) => reply,
            Err(primary_error) => {
                let Some(replica) = route.replica else {
                    return unavailable(&route.primary, &primary_error);
                };
                warn!(
                    "read from primary {} failed ({primary_error}); reading from replica {}",
                    route.primary.addr, replica.addr
                );
                request.table = TableSel::Previous;
                match replica.call(request) {
                    Ok(reply) => reply,
                    Err(e) => return unavailable(&replica, &e),
                }
            }
        };
        match reply.status {
            Status::Ok => {
                self.counters.get_hits.fetch_add(1, Ordering::Relaxed);
                Outcome::Found(Found {
                    value: reply.value,
                    flags: reply.flags,
                    version: reply.arg,
                })
            }
            Status::NotFound => {
                self.counters.get_misses.fetch_add(1, Ordering::Relaxed);
                Outcome::NotFound
            }
            status => slave_refused(status, &reply),
        }
    }

    fn put(&self, key: Vec<u8>, value: Vec<u8>, flags: u32) -> Outcome {
        self.counters.cmd_set.fetch_add(1, Ordering::Relaxed);
        if value.len() > self.max_value_bytes {
            return Outcome::Failed(Failure::TooLarge);
        }
        let route = match self.route(&key) {
            Ok(route) => route,
            Err(outcome) => return outcome,
        };
        let version = self.clock.next();
        let mut frame = Frame::request(Opcode::SlavePut, 0, key, value);
        frame.flags = flags;
        frame.arg = version;
        match self.write_both(&route, frame) {
            Ok(_) => Outcome::Stored { version },
            Err(outcome) => outcome,
        }
    }

    fn delete(&self, key: Vec<u8>) -> Outcome {
        self.counters.cmd_delete.fetch_add(1, Ordering::Relaxed);
        let route = match self.route(&key) {
            Ok(route) => route,
            Err(outcome) => return outcome,
        };
        let mut frame = Frame::request(Opcode::SlaveDelete, 0, key, Vec::new());
        frame.arg = self.clock.next();
        match self.write_both(&route, frame) {
            Ok(replies) if replies.iter().any(|r| r.status == Status::Ok) => Outcome::Deleted,
            Ok(_) => Outcome::NotFound,
            Err(outcome) => outcome,
        }
    }

    /// Sends `frame` to the primary (`own`) and the replica (`previous`) at once, then
    /// waits for both. Ok only if every replica applied it.
    fn write_both(&self, route: &Route, frame: Frame) -> Result<Vec<Frame>, Outcome> {
        let mut targets: Vec<(&SlaveHandle, TableSel)> = vec![(&route.primary, TableSel::Own)];
        if let Some(replica) = &route.replica {
            targets.push((replica, TableSel::Previous));
        }
        let last = targets.len() - 1;
        let mut frame = Some(frame);
        let mut sent: Vec<(&SlaveHandle, Result<PendingReply, LinkError>)> = Vec::new();
        for (index, (slave, table)) in targets.into_iter().enumerate() {
            // The last target takes the frame itself; earlier ones a copy.
            let mut copy = if index == last {
                frame.take().expect("taken only by the last target")
            } else {
                frame.clone().expect("present until the last target")
            };
            copy.table = table;
            sent.push((slave, slave.send(copy)));
        }
        let mut replies = Vec::with_capacity(sent.len());
        let mut failure = None;
        for (slave, pending) in sent {
            match pending.and_then(|p| p.wait(slave.timeout())) {
                Ok(reply) if matches!(reply.status, Status::Ok | Status::NotFound) => {
                    replies.push(reply)
                }
                Ok(reply) => failure = Some(slave_refused(reply.status, &reply)),
                Err(e) => failure = Some(unavailable(slave, &e)),
            }
        }
        match failure {
            Some(outcome) => Err(outcome),
            None => Ok(replies),
        }
    }
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
