//! Reply bytes.

use super::*;

// ---- replies ----------------------------------------------------------------------

#[test]
fn error_replies_are_exact() {
    assert_eq!(TextError::UnknownCommand.reply(), b"ERROR\r\n");
    assert_eq!(
        client("bad data chunk").reply(),
        b"CLIENT_ERROR bad data chunk\r\n"
    );
    assert_eq!(
        TextError::LineTooLong.reply(),
        b"CLIENT_ERROR line too long\r\n"
    );
    assert_eq!(client("a\r\nb").reply(), b"CLIENT_ERROR a  b\r\n");
    assert!(!TextError::UnknownCommand.closes_connection());
    assert!(!TextError::TooLarge.closes_connection());
    assert!(!TextError::ShutdownDisabled.closes_connection());
    assert!(!client("x").closes_connection());
}

#[test]
fn errors_display_as_text() {
    assert_eq!(client("bad").to_string(), "client error: bad");
    assert_eq!(
        TextError::TooLarge.to_string(),
        "object too large for cache"
    );
    assert_eq!(TextError::HttpRequest.to_string(), "an HTTP request");
}

#[test]
fn write_value_is_byte_exact_with_and_without_cas() {
    let mut out = Vec::new();
    write_value(&mut out, b"k", 7, b"a\r\nb", None);
    assert_eq!(out, b"VALUE k 7 4\r\na\r\nb\r\n");
    out.clear();
    write_value(&mut out, b"key", 0, b"", Some(12345));
    assert_eq!(out, b"VALUE key 0 0 12345\r\n\r\n");
    out.clear();
    write_value(&mut out, b"x", u32::MAX, &[b'v'; 10], Some(u64::MAX));
    assert_eq!(
        out,
        b"VALUE x 4294967295 10 18446744073709551615\r\nvvvvvvvvvv\r\n"
    );
}

#[test]
fn other_reply_helpers_are_byte_exact_and_single_line() {
    let mut out = Vec::new();
    write_stat(&mut out, "pid", 42);
    write_version(&mut out, "1.2.3");
    write_server_error(&mut out, "boom\r\nERROR");
    write_client_error(&mut out, "cannot increment or decrement non-numeric value");
    write_stat(&mut out, "odd", "two\nlines");
    write_number(&mut out, u64::MAX);
    write_number(&mut out, 0);
    assert_eq!(
        out,
        b"STAT pid 42\r\nVERSION 1.2.3\r\nSERVER_ERROR boom  ERROR\r\n\
CLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
STAT odd two lines\r\n18446744073709551615\r\n0\r\n"
    );
    out.clear();
    for constant in [
        END, STORED, NOT_STORED, EXISTS, DELETED, NOT_FOUND, TOUCHED, OK, RESET, ERROR,
    ] {
        out.extend_from_slice(constant);
    }
    assert_eq!(
        out,
        b"END\r\nSTORED\r\nNOT_STORED\r\nEXISTS\r\nDELETED\r\nNOT_FOUND\r\nTOUCHED\r\n\
OK\r\nRESET\r\nERROR\r\n"
    );
}
