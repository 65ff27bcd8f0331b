//! Arbitrary bytes as a client's and a server's stream: decoding and typing
//! must never panic, and statement tracking must stay consistent.
#![no_main]

use airlock::proxy::postgres::codec::{Backend, Frontend, decode_frame, decode_startup};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut startup = BytesMut::from(data);
    while let Ok(Some(_)) = decode_startup(&mut startup) {}

    let mut frames = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut frames) {
        let _ = Frontend::parse(&frame);
        let _ = Backend::parse(&frame);
    }
});
