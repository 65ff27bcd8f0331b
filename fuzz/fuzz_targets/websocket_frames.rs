//! Arbitrary bytes through the WebSocket frame decoder that reads
//! `kubectl exec` streams, as a client's and as a server's, cut into chunks
//! anywhere: no panic, and the chunking never changes what is found.
#![no_main]

use airlock::proxy::https::{channels::ChannelReader as _, websocket::Decoder};
use libfuzzer_sys::fuzz_target;

fn decode(from_client: bool, bytes: &[u8], chunk: usize) -> (Vec<String>, bool) {
    let mut decoder = Decoder::new(from_client);
    let mut pieces = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        if decoder.feed(piece, &mut pieces).is_err() {
            return (pieces.iter().map(|p| format!("{p:?}")).collect(), false);
        }
    }
    (pieces.iter().map(|p| format!("{p:?}")).collect(), true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else { return };
    let from_client = control & 0x80 != 0;
    let chunk = usize::from(control & 0x7f) + 1;
    // Frames are read only once whole, so chunks never change what is found.
    assert_eq!(decode(from_client, bytes, bytes.len()), decode(from_client, bytes, chunk), "chunks of {chunk}");
});
