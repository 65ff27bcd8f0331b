//! The tree `airlock-bench scan` measures on: source-like text, logs and
//! JSON of a given size, with secrets of every kind Airlock looks for
//! planted at known lines, and lookalikes that are not secrets (AWS's
//! documented example key, placeholders, variable references, public
//! keys, commit ids, UUIDs, checksums). Reproducible: a fixed seed.

use std::{
    collections::HashSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

/// Planted secrets of each kind.
pub const PER_KIND: usize = 20;
/// Lookalikes of each kind.
pub const LOOKALIKES_PER_KIND: usize = 50;

/// What was written.
pub struct Tree {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// (path relative to the root, 1-based line) of each planted secret, with its kind.
    pub planted: Vec<(String, usize, &'static str)>,
    /// (path, line) of each lookalike.
    pub lookalikes: HashSet<(String, usize)>,
}

/// xorshift64*: fast, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn from(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(alphabet[self.below(alphabet.len())])).collect()
    }

    fn alnum(&mut self, len: usize) -> String {
        self.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", len)
    }

    fn hex(&mut self, len: usize) -> String {
        self.from(b"0123456789abcdef", len)
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

const WORDS: [&str; 24] = [
    "order", "customer", "invoice", "total", "amount", "status", "handler", "request", "response", "config", "value",
    "index", "buffer", "result", "items", "account", "session", "limit", "offset", "record", "user", "name", "count",
    "service",
];

fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// One line of background text for a file of `kind`.
fn noise_line(rng: &mut Rng, kind: usize, out: &mut String) {
    match kind {
        // Source code.
        0 => {
            let (a, b) = (rng.pick(&WORDS), rng.pick(&WORDS));
            match rng.below(5) {
                0 => writeln!(out, "    let {a}_{b} = compute_{a}(&{b}, {});", rng.below(10_000)),
                1 => writeln!(out, "    if {a}.len() > {} {{ return Err(Error::{b}); }}", rng.below(512)),
                2 => writeln!(out, "// {a} the {b} before the next {} is read", rng.pick(&WORDS)),
                3 => writeln!(out, "fn {a}_{b}(input: &str) -> Result<{}, Error> {{", rng.pick(&WORDS)),
                _ => writeln!(out, "    log::debug!(\"{a} {b}: {{}}\", self.{});", rng.pick(&WORDS)),
            }
        }
        // Logs.
        1 => writeln!(
            out,
            "2026-05-{:02}T{:02}:{:02}:{:02}Z INFO {} {}={} from 10.{}.{}.{} took {}ms",
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.pick(&WORDS),
            rng.pick(&WORDS),
            rng.below(100_000),
            rng.below(256),
            rng.below(256),
            rng.below(256),
            rng.below(2000)
        ),
        // JSON.
        _ => writeln!(
            out,
            "  {{\"{}\": {}, \"{}\": \"{} {}\", \"enabled\": {}}},",
            rng.pick(&WORDS),
            rng.below(1_000_000),
            rng.pick(&WORDS),
            rng.pick(&WORDS),
            rng.pick(&WORDS),
            rng.below(2) == 0
        ),
    }
    .expect("write to a String");
}

/// A lookalike line of kind `which`.
fn lookalike(rng: &mut Rng, which: usize) -> String {
    match which {
        0 => "aws_access_key_id = AKIAIOSFODNN7EXAMPLE".into(),
        1 => "password = \"${DB_PASSWORD}\"".into(),
        2 => "api_token: <your-token-here>".into(),
        3 => format!("prefix = \"ghp_{}\"", rng.alnum(8)),
        4 => format!("commit {}", rng.hex(40)),
        5 => format!("request_id={}-{}-4{}-a{}-{}", rng.hex(8), rng.hex(4), rng.hex(3), rng.hex(3), rng.hex(12)),
        6 => "export PGPASSWORD=$(cat ~/.config/db-password)".into(),
        _ => "-----BEGIN PUBLIC KEY-----".into(),
    }
}

/// Kinds of lookalikes.
const LOOKALIKE_KINDS: usize = 8;

/// Writes about `target_bytes` of files under `root`.
pub fn generate(root: &Path, target_bytes: u64) -> Tree {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tree = Tree { files: 0, bytes: 0, planted: Vec::new(), lookalikes: HashSet::new() };
    let write = |tree: &mut Tree, relative: &str, text: &str| {
        let path: PathBuf = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        tree.files += 1;
        tree.bytes += text.len() as u64;
    };

    // Files named as Airlock's detectors expect, one secret each, in home-like directories.
    for i in 0..PER_KIND {
        let home = format!("home/user{i}");
        let mut text = format!("# {i}\nlocalhost:5432:*:app:{}\n", rng.alnum(18));
        write(&mut tree, &format!("{home}/.pgpass"), &text);
        tree.planted.push((format!("{home}/.pgpass"), 2, "pgpass"));
        text = format!("alias ll='ls -l'\nexport EDITOR=vim\nexport PGPASSWORD={}\n", rng.alnum(16));
        write(&mut tree, &format!("{home}/.bashrc"), &text);
        tree.planted.push((format!("{home}/.bashrc"), 3, "pgpassword-rc"));
        text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.0.{i}.1:6443\n  name: c\nusers:\n- name: u\n  user:\n    token: {}\n",
            rng.alnum(40)
        );
        write(&mut tree, &format!("{home}/.kube/config"), &text);
        tree.planted.push((format!("{home}/.kube/config"), 10, "kubeconfig"));
        text = format!("APP_ENV=production\nDB_HOST=db\nDB_PASSWORD={}\n", rng.alnum(20));
        write(&mut tree, &format!("{home}/app/.env"), &text);
        tree.planted.push((format!("{home}/app/.env"), 3, "env"));
        text = format!("cd app\ngit pull\nmysql -u root -p{} orders\nexit\n", rng.alnum(14));
        write(&mut tree, &format!("{home}/.bash_history"), &text);
        tree.planted.push((format!("{home}/.bash_history"), 3, "history"));
        let mut key = b"openssh-key-v1\0".to_vec();
        for field in ["none", "none"] {
            key.extend_from_slice(&(field.len() as u32).to_be_bytes());
            key.extend_from_slice(field.as_bytes());
        }
        key.extend((0..300).map(|_| rng.next() as u8));
        let body = base64(&key, false);
        let wrapped: Vec<&str> = body.as_bytes().chunks(70).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
        text =
            format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n", wrapped.join("\n"));
        write(&mut tree, &format!("{home}/.ssh/id_ed25519"), &text);
        tree.planted.push((format!("{home}/.ssh/id_ed25519"), 1, "private-key"));
    }

    // Token-shaped secrets inside ordinary files, and lookalikes, at known lines.
    let token = |rng: &mut Rng, kind: usize| -> (String, &'static str) {
        match kind {
            0 => (format!("aws_access_key_id = AKIA{}", rng.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)), "aws"),
            1 => (format!("GITHUB_TOKEN=ghp_{}", rng.alnum(36)), "github-pat"),
            2 => (
                format!(
                    "slack_token = \"xoxb-{}-{}-{}\"",
                    rng.from(b"0123456789", 12),
                    rng.from(b"0123456789", 12),
                    rng.alnum(24)
                ),
                "slack",
            ),
            3 => (format!("stripe_key = \"sk_live_{}\"", rng.alnum(32)), "stripe"),
            4 => {
                let header = base64(b"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", true);
                let payload = base64(
                    format!("{{\"sub\":\"{}\",\"iat\":{}}}", rng.alnum(12), 1_700_000_000 + rng.below(1_000_000))
                        .as_bytes(),
                    true,
                );
                let signature: Vec<u8> = (0..32).map(|_| rng.next() as u8).collect();
                (format!("Authorization: Bearer {header}.{payload}.{}", base64(&signature, true)), "jwt")
            }
            _ => (format!("api_key = \"{}\"", rng.hex(32)), "generic-api-key"),
        }
    };
    const TOKEN_KINDS: usize = 6;
    let mut token_slots: Vec<usize> = (0..TOKEN_KINDS).flat_map(|k| std::iter::repeat_n(k, PER_KIND)).collect();
    let mut lookalike_slots: Vec<usize> =
        (0..LOOKALIKE_KINDS).flat_map(|k| std::iter::repeat_n(k, LOOKALIKES_PER_KIND)).collect();
    let extensions = ["rs", "log", "json"];
    let mut file = 0usize;
    let mut text = String::new();
    while tree.bytes < target_bytes || !token_slots.is_empty() || !lookalike_slots.is_empty() {
        let kind = rng.below(3);
        let relative = format!("src/d{}/m{}/f{file}.{}", file % 40, file % 7, extensions[kind]);
        let lines = 20 + rng.below(1500);
        text.clear();
        for line in 1..=lines {
            if line == lines / 2 && !token_slots.is_empty() && rng.below(3) == 0 {
                let (planted, name) = token(&mut rng, token_slots.pop().expect("not empty"));
                text.push_str(&planted);
                text.push('\n');
                tree.planted.push((relative.clone(), line, name));
            } else if line == lines / 3 && !lookalike_slots.is_empty() && rng.below(2) == 0 {
                text.push_str(&lookalike(&mut rng, lookalike_slots.pop().expect("not empty")));
                text.push('\n');
                tree.lookalikes.insert((relative.clone(), line));
            } else {
                noise_line(&mut rng, kind, &mut text);
            }
        }
        write(&mut tree, &relative, &text);
        file += 1;
    }
    tree
}
