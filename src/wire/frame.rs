//! A frame's header (offsets, magic, version), the size limits, [`Frame`], the CRC rule,
//! and the codec: [`decode`] from a buffer, [`read_frame`] from a stream, and the
//! encoders on [`Frame`] and [`FrameHead`] (a frame whose value is in parts).

use std::io::{self, Read, Write};

use byteorder::{ByteOrder, NetworkEndian};

use super::{Opcode, Status, TableSel, WireError};

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

/// Flags bit of a slave's `REDIRECT` or `UNAVAILABLE` answer to a direct `DELETE`: the
/// delete was applied to the primary's `own` table and removed a live value there before
/// the replica refused or failed. A client that then gets `NOT_FOUND` from its retry
/// reports the key deleted (protocol.md, "Direct routing").
pub const REMOVED_HERE: u32 = 1;

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

/// The body length (key and value) a header declares; nothing is validated.
pub fn body_len(header: &[u8]) -> usize {
    let key_len = NetworkEndian::read_u32(&header[OFF_KEY_LEN..]) as usize;
    let value_len = NetworkEndian::read_u32(&header[OFF_VALUE_LEN..]) as usize;
    key_len.saturating_add(value_len)
}

/// True when `buf` starts with a whole frame (by its declared lengths; nothing is
/// validated). Servers use it to decide whether to flush replies before reading on.
pub fn holds_whole_frame(buf: &[u8]) -> bool {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return false;
    };
    buf.len() >= HEADER_LEN.saturating_add(body_len(header))
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
