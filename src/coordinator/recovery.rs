//! Moving data when the ring changes: the original design's `replicate()` when a slave
//! dies or leaves, and its mirror image when a slave joins. Runs on the `recovery` thread,
//! one event at a time, so moves never overlap; the failure detector and the request path
//! only queue events (see `membership`).
//!
//! Replicate, for dead slave D whose ranges now belong to its successor S (P = S's
//! predecessor, S2 = S's successor, all on the ring without D):
//! 0. wait for the writes that chose their targets before D left (they may still land in
//!    S's `previous`);
//! 1. S absorbs: `previous` entries outside P's arc (D's old range) merge into `own`;
//! 2. P's `own` is transferred to S's `previous`;
//! 3. S's `own` is transferred to S2's `previous`.
//!
//! Join, for new slave N between P and S (on the ring with N):
//! 1. writes start going to both the old and the new places; once the writes sent before
//!    that have landed, S's `own` inside N's arc is transferred to N's `own`, and P's `own`
//!    to N's `previous`;
//! 2. N goes on the ring, and the writes that chose their targets before are waited for;
//! 3. S splits: its `own` inside N's arc moves to `previous`, which keeps only N's arc;
//! 4. S's successor (if not N) drops N's arc from its `previous`.
//!
//! Before each event the slaves are fenced against direct writes, and after it the new
//! view is published to them (see `views`).
//!
//! Transfers are slave to slave, in chunks, merging by version (an older entry never
//! wins). Every step is logged; a step that fails (a slave died) ends the move, and the
//! event that death queued starts a new one from the ring as it then is.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, NetworkEndian};
use log::{info, warn};

use crate::coordinator::collection;
use crate::coordinator::link::SlaveHandle;
use crate::coordinator::membership::{Event, Membership};
use crate::coordinator::views::{self, Publisher};
use crate::ring::{Ring, SlaveId, Token};
use crate::wire::{self, Frame, Opcode, Status, TableSel};

/// How long a move waits for the writes of the previous epoch to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one transfer or table operation may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Processes events until the sender side is closed.
pub fn run(membership: &Membership, events: &Receiver<Event>) {
    let mut views = Publisher::default();
    let mut collector = collection::Collector::default();
    loop {
        let event = match events.recv_timeout(views::PUBLISH_TICK) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                views.publish(membership);
                // Between events only: a collection never overlaps a data move.
                collector.tick(membership);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // No direct write may land while data moves (see `views`).
        views.fence(membership);
        match event {
            Event::Replicate {
                id,
                token,
                reason,
                done,
            } => {
                let started = Instant::now();
                let result = replicate(membership, id, token);
                membership.finish_replicate(id);
                match result {
                    Ok(moved) => info!(
                        "re-replication after slave {id} left ({reason}) done: {} keys, {} bytes moved in {} ms; {} slaves, {} copies of every key",
                        moved.keys,
                        moved.bytes,
                        started.elapsed().as_millis(),
                        membership.len(),
                        membership.len().min(2)
                    ),
                    Err(e) => warn!("re-replication after slave {id} left stopped: {e}"),
                }
                if membership.len() == 1 {
                    warn!("one slave left: every key has ONE copy until another slave joins");
                }
                if let Some(done) = done {
                    let _ = done.try_send(());
                }
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
                        warn!("join of slave {id} stopped: {e}; it will be tried again");
                        // Back off a little so a failure that persists does not spin.
                        std::thread::sleep(Duration::from_millis(200));
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

struct Mover<'a> {
    membership: &'a Membership,
    what: String,
}

impl Mover<'_> {
    fn handle(&self, id: SlaveId) -> Result<Arc<SlaveHandle>, String> {
        self.membership
            .handle(id)
            .ok_or_else(|| format!("slave {id} is gone"))
    }

    fn call(&self, id: SlaveId, frame: Frame, step: &str) -> Result<Frame, String> {
        self.membership
            .set_progress(format!("{}: {step}", self.what));
        let handle = self.handle(id)?;
        let reply = match handle.call_alone(frame, MOVE_TIMEOUT) {
            Ok(reply) => reply,
            Err(e) => {
                self.membership
                    .suspect(id, &format!("it failed during a data move: {e}"));
                return Err(format!("{step}: slave {id} at {}: {e}", handle.addr));
            }
        };
        if reply.status != Status::Ok {
            return Err(format!(
                "{step}: slave {id} answered {}: {}",
                reply.status.name(),
                reply.value_text()
            ));
        }
        Ok(reply)
    }

    /// Sends table `from_table` of `from` (entries inside `arc`) to `to`'s `to_table`.
    fn transfer(
        &self,
        from: SlaveId,
        from_table: TableSel,
        arc: (Token, Token),
        to: SlaveId,
        to_table: TableSel,
    ) -> Result<Moved, String> {
        let target = self.handle(to)?;
        let mut frame = Frame::request(
            Opcode::Transfer,
            0,
            target.addr.as_bytes().to_vec(),
            wire::encode_arc(arc.0.0, arc.1.0),
        );
        frame.table = from_table;
        frame.flags = to_table as u32;
        let step = format!(
            "transfer slave {from} {} -> slave {to} {}",
            table_name(from_table),
            table_name(to_table)
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

    fn table_op(
        &self,
        id: SlaveId,
        opcode: Opcode,
        table: TableSel,
        arc: Option<(Token, Token)>,
        step: &str,
    ) -> Result<u64, String> {
        let value = arc.map_or_else(Vec::new, |(start, end)| wire::encode_arc(start.0, end.0));
        let mut frame = Frame::request(opcode, 0, Vec::new(), value);
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

/// The slave on `ring` that now owns position `token`.
fn owner_of(ring: &Ring, token: Token) -> Option<SlaveId> {
    ring.placement(token.0).map(|p| p.primary)
}

/// `replicate()`: restores two copies of every key after slave `dead` (which held
/// `token`) left the ring.
fn replicate(membership: &Membership, dead: SlaveId, token: Token) -> Result<Moved, String> {
    let mover = Mover {
        membership,
        what: format!("replicating after slave {dead}"),
    };
    // Writes that chose their targets before D left must land before S absorbs.
    if !membership.drain(DRAIN_TIMEOUT) {
        warn!("replicating after slave {dead}: writes still under way after {DRAIN_TIMEOUT:?}");
    }
    let ring = membership.ring();
    let mut moved = Moved::default();
    let Some(s) = owner_of(&ring, token) else {
        warn!("slave {dead} was the last slave: no copy of any key is left");
        return Ok(moved);
    };
    let p = ring.predecessor(s);
    let p_arc = p.and_then(|p| ring.arc_of(p));
    // 1. S takes D's range into own: everything in previous outside P's arc (with no P,
    //    everything).
    let absorbed = mover.table_op(s, Opcode::Absorb, TableSel::Previous, p_arc, "absorb")?;
    info!("replicating after slave {dead}: slave {s} absorbed {absorbed} keys into own");
    // 2. P's own becomes S's previous.
    if let (Some(p), Some(p_arc)) = (p, p_arc) {
        moved.add(mover.transfer(p, TableSel::Own, p_arc, s, TableSel::Previous)?);
    }
    // 3. S's own becomes its successor's previous.
    if let (Some(s2), Some(s_arc)) = (ring.successor(s), ring.arc_of(s)) {
        moved.add(mover.transfer(s, TableSel::Own, s_arc, s2, TableSel::Previous)?);
    }
    Ok(moved)
}

/// Gives a registered slave its ranges and puts it on the ring. `Ok(None)` when the
/// registration was stale (the slave died or registered again meanwhile).
fn join(membership: &Membership, n: SlaveId, session: u64) -> Result<Option<Moved>, String> {
    let Some((_, future)) = membership.begin_join(n, session) else {
        return Ok(None);
    };
    let mover = Mover {
        membership,
        what: format!("joining slave {n}"),
    };
    // Writes that chose their targets before the join started do not reach N: let them
    // land at the old places before the copies are read.
    if !membership.drain(DRAIN_TIMEOUT) {
        warn!("joining slave {n}: writes still under way after {DRAIN_TIMEOUT:?}");
    }
    let moved = match plan_join(&mover, &future, n) {
        Ok(moved) => moved,
        Err(e) => {
            // N must not go on the ring without its data. If N itself failed it is dead
            // by now; otherwise the join is tried again after the failure is handled.
            membership.abort_join(n, session);
            return Err(e);
        }
    };
    let joined = membership.finish_join(n, session);
    if !joined {
        return Err(format!("slave {n} died while joining"));
    }
    // The move ends when the old places have dropped what moved (also on an error).
    struct EndMove<'a>(&'a Membership);
    impl Drop for EndMove<'_> {
        fn drop(&mut self) {
            self.0.end_move();
        }
    }
    let _end = EndMove(membership);
    // Clean up the places that no longer hold N's range, once the writes that were sent
    // to them before N went on the ring have landed. Failures here leave extra copies,
    // never missing ones.
    if !membership.drain(DRAIN_TIMEOUT) {
        warn!("joining slave {n}: writes still under way after {DRAIN_TIMEOUT:?}");
    }
    if let (Some(s), Some(n_arc)) = (future.successor(n), future.arc_of(n)) {
        mover.table_op(s, Opcode::Split, TableSel::Own, Some(n_arc), "split")?;
        if let Some(s2) = future.successor(s)
            && s2 != n
        {
            let dropped =
                mover.table_op(s2, Opcode::DropArc, TableSel::Previous, Some(n_arc), "drop")?;
            info!("joining slave {n}: slave {s2} dropped {dropped} keys it no longer holds");
        }
    }
    membership.set_progress(String::new());
    Ok(Some(moved))
}

/// The transfers that fill a joining slave, before it goes on the ring.
fn plan_join(mover: &Mover<'_>, future: &Ring, n: SlaveId) -> Result<Moved, String> {
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
    collection::forget_before_join(mover.membership, n)?;
    let mut moved = Moved::default();
    let (Some(s), Some(p), Some(n_arc)) =
        (future.successor(n), future.predecessor(n), future.arc_of(n))
    else {
        // The first slave: nothing to receive.
        return Ok(moved);
    };
    // N's own comes from the current owner of its arc, S.
    moved.add(mover.transfer(s, TableSel::Own, n_arc, n, TableSel::Own)?);
    // N's previous is a copy of its predecessor's own.
    if let Some(p_arc) = future.arc_of(p) {
        moved.add(mover.transfer(p, TableSel::Own, p_arc, n, TableSel::Previous)?);
    }
    Ok(moved)
}
