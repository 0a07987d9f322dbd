//! Read-modify-writes and their neighbours: `add replace append prepend cas`, `touch`,
//! `incr decr`, `delete` with a cas, `flush_all`, and `Router::update`, the one sequencer
//! per key.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// What the key's primary made of a read-modify-write ([`Router::update`]) that could be
/// served: written, or declined because of what the key holds.
pub(super) enum Updated {
    /// Applied: the entry written, now on every slave that must hold it.
    Written(Entry),
    /// Served, and the answer is no.
    Declined(Declined),
}

/// A read-modify-write the key's state does not allow: not a failure (nothing is wrong
/// with the request or the cluster), the answer memcached gives for that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Declined {
    /// The key holds nothing.
    NotFound,
    /// The condition of `add replace append prepend` did not hold.
    NotStored,
    /// The cas given is not the key's.
    Exists,
}

impl From<Declined> for Outcome {
    fn from(declined: Declined) -> Outcome {
        match declined {
            Declined::NotFound => Outcome::NotFound,
            Declined::NotStored => Outcome::NotStored,
            Declined::Exists => Outcome::Exists,
        }
    }
}

impl Router {
    /// Requests that are not left under way: read-modify-writes and `flush_all`.
    pub(super) fn serve_at_once(&self, request: Request) -> Outcome {
        let now = unix_now();
        match request {
            Request::Get { .. }
            | Request::Put { .. }
            | Request::Store {
                mode: StoreMode::Set,
                cas: 0,
                ..
            }
            | Request::Delete { cas: 0, .. } => self.serve(request),
            Request::Store {
                mode,
                key,
                value,
                flags,
                exptime,
                cas,
            } => {
                let update = Update {
                    flags,
                    expires: expires_at(exptime, now),
                    cas,
                    data: value,
                    ..Update::new(store_op(mode))
                };
                self.store(key, update)
            }
            Request::Delete { key, cas } => self.delete_if(key, cas),
            Request::Touch { key, exptime } => self.touch(key, expires_at(exptime, now)),
            Request::Arith {
                key,
                decr,
                delta,
                create,
                exptime,
                cas,
            } => {
                let mut update = Update {
                    delta,
                    cas,
                    ..Update::new(if decr { Op::Decr } else { Op::Incr })
                };
                if let Some(create) = create {
                    update.create = true;
                    update.initial = create.initial;
                    update.flags = create.flags;
                    update.expires = expires_at(create.exptime, now);
                }
                if let Some(exptime) = exptime {
                    update.set_expires = true;
                    update.expires = expires_at(exptime, now);
                }
                self.arith(key, &update)
            }
            Request::FlushAll { delay } => self.flush_all(delay),
        }
    }

    /// `add replace append prepend`, and `cas` (a `Set` with a cas).
    fn store(&self, key: Vec<u8>, update: Update) -> Outcome {
        self.counters.cmd_set.fetch_add(1, Ordering::Relaxed);
        if update.data.len() > self.max_value_bytes {
            // memcached removes the old value only for a set (a cas is one).
            if update.op == Op::Set {
                let _ = self.delete(key);
            }
            return Failure::TooLarge.into();
        }
        let outcome = match self.update(key, &update) {
            Ok(Updated::Written(entry)) => Outcome::Stored {
                version: entry.version.0,
            },
            Ok(Updated::Declined(declined)) => declined.into(),
            Err(failure) => failure.into(),
        };
        if update.cas != 0 {
            let counter = match outcome {
                Outcome::Stored { .. } => &self.counters.cas_hits,
                Outcome::Exists => &self.counters.cas_badval,
                _ => &self.counters.cas_misses,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// `delete` with a cas: only if the key's cas unique is `cas`.
    fn delete_if(&self, key: Vec<u8>, cas: u64) -> Outcome {
        self.counters.cmd_delete.fetch_add(1, Ordering::Relaxed);
        let update = Update {
            cas,
            ..Update::new(Op::Delete)
        };
        let counters = &self.counters;
        answer(
            self.update(key, &update),
            (&counters.delete_hits, &counters.delete_misses),
            |_| Outcome::Deleted,
        )
    }

    /// `touch`/`gat`: a new expiry (absolute), the value returned.
    fn touch(&self, key: Vec<u8>, expires: u64) -> Outcome {
        self.counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
        let update = Update {
            expires,
            ..Update::new(Op::Touch)
        };
        let counters = &self.counters;
        answer(
            self.update(key, &update),
            (&counters.touch_hits, &counters.touch_misses),
            |entry| {
                Outcome::Found(Found {
                    value: entry.value.unwrap_or_default(),
                    flags: entry.flags,
                    version: entry.version.0,
                    expires: entry.expires,
                })
            },
        )
    }

    /// `incr`/`decr` (`update.op` says which).
    fn arith(&self, key: Vec<u8>, update: &Update) -> Outcome {
        let counters = &self.counters;
        let counted = if update.op == Op::Decr {
            (&counters.decr_hits, &counters.decr_misses)
        } else {
            (&counters.incr_hits, &counters.incr_misses)
        };
        answer(self.update(key, update), counted, |entry| {
            match entry.value.as_deref().and_then(update::parse_number) {
                Some(value) => Outcome::Number {
                    value,
                    version: entry.version.0,
                },
                None => Failure::NonNumeric.into(),
            }
        })
    }

    /// `flush_all [delay]`: a marker (threshold version, time) saved by the coordinator
    /// and sent to every slave; entries older than the threshold are gone from that time
    /// on, everywhere, whatever the slave's tables hold.
    pub(super) fn flush_all(&self, delay: u32) -> Outcome {
        self.counters.cmd_flush.fetch_add(1, Ordering::Relaxed);
        let version = match self.next_version() {
            Ok(version) => version,
            Err(failure) => return failure.into(),
        };
        let marker = if delay == 0 {
            FlushMarker {
                threshold: version,
                at: 0,
            }
        } else {
            let at = now_micros().saturating_add(u64::from(delay) * 1_000_000);
            FlushMarker {
                threshold: version.max(at << clock::SOURCE_BITS),
                at,
            }
        };
        if let Err(e) = self.membership.add_flush(marker) {
            return Failure::Unavailable(format!("cannot save the flush: {e}")).into();
        }
        let mut request = Frame::request(
            Opcode::SlaveFlush,
            0,
            Vec::new(),
            marker.at.to_be_bytes().to_vec(),
        );
        request.arg = marker.threshold;
        let sent: Vec<_> = self
            .membership
            .reachable_handles()
            .into_iter()
            .map(|(id, slave)| (id, slave.send_as(&request, request.table, false), slave))
            .collect();
        for (id, pending, slave) in sent {
            match pending.and_then(|p| p.wait(slave.timeout())) {
                Ok(reply) if reply.status == Status::Ok => {}
                Ok(reply) => return slave_refused(reply.status, &reply).into(),
                // A slave that missed it is declared dead; it gets the marker when it
                // registers again, before it serves anything.
                Err(e) => self.membership.suspect(id, &format!("a flush failed: {e}")),
            }
        }
        Outcome::Flushed
    }

    /// Runs a read-modify-write on `key` with the key's stripe lock held: the primary
    /// decides and applies it at a proposed version, then the entry it wrote goes to the
    /// key's other places. After a failure the same version is proposed again (a slave
    /// that has it answers with it), on the placement after the failed slave left.
    /// Returns the entry written, or why the key's state declined it.
    ///
    /// # Errors
    /// When it could not be served: an empty key, a value the slaves refuse, no slave
    /// answering within the write timeout.
    pub(super) fn update(&self, key: Vec<u8>, update: &Update) -> Result<Updated, Failure> {
        check_key(&key)?;
        let stripe = (key_hash(&key) % STRIPES as u64) as usize;
        let _sequencer = crate::sync::lock(&self.stripes[stripe]);
        let deadline = Instant::now() + self.write_timeout;
        let mut version = self.next_version()?;
        // One frame for every attempt: sent as it is, with the attempt's table and version.
        let mut request = Frame::request(Opcode::SlaveUpdate, 0, key, update.encode());
        let key = &request.key;
        loop {
            let (targets, ticket) = self.write_targets(key)?;
            let Some(((primary, table), others)) = targets.split_first() else {
                return Err(Failure::Unavailable(NO_SLAVES.into()));
            };
            request.arg = version;
            let failure = match primary
                .send_as(&request, *table, false)
                .and_then(|p| p.wait(primary.timeout()))
            {
                Ok(reply) => match reply.status {
                    Status::Ok => {
                        let entry = decode_entry(reply.arg, reply.flags, &reply.value).ok_or_else(
                            || Failure::Unavailable("a slave's update reply is malformed".into()),
                        )?;
                        let frame = entry_frame(key.clone(), entry.clone());
                        match self.send_to(others, &frame) {
                            Ok(_) => return Ok(Updated::Written(entry)),
                            Err(Missed::Refused(refused)) => return Err(refused),
                            Err(Missed::Failed(failure)) => failure,
                        }
                    }
                    Status::Stale => {
                        drop(ticket);
                        version = self.next_version_above(reply.arg)?;
                        continue;
                    }
                    Status::NotFound => return Ok(Updated::Declined(Declined::NotFound)),
                    Status::NotStored => return Ok(Updated::Declined(Declined::NotStored)),
                    Status::Exists => return Ok(Updated::Declined(Declined::Exists)),
                    Status::NonNumeric => return Err(Failure::NonNumeric),
                    status => return Err(slave_refused(status, &reply)),
                },
                Err(e) => {
                    self.membership
                        .suspect(primary.id, &format!("an update failed: {e}"));
                    unavailable(primary, &e)
                }
            };
            self.await_new_placement(ticket, deadline, failure)?;
        }
    }
}

/// The outcome of a read-modify-write: `written` makes it of the entry written. A hit
/// (something written) counts in `counted.0`, a missing key in `counted.1`.
fn answer(
    result: Result<Updated, Failure>,
    counted: (&AtomicU64, &AtomicU64),
    written: impl FnOnce(Entry) -> Outcome,
) -> Outcome {
    let (hits, misses) = counted;
    match result {
        Ok(Updated::Written(entry)) => {
            hits.fetch_add(1, Ordering::Relaxed);
            written(entry)
        }
        Ok(Updated::Declined(declined)) => {
            if declined == Declined::NotFound {
                misses.fetch_add(1, Ordering::Relaxed);
            }
            declined.into()
        }
        Err(failure) => failure.into(),
    }
}

/// The read-modify-write a storage mode is.
fn store_op(mode: StoreMode) -> Op {
    match mode {
        StoreMode::Set => Op::Set,
        StoreMode::Add => Op::Add,
        StoreMode::Replace => Op::Replace,
        StoreMode::Append => Op::Append,
        StoreMode::Prepend => Op::Prepend,
    }
}

/// The slave frame that writes `entry` under `key`: `SlavePut` (`SlavePutEx` with an
/// expiry, in front of the value) or `SlaveDelete`, at the entry's version.
pub(super) fn entry_frame(key: Vec<u8>, entry: Entry) -> Frame {
    let (opcode, value) = match entry.value {
        None => (Opcode::SlaveDelete, Vec::new()),
        Some(value) if entry.expires == 0 => (Opcode::SlavePut, value),
        Some(value) => {
            let mut with = Vec::with_capacity(8 + value.len());
            with.extend_from_slice(&entry.expires.to_be_bytes());
            with.extend_from_slice(&value);
            (Opcode::SlavePutEx, with)
        }
    };
    let mut frame = Frame::request(opcode, 0, key, value);
    frame.flags = entry.flags;
    frame.arg = entry.version.0;
    frame
}
