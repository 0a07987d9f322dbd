//! The state machine of a slave's membership, one transition per method: a slave
//! registers (`joining`), is joined (`begin_join`, then `finish_join` or `abort_join`:
//! `alive`), is suspected (`suspected`, then `dead` once its ranges have moved:
//! `finish_replicate`), or leaves (`leaving`, then `dead`); the shares are evened out
//! after a death (`begin_rebalance`, then `finish_rebalance` or `abort_rebalance`); and
//! after a restart the slaves of the saved ring are awaited (`warming`,
//! `end_warmup_if_due`). Every change of where reads or writes go wakes
//! [`Membership::wait_epoch`]; ring changes are saved before the method returns.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{info, warn};

use super::{Event, Heard, Holders, Membership, Registered, RouteError, SlaveInfo, SlaveState};
use crate::link::SlaveHandle;
use crate::ring::{Ring, SlaveId};

impl Membership {
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
            // Back after a coordinator restart, with its data: straight onto the ring. So
            // is one that registers again before the warm-up is over (it restarted, and
            // nothing was served meanwhile to miss).
            let awaited = state
                .warmup
                .as_mut()
                .is_some_and(|(_, waiting)| waiting.remove(&id))
                || (state.warmup.is_some() && state.ring.is_live(id));
            // Connections are made lazily, on first use: nothing here does I/O.
            let handle = Arc::new(SlaveHandle::new(
                id,
                addr.to_string(),
                self.links_per_slave,
                self.slave_timeout,
                self.secret.clone(),
            ));
            let mut replicate = None;
            if !awaited && state.ring.remove(id) {
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
                    state.restore_applied();
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
            let in_warmup = state.warmup.is_some() && state.ring.is_live(id);
            let Some(info) = state.slaves.get_mut(&id) else {
                return;
            };
            if matches!(info.state, SlaveState::Dead | SlaveState::Suspected) {
                return;
            }
            let was = info.state;
            // During the warm-up after a restart, a slave of the restored ring that
            // fails is awaited again, its slots kept: taking them away now would give
            // them to whichever slaves are back so far, not to where the copies are.
            // If it does not come back, the warm-up's end declares it dead.
            if in_warmup {
                warn!(
                    "slave {id} at {} failed during the warm-up ({reason}): waiting for it again",
                    info.handle.addr
                );
                info.state = SlaveState::Dead;
                state.ring.put_back_saved(id);
                if let Some((_, waiting)) = state.warmup.as_mut() {
                    waiting.insert(id);
                }
                drop(state);
                self.epoch_changed.notify_all();
                return;
            }
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
            if state.warmup.is_some() {
                return false;
            }
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
            let future = state.take_future();
            if let Some(future) = &future {
                state.ring.adopt(future);
            }
            let switched = future.is_some();
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
            let future = state.take_future();
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

    /// Says whether slaves' tables may be out of order (a move was cut short or is
    /// sorting them): reads then take the newer of a primary's two tables, and the next
    /// move sorts every table and clears strays (`recovery`).
    pub fn set_unsorted(&self, unsorted: bool) {
        self.lock().unsorted = unsorted;
    }

    /// True while slaves' tables may be out of order (see [`Membership::set_unsorted`]).
    pub fn unsorted(&self) -> bool {
        self.lock().unsorted
    }

    /// Records the move that set [`Membership::applied`] last as finished (its tables
    /// sorted and old copies dropped), and asks for a save: a restarted coordinator
    /// starts from there.
    pub fn record_finished_move(&self) {
        {
            let mut state = self.lock();
            state.recorded = state.applied.clone();
        }
        self.ask_save();
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

    /// While the coordinator waits for the slaves it had before a restart: why requests
    /// cannot be served yet.
    pub fn warming(&self) -> Option<RouteError> {
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
            // The data is where the file says (a move cut short by the restart is taken
            // up again from there); the missing are suspected below, so no copy is
            // taken from them.
            state.restore_applied();
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
}
