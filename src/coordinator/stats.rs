//! What memcached's `stats` reports, shared by the text and binary memcached protocols:
//! the general statistics and the sub-commands clients call (`settings`, `items`,
//! `slabs`, `sizes`, `conns`), as name/value pairs.

use std::sync::atomic::Ordering;

use super::Coordinator;
use crate::request::unix_now;

/// The version the memcached protocols report: memcached's protocol level that Piazza
/// speaks, then Piazza's own version, so libmemcached's `major.minor.micro` parser reads
/// 1.6.0 and a person sees what is answering.
pub const MEMCACHED_VERSION: &str = concat!("1.6.0-piazza-", env!("CARGO_PKG_VERSION"));

/// The answer to `stats [section]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsReply {
    /// `STAT name value` lines, then `END`.
    Lines(Vec<(String, String)>),
    /// `stats reset`: the counters were cleared (`RESET`).
    Reset,
    /// A section this server does not know (memcached answers `ERROR`... for unknown
    /// sections, the text protocol writes nothing but `END`; see callers).
    Unknown,
}

fn pair(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}

impl Coordinator {
    /// The answer to `stats` with `section` ("" for the general statistics).
    pub(super) fn stats(&self, section: &str) -> StatsReply {
        match section {
            "" => StatsReply::Lines(self.general_stats()),
            "settings" => StatsReply::Lines(vec![
                pair("maxbytes", 0),
                pair("maxconns", self.server_limits.max_connections),
                pair("tcpport", 0),
                pair("evictions", "off"),
                pair("item_size_max", self.text_limits.max_value_bytes),
                pair("cas_enabled", "yes"),
                pair("flush_enabled", "yes"),
                pair("piazza_copies", 2),
            ]),
            "items" | "slabs" | "sizes" | "conns" | "extstore" => StatsReply::Lines(Vec::new()),
            "reset" => {
                self.router.counters.reset();
                StatsReply::Reset
            }
            _ => StatsReply::Unknown,
        }
    }

    fn general_stats(&self) -> Vec<(String, String)> {
        let counters = &self.router.counters;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (items, per_slave) = self.slave_stats();
        let mut lines = vec![
            pair("pid", std::process::id()),
            pair("uptime", self.started.elapsed().as_secs()),
            pair("time", unix_now()),
            pair("version", MEMCACHED_VERSION),
            pair("pointer_size", usize::BITS),
            pair("curr_connections", self.active.load(Ordering::Relaxed)),
            pair(
                "total_connections",
                self.total_connections.load(Ordering::Relaxed),
            ),
            pair("cmd_get", load(&counters.cmd_get)),
            pair("cmd_set", load(&counters.cmd_set)),
            pair("cmd_flush", load(&counters.cmd_flush)),
            pair("cmd_touch", load(&counters.cmd_touch)),
            pair("get_hits", load(&counters.get_hits)),
            pair("get_misses", load(&counters.get_misses)),
            pair("delete_hits", load(&counters.delete_hits)),
            pair("delete_misses", load(&counters.delete_misses)),
            pair("incr_hits", load(&counters.incr_hits)),
            pair("incr_misses", load(&counters.incr_misses)),
            pair("decr_hits", load(&counters.decr_hits)),
            pair("decr_misses", load(&counters.decr_misses)),
            pair("cas_hits", load(&counters.cas_hits)),
            pair("cas_misses", load(&counters.cas_misses)),
            pair("cas_badval", load(&counters.cas_badval)),
            pair("touch_hits", load(&counters.touch_hits)),
            pair("touch_misses", load(&counters.touch_misses)),
            pair("cmd_delete", load(&counters.cmd_delete)),
            pair("threads", self.server_limits.max_connections),
            pair("curr_items", items),
            pair("slaves", self.membership.len()),
        ];
        // Per slave on the ring: its share (per cent), live keys and tombstones in both
        // tables, expired values purged and entries collected since it started, and its
        // last compaction (Unix seconds, 0 none yet).
        lines.extend(per_slave);
        lines
    }
}
