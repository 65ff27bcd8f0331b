//! Real Unix test users, created with useradd and removed with userdel.

use std::{process::Command, time::Duration};

use crate::PREFIX;

/// A Unix account made for one lab.
#[derive(Debug)]
pub struct TestUser {
    /// Full account name (lab tag + short name).
    pub name: String,
    /// Name the test used.
    pub short: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
}

impl TestUser {
    /// Creates `tag + short` with its own group and no home directory.
    pub fn create(tag: &str, short: &str) -> Self {
        let name = format!("{tag}{short}");
        // useradd takes a lock on /etc/passwd; retry briefly if another
        // process holds it.
        let mut last = String::new();
        for _ in 0..20 {
            let out = Command::new("useradd")
                .args(["-M", "-d", "/nonexistent", "-s", "/bin/sh", "-U", &name])
                .output()
                .expect("running useradd");
            if out.status.success() {
                let id = |flag: &str| -> u32 {
                    let out = Command::new("id").args([flag, &name]).output().expect("running id");
                    String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
                };
                return Self { uid: id("-u"), gid: id("-g"), name, short: short.to_owned() };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("useradd {name}: {last}");
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

fn delete(name: &str) {
    for _ in 0..20 {
        match Command::new("userdel").arg(name).status() {
            Ok(status) if status.success() => return,
            // 6: no such user.
            Ok(status) if status.code() == Some(6) => return,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Removes accounts earlier runs left behind.
pub fn sweep_stale() {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else { return };
    for name in passwd.lines().filter_map(|l| l.split(':').next()) {
        if name.starts_with(PREFIX)
            && name[PREFIX.len()..].starts_with(|c: char| c.is_ascii_digit())
            && !crate::owned_by_a_live_process(name)
        {
            delete(name);
        }
    }
}
