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
//! The coordinator's clock also survives restarts: no version above the saved floor (the
//! `ring` file's `version_floor`) is ever handed out, so a restarted coordinator, whose
//! clock starts above that floor, never issues a version twice. [`VersionFloor`] keeps
//! the floor ahead of need: once less than half a [`VERSION_BLOCK`] is left, the first
//! request thread to notice asks for the floor to be raised a block above its version,
//! and the coordinator's `ring-save` thread saves it in the background. A request thread
//! waits for the disk only if it runs past the saved floor, that is if half a block of
//! versions (5 s of wall clock) goes by before the save lands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Low bits of a version that name its issuer.
pub const SOURCE_BITS: u32 = 4;
const SOURCE_MASK: u64 = (1 << SOURCE_BITS) - 1;
const TICK: u64 = 1 << SOURCE_BITS;

/// How far above the version that asks for it the saved floor is raised: 10 s of ticks.
///
/// Why 10 s: a save (write, fsync, rename, fsync of the directory) is asked for when half
/// a block is left, so the saver has 5 s to land it before any request thread would wait,
/// which covers a slow or busy disk (with a 1 s block it had 0.5 s); and the `ring` file
/// is written once every 5 s under steady writes. The price: a coordinator restarted
/// within 10 s of its last save starts its clock at the saved floor, up to 10 s ahead of
/// the wall clock, until the wall clock catches up. Versions only need to grow, so that
/// is harmless, except that a delayed `flush_all` (whose threshold comes from the wall
/// clock) given in that window may spare writes made shortly before its time comes.
pub const VERSION_BLOCK: u64 = 10_000_000 << SOURCE_BITS;

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
}

impl VersionClock {
    /// A clock for `source` whose versions start above `floor`.
    pub fn new(floor: u64, source: u8) -> VersionClock {
        VersionClock {
            last: AtomicU64::new(floor & !SOURCE_MASK),
            source: AtomicU64::new(u64::from(source) & SOURCE_MASK),
        }
    }

    /// Changes the source of the versions from now on (a slave learns its id when it
    /// registers).
    pub fn set_source(&self, source: u8) {
        self.source
            .store(u64::from(source) & SOURCE_MASK, Ordering::Relaxed);
    }

    /// The next version. `reserve(floor)` is called with every version before it is
    /// handed out and returns once the saved floor is at least `floor` (the coordinator
    /// asks its [`VersionFloor`]; a clock that saves nothing calls
    /// [`VersionClock::next_above_unsaved`]).
    ///
    /// # Errors
    /// When `reserve` fails (its error, as it is): then no version is handed out.
    pub fn next<E>(&self, reserve: impl FnOnce(u64) -> Result<(), E>) -> Result<u64, E> {
        self.next_above(0, reserve)
    }

    /// The next version, also above `stored` (a version the key already has).
    ///
    /// # Errors
    /// As [`VersionClock::next`].
    pub fn next_above<E>(
        &self,
        stored: u64,
        reserve: impl FnOnce(u64) -> Result<(), E>,
    ) -> Result<u64, E> {
        let version = self.next_above_unsaved(stored);
        reserve(version)?;
        Ok(version)
    }

    /// The next version, also above `stored`, from a clock whose versions need no saved
    /// floor (a slave's, for direct writes).
    pub fn next_above_unsaved(&self, stored: u64) -> u64 {
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
        tick | self.source.load(Ordering::Relaxed)
    }
}

/// What must happen before a version is handed out (see [`VersionFloor::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Nothing: the version is below the saved floor, and a raise is not due or already
    /// asked for.
    Ready,
    /// The version is below the saved floor but less than half a block is left: ask the
    /// saver for a save (the floor to save is already wished for), and do not wait.
    Ask,
    /// The version is above the saved floor: ask the saver, and wait for its save.
    Wait,
}

/// The coordinator's saved version floor and the floor its next save should write.
/// Lock-free, since every write of the coordinator checks it.
///
/// Invariant: no version above [`VersionFloor::saved`] may be handed out, and it grows only
/// once a `ring` file holding the new floor is on disk ([`VersionFloor::record_saved`]).
pub struct VersionFloor {
    /// The floor on disk.
    saved: AtomicU64,
    /// The floor the next save should write.
    wished: AtomicU64,
}

impl VersionFloor {
    /// A floor restored as `saved`. The first save raises it a block above the later of
    /// `saved` and the wall clock, so the first versions after a start need not wait if
    /// that save is asked for at once.
    pub fn new(saved: u64) -> VersionFloor {
        VersionFloor {
            saved: AtomicU64::new(saved),
            wished: AtomicU64::new(saved.max(wall_ticks()).saturating_add(VERSION_BLOCK)),
        }
    }

    /// The floor on disk: no version above it may be handed out.
    pub fn saved(&self) -> u64 {
        self.saved.load(Ordering::SeqCst)
    }

    /// The floor the next save should write (never below the saved one).
    pub fn to_save(&self) -> u64 {
        self.wished
            .load(Ordering::SeqCst)
            .max(self.saved.load(Ordering::SeqCst))
    }

    /// Decides what must happen before `version` is handed out, and wishes for a floor a
    /// block above it once less than half a block is left. A raise is under way when the
    /// wish is at least half a block above the saved floor (every ask wishes for that
    /// much, since it comes from a version at most half a block below the floor); only
    /// a call that finds none under way gets [`Reserve::Ask`], so one save is asked for
    /// per half block. (A wish left a little above the floor by versions handed out
    /// while the last save was written is not a raise under way.)
    pub fn check(&self, version: u64) -> Reserve {
        let saved = self.saved.load(Ordering::SeqCst);
        if version.saturating_add(VERSION_BLOCK / 2) < saved {
            return Reserve::Ready;
        }
        let before = self
            .wished
            .fetch_max(version.saturating_add(VERSION_BLOCK), Ordering::SeqCst);
        if version > saved {
            Reserve::Wait
        } else if before >= saved.saturating_add(VERSION_BLOCK / 2) {
            Reserve::Ready
        } else {
            Reserve::Ask
        }
    }

    /// Records that a `ring` file holding `floor` is on disk.
    pub fn record_saved(&self, floor: u64) {
        self.saved.fetch_max(floor, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(_: u64) -> Result<(), std::convert::Infallible> {
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
    fn every_version_is_reserved_before_it_is_handed_out() {
        let clock = VersionClock::new(0, COORDINATOR);
        let asked = std::cell::Cell::new(0u64);
        let v = clock
            .next(|floor| {
                asked.set(floor);
                free(floor)
            })
            .unwrap();
        assert_eq!(asked.get(), v, "reserve sees the version itself");
        let failing = VersionClock::new(0, COORDINATOR);
        assert_eq!(failing.next(|_| Err("disk full")), Err("disk full"));
    }

    #[test]
    fn a_floor_far_ahead_needs_nothing() {
        let floor = VersionFloor::new(1_000 * VERSION_BLOCK);
        assert_eq!(floor.check(1), Reserve::Ready);
        assert_eq!(
            floor.check(1_000 * VERSION_BLOCK - VERSION_BLOCK),
            Reserve::Ready
        );
    }

    #[test]
    fn half_a_block_left_asks_once_and_does_not_wait() {
        let saved = 1_000 * VERSION_BLOCK;
        let floor = VersionFloor {
            saved: AtomicU64::new(saved),
            wished: AtomicU64::new(saved),
        };
        let low = saved - VERSION_BLOCK / 2 + 1;
        assert_eq!(floor.check(low), Reserve::Ask);
        assert_eq!(floor.to_save(), low + VERSION_BLOCK);
        // Later versions, still under the saved floor, find the wish high enough.
        for v in [low + 1, low + 1_000, saved - 1, saved] {
            assert_eq!(floor.check(v), Reserve::Ready, "version {v}");
        }
        assert_eq!(floor.to_save(), saved + VERSION_BLOCK, "the wish follows");
        // The save lands: plenty left again.
        floor.record_saved(floor.to_save());
        assert_eq!(floor.check(saved + 1), Reserve::Ready);
        // Half a block later, the next raise is asked for once.
        let next_low = floor.saved() - VERSION_BLOCK / 2;
        assert_eq!(floor.check(next_low), Reserve::Ask);
        assert_eq!(floor.check(next_low + 1), Reserve::Ready);
    }

    /// Versions handed out while a save is being written leave the wish a little above
    /// the floor that save records; that must not pass for a raise under way.
    #[test]
    fn versions_during_a_save_do_not_hide_the_next_raise() {
        let saved = 1_000 * VERSION_BLOCK;
        let floor = VersionFloor {
            saved: AtomicU64::new(saved),
            wished: AtomicU64::new(saved),
        };
        let low = saved - VERSION_BLOCK / 2;
        assert_eq!(floor.check(low), Reserve::Ask);
        // The saver takes its snapshot; versions go on while it writes.
        let snapshot = floor.to_save();
        for v in (low + 1..low + 1_000_000).step_by(1_000) {
            assert_eq!(floor.check(v), Reserve::Ready);
        }
        floor.record_saved(snapshot);
        assert!(floor.to_save() > floor.saved(), "a leftover wish");
        // Half a block below the new floor, the next raise is asked for.
        let next_low = floor.saved() - VERSION_BLOCK / 2;
        assert_eq!(floor.check(next_low - 1), Reserve::Ready);
        assert_eq!(floor.check(next_low), Reserve::Ask);
        assert_eq!(floor.check(next_low + 1), Reserve::Ready);
    }

    #[test]
    fn running_past_the_saved_floor_waits() {
        let floor = VersionFloor {
            saved: AtomicU64::new(5_000),
            wished: AtomicU64::new(5_000),
        };
        assert_eq!(floor.check(5_001), Reserve::Wait);
        assert_eq!(
            floor.check(9_000),
            Reserve::Wait,
            "every caller past it waits"
        );
        assert!(floor.to_save() >= 9_000 + VERSION_BLOCK);
        floor.record_saved(floor.to_save());
        assert_eq!(floor.check(9_000), Reserve::Ready);
        // A smaller save that lands late never lowers the floor.
        floor.record_saved(5_000);
        assert_eq!(floor.saved(), 9_000 + VERSION_BLOCK);
    }

    #[test]
    fn a_new_floor_wishes_a_block_above_the_wall_clock() {
        let restored = VersionFloor::new(0);
        assert_eq!(restored.saved(), 0);
        assert!(restored.to_save() >= wall_ticks() + VERSION_BLOCK - 60_000_000 * TICK);
        let ahead = VersionFloor::new(wall_ticks() * 2);
        assert_eq!(ahead.to_save(), ahead.saved() + VERSION_BLOCK);
    }

    /// The coordinator's use, with the saver run inline: versions never pass the floor
    /// on disk, and under a steady stream a save is asked for about once per half block.
    #[test]
    fn a_clock_never_hands_out_a_version_above_the_saved_floor() {
        let floor = VersionFloor::new(0);
        let clock = VersionClock::new(0, COORDINATOR);
        let (mut asks, mut waits) = (0, 0);
        for _ in 0..100_000 {
            let v = clock
                .next(|version| {
                    match floor.check(version) {
                        Reserve::Ready => {}
                        Reserve::Ask => {
                            asks += 1;
                            floor.record_saved(floor.to_save());
                        }
                        Reserve::Wait => {
                            waits += 1;
                            floor.record_saved(floor.to_save());
                        }
                    }
                    free(version)
                })
                .unwrap();
            assert!(v <= floor.saved());
        }
        // The first version finds nothing saved yet; after that, no wait.
        assert_eq!(waits, 1);
        assert!(
            asks <= 1,
            "100 000 versions are far less than half a block: {asks}"
        );
    }

    /// A clock far faster than the wall clock (stored versions from the future, say)
    /// crosses many blocks: each crossing asks once and, as the save lands a little later
    /// (here 0.1 block of versions later), nobody waits.
    #[test]
    fn a_fast_clock_asks_once_per_crossing_and_never_waits() {
        let floor = VersionFloor::new(0);
        floor.record_saved(floor.to_save());
        let clock = VersionClock::new(0, COORDINATOR);
        let (mut asks, mut pending) = (0u64, None::<u64>);
        let start = clock.next_above_unsaved(0);
        let step = VERSION_BLOCK / 1_000;
        for i in 1..=20_000u64 {
            clock
                .next_above(start + i * step, |version| {
                    if let Some(at) = pending
                        && i >= at + 100
                    {
                        floor.record_saved(floor.to_save());
                        pending = None;
                    }
                    match floor.check(version) {
                        Reserve::Ready => Ok(()),
                        Reserve::Ask => {
                            asks += 1;
                            pending = Some(i);
                            Ok(())
                        }
                        Reserve::Wait => Err(format!("waited at version {version}")),
                    }
                })
                .unwrap();
        }
        // 20 blocks: a save lands 0.1 block after its ask with the floor a block ahead,
        // and the next is asked for half a block later, so one ask per 0.6 block.
        assert!((30..=36).contains(&asks), "{asks} asks");
    }
}
