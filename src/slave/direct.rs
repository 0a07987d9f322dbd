//! Direct routing on the slave: clients that hold the coordinator's routing view send
//! `Get`, `Put` and `Delete` straight to the key's primary (protocol.md, "Direct
//! routing").
//!
//! Rules:
//! - a direct request is served only under a *stable* view whose epoch is the one the
//!   request carries (`arg`), while the coordinator answers our heartbeats (a lease of
//!   [`lease_for`] the heartbeat interval), and only by the key's primary; anything else
//!   gets `Redirect` with our epoch, and the client asks the coordinator again;
//! - a direct write gets its version here, from a clock tagged with this slave's id and
//!   above the version the key already has; it is sent on to the replica (`Forward`)
//!   before it is applied locally, and acknowledged only when both have applied it;
//! - the replica checks the same view and epoch before it applies a forwarded write;
//! - a direct request holds the view's read lock from its check to its reply, replica
//!   round trip included. `SetView` takes the write lock, so when it returns no request
//!   of the older view is still being applied: that is the fence the coordinator puts up
//!   before it moves data. Forwarded writes only *try* the lock (a fence waiting on the
//!   replica makes them redirect), so fences on neighbouring slaves cannot wait on each
//!   other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{debug, info};

use super::ops::{entry_reply, live_after, storage_error};
use super::{Node, connect_with};
use crate::client::{Client, ClientError};
use crate::clock::{self, VersionClock};
use crate::ring::SlaveId;
use crate::store::{Entry, Table, Version};
use crate::view::View;
use crate::wire::{FORWARD_PREFIX, Frame, Opcode, Status, TableSel};

/// How long a primary waits for its replica to apply a forwarded write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after the last heartbeat answer direct requests are still served.
pub fn lease_for(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval * 3).max(Duration::from_secs(1))
}

/// The direct-routing state of a slave.
pub struct Direct {
    /// The latest view from the coordinator, with our id in it.
    view: RwLock<Option<(View, SlaveId)>>,
    clock: VersionClock,
    started: Instant,
    /// Milliseconds after `started` of the last heartbeat answer, plus one (0: none).
    heard: AtomicU64,
    lease: Duration,
}

/// A connection from one serving thread to this slave's successor, for forwarding.
#[derive(Default)]
pub struct Forwarder {
    link: Option<(String, Client)>,
}

impl Forwarder {
    fn call(&mut self, addr: &str, secret: Option<&[u8]>, mut frame: Frame) -> Result<u32, String> {
        if self.link.as_ref().is_none_or(|(to, _)| to != addr) {
            let mut client = connect_with(addr, secret).map_err(|e| e.to_string())?;
            client
                .set_timeout(FORWARD_TIMEOUT)
                .map_err(|e| e.to_string())?;
            self.link = Some((addr.to_string(), client));
        }
        let sent = match self.link.as_mut() {
            Some((_, client)) => client.send(&mut frame),
            None => Err(ClientError::Closed),
        };
        if sent.is_err() {
            self.link = None;
        }
        sent.map_err(|e| e.to_string())
    }

    fn receive(&mut self, id: u32) -> Result<Frame, ClientError> {
        let received = match self.link.as_mut() {
            Some((_, client)) => client.receive(id),
            None => Err(ClientError::Closed),
        };
        if received.is_err() {
            self.link = None;
        }
        received
    }
}

/// Why a direct request is not served here: our epoch, and a message.
struct Refusal(u64, String);

impl Refusal {
    fn reply(self, frame: &Frame) -> Frame {
        debug!("redirecting a direct {:?}: {}", frame.opcode, self.1);
        let mut reply = frame.error_reply(Status::Redirect, &self.1);
        reply.arg = self.0;
        reply
    }
}

type Admitted<'a> = RwLockReadGuard<'a, Option<(View, SlaveId)>>;

impl Direct {
    /// No view yet; direct requests are redirected until the coordinator sends one.
    pub fn new(heartbeat_interval: Duration) -> Direct {
        Direct {
            view: RwLock::new(None),
            clock: VersionClock::new(0, 1),
            started: Instant::now(),
            heard: AtomicU64::new(0),
            lease: lease_for(heartbeat_interval),
        }
    }

    /// The coordinator answered a heartbeat.
    pub fn heard(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.heard.store(now, Ordering::Relaxed);
    }

    /// The coordinator no longer knows us: serve no direct request until a new view.
    pub fn forget(&self) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A `flush_all` at `version`: direct writes from now on get versions above it.
    pub fn observe(&self, version: u64) {
        let _ = self.clock.next_above(version, |_| Ok(()));
    }

    /// The epoch of the view we hold (0: none).
    pub fn epoch(&self) -> u64 {
        match self.view.try_read() {
            Ok(view) => view.as_ref().map_or(0, |(v, _)| v.epoch),
            Err(_) => 0,
        }
    }

    /// `SetView`: takes the write lock (so it waits for direct requests in flight) and
    /// installs the coordinator's view.
    pub fn set_view(&self, node: &Node, frame: &Frame) -> Frame {
        let view = match View::decode(frame.arg, frame.flags, &frame.value) {
            Ok(view) => view,
            Err(e) => return frame.error_reply(Status::Invalid, &e.to_string()),
        };
        let Some(me) = node.registration().map(|r| SlaveId(r.id)) else {
            // Not registered yet: refuse, so the coordinator sends the view again.
            self.forget();
            return frame.error_reply(Status::Unavailable, "not registered yet");
        };
        self.clock.set_source(clock::slave_source(me.0));
        let mut held = self.view.write().unwrap_or_else(|p| p.into_inner());
        let was = held.as_ref().map(|(v, _)| (v.epoch, v.stable));
        if was != Some((view.epoch, view.stable)) {
            info!(
                "routing view {}: {} ({} slaves)",
                view.epoch,
                if view.stable {
                    "stable, serving direct requests"
                } else {
                    "data moving, direct requests redirected"
                },
                view.members.len()
            );
        }
        *held = Some((view, me));
        frame.reply(Status::Ok)
    }

    fn admit(&self, epoch: u64) -> Result<(Admitted<'_>, u64), Refusal> {
        let held = match self.view.try_read() {
            Ok(held) => held,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(Refusal(0, "the routing view is changing".into()));
            }
        };
        let Some((view, _)) = held.as_ref() else {
            return Err(Refusal(
                0,
                "no routing view from the coordinator yet".into(),
            ));
        };
        let ours = view.epoch;
        if !view.stable {
            return Err(Refusal(
                ours,
                format!("data is moving (view {ours}): use the coordinator"),
            ));
        }
        if ours != epoch {
            return Err(Refusal(
                ours,
                format!("request for view {epoch}, this slave has view {ours}"),
            ));
        }
        let heard = self.heard.load(Ordering::Relaxed);
        let since = self.started.elapsed().as_millis() as u64 + 1;
        if heard == 0 || Duration::from_millis(since.saturating_sub(heard)) > self.lease {
            return Err(Refusal(
                ours,
                "the coordinator has not answered our heartbeats lately".into(),
            ));
        }
        Ok((held, ours))
    }

    /// A direct `Get`, `Put` or `Delete` from a client (arg = the client's view epoch).
    pub fn serve(&self, node: &Node, mut frame: Frame, forwarder: &mut Forwarder) -> Frame {
        if frame.key.is_empty() {
            return frame.error_reply(Status::Invalid, "empty key");
        }
        let (held, epoch) = match self.admit(frame.arg) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal.reply(&frame),
        };
        let Some((view, me)) = held.as_ref() else {
            return frame.error_reply(Status::ServerError, "view vanished");
        };
        let Some((primary, replica)) = view.placement(&frame.key) else {
            return Refusal(epoch, "the view is empty".into()).reply(&frame);
        };
        if primary.id != *me {
            let why = format!(
                "not this slave's key: its primary is slave {} at {}",
                primary.id, primary.addr
            );
            return Refusal(epoch, why).reply(&frame);
        }
        let store = &node.data.store;
        if frame.opcode == Opcode::Get {
            return entry_reply(&frame, store.read(Some(Table::Own), &frame.key));
        }
        let put = frame.opcode == Opcode::Put;
        let stored = store.version_of(Table::Own, &frame.key).map_or(0, |v| v.0);
        let version = match self.clock.next_above(stored, |_| Ok(())) {
            Ok(version) => version,
            Err(e) => return frame.error_reply(Status::ServerError, &e),
        };
        // To the replica first, so both apply at once.
        let forwarded = match replica {
            Some(replica) => {
                let mut value = Vec::with_capacity(FORWARD_PREFIX + frame.value.len());
                value.extend_from_slice(&epoch.to_be_bytes());
                value.push(u8::from(put));
                value.extend_from_slice(&frame.value);
                let mut forward = Frame::request(Opcode::Forward, 0, frame.key.clone(), value);
                forward.table = TableSel::Previous;
                forward.arg = version;
                forward.flags = frame.flags;
                match forwarder.call(&replica.addr, node.secret.as_deref(), forward) {
                    Ok(id) => Some((id, replica)),
                    Err(e) => {
                        return frame.error_reply(
                            Status::Unavailable,
                            &format!("replica slave {} at {}: {e}", replica.id, replica.addr),
                        );
                    }
                }
            }
            None => None,
        };
        let entry = Entry {
            version: Version(version),
            flags: frame.flags,
            expires: 0,
            value: put.then(|| std::mem::take(&mut frame.value)),
        };
        let local = node.data.write(Table::Own, &frame.key, entry);
        let mut live = false;
        if let Some((id, replica)) = forwarded {
            match forwarder.receive(id) {
                Ok(reply) if matches!(reply.status, Status::Ok | Status::NotFound) => {
                    live |= reply.status == Status::Ok;
                }
                Ok(reply) if reply.status == Status::Redirect => {
                    let why = format!("replica: {}", reply.value_text());
                    return Refusal(reply.arg, why).reply(&frame);
                }
                Ok(reply) => {
                    return frame.error_reply(
                        Status::Unavailable,
                        &format!(
                            "replica slave {} answered {}: {}",
                            replica.id,
                            reply.status.name(),
                            reply.value_text()
                        ),
                    );
                }
                Err(e) => {
                    return frame.error_reply(
                        Status::Unavailable,
                        &format!("replica slave {} at {}: {e}", replica.id, replica.addr),
                    );
                }
            }
        }
        drop(held);
        match local {
            Err(e) => storage_error(&frame, &e),
            Ok(applied) => {
                live |= live_after(store, Table::Own, &frame.key, applied);
                let status = if !put && !live {
                    Status::NotFound
                } else {
                    Status::Ok
                };
                let mut reply = frame.reply(status);
                reply.arg = version;
                reply
            }
        }
    }

    /// `Forward`: a primary passes a direct write on to us, its key's replica.
    pub fn serve_forward(&self, node: &Node, frame: Frame) -> Frame {
        let Some((prefix, value)) = frame.value.split_at_checked(FORWARD_PREFIX) else {
            return frame.error_reply(Status::Invalid, "a forward starts with epoch and kind");
        };
        let epoch = NetworkEndian::read_u64(&prefix[..8]);
        let put = match prefix[8] {
            1 => true,
            0 => false,
            other => {
                return frame
                    .error_reply(Status::Invalid, &format!("unknown forward kind {other}"));
            }
        };
        if frame.key.is_empty() || frame.table != TableSel::Previous {
            return frame.error_reply(Status::Invalid, "a forward needs a key and table 2");
        }
        let (held, ours) = match self.admit(epoch) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal.reply(&frame),
        };
        let Some((view, me)) = held.as_ref() else {
            return frame.error_reply(Status::ServerError, "view vanished");
        };
        if !view.is_replica(*me, &frame.key) {
            return Refusal(ours, "this slave is not the key's replica".into()).reply(&frame);
        }
        let entry = Entry {
            version: Version(frame.arg),
            flags: frame.flags,
            expires: 0,
            value: put.then(|| value.to_vec()),
        };
        let applied = node.data.write(Table::Previous, &frame.key, entry);
        drop(held);
        let live = match applied {
            Err(e) => return storage_error(&frame, &e),
            Ok(applied) => live_after(&node.data.store, Table::Previous, &frame.key, applied),
        };
        let mut reply = frame.reply(if put || live {
            Status::Ok
        } else {
            Status::NotFound
        });
        reply.arg = frame.arg;
        reply
    }
}
