//! The log-record reader: any bytes decode into some intact records and a stop; records
//! that decode must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza::wal;

fuzz_target!(|data: &[u8]| {
    let (records, stop) = wal::decode_records(data);
    let mut encoded = Vec::new();
    for record in &records {
        record.encode_into(&mut encoded);
    }
    match stop {
        None => assert_eq!(encoded, data),
        Some((offset, _)) => assert_eq!(encoded, data[..offset]),
    }
});
