//! The classic parser and reply formats: every command's forms and memcached's answers to
//! their malformed lines, line limits, pipelines cut at every point, and fuzzing.

use super::number::{parse_signed, parse_unsigned};
use super::parser::BAD_FORMAT;
use super::*;

mod commands;
mod lines;
mod replies;
mod storage;

fn limits() -> TextLimits {
    TextLimits::default()
}

fn parse_default(buf: &[u8]) -> Parsed {
    parse(buf, &limits())
}

fn command(buf: &[u8]) -> TextCommand {
    match parse_default(buf) {
        Parsed::Command { command, consumed } => {
            assert_eq!(consumed, buf.len(), "whole buffer should be one command");
            command
        }
        other => panic!("expected a command from {buf:?}, got {other:?}"),
    }
}

/// A refusal, in the order (error, consumed, skip, noreply, forget).
type Refusal = (TextError, usize, usize, bool, Option<Vec<u8>>);

fn refusal(buf: &[u8]) -> Refusal {
    refusal_with(buf, &limits())
}

fn refusal_with(buf: &[u8], limits: &TextLimits) -> Refusal {
    match parse(buf, limits) {
        Parsed::Error {
            error,
            consumed,
            skip,
            noreply,
            forget,
        } => (error, consumed, skip, noreply, forget),
        other => panic!("expected an error from {buf:?}, got {other:?}"),
    }
}

/// The error, consumed and skip of a refusal.
fn error(buf: &[u8]) -> (TextError, usize, usize) {
    let (error, consumed, skip, _, _) = refusal(buf);
    (error, consumed, skip)
}

/// The bytes a connection would send back for `buf` if it is refused.
fn reply_to(buf: &[u8]) -> Vec<u8> {
    let (error, _, _, noreply, _) = refusal(buf);
    if noreply { Vec::new() } else { error.reply() }
}

fn client(reason: &str) -> TextError {
    TextError::Client(reason.to_string())
}

fn store(mode: StoreMode, key: &[u8], data: &[u8], noreply: bool) -> TextCommand {
    TextCommand::Store {
        mode,
        key: key.to_vec(),
        flags: 0,
        exptime: 0,
        data: data.to_vec(),
        cas: None,
        noreply,
    }
}

fn get(keys: &[&[u8]], cas: bool, touch: Option<i64>) -> TextCommand {
    TextCommand::Get {
        keys: keys.iter().map(|k| k.to_vec()).collect(),
        cas,
        touch,
    }
}
