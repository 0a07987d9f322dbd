//! The coordinator's view of its slaves: the [`Ring`] (who is routed to), and per slave
//! its state, session, last heartbeat, and [`SlaveHandle`]; all behind one `Mutex`.
//!
//! States: `joining` (registered, receiving its data, not routed to yet, but written to),
//! `alive` (on the ring), `suspected` (a request failed or heartbeats stopped; being
//! removed), `leaving` (handing off before a graceful exit), `dead` (off the ring).
//!
//! Every change that affects routing (the ring, a join starting or ending) bumps the epoch and wakes [`Membership::wait_epoch`]
//! waiters, so a write that failed against a dead slave can retry on the new placement.
//!
//! Lock rule: the lock is taken only inside these methods, for map and ring operations;
//! callers get `Arc<SlaveHandle>` clones and do all network I/O after it is released.
//! Handles that are replaced are closed (their threads joined) outside the lock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};

use crate::clock::{Reserve, VersionFloor};
use crate::coordinator::link::SlaveHandle;
use crate::coordinator::persist::{RingFile, Saved, Saver};
use crate::ring::{Member, Placement, Ring, SLOTS, SlaveId, key_hash};
use crate::store::FlushMarker;
use crate::view::View;
use crate::wire::TableSel;

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

struct State {
    ring: Ring,
    /// While a slave joins: the ring as it will be, and the ring epoch it was planned at.
    future: Option<(Ring, u64)>,
    /// Per slot, who holds its data as of the last completed data move.
    applied: Vec<Holders>,
    slaves: HashMap<SlaveId, SlaveInfo>,
    /// The slave being joined, if any.
    joining: Option<SlaveId>,
    /// How many replications or joins are moving data now.
    moving: u32,
    /// What the recovery thread is doing, for `status`.
    progress: String,
    /// Writes under way, by the epoch their targets were chosen at.
    inflight: std::collections::BTreeMap<u64, u32>,
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

/// Why a request finds no slave.
pub const NO_SLAVES: &str = "no slaves in the ring (start a piazza-slave)";

impl State {
    /// Why requests cannot be served now, if they cannot.
    fn not_serving(&self) -> Result<(), String> {
        match &self.warmup {
            Some((_, waiting)) => Err(format!(
                "coordinator restarting: waiting for {} slave(s) to register again",
                waiting.len()
            )),
            None => Ok(()),
        }
    }

    /// Grows at every change of where reads or writes go: ring changes, and a join
    /// starting or ending.
    fn epoch(&self) -> u64 {
        self.ring.epoch() + self.join_changes
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

/// A write under way, counted until dropped (see [`Membership::drain`]).
pub struct WriteTicket<'a> {
    membership: &'a Membership,
    epoch: u64,
}

impl WriteTicket<'_> {
    /// The epoch the write's targets were chosen at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let mut state = self.membership.lock();
        let done = match state.inflight.get_mut(&self.epoch) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                state.inflight.remove(&self.epoch);
                true
            }
        };
        if done && state.draining > 0 {
            self.membership.epoch_changed.notify_all();
        }
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
                slaves: HashMap::new(),
                joining: None,
                moving: 0,
                progress: String::new(),
                inflight: std::collections::BTreeMap::new(),
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

    /// A membership kept in `dir`: restores what a previous run saved (slaves get their
    /// ids and tokens back; the ones that were on the ring are waited for, for `grace`,
    /// before anything is served) and saves every change.
    ///
    /// # Errors
    /// When the saved state cannot be read.
    pub fn persistent(
        dir: &std::path::Path,
        links_per_slave: usize,
        slave_timeout: Duration,
        grace: Duration,
        secret: Option<Vec<u8>>,
    ) -> Result<Membership, String> {
        let mut membership = Membership::new(links_per_slave, slave_timeout);
        membership.secret = secret.map(Arc::new);
        let file = RingFile::new(dir);
        if let Some(saved) = file.load()? {
            let assigned: Vec<_> = saved
                .slaves
                .iter()
                .map(|(id, addr, slots, _)| (*id, addr.clone(), slots.clone()))
                .collect();
            let waiting: HashSet<SlaveId> = saved
                .slaves
                .iter()
                .filter(|entry| entry.3)
                .map(|entry| entry.0)
                .collect();
            let state = membership
                .state
                .get_mut()
                .unwrap_or_else(|p| p.into_inner());
            state.ring = Ring::restore(&assigned, saved.next_id);
            membership.floor = VersionFloor::new(saved.version_floor);
            state.flushes = saved.flushes.clone();
            state.collected = saved.collected;
            if !waiting.is_empty() {
                info!(
                    "restored the ring: waiting up to {} ms for its {} slaves to register again",
                    grace.as_millis(),
                    waiting.len()
                );
                state.warmup = Some((Instant::now() + grace, waiting));
            }
        }
        membership.saver = Some(Saver::new(file));
        // The first save raises the version floor a block ahead, before writes need it.
        membership.ask_save();
        Ok(membership)
    }

    // What must be on disk before the coordinator acts on it, and who waits for it. Only
    // the `ring-save` thread writes the ring file ([`Membership::run_saver`]); the
    // threads that change what it holds ask for a save and wait only where something
    // would depend on it:
    //
    // - The version floor, before any version above the floor on disk is handed out: a
    //   restarted coordinator starts its clock above that floor and must not issue a
    //   version twice. Request threads ask for the next block ahead of need
    //   ([`VersionFloor::check`]) and do not wait; one waits only if it runs past the
    //   floor on disk ([`Membership::reserve_versions`]).
    // - A `flush_all` marker, before the flush is answered: a slave that registers after
    //   a restart must still get it ([`Membership::add_flush`] waits).
    // - A ring change (a slave removed, a join finished, a registration), before the
    //   method that made it returns ([`Membership::save`] waits). A restarted
    //   coordinator puts the slaves the file says were on the ring straight back with
    //   their data. Had it read a ring from before a slave was declared dead, a slave
    //   that was wrongly declared dead and comes back would be primary again for ranges
    //   whose newer writes it never saw; had it read one from before a join finished,
    //   it would route reads to the old places after they dropped what moved. So the
    //   thread that declared the death waits for the save before it retries the failed
    //   write and answers, and the `recovery` thread waits for the save of a finished
    //   join before it drops the old copies. What is not covered: writes that other
    //   request threads route by the new ring during that one save (milliseconds) can be
    //   acknowledged before it lands, as before the save moved off the request threads.
    //   Closing that would take a wait in `write_targets` until the ring of the current
    //   epoch is on disk.
    //
    // Waiting threads never do the I/O, and one save serves every ask made before it
    // starts, so a burst of failures costs one save, not one per thread.

    /// How long a thread waits for a save it depends on before giving up.
    const SAVE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Asks the `ring-save` thread for a save; returns its number (0 when nothing is kept).
    fn ask_save(&self) -> u64 {
        self.saver.as_ref().map_or(0, Saver::ask)
    }

    /// Saves the current state and waits until it is on disk; a failure is logged. The
    /// I/O happens on the `ring-save` thread.
    fn save(&self) {
        if let Err(e) = self.try_save() {
            log::error!("the ring change is not on disk: {e}");
        }
    }

    fn try_save(&self) -> Result<(), String> {
        let Some(saver) = &self.saver else {
            return Ok(());
        };
        saver.wait(saver.ask(), Self::SAVE_TIMEOUT)
    }

    /// The state to write: the ring, the flush markers, and the version floor wished for.
    fn snapshot(&self) -> Saved {
        let version_floor = self.floor.to_save();
        let state = self.lock();
        Saved {
            next_id: state.ring.next_id(),
            version_floor,
            flushes: state.flushes.clone(),
            collected: state.collected,
            slaves: state
                .ring
                .assigned()
                .into_iter()
                .map(|(id, addr, slots, live)| {
                    // A slave awaited after a restart is still a ring member.
                    let waited = state
                        .warmup
                        .as_ref()
                        .is_some_and(|(_, waiting)| waiting.contains(&id));
                    (id, addr, slots, live || waited)
                })
                .collect(),
        }
    }

    /// The body of the `ring-save` thread: writes the ring file whenever a save is asked
    /// for, until [`Membership::stop_saver`]. Returns at once when nothing is kept.
    pub fn run_saver(&self) {
        if let Some(saver) = &self.saver {
            saver.run(
                || self.snapshot(),
                |saved| self.floor.record_saved(saved.version_floor),
            );
        }
    }

    /// Makes [`Membership::run_saver`] return once the saves asked for so far are made.
    pub fn stop_saver(&self) {
        if let Some(saver) = &self.saver {
            saver.stop();
        }
    }

    /// Records a `flush_all` marker and waits until it is saved, so a slave that
    /// registers later (or after a restart) gets it too.
    ///
    /// # Errors
    /// When there is a ring file and it cannot be written.
    pub fn add_flush(&self, marker: FlushMarker) -> Result<(), String> {
        {
            let mut state = self.lock();
            state.flushes.push(marker);
            crate::store::prune_markers(&mut state.flushes, crate::store::now_micros());
        }
        self.try_save()
    }

    /// The `flush_all` markers in force.
    pub fn flushes(&self) -> Vec<FlushMarker> {
        self.lock().flushes.clone()
    }

    /// The highest collection horizon ever sent (0: none).
    pub fn collection_horizon(&self) -> u64 {
        self.lock().collected
    }

    /// Raises the collection horizon to `horizon` (never lowers it) and saves it before
    /// returning, so no slave is sent a horizon a restarted coordinator would not know.
    /// Returns the horizon now in force.
    ///
    /// # Errors
    /// When there is a ring file and it cannot be written.
    pub fn raise_collection_horizon(&self, horizon: u64) -> Result<u64, String> {
        let raised = {
            let mut state = self.lock();
            state.collected = state.collected.max(horizon);
            state.collected
        };
        self.try_save()?;
        Ok(raised)
    }

    /// The slaves on the ring, if the cluster is quiet enough to collect: serving (not
    /// waiting for slaves after a restart), no data moving, no slave joining, suspected
    /// or leaving, every slave on the ring alive. `None` otherwise.
    pub fn collection_targets(&self) -> Option<Vec<(SlaveId, Arc<SlaveHandle>)>> {
        let state = self.lock();
        let quiet = state.warmup.is_none()
            && state.moving == 0
            && state.joining.is_none()
            && !state.ring.is_empty()
            && state
                .slaves
                .values()
                .all(|info| matches!(info.state, SlaveState::Alive | SlaveState::Dead));
        if !quiet {
            return None;
        }
        state
            .ring
            .members()
            .iter()
            .map(|m| {
                let info = state.slaves.get(&m.id)?;
                (info.state == SlaveState::Alive).then(|| (m.id, Arc::clone(&info.handle)))
            })
            .collect()
    }

    /// The version floor on disk (0 if none): the clock starts above it.
    pub fn version_floor(&self) -> u64 {
        self.floor.saved()
    }

    /// Returns once the version floor on disk is at least `floor`, so a version up to
    /// `floor` may be handed out; asks for the next block in the background once less
    /// than half a block is left. Waits (for the `ring-save` thread) only when `floor` is
    /// past the floor on disk. Called with every version the coordinator hands out.
    ///
    /// # Errors
    /// When there is a ring file and the floor could not be saved in time.
    pub fn reserve_versions(&self, floor: u64) -> Result<(), String> {
        let Some(saver) = &self.saver else {
            return Ok(());
        };
        match self.floor.check(floor) {
            Reserve::Ready => Ok(()),
            Reserve::Ask => {
                saver.ask();
                Ok(())
            }
            Reserve::Wait => {
                saver.wait(saver.ask(), Self::SAVE_TIMEOUT)?;
                // That save started after `check` wished for a floor above `floor`.
                if floor <= self.floor.saved() {
                    Ok(())
                } else {
                    Err(format!(
                        "version {floor} is above the saved floor {}",
                        self.floor.saved()
                    ))
                }
            }
        }
    }

    /// While the coordinator waits for the slaves it had before a restart: why requests
    /// cannot be served yet.
    pub fn warming(&self) -> Option<String> {
        self.lock().not_serving().err()
    }

    /// Ends the wait after a restart once its time is up: the slaves that did not come
    /// back are put on the ring and declared dead at once, so their ranges are
    /// re-replicated from their other copies.
    pub fn end_warmup_if_due(&self) {
        let missing: Vec<SlaveId> = {
            let mut state = self.lock();
            match &state.warmup {
                Some((deadline, _)) if Instant::now() >= *deadline => {}
                _ => return,
            }
            let Some((_, waiting)) = state.warmup.take() else {
                return;
            };
            let mut missing: Vec<SlaveId> = waiting.into_iter().collect();
            missing.sort();
            for &id in &missing {
                let Some(addr) = state.ring.addr_of(id).map(str::to_string) else {
                    continue;
                };
                let handle = Arc::new(SlaveHandle::new(
                    id,
                    addr,
                    self.links_per_slave,
                    self.slave_timeout,
                    self.secret.clone(),
                ));
                state.slaves.insert(
                    id,
                    SlaveInfo {
                        handle,
                        state: SlaveState::Alive,
                        session: 0,
                        last_seen: Instant::now(),
                    },
                );
                state.ring.insert_saved(id);
            }
            // Everyone restored holds the slots it had: that is where the data is.
            let ring = state.ring.clone();
            state.set_applied(&ring);
            missing
        };
        self.epoch_changed.notify_all();
        for id in missing {
            self.suspect(
                id,
                "it did not register again after the coordinator restarted",
            );
        }
        self.save();
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

    fn send(&self, event: Event) {
        if let Some(sender) = crate::sync::lock(&self.events).as_ref() {
            let _ = sender.send(event);
        }
    }

    /// A slave registers from `addr`. A new address gets a fresh id; a known one its old
    /// one. If an older incarnation of it is still on the ring, that one is
    /// taken off first (its ranges are re-replicated), since the new process starts
    /// empty. The slave then joins: it is written to at once, and routed to once it has
    /// its data.
    pub fn register(&self, addr: &str) -> Registered {
        let session = self
            .sessions
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let (registered, old, replicate, rejoined) = {
            let mut state = self.lock();
            let (id, returning) = state.ring.assign(addr);
            // Back after a coordinator restart, with its data: straight onto the ring.
            let awaited = state
                .warmup
                .as_mut()
                .is_some_and(|(_, waiting)| waiting.remove(&id));
            // Connections are made lazily, on first use: nothing here does I/O.
            let handle = Arc::new(SlaveHandle::new(
                id,
                addr.to_string(),
                self.links_per_slave,
                self.slave_timeout,
                self.secret.clone(),
            ));
            let mut replicate = None;
            if state.ring.remove(id) {
                state.moving += 1;
                replicate = Some(Event::Replicate {
                    id,
                    reason: "it registered again (restarted)".into(),
                    done: None,
                });
            }
            if state.joining == Some(id) {
                state.set_joining(None);
            }
            let old = state.slaves.insert(
                id,
                SlaveInfo {
                    handle,
                    state: if awaited {
                        SlaveState::Alive
                    } else {
                        SlaveState::Joining
                    },
                    session,
                    last_seen: Instant::now(),
                },
            );
            if awaited {
                state.ring.insert_saved(id);
                if state.warmup.as_ref().is_some_and(|(_, w)| w.is_empty()) {
                    state.warmup = None;
                    let ring = state.ring.clone();
                    state.set_applied(&ring);
                    info!("every slave of the restored ring is back: serving");
                }
            }
            (
                Registered {
                    id,
                    session,
                    returning,
                },
                old,
                replicate.filter(|_| !awaited),
                awaited,
            )
        };
        self.epoch_changed.notify_all();
        if let Some(old) = old {
            old.handle.close();
        }
        if let Some(event) = replicate {
            self.send(event);
        }
        if !rejoined {
            self.send(Event::Join {
                id: registered.id,
                session,
            });
        }
        self.save();
        registered
    }

    /// Records a heartbeat.
    pub fn heard(&self, id: SlaveId, session: u64) -> Heard {
        let mut state = self.lock();
        match state.slaves.get_mut(&id) {
            Some(info) if info.session == session && info.state != SlaveState::Dead => {
                info.last_seen = Instant::now();
                Heard::Known
            }
            _ => Heard::Unknown,
        }
    }

    /// Takes a slave off the ring because it failed (`reason` says how) and queues the
    /// re-replication of its ranges. Does nothing if it is already dead.
    pub fn suspect(&self, id: SlaveId, reason: &str) {
        let event = {
            let mut state = self.lock();
            let Some(info) = state.slaves.get_mut(&id) else {
                return;
            };
            if matches!(info.state, SlaveState::Dead | SlaveState::Suspected) {
                return;
            }
            let was = info.state;
            info.state = SlaveState::Suspected;
            warn!("slave {id} at {} declared dead: {reason}", info.handle.addr);
            if state.joining == Some(id) {
                state.set_joining(None);
            }
            if was == SlaveState::Joining || !state.ring.remove(id) {
                if let Some(info) = state.slaves.get_mut(&id) {
                    info.state = SlaveState::Dead;
                }
                None
            } else {
                state.moving += 1;
                Some(Event::Replicate {
                    id,
                    reason: reason.to_string(),
                    done: None,
                })
            }
        };
        self.epoch_changed.notify_all();
        if let Some(event) = event {
            self.send(event);
        }
        self.save();
    }

    /// Takes a live slave off the ring for a graceful leave and queues the hand-off;
    /// `done` is told when it is over. Returns false if the slave is not on the ring under
    /// that session.
    pub fn leave(&self, id: SlaveId, session: u64, done: std::sync::mpsc::SyncSender<()>) -> bool {
        if !self.begin_leave(id, session) {
            return false;
        }
        self.send(Event::Replicate {
            id,
            reason: "it is leaving".into(),
            done: Some(done),
        });
        self.save();
        true
    }

    fn begin_leave(&self, id: SlaveId, session: u64) -> bool {
        {
            let mut state = self.lock();
            let Some(info) = state.slaves.get_mut(&id) else {
                return false;
            };
            if info.session != session || info.state != SlaveState::Alive {
                return false;
            }
            info.state = SlaveState::Leaving;
            if !state.ring.remove(id) {
                return false;
            }
            state.moving += 1;
        }
        self.epoch_changed.notify_all();
        true
    }

    /// Marks a slave dead once its ranges have been handed on, and ends a data move.
    pub fn finish_replicate(&self, id: SlaveId) {
        let mut state = self.lock();
        if let Some(info) = state.slaves.get_mut(&id)
            && matches!(
                info.state,
                SlaveState::Suspected | SlaveState::Leaving | SlaveState::Dead
            )
        {
            info.state = SlaveState::Dead;
        }
        state.moving = state.moving.saturating_sub(1);
        state.progress.clear();
    }

    /// Starts joining a registered slave: returns its handle and the ring as it will be
    /// with it, or `None` if that registration is stale.
    pub fn begin_join(&self, id: SlaveId, session: u64) -> Option<(Arc<SlaveHandle>, Ring)> {
        let mut state = self.lock();
        let info = state.slaves.get(&id)?;
        if info.session != session || info.state != SlaveState::Joining {
            return None;
        }
        let handle = Arc::clone(&info.handle);
        let future = state.ring.with(id);
        state.set_joining(Some(id));
        state.future = Some((future.clone(), state.ring.epoch()));
        state.moving += 1;
        drop(state);
        self.epoch_changed.notify_all();
        Some((handle, future))
    }

    /// Starts evening out the shares (after a death or a leave left them uneven): returns
    /// the ring as it will be, or `None` when they are even, or a join or a restart is
    /// under way. Writes go to the current and the future places until
    /// [`Membership::finish_rebalance`] or [`Membership::abort_rebalance`].
    pub fn begin_rebalance(&self) -> Option<Ring> {
        let future = {
            let mut state = self.lock();
            if state.joining.is_some()
                || state.future.is_some()
                || state.warmup.is_some()
                || state.ring.is_balanced()
            {
                return None;
            }
            let future = state.ring.rebalanced();
            state.future = Some((future.clone(), state.ring.epoch()));
            state.join_changes += 1;
            state.moving += 1;
            future
        };
        self.epoch_changed.notify_all();
        Some(future)
    }

    /// Ends a rebalance whose copies failed: nothing changes.
    pub fn abort_rebalance(&self) {
        {
            let mut state = self.lock();
            if state.future.take().is_some() {
                state.join_changes += 1;
            }
            state.moving = state.moving.saturating_sub(1);
            state.progress.clear();
        }
        self.epoch_changed.notify_all();
    }

    /// Puts the rebalanced ring in place, unless the ring changed since it was planned
    /// (then nothing changes, the move ends, and false is returned). When it returns
    /// true the move goes on until [`Membership::end_move`].
    pub fn finish_rebalance(&self) -> bool {
        let switched = {
            let mut state = self.lock();
            let switched = match state.future.take() {
                Some((future, epoch)) if epoch == state.ring.epoch() => {
                    state.ring.adopt(&future);
                    true
                }
                _ => false,
            };
            state.join_changes += 1;
            if !switched {
                state.moving = state.moving.saturating_sub(1);
                state.progress.clear();
            }
            switched
        };
        self.epoch_changed.notify_all();
        if switched {
            self.save();
        }
        switched
    }

    /// Queues the join of a registered slave again (it could not start yet: the
    /// coordinator is waiting for its slaves after a restart). Does nothing if the slave
    /// is no longer joining under that session.
    pub fn requeue_join(&self, id: SlaveId, session: u64) {
        let joining = self
            .lock()
            .slaves
            .get(&id)
            .is_some_and(|info| info.session == session && info.state == SlaveState::Joining);
        if joining {
            self.send(Event::Join { id, session });
        }
    }

    /// Ends a join whose copies failed: the slave stays off the ring, and if it is still
    /// joining under that session the join is queued again (after whatever the failure
    /// queued).
    pub fn abort_join(&self, id: SlaveId, session: u64) {
        let retry = {
            let mut state = self.lock();
            state.moving = state.moving.saturating_sub(1);
            state.progress.clear();
            if state.joining == Some(id) {
                state.set_joining(None);
            }
            state
                .slaves
                .get(&id)
                .is_some_and(|info| info.session == session && info.state == SlaveState::Joining)
        };
        self.epoch_changed.notify_all();
        if retry {
            self.send(Event::Join { id, session });
        }
    }

    /// Puts a joined slave on the ring (if it is still joining under that session and the
    /// ring has not changed since the join was planned: then the join is queued again).
    /// Returns false if it did not go on the ring. Ends the data move either way.
    pub fn finish_join(&self, id: SlaveId, session: u64) -> bool {
        let joined = {
            let mut state = self.lock();
            let joining = state
                .slaves
                .get(&id)
                .is_some_and(|info| info.session == session && info.state == SlaveState::Joining);
            let future = state
                .future
                .take()
                .filter(|(_, epoch)| *epoch == state.ring.epoch())
                .map(|(ring, _)| ring);
            if joining && future.is_none() {
                // A slave died or left while this one was receiving its data: plan again.
                drop(state);
                self.abort_join(id, session);
                return false;
            }
            let current = joining && future.is_some();
            // A join that goes on the ring is still moving data until the old places
            // have dropped what moved: [`Membership::end_move`] ends it.
            if !current {
                state.moving = state.moving.saturating_sub(1);
                state.progress.clear();
            }
            if state.joining == Some(id) {
                state.set_joining(None);
            }
            if let Some(future) = future.filter(|_| current) {
                state.ring.adopt(&future);
                if let Some(info) = state.slaves.get_mut(&id) {
                    info.state = SlaveState::Alive;
                }
            }
            current
        };
        self.epoch_changed.notify_all();
        self.save();
        joined
    }

    /// A join's clean-up (split, drop) is done: data no longer moves for it.
    pub fn end_move(&self) {
        {
            let mut state = self.lock();
            state.moving = state.moving.saturating_sub(1);
            state.progress.clear();
        }
        self.epoch_changed.notify_all();
    }

    /// Sets the progress text `status` shows.
    pub fn set_progress(&self, text: String) {
        self.lock().progress = text;
    }

    /// Per slot, who held its data as of the last completed data move.
    pub fn applied(&self) -> Vec<Holders> {
        self.lock().applied.clone()
    }

    /// Records that the data now sits where `ring` places it (a data move completed).
    pub fn set_applied(&self, ring: &Ring) {
        self.lock().set_applied(ring);
    }

    /// True if `holder` (a slave with the session it had when it was recorded as a
    /// holder) can still serve as the source of a copy: same session, not dead.
    pub fn is_source(&self, holder: (SlaveId, u64)) -> bool {
        self.lock().slaves.get(&holder.0).is_some_and(|info| {
            info.session == holder.1
                && matches!(info.state, SlaveState::Alive | SlaveState::Leaving)
        })
    }

    /// True while a slave is joining.
    pub fn joining(&self) -> bool {
        self.lock().joining.is_some()
    }

    /// Counts a data move that no event started (a reconciliation) until [`Membership::end_move`].
    pub fn begin_move(&self) {
        self.lock().moving += 1;
        self.epoch_changed.notify_all();
    }

    /// The current ring (a copy, for planning moves).
    pub fn ring(&self) -> Ring {
        self.lock().ring.clone()
    }

    /// The handle of a slave, whatever its state.
    pub fn handle(&self, id: SlaveId) -> Option<Arc<SlaveHandle>> {
        self.lock()
            .slaves
            .get(&id)
            .map(|info| Arc::clone(&info.handle))
    }

    /// The primary and replica for `key`, or `None` when no slave is on the ring.
    ///
    /// # Errors
    /// Why nothing can be served: no slaves, or the coordinator is waiting for its slaves
    /// after a restart. (One lock for all of it: this is on every request's path.)
    pub fn route(&self, key: &[u8]) -> Result<Route, String> {
        let state = self.lock();
        state.not_serving()?;
        let no_slaves = || NO_SLAVES.to_string();
        let placement = state.ring.placement_of_key(key).ok_or_else(no_slaves)?;
        let handle = |id: SlaveId| state.slaves.get(&id).map(|info| Arc::clone(&info.handle));
        Ok(Route {
            primary: handle(placement.primary).ok_or_else(no_slaves)?,
            replica: placement.replica.and_then(handle),
            recovering: state.moving > 0,
        })
    }

    /// Every (slave, table) a write of `key` must reach: the key's primary (`own`) and
    /// replica (`previous`), plus, while a slave is joining, where the key will live once
    /// it has joined; the primary comes first (when the ring has one). The ticket counts
    /// the write as under way until it is dropped.
    ///
    /// # Errors
    /// As [`Membership::route`].
    #[allow(clippy::type_complexity)] // targets and their ticket, returned together
    pub fn write_targets(
        &self,
        key: &[u8],
    ) -> Result<(Vec<(Arc<SlaveHandle>, TableSel)>, WriteTicket<'_>), String> {
        let mut state = self.lock();
        state.not_serving()?;
        if state.ring.is_empty() && state.joining.is_none() {
            return Err(NO_SLAVES.to_string());
        }
        let epoch = state.epoch();
        *state.inflight.entry(epoch).or_insert(0) += 1;
        let ticket = WriteTicket {
            membership: self,
            epoch,
        };
        let hash = key_hash(key);
        let mut targets: Vec<(SlaveId, TableSel)> = Vec::with_capacity(2);
        let mut add = |placement: Option<crate::ring::Placement>| {
            if let Some(p) = placement {
                targets.push((p.primary, TableSel::Own));
                if let Some(replica) = p.replica {
                    targets.push((replica, TableSel::Previous));
                }
            }
        };
        add(state.ring.placement(hash));
        if let Some((future, _)) = &state.future {
            add(future.placement(hash));
        }
        targets.sort_by_key(|&(id, table)| (id, table as u8));
        targets.dedup();
        // The key's primary first: it decides read-modify-writes (`update`).
        if let Some(primary) = state.ring.placement(hash).map(|p| p.primary)
            && let Some(at) = targets.iter().position(|&t| t == (primary, TableSel::Own))
        {
            targets.swap(0, at);
        }
        let handles = targets
            .into_iter()
            .filter_map(|(id, table)| {
                state
                    .slaves
                    .get(&id)
                    .map(|info| (Arc::clone(&info.handle), table))
            })
            .collect();
        Ok((handles, ticket))
    }

    /// Waits until every write whose targets were chosen before the current epoch has
    /// finished (or `timeout` passes), so a data move that follows sees them all. Returns
    /// false on timeout.
    pub fn drain(&self, timeout: Duration) -> bool {
        let mut state = self.lock();
        let epoch = state.epoch();
        state.draining += 1;
        let (mut state, result) = self
            .epoch_changed
            .wait_timeout_while(state, timeout, |s| {
                s.inflight.range(..epoch).next().is_some()
            })
            .unwrap_or_else(|p| p.into_inner());
        state.draining -= 1;
        !result.timed_out()
    }

    /// The ring epoch (grows at every routing change).
    pub fn epoch(&self) -> u64 {
        self.lock().epoch()
    }

    /// Waits until the epoch differs from `epoch` or `timeout` passes; returns the epoch.
    pub fn wait_epoch(&self, epoch: u64, timeout: Duration) -> u64 {
        let state = self.lock();
        let (state, _) = self
            .epoch_changed
            .wait_timeout_while(state, timeout, |s| s.epoch() == epoch)
            .unwrap_or_else(|p| p.into_inner());
        state.epoch()
    }

    /// Slaves whose last heartbeat is older than `timeout` (and not dead).
    pub fn silent_for(&self, timeout: Duration) -> Vec<(SlaveId, Duration)> {
        let state = self.lock();
        let now = Instant::now();
        state
            .slaves
            .iter()
            .filter(|(_, info)| {
                !matches!(info.state, SlaveState::Dead | SlaveState::Suspected)
                    && now.duration_since(info.last_seen) > timeout
            })
            .map(|(&id, info)| (id, now.duration_since(info.last_seen)))
            .collect()
    }

    /// Every known slave in id order with its state and slots, the ring epoch, the number of
    /// copies each key has, and the progress of any data move.
    pub fn status(&self) -> StatusReport {
        let state = self.lock();
        let mut rows: Vec<StatusRow> = state
            .slaves
            .iter()
            .map(|(&id, info)| StatusRow {
                member: Member {
                    id,
                    addr: info.handle.addr.clone(),
                    slots: state.ring.slot_count(id),
                },
                token: state.ring.first_token(id),
                state: info.state,
                handle: (info.state != SlaveState::Dead).then(|| Arc::clone(&info.handle)),
            })
            .collect();
        rows.sort_by_key(|row| row.member.id);
        let progress = if state.moving > 0 && state.progress.is_empty() {
            "moving data".to_string()
        } else {
            state.progress.clone()
        };
        StatusReport {
            rows,
            epoch: state.epoch(),
            copies: state.ring.len().min(2),
            progress,
        }
    }

    /// Number of slaves on the ring.
    pub fn len(&self) -> usize {
        self.lock().ring.len()
    }

    /// True when no slave is on the ring.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles of the slaves on the ring (for `stats`).
    pub fn live_handles(&self) -> Vec<Arc<SlaveHandle>> {
        let state = self.lock();
        state
            .ring
            .members()
            .iter()
            .filter_map(|m| state.slaves.get(&m.id).map(|info| Arc::clone(&info.handle)))
            .collect()
    }

    /// The routing view for direct routing: the ring, its epoch, and whether it is
    /// stable (serving, no data moving, no slave joining, suspected or leaving).
    pub fn view(&self) -> View {
        let state = self.lock();
        let settled = state
            .slaves
            .values()
            .all(|info| matches!(info.state, SlaveState::Alive | SlaveState::Dead));
        let stable = settled
            && state.warmup.is_none()
            && state.moving == 0
            && state.joining.is_none()
            && !state.ring.is_empty();
        View::new(
            state.epoch(),
            stable,
            state.ring.members(),
            &state.ring.tokens(),
        )
    }

    /// Handles of every slave not known to be dead (the targets of view pushes).
    pub fn reachable_handles(&self) -> Vec<(SlaveId, Arc<SlaveHandle>)> {
        self.lock()
            .slaves
            .iter()
            .filter(|(_, info)| info.state != SlaveState::Dead)
            .map(|(&id, info)| (id, Arc::clone(&info.handle)))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn membership() -> (Membership, mpsc::Receiver<Event>) {
        let membership = Membership::new(1, Duration::from_secs(1));
        let (events, received) = mpsc::channel();
        membership.set_events(events);
        (membership, received)
    }

    /// Registers `addr` and takes it through a whole join.
    fn join(membership: &Membership, addr: &str) -> SlaveId {
        let registered = membership.register(addr);
        assert!(
            membership
                .begin_join(registered.id, registered.session)
                .is_some()
        );
        assert!(membership.finish_join(registered.id, registered.session));
        membership.end_move();
        registered.id
    }

    #[test]
    fn a_slave_that_registers_while_another_joins_gets_its_share_at_its_own_join() {
        let (membership, _events) = membership();
        join(&membership, "127.0.0.1:1");
        let b = membership.register("127.0.0.1:2");
        assert!(membership.begin_join(b.id, b.session).is_some());
        // C registers while B receives its data.
        let c = membership.register("127.0.0.1:3");
        assert!(membership.finish_join(b.id, b.session));
        membership.end_move();
        let (_, future) = membership.begin_join(c.id, c.session).expect("C joins");
        assert!(future.slot_count(c.id) >= crate::ring::SLOTS / 3 - 1);
        assert!(membership.finish_join(c.id, c.session));
        let shares: Vec<usize> = membership
            .ring()
            .members()
            .iter()
            .map(|m| m.slots)
            .collect();
        assert_eq!(shares.len(), 3);
        assert!(
            shares.iter().all(|&n| (341..=342).contains(&n)),
            "{shares:?}"
        );
    }

    #[test]
    fn a_join_moves_data_until_the_old_places_have_dropped_it() {
        let (membership, events) = membership();
        let first = join(&membership, "127.0.0.1:1");
        assert!(membership.view().stable);
        let registered = membership.register("127.0.0.1:2");
        assert!(matches!(
            events.try_iter().last(),
            Some(Event::Join { id, .. }) if id == registered.id
        ));
        assert!(!membership.view().stable, "a slave is joining");
        let (_, future) = membership
            .begin_join(registered.id, registered.session)
            .unwrap();
        assert_eq!(future.len(), 2);
        // While it joins, writes reach it and the old places: both tables of the first.
        let (targets, ticket) = membership.write_targets(b"k").unwrap();
        assert!(targets.iter().any(|(h, _)| h.id == registered.id));
        assert!(targets.iter().any(|(h, _)| h.id == first));
        drop(ticket);
        assert!(membership.finish_join(registered.id, registered.session));
        assert!(
            membership.route(b"k").unwrap().recovering,
            "on the ring, but the old places still hold what moved"
        );
        assert!(!membership.view().stable);
        membership.end_move();
        assert!(!membership.route(b"k").unwrap().recovering);
        assert!(membership.view().stable);
        assert_eq!(membership.len(), 2);
    }

    #[test]
    fn write_targets_put_the_key_primary_first() {
        let (membership, _events) = membership();
        for port in 1..=3 {
            join(&membership, &format!("127.0.0.1:{port}"));
        }
        for i in 0..200 {
            let key = format!("key{i}").into_bytes();
            let route = membership.route(&key).unwrap();
            let (targets, _ticket) = membership.write_targets(&key).unwrap();
            assert_eq!(targets.len(), 2);
            assert_eq!(targets[0].0.id, route.primary.id);
            assert_eq!(targets[0].1, TableSel::Own);
            assert_eq!(Some(targets[1].0.id), route.replica.as_ref().map(|r| r.id));
            assert_eq!(targets[1].1, TableSel::Previous);
        }
    }

    #[test]
    fn a_suspected_slave_leaves_the_ring_once_and_its_ranges_move() {
        let (membership, events) = membership();
        let a = join(&membership, "127.0.0.1:1");
        let b = join(&membership, "127.0.0.1:2");
        let _ = events.try_iter().count();
        let epoch = membership.epoch();
        membership.suspect(a, "test");
        assert!(membership.epoch() > epoch, "a ring change is a new epoch");
        assert!(matches!(
            events.try_iter().last(),
            Some(Event::Replicate { id, .. }) if id == a
        ));
        let route = membership.route(b"k").unwrap();
        assert_eq!(route.primary.id, b);
        assert!(route.replica.is_none());
        assert!(route.recovering);
        membership.suspect(a, "again");
        assert_eq!(events.try_iter().count(), 0, "declared dead once");
        membership.finish_replicate(a);
        assert!(!membership.route(b"k").unwrap().recovering);
        // Its address registers again with its old id and token.
        let again = membership.register("127.0.0.1:1");
        assert_eq!(again.id, a);
    }

    #[test]
    fn a_drain_waits_for_the_writes_of_older_epochs() {
        let (membership, _events) = membership();
        let a = join(&membership, "127.0.0.1:1");
        join(&membership, "127.0.0.1:2");
        let (_, ticket) = membership.write_targets(b"k").unwrap();
        assert!(membership.drain(Duration::from_millis(10)), "nothing older");
        membership.suspect(a, "test");
        assert!(
            !membership.drain(Duration::from_millis(50)),
            "a write of the old epoch is under way"
        );
        drop(ticket);
        assert!(membership.drain(Duration::from_millis(50)));
    }

    #[test]
    fn collection_waits_for_a_quiet_ring_and_its_horizon_only_grows() {
        let (membership, _events) = membership();
        assert!(membership.collection_targets().is_none(), "no slaves");
        let a = join(&membership, "127.0.0.1:1");
        let b = join(&membership, "127.0.0.1:2");
        let targets = membership.collection_targets().expect("quiet");
        assert_eq!(targets.len(), 2);
        // A slave registering (joining) makes it wait.
        let c = membership.register("127.0.0.1:3");
        assert!(
            membership.collection_targets().is_none(),
            "a slave is joining"
        );
        assert!(membership.begin_join(c.id, c.session).is_some());
        assert!(membership.finish_join(c.id, c.session));
        assert!(
            membership.collection_targets().is_none(),
            "data still moving"
        );
        membership.end_move();
        assert_eq!(membership.collection_targets().map(|t| t.len()), Some(3));
        // A death: not until its ranges have moved.
        membership.suspect(a, "test");
        assert!(membership.collection_targets().is_none());
        membership.finish_replicate(a);
        let targets = membership.collection_targets().expect("quiet again");
        assert!(targets.iter().all(|(id, _)| *id != a));
        assert!(targets.iter().any(|(id, _)| *id == b));
        assert_eq!(membership.collection_horizon(), 0);
        assert_eq!(membership.raise_collection_horizon(50), Ok(50));
        assert_eq!(membership.raise_collection_horizon(40), Ok(50));
        assert_eq!(membership.collection_horizon(), 50);
    }

    #[test]
    fn flush_markers_are_kept_and_pruned() {
        let (membership, _events) = membership();
        let now = crate::store::now_micros();
        membership
            .add_flush(FlushMarker {
                threshold: 10,
                at: 0,
            })
            .unwrap();
        membership
            .add_flush(FlushMarker {
                threshold: 20,
                at: 0,
            })
            .unwrap();
        let later = FlushMarker {
            threshold: 99,
            at: now + 60_000_000,
        };
        membership.add_flush(later).unwrap();
        let markers = membership.flushes();
        assert_eq!(markers.len(), 2, "{markers:?}");
        assert!(markers.contains(&FlushMarker {
            threshold: 20,
            at: 0
        }));
        assert!(markers.contains(&later));
    }
}
