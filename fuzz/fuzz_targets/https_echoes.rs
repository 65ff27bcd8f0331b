//! The credential scrubber on arbitrary answers: a secret (the first line
//! of the input, sent as `Bearer SECRET`) and an answer body (the rest),
//! streamed in chunks of a size the input picks. No panic, and what the
//! client receives holds together:
//! - it is as long as the answer (Content-Length stays true) and differs
//!   from it only where bytes became `*`;
//! - no echo of the secret, in any spelling, survives in it, whatever the
//!   cut (for a secret with no `*` of its own, which overwriting could
//!   otherwise spell again);
//! - overwriting the whole answer at once leaves no echo either.
#![no_main]

use airlock::proxy::https::{echo::Echoes, scrub::Scrubbed, test_body::Chunks};
use http_body_util::BodyExt as _;
use hyper::header::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let Some(line_end) = data.iter().position(|&b| b == b'\n') else { return };
    let (secret, body) = (&data[..line_end], &data[line_end + 1..]);
    let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ", secret].concat()) else { return };
    let Some(echoes) = Echoes::of(&value) else { return };
    let checkable = !secret.contains(&b'*');

    let mut whole = body.to_vec();
    echoes.overwrite(&mut whole);
    if checkable {
        assert!(!echoes.found_in(&whole), "an echo survived overwriting");
    }

    let size = usize::from(cut).max(1);
    let chunks = Chunks::of(body, size);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let sent = runtime.block_on(async { Scrubbed::new(chunks, echoes.clone()).collect().await }).expect("infallible");
    let sent = sent.to_bytes();
    assert_eq!(sent.len(), body.len(), "the answer's length changed");
    for (out, was) in sent.iter().zip(body) {
        assert!(out == was || *out == b'*', "a byte changed into something other than *");
    }
    if checkable {
        assert!(!echoes.found_in(&sent), "an echo survived streaming in chunks of {size}");
    }
});
