//! The credential filter of upgraded connections on arbitrary bytes from a
//! target: the first byte picks the protocol (no framing, WebSocket, a
//! Kubernetes channel protocol over WebSocket, SPDY/3.1) and the chunk
//! size, the first line is the secret (sent as `Bearer SECRET`), the rest
//! what the target sends. No panic, and:
//! - fed in chunks or at once, the filter ends the same way (refusing, or
//!   passing as many bytes: where the secret's spellings overlap, which
//!   bytes became `*` may depend on what had arrived when it was found);
//! - what it passes is a prefix of what came (the frames whole so far),
//!   changed only where bytes became `*`;
//! - with no framing, no echo of the secret survives (for a secret with no
//!   `*` of its own, which overwriting could otherwise spell again).
#![no_main]

use airlock::proxy::https::{echo::Echoes, upgraded::echo_filter};
use hyper::{HeaderMap, header::HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, data)) = data.split_first() else { return };
    let Some(line_end) = data.iter().position(|&b| b == b'\n') else { return };
    let (secret, wire) = (&data[..line_end], &data[line_end + 1..]);
    let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ", secret].concat()) else { return };
    let Some(echoes) = Echoes::of(&value) else { return };
    let mut switching = HeaderMap::new();
    let (upgrade, subprotocol) = match choice % 4 {
        0 => ("tcp", None),
        1 => ("websocket", None),
        2 => ("websocket", Some("v5.channel.k8s.io")),
        _ => ("SPDY/3.1", None),
    };
    switching.insert("upgrade", HeaderValue::from_static(upgrade));
    if let Some(subprotocol) = subprotocol {
        switching.insert("sec-websocket-protocol", HeaderValue::from_static(subprotocol));
    }
    let size = usize::from(choice / 4).max(1);
    let whole = echo_filter(&echoes, &switching).filter_all(wire, wire.len());
    let chunked = echo_filter(&echoes, &switching).filter_all(wire, size);
    let checkable = !secret.contains(&b'*');
    match (&whole, &chunked) {
        (Ok(whole), Ok(chunked)) => assert_eq!(whole.len(), chunked.len(), "the cut changed what passed"),
        (Err(_), Err(_)) => {}
        _ => panic!("the cut changed whether it passed: {whole:?} / {chunked:?}"),
    }
    let Ok(out) = chunked else { return };
    assert!(out.len() <= wire.len());
    for (out, came) in out.iter().zip(wire) {
        assert!(out == came || *out == b'*', "a byte changed into something other than *");
    }
    if choice % 4 == 0 && checkable {
        assert!(!echoes.found_in(&out), "an echo survived");
    }
});
