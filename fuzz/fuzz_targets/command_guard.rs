//! Shell text through the command guard: nothing panics or hangs, whatever
//! the text (the parser runs on its own thread with a deadline), and a
//! command line passed to `sh -c '…'` or after `true;` is judged by the
//! same programs with the same options as the line itself: wrapping never
//! hides a program.
#![no_main]

use airlock::command_guard::{Analysis, CommandGuard, Source, analyse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let guard = CommandGuard::default();
    for source in [Source::Exec, Source::Script, Source::Typed] {
        let _ = guard.judge(line, source);
    }
    let Ok(direct) = analyse(line, true) else { return };
    let programs = |analysis: &Analysis| {
        let mut seen: Vec<(String, Vec<String>)> = analysis
            .invocations
            .iter()
            .map(|i| (i.program.clone(), i.options.iter().cloned().collect()))
            .collect();
        seen.sort();
        seen
    };
    let wanted = programs(&direct);
    let sequenced = format!("true; {line}");
    // `sh -c -x` reads `-x` as an option: only other lines are the same under sh -c.
    let quoted = (!line.starts_with(['-', '+'])).then(|| format!("sh -c '{}'", line.replace('\'', r"'\''")));
    for wrapped in quoted.into_iter().chain([sequenced]) {
        // Deeper nesting may be past what the guard reads: refused, not missed.
        let Ok(analysis) = analyse(&wrapped, true) else { continue };
        let found = programs(&analysis);
        for program in &wanted {
            assert!(found.contains(program), "{wrapped:?} hides {program:?}: {found:?} (direct: {wanted:?})");
        }
        assert!(analysis.findings.len() >= direct.findings.len(), "{wrapped:?} hides findings");
    }
});
