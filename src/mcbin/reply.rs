//! Response packets: the header, and the error and stat replies built on it.

use super::{Header, MAGIC_RESPONSE, Status, opcode};
use crate::request::Failure;

/// Appends a response header.
pub fn write_header(
    out: &mut Vec<u8>,
    request: &Header,
    status: u16,
    extras_len: u8,
    key_len: u16,
    body_len: u32,
    cas: u64,
) {
    out.push(MAGIC_RESPONSE);
    out.push(request.opcode);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.push(extras_len);
    out.push(0); // datatype: raw bytes
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&request.opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
}

/// Appends a whole response to `request`: header, extras, key, value. Key and value
/// must fit their length fields (keys are at most 250 bytes, values at most the value
/// limit; a longer value is cut, never sent with a wrong length).
pub fn write_response(
    out: &mut Vec<u8>,
    request: &Header,
    status: Status,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let extras = &extras[..extras.len().min(u8::MAX as usize)];
    let key = &key[..key.len().min(u16::MAX as usize)];
    let room = u32::MAX as usize - extras.len() - key.len();
    let value = &value[..value.len().min(room)];
    let body = (extras.len() + key.len() + value.len()) as u32;
    write_header(
        out,
        request,
        status.code(),
        extras.len() as u8,
        key.len() as u16,
        body,
        cas,
    );
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends an error response with memcached's message for `status`.
pub fn write_error(out: &mut Vec<u8>, request: &Header, status: Status) {
    write_error_message(out, request, status, status.message());
}

/// Appends an error response with `message` as its body (cas 0).
pub fn write_error_message(out: &mut Vec<u8>, request: &Header, status: Status, message: &str) {
    write_response(out, request, status, 0, &[], &[], message.as_bytes());
}

/// Appends one stat packet (key = name, value = value); an empty name and value end
/// the list.
pub fn write_stat(out: &mut Vec<u8>, request: &Header, name: &str, value: &str) {
    let mut header = *request;
    header.opcode = opcode::STAT;
    write_response(
        out,
        &header,
        Status::Ok,
        0,
        &[],
        name.as_bytes(),
        value.as_bytes(),
    );
}

/// Appends the error reply for a failed request.
pub fn write_failure(out: &mut Vec<u8>, request: &Header, failure: &Failure) {
    match failure {
        Failure::Invalid(why) => write_error_message(out, request, Status::Invalid, why),
        Failure::TooLarge => write_error(out, request, Status::TooLarge),
        Failure::NonNumeric => write_error(out, request, Status::NonNumeric),
        Failure::Unavailable(why) => write_error_message(out, request, Status::OutOfMemory, why),
    }
}
