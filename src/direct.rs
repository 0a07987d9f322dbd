//! The direct-routing client: it fetches the routing view from the coordinator
//! (`RingGet`) and sends each request straight to the key's primary slave, which writes
//! to the replica itself before it answers (protocol.md, "Direct routing").
//!
//! The coordinator path stays the safe default: whenever the view is not stable (a slave
//! is joining, leaving or being recovered), a slave redirects, or a slave cannot be
//! reached, the request goes through the coordinator instead, and the view is fetched
//! again (at most every [`REFRESH_EVERY`] while it stays unstable).
//!
//! ```no_run
//! let mut client = piazza::direct::DirectClient::connect("127.0.0.1:7400")?;
//! client.put(b"greeting", b"hello")?;
//! assert_eq!(client.get(b"greeting")?.map(|v| v.value), Some(b"hello".to_vec()));
//! # Ok::<(), piazza::client::ClientError>(())
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientError, Value, ops};
use crate::ring::SlaveId;
use crate::view::View;
use crate::wire::{Frame, Opcode, Status};

/// How often an unstable view is fetched again.
pub const REFRESH_EVERY: Duration = Duration::from_millis(100);

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
                    return Ok(reply);
                }
            }
        }
        self.stats.via_coordinator += 1;
        request.arg = 0;
        self.coordinator.call(request)
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
        let mut client = Client::connect(addr)?;
        if let Some(secret) = secret {
            client.auth(secret)?;
        }
        if let Some(timeout) = timeout {
            client.set_timeout(timeout)?;
        }
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
