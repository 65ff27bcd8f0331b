//! `cargo xtask demo` keeps working: its suggested psql command succeeds
//! through Airlock attached host-wide, and everything is removed after.

use std::process::Command;

use airlock_vm_tests::privileged;

#[test]
fn the_demo_command_works_and_the_demo_cleans_up() {
    if !privileged() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_airlock-demo")).arg("--smoke").output().expect("run airlock-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("demo smoke test passed"));
    assert!(stdout.contains("(3 rows)") && !stdout.contains("@example.com"), "rows arrive, masked: {stdout}");
    let attached = Command::new("bpftool")
        .args(["-j", "cgroup", "show", &airlock_vm_tests::cgroup2_root().display().to_string()])
        .output()
        .unwrap();
    let programs: Vec<serde_json::Value> = serde_json::from_slice(&attached.stdout).unwrap_or_default();
    assert!(programs.is_empty(), "the demo left programs attached at the cgroup2 root: {programs:?}");
}
