//! [`WireError`]: everything that can go wrong turning bytes into a frame, and the reply
//! a server sends for each.

use std::fmt;
use std::io;

use byteorder::{ByteOrder, NetworkEndian};

use super::{Frame, MAGIC, OFF_CRC, OFF_OPCODE, Opcode, Status, VERSION, frame_crc};

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
