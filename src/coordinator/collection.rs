//! Collection of tombstones and expired values (protocol.md, "Collection"), run by the
//! `recovery` thread between data moves, so a collection never overlaps one.
//!
//! A delete leaves a versioned tombstone so that no older write can bring the key back.
//! Kept forever, tombstones grow a slave's memory with every delete. The coordinator
//! therefore sends, every [`COLLECT_EVERY`] while the cluster is quiet, a **horizon**
//! H = the version of (now − `--tombstone-grace-secs`) to every slave on the ring, and
//! each drops from memory its tombstones and expired values older than H.
//!
//! Why that cannot bring a deleted key back:
//! - a write older than H is no longer under way: the grace exceeds the longest a write
//!   is retried (twice the slave timeout) plus the skew between the clocks that issue
//!   versions, so no late write older than a dropped tombstone can arrive;
//! - every slave on the ring received every write of its ranges since it got them (a
//!   slave a write fails on is taken off the ring), so no slave that is sent H holds an
//!   older value that a dropped tombstone was hiding, and moves between them copy only
//!   what they all agree on;
//! - a slave that was off the ring (dead, paused, restarted) may hold values whose deletes
//!   it missed, their tombstones since dropped. Before it is joined again it is told to
//!   **forget** every entry older than the highest horizon ever sent
//!   ([`forget_before_join`]): what of that is still live is on the current owners and
//!   comes back with the join's transfers; what was deleted cannot;
//! - the highest horizon is saved in the `ring` file before it is sent, so a restarted
//!   coordinator never asks for less.
//!
//! What it never does: collect while a slave is joining, moving data, suspected or
//! leaving, or while a restarted coordinator waits for its slaves.

use std::fmt;
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{info, warn};

use crate::clock::SOURCE_BITS;
use crate::coordinator::membership::Membership;
use crate::link::{LinkError, SlaveHandle};
use crate::ring::SlaveId;
use crate::wire::{COLLECT_FORGET, Frame, Opcode, Status};

/// How often a horizon is sent, at most (or every grace, if the grace is shorter).
pub const COLLECT_EVERY: Duration = Duration::from_secs(5);

/// How long a joining slave may take to forget (a collection gets the slave timeout).
const FORGET_TIMEOUT: Duration = Duration::from_secs(120);

/// The horizon for `grace` at `now` (Unix microseconds): the lowest version a write
/// issued at `now - grace` can carry (versions are wall-clock microseconds shifted left
/// by the source bits; see `clock`).
pub fn horizon_at(now: u64, grace: Duration) -> u64 {
    let grace = u64::try_from(grace.as_micros()).unwrap_or(u64::MAX);
    now.saturating_sub(grace) << SOURCE_BITS
}

/// Sends the horizon to the slaves when it is time and the cluster is quiet.
#[derive(Default)]
pub struct Collector {
    /// When the last horizon was sent.
    last: Option<Instant>,
}

impl Collector {
    /// Called on every tick of the `recovery` thread: collects if it is time and the
    /// cluster is quiet (otherwise tries again at the next tick).
    pub fn tick(&mut self, membership: &Membership) {
        let grace = membership.tombstone_grace();
        if self
            .last
            .is_some_and(|last| last.elapsed() < COLLECT_EVERY.min(grace))
        {
            return;
        }
        let Some(targets) = membership.collection_targets() else {
            return;
        };
        self.last = Some(Instant::now());
        let started = Instant::now();
        let wanted = horizon_at(crate::store::now_micros(), grace);
        // Saved before anyone is sent it.
        let horizon = match membership.raise_collection_horizon(wanted) {
            Ok(horizon) => horizon,
            Err(e) => {
                warn!("not collecting: {e}");
                return;
            }
        };
        // All at once, each on a connection of its own (a slave's shared link would
        // hold its requests behind the collection), each waited for at most the slave
        // timeout: a paused slave holds up the recovery thread, and so the moves its
        // death will queue, for no longer than that.
        let results: Vec<Option<(u64, u64)>> = std::thread::scope(|scope| {
            let running: Vec<_> = targets
                .iter()
                .map(|(id, handle)| {
                    std::thread::Builder::new()
                        .name(format!("collect-{id}"))
                        .spawn_scoped(scope, move || collect_on(*id, handle, horizon))
                })
                .collect();
            running
                .into_iter()
                .map(|thread| match thread {
                    Ok(thread) => thread.join().ok().flatten(),
                    Err(e) => {
                        warn!("cannot start a collection thread: {e}");
                        None
                    }
                })
                .collect()
        });
        let (tombstones, values) = results
            .into_iter()
            .flatten()
            .fold((0, 0), |(t, v), (dt, dv)| (t + dt, v + dv));
        if tombstones + values > 0 {
            info!(
                "collected {tombstones} tombstones and {values} expired values older than {} s in {} ms",
                grace.as_secs(),
                started.elapsed().as_millis()
            );
        }
    }
}

/// Sends the horizon to one slave; what it dropped (tombstones, values), or `None` if
/// it did not answer in time (it keeps its tombstones until the next round; a dead one
/// is found by the failure detector).
fn collect_on(id: SlaveId, handle: &SlaveHandle, horizon: u64) -> Option<(u64, u64)> {
    let mut frame = Frame::request(Opcode::SlaveCollect, 0, Vec::new(), Vec::new());
    frame.arg = horizon;
    match handle.call_alone(frame, handle.timeout()) {
        Ok(reply) if reply.status == Status::Ok && reply.value.len() == 16 => Some((
            NetworkEndian::read_u64(&reply.value[..8]),
            NetworkEndian::read_u64(&reply.value[8..]),
        )),
        Ok(reply) => {
            warn!(
                "slave {id} at {} did not collect: {}: {}",
                handle.addr,
                reply.status.name(),
                reply.value_text()
            );
            None
        }
        Err(e) => {
            warn!("slave {id} at {} did not collect: {e}", handle.addr);
            None
        }
    }
}

/// Why a joining slave did not forget what is older than the collection horizon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetError {
    /// The slave is no longer known.
    Gone(SlaveId),
    /// It answered with an error.
    Refused {
        /// The slave.
        slave: SlaveId,
        /// Its status.
        status: Status,
        /// Its message.
        message: String,
    },
    /// It could not be reached or did not answer in time (it is then declared dead).
    Failed {
        /// The slave.
        slave: SlaveId,
        /// Its address.
        addr: String,
        /// What failed.
        error: LinkError,
    },
}

impl fmt::Display for ForgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForgetError::Gone(slave) => write!(f, "slave {slave} is gone"),
            ForgetError::Refused {
                slave,
                status,
                message,
            } => write!(
                f,
                "forget: slave {slave} answered {}: {message}",
                status.name()
            ),
            ForgetError::Failed { slave, addr, error } => {
                write!(f, "forget: slave {slave} at {addr}: {error}")
            }
        }
    }
}

impl std::error::Error for ForgetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ForgetError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The first step of a join: slave `n` forgets every entry older than the highest
/// horizon ever sent, as a logged record, before it receives its transfers (see the
/// module doc). Skipped when nothing was ever collected, and when the ring is empty: a
/// slave that joins an empty ring keeps all it has, being the only copy.
///
/// # Errors
/// When `n` does not do it: the join must not go on (if `n` failed, it is declared dead).
pub fn forget_before_join(membership: &Membership, n: SlaveId) -> Result<(), ForgetError> {
    let horizon = membership.collection_horizon();
    if horizon == 0 {
        return Ok(());
    }
    if membership.is_empty() {
        info!("joining slave {n}: the ring is empty, so it keeps all it holds (the only copy)");
        return Ok(());
    }
    let handle = membership.handle(n).ok_or(ForgetError::Gone(n))?;
    membership.set_progress(format!(
        "joining slave {n}: forget what is older than the collection horizon"
    ));
    let mut frame = Frame::request(Opcode::SlaveCollect, 0, Vec::new(), Vec::new());
    frame.arg = horizon;
    frame.flags = COLLECT_FORGET;
    match handle.call_alone(frame, FORGET_TIMEOUT) {
        Ok(reply) if reply.status == Status::Ok => {
            info!(
                "joining slave {n}: it forgot {} entries older than the collection horizon",
                reply.arg
            );
            Ok(())
        }
        Ok(reply) => Err(ForgetError::Refused {
            slave: n,
            status: reply.status,
            message: reply.value_text(),
        }),
        Err(error) => {
            membership.suspect(n, &format!("it failed to forget before joining: {error}"));
            Err(ForgetError::Failed {
                slave: n,
                addr: handle.addr.clone(),
                error,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_the_version_of_now_minus_the_grace() {
        let now = 1_800_000_000_000_000;
        assert_eq!(
            horizon_at(now, Duration::from_secs(60)),
            (now - 60_000_000) << SOURCE_BITS
        );
        assert_eq!(horizon_at(5, Duration::from_secs(1)), 0);
        // Every version a clock issued before the horizon's time is below it.
        let clock = crate::clock::VersionClock::new(0, 7);
        let version = clock.next_above_unsaved(0);
        let later = horizon_at(
            crate::store::now_micros() + 1_000_001,
            Duration::from_secs(1),
        );
        assert!(version < later);
    }

    #[test]
    fn forget_errors_say_which_slave_and_what_failed() {
        assert_eq!(ForgetError::Gone(SlaveId(3)).to_string(), "slave 3 is gone");
        let refused = ForgetError::Refused {
            slave: SlaveId(3),
            status: Status::Unavailable,
            message: "busy".into(),
        };
        assert_eq!(
            refused.to_string(),
            format!(
                "forget: slave 3 answered {}: busy",
                Status::Unavailable.name()
            )
        );
        let failed = ForgetError::Failed {
            slave: SlaveId(3),
            addr: "127.0.0.1:7410".into(),
            error: LinkError::Timeout,
        };
        assert_eq!(
            failed.to_string(),
            "forget: slave 3 at 127.0.0.1:7410: no reply in time"
        );
        assert!(std::error::Error::source(&failed).is_some());
    }
}
