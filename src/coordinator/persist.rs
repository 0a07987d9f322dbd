//! The coordinator's state on disk: every slave ever registered (id, address, whether
//! it was on the ring, and the slots it owned), the next id, the version floor, the
//! `flush_all` markers in force and the collection horizon (the highest ever sent), in
//! the text file `ring` in `--data-dir`. A restarted coordinator gives every slave its
//! old id and slots back, waits for the ones that were on the ring, and never issues a
//! version it may have issued before.
//!
//! Format (one record per line, fields separated by one space):
//!
//! ```text
//! piazza-ring 2
//! next_id 3
//! version_floor 1795514671000000
//! flush 28728234736000000 0
//! collected 28728234736000000
//! slave 1 127.0.0.1:7410 on 0-511,1000
//! slave 2 127.0.0.1:7411 off -
//! held 1 2 0-511,1000
//! held 2 1 512-999,1001-1023
//! ```
//!
//! (slots as ranges of slot numbers, `-` for none; version 1 files, from before slots,
//! held one token per slave and are refused with a message).
//!
//! `held PRIMARY REPLICA SLOTS` lines say where the data of those slots is (its primary
//! and replica, `-` for none) as of the last data move that **finished**: copies made,
//! tables sorted, old copies dropped. The `slave` lines say where the ring routes, which
//! changes before a move starts (a slave declared dead is off the ring at once). A
//! coordinator restarted in the middle of a move finds the data where the `held` lines
//! say and takes the move up from there; without `held` lines (a file from before them)
//! it takes the data to be where the ring places it.
//!
//! Writes go to `ring.tmp`, which is synced, renamed over `ring`, and the directory
//! synced: a crash leaves the old file or the new one, never a mix.
//!
//! Only the coordinator's `ring-save` thread writes the file ([`Saver::run`]); other
//! threads ask for a save ([`Saver::ask`]) and, where something depends on the file being
//! on disk, wait for it ([`Saver::wait`]) without doing the I/O themselves. Asks made
//! while a save is under way are served together by the next one, which writes the state
//! as it is when it starts.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use log::error;

use crate::ring::SlaveId;
use crate::store::FlushMarker;
use crate::wal::{WalError, sync_dir};

/// Why the `ring` file could not be read or saved. Cloned to every thread that waited
/// for a failed save, hence the `Arc`s around the I/O errors.
#[derive(Debug, Clone)]
pub enum PersistError {
    /// The file exists but could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Arc<io::Error>,
    },
    /// A line of the file is not in its format.
    Damaged {
        /// The file.
        path: PathBuf,
        /// The line that could not be read.
        line: String,
    },
    /// A version 1 file, from before slots (one token per slave): refused.
    BeforeSlots {
        /// The file.
        path: PathBuf,
    },
    /// Writing, syncing or renaming the new file failed.
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Arc<io::Error>,
    },
    /// Syncing the directory after the rename failed.
    SyncDir(Arc<WalError>),
    /// The save a thread waited for was not on disk in time.
    NotSaved {
        /// The file.
        path: PathBuf,
        /// How long it waited.
        timeout: Duration,
    },
    /// A version was wanted above the version floor on disk, and the save that was to
    /// raise the floor did not raise it far enough.
    AboveFloor {
        /// The version wanted.
        version: u64,
        /// The floor on disk.
        floor: u64,
    },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            PersistError::Damaged { path, line } => write!(
                f,
                "{} is damaged at line '{line}': fix or remove it (the coordinator then forgets the ring)",
                path.display()
            ),
            PersistError::BeforeSlots { path } => write!(
                f,
                "{} is a ring file from before slots ('piazza-ring 1', one token per slave): \
                 this version cannot place keys that way; start the coordinator with an empty \
                 --data-dir and the slaves with empty data dirs",
                path.display()
            ),
            PersistError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            PersistError::SyncDir(e) => write!(f, "{e}"),
            PersistError::NotSaved { path, timeout } => write!(
                f,
                "{} was not saved within {} ms (is the disk stalled?)",
                path.display(),
                timeout.as_millis()
            ),
            PersistError::AboveFloor { version, floor } => {
                write!(f, "version {version} is above the saved floor {floor}")
            }
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PersistError::Read { source, .. } | PersistError::Write { source, .. } => {
                Some(source.as_ref())
            }
            PersistError::SyncDir(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// One slave as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSlave {
    /// Its id.
    pub id: SlaveId,
    /// The address it registered from.
    pub addr: String,
    /// The slots it owned.
    pub slots: Vec<usize>,
    /// True when it was on the ring (or awaited after a restart): a restarted
    /// coordinator waits for it before serving.
    pub on_ring: bool,
}

/// Where the data of some slots is, as the file keeps it (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedHolders {
    /// The slave holding them in `own`.
    pub primary: SlaveId,
    /// The slave holding them in `previous`, if any.
    pub replica: Option<SlaveId>,
    /// The slots.
    pub slots: Vec<usize>,
}

/// What is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// The id the next new address gets.
    pub next_id: u32,
    /// No version at or below this one may be issued again.
    pub version_floor: u64,
    /// Every slave ever registered.
    pub slaves: Vec<SavedSlave>,
    /// `flush_all` markers still in force: threshold version, from when (Unix µs).
    pub flushes: Vec<FlushMarker>,
    /// The highest collection horizon ever sent to a slave (0: none; the line is then
    /// left out).
    pub collected: u64,
    /// Where the data is as of the last finished move (empty: not known, a file from
    /// before `held` lines, or no move finished yet).
    pub held: Vec<SavedHolders>,
}

/// The `ring` file of a data dir.
pub struct RingFile {
    path: PathBuf,
}

impl RingFile {
    /// The file in `dir`.
    pub fn new(dir: &Path) -> RingFile {
        RingFile {
            path: dir.join("ring"),
        }
    }

    /// Reads the saved state; `Ok(None)` when there is none yet.
    ///
    /// # Errors
    /// When it cannot be read, or a line of it is not in its format (naming the line).
    pub fn load(&self) -> Result<Option<Saved>, PersistError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(PersistError::Read {
                    path: self.path.clone(),
                    source: Arc::new(e),
                });
            }
        };
        parse(&text, &self.path).map(Some)
    }

    /// Writes the state atomically.
    ///
    /// # Errors
    /// When the new file cannot be written, synced or renamed, or the directory synced.
    pub fn save(&self, saved: &Saved) -> Result<(), PersistError> {
        let tmp = self.path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(render(saved).as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| PersistError::Write {
            path: self.path.clone(),
            source: Arc::new(e),
        })?;
        match self.path.parent() {
            Some(dir) => sync_dir(dir).map_err(|e| PersistError::SyncDir(Arc::new(e))),
            None => Ok(()),
        }
    }
}

/// How long a failed save waits before it is tried again (unless asked sooner).
const RETRY: Duration = Duration::from_secs(1);

/// The saves of one `ring` file: asked for by any thread, made by one (see the module
/// doc). Saves are numbered; a wait names the number its ask returned.
pub struct Saver {
    file: RingFile,
    state: Mutex<SaverState>,
    changed: Condvar,
}

#[derive(Default)]
struct SaverState {
    /// The number of the last save asked for.
    asked: u64,
    /// Every save up to this number is on disk.
    saved: u64,
    /// The last save that failed (its number, and why): waits up to it fail.
    failed: Option<(u64, PersistError)>,
    /// Set by [`Saver::stop`]: the saver makes the saves asked for, then returns.
    stopping: bool,
}

impl Saver {
    /// The saver of `file`.
    pub fn new(file: RingFile) -> Saver {
        Saver {
            file,
            state: Mutex::new(SaverState::default()),
            changed: Condvar::new(),
        }
    }

    /// Asks for a save of the state as it is from now on; returns its number.
    pub fn ask(&self) -> u64 {
        let mut state = crate::sync::lock(&self.state);
        state.asked += 1;
        self.changed.notify_all();
        state.asked
    }

    /// Waits until save `number` (or a later one) is on disk.
    ///
    /// # Errors
    /// When that save failed, or is not done within `timeout`.
    pub fn wait(&self, number: u64, timeout: Duration) -> Result<(), PersistError> {
        let deadline = Instant::now() + timeout;
        let mut state = crate::sync::lock(&self.state);
        loop {
            if state.saved >= number {
                return Ok(());
            }
            if let Some((failed, why)) = &state.failed
                && *failed >= number
            {
                return Err(why.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PersistError::NotSaved {
                    path: self.file.path.clone(),
                    timeout,
                });
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The `ring-save` thread's loop: for every batch of asks, writes `snapshot()` and then
    /// tells `saved` what is on disk (before any waiter is woken). A failed save is logged,
    /// fails the waits it was for, and is tried again after `RETRY` or at the next ask.
    /// Returns after [`Saver::stop`], once every save asked for before it was tried.
    pub fn run(&self, snapshot: impl Fn() -> Saved, saved: impl Fn(&Saved)) {
        loop {
            let number = {
                let mut state = crate::sync::lock(&self.state);
                loop {
                    let tried = state
                        .failed
                        .as_ref()
                        .map_or(state.saved, |(failed, _)| state.saved.max(*failed));
                    if state.asked > tried {
                        break;
                    }
                    let retry = state.saved < tried;
                    if state.stopping {
                        return;
                    }
                    if retry {
                        let (next, timeout) = self
                            .changed
                            .wait_timeout(state, RETRY)
                            .unwrap_or_else(|p| p.into_inner());
                        state = next;
                        if timeout.timed_out() && state.asked <= tried {
                            state.asked += 1;
                        }
                    } else {
                        state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                    }
                }
                state.asked
            };
            let snapshot = snapshot();
            let result = self.file.save(&snapshot);
            if result.is_ok() {
                saved(&snapshot);
            }
            let mut state = crate::sync::lock(&self.state);
            match result {
                Ok(()) => state.saved = state.saved.max(number),
                Err(why) => {
                    error!("{why}");
                    state.failed = Some((number, why));
                }
            }
            self.changed.notify_all();
        }
    }

    /// Makes [`Saver::run`] return once the saves asked for so far are tried.
    pub fn stop(&self) {
        crate::sync::lock(&self.state).stopping = true;
        self.changed.notify_all();
    }
}

/// The file's text for `saved`.
pub fn render(saved: &Saved) -> String {
    let mut text = format!(
        "piazza-ring 2\nnext_id {}\nversion_floor {}\n",
        saved.next_id, saved.version_floor
    );
    for marker in &saved.flushes {
        text.push_str(&format!("flush {} {}\n", marker.threshold, marker.at));
    }
    if saved.collected > 0 {
        text.push_str(&format!("collected {}\n", saved.collected));
    }
    for slave in &saved.slaves {
        text.push_str(&format!(
            "slave {} {} {} {}\n",
            slave.id,
            slave.addr,
            if slave.on_ring { "on" } else { "off" },
            render_slots(&slave.slots)
        ));
    }
    for held in &saved.held {
        text.push_str(&format!(
            "held {} {} {}\n",
            held.primary,
            held.replica.map_or("-".to_string(), |r| r.to_string()),
            render_slots(&held.slots)
        ));
    }
    text
}

/// Slot numbers as ranges: `0-511,1000`; `-` for none.
fn render_slots(slots: &[usize]) -> String {
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

/// Reads [`render_slots`]' format; `None` if it is not that.
fn parse_slots(text: &str) -> Option<Vec<usize>> {
    if text == "-" {
        return Some(Vec::new());
    }
    let mut slots = Vec::new();
    for part in text.split(',') {
        let (first, last): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = part.parse().ok()?;
                (n, n)
            }
        };
        if first > last || last >= crate::ring::SLOTS {
            return None;
        }
        slots.extend(first..=last);
    }
    Some(slots)
}

/// Parses the text of the file at `path` (named in errors).
fn parse(text: &str, path: &Path) -> Result<Saved, PersistError> {
    let damaged = |line: &str| PersistError::Damaged {
        path: path.to_path_buf(),
        line: line.to_string(),
    };
    let mut saved = Saved::default();
    let mut lines = text.lines();
    match lines.next() {
        Some("piazza-ring 2") => {}
        Some("piazza-ring 1") => {
            return Err(PersistError::BeforeSlots {
                path: path.to_path_buf(),
            });
        }
        first => return Err(damaged(first.unwrap_or(""))),
    }
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let bad = || damaged(line);
        match fields.as_slice() {
            ["next_id", n] => saved.next_id = n.parse().map_err(|_| bad())?,
            ["version_floor", n] => saved.version_floor = n.parse().map_err(|_| bad())?,
            ["flush", threshold, at] => saved.flushes.push(FlushMarker {
                threshold: threshold.parse().map_err(|_| bad())?,
                at: at.parse().map_err(|_| bad())?,
            }),
            ["collected", horizon] => saved.collected = horizon.parse().map_err(|_| bad())?,
            ["slave", id, addr, on, slots] => {
                let slots = parse_slots(slots).ok_or_else(bad)?;
                let on = match *on {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad()),
                };
                saved.slaves.push(SavedSlave {
                    id: SlaveId(id.parse().map_err(|_| bad())?),
                    addr: addr.to_string(),
                    slots,
                    on_ring: on,
                });
            }
            ["held", primary, replica, slots] => saved.held.push(SavedHolders {
                primary: SlaveId(primary.parse().map_err(|_| bad())?),
                replica: match *replica {
                    "-" => None,
                    id => Some(SlaveId(id.parse().map_err(|_| bad())?)),
                },
                slots: parse_slots(slots).ok_or_else(bad)?,
            }),
            [""] => {}
            _ => return Err(bad()),
        }
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("piazza-ringfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = RingFile::new(&dir);
        assert_eq!(file.load().unwrap(), None);
        let saved = Saved {
            next_id: 3,
            version_floor: 42,
            slaves: vec![
                SavedSlave {
                    id: SlaveId(1),
                    addr: "127.0.0.1:7410".into(),
                    slots: vec![0, 1, 2, 7, 1023],
                    on_ring: true,
                },
                SavedSlave {
                    id: SlaveId(2),
                    addr: "127.0.0.1:7411".into(),
                    slots: vec![],
                    on_ring: false,
                },
            ],
            flushes: vec![FlushMarker {
                threshold: 99,
                at: 7,
            }],
            collected: 0x1234_5678,
            held: vec![
                SavedHolders {
                    primary: SlaveId(1),
                    replica: Some(SlaveId(2)),
                    slots: vec![0, 1, 2, 7],
                },
                SavedHolders {
                    primary: SlaveId(2),
                    replica: None,
                    slots: vec![1023],
                },
            ],
        };
        assert!(render(&saved).contains("\ncollected 305419896\n"));
        assert!(render(&saved).ends_with("\nheld 1 2 0-2,7\nheld 2 - 1023\n"));
        file.save(&saved).unwrap();
        assert_eq!(file.load().unwrap(), Some(saved));
        fs::write(dir.join("ring"), "piazza-ring 2\nslave x\n").unwrap();
        assert!(matches!(
            file.load(),
            Err(PersistError::Damaged { line, .. }) if line == "slave x"
        ));
        assert!(file.load().unwrap_err().to_string().ends_with(
            "is damaged at line 'slave x': fix or remove it (the coordinator then forgets the ring)"
        ));
        fs::write(dir.join("ring"), "piazza-ring 2\nslave 1 a on 5-2\n").unwrap();
        assert!(
            matches!(file.load(), Err(PersistError::Damaged { .. })),
            "a backwards range is refused"
        );
        fs::write(dir.join("ring"), "piazza-ring 2\nheld 1 x 0-3\n").unwrap();
        assert!(
            matches!(file.load(), Err(PersistError::Damaged { .. })),
            "a replica that is neither an id nor - is refused"
        );
        fs::write(dir.join("ring"), "piazza-ring 2\nslave 1 a on 0-3\n").unwrap();
        assert_eq!(
            file.load().unwrap().map(|saved| saved.held.len()),
            Some(0),
            "a file from before held lines has none"
        );
        fs::write(dir.join("ring"), "piazza-ring 3\n").unwrap();
        assert!(
            matches!(file.load(), Err(PersistError::Damaged { line, .. }) if line == "piazza-ring 3")
        );
        fs::write(dir.join("ring"), "piazza-ring 1\nslave 1 a 0x5 on\n").unwrap();
        let old = file.load().unwrap_err();
        assert!(matches!(old, PersistError::BeforeSlots { .. }));
        assert!(old.to_string().contains("from before slots"), "{old}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn saver_in(name: &str) -> (Saver, PathBuf) {
        let dir = std::env::temp_dir().join(format!("piazza-saver-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        (Saver::new(RingFile::new(&dir)), dir)
    }

    #[test]
    fn asks_are_saved_by_the_saver_thread_and_waits_see_them() {
        let (saver, dir) = saver_in("asks");
        let floor = std::sync::atomic::AtomicU64::new(1);
        let on_disk = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                saver.run(
                    || Saved {
                        version_floor: floor.load(std::sync::atomic::Ordering::SeqCst),
                        ..Saved::default()
                    },
                    |saved| on_disk.store(saved.version_floor, std::sync::atomic::Ordering::SeqCst),
                )
            });
            for n in 1..=20 {
                floor.store(n, std::sync::atomic::Ordering::SeqCst);
                let number = saver.ask();
                saver.wait(number, Duration::from_secs(10)).unwrap();
                // The save it waited for started after the ask: it holds `n` or later.
                assert!(on_disk.load(std::sync::atomic::Ordering::SeqCst) >= n);
            }
            saver.stop();
            thread.join().unwrap();
        });
        let file = RingFile::new(&dir);
        assert_eq!(file.load().unwrap().unwrap().version_floor, 20);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_save_fails_its_waits_and_a_missing_saver_times_out() {
        let (saver, dir) = saver_in("fails");
        // No saver thread: a wait ends at its deadline with a message.
        let number = saver.ask();
        let err = saver.wait(number, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, PersistError::NotSaved { .. }));
        assert!(err.to_string().contains("not saved within 50 ms"), "{err}");
        // The directory is gone: the save fails, and so does the wait for it.
        fs::remove_dir_all(&dir).unwrap();
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| saver.run(Saved::default, |_| {}));
            let err = saver.wait(number, Duration::from_secs(10)).unwrap_err();
            assert!(matches!(err, PersistError::Write { .. }), "{err}");
            assert!(err.to_string().starts_with("cannot write "), "{err}");
            // Once the directory is back, the retry (or the next ask) succeeds.
            fs::create_dir_all(&dir).unwrap();
            let next = saver.ask();
            saver.wait(next, Duration::from_secs(10)).unwrap();
            saver.stop();
            thread.join().unwrap();
        });
        assert!(RingFile::new(&dir).load().unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
    }
}
