//! Serves meta commands (`mn mg ms md ma me`) through the router and writes memcached's
//! replies.
//!
//! Each command becomes one or a few [`Request`]s; what the core cannot express is
//! emulated here or left out:
//! - `h` answers 0 and `l` answers 0 (the store keeps no access history); `X` is never
//!   sent (no stale items); the `W`/`Z` recache tokens are remembered by the coordinator
//!   (see [`tokens`]), per key and version: a write clears the mark, a touch by `mg T`
//!   keeps it (one more read when the key has a mark), one by `touch`/`gat` clears it
//!   (the core gives a touched item a new version); between the core creating a vivified item and the
//!   winner's mark, another reader may see the empty item with neither `W` nor `Z`;
//! - `C0` (memcached compares it, and no item ever has cas 0): `ms`/`md` answer `EX` if
//!   the key holds a value, `NF` if not, without writing (`ma C0` compares nothing, as in
//!   memcached);
//! - `ms I` is taken as a plain `C` compare (no stale items); `md I` deletes the item
//!   (its `T` is then moot): a stale mark kept only in the coordinator's memory would
//!   turn stale data into fresh data at its restart;
//! - `md x` stores an empty value over the item, compared against its cas (memcached
//!   1.6.19+); `ms N` with `MA`/`MP` creates the item from the data on a miss (1.6.19+);
//! - a `t` placed before `T` (and any `t` in `ma`) costs one more read, for the TTL from
//!   before the update.
//!
//! No lock is held across a request: each goes through the router's `serve`; the token
//! table's lock is a leaf, held for one map operation.

use super::Coordinator;
use crate::meta::{self, MetaCommand, MetaFlags, ReplyFlag};
use crate::request::{Create, Failure, Found, Outcome, Request, StoreMode, expires_at, unix_now};
use crate::text::{self, TextError};

/// Serves one meta command, appending its reply to `out`.
pub(super) fn execute(coordinator: &Coordinator, command: MetaCommand, out: &mut Vec<u8>) {
    run(&|request| coordinator.router.serve(request), command, out);
}

/// Serves one meta command with `serve` answering its requests.
fn run(serve: &impl Fn(Request) -> Outcome, command: MetaCommand, out: &mut Vec<u8>) {
    match command {
        MetaCommand::Noop => out.extend_from_slice(b"MN\r\n"),
        MetaCommand::Debug { key, base64 } => debug(serve, key, base64, out),
        MetaCommand::Get { key, flags } => get(serve, key, &flags, out),
        MetaCommand::Set {
            key,
            mode,
            data,
            flags,
        } => set(serve, key, mode, data, &flags, out),
        MetaCommand::Delete { key, flags } => delete(serve, key, &flags, out),
        MetaCommand::Arith { key, decr, flags } => arith(serve, key, decr, &flags, out),
    }
}

/// What a read found: `Ok(None)` a miss, `Err` an outcome to report as a failure.
fn found(outcome: Outcome) -> Result<Option<Found>, Outcome> {
    match outcome {
        Outcome::Found(found) => Ok(Some(found)),
        Outcome::NotFound => Ok(None),
        other => Err(other),
    }
}

/// `me <key> [b]`: memcached's debug line, with what Piazza knows (`la` 0, `fetch=no`,
/// slab class 1; `size` as memcached counts an item: header, key, value, cas, flags).
fn debug(serve: &impl Fn(Request) -> Outcome, key: Vec<u8>, base64: bool, out: &mut Vec<u8>) {
    let found = match found(serve(Request::Get { key: key.clone() })) {
        Ok(Some(found)) => found,
        Ok(None) => return out.extend_from_slice(b"EN\r\n"),
        Err(other) => return write_failure(other, out),
    };
    let now = unix_now();
    // memcached 1.6.18 prints now - exptime (negative for an item still alive).
    let exp = if found.expires == 0 {
        -1
    } else {
        (now as i64).wrapping_sub(found.expires as i64)
    };
    let size =
        48 + 8 + key.len() + 1 + found.value.len() + 2 + if found.flags != 0 { 4 } else { 0 };
    out.extend_from_slice(b"ME ");
    if base64 {
        out.extend_from_slice(&meta::base64_encode(&key));
    } else {
        out.extend_from_slice(&key);
    }
    out.extend_from_slice(
        format!(
            " exp={exp} la=0 cas={} fetch=no cls=1 size={size}\r\n",
            found.version
        )
        .as_bytes(),
    );
}

/// `mg`: `Get`, or `Touch` with `T`; on a miss with `N`, an `Add` of an empty value.
fn get(serve: &impl Fn(Request) -> Outcome, key: Vec<u8>, flags: &MetaFlags, out: &mut Vec<u8>) {
    let now = unix_now();
    let read = || match flags.ttl {
        Some(exptime) => serve(Request::Touch {
            key: key.clone(),
            exptime,
        }),
        None => serve(Request::Get { key: key.clone() }),
    };
    // The item before a `T` touches it: for a `t` sent before the `T`, and to keep a
    // recache token across the touch (which gives the item a new version).
    let mut before = None;
    if flags.ttl.is_some() && (flags.ttl_read_before_update() || tokens::pending(&key)) {
        match found(serve(Request::Get { key: key.clone() })) {
            Ok(found) => before = found,
            Err(other) => return write_failure(other, out),
        }
    }
    let mut created = false;
    let item = match found(read()) {
        Ok(Some(item)) => item,
        Ok(None) => {
            let Some(_) = flags.vivify else {
                return write_miss(flags, &key, out);
            };
            let exptime = flags.created_exptime();
            let outcome = serve(Request::Store {
                mode: StoreMode::Add,
                key: key.clone(),
                value: Vec::new(),
                flags: 0,
                exptime,
                cas: 0,
            });
            match outcome {
                Outcome::Stored { version } => {
                    created = true;
                    Found {
                        value: Vec::new(),
                        flags: 0,
                        version,
                        expires: expires_at(exptime, now),
                    }
                }
                // Someone else created it meanwhile: answer with theirs.
                Outcome::NotStored => match found(read()) {
                    Ok(Some(item)) => item,
                    Ok(None) => return write_miss(flags, &key, out),
                    Err(other) => return write_failure(other, out),
                },
                other => return write_failure(other, out),
            }
        }
        Err(other) => return write_failure(other, out),
    };
    if flags.opaque_too_long {
        return out.extend_from_slice(b"CLIENT_ERROR opaque token too long\r\n");
    }
    // The item's expiry as memcached's reply loop sees it, flag after flag.
    let mut expires = if created {
        0
    } else {
        if let Some(before) = &before {
            tokens::carry(&key, before.version, item.version);
        }
        before.as_ref().map_or(item.expires, |b| b.expires)
    };
    // memcached's ITEM_TOKEN_SENT: a recache token was handed out for this very item.
    let already = !created && tokens::sent(&key, item.version);
    let mut won = false;
    if flags.value {
        out.extend_from_slice(b"VA ");
        out.extend_from_slice(item.value.len().to_string().as_bytes());
    } else {
        out.extend_from_slice(b"HD");
    }
    for flag in &flags.order {
        match flag {
            ReplyFlag::SetTtl => {
                expires = if created {
                    expires_at(flags.ttl.unwrap_or(0), now)
                } else {
                    item.expires
                };
            }
            ReplyFlag::Vivify => {
                if created {
                    expires = expires_at(flags.vivify.unwrap_or(0), now);
                    won = true;
                }
            }
            ReplyFlag::Recache => {
                let limit = expires_at(flags.recache.unwrap_or(0), now);
                if !already && !created && expires != 0 && expires < limit {
                    won = true;
                }
            }
            ReplyFlag::Size => meta::push_number(out, b's', item.value.len()),
            ReplyFlag::Ttl => meta::push_ttl(out, expires, now),
            ReplyFlag::Cas => meta::push_number(out, b'c', item.version),
            ReplyFlag::Flags => meta::push_number(out, b'f', item.flags),
            ReplyFlag::LastAccess => out.extend_from_slice(b" l0"),
            ReplyFlag::Hit => out.extend_from_slice(b" h0"),
            ReplyFlag::Opaque(token) => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            ReplyFlag::Key => meta::push_key(out, &key, flags.base64),
        }
    }
    if already {
        out.extend_from_slice(b" Z");
    } else if won {
        // Another request may have won this item's token meanwhile.
        if tokens::claim(&key, item.version) {
            out.extend_from_slice(b" W");
        } else {
            out.extend_from_slice(b" Z");
        }
    }
    out.extend_from_slice(b"\r\n");
    if flags.value {
        out.extend_from_slice(&item.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// The recache tokens `mg` handed out (memcached keeps an `ITEM_TOKEN_SENT` bit on the
/// item; the store has no such bit, so the coordinator remembers, per key, the version of
/// the item a `W` was sent for). A later `mg` of that same version gets `Z`; any write
/// gives the key a new version, which clears the mark, as a new item does in memcached.
/// The table is bounded (emptied when full) and not kept across restarts: at worst a
/// second client is handed a `W`. The lock is a leaf: held for a map operation only,
/// never across a request.
mod tokens {
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
}

/// `mg`'s miss: `EN` with `O` and `k`, or nothing with `q`.
fn write_miss(flags: &MetaFlags, key: &[u8], out: &mut Vec<u8>) {
    if flags.opaque_too_long {
        return out.extend_from_slice(b"CLIENT_ERROR opaque token too long\r\n");
    }
    if flags.quiet {
        return;
    }
    out.extend_from_slice(b"EN");
    meta::push_opaque_and_key(out, flags, key);
    out.extend_from_slice(b"\r\n");
}

/// `ms`: a `Store` in the `M` mode, with `C` as its cas.
fn set(
    serve: &impl Fn(Request) -> Outcome,
    key: Vec<u8>,
    mode: StoreMode,
    data: Vec<u8>,
    flags: &MetaFlags,
    out: &mut Vec<u8>,
) {
    let exptime = flags.ttl.unwrap_or(0);
    let appending = matches!(mode, StoreMode::Append | StoreMode::Prepend);
    // memcached turns set and replace with a cas into its cas command; add ignores the
    // cas; append and prepend compare it when non-zero.
    let (mode, cas) = match (mode, flags.compare_cas) {
        (StoreMode::Set | StoreMode::Replace, Some(0)) => {
            // No item has cas 0: it exists (EX) or not (NF), nothing is written.
            let code: &[u8] = match found(serve(Request::Get { key: key.clone() })) {
                Ok(Some(_)) => b"EX",
                Ok(None) => b"NF",
                Err(other) => return write_failure(other, out),
            };
            return write_set_reply(code, flags, &key, 0, out);
        }
        (StoreMode::Set | StoreMode::Replace, Some(cas)) => (StoreMode::Set, cas),
        (StoreMode::Add, _) => (StoreMode::Add, 0),
        (mode, cas) => (mode, cas.unwrap_or(0)),
    };
    let store = |mode, value: Vec<u8>, exptime, cas| {
        serve(Request::Store {
            mode,
            key: key.clone(),
            value,
            flags: flags.client_flags,
            exptime,
            cas,
        })
    };
    let mut outcome = store(mode, data.clone(), exptime, cas);
    if appending && outcome == Outcome::NotStored {
        if let Some(vivify) = flags.vivify {
            // Autovivify: create the item from this data; if another client created it
            // meanwhile, append to theirs.
            outcome = store(StoreMode::Add, data.clone(), vivify, 0);
            if outcome == Outcome::NotStored {
                outcome = store(mode, data, exptime, cas);
            }
        }
    }
    match outcome {
        Outcome::Stored { version } => {
            if !flags.quiet {
                write_set_reply(b"HD", flags, &key, version, out);
            }
        }
        Outcome::NotStored => write_set_reply(b"NS", flags, &key, 0, out),
        // Append and prepend with a cas on a missing item: memcached says NOT_STORED.
        Outcome::NotFound if appending => write_set_reply(b"NS", flags, &key, 0, out),
        Outcome::NotFound => write_set_reply(b"NF", flags, &key, 0, out),
        Outcome::Exists => write_set_reply(b"EX", flags, &key, 0, out),
        other => write_failure(other, out),
    }
}

/// `ms`'s reply line: the code, then `O`, `k` and `c` in the order sent.
fn write_set_reply(code: &[u8], flags: &MetaFlags, key: &[u8], cas: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(code);
    for flag in &flags.order {
        match flag {
            ReplyFlag::Opaque(token) => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            ReplyFlag::Key => meta::push_key(out, key, flags.base64),
            ReplyFlag::Cas => meta::push_number(out, b'c', cas),
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `md`: a `Delete` with `C` as its cas; with `x`, an empty value stored over the item.
fn delete(serve: &impl Fn(Request) -> Outcome, key: Vec<u8>, flags: &MetaFlags, out: &mut Vec<u8>) {
    let code: &[u8] = if flags.remove_value {
        match found(serve(Request::Get { key: key.clone() })) {
            Ok(None) => b"NF",
            Ok(Some(item)) if flags.compare_cas.is_some_and(|c| c != item.version) => b"EX",
            Ok(Some(item)) => {
                let outcome = serve(Request::Store {
                    mode: StoreMode::Set,
                    key: key.clone(),
                    value: Vec::new(),
                    flags: flags.client_flags,
                    exptime: flags.ttl.unwrap_or(0),
                    cas: item.version,
                });
                match outcome {
                    Outcome::Stored { .. } => b"HD",
                    Outcome::Exists | Outcome::NotFound | Outcome::NotStored => b"NS",
                    other => return write_failure(other, out),
                }
            }
            Err(other) => return write_failure(other, out),
        }
    } else if flags.compare_cas == Some(0) {
        match found(serve(Request::Get { key: key.clone() })) {
            Ok(Some(_)) => b"EX",
            Ok(None) => b"NF",
            Err(other) => return write_failure(other, out),
        }
    } else {
        let outcome = serve(Request::Delete {
            key: key.clone(),
            cas: flags.compare_cas.unwrap_or(0),
        });
        match outcome {
            Outcome::Deleted => b"HD",
            Outcome::NotFound => b"NF",
            Outcome::Exists => b"EX",
            other => return write_failure(other, out),
        }
    };
    if code == b"HD" && flags.quiet {
        return;
    }
    out.extend_from_slice(code);
    meta::push_opaque_and_key(out, flags, &key);
    out.extend_from_slice(b"\r\n");
}

/// `ma`: an `Arith`, creating the item with `N`/`J`, setting its TTL with `T`.
fn arith(
    serve: &impl Fn(Request) -> Outcome,
    key: Vec<u8>,
    decr: bool,
    flags: &MetaFlags,
    out: &mut Vec<u8>,
) {
    let now = unix_now();
    // `t` needs the item's expiry, which the arithmetic's outcome does not carry.
    let mut before: Option<Option<u64>> = None;
    if flags.wants_ttl() {
        match found(serve(Request::Get { key: key.clone() })) {
            Ok(item) => before = Some(item.map(|f| f.expires)),
            Err(other) => return write_failure(other, out),
        }
    }
    let create = flags.vivify.map(|_| Create {
        initial: flags.initial,
        exptime: flags.created_exptime(),
        flags: 0,
    });
    let outcome = serve(Request::Arith {
        key: key.clone(),
        decr,
        delta: flags.delta,
        create,
        exptime: flags.ttl,
        cas: flags.compare_cas.unwrap_or(0),
    });
    let (value, version) = match outcome {
        Outcome::Number { value, version } => (value, version),
        Outcome::NotFound => return write_arith_status(b"NF", flags, &key, out),
        Outcome::Exists => return write_arith_status(b"EX", flags, &key, out),
        Outcome::NotStored => return write_arith_status(b"NS", flags, &key, out),
        other => return write_failure(other, out),
    };
    if flags.opaque_too_long {
        return out.extend_from_slice(b"CLIENT_ERROR opaque token too long\r\n");
    }
    if flags.quiet {
        return;
    }
    let created = matches!(before, Some(None)) && create.is_some();
    let mut expires = before.flatten().unwrap_or(0);
    let number = value.to_string();
    if flags.value {
        out.extend_from_slice(b"VA ");
        out.extend_from_slice(number.len().to_string().as_bytes());
    } else {
        out.extend_from_slice(b"HD");
    }
    for flag in &flags.order {
        match flag {
            ReplyFlag::Cas => meta::push_number(out, b'c', version),
            ReplyFlag::Ttl => meta::push_ttl(out, expires, now),
            ReplyFlag::SetTtl => expires = expires_at(flags.ttl.unwrap_or(0), now),
            ReplyFlag::Vivify if created => {
                expires = expires_at(flags.vivify.unwrap_or(0), now);
            }
            ReplyFlag::Opaque(token) => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            ReplyFlag::Key => meta::push_key(out, &key, flags.base64),
            _ => {}
        }
    }
    if flags.value {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(number.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `ma`'s reply without an item: the code, `O` and `k`.
fn write_arith_status(code: &[u8], flags: &MetaFlags, key: &[u8], out: &mut Vec<u8>) {
    if flags.opaque_too_long {
        return out.extend_from_slice(b"CLIENT_ERROR opaque token too long\r\n");
    }
    out.extend_from_slice(code);
    meta::push_opaque_and_key(out, flags, key);
    out.extend_from_slice(b"\r\n");
}

/// A request that failed: memcached's error line (errors are sent even with `q`).
fn write_failure(outcome: Outcome, out: &mut Vec<u8>) {
    match outcome {
        Outcome::Failed(Failure::Invalid(why)) => {
            out.extend_from_slice(&TextError::Client(why).reply());
        }
        Outcome::Failed(Failure::TooLarge) => out.extend_from_slice(&TextError::TooLarge.reply()),
        Outcome::Failed(Failure::NonNumeric) => out
            .extend_from_slice(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
        Outcome::Failed(failure) => text::write_server_error(out, &failure.to_string()),
        other => text::write_server_error(out, &format!("unexpected outcome {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    //! The executor against an in-memory model of the core's semantics (`request.rs`), so
    //! reply formats are checked without a cluster.

    use super::*;
    use crate::meta::MetaParsed;
    use crate::text::TextLimits;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// value, flags, version, expires
    type Item = (Vec<u8>, u32, u64, u64);

    #[derive(Default)]
    struct Model {
        items: RefCell<HashMap<Vec<u8>, Item>>,
        clock: RefCell<u64>,
        requests: RefCell<Vec<Request>>,
    }

    impl Model {
        fn version(&self) -> u64 {
            let mut clock = self.clock.borrow_mut();
            *clock += 1;
            *clock
        }

        fn live(&self, key: &[u8]) -> Option<Item> {
            let now = unix_now();
            let mut items = self.items.borrow_mut();
            match items.get(key) {
                Some(item) if item.3 != 0 && item.3 <= now => {
                    items.remove(key);
                    None
                }
                other => other.cloned(),
            }
        }

        fn serve(&self, request: Request) -> Outcome {
            self.requests.borrow_mut().push(request.clone());
            let now = unix_now();
            let found = |(value, flags, version, expires): Item| {
                Outcome::Found(Found {
                    value,
                    flags,
                    version,
                    expires,
                })
            };
            match request {
                Request::Get { key } => self.live(&key).map_or(Outcome::NotFound, found),
                Request::Touch { key, exptime } => match self.live(&key) {
                    None => Outcome::NotFound,
                    Some(mut item) => {
                        // As the core: a touch is a write, at a new version.
                        item.2 = self.version();
                        item.3 = expires_at(exptime, now);
                        self.items.borrow_mut().insert(key, item.clone());
                        found(item)
                    }
                },
                Request::Store {
                    mode,
                    key,
                    value,
                    flags,
                    exptime,
                    cas,
                } => {
                    let old = self.live(&key);
                    if cas != 0 && mode != StoreMode::Add {
                        match &old {
                            None => return Outcome::NotFound,
                            Some(item) if item.2 != cas => return Outcome::Exists,
                            _ => {}
                        }
                    }
                    let new = match (mode, old) {
                        (StoreMode::Add, Some(_)) => return Outcome::NotStored,
                        (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                            return Outcome::NotStored;
                        }
                        (StoreMode::Append, Some(old)) => {
                            ([old.0, value].concat(), old.1, 0, old.3)
                        }
                        (StoreMode::Prepend, Some(old)) => {
                            ([value, old.0].concat(), old.1, 0, old.3)
                        }
                        _ => (value, flags, 0, expires_at(exptime, now)),
                    };
                    let version = self.version();
                    self.items
                        .borrow_mut()
                        .insert(key, (new.0, new.1, version, new.3));
                    Outcome::Stored { version }
                }
                Request::Delete { key, cas } => match self.live(&key) {
                    None => Outcome::NotFound,
                    Some(item) if cas != 0 && item.2 != cas => Outcome::Exists,
                    Some(_) => {
                        self.items.borrow_mut().remove(&key);
                        Outcome::Deleted
                    }
                },
                Request::Arith {
                    key,
                    decr,
                    delta,
                    create,
                    exptime,
                    cas,
                } => {
                    let Some(item) = self.live(&key) else {
                        let Some(create) = create else {
                            return Outcome::NotFound;
                        };
                        let version = self.version();
                        let value = create.initial.to_string().into_bytes();
                        let expires = expires_at(create.exptime, now);
                        self.items
                            .borrow_mut()
                            .insert(key, (value, create.flags, version, expires));
                        return Outcome::Number {
                            value: create.initial,
                            version,
                        };
                    };
                    if cas != 0 && item.2 != cas {
                        return Outcome::Exists;
                    }
                    let Some(number) = std::str::from_utf8(&item.0)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        return Outcome::Failed(Failure::NonNumeric);
                    };
                    let value = if decr {
                        number.saturating_sub(delta)
                    } else {
                        number.wrapping_add(delta)
                    };
                    let version = self.version();
                    let expires = exptime.map_or(item.3, |e| expires_at(e, now));
                    self.items.borrow_mut().insert(
                        key,
                        (value.to_string().into_bytes(), item.1, version, expires),
                    );
                    Outcome::Number { value, version }
                }
                other => Outcome::Failed(Failure::Unavailable(format!("{other:?}"))),
            }
        }

        /// Feeds `input` as a connection would and returns every reply.
        fn talk(&self, input: &[u8]) -> String {
            let mut out = Vec::new();
            let mut rest = input;
            let limits = TextLimits::default();
            while !rest.is_empty() {
                match crate::meta::parse(rest, &limits) {
                    MetaParsed::Command { command, consumed } => {
                        run(&|r| self.serve(r), command, &mut out);
                        rest = &rest[consumed..];
                    }
                    MetaParsed::Error {
                        reply,
                        consumed,
                        skip,
                    } => {
                        out.extend_from_slice(&reply);
                        rest = rest.get(consumed + skip..).unwrap_or_default();
                    }
                    other => panic!("{other:?} on {rest:?}"),
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    }

    #[test]
    fn mn_and_misses() {
        let m = Model::default();
        assert_eq!(
            m.talk(b"mn\r\nmg a v\r\nmg a q v\r\nmg a O5 k q\r\nmg a O5 k\r\nmn\r\n"),
            "MN\r\nEN\r\nEN O5 ka\r\nMN\r\n"
        );
        assert_eq!(m.talk(b"mg Zm9v b k O1\r\n"), "EN kZm9v b O1\r\n");
        assert_eq!(m.talk(b"me a\r\n"), "EN\r\n");
    }

    #[test]
    fn ms_then_mg_with_every_reply_flag() {
        let m = Model::default();
        assert_eq!(m.talk(b"ms foo 2 T0 F5 c\r\nhi\r\n"), "HD c1\r\n");
        assert_eq!(
            m.talk(b"mg foo v c f t s k h l O9 q u\r\n"),
            "VA 2 c1 f5 t-1 s2 kfoo h0 l0 O9\r\nhi\r\n"
        );
        assert_eq!(m.talk(b"mg foo\r\n"), "HD\r\n");
        assert_eq!(m.talk(b"mg foo q s\r\n"), "HD s2\r\n");
        assert_eq!(
            m.talk(b"ms foo 3 T100 k O1 c q\r\nabc\r\nmg foo t v\r\n"),
            "VA 3 t100\r\nabc\r\n"
        );
        // A `t` before `T` reports the TTL before the update, as memcached.
        assert_eq!(m.talk(b"mg foo t T200\r\n"), "HD t100\r\n");
        assert_eq!(m.talk(b"mg foo T300 t\r\n"), "HD t300\r\n");
        assert_eq!(
            m.talk(b"me foo\r\n"),
            "ME foo exp=-300 la=0 cas=4 fetch=no cls=1 size=65\r\n"
        );
        let opaque = format!("mg foo O{}\r\n", "1".repeat(32));
        assert_eq!(
            m.talk(opaque.as_bytes()),
            "CLIENT_ERROR opaque token too long\r\n"
        );
    }

    #[test]
    fn ms_modes_and_cas() {
        let m = Model::default();
        assert_eq!(
            m.talk(b"ms a 2 ME c k O12\r\nhi\r\nms a 2 ME c k O12\r\nhi\r\n"),
            "HD c1 ka O12\r\nNS c0 ka O12\r\n"
        );
        assert_eq!(m.talk(b"ms nope 2 MA c\r\nhi\r\n"), "NS c0\r\n");
        assert_eq!(m.talk(b"ms nope 2 MR\r\nhi\r\n"), "NS\r\n");
        assert_eq!(m.talk(b"ms a 2 C99 c\r\nhi\r\n"), "EX c0\r\n");
        assert_eq!(
            m.talk(b"ms a 2 C0\r\nhi\r\nms zz 2 C0\r\nhi\r\n"),
            "EX\r\nNF\r\n"
        );
        assert_eq!(m.talk(b"ms zz 2 C5 MR\r\nhi\r\n"), "NF\r\n");
        assert_eq!(m.talk(b"ms a 2 C1 c\r\nHI\r\n"), "HD c2\r\n");
        assert_eq!(
            m.talk(b"ms a 1 MA\r\n!\r\nms a 1 MP C3\r\n<\r\n"),
            "HD\r\nHD\r\n"
        );
        assert_eq!(m.talk(b"mg a v\r\n"), "VA 4\r\n<HI!\r\n");
        assert_eq!(m.talk(b"ms a 1 MP C1\r\n<\r\n"), "EX\r\n");
        assert_eq!(m.talk(b"ms nope 1 MA C7\r\n<\r\n"), "NS\r\n");
        // Autovivify on append.
        assert_eq!(
            m.talk(b"ms viv 2 MA N100 F3\r\nab\r\nms viv 2 MA N100\r\ncd\r\nmg viv v t f\r\n"),
            "HD\r\nHD\r\nVA 4 t100 f3\r\nabcd\r\n"
        );
        assert_eq!(m.talk(b"ms q 1 q\r\nx\r\nmn\r\n"), "MN\r\n");
        assert_eq!(
            m.talk(b"ms Zm9v 2 b k c\r\nhi\r\nmg foo v\r\n"),
            "HD kZm9v b c8\r\nVA 2\r\nhi\r\n"
        );
    }

    #[test]
    fn mg_vivify_and_recache() {
        let m = Model::default();
        assert_eq!(m.talk(b"mg v t N30 v c\r\n"), "VA 0 t-1 c1 W\r\n\r\n");
        assert_eq!(m.talk(b"mg v t v c\r\n"), "VA 0 t30 c1 Z\r\n\r\n");
        assert_eq!(m.talk(b"mg v2 N30 t s f\r\n"), "HD t30 s0 f0 W\r\n");
        assert_eq!(m.talk(b"mg v2 N30 t\r\n"), "HD t30 Z\r\n");
        // A touch by mg keeps the token (the model, as the core, gives it a new version).
        assert_eq!(m.talk(b"mg v2 T30 t\r\n"), "HD t30 Z\r\n");
        assert_eq!(m.talk(b"mg v2 t T30\r\n"), "HD t30 Z\r\n");
        assert_eq!(m.talk(b"mg v2 R50 t\r\n"), "HD t30 Z\r\n");
        // A new value is a new item: its token can be won again, once.
        assert_eq!(m.talk(b"ms v2 1 T30\r\nx\r\n"), "HD\r\n");
        assert_eq!(m.talk(b"mg v2 R10 t\r\n"), "HD t30\r\n");
        assert_eq!(m.talk(b"mg v2 R50 t\r\n"), "HD t30 W\r\n");
        assert_eq!(m.talk(b"mg v2 R50 t\r\n"), "HD t30 Z\r\n");
        assert_eq!(m.talk(b"mg v2 v\r\n"), "VA 1 Z\r\nx\r\n");
        assert_eq!(m.talk(b"mg gone T30\r\n"), "EN\r\n");
    }

    #[test]
    fn md_codes_quiet_and_extensions() {
        let m = Model::default();
        assert_eq!(
            m.talk(b"ms a 1\r\nx\r\nmd a q\r\nmd a q\r\nmd a k O1\r\n"),
            "HD\r\nNF\r\nNF ka O1\r\n"
        );
        assert_eq!(
            m.talk(b"ms a 1\r\nx\r\nmd a C99\r\nmd a C0\r\nmd a C2 k\r\n"),
            "HD\r\nEX\r\nEX\r\nHD ka\r\n"
        );
        assert_eq!(
            m.talk(b"ms a 1 F4\r\nx\r\nmd a x F7\r\nmg a v f\r\n"),
            "HD\r\nHD\r\nVA 0 f7\r\n\r\n"
        );
        assert_eq!(m.talk(b"md a I T30\r\nmg a\r\n"), "HD\r\nEN\r\n");
        assert_eq!(m.talk(b"md a x\r\n"), "NF\r\n");
    }

    #[test]
    fn ma_codes_values_and_ttl() {
        let m = Model::default();
        assert_eq!(m.talk(b"ma n\r\n"), "NF\r\n");
        assert_eq!(m.talk(b"ma n N0 J10 v t c\r\n"), "VA 2 t-1 c1\r\n10\r\n");
        assert_eq!(m.talk(b"ma n v q\r\nma n v\r\n"), "VA 2\r\n12\r\n");
        assert_eq!(m.talk(b"ma n MD D100 v\r\n"), "VA 1\r\n0\r\n");
        assert_eq!(m.talk(b"ma n C1\r\nma n C0 O7 k\r\n"), "EX\r\nHD O7 kn\r\n");
        assert_eq!(m.talk(b"ma n t T50\r\n"), "HD t-1\r\n");
        assert_eq!(m.talk(b"ma n t\r\n"), "HD t50\r\n");
        assert_eq!(m.talk(b"ma n2 N90 t\r\n"), "HD t90\r\n");
        assert_eq!(
            m.talk(b"ms s 1\r\nx\r\nma s\r\nma s q\r\n"),
            "HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
             CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        );
        assert_eq!(
            m.talk(b"ma n MD D100 q\r\nma n M+ D18446744073709551615 v\r\n"),
            "VA 20\r\n18446744073709551615\r\n"
        );
        assert_eq!(m.talk(b"ma n MI v\r\n"), "VA 1\r\n0\r\n");
        let opaque = format!("ma n O{}\r\n", "1".repeat(32));
        assert_eq!(
            m.talk(opaque.as_bytes()),
            "CLIENT_ERROR opaque token too long\r\n"
        );
    }

    #[test]
    fn failures_are_reported_even_when_quiet() {
        let failing = |_: Request| Outcome::Failed(Failure::Unavailable("no slaves".into()));
        for input in [
            &b"mg a q\r\n"[..],
            b"ms a 1 q\r\nx\r\n",
            b"md a q\r\n",
            b"ma a q\r\n",
            b"me a\r\n",
        ] {
            let MetaParsed::Command { command, .. } =
                crate::meta::parse(input, &TextLimits::default())
            else {
                panic!("{input:?}");
            };
            let mut out = Vec::new();
            run(&failing, command, &mut out);
            assert_eq!(out, b"SERVER_ERROR no slaves\r\n", "{input:?}");
        }
    }
}
