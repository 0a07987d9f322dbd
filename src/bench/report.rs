//! A run's figures ([`Report`]) and their two forms: text for a person, one JSON line.

use super::args::{Protocol, Workload};

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Protocol spoken.
    pub protocol: Protocol,
    /// Address loaded.
    pub target: String,
    /// Connections asked for.
    pub connections: u64,
    /// Requests each connection kept in flight.
    pub pipeline: u64,
    /// Seconds the timed part took (from the common start to the last thread's end).
    pub seconds: f64,
    /// With --verify: gets that returned something else than what was last stored.
    pub wrong: u64,
    /// Operations that succeeded (hits, misses and sets).
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Gets that found nothing.
    pub misses: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// 99.9th percentile latency, µs.
    pub p999_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
    /// Share of gets asked for.
    pub get_ratio: f64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key space.
    pub keys: u64,
    /// What each operation was (`--workload`).
    pub workload: Workload,
    /// Keys each get asked for (`--multiget`).
    pub multiget: u64,
    /// A binary multi-key get was one MULTI_GET frame (`--multiget-op`).
    pub multiget_op: bool,
    /// Exptime of each set with `--workload set-ttl`, seconds.
    pub ttl: u32,
    /// Keys read or written by the successful operations (a get of N keys counts N).
    pub key_ops: u64,
    /// `--workload cas`: cas requests stored.
    pub cas_stored: u64,
    /// `--workload cas`: cas requests answered `EXISTS` (another write came between the
    /// gets and the cas).
    pub cas_exists: u64,
    /// Why each connection that gave up early did so (`bench-<i>: reason`); empty when
    /// every connection ran to the end.
    pub stopped: Vec<String>,
}

impl Report {
    /// `n` per second of the timed part (0 for a run of no length).
    fn per_sec(&self, n: u64) -> f64 {
        if self.seconds > 0.0 {
            n as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.per_sec(self.ops)
    }

    /// Keys read or written per second (with `--multiget N`, N per get).
    pub fn keys_per_sec(&self) -> f64 {
        self.per_sec(self.key_ops)
    }

    /// What the operations were, for the first line: `90% gets`, `90% gets of 10 keys,
    /// sets with a 300 s ttl`, `incr`, `gets then cas`.
    fn mix(&self) -> String {
        let gets = match self.multiget {
            1 => format!("{:.0}% gets", self.get_ratio * 100.0),
            n if self.multiget_op => format!(
                "{:.0}% gets of {n} keys (MULTI_GET)",
                self.get_ratio * 100.0
            ),
            n => format!("{:.0}% gets of {n} keys", self.get_ratio * 100.0),
        };
        match self.workload {
            Workload::GetSet => gets,
            Workload::SetTtl => format!("{gets}, sets with a {} s ttl", self.ttl),
            Workload::Incr => "incr".into(),
            Workload::Cas => "gets then cas".into(),
        }
    }

    /// The report as text for a person: three lines; with `--multiget` one more for the
    /// keys, with `--workload cas` one more for the outcomes; then one naming the
    /// connections that gave up, if any.
    pub fn human(&self) -> String {
        let Report {
            protocol,
            target,
            connections,
            pipeline,
            seconds,
            keys,
            value_size,
            ops,
            errors,
            misses,
            wrong,
            p50_us,
            p99_us,
            p999_us,
            max_us,
            ..
        } = self;
        let (mix, ops_per_sec) = (self.mix(), self.ops_per_sec());
        let mut text = format!(
            "piazza-bench: {protocol} protocol, {target}, {connections} connections, pipeline {pipeline}, {seconds:.1} s, {keys} keys, {value_size}-byte values, {mix}\n\
             ops: {ops} ({ops_per_sec:.0} ops/s)  errors: {errors}  misses: {misses}  wrong: {wrong}\n\
             latency us: p50 {p50_us}  p99 {p99_us}  p99.9 {p999_us}  max {max_us}\n"
        );
        if self.multiget > 1 {
            text.push_str(&format!(
                "keys: {} ({:.0} keys/s, {:.0} requests/s)\n",
                self.key_ops,
                self.keys_per_sec(),
                self.ops_per_sec()
            ));
        }
        if self.workload == Workload::Cas {
            text.push_str(&format!(
                "cas: {} stored  {} exists (conflicts)  {} not found\n",
                self.cas_stored, self.cas_exists, self.misses
            ));
        }
        if let Some(first) = self.stopped.first() {
            text.push_str(&format!(
                "stopped early: {} of {} connections ({first})\n",
                self.stopped.len(),
                self.connections
            ));
        }
        text
    }

    /// The figures as one JSON object on one line (no newline). Every value is a number
    /// except `protocol` and `workload`, whose texts never need escaping.
    pub fn json(&self) -> String {
        format!(
            "{{\"protocol\":\"{}\",\"connections\":{},\"pipeline\":{},\"seconds\":{:.3},\"ops\":{},\"ops_per_sec\":{:.1},\"errors\":{},\"misses\":{},\"wrong\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"get_ratio\":{},\"value_size\":{},\"keys\":{},\"workload\":\"{}\",\"multiget\":{},\"ttl\":{},\"key_ops\":{},\"keys_per_sec\":{:.1},\"cas_stored\":{},\"cas_exists\":{}}}",
            self.protocol,
            self.connections,
            self.pipeline,
            self.seconds,
            self.ops,
            self.ops_per_sec(),
            self.errors,
            self.misses,
            self.wrong,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.get_ratio,
            self.value_size,
            self.keys,
            self.workload,
            self.multiget,
            self.ttl,
            self.key_ops,
            self.keys_per_sec(),
            self.cas_stored,
            self.cas_exists
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            protocol: Protocol::Memcache,
            target: "127.0.0.1:1".into(),
            connections: 8,
            pipeline: 1,
            seconds: 2.0,
            ops: 1000,
            errors: 1,
            misses: 2,
            wrong: 0,
            p50_us: 80,
            p99_us: 400,
            p999_us: 900,
            max_us: 2100,
            get_ratio: 0.9,
            value_size: 100,
            keys: 10,
            workload: Workload::GetSet,
            multiget: 1,
            multiget_op: false,
            ttl: 300,
            key_ops: 1000,
            cas_stored: 0,
            cas_exists: 0,
            stopped: Vec::new(),
        }
    }

    /// Splits a flat JSON object whose values hold no commas, quotes or nesting.
    fn flat_json(line: &str) -> Vec<(String, String)> {
        let body = line
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .expect("an object");
        body.split(',')
            .map(|pair| {
                let (key, value) = pair.split_once(':').expect("key:value");
                let key = key
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .expect("a quoted key");
                (key.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn json_line_holds_every_figure_in_order() {
        let json = report().json();
        assert!(!json.contains('\n'));
        let pairs = flat_json(&json);
        let expected = [
            ("protocol", "\"memcache\""),
            ("connections", "8"),
            ("pipeline", "1"),
            ("seconds", "2.000"),
            ("ops", "1000"),
            ("ops_per_sec", "500.0"),
            ("errors", "1"),
            ("misses", "2"),
            ("wrong", "0"),
            ("p50_us", "80"),
            ("p99_us", "400"),
            ("p999_us", "900"),
            ("max_us", "2100"),
            ("get_ratio", "0.9"),
            ("value_size", "100"),
            ("keys", "10"),
            ("workload", "\"get-set\""),
            ("multiget", "1"),
            ("ttl", "300"),
            ("key_ops", "1000"),
            ("keys_per_sec", "500.0"),
            ("cas_stored", "0"),
            ("cas_exists", "0"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
        for (key, value) in pairs
            .iter()
            .filter(|(key, _)| key != "protocol" && key != "workload")
        {
            assert!(
                value.parse::<f64>().is_ok(),
                "{key}: {value} is not a number"
            );
        }
    }

    #[test]
    fn json_of_a_zero_length_run_has_no_nan() {
        let mut empty = report();
        empty.seconds = 0.0;
        empty.get_ratio = 1.0;
        let json = empty.json();
        assert!(json.contains("\"ops_per_sec\":0.0"), "{json}");
        assert!(json.contains("\"get_ratio\":1,"), "{json}");
        assert!(!json.contains("NaN") && !json.contains("inf"));
    }

    #[test]
    fn human_report_has_the_three_lines() {
        let text = report().human();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "piazza-bench: memcache protocol, 127.0.0.1:1, 8 connections, pipeline 1, 2.0 s, 10 keys, 100-byte values, 90% gets",
                "ops: 1000 (500 ops/s)  errors: 1  misses: 2  wrong: 0",
                "latency us: p50 80  p99 400  p99.9 900  max 2100",
            ]
        );
        let mut stopped = report();
        stopped.stopped.push("bench-3: cannot connect".into());
        assert!(
            stopped
                .human()
                .ends_with("stopped early: 1 of 8 connections (bench-3: cannot connect)\n")
        );
    }

    #[test]
    fn human_report_names_the_workload_and_adds_keys_and_cas_lines() {
        let mut multi = report();
        multi.multiget = 10;
        multi.key_ops = 10_000;
        multi.workload = Workload::SetTtl;
        let text = multi.human();
        assert!(
            text.contains("100-byte values, 90% gets of 10 keys, sets with a 300 s ttl\n"),
            "{text}"
        );
        assert!(
            text.contains("keys: 10000 (5000 keys/s, 500 requests/s)\n"),
            "{text}"
        );
        assert!(multi.json().contains("\"multiget\":10,"));
        assert!(multi.json().contains("\"keys_per_sec\":5000.0,"));
        assert!(multi.json().contains("\"workload\":\"set-ttl\""));
        let mut cas = report();
        cas.workload = Workload::Cas;
        cas.cas_stored = 700;
        cas.cas_exists = 298;
        let text = cas.human();
        assert!(text.contains("100-byte values, gets then cas\n"), "{text}");
        assert!(
            text.contains("cas: 700 stored  298 exists (conflicts)  2 not found\n"),
            "{text}"
        );
        assert!(
            cas.json()
                .ends_with("\"cas_stored\":700,\"cas_exists\":298}")
        );
        let mut incr = report();
        incr.workload = Workload::Incr;
        assert_eq!(incr.human().lines().count(), 3);
        assert!(incr.human().contains("values, incr\n"));
    }
}
