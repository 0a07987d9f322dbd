//! Moving data when the ring changes: the original design's `replicate()` when a slave
//! dies or leaves, and its mirror image when a slave joins. Runs on the `recovery` thread,
//! one move at a time, so moves never overlap; the failure detector and the request path
//! only queue events (see `membership`).
//!
//! Every move works slot range by slot range from two pictures of the ring: where the
//! data is (`Membership::applied`: per slot, the slaves that hold it completely, as of the
//! last move that completed) and where it must be (the target ring: the current one after
//! a death or a leave, the future one during a join). For every slot:
//! - a slave that must hold it (as primary in `own`, as replica in `previous`) and does
//!   not gets a copy from a holder that is still alive (TRANSFER, slave to slave, both of
//!   the holder's tables, merging by version: an older entry never wins);
//! - a holder that must keep it in its other table moves it there locally (ABSORB:
//!   `previous` → `own` when a replica becomes the primary, the original's "fold previous
//!   into own"; DEMOTE: `own` → `previous`);
//! - a holder that must no longer hold it drops it (DROP_ARC), last.
//!
//! So a death copies only the dead slave's slots (each to the one slave that lacks it),
//! and a join copies only the slots the new slave takes and the ones it becomes the
//! replica of.
//!
//! Replicate (slave D left the ring; its slots already have new owners): wait for the
//! writes that chose their targets before; copy; record the ring as where the data is;
//! absorb and demote; drop.
//!
//! Join (slave N registered): writes start going to both the current and the future
//! places; once the writes sent before have landed, N gets its copies; then N goes on the
//! ring (unless the ring changed meanwhile: then the join is planned again), the writes
//! that chose their targets before are waited for, and the old places demote and drop.
//!
//! Before each event the slaves are fenced against direct writes, and after it the new
//! view is published to them (see `views`). A step that fails (a slave died) ends the
//! move; the event that death queued starts a new one from where the data then is, and a
//! move whose local steps were cut short is finished on the next tick.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{info, warn};

use crate::coordinator::collection;
use crate::coordinator::membership::{Event, Holders, Membership};
use crate::coordinator::views::{self, Publisher};
use crate::link::SlaveHandle;
use std::collections::BTreeMap;

use crate::ring::{self, Ring, SLOTS, SlaveId};
use crate::wire::{self, Frame, Opcode, Status, TableSel};

/// How long a move waits for the writes of the previous epoch to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the recovery thread waits after a failed join before the next event.
const JOIN_BACKOFF: Duration = Duration::from_millis(200);

/// How long one transfer or table operation may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Processes events until the sender side is closed.
pub fn run(membership: &Membership, events: &Receiver<Event>) {
    let mut views = Publisher::default();
    // Events that arrived during a back-off, handled next in order.
    let mut early: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    // Deaths and leaves that came while the coordinator waited for its slaves after a
    // restart: handled once they are back (before then the data is not known to be
    // anywhere, and the slaves that hold the copies may not be registered yet).
    let mut after_warmup: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    let mut collector = collection::Collector::default();
    loop {
        let warming = membership.warming().is_some();
        let ready = early
            .pop_front()
            .or_else(|| (!warming).then(|| after_warmup.pop_front()).flatten());
        let next = match ready {
            Some(event) => Ok(event),
            None => events.recv_timeout(views::PUBLISH_TICK),
        };
        let event = match next {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                match due(membership) {
                    Some(Due::Reconcile) => {
                        views.fence(membership);
                        membership.begin_move();
                        let result = reconcile(membership);
                        membership.end_move();
                        if let Err(e) = result {
                            warn!("putting data where the ring places it stopped: {e}");
                            cut_short(membership);
                        }
                    }
                    Some(Due::Rebalance) => {
                        views.fence(membership);
                        rebalance(membership);
                    }
                    None => {}
                }
                views.publish(membership);
                // Between events only: a collection never overlaps a data move.
                collector.tick(membership);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if warming && matches!(event, Event::Replicate { .. }) {
            after_warmup.push_back(event);
            continue;
        }
        // No direct write may land while data moves (see `views`).
        views.fence(membership);
        match event {
            Event::Replicate { id, reason, done } => {
                let started = Instant::now();
                let result = replicate(membership, id);
                match result {
                    Ok(moved) => info!(
                        "re-replication after slave {id} left ({reason}) done: {} keys, {} bytes moved in {} ms; {} slaves, {} copies of every key",
                        moved.keys,
                        moved.bytes,
                        started.elapsed().as_millis(),
                        membership.len(),
                        membership.len().min(2)
                    ),
                    Err(e) => {
                        warn!("re-replication after slave {id} left stopped: {e}");
                        cut_short(membership);
                    }
                }
                if membership.len() == 1 {
                    warn!("one slave left: every key has ONE copy until another slave joins");
                }
                // The dead slave's slots went to their replicas: even the shares out
                // before data counts as settled (the extra move keeps it "moving").
                membership.begin_move();
                membership.finish_replicate(id);
                if let Some(done) = done {
                    let _ = done.try_send(());
                }
                rebalance(membership);
                membership.end_move();
            }
            Event::Join { id, session } => {
                let started = Instant::now();
                match join(membership, id, session) {
                    Ok(Some(moved)) => info!(
                        "slave {id} joined: {} keys, {} bytes moved in {} ms; {} slaves in the ring",
                        moved.keys,
                        moved.bytes,
                        started.elapsed().as_millis(),
                        membership.len()
                    ),
                    Ok(None) => {}
                    Err(e) => {
                        if !matches!(e, MoveError::Warming) {
                            warn!("join of slave {id} stopped: {e}; it will be tried again");
                            // Copies it made may be left where they do not belong.
                            cut_short(membership);
                        }
                        // Back off a little so a failure that persists does not spin
                        // (the join queued itself again); another event ends the wait
                        // early, and so does the channel closing at shutdown.
                        let until = Instant::now() + JOIN_BACKOFF;
                        while let Some(left) = until.checked_duration_since(Instant::now()) {
                            match events.recv_timeout(left) {
                                Ok(event) => {
                                    let join = matches!(event, Event::Join { .. });
                                    early.push_back(event);
                                    if !join {
                                        break;
                                    }
                                }
                                Err(RecvTimeoutError::Timeout) => break,
                                Err(RecvTimeoutError::Disconnected) => return,
                            }
                        }
                    }
                }
            }
        }
        views.publish(membership);
    }
}

/// Keys and bytes moved by a procedure.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    /// Entries sent.
    pub keys: u64,
    /// Bytes of keys and values sent.
    pub bytes: u64,
}

impl Moved {
    fn add(&mut self, other: Moved) {
        self.keys += other.keys;
        self.bytes += other.bytes;
    }
}

/// Why a data move stopped.
#[derive(Debug)]
pub enum MoveError {
    /// A slave the move needs is no longer known.
    Gone(SlaveId),
    /// A slave did not answer a step (it is declared dead: its event moves on).
    Failed {
        /// The step.
        step: String,
        /// The slave.
        slave: SlaveId,
        /// Its address.
        addr: String,
        /// What went wrong.
        error: String,
    },
    /// A slave answered a step with an error status.
    Refused {
        /// The step.
        step: String,
        /// The slave.
        slave: SlaveId,
        /// Its status.
        status: Status,
        /// Its message.
        message: String,
    },
    /// The ring changed between the plan and the switch: the move is planned again.
    RingChanged,
    /// A joining slave did not forget what is older than the collection horizon.
    Forget(crate::coordinator::collection::ForgetError),
    /// The coordinator is still waiting for its slaves after a restart.
    Warming,
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::Gone(id) => write!(f, "slave {id} is gone"),
            MoveError::Failed {
                step,
                slave,
                addr,
                error,
            } => write!(f, "{step}: slave {slave} at {addr}: {error}"),
            MoveError::Refused {
                step,
                slave,
                status,
                message,
            } => write!(
                f,
                "{step}: slave {slave} answered {}: {message}",
                status.name()
            ),
            MoveError::RingChanged => f.write_str("a slave died or left meanwhile; planned again"),
            MoveError::Forget(e) => write!(f, "{e}"),
            MoveError::Warming => {
                f.write_str("waiting for the slaves of the restored ring to register first")
            }
        }
    }
}

struct Mover<'a> {
    membership: &'a Membership,
    what: String,
}

impl Mover<'_> {
    fn handle(&self, id: SlaveId) -> Result<Arc<SlaveHandle>, MoveError> {
        self.membership.handle(id).ok_or(MoveError::Gone(id))
    }

    fn call(&self, id: SlaveId, frame: Frame, step: &str) -> Result<Frame, MoveError> {
        self.membership
            .set_progress(format!("{}: {step}", self.what));
        let handle = self.handle(id)?;
        let reply = match handle.call_alone(frame, MOVE_TIMEOUT) {
            Ok(reply) => reply,
            Err(e) => {
                self.membership
                    .suspect(id, &format!("it failed during a data move: {e}"));
                return Err(MoveError::Failed {
                    step: step.to_string(),
                    slave: id,
                    addr: handle.addr.clone(),
                    error: e.to_string(),
                });
            }
        };
        if reply.status != Status::Ok {
            return Err(MoveError::Refused {
                step: step.to_string(),
                slave: id,
                status: reply.status,
                message: reply.value_text(),
            });
        }
        Ok(reply)
    }

    /// Sends the entries of `from`'s table `from_table` inside `arcs` to `to`'s
    /// `to_table`.
    fn transfer(
        &self,
        from: SlaveId,
        from_table: TableSel,
        arcs: &[(u64, u64)],
        to: SlaveId,
        to_table: TableSel,
    ) -> Result<Moved, MoveError> {
        let target = self.handle(to)?;
        let mut frame = Frame::request(
            Opcode::Transfer,
            0,
            target.addr.as_bytes().to_vec(),
            wire::encode_arcs(arcs),
        );
        frame.table = from_table;
        frame.flags = to_table as u32;
        let step = format!(
            "transfer slave {from} {} -> slave {to} {} ({} ranges)",
            table_name(from_table),
            table_name(to_table),
            arcs.len()
        );
        let reply = self.call(from, frame, &step)?;
        let bytes = if reply.value.len() == 8 {
            NetworkEndian::read_u64(&reply.value)
        } else {
            0
        };
        info!("{}: {step}: {} keys, {bytes} bytes", self.what, reply.arg);
        Ok(Moved {
            keys: reply.arg,
            bytes,
        })
    }

    /// A table operation (ABSORB, DEMOTE, DROP_ARC) on the entries inside `arcs`.
    fn table_op(
        &self,
        id: SlaveId,
        opcode: Opcode,
        table: TableSel,
        arcs: &[(u64, u64)],
        step: &str,
    ) -> Result<u64, MoveError> {
        let mut frame = Frame::request(opcode, 0, Vec::new(), wire::encode_arcs(arcs));
        frame.table = table;
        let reply = self.call(id, frame, step)?;
        Ok(reply.arg)
    }
}

fn table_name(table: TableSel) -> &'static str {
    match table {
        TableSel::Own => "own",
        TableSel::Previous => "previous",
        TableSel::None => "-",
    }
}

/// Tables may be out of order (`Membership::unsorted`: a move was cut short, or the
/// coordinator restarted and a move it cut short may have sorted some of them): the
/// next move sorts every table and clears what slaves hold where they have no role.
fn cut_short(membership: &Membership) {
    membership.set_unsorted(true);
}

/// The move due without an event, if any: local steps were cut short, or the data is
/// not where the ring places it (a move stopped part-way and nothing else queued); or
/// the shares are uneven.
fn due(membership: &Membership) -> Option<Due> {
    if membership.joining() || membership.warming().is_some() {
        return None;
    }
    let ring = membership.ring();
    let applied = membership.applied();
    let misplaced = (0..SLOTS).any(|slot| {
        let holders = applied[slot];
        ring.slot_placement(slot).is_some_and(|p| {
            holders.primary.map(|h| h.0) != Some(p.primary)
                || holders.replica.map(|h| h.0) != p.replica
        })
    });
    if membership.unsorted() || misplaced {
        Some(Due::Reconcile)
    } else if !ring.is_balanced() {
        Some(Due::Rebalance)
    } else {
        None
    }
}

/// A move due without an event.
enum Due {
    /// The data is not (all) where the ring places it.
    Reconcile,
    /// The shares are uneven.
    Rebalance,
}

/// Evens out the shares if they are uneven (logged; a failure is retried on a later tick).
fn rebalance(membership: &Membership) {
    let started = Instant::now();
    let Some(future) = membership.begin_rebalance() else {
        return;
    };
    let mover = Mover {
        membership,
        what: "rebalancing".to_string(),
    };
    let result = through_future(
        &mover,
        &future,
        || Ok(()),
        || membership.abort_rebalance(),
        || membership.finish_rebalance(),
    );
    match result {
        Ok(moved) => info!(
            "rebalanced the ring: {} keys, {} bytes moved in {} ms; shares {}",
            moved.keys,
            moved.bytes,
            started.elapsed().as_millis(),
            future
                .members()
                .iter()
                .map(|m| format!("{}:{}", m.id, m.slots))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(e) => {
            warn!("rebalancing stopped: {e}; it will be tried again");
            cut_short(membership);
        }
    }
}

/// A move through a future ring (a join, a rebalance): writes already go to both the
/// current and the future places. Once the writes sent before have landed, the future
/// places get their copies (after `prepare`); then `switch` puts the future ring in
/// place (false: it changed meanwhile, the move is over), the writes sent before are
/// waited for, and the old places sort their tables and drop what moved. `abort` undoes
/// the start when a copy fails.
fn through_future(
    mover: &Mover<'_>,
    future: &Ring,
    prepare: impl FnOnce() -> Result<(), MoveError>,
    abort: impl FnOnce(),
    switch: impl FnOnce() -> bool,
) -> Result<Moved, MoveError> {
    let membership = mover.membership;
    // Writes that chose their targets before the move started do not reach the future
    // places: let them land at the old places before the copies are read.
    if !membership.drain(DRAIN_TIMEOUT) {
        warn!(
            "{}: writes still under way after {DRAIN_TIMEOUT:?}",
            mover.what
        );
    }
    let plan = Plan::new(membership, &membership.applied(), future);
    let moved = match prepare().and_then(|()| plan.copy(mover)) {
        Ok(moved) => moved,
        Err(e) => {
            // Nothing goes on the ring without its data.
            abort();
            return Err(e);
        }
    };
    if !switch() {
        return Err(MoveError::RingChanged);
    }
    // The move ends when the old places have sorted and dropped what moved (also on an
    // error).
    struct EndMove<'a>(&'a Membership);
    impl Drop for EndMove<'_> {
        fn drop(&mut self) {
            self.0.end_move();
        }
    }
    let _end = EndMove(membership);
    // The old places change once the writes sent to them before the switch have landed.
    if !membership.drain(DRAIN_TIMEOUT) {
        warn!(
            "{}: writes still under way after {DRAIN_TIMEOUT:?}",
            mover.what
        );
    }
    finish(mover, &plan, future)?;
    membership.set_progress(String::new());
    Ok(moved)
}

/// Slots per (slave, table) or per copy, in slot order.
type SlotsBy<K> = BTreeMap<K, Vec<usize>>;

/// The steps that put the data where `target` places it, from where it is.
#[derive(Default)]
struct Plan {
    /// (source, its table, destination, destination table) → slots.
    copies: SlotsBy<(SlaveId, TableSel, SlaveId, TableSel)>,
    /// Slaves that become the primary of slots they held as the replica.
    absorbs: SlotsBy<SlaveId>,
    /// Slaves that become the replica of slots they held as the primary.
    demotes: SlotsBy<SlaveId>,
    /// Slaves that must no longer hold slots (both tables are cleared of them).
    drops: SlotsBy<SlaveId>,
    /// After a move was cut short: per slave on the ring and table, the
    /// slots whose entries it must not have there, whatever the record says it held.
    /// Copies a failed move left behind are cleared this way, once the tables are
    /// sorted.
    strays: SlotsBy<(SlaveId, TableSel)>,
    /// Slots that had holders and have none left alive.
    lost: usize,
}

impl Plan {
    fn new(membership: &Membership, applied: &[Holders], target: &Ring) -> Plan {
        // After a move cut short: every table sorted, and strays cleared.
        let tidy_all = membership.unsorted();
        let mut plan = Plan::default();
        let mut sources: BTreeMap<(SlaveId, u64), bool> = BTreeMap::new();
        let mut alive = |holder: Option<(SlaveId, u64)>| {
            holder.filter(|&h| *sources.entry(h).or_insert_with(|| membership.is_source(h)))
        };
        for slot in 0..SLOTS {
            let Some(want) = target.slot_placement(slot) else {
                continue;
            };
            let held = applied.get(slot).copied().unwrap_or_default();
            let primary = alive(held.primary).map(|h| h.0);
            let replica = alive(held.replica).map(|h| h.0);
            let source = primary
                .map(|p| (p, TableSel::Own))
                .or(replica.map(|r| (r, TableSel::Previous)));
            let holds = |id: SlaveId| primary == Some(id) || replica == Some(id);
            let need = |id: SlaveId, table: TableSel, plan: &mut Plan| match source {
                Some((source, from)) => plan
                    .copies
                    .entry((source, from, id, table))
                    .or_default()
                    .push(slot),
                None if held.primary.is_some() => plan.lost += 1,
                None => {}
            };
            // The primary keeps the slot in own.
            if !holds(want.primary) {
                need(want.primary, TableSel::Own, &mut plan);
            } else if primary != Some(want.primary) || tidy_all {
                plan.absorbs.entry(want.primary).or_default().push(slot);
            }
            // The replica keeps it in previous.
            if let Some(want_replica) = want.replica {
                if !holds(want_replica) {
                    need(want_replica, TableSel::Previous, &mut plan);
                } else if replica != Some(want_replica) || tidy_all {
                    plan.demotes.entry(want_replica).or_default().push(slot);
                }
            }
            // A slave off the ring (leaving) keeps its data until it exits.
            for holder in [primary, replica].into_iter().flatten() {
                if holder != want.primary && Some(holder) != want.replica && target.is_live(holder)
                {
                    plan.drops.entry(holder).or_default().push(slot);
                }
            }
            // A slot with no holder left keeps whatever copy anyone still has.
            if tidy_all && source.is_some() {
                for member in target.members() {
                    if member.id != want.primary {
                        plan.strays
                            .entry((member.id, TableSel::Own))
                            .or_default()
                            .push(slot);
                    }
                    if Some(member.id) != want.replica {
                        let key = (member.id, TableSel::Previous);
                        plan.strays.entry(key).or_default().push(slot);
                    }
                }
            }
        }
        plan
    }

    /// Step 1: every slave that lacks a slot gets it from a holder.
    fn copy(&self, mover: &Mover<'_>) -> Result<Moved, MoveError> {
        let mut moved = Moved::default();
        for (&(from, from_table, to, table), slots) in &self.copies {
            let arcs = ring::arcs_of_slots(slots);
            moved.add(mover.transfer(from, from_table, &arcs, to, table)?);
            // The other table too, merging by version: a holder's tables need not match
            // the role it is recorded in (writes routed by a newer ring can reach it
            // before its tables are sorted, and a move may have been cut short), and a
            // copy from the recorded table alone would then miss the newest entries.
            // A chaos run found reads of old values that way.
            let other = match from_table {
                TableSel::Own => TableSel::Previous,
                _ => TableSel::Own,
            };
            moved.add(mover.transfer(from, other, &arcs, to, table)?);
        }
        Ok(moved)
    }

    /// Step 2: holders move slots to the table their new role keeps them in.
    fn sort(&self, mover: &Mover<'_>) -> Result<(), MoveError> {
        for (&id, slots) in &self.absorbs {
            let arcs = ring::arcs_of_slots(slots);
            let n = mover.table_op(id, Opcode::Absorb, TableSel::Previous, &arcs, "absorb")?;
            if n > 0 {
                info!("{}: slave {id} absorbed {n} keys into own", mover.what);
            }
        }
        for (&id, slots) in &self.demotes {
            let arcs = ring::arcs_of_slots(slots);
            let n = mover.table_op(id, Opcode::Demote, TableSel::Own, &arcs, "demote")?;
            if n > 0 {
                info!("{}: slave {id} moved {n} keys to previous", mover.what);
            }
        }
        Ok(())
    }

    /// Step 3: former holders drop what they no longer hold. A failure leaves an extra
    /// copy, never a missing one; false then.
    fn drop_old(&self, mover: &Mover<'_>) -> bool {
        let mut all = true;
        for (&id, slots) in &self.drops {
            let arcs = ring::arcs_of_slots(slots);
            for table in [TableSel::Own, TableSel::Previous] {
                match mover.table_op(id, Opcode::DropArc, table, &arcs, "drop") {
                    Ok(n) if n > 0 => info!(
                        "{}: slave {id} dropped {n} keys it no longer holds",
                        mover.what
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        warn!("{}: {e} (an extra copy is left)", mover.what);
                        all = false;
                    }
                }
            }
        }
        all
    }

    /// Step 4, after a move was cut short and every table is sorted: each slave on the
    /// ring clears from each table the slots it does not hold there (copies a failed
    /// move left). False if one of them failed.
    fn clear_strays(&self, mover: &Mover<'_>) -> bool {
        let mut all = true;
        for (&(id, table), slots) in &self.strays {
            let arcs = ring::arcs_of_slots(slots);
            match mover.table_op(id, Opcode::DropArc, table, &arcs, "clear strays") {
                Ok(n) if n > 0 => info!(
                    "{}: slave {id} dropped {n} stray keys from {} (copies a move that was cut short left)",
                    mover.what,
                    if table == TableSel::Own {
                        "own"
                    } else {
                        "previous"
                    }
                ),
                Ok(_) => {}
                Err(e) => {
                    warn!("{}: {e} (stray copies are left)", mover.what);
                    all = false;
                }
            }
        }
        all
    }
}

/// Sorts tables and drops old copies after the copies are in and the ring is `target`.
///
/// The old holders drop what moved even when sorting stopped (a slave died): every slot
/// is complete at its new places by then, and the recorded holders are the new ones, so
/// no later move would drop those copies. The sorting is finished on the next tick.
fn finish(mover: &Mover<'_>, plan: &Plan, target: &Ring) -> Result<(), MoveError> {
    mover.membership.set_applied(target);
    // Until sorted, reads take the newer of a primary's two tables.
    mover.membership.set_unsorted(true);
    let sorted = plan.sort(mover);
    if sorted.is_ok() {
        mover.membership.set_unsorted(false);
    }
    let dropped = plan.drop_old(mover);
    // Strays only from sorted tables: a slave whose sorting did not happen may still
    // keep a slot of its new role in its other table.
    let cleared = sorted.is_ok() && plan.clear_strays(mover);
    // Over: what a restarted coordinator starts from (until now, from before the move).
    if cleared && dropped {
        mover.membership.record_finished_move();
    }
    sorted
}

/// Puts the data where the current ring places it (after a death or a leave, or to
/// finish a move that was cut short).
fn reconcile(membership: &Membership) -> Result<Moved, MoveError> {
    let mover = Mover {
        membership,
        what: "moving data".to_string(),
    };
    if !membership.drain(DRAIN_TIMEOUT) {
        warn!("moving data: writes still under way after {DRAIN_TIMEOUT:?}");
    }
    let ring = membership.ring();
    let plan = Plan::new(membership, &membership.applied(), &ring);
    if plan.lost > 0 {
        warn!(
            "{} of {SLOTS} slots lost every copy (both of their slaves failed)",
            plan.lost
        );
    }
    let moved = plan.copy(&mover)?;
    finish(&mover, &plan, &ring)?;
    Ok(moved)
}

/// `replicate()`: restores two copies of every key after slave `dead` left the ring.
fn replicate(membership: &Membership, dead: SlaveId) -> Result<Moved, MoveError> {
    if membership.is_empty() {
        warn!("slave {dead} was the last slave: no copy of any key is left");
        return Ok(Moved::default());
    }
    reconcile(membership)
}

/// Gives a registered slave its slots and puts it on the ring. `Ok(None)` when the
/// registration was stale (the slave died or registered again meanwhile).
fn join(membership: &Membership, n: SlaveId, session: u64) -> Result<Option<Moved>, MoveError> {
    // After a restart, the slaves that were on the ring get their slots back first.
    if membership.warming().is_some() {
        membership.requeue_join(n, session);
        return Err(MoveError::Warming);
    }
    let Some((_, future)) = membership.begin_join(n, session) else {
        return Ok(None);
    };
    let mover = Mover {
        membership,
        what: format!("joining slave {n}"),
    };
    through_future(
        &mover,
        &future,
        || prepare_join(&mover, &future, n),
        // If N itself failed it is dead by now; otherwise the join is tried again after
        // the failure is handled.
        || membership.abort_join(n, session),
        || membership.finish_join(n, session),
    )
    .map(Some)
}

/// Before a joining slave receives its copies: the flush markers, and nothing left in its
/// tables outside the slots it is about to hold (a slave that comes back keeps its data
/// for those, to be merged by version with the copies).
fn prepare_join(mover: &Mover<'_>, future: &Ring, n: SlaveId) -> Result<(), MoveError> {
    // The flush markers first: N's registration reply carried them, but N may not have
    // logged them yet, and it must not serve what a flush_all took away.
    for marker in mover.membership.flushes() {
        let mut frame = Frame::request(
            Opcode::SlaveFlush,
            0,
            Vec::new(),
            marker.at.to_be_bytes().to_vec(),
        );
        frame.arg = marker.threshold;
        mover.call(n, frame, "flush markers")?;
    }
    // Then N forgets what is older than the collection horizon, before any transfer.
    collection::forget_before_join(mover.membership, n).map_err(MoveError::Forget)?;
    let (mut not_own, mut not_previous) = (Vec::new(), Vec::new());
    for slot in 0..SLOTS {
        let placement = future.slot_placement(slot);
        if placement.is_none_or(|p| p.primary != n) {
            not_own.push(slot);
        }
        if placement.is_none_or(|p| p.replica != Some(n)) {
            not_previous.push(slot);
        }
    }
    for (table, slots) in [(TableSel::Own, not_own), (TableSel::Previous, not_previous)] {
        if !slots.is_empty() {
            let arcs = ring::arcs_of_slots(&slots);
            mover.table_op(
                n,
                Opcode::DropArc,
                table,
                &arcs,
                "clear what it will not hold",
            )?;
        }
    }
    Ok(())
}
