//! Golden bytes: requests as libmemcached and memccapable send them, responses as
//! memcached 1.6.18 sent them to those requests (captured on loopback).

mod mapping;
mod parser;

use super::*;
use crate::request::{Create, Failure, Found, Outcome, RELATIVE_EXPTIME_MAX, Request, StoreMode};
use crate::text::TextLimits;

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn limits() -> TextLimits {
    TextLimits::default()
}

fn packet(bytes: &[u8]) -> Packet {
    match parse(bytes, &limits()) {
        Parsed::Packet { packet, consumed } => {
            assert_eq!(consumed, bytes.len());
            packet
        }
        other => panic!("not a packet: {other:?}"),
    }
}

fn header(op: u8, opaque: u32) -> Header {
    Header {
        opcode: op,
        key_len: 0,
        extras_len: 0,
        data_type: 0,
        vbucket: 0,
        body_len: 0,
        opaque,
        cas: 0,
    }
}

fn answer(kind: Kind, op: u8, opaque: u32, quiet: bool, key: Option<&[u8]>) -> Answer {
    Answer {
        header: header(op, opaque),
        kind,
        quiet,
        key: key.map(<[u8]>::to_vec),
    }
}

fn written(answer: &Answer, outcome: Outcome) -> Vec<u8> {
    let mut out = Vec::new();
    answer.write(&mut out, outcome);
    out
}

fn found(value: &[u8], flags: u32, version: u64) -> Outcome {
    Outcome::Found(Found {
        value: value.to_vec(),
        flags,
        version,
        expires: 0,
    })
}

fn refused(bytes: &[u8]) -> (McbinError, Vec<u8>, usize) {
    match parse(bytes, &limits()) {
        Parsed::Error {
            error, reply, skip, ..
        } => (error, reply, skip),
        other => panic!("not refused: {other:?}"),
    }
}

fn request_of(bytes: &[u8]) -> (Request, Answer) {
    match dispatch(packet(bytes), 1_800_000_000) {
        Dispatch::Router { request, answer } => (request, answer),
        other => panic!("not for the router: {other:?}"),
    }
}
