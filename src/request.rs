//! The one request type every client protocol decodes into, and the outcome the router
//! hands back for them to encode.
//!
//! Piazza's binary protocol (`wire`), memcached's text protocol (`text`), its meta
//! commands (`meta`) and its binary protocol (`mcbin`) are only spellings of these
//! requests; the coordinator's router serves [`Request`]s and never sees which protocol a
//! request came in on.
//!
//! Expiry: every request that sets an expiry carries memcached's raw `exptime`
//! ([`expires_at`] turns it into an absolute Unix time, the form stored on both copies).

use std::fmt;

/// memcached's rule: an `exptime` up to 30 days is relative seconds; larger, a Unix time.
pub const RELATIVE_EXPTIME_MAX: i64 = 60 * 60 * 24 * 30;

/// What the stored expiry of an already-expired entry is (any past time would do).
pub const EXPIRED: u64 = 1;

/// The absolute expiry (Unix seconds, 0 = never) of memcached's `exptime` sent at `now`
/// (Unix seconds): 0 never; negative already expired; up to 30 days relative seconds;
/// larger a Unix time (in the past: already expired).
pub fn expires_at(exptime: i64, now: u64) -> u64 {
    match exptime {
        0 => 0,
        e if e < 0 => EXPIRED,
        e if e <= RELATIVE_EXPTIME_MAX => now.saturating_add(e as u64),
        e => (e as u64).max(EXPIRED),
    }
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a storage request treats what the key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store whatever is there (`set`).
    Set,
    /// Store only if the key holds nothing (`add`); else `NotStored`.
    Add,
    /// Store only if the key holds a value (`replace`); else `NotStored`.
    Replace,
    /// Add the data after the existing value (`append`); flags and expiry stay; a missing
    /// key is `NotStored`.
    Append,
    /// Add the data before the existing value (`prepend`); as `Append` otherwise.
    Prepend,
}

/// What a client asks the coordinator for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Store a value under a key with memcached flags, never expiring (Piazza's native
    /// PUT; the same as a `Store` with mode `Set`, exptime 0 and no cas).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// memcached flags, stored and returned as given.
        flags: u32,
    },
    /// Store a value: `set add replace append prepend cas`, and meta `ms`.
    Store {
        /// How to treat what the key holds.
        mode: StoreMode,
        /// The key.
        key: Vec<u8>,
        /// The value (for append/prepend: the part to add).
        value: Vec<u8>,
        /// memcached flags (ignored by append/prepend, which keep the old ones).
        flags: u32,
        /// memcached's exptime (ignored by append/prepend, which keep the old expiry).
        exptime: i64,
        /// Non-zero: store only if the key's current cas unique (its version) is this
        /// one, else `Exists` (`NotFound` if the key holds nothing). `cas` is `Set` with
        /// this set.
        cas: u64,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Non-zero: delete only if the key's cas unique is this one, else `Exists`.
        cas: u64,
    },
    /// Set a key's expiry and return its value (`touch`, `gat`, `gats`, meta `mg T`):
    /// `Found` with the value, or `NotFound`.
    Touch {
        /// The key.
        key: Vec<u8>,
        /// memcached's exptime, the new expiry.
        exptime: i64,
    },
    /// `incr`/`decr` (and meta `ma`, the binary protocol's increment/decrement): the value
    /// must be a decimal number below 2^64; incr wraps at 2^64, decr stops at 0. Answers
    /// `Number` with the new value, `NotFound`, or `Failed(NonNumeric)`.
    Arith {
        /// The key.
        key: Vec<u8>,
        /// Decrement instead of increment.
        decr: bool,
        /// By how much.
        delta: u64,
        /// Create a missing key with this value instead of answering `NotFound` (the
        /// binary protocol's initial value, meta `ma N`/`J`).
        create: Option<Create>,
        /// Also set the expiry of an existing key (meta `ma T`).
        exptime: Option<i64>,
        /// Non-zero: only if the key's cas unique is this one, else `Exists`.
        cas: u64,
    },
    /// Forget every key stored before now, or before now + `delay` seconds, on every
    /// slave (`flush_all [delay]`).
    FlushAll {
        /// Seconds from now when the flush takes effect (0: at once).
        delay: u32,
    },
}

/// How an `Arith` creates a missing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Create {
    /// The value the key starts with (the delta is not applied to it).
    pub initial: u64,
    /// memcached's exptime for the new key.
    pub exptime: i64,
    /// memcached flags for the new key.
    pub flags: u32,
}

/// A value found by a `Get` or `Touch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The bytes.
    pub value: Vec<u8>,
    /// memcached flags.
    pub flags: u32,
    /// The version of the write that stored it (memcached's `cas` for `gets`).
    pub version: u64,
    /// When it expires, in Unix seconds; 0 never.
    pub expires: u64,
}

/// What serving a request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Get` or `Touch` hit.
    Found(Found),
    /// The key holds nothing (`Get`, `Delete`, `Touch`, `Arith`, `Store` with a cas).
    NotFound,
    /// `Put`/`Store` applied on every replica, at this version (the new cas unique).
    Stored {
        /// The write's version.
        version: u64,
    },
    /// `Store` whose condition did not hold (`add` of a present key, `replace`,
    /// `append` or `prepend` of a missing one).
    NotStored,
    /// The cas unique given does not match the key's.
    Exists,
    /// `Delete` applied on every replica.
    Deleted,
    /// `Arith` applied on every replica: the new value and its version.
    Number {
        /// The value after the increment or decrement.
        value: u64,
        /// The write's version (the new cas unique).
        version: u64,
    },
    /// `FlushAll` reached every slave.
    Flushed,
    /// The request could not be served.
    Failed(Failure),
}

/// Why a request could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request itself is wrong (empty key, ...): the client's fault.
    Invalid(String),
    /// The value is over the size limit.
    TooLarge,
    /// `Arith` on a value that is not a decimal number below 2^64.
    NonNumeric,
    /// The cluster cannot serve it now (no slaves, a replica unreachable).
    Unavailable(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invalid(why) => write!(f, "{why}"),
            Failure::TooLarge => write!(f, "object too large for cache"),
            Failure::NonNumeric => write!(f, "cannot increment or decrement non-numeric value"),
            Failure::Unavailable(why) => write!(f, "{why}"),
        }
    }
}

impl Outcome {
    /// What to report for an outcome a command does not expect: its failure if it is one,
    /// else (a bug) [`Failure::Unavailable`] naming the outcome.
    pub fn into_failure(self) -> Failure {
        let name = match self {
            Outcome::Failed(failure) => return failure,
            Outcome::Found(_) => "Found",
            Outcome::NotFound => "NotFound",
            Outcome::Stored { .. } => "Stored",
            Outcome::NotStored => "NotStored",
            Outcome::Exists => "Exists",
            Outcome::Deleted => "Deleted",
            Outcome::Number { .. } => "Number",
            Outcome::Flushed => "Flushed",
        };
        Failure::Unavailable(format!("unexpected outcome {name}"))
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Outcome {
        Outcome::Failed(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_follows_memcached() {
        let now = 1_800_000_000;
        assert_eq!(expires_at(0, now), 0);
        assert_eq!(expires_at(-1, now), EXPIRED);
        assert_eq!(expires_at(10, now), now + 10);
        assert_eq!(
            expires_at(RELATIVE_EXPTIME_MAX, now),
            now + RELATIVE_EXPTIME_MAX as u64
        );
        assert_eq!(
            expires_at(RELATIVE_EXPTIME_MAX + 1, now),
            RELATIVE_EXPTIME_MAX as u64 + 1
        );
        assert_eq!(expires_at(1_900_000_000, now), 1_900_000_000);
    }

    #[test]
    fn an_unexpected_outcome_is_reported_as_a_failure_naming_it() {
        assert_eq!(
            Outcome::Failed(Failure::TooLarge).into_failure(),
            Failure::TooLarge
        );
        assert_eq!(
            Outcome::Stored { version: 5 }.into_failure(),
            Failure::Unavailable("unexpected outcome Stored".into())
        );
        assert_eq!(
            Outcome::from(Failure::NonNumeric),
            Outcome::Failed(Failure::NonNumeric)
        );
    }
}
