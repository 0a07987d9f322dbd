//! memcached's binary protocol (magic 0x80): the packet codec. Pure: no I/O, no locks.
//!
//! [`parse`] takes the front of a connection's read buffer and returns one whole request
//! packet, [`Parsed::Incomplete`], or an error with memcached's reply already encoded;
//! [`dispatch`] turns a packet into a router [`Request`](crate::request::Request) (or a
//! command the session answers itself), and [`Answer::write`] encodes the router's
//! [`Outcome`](crate::request::Outcome) as memcached 1.6 would. Every reply echoes the
//! request's opcode (quiet opcodes stay quiet opcodes) and opaque; `datatype` is always 0
//! (raw bytes).
//!
//! # Mapping (opcode → request, outcome → status)
//!
//! `Q` marks the quiet form: it answers nothing on success (nor on a miss, for the
//! gets), but still reports errors. `cas` is the request header's cas field; the
//! response's cas field is the key's new cas unique (Piazza's version) where shown.
//!
//! | opcode | request | extras | → `Request` |
//! | --- | --- | --- | --- |
//! | 0x00 get, 0x09 getq, 0x0c getk, 0x0d getkq | key | none | `Get{key}` |
//! | 0x01 set, 0x11 setq | key, value | flags u32, exptime u32 | `Put{key, value, flags}` when exptime = 0 and cas = 0, else `Store{Set, exptime, cas}` |
//! | 0x02 add, 0x12 addq | key, value | flags, exptime | `Store{Add, ..}`; with a cas, `Store{Set, cas}` (memcached turns it into a cas) |
//! | 0x03 replace, 0x13 replaceq | key, value | flags, exptime | `Store{Replace, ..}`; with a cas, `Store{Set, cas}` |
//! | 0x0e append, 0x19 appendq; 0x0f prepend, 0x1a prependq | key, value | none | `Store{Append / Prepend, flags 0, exptime 0, cas}` |
//! | 0x04 delete, 0x14 deleteq | key | none | `Delete{key, cas}` |
//! | 0x05 incr, 0x15 incrq; 0x06 decr, 0x16 decrq | key | delta u64, initial u64, exptime u32 | `Arith{key, decr, delta, create, exptime: None, cas}`; `create` is `Some(Create{initial, exptime, flags: 0})` unless exptime = 0xffffffff |
//! | 0x1c touch | key | exptime u32 | `Touch{key, exptime}` |
//! | 0x1d gat, 0x1e gatq, 0x23 gatk, 0x24 gatkq | key | exptime u32 | `Touch{key, exptime}` |
//! | 0x08 flush, 0x18 flushq | none | optional exptime u32 | `FlushAll{delay}` (an absolute exptime becomes the seconds from now) |
//! | 0x0a noop | none | none | answered by the session (status 0) |
//! | 0x0b version | none | none | answered by the session: `1.6.0-piazza-<version>` |
//! | 0x10 stat | optional key (section) | none | `Coordinator::stats(section)`: one packet per stat (key = name, value = value), then an empty one; `reset` answers only the empty one; an unknown section `Not found` |
//! | 0x07 quit, 0x17 quitq | none | none | status 0 (quit only), then the connection closes |
//! | 0x20 sasl list, 0x21 sasl auth, 0x22 sasl step, any other | | | 0x0081 `Unknown command` (memcached without SASL), the body is skipped |
//!
//! | outcome | get, getk, gat, gatk (`Q`) | touch | set, add, replace, append, prepend (`Q`) | delete (`Q`) | incr, decr (`Q`) | flush (`Q`) |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | `Found` | 0x0000, extras flags, key (k forms), value; cas | 0x0000, extras flags; cas | | | | |
//! | `NotFound` | 0x0001 `Not found` (k forms: the key as body; Q: nothing) | 0x0001 `Not found` | 0x0001 `Not found` | 0x0001 `Not found` | 0x0001 `Not found` | |
//! | `Stored` | | | 0x0000; cas (Q: nothing) | | | |
//! | `NotStored` | | | add 0x0002 `Data exists for key.`, replace 0x0001 `Not found`, append/prepend/set 0x0005 `Not stored.` | | 0x0005 `Not stored.` | |
//! | `Exists` | | | 0x0002 `Data exists for key.` | 0x0002 | 0x0002 | |
//! | `Deleted` | | | | 0x0000, cas 0 (Q: nothing) | | |
//! | `Number` | | | | | 0x0000, value u64 big-endian; cas (Q: nothing) | |
//! | `Flushed` | | | | | | 0x0000 (Q: nothing) |
//!
//! Failures, whatever the opcode and quiet or not: `Failed(Invalid(why))` 0x0004 with
//! `why`; `Failed(TooLarge)` 0x0003 `Too large.` (for append and prepend, whose result
//! would be over the limit, 0x0005 `Not stored.`, as memcached); `Failed(NonNumeric)` 0x0006
//! `Non-numeric server-side value for incr or decr`; `Failed(Unavailable(why))` 0x0082
//! with `why` (memcached's binary protocol has no other server error: it answers its own
//! out-of-memory server errors with 0x0082 and the reason, so clients see a server
//! error); an outcome that does not belong to the request, 0x0082 too.
//!
//! Malformed input, as memcached 1.6 answers it:
//! - a first byte other than 0x80: the connection is closed without a reply;
//! - key length + extras length over the body length: 0x0081 `Unknown command`, close;
//! - a body over 1 GiB, a key over 250 bytes, or lengths that do not fit the opcode
//!   (e.g. a get with extras, a set without its 8 bytes of extras): 0x0004 `Invalid
//!   arguments`, close;
//! - a value over the value limit: 0x0003 `Too large.`, the value is skipped (never
//!   buffered) and the connection goes on; for set and setq the key's old value is
//!   deleted (`Delete{key, cas: 0}`), as memcached does, not for the other commands.
//!
//! With `--require-auth` and a cluster secret, every connection's first request is
//! answered 0x0020 `Auth failure.` and the connection closed: the memcached port has no
//! SASL, so a binary client cannot present the secret.
//!
//! Differences from memcached 1.6 that a client can see: `version` answers
//! `1.6.0-piazza-<version>`; the cas uniques are Piazza's write versions (large numbers,
//! increasing), and a touch or gat gives the key a new one where memcached keeps it;
//! stat sections hold Piazza's statistics.
//!
//! Deviations from memcached, on malformed input only: memcached skips `body length`
//! bytes after the key of an unknown opcode (eating into the next packet when the key or
//! extras are not empty); Piazza skips exactly the packet. A stat with a body longer than
//! its key, and a touch/gat with one longer than its key and extras, are `Invalid
//! arguments` (memcached would read the rest as the next packet).

use std::fmt;

use crate::request::StoreMode;

mod mapping;
pub mod opcode;
mod parser;
mod reply;
#[cfg(test)]
mod tests;

pub use mapping::{Answer, Dispatch, Kind, dispatch, flush_delay};
pub use parser::parse;
pub use reply::{
    write_error, write_error_message, write_failure, write_header, write_response, write_stat,
};

/// First byte of a request packet.
pub const MAGIC_REQUEST: u8 = 0x80;
/// First byte of a response packet.
pub const MAGIC_RESPONSE: u8 = 0x81;
/// Bytes in a request or response header.
pub const HEADER_LEN: usize = 24;
/// Largest body memcached accepts (`ITEM_SIZE_MAX_UPPER_LIMIT`); larger: `Invalid
/// arguments` and close.
pub const MAX_BODY: u32 = 1024 * 1024 * 1024;
/// An incr/decr exptime that means "do not create a missing key".
pub const NO_CREATE: u32 = 0xffff_ffff;

/// A response status, with memcached's default message for the errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0x0000
    Ok,
    /// 0x0001 `Not found`
    NotFound,
    /// 0x0002 `Data exists for key.`
    Exists,
    /// 0x0003 `Too large.`
    TooLarge,
    /// 0x0004 `Invalid arguments`
    Invalid,
    /// 0x0005 `Not stored.`
    NotStored,
    /// 0x0006 `Non-numeric server-side value for incr or decr`
    NonNumeric,
    /// 0x0020 `Auth failure.`
    AuthError,
    /// 0x0081 `Unknown command`
    UnknownCommand,
    /// 0x0082 `Out of memory` (memcached's server error)
    OutOfMemory,
}

impl Status {
    /// The status code on the wire.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 0x0000,
            Status::NotFound => 0x0001,
            Status::Exists => 0x0002,
            Status::TooLarge => 0x0003,
            Status::Invalid => 0x0004,
            Status::NotStored => 0x0005,
            Status::NonNumeric => 0x0006,
            Status::AuthError => 0x0020,
            Status::UnknownCommand => 0x0081,
            Status::OutOfMemory => 0x0082,
        }
    }

    /// The body memcached sends with this status when it has no other text.
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "",
            Status::NotFound => "Not found",
            Status::Exists => "Data exists for key.",
            Status::TooLarge => "Too large.",
            Status::Invalid => "Invalid arguments",
            Status::NotStored => "Not stored.",
            Status::NonNumeric => "Non-numeric server-side value for incr or decr",
            Status::AuthError => "Auth failure.",
            Status::UnknownCommand => "Unknown command",
            Status::OutOfMemory => "Out of memory",
        }
    }
}

/// A request header (all numbers in host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The opcode.
    pub opcode: u8,
    /// Key length.
    pub key_len: u16,
    /// Extras length.
    pub extras_len: u8,
    /// Data type (ignored, as memcached does).
    pub data_type: u8,
    /// vbucket id (ignored).
    pub vbucket: u16,
    /// Extras + key + value length.
    pub body_len: u32,
    /// Echoed in the reply.
    pub opaque: u32,
    /// The cas the request is conditional on (0: none).
    pub cas: u64,
}

impl Header {
    /// Decodes the 24 bytes at the front of `buf` (the magic byte is not checked here);
    /// `None` if fewer are there.
    pub fn decode(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            opcode: h[1],
            key_len: u16::from_be_bytes([h[2], h[3]]),
            extras_len: h[4],
            data_type: h[5],
            vbucket: u16::from_be_bytes([h[6], h[7]]),
            body_len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
        })
    }

    /// Bytes of the whole packet (header and body).
    pub fn packet_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// Bytes of the value: body less extras and key (0 if they do not fit).
    pub fn value_len(&self) -> usize {
        (self.body_len as usize).saturating_sub(self.key_len as usize + self.extras_len as usize)
    }
}

/// A whole request packet, as a client sends it (the server only decodes requests: this is
/// for tests and tools). Extras, key and value must fit their length fields.
pub fn encode_request(
    opcode: u8,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
    opaque: u32,
    cas: u64,
) -> Vec<u8> {
    let mut out = vec![MAGIC_REQUEST, opcode];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.extend_from_slice(&[0, 0, 0]); // data type, vbucket
    out.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// A whole request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// get, getq, getk, getkq.
    Get {
        /// The key.
        key: Vec<u8>,
        /// getq/getkq: nothing on a miss.
        quiet: bool,
        /// getk/getkq: the key comes back in the reply.
        with_key: bool,
    },
    /// touch: set the expiry, answer the flags.
    Touch {
        /// The key.
        key: Vec<u8>,
        /// memcached exptime.
        exptime: u32,
    },
    /// gat, gatq, gatk, gatkq: set the expiry and answer the value.
    Gat {
        /// The key.
        key: Vec<u8>,
        /// memcached exptime.
        exptime: u32,
        /// gatq/gatkq: nothing on a miss.
        quiet: bool,
        /// gatk/gatkq: the key comes back in the reply.
        with_key: bool,
    },
    /// set, add, replace, append, prepend and their quiet forms.
    Store {
        /// Which of them.
        mode: StoreMode,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// memcached flags (0 for append/prepend, which have no extras).
        flags: u32,
        /// memcached exptime (0 for append/prepend).
        exptime: u32,
        /// Quiet form: nothing on success.
        quiet: bool,
    },
    /// delete, deleteq.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Quiet form.
        quiet: bool,
    },
    /// increment, decrement and their quiet forms.
    Arith {
        /// The key.
        key: Vec<u8>,
        /// decrement.
        decr: bool,
        /// By how much.
        delta: u64,
        /// The value a missing key is created with.
        initial: u64,
        /// exptime of a created key; [`NO_CREATE`]: a missing key is not created.
        exptime: u32,
        /// Quiet form.
        quiet: bool,
    },
    /// flush, flushq.
    Flush {
        /// memcached exptime of the flush (0: now).
        exptime: u32,
        /// Quiet form.
        quiet: bool,
    },
    /// noop.
    Noop,
    /// version.
    Version,
    /// stat, with the section as key ("" for the general statistics).
    Stat {
        /// The section.
        key: Vec<u8>,
    },
    /// quit, quitq.
    Quit {
        /// quitq: close without a reply.
        quiet: bool,
    },
}

/// A whole request packet: its header (opcode, opaque and cas) and the decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The header.
    pub header: Header,
    /// The command.
    pub command: Command,
}

/// What is wrong with a request packet (the codec layer's error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McbinError {
    /// The packet does not start with 0x80.
    BadMagic(u8),
    /// Key and extras are longer than the whole body.
    BadLengths {
        /// Key length.
        key_len: u16,
        /// Extras length.
        extras_len: u8,
        /// Body length.
        body_len: u32,
    },
    /// The body is over [`MAX_BODY`].
    BodyTooLarge(u32),
    /// The key is over the key limit.
    KeyTooLong {
        /// Its length.
        len: u16,
        /// The limit.
        max: usize,
    },
    /// The lengths do not fit the opcode.
    Malformed {
        /// The opcode.
        opcode: u8,
        /// What it needs.
        needs: &'static str,
    },
    /// The value is over the value limit.
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An opcode this server does not serve (SASL included).
    UnknownCommand(u8),
}

impl fmt::Display for McbinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McbinError::BadMagic(byte) => {
                write!(f, "bad magic 0x{byte:02x} (a request starts with 0x80)")
            }
            McbinError::BadLengths {
                key_len,
                extras_len,
                body_len,
            } => write!(
                f,
                "key length {key_len} + extras length {extras_len} exceed the body length {body_len}"
            ),
            McbinError::BodyTooLarge(len) => {
                write!(f, "body of {len} bytes is over the {MAX_BODY}-byte limit")
            }
            McbinError::KeyTooLong { len, max } => {
                write!(f, "key of {len} bytes is over the {max}-byte limit")
            }
            McbinError::Malformed { opcode, needs } => {
                write!(f, "opcode 0x{opcode:02x} needs {needs}")
            }
            McbinError::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes is over the {max}-byte limit")
            }
            McbinError::UnknownCommand(op) => write!(f, "unknown opcode 0x{op:02x}"),
        }
    }
}

impl std::error::Error for McbinError {}

impl McbinError {
    /// The status memcached answers with; `None`: no reply (bad magic).
    pub fn status(&self) -> Option<Status> {
        match self {
            McbinError::BadMagic(_) => None,
            McbinError::BadLengths { .. } | McbinError::UnknownCommand(_) => {
                Some(Status::UnknownCommand)
            }
            McbinError::BodyTooLarge(_)
            | McbinError::KeyTooLong { .. }
            | McbinError::Malformed { .. } => Some(Status::Invalid),
            McbinError::ValueTooLarge { .. } => Some(Status::TooLarge),
        }
    }

    /// Whether the connection is closed after the reply (the stream cannot be trusted).
    pub fn closes(&self) -> bool {
        !matches!(
            self,
            McbinError::ValueTooLarge { .. } | McbinError::UnknownCommand(_)
        )
    }
}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole packet yet.
    Incomplete,
    /// A whole packet taking `consumed` bytes.
    Packet {
        /// The packet.
        packet: Packet,
        /// Bytes it took.
        consumed: usize,
    },
    /// A packet that cannot be served: delete `forget` if set, send `reply` (may be
    /// empty), then close if [`McbinError::closes`], else discard `skip` bytes from the
    /// front of the buffer (more than it may hold yet: the rest as it arrives).
    Error {
        /// What is wrong.
        error: McbinError,
        /// memcached's reply.
        reply: Vec<u8>,
        /// Bytes of the packet to discard.
        skip: usize,
        /// A key whose value must be deleted: memcached removes the old value of a key
        /// whose `set` is refused as too large (not for add, replace, append, prepend).
        forget: Option<Vec<u8>>,
    },
}
