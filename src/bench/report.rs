//! A run's figures ([`Report`]) and their two forms: text for a person, one JSON line.

use super::args::Protocol;

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
    /// Why each connection that gave up early did so (`bench-<i>: reason`); empty when
    /// every connection ran to the end.
    pub stopped: Vec<String>,
}

impl Report {
    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The report as text for a person: three lines, and a fourth naming the
    /// connections that gave up, if any.
    pub fn human(&self) -> String {
        let mut text = format!(
            "piazza-bench: {} protocol, {}, {} connections, pipeline {}, {:.1} s, {} keys, {}-byte values, {:.0}% gets\n\
             ops: {} ({:.0} ops/s)  errors: {}  misses: {}  wrong: {}\n\
             latency us: p50 {}  p99 {}  p99.9 {}  max {}\n",
            self.protocol,
            self.target,
            self.connections,
            self.pipeline,
            self.seconds,
            self.keys,
            self.value_size,
            self.get_ratio * 100.0,
            self.ops,
            self.ops_per_sec(),
            self.errors,
            self.misses,
            self.wrong,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        );
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
    /// except `protocol`, whose text never needs escaping.
    pub fn json(&self) -> String {
        format!(
            "{{\"protocol\":\"{}\",\"connections\":{},\"pipeline\":{},\"seconds\":{:.3},\"ops\":{},\"ops_per_sec\":{:.1},\"errors\":{},\"misses\":{},\"wrong\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"get_ratio\":{},\"value_size\":{},\"keys\":{}}}",
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
            self.keys
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
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
        for (key, value) in &pairs[1..] {
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
}
