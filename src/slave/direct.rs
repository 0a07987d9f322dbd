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
//! - a direct request holds the view's read lock while it is checked and applied here;
//!   a direct write then holds an [`Admission`] until its replica has answered. `SetView`
//!   takes the write lock (waiting for the requests inside it), installs the view, and
//!   then waits until every write admitted under an older view has been answered by its
//!   replica: when it returns, no request of the older view is still being applied. That
//!   is the fence the coordinator puts up before it moves data. Forwarded writes only
//!   *try* the lock (a fence waiting on the replica makes them redirect), so fences on
//!   neighbouring slaves cannot wait on each other;
//! - a connection's direct writes are pipelined: each is checked, forwarded and applied
//!   when it is read, and the replicas' answers are collected (one flush per replica
//!   link) before the connection writes any reply, so no admission is held while a
//!   client is slow to read. A [`Forwarder`] keeps one link per replica address.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{debug, info};

use super::ops::{entry_reply, live_after, storage_error};
use super::{Node, connect_with};
use crate::client::{Client, ClientError};
use crate::clock::{self, VersionClock};
use crate::ring::SlaveId;
use crate::store::{Applied, Entry, Table, Version};
use crate::view::View;
use crate::wal::WalError;
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
    /// Bumped (under the view's write lock) at every `SetView`: the view generation a
    /// write is admitted under.
    generation: AtomicU64,
    in_flight: Arc<InFlight>,
}

/// Direct writes admitted and not yet answered by their replica, counted by the view
/// generation they were admitted under.
#[derive(Default)]
struct InFlight {
    counts: Mutex<BTreeMap<u64, usize>>,
    drained: Condvar,
}

impl InFlight {
    /// Waits until no write admitted under a generation below `generation` is left.
    fn wait_below(&self, generation: u64) {
        let mut counts = crate::sync::lock(&self.counts);
        while counts.range(..generation).next().is_some() {
            counts = self
                .drained
                .wait(counts)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// A direct write's hold on the view it was admitted under: a newer view's `SetView`
/// does not return while it lives.
pub struct Admission {
    in_flight: Arc<InFlight>,
    generation: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = crate::sync::lock(&self.in_flight.counts);
        if let Some(count) = counts.get_mut(&self.generation) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.generation);
                self.in_flight.drained.notify_all();
            }
        }
    }
}

/// One serving thread's links to the replicas of its direct writes (one per address),
/// and the writes forwarded on them whose replica has not answered yet, in order.
#[derive(Default)]
pub struct Forwarder {
    /// By replica address: the link's serial, the link, and whether it holds unflushed
    /// forwards.
    links: HashMap<String, (u64, Client, bool)>,
    serial: u64,
    /// Writes applied here and forwarded, waiting for their replica, in arrival order.
    forwarded: VecDeque<Forwarded>,
    /// Replies of forwarded writes whose replica answered, in order, not yet taken.
    answered: VecDeque<Frame>,
}

/// A direct write applied here and forwarded to its replica.
struct Forwarded {
    /// The request (for the reply).
    frame: Frame,
    put: bool,
    version: u64,
    local: Result<Applied, WalError>,
    replica: SlaveId,
    addr: String,
    /// The link's serial and the forward's request id on it.
    link: u64,
    request_id: u32,
    _admission: Admission,
}

impl Forwarder {
    /// Writes `forward` on the link to `addr` (connecting first if there is none), and
    /// flushes it if nothing else of this connection waits for a replica (a lone write
    /// overlaps with the replica's); returns the link's serial and the request id.
    fn send(
        &mut self,
        addr: &str,
        secret: Option<&[u8]>,
        mut forward: Frame,
    ) -> Result<(u64, u32), String> {
        if !self.links.contains_key(addr) {
            let mut client = connect_with(addr, secret).map_err(|e| e.to_string())?;
            client
                .set_timeout(FORWARD_TIMEOUT)
                .map_err(|e| e.to_string())?;
            self.serial += 1;
            self.links
                .insert(addr.to_string(), (self.serial, client, false));
        }
        let alone = self.forwarded.is_empty();
        let Some((serial, client, unflushed)) = self.links.get_mut(addr) else {
            return Err("no link".into());
        };
        let sent = client.queue(&mut forward).and_then(|id| {
            if alone {
                client.flush()?;
            } else {
                *unflushed = true;
            }
            Ok((*serial, id))
        });
        if sent.is_err() {
            self.links.remove(addr);
        }
        sent.map_err(|e| e.to_string())
    }

    /// Reads the replica's answer to forward `request_id` sent on link `serial` to
    /// `addr` (a link that failed since fails every forward it carried).
    fn receive(&mut self, addr: &str, serial: u64, request_id: u32) -> Result<Frame, ClientError> {
        let received = match self.links.get_mut(addr) {
            Some((current, client, _)) if *current == serial => client.receive(request_id),
            _ => Err(ClientError::Closed),
        };
        if received.is_err() && self.links.get(addr).is_some_and(|(s, _, _)| *s == serial) {
            self.links.remove(addr);
        }
        received
    }

    /// Collects the replicas' answers to every forwarded write and makes their replies
    /// (taken in order with [`Forwarder::take_reply`]); their admissions end here.
    pub fn settle(&mut self, node: &Node) {
        if self.forwarded.is_empty() {
            return;
        }
        let mut failed = Vec::new();
        for (addr, (_, client, unflushed)) in &mut self.links {
            if std::mem::take(unflushed) && client.flush().is_err() {
                failed.push(addr.clone());
            }
        }
        for addr in failed {
            self.links.remove(&addr);
        }
        while let Some(write) = self.forwarded.pop_front() {
            let answer = self.receive(&write.addr, write.link, write.request_id);
            let reply = write.reply(node, answer);
            self.answered.push_back(reply);
        }
    }

    /// The reply of the oldest forwarded write settled and not yet taken.
    pub fn take_reply(&mut self) -> Frame {
        self.answered.pop_front().unwrap_or_else(|| {
            Frame::request(Opcode::Ping, 0, Vec::new(), Vec::new())
                .error_reply(Status::ServerError, "a direct write lost its reply")
        })
    }
}

impl Forwarded {
    /// The reply to the client, once the replica answered (or failed).
    fn reply(self, node: &Node, answer: Result<Frame, ClientError>) -> Frame {
        let frame = &self.frame;
        let mut live = false;
        match answer {
            Ok(reply) if matches!(reply.status, Status::Ok | Status::NotFound) => {
                live |= reply.status == Status::Ok;
            }
            Ok(reply) if reply.status == Status::Redirect => {
                let why = format!("replica: {}", reply.value_text());
                return Refusal(reply.arg, why).reply(frame);
            }
            Ok(reply) => {
                return frame.error_reply(
                    Status::Unavailable,
                    &format!(
                        "replica slave {} answered {}: {}",
                        self.replica,
                        reply.status.name(),
                        reply.value_text()
                    ),
                );
            }
            Err(e) => {
                return frame.error_reply(
                    Status::Unavailable,
                    &format!("replica slave {} at {}: {e}", self.replica, self.addr),
                );
            }
        }
        local_reply(node, frame, self.put, self.version, self.local, live)
    }
}

/// The reply to a direct write applied here (`local`), its replica's part done (`live`:
/// the replica held a live value before).
fn local_reply(
    node: &Node,
    frame: &Frame,
    put: bool,
    version: u64,
    local: Result<Applied, WalError>,
    live: bool,
) -> Frame {
    match local {
        Err(e) => storage_error(frame, &e),
        Ok(applied) => {
            let live = live || live_after(&node.data.store, Table::Own, &frame.key, applied);
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
            generation: AtomicU64::new(0),
            in_flight: Arc::new(InFlight::default()),
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
        self.clock.next_above_unsaved(version);
    }

    /// The epoch of the view we hold (0: none).
    pub fn epoch(&self) -> u64 {
        match self.view.try_read() {
            Ok(view) => view.as_ref().map_or(0, |(v, _)| v.epoch),
            Err(_) => 0,
        }
    }

    /// `SetView`: takes the write lock (so it waits for direct requests being applied),
    /// installs the coordinator's view, then waits until the writes admitted under older
    /// views have been answered by their replicas.
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
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        drop(held);
        self.in_flight.wait_below(generation);
        frame.reply(Status::Ok)
    }

    /// Holds the view generation in force for a write being admitted; called with the
    /// view's read lock held, so no `SetView` is between the check and this.
    fn admission(&self) -> Admission {
        let generation = self.generation.load(Ordering::SeqCst);
        *crate::sync::lock(&self.in_flight.counts)
            .entry(generation)
            .or_insert(0) += 1;
        Admission {
            in_flight: Arc::clone(&self.in_flight),
            generation,
        }
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

    /// A direct `Get`, `Put` or `Delete` from a client (arg = the client's view epoch),
    /// served to the end (a write waits for its replica here).
    pub fn serve(&self, node: &Node, frame: Frame, forwarder: &mut Forwarder) -> Frame {
        if frame.opcode == Opcode::Get {
            return self.get(node, &frame);
        }
        match self.begin_write(node, frame, forwarder) {
            Some(reply) => reply,
            None => {
                forwarder.settle(node);
                forwarder.answered.pop_back().unwrap_or_else(|| {
                    Frame::request(Opcode::Ping, 0, Vec::new(), Vec::new())
                        .error_reply(Status::ServerError, "a direct write lost its reply")
                })
            }
        }
    }

    /// A direct `Get`.
    fn get(&self, node: &Node, frame: &Frame) -> Frame {
        if frame.key.is_empty() {
            return frame.error_reply(Status::Invalid, "empty key");
        }
        let (held, epoch) = match self.admit(frame.arg) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal.reply(frame),
        };
        let Some((view, me)) = held.as_ref() else {
            return frame.error_reply(Status::ServerError, "view vanished");
        };
        match view.placement(&frame.key) {
            None => Refusal(epoch, "the view is empty".into()).reply(frame),
            Some((primary, _)) if primary.id != *me => {
                let why = format!(
                    "not this slave's key: its primary is slave {} at {}",
                    primary.id, primary.addr
                );
                Refusal(epoch, why).reply(frame)
            }
            Some(_) => entry_reply(frame, node.data.store.read(Some(Table::Own), &frame.key)),
        }
    }

    /// Starts a direct `Put` or `Delete`: checks it, gives it a version, forwards it to
    /// the replica and applies it here. Returns the reply if it is decided already (a
    /// refusal, or a key without replica); else the write waits in `forwarder` for its
    /// replica ([`Forwarder::settle`]), holding its admission.
    pub fn begin_write(
        &self,
        node: &Node,
        mut frame: Frame,
        forwarder: &mut Forwarder,
    ) -> Option<Frame> {
        if frame.key.is_empty() {
            return Some(frame.error_reply(Status::Invalid, "empty key"));
        }
        let (held, epoch) = match self.admit(frame.arg) {
            Ok(admitted) => admitted,
            Err(refusal) => return Some(refusal.reply(&frame)),
        };
        let Some((view, me)) = held.as_ref() else {
            return Some(frame.error_reply(Status::ServerError, "view vanished"));
        };
        let Some((primary, replica)) = view.placement(&frame.key) else {
            return Some(Refusal(epoch, "the view is empty".into()).reply(&frame));
        };
        if primary.id != *me {
            let why = format!(
                "not this slave's key: its primary is slave {} at {}",
                primary.id, primary.addr
            );
            return Some(Refusal(epoch, why).reply(&frame));
        }
        let store = &node.data.store;
        let put = frame.opcode == Opcode::Put;
        let stored = store.version_of(Table::Own, &frame.key).map_or(0, |v| v.0);
        let version = self.clock.next_above_unsaved(stored);
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
                match forwarder.send(&replica.addr, node.secret.as_deref(), forward) {
                    Ok(sent) => Some((sent, replica.id, replica.addr.clone())),
                    Err(e) => {
                        return Some(frame.error_reply(
                            Status::Unavailable,
                            &format!("replica slave {} at {}: {e}", replica.id, replica.addr),
                        ));
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
        let Some(((link, request_id), replica, addr)) = forwarded else {
            // No replica to wait for.
            drop(held);
            return Some(local_reply(node, &frame, put, version, local, false));
        };
        let admission = self.admission();
        drop(held);
        forwarder.forwarded.push_back(Forwarded {
            frame,
            put,
            version,
            local,
            replica,
            addr,
            link,
            request_id,
            _admission: admission,
        });
        None
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
