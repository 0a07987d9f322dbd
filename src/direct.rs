//! The direct-routing client: it fetches the routing view from the coordinator
//! (`RingGet`) and sends each request straight to the key's primary slave, which writes
//! to the replica itself before it answers (protocol.md, "Direct routing").
//!
//! The coordinator path stays the safe default: whenever the view is not stable (a slave
//! is joining, leaving or being recovered), a slave redirects, or a slave cannot be
//! reached, the request goes through the coordinator instead, and the view is fetched
//! again (at most every [`REFRESH_EVERY`] while it stays unstable).
//!
//! Many requests can be in flight at once ([`DirectClient::execute`], `get_many`,
//! `put_many`): a batch goes out as one write per slave, and the replies are read in
//! order. Each request of a batch that a slave redirects or cannot serve goes through the
//! coordinator after the direct ones, in batch order; so does every later request of the
//! batch on the same key, even one a slave answered, so that each key sees the batch's
//! requests in order and every reply is the one a sequential run would give. (Requests
//! on different keys are not ordered with each other.)
//!
//! ```no_run
//! let mut client = piazza::direct::DirectClient::connect("127.0.0.1:7400")?;
//! client.put(b"greeting", b"hello")?;
//! assert_eq!(client.get(b"greeting")?.map(|v| v.value), Some(b"hello".to_vec()));
//! let versions = client.put_many(&[(b"a", b"1"), (b"b", b"2")]);
//! assert!(versions.iter().all(Result::is_ok));
//! # Ok::<(), piazza::client::ClientError>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientError, Value, ops};
use crate::ring::SlaveId;
use crate::view::View;
use crate::wire::{Frame, Opcode, REMOVED_HERE, Status};

/// How often an unstable view is fetched again.
pub const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// Requests of a batch sent before their replies are read, at most (a longer batch is
/// served window by window, in order).
pub const BATCH_WINDOW: usize = 256;

/// Bytes of keys and values of a batch sent before their replies are read, at most:
/// neither side's socket buffers can fill up with replies nobody reads yet.
pub const BATCH_BYTES: usize = 1 << 20;

/// One request of a batch ([`DirectClient::execute`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectOp<'a> {
    /// Read a key.
    Get(&'a [u8]),
    /// Store a value with memcached flags.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// memcached flags.
        flags: u32,
    },
    /// Delete a key.
    Delete(&'a [u8]),
}

impl DirectOp<'_> {
    fn key(&self) -> &[u8] {
        match self {
            DirectOp::Get(key) | DirectOp::Delete(key) | DirectOp::Put { key, .. } => key,
        }
    }

    fn frame(&self) -> Frame {
        match *self {
            DirectOp::Get(key) => ops::get(key),
            DirectOp::Put { key, value, flags } => ops::put(key, value, flags),
            DirectOp::Delete(key) => ops::delete(key),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            DirectOp::Put { key, value, .. } => key.len() + value.len(),
            other => other.key().len(),
        }
    }

    /// What `reply` (from a slave or the coordinator) says about this request.
    fn outcome(&self, reply: Frame) -> Result<DirectReply, ClientError> {
        match self {
            DirectOp::Get(_) => {
                ops::checked(reply, true).map(|reply| DirectReply::Value(ops::value_of(reply)))
            }
            DirectOp::Put { .. } => {
                ops::checked(reply, false).map(|reply| DirectReply::Stored(reply.arg))
            }
            DirectOp::Delete(_) => ops::checked(reply, true)
                .map(|reply| DirectReply::Deleted(reply.status == Status::Ok)),
        }
    }
}

/// Whether a slave's answer to a direct request says that it was a delete that removed
/// a live value on the primary before the primary refused it or its replica failed
/// ([`REMOVED_HERE`]).
fn removed_here(request: &Frame, reply: &Frame) -> bool {
    request.opcode == Opcode::Delete
        && matches!(reply.status, Status::Redirect | Status::Unavailable)
        && reply.flags & REMOVED_HERE != 0
}

/// The answer to a request sent again after a slave refused it: for a delete that had
/// already removed the key's live value (`removed`), `NOT_FOUND` means the key is gone
/// because of it, so the delete is reported done.
fn settled(mut reply: Frame, removed: bool) -> Frame {
    if removed && reply.status == Status::NotFound {
        reply.status = Status::Ok;
    }
    reply
}

/// What a request of a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectReply {
    /// A get: the value, if the key is there.
    Value(Option<Value>),
    /// A put: the version written.
    Stored(u64),
    /// A delete: whether the key was there.
    Deleted(bool),
}

/// Where requests went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectStats {
    /// Answered by a slave directly.
    pub direct: u64,
    /// Sent through the coordinator.
    pub via_coordinator: u64,
    /// Redirects received from slaves.
    pub redirects: u64,
    /// Views fetched.
    pub refreshes: u64,
}

/// A client that routes requests to slaves itself.
pub struct DirectClient {
    coordinator: Client,
    view: View,
    fetched: Option<Instant>,
    /// Connections to slaves by id, with the address each was made to.
    slaves: HashMap<SlaveId, (String, Client)>,
    secret: Option<Vec<u8>>,
    timeout: Option<Duration>,
    stats: DirectStats,
    /// A slave redirected a request of the last batch: fetch the view before the next.
    redirected: bool,
}

impl DirectClient {
    /// Connects to the coordinator at `addr` and fetches the view.
    ///
    /// # Errors
    /// When the coordinator cannot be reached.
    pub fn connect(addr: &str) -> Result<DirectClient, ClientError> {
        let coordinator = Client::connect(addr)?;
        Ok(DirectClient {
            coordinator,
            view: View::default(),
            fetched: None,
            slaves: HashMap::new(),
            secret: None,
            timeout: None,
            stats: DirectStats::default(),
            redirected: false,
        })
    }

    /// Presents the cluster secret to the coordinator now and to each slave when it is
    /// first contacted.
    ///
    /// # Errors
    /// As [`Client::auth`].
    pub fn auth(&mut self, secret: &[u8]) -> Result<(), ClientError> {
        self.coordinator.auth(secret)?;
        self.secret = Some(secret.to_vec());
        self.slaves.clear();
        Ok(())
    }

    /// Changes how long a request waits for its reply (coordinator and slaves).
    ///
    /// # Errors
    /// If a socket refuses the setting.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.coordinator.set_timeout(timeout)?;
        for (_, slave) in self.slaves.values_mut() {
            slave.set_timeout(timeout)?;
        }
        self.timeout = Some(timeout);
        Ok(())
    }

    /// The view in use.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Where requests went so far.
    pub fn stats(&self) -> DirectStats {
        self.stats
    }

    /// Fetches the view from the coordinator now.
    ///
    /// # Errors
    /// When the coordinator cannot be reached or sends a bad view.
    pub fn refresh(&mut self) -> Result<(), ClientError> {
        self.fetched = Some(Instant::now());
        self.stats.refreshes += 1;
        let reply =
            self.coordinator
                .call(Frame::request(Opcode::RingGet, 0, Vec::new(), Vec::new()))?;
        if reply.status != Status::Ok {
            return Err(ClientError::Server {
                status: reply.status,
                message: reply.value_text(),
            });
        }
        self.view = View::decode(reply.arg, reply.flags, &reply.value)
            .map_err(|e| ClientError::BadStatus(format!("ring view: {e}")))?;
        Ok(())
    }

    /// Fetches the view if it has never been fetched, or if it is unusable and the last
    /// fetch is older than [`REFRESH_EVERY`] (or `force` and older than a millisecond).
    fn refresh_if_due(&mut self, force: bool) {
        let age = self.fetched.map(|at| at.elapsed());
        let due = match age {
            None => true,
            Some(age) if force => age >= Duration::from_millis(1),
            Some(age) => !self.view.stable && age >= REFRESH_EVERY,
        };
        if due && self.refresh().is_err() {
            // Unusable until the next fetch: requests go through the coordinator.
            self.view.stable = false;
        }
    }

    /// Sends `request` to the key's primary if the view allows, else (or if that fails)
    /// through the coordinator. The reply is whatever answered last.
    fn route(&mut self, mut request: Frame) -> Result<Frame, ClientError> {
        let mut force = false;
        let mut removed = false;
        for _ in 0..2 {
            self.refresh_if_due(force);
            if !self.view.stable {
                break;
            }
            let Some((primary, _)) = self.view.placement(&request.key) else {
                break;
            };
            request.arg = self.view.epoch;
            let sent = call_slave(
                &mut self.slaves,
                self.secret.as_deref(),
                self.timeout,
                primary.id,
                &primary.addr,
                &mut request,
            );
            let Ok(reply) = sent else {
                // Dead or unreachable: the coordinator will find out; ask it.
                self.fetched = None;
                break;
            };
            removed |= removed_here(&request, &reply);
            match reply.status {
                Status::Redirect => {
                    self.stats.redirects += 1;
                    force = true;
                }
                // The replica failed: the coordinator handles that (and retries).
                Status::Unavailable => {
                    self.fetched = None;
                    break;
                }
                _ => {
                    self.stats.direct += 1;
                    return Ok(settled(reply, removed));
                }
            }
        }
        self.stats.via_coordinator += 1;
        request.arg = 0;
        let reply = self.coordinator.call(request)?;
        Ok(settled(reply, removed))
    }

    /// Reads a key. `Ok(None)` when it is not there.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>, ClientError> {
        let reply = self.route(ops::get(key))?;
        Ok(ops::value_of(ops::checked(reply, true)?))
    }

    /// Stores a value (flags 0) on both replicas; returns the write's version.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        self.put_with_flags(key, value, 0)
    }

    /// Stores a value with memcached flags; returns the write's version.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn put_with_flags(
        &mut self,
        key: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<u64, ClientError> {
        let reply = self.route(ops::put(key, value, flags))?;
        Ok(ops::checked(reply, false)?.arg)
    }

    /// Deletes a key; `Ok(true)` when it was there.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let reply = self.route(ops::delete(key))?;
        Ok(ops::checked(reply, true)?.status == Status::Ok)
    }

    /// Serves a batch of requests with many in flight at once, and returns their
    /// outcomes in order: each as the same request alone would have had it (see the
    /// module doc for how redirects and failures fall back to the coordinator). Batches
    /// longer than [`BATCH_WINDOW`] requests or [`BATCH_BYTES`] bytes are served window
    /// by window.
    pub fn execute(&mut self, batch: &[DirectOp<'_>]) -> Vec<Result<DirectReply, ClientError>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < batch.len()
                && end - start < BATCH_WINDOW
                && (end == start || bytes < BATCH_BYTES)
            {
                bytes += batch[end].bytes();
                end += 1;
            }
            self.execute_window(&batch[start..end], &mut outcomes);
            start = end;
        }
        outcomes
    }

    /// Reads many keys at once (see [`DirectClient::execute`]); `Ok(None)` for a key
    /// that is not there.
    pub fn get_many<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Vec<Result<Option<Value>, ClientError>> {
        let batch: Vec<DirectOp<'_>> = keys.iter().map(|key| DirectOp::Get(key.as_ref())).collect();
        self.execute(&batch)
            .into_iter()
            .map(|outcome| match outcome? {
                DirectReply::Value(value) => Ok(value),
                other => Err(unexpected(&other)),
            })
            .collect()
    }

    /// Stores many values (flags 0) at once (see [`DirectClient::execute`]); the version
    /// of each write.
    pub fn put_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        items: &[(K, V)],
    ) -> Vec<Result<u64, ClientError>> {
        let batch: Vec<DirectOp<'_>> = items
            .iter()
            .map(|(key, value)| DirectOp::Put {
                key: key.as_ref(),
                value: value.as_ref(),
                flags: 0,
            })
            .collect();
        self.execute(&batch)
            .into_iter()
            .map(|outcome| match outcome? {
                DirectReply::Stored(version) => Ok(version),
                other => Err(unexpected(&other)),
            })
            .collect()
    }

    /// One window of [`DirectClient::execute`]: every request that the view lets go
    /// straight to a slave is written (one flush per slave), the replies are read in
    /// order, and then what must go through the coordinator goes, pipelined, in order.
    fn execute_window(
        &mut self,
        batch: &[DirectOp<'_>],
        outcomes: &mut Vec<Result<DirectReply, ClientError>>,
    ) {
        let force = std::mem::take(&mut self.redirected);
        self.refresh_if_due(force);
        let mut frames: Vec<Frame> = batch.iter().map(DirectOp::frame).collect();
        // Each request's slave and request id there, if it went directly.
        let mut sent: Vec<Option<(SlaveId, u32)>> = vec![None; batch.len()];
        if self.view.stable {
            let mut used: Vec<SlaveId> = Vec::new();
            for (frame, sent) in frames.iter_mut().zip(sent.iter_mut()) {
                let Some((primary, _)) = self.view.placement(&frame.key) else {
                    continue;
                };
                let (id, addr) = (primary.id, primary.addr.clone());
                frame.arg = self.view.epoch;
                match self.slave(id, &addr).and_then(|client| client.queue(frame)) {
                    Ok(request_id) => {
                        *sent = Some((id, request_id));
                        if !used.contains(&id) {
                            used.push(id);
                        }
                    }
                    Err(_) => {
                        // Dead or unreachable: the coordinator will find out; ask it.
                        self.slaves.remove(&id);
                        self.fetched = None;
                    }
                }
                frame.arg = 0;
            }
            for id in used {
                let flushed = self.slaves.get_mut(&id).map(|(_, client)| client.flush());
                if !matches!(flushed, Some(Ok(()))) {
                    self.slaves.remove(&id);
                    self.fetched = None;
                }
            }
        }
        // The direct replies, in order; `None` where the request must go through the
        // coordinator.
        let mut replies: Vec<Option<Frame>> = Vec::with_capacity(batch.len());
        // Deletes that removed a live value on a primary that then refused them (rare:
        // nothing is allocated unless one did).
        let mut removed: Vec<usize> = Vec::new();
        for (index, sent) in sent.iter().enumerate() {
            let Some((id, request_id)) = *sent else {
                replies.push(None);
                continue;
            };
            let received = match self.slaves.get_mut(&id) {
                Some((_, client)) => client.receive(request_id),
                None => Err(ClientError::Closed),
            };
            let reply = match received {
                Ok(reply) => reply,
                Err(_) => {
                    // The rest of this slave's replies are lost with the connection.
                    self.slaves.remove(&id);
                    self.fetched = None;
                    replies.push(None);
                    continue;
                }
            };
            if removed_here(&frames[index], &reply) {
                removed.push(index);
            }
            replies.push(match reply.status {
                Status::Redirect => {
                    self.stats.redirects += 1;
                    self.redirected = true;
                    None
                }
                // The replica failed: the coordinator handles that (and retries).
                Status::Unavailable => {
                    self.fetched = None;
                    None
                }
                _ => Some(reply),
            });
        }
        // From the first request on a key that must go through the coordinator, every
        // later one on that key does too, in order.
        let mut tainted: HashSet<&[u8]> = HashSet::new();
        let mut via_coordinator = Vec::new();
        for (index, (op, reply)) in batch.iter().zip(replies.iter_mut()).enumerate() {
            if reply.is_none() || tainted.contains(op.key()) {
                *reply = None;
                tainted.insert(op.key());
                via_coordinator.push(index);
            }
        }
        self.stats.direct += (batch.len() - via_coordinator.len()) as u64;
        self.stats.via_coordinator += via_coordinator.len() as u64;
        let mut from_coordinator = self.through_coordinator(&mut frames, &via_coordinator);
        for (index, (op, reply)) in batch.iter().zip(replies).enumerate() {
            let reply = match reply {
                Some(reply) => Ok(reply),
                None => from_coordinator
                    .remove(&index)
                    .unwrap_or(Err(ClientError::Closed))
                    .map(|reply| settled(reply, removed.contains(&index))),
            };
            outcomes.push(reply.and_then(|reply| op.outcome(reply)));
        }
    }

    /// Sends the frames at `indexes` (in that order) through the coordinator, pipelined;
    /// if the connection breaks, the ones not answered are sent again one by one
    /// ([`Client::call`] connects again once), as a single request would be.
    fn through_coordinator(
        &mut self,
        frames: &mut [Frame],
        indexes: &[usize],
    ) -> HashMap<usize, Result<Frame, ClientError>> {
        let mut replies = HashMap::with_capacity(indexes.len());
        if indexes.is_empty() {
            return replies;
        }
        let mut queued = Vec::with_capacity(indexes.len());
        for &index in indexes {
            match self.coordinator.queue(&mut frames[index]) {
                Ok(id) => queued.push((index, id)),
                Err(_) => break,
            }
        }
        if queued.len() == indexes.len() && self.coordinator.flush().is_ok() {
            for &(index, id) in &queued {
                match self.coordinator.receive(id) {
                    Ok(reply) => {
                        replies.insert(index, Ok(reply));
                    }
                    Err(_) => break,
                }
            }
        }
        for &index in indexes {
            if let std::collections::hash_map::Entry::Vacant(vacant) = replies.entry(index) {
                vacant.insert(self.coordinator.call(frames[index].clone()));
            }
        }
        replies
    }

    /// The connection to slave `id` at `addr`, connecting (and authenticating) first if
    /// there is none.
    fn slave(&mut self, id: SlaveId, addr: &str) -> Result<&mut Client, ClientError> {
        if self.slaves.get(&id).is_none_or(|(to, _)| to != addr) {
            let client = open_slave(addr, self.secret.as_deref(), self.timeout)?;
            self.slaves.insert(id, (addr.to_string(), client));
        }
        match self.slaves.get_mut(&id) {
            Some((_, client)) => Ok(client),
            None => Err(ClientError::Closed),
        }
    }

    /// Fetches the view and opens a connection to every slave in it now, instead of on
    /// each slave's first request (a load generator warms up this way before it times
    /// anything). A slave that cannot be reached is left to the first request for it.
    ///
    /// # Errors
    /// When the view cannot be fetched.
    pub fn connect_slaves(&mut self) -> Result<(), ClientError> {
        self.refresh()?;
        let members: Vec<(SlaveId, String)> = self
            .view
            .members
            .iter()
            .map(|m| (m.id, m.addr.clone()))
            .collect();
        for (id, addr) in members {
            let _ = self.slave(id, &addr);
        }
        Ok(())
    }

    /// The coordinator connection: read-modify-writes (`add`, `cas`, `incr`...) and
    /// `flush_all` always go through it, because the coordinator is their one sequencer
    /// per key (slaves answer them with "send this to the coordinator").
    pub fn coordinator(&mut self) -> &mut Client {
        &mut self.coordinator
    }
}

/// Sends `request` to slave `id` at `addr` (connecting first if needed) and reads
/// the reply. No resend: on any failure the connection is dropped.
fn call_slave(
    slaves: &mut HashMap<SlaveId, (String, Client)>,
    secret: Option<&[u8]>,
    timeout: Option<Duration>,
    id: SlaveId,
    addr: &str,
    request: &mut Frame,
) -> Result<Frame, ClientError> {
    if slaves.get(&id).is_none_or(|(to, _)| to != addr) {
        let client = open_slave(addr, secret, timeout)?;
        slaves.insert(id, (addr.to_string(), client));
    }
    let Some((_, client)) = slaves.get_mut(&id) else {
        return Err(ClientError::Closed);
    };
    let result = client.send(request).and_then(|sent| client.receive(sent));
    if result.is_err() {
        slaves.remove(&id);
    }
    result
}

/// A connection to a slave, with the secret presented and the timeout set.
fn open_slave(
    addr: &str,
    secret: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<Client, ClientError> {
    let mut client = Client::connect(addr)?;
    if let Some(secret) = secret {
        client.auth(secret)?;
    }
    if let Some(timeout) = timeout {
        client.set_timeout(timeout)?;
    }
    Ok(client)
}

/// A batch reply of another kind than the request's (cannot happen: each request's
/// outcome is made from its own kind).
fn unexpected(reply: &DirectReply) -> ClientError {
    ClientError::BadStatus(format!("a reply of another kind: {reply:?}"))
}
