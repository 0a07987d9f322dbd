//! Read-modify-writes and their neighbours: `add replace append prepend cas`, `touch`,
//! `incr decr`, `flush_all`, and `Router::update`, the one sequencer per key.

use std::sync::atomic::Ordering;

use super::*;

impl Router {
    /// `add replace append prepend`, and `cas` (a `Set` with a cas).
    pub(super) fn store(
        &self,
        mode: StoreMode,
        key: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
        exptime: i64,
        cas: u64,
    ) -> Outcome {
        self.counters.cmd_set.fetch_add(1, Ordering::Relaxed);
        if value.len() > self.max_value_bytes {
            // memcached removes the old value only for a set (a cas is one).
            if mode == StoreMode::Set {
                let _ = self.delete(key);
            }
            return Outcome::Failed(Failure::TooLarge);
        }
        let op = match mode {
            StoreMode::Set => Op::Set,
            StoreMode::Add => Op::Add,
            StoreMode::Replace => Op::Replace,
            StoreMode::Append => Op::Append,
            StoreMode::Prepend => Op::Prepend,
        };
        let update = Update {
            flags,
            expires: expires_at(exptime, unix_now()),
            cas,
            data: value,
            ..Update::new(op)
        };
        let outcome = match self.update(key, &update) {
            Ok(entry) => Outcome::Stored {
                version: entry.version.0,
            },
            Err(outcome) => outcome,
        };
        if cas != 0 {
            let counter = match outcome {
                Outcome::Stored { .. } => &self.counters.cas_hits,
                Outcome::Exists => &self.counters.cas_badval,
                _ => &self.counters.cas_misses,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// `touch`/`gat`: a new expiry, the value returned.
    pub(super) fn touch(&self, key: Vec<u8>, exptime: i64) -> Outcome {
        self.counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
        let update = Update {
            expires: expires_at(exptime, unix_now()),
            ..Update::new(Op::Touch)
        };
        match self.update(key, &update) {
            Ok(entry) => {
                self.counters.touch_hits.fetch_add(1, Ordering::Relaxed);
                Outcome::Found(Found {
                    value: entry.value.unwrap_or_default(),
                    flags: entry.flags,
                    version: entry.version.0,
                    expires: entry.expires,
                })
            }
            Err(outcome) => {
                if outcome == Outcome::NotFound {
                    self.counters.touch_misses.fetch_add(1, Ordering::Relaxed);
                }
                outcome
            }
        }
    }

    pub(super) fn arith(
        &self,
        key: Vec<u8>,
        decr: bool,
        delta: u64,
        create: Option<Create>,
        exptime: Option<i64>,
        cas: u64,
    ) -> Outcome {
        let now = unix_now();
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
        let (hits, misses) = if decr {
            (&self.counters.decr_hits, &self.counters.decr_misses)
        } else {
            (&self.counters.incr_hits, &self.counters.incr_misses)
        };
        match self.update(key, &update) {
            Ok(entry) => {
                hits.fetch_add(1, Ordering::Relaxed);
                let number = entry.value.as_deref().and_then(update::parse_number);
                match number {
                    Some(value) => Outcome::Number {
                        value,
                        version: entry.version.0,
                    },
                    None => Outcome::Failed(Failure::NonNumeric),
                }
            }
            Err(outcome) => {
                if outcome == Outcome::NotFound {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                outcome
            }
        }
    }

    /// `flush_all [delay]`: a marker (threshold version, time) saved by the coordinator
    /// and sent to every slave; entries older than the threshold are gone from that time
    /// on, everywhere, whatever the slave's tables hold.
    pub(super) fn flush_all(&self, delay: u32) -> Outcome {
        self.counters.cmd_flush.fetch_add(1, Ordering::Relaxed);
        let version = match self.next_version() {
            Ok(version) => version,
            Err(outcome) => return outcome,
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
            return Outcome::Failed(Failure::Unavailable(format!("cannot save the flush: {e}")));
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
                Ok(reply) => return slave_refused(reply.status, &reply),
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
    /// Returns the entry written, or the outcome that refused it.
    pub(super) fn update(&self, key: Vec<u8>, update: &Update) -> Result<Entry, Outcome> {
        check_key(&key)?;
        let stripe = (key_hash(&key) % STRIPES as u64) as usize;
        let _sequencer = crate::sync::lock(&self.stripes[stripe]);
        let deadline = Instant::now() + self.write_timeout;
        let mut version = self.next_version()?;
        // One frame for every attempt: sent as it is, with the attempt's table and version.
        let mut request = Frame::request(Opcode::SlaveUpdate, 0, key, update.encode());
        let key = &request.key;
        loop {
            let (targets, ticket) = self
                .membership
                .write_targets(key)
                .map_err(|why| Outcome::Failed(Failure::Unavailable(why.to_string())))?;
            let Some(((primary, table), others)) = targets.split_first() else {
                return Err(Outcome::Failed(Failure::Unavailable(NO_SLAVES.into())));
            };
            request.arg = version;
            let failure = match primary
                .send_as(&request, *table, false)
                .and_then(|p| p.wait(primary.timeout()))
            {
                Ok(reply) => match reply.status {
                    Status::Ok => {
                        let entry = decode_entry(reply.arg, reply.flags, &reply.value).ok_or_else(
                            || {
                                Outcome::Failed(Failure::Unavailable(
                                    "a slave's update reply is malformed".into(),
                                ))
                            },
                        )?;
                        let frame = entry_frame(key.clone(), entry.clone());
                        match self.send_to(others, &frame) {
                            Ok(_) => return Ok(entry),
                            Err(Missed::Refused(refused)) => return Err(refused),
                            Err(Missed::Failed(failure)) => failure,
                        }
                    }
                    Status::Stale => {
                        drop(ticket);
                        version = self.next_version_above(reply.arg)?;
                        continue;
                    }
                    Status::NotFound => return Err(Outcome::NotFound),
                    Status::NotStored => return Err(Outcome::NotStored),
                    Status::Exists => return Err(Outcome::Exists),
                    Status::NonNumeric => return Err(Outcome::Failed(Failure::NonNumeric)),
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
