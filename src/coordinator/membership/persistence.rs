//! What [`Membership`] keeps in the `ring` file (see `coordinator::persist`) and who waits
//! for it: the ring and the slaves ever registered, the version floor, the `flush_all`
//! markers in force, the collection horizon, and where the data was when the last move
//! finished.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use super::{Holders, Membership};
use crate::clock::{Reserve, VersionFloor};
use crate::coordinator::persist::{PersistError, RingFile, Saved, SavedHolders, SavedSlave, Saver};
use crate::ring::{Assignment, Ring, SlaveId};
use crate::store::FlushMarker;

impl Membership {
    /// A membership kept in `dir`: restores what a previous run saved (slaves get their
    /// ids and tokens back; the ones that were on the ring are waited for, for `grace`,
    /// before anything is served) and saves every change.
    ///
    /// # Errors
    /// When the saved state cannot be read.
    pub fn persistent(
        dir: &Path,
        links_per_slave: usize,
        slave_timeout: Duration,
        grace: Duration,
        secret: Option<Vec<u8>>,
    ) -> Result<Membership, PersistError> {
        let mut membership = Membership::new(links_per_slave, slave_timeout);
        membership.secret = secret.map(Arc::new);
        let file = RingFile::new(dir);
        if let Some(saved) = file.load()? {
            membership.restore(&saved, grace);
        }
        membership.saver = Some(Saver::new(file));
        // The first save raises the version floor a block ahead, before writes need it.
        membership.ask_save();
        Ok(membership)
    }

    /// Takes back what a previous run saved: the ring's slaves get their ids and slots
    /// back, and the ones that were on it are awaited, for `grace`, before anything is
    /// served (the warm-up; see [`Membership::end_warmup_if_due`]). No I/O.
    pub(super) fn restore(&mut self, saved: &Saved, grace: Duration) {
        let assigned: Vec<Assignment> = saved
            .slaves
            .iter()
            .map(|slave| Assignment {
                id: slave.id,
                addr: slave.addr.clone(),
                slots: slave.slots.clone(),
                live: false,
            })
            .collect();
        let waiting: HashSet<SlaveId> = saved
            .slaves
            .iter()
            .filter(|slave| slave.on_ring)
            .map(|slave| slave.id)
            .collect();
        self.floor = VersionFloor::new(saved.version_floor);
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        state.ring = Ring::restore(&assigned, saved.next_id);
        state.flushes = saved.flushes.clone();
        state.collected = saved.collected;
        for holders in &saved.held {
            for &slot in &holders.slots {
                if let Some(at) = state.recorded.get_mut(slot) {
                    *at = Holders {
                        primary: Some((holders.primary, 0)),
                        replica: holders.replica.map(|id| (id, 0)),
                    };
                }
            }
        }
        if !waiting.is_empty() {
            // A move the restart cut short may have left tables out of order.
            state.unsorted = true;
            info!(
                "restored the ring: waiting up to {} ms for its {} slaves to register again",
                grace.as_millis(),
                waiting.len()
            );
            state.warmup = Some((Instant::now() + grace, waiting));
        }
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
    // - Where the data is (`held` lines), not waited for: recorded when a move has
    //   finished ([`Membership::record_finished_move`]). A file that still has the
    //   placement from before that move only makes a restarted coordinator copy, sort
    //   and drop again what is already done (copies merge by version); one that named
    //   holders before their copies were made would lose keys, and cannot happen, since
    //   the record is made after the copies.
    //
    // Waiting threads never do the I/O, and one save serves every ask made before it
    // starts, so a burst of failures costs one save, not one per thread.

    /// How long a thread waits for a save it depends on before giving up.
    const SAVE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Asks the `ring-save` thread for a save; returns its number (0 when nothing is kept).
    pub(super) fn ask_save(&self) -> u64 {
        self.saver.as_ref().map_or(0, Saver::ask)
    }

    /// Saves the current state and waits until it is on disk; a failure is logged. The
    /// I/O happens on the `ring-save` thread.
    pub(super) fn save(&self) {
        if let Err(e) = self.try_save() {
            log::error!("the ring change is not on disk: {e}");
        }
    }

    fn try_save(&self) -> Result<(), PersistError> {
        let Some(saver) = &self.saver else {
            return Ok(());
        };
        saver.wait(saver.ask(), Self::SAVE_TIMEOUT)
    }

    /// The state to write: the ring, the flush markers, and the version floor wished for.
    pub(super) fn snapshot(&self) -> Saved {
        let version_floor = self.floor.to_save();
        let state = self.lock();
        // Slots grouped by who holds them.
        let mut held: BTreeMap<(SlaveId, Option<SlaveId>), Vec<usize>> = BTreeMap::new();
        for (slot, holders) in state.recorded.iter().enumerate() {
            if let Some((primary, _)) = holders.primary {
                let replica = holders.replica.map(|(id, _)| id);
                held.entry((primary, replica)).or_default().push(slot);
            }
        }
        Saved {
            held: held
                .into_iter()
                .map(|((primary, replica), slots)| SavedHolders {
                    primary,
                    replica,
                    slots,
                })
                .collect(),
            next_id: state.ring.next_id(),
            version_floor,
            flushes: state.flushes.clone(),
            collected: state.collected,
            slaves: state
                .ring
                .assigned()
                .into_iter()
                .map(|assignment| {
                    // A slave awaited after a restart is still a ring member.
                    let waited = state
                        .warmup
                        .as_ref()
                        .is_some_and(|(_, waiting)| waiting.contains(&assignment.id));
                    SavedSlave {
                        id: assignment.id,
                        addr: assignment.addr,
                        slots: assignment.slots,
                        on_ring: assignment.live || waited,
                    }
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
    pub fn add_flush(&self, marker: FlushMarker) -> Result<(), PersistError> {
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
    pub fn raise_collection_horizon(&self, horizon: u64) -> Result<u64, PersistError> {
        let raised = {
            let mut state = self.lock();
            state.collected = state.collected.max(horizon);
            state.collected
        };
        self.try_save()?;
        Ok(raised)
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
    pub fn reserve_versions(&self, floor: u64) -> Result<(), PersistError> {
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
                    Err(PersistError::AboveFloor {
                        version: floor,
                        floor: self.floor.saved(),
                    })
                }
            }
        }
    }
}
