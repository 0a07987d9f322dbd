//! memcached's binary protocol (magic 0x80): the packet codec. Pure: no I/O, no locks.
//!
//! [`parse`] takes the front of a connection's read buffer and returns one whole request
//! packet, [`Parsed::Incomplete`], or an error with memcached's reply already encoded;
//! [`dispatch`] turns a packet into a router [`Request`] (or a command the session
//! answers itself), and [`Answer::write`] encodes the router's [`Outcome`] as memcached
//! 1.6 would. Every reply echoes the request's opcode (quiet opcodes stay quiet opcodes)
//! and opaque; `datatype` is always 0 (raw bytes).
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

use crate::request::{Create, Failure, Outcome, RELATIVE_EXPTIME_MAX, Request, StoreMode};
use crate::text::TextLimits;

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

/// The opcodes, as memcached's `protocol_binary.h` names them.
pub mod opcode {
    /// get
    pub const GET: u8 = 0x00;
    /// set
    pub const SET: u8 = 0x01;
    /// add
    pub const ADD: u8 = 0x02;
    /// replace
    pub const REPLACE: u8 = 0x03;
    /// delete
    pub const DELETE: u8 = 0x04;
    /// increment
    pub const INCREMENT: u8 = 0x05;
    /// decrement
    pub const DECREMENT: u8 = 0x06;
    /// quit
    pub const QUIT: u8 = 0x07;
    /// flush
    pub const FLUSH: u8 = 0x08;
    /// getq
    pub const GETQ: u8 = 0x09;
    /// noop
    pub const NOOP: u8 = 0x0a;
    /// version
    pub const VERSION: u8 = 0x0b;
    /// getk
    pub const GETK: u8 = 0x0c;
    /// getkq
    pub const GETKQ: u8 = 0x0d;
    /// append
    pub const APPEND: u8 = 0x0e;
    /// prepend
    pub const PREPEND: u8 = 0x0f;
    /// stat
    pub const STAT: u8 = 0x10;
    /// setq
    pub const SETQ: u8 = 0x11;
    /// addq
    pub const ADDQ: u8 = 0x12;
    /// replaceq
    pub const REPLACEQ: u8 = 0x13;
    /// deleteq
    pub const DELETEQ: u8 = 0x14;
    /// incrementq
    pub const INCREMENTQ: u8 = 0x15;
    /// decrementq
    pub const DECREMENTQ: u8 = 0x16;
    /// quitq
    pub const QUITQ: u8 = 0x17;
    /// flushq
    pub const FLUSHQ: u8 = 0x18;
    /// appendq
    pub const APPENDQ: u8 = 0x19;
    /// prependq
    pub const PREPENDQ: u8 = 0x1a;
    /// touch
    pub const TOUCH: u8 = 0x1c;
    /// gat (get and touch)
    pub const GAT: u8 = 0x1d;
    /// gatq
    pub const GATQ: u8 = 0x1e;
    /// SASL list mechanisms
    pub const SASL_LIST_MECHS: u8 = 0x20;
    /// SASL auth
    pub const SASL_AUTH: u8 = 0x21;
    /// SASL step
    pub const SASL_STEP: u8 = 0x22;
    /// gatk
    pub const GATK: u8 = 0x23;
    /// gatkq
    pub const GATKQ: u8 = 0x24;
}

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

fn refuse(header: &Header, error: McbinError) -> Parsed {
    refuse_forgetting(header, error, None)
}

fn refuse_forgetting(header: &Header, error: McbinError, forget: Option<Vec<u8>>) -> Parsed {
    let mut reply = Vec::new();
    if let Some(status) = error.status() {
        write_error(&mut reply, header, status);
    }
    Parsed::Error {
        error,
        reply,
        skip: header.packet_len(),
        forget,
    }
}

/// Parses the request packet at the front of `buf` under `limits` (key and value
/// sizes). Lengths are checked from the header alone, before any waiting for the body,
/// so nothing larger than the limits is ever buffered for a packet.
pub fn parse(buf: &[u8], limits: &TextLimits) -> Parsed {
    let Some(&magic) = buf.first() else {
        return Parsed::Incomplete;
    };
    if magic != MAGIC_REQUEST {
        return Parsed::Error {
            error: McbinError::BadMagic(magic),
            reply: Vec::new(),
            skip: 0,
            forget: None,
        };
    }
    let Some(header) = Header::decode(buf) else {
        return Parsed::Incomplete;
    };
    let (key_len, extras_len, body_len) = (
        header.key_len as usize,
        header.extras_len as usize,
        header.body_len as usize,
    );
    if key_len + extras_len > body_len {
        return refuse(
            &header,
            McbinError::BadLengths {
                key_len: header.key_len,
                extras_len: header.extras_len,
                body_len: header.body_len,
            },
        );
    }
    if header.body_len > MAX_BODY {
        return refuse(&header, McbinError::BodyTooLarge(header.body_len));
    }
    if key_len > limits.max_key_bytes {
        return refuse(
            &header,
            McbinError::KeyTooLong {
                len: header.key_len,
                max: limits.max_key_bytes,
            },
        );
    }
    let shape = match check_shape(&header) {
        Ok(shape) => shape,
        Err(error) => return refuse(&header, error),
    };
    if shape == Shape::Storage && header.value_len() > limits.max_value_bytes {
        // Refused before the value arrives; the key is needed for a set (as memcached,
        // which reads extras and key before it looks at the value).
        let key_end = HEADER_LEN + extras_len + key_len;
        let Some(key) = buf.get(HEADER_LEN + extras_len..key_end) else {
            return Parsed::Incomplete;
        };
        let forget = matches!(header.opcode, opcode::SET | opcode::SETQ).then(|| key.to_vec());
        return refuse_forgetting(
            &header,
            McbinError::ValueTooLarge {
                len: header.value_len(),
                max: limits.max_value_bytes,
            },
            forget,
        );
    }
    if shape == Shape::Unknown {
        return refuse(&header, McbinError::UnknownCommand(header.opcode));
    }
    let total = header.packet_len();
    let Some(body) = buf.get(HEADER_LEN..total) else {
        return Parsed::Incomplete;
    };
    let (extras, rest) = body.split_at(extras_len);
    let (key, value) = rest.split_at(key_len);
    Parsed::Packet {
        packet: Packet {
            header,
            command: decode(&header, extras, key, value),
        },
        consumed: total,
    }
}

/// How a well-formed packet's body is laid out, for the size checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Carries a value under the value limit.
    Storage,
    /// Key and extras only.
    Fixed,
    /// Answered `Unknown command`, body skipped.
    Unknown,
}

/// memcached's per-opcode length checks (`dispatch_bin_command`).
fn check_shape(h: &Header) -> Result<Shape, McbinError> {
    use opcode::*;
    let (key, ext, body) = (h.key_len as u32, h.extras_len as u32, h.body_len);
    let malformed = |needs| McbinError::Malformed {
        opcode: h.opcode,
        needs,
    };
    let (ok, shape, needs) = match h.opcode {
        VERSION | NOOP | QUIT | QUITQ | SASL_LIST_MECHS => (
            ext == 0 && key == 0 && body == 0,
            if h.opcode == SASL_LIST_MECHS {
                Shape::Unknown
            } else {
                Shape::Fixed
            },
            "no extras, key or value",
        ),
        FLUSH | FLUSHQ => (
            key == 0 && body == ext && (ext == 0 || ext == 4),
            Shape::Fixed,
            "no key or value and 0 or 4 bytes of extras",
        ),
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ => (
            ext == 8 && key != 0,
            Shape::Storage,
            "8 bytes of extras and a key",
        ),
        APPEND | APPENDQ | PREPEND | PREPENDQ => {
            (ext == 0 && key != 0, Shape::Storage, "a key and no extras")
        }
        GET | GETQ | GETK | GETKQ | DELETE | DELETEQ => (
            ext == 0 && key != 0 && body == key,
            Shape::Fixed,
            "a key only",
        ),
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ => (
            ext == 20 && key != 0 && body == key + ext,
            Shape::Fixed,
            "20 bytes of extras and a key, no value",
        ),
        TOUCH | GAT | GATQ | GATK | GATKQ => (
            ext == 4 && key != 0 && body == key + ext,
            Shape::Fixed,
            "4 bytes of extras and a key, no value",
        ),
        STAT => (ext == 0 && body == key, Shape::Fixed, "no extras or value"),
        SASL_AUTH | SASL_STEP => (
            ext == 0 && key != 0,
            Shape::Unknown,
            "a key (the mechanism) and no extras",
        ),
        _ => (true, Shape::Unknown, ""),
    };
    if ok { Ok(shape) } else { Err(malformed(needs)) }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
        Some(Ok(b)) => u64::from_be_bytes(b),
        _ => 0,
    }
}

/// Decodes a packet whose lengths [`check_shape`] accepted (never `Shape::Unknown`).
fn decode(h: &Header, extras: &[u8], key: &[u8], value: &[u8]) -> Command {
    use opcode::*;
    let key = key.to_vec();
    let op = h.opcode;
    match op {
        GET | GETQ | GETK | GETKQ => Command::Get {
            key,
            quiet: matches!(op, GETQ | GETKQ),
            with_key: matches!(op, GETK | GETKQ),
        },
        TOUCH => Command::Touch {
            key,
            exptime: be_u32(extras, 0),
        },
        GAT | GATQ | GATK | GATKQ => Command::Gat {
            key,
            exptime: be_u32(extras, 0),
            quiet: matches!(op, GATQ | GATKQ),
            with_key: matches!(op, GATK | GATKQ),
        },
        SET | SETQ | ADD | ADDQ | REPLACE | REPLACEQ | APPEND | APPENDQ | PREPEND | PREPENDQ => {
            let mode = match op {
                SET | SETQ => StoreMode::Set,
                ADD | ADDQ => StoreMode::Add,
                REPLACE | REPLACEQ => StoreMode::Replace,
                APPEND | APPENDQ => StoreMode::Append,
                _ => StoreMode::Prepend,
            };
            Command::Store {
                mode,
                key,
                value: value.to_vec(),
                flags: be_u32(extras, 0),
                exptime: be_u32(extras, 4),
                quiet: matches!(op, SETQ | ADDQ | REPLACEQ | APPENDQ | PREPENDQ),
            }
        }
        DELETE | DELETEQ => Command::Delete {
            key,
            quiet: op == DELETEQ,
        },
        INCREMENT | INCREMENTQ | DECREMENT | DECREMENTQ => Command::Arith {
            key,
            decr: matches!(op, DECREMENT | DECREMENTQ),
            delta: be_u64(extras, 0),
            initial: be_u64(extras, 8),
            exptime: be_u32(extras, 16),
            quiet: matches!(op, INCREMENTQ | DECREMENTQ),
        },
        FLUSH | FLUSHQ => Command::Flush {
            exptime: be_u32(extras, 0),
            quiet: op == FLUSHQ,
        },
        VERSION => Command::Version,
        STAT => Command::Stat { key },
        QUIT | QUITQ => Command::Quit { quiet: op == QUITQ },
        // NOOP, and nothing else reaches here (check_shape sends the rest to Unknown).
        _ => Command::Noop,
    }
}

/// Appends a response header.
pub fn write_header(
    out: &mut Vec<u8>,
    request: &Header,
    status: u16,
    extras_len: u8,
    key_len: u16,
    body_len: u32,
    cas: u64,
) {
    out.push(MAGIC_RESPONSE);
    out.push(request.opcode);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.push(extras_len);
    out.push(0); // datatype: raw bytes
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&request.opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
}

/// Appends a whole response to `request`: header, extras, key, value. Key and value
/// must fit their length fields (keys are at most 250 bytes, values at most the value
/// limit; a longer value is cut, never sent with a wrong length).
pub fn write_response(
    out: &mut Vec<u8>,
    request: &Header,
    status: Status,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let extras = &extras[..extras.len().min(u8::MAX as usize)];
    let key = &key[..key.len().min(u16::MAX as usize)];
    let room = u32::MAX as usize - extras.len() - key.len();
    let value = &value[..value.len().min(room)];
    let body = (extras.len() + key.len() + value.len()) as u32;
    write_header(
        out,
        request,
        status.code(),
        extras.len() as u8,
        key.len() as u16,
        body,
        cas,
    );
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends an error response with memcached's message for `status`.
pub fn write_error(out: &mut Vec<u8>, request: &Header, status: Status) {
    write_error_message(out, request, status, status.message());
}

/// Appends an error response with `message` as its body (cas 0).
pub fn write_error_message(out: &mut Vec<u8>, request: &Header, status: Status, message: &str) {
    write_response(out, request, status, 0, &[], &[], message.as_bytes());
}

/// Appends one stat packet (key = name, value = value); an empty name and value end
/// the list.
pub fn write_stat(out: &mut Vec<u8>, request: &Header, name: &str, value: &str) {
    let mut header = *request;
    header.opcode = opcode::STAT;
    write_response(
        out,
        &header,
        Status::Ok,
        0,
        &[],
        name.as_bytes(),
        value.as_bytes(),
    );
}

/// The seconds from `now` (Unix seconds) of a flush's memcached exptime: relative up to
/// 30 days, else a Unix time (one in the past: at once).
pub fn flush_delay(exptime: u32, now: u64) -> u32 {
    if i64::from(exptime) <= RELATIVE_EXPTIME_MAX {
        exptime
    } else {
        u64::from(exptime).saturating_sub(now) as u32
    }
}

/// What a packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Serve `request` through the router, then encode its outcome with `answer`.
    Router {
        /// The request.
        request: Request,
        /// How to answer it.
        answer: Answer,
    },
    /// noop: answer status 0.
    Noop,
    /// version: answer the version string.
    Version,
    /// stat: answer the section's statistics.
    Stat(String),
    /// quit: answer (unless quiet) and close.
    Quit {
        /// quitq: close without a reply.
        quiet: bool,
    },
}

/// Which reply layout an outcome is encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// get family: flags, optional key, value.
    Get,
    /// touch: flags only.
    Touch,
    /// A storage command, in the mode the client asked for.
    Store(StoreMode),
    /// delete.
    Delete,
    /// incr/decr: 8-byte value.
    Arith,
    /// flush.
    Flush,
}

/// How to encode the router's outcome for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request's header (opcode and opaque are echoed).
    pub header: Header,
    /// The reply layout.
    pub kind: Kind,
    /// Quiet form: nothing on success (gets: nothing on a miss).
    pub quiet: bool,
    /// getk/gatk: the key, returned in hits and misses.
    pub key: Option<Vec<u8>>,
}

/// What `packet` asks for; `now` (Unix seconds) turns an absolute flush time into a
/// delay.
pub fn dispatch(packet: Packet, now: u64) -> Dispatch {
    let header = packet.header;
    let cas = header.cas;
    let answer = |kind, quiet, key: Option<&[u8]>| Answer {
        header,
        kind,
        quiet,
        key: key.map(<[u8]>::to_vec),
    };
    let (request, answer) = match packet.command {
        Command::Noop => return Dispatch::Noop,
        Command::Version => return Dispatch::Version,
        Command::Quit { quiet } => return Dispatch::Quit { quiet },
        Command::Stat { key } => {
            return Dispatch::Stat(String::from_utf8_lossy(&key).into_owned());
        }
        Command::Get {
            key,
            quiet,
            with_key,
        } => {
            let answer = answer(Kind::Get, quiet, with_key.then_some(&key[..]));
            (Request::Get { key }, answer)
        }
        Command::Touch { key, exptime } => (
            Request::Touch {
                key,
                exptime: i64::from(exptime),
            },
            answer(Kind::Touch, false, None),
        ),
        Command::Gat {
            key,
            exptime,
            quiet,
            with_key,
        } => {
            let answer = answer(Kind::Get, quiet, with_key.then_some(&key[..]));
            let exptime = i64::from(exptime);
            (Request::Touch { key, exptime }, answer)
        }
        Command::Store {
            mode,
            key,
            value,
            flags,
            exptime,
            quiet,
        } => {
            let answer = answer(Kind::Store(mode), quiet, None);
            let request = match mode {
                StoreMode::Set if exptime == 0 && cas == 0 => Request::Put { key, value, flags },
                // memcached: an add or replace with a cas is a cas.
                StoreMode::Add | StoreMode::Replace if cas != 0 => Request::Store {
                    mode: StoreMode::Set,
                    key,
                    value,
                    flags,
                    exptime: i64::from(exptime),
                    cas,
                },
                mode => Request::Store {
                    mode,
                    key,
                    value,
                    flags,
                    exptime: i64::from(exptime),
                    cas,
                },
            };
            (request, answer)
        }
        Command::Delete { key, quiet } => (
            Request::Delete { key, cas },
            answer(Kind::Delete, quiet, None),
        ),
        Command::Arith {
            key,
            decr,
            delta,
            initial,
            exptime,
            quiet,
        } => (
            Request::Arith {
                key,
                decr,
                delta,
                create: (exptime != NO_CREATE).then_some(Create {
                    initial,
                    exptime: i64::from(exptime),
                    flags: 0,
                }),
                exptime: None,
                cas,
            },
            answer(Kind::Arith, quiet, None),
        ),
        Command::Flush { exptime, quiet } => (
            Request::FlushAll {
                delay: flush_delay(exptime, now),
            },
            answer(Kind::Flush, quiet, None),
        ),
    };
    Dispatch::Router { request, answer }
}

impl Answer {
    /// Appends the reply to `outcome` (nothing where a quiet command stays silent).
    pub fn write(&self, out: &mut Vec<u8>, outcome: Outcome) {
        let h = &self.header;
        let ok = |out: &mut Vec<u8>, cas: u64| {
            if !self.quiet {
                write_response(out, h, Status::Ok, cas, &[], &[], &[]);
            }
        };
        match (self.kind, outcome) {
            (Kind::Get, Outcome::Found(found)) => {
                let key = self.key.as_deref().unwrap_or_default();
                write_response(
                    out,
                    h,
                    Status::Ok,
                    found.version,
                    &found.flags.to_be_bytes(),
                    key,
                    &found.value,
                );
            }
            (Kind::Get, Outcome::NotFound) if self.quiet => {}
            (Kind::Get, Outcome::NotFound) => match &self.key {
                Some(key) => write_response(out, h, Status::NotFound, 0, &[], key, &[]),
                None => write_error(out, h, Status::NotFound),
            },
            (Kind::Touch, Outcome::Found(found)) => write_response(
                out,
                h,
                Status::Ok,
                found.version,
                &found.flags.to_be_bytes(),
                &[],
                &[],
            ),
            (Kind::Store(_), Outcome::Stored { version }) => ok(out, version),
            // memcached: an append or prepend that would make the value too large is
            // not stored (a value too large by itself was refused by `parse`).
            (
                Kind::Store(StoreMode::Append | StoreMode::Prepend),
                Outcome::Failed(Failure::TooLarge),
            ) => write_error(out, h, Status::NotStored),
            (Kind::Store(mode), Outcome::NotStored) => {
                let status = match mode {
                    StoreMode::Add => Status::Exists,
                    StoreMode::Replace => Status::NotFound,
                    _ => Status::NotStored,
                };
                write_error(out, h, status);
            }
            (Kind::Delete, Outcome::Deleted) => ok(out, 0),
            (Kind::Arith, Outcome::Number { value, version }) => {
                if !self.quiet {
                    write_response(out, h, Status::Ok, version, &[], &[], &value.to_be_bytes());
                }
            }
            (Kind::Arith, Outcome::NotStored) => write_error(out, h, Status::NotStored),
            (Kind::Flush, Outcome::Flushed) => ok(out, 0),
            (_, Outcome::NotFound) => write_error(out, h, Status::NotFound),
            (_, Outcome::Exists) => write_error(out, h, Status::Exists),
            (_, Outcome::Failed(failure)) => write_failure(out, h, &failure),
            (kind, other) => write_error_message(
                out,
                h,
                Status::OutOfMemory,
                &format!("unexpected outcome {other:?} for {kind:?}"),
            ),
        }
    }
}

/// Appends the error reply for a failed request.
pub fn write_failure(out: &mut Vec<u8>, request: &Header, failure: &Failure) {
    match failure {
        Failure::Invalid(why) => write_error_message(out, request, Status::Invalid, why),
        Failure::TooLarge => write_error(out, request, Status::TooLarge),
        Failure::NonNumeric => write_error(out, request, Status::NonNumeric),
        Failure::Unavailable(why) => write_error_message(out, request, Status::OutOfMemory, why),
    }
}

#[cfg(test)]
mod tests {
    //! Golden bytes: requests as libmemcached and memccapable send them, responses as
    //! memcached 1.6.18 sent them to those requests (captured on loopback).

    use super::*;
    use crate::request::Found;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn limits() -> TextLimits {
        TextLimits::default()
    }

    fn packet(bytes: &[u8]) -> Packet {
        match parse(bytes, &limits()) {
            Parsed::Packet { packet, consumed } => {
                assert_eq!(consumed, bytes.len());
                packet
            }
            other => panic!("not a packet: {other:?}"),
        }
    }

    fn header(op: u8, opaque: u32) -> Header {
        Header {
            opcode: op,
            key_len: 0,
            extras_len: 0,
            data_type: 0,
            vbucket: 0,
            body_len: 0,
            opaque,
            cas: 0,
        }
    }

    fn answer(kind: Kind, op: u8, opaque: u32, quiet: bool, key: Option<&[u8]>) -> Answer {
        Answer {
            header: header(op, opaque),
            kind,
            quiet,
            key: key.map(<[u8]>::to_vec),
        }
    }

    fn written(answer: &Answer, outcome: Outcome) -> Vec<u8> {
        let mut out = Vec::new();
        answer.write(&mut out, outcome);
        out
    }

    fn found(value: &[u8], flags: u32, version: u64) -> Outcome {
        Outcome::Found(Found {
            value: value.to_vec(),
            flags,
            version,
            expires: 0,
        })
    }

    fn refused(bytes: &[u8]) -> (McbinError, Vec<u8>, usize) {
        match parse(bytes, &limits()) {
            Parsed::Error {
                error, reply, skip, ..
            } => (error, reply, skip),
            other => panic!("not refused: {other:?}"),
        }
    }

    fn request_of(bytes: &[u8]) -> (Request, Answer) {
        match dispatch(packet(bytes), 1_800_000_000) {
            Dispatch::Router { request, answer } => (request, answer),
            other => panic!("not for the router: {other:?}"),
        }
    }

    #[test]
    fn set_request_parses_and_its_reply_is_byte_exact() {
        let bytes =
            hex("80010003080000000000000e112233440000000000000000deadbeef00000000666f6f626172");
        let (request, answer) = request_of(&bytes);
        assert_eq!(
            request,
            Request::Put {
                key: b"foo".to_vec(),
                value: b"bar".to_vec(),
                flags: 0xdead_beef
            }
        );
        assert_eq!(
            written(&answer, Outcome::Stored { version: 0x71 }),
            hex("810100000000000000000000112233440000000000000071")
        );
        assert_eq!(
            written(&answer, Outcome::Exists),
            hex(
                "810100000000000200000014112233440000000000000000 446174612065786973747320666f72206b65792e"
            )
        );
    }

    #[test]
    fn setq_with_cas_and_exptime_is_a_store_and_silent_on_success() {
        let bytes = hex("80110001080000000000000a00000007000000000000008300000005000000646b76");
        let (request, answer) = request_of(&bytes);
        assert_eq!(
            request,
            Request::Store {
                mode: StoreMode::Set,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                flags: 5,
                exptime: 100,
                cas: 0x83
            }
        );
        assert!(answer.quiet);
        assert!(written(&answer, Outcome::Stored { version: 9 }).is_empty());
        // Errors are still reported, with the quiet opcode.
        assert_eq!(
            written(&answer, Outcome::NotFound),
            hex("8111000000000001000000090000000700000000000000004e6f7420666f756e64")
        );
    }

    #[test]
    fn get_family_replies_are_byte_exact() {
        let get = answer(Kind::Get, opcode::GET, 2, false, None);
        assert_eq!(
            written(&get, found(b"bar", 0xdead_beef, 0x71)),
            hex("810000000400000000000007000000020000000000000071deadbeef626172")
        );
        let get_miss = answer(Kind::Get, opcode::GET, 4, false, None);
        assert_eq!(
            written(&get_miss, Outcome::NotFound),
            hex("8100000000000001000000090000000400000000000000004e6f7420666f756e64")
        );
        let getk = answer(Kind::Get, opcode::GETK, 3, false, Some(b"foo"));
        assert_eq!(
            written(&getk, found(b"bar", 0xdead_beef, 0x71)),
            hex("810c0003040000000000000a000000030000000000000071deadbeef666f6f626172")
        );
        let getk_miss = answer(Kind::Get, opcode::GETK, 5, false, Some(b"nope"));
        assert_eq!(
            written(&getk_miss, Outcome::NotFound),
            hex("810c000400000001000000040000000500000000000000006e6f7065")
        );
        let getq = answer(Kind::Get, opcode::GETQ, 13, true, None);
        assert!(written(&getq, Outcome::NotFound).is_empty());
        assert_eq!(
            written(&getq, found(b"1", 7, 0x81)),
            hex("8109000004000000000000050000000d00000000000000810000000731")
        );
        let getkq = answer(Kind::Get, opcode::GETKQ, 6, true, Some(b"foo"));
        assert!(written(&getkq, Outcome::NotFound).is_empty());
        assert_eq!(
            written(&getkq, found(b"bar", 0xdead_beef, 0x71)),
            hex("810d0003040000000000000a000000060000000000000071deadbeef666f6f626172")
        );
    }

    #[test]
    fn getk_request_keeps_the_key_for_the_reply() {
        let (request, answer) = request_of(&hex(
            "800c00030000000000000003000000030000000000000000666f6f",
        ));
        assert_eq!(
            request,
            Request::Get {
                key: b"foo".to_vec()
            }
        );
        assert_eq!(answer.key.as_deref(), Some(&b"foo"[..]));
        assert!(!answer.quiet);
    }

    #[test]
    fn touch_and_gat_replies_are_byte_exact() {
        let touch = answer(Kind::Touch, opcode::TOUCH, 0x17, false, None);
        assert_eq!(
            written(&touch, found(b"v", 0, 0x78)),
            hex("811c0000040000000000000400000017000000000000007800000000")
        );
        assert_eq!(
            written(&touch, Outcome::NotFound),
            hex("811c000000000001000000090000001700000000000000004e6f7420666f756e64")
        );
        let gat = answer(Kind::Get, opcode::GAT, 0x18, false, None);
        assert_eq!(
            written(&gat, found(b"v", 0, 0x78)),
            hex("811d000004000000000000050000001800000000000000780000000076")
        );
        let gatk = answer(Kind::Get, opcode::GATK, 0x18, false, Some(b"q"));
        assert_eq!(
            written(&gatk, found(b"v", 0, 0x78)),
            hex("812300010400000000000006000000180000000000000078000000007176")
        );
        let gatk_miss = answer(Kind::Get, opcode::GATK, 0x18, false, Some(b"nope"));
        assert_eq!(
            written(&gatk_miss, Outcome::NotFound),
            hex("8123000400000001000000040000001800000000000000006e6f7065")
        );
        let gatq = answer(Kind::Get, opcode::GATQ, 0x0d, true, None);
        assert_eq!(
            written(&gatq, found(b"1", 7, 0x81)),
            hex("811e000004000000000000050000000d00000000000000810000000731")
        );
        // gatkq: a miss says nothing.
        let (request, answer) = request_of(&hex(
            "8024000104000000000000050000001800000000000000000000006471",
        ));
        assert_eq!(
            request,
            Request::Touch {
                key: b"q".to_vec(),
                exptime: 100
            }
        );
        assert!(written(&answer, Outcome::NotFound).is_empty());
    }

    #[test]
    fn storage_failures_use_memcacheds_status_per_command() {
        let add = answer(Kind::Store(StoreMode::Add), opcode::ADD, 8, false, None);
        assert_eq!(
            written(&add, Outcome::NotStored),
            hex(
                "810200000000000200000014000000080000000000000000446174612065786973747320666f72206b65792e"
            )
        );
        let addq = answer(Kind::Store(StoreMode::Add), opcode::ADDQ, 0x15, true, None);
        assert_eq!(
            written(&addq, Outcome::NotStored),
            hex(
                "811200000000000200000014000000150000000000000000446174612065786973747320666f72206b65792e"
            )
        );
        let replace = answer(
            Kind::Store(StoreMode::Replace),
            opcode::REPLACE,
            9,
            false,
            None,
        );
        assert_eq!(
            written(&replace, Outcome::NotStored),
            hex("8103000000000001000000090000000900000000000000004e6f7420666f756e64")
        );
        let append = answer(
            Kind::Store(StoreMode::Append),
            opcode::APPEND,
            10,
            false,
            None,
        );
        assert_eq!(
            written(&append, Outcome::NotStored),
            hex("810e0000000000050000000b0000000a00000000000000004e6f742073746f7265642e")
        );
        assert_eq!(
            written(&append, Outcome::Stored { version: 0x72 }),
            hex("810e000000000000000000000000000a0000000000000072")
        );
        let appendq = answer(
            Kind::Store(StoreMode::Append),
            opcode::APPENDQ,
            11,
            true,
            None,
        );
        assert_eq!(
            written(&appendq, Outcome::NotStored),
            hex("81190000000000050000000b0000000b00000000000000004e6f742073746f7265642e")
        );
        let set = answer(Kind::Store(StoreMode::Set), opcode::SET, 12, false, None);
        assert_eq!(
            written(&set, Outcome::NotFound),
            hex("8101000000000001000000090000000c00000000000000004e6f7420666f756e64")
        );
        let cas_add = answer(Kind::Store(StoreMode::Add), opcode::ADD, 12, false, None);
        assert_eq!(
            written(&cas_add, Outcome::NotFound),
            hex("8102000000000001000000090000000c00000000000000004e6f7420666f756e64")
        );
        // An append or prepend that would grow the value past the limit: Not stored.
        assert_eq!(
            written(&append, Outcome::Failed(Failure::TooLarge)),
            hex("810e0000000000050000000b0000000a00000000000000004e6f742073746f7265642e")
        );
        assert_eq!(
            written(&set, Outcome::Failed(Failure::TooLarge)),
            hex("8101000000000003000000 0a 0000000c0000000000000000546f6f206c617267652e")
        );
    }

    #[test]
    fn add_and_replace_with_a_cas_are_a_cas() {
        let mut bytes =
            hex("80020003080000000000000e112233440000000000000000deadbeef00000000666f6f626172");
        bytes[23] = 0x55;
        let (request, answer) = request_of(&bytes);
        assert_eq!(
            request,
            Request::Store {
                mode: StoreMode::Set,
                key: b"foo".to_vec(),
                value: b"bar".to_vec(),
                flags: 0xdead_beef,
                exptime: 0,
                cas: 0x55
            }
        );
        assert_eq!(answer.kind, Kind::Store(StoreMode::Add));
        bytes[1] = opcode::REPLACE;
        let (request, _) = request_of(&bytes);
        assert!(matches!(
            request,
            Request::Store {
                mode: StoreMode::Set,
                cas: 0x55,
                ..
            }
        ));
        bytes[23] = 0;
        let (request, _) = request_of(&bytes);
        assert!(matches!(
            request,
            Request::Store {
                mode: StoreMode::Replace,
                cas: 0,
                ..
            }
        ));
    }

    #[test]
    fn append_request_has_no_extras() {
        let (request, _) = request_of(&hex(
            "800e000300000000000000040000000a0000000000000000666f6f78",
        ));
        assert_eq!(
            request,
            Request::Store {
                mode: StoreMode::Append,
                key: b"foo".to_vec(),
                value: b"x".to_vec(),
                flags: 0,
                exptime: 0,
                cas: 0
            }
        );
        let mut prepend = hex("800f000300000000000000040000000a0000000000000000666f6f78");
        prepend[1] = opcode::PREPENDQ;
        let (request, answer) = request_of(&prepend);
        assert!(matches!(
            request,
            Request::Store {
                mode: StoreMode::Prepend,
                ..
            }
        ));
        assert!(answer.quiet);
    }

    #[test]
    fn delete_replies_are_byte_exact() {
        let (request, deleteq) = request_of(&hex(
            "8014000300000000000000030000000d0000000000000071666f6f",
        ));
        assert_eq!(
            request,
            Request::Delete {
                key: b"foo".to_vec(),
                cas: 0x71
            }
        );
        assert!(deleteq.quiet);
        assert!(written(&deleteq, Outcome::Deleted).is_empty());
        let delete = answer_for(opcode::DELETE, 0x0d, Kind::Delete);
        assert_eq!(
            written(&delete, Outcome::Deleted),
            hex("8104000000000000000000000000000d0000000000000000")
        );
        let delete = answer_for(opcode::DELETE, 0x0e, Kind::Delete);
        assert_eq!(
            written(&delete, Outcome::NotFound),
            hex("8104000000000001000000090000000e00000000000000004e6f7420666f756e64")
        );
        let deleteq = answer(Kind::Delete, opcode::DELETEQ, 0x2a, true, None);
        assert_eq!(
            written(&deleteq, Outcome::NotFound),
            hex("8114000000000001000000090000002a00000000000000004e6f7420666f756e64")
        );
        let delete = answer_for(opcode::DELETE, 9, Kind::Delete);
        assert_eq!(
            written(&delete, Outcome::Exists),
            hex(
                "810400000000000200000014000000090000000000000000446174612065786973747320666f72206b65792e"
            )
        );
    }

    fn answer_for(op: u8, opaque: u32, kind: Kind) -> Answer {
        answer(kind, op, opaque, false, None)
    }

    #[test]
    fn arith_requests_and_replies_are_byte_exact() {
        let (request, answer) = request_of(&hex(
            "8005000114000000000000150000000f00000000000000000000000000000001000000000000000a000000006e",
        ));
        assert_eq!(
            request,
            Request::Arith {
                key: b"n".to_vec(),
                decr: false,
                delta: 1,
                create: Some(Create {
                    initial: 10,
                    exptime: 0,
                    flags: 0
                }),
                exptime: None,
                cas: 0
            }
        );
        assert_eq!(
            written(
                &answer,
                Outcome::Number {
                    value: 10,
                    version: 0x74
                }
            ),
            hex("8105000000000000000000080000000f0000000000000074000000000000000a")
        );
        let decr = answer_for(opcode::DECREMENT, 0x10, Kind::Arith);
        assert_eq!(
            written(
                &decr,
                Outcome::Number {
                    value: 0,
                    version: 0x76
                }
            ),
            hex("8106000000000000000000080000001000000000000000760000000000000000")
        );
        let incr = answer_for(opcode::INCREMENT, 9, Kind::Arith);
        assert_eq!(
            written(
                &incr,
                Outcome::Number {
                    value: 1,
                    version: 0x7f
                }
            ),
            hex("81050000000000000000000800000009000000000000007f0000000000000001")
        );
        let incr = answer_for(opcode::INCREMENT, 0x11, Kind::Arith);
        assert_eq!(
            written(&incr, Outcome::NotFound),
            hex("8105000000000001000000090000001100000000000000004e6f7420666f756e64")
        );
        let incr = answer_for(opcode::INCREMENT, 0x12, Kind::Arith);
        assert_eq!(
            written(&incr, Outcome::Failed(Failure::NonNumeric)),
            hex(
                "81050000000000060000002e000000120000000000000000 4e6f6e2d6e756d65726963207365727665722d736964652076616c756520666f7220696e6372206f722064656372"
            )
        );
        let (request, answer) = request_of(&hex(
            "80160001140000000000001500000010000000000000000900000000000000020000000000000000ffffffff6e",
        ));
        assert_eq!(
            request,
            Request::Arith {
                key: b"n".to_vec(),
                decr: true,
                delta: 2,
                create: None,
                exptime: None,
                cas: 9
            }
        );
        assert!(
            written(
                &answer,
                Outcome::Number {
                    value: 3,
                    version: 1
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn flush_noop_version_quit_and_stat() {
        let (request, answer) = request_of(&hex(
            "8008000004000000000000040000002100000000000000000000001e",
        ));
        assert_eq!(request, Request::FlushAll { delay: 30 });
        let mut out = Vec::new();
        answer.write(&mut out, Outcome::Flushed);
        assert_eq!(out, hex("810800000000000000000000000000210000000000000000"));
        let flushq = hex("801800000000000000000000000000010000000000000000");
        let (request, answer) = request_of(&flushq);
        assert_eq!(request, Request::FlushAll { delay: 0 });
        assert!(written(&answer, Outcome::Flushed).is_empty());

        let noop = packet(&hex("800a00000000000000000000000000140000000000000000"));
        assert_eq!(noop.command, Command::Noop);
        let mut out = Vec::new();
        write_response(&mut out, &noop.header, Status::Ok, 0, &[], &[], &[]);
        assert_eq!(out, hex("810a00000000000000000000000000140000000000000000"));

        let version = packet(&hex("800b00000000000000000000000000130000000000000000"));
        assert_eq!(dispatch(version.clone(), 0), Dispatch::Version);
        let mut out = Vec::new();
        write_response(
            &mut out,
            &version.header,
            Status::Ok,
            0,
            &[],
            &[],
            b"1.6.18",
        );
        assert_eq!(
            out,
            hex("810b00000000000000000006000000130000000000000000312e362e3138")
        );

        let quit = packet(&hex("800700000000000000000000000000280000000000000000"));
        assert_eq!(dispatch(quit, 0), Dispatch::Quit { quiet: false });
        let quitq = packet(&hex("801700000000000000000000000000290000000000000000"));
        assert_eq!(dispatch(quitq, 0), Dispatch::Quit { quiet: true });

        let stat = packet(&hex(
            "80100008000000000000000800000006000000000000000073657474696e6773",
        ));
        assert_eq!(dispatch(stat, 0), Dispatch::Stat("settings".into()));
        let stat = packet(&hex("801000000000000000000000000000050000000000000000"));
        let mut out = Vec::new();
        write_stat(&mut out, &stat.header, "pid", "9467");
        write_stat(&mut out, &stat.header, "", "");
        assert_eq!(
            out,
            hex(
                "81100003000000000000000700000005000000000000000070696439343637 811000000000000000000000000000050000000000000000"
            )
        );
        let unknown = header(opcode::STAT, 0x19);
        let mut out = Vec::new();
        write_error(&mut out, &unknown, Status::NotFound);
        assert_eq!(
            out,
            hex("8110000000000001000000090000001900000000000000004e6f7420666f756e64")
        );
    }

    #[test]
    fn flush_delay_follows_memcacheds_exptime_rule() {
        let now = 1_800_000_000;
        assert_eq!(flush_delay(0, now), 0);
        assert_eq!(flush_delay(60, now), 60);
        assert_eq!(
            flush_delay(RELATIVE_EXPTIME_MAX as u32, now),
            RELATIVE_EXPTIME_MAX as u32
        );
        assert_eq!(flush_delay(now as u32 + 90, now), 90);
        assert_eq!(flush_delay(now as u32 - 90, now), 0);
    }

    #[test]
    fn failures_map_to_statuses() {
        let set = answer_for(opcode::SET, 1, Kind::Store(StoreMode::Set));
        assert_eq!(
            written(
                &set,
                Outcome::Failed(Failure::Unavailable("no slaves".into()))
            ),
            hex("8101000000000082000000090000000100000000000000006e6f20736c61766573")
        );
        assert_eq!(
            written(&set, Outcome::Failed(Failure::Invalid("empty key".into()))),
            hex("810100000000000400000009000000010000000000000000656d707479206b6579")
        );
        // An outcome that does not belong to the request is a server error, not a panic.
        let out = written(&set, Outcome::Deleted);
        assert_eq!(&out[..8], &hex("8101000000000082")[..]);
    }

    #[test]
    fn unknown_and_sasl_opcodes_answer_unknown_command_and_skip_the_body() {
        let mut unknown = hex("805000000000000000000004000000 1d0000000000000000 7a7a7a7a");
        unknown.extend(hex("800a000000000000000000000000001e0000000000000000"));
        let (error, reply, skip) = refused(&unknown);
        assert_eq!(error, McbinError::UnknownCommand(0x50));
        assert!(!error.closes());
        assert_eq!(skip, 28);
        assert_eq!(
            reply,
            hex("81500000000000810000000f0000001d0000000000000000556e6b6e6f776e20636f6d6d616e64")
        );
        assert_eq!(packet(&unknown[skip..]).command, Command::Noop);
        let (_, reply, _) = refused(&hex("802000000000000000000000 0000001b 0000000000000000"));
        assert_eq!(
            reply,
            hex("81200000000000810000000f0000001b0000000000000000556e6b6e6f776e20636f6d6d616e64")
        );
        let auth = hex("80210005000000000000000900000 01c0000000000000000 504c41494e 00750070");
        let (error, reply, skip) = refused(&auth);
        assert_eq!(error, McbinError::UnknownCommand(opcode::SASL_AUTH));
        assert_eq!(skip, auth.len());
        assert_eq!(
            reply,
            hex("81210000000000810000000f0000001c0000000000000000556e6b6e6f776e20636f6d6d616e64")
        );
    }

    #[test]
    fn malformed_packets_get_memcacheds_reply_and_close() {
        // A get with extras.
        let (error, reply, _) = refused(&hex(
            "80000003040000000000000700000024000000000000000061626364666f6f",
        ));
        assert!(error.closes());
        assert_eq!(
            reply,
            hex(
                "810000000000000400000011000000240000000000000000496e76616c696420617267756d656e7473"
            )
        );
        // A 251-byte key.
        let mut long = hex("800000fb00000000000000fb000000250000000000000000");
        long.extend(vec![b'k'; 251]);
        let (error, reply, _) = refused(&long);
        assert_eq!(error, McbinError::KeyTooLong { len: 251, max: 250 });
        assert_eq!(
            reply,
            hex(
                "810000000000000400000011000000250000000000000000496e76616c696420617267756d656e7473"
            )
        );
        // Key longer than the body.
        let (error, reply, _) = refused(&hex("8000000a000000000000000500000026 0000000000000000"));
        assert!(error.closes());
        assert_eq!(
            reply,
            hex("81000000000000810000000f000000260000000000000000556e6b6e6f776e20636f6d6d616e64")
        );
        // Body over 1 GiB: refused from the header alone.
        let (error, reply, _) =
            refused(&hex("8001000108000000 40000001 0000002e 0000000000000000"));
        assert_eq!(error, McbinError::BodyTooLarge(0x4000_0001));
        assert_eq!(&reply[..8], &hex("8101000000000004")[..]);
        // A set without extras, a noop with a body, a flush with 8 bytes of extras, an
        // append with extras, a stat with extras: all invalid arguments.
        for bytes in [
            "80010003000000000000000600000007 0000000000000000 666f6f626172",
            "800a000000000000000000010000000700000000000000 0078",
            "80080000080000000000000800000007 0000000000000000 0000000000000000",
            "800e0001040000000000000600000007 0000000000000000 61626364 7778",
            "80100000040000000000000400000006 0000000000000000 61626364",
        ] {
            let bytes = hex(bytes);
            let (error, reply, _) = refused(&bytes);
            assert!(matches!(error, McbinError::Malformed { .. }), "{error}");
            assert!(error.closes());
            assert_eq!(&reply[2..8], &hex("000000000004")[..], "{error}");
            assert_eq!(&reply[24..], b"Invalid arguments");
        }
        // Bad magic: no reply.
        let (error, reply, _) = refused(&hex("81000000"));
        assert_eq!(error, McbinError::BadMagic(0x81));
        assert!(reply.is_empty());
        assert!(error.closes());
    }

    #[test]
    fn a_value_over_the_limit_is_too_large_and_skipped() {
        let limits = TextLimits {
            max_value_bytes: 4,
            ..TextLimits::default()
        };
        let big = hex(
            "80010003080000000000001000000022 0000000000000000 0000000000000000 626967 7878787878",
        );
        // Refused once extras and key are there, before the value arrives.
        assert_eq!(parse(&big[..34], &limits), Parsed::Incomplete);
        match parse(&big[..35], &limits) {
            Parsed::Error {
                error,
                reply,
                skip,
                forget,
            } => {
                assert_eq!(error, McbinError::ValueTooLarge { len: 5, max: 4 });
                assert!(!error.closes());
                assert_eq!(skip, big.len());
                assert_eq!(
                    reply,
                    hex("81010000000000030000000a000000220000000000000000546f6f206c617267652e")
                );
                // memcached removes the old value of a set refused as too large...
                assert_eq!(forget.as_deref(), Some(&b"big"[..]));
            }
            other => panic!("{other:?}"),
        }
        // ... but not for add, replace, append, prepend.
        let mut add = big.clone();
        add[1] = opcode::ADD;
        assert!(matches!(
            parse(&add, &limits),
            Parsed::Error { forget: None, .. }
        ));
        // At the limit it is a packet.
        let fits = hex(
            "80010003080000000000000f00000022 0000000000000000 0000000000000000 626967 78787878",
        );
        assert!(matches!(parse(&fits, &limits), Parsed::Packet { .. }));
    }

    #[test]
    fn every_truncation_of_a_valid_packet_is_incomplete() {
        let packets = [
            "80010003080000000000000e112233440000000000000000deadbeef00000000666f6f626172",
            "8005000114000000000000150000000f00000000000000000000000000000001000000000000000a000000006e",
            "800c00030000000000000003000000030000000000000000666f6f",
            "8024000104000000000000050000001800000000000000000000006471",
            "80100008000000000000000800000006000000000000000073657474696e6773",
        ];
        for text in packets {
            let bytes = hex(text);
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse(&bytes[..cut], &limits()),
                    Parsed::Incomplete,
                    "{text} cut at {cut}"
                );
            }
            // Pipelined: the first packet comes out whole, the rest stays.
            let mut two = bytes.clone();
            two.extend_from_slice(&bytes);
            match parse(&two, &limits()) {
                Parsed::Packet { consumed, .. } => assert_eq!(consumed, bytes.len()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn every_opcode_parses_to_its_command() {
        // (opcode, extras, key, value)
        type Case<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);
        let cases: &[Case] = &[
            (opcode::GET, b"", b"k", b""),
            (opcode::GETQ, b"", b"k", b""),
            (opcode::GETK, b"", b"k", b""),
            (opcode::GETKQ, b"", b"k", b""),
            (opcode::SET, &[0; 8], b"k", b"v"),
            (opcode::SETQ, &[0; 8], b"k", b"v"),
            (opcode::ADD, &[0; 8], b"k", b"v"),
            (opcode::ADDQ, &[0; 8], b"k", b"v"),
            (opcode::REPLACE, &[0; 8], b"k", b"v"),
            (opcode::REPLACEQ, &[0; 8], b"k", b"v"),
            (opcode::APPEND, b"", b"k", b"v"),
            (opcode::APPENDQ, b"", b"k", b"v"),
            (opcode::PREPEND, b"", b"k", b"v"),
            (opcode::PREPENDQ, b"", b"k", b"v"),
            (opcode::DELETE, b"", b"k", b""),
            (opcode::DELETEQ, b"", b"k", b""),
            (opcode::INCREMENT, &[0; 20], b"k", b""),
            (opcode::INCREMENTQ, &[0; 20], b"k", b""),
            (opcode::DECREMENT, &[0; 20], b"k", b""),
            (opcode::DECREMENTQ, &[0; 20], b"k", b""),
            (opcode::TOUCH, &[0; 4], b"k", b""),
            (opcode::GAT, &[0; 4], b"k", b""),
            (opcode::GATQ, &[0; 4], b"k", b""),
            (opcode::GATK, &[0; 4], b"k", b""),
            (opcode::GATKQ, &[0; 4], b"k", b""),
            (opcode::FLUSH, b"", b"", b""),
            (opcode::FLUSHQ, &[0; 4], b"", b""),
            (opcode::NOOP, b"", b"", b""),
            (opcode::VERSION, b"", b"", b""),
            (opcode::STAT, b"", b"", b""),
            (opcode::STAT, b"", b"items", b""),
            (opcode::QUIT, b"", b"", b""),
            (opcode::QUITQ, b"", b"", b""),
        ];
        for &(op, extras, key, value) in cases {
            let bytes = encode_request(op, extras, key, value, 0xfeed, 0);
            let packet = packet(&bytes);
            assert_eq!(packet.header.opcode, op);
            assert_eq!(packet.header.opaque, 0xfeed);
            let routed = matches!(dispatch(packet.clone(), 0), Dispatch::Router { .. });
            let local = matches!(
                op,
                opcode::NOOP | opcode::VERSION | opcode::STAT | opcode::QUIT | opcode::QUITQ
            );
            assert_eq!(routed, !local, "opcode 0x{op:02x}: {:?}", packet.command);
        }
        for op in [opcode::SASL_LIST_MECHS, 0x1b, 0x25, 0x30, 0x50, 0xff] {
            let bytes = encode_request(op, b"", b"", b"", 1, 0);
            assert!(matches!(refused(&bytes).0, McbinError::UnknownCommand(o) if o == op));
        }
    }

    /// A request packet, as a client would send it.
    fn encode_request(
        op: u8,
        extras: &[u8],
        key: &[u8],
        value: &[u8],
        opaque: u32,
        cas: u64,
    ) -> Vec<u8> {
        let mut out = vec![MAGIC_REQUEST, op];
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.push(extras.len() as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
        out.extend_from_slice(&opaque.to_be_bytes());
        out.extend_from_slice(&cas.to_be_bytes());
        out.extend_from_slice(extras);
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    /// Deterministic xorshift64*.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Checks what `parse` says about `bytes` is consistent, and encodes an answer for
    /// any packet: nothing may panic.
    fn check_consistent(bytes: &[u8], limits: &TextLimits) {
        match parse(bytes, limits) {
            Parsed::Incomplete => {}
            Parsed::Packet { packet, consumed } => {
                assert!(consumed >= HEADER_LEN && consumed <= bytes.len());
                assert!(packet.header.key_len as usize <= limits.max_key_bytes);
                if let Dispatch::Router { answer, .. } = dispatch(packet, 1_800_000_000) {
                    let mut out = Vec::new();
                    for outcome in [
                        Outcome::NotFound,
                        Outcome::Stored { version: 1 },
                        Outcome::Failed(Failure::TooLarge),
                        Outcome::Number {
                            value: 2,
                            version: 3,
                        },
                    ] {
                        answer.write(&mut out, outcome);
                    }
                }
            }
            Parsed::Error {
                error, reply, skip, ..
            } => {
                assert!(reply.is_empty() || reply[0] == MAGIC_RESPONSE);
                assert!(error.closes() || skip >= HEADER_LEN, "{error}: skip {skip}");
                let _ = error.to_string();
            }
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let limits = TextLimits {
            max_value_bytes: 64,
            ..TextLimits::default()
        };
        let mut rng = Rng(0x6d63_6269_6e21);
        let seeds: Vec<Vec<u8>> = [
            "80010003080000000000000e112233440000000000000000deadbeef00000000666f6f626172",
            "8005000114000000000000150000000f00000000000000000000000000000001000000000000000a000000006e",
            "800c00030000000000000003000000030000000000000000666f6f",
            "8024000104000000000000050000001800000000000000000000006471",
            "8008000004000000000000040000002100000000000000000000001e",
            "800e000300000000000000040000000a0000000000000000666f6f78",
            "80100008000000000000000800000006000000000000000073657474696e6773",
        ]
        .iter()
        .map(|text| hex(text))
        .collect();
        for round in 0..40_000 {
            let bytes = match round % 4 {
                // Pure junk, mostly with the right magic.
                0 => {
                    let len = rng.below(80) as usize;
                    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if !bytes.is_empty() && rng.below(8) != 0 {
                        bytes[0] = MAGIC_REQUEST;
                    }
                    bytes
                }
                // A valid packet with a few bytes flipped.
                1 | 2 => {
                    let mut bytes = seeds[rng.below(seeds.len() as u64) as usize].clone();
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.next() as u8;
                    }
                    bytes
                }
                // A random header (any opcode and lengths) and a short random body.
                _ => {
                    let op = rng.next() as u8;
                    let extras: Vec<u8> = (0..rng.below(24)).map(|_| rng.next() as u8).collect();
                    let key: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                    let value: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                    let mut bytes = encode_request(op, &extras, &key, &value, 1, rng.next());
                    let cut = rng.below(bytes.len() as u64 + 1) as usize;
                    bytes.truncate(cut.max(bytes.len() - 4));
                    bytes
                }
            };
            check_consistent(&bytes, &limits);
        }
    }
}
