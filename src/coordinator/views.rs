//! Publishing the routing view to the slaves, for direct routing (protocol.md, "Direct
//! routing").
//!
//! Only the `recovery` thread publishes, so pushes never overlap and arrive in order:
//! - before every data move, a **fence**: the current view marked unstable, sent to every
//!   slave not known to be dead. A slave answers it only once no direct request of an
//!   older view is still being applied, and from then on redirects direct requests to
//!   the coordinator. So a move never misses a write that was acknowledged on the direct
//!   path: every such write landed on both its replicas before the move began;
//! - after a move, and every tick while the ring is stable, the **stable view** to every
//!   slave that has not acknowledged it yet (a slave that was unreachable, or new).
//!
//! A slave that cannot be fenced (it does not answer) is dead or cut off: as primary it
//! forwards every direct write to its successor, which is fenced and refuses it, so no
//! write can be acknowledged through it; its direct reads stop when its heartbeat lease
//! runs out (see `slave::direct`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};

use crate::coordinator::membership::Membership;
use crate::link::SlaveHandle;
use crate::ring::SlaveId;
use crate::view::View;
use crate::wire::{Frame, Opcode, Status};

/// How often the recovery thread republishes a stable view to slaves that lack it.
pub const PUBLISH_TICK: Duration = Duration::from_millis(250);

/// What each slave has acknowledged: (epoch, stable).
#[derive(Default)]
pub struct Publisher {
    acked: HashMap<SlaveId, (u64, bool)>,
}

impl Publisher {
    /// Fences every reachable slave before a data move: waits until each has answered
    /// (or failed to).
    pub fn fence(&mut self, membership: &Membership) {
        let mut view = membership.view();
        view.stable = false;
        let targets = membership.reachable_handles();
        self.push(&view, targets);
    }

    /// Sends the view to every slave that has not acknowledged it, if it is stable.
    pub fn publish(&mut self, membership: &Membership) {
        let view = membership.view();
        if !view.stable {
            return;
        }
        let targets: Vec<_> = membership
            .reachable_handles()
            .into_iter()
            .filter(|(id, _)| self.acked.get(id) != Some(&(view.epoch, true)))
            .collect();
        if !targets.is_empty() {
            self.push(&view, targets);
        }
    }

    fn push(&mut self, view: &View, targets: Vec<(SlaveId, Arc<SlaveHandle>)>) {
        let members = view.encode_members();
        let sent: Vec<_> = targets
            .into_iter()
            .map(|(id, handle)| {
                let mut frame = Frame::request(Opcode::SetView, 0, Vec::new(), members.clone());
                frame.arg = view.epoch;
                frame.flags = view.flags();
                let pending = handle.send(frame);
                (id, handle, pending)
            })
            .collect();
        for (id, handle, pending) in sent {
            // A fence waits for the slave's direct requests in flight, which may wait
            // for their replica: allow for two request timeouts.
            let timeout = handle.timeout() * 2 + Duration::from_secs(1);
            match pending.and_then(|p| p.wait(timeout)) {
                Ok(reply) if reply.status == Status::Ok => {
                    debug!(
                        "slave {id} has view {} ({})",
                        view.epoch,
                        if view.stable { "stable" } else { "fenced" }
                    );
                    self.acked.insert(id, (view.epoch, view.stable));
                }
                Ok(reply) => {
                    self.acked.remove(&id);
                    warn!(
                        "slave {id} at {} refused view {}: {}: {}",
                        handle.addr,
                        view.epoch,
                        reply.status.name(),
                        reply.value_text()
                    );
                }
                Err(e) => {
                    self.acked.remove(&id);
                    debug!(
                        "cannot send view {} to slave {id} at {}: {e}",
                        view.epoch, handle.addr
                    );
                }
            }
        }
    }
}
