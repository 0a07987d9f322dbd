use super::*;

fn value(store: &Store, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    store.get(table, key).and_then(|e| e.value)
}

#[test]
fn newer_write_wins_whatever_the_arrival_order() {
    let a = Store::new();
    let b = Store::new();
    a.put(Table::Own, b"k", b"one".to_vec(), 0, Version(1));
    a.put(Table::Own, b"k", b"two".to_vec(), 0, Version(2));
    b.put(Table::Own, b"k", b"two".to_vec(), 0, Version(2));
    let late = b.put(Table::Own, b"k", b"one".to_vec(), 0, Version(1));
    assert_eq!(
        late,
        Applied::Stale {
            current: Version(2)
        }
    );
    assert_eq!(value(&a, Table::Own, b"k"), Some(b"two".to_vec()));
    assert_eq!(a.get(Table::Own, b"k"), b.get(Table::Own, b"k"));
}

#[test]
fn tombstone_stops_an_older_write_from_bringing_the_key_back() {
    let store = Store::new();
    store.put(Table::Own, b"k", b"v".to_vec(), 7, Version(5));
    assert_eq!(
        store.delete(Table::Own, b"k", Version(6)),
        Applied::Applied { was_live: true }
    );
    store.put(Table::Own, b"k", b"old".to_vec(), 0, Version(4));
    assert_eq!(value(&store, Table::Own, b"k"), None);
    assert_eq!(
        store.get(Table::Own, b"k").map(|e| e.version),
        Some(Version(6))
    );
    // A newer write after the delete does bring it back.
    store.put(Table::Own, b"k", b"new".to_vec(), 1, Version(7));
    assert_eq!(value(&store, Table::Own, b"k"), Some(b"new".to_vec()));
}

#[test]
fn same_version_is_stale() {
    let store = Store::new();
    store.put(Table::Own, b"k", b"a".to_vec(), 0, Version(3));
    assert_eq!(
        store.put(Table::Own, b"k", b"b".to_vec(), 0, Version(3)),
        Applied::Stale {
            current: Version(3)
        }
    );
}

#[test]
fn delete_of_a_missing_key_leaves_a_tombstone() {
    let store = Store::new();
    assert_eq!(
        store.delete(Table::Previous, b"k", Version(2)),
        Applied::Applied { was_live: false }
    );
    let (own, previous) = store.counts();
    assert_eq!(own, TableCounts::default());
    assert_eq!(
        previous,
        TableCounts {
            live: 0,
            tombstones: 1
        }
    );
}

#[test]
fn tables_are_separate() {
    let store = Store::new();
    store.put(Table::Own, b"k", b"own".to_vec(), 1, Version(1));
    assert_eq!(store.get(Table::Previous, b"k"), None);
    store.put(Table::Previous, b"k", b"prev".to_vec(), 2, Version(1));
    assert_eq!(value(&store, Table::Own, b"k"), Some(b"own".to_vec()));
    assert_eq!(store.get(Table::Previous, b"k").map(|e| e.flags), Some(2));
}

#[test]
fn chunks_cover_the_table_once_within_their_size() {
    let store = Store::new();
    for i in 0..1000u32 {
        store.put(
            Table::Own,
            &i.to_be_bytes(),
            vec![0; 50],
            0,
            Version(u64::from(i) + 1),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = Some(Cursor::START);
    while let Some(at) = cursor {
        let (entries, next) = store.chunk(Table::Own, at, 4096);
        assert!(!entries.is_empty());
        let bytes: usize = entries.iter().map(|(k, _)| k.len() + 50 + 29).sum();
        assert!(bytes <= 4096 || entries.len() == 1, "{bytes} bytes");
        for (key, _) in entries {
            assert!(seen.insert(key));
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 1000);
}

#[test]
fn a_walk_sends_every_entry_present_throughout_while_writes_go_on() {
    let store = Store::new();
    for i in 0..10_000u32 {
        store.put(
            Table::Own,
            format!("old{i}").as_bytes(),
            vec![1; 10],
            0,
            Version(1),
        );
    }
    let mut seen = std::collections::HashMap::new();
    let mut cursor = Some(Cursor::START);
    let mut written = 0u32;
    while let Some(at) = cursor {
        let (entries, next) = store.scan(Table::Own, at, |key| !key.ends_with(b"7"));
        for (key, entry) in entries {
            *seen.entry(key).or_insert(0) += 1;
            assert!(entry.value.is_some());
        }
        cursor = next;
        // Writes between steps: new keys (enough to grow the table several times)
        // and new versions of old ones.
        for _ in 0..2000 {
            store.put(
                Table::Own,
                format!("new{written}").as_bytes(),
                vec![2; 10],
                0,
                Version(2),
            );
            let old = format!("old{}", written % 10_000);
            store.put(Table::Own, old.as_bytes(), vec![3; 10], 0, Version(2));
            written += 1;
        }
    }
    assert!(written > 20_000, "the walk took {written} writes");
    for i in (0..10_000u32).filter(|i| i % 10 != 7) {
        assert_eq!(seen.get(format!("old{i}").as_bytes()), Some(&1), "old{i}");
    }
    assert!(
        seen.keys().all(|key| !key.ends_with(b"7")),
        "the filter holds"
    );
    assert!(seen.values().all(|&n| n == 1));
}

#[test]
fn absorb_merges_previous_into_own_by_version() {
    let store = Store::new();
    store.put(Table::Own, b"a", b"own-new".to_vec(), 0, Version(9));
    store.put(Table::Previous, b"a", b"prev-old".to_vec(), 0, Version(3));
    store.put(Table::Previous, b"b", b"prev".to_vec(), 0, Version(4));
    store.put(Table::Previous, b"keep", b"k".to_vec(), 0, Version(5));
    assert_eq!(store.absorb(|key| key != b"keep"), 2);
    assert_eq!(value(&store, Table::Own, b"a"), Some(b"own-new".to_vec()));
    assert_eq!(value(&store, Table::Own, b"b"), Some(b"prev".to_vec()));
    assert_eq!(store.get(Table::Previous, b"a"), None);
    assert_eq!(value(&store, Table::Previous, b"keep"), Some(b"k".to_vec()));
}

#[test]
fn split_moves_an_arc_from_own_to_previous_and_drops_the_rest_of_previous() {
    let store = Store::new();
    store.put(Table::Own, b"x1", b"1".to_vec(), 0, Version(1));
    store.put(Table::Own, b"y1", b"2".to_vec(), 0, Version(2));
    store.put(Table::Previous, b"x2", b"3".to_vec(), 0, Version(3));
    store.put(Table::Previous, b"z", b"4".to_vec(), 0, Version(4));
    let (moved, dropped) = store.split(|key| key.starts_with(b"x"));
    assert_eq!((moved, dropped), (1, 1));
    assert_eq!(value(&store, Table::Previous, b"x1"), Some(b"1".to_vec()));
    assert_eq!(value(&store, Table::Previous, b"x2"), Some(b"3".to_vec()));
    assert_eq!(store.get(Table::Previous, b"z"), None);
    assert_eq!(store.get(Table::Own, b"x1"), None);
    assert_eq!(value(&store, Table::Own, b"y1"), Some(b"2".to_vec()));
    assert_eq!(store.drop_where(Table::Own, |_| true), 1);
    store.clear();
    assert_eq!(store.counts(), Default::default());
}

#[test]
fn entries_skip_keys_that_went_away() {
    let store = Store::new();
    store.put(Table::Own, b"a", b"1".to_vec(), 0, Version(1));
    store.delete(Table::Own, b"b", Version(2));
    let keys = store.keys_where(Table::Own, |_| true);
    assert_eq!(keys.len(), 2);
    let entries = store.entries(Table::Own, &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().any(|(k, e)| k == b"b" && e.value.is_none()));
}

#[test]
fn expired_and_flushed_entries_read_as_tombstones_and_keep_their_versions() {
    let store = Store::new();
    let now_secs = now_micros() / 1_000_000;
    let mut entry = Entry::value(Version(10), 5, b"v".to_vec());
    entry.expires = now_secs + 100;
    store.apply(Table::Own, b"later", entry.clone());
    entry.expires = now_secs - 1;
    store.apply(Table::Own, b"gone", entry);
    assert!(store.is_live(Table::Own, b"later"));
    assert!(!store.is_live(Table::Own, b"gone"));
    let gone = store.read(Some(Table::Own), b"gone").expect("an entry");
    assert_eq!((gone.version, gone.value), (Version(10), None));
    // An older write cannot bring an expired key back.
    assert!(matches!(
        store.put(Table::Own, b"gone", b"old".to_vec(), 0, Version(9)),
        Applied::Stale { .. }
    ));
    // A flush hides everything below its threshold, at once or from a later time.
    store.put(Table::Own, b"new", b"n".to_vec(), 0, Version(30));
    store.flush(FlushMarker {
        threshold: 20,
        at: 0,
    });
    assert!(!store.is_live(Table::Own, b"later"));
    assert!(store.is_live(Table::Own, b"new"));
    store.flush(FlushMarker {
        threshold: 40,
        at: now_micros() + 60_000_000,
    });
    assert!(store.is_live(Table::Own, b"new"), "a delayed flush waits");
    assert_eq!(store.flush_floor(), 20);
    assert_eq!(store.flush_markers().len(), 2);
    assert_eq!(store.purge_invisible(), 2);
    assert_eq!(store.counts().0.live, 1);
}

#[test]
fn collection_drops_old_tombstones_and_expired_values_and_nothing_else() {
    let store = Store::new();
    let now_secs = now_micros() / 1_000_000;
    // Enough entries for several slices in `own`.
    let n = 3 * 64 * 1024_u64 + 17;
    for i in 0..n {
        let key = i.to_be_bytes();
        match i % 4 {
            0 => store.delete(Table::Own, &key, Version(10 + i)),
            1 => store.put(Table::Own, &key, b"live".to_vec(), 0, Version(10 + i)),
            2 => store.apply(Table::Own, &key, {
                let mut entry = Entry::value(Version(10 + i), 0, b"gone".to_vec());
                entry.expires = now_secs - 1;
                entry
            }),
            // Newer than the horizon: kept, tombstone or not.
            _ => store.delete(Table::Own, &key, Version(1_000_000_000 + i)),
        };
    }
    store.delete(Table::Previous, b"old", Version(5));
    store.delete(Table::Previous, b"new", Version(2_000_000_000));
    let collected = store.collect(Version(1_000_000_000));
    let quarter = n / 4;
    assert_eq!(
        collected,
        Collected {
            tombstones: quarter + 1 + 1, // i % 4 == 0 (one more of them), and "old"
            values: quarter,
        }
    );
    let (own, previous) = store.counts();
    assert_eq!(own.live, quarter);
    assert_eq!(own.tombstones, quarter);
    assert_eq!(previous.tombstones, 1);
    assert_eq!(store.get(Table::Own, &0u64.to_be_bytes()), None);
    assert!(store.is_live(Table::Own, &1u64.to_be_bytes()));
    assert_eq!(store.get(Table::Own, &2u64.to_be_bytes()), None);
    assert!(store.get(Table::Own, &3u64.to_be_bytes()).is_some());
    // Nothing left to collect below that horizon.
    assert_eq!(store.collect(Version(1_000_000_000)), Collected::default());
}

#[test]
fn forget_drops_every_entry_below_the_horizon_in_both_tables() {
    let store = Store::new();
    store.put(Table::Own, b"old", b"v".to_vec(), 0, Version(5));
    store.delete(Table::Own, b"old-tombstone", Version(6));
    store.put(
        Table::Previous,
        b"old-previous",
        b"v".to_vec(),
        0,
        Version(7),
    );
    store.put(Table::Own, b"new", b"v".to_vec(), 0, Version(50));
    store.delete(Table::Previous, b"new-tombstone", Version(51));
    assert_eq!(
        store.forget_below(Version(50)),
        Collected {
            tombstones: 1,
            values: 2
        }
    );
    assert_eq!(store.get(Table::Own, b"old"), None);
    assert_eq!(store.get(Table::Previous, b"old-previous"), None);
    assert!(store.is_live(Table::Own, b"new"));
    assert!(store.get(Table::Previous, b"new-tombstone").is_some());
    // What was forgotten can be written again, at any version.
    store.put(Table::Own, b"old", b"again".to_vec(), 0, Version(1));
    assert_eq!(value(&store, Table::Own, b"old"), Some(b"again".to_vec()));
}

#[test]
fn apply_all_merges_by_version() {
    let store = Store::new();
    store.put(Table::Previous, b"a", b"new".to_vec(), 0, Version(10));
    let incoming = vec![
        (b"a".to_vec(), Entry::value(Version(9), 0, b"old".to_vec())),
        (b"b".to_vec(), Entry::value(Version(1), 0, b"b".to_vec())),
    ];
    assert_eq!(store.apply_all(Table::Previous, incoming), 1);
    assert_eq!(value(&store, Table::Previous, b"a"), Some(b"new".to_vec()));
    assert_eq!(value(&store, Table::Previous, b"b"), Some(b"b".to_vec()));
}
