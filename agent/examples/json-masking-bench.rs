//! Streaming JSON masking throughput on one core (HTTP answers), without
//! root: a 1 MB customers list (every item with an e-mail address, one in
//! ten with a card number) fed in 16 KiB chunks, as hyper hands them over.
//! Measured: the scan alone (a path rule that never matches), a JSON path
//! rule, the default detectors, and both. `cargo xtask bench --masking`;
//! `json-masking-bench NAME…` runs only the cases named.

use std::{
    hint::black_box,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use airlock::{
    masking::{BodyKind, BodyMasker, Masker, TokenKey},
    policy::Policy,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHUNK: usize = 16 * 1024;
const MIN_TIME: Duration = Duration::from_secs(2);

fn masker(masking: &str) -> Arc<Masker> {
    let text = format!(
        "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.1\"]\n\
         [[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n[target.masking]\n{masking}"
    );
    let policy = Policy::from_sources([(Path::new("bench.toml"), text.as_str())]).expect("policy");
    Arc::new(Masker::new(
        policy.targets[0].masking.as_ref().expect("masking"),
        "u",
        &[],
        Arc::new(TokenKey::from_bytes(b"k")),
    ))
}

fn body() -> Vec<u8> {
    let items: Vec<_> = (0..2_600)
        .map(|i| {
            serde_json::json!({
                "id": i,
                "name": format!("Customer {i}"),
                "email": format!("customer{i}@example.com"),
                "card": if i % 10 == 0 { "4111 1111 1111 1111" } else { "none on file" },
                "api_token": format!("tok-{i:08}"),
                "address": { "street": format!("{i} Long Street"), "city": "Springfield", "zip": "12345" },
                "note": "a customer since 2019, prefers e-mail, ships to the address above",
                "created_at": "2024-03-01T12:00:00Z",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "kind": "CustomerList", "items": items })).expect("json")
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let body = body();
    println!("json masking bench: a {} kB body in {} kB chunks, one thread", body.len() / 1000, CHUNK / 1024);
    for (name, masking) in [
        ("scan only", "detectors = []\n[[target.masking.rules]]\njson_path = \"$.nothing\"\n"),
        ("json_path rule", "detectors = []\n[[target.masking.rules]]\njson_path = \"$.items[*].api_token\"\n"),
        ("default detectors", ""),
        ("detectors + rule", "[[target.masking.rules]]\njson_path = \"$.items[*].api_token\"\n"),
    ] {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let masker = masker(masking);
        let mut out = Vec::with_capacity(body.len() * 2);
        let (mut runs, started) = (0u32, Instant::now());
        while started.elapsed() < MIN_TIME {
            let mut stream = BodyMasker::new(Arc::clone(&masker), BodyKind::Json);
            for chunk in body.chunks(CHUNK) {
                out.clear();
                stream.feed(chunk, &mut out).expect("masks");
                black_box(&out);
            }
            stream.finish(&mut out).expect("finishes");
            runs += 1;
        }
        let per_body = started.elapsed() / runs;
        let rate = body.len() as f64 / per_body.as_secs_f64() / 1e6;
        println!("  {name:<18} {:>7.0} µs a body  {rate:>6.0} MB/s", per_body.as_secs_f64() * 1e6);
    }
}
