//! The coordinator's view of its slaves: the [`Ring`] and a [`SlaveHandle`] per live
//! slave, together behind one `Mutex`.
//!
//! Lock rule: the lock is taken only inside these methods, for map and ring operations;
//! callers get `Arc<SlaveHandle>` clones and do all network I/O after it is released.
//! Handles that are replaced or removed are closed (their threads joined) outside the lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::coordinator::link::SlaveHandle;
use crate::ring::{Member, Ring, SlaveId, Token};

/// Where one key goes: its primary and, with two or more slaves, its replica.
pub struct Route {
    /// First ring successor of the key's hash; holds the key in `own`.
    pub primary: Arc<SlaveHandle>,
    /// The primary's successor; holds the key in `previous`.
    pub replica: Option<Arc<SlaveHandle>>,
}

/// The outcome of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The slave's id.
    pub id: SlaveId,
    /// Its ring token.
    pub token: Token,
    /// True when this address had registered before (same id and token).
    pub returning: bool,
}

struct State {
    ring: Ring,
    handles: HashMap<SlaveId, Arc<SlaveHandle>>,
}

/// Ring plus handles, under one lock.
pub struct Membership {
    state: Mutex<State>,
    links_per_slave: usize,
    slave_timeout: Duration,
}

impl Membership {
    /// An empty membership.
    pub fn new(links_per_slave: usize, slave_timeout: Duration) -> Membership {
        Membership {
            state: Mutex::new(State {
                ring: Ring::new(),
                handles: HashMap::new(),
            }),
            links_per_slave,
            slave_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation under this lock is a single ring or map update.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds the slave serving at `addr` to the ring (or takes it back with its old id and
    /// token). A fresh handle replaces any old one, whose connections went with the old
    /// process.
    pub fn register(&self, addr: &str) -> Registered {
        let handle;
        let old;
        let registered;
        {
            let mut state = self.lock();
            let (id, token, returning) = state.ring.join(addr);
            registered = Registered {
                id,
                token,
                returning,
            };
            handle = Arc::new(SlaveHandle::new(
                id,
                addr.to_string(),
                self.links_per_slave,
                self.slave_timeout,
            ));
            old = state.handles.insert(id, Arc::clone(&handle));
        }
        if let Some(old) = old {
            old.close();
        }
        registered
    }

    /// Removes a slave from the ring; returns false if it was not a member.
    pub fn remove(&self, id: SlaveId) -> bool {
        let (removed, handle) = {
            let mut state = self.lock();
            (state.ring.remove(id), state.handles.remove(&id))
        };
        if let Some(handle) = handle {
            handle.close();
        }
        removed
    }

    /// The primary and replica for `key`, or `None` when no slave is registered.
    pub fn route(&self, key: &[u8]) -> Option<Route> {
        let state = self.lock();
        let placement = state.ring.placement_of_key(key)?;
        let primary = Arc::clone(state.handles.get(&placement.primary)?);
        let replica = placement
            .replica
            .and_then(|id| state.handles.get(&id))
            .map(Arc::clone);
        Some(Route { primary, replica })
    }

    /// Live members in ring order with their handles, and the ring epoch.
    pub fn members(&self) -> (Vec<(Member, Arc<SlaveHandle>)>, u64) {
        let state = self.lock();
        let members = state
            .ring
            .members()
            .into_iter()
            .filter_map(|m| state.handles.get(&m.id).map(|h| (m, Arc::clone(h))))
            .collect();
        (members, state.ring.epoch())
    }

    /// Number of live slaves.
    pub fn len(&self) -> usize {
        self.lock().ring.len()
    }

    /// True when no slave is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every handle (joining their link threads). Used at shutdown.
    pub fn close_all(&self) {
        let handles: Vec<Arc<SlaveHandle>> = self.lock().handles.drain().map(|(_, h)| h).collect();
        for handle in handles {
            handle.close();
        }
    }
}
