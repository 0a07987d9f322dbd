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
//!   client is slow to read. A [`Forwarder`] holds a connection's forwards under way;
//!   the links they travel on are the slave's, shared by all its serving threads
//!   (`Replicas`, like the coordinator's links to slaves).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{debug, info};

use super::Node;
use super::ops::{entry_reply, live_after, lost_reply, storage_error};
use crate::clock::{self, VersionClock};
use crate::link::{LinkError, PendingReply, SlaveHandle};
use crate::ring::SlaveId;
use crate::store::{Applied, Entry, Table, Version};
use crate::view::View;
use crate::wal::WalError;
use crate::wire::{FORWARD_PREFIX, Frame, Opcode, REMOVED_HERE, Status, TableSel};

/// How long a primary waits for its replica to apply a forwarded write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections from a slave to each replica of its direct writes, shared by all its
/// serving threads.
const FORWARD_LINKS: usize = 2;

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
    /// The links to our direct writes' replicas.
    replicas: Replicas,
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

/// The links to the replicas of this slave's direct writes, shared by every serving
/// thread: by replica address, a [`SlaveHandle`] with [`FORWARD_LINKS`] multiplexed
/// connections. A replica thus serves one
/// connection per link per primary, however many clients write to the primary.
struct Replicas {
    handles: Mutex<HashMap<String, Arc<SlaveHandle>>>,
    /// The cluster secret, presented on every link.
    secret: Option<Arc<Vec<u8>>>,
}

impl Replicas {
    /// The handle for the replica `id` at `addr` (made on first use; it connects lazily).
    fn handle(&self, id: SlaveId, addr: &str) -> Arc<SlaveHandle> {
        let mut handles = crate::sync::lock(&self.handles);
        let handle = handles.entry(addr.to_string()).or_insert_with(|| {
            let handle = SlaveHandle::new(
                id,
                addr.to_string(),
                FORWARD_LINKS,
                FORWARD_TIMEOUT,
                self.secret.clone(),
            );
            Arc::new(handle)
        });
        Arc::clone(handle)
    }

    /// Closes the links to addresses that are not in `members` (all of them, for none);
    /// a caller reading one of them stops.
    fn keep_only(&self, members: &[String]) {
        let gone: HashMap<String, Arc<SlaveHandle>> = {
            let mut handles = crate::sync::lock(&self.handles);
            let (kept, gone) = std::mem::take(&mut *handles)
                .into_iter()
                .partition(|(addr, _)| members.contains(addr));
            *handles = kept;
            gone
        };
        for (_, handle) in gone {
            handle.close();
        }
    }
}

/// One serving thread's direct writes forwarded to their replicas and not yet answered,
/// in order, and the replies of those settled.
#[derive(Default)]
pub struct Forwarder {
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
    /// The replica's answer on its way.
    pending: PendingReply,
    _admission: Admission,
}

impl Forwarder {
    /// Collects the replicas' answers to every forwarded write and makes their replies
    /// (taken in order with [`Forwarder::take_reply`]); their admissions end here. All
    /// forwards still in a link's buffer go out before the first wait, and the waits
    /// share one deadline.
    pub fn settle(&mut self, node: &Node) {
        if self.forwarded.is_empty() {
            return;
        }
        for write in &self.forwarded {
            write.pending.flush();
        }
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        while let Some(write) = self.forwarded.pop_front() {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = write.pending.wait(left.max(Duration::from_millis(1)));
            let reply = write.reply(node, answer);
            self.answered.push_back(reply);
        }
    }

    /// The reply of the oldest forwarded write settled and not yet taken.
    pub fn take_reply(&mut self) -> Frame {
        self.answered
            .pop_front()
            .unwrap_or_else(|| lost_reply(Opcode::Put, "a direct write"))
    }
}

impl Forwarded {
    /// The reply to the client, once the replica answered (or failed).
    fn reply(self, node: &Node, answer: Result<Frame, LinkError>) -> Frame {
        let frame = &self.frame;
        let mut refused = match answer {
            Ok(reply) if matches!(reply.status, Status::Ok | Status::NotFound) => {
                let live = reply.status == Status::Ok;
                return local_reply(node, frame, self.put, self.version, self.local, live);
            }
            Ok(reply) if reply.status == Status::Redirect => {
                let why = format!("replica: {}", reply.value_text());
                Refusal(reply.arg, why).reply(frame)
            }
            Ok(reply) => frame.error_reply(
                Status::Unavailable,
                &format!(
                    "replica slave {} answered {}: {}",
                    self.replica,
                    reply.status.name(),
                    reply.value_text()
                ),
            ),
            Err(e) => frame.error_reply(
                Status::Unavailable,
                &format!("replica slave {} at {}: {e}", self.replica, self.addr),
            ),
        };
        // The client retries elsewhere and may find the key gone: say that this delete
        // is what removed it.
        if !self.put && matches!(self.local, Ok(Applied::Applied { was_live: true })) {
            refused.flags |= REMOVED_HERE;
        }
        refused
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
    /// Forwards to replicas present `secret`, if there is one.
    pub fn new(heartbeat_interval: Duration, secret: Option<Vec<u8>>) -> Direct {
        Direct {
            view: RwLock::new(None),
            clock: VersionClock::new(0, 1),
            started: Instant::now(),
            heard: AtomicU64::new(0),
            lease: lease_for(heartbeat_interval),
            generation: AtomicU64::new(0),
            in_flight: Arc::new(InFlight::default()),
            replicas: Replicas {
                handles: Mutex::new(HashMap::new()),
                secret: secret.map(Arc::new),
            },
        }
    }

    /// Closes the links to replicas (at shutdown, once no
    /// connection is served any more).
    pub fn close(&self) {
        self.replicas.keep_only(&[]);
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
        let members: Vec<String> = view.members.iter().map(|m| m.addr.clone()).collect();
        *held = Some((view, me));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        drop(held);
        self.in_flight.wait_below(generation);
        // No write of an older view waits on a replica now: links to slaves that left
        // can go.
        self.replicas.keep_only(&members);
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

    /// A direct `Get` (arg = the client's view epoch). Direct writes are begun with
    /// [`Direct::begin_write`] and answered once their replica has ([`Forwarder`]).
    pub fn get(&self, node: &Node, frame: &Frame) -> Frame {
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
                // A lone write goes out now (it overlaps with the replica's); one of a
                // pipeline waits in the link's buffer for the rest, until settled.
                let deferred = !forwarder.forwarded.is_empty();
                let handle = self.replicas.handle(replica.id, &replica.addr);
                // One key's forwards share a link, so the replica applies them in order.
                let pin = crate::ring::key_hash(&frame.key);
                match handle.send_pinned(pin, &forward, TableSel::Previous, deferred) {
                    Ok(pending) => Some((pending, replica.id, replica.addr.clone())),
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
        let Some((pending, replica, addr)) = forwarded else {
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
            pending,
            _admission: admission,
        });
        None
    }

    /// `Forward`s that arrived together on one connection: checked under one hold of the
    /// view's read lock (tried, never waited for) and applied to `previous` with one log
    /// append; their replies, in order.
    pub fn serve_forwards(&self, node: &Node, frames: Vec<Frame>) -> Vec<Frame> {
        // One admission for the batch, under the epoch its first well-formed forward
        // carries; a forward of another epoch is refused as `admit` would refuse it.
        let admitted = frames
            .iter()
            .find_map(|frame| forward_epoch(frame).ok())
            .map(|epoch| self.admit(epoch));
        // Each forward's reply if it is refused, else its place among the writes.
        let mut replies: Vec<Option<Frame>> = Vec::with_capacity(frames.len());
        let mut writes: Vec<(usize, Frame, bool)> = Vec::with_capacity(frames.len());
        let mut entries: Vec<Entry> = Vec::with_capacity(frames.len());
        for frame in frames {
            match forward_entry(&frame, admitted.as_ref()) {
                Ok(entry) => {
                    writes.push((replies.len(), frame, entry.value.is_some()));
                    entries.push(entry);
                    replies.push(None);
                }
                Err(refused) => replies.push(Some(refused)),
            }
        }
        if !writes.is_empty() {
            let batch = writes
                .iter()
                .zip(entries)
                .map(|((_, frame, _), entry)| (Table::Previous, frame.key.as_slice(), entry))
                .collect();
            let applied = node.data.write_many(batch);
            // Applied under the view: the fence may go on now.
            drop(admitted);
            for (at, (index, frame, put)) in writes.iter().enumerate() {
                replies[*index] = Some(match &applied {
                    Err(e) => storage_error(frame, e),
                    Ok(applied) => {
                        let live = applied.get(at).is_some_and(|applied| {
                            live_after(&node.data.store, Table::Previous, &frame.key, *applied)
                        });
                        let mut reply = frame.reply(if *put || live {
                            Status::Ok
                        } else {
                            Status::NotFound
                        });
                        reply.arg = frame.arg;
                        reply
                    }
                });
            }
        }
        replies
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| lost_reply(Opcode::Forward, "a forward")))
            .collect()
    }
}

/// What a `Forward` writes to `previous`, or the reply that refuses it: malformed, of
/// another view than the batch's admission (`admitted`), or not for a key we replicate.
fn forward_entry(
    frame: &Frame,
    admitted: Option<&Result<(Admitted<'_>, u64), Refusal>>,
) -> Result<Entry, Frame> {
    let epoch = forward_epoch(frame).map_err(|why| frame.error_reply(Status::Invalid, why))?;
    let (held, ours) = match admitted {
        Some(Ok((held, ours))) if *ours == epoch => (held, *ours),
        Some(Ok((_, ours))) => {
            let why = format!("request for view {epoch}, this slave has view {ours}");
            return Err(Refusal(*ours, why).reply(frame));
        }
        Some(Err(Refusal(ours, why))) => return Err(Refusal(*ours, why.clone()).reply(frame)),
        None => return Err(frame.error_reply(Status::ServerError, "no view check")),
    };
    let Some((view, me)) = held.as_ref() else {
        return Err(frame.error_reply(Status::ServerError, "view vanished"));
    };
    if !view.is_replica(*me, &frame.key) {
        let why = "this slave is not the key's replica".to_string();
        return Err(Refusal(ours, why).reply(frame));
    }
    let put = frame.value[FORWARD_PREFIX - 1] == 1;
    Ok(Entry {
        version: Version(frame.arg),
        flags: frame.flags,
        expires: 0,
        value: put.then(|| frame.value[FORWARD_PREFIX..].to_vec()),
    })
}

/// The view epoch a `Forward` was sent under, once its shape is checked: a key, table 2,
/// and a value that starts with the epoch and a kind byte (1 value, 0 tombstone).
fn forward_epoch(frame: &Frame) -> Result<u64, &'static str> {
    let Some(prefix) = frame.value.get(..FORWARD_PREFIX) else {
        return Err("a forward starts with epoch and kind");
    };
    if prefix[FORWARD_PREFIX - 1] > 1 {
        return Err("unknown forward kind (1 value, 0 tombstone)");
    }
    if frame.key.is_empty() || frame.table != TableSel::Previous {
        return Err("a forward needs a key and table 2");
    }
    Ok(NetworkEndian::read_u64(&prefix[..8]))
}
