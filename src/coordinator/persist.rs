//! The coordinator's state on disk: every slave ever registered (id, address, token,
//! and whether it was on the ring), the next id, the version floor, the `flush_all`
//! markers in force and the collection horizon (the highest ever sent), in the text file
//! `ring` in `--data-dir`. A restarted coordinator gives every slave its old id and
//! token back, waits for the ones that were on the ring, and never issues a version it
//! may have issued before.
//!
//! Format (one record per line, fields separated by one space):
//!
//! ```text
//! piazza-ring 1
//! next_id 3
//! version_floor 1795514671000000
//! flush 28728234736000000 0
//! collected 28728234736000000
//! slave 1 127.0.0.1:7410 0x88ea0259dcb4bd81 on
//! slave 2 127.0.0.1:7411 0x08ea0259dcb4bd81 off
//! ```
//!
//! Writes go to `ring.tmp`, which is synced, renamed over `ring`, and the directory
//! synced: a crash leaves the old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ring::{SlaveId, Token};
use crate::store::FlushMarker;
use crate::wal::sync_dir;

/// What is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// The id the next new address gets.
    pub next_id: u32,
    /// No version at or below this one may be issued again.
    pub version_floor: u64,
    /// Every slave ever registered: id, address, token, on the ring.
    pub slaves: Vec<(SlaveId, String, Token, bool)>,
    /// `flush_all` markers still in force: threshold version, from when (Unix µs).
    pub flushes: Vec<FlushMarker>,
    /// The highest collection horizon ever sent to a slave (0: none; the line is then
    /// left out).
    pub collected: u64,
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
    /// A message naming the file and the line that could not be read.
    pub fn load(&self) -> Result<Option<Saved>, String> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        parse(&text)
            .map(Some)
            .map_err(|line| {
                format!(
                    "{} is damaged at line '{line}': fix or remove it (the coordinator then forgets the ring)",
                    self.path.display()
                )
            })
    }

    /// Writes the state atomically.
    ///
    /// # Errors
    /// A message naming the file and what failed.
    pub fn save(&self, saved: &Saved) -> Result<(), String> {
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(render(saved).as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        match self.path.parent() {
            Some(dir) => sync_dir(dir).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// The file's text for `saved`.
pub fn render(saved: &Saved) -> String {
    let mut text = format!(
        "piazza-ring 1\nnext_id {}\nversion_floor {}\n",
        saved.next_id, saved.version_floor
    );
    for marker in &saved.flushes {
        text.push_str(&format!("flush {} {}\n", marker.threshold, marker.at));
    }
    if saved.collected > 0 {
        text.push_str(&format!("collected {}\n", saved.collected));
    }
    for (id, addr, token, on) in &saved.slaves {
        text.push_str(&format!(
            "slave {id} {addr} {token} {}\n",
            if *on { "on" } else { "off" }
        ));
    }
    text
}

/// Parses the file's text; `Err` carries the line that could not be read.
pub fn parse(text: &str) -> Result<Saved, String> {
    let mut saved = Saved::default();
    let mut lines = text.lines();
    if lines.next() != Some("piazza-ring 1") {
        return Err(text.lines().next().unwrap_or("").to_string());
    }
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let bad = || line.to_string();
        match fields.as_slice() {
            ["next_id", n] => saved.next_id = n.parse().map_err(|_| bad())?,
            ["version_floor", n] => saved.version_floor = n.parse().map_err(|_| bad())?,
            ["flush", threshold, at] => saved.flushes.push(FlushMarker {
                threshold: threshold.parse().map_err(|_| bad())?,
                at: at.parse().map_err(|_| bad())?,
            }),
            ["collected", horizon] => saved.collected = horizon.parse().map_err(|_| bad())?,
            ["slave", id, addr, token, on] => {
                let token = token
                    .strip_prefix("0x")
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    .ok_or_else(bad)?;
                let on = match *on {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad()),
                };
                saved.slaves.push((
                    SlaveId(id.parse().map_err(|_| bad())?),
                    addr.to_string(),
                    Token(token),
                    on,
                ));
            }
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
                (SlaveId(1), "127.0.0.1:7410".into(), Token(0x88ea), true),
                (SlaveId(2), "127.0.0.1:7411".into(), Token(u64::MAX), false),
            ],
            flushes: vec![FlushMarker {
                threshold: 99,
                at: 7,
            }],
            collected: 0x1234_5678,
        };
        assert!(render(&saved).contains("\ncollected 305419896\n"));
        file.save(&saved).unwrap();
        assert_eq!(file.load().unwrap(), Some(saved));
        fs::write(dir.join("ring"), "piazza-ring 1\nslave x\n").unwrap();
        assert!(file.load().unwrap_err().contains("slave x"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
