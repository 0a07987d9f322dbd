//! The load loop: one connection per `bench-<i>` thread, batches of `--pipeline`
//! operations, errors counted and the connection replaced once when it breaks.

use std::collections::HashMap;
use std::sync::Barrier;
use std::time::Instant;

use super::args::{Plan, format_key};
use super::conn::{Cmd, Conn, Done, Kind, OpError};
use super::histogram::Histogram;
use super::rng::Rng;

/// What one `bench-<i>` thread did.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) histogram: Histogram,
    pub(super) ops: u64,
    pub(super) errors: u64,
    pub(super) misses: u64,
    pub(super) wrong: u64,
    /// Why the thread stopped before the end, if it did.
    pub(super) stopped: Option<String>,
}

/// One operation of a batch; the slots of a batch are reused from batch to batch.
pub(super) struct Op {
    /// Key number.
    pub(super) n: u64,
    /// `key:<n>`.
    pub(super) key: Vec<u8>,
    pub(super) kind: Kind,
    /// With `--verify`, what a set writes; `None`: the shared value pattern.
    pub(super) value: Option<Vec<u8>>,
}

impl Op {
    pub(super) fn new() -> Op {
        Op {
            n: 0,
            key: Vec::with_capacity(24),
            kind: Kind::Get,
            value: None,
        }
    }

    /// The request to send, `pattern` being the value of an ordinary set.
    pub(super) fn cmd<'a>(&'a self, pattern: &'a [u8]) -> Cmd<'a> {
        match self.kind {
            Kind::Get => Cmd::Get(&self.key),
            Kind::Set => Cmd::Set(&self.key, self.value.as_deref().unwrap_or(pattern)),
        }
    }
}

/// One connection's thread: its connection, its figures and, with `--verify`, what each
/// of its keys holds.
pub(super) struct Worker<'a> {
    pub(super) plan: &'a Plan,
    pub(super) conn: Conn,
    pub(super) outcome: Outcome,
    /// With --verify: what each of our keys holds (None: unknown after a failed set).
    pub(super) expected: HashMap<u64, Option<Vec<u8>>>,
    /// The value a verified get returned.
    pub(super) got: Vec<u8>,
}

impl Worker<'_> {
    /// Counts a failed set as making its key's content unknown (with `--verify`): it may or
    /// may not have been applied.
    pub(super) fn forget(&mut self, op: &Op) {
        if self.plan.verify && op.kind == Kind::Set {
            self.expected.insert(op.n, None);
        }
    }

    /// Checks a get's answer against what was last stored (with `--verify`), or records
    /// what a set stored.
    pub(super) fn check(&mut self, op: &Op, done: Done) {
        if !self.plan.verify {
            return;
        }
        match op.kind {
            Kind::Set => {
                self.expected.insert(op.n, op.value.clone());
            }
            Kind::Get => {
                let plan = self.plan;
                let want = self
                    .expected
                    .entry(op.n)
                    .or_insert_with(|| plan.preloaded.then(|| plan.value.clone()));
                let same = match want {
                    Some(want) => done == Done::Hit && self.got == *want,
                    None => true, // unknown since a failed set
                };
                if !same {
                    self.outcome.wrong += 1;
                    log::warn!("verify: key:{} does not hold what was last stored", op.n);
                }
            }
        }
    }

    /// Counts one successful operation that took `micros`.
    pub(super) fn succeeded(&mut self, done: Done, micros: u64) {
        self.outcome.histogram.record(micros);
        self.outcome.ops += 1;
        self.outcome.misses += u64::from(done == Done::Miss);
    }

    /// Replaces a broken connection; `false` (and the reason kept) when that fails too.
    pub(super) fn reconnect(&mut self, why: &str) -> bool {
        log::debug!("connection broke ({why}); connecting again");
        match Conn::open(self.plan.protocol, &self.plan.addr)
            .map(|c| c.with_wait(self.plan.redis_wait))
        {
            Ok(fresh) => {
                self.conn = fresh;
                true
            }
            Err(again) => {
                self.outcome.stopped = Some(format!("{why}; then {again}"));
                false
            }
        }
    }

    /// Sends `ops` in one write and reads their replies in order. Returns why the
    /// connection broke, if it did (every operation not answered by then is an error).
    pub(super) fn exchange(&mut self, ops: &[Op], waiting: &mut Vec<usize>) -> Option<String> {
        let plan = self.plan;
        let sent = Instant::now();
        let queued = ops
            .iter()
            .try_for_each(|op| self.conn.queue(op.cmd(&plan.value)))
            .and_then(|()| self.conn.flush());
        let wait = match queued {
            Ok(wait) => wait,
            Err(e) => {
                // Nothing can be read back in step: the whole batch failed.
                self.outcome.errors += ops.len() as u64;
                ops.iter().for_each(|op| self.forget(op));
                return match e {
                    OpError::Broken(why) => Some(why),
                    OpError::Reply(why) => Some(format!("cannot send: {why}")),
                };
            }
        };
        waiting.clear();
        for (i, op) in ops.iter().enumerate() {
            let out = (plan.verify && op.kind == Kind::Get).then_some(&mut self.got);
            match self.conn.recv(op.kind, out) {
                Ok(done) => {
                    self.check(op, done);
                    if wait && op.kind == Kind::Set {
                        // Counts once the WAIT after the batch says a replica has it.
                        waiting.push(i);
                    } else {
                        self.succeeded(done, micros_since(sent));
                    }
                }
                Err(OpError::Reply(why)) => {
                    self.outcome.errors += 1;
                    self.forget(op);
                    log::debug!("error reply: {why}");
                }
                Err(OpError::Broken(why)) => {
                    let lost = &ops[i..];
                    self.outcome.errors += (lost.len() + waiting.len()) as u64;
                    lost.iter().for_each(|op| self.forget(op));
                    waiting.iter().for_each(|&w| self.forget(&ops[w]));
                    return Some(why);
                }
            }
        }
        if !wait {
            return None;
        }
        let waited = self.conn.recv_wait();
        let micros = micros_since(sent);
        match waited {
            Ok(()) => {
                for _ in 0..waiting.len() {
                    self.succeeded(Done::Stored, micros);
                }
                None
            }
            Err(e) => {
                self.outcome.errors += waiting.len() as u64;
                waiting.iter().for_each(|&w| self.forget(&ops[w]));
                match e {
                    OpError::Reply(why) => {
                        log::debug!("WAIT error reply: {why}");
                        None
                    }
                    OpError::Broken(why) => Some(why),
                }
            }
        }
    }
}

/// Microseconds since `since`.
pub(super) fn micros_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One connection's closed loop: connect, wait for the others, then run batches of
/// `--pipeline` operations until the budget of operations (counting failures) is spent or
/// the duration has passed.
pub(super) fn load(plan: &Plan, index: u64, budget: Option<u64>, barrier: &Barrier) -> Outcome {
    let conn = Conn::open(plan.protocol, &plan.addr).map(|c| c.with_wait(plan.redis_wait));
    // Every thread reaches the barrier, connected or not, or the others would wait forever.
    barrier.wait();
    let conn = match conn {
        Ok(conn) => conn,
        Err(why) => {
            return Outcome {
                stopped: Some(why),
                ..Outcome::default()
            };
        }
    };
    log::debug!("connected to {}", plan.addr);
    let mut worker = Worker {
        plan,
        conn,
        outcome: Outcome::default(),
        expected: HashMap::new(),
        got: Vec::new(),
    };
    let mut rng = Rng::new(plan.seed, index);
    let started = Instant::now();
    let mut attempts = 0u64;
    let mut batch: Vec<Op> = (0..plan.pipeline).map(|_| Op::new()).collect();
    let mut waiting = Vec::with_capacity(plan.pipeline);
    loop {
        let room = match (budget, plan.duration) {
            (Some(budget), _) => budget.saturating_sub(attempts),
            (None, Some(duration)) if started.elapsed() < duration => u64::MAX,
            _ => 0,
        };
        let size = usize::try_from(room).unwrap_or(usize::MAX).min(batch.len());
        if size == 0 {
            break;
        }
        for op in &mut batch[..size] {
            attempts += 1;
            op.n = plan.pick(&mut rng, index);
            format_key(&mut op.key, op.n);
            op.kind = if rng.unit() < plan.get_ratio {
                Kind::Get
            } else {
                Kind::Set
            };
            op.value = (plan.verify && op.kind == Kind::Set)
                .then(|| verify_value(&plan.value, index, attempts));
        }
        if let Some(why) = worker.exchange(&batch[..size], &mut waiting) {
            if !worker.reconnect(&why) {
                break;
            }
        }
    }
    worker.outcome
}

/// A value connection `index` can recognise: `<index>:<n>:` then the pattern, at least
/// as long as the pattern.
pub(super) fn verify_value(pattern: &[u8], index: u64, n: u64) -> Vec<u8> {
    let mut value = format!("{index}:{n}:").into_bytes();
    let rest = pattern.len().saturating_sub(value.len());
    value.extend_from_slice(&pattern[..rest]);
    value
}
