//! The binary wire format: frames, their header, the CRC rule, and the codec.
//!
//! Every message on a Piazza TCP connection (client to coordinator, coordinator to slave,
//! slave to coordinator) is one [`Frame`]: a fixed 36-byte header followed by the key and
//! the value. `protocol.md` describes the same bytes for people; the offsets below and the
//! the value. `protocol.md` describes the same bytes for people; the offsets in `frame`
//! and the tables there change in the same commit.
//!
//! Invariants:
//! - decoding validates the magic, the version, the reserved bytes and both lengths against
//!   [`WireLimits`] *before* allocating a single body byte, and checks the CRC before the
//!   frame is handed to anyone;
//! - this module never takes a lock and never decides anything about keys or tables: it
//!   only turns bytes into frames and back;
//! - "need more bytes" is [`WireError::Incomplete`], control flow rather than failure.
//!
//! Files: `frame` (the header's offsets, [`WireLimits`], [`Frame`] and [`FrameHead`], the
//! CRC, the codec), `error` ([`WireError`]), `opcode` ([`Opcode`], [`Status`],
//! [`TableSel`]), `bulk` (bulk chunks, multi-get packing, arcs, [`SlaveCounts`]),
//! `heartbeat` (the UDP datagram); unit tests in `tests.rs`.

mod bulk;
mod error;
mod frame;
mod heartbeat;
mod opcode;
#[cfg(test)]
mod tests;

pub use bulk::{
    BULK_ENTRY_HEADER, BulkEntry, BulkError, MULTI_GET_HIT_HEADER, MultiGetHit, SlaveCounts,
    decode_arc, decode_arcs, encode_arc, encode_arcs, pack_hit, pack_keys, pack_result,
    unpack_bulk, unpack_keys, unpack_results,
};
pub use error::WireError;
pub use frame::{
    DEFAULT_MAX_KEY, DEFAULT_MAX_VALUE, FORWARD_PREFIX, Frame, FrameHead, HEADER_LEN, Header,
    MAGIC, MAX_BULK_VALUE, OFF_ARG, OFF_CRC, OFF_FLAGS, OFF_KEY_LEN, OFF_MAGIC, OFF_OPCODE,
    OFF_REQUEST_ID, OFF_RESERVED, OFF_STATUS, OFF_TABLE, OFF_VALUE_LEN, OFF_VERSION, REMOVED_HERE,
    VERSION, WireLimits, body_len, decode, frame_crc, holds_whole_frame, read_frame,
};
pub use heartbeat::{HEARTBEAT_LEN, Heartbeat, HeartbeatKind};
pub(crate) use opcode::byte_enum;
pub use opcode::{COLLECT_FORGET, Opcode, Status, TableSel};
