//! The routing view for direct routing: the ring as the coordinator publishes it, with
//! its epoch and whether it is *stable* (no slave joining, leaving or being recovered).
//!
//! The coordinator sends the same bytes to clients (`RingGet` reply) and to slaves
//! (`SetView` request); protocol.md, "Direct routing", describes them:
//!
//! ```text
//! count u32, then per member: id u32, address length u16, address bytes;
//! tokens u32, then per token (increasing): token u64, owner id u32
//! ```
//!
//! (the epoch travels in the frame's `arg`, the stable bit in its `flags`).
//!
//! A client uses a view to find a key's primary; a slave uses it to check that a direct
//! request is its own under that epoch. This module only encodes, decodes and answers
//! placement questions; it takes no lock and does no I/O.

use byteorder::{ByteOrder, NetworkEndian};

use crate::ring::{self, Member, Placement, SlaveId, Token, key_hash};

/// `flags` bit of a `RingGet` reply or `SetView` request: the view is stable.
pub const STABLE: u32 = 1;

/// Most members a view may carry (a bound for the decoder).
const MAX_MEMBERS: usize = 4096;

/// Most tokens a view may carry.
const MAX_TOKENS: usize = 1 << 16;

/// What is wrong with a view's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewError {
    /// The bytes end early.
    Truncated,
    /// More members than a view may carry.
    TooManyMembers(usize),
    /// More tokens than a view may carry.
    TooManyTokens(usize),
    /// A member's address is not UTF-8.
    BadAddress,
    /// Tokens are not in increasing order.
    Unordered,
    /// A token's owner is not a member.
    UnknownOwner(Token, SlaveId),
    /// Bytes after the last token.
    TrailingBytes,
}

impl std::fmt::Display for ViewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewError::Truncated => f.write_str("ring view truncated"),
            ViewError::TooManyMembers(n) => {
                write!(f, "ring view has {n} members (at most {MAX_MEMBERS})")
            }
            ViewError::TooManyTokens(n) => {
                write!(f, "ring view has {n} tokens (at most {MAX_TOKENS})")
            }
            ViewError::BadAddress => f.write_str("ring view address is not UTF-8"),
            ViewError::Unordered => f.write_str("ring view tokens are not in increasing order"),
            ViewError::UnknownOwner(token, owner) => {
                write!(
                    f,
                    "ring view token {token} is owned by unknown slave {owner}"
                )
            }
            ViewError::TrailingBytes => f.write_str("ring view has trailing bytes"),
        }
    }
}

impl std::error::Error for ViewError {}

/// A ring with its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// The coordinator's epoch: grows at every routing change.
    pub epoch: u64,
    /// True when no data is moving: only then may requests bypass the coordinator.
    pub stable: bool,
    /// Live members in id order (`slots`: how many tokens each owns).
    pub members: Vec<Member>,
    /// Every token with its primary and replica, in token order.
    pub placements: Vec<(Token, Placement)>,
}

impl View {
    /// A view of `members` owning `tokens` (in token order).
    pub fn new(
        epoch: u64,
        stable: bool,
        members: Vec<Member>,
        tokens: &[(Token, SlaveId)],
    ) -> View {
        View {
            epoch,
            stable,
            members,
            placements: ring::placements(tokens),
        }
    }

    /// The members and tokens, encoded as the value of a `RingGet` reply or a `SetView`
    /// request.
    pub fn encode_members(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.members.len() * 32 + self.placements.len() * 12);
        let mut word = [0u8; 8];
        NetworkEndian::write_u32(&mut word, self.members.len() as u32);
        out.extend_from_slice(&word[..4]);
        for member in &self.members {
            NetworkEndian::write_u32(&mut word, member.id.0);
            out.extend_from_slice(&word[..4]);
            let addr = &member.addr.as_bytes()[..member.addr.len().min(u16::MAX as usize)];
            NetworkEndian::write_u16(&mut word, addr.len() as u16);
            out.extend_from_slice(&word[..2]);
            out.extend_from_slice(addr);
        }
        NetworkEndian::write_u32(&mut word, self.placements.len() as u32);
        out.extend_from_slice(&word[..4]);
        for (token, placement) in &self.placements {
            NetworkEndian::write_u64(&mut word, token.0);
            out.extend_from_slice(&word);
            NetworkEndian::write_u32(&mut word, placement.primary.0);
            out.extend_from_slice(&word[..4]);
        }
        out
    }

    /// A view from a frame's `arg` (epoch), `flags` (stable bit) and value (members).
    ///
    /// # Errors
    /// A message saying what is wrong with the bytes: truncated, too many members or
    /// tokens, tokens out of order or owned by no member, an address that is not UTF-8.
    pub fn decode(epoch: u64, flags: u32, value: &[u8]) -> Result<View, ViewError> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], ViewError> {
            let bytes = value.get(at..at + n).ok_or(ViewError::Truncated)?;
            at += n;
            Ok(bytes)
        };
        let count = NetworkEndian::read_u32(take(4)?) as usize;
        if count > MAX_MEMBERS {
            return Err(ViewError::TooManyMembers(count));
        }
        let mut members: Vec<Member> = Vec::with_capacity(count);
        for _ in 0..count {
            let id = SlaveId(NetworkEndian::read_u32(take(4)?));
            let len = NetworkEndian::read_u16(take(2)?) as usize;
            let addr = std::str::from_utf8(take(len)?)
                .map_err(|_| ViewError::BadAddress)?
                .to_string();
            members.push(Member { id, addr, slots: 0 });
        }
        let count = NetworkEndian::read_u32(take(4)?) as usize;
        if count > MAX_TOKENS {
            return Err(ViewError::TooManyTokens(count));
        }
        let mut tokens: Vec<(Token, SlaveId)> = Vec::with_capacity(count);
        for _ in 0..count {
            let token = Token(NetworkEndian::read_u64(take(8)?));
            let owner = SlaveId(NetworkEndian::read_u32(take(4)?));
            if tokens.last().is_some_and(|&(last, _)| last >= token) {
                return Err(ViewError::Unordered);
            }
            let Some(member) = members.iter_mut().find(|m| m.id == owner) else {
                return Err(ViewError::UnknownOwner(token, owner));
            };
            member.slots += 1;
            tokens.push((token, owner));
        }
        if at != value.len() {
            return Err(ViewError::TrailingBytes);
        }
        Ok(View::new(epoch, flags & STABLE != 0, members, &tokens))
    }

    /// The `flags` word for this view.
    pub fn flags(&self) -> u32 {
        if self.stable { STABLE } else { 0 }
    }

    fn member(&self, id: SlaveId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The primary for `key` (the owner of the first token at or after its hash,
    /// wrapping) and the replica (the owner of the next token owned by another member).
    pub fn placement(&self, key: &[u8]) -> Option<(&Member, Option<&Member>)> {
        let placement = ring::placement_in(&self.placements, key_hash(key))?;
        let primary = self.member(placement.primary)?;
        Some((primary, placement.replica.and_then(|r| self.member(r))))
    }

    /// True if `id` is the primary for `key` under this view.
    pub fn is_primary(&self, id: SlaveId, key: &[u8]) -> bool {
        self.placement(key).is_some_and(|(p, _)| p.id == id)
    }

    /// True if `id` is the replica for `key` under this view.
    pub fn is_replica(&self, id: SlaveId, key: &[u8]) -> bool {
        self.placement(key)
            .is_some_and(|(_, r)| r.is_some_and(|r| r.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Ring;

    fn view(n: usize) -> View {
        let mut ring = Ring::new();
        for i in 0..n {
            ring.join(&format!("127.0.0.1:{}", 9000 + i));
        }
        View::new(7, true, ring.members(), &ring.tokens())
    }

    #[test]
    fn round_trips() {
        let v = view(3);
        let back = View::decode(v.epoch, v.flags(), &v.encode_members()).unwrap();
        assert_eq!(back, v);
        let empty = View::default();
        assert_eq!(View::decode(0, 0, &empty.encode_members()).unwrap(), empty);
    }

    #[test]
    fn places_keys_as_the_ring_does() {
        let mut ring = Ring::new();
        for i in 0..4 {
            ring.join(&format!("127.0.0.1:{}", 9000 + i));
        }
        let v = View::new(1, true, ring.members(), &ring.tokens());
        for i in 0..2000 {
            let key = format!("key:{i}");
            let p = ring.placement_of_key(key.as_bytes()).unwrap();
            let (primary, replica) = v.placement(key.as_bytes()).unwrap();
            assert_eq!(primary.id, p.primary);
            assert_eq!(replica.map(|r| r.id), p.replica);
        }
    }

    #[test]
    fn rejects_bad_bytes() {
        let v = view(2);
        let bytes = v.encode_members();
        for cut in 0..bytes.len() {
            assert!(View::decode(1, 1, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(View::decode(1, 1, &longer).is_err());
        let mut huge = vec![0xff; 4];
        huge.extend_from_slice(&[0; 16]);
        assert!(View::decode(1, 1, &huge).is_err());
        // Tokens out of order, and a token of an unknown member.
        let one = |tokens: &[(u64, u32)]| {
            let mut out = vec![0, 0, 0, 1, 0, 0, 0, 1, 0, 1, b'a'];
            out.extend_from_slice(&(tokens.len() as u32).to_be_bytes());
            for (t, id) in tokens {
                out.extend_from_slice(&t.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
            out
        };
        assert!(View::decode(1, 1, &one(&[(5, 1), (9, 1)])).is_ok());
        assert!(View::decode(1, 1, &one(&[(9, 1), (5, 1)])).is_err());
        assert!(View::decode(1, 1, &one(&[(5, 2)])).is_err());
    }
}
