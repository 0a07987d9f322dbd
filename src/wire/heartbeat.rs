//! The heartbeat datagram slaves and the coordinator exchange over UDP.

use byteorder::{ByteOrder, NetworkEndian};

use super::{MAGIC, VERSION};

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
