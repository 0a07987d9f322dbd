//! What the tables hold and what a write did: [`Entry`] at a [`Version`] in a [`Table`],
//! [`FlushMarker`]s (`flush_all`), [`Applied`], [`TableCounts`].

/// A write's version: assigned by the coordinator, strictly increasing across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub u64);

/// Which of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Keys this slave is primary for.
    Own,
    /// The copy of the predecessor's `own`.
    Previous,
}

impl Table {
    /// The table's name as the original design spelled it.
    pub fn name(self) -> &'static str {
        match self {
            Table::Own => "own",
            Table::Previous => "previous",
        }
    }
}

/// One key's state in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The version of the write that produced this state.
    pub version: Version,
    /// memcached flags, stored with the value and returned as given.
    pub flags: u32,
    /// When the value expires, in Unix seconds; 0 never.
    pub expires: u64,
    /// The value, or `None` for a tombstone left by a delete.
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// A value that never expires.
    pub fn value(version: Version, flags: u32, value: Vec<u8>) -> Entry {
        Entry {
            version,
            flags,
            expires: 0,
            value: Some(value),
        }
    }

    /// A tombstone.
    pub fn tombstone(version: Version) -> Entry {
        Entry {
            version,
            flags: 0,
            expires: 0,
            value: None,
        }
    }
}

/// `flush_all`: every entry whose version is below `threshold` is gone once the wall
/// clock reaches `at` (Unix microseconds; 0 at once). Versions are issued from a clock
/// that follows wall-clock microseconds, so "stored before the flush" is "version below
/// the threshold".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushMarker {
    /// Entries with a version below this are flushed.
    pub threshold: u64,
    /// From when (Unix microseconds; 0: from the start).
    pub at: u64,
}

/// Keeps of `markers` only what still matters at `now`: the one in effect with the highest
/// threshold (as an immediate one), and those waiting for their time with a higher one.
pub fn prune_markers(markers: &mut Vec<FlushMarker>, now: u64) {
    let floor = markers
        .iter()
        .filter(|m| m.at <= now)
        .map(|m| m.threshold)
        .max()
        .unwrap_or(0);
    markers.retain(|m| m.at > now && m.threshold > floor);
    if floor > 0 {
        markers.push(FlushMarker {
            threshold: floor,
            at: 0,
        });
    }
    markers.sort_by_key(|m| (m.at, m.threshold));
    markers.dedup();
}

/// The current Unix time in microseconds.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The write was newer and is now the key's state. `was_live` says whether a value
    /// (not a tombstone, not nothing) was there before.
    Applied {
        /// A live value was replaced or deleted.
        was_live: bool,
    },
    /// The table already held this version or a newer one; nothing changed.
    Stale {
        /// The version the table holds.
        current: Version,
    },
}

/// Counts of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableCounts {
    /// Keys with a live value.
    pub live: u64,
    /// Keys with a tombstone.
    pub tombstones: u64,
}
