//! The recache tokens `mg` handed out (memcached keeps an `ITEM_TOKEN_SENT` bit on the
//! item; the store has no such bit, so the coordinator remembers, per key, the version of
//! the item a `W` was sent for). A later `mg` of that same version gets `Z`; any write
//! gives the key a new version, which clears the mark, as a new item does in memcached.
//! The table is bounded (emptied when full) and not kept across restarts: at worst a
//! second client is handed a `W`. The lock is a leaf: held for a map operation only,
//! never across a request.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Keys remembered at most; past that the table starts over.
const CAPACITY: usize = 65_536;

static SENT: Mutex<BTreeMap<Vec<u8>, u64>> = Mutex::new(BTreeMap::new());

/// True when a token was already handed out for `key` at `version`.
pub(super) fn sent(key: &[u8], version: u64) -> bool {
    let mut sent = SENT.lock().unwrap_or_else(PoisonError::into_inner);
    match sent.get(key) {
        Some(&v) if v == version => true,
        Some(_) => {
            sent.remove(key);
            false
        }
        None => false,
    }
}

/// True when some token is remembered for `key`.
pub(super) fn pending(key: &[u8]) -> bool {
    SENT.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(key)
}

/// The item `key` went from version `from` to `to` without a new value (a touch):
/// a token sent for `from` now stands for `to`.
pub(super) fn carry(key: &[u8], from: u64, to: u64) {
    let mut sent = SENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(version) = sent.get_mut(key) {
        if *version == from {
            *version = to;
        }
    }
}

/// Hands out the token for `key` at `version`: false if it already was.
pub(super) fn claim(key: &[u8], version: u64) -> bool {
    let mut sent = SENT.lock().unwrap_or_else(PoisonError::into_inner);
    if sent.get(key) == Some(&version) {
        return false;
    }
    if sent.len() >= CAPACITY && !sent.contains_key(key) {
        sent.clear();
    }
    sent.insert(key.to_vec(), version);
    true
}
