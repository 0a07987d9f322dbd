//! The routing view for direct routing: the ring as the coordinator publishes it, with
//! its epoch and whether it is *stable* (no slave joining, leaving or being recovered).
//!
//! The coordinator sends the same bytes to clients (`RingGet` reply) and to slaves
//! (`SetView` request); protocol.md, "Direct routing", describes them:
//!
//! ```text
//! count u32, then per member: id u32, token u64, address length u16, address bytes
//! ```
//!
//! (the epoch travels in the frame's `arg`, the stable bit in its `flags`).
//!
//! A client uses a view to find a key's primary; a slave uses it to check that a direct
//! request is its own under that epoch. This module only encodes, decodes and answers
//! placement questions; it takes no lock and does no I/O.

use byteorder::{ByteOrder, NetworkEndian};

use crate::ring::{Member, SlaveId, Token, in_arc, key_hash};

/// `flags` bit of a `RingGet` reply or `SetView` request: the view is stable.
pub const STABLE: u32 = 1;

/// Most members a view may carry (a bound for the decoder).
const MAX_MEMBERS: usize = 4096;

/// A ring with its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// The coordinator's epoch: grows at every routing change.
    pub epoch: u64,
    /// True when no data is moving: only then may requests bypass the coordinator.
    pub stable: bool,
    /// Live members in token order.
    pub members: Vec<Member>,
}

impl View {
    /// The members, encoded as the value of a `RingGet` reply or a `SetView` request.
    pub fn encode_members(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.members.len() * 32);
        let mut word = [0u8; 8];
        NetworkEndian::write_u32(&mut word, self.members.len() as u32);
        out.extend_from_slice(&word[..4]);
        for member in &self.members {
            NetworkEndian::write_u32(&mut word, member.id.0);
            out.extend_from_slice(&word[..4]);
            NetworkEndian::write_u64(&mut word, member.token.0);
            out.extend_from_slice(&word);
            let addr = &member.addr.as_bytes()[..member.addr.len().min(u16::MAX as usize)];
            NetworkEndian::write_u16(&mut word, addr.len() as u16);
            out.extend_from_slice(&word[..2]);
            out.extend_from_slice(addr);
        }
        out
    }

    /// A view from a frame's `arg` (epoch), `flags` (stable bit) and value (members).
    ///
    /// # Errors
    /// A message saying what is wrong with the bytes: truncated, too many members,
    /// members out of token order, an address that is not UTF-8.
    pub fn decode(epoch: u64, flags: u32, value: &[u8]) -> Result<View, String> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let bytes = value
                .get(at..at + n)
                .ok_or_else(|| "ring view truncated".to_string())?;
            at += n;
            Ok(bytes)
        };
        let count = NetworkEndian::read_u32(take(4)?) as usize;
        if count > MAX_MEMBERS {
            return Err(format!(
                "ring view has {count} members (at most {MAX_MEMBERS})"
            ));
        }
        let mut members: Vec<Member> = Vec::with_capacity(count);
        for _ in 0..count {
            let id = SlaveId(NetworkEndian::read_u32(take(4)?));
            let token = Token(NetworkEndian::read_u64(take(8)?));
            let len = NetworkEndian::read_u16(take(2)?) as usize;
            let addr = std::str::from_utf8(take(len)?)
                .map_err(|_| "ring view address is not UTF-8".to_string())?
                .to_string();
            if members.last().is_some_and(|last| last.token >= token) {
                return Err("ring view members are not in token order".into());
            }
            members.push(Member { id, token, addr });
        }
        if at != value.len() {
            return Err("ring view has trailing bytes".into());
        }
        Ok(View {
            epoch,
            stable: flags & STABLE != 0,
            members,
        })
    }

    /// The `flags` word for this view.
    pub fn flags(&self) -> u32 {
        if self.stable { STABLE } else { 0 }
    }

    fn index_at_or_after(&self, hash: u64) -> Option<usize> {
        if self.members.is_empty() {
            return None;
        }
        let i = self.members.partition_point(|m| m.token.0 < hash);
        Some(if i == self.members.len() { 0 } else { i })
    }

    /// The primary for `key` (first token at or after its hash, wrapping) and the
    /// replica (the primary's successor, if there is another member).
    pub fn placement(&self, key: &[u8]) -> Option<(&Member, Option<&Member>)> {
        let i = self.index_at_or_after(key_hash(key))?;
        let replica = (self.members.len() > 1).then(|| &self.members[(i + 1) % self.members.len()]);
        Some((&self.members[i], replica))
    }

    fn position(&self, id: SlaveId) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The member after `id` on the ring, if `id` is a member and not alone.
    pub fn successor(&self, id: SlaveId) -> Option<&Member> {
        let i = self.position(id)?;
        (self.members.len() > 1).then(|| &self.members[(i + 1) % self.members.len()])
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

    /// The arc (start exclusive, end inclusive) `id` is primary for.
    pub fn arc_of(&self, id: SlaveId) -> Option<(Token, Token)> {
        let i = self.position(id)?;
        let n = self.members.len();
        Some((self.members[(i + n - 1) % n].token, self.members[i].token))
    }

    /// True if `hash` is in `id`'s arc.
    pub fn owns_hash(&self, id: SlaveId, hash: u64) -> bool {
        self.arc_of(id)
            .is_some_and(|(start, end)| in_arc(hash, start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(tokens: &[u64]) -> View {
        View {
            epoch: 7,
            stable: true,
            members: tokens
                .iter()
                .enumerate()
                .map(|(i, &t)| Member {
                    id: SlaveId(i as u32 + 1),
                    token: Token(t),
                    addr: format!("127.0.0.1:{}", 9000 + i),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips() {
        let v = view(&[10, 1 << 40, u64::MAX - 3]);
        let back = View::decode(v.epoch, v.flags(), &v.encode_members()).unwrap();
        assert_eq!(back, v);
        let empty = View::default();
        assert_eq!(View::decode(0, 0, &empty.encode_members()).unwrap(), empty);
    }

    #[test]
    fn rejects_bad_bytes() {
        let v = view(&[10, 20]);
        let bytes = v.encode_members();
        for cut in 0..bytes.len() {
            assert!(View::decode(1, 1, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(View::decode(1, 1, &longer).is_err());
        let unordered = view(&[20, 10]).encode_members();
        assert!(View::decode(1, 1, &unordered).is_err());
        let mut huge = vec![0xff; 4];
        huge.extend_from_slice(&[0; 16]);
        assert!(View::decode(1, 1, &huge).is_err());
    }

    #[test]
    fn placement_matches_the_ring() {
        let tokens = [1u64 << 62, 1 << 63, (1 << 63) + (1 << 62)];
        let v = view(&tokens);
        let assigned: Vec<_> = v
            .members
            .iter()
            .map(|m| (m.id, m.addr.clone(), m.token))
            .collect();
        let mut ring = crate::ring::Ring::restore(&assigned, 10);
        for m in &v.members {
            ring.insert(m.id);
        }
        for i in 0..2000u32 {
            let key = format!("key:{i}");
            let (p, r) = v.placement(key.as_bytes()).unwrap();
            let expected = ring.placement_of_key(key.as_bytes()).unwrap();
            assert_eq!(p.id, expected.primary);
            assert_eq!(r.map(|r| r.id), expected.replica);
            assert!(v.is_primary(p.id, key.as_bytes()));
            assert!(v.owns_hash(p.id, key_hash(key.as_bytes())));
            assert!(v.is_replica(r.unwrap().id, key.as_bytes()));
            assert_eq!(v.successor(p.id).map(|m| m.id), r.map(|r| r.id));
        }
    }

    #[test]
    fn a_lone_member_owns_everything() {
        let v = view(&[42]);
        let (p, r) = v.placement(b"anything").unwrap();
        assert_eq!(p.id, SlaveId(1));
        assert!(r.is_none());
        assert!(v.owns_hash(SlaveId(1), 0));
        assert!(v.successor(SlaveId(1)).is_none());
        assert!(View::default().placement(b"k").is_none());
    }
}
