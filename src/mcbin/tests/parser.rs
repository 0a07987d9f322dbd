//! Malformed, truncated, oversized and random packets.

use super::*;

#[test]
fn unknown_and_sasl_opcodes_answer_unknown_command_and_skip_the_body() {
    let mut unknown = hex("805000000000000000000004000000 1d0000000000000000 7a7a7a7a");
    unknown.extend(hex("800a000000000000000000000000001e0000000000000000"));
    let (error, reply, skip) = refused(&unknown);
    assert_eq!(error, McbinError::UnknownCommand(0x50));
    assert!(!error.closes());
    assert_eq!(skip, 28);
    assert_eq!(
        reply,
        hex("81500000000000810000000f0000001d0000000000000000556e6b6e6f776e20636f6d6d616e64")
    );
    assert_eq!(packet(&unknown[skip..]).command, Command::Noop);
    let (_, reply, _) = refused(&hex("802000000000000000000000 0000001b 0000000000000000"));
    assert_eq!(
        reply,
        hex("81200000000000810000000f0000001b0000000000000000556e6b6e6f776e20636f6d6d616e64")
    );
    let auth = hex("80210005000000000000000900000 01c0000000000000000 504c41494e 00750070");
    let (error, reply, skip) = refused(&auth);
    assert_eq!(error, McbinError::UnknownCommand(opcode::SASL_AUTH));
    assert_eq!(skip, auth.len());
    assert_eq!(
        reply,
        hex("81210000000000810000000f0000001c0000000000000000556e6b6e6f776e20636f6d6d616e64")
    );
}

#[test]
fn malformed_packets_get_memcacheds_reply_and_close() {
    // A get with extras.
    let (error, reply, _) = refused(&hex(
        "80000003040000000000000700000024000000000000000061626364666f6f",
    ));
    assert!(error.closes());
    assert_eq!(
        reply,
        hex("810000000000000400000011000000240000000000000000496e76616c696420617267756d656e7473")
    );
    // A 251-byte key.
    let mut long = hex("800000fb00000000000000fb000000250000000000000000");
    long.extend(vec![b'k'; 251]);
    let (error, reply, _) = refused(&long);
    assert_eq!(error, McbinError::KeyTooLong { len: 251, max: 250 });
    assert_eq!(
        reply,
        hex("810000000000000400000011000000250000000000000000496e76616c696420617267756d656e7473")
    );
    // Key longer than the body.
    let (error, reply, _) = refused(&hex("8000000a000000000000000500000026 0000000000000000"));
    assert!(error.closes());
    assert_eq!(
        reply,
        hex("81000000000000810000000f000000260000000000000000556e6b6e6f776e20636f6d6d616e64")
    );
    // Body over 1 GiB: refused from the header alone.
    let (error, reply, _) = refused(&hex("8001000108000000 40000001 0000002e 0000000000000000"));
    assert_eq!(error, McbinError::BodyTooLarge(0x4000_0001));
    assert_eq!(&reply[..8], &hex("8101000000000004")[..]);
    // A set without extras, a noop with a body, a flush with 8 bytes of extras, an
    // append with extras, a stat with extras: all invalid arguments.
    for bytes in [
        "80010003000000000000000600000007 0000000000000000 666f6f626172",
        "800a000000000000000000010000000700000000000000 0078",
        "80080000080000000000000800000007 0000000000000000 0000000000000000",
        "800e0001040000000000000600000007 0000000000000000 61626364 7778",
        "80100000040000000000000400000006 0000000000000000 61626364",
    ] {
        let bytes = hex(bytes);
        let (error, reply, _) = refused(&bytes);
        assert!(matches!(error, McbinError::Malformed { .. }), "{error}");
        assert!(error.closes());
        assert_eq!(&reply[2..8], &hex("000000000004")[..], "{error}");
        assert_eq!(&reply[24..], b"Invalid arguments");
    }
    // Bad magic: no reply.
    let (error, reply, _) = refused(&hex("81000000"));
    assert_eq!(error, McbinError::BadMagic(0x81));
    assert!(reply.is_empty());
    assert!(error.closes());
}

#[test]
fn a_value_over_the_limit_is_too_large_and_skipped() {
    let limits = TextLimits {
        max_value_bytes: 4,
        ..TextLimits::default()
    };
    let big =
        hex("80010003080000000000001000000022 0000000000000000 0000000000000000 626967 7878787878");
    // Refused once extras and key are there, before the value arrives.
    assert_eq!(parse(&big[..34], &limits), Parsed::Incomplete);
    match parse(&big[..35], &limits) {
        Parsed::Error {
            error,
            reply,
            skip,
            forget,
        } => {
            assert_eq!(error, McbinError::ValueTooLarge { len: 5, max: 4 });
            assert!(!error.closes());
            assert_eq!(skip, big.len());
            assert_eq!(
                reply,
                hex("81010000000000030000000a000000220000000000000000546f6f206c617267652e")
            );
            // memcached removes the old value of a set refused as too large...
            assert_eq!(forget.as_deref(), Some(&b"big"[..]));
        }
        other => panic!("{other:?}"),
    }
    // ... but not for add, replace, append, prepend.
    let mut add = big.clone();
    add[1] = opcode::ADD;
    assert!(matches!(
        parse(&add, &limits),
        Parsed::Error { forget: None, .. }
    ));
    // At the limit it is a packet.
    let fits =
        hex("80010003080000000000000f00000022 0000000000000000 0000000000000000 626967 78787878");
    assert!(matches!(parse(&fits, &limits), Parsed::Packet { .. }));
}

#[test]
fn every_truncation_of_a_valid_packet_is_incomplete() {
    let packets = [
        "80010003080000000000000e112233440000000000000000deadbeef00000000666f6f626172",
        "8005000114000000000000150000000f00000000000000000000000000000001000000000000000a000000006e",
        "800c00030000000000000003000000030000000000000000666f6f",
        "8024000104000000000000050000001800000000000000000000006471",
        "80100008000000000000000800000006000000000000000073657474696e6773",
    ];
    for text in packets {
        let bytes = hex(text);
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..cut], &limits()),
                Parsed::Incomplete,
                "{text} cut at {cut}"
            );
        }
        // Pipelined: the first packet comes out whole, the rest stays.
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        match parse(&two, &limits()) {
            Parsed::Packet { consumed, .. } => assert_eq!(consumed, bytes.len()),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn every_opcode_parses_to_its_command() {
    // (opcode, extras, key, value)
    type Case<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);
    let cases: &[Case] = &[
        (opcode::GET, b"", b"k", b""),
        (opcode::GETQ, b"", b"k", b""),
        (opcode::GETK, b"", b"k", b""),
        (opcode::GETKQ, b"", b"k", b""),
        (opcode::SET, &[0; 8], b"k", b"v"),
        (opcode::SETQ, &[0; 8], b"k", b"v"),
        (opcode::ADD, &[0; 8], b"k", b"v"),
        (opcode::ADDQ, &[0; 8], b"k", b"v"),
        (opcode::REPLACE, &[0; 8], b"k", b"v"),
        (opcode::REPLACEQ, &[0; 8], b"k", b"v"),
        (opcode::APPEND, b"", b"k", b"v"),
        (opcode::APPENDQ, b"", b"k", b"v"),
        (opcode::PREPEND, b"", b"k", b"v"),
        (opcode::PREPENDQ, b"", b"k", b"v"),
        (opcode::DELETE, b"", b"k", b""),
        (opcode::DELETEQ, b"", b"k", b""),
        (opcode::INCREMENT, &[0; 20], b"k", b""),
        (opcode::INCREMENTQ, &[0; 20], b"k", b""),
        (opcode::DECREMENT, &[0; 20], b"k", b""),
        (opcode::DECREMENTQ, &[0; 20], b"k", b""),
        (opcode::TOUCH, &[0; 4], b"k", b""),
        (opcode::GAT, &[0; 4], b"k", b""),
        (opcode::GATQ, &[0; 4], b"k", b""),
        (opcode::GATK, &[0; 4], b"k", b""),
        (opcode::GATKQ, &[0; 4], b"k", b""),
        (opcode::FLUSH, b"", b"", b""),
        (opcode::FLUSHQ, &[0; 4], b"", b""),
        (opcode::NOOP, b"", b"", b""),
        (opcode::VERSION, b"", b"", b""),
        (opcode::STAT, b"", b"", b""),
        (opcode::STAT, b"", b"items", b""),
        (opcode::QUIT, b"", b"", b""),
        (opcode::QUITQ, b"", b"", b""),
    ];
    for &(op, extras, key, value) in cases {
        let bytes = encode_request(op, extras, key, value, 0xfeed, 0);
        let packet = packet(&bytes);
        assert_eq!(packet.header.opcode, op);
        assert_eq!(packet.header.opaque, 0xfeed);
        let routed = matches!(dispatch(packet.clone(), 0), Dispatch::Router { .. });
        let local = matches!(
            op,
            opcode::NOOP | opcode::VERSION | opcode::STAT | opcode::QUIT | opcode::QUITQ
        );
        assert_eq!(routed, !local, "opcode 0x{op:02x}: {:?}", packet.command);
    }
    for op in [opcode::SASL_LIST_MECHS, 0x1b, 0x25, 0x30, 0x50, 0xff] {
        let bytes = encode_request(op, b"", b"", b"", 1, 0);
        assert!(matches!(refused(&bytes).0, McbinError::UnknownCommand(o) if o == op));
    }
}

/// Checks what `parse` says about `bytes` is consistent, and encodes an answer for
/// any packet: nothing may panic.
fn check_consistent(bytes: &[u8], limits: &TextLimits) {
    match parse(bytes, limits) {
        Parsed::Incomplete => {}
        Parsed::Packet { packet, consumed } => {
            assert!(consumed >= HEADER_LEN && consumed <= bytes.len());
            assert!(packet.header.key_len as usize <= limits.max_key_bytes);
            if let Dispatch::Router { answer, .. } = dispatch(packet, 1_800_000_000) {
                let mut out = Vec::new();
                for outcome in [
                    Outcome::NotFound,
                    Outcome::Stored { version: 1 },
                    Outcome::Failed(Failure::TooLarge),
                    Outcome::Number {
                        value: 2,
                        version: 3,
                    },
                ] {
                    answer.write(&mut out, outcome);
                }
            }
        }
        Parsed::Error {
            error, reply, skip, ..
        } => {
            assert!(reply.is_empty() || reply[0] == MAGIC_RESPONSE);
            assert!(error.closes() || skip >= HEADER_LEN, "{error}: skip {skip}");
            let _ = error.to_string();
        }
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let limits = TextLimits {
        max_value_bytes: 64,
        ..TextLimits::default()
    };
    let mut rng = crate::rng::Rng::new(0x6d63_6269_6e21, 0);
    let seeds: Vec<Vec<u8>> = [
        "80010003080000000000000e112233440000000000000000deadbeef00000000666f6f626172",
        "8005000114000000000000150000000f00000000000000000000000000000001000000000000000a000000006e",
        "800c00030000000000000003000000030000000000000000666f6f",
        "8024000104000000000000050000001800000000000000000000006471",
        "8008000004000000000000040000002100000000000000000000001e",
        "800e000300000000000000040000000a0000000000000000666f6f78",
        "80100008000000000000000800000006000000000000000073657474696e6773",
    ]
    .iter()
    .map(|text| hex(text))
    .collect();
    for round in 0..40_000 {
        let bytes = match round % 4 {
            // Pure junk, mostly with the right magic.
            0 => {
                let len = rng.below(80) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if !bytes.is_empty() && rng.below(8) != 0 {
                    bytes[0] = MAGIC_REQUEST;
                }
                bytes
            }
            // A valid packet with a few bytes flipped.
            1 | 2 => {
                let mut bytes = seeds[rng.below(seeds.len() as u64) as usize].clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.next() as u8;
                }
                bytes
            }
            // A random header (any opcode and lengths) and a short random body.
            _ => {
                let op = rng.next() as u8;
                let extras: Vec<u8> = (0..rng.below(24)).map(|_| rng.next() as u8).collect();
                let key: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                let value: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                let mut bytes = encode_request(op, &extras, &key, &value, 1, rng.next());
                let cut = rng.below(bytes.len() as u64 + 1) as usize;
                bytes.truncate(cut.max(bytes.len() - 4));
                bytes
            }
        };
        check_consistent(&bytes, &limits);
    }
}
