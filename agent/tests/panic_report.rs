//! The panic report the agent installs, seen from outside: a child
//! process (this test binary again) installs it and panics holding a
//! secret; its stderr must say where, and not the secret.

use std::process::Command;

const CHILD: &str = "AIRLOCK_PANIC_REPORT_CHILD";
const SECRET: &str = "pw-9f3a-never-printed";

#[test]
fn a_panic_is_reported_by_place_without_the_data_it_held() {
    if std::env::var_os(CHILD).is_some() {
        airlock::panics::install();
        let text = format!("a\u{85}{SECRET}");
        // Sliced inside U+0085: the default report would quote `text`.
        let index = std::hint::black_box(2);
        let _ = &text[index..];
        unreachable!("the slice panics");
    }
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "a_panic_is_reported_by_place_without_the_data_it_held", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("runs the child");
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(!child.status.success(), "the child panicked");
    assert!(stderr.contains("airlock: internal error in thread"), "{stderr}");
    assert!(stderr.contains("panic_report.rs:"), "the place is given: {stderr}");
    assert!(stderr.contains(airlock::panics::WITHHELD), "{stderr}");
    assert!(stderr.contains("stack backtrace") || stderr.contains("panic_report::"), "a backtrace: {stderr}");
    assert!(!stderr.contains(SECRET), "the secret was printed: {stderr}");
    assert!(!String::from_utf8_lossy(&child.stdout).contains(SECRET));
}
