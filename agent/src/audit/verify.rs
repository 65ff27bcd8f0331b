//! `airlock audit verify`: proves the log is as the agent wrote it, or
//! names exactly where it is not.
//!
//! Every record's hash must match its content, chain to the record before
//! it and carry the next sequence number; each closed segment must end
//! with its closing checkpoint and the next must continue its chain;
//! checkpoints must carry a valid signature of the host key. Gaps are
//! legitimate only where the log itself recorded a retention removal.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufRead as _, BufReader},
    path::Path,
};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{GENESIS, hashed_part, segments, signing};

/// One thing wrong with the log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// File name within the audit directory.
    pub file: String,
    /// Line, from 1 (0: the file as a whole).
    pub line: usize,
    /// Seq of the record, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong, and what it means.
    pub what: String,
}

/// What verification found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Segment files read.
    pub segments: usize,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Seq of the last record a verified checkpoint covers.
    pub signed_through: Option<u64>,
    /// Seq of the last record.
    pub last_seq: u64,
    /// Tampering found; empty when the log verifies.
    pub problems: Vec<Problem>,
    /// Facts that are not tampering (retention gaps, a torn last write).
    pub notes: Vec<String>,
}

/// The fields verification reads; the rest of the record is skipped
/// without being built.
#[derive(Deserialize)]
struct Head<'a> {
    seq: u64,
    #[serde(borrow)]
    kind: &'a str,
    #[serde(borrow)]
    prev: &'a str,
    /// The hashed part of the line and the hash it states.
    #[serde(skip)]
    hashed: Option<(&'a str, &'a str)>,
}

impl<'a> Head<'a> {
    /// Reads the fields where the agent writes them (`seq` first, `kind`
    /// third, `prev` last before `hash`) without parsing the record, else
    /// parses it. Taking them by position weakens nothing: every byte is
    /// still covered by the record's hash and the chain.
    fn read(line: &'a str) -> Option<Self> {
        let hashed = hashed_part(line);
        Self::by_position(line, hashed).or_else(|| serde_json::from_str(line).ok()).map(|head| Self { hashed, ..head })
    }

    fn by_position(line: &'a str, hashed: Option<(&'a str, &'a str)>) -> Option<Self> {
        let rest = line.strip_prefix("{\"seq\":")?;
        let digits = rest.find(',')?;
        let seq = rest[..digits].parse().ok()?;
        let kind_at = memchr::memmem::find(rest.as_bytes(), b",\"kind\":\"")? + 9;
        let kind_len = rest[kind_at..].find('"')?;
        let kind = &rest[kind_at..kind_at + kind_len];
        let (body, _) = hashed?;
        let prev = body.strip_suffix('"')?.get(body.len() - 1 - 64 - 9..)?.strip_prefix(",\"prev\":\"")?;
        (!kind.contains('\\') && prev.len() == 64).then_some(Self { seq, kind, prev, hashed })
    }
}

/// Whether `digest` is what `stated` (lowercase hex) says, without building a string.
fn digest_is(digest: &[u8], stated: &str) -> bool {
    stated.len() == digest.len() * 2
        && digest.iter().zip(stated.as_bytes().chunks_exact(2)).all(|(&byte, pair)| pair == crate::hex::pair(byte))
}

/// Verifies the log in `dir`; checkpoints against `public_key` (hex) when given.
pub fn verify(dir: &Path, public_key: Option<&str>) -> io::Result<Report> {
    let segments = segments::all(dir)?;
    let removed = removals(&segments)?;
    let mut report = Report { segments: segments.len(), ..Report::default() };
    let mut last: Option<(u64, [u8; 64])> = None;
    let mut closed_by_checkpoint = true;
    let mut signing_seen = false;
    for (index, segment) in segments.iter().enumerate() {
        let file = segment.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let active = segment.first_seq.is_none();
        if index > 0 && signing_seen && !closed_by_checkpoint {
            report.problems.push(Problem {
                file: file.clone(),
                line: 0,
                seq: None,
                what: "the segment before this one does not end with its closing checkpoint: it was truncated".into(),
            });
        }
        closed_by_checkpoint = false;
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&segment.path)?);
        let mut raw = Vec::new();
        let mut line_no = 0;
        loop {
            raw.clear();
            if reader.read_until(b'\n', &mut raw)? == 0 {
                break;
            }
            line_no += 1;
            let problem = |what: String, seq: Option<u64>| Problem { file: file.clone(), line: line_no, seq, what };
            if raw.last() != Some(&b'\n') {
                if active {
                    report.notes.push(format!("{file}:{line_no}: the last record is incomplete (the agent stopped mid-write); everything before it verifies"));
                } else {
                    report.problems.push(problem("the segment ends inside a record: it was truncated".into(), None));
                }
                break;
            }
            let Some(line) = std::str::from_utf8(&raw[..raw.len() - 1]).ok() else {
                report.problems.push(problem("not valid UTF-8: edited or corrupted".into(), None));
                continue;
            };
            let Some(head) = Head::read(line) else {
                report.problems.push(problem("not a valid record: edited or corrupted".into(), None));
                continue;
            };
            let seq = head.seq;
            let Some((body, stated)) = head.hashed else {
                report.problems.push(problem("the record has no hash: edited".into(), Some(seq)));
                continue;
            };
            if !digest_is(&Sha256::new().chain_update(body.as_bytes()).chain_update(b"}").finalize(), stated) {
                report
                    .problems
                    .push(problem("the content does not match its hash: the record was edited".into(), Some(seq)));
            }
            if line_no == 1 && segment.first_seq.is_some_and(|first| first != seq) {
                report.problems.push(problem(
                    format!(
                        "the file is named for seq {} but starts at seq {seq}: renamed or reordered",
                        segment.first_seq.unwrap_or(0)
                    ),
                    Some(seq),
                ));
            }
            match &last {
                None if seq == 1 && head.prev == GENESIS => {}
                None => match removed.get(&(seq - 1)) {
                    Some(hash) if hash == head.prev => {
                        report
                            .notes
                            .push(format!("records before seq {seq} were removed by retention, as the log records"));
                    }
                    _ => report.problems.push(problem(
                        format!("records before seq {seq} are missing and no removal is recorded: deleted"),
                        Some(seq),
                    )),
                },
                Some((last_seq, last_hash)) => {
                    if seq == last_seq + 1 {
                        if head.prev.as_bytes() != last_hash {
                            report.problems.push(problem(
                                "does not chain to the record before it: a record was inserted, replaced or reordered"
                                    .into(),
                                Some(seq),
                            ));
                        }
                    } else if seq > last_seq + 1 {
                        let legit = removed.get(&(seq - 1)).is_some_and(|hash| hash == head.prev);
                        if !legit {
                            report.problems.push(problem(
                                format!(
                                    "seq jumps from {last_seq} to {seq}: records {}..{} were deleted",
                                    last_seq + 1,
                                    seq - 1
                                ),
                                Some(seq),
                            ));
                        }
                    } else {
                        report.problems.push(problem(
                            format!("seq goes back from {last_seq} to {seq}: records were reordered or inserted"),
                            Some(seq),
                        ));
                    }
                }
            }
            if head.kind == "audit.checkpoint" {
                signing_seen = true;
                let detail = serde_json::from_str::<serde_json::Value>(line)
                    .map(|record| record["detail"].clone())
                    .unwrap_or_default();
                let signed_seq = detail["signed_seq"].as_u64().unwrap_or(0);
                let signed_hash = detail["signed_hash"].as_str().unwrap_or("");
                let signature = detail["signature"].as_str().unwrap_or("");
                closed_by_checkpoint = detail["closes_segment"].as_bool().unwrap_or(false);
                if signed_seq + 1 != seq || signed_hash != head.prev {
                    report
                        .problems
                        .push(problem("the checkpoint does not sign the record before it: moved".into(), Some(seq)));
                } else if let Some(key) = public_key {
                    if signing::verify(key, signed_seq, signed_hash, signature) {
                        report.checkpoints += 1;
                        report.signed_through = Some(signed_seq);
                    } else {
                        report.problems.push(problem(
                            "the checkpoint's signature does not verify: forged, or signed by another key".into(),
                            Some(seq),
                        ));
                    }
                }
            } else {
                closed_by_checkpoint = false;
            }
            report.records += 1;
            report.last_seq = seq;
            last = Some((seq, stated.as_bytes().try_into().unwrap_or([0; 64])));
        }
    }
    if public_key.is_none() {
        report.notes.push("checkpoint signatures were not checked: no public key (give --pubkey)".into());
    }
    Ok(report)
}

/// `last_seq → last_hash` of every segment the log says retention removed.
fn removals(segments: &[segments::Segment]) -> io::Result<HashMap<u64, String>> {
    let finder = memchr::memmem::Finder::new(b"\"kind\":\"audit.segment_removed\"");
    let mut removed = HashMap::new();
    for segment in segments {
        let text = std::fs::read(&segment.path)?;
        for at in finder.find_iter(&text) {
            let start = memchr::memrchr(b'\n', &text[..at]).map_or(0, |newline| newline + 1);
            let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |newline| at + newline);
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(&text[start..end]) else { continue };
            if let (Some(seq), Some(hash)) =
                (record["detail"]["last_seq"].as_u64(), record["detail"]["last_hash"].as_str())
            {
                removed.insert(seq, hash.to_owned());
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf, time::Duration};

    use super::*;
    use crate::audit::{AuditLog, AuditSettings, Event, LOG_FILE, query, signing::Signer};

    /// A log of `count` records in segments of about 2 KiB, signed.
    fn log(dir: &Path, count: usize, retain_bytes: Option<u64>) -> String {
        let signer = Signer::load_or_create(&dir.join("key")).unwrap();
        let public = signer.public_key_hex();
        let settings = AuditSettings {
            segment_max_bytes: 2048,
            checkpoint_records: 5,
            retain_bytes,
            signer: Some(signer),
            ..AuditSettings::default()
        };
        let log = AuditLog::open_with(&dir.join("audit"), settings).unwrap();
        for i in 0..count {
            log.append(Event {
                kind: if i % 2 == 0 { "postgres.statement" } else { "connection.open" },
                session: Some(&format!("s{}", i % 3)),
                identity: None,
                process: None,
                target: None,
                detail: serde_json::json!({ "sql": format!("select {i}") }),
            })
            .unwrap();
        }
        public
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        segments::all(dir).unwrap().into_iter().map(|s| s.path).collect()
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    fn problems(dir: &Path, key: &str) -> Vec<String> {
        verify(dir, Some(key))
            .unwrap()
            .problems
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.file, p.line, p.what))
            .collect()
    }

    #[test]
    fn a_clean_stop_signs_the_last_records() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(&tmp.path().join("key")).unwrap();
        let key = signer.public_key_hex();
        let settings = AuditSettings { checkpoint_records: 5, signer: Some(signer), ..AuditSettings::default() };
        let dir = tmp.path().join("audit");
        let log = AuditLog::open_with(&dir, settings).unwrap();
        for i in 0..7 {
            let detail = serde_json::json!({ "sql": format!("select {i}") });
            let event = Event {
                kind: "postgres.statement",
                session: None,
                identity: None,
                process: None,
                target: None,
                detail,
            };
            log.append(event).unwrap();
        }
        let before = verify(&dir, Some(&key)).unwrap();
        assert!(before.signed_through < Some(before.last_seq), "{before:?}");
        log.checkpoint_now().unwrap();
        let after = verify(&dir, Some(&key)).unwrap();
        assert!(after.problems.is_empty(), "{after:?}");
        assert_eq!(after.signed_through, Some(after.last_seq - 1), "all but the checkpoint itself: {after:?}");
        // Nothing new: no second checkpoint.
        log.checkpoint_now().unwrap();
        assert_eq!(verify(&dir, Some(&key)).unwrap().checkpoints, after.checkpoints);
    }

    #[test]
    fn fields_read_by_position_are_those_a_parser_reads() {
        let dir = tempfile::tempdir().unwrap();
        log(dir.path(), 12, None);
        let audit = dir.path().join("audit");
        let mut checked = 0;
        for path in segment_files(&audit) {
            for line in lines(&path) {
                let fast = Head::by_position(&line, hashed_part(&line)).expect("the agent's layout");
                let parsed: Head<'_> = serde_json::from_str(&line).unwrap();
                assert_eq!((fast.seq, fast.kind, fast.prev), (parsed.seq, parsed.kind, parsed.prev));
                checked += 1;
            }
        }
        assert!(checked >= 12);
        assert!(Head::by_position("{\"seq\":1}", None).is_none());
        assert!(!digest_is(&[0xab], "AB") && digest_is(&[0xab], "ab"));
    }

    #[test]
    fn an_untouched_log_verifies_across_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let key = log(tmp.path(), 60, None);
        let dir = tmp.path().join("audit");
        assert!(segment_files(&dir).len() > 3, "rotation made segments");
        assert!(segments::sealed(&dir).unwrap().iter().all(|s| segments::index_path(&s.path).exists()));
        let report = verify(&dir, Some(&key)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.checkpoints >= 10 && report.signed_through.is_some(), "{report:?}");
        assert_eq!(report.records, report.last_seq);
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        type Tamper = fn(&Path);
        let cases: [(&str, Tamper, &str); 6] = [
            (
                "edit",
                |dir| {
                    let path = &segment_files(dir)[1];
                    let mut l = lines(path);
                    l[2] = l[2].replace("select", "SELECT");
                    write_lines(path, &l);
                },
                "the content does not match its hash: the record was edited",
            ),
            (
                "delete",
                |dir| {
                    let path = &segment_files(dir)[1];
                    let mut l = lines(path);
                    l.remove(2);
                    write_lines(path, &l);
                },
                "were deleted",
            ),
            (
                "insert",
                |dir| {
                    let path = &segment_files(dir)[1];
                    let mut l = lines(path);
                    let copy = l[1].clone();
                    l.insert(3, copy);
                    write_lines(path, &l);
                },
                "reordered or inserted",
            ),
            (
                "reorder",
                |dir| {
                    let path = &segment_files(dir)[1];
                    let mut l = lines(path);
                    l.swap(1, 2);
                    write_lines(path, &l);
                },
                "reordered or inserted",
            ),
            (
                "truncate a closed segment",
                |dir| {
                    let path = &segment_files(dir)[1];
                    let mut l = lines(path);
                    l.truncate(l.len() - 2);
                    write_lines(path, &l);
                },
                "does not end with its closing checkpoint",
            ),
            ("delete a segment", |dir| fs::remove_file(&segment_files(dir)[1]).unwrap(), "were deleted"),
        ];
        for (name, tamper, expected) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let key = log(tmp.path(), 60, None);
            let dir = tmp.path().join("audit");
            tamper(&dir);
            let found = problems(&dir, &key);
            assert!(found.iter().any(|p| p.contains(expected)), "{name}: {found:#?}");
            assert!(found.iter().all(|p| !p.starts_with(LOG_FILE) || name == "edit"), "{name} is located: {found:#?}");
        }
    }

    #[test]
    fn many_writers_at_once_keep_one_unbroken_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(&tmp.path().join("key")).unwrap();
        let key = signer.public_key_hex();
        let settings = AuditSettings {
            segment_max_bytes: 16 << 10,
            checkpoint_records: 7,
            signer: Some(signer),
            ..AuditSettings::default()
        };
        let log = AuditLog::open_with(&tmp.path().join("audit"), settings).unwrap();
        std::thread::scope(|scope| {
            for writer in 0..8 {
                let log = &log;
                scope.spawn(move || {
                    for i in 0..250 {
                        let session = format!("w{writer}");
                        let event = |n: u32| Event {
                            kind: "postgres.statement",
                            session: Some(&session),
                            identity: None,
                            process: None,
                            target: None,
                            detail: serde_json::json!({ "n": n }),
                        };
                        if i % 2 == 0 { log.append(event(i)) } else { log.append_batch([event(i), event(i + 1000)]) }
                            .unwrap();
                    }
                });
            }
        });
        let report = verify(&tmp.path().join("audit"), Some(&key)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.records >= 8 * 375 && report.segments > 1, "{report:?}");
    }

    #[test]
    fn forged_checkpoints_and_foreign_keys_fail() {
        let tmp = tempfile::tempdir().unwrap();
        log(tmp.path(), 30, None);
        let dir = tmp.path().join("audit");
        let other = Signer::load_or_create(&tmp.path().join("other")).unwrap();
        let found = problems(&dir, &other.public_key_hex());
        assert!(found.iter().any(|p| p.contains("signature does not verify")), "{found:#?}");
    }

    #[test]
    fn a_torn_last_write_is_a_note_not_tampering_and_retention_gaps_are_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let key = log(tmp.path(), 40, Some(4096));
        let dir = tmp.path().join("audit");
        let report = verify(&dir, Some(&key)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.notes.iter().any(|n| n.contains("removed by retention")), "{:?}", report.notes);
        let active = dir.join(LOG_FILE);
        let mut text = fs::read_to_string(&active).unwrap();
        text.push_str("{\"seq\":999,\"ts\":\"2026");
        fs::write(&active, text).unwrap();
        let report = verify(&dir, Some(&key)).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.notes.iter().any(|n| n.contains("incomplete")), "{:?}", report.notes);
    }

    #[test]
    fn queries_filter_and_skip_segments_by_their_index() {
        let tmp = tempfile::tempdir().unwrap();
        log(tmp.path(), 60, None);
        let dir = tmp.path().join("audit");
        let mut seen = Vec::new();
        let filter = query::Filter { session: Some("s1".into()), kind: Some("postgres.".into()), ..Default::default() };
        let stats = query::query(&dir, &filter, |r| {
            seen.push(r["seq"].as_u64().unwrap());
            true
        })
        .unwrap();
        assert!(!seen.is_empty() && stats.matched == seen.len() as u64);
        let text = query::Filter { text: Some("select 59".into()), ..Default::default() };
        let mut found = 0;
        query::query(&dir, &text, |_| {
            found += 1;
            true
        })
        .unwrap();
        assert_eq!(found, 1);
        let nobody = query::Filter { user: Some("nobody".into()), ..Default::default() };
        let stats = query::query(&dir, &nobody, |_| true).unwrap();
        assert_eq!((stats.matched, stats.segments_read), (0, 1), "only the active segment lacks an index");
        let future = query::Filter {
            since: Some(std::time::SystemTime::now() + Duration::from_secs(3600)),
            ..Default::default()
        };
        assert_eq!(query::query(&dir, &future, |_| true).unwrap().matched, 0);
    }
}
