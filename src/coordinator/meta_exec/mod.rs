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
use super::text_session::write_failure;
use crate::meta::{self, MetaCommand, MetaFlags, ReplyFlag};
use crate::request::{Create, Failure, Found, Outcome, Request, StoreMode, expires_at, unix_now};

#[cfg(test)]
mod tests;
mod tokens;

/// memcached's reply to an `O` token over [`meta::MAX_OPAQUE_BYTES`], noticed by `mg` and
/// `ma` only after the command was served.
const OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";

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

/// What a read found: `Ok(None)` a miss.
///
/// # Errors
/// Why the read could not be served.
fn found(outcome: Outcome) -> Result<Option<Found>, Failure> {
    match outcome {
        Outcome::Found(found) => Ok(Some(found)),
        Outcome::NotFound => Ok(None),
        other => Err(other.into_failure()),
    }
}

/// The item at `key`, read through `serve`: as [`found`].
fn read_item(serve: &impl Fn(Request) -> Outcome, key: &[u8]) -> Result<Option<Found>, Failure> {
    found(serve(Request::Get { key: key.to_vec() }))
}

/// `ms`/`md` with `C0`: no item has cas 0, so nothing is written; the code says whether
/// the key holds a value (`EX`) or not (`NF`).
fn compare_zero(serve: &impl Fn(Request) -> Outcome, key: &[u8]) -> Result<&'static [u8], Failure> {
    Ok(if read_item(serve, key)?.is_some() {
        b"EX"
    } else {
        b"NF"
    })
}

/// A reply line without an item: the code, then `O` and `k` in the order sent.
fn write_status(code: &[u8], flags: &MetaFlags, key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(code);
    meta::push_opaque_and_key(out, flags, key);
    out.extend_from_slice(b"\r\n");
}

/// `me <key> [b]`: memcached's debug line, with what Piazza knows (`la` 0, `fetch=no`,
/// slab class 1; `size` as memcached counts an item: header, key, value, cas, flags).
fn debug(serve: &impl Fn(Request) -> Outcome, key: Vec<u8>, base64: bool, out: &mut Vec<u8>) {
    let found = match read_item(serve, &key) {
        Ok(Some(found)) => found,
        Ok(None) => return out.extend_from_slice(b"EN\r\n"),
        Err(failure) => return write_failure(failure, out),
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
        match read_item(serve, &key) {
            Ok(found) => before = found,
            Err(failure) => return write_failure(failure, out),
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
                    Err(failure) => return write_failure(failure, out),
                },
                other => return write_failure(other.into_failure(), out),
            }
        }
        Err(failure) => return write_failure(failure, out),
    };
    if flags.opaque_too_long {
        return out.extend_from_slice(OPAQUE_TOO_LONG);
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
            ReplyFlag::Flags => meta::push_number(out, b'f', item.flags),
            ReplyFlag::LastAccess => out.extend_from_slice(b" l0"),
            ReplyFlag::Hit => out.extend_from_slice(b" h0"),
            ReplyFlag::Cas | ReplyFlag::Opaque(_) | ReplyFlag::Key => {
                meta::push_echoed(out, flag, flags, &key, Some(item.version));
            }
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

/// `mg`'s miss: `EN` with `O` and `k`, or nothing with `q`.
fn write_miss(flags: &MetaFlags, key: &[u8], out: &mut Vec<u8>) {
    if flags.opaque_too_long {
        return out.extend_from_slice(OPAQUE_TOO_LONG);
    }
    if !flags.quiet {
        write_status(b"EN", flags, key, out);
    }
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
            return match compare_zero(serve, &key) {
                Ok(code) => write_set_reply(code, flags, &key, 0, out),
                Err(failure) => write_failure(failure, out),
            };
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
        other => write_failure(other.into_failure(), out),
    }
}

/// `ms`'s reply line: the code, then `O`, `k` and `c` in the order sent.
fn write_set_reply(code: &[u8], flags: &MetaFlags, key: &[u8], cas: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(code);
    for flag in &flags.order {
        meta::push_echoed(out, flag, flags, key, Some(cas));
    }
    out.extend_from_slice(b"\r\n");
}

/// `md`: a `Delete` with `C` as its cas; with `x`, an empty value stored over the item.
fn delete(serve: &impl Fn(Request) -> Outcome, key: Vec<u8>, flags: &MetaFlags, out: &mut Vec<u8>) {
    let code: &[u8] = if flags.remove_value {
        match read_item(serve, &key) {
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
                    other => return write_failure(other.into_failure(), out),
                }
            }
            Err(failure) => return write_failure(failure, out),
        }
    } else if flags.compare_cas == Some(0) {
        match compare_zero(serve, &key) {
            Ok(code) => code,
            Err(failure) => return write_failure(failure, out),
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
            other => return write_failure(other.into_failure(), out),
        }
    };
    if !(code == b"HD" && flags.quiet) {
        write_status(code, flags, &key, out);
    }
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
        match read_item(serve, &key) {
            Ok(item) => before = Some(item.map(|f| f.expires)),
            Err(failure) => return write_failure(failure, out),
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
        other => return write_failure(other.into_failure(), out),
    };
    if flags.opaque_too_long {
        return out.extend_from_slice(OPAQUE_TOO_LONG);
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
            ReplyFlag::Ttl => meta::push_ttl(out, expires, now),
            ReplyFlag::SetTtl => expires = expires_at(flags.ttl.unwrap_or(0), now),
            ReplyFlag::Vivify if created => {
                expires = expires_at(flags.vivify.unwrap_or(0), now);
            }
            _ => {
                meta::push_echoed(out, flag, flags, &key, Some(version));
            }
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
        return out.extend_from_slice(OPAQUE_TOO_LONG);
    }
    write_status(code, flags, key, out);
}
