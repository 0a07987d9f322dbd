//! What the rest of the coordinator reads: where a key goes ([`Membership::route`],
//! [`Membership::write_targets`]), the routing view, `status`, and the slaves to reach.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Membership, Route, SlaveState, StatusReport, StatusRow, WriteTicket};
use crate::link::SlaveHandle;
use crate::ring::{Member, Placement, Ring, SlaveId, key_hash};
use crate::view::View;
use crate::wire::TableSel;

/// Why a request finds no slave.
pub const NO_SLAVES: &str = "no slaves in the ring (start a piazza-slave)";

/// Why a key cannot be routed now. Clients see its text (as a server error), so the
/// messages are part of what they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No slave is on the ring (nor joining, for a write).
    NoSlaves,
    /// A restarted coordinator is waiting for the slaves of its saved ring.
    Restarting {
        /// How many have not registered again yet.
        waiting: usize,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NoSlaves => f.write_str(NO_SLAVES),
            RouteError::Restarting { waiting } => write!(
                f,
                "coordinator restarting: waiting for {waiting} slave(s) to register again"
            ),
        }
    }
}

impl std::error::Error for RouteError {}

impl Membership {
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

    /// The primary and replica for `key`.
    ///
    /// # Errors
    /// Why nothing can be served: no slaves, or the coordinator is waiting for its slaves
    /// after a restart. (One lock for all of it: this is on every request's path.)
    pub fn route(&self, key: &[u8]) -> Result<Route, RouteError> {
        let state = self.lock();
        state.not_serving()?;
        route_in(&state, key)
    }

    /// [`Membership::route`] for each of `keys`, under one lock (a multi-get's keys).
    ///
    /// # Errors
    /// As [`Membership::route`], for all the keys at once.
    pub fn route_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Result<Route, RouteError>>, RouteError> {
        let state = self.lock();
        state.not_serving()?;
        Ok(keys
            .iter()
            .map(|key| route_in(&state, key.as_ref()))
            .collect())
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
    ) -> Result<(Vec<(Arc<SlaveHandle>, TableSel)>, WriteTicket<'_>), RouteError> {
        let mut state = self.lock();
        state.not_serving()?;
        if state.ring.is_empty() && state.joining.is_none() {
            return Err(RouteError::NoSlaves);
        }
        let ticket = WriteTicket::new(self, &mut state);
        let hash = key_hash(key);
        let mut targets: Vec<(SlaveId, TableSel)> = Vec::with_capacity(2);
        let mut add = |placement: Option<Placement>| {
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

    /// The slaves on the ring, if the cluster is quiet enough to collect: serving (not
    /// waiting for slaves after a restart), no data moving and every table in order, no
    /// slave joining, suspected or leaving, every slave on the ring alive. `None`
    /// otherwise.
    pub fn collection_targets(&self) -> Option<Vec<(SlaveId, Arc<SlaveHandle>)>> {
        let state = self.lock();
        let quiet = state.warmup.is_none()
            && state.moving == 0
            && !state.unsorted
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
            && !state.unsorted
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
}

/// Where `key` goes in `state` (which serves).
fn route_in(state: &super::State, key: &[u8]) -> Result<Route, RouteError> {
    let placement = state
        .ring
        .placement_of_key(key)
        .ok_or(RouteError::NoSlaves)?;
    let handle = |id: SlaveId| state.slaves.get(&id).map(|info| Arc::clone(&info.handle));
    Ok(Route {
        primary: handle(placement.primary).ok_or(RouteError::NoSlaves)?,
        replica: placement.replica.and_then(handle),
        recovering: state.moving > 0 || state.unsorted,
    })
}
