//! Writes under way, counted by the epoch their targets were chosen at, so a data move can
//! wait for the writes that chose targets before the ring changed ([`Membership::drain`]),
//! and a write that failed can wait for the next placement ([`Membership::wait_epoch`]).

use std::time::Duration;

use super::{Membership, State};

/// A write under way, counted until dropped (see [`Membership::drain`]).
pub struct WriteTicket<'a> {
    membership: &'a Membership,
    epoch: u64,
}

impl<'a> WriteTicket<'a> {
    /// Counts a write whose targets are chosen now, at the current epoch (under the lock
    /// that chose them).
    pub(super) fn new(membership: &'a Membership, state: &mut State) -> WriteTicket<'a> {
        let epoch = state.epoch();
        *state.inflight.entry(epoch).or_insert(0) += 1;
        WriteTicket { membership, epoch }
    }

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

impl Membership {
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
}
