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
                    (StoreMode::Append, Some(old)) => ([old.0, value].concat(), old.1, 0, old.3),
                    (StoreMode::Prepend, Some(old)) => ([value, old.0].concat(), old.1, 0, old.3),
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

/// Talks to a fresh model one step at a time: what is sent, and every reply it must get.
/// Returns the model, for steps that do not fit a table.
fn converse(steps: &[(&str, &str)]) -> Model {
    let m = Model::default();
    for (step, &(input, replies)) in steps.iter().enumerate() {
        assert_eq!(m.talk(input.as_bytes()), replies, "step {step}: {input:?}");
    }
    m
}

/// An opaque token one byte longer than memcached's 31.
fn too_long_opaque(command: &str) -> String {
    format!("{command} O{}\r\n", "1".repeat(32))
}

#[test]
fn mn_and_misses() {
    converse(&[
        (
            "mn\r\nmg a v\r\nmg a q v\r\nmg a O5 k q\r\nmg a O5 k\r\nmn\r\n",
            "MN\r\nEN\r\nEN O5 ka\r\nMN\r\n",
        ),
        ("mg Zm9v b k O1\r\n", "EN kZm9v b O1\r\n"),
        ("me a\r\n", "EN\r\n"),
    ]);
}

#[test]
fn ms_then_mg_with_every_reply_flag() {
    let m = converse(&[
        ("ms foo 2 T0 F5 c\r\nhi\r\n", "HD c1\r\n"),
        (
            "mg foo v c f t s k h l O9 q u\r\n",
            "VA 2 c1 f5 t-1 s2 kfoo h0 l0 O9\r\nhi\r\n",
        ),
        ("mg foo\r\n", "HD\r\n"),
        ("mg foo q s\r\n", "HD s2\r\n"),
        (
            "ms foo 3 T100 k O1 c q\r\nabc\r\nmg foo t v\r\n",
            "VA 3 t100\r\nabc\r\n",
        ),
        // A `t` before `T` reports the TTL before the update, as memcached.
        ("mg foo t T200\r\n", "HD t100\r\n"),
        ("mg foo T300 t\r\n", "HD t300\r\n"),
        (
            "me foo\r\n",
            "ME foo exp=-300 la=0 cas=4 fetch=no cls=1 size=65\r\n",
        ),
    ]);
    assert_eq!(
        m.talk(too_long_opaque("mg foo").as_bytes()),
        "CLIENT_ERROR opaque token too long\r\n"
    );
}

#[test]
fn ms_modes_and_cas() {
    converse(&[
        (
            "ms a 2 ME c k O12\r\nhi\r\nms a 2 ME c k O12\r\nhi\r\n",
            "HD c1 ka O12\r\nNS c0 ka O12\r\n",
        ),
        ("ms nope 2 MA c\r\nhi\r\n", "NS c0\r\n"),
        ("ms nope 2 MR\r\nhi\r\n", "NS\r\n"),
        ("ms a 2 C99 c\r\nhi\r\n", "EX c0\r\n"),
        ("ms a 2 C0\r\nhi\r\nms zz 2 C0\r\nhi\r\n", "EX\r\nNF\r\n"),
        ("ms zz 2 C5 MR\r\nhi\r\n", "NF\r\n"),
        ("ms a 2 C1 c\r\nHI\r\n", "HD c2\r\n"),
        ("ms a 1 MA\r\n!\r\nms a 1 MP C3\r\n<\r\n", "HD\r\nHD\r\n"),
        ("mg a v\r\n", "VA 4\r\n<HI!\r\n"),
        ("ms a 1 MP C1\r\n<\r\n", "EX\r\n"),
        ("ms nope 1 MA C7\r\n<\r\n", "NS\r\n"),
        // Autovivify on append.
        (
            "ms viv 2 MA N100 F3\r\nab\r\nms viv 2 MA N100\r\ncd\r\nmg viv v t f\r\n",
            "HD\r\nHD\r\nVA 4 t100 f3\r\nabcd\r\n",
        ),
        ("ms q 1 q\r\nx\r\nmn\r\n", "MN\r\n"),
        (
            "ms Zm9v 2 b k c\r\nhi\r\nmg foo v\r\n",
            "HD kZm9v b c8\r\nVA 2\r\nhi\r\n",
        ),
    ]);
}

#[test]
fn mg_vivify_and_recache() {
    converse(&[
        ("mg v t N30 v c\r\n", "VA 0 t-1 c1 W\r\n\r\n"),
        ("mg v t v c\r\n", "VA 0 t30 c1 Z\r\n\r\n"),
        ("mg v2 N30 t s f\r\n", "HD t30 s0 f0 W\r\n"),
        ("mg v2 N30 t\r\n", "HD t30 Z\r\n"),
        // A touch by mg keeps the token (the model, as the core, gives it a new version).
        ("mg v2 T30 t\r\n", "HD t30 Z\r\n"),
        ("mg v2 t T30\r\n", "HD t30 Z\r\n"),
        ("mg v2 R50 t\r\n", "HD t30 Z\r\n"),
        // A new value is a new item: its token can be won again, once.
        ("ms v2 1 T30\r\nx\r\n", "HD\r\n"),
        ("mg v2 R10 t\r\n", "HD t30\r\n"),
        ("mg v2 R50 t\r\n", "HD t30 W\r\n"),
        ("mg v2 R50 t\r\n", "HD t30 Z\r\n"),
        ("mg v2 v\r\n", "VA 1 Z\r\nx\r\n"),
        ("mg gone T30\r\n", "EN\r\n"),
    ]);
}

#[test]
fn md_codes_quiet_and_extensions() {
    converse(&[
        (
            "ms a 1\r\nx\r\nmd a q\r\nmd a q\r\nmd a k O1\r\n",
            "HD\r\nNF\r\nNF ka O1\r\n",
        ),
        (
            "ms a 1\r\nx\r\nmd a C99\r\nmd a C0\r\nmd a C2 k\r\n",
            "HD\r\nEX\r\nEX\r\nHD ka\r\n",
        ),
        (
            "ms a 1 F4\r\nx\r\nmd a x F7\r\nmg a v f\r\n",
            "HD\r\nHD\r\nVA 0 f7\r\n\r\n",
        ),
        ("md a I T30\r\nmg a\r\n", "HD\r\nEN\r\n"),
        ("md a x\r\n", "NF\r\n"),
    ]);
}

#[test]
fn ma_codes_values_and_ttl() {
    let m = converse(&[
        ("ma n\r\n", "NF\r\n"),
        ("ma n N0 J10 v t c\r\n", "VA 2 t-1 c1\r\n10\r\n"),
        ("ma n v q\r\nma n v\r\n", "VA 2\r\n12\r\n"),
        ("ma n MD D100 v\r\n", "VA 1\r\n0\r\n"),
        ("ma n C1\r\nma n C0 O7 k\r\n", "EX\r\nHD O7 kn\r\n"),
        ("ma n t T50\r\n", "HD t-1\r\n"),
        ("ma n t\r\n", "HD t50\r\n"),
        ("ma n2 N90 t\r\n", "HD t90\r\n"),
        (
            "ms s 1\r\nx\r\nma s\r\nma s q\r\n",
            "HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
             CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (
            "ma n MD D100 q\r\nma n M+ D18446744073709551615 v\r\n",
            "VA 20\r\n18446744073709551615\r\n",
        ),
        ("ma n MI v\r\n", "VA 1\r\n0\r\n"),
    ]);
    assert_eq!(
        m.talk(too_long_opaque("ma n").as_bytes()),
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
        let MetaParsed::Command { command, .. } = crate::meta::parse(input, &TextLimits::default())
        else {
            panic!("{input:?}");
        };
        let mut out = Vec::new();
        run(&failing, command, &mut out);
        assert_eq!(out, b"SERVER_ERROR no slaves\r\n", "{input:?}");
    }
}
