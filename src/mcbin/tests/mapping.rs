//! Requests decoded and answers encoded, byte for byte, for every opcode.

use super::*;

#[test]
fn set_request_parses_and_its_reply_is_byte_exact() {
    let bytes = hex("80010003080000000000000e112233440000000000000000deadbeef00000000666f6f626172");
    let (request, answer) = request_of(&bytes);
    assert_eq!(
        request,
        Request::Put {
            key: b"foo".to_vec(),
            value: b"bar".to_vec(),
            flags: 0xdead_beef
        }
    );
    assert_eq!(
        written(&answer, Outcome::Stored { version: 0x71 }),
        hex("810100000000000000000000112233440000000000000071")
    );
    assert_eq!(
        written(&answer, Outcome::Exists),
        hex(
            "810100000000000200000014112233440000000000000000 446174612065786973747320666f72206b65792e"
        )
    );
}

#[test]
fn setq_with_cas_and_exptime_is_a_store_and_silent_on_success() {
    let bytes = hex("80110001080000000000000a00000007000000000000008300000005000000646b76");
    let (request, answer) = request_of(&bytes);
    assert_eq!(
        request,
        Request::Store {
            mode: StoreMode::Set,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            flags: 5,
            exptime: 100,
            cas: 0x83
        }
    );
    assert!(answer.quiet);
    assert!(written(&answer, Outcome::Stored { version: 9 }).is_empty());
    // Errors are still reported, with the quiet opcode.
    assert_eq!(
        written(&answer, Outcome::NotFound),
        hex("8111000000000001000000090000000700000000000000004e6f7420666f756e64")
    );
}

#[test]
fn get_family_replies_are_byte_exact() {
    let get = answer(Kind::Get, opcode::GET, 2, false, None);
    assert_eq!(
        written(&get, found(b"bar", 0xdead_beef, 0x71)),
        hex("810000000400000000000007000000020000000000000071deadbeef626172")
    );
    let get_miss = answer(Kind::Get, opcode::GET, 4, false, None);
    assert_eq!(
        written(&get_miss, Outcome::NotFound),
        hex("8100000000000001000000090000000400000000000000004e6f7420666f756e64")
    );
    let getk = answer(Kind::Get, opcode::GETK, 3, false, Some(b"foo"));
    assert_eq!(
        written(&getk, found(b"bar", 0xdead_beef, 0x71)),
        hex("810c0003040000000000000a000000030000000000000071deadbeef666f6f626172")
    );
    let getk_miss = answer(Kind::Get, opcode::GETK, 5, false, Some(b"nope"));
    assert_eq!(
        written(&getk_miss, Outcome::NotFound),
        hex("810c000400000001000000040000000500000000000000006e6f7065")
    );
    let getq = answer(Kind::Get, opcode::GETQ, 13, true, None);
    assert!(written(&getq, Outcome::NotFound).is_empty());
    assert_eq!(
        written(&getq, found(b"1", 7, 0x81)),
        hex("8109000004000000000000050000000d00000000000000810000000731")
    );
    let getkq = answer(Kind::Get, opcode::GETKQ, 6, true, Some(b"foo"));
    assert!(written(&getkq, Outcome::NotFound).is_empty());
    assert_eq!(
        written(&getkq, found(b"bar", 0xdead_beef, 0x71)),
        hex("810d0003040000000000000a000000060000000000000071deadbeef666f6f626172")
    );
}

#[test]
fn getk_request_keeps_the_key_for_the_reply() {
    let (request, answer) = request_of(&hex(
        "800c00030000000000000003000000030000000000000000666f6f",
    ));
    assert_eq!(
        request,
        Request::Get {
            key: b"foo".to_vec()
        }
    );
    assert_eq!(answer.key.as_deref(), Some(&b"foo"[..]));
    assert!(!answer.quiet);
}

#[test]
fn touch_and_gat_replies_are_byte_exact() {
    let touch = answer(Kind::Touch, opcode::TOUCH, 0x17, false, None);
    assert_eq!(
        written(&touch, found(b"v", 0, 0x78)),
        hex("811c0000040000000000000400000017000000000000007800000000")
    );
    assert_eq!(
        written(&touch, Outcome::NotFound),
        hex("811c000000000001000000090000001700000000000000004e6f7420666f756e64")
    );
    let gat = answer(Kind::Get, opcode::GAT, 0x18, false, None);
    assert_eq!(
        written(&gat, found(b"v", 0, 0x78)),
        hex("811d000004000000000000050000001800000000000000780000000076")
    );
    let gatk = answer(Kind::Get, opcode::GATK, 0x18, false, Some(b"q"));
    assert_eq!(
        written(&gatk, found(b"v", 0, 0x78)),
        hex("812300010400000000000006000000180000000000000078000000007176")
    );
    let gatk_miss = answer(Kind::Get, opcode::GATK, 0x18, false, Some(b"nope"));
    assert_eq!(
        written(&gatk_miss, Outcome::NotFound),
        hex("8123000400000001000000040000001800000000000000006e6f7065")
    );
    let gatq = answer(Kind::Get, opcode::GATQ, 0x0d, true, None);
    assert_eq!(
        written(&gatq, found(b"1", 7, 0x81)),
        hex("811e000004000000000000050000000d00000000000000810000000731")
    );
    // gatkq: a miss says nothing.
    let (request, answer) = request_of(&hex(
        "8024000104000000000000050000001800000000000000000000006471",
    ));
    assert_eq!(
        request,
        Request::Touch {
            key: b"q".to_vec(),
            exptime: 100
        }
    );
    assert!(written(&answer, Outcome::NotFound).is_empty());
}

#[test]
fn storage_failures_use_memcacheds_status_per_command() {
    let add = answer(Kind::Store(StoreMode::Add), opcode::ADD, 8, false, None);
    assert_eq!(
        written(&add, Outcome::NotStored),
        hex(
            "810200000000000200000014000000080000000000000000446174612065786973747320666f72206b65792e"
        )
    );
    let addq = answer(Kind::Store(StoreMode::Add), opcode::ADDQ, 0x15, true, None);
    assert_eq!(
        written(&addq, Outcome::NotStored),
        hex(
            "811200000000000200000014000000150000000000000000446174612065786973747320666f72206b65792e"
        )
    );
    let replace = answer(
        Kind::Store(StoreMode::Replace),
        opcode::REPLACE,
        9,
        false,
        None,
    );
    assert_eq!(
        written(&replace, Outcome::NotStored),
        hex("8103000000000001000000090000000900000000000000004e6f7420666f756e64")
    );
    let append = answer(
        Kind::Store(StoreMode::Append),
        opcode::APPEND,
        10,
        false,
        None,
    );
    assert_eq!(
        written(&append, Outcome::NotStored),
        hex("810e0000000000050000000b0000000a00000000000000004e6f742073746f7265642e")
    );
    assert_eq!(
        written(&append, Outcome::Stored { version: 0x72 }),
        hex("810e000000000000000000000000000a0000000000000072")
    );
    let appendq = answer(
        Kind::Store(StoreMode::Append),
        opcode::APPENDQ,
        11,
        true,
        None,
    );
    assert_eq!(
        written(&appendq, Outcome::NotStored),
        hex("81190000000000050000000b0000000b00000000000000004e6f742073746f7265642e")
    );
    let set = answer(Kind::Store(StoreMode::Set), opcode::SET, 12, false, None);
    assert_eq!(
        written(&set, Outcome::NotFound),
        hex("8101000000000001000000090000000c00000000000000004e6f7420666f756e64")
    );
    let cas_add = answer(Kind::Store(StoreMode::Add), opcode::ADD, 12, false, None);
    assert_eq!(
        written(&cas_add, Outcome::NotFound),
        hex("8102000000000001000000090000000c00000000000000004e6f7420666f756e64")
    );
    // An append or prepend that would grow the value past the limit: Not stored.
    assert_eq!(
        written(&append, Outcome::Failed(Failure::TooLarge)),
        hex("810e0000000000050000000b0000000a00000000000000004e6f742073746f7265642e")
    );
    assert_eq!(
        written(&set, Outcome::Failed(Failure::TooLarge)),
        hex("8101000000000003000000 0a 0000000c0000000000000000546f6f206c617267652e")
    );
}

#[test]
fn add_and_replace_with_a_cas_are_a_cas() {
    let mut bytes =
        hex("80020003080000000000000e112233440000000000000000deadbeef00000000666f6f626172");
    bytes[23] = 0x55;
    let (request, answer) = request_of(&bytes);
    assert_eq!(
        request,
        Request::Store {
            mode: StoreMode::Set,
            key: b"foo".to_vec(),
            value: b"bar".to_vec(),
            flags: 0xdead_beef,
            exptime: 0,
            cas: 0x55
        }
    );
    assert_eq!(answer.kind, Kind::Store(StoreMode::Add));
    bytes[1] = opcode::REPLACE;
    let (request, _) = request_of(&bytes);
    assert!(matches!(
        request,
        Request::Store {
            mode: StoreMode::Set,
            cas: 0x55,
            ..
        }
    ));
    bytes[23] = 0;
    let (request, _) = request_of(&bytes);
    assert!(matches!(
        request,
        Request::Store {
            mode: StoreMode::Replace,
            cas: 0,
            ..
        }
    ));
}

#[test]
fn append_request_has_no_extras() {
    let (request, _) = request_of(&hex(
        "800e000300000000000000040000000a0000000000000000666f6f78",
    ));
    assert_eq!(
        request,
        Request::Store {
            mode: StoreMode::Append,
            key: b"foo".to_vec(),
            value: b"x".to_vec(),
            flags: 0,
            exptime: 0,
            cas: 0
        }
    );
    let mut prepend = hex("800f000300000000000000040000000a0000000000000000666f6f78");
    prepend[1] = opcode::PREPENDQ;
    let (request, answer) = request_of(&prepend);
    assert!(matches!(
        request,
        Request::Store {
            mode: StoreMode::Prepend,
            ..
        }
    ));
    assert!(answer.quiet);
}

#[test]
fn delete_replies_are_byte_exact() {
    let (request, deleteq) = request_of(&hex(
        "8014000300000000000000030000000d0000000000000071666f6f",
    ));
    assert_eq!(
        request,
        Request::Delete {
            key: b"foo".to_vec(),
            cas: 0x71
        }
    );
    assert!(deleteq.quiet);
    assert!(written(&deleteq, Outcome::Deleted).is_empty());
    let delete = answer_for(opcode::DELETE, 0x0d, Kind::Delete);
    assert_eq!(
        written(&delete, Outcome::Deleted),
        hex("8104000000000000000000000000000d0000000000000000")
    );
    let delete = answer_for(opcode::DELETE, 0x0e, Kind::Delete);
    assert_eq!(
        written(&delete, Outcome::NotFound),
        hex("8104000000000001000000090000000e00000000000000004e6f7420666f756e64")
    );
    let deleteq = answer(Kind::Delete, opcode::DELETEQ, 0x2a, true, None);
    assert_eq!(
        written(&deleteq, Outcome::NotFound),
        hex("8114000000000001000000090000002a00000000000000004e6f7420666f756e64")
    );
    let delete = answer_for(opcode::DELETE, 9, Kind::Delete);
    assert_eq!(
        written(&delete, Outcome::Exists),
        hex(
            "810400000000000200000014000000090000000000000000446174612065786973747320666f72206b65792e"
        )
    );
}

fn answer_for(op: u8, opaque: u32, kind: Kind) -> Answer {
    answer(kind, op, opaque, false, None)
}

#[test]
fn arith_requests_and_replies_are_byte_exact() {
    let (request, answer) = request_of(&hex(
        "8005000114000000000000150000000f00000000000000000000000000000001000000000000000a000000006e",
    ));
    assert_eq!(
        request,
        Request::Arith {
            key: b"n".to_vec(),
            decr: false,
            delta: 1,
            create: Some(Create {
                initial: 10,
                exptime: 0,
                flags: 0
            }),
            exptime: None,
            cas: 0
        }
    );
    assert_eq!(
        written(
            &answer,
            Outcome::Number {
                value: 10,
                version: 0x74
            }
        ),
        hex("8105000000000000000000080000000f0000000000000074000000000000000a")
    );
    let decr = answer_for(opcode::DECREMENT, 0x10, Kind::Arith);
    assert_eq!(
        written(
            &decr,
            Outcome::Number {
                value: 0,
                version: 0x76
            }
        ),
        hex("8106000000000000000000080000001000000000000000760000000000000000")
    );
    let incr = answer_for(opcode::INCREMENT, 9, Kind::Arith);
    assert_eq!(
        written(
            &incr,
            Outcome::Number {
                value: 1,
                version: 0x7f
            }
        ),
        hex("81050000000000000000000800000009000000000000007f0000000000000001")
    );
    let incr = answer_for(opcode::INCREMENT, 0x11, Kind::Arith);
    assert_eq!(
        written(&incr, Outcome::NotFound),
        hex("8105000000000001000000090000001100000000000000004e6f7420666f756e64")
    );
    let incr = answer_for(opcode::INCREMENT, 0x12, Kind::Arith);
    assert_eq!(
        written(&incr, Outcome::Failed(Failure::NonNumeric)),
        hex(
            "81050000000000060000002e000000120000000000000000 4e6f6e2d6e756d65726963207365727665722d736964652076616c756520666f7220696e6372206f722064656372"
        )
    );
    let (request, answer) = request_of(&hex(
        "80160001140000000000001500000010000000000000000900000000000000020000000000000000ffffffff6e",
    ));
    assert_eq!(
        request,
        Request::Arith {
            key: b"n".to_vec(),
            decr: true,
            delta: 2,
            create: None,
            exptime: None,
            cas: 9
        }
    );
    assert!(
        written(
            &answer,
            Outcome::Number {
                value: 3,
                version: 1
            }
        )
        .is_empty()
    );
}

#[test]
fn flush_noop_version_quit_and_stat() {
    let (request, answer) = request_of(&hex(
        "8008000004000000000000040000002100000000000000000000001e",
    ));
    assert_eq!(request, Request::FlushAll { delay: 30 });
    let mut out = Vec::new();
    answer.write(&mut out, Outcome::Flushed);
    assert_eq!(out, hex("810800000000000000000000000000210000000000000000"));
    let flushq = hex("801800000000000000000000000000010000000000000000");
    let (request, answer) = request_of(&flushq);
    assert_eq!(request, Request::FlushAll { delay: 0 });
    assert!(written(&answer, Outcome::Flushed).is_empty());

    let noop = packet(&hex("800a00000000000000000000000000140000000000000000"));
    assert_eq!(noop.command, Command::Noop);
    let mut out = Vec::new();
    write_response(&mut out, &noop.header, Status::Ok, 0, &[], &[], &[]);
    assert_eq!(out, hex("810a00000000000000000000000000140000000000000000"));

    let version = packet(&hex("800b00000000000000000000000000130000000000000000"));
    assert_eq!(dispatch(version.clone(), 0), Dispatch::Version);
    let mut out = Vec::new();
    write_response(
        &mut out,
        &version.header,
        Status::Ok,
        0,
        &[],
        &[],
        b"1.6.18",
    );
    assert_eq!(
        out,
        hex("810b00000000000000000006000000130000000000000000312e362e3138")
    );

    let quit = packet(&hex("800700000000000000000000000000280000000000000000"));
    assert_eq!(dispatch(quit, 0), Dispatch::Quit { quiet: false });
    let quitq = packet(&hex("801700000000000000000000000000290000000000000000"));
    assert_eq!(dispatch(quitq, 0), Dispatch::Quit { quiet: true });

    let stat = packet(&hex(
        "80100008000000000000000800000006000000000000000073657474696e6773",
    ));
    assert_eq!(dispatch(stat, 0), Dispatch::Stat("settings".into()));
    let stat = packet(&hex("801000000000000000000000000000050000000000000000"));
    let mut out = Vec::new();
    write_stat(&mut out, &stat.header, "pid", "9467");
    write_stat(&mut out, &stat.header, "", "");
    assert_eq!(
        out,
        hex(
            "81100003000000000000000700000005000000000000000070696439343637 811000000000000000000000000000050000000000000000"
        )
    );
    let unknown = header(opcode::STAT, 0x19);
    let mut out = Vec::new();
    write_error(&mut out, &unknown, Status::NotFound);
    assert_eq!(
        out,
        hex("8110000000000001000000090000001900000000000000004e6f7420666f756e64")
    );
}

#[test]
fn flush_delay_follows_memcacheds_exptime_rule() {
    let now = 1_800_000_000;
    assert_eq!(flush_delay(0, now), 0);
    assert_eq!(flush_delay(60, now), 60);
    assert_eq!(
        flush_delay(RELATIVE_EXPTIME_MAX as u32, now),
        RELATIVE_EXPTIME_MAX as u32
    );
    assert_eq!(flush_delay(now as u32 + 90, now), 90);
    assert_eq!(flush_delay(now as u32 - 90, now), 0);
}

#[test]
fn failures_map_to_statuses() {
    let set = answer_for(opcode::SET, 1, Kind::Store(StoreMode::Set));
    assert_eq!(
        written(
            &set,
            Outcome::Failed(Failure::Unavailable("no slaves".into()))
        ),
        hex("8101000000000082000000090000000100000000000000006e6f20736c61766573")
    );
    assert_eq!(
        written(&set, Outcome::Failed(Failure::Invalid("empty key".into()))),
        hex("810100000000000400000009000000010000000000000000656d707479206b6579")
    );
    // An outcome that does not belong to the request is a server error, not a panic.
    let out = written(&set, Outcome::Deleted);
    assert_eq!(&out[..8], &hex("8101000000000082")[..]);
}
