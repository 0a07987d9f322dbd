//! The binary wire format: frames, their header, the CRC rule, and the codec.
//!
//! Every message on a Piazza TCP connection (client to coordinator, coordinator to slave,
//! slave to coordinator) is one [`Frame`]: a fixed 36-byte header followed by the key and
//! the value. `protocol.md` describes the same bytes for people; the offsets below and the
//! tables there change in the same commit.
//!
//! Invariants:
//! - decoding validates the magic, the version, the reserved bytes and both lengths against
//!   [`WireLimits`] *before* allocating a single body byte, and checks the CRC before the
//!   frame is handed to anyone;
//! - this module never takes a lock and never decides anything about keys or tables: it
//!   only turns bytes into frames and back;
//! - "need more bytes" is [`WireError::Incomplete`], control flow rather than failure.

use std::fmt;
use std::io::{self, Read, Write};

use byteorder::{ByteOrder, NetworkEndian};

/// First byte of every frame. Not printable ASCII and not memcached's binary magic
/// (0x80/0x81), so the coordinator can tell the protocols apart from one byte.
pub const MAGIC: u8 = 0xA7;
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header in bytes (CRC included).
pub const HEADER_LEN: usize = 36;

/// Offset of the magic byte (u8).
pub const OFF_MAGIC: usize = 0;
/// Offset of the protocol version (u8).
pub const OFF_VERSION: usize = 1;
/// Offset of the opcode (u8).
pub const OFF_OPCODE: usize = 2;
/// Offset of the status (u8; 0 in requests).
pub const OFF_STATUS: usize = 3;
/// Offset of the request id (u32), echoed in the response.
pub const OFF_REQUEST_ID: usize = 4;
/// Offset of the 64-bit argument (u64): an entry version, a token, a count.
pub const OFF_ARG: usize = 8;
/// Offset of the memcached flags (u32), stored with a value and returned as given.
pub const OFF_FLAGS: usize = 16;
/// Offset of the table selector (u8): 0 none, 1 own, 2 previous.
pub const OFF_TABLE: usize = 20;
/// Offset of three reserved bytes that must be zero.
pub const OFF_RESERVED: usize = 21;
/// Offset of the key length (u32).
pub const OFF_KEY_LEN: usize = 24;
/// Offset of the value length (u32).
pub const OFF_VALUE_LEN: usize = 28;
/// Offset of the CRC32 (u32) over header bytes 0..32, then the key, then the value.
pub const OFF_CRC: usize = 32;

/// Default largest key accepted: 64 KiB.
pub const DEFAULT_MAX_KEY: usize = 64 * 1024;
/// Default largest value accepted: 1 MiB.
pub const DEFAULT_MAX_VALUE: usize = 1024 * 1024;
/// Largest value a bulk or status frame may carry, whatever `--max-value-bytes` says:
/// bulk chunks hold many entries and are capped by the sender at this size.
pub const MAX_BULK_VALUE: usize = 8 * 1024 * 1024;

/// What a frame asks for. Values 0x01..=0x0F are client requests to the coordinator,
/// 0x10..=0x1F are slave-to-coordinator, 0x20..=0x3F are coordinator-to-slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Read a key (client to coordinator).
    Get = 0x01,
    /// Store a key with flags (client to coordinator).
    Put = 0x02,
    /// Delete a key (client to coordinator).
    Delete = 0x03,
    /// Describe the ring (client to coordinator); the reply value is a TSV table.
    Status = 0x04,
    /// Do nothing, reply OK (any server).
    Ping = 0x05,
    /// Present the cluster secret (value) for this connection (any server).
    Auth = 0x06,
    /// Ask the coordinator for the routing view (direct routing): reply arg = epoch,
    /// flags bit 0 = stable, value = the members (see `view`).
    RingGet = 0x07,
    /// A conditional or read-modify-write operation (client to coordinator): value = the
    /// 40-byte operation (`update::Update`, its expiry field a memcached exptime), then
    /// the data. `set` with an expiry or a cas, `add`, `replace`, `append`, `prepend`,
    /// `incr`, `decr`, `touch`, delete with a cas.
    Update = 0x08,
    /// Forget everything stored so far (client to coordinator): arg = delay in seconds.
    Flush = 0x09,
    /// Read many keys at once (client to coordinator): value = packed keys; reply value =
    /// one packed result per key, in request order.
    MultiGet = 0x0A,
    /// A slave joins: key = the address it serves on; reply arg = token, flags = slave id.
    Register = 0x10,
    /// A slave leaves gracefully (flags = slave id, arg = session); answered once its data
    /// has been handed off.
    Deregister = 0x11,
    /// Read one key from a table of a slave.
    SlaveGet = 0x20,
    /// Store one versioned key into a table of a slave (older versions are ignored).
    SlavePut = 0x21,
    /// Write a versioned tombstone into a table of a slave.
    SlaveDelete = 0x22,
    /// Count live keys and tombstones in both tables of a slave.
    SlaveStats = 0x23,
    /// Apply a chunk of packed entries to a table of a slave, merging by version.
    BulkPut = 0x30,
    /// Ask a slave for a chunk of a table (arg = cursor; reply arg = next cursor, 0 = done).
    BulkGet = 0x31,
    /// Merge the `previous` entries inside a set of arcs into `own` and drop them from
    /// `previous` (value = arcs, see [`encode_arcs`]). Used when a slave becomes the
    /// primary of slots it held as the replica.
    Absorb = 0x24,
    /// Move the `own` entries inside a set of arcs to `previous` (merging). Used when a
    /// slave becomes the replica of slots it was the primary of.
    Demote = 0x25,
    /// Drop the entries of a table inside a set of arcs (value = arcs).
    DropArc = 0x26,
    /// Forget everything: both tables (a slave rejoining the ring starts empty).
    Clear = 0x27,
    /// Send a table (entries inside the arcs in value, or all) to another slave (key =
    /// its address) as its table `flags` (1 own, 2 previous), merging by version.
    Transfer = 0x32,
    /// The coordinator's routing view for direct requests (arg = epoch, flags bit 0 =
    /// stable, value = members); answered once no direct request of an older view is
    /// still being applied.
    SetView = 0x28,
    /// A primary passes a direct write on to the key's replica: table = previous, arg =
    /// version, flags = memcached flags; value = epoch (u64), kind (u8: 1 put, 0
    /// delete), then the value.
    Forward = 0x29,
    /// `SlavePut` with an expiry: value = expires (u64, Unix seconds), then the value.
    SlavePutEx = 0x2A,
    /// A read-modify-write decided by the key's primary (add, replace, append, prepend,
    /// cas, incr/decr, touch, delete with cas): arg = the version to write, value = the
    /// operation (`update::Update`). Reply `Ok` with the entry written (value = kind u8,
    /// expires u64, then the value; arg = version; flags), or `NotFound`, `NotStored`,
    /// `Exists`, `NonNumeric`, `Stale` (arg = the newer version held).
    SlaveUpdate = 0x2B,
    /// `flush_all`: arg = threshold version, value = from when (u64 Unix microseconds).
    SlaveFlush = 0x2C,
    /// Read many keys of a table (table 0: the newer of both): value = packed keys; reply
    /// value = one packed result per key, in order.
    SlaveMultiGet = 0x2D,
    /// Collection (protocol.md, "Collection"): arg = the horizon, a version. Without
    /// flags, drop from memory every tombstone and every expired or flushed value older
    /// than the horizon; with [`COLLECT_FORGET`], log and drop *every* entry older than it
    /// (a slave about to be joined). Reply arg = entries dropped, value = tombstones
    /// (u64) and values (u64) among them.
    SlaveCollect = 0x2E,
}

/// `SlaveCollect` flag: forget every entry older than the horizon, values too, as a
/// logged record (before a join's transfers).
pub const COLLECT_FORGET: u32 = 1;

impl Opcode {
    /// The opcode for a byte, or `None` for a byte no opcode uses.
    pub fn from_u8(byte: u8) -> Option<Opcode> {
        use Opcode::*;
        Some(match byte {
            0x01 => Get,
            0x02 => Put,
            0x03 => Delete,
            0x04 => Status,
            0x05 => Ping,
            0x06 => Auth,
            0x07 => RingGet,
            0x08 => Update,
            0x09 => Flush,
            0x0A => MultiGet,
            0x10 => Register,
            0x11 => Deregister,
            0x20 => SlaveGet,
            0x21 => SlavePut,
            0x22 => SlaveDelete,
            0x23 => SlaveStats,
            0x30 => BulkPut,
            0x31 => BulkGet,
            0x24 => Absorb,
            0x25 => Demote,
            0x26 => DropArc,
            0x27 => Clear,
            0x32 => Transfer,
            0x28 => SetView,
            0x29 => Forward,
            0x2A => SlavePutEx,
            0x2B => SlaveUpdate,
            0x2C => SlaveFlush,
            0x2D => SlaveMultiGet,
            0x2E => SlaveCollect,
            _ => return None,
        })
    }
}

/// The outcome a response reports. Requests carry `Ok` (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Done.
    Ok = 0x00,
    /// The key is not there (or only a tombstone is).
    NotFound = 0x01,
    /// The frame could not be decoded (bad magic, version, CRC, reserved bytes); the
    /// server closes the connection after this reply.
    BadFrame = 0x02,
    /// The opcode is not one this server serves; the connection stays open.
    UnknownOpcode = 0x03,
    /// The key or value is over the server's limit; the connection is closed.
    TooLarge = 0x04,
    /// The request is well framed but its arguments are wrong (empty key, bad table).
    Invalid = 0x05,
    /// The cluster cannot serve it now (no slaves, a replica did not answer).
    Unavailable = 0x06,
    /// The server hit an error of its own.
    ServerError = 0x07,
    /// The server is at its connection cap.
    Busy = 0x08,
    /// The connection has not presented the cluster secret (or a wrong one); closed.
    Unauthorized = 0x09,
    /// Direct routing: this slave is not the key's primary under the current view, or
    /// the view is changing; arg = the slave's view epoch. Fetch the view again
    /// (`RingGet`) or send the request to the coordinator.
    Redirect = 0x0A,
    /// A conditional write's cas did not match (memcached's `EXISTS`).
    Exists = 0x0B,
    /// A conditional write's condition did not hold (memcached's `NOT_STORED`).
    NotStored = 0x0C,
    /// incr/decr of a value that is not a decimal number.
    NonNumeric = 0x0D,
    /// `SlaveUpdate`: the key holds a newer version (arg) than the one proposed.
    Stale = 0x0E,
}

impl Status {
    /// The status for a byte, or `None` for an unknown byte.
    pub fn from_u8(byte: u8) -> Option<Status> {
        use Status::*;
        Some(match byte {
            0x00 => Ok,
            0x01 => NotFound,
            0x02 => BadFrame,
            0x03 => UnknownOpcode,
            0x04 => TooLarge,
            0x05 => Invalid,
            0x06 => Unavailable,
            0x07 => ServerError,
            0x08 => Busy,
            0x09 => Unauthorized,
            0x0A => Redirect,
            0x0B => Exists,
            0x0C => NotStored,
            0x0D => NonNumeric,
            0x0E => Stale,
            _ => return None,
        })
    }

    /// A short lower-case name, for logs and the client's error messages.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not found",
            Status::BadFrame => "bad frame",
            Status::UnknownOpcode => "unknown opcode",
            Status::TooLarge => "too large",
            Status::Invalid => "invalid request",
            Status::Unavailable => "unavailable",
            Status::ServerError => "server error",
            Status::Busy => "busy",
            Status::Unauthorized => "unauthorized",
            Status::Redirect => "redirect",
            Status::Exists => "exists",
            Status::NotStored => "not stored",
            Status::NonNumeric => "non-numeric value",
            Status::Stale => "stale",
        }
    }
}

/// Which of a slave's two tables a frame addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TableSel {
    /// Not about a table.
    None = 0,
    /// The keys the slave is primary for.
    Own = 1,
    /// The copy of the predecessor's `own`.
    Previous = 2,
}

impl TableSel {
    /// The selector for a byte, or `None` for an unknown byte.
    pub fn from_u8(byte: u8) -> Option<TableSel> {
        match byte {
            0 => Some(TableSel::None),
            1 => Some(TableSel::Own),
            2 => Some(TableSel::Previous),
            _ => None,
        }
    }
}

/// Size limits the decoder enforces before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest key in bytes.
    pub max_key: usize,
    /// Largest value in bytes for ordinary frames.
    pub max_value: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_key: DEFAULT_MAX_KEY,
            max_value: DEFAULT_MAX_VALUE,
        }
    }
}

impl WireLimits {
    /// The value limit for a given opcode: bulk transfers and status replies may carry up
    /// to [`MAX_BULK_VALUE`], everything else `max_value`.
    pub fn value_limit(&self, opcode: u8) -> usize {
        match Opcode::from_u8(opcode) {
            Some(
                Opcode::BulkPut
                | Opcode::BulkGet
                | Opcode::Status
                | Opcode::SlaveStats
                | Opcode::RingGet
                | Opcode::SetView
                | Opcode::MultiGet
                | Opcode::SlaveMultiGet,
            ) => self.max_value.max(MAX_BULK_VALUE),
            // Epoch and kind ride in front of the value.
            Some(Opcode::Forward) => self.max_value + FORWARD_PREFIX,
            // The expiry, or the operation, rides in front of the value.
            Some(Opcode::SlavePutEx) => self.max_value + 8,
            Some(Opcode::SlaveUpdate | Opcode::Update) => {
                self.max_value + crate::update::UPDATE_PREFIX
            }
            _ => self.max_value,
        }
    }
}

/// Bytes in front of the value of a `Forward` frame: the epoch (u64) and the kind (u8).
pub const FORWARD_PREFIX: usize = 9;

/// One message: a request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What is asked (responses echo the request's opcode).
    pub opcode: Opcode,
    /// The outcome (requests: `Ok`).
    pub status: Status,
    /// Chosen by the sender of a request, echoed in its response.
    pub request_id: u32,
    /// The 64-bit argument: an entry version, a token, a cursor.
    pub arg: u64,
    /// memcached flags stored with a value; the slave id in `Register` replies.
    pub flags: u32,
    /// Which table of a slave (slave operations only).
    pub table: TableSel,
    /// The key bytes.
    pub key: Vec<u8>,
    /// The value bytes (an error message in error responses).
    pub value: Vec<u8>,
}

impl Frame {
    /// A request with the given opcode, key and value and every other field zero.
    pub fn request(opcode: Opcode, request_id: u32, key: Vec<u8>, value: Vec<u8>) -> Frame {
        Frame {
            opcode,
            status: Status::Ok,
            request_id,
            arg: 0,
            flags: 0,
            table: TableSel::None,
            key,
            value,
        }
    }

    /// An empty response to this request with the given status.
    pub fn reply(&self, status: Status) -> Frame {
        Frame {
            opcode: self.opcode,
            status,
            request_id: self.request_id,
            arg: 0,
            flags: 0,
            table: TableSel::None,
            key: Vec::new(),
            value: Vec::new(),
        }
    }

    /// An error response whose value is a human-readable message.
    pub fn error_reply(&self, status: Status, message: &str) -> Frame {
        let mut frame = self.reply(status);
        frame.value = message.as_bytes().to_vec();
        frame
    }

    /// The header bytes of this frame, CRC included.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        self.header_as(self.request_id, self.table)
    }

    /// The header bytes this frame would have with another request id and table, CRC
    /// included: what [`Frame::write_as`] writes.
    pub fn header_as(&self, request_id: u32, table: TableSel) -> [u8; HEADER_LEN] {
        FrameHead {
            opcode: self.opcode,
            status: self.status,
            request_id,
            arg: self.arg,
            flags: self.flags,
            table,
        }
        .header(&self.key, &[&self.value])
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
    }

    /// The encoded frame as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.key.len() + self.value.len());
        self.encode_into(&mut out);
        out
    }

    /// Writes the frame to `w` (header, key, value; no intermediate buffer). The caller
    /// flushes.
    ///
    /// # Errors
    /// Whatever the writer returns.
    pub fn write_to<W: Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.header())?;
        w.write_all(&self.key)?;
        w.write_all(&self.value)
    }

    /// Writes the frame as if its request id and table were `request_id` and `table`,
    /// from where its key and value are: one frame sent on many connections, each with
    /// its own header, is never copied (the coordinator sends a write's one frame to
    /// both replicas this way, and again on a retry). The caller flushes.
    ///
    /// # Errors
    /// Whatever the writer returns.
    pub fn write_as<W: Write>(
        &self,
        request_id: u32,
        table: TableSel,
        w: &mut W,
    ) -> io::Result<()> {
        w.write_all(&self.header_as(request_id, table))?;
        w.write_all(&self.key)?;
        w.write_all(&self.value)
    }

    /// The value as text, for error messages (lossy).
    pub fn value_text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// The fixed fields of a frame's header, for writing a frame whose value is in parts
/// (a prefix, then a value that lives elsewhere) without putting them together first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// What is asked.
    pub opcode: Opcode,
    /// The outcome (requests: `Ok`).
    pub status: Status,
    /// The request id.
    pub request_id: u32,
    /// The 64-bit argument.
    pub arg: u64,
    /// The flags.
    pub flags: u32,
    /// Which table of a slave.
    pub table: TableSel,
}

impl FrameHead {
    /// The header of a frame with these fields, `key`, and a value that is `value`'s
    /// parts one after the other; CRC included.
    pub fn header(&self, key: &[u8], value: &[&[u8]]) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[OFF_MAGIC] = MAGIC;
        header[OFF_VERSION] = VERSION;
        header[OFF_OPCODE] = self.opcode as u8;
        header[OFF_STATUS] = self.status as u8;
        NetworkEndian::write_u32(&mut header[OFF_REQUEST_ID..], self.request_id);
        NetworkEndian::write_u64(&mut header[OFF_ARG..], self.arg);
        NetworkEndian::write_u32(&mut header[OFF_FLAGS..], self.flags);
        header[OFF_TABLE] = self.table as u8;
        let value_len: usize = value.iter().map(|part| part.len()).sum();
        // Lengths over u32 cannot be framed; encoders are only handed checked sizes.
        NetworkEndian::write_u32(&mut header[OFF_KEY_LEN..], key.len() as u32);
        NetworkEndian::write_u32(&mut header[OFF_VALUE_LEN..], value_len as u32);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[..OFF_CRC]);
        hasher.update(key);
        for part in value {
            hasher.update(part);
        }
        NetworkEndian::write_u32(&mut header[OFF_CRC..], hasher.finalize());
        header
    }

    /// Writes the frame: header, key, then the value's parts. The caller flushes.
    ///
    /// # Errors
    /// Whatever the writer returns.
    pub fn write_to<W: Write>(&self, key: &[u8], value: &[&[u8]], w: &mut W) -> io::Result<()> {
        w.write_all(&self.header(key, value))?;
        w.write_all(key)?;
        for part in value {
            w.write_all(part)?;
        }
        Ok(())
    }
}

/// CRC-32/IEEE over header bytes 0..32, then the key, then the value.
pub fn frame_crc(header: &[u8; HEADER_LEN], key: &[u8], value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..OFF_CRC]);
    hasher.update(key);
    hasher.update(value);
    hasher.finalize()
}

/// A validated header: everything needed to read and check the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The raw header bytes.
    pub bytes: [u8; HEADER_LEN],
    /// The raw opcode byte (may be unknown: that is decided after the CRC check).
    pub opcode: u8,
    /// The request id.
    pub request_id: u32,
    /// Key length, already checked against the limit.
    pub key_len: usize,
    /// Value length, already checked against the limit.
    pub value_len: usize,
}

impl Header {
    /// Checks a header against the format and the limits. Nothing is allocated.
    ///
    /// # Errors
    /// `BadMagic`, `BadVersion`, `BadReserved`, `BadTable`, `KeyTooLong`, `ValueTooLarge`.
    pub fn parse(bytes: &[u8; HEADER_LEN], limits: &WireLimits) -> Result<Header, WireError> {
        if bytes[OFF_MAGIC] != MAGIC {
            return Err(WireError::BadMagic(bytes[OFF_MAGIC]));
        }
        let request_id = NetworkEndian::read_u32(&bytes[OFF_REQUEST_ID..]);
        let opcode = bytes[OFF_OPCODE];
        if bytes[OFF_VERSION] != VERSION {
            return Err(WireError::BadVersion {
                request_id,
                opcode,
                version: bytes[OFF_VERSION],
            });
        }
        if bytes[OFF_RESERVED..OFF_KEY_LEN] != [0, 0, 0] {
            return Err(WireError::BadReserved { request_id, opcode });
        }
        if TableSel::from_u8(bytes[OFF_TABLE]).is_none() {
            return Err(WireError::BadTable {
                request_id,
                opcode,
                table: bytes[OFF_TABLE],
            });
        }
        let key_len = NetworkEndian::read_u32(&bytes[OFF_KEY_LEN..]) as usize;
        let value_len = NetworkEndian::read_u32(&bytes[OFF_VALUE_LEN..]) as usize;
        if key_len > limits.max_key {
            return Err(WireError::KeyTooLong {
                request_id,
                opcode,
                len: key_len,
                max: limits.max_key,
            });
        }
        let max_value = limits.value_limit(opcode);
        if value_len > max_value {
            return Err(WireError::ValueTooLarge {
                request_id,
                opcode,
                len: value_len,
                max: max_value,
            });
        }
        Ok(Header {
            bytes: *bytes,
            opcode,
            request_id,
            key_len,
            value_len,
        })
    }

    /// Checks the CRC and builds the frame from the body parts.
    ///
    /// # Errors
    /// `BadCrc` when the checksum does not match, `UnknownOpcode` or `UnknownStatus` when
    /// the frame is intact but names something this code does not know (the connection
    /// can carry on after replying).
    pub fn finish(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Frame, WireError> {
        let expected = NetworkEndian::read_u32(&self.bytes[OFF_CRC..]);
        let actual = frame_crc(&self.bytes, &key, &value);
        if expected != actual {
            return Err(WireError::BadCrc {
                request_id: self.request_id,
                opcode: self.opcode,
                expected,
                actual,
            });
        }
        let opcode = Opcode::from_u8(self.opcode).ok_or(WireError::UnknownOpcode {
            request_id: self.request_id,
            opcode: self.opcode,
        })?;
        let status = Status::from_u8(self.bytes[OFF_STATUS]).ok_or(WireError::UnknownStatus {
            request_id: self.request_id,
            opcode: self.opcode,
            status: self.bytes[OFF_STATUS],
        })?;
        // Checked in `parse`.
        let table = TableSel::from_u8(self.bytes[OFF_TABLE]).unwrap_or(TableSel::None);
        Ok(Frame {
            opcode,
            status,
            request_id: self.request_id,
            arg: NetworkEndian::read_u64(&self.bytes[OFF_ARG..]),
            flags: NetworkEndian::read_u32(&self.bytes[OFF_FLAGS..]),
            table,
            key,
            value,
        })
    }
}

/// Decodes the first frame in `buf`, returning it and the number of bytes it used.
///
/// # Errors
/// `Incomplete` when `buf` holds less than a whole frame (read more and call again); any
/// other variant when the bytes are not a valid frame.
pub fn decode(buf: &[u8], limits: &WireLimits) -> Result<(Frame, usize), WireError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        // A wrong first byte is reported at once rather than waiting for 36 bytes.
        if let Some(&first) = buf.first()
            && first != MAGIC
        {
            return Err(WireError::BadMagic(first));
        }
        return Err(WireError::Incomplete);
    };
    let mut bytes = [0u8; HEADER_LEN];
    bytes.copy_from_slice(head);
    let header = Header::parse(&bytes, limits)?;
    let total = HEADER_LEN + header.key_len + header.value_len;
    let Some(body) = buf.get(HEADER_LEN..total) else {
        return Err(WireError::Incomplete);
    };
    let (key, value) = body.split_at(header.key_len);
    let frame = header.finish(key.to_vec(), value.to_vec())?;
    Ok((frame, total))
}

/// True when `buf` starts with a whole frame (by its declared lengths; nothing is
/// validated). Servers use it to decide whether to flush replies before reading on.
pub fn holds_whole_frame(buf: &[u8]) -> bool {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return false;
    };
    let key_len = NetworkEndian::read_u32(&header[OFF_KEY_LEN..]) as usize;
    let value_len = NetworkEndian::read_u32(&header[OFF_VALUE_LEN..]) as usize;
    buf.len() >= HEADER_LEN.saturating_add(key_len).saturating_add(value_len)
}

/// Reads one frame from a stream.
///
/// # Errors
/// `Closed` when the stream ends cleanly before the first header byte; `Truncated` when
/// it ends inside a frame; `Io` for other read failures (timeouts included); the
/// validation errors of [`Header::parse`] and [`Header::finish`].
pub fn read_frame<R: Read>(r: &mut R, limits: &WireLimits) -> Result<Frame, WireError> {
    let mut bytes = [0u8; HEADER_LEN];
    read_header(r, &mut bytes)?;
    let header = Header::parse(&bytes, limits)?;
    let mut key = vec![0u8; header.key_len];
    r.read_exact(&mut key).map_err(truncated)?;
    let mut value = vec![0u8; header.value_len];
    r.read_exact(&mut value).map_err(truncated)?;
    header.finish(key, value)
}

/// Reads exactly one header, telling a clean end of stream (no byte read) from a cut one.
fn read_header<R: Read>(r: &mut R, bytes: &mut [u8; HEADER_LEN]) -> Result<(), WireError> {
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut bytes[filled..]) {
            Ok(0) if filled == 0 => return Err(WireError::Closed),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => {
                filled += n;
                // Refuse a stranger at once instead of waiting for a whole header.
                if bytes[OFF_MAGIC] != MAGIC {
                    return Err(WireError::BadMagic(bytes[OFF_MAGIC]));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    Ok(())
}

fn truncated(e: io::Error) -> WireError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        WireError::Truncated
    } else {
        WireError::Io(e)
    }
}

/// Everything that can go wrong turning bytes into a frame.
#[derive(Debug)]
pub enum WireError {
    /// Not enough bytes yet (buffer decoding only).
    Incomplete,
    /// The peer closed the connection between frames.
    Closed,
    /// The peer closed the connection in the middle of a frame.
    Truncated,
    /// Reading failed (includes read timeouts).
    Io(io::Error),
    /// The first byte is not [`MAGIC`]: not a Piazza frame.
    BadMagic(u8),
    /// A protocol version this code does not speak.
    BadVersion {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte from the header.
        opcode: u8,
        /// The version byte received.
        version: u8,
    },
    /// The reserved bytes 21..24 are not zero.
    BadReserved {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte from the header.
        opcode: u8,
    },
    /// The table byte is not 0, 1 or 2.
    BadTable {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte from the header.
        opcode: u8,
        /// The table byte received.
        table: u8,
    },
    /// The key length is over the limit.
    KeyTooLong {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte from the header.
        opcode: u8,
        /// The declared key length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value length is over the limit.
    ValueTooLarge {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte from the header.
        opcode: u8,
        /// The declared value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CRC does not match the bytes.
    BadCrc {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte from the header.
        opcode: u8,
        /// The CRC in the header.
        expected: u32,
        /// The CRC of the bytes received.
        actual: u32,
    },
    /// An intact frame with an opcode this code does not know.
    UnknownOpcode {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte received.
        opcode: u8,
    },
    /// An intact frame with a status this code does not know.
    UnknownStatus {
        /// The request id from the header.
        request_id: u32,
        /// The opcode byte from the header.
        opcode: u8,
        /// The status byte received.
        status: u8,
    },
}

impl WireError {
    /// The reply a server sends for this error, if one can be framed, and whether the
    /// connection must be closed after it.
    ///
    /// Frames whose body was read and whose CRC matched (unknown opcode or status) leave the
    /// stream in sync, so the connection carries on; for every other error the server cannot
    /// know where the next frame starts and closes the connection.
    pub fn server_reply(&self) -> Option<(Vec<u8>, bool)> {
        let (status, request_id, opcode, close) = match *self {
            WireError::Incomplete
            | WireError::Closed
            | WireError::Truncated
            | WireError::Io(_)
            | WireError::BadMagic(_) => return None,
            WireError::BadVersion {
                request_id, opcode, ..
            }
            | WireError::BadReserved { request_id, opcode }
            | WireError::BadTable {
                request_id, opcode, ..
            }
            | WireError::BadCrc {
                request_id, opcode, ..
            } => (Status::BadFrame, request_id, opcode, true),
            WireError::KeyTooLong {
                request_id, opcode, ..
            }
            | WireError::ValueTooLarge {
                request_id, opcode, ..
            } => (Status::TooLarge, request_id, opcode, true),
            WireError::UnknownOpcode { request_id, opcode } => {
                (Status::UnknownOpcode, request_id, opcode, false)
            }
            WireError::UnknownStatus {
                request_id, opcode, ..
            } => (Status::Invalid, request_id, opcode, false),
        };
        let mut frame = Frame::request(
            Opcode::Ping,
            request_id,
            Vec::new(),
            self.to_string().into_bytes(),
        );
        frame.status = status;
        // The reply repeats the request's opcode byte, even one this code does not know.
        let mut header = frame.header();
        header[OFF_OPCODE] = opcode;
        let crc = frame_crc(&header, &frame.key, &frame.value);
        NetworkEndian::write_u32(&mut header[OFF_CRC..], crc);
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&frame.value);
        Some((bytes, close))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Incomplete => write!(f, "incomplete frame: more bytes needed"),
            WireError::Closed => write!(f, "connection closed"),
            WireError::Truncated => write!(f, "connection closed in the middle of a frame"),
            WireError::Io(e) => write!(f, "read failed: {e}"),
            WireError::BadMagic(byte) => write!(
                f,
                "bad magic byte 0x{byte:02x} (expected 0x{MAGIC:02x}): not a piazza frame"
            ),
            WireError::BadVersion { version, .. } => write!(
                f,
                "unsupported protocol version {version} (this server speaks {VERSION})"
            ),
            WireError::BadReserved { .. } => write!(f, "reserved header bytes 21..24 must be zero"),
            WireError::BadTable { table, .. } => {
                write!(f, "bad table byte {table} (0 none, 1 own, 2 previous)")
            }
            WireError::KeyTooLong { len, max, .. } => {
                write!(f, "key of {len} bytes is over the limit of {max}")
            }
            WireError::ValueTooLarge { len, max, .. } => {
                write!(f, "value of {len} bytes is over the limit of {max}")
            }
            WireError::BadCrc {
                expected, actual, ..
            } => write!(
                f,
                "bad crc: header says 0x{expected:08x}, bytes give 0x{actual:08x}"
            ),
            WireError::UnknownOpcode { opcode, .. } => write!(f, "unknown opcode 0x{opcode:02x}"),
            WireError::UnknownStatus { status, .. } => write!(f, "unknown status 0x{status:02x}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Size of a heartbeat datagram.
pub const HEARTBEAT_LEN: usize = 16;

/// What a heartbeat datagram says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HeartbeatKind {
    /// Slave to coordinator: I am alive.
    Alive = 0x01,
    /// Coordinator to slave: heard you.
    Ack = 0x02,
    /// Coordinator to slave: I do not know this id and session (you were declared dead, or
    /// I restarted): register again.
    Rejoin = 0x03,
}

/// A heartbeat datagram: magic, version, kind, a zero byte, slave id (u32), session
/// (u64); 16 bytes, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// What it says.
    pub kind: HeartbeatKind,
    /// The slave's id.
    pub id: u32,
    /// The session the coordinator handed out at registration.
    pub session: u64,
}

impl Heartbeat {
    /// The datagram's bytes.
    pub fn encode(&self) -> [u8; HEARTBEAT_LEN] {
        let mut bytes = [0u8; HEARTBEAT_LEN];
        bytes[0] = MAGIC;
        bytes[1] = VERSION;
        bytes[2] = self.kind as u8;
        NetworkEndian::write_u32(&mut bytes[4..], self.id);
        NetworkEndian::write_u64(&mut bytes[8..], self.session);
        bytes
    }

    /// Decodes a datagram; `None` for anything that is not exactly a heartbeat.
    pub fn decode(bytes: &[u8]) -> Option<Heartbeat> {
        if bytes.len() != HEARTBEAT_LEN || bytes[0] != MAGIC || bytes[1] != VERSION || bytes[3] != 0
        {
            return None;
        }
        let kind = match bytes[2] {
            0x01 => HeartbeatKind::Alive,
            0x02 => HeartbeatKind::Ack,
            0x03 => HeartbeatKind::Rejoin,
            _ => return None,
        };
        Some(Heartbeat {
            kind,
            id: NetworkEndian::read_u32(&bytes[4..]),
            session: NetworkEndian::read_u64(&bytes[8..]),
        })
    }
}

/// An arc of the ring, (start, end] clockwise, as carried in a frame's value: start u64,
/// end u64. `start == end` is the whole ring.
pub fn encode_arc(start: u64, end: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; 16];
    NetworkEndian::write_u64(&mut bytes[0..], start);
    NetworkEndian::write_u64(&mut bytes[8..], end);
    bytes
}

/// Reads an arc from a frame's value: `Some(None)` when empty (no filter), `None` when
/// the length is wrong.
pub fn decode_arc(value: &[u8]) -> Option<Option<(u64, u64)>> {
    match value.len() {
        0 => Some(None),
        16 => Some(Some((
            NetworkEndian::read_u64(&value[0..]),
            NetworkEndian::read_u64(&value[8..]),
        ))),
        _ => None,
    }
}

/// A set of arcs, as carried in the value of `Absorb`, `Demote`, `DropArc` and
/// `Transfer`: count u32, then per arc start u64, end u64 (each (start, end] clockwise;
/// `start == end` is the whole ring).
pub fn encode_arcs(arcs: &[(u64, u64)]) -> Vec<u8> {
    let mut bytes = vec![0u8; 4 + 16 * arcs.len()];
    NetworkEndian::write_u32(&mut bytes[0..], arcs.len() as u32);
    for (i, &(start, end)) in arcs.iter().enumerate() {
        NetworkEndian::write_u64(&mut bytes[4 + 16 * i..], start);
        NetworkEndian::write_u64(&mut bytes[12 + 16 * i..], end);
    }
    bytes
}

/// Reads a set of arcs from a frame's value: `Some(None)` when empty (no filter), `None`
/// when the length does not match the count. A bare 16-byte arc is read as one arc.
pub fn decode_arcs(value: &[u8]) -> Option<Option<Vec<(u64, u64)>>> {
    if value.is_empty() {
        return Some(None);
    }
    if let Some(Some(arc)) = decode_arc(value) {
        return Some(Some(vec![arc]));
    }
    let count = NetworkEndian::read_u32(value.get(..4)?) as usize;
    if value.len() != 4 + count.checked_mul(16)? {
        return None;
    }
    let arcs = (0..count)
        .map(|i| {
            (
                NetworkEndian::read_u64(&value[4 + 16 * i..]),
                NetworkEndian::read_u64(&value[12 + 16 * i..]),
            )
        })
        .collect();
    Some(Some(arcs))
}

/// What SLAVE_STATS answers: key counts and what the slave's housekeeping did. The reply
/// value is the fields in this order, each a u64 (64 bytes; an older slave sends only
/// the first four).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaveCounts {
    /// Live keys in `own`.
    pub own_live: u64,
    /// Tombstones (and invisible values) in `own`.
    pub own_tombstones: u64,
    /// Live keys in `previous`.
    pub previous_live: u64,
    /// Tombstones (and invisible values) in `previous`.
    pub previous_tombstones: u64,
    /// Expired or flushed values turned into tombstones since the slave started.
    pub purged: u64,
    /// Tombstones dropped by collection since the slave started.
    pub collected_tombstones: u64,
    /// Expired or flushed values dropped by collection since the slave started.
    pub collected_values: u64,
    /// When the log was last compacted (Unix seconds; 0: not since the slave started).
    pub last_compaction: u64,
}

impl SlaveCounts {
    /// The reply value.
    pub fn encode(&self) -> Vec<u8> {
        let fields = [
            self.own_live,
            self.own_tombstones,
            self.previous_live,
            self.previous_tombstones,
            self.purged,
            self.collected_tombstones,
            self.collected_values,
            self.last_compaction,
        ];
        fields.iter().flat_map(|f| f.to_be_bytes()).collect()
    }

    /// Reads a reply value: 64 bytes, or the first 32 (the rest then 0); `None` for any
    /// other length.
    pub fn decode(value: &[u8]) -> Option<SlaveCounts> {
        if value.len() != 32 && value.len() != 64 {
            return None;
        }
        let field = |i: usize| {
            value
                .get(i * 8..i * 8 + 8)
                .map_or(0, NetworkEndian::read_u64)
        };
        Some(SlaveCounts {
            own_live: field(0),
            own_tombstones: field(1),
            previous_live: field(2),
            previous_tombstones: field(3),
            purged: field(4),
            collected_tombstones: field(5),
            collected_values: field(6),
            last_compaction: field(7),
        })
    }
}

/// One entry of a bulk chunk (the value of `BulkPut` requests and `BulkGet` replies).
///
/// Packed as: key_len u32, value_len u32, flags u32, version u64, expires u64 (Unix
/// seconds, 0 never), kind u8 (1 value, 0 tombstone), key bytes, value bytes; big-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The entry's version.
    pub version: u64,
    /// memcached flags.
    pub flags: u32,
    /// When the value expires (Unix seconds; 0 never).
    pub expires: u64,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Size of the fixed part of a packed bulk entry.
pub const BULK_ENTRY_HEADER: usize = 29;

impl BulkEntry {
    /// Bytes this entry takes when packed.
    pub fn packed_len(&self) -> usize {
        BULK_ENTRY_HEADER + self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }

    /// Appends the packed entry to `out`.
    pub fn pack_into(&self, out: &mut Vec<u8>) {
        let mut head = [0u8; BULK_ENTRY_HEADER];
        NetworkEndian::write_u32(&mut head[0..], self.key.len() as u32);
        let value = self.value.as_deref().unwrap_or(&[]);
        NetworkEndian::write_u32(&mut head[4..], value.len() as u32);
        NetworkEndian::write_u32(&mut head[8..], self.flags);
        NetworkEndian::write_u64(&mut head[12..], self.version);
        NetworkEndian::write_u64(&mut head[20..], self.expires);
        head[28] = u8::from(self.value.is_some());
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(value);
    }
}

/// Unpacks a bulk chunk, checking every length against the chunk and the limits.
///
/// # Errors
/// `BulkError` naming the entry and what is wrong with it.
pub fn unpack_bulk(mut chunk: &[u8], limits: &WireLimits) -> Result<Vec<BulkEntry>, BulkError> {
    let mut entries = Vec::new();
    while !chunk.is_empty() {
        let index = entries.len();
        let Some(head) = chunk.get(..BULK_ENTRY_HEADER) else {
            return Err(BulkError {
                index,
                what: "truncated entry header",
            });
        };
        let key_len = NetworkEndian::read_u32(&head[0..]) as usize;
        let value_len = NetworkEndian::read_u32(&head[4..]) as usize;
        let flags = NetworkEndian::read_u32(&head[8..]);
        let version = NetworkEndian::read_u64(&head[12..]);
        let expires = NetworkEndian::read_u64(&head[20..]);
        let kind = head[28];
        if key_len == 0 || key_len > limits.max_key {
            return Err(BulkError {
                index,
                what: "key length out of range",
            });
        }
        if value_len > limits.max_value {
            return Err(BulkError {
                index,
                what: "value over the limit",
            });
        }
        if kind > 1 || (kind == 0 && value_len != 0) {
            return Err(BulkError {
                index,
                what: "bad entry kind",
            });
        }
        let end = BULK_ENTRY_HEADER + key_len + value_len;
        let Some(body) = chunk.get(BULK_ENTRY_HEADER..end) else {
            return Err(BulkError {
                index,
                what: "entry runs past the chunk",
            });
        };
        let (key, value) = body.split_at(key_len);
        entries.push(BulkEntry {
            key: key.to_vec(),
            version,
            flags,
            expires,
            value: (kind == 1).then(|| value.to_vec()),
        });
        chunk = &chunk[end..];
    }
    Ok(entries)
}

/// Packs keys for a multi-get: per key, its length (u32) then its bytes.
pub fn pack_keys<K: AsRef<[u8]>>(keys: &[K]) -> Vec<u8> {
    let total: usize = keys.iter().map(|k| 4 + k.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total);
    for key in keys {
        let key = key.as_ref();
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
    }
    out
}

/// Unpacks the keys of a multi-get, checking each length against the value and the limit.
///
/// # Errors
/// A message naming the bad key.
pub fn unpack_keys(mut packed: &[u8], max_key: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::new();
    while !packed.is_empty() {
        let index = keys.len();
        let Some((len, rest)) = packed.split_first_chunk::<4>() else {
            return Err(format!("key {index}: truncated length"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len == 0 || len > max_key {
            return Err(format!("key {index}: length {len} out of range"));
        }
        let Some((key, rest)) = rest.split_at_checked(len) else {
            return Err(format!("key {index}: runs past the value"));
        };
        keys.push(key.to_vec());
        packed = rest;
    }
    Ok(keys)
}

/// One key's result in a multi-get reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiGetHit {
    /// The entry's version (the cas unique).
    pub version: u64,
    /// memcached flags.
    pub flags: u32,
    /// When it expires (Unix seconds, 0 never).
    pub expires: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// Bytes of a hit before its value: kind, version, flags, expires, value length.
pub const MULTI_GET_HIT_HEADER: usize = 25;

/// Appends one result: a miss is the byte 0; a hit is 1, version u64, flags u32, expires
/// u64, value length u32, then the value.
pub fn pack_result(out: &mut Vec<u8>, result: Option<&MultiGetHit>) {
    let Some(hit) = result else {
        out.push(0);
        return;
    };
    out.reserve(MULTI_GET_HIT_HEADER + hit.value.len());
    out.push(1);
    out.extend_from_slice(&hit.version.to_be_bytes());
    out.extend_from_slice(&hit.flags.to_be_bytes());
    out.extend_from_slice(&hit.expires.to_be_bytes());
    out.extend_from_slice(&(hit.value.len() as u32).to_be_bytes());
    out.extend_from_slice(&hit.value);
}

/// Unpacks the results of a multi-get reply.
///
/// # Errors
/// A message naming the bad result.
pub fn unpack_results(mut packed: &[u8]) -> Result<Vec<Option<MultiGetHit>>, String> {
    let mut results = Vec::new();
    while let Some((&kind, rest)) = packed.split_first() {
        let index = results.len();
        match kind {
            0 => {
                results.push(None);
                packed = rest;
            }
            1 => {
                let Some((head, rest)) = rest.split_first_chunk::<24>() else {
                    return Err(format!("result {index}: truncated"));
                };
                let len = NetworkEndian::read_u32(&head[20..]) as usize;
                let Some((value, rest)) = rest.split_at_checked(len) else {
                    return Err(format!("result {index}: value runs past the reply"));
                };
                results.push(Some(MultiGetHit {
                    version: NetworkEndian::read_u64(&head[..8]),
                    flags: NetworkEndian::read_u32(&head[8..]),
                    expires: NetworkEndian::read_u64(&head[12..]),
                    value: value.to_vec(),
                }));
                packed = rest;
            }
            other => return Err(format!("result {index}: unknown kind {other}")),
        }
    }
    Ok(results)
}

/// A malformed bulk chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkError {
    /// Index of the bad entry in the chunk.
    pub index: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for BulkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad bulk chunk at entry {}: {}", self.index, self.what)
    }
}

impl std::error::Error for BulkError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        let mut frame = Frame::request(Opcode::Put, 7, b"k".to_vec(), b"v".to_vec());
        frame.flags = 3;
        frame.arg = 0x0102_0304_0506_0708;
        frame
    }

    #[test]
    fn crc_is_crc32_ieee() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn every_opcode_round_trips() {
        for byte in 0..=255u8 {
            if let Some(op) = Opcode::from_u8(byte) {
                assert_eq!(op as u8, byte);
                let mut frame = Frame::request(op, 42, b"key".to_vec(), vec![0, 13, 10, 255]);
                frame.table = TableSel::Previous;
                frame.flags = u32::MAX;
                frame.arg = u64::MAX - 1;
                frame.status = Status::NotFound;
                let bytes = frame.encode();
                let (decoded, used) = decode(&bytes, &WireLimits::default()).unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(decoded, frame);
                let read = read_frame(&mut &bytes[..], &WireLimits::default()).unwrap();
                assert_eq!(read, frame);
            }
        }
    }

    #[test]
    fn a_frame_written_as_another_id_and_table_is_that_frame() {
        let frame = sample();
        let mut written = Vec::new();
        frame
            .write_as(99, TableSel::Previous, &mut written)
            .unwrap();
        let mut expected = frame.clone();
        expected.request_id = 99;
        expected.table = TableSel::Previous;
        assert_eq!(written, expected.encode());
        assert_eq!(
            decode(&written, &WireLimits::default()).unwrap().0,
            expected
        );
    }

    #[test]
    fn a_value_in_parts_is_the_value_put_together() {
        let head = FrameHead {
            opcode: Opcode::Forward,
            status: Status::Ok,
            request_id: 5,
            arg: 9,
            flags: 2,
            table: TableSel::Previous,
        };
        let mut written = Vec::new();
        head.write_to(b"key", &[b"pre", b"", b"fix-and-value"], &mut written)
            .unwrap();
        let mut expected = Frame::request(
            Opcode::Forward,
            5,
            b"key".to_vec(),
            b"prefix-and-value".to_vec(),
        );
        expected.arg = 9;
        expected.flags = 2;
        expected.table = TableSel::Previous;
        assert_eq!(written, expected.encode());
    }

    #[test]
    fn every_status_round_trips() {
        for byte in 0..=255u8 {
            if let Some(status) = Status::from_u8(byte) {
                assert_eq!(status as u8, byte);
                assert!(!status.name().is_empty());
            }
        }
    }

    #[test]
    fn put_example_matches_protocol_md() {
        // The PUT example in protocol.md: request id 1, key "hello", value "world".
        let frame = Frame::request(Opcode::Put, 1, b"hello".to_vec(), b"world".to_vec());
        let hex: String = frame.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, PUT_EXAMPLE_HEX);
    }

    #[test]
    fn get_miss_reply_matches_protocol_md() {
        let request = Frame::request(Opcode::Get, 3, b"nope".to_vec(), Vec::new());
        let hex: String = request
            .encode()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "a701010000000003000000000000000000000000000000000000000400000000d157c4336e6f7065"
        );
        let reply = request.reply(Status::NotFound);
        let hex: String = reply.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "a701010100000003000000000000000000000000000000000000000000000000158b890c"
        );
    }

    /// Kept equal to the PUT example in protocol.md.
    const PUT_EXAMPLE_HEX: &str = "a701020000000001000000000000000000000000000000000000000500000005703edceb68656c6c6f776f726c64";

    #[test]
    fn incomplete_at_every_cut() {
        let bytes = sample().encode();
        for cut in 1..bytes.len() {
            assert!(matches!(
                decode(&bytes[..cut], &WireLimits::default()),
                Err(WireError::Incomplete)
            ));
            assert!(matches!(
                read_frame(&mut &bytes[..cut], &WireLimits::default()),
                Err(WireError::Truncated)
            ));
        }
        assert!(matches!(
            read_frame(&mut &[][..], &WireLimits::default()),
            Err(WireError::Closed)
        ));
    }

    #[test]
    fn bad_magic_is_refused_from_the_first_byte() {
        assert!(matches!(
            decode(b"g", &WireLimits::default()),
            Err(WireError::BadMagic(b'g'))
        ));
        assert!(matches!(
            read_frame(&mut &b"get foo\r\n"[..], &WireLimits::default()),
            Err(WireError::BadMagic(b'g'))
        ));
    }

    #[test]
    fn bad_version_reserved_and_table_are_refused() {
        let good = sample().encode();
        let mut bad = good.clone();
        bad[OFF_VERSION] = 9;
        assert!(matches!(
            decode(&bad, &WireLimits::default()),
            Err(WireError::BadVersion { version: 9, .. })
        ));
        let mut bad = good.clone();
        bad[OFF_RESERVED + 1] = 1;
        assert!(matches!(
            decode(&bad, &WireLimits::default()),
            Err(WireError::BadReserved { .. })
        ));
        let mut bad = good;
        bad[OFF_TABLE] = 3;
        assert!(matches!(
            decode(&bad, &WireLimits::default()),
            Err(WireError::BadTable { table: 3, .. })
        ));
    }

    #[test]
    fn lengths_over_limits_are_refused_before_reading_the_body() {
        let limits = WireLimits {
            max_key: 4,
            max_value: 8,
        };
        let mut header = sample().header();
        NetworkEndian::write_u32(&mut header[OFF_KEY_LEN..], 5);
        // Only the header is given: the decoder must refuse without waiting for the body.
        assert!(matches!(
            decode(&header, &limits),
            Err(WireError::KeyTooLong { len: 5, max: 4, .. })
        ));
        NetworkEndian::write_u32(&mut header[OFF_KEY_LEN..], 1);
        NetworkEndian::write_u32(&mut header[OFF_VALUE_LEN..], u32::MAX);
        assert!(matches!(
            decode(&header, &limits),
            Err(WireError::ValueTooLarge { .. })
        ));
        let (reply, close) = decode(&header, &limits)
            .unwrap_err()
            .server_reply()
            .unwrap();
        assert_eq!(reply[OFF_STATUS], Status::TooLarge as u8);
        assert!(close);
    }

    #[test]
    fn bulk_frames_may_be_larger_than_the_value_limit() {
        let limits = WireLimits {
            max_key: 16,
            max_value: 8,
        };
        let frame = Frame::request(Opcode::BulkPut, 1, Vec::new(), vec![0; 100]);
        assert!(decode(&frame.encode(), &limits).is_ok());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let result = decode(&bad, &WireLimits::default());
                assert!(
                    result.is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn unknown_opcode_keeps_the_connection() {
        let mut bytes = sample().encode();
        bytes[OFF_OPCODE] = 0x7f;
        let crc = frame_crc(&bytes[..HEADER_LEN].try_into().unwrap(), b"k", b"v");
        NetworkEndian::write_u32(&mut bytes[OFF_CRC..], crc);
        let err = decode(&bytes, &WireLimits::default()).unwrap_err();
        assert!(matches!(
            err,
            WireError::UnknownOpcode {
                opcode: 0x7f,
                request_id: 7
            }
        ));
        let (reply, close) = err.server_reply().unwrap();
        assert_eq!(reply[OFF_STATUS], Status::UnknownOpcode as u8);
        assert_eq!(
            reply[OFF_OPCODE], 0x7f,
            "the reply repeats the request's opcode"
        );
        assert_eq!(NetworkEndian::read_u32(&reply[OFF_REQUEST_ID..]), 7);
        let header: [u8; HEADER_LEN] = reply[..HEADER_LEN].try_into().unwrap();
        let crc = frame_crc(&header, b"", &reply[HEADER_LEN..]);
        assert_eq!(NetworkEndian::read_u32(&reply[OFF_CRC..]), crc);
        assert!(!close);
    }

    #[test]
    fn bad_crc_is_framed_and_closes() {
        let mut bytes = sample().encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let err = decode(&bytes, &WireLimits::default()).unwrap_err();
        assert!(matches!(err, WireError::BadCrc { .. }));
        let (reply, close) = err.server_reply().unwrap();
        assert_eq!(reply[OFF_STATUS], Status::BadFrame as u8);
        assert_eq!(reply[OFF_OPCODE], sample().opcode as u8);
        assert!(close);
        assert!(err.to_string().contains("bad crc"));
    }

    #[test]
    fn bulk_entries_round_trip() {
        let entries = vec![
            BulkEntry {
                key: b"a".to_vec(),
                version: 9,
                flags: 1,
                expires: 1_900_000_000,
                value: Some(b"x\r\n\0".to_vec()),
            },
            BulkEntry {
                key: b"gone".to_vec(),
                version: 10,
                flags: 0,
                expires: 0,
                value: None,
            },
        ];
        let mut chunk = Vec::new();
        for entry in &entries {
            chunk_push(&mut chunk, entry);
        }
        assert_eq!(
            unpack_bulk(&chunk, &WireLimits::default()).unwrap(),
            entries
        );
        let boundary = entries[0].packed_len();
        for cut in 1..chunk.len() {
            let result = unpack_bulk(&chunk[..cut], &WireLimits::default());
            if cut == boundary {
                assert_eq!(result.unwrap(), entries[..1]);
            } else {
                assert!(result.is_err(), "cut at {cut} went unnoticed");
            }
        }
    }

    fn chunk_push(chunk: &mut Vec<u8>, entry: &BulkEntry) {
        let before = chunk.len();
        entry.pack_into(chunk);
        assert_eq!(chunk.len() - before, entry.packed_len());
    }

    #[test]
    fn heartbeats_round_trip_and_junk_is_refused() {
        for kind in [
            HeartbeatKind::Alive,
            HeartbeatKind::Ack,
            HeartbeatKind::Rejoin,
        ] {
            let beat = Heartbeat {
                kind,
                id: 7,
                session: u64::MAX - 3,
            };
            assert_eq!(Heartbeat::decode(&beat.encode()), Some(beat));
        }
        let good = Heartbeat {
            kind: HeartbeatKind::Alive,
            id: 1,
            session: 2,
        }
        .encode();
        for i in 0..4 {
            let mut bad = good;
            bad[i] ^= 0x40;
            assert_eq!(Heartbeat::decode(&bad), None, "byte {i}");
        }
        assert_eq!(Heartbeat::decode(&good[..15]), None);
        assert_eq!(Heartbeat::decode(b"hello"), None);
    }

    #[test]
    fn arcs_round_trip() {
        let arcs = vec![(1, 2), (u64::MAX, 7)];
        assert_eq!(decode_arcs(&encode_arcs(&arcs)), Some(Some(arcs)));
        assert_eq!(decode_arcs(&encode_arcs(&[])), Some(Some(vec![])));
        assert_eq!(decode_arcs(&encode_arc(5, 9)), Some(Some(vec![(5, 9)])));
        assert_eq!(decode_arcs(&[]), Some(None));
        assert_eq!(decode_arcs(&[0, 0, 0, 2, 0]), None);
        assert_eq!(decode_arc(&encode_arc(5, 9)), Some(Some((5, 9))));
        assert_eq!(decode_arc(&[]), Some(None));
        assert_eq!(decode_arc(&[0; 15]), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = sample().encode();
        for _ in 0..300_000 {
            let mut bytes = base.clone();
            let n = (next() % 4) as usize + 1;
            for _ in 0..n {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            let len = (next() as usize) % (bytes.len() + 1);
            // Whatever is accepted is exactly what its bytes say; the rest is a typed error.
            if let Ok((frame, used)) = decode(&bytes[..len], &WireLimits::default()) {
                assert_eq!(frame.encode(), bytes[..used]);
            }
            let _ = read_frame(&mut &bytes[..len], &WireLimits::default());
            let _ = unpack_bulk(&bytes[..len], &WireLimits::default());
        }
    }
}
