use byteorder::{ByteOrder, NetworkEndian};

use super::*;

fn sample() -> Frame {
    let mut frame = Frame::request(Opcode::Put, 7, b"k".to_vec(), b"v".to_vec());
    frame.flags = 3;
    frame.arg = 0x0102_0304_0506_0708;
    frame
}

#[test]
fn crc_is_crc32_ieee() {
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

#[test]
fn every_opcode_round_trips() {
    for byte in 0..=255u8 {
        if let Some(op) = Opcode::from_u8(byte) {
            assert_eq!(op as u8, byte);
            let mut frame = Frame::request(op, 42, b"key".to_vec(), vec![0, 13, 10, 255]);
            frame.table = TableSel::Previous;
            frame.flags = u32::MAX;
            frame.arg = u64::MAX - 1;
            frame.status = Status::NotFound;
            let bytes = frame.encode();
            let (decoded, used) = decode(&bytes, &WireLimits::default()).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(decoded, frame);
            let read = read_frame(&mut &bytes[..], &WireLimits::default()).unwrap();
            assert_eq!(read, frame);
        }
    }
}

#[test]
fn a_frame_written_as_another_id_and_table_is_that_frame() {
    let frame = sample();
    let mut written = Vec::new();
    frame
        .write_as(99, TableSel::Previous, &mut written)
        .unwrap();
    let mut expected = frame.clone();
    expected.request_id = 99;
    expected.table = TableSel::Previous;
    assert_eq!(written, expected.encode());
    assert_eq!(
        decode(&written, &WireLimits::default()).unwrap().0,
        expected
    );
}

#[test]
fn a_value_in_parts_is_the_value_put_together() {
    let head = FrameHead {
        opcode: Opcode::Forward,
        status: Status::Ok,
        request_id: 5,
        arg: 9,
        flags: 2,
        table: TableSel::Previous,
    };
    let mut written = Vec::new();
    head.write_to(b"key", &[b"pre", b"", b"fix-and-value"], &mut written)
        .unwrap();
    let mut expected = Frame::request(
        Opcode::Forward,
        5,
        b"key".to_vec(),
        b"prefix-and-value".to_vec(),
    );
    expected.arg = 9;
    expected.flags = 2;
    expected.table = TableSel::Previous;
    assert_eq!(written, expected.encode());
}

#[test]
fn every_status_round_trips() {
    for byte in 0..=255u8 {
        if let Some(status) = Status::from_u8(byte) {
            assert_eq!(status as u8, byte);
            assert!(!status.name().is_empty());
        }
    }
}

#[test]
fn put_example_matches_protocol_md() {
    // The PUT example in protocol.md: request id 1, key "hello", value "world".
    let frame = Frame::request(Opcode::Put, 1, b"hello".to_vec(), b"world".to_vec());
    let hex: String = frame.encode().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, PUT_EXAMPLE_HEX);
}

#[test]
fn get_miss_reply_matches_protocol_md() {
    let request = Frame::request(Opcode::Get, 3, b"nope".to_vec(), Vec::new());
    let hex: String = request
        .encode()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        "a701010000000003000000000000000000000000000000000000000400000000d157c4336e6f7065"
    );
    let reply = request.reply(Status::NotFound);
    let hex: String = reply.encode().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "a701010100000003000000000000000000000000000000000000000000000000158b890c"
    );
}

/// Kept equal to the PUT example in protocol.md.
const PUT_EXAMPLE_HEX: &str =
    "a701020000000001000000000000000000000000000000000000000500000005703edceb68656c6c6f776f726c64";

#[test]
fn incomplete_at_every_cut() {
    let bytes = sample().encode();
    for cut in 1..bytes.len() {
        assert!(matches!(
            decode(&bytes[..cut], &WireLimits::default()),
            Err(WireError::Incomplete)
        ));
        assert!(matches!(
            read_frame(&mut &bytes[..cut], &WireLimits::default()),
            Err(WireError::Truncated)
        ));
    }
    assert!(matches!(
        read_frame(&mut &[][..], &WireLimits::default()),
        Err(WireError::Closed)
    ));
}

#[test]
fn bad_magic_is_refused_from_the_first_byte() {
    assert!(matches!(
        decode(b"g", &WireLimits::default()),
        Err(WireError::BadMagic(b'g'))
    ));
    assert!(matches!(
        read_frame(&mut &b"get foo\r\n"[..], &WireLimits::default()),
        Err(WireError::BadMagic(b'g'))
    ));
}

#[test]
fn bad_version_reserved_and_table_are_refused() {
    let good = sample().encode();
    let mut bad = good.clone();
    bad[OFF_VERSION] = 9;
    assert!(matches!(
        decode(&bad, &WireLimits::default()),
        Err(WireError::BadVersion { version: 9, .. })
    ));
    let mut bad = good.clone();
    bad[OFF_RESERVED + 1] = 1;
    assert!(matches!(
        decode(&bad, &WireLimits::default()),
        Err(WireError::BadReserved { .. })
    ));
    let mut bad = good;
    bad[OFF_TABLE] = 3;
    assert!(matches!(
        decode(&bad, &WireLimits::default()),
        Err(WireError::BadTable { table: 3, .. })
    ));
}

#[test]
fn lengths_over_limits_are_refused_before_reading_the_body() {
    let limits = WireLimits {
        max_key: 4,
        max_value: 8,
    };
    let mut header = sample().header();
    NetworkEndian::write_u32(&mut header[OFF_KEY_LEN..], 5);
    // Only the header is given: the decoder must refuse without waiting for the body.
    assert!(matches!(
        decode(&header, &limits),
        Err(WireError::KeyTooLong { len: 5, max: 4, .. })
    ));
    NetworkEndian::write_u32(&mut header[OFF_KEY_LEN..], 1);
    NetworkEndian::write_u32(&mut header[OFF_VALUE_LEN..], u32::MAX);
    assert!(matches!(
        decode(&header, &limits),
        Err(WireError::ValueTooLarge { .. })
    ));
    let (reply, close) = decode(&header, &limits)
        .unwrap_err()
        .server_reply()
        .unwrap();
    assert_eq!(reply[OFF_STATUS], Status::TooLarge as u8);
    assert!(close);
}

#[test]
fn bulk_frames_may_be_larger_than_the_value_limit() {
    let limits = WireLimits {
        max_key: 16,
        max_value: 8,
    };
    let frame = Frame::request(Opcode::BulkPut, 1, Vec::new(), vec![0; 100]);
    assert!(decode(&frame.encode(), &limits).is_ok());
}

#[test]
fn every_flipped_bit_is_caught() {
    let bytes = sample().encode();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            let result = decode(&bad, &WireLimits::default());
            assert!(
                result.is_err(),
                "flip of bit {bit} in byte {i} went unnoticed"
            );
        }
    }
}

#[test]
fn unknown_opcode_keeps_the_connection() {
    let mut bytes = sample().encode();
    bytes[OFF_OPCODE] = 0x7f;
    let crc = frame_crc(&bytes[..HEADER_LEN].try_into().unwrap(), b"k", b"v");
    NetworkEndian::write_u32(&mut bytes[OFF_CRC..], crc);
    let err = decode(&bytes, &WireLimits::default()).unwrap_err();
    assert!(matches!(
        err,
        WireError::UnknownOpcode {
            opcode: 0x7f,
            request_id: 7
        }
    ));
    let (reply, close) = err.server_reply().unwrap();
    assert_eq!(reply[OFF_STATUS], Status::UnknownOpcode as u8);
    assert_eq!(
        reply[OFF_OPCODE], 0x7f,
        "the reply repeats the request's opcode"
    );
    assert_eq!(NetworkEndian::read_u32(&reply[OFF_REQUEST_ID..]), 7);
    let header: [u8; HEADER_LEN] = reply[..HEADER_LEN].try_into().unwrap();
    let crc = frame_crc(&header, b"", &reply[HEADER_LEN..]);
    assert_eq!(NetworkEndian::read_u32(&reply[OFF_CRC..]), crc);
    assert!(!close);
}

#[test]
fn bad_crc_is_framed_and_closes() {
    let mut bytes = sample().encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let err = decode(&bytes, &WireLimits::default()).unwrap_err();
    assert!(matches!(err, WireError::BadCrc { .. }));
    let (reply, close) = err.server_reply().unwrap();
    assert_eq!(reply[OFF_STATUS], Status::BadFrame as u8);
    assert_eq!(reply[OFF_OPCODE], sample().opcode as u8);
    assert!(close);
    assert!(err.to_string().contains("bad crc"));
}

#[test]
fn bulk_entries_round_trip() {
    let entries = vec![
        BulkEntry {
            key: b"a".to_vec(),
            version: 9,
            flags: 1,
            expires: 1_900_000_000,
            value: Some(b"x\r\n\0".to_vec()),
        },
        BulkEntry {
            key: b"gone".to_vec(),
            version: 10,
            flags: 0,
            expires: 0,
            value: None,
        },
    ];
    let mut chunk = Vec::new();
    for entry in &entries {
        chunk_push(&mut chunk, entry);
    }
    assert_eq!(
        unpack_bulk(&chunk, &WireLimits::default()).unwrap(),
        entries
    );
    let boundary = entries[0].packed_len();
    for cut in 1..chunk.len() {
        let result = unpack_bulk(&chunk[..cut], &WireLimits::default());
        if cut == boundary {
            assert_eq!(result.unwrap(), entries[..1]);
        } else {
            assert!(result.is_err(), "cut at {cut} went unnoticed");
        }
    }
}

fn chunk_push(chunk: &mut Vec<u8>, entry: &BulkEntry) {
    let before = chunk.len();
    entry.pack_into(chunk);
    assert_eq!(chunk.len() - before, entry.packed_len());
}

#[test]
fn heartbeats_round_trip_and_junk_is_refused() {
    for kind in [
        HeartbeatKind::Alive,
        HeartbeatKind::Ack,
        HeartbeatKind::Rejoin,
    ] {
        let beat = Heartbeat {
            kind,
            id: 7,
            session: u64::MAX - 3,
        };
        assert_eq!(Heartbeat::decode(&beat.encode()), Some(beat));
    }
    let good = Heartbeat {
        kind: HeartbeatKind::Alive,
        id: 1,
        session: 2,
    }
    .encode();
    for i in 0..4 {
        let mut bad = good;
        bad[i] ^= 0x40;
        assert_eq!(Heartbeat::decode(&bad), None, "byte {i}");
    }
    assert_eq!(Heartbeat::decode(&good[..15]), None);
    assert_eq!(Heartbeat::decode(b"hello"), None);
}

#[test]
fn arcs_round_trip() {
    let arcs = vec![(1, 2), (u64::MAX, 7)];
    assert_eq!(decode_arcs(&encode_arcs(&arcs)), Some(Some(arcs)));
    assert_eq!(decode_arcs(&encode_arcs(&[])), Some(Some(vec![])));
    assert_eq!(decode_arcs(&encode_arc(5, 9)), Some(Some(vec![(5, 9)])));
    assert_eq!(decode_arcs(&[]), Some(None));
    assert_eq!(decode_arcs(&[0, 0, 0, 2, 0]), None);
    assert_eq!(decode_arc(&encode_arc(5, 9)), Some(Some((5, 9))));
    assert_eq!(decode_arc(&[]), Some(None));
    assert_eq!(decode_arc(&[0; 15]), None);
}

#[test]
fn random_bytes_never_panic() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = sample().encode();
    for _ in 0..300_000 {
        let mut bytes = base.clone();
        let n = (next() % 4) as usize + 1;
        for _ in 0..n {
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        let len = (next() as usize) % (bytes.len() + 1);
        // Whatever is accepted is exactly what its bytes say; the rest is a typed error.
        if let Ok((frame, used)) = decode(&bytes[..len], &WireLimits::default()) {
            assert_eq!(frame.encode(), bytes[..used]);
        }
        let _ = read_frame(&mut &bytes[..len], &WireLimits::default());
        let _ = unpack_bulk(&bytes[..len], &WireLimits::default());
    }
}

#[test]
fn packed_multi_gets_round_trip_and_name_the_bad_key_or_result() {
    let keys = pack_keys(&[&b"a"[..], b"bb"]);
    assert_eq!(
        unpack_keys(&keys, 250).unwrap(),
        vec![b"a".to_vec(), b"bb".to_vec()]
    );
    let err = unpack_keys(&keys[..keys.len() - 1], 250).unwrap_err();
    assert_eq!((err.of, err.index), ("multi-get key", 1));
    assert_eq!(err.to_string(), "bad multi-get key 1: runs past the value");
    assert_eq!(
        unpack_keys(&keys, 1).unwrap_err().what,
        "length out of range"
    );

    let hit = MultiGetHit {
        version: 9,
        flags: 2,
        expires: 0,
        value: b"value".to_vec(),
    };
    let mut results = Vec::new();
    pack_result(&mut results, None);
    pack_result(&mut results, Some(&hit));
    assert_eq!(unpack_results(&results).unwrap(), vec![None, Some(hit)]);
    let err = unpack_results(&results[..results.len() - 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad multi-get result 1: value runs past the reply"
    );
    results.push(7);
    assert_eq!(unpack_results(&results).unwrap_err().index, 2);
}
