//! The coordinator's view of its slaves: the [`Ring`] (who is routed to), and per slave
//! its state, session, last heartbeat, and [`SlaveHandle`]; all behind one `Mutex`.
//!
//! States: `joining` (registered, receiving its data, not routed to yet, but written to),
//! `alive` (on the ring), `suspected` (a request failed or heartbeats stopped; being
//! removed), `leaving` (handing off before a graceful exit), `dead` (off the ring).
//!
//! Every change that affects routing (the ring, a join or rebalance starting or ending)
//! bumps the epoch and wakes [`Membership::wait_epoch`] waiters, so a write that failed
//! against a dead slave can retry on the new placement.
//!
//! Lock rule: the lock is taken only inside these methods, for map and ring operations;
//! callers get `Arc<SlaveHandle>` clones and do all network I/O after it is released.
//! Handles that are replaced are closed (their threads joined) outside the lock. Nothing
//! here does I/O: the `ring` file is written on the `ring-save` thread, and a
//! [`SlaveHandle`] connects on first use.
//!
//! Files: `mod` (the types, the guarded `State`, the lock, the events channel), `state`
//! (the state machine: registration, heartbeats, deaths, leaves, joins, rebalancing, the
//! warm-up after a restart), `tickets` (writes under way: [`WriteTicket`],
//! [`Membership::drain`], [`Membership::wait_epoch`]), `persistence` (what the `ring` file
//! gets and who waits for it: the ring, the version floor, `flush_all` markers, the
//! collection horizon), `queries` (what the rest of the coordinator reads:
//! [`Membership::route`], [`Membership::write_targets`], [`Membership::view`],
//! [`Membership::status`]); unit tests in `tests/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::info;

use crate::clock::VersionFloor;
use crate::coordinator::persist::Saver;
use crate::link::SlaveHandle;
use crate::ring::{Member, Placement, Ring, SLOTS, SlaveId};
use crate::store::FlushMarker;

mod persistence;
mod queries;
mod state;
mod tickets;

#[cfg(test)]
mod tests;

pub use crate::coordinator::persist::PersistError;
pub use queries::{NO_SLAVES, RouteError};
pub use tickets::WriteTicket;

/// A slave's state as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlaveState {
    /// Registered; receiving its data; written to but not read from.
    Joining,
    /// On the ring.
    Alive,
    /// A request failed or heartbeats stopped; it is being removed.
    Suspected,
    /// Handing its ranges off before a graceful exit.
    Leaving,
    /// Off the ring.
    Dead,
}

impl fmt::Display for SlaveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlaveState::Joining => "joining",
            SlaveState::Alive => "alive",
            SlaveState::Suspected => "suspected",
            SlaveState::Leaving => "leaving",
            SlaveState::Dead => "dead",
        })
    }
}

/// Work for the recovery thread, processed one at a time in order.
#[derive(Debug)]
pub enum Event {
    /// A slave left the ring (died, or left): restore two copies of its ranges.
    Replicate {
        /// The slave that left.
        id: SlaveId,
        /// Why, for the log.
        reason: String,
        /// Told when done (a graceful leave waits for it).
        done: Option<std::sync::mpsc::SyncSender<()>>,
    },
    /// A slave registered: give it its ranges, then put it on the ring.
    Join {
        /// The slave.
        id: SlaveId,
        /// Its session; a stale join (it died meanwhile) is dropped.
        session: u64,
    },
}

/// Where one key goes: its primary and, with two or more slaves, its replica.
pub struct Route {
    /// First ring successor of the key's hash; holds the key in `own`.
    pub primary: Arc<SlaveHandle>,
    /// The primary's successor; holds the key in `previous`.
    pub replica: Option<Arc<SlaveHandle>>,
    /// True while a slave's ranges are being moved: reads then also look at `previous`.
    pub recovering: bool,
}

/// The outcome of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The slave's id.
    pub id: SlaveId,
    /// Its session: heartbeats must carry it.
    pub session: u64,
    /// True when this address had registered before (same id).
    pub returning: bool,
}

/// What the heartbeat listener should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A current slave: recorded.
    Known,
    /// Unknown id or stale session: tell it to register again.
    Unknown,
}

/// One slave as the coordinator tracks it.
pub struct SlaveInfo {
    /// How it is reached.
    pub handle: Arc<SlaveHandle>,
    /// Its state.
    pub state: SlaveState,
    /// The session of its current registration.
    pub session: u64,
    /// When its last heartbeat (or registration) arrived.
    pub last_seen: Instant,
}

/// One row of the status table.
pub struct StatusRow {
    /// The member's id, address and slot count.
    pub member: Member,
    /// The lowest token it owns (`None` when it owns none).
    pub token: Option<crate::ring::Token>,
    /// Its state.
    pub state: SlaveState,
    /// Its handle, to ask for counts (`None` for dead slaves).
    pub handle: Option<Arc<SlaveHandle>>,
}

/// The slaves known to hold a slot's data completely: its primary (in `own`) and replica
/// (in `previous`), each with the session it had then. A holder that died or registered
/// again since is no longer a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holders {
    /// The primary and its session.
    pub primary: Option<(SlaveId, u64)>,
    /// The replica and its session.
    pub replica: Option<(SlaveId, u64)>,
}

/// What `status` reports, as of one moment.
pub struct StatusReport {
    /// Every known slave, in id order.
    pub rows: Vec<StatusRow>,
    /// The routing epoch.
    pub epoch: u64,
    /// Copies each key has (0, 1 or 2).
    pub copies: usize,
    /// What data is moving now ("" when none).
    pub progress: String,
}

/// Everything [`Membership`] guards with its one lock.
struct State {
    ring: Ring,
    /// While a slave joins: the ring as it will be, and the ring epoch it was planned at.
    future: Option<(Ring, u64)>,
    /// Per slot, who holds its data as of the last completed data move.
    applied: Vec<Holders>,
    /// Per slot, who holds its data as of the last move that *finished* (copies made,
    /// tables sorted, old copies dropped): what the `ring` file keeps (`held` lines). A
    /// move changes `applied` once its copies are made, and this only when it is over,
    /// so a coordinator restarted in between takes the move up from here. Restored from
    /// the file with session 0 (the sessions are known once the slaves are back).
    recorded: Vec<Holders>,
    /// A slave's tables may be out of order (a move was cut short, or the coordinator
    /// restarted): until a move sorts them, reads take the newer of a primary's two
    /// tables, as during a move.
    unsorted: bool,
    slaves: HashMap<SlaveId, SlaveInfo>,
    /// The slave being joined, if any.
    joining: Option<SlaveId>,
    /// How many replications or joins are moving data now.
    moving: u32,
    /// What the recovery thread is doing, for `status`.
    progress: String,
    /// Writes under way, by the epoch their targets were chosen at.
    inflight: BTreeMap<u64, u32>,
    /// Threads waiting in [`Membership::drain`].
    draining: u32,
    /// Times a join started or ended: they change where writes go, like ring changes.
    join_changes: u64,
    /// After a restart: the slaves that were on the ring, not yet back, and until when
    /// to wait for them.
    warmup: Option<(Instant, HashSet<SlaveId>)>,
    /// `flush_all` markers in force (saved with the ring, handed to registering slaves).
    flushes: Vec<FlushMarker>,
    /// The highest collection horizon ever sent (saved with the ring, handed to
    /// registering and joining slaves; see `collection`).
    collected: u64,
}

impl State {
    /// Why requests cannot be served now, if they cannot.
    fn not_serving(&self) -> Result<(), RouteError> {
        match &self.warmup {
            Some((_, waiting)) => Err(RouteError::Restarting {
                waiting: waiting.len(),
            }),
            None => Ok(()),
        }
    }

    /// Grows at every change of where reads or writes go: ring changes, and a join
    /// starting or ending.
    fn epoch(&self) -> u64 {
        self.ring.epoch() + self.join_changes
    }

    /// Takes the planned future ring (a join's or a rebalance's), if the ring has not
    /// changed since it was planned; it is dropped either way.
    fn take_future(&mut self) -> Option<Ring> {
        let (future, planned_at) = self.future.take()?;
        (planned_at == self.ring.epoch()).then_some(future)
    }

    fn set_joining(&mut self, joining: Option<SlaveId>) {
        if self.joining != joining {
            self.joining = joining;
            self.join_changes += 1;
        }
        if joining.is_none() {
            self.future = None;
        }
    }

    /// Once the slaves of a restored ring are back (or given up on): the data is where
    /// the saved file says, with the sessions the slaves have now (one that is not back
    /// cannot be a source of copies); from a file that did not say, where the ring
    /// places it. That is also what is recorded as finished.
    fn restore_applied(&mut self) {
        if self
            .recorded
            .iter()
            .any(|holders| holders.primary.is_some())
        {
            let session = |id: SlaveId| self.slaves.get(&id).map_or(0, |info| info.session);
            let applied = self
                .recorded
                .iter()
                .map(|holders| Holders {
                    primary: holders.primary.map(|(id, _)| (id, session(id))),
                    replica: holders.replica.map(|(id, _)| (id, session(id))),
                })
                .collect();
            self.applied = applied;
        } else {
            let ring = self.ring.clone();
            self.set_applied(&ring);
        }
        self.recorded = self.applied.clone();
    }

    /// Records `ring`'s placement, with the current sessions, as where the data is.
    fn set_applied(&mut self, ring: &Ring) {
        let session = |id: SlaveId| self.slaves.get(&id).map_or(0, |info| info.session);
        self.applied = (0..SLOTS)
            .map(|slot| match ring.slot_placement(slot) {
                Some(Placement { primary, replica }) => Holders {
                    primary: Some((primary, session(primary))),
                    replica: replica.map(|r| (r, session(r))),
                },
                None => Holders::default(),
            })
            .collect();
    }
}

/// Ring plus slaves, under one lock.
pub struct Membership {
    state: Mutex<State>,
    epoch_changed: Condvar,
    events: Mutex<Option<Sender<Event>>>,
    links_per_slave: usize,
    slave_timeout: Duration,
    sessions: AtomicU64,
    /// Saves the ring file, on the `ring-save` thread ([`Membership::run_saver`]); `None`
    /// when nothing is kept on disk.
    saver: Option<Saver>,
    /// The saved version floor and the one the next save writes.
    floor: VersionFloor,
    /// The cluster secret, presented on every connection to a slave.
    secret: Option<Arc<Vec<u8>>>,
    /// How old a tombstone or an expired value must be before slaves drop it.
    tombstone_grace: Duration,
}

impl Membership {
    /// An empty membership.
    pub fn new(links_per_slave: usize, slave_timeout: Duration) -> Membership {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Membership {
            state: Mutex::new(State {
                ring: Ring::new(),
                future: None,
                applied: vec![Holders::default(); SLOTS],
                recorded: vec![Holders::default(); SLOTS],
                unsorted: false,
                slaves: HashMap::new(),
                joining: None,
                moving: 0,
                progress: String::new(),
                inflight: BTreeMap::new(),
                draining: 0,
                join_changes: 0,
                warmup: None,
                flushes: Vec::new(),
                collected: 0,
            }),
            epoch_changed: Condvar::new(),
            events: Mutex::new(None),
            links_per_slave,
            slave_timeout,
            sessions: AtomicU64::new(seed),
            saver: None,
            floor: VersionFloor::new(0),
            secret: None,
            tombstone_grace: Duration::from_secs(60),
        }
    }

    /// Sets how old a tombstone or an expired value must be before slaves drop it
    /// (`--tombstone-grace-secs`; 60 s unless set).
    pub fn with_tombstone_grace(mut self, grace: Duration) -> Membership {
        self.tombstone_grace = grace;
        self
    }

    /// How old a tombstone or an expired value must be before slaves drop it.
    pub fn tombstone_grace(&self) -> Duration {
        self.tombstone_grace
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation under this lock is a single ring or map update.
        crate::sync::lock(&self.state)
    }

    /// Sets where events for the recovery thread go.
    pub fn set_events(&self, sender: Sender<Event>) {
        *crate::sync::lock(&self.events) = Some(sender);
    }

    /// Stops sending events (the recovery thread then ends).
    pub fn close_events(&self) {
        crate::sync::lock(&self.events).take();
    }

    /// Queues `event` for the recovery thread (dropped once the events are closed).
    fn send(&self, event: Event) {
        if let Some(sender) = crate::sync::lock(&self.events).as_ref() {
            let _ = sender.send(event);
        }
    }

    /// Closes every handle (joining their link threads). Used at shutdown.
    pub fn close_all(&self) {
        let handles: Vec<Arc<SlaveHandle>> = self
            .lock()
            .slaves
            .drain()
            .map(|(_, info)| info.handle)
            .collect();
        for handle in handles {
            handle.close();
        }
        info!("closed all slave links");
    }
}
