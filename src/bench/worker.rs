//! The load loop: one connection per `bench-<i>` thread, batches of `--pipeline`
//! operations, errors counted and the connection replaced once when it breaks.

use std::collections::HashMap;
use std::sync::Barrier;
use std::time::Instant;

use super::args::{Plan, Workload, format_key};
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
    /// Keys read or written by successful operations (a multi-key get counts its keys).
    pub(super) key_ops: u64,
    /// `cas` requests stored.
    pub(super) cas_stored: u64,
    /// `cas` requests answered `EXISTS`.
    pub(super) cas_exists: u64,
    /// Why the thread stopped before the end, if it did.
    pub(super) stopped: Option<String>,
}

/// One operation of a batch; the slots of a batch are reused from batch to batch.
pub(super) struct Op {
    /// Key number.
    pub(super) n: u64,
    /// `key:<n>`.
    pub(super) key: Vec<u8>,
    /// With `--multiget`: the keys of a get.
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) kind: Kind,
    /// With `--verify`, what a set writes; `None`: the shared value pattern.
    pub(super) value: Option<Vec<u8>>,
    /// The cas unique a `gets` returned, for the `cas` that follows.
    pub(super) cas: u64,
    /// The reply asks for a second request (a `gets` that found the key: its `cas`).
    pub(super) again: bool,
}

impl Op {
    pub(super) fn new() -> Op {
        Op {
            n: 0,
            key: Vec::with_capacity(24),
            keys: Vec::new(),
            kind: Kind::Get,
            value: None,
            cas: 0,
            again: false,
        }
    }

    /// The request to send.
    pub(super) fn cmd<'a>(&'a self, plan: &'a Plan) -> Cmd<'a> {
        let value = self.value.as_deref().unwrap_or(&plan.value);
        match self.kind {
            Kind::Get => Cmd::Get(&self.key),
            Kind::MultiGet(_) => Cmd::MultiGet(&self.keys),
            Kind::Set => Cmd::Set(&self.key, value),
            Kind::SetTtl => Cmd::SetTtl(&self.key, value, plan.ttl),
            Kind::Gets => Cmd::Gets(&self.key),
            Kind::Cas => Cmd::Cas(&self.key, value, self.cas),
            Kind::Incr => Cmd::Incr(&self.key, 1),
        }
    }

    /// Draws the next operation of connection `index` (its `attempt`-th).
    fn draw(&mut self, plan: &Plan, rng: &mut Rng, index: u64, attempt: u64) {
        self.n = plan.pick(rng, index);
        format_key(&mut self.key, self.n);
        self.again = false;
        self.kind = match plan.workload {
            Workload::Incr => Kind::Incr,
            Workload::Cas => Kind::Gets,
            Workload::GetSet | Workload::SetTtl if rng.unit() < plan.get_ratio => {
                match plan.multiget {
                    1 => Kind::Get,
                    n => Kind::MultiGet(n),
                }
            }
            Workload::GetSet => Kind::Set,
            Workload::SetTtl => Kind::SetTtl,
        };
        if let Kind::MultiGet(n) = self.kind {
            self.keys.resize_with(n, || Vec::with_capacity(24));
            let (first, rest) = self.keys.split_at_mut(1);
            first[0].clone_from(&self.key);
            for key in rest {
                format_key(key, plan.pick(rng, index));
            }
        }
        self.value =
            (plan.verify && self.kind.is_set()).then(|| verify_value(&plan.value, index, attempt));
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
        if self.plan.verify && op.kind.is_set() {
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
            kind if kind.is_set() => {
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
            _ => {}
        }
    }

    /// Counts one successful operation that took `micros`.
    pub(super) fn succeeded(&mut self, done: Done, micros: u64) {
        let outcome = &mut self.outcome;
        outcome.histogram.record(micros);
        outcome.ops += 1;
        match done {
            Done::Keys { hits, misses } => {
                outcome.key_ops += u64::from(hits) + u64::from(misses);
                outcome.misses += u64::from(misses);
            }
            Done::Miss => {
                outcome.key_ops += 1;
                outcome.misses += 1;
            }
            Done::Exists => {
                outcome.key_ops += 1;
                outcome.cas_exists += 1;
            }
            Done::Stored | Done::Hit | Done::Unique(_) | Done::Counter(_) => outcome.key_ops += 1,
        }
    }

    /// Replaces a broken connection; `false` (and the reason kept) when that fails too.
    pub(super) fn reconnect(&mut self, why: &str) -> bool {
        log::debug!("connection broke ({why}); connecting again");
        match Conn::open(self.plan.protocol, &self.plan.addr).map(|c| c.configured(self.plan)) {
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

    /// Sends `ops` in one write and reads their replies in order; their latency counts
    /// from `sent`. A `gets` that finds its key is not counted yet: it becomes the `cas`
    /// to send next, marked `again`. Returns why the connection broke, if it did (every
    /// operation not answered by then is an error).
    pub(super) fn exchange(
        &mut self,
        ops: &mut [Op],
        waiting: &mut Vec<usize>,
        sent: Instant,
    ) -> Option<String> {
        let plan = self.plan;
        ops.iter_mut().for_each(|op| op.again = false);
        let queued = ops
            .iter()
            .try_for_each(|op| self.conn.queue(op.cmd(plan)))
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
        for i in 0..ops.len() {
            let op = &mut ops[i];
            let out = (plan.verify && op.kind == Kind::Get).then_some(&mut self.got);
            match self.conn.recv(op.kind, out) {
                Ok(Done::Unique(cas)) if op.kind == Kind::Gets => {
                    (op.kind, op.cas, op.again) = (Kind::Cas, cas, true);
                }
                Ok(done) => {
                    if op.kind == Kind::Cas && done == Done::Stored {
                        self.outcome.cas_stored += 1;
                    }
                    self.check(op, done);
                    if wait && op.kind.is_set() {
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
                    // Gets answered but whose cas will not be sent fail too.
                    let pending = ops[..i].iter().filter(|op| op.again).count();
                    ops[..i].iter_mut().for_each(|op| op.again = false);
                    let lost = &ops[i..];
                    self.outcome.errors += (lost.len() + waiting.len() + pending) as u64;
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
    let conn = Conn::open(plan.protocol, &plan.addr).map(|c| c.configured(plan));
    // Every thread reaches the barrier, connected or not, or the others would wait forever.
    barrier.wait();
    let conn = match conn {
        Ok(conn) => conn,
        Err(why) => {
            return Outcome {
                stopped: Some(why.to_string()),
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
            op.draw(plan, &mut rng, index, attempts);
        }
        let sent = Instant::now();
        let mut broke = worker.exchange(&mut batch[..size], &mut waiting, sent);
        if broke.is_none() && plan.workload == Workload::Cas {
            // The cas of every gets that found its key, in a second batch.
            let mut again = 0;
            for i in 0..size {
                if batch[i].again {
                    batch.swap(i, again);
                    again += 1;
                }
            }
            if again > 0 {
                broke = worker.exchange(&mut batch[..again], &mut waiting, sent);
            }
        }
        if let Some(why) = broke {
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

#[cfg(test)]
mod tests {
    use argh::FromArgs;

    use crate::bench::testkit::memcache_server;
    use crate::bench::{BenchArgs, run};

    fn flags(addr: &str, extra: &[&str]) -> BenchArgs {
        let mut args = vec!["--coordinator", addr, "--protocol", "memcache"];
        args.extend_from_slice(extra);
        BenchArgs::from_args(&["piazza-bench"], &args).unwrap()
    }

    #[test]
    fn incr_on_one_hot_key_counts_every_increment() {
        // The probe, one preload connection (one key), then two connections.
        let (addr, server) = memcache_server(4, false);
        let args = flags(&addr, &["--workload", "incr", "--keys", "1"]);
        let args = BenchArgs {
            connections: 2,
            pipeline: 4,
            ops: Some(101),
            ..args
        };
        let report = run(&args).unwrap();
        let store = server.join().unwrap();
        assert_eq!((report.ops, report.errors, report.misses), (101, 0, 0));
        assert_eq!(store["key:0"].0, b"101", "every incr applied once, from 0");
        assert!(report.json().contains("\"workload\":\"incr\""));
    }

    #[test]
    fn cas_counts_stores_and_conflicts_apart() {
        // One connection, one key, 4 in flight: each batch's four gets see the same
        // unique, so the first cas is stored and the other three conflict.
        let (addr, server) = memcache_server(3, false);
        let args = flags(
            &addr,
            &["--workload", "cas", "--keys", "1", "--connections", "1"],
        );
        let args = BenchArgs {
            pipeline: 4,
            ops: Some(40),
            ..args
        };
        let report = run(&args).unwrap();
        server.join().unwrap();
        assert_eq!((report.ops, report.errors, report.misses), (40, 0, 0));
        assert_eq!((report.cas_stored, report.cas_exists), (10, 30));
        assert!(
            report
                .human()
                .contains("cas: 10 stored  30 exists (conflicts)")
        );
        // Without pipelining nothing else writes the key: every cas is stored.
        let (addr, server) = memcache_server(3, false);
        let args = BenchArgs {
            ops: Some(25),
            ..flags(
                &addr,
                &["--workload", "cas", "--keys", "1", "--connections", "1"],
            )
        };
        let report = run(&args).unwrap();
        server.join().unwrap();
        assert_eq!((report.cas_stored, report.cas_exists), (25, 0));
    }

    #[test]
    fn multiget_counts_keys_and_set_ttl_sends_the_ttl() {
        let (addr, server) = memcache_server(3, false);
        let args = flags(
            &addr,
            &["--workload", "set-ttl", "--ttl", "60", "--multiget", "10"],
        );
        let args = BenchArgs {
            connections: 2,
            pipeline: 3,
            ops: Some(500),
            keys: 50,
            get_ratio: 0.5,
            ..args
        };
        let report = run(&args).unwrap();
        server.join().unwrap();
        assert_eq!((report.ops, report.errors), (500, 0));
        let sets = report.key_ops - 10 * (report.key_ops - 500) / 9;
        let gets = 500 - sets;
        assert!(gets > 150 && sets > 150, "{gets} gets, {sets} sets");
        assert_eq!(report.key_ops, gets * 10 + sets);
        assert!(report.misses > 0, "keys are not preloaded");
        assert!(report.json().contains("\"multiget\":10,"));
        assert!(report.json().contains("\"ttl\":60,"));
    }

    #[test]
    fn workloads_that_do_not_fit_are_usage_errors() {
        let usage = |extra: &[&str]| {
            let args = BenchArgs::from_args(&["piazza-bench"], extra).unwrap();
            match run(&args) {
                Err(crate::bench::BenchError::Usage(why)) => why.to_string(),
                other => panic!("{extra:?}: {other:?}"),
            }
        };
        assert!(usage(&["--workload", "cas", "--protocol", "resp"]).contains("resp"));
        assert!(usage(&["--workload", "incr", "--direct"]).contains("--direct"));
        assert!(usage(&["--workload", "incr", "--multiget", "4"]).contains("--multiget"));
        assert!(usage(&["--multiget", "4", "--verify"]).contains("--verify"));
        assert!(usage(&["--workload", "cas", "--verify"]).contains("--verify"));
        assert!(usage(&["--direct", "--protocol", "memcache"]).contains("--direct"));
        assert!(
            usage(&["--multiget-op", "--multiget", "4", "--protocol", "memcache"])
                .contains("--multiget-op")
        );
        assert!(usage(&["--multiget-op"]).contains("--multiget-op"));
        assert!(BenchArgs::from_args(&["piazza-bench"], &["--multiget", "101"]).is_err());
        assert!(BenchArgs::from_args(&["piazza-bench"], &["--ttl", "0"]).is_err());
        assert!(BenchArgs::from_args(&["piazza-bench"], &["--workload", "x"]).is_err());
        let defaults = BenchArgs::from_args(&["piazza-bench"], &[]).unwrap();
        assert_eq!(defaults.workload, crate::bench::Workload::GetSet);
        assert_eq!((defaults.ttl, defaults.multiget), (300, 1));
    }
}
