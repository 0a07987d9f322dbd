//! [`WalError`]: what can go wrong with the log, each naming the file and what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong with the log.
#[derive(Debug)]
pub enum WalError {
    /// Another process holds the data dir.
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What it says (the other process's pid).
        holder: String,
    },
    /// Opening, reading or writing a file failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Syncing the log to disk failed: the write may not be durable.
    Sync {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a Piazza log.
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A bad record before the last one.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A previous sync failed: the log refuses further writes until restarted.
    Poisoned,
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Locked { path, holder } => write!(
                f,
                "data dir is in use by another process ({holder}; lock file {}): stop it or choose another --data-dir",
                path.display()
            ),
            WalError::Io { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())?;
                if source.raw_os_error() == Some(28) {
                    write!(f, " (disk full: free space or move --data-dir)")?;
                }
                Ok(())
            }
            WalError::Sync { path, source } => write!(
                f,
                "cannot sync {} to disk: {source} (the write was not acknowledged)",
                path.display()
            ),
            WalError::BadMagic { path } => write!(
                f,
                "{} is not a piazza log (wrong first bytes): move it away or choose another --data-dir",
                path.display()
            ),
            WalError::Corrupt { path, offset, what } => write!(
                f,
                "log {} is corrupt at byte {offset} ({what}), before its last record: refusing to start; run with --salvage to cut the log there (losing what follows)",
                path.display()
            ),
            WalError::Poisoned => write!(f, "an earlier log sync failed; restart the slave"),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } | WalError::Sync { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(super) fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
