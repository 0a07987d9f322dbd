//! The one request type both client protocols decode into, and the outcome the router
//! hands back for them to encode.
//!
//! The binary protocol (`wire`) and the memcached text protocol (`text`) are only two
//! spellings of these requests; the coordinator's router serves [`Request`]s and never
//! sees which protocol a request came in on.

use std::fmt;

/// What a client asks the coordinator for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Store a value under a key with memcached flags.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// memcached flags, stored and returned as given.
        flags: u32,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// A value found by a `Get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The bytes.
    pub value: Vec<u8>,
    /// memcached flags.
    pub flags: u32,
    /// The version of the write that stored it (memcached's `cas` for `gets`).
    pub version: u64,
}

/// What serving a request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Get` hit.
    Found(Found),
    /// `Get` or `Delete` of a key that is not there.
    NotFound,
    /// `Put` applied on every replica, at this version.
    Stored {
        /// The write's version.
        version: u64,
    },
    /// `Delete` applied on every replica.
    Deleted,
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
    /// The cluster cannot serve it now (no slaves, a replica unreachable).
    Unavailable(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invalid(why) => write!(f, "{why}"),
            Failure::TooLarge => write!(f, "object too large for cache"),
            Failure::Unavailable(why) => write!(f, "{why}"),
        }
    }
}
