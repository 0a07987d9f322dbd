//! Multi-key reads: a `get` of many keys split by primary, one batch per slave, all at
//! once, with a failed slave's keys asked of their replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;

impl Router {
    /// Reads many keys at once: the keys are grouped by primary and each group goes to its
    /// slave as one `SlaveMultiGet` (of at most [`MULTI_GET_BATCH`] keys), all slaves at
    /// once. A slave that fails is declared dead and its keys are asked of their replicas.
    /// The outcomes are in the order of `keys`. Not a snapshot: each slave answers for its
    /// keys at its own moment.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Outcome> {
        self.counters
            .cmd_get
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let mut outcomes = vec![Outcome::NotFound; keys.len()];
        // Per primary: its handle, the replica of each key, and the keys' positions.
        let mut groups: HashMap<SlaveId, Batch> = HashMap::new();
        let routes = match self.membership.route_many(keys) {
            Ok(routes) => routes,
            Err(why) => {
                // As for one key: a bad key is told so first.
                let failure = Failure::Unavailable(why.to_string());
                return keys
                    .iter()
                    .map(|key| match check_key(key.as_ref()) {
                        Err(bad) => bad.into(),
                        Ok(()) => failure.clone().into(),
                    })
                    .collect();
            }
        };
        for (index, (key, route)) in keys.iter().zip(routes).enumerate() {
            let route = check_key(key.as_ref())
                .and(route.map_err(|why| Failure::Unavailable(why.to_string())));
            match route {
                Ok(route) => {
                    let batch = groups.entry(route.primary.id).or_insert_with(|| Batch {
                        slave: Arc::clone(&route.primary),
                        recovering: route.recovering,
                        items: Vec::new(),
                    });
                    batch.items.push((index, route.replica));
                }
                Err(failure) => outcomes[index] = failure.into(),
            }
        }
        let mut sent = Vec::new();
        for batch in groups.into_values() {
            for items in batch.items.chunks(MULTI_GET_BATCH) {
                let table = if batch.recovering {
                    TableSel::None
                } else {
                    TableSel::Own
                };
                let pending = batch.slave.send(multi_get_frame(keys, items, table));
                sent.push((Arc::clone(&batch.slave), items.to_vec(), pending));
            }
        }
        let mut retry: HashMap<SlaveId, (Arc<SlaveHandle>, Vec<BatchItem>)> = HashMap::new();
        for (slave, items, pending) in sent {
            let reply = pending.and_then(|p| p.wait(slave.timeout()));
            match reply {
                Ok(reply) if self.fill(&reply, &items, &mut outcomes) => {}
                Ok(reply) if reply.status == Status::TooLarge => {
                    for &(index, _) in &items {
                        outcomes[index] = self.get_uncounted(keys[index].as_ref());
                    }
                }
                Ok(reply) => {
                    let refused = slave_refused(reply.status, &reply);
                    for &(index, _) in &items {
                        outcomes[index] = refused.clone().into();
                    }
                }
                Err(e) => {
                    self.membership
                        .suspect(slave.id, &format!("a multi-get failed: {e}"));
                    for (index, replica) in items {
                        match replica {
                            Some(replica) => retry
                                .entry(replica.id)
                                .or_insert_with(|| (Arc::clone(&replica), Vec::new()))
                                .1
                                .push((index, None)),
                            None => outcomes[index] = unavailable(&slave, &e).into(),
                        }
                    }
                }
            }
        }
        // The failed primaries' keys, from their replicas (the newer of both tables).
        let sent: Vec<_> = retry
            .into_values()
            .flat_map(|(replica, items)| {
                items
                    .chunks(MULTI_GET_BATCH)
                    .map(|items| {
                        let pending = replica.send(multi_get_frame(keys, items, TableSel::None));
                        (Arc::clone(&replica), items.to_vec(), pending)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for (replica, items, pending) in sent {
            match pending.and_then(|p| p.wait(replica.timeout())) {
                Ok(reply) if self.fill(&reply, &items, &mut outcomes) => {}
                Ok(_) => {
                    for &(index, _) in &items {
                        outcomes[index] = self.get_uncounted(keys[index].as_ref());
                    }
                }
                Err(e) => {
                    self.membership
                        .suspect(replica.id, &format!("a multi-get failed: {e}"));
                    for &(index, _) in &items {
                        outcomes[index] = unavailable(&replica, &e).into();
                    }
                }
            }
        }
        outcomes
    }

    /// Puts the results of a `SlaveMultiGet` reply in place; false if the reply is not a
    /// well-formed answer for `items`.
    pub(super) fn fill(
        &self,
        reply: &Frame,
        items: &[BatchItem],
        outcomes: &mut [Outcome],
    ) -> bool {
        if reply.status != Status::Ok {
            return false;
        }
        let Ok(results) = wire::unpack_results(&reply.value) else {
            return false;
        };
        if results.len() != items.len() {
            return false;
        }
        for (&(index, _), result) in items.iter().zip(results) {
            outcomes[index] = match result {
                Some(hit) => {
                    self.counters.get_hits.fetch_add(1, Ordering::Relaxed);
                    Outcome::Found(Found {
                        value: hit.value,
                        flags: hit.flags,
                        version: hit.version,
                        expires: hit.expires,
                    })
                }
                None => {
                    self.counters.get_misses.fetch_add(1, Ordering::Relaxed);
                    Outcome::NotFound
                }
            };
        }
        true
    }
}

/// Keys per `SlaveMultiGet` frame at most.
pub const MULTI_GET_BATCH: usize = 512;

/// One slave's share of a multi-get.
pub(super) struct Batch {
    slave: Arc<SlaveHandle>,
    recovering: bool,
    /// Each key's position in the request, and its replica.
    items: Vec<BatchItem>,
}

/// A key's position in a multi-get, and its replica.
pub(super) type BatchItem = (usize, Option<Arc<SlaveHandle>>);

/// A `SlaveMultiGet` of the keys at `items`' positions.
pub(super) fn multi_get_frame<K: AsRef<[u8]>>(
    keys: &[K],
    items: &[BatchItem],
    table: TableSel,
) -> Frame {
    let chosen: Vec<&[u8]> = items.iter().map(|&(i, _)| keys[i].as_ref()).collect();
    let mut frame = Frame::request(
        Opcode::SlaveMultiGet,
        0,
        Vec::new(),
        wire::pack_keys(&chosen),
    );
    frame.table = table;
    frame
}
