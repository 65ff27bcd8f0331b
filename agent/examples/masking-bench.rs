//! Masking throughput on one core, without root: `cargo xtask bench --masking`.
//! Rates are per CPU second of the measuring thread, so a busy machine
//! slows the run but skews the figures less.
//!
//! The corpus is DataRow bodies of a customers-like table (names, addresses,
//! amounts, timestamps, free-text notes) where about one row in twenty holds
//! an e-mail address and one in a hundred a card number, as production
//! results do. Measured, each on one thread:
//!
//! - frames: decoding each DataRow frame, what the proxy's relay does with
//!   every row anyway (the baseline masking adds to);
//! - detectors: every built-in detector on every column, then the default set;
//! - column rules: one whole-column rule, no detectors;
//! - frames + detectors: the relay's work with masking, and the share masking
//!   adds to it (an upper bound: sockets, TLS and the server are not counted);
//! - the end-to-end bench's own 1,000-row results (`--end-to-end` alone):
//!   CPU per result under two column rules and under the default detectors.

use std::{hint::black_box, path::Path, sync::Arc, time::Duration};

use airlock::{
    masking::{ColumnDesc, ColumnPlan, MaskOutcome, Masker, TokenKey},
    policy::Policy,
    proxy::postgres::codec::{Frame, decode_frame},
};
use bytes::{Bytes, BytesMut};

/// The agent's allocator, so the figures are the agent's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Detector throughput goal, MB/s per core.
const DETECTOR_GOAL_MB_S: f64 = 300.0;
/// Most masking may add to the relay's per-row work.
const OVERHEAD_GOAL: f64 = 0.10;
/// Corpus size.
const CORPUS_BYTES: usize = 32 << 20;
/// Each measurement runs at least this much CPU time.
const MIN_TIME: Duration = Duration::from_secs(2);

const FIRST: [&str; 12] =
    ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "Farid", "Grace", "Hiro", "Ines", "José", "Kai", "Lena"];
const LAST: [&str; 10] =
    ["Smith", "Okafor", "Müller", "Tanaka", "Rossi", "Nguyen", "García", "Kowalski", "Dubois", "Ali"];
const STREETS: [&str; 8] =
    ["Main Street", "Rue de la Paix", "Baker St", "Elm Avenue", "Hauptstraße", "Calle Mayor", "Oak Lane", "Via Roma"];
const CITIES: [&str; 6] = ["Springfield", "Paris", "London", "Berlin", "Madrid", "Osaka"];
const NOTES: [&str; 6] = [
    "Prefers delivery after 5pm; ring twice",
    "VIP customer since 2019, order volume 1200 units per quarter",
    "Returned item #48213 (damaged in transit), refund issued",
    "",
    "Called support about invoice INV-2024-00871",
    "Moved from the old warehouse account, see ticket 5512",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() % items.len()]
    }
}

/// Columns: id, name, email, street, city, zip, balance, created_at, note.
fn columns() -> Vec<ColumnDesc<'static>> {
    [
        ("id", "public.customers.id", 23),
        ("name", "public.customers.name", 25),
        ("email", "public.customers.email", 25),
        ("street", "public.customers.street", 1043),
        ("city", "public.customers.city", 1043),
        ("zip", "public.customers.zip", 1043),
        ("balance", "public.customers.balance", 1700),
        ("created_at", "public.customers.created_at", 1184),
        ("note", "public.customers.note", 25),
    ]
    .into_iter()
    .map(|(field_name, qualified, type_oid)| ColumnDesc { field_name, qualified: Some(qualified), type_oid, format: 0 })
    .collect()
}

/// A DataRow body of text values; an empty one is NULL.
fn data_row_body(values: &[String]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for value in values {
        if value.is_empty() {
            body.extend_from_slice(&(-1i32).to_be_bytes());
        } else {
            body.extend_from_slice(&(value.len() as i32).to_be_bytes());
            body.extend_from_slice(value.as_bytes());
        }
    }
    body
}

fn row(rng: &mut Rng, id: usize) -> Vec<u8> {
    let first = rng.pick(&FIRST);
    let last = rng.pick(&LAST);
    let email = if rng.next().is_multiple_of(20) {
        format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase())
    } else {
        String::new()
    };
    let note = if rng.next().is_multiple_of(100) {
        "paid with card 4111 1111 1111 1111 at the counter".to_owned()
    } else {
        rng.pick(&NOTES).to_owned()
    };
    let values = [
        id.to_string(),
        format!("{first} {last}"),
        email,
        format!("{} {}", rng.next() % 400 + 1, rng.pick(&STREETS)),
        rng.pick(&CITIES).to_owned(),
        format!("{:05}", rng.next() % 100_000),
        format!("{}.{:02}", rng.next() % 100_000, rng.next() % 100),
        format!(
            "2024-{:02}-{:02} 12:{:02}:{:02}.123456+00",
            rng.next() % 12 + 1,
            rng.next() % 28 + 1,
            rng.next() % 60,
            rng.next() % 60
        ),
        note,
    ];
    data_row_body(&values)
}

fn masker(masking_toml: &str) -> Masker {
    let text = format!(
        "[[target]]\nname = \"bench\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.1\"]\n\
         [target.credentials]\nadmin_file = \"/nonexistent/admin.toml\"\n\
         [[target.credentials.role]]\nname = \"r\"\nusers = [\"*\"]\n\
         [target.masking]\n{masking_toml}"
    );
    let policy = Policy::from_sources([(Path::new("bench.toml"), text.as_str())]).unwrap_or_else(|e| panic!("{e}"));
    let masking = policy.targets[0].masking.as_ref().expect("masking section");
    Masker::new(masking, "bench", &[], Arc::new(TokenKey::from_bytes(b"bench key")))
}

/// CPU time of this thread: the machine may be shared, and MB/s per core
/// is MB per CPU second.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `pass` over the corpus of `bytes` until MIN_TIME of CPU time has
/// passed; MB per CPU second.
fn measure(bytes: usize, pass: impl FnMut() -> usize) -> f64 {
    bytes as f64 / micros_per_pass(pass)
}

fn mask_all(masker: &Masker, plan: &mut ColumnPlan, rows: &[Vec<u8>]) -> usize {
    let mut out = Vec::new();
    let mut outcome = MaskOutcome::default();
    let mut masked = 0;
    for body in rows {
        out.clear();
        let changed = masker.mask_data_row_into(body, plan, &[], &mut out, &mut outcome).expect("well formed");
        masked += usize::from(changed);
    }
    masker.count_rule_hits(plan, &mut outcome);
    black_box(outcome);
    masked
}

/// The relay's per-row work: frame decoding, and for masked rows writing
/// the new frame (the rest goes as it came).
fn relay(wire: &Bytes, masking: Option<(&Masker, &mut ColumnPlan)>) -> usize {
    let mut input = BytesMut::from(&wire[..]);
    let mut output = Vec::with_capacity(wire.len());
    let mut outcome = MaskOutcome::default();
    let mut frames = 0;
    let mut masking = masking;
    while let Some(frame) = decode_frame(&mut input).expect("corpus frames are well formed") {
        frames += 1;
        if let Some((masker, plan)) = masking.as_mut() {
            rewrite_row(masker, plan, &frame, &mut output, &mut outcome);
        }
    }
    black_box((output.len(), outcome));
    frames
}

/// Writes the masked frame of `frame`'s row to `out` as the proxy does
/// (header, then the body written in place, then its length); whether
/// the row changed.
fn rewrite_row(
    masker: &Masker,
    plan: &mut ColumnPlan,
    frame: &Frame,
    out: &mut Vec<u8>,
    outcome: &mut MaskOutcome,
) -> bool {
    let header = [frame.tag, 0, 0, 0, 0];
    let body_start = out.len() + header.len();
    let changed = masker.mask_data_row_into(&frame.body, plan, &header, out, outcome).expect("well formed");
    if changed {
        let len = (out.len() - body_start + 4) as u32;
        out[body_start - 4..body_start].copy_from_slice(&len.to_be_bytes());
    }
    changed
}

/// A 1,000-row result of the end-to-end bench (`airlock-bench
/// postgres-large`), as the server sends it: the table its seed SQL makes.
struct EndToEndResult {
    table: &'static str,
    /// Field name, `public.table.field`, type OID.
    columns: Vec<(&'static str, String, u32)>,
    /// DataRow frames.
    wire: Bytes,
}

impl EndToEndResult {
    /// `columns` (name, type OID) of `public.table`, rows 1 to 1,000 from `row`.
    fn new(table: &'static str, columns: &[(&'static str, u32)], row: impl Fn(u64) -> Vec<String>) -> Self {
        let mut wire = BytesMut::new();
        for i in 1..=1000 {
            Frame { tag: b'D', body: Bytes::from(data_row_body(&row(i))) }.encode(&mut wire);
        }
        let columns = columns.iter().map(|&(field, oid)| (field, format!("public.{table}.{field}"), oid)).collect();
        Self { table, columns, wire: wire.freeze() }
    }

    /// The result's RowDescription, as the proxy resolves it.
    fn descriptions(&self) -> Vec<ColumnDesc<'_>> {
        self.columns
            .iter()
            .map(|(field_name, qualified, type_oid)| ColumnDesc {
                field_name,
                qualified: Some(qualified),
                type_oid: *type_oid,
                format: 0,
            })
            .collect()
    }

    /// `people`: id, name, email for a third, card for a third, an md5 note.
    fn people() -> Self {
        let columns = [("id", 23), ("name", 25), ("email", 25), ("card", 25), ("note", 25)];
        Self::new("people", &columns, |i| {
            let email = if i % 3 == 0 { format!("person{i}@example.com") } else { "no contact".to_owned() };
            let card = if i % 3 == 1 { "4111 1111 1111 1111" } else { "n/a" };
            let note = format!("{:032x}", u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
            vec![i.to_string(), format!("Person {i}"), email, card.to_owned(), note]
        })
    }

    /// `customers`: thirteen columns, an e-mail address and a card number in each row.
    fn customers() -> Self {
        let columns = [
            ("id", 23),
            ("first_name", 25),
            ("last_name", 25),
            ("email", 25),
            ("phone", 25),
            ("street", 25),
            ("city", 25),
            ("postcode", 25),
            ("country", 25),
            ("created_at", 1184),
            ("status", 25),
            ("notes", 25),
            ("card", 25),
        ];
        Self::new("customers", &columns, |i| {
            let day = 1 + i / 24;
            let (month, day) = if day <= 31 { (1, day) } else { (2, day - 31) };
            vec![
                i.to_string(),
                format!("First{i}"),
                format!("Last{i}"),
                format!("customer{i}@example.com"),
                format!("+1 555 01{:02}", i % 100),
                format!("{i} Main Street"),
                "Springfield".to_owned(),
                format!("{:05}", i * 7 % 99999),
                "US".to_owned(),
                format!("2026-{month:02}-{day:02} {:02}:00:00+00", i % 24),
                if i % 5 == 0 { "inactive" } else { "active" }.to_owned(),
                format!("Customer since {}, prefers e-mail, no open tickets", 2000 + i % 20),
                if i % 2 == 0 { "5500 0000 0000 0004" } else { "4111 1111 1111 1111" }.to_owned(),
            ]
        })
    }
}

/// CPU time per pass of `pass`, in µs, over at least MIN_TIME.
fn micros_per_pass(mut pass: impl FnMut() -> usize) -> f64 {
    let start = thread_cpu_time();
    let mut passes = 0u32;
    let mut sink = 0;
    while passes == 0 || thread_cpu_time() - start < MIN_TIME {
        sink += pass();
        passes += 1;
    }
    black_box(sink);
    (thread_cpu_time() - start).as_secs_f64() * 1e6 / f64::from(passes)
}

/// The end-to-end bench's results in process: what masking adds per
/// result, without the server, sockets and scheduler.
fn end_to_end() {
    let rules = masker(
        &["people", "customers"]
            .iter()
            .map(|table| {
                format!(
                    "[[target.masking.rules]]\ncolumn = \"public.{table}.email\"\nstrategy = \"token\"\n\
                     [[target.masking.rules]]\ncolumn = \"public.{table}.card\"\nstrategy = \"partial\"\nkeep = 4\n"
                )
            })
            .fold("detectors = []\n".to_owned(), |all, rules| all + &rules),
    );
    let defaults = masker("");
    for result in [EndToEndResult::people(), EndToEndResult::customers()] {
        let frames: Vec<Frame> = {
            let mut input = BytesMut::from(&result.wire[..]);
            std::iter::from_fn(|| decode_frame(&mut input).expect("well formed")).collect()
        };
        let mut out = Vec::with_capacity(result.wire.len() * 2);
        let mut pass = |masker: &Masker, plan: &mut ColumnPlan| {
            let mut outcome = MaskOutcome::default();
            out.clear();
            let changed =
                frames.iter().filter(|frame| rewrite_row(masker, plan, frame, &mut out, &mut outcome)).count();
            masker.count_rule_hits(plan, &mut outcome);
            black_box(&outcome);
            changed
        };
        let columns = result.descriptions();
        let (mut rules_plan, mut defaults_plan) = (rules.plan(&columns), defaults.plan(&columns));
        let by_rule = micros_per_pass(|| pass(&rules, &mut rules_plan));
        let by_detectors = micros_per_pass(|| pass(&defaults, &mut defaults_plan));
        println!(
            "the end-to-end bench's 1,000 rows of {} ({} KB), in process: two column rules {by_rule:.1} µs, the default detectors {by_detectors:.1} µs per result",
            result.table,
            result.wire.len() / 1000
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--end-to-end") {
        return end_to_end();
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rows = Vec::new();
    let mut bytes = 0;
    while bytes < CORPUS_BYTES {
        let row = row(&mut rng, rows.len() + 1);
        bytes += row.len();
        rows.push(row);
    }
    let mut wire = BytesMut::new();
    for body in &rows {
        Frame { tag: b'D', body: Bytes::copy_from_slice(body) }.encode(&mut wire);
    }
    let wire = wire.freeze();
    let columns = columns();
    println!(
        "masking bench: {} DataRow bodies, {:.1} MB ({} bytes a row on average), one thread",
        rows.len(),
        bytes as f64 / 1e6,
        bytes / rows.len()
    );

    let all = masker(
        "detectors = [\"card\", \"email\", \"ssn\", \"iban\", \"phone\", \"ipv4\", \"aws_key\", \"jwt\", \"private_key\", \"api_key\"]\n",
    );
    let mut all_plan = all.plan(&columns);
    // No `detectors` key: the default set (card, email, iban, aws_key, jwt, private_key, api_key).
    let defaults = masker("");
    let mut defaults_plan = defaults.plan(&columns);
    let rules =
        masker("detectors = []\n[[target.masking.rules]]\ncolumn = \"public.customers.email\"\nstrategy = \"token\"\n");
    let mut rules_plan = rules.plan(&columns);

    let masked_rows = mask_all(&all, &mut all_plan, &rows);
    let detectors = measure(bytes, || mask_all(&all, &mut all_plan, &rows));
    // The same rows with every column typed text (timestamps included):
    // nothing is skipped by type.
    let text_columns: Vec<ColumnDesc<'static>> = columns.iter().map(|c| ColumnDesc { type_oid: 25, ..*c }).collect();
    let mut all_text_plan = all.plan(&text_columns);
    let detectors_all_text = measure(bytes, || mask_all(&all, &mut all_text_plan, &rows));
    let default_detectors = measure(bytes, || mask_all(&defaults, &mut defaults_plan, &rows));
    let column_rules = measure(bytes, || mask_all(&rules, &mut rules_plan, &rows));
    let frames = measure(wire.len(), || relay(&wire, None));
    let frames_masked = measure(wire.len(), || relay(&wire, Some((&all, &mut all_plan))));
    let overhead = frames / frames_masked - 1.0;

    let names = ["card", "email", "ssn", "iban", "phone", "ipv4", "aws_key", "jwt", "private_key", "api_key"];
    let per_detector: Vec<(&str, f64)> = names
        .iter()
        .map(|name| {
            let one = masker(&format!("detectors = [\"{name}\"]\n"));
            let mut plan = one.plan(&columns);
            (*name, measure(bytes, || mask_all(&one, &mut plan, &rows)))
        })
        .collect();

    let verdict = |ok: bool| if ok { "met" } else { "NOT MET" };
    println!("rows masked by detectors: {masked_rows} of {}", rows.len());
    println!(
        "detectors (all 10):          {detectors:8.0} MB/s per core  (goal >= {DETECTOR_GOAL_MB_S:.0}: {})",
        verdict(detectors >= DETECTOR_GOAL_MB_S)
    );
    println!(
        "detectors (all 10), every column typed text: {detectors_all_text:5.0} MB/s per core  (goal >= {DETECTOR_GOAL_MB_S:.0}: {})",
        verdict(detectors_all_text >= DETECTOR_GOAL_MB_S)
    );
    println!(
        "detectors (default 7):       {default_detectors:8.0} MB/s per core  (goal >= {DETECTOR_GOAL_MB_S:.0}: {})",
        verdict(default_detectors >= DETECTOR_GOAL_MB_S)
    );
    for (name, rate) in &per_detector {
        println!("  {name:<12} alone:           {rate:8.0} MB/s per core");
    }
    println!("column rule only:            {column_rules:8.0} MB/s per core");
    println!("relay frames, no masking:    {frames:8.0} MB/s per core");
    println!("relay frames with detectors: {frames_masked:8.0} MB/s per core");
    println!(
        "in memory, masking adds {:.0}% to the relay's per-row frame work; the goal (<= {:.0}% on a large result \
         transfer) is end to end, where the server, sockets and TLS dominate: measure it through the proxy",
        overhead * 100.0,
        OVERHEAD_GOAL * 100.0,
    );
    end_to_end();
}
