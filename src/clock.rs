//! Write versions: every stored entry carries one, and the newest version of a key wins
//! on every replica, whatever order writes arrive in.
//!
//! A version is `(tick << 4) | source`. The tick is a hybrid clock: at least the wall
//! clock in microseconds, at least one more than the last tick this clock handed out,
//! and (for [`VersionClock::next_above`]) above a version already stored for the key.
//! The source (4 bits) tells issuers apart: 0 is the coordinator, 1..=15 a slave
//! serving direct writes (its id modulo 15, plus 1). Two issuers therefore never hand out
//! the same version, so two different writes of one key can never tie.
//!
//! The coordinator's clock also survives restarts: versions are reserved in blocks, and
//! before one above the saved floor is handed out the floor is raised by
//! [`VERSION_BLOCK`] and saved, so a restarted coordinator never issues a version twice.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Low bits of a version that name its issuer.
pub const SOURCE_BITS: u32 = 4;
const SOURCE_MASK: u64 = (1 << SOURCE_BITS) - 1;
const TICK: u64 = 1 << SOURCE_BITS;

/// Versions reserved per save of the floor.
pub const VERSION_BLOCK: u64 = 1_000_000 << SOURCE_BITS;

/// The source of the coordinator's versions.
pub const COORDINATOR: u8 = 0;

/// The source a slave with id `id` uses for the versions of its direct writes.
pub fn slave_source(id: u32) -> u8 {
    (id % 15) as u8 + 1
}

fn wall_ticks() -> u64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    micros.saturating_mul(TICK)
}

/// Hands out strictly increasing versions for one source.
pub struct VersionClock {
    /// The last version handed out, source bits cleared.
    last: AtomicU64,
    source: AtomicU64,
    reserved: AtomicU64,
    reserving: Mutex<()>,
}

impl VersionClock {
    /// A clock for `source` whose versions start above `floor`.
    pub fn new(floor: u64, source: u8) -> VersionClock {
        VersionClock {
            last: AtomicU64::new(floor & !SOURCE_MASK),
            source: AtomicU64::new(u64::from(source) & SOURCE_MASK),
            reserved: AtomicU64::new(0),
            reserving: Mutex::new(()),
        }
    }

    /// Changes the source of the versions from now on (a slave learns its id when it
    /// registers).
    pub fn set_source(&self, source: u8) {
        self.source
            .store(u64::from(source) & SOURCE_MASK, Ordering::Relaxed);
    }

    /// The next version; `reserve` saves a new floor when the reserved block runs out.
    ///
    /// # Errors
    /// When the new floor cannot be saved: then no version is handed out.
    pub fn next(&self, reserve: impl FnOnce(u64) -> Result<(), String>) -> Result<u64, String> {
        self.next_above(0, reserve)
    }

    /// The next version, also above `stored` (a version the key already has).
    ///
    /// # Errors
    /// As [`VersionClock::next`].
    pub fn next_above(
        &self,
        stored: u64,
        reserve: impl FnOnce(u64) -> Result<(), String>,
    ) -> Result<u64, String> {
        let wall = wall_ticks();
        let above = (stored & !SOURCE_MASK).saturating_add(TICK);
        let mut tick = 0;
        // A compare-and-swap loop: contention is short (a few instructions).
        let _ = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                tick = last.saturating_add(TICK).max(wall).max(above) & !SOURCE_MASK;
                Some(tick)
            });
        let version = tick | self.source.load(Ordering::Relaxed);
        if version < self.reserved.load(Ordering::SeqCst) {
            return Ok(version);
        }
        let _one = crate::sync::lock(&self.reserving);
        if version >= self.reserved.load(Ordering::SeqCst) {
            let floor = version.saturating_add(VERSION_BLOCK);
            reserve(floor)?;
            self.reserved.store(floor, Ordering::SeqCst);
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(_: u64) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn strictly_increasing_and_tagged() {
        let clock = VersionClock::new(0, 3);
        let mut last = 0;
        for _ in 0..10_000 {
            let v = clock.next(free).unwrap();
            assert!(v > last);
            assert_eq!(v & SOURCE_MASK, 3);
            last = v;
        }
        assert!(
            last >= wall_ticks() - 60_000_000 * TICK,
            "near the wall clock"
        );
    }

    #[test]
    fn above_the_floor_and_the_stored_version() {
        let far = wall_ticks() * 2;
        let clock = VersionClock::new(far, COORDINATOR);
        assert!(clock.next(free).unwrap() > far);
        let stored = far * 2 + 7;
        let v = clock.next_above(stored, free).unwrap();
        assert!(v > stored);
        assert!(clock.next(free).unwrap() > v);
    }

    #[test]
    fn sources_never_tie() {
        let a = VersionClock::new(0, COORDINATOR);
        let b = VersionClock::new(0, slave_source(7));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5_000 {
            assert!(seen.insert(a.next(free).unwrap()));
            assert!(seen.insert(b.next(free).unwrap()));
        }
        for id in 0..100 {
            assert!((1..=15).contains(&slave_source(id)));
        }
    }

    #[test]
    fn reserves_before_handing_out() {
        let clock = VersionClock::new(0, COORDINATOR);
        let saved = std::cell::Cell::new(0u64);
        let v = clock
            .next(|floor| {
                saved.set(floor);
                Ok(())
            })
            .unwrap();
        assert!(saved.get() > v);
        // Within the block: no new save.
        let w = clock.next(|_| Err("must not save".into())).unwrap();
        assert!(w > v && w < saved.get());
        let failing = VersionClock::new(0, COORDINATOR);
        assert!(failing.next(|_| Err("disk full".into())).is_err());
    }
}
