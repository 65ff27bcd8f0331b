//! SPDY/3.1 frames through the reader of `kubectl exec` streams, cut into
//! chunks anywhere: no panic, and the chunking never changes what is
//! found. Half the inputs are raw bytes; the other half are read as a
//! program building frames (streams opened with properly compressed
//! headers of any type, data on any stream, control frames of any kind),
//! so the fuzzer gets past the zlib layer to the frames behind it.
#![no_main]

use airlock::proxy::https::{
    channels::ChannelReader as _,
    spdy::{Decoder, Streams},
};
use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;

/// The SPDY/3 dictionary, as the agent embeds it.
const DICTIONARY: &[u8] = include_bytes!("../../agent/src/proxy/https/spdy3-dictionary.bin");
const STREAM_TYPES: [&str; 7] = ["stdin", "stdout", "stderr", "error", "resize", "data", ""];

fn decode(wire: &[u8], chunk: usize) -> (Vec<String>, Option<String>) {
    let mut decoder = Decoder::new(Streams::default());
    let mut pieces = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        if let Err(error) = decoder.feed(piece, &mut pieces) {
            return (pieces.iter().map(|p| format!("{p:?}")).collect(), Some(error.to_string()));
        }
    }
    (pieces.iter().map(|p| format!("{p:?}")).collect(), None)
}

fn control(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80, 3];
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(body);
    frame
}

/// Frames built from `program`, a byte code of one operation per byte.
fn build(program: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::best(), true);
    compress.set_dictionary(DICTIONARY).expect("dictionary");
    let mut wire = Vec::new();
    let mut bytes = program.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        match op % 4 {
            0 => {
                let kind = STREAM_TYPES[usize::from(arg >> 4) % STREAM_TYPES.len()];
                let mut plain = 1u32.to_be_bytes().to_vec();
                for field in ["streamtype", kind] {
                    plain.extend_from_slice(&(field.len() as u32).to_be_bytes());
                    plain.extend_from_slice(field.as_bytes());
                }
                let mut block = Vec::with_capacity(plain.len() + 64);
                compress.compress_vec(&plain, &mut block, FlushCompress::Sync).expect("deflate");
                let mut body = u32::from(arg & 0x0f).to_be_bytes().to_vec();
                body.extend_from_slice(&[0; 6]);
                body.extend(block);
                wire.extend(control(1, &body));
            }
            1 => {
                let len = usize::from(bytes.next().unwrap_or(0));
                let data: Vec<u8> = bytes.by_ref().take(len).collect();
                wire.extend_from_slice(&u32::from(arg & 0x0f).to_be_bytes());
                wire.push(0);
                wire.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                wire.extend(data);
            }
            2 => {
                let len = usize::from(bytes.next().unwrap_or(0));
                let body: Vec<u8> = bytes.by_ref().take(len).collect();
                wire.extend(control(u16::from(arg % 12), &body));
            }
            _ => wire.push(arg),
        }
    }
    wire
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let chunk = usize::from(control & 0x7f) + 1;
    let wire = if control & 0x80 != 0 { build(rest) } else { rest.to_vec() };
    // Frames are read only once whole, so chunks never change what is found.
    assert_eq!(decode(&wire, wire.len()), decode(&wire, chunk), "chunks of {chunk}");
});
