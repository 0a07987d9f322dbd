use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::config::Fsync;
use crate::store::{FlushMarker, Table};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("piazza-wal-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn samples() -> Vec<Record> {
    vec![
        Record::Put {
            table: Table::Own,
            key: b"k1".to_vec(),
            version: 7,
            flags: 3,
            expires: 0,
            value: b"v\r\n\0".to_vec(),
        },
        Record::Put {
            table: Table::Own,
            key: b"k-ttl".to_vec(),
            version: 8,
            flags: 4,
            expires: 1_900_000_000,
            value: b"expiring".to_vec(),
        },
        Record::Flush(FlushMarker {
            threshold: 99,
            at: 1_800_000_000_000_000,
        }),
        Record::Tombstone {
            table: Table::Previous,
            key: b"k2".to_vec(),
            version: 9,
        },
        Record::Absorb(Some((1, 2))),
        Record::Absorb(None),
        Record::Split((5, 6)),
        Record::DropArc(Table::Previous, (7, 8)),
        Record::Ranges(RangeOp::Absorb, vec![(1, 2), (3, 4)]),
        Record::Ranges(RangeOp::Demote, vec![]),
        Record::Ranges(RangeOp::Drop(Table::Own), vec![(u64::MAX, 0)]),
        Record::Ranges(RangeOp::Drop(Table::Previous), vec![(5, 5)]),
        Record::Clear,
        Record::Forget(0x0102_0304_0506_0708),
        Record::Put {
            table: Table::Previous,
            key: b"last".to_vec(),
            version: 10,
            flags: 0,
            expires: 0,
            value: Vec::new(),
        },
    ]
}

fn write_log(path: &Path, records: &[Record]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    for record in records {
        record.encode_into(&mut bytes);
    }
    fs::write(path, &bytes).unwrap();
    bytes
}

fn read_back(path: &Path, salvage: bool) -> Result<(Vec<Record>, Replayed), WalError> {
    let mut records = Vec::new();
    let replayed = replay(path, salvage, |r| records.push(r))?;
    Ok((records, replayed))
}

#[test]
fn records_round_trip() {
    let dir = temp_dir("round");
    let path = dir.join("wal.log");
    let wal = Wal::open(&path, Fsync::Always).unwrap();
    for record in samples() {
        let mut bytes = Vec::new();
        record.encode_into(&mut bytes);
        let (_, lsn) = wal.append(&bytes, || ()).unwrap();
        wal.sync_to(lsn).unwrap();
    }
    drop(wal);
    let (records, replayed) = read_back(&path, false).unwrap();
    assert_eq!(records, samples());
    assert_eq!(replayed.cut, None);
    // Reopening appends after what is there.
    let wal = Wal::open(&path, Fsync::Never).unwrap();
    let mut bytes = Vec::new();
    Record::Clear.encode_into(&mut bytes);
    wal.append(&bytes, || ()).unwrap();
    drop(wal);
    assert_eq!(
        read_back(&path, false).unwrap().0.len(),
        samples().len() + 1
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cut_at_every_byte_of_the_last_record_keeps_every_earlier_one() {
    let dir = temp_dir("torn");
    let path = dir.join("wal.log");
    let records = samples();
    let full = write_log(&path, &records);
    let mut last_start = MAGIC.len();
    for record in &records[..records.len() - 1] {
        let mut bytes = Vec::new();
        record.encode_into(&mut bytes);
        last_start += bytes.len();
    }
    for cut in last_start..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let (got, replayed) = read_back(&path, false).unwrap();
        assert_eq!(got, records[..records.len() - 1], "cut at {cut}");
        if cut > last_start {
            assert_eq!(replayed.cut.map(|c| c.0), Some(last_start as u64));
        }
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            last_start as u64,
            "tail cut off"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_flipped_bit_in_the_last_record_is_cut_and_in_the_middle_stops_the_start() {
    let dir = temp_dir("flip");
    let path = dir.join("wal.log");
    let records = samples();
    let full = write_log(&path, &records);
    // Last record: its last byte.
    let mut bad = full.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    fs::write(&path, &bad).unwrap();
    let (got, replayed) = read_back(&path, false).unwrap();
    assert_eq!(got, records[..records.len() - 1]);
    assert_eq!(replayed.cut.map(|c| c.1), Some("crc mismatch"));
    // Middle: a byte of the first record's body.
    let mut bad = full.clone();
    bad[MAGIC.len() + RECORD_HEADER + 3] ^= 0x10;
    fs::write(&path, &bad).unwrap();
    let err = read_back(&path, false).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { offset: 8, .. }), "{err}");
    assert!(err.to_string().contains("--salvage"), "{err}");
    assert_eq!(
        fs::read(&path).unwrap(),
        bad,
        "nothing is cut without --salvage"
    );
    // Salvage cuts there.
    let (got, replayed) = read_back(&path, true).unwrap();
    assert!(got.is_empty());
    assert_eq!(replayed.cut.map(|c| c.0), Some(8));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshots_round_trip_and_an_incomplete_one_is_refused() {
    let dir = temp_dir("snap");
    let path = dir.join("snapshot.1");
    let records = samples();
    let mut left = records.clone();
    left.reverse();
    write_snapshot(&path, |buf| {
        let record = left.pop()?;
        record.encode_into(buf);
        Some(1)
    })
    .unwrap();
    let mut got = Vec::new();
    assert_eq!(
        load_snapshot(&path, |r| got.push(r)).unwrap(),
        records.len() as u64
    );
    assert_eq!(got, records);
    // Without its end record (or cut anywhere), it is refused, and left as it is.
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    assert!(matches!(
        load_snapshot(&path, |_| ()),
        Err(WalError::Corrupt { .. })
    ));
    assert_eq!(fs::read(&path).unwrap().len(), bytes.len() - 3);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rotation_moves_appends_to_a_new_segment() {
    let dir = temp_dir("rotate");
    let wal = Wal::open(&dir.join("a.log"), Fsync::Always).unwrap();
    let mut bytes = Vec::new();
    Record::Clear.encode_into(&mut bytes);
    let (_, first) = wal.append(&bytes, || ()).unwrap();
    wal.rotate(&dir.join("b.log")).unwrap();
    assert_eq!(wal.len(), MAGIC.len() as u64);
    let (_, second) = wal.append(&bytes, || ()).unwrap();
    assert!(second > first);
    wal.sync_to(second).unwrap();
    assert_eq!(
        read_back(&dir.join("a.log"), false).unwrap().0,
        vec![Record::Clear]
    );
    assert_eq!(
        read_back(&dir.join("b.log"), false).unwrap().0,
        vec![Record::Clear]
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_foreign_file_is_refused() {
    let dir = temp_dir("magic");
    let path = dir.join("wal.log");
    fs::write(&path, b"hello world, not a log").unwrap();
    assert!(matches!(
        read_back(&path, false),
        Err(WalError::BadMagic { .. })
    ));
    fs::write(&path, b"PZW").unwrap();
    assert_eq!(read_back(&path, false).unwrap().0, Vec::new());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn group_commit_serves_many_writers() {
    let dir = temp_dir("group");
    let path = dir.join("wal.log");
    let wal = std::sync::Arc::new(Wal::open(&path, Fsync::Always).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = std::sync::Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let mut bytes = Vec::new();
                    Record::Tombstone {
                        table: Table::Own,
                        key: format!("{t}-{i}").into_bytes(),
                        version: i,
                    }
                    .encode_into(&mut bytes);
                    let (_, lsn) = wal.append(&bytes, || ()).unwrap();
                    wal.sync_to(lsn).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(wal);
    assert_eq!(read_back(&path, false).unwrap().0.len(), 400);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_data_dir_lock_keeps_out_a_second_owner() {
    let dir = temp_dir("lock");
    let lock = DirLock::acquire(&dir).unwrap();
    // Our own pid in the file: a second acquire in this process is refused as well,
    // since the pid check treats "us" as a stale owner only when it is not us.
    fs::write(dir.join("LOCK"), "1\n").unwrap(); // pid 1 always runs
    assert!(matches!(
        DirLock::acquire(&dir),
        Err(WalError::Locked { .. })
    ));
    // A lock left by a process that is gone is taken over.
    fs::write(dir.join("LOCK"), "4000000000\n").unwrap();
    let again = DirLock::acquire(&dir).unwrap();
    drop(again);
    assert!(!dir.join("LOCK").exists());
    drop(lock);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_bytes_never_panic_the_reader() {
    let dir = temp_dir("fuzz");
    let path = dir.join("wal.log");
    let full = {
        let mut bytes = MAGIC.to_vec();
        for record in samples() {
            record.encode_into(&mut bytes);
        }
        bytes
    };
    let mut x = 0x1234_5678u64;
    for _ in 0..2000 {
        let mut bytes = full.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % bytes.len();
            bytes[i] = (x >> 32) as u8;
        }
        fs::write(&path, &bytes).unwrap();
        let _ = read_back(&path, x % 2 == 0);
    }
    fs::remove_dir_all(&dir).unwrap();
}
