//! Every decoder of network bytes: frames (buffer and stream), bulk chunks, heartbeats.
//! None may panic; every frame that decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piazza::wire::{self, Heartbeat, WireLimits};

fuzz_target!(|data: &[u8]| {
    let limits = WireLimits {
        max_key: 1024,
        max_value: 4096,
    };
    if let Ok((frame, used)) = wire::decode(data, &limits) {
        assert_eq!(frame.encode(), data[..used]);
    }
    let _ = wire::read_frame(&mut &data[..], &limits);
    let _ = wire::unpack_bulk(data, &limits);
    let _ = Heartbeat::decode(data);
    let _ = wire::decode_arc(data);
});
