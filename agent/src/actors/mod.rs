//! Which actor, if any, made a connection: what the process tree behind it
//! shows, matched against the policy's `[[actor]]` definitions
//! ([`crate::policy::actors`]), or the cgroup `airlock run --actor` put the
//! command in ([`launch`]).
//!
//! The process tree is read from procfs when the connection is accepted:
//! the connecting process and up to [`crate::process`]'s bound of
//! ancestors, each checked against pid reuse (an ancestor that started
//! after its child is not its ancestor). An interpreter's script or module
//! and an environment marker are read only for what the policy asks and
//! cached per process (pid and start time), so a shell that opens many
//! connections is read once.
//!
//! Fail closed: when the policy defines actors and the connecting process's
//! facts are gone, the connection is made by the actor `unknown`, which no
//! rule grants unless it names it (or `*`).

pub mod confine;
pub mod launch;
pub mod taints;

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::{
    glob,
    policy::actors::ActorDefinition,
    process::{ProcessInfo, ProcessKey},
};

/// The actor of connections whose process facts could not be read.
pub const UNKNOWN: &str = "unknown";
/// Per-process facts cached at most (shells, agents, their interpreters).
const CACHE_ENTRIES: usize = 4096;

/// The actor a connection was made by, as records carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The `[[actor]]` name (or [`UNKNOWN`]).
    pub name: String,
    /// What recognised it: `airlock run (cgroup …)`, `executable …`,
    /// `script …`, `module …`, `cgroup …`, `environment NAME`.
    pub matched_by: String,
    /// The processes from the connecting one up to the one that matched:
    /// `psql[4120] /usr/bin/psql`, `node[4000] /usr/bin/node`.
    pub chain: Vec<String>,
}

/// Recognises actors; shared by every connection.
pub struct Recogniser {
    /// cgroup path (from the hierarchy root) under which `airlock run`
    /// creates actor cgroups: only those are trusted as labels.
    run_base: String,
    cache: Mutex<HashMap<ProcessKey, Arc<ProcessFacts>>>,
    /// Login (audit) sessions an actor with `taint_session` ran in.
    tainted: Mutex<taints::Taints>,
}

/// What an ancestor is running, beyond its executable, as far as read.
#[derive(Clone, Default)]
struct ProcessFacts {
    /// The interpreter's program; `None`: not read yet.
    program: Option<Resolved>,
    /// Hashes of its environment's entries; `None`: not read yet.
    environ: Option<std::collections::HashSet<u64>>,
}

/// An interpreter's program, its script's path made absolute.
#[derive(Clone)]
enum Resolved {
    Script(String),
    Module(String),
    /// Given inline (`-c`, `-e`), or none.
    Inline,
}

/// One process of the chain being matched.
struct Link<'p> {
    key: ProcessKey,
    comm: &'p str,
    exe: Option<&'p Path>,
}

impl Recogniser {
    /// A recogniser trusting actor cgroups under `run_base` (a cgroup path
    /// from the hierarchy root, see [`launch::ActorCgroups::base`]).
    pub fn new(run_base: String) -> Self {
        Self::with_taints(run_base, taints::Taints::default())
    }

    /// As [`Recogniser::new`], with the tainted sessions an earlier run saved.
    pub fn with_taints(run_base: String, tainted: taints::Taints) -> Self {
        Self { run_base, cache: Mutex::new(HashMap::new()), tainted: Mutex::new(tainted) }
    }

    /// The actor behind `process`, if `actors` recognise one (directly,
    /// or by the login session it runs in); `proc_root` is normally `/proc`.
    pub fn recognise(&self, actors: &[ActorDefinition], process: &ProcessInfo, proc_root: &Path) -> Option<Actor> {
        let found = self.recognise_directly(actors, process, proc_root);
        let session = process.audit_session;
        match (&found, session) {
            (Some(actor), Some(session)) => {
                if actors.iter().any(|d| d.name == actor.name && d.taint_session) {
                    self.taint(session, &actor.name);
                }
                found
            }
            (None, Some(session)) => {
                let taint = self.tainted.lock().unwrap_or_else(|p| p.into_inner()).get(session).cloned()?;
                Some(Actor {
                    name: taint.actor.clone(),
                    matched_by: format!(
                        "login session {session}, where actor {} ran since {}",
                        taint.actor, taint.since
                    ),
                    chain: vec![describe(&Link::of(process))],
                })
            }
            (_, None) => found,
        }
    }

    /// Marks login session `session` as one actor `name` ran in (the first
    /// actor to run there keeps it).
    pub fn taint(&self, session: u32, name: &str) {
        if self.tainted.lock().unwrap_or_else(|p| p.into_inner()).insert(session, name) {
            tracing::info!(session, actor = name, "login session tainted by an actor");
        }
    }

    fn recognise_directly(&self, actors: &[ActorDefinition], process: &ProcessInfo, proc_root: &Path) -> Option<Actor> {
        // Started as an actor stays one, even once a reload dropped its
        // definition (then no rule grants it anything).
        if let Some(name) = process.cgroup.as_deref().and_then(|cgroup| self.launched(cgroup)) {
            let matched_by = format!("airlock run (cgroup {})", process.cgroup.as_deref().unwrap_or_default());
            return Some(Actor { name: name.to_owned(), matched_by, chain: vec![describe(&Link::of(process))] });
        }
        if actors.is_empty() {
            return None;
        }
        if !process.procfs {
            return Some(Actor {
                name: UNKNOWN.into(),
                matched_by: "the connecting process's facts could not be read (gone, or its pid reused)".into(),
                chain: vec![format!("{}[{}]", process.comm, process.pid)],
            });
        }
        let chain: Vec<Link<'_>> = std::iter::once(Link::of(process))
            .chain(process.parents.iter().map(|p| Link { key: p.key(), comm: &p.comm, exe: p.exe.as_deref() }))
            .collect();
        for definition in actors.iter().filter(|d| d.matches_ancestry()) {
            if let Some(cgroup) = process.cgroup.as_deref()
                && definition.cgroups.iter().any(|pattern| glob::matches(pattern, cgroup))
            {
                let chain = vec![describe(&chain[0])];
                return Some(Actor { name: definition.name.clone(), matched_by: format!("cgroup {cgroup}"), chain });
            }
            // What is known already first (executables, processes read for
            // earlier connections: a long-lived agent), procfs only then,
            // and only if something was not known.
            let mut unread = false;
            for read in [false, true] {
                if read && !unread {
                    break;
                }
                for (depth, link) in chain.iter().enumerate() {
                    if let Some(matched_by) = self.matches(definition, link, process, proc_root, read, &mut unread) {
                        let chain = chain[..=depth].iter().map(describe).collect();
                        return Some(Actor { name: definition.name.clone(), matched_by, chain });
                    }
                }
            }
        }
        None
    }

    /// The actor name of an `airlock run` cgroup, if `cgroup` is one of
    /// Airlock's: `BASE/NAME+UID+N`, nothing below it.
    fn launched<'c>(&self, cgroup: &'c str) -> Option<&'c str> {
        let leaf = cgroup.strip_prefix(&self.run_base)?.strip_prefix('/')?;
        if leaf.contains('/') {
            return None;
        }
        leaf.split_once('+').map(|(name, _)| name)
    }

    /// What in `link` matches `definition`, if anything does; `read`:
    /// whether procfs may be read for it, else only what is cached (and
    /// `unread` set when that was not enough).
    fn matches(
        &self,
        definition: &ActorDefinition,
        link: &Link<'_>,
        connecting: &ProcessInfo,
        proc_root: &Path,
        read: bool,
        unread: &mut bool,
    ) -> Option<String> {
        let exe = link.exe.map(|exe| exe.to_string_lossy());
        if let Some(exe) = &exe
            && definition.executables.iter().any(|pattern| glob::matches(pattern, exe))
        {
            return Some(format!("executable {exe}"));
        }
        let interpreted = exe.as_deref().is_some_and(is_interpreter);
        let wants_program = !definition.scripts.is_empty() || !definition.modules.is_empty();
        if interpreted && wants_program {
            let facts = self.facts(link, connecting, proc_root, Need::Program, read);
            *unread |= facts.is_none();
            match facts.as_deref().and_then(|f| f.program.as_ref()) {
                Some(Resolved::Script(path)) if definition.scripts.iter().any(|p| glob::matches(p, path)) => {
                    return Some(format!("script {path}"));
                }
                Some(Resolved::Module(module)) if definition.modules.iter().any(|m| glob::matches(m, module)) => {
                    return Some(format!("module {module}"));
                }
                _ => {}
            }
        }
        if !definition.environment.is_empty() {
            let facts = self.facts(link, connecting, proc_root, Need::Environ, read);
            *unread |= facts.is_none();
            let environ = facts.as_deref().and_then(|f| f.environ.as_ref())?;
            let marked = definition.environment.iter().find(|(name, value)| environ.contains(&entry_hash(name, value)));
            if let Some((name, _)) = marked {
                return Some(format!("environment {name}"));
            }
        }
        None
    }

    /// What `link` runs, or its environment, as `need` says: cached per
    /// process (neither changes after exec); `None` if the process is
    /// gone, its pid now names another, or (without `read`) it was never read.
    fn facts(
        &self,
        link: &Link<'_>,
        connecting: &ProcessInfo,
        proc_root: &Path,
        need: Need,
        read: bool,
    ) -> Option<Arc<ProcessFacts>> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&link.key).cloned();
        let missing = match need {
            Need::Program => cached.as_ref().is_none_or(|f| f.program.is_none()),
            Need::Environ => cached.as_ref().is_none_or(|f| f.environ.is_none()),
        };
        if missing && !read {
            return None;
        }
        if !missing {
            return cached;
        }
        let mut facts = cached.as_deref().cloned().unwrap_or_default();
        let dir = proc_root.join(link.key.pid.to_string());
        match need {
            Need::Program if facts.program.is_none() => {
                let read;
                let cmdline = if link.key == connecting.key() {
                    &connecting.cmdline
                } else {
                    read = crate::process::read_cmdline(&dir);
                    &read
                };
                facts.program = Some(match program_of(cmdline) {
                    Some(Program::Script(script)) if Path::new(script).is_absolute() => Resolved::Script(script.into()),
                    Some(Program::Script(script)) => match std::fs::read_link(dir.join("cwd")) {
                        Ok(cwd) => Resolved::Script(cwd.join(script).to_string_lossy().into_owned()),
                        Err(_) => Resolved::Script(script.into()),
                    },
                    Some(Program::Module(module)) => Resolved::Module(module.into()),
                    None => Resolved::Inline,
                });
            }
            Need::Environ if facts.environ.is_none() => {
                let environ = crate::process::read_environ(&dir);
                let hashes = environ.iter().filter_map(|e| e.split_once('=')).map(|(n, v)| entry_hash(n, v));
                facts.environ = Some(hashes.collect());
            }
            _ => {}
        }
        // Read after the facts: a pid reused meanwhile shows here.
        if !crate::process::still(&dir, link.key) {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        let facts = Arc::new(facts);
        cache.insert(link.key, Arc::clone(&facts));
        Some(facts)
    }
}

/// Which fact of a process is wanted.
#[derive(Clone, Copy)]
enum Need {
    Program,
    Environ,
}

/// A hash of one environment entry: a process's environment is kept as
/// these (a few hundred bytes), not as its text.
fn entry_hash(name: &str, value: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (name, value).hash(&mut hasher);
    hasher.finish()
}

impl<'p> Link<'p> {
    fn of(process: &'p ProcessInfo) -> Self {
        Self { key: process.key(), comm: &process.comm, exe: process.exe.as_deref() }
    }
}

fn describe(link: &Link<'_>) -> String {
    match link.exe {
        Some(exe) => format!("{}[{}] {}", link.comm, link.key.pid, exe.display()),
        None => format!("{}[{}]", link.comm, link.key.pid),
    }
}

/// Executables that run a program named on their command line.
fn is_interpreter(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let versioned = |prefix: &str| {
        name.strip_prefix(prefix).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    matches!(
        name,
        "node"
            | "nodejs"
            | "deno"
            | "bun"
            | "ruby"
            | "perl"
            | "php"
            | "lua"
            | "Rscript"
            | "bash"
            | "sh"
            | "dash"
            | "zsh"
            | "ksh"
            | "fish"
            | "tsx"
            | "ts-node"
    ) || versioned("python")
        || versioned("pypy")
}

/// What an interpreter's command line runs.
#[derive(Debug, PartialEq, Eq)]
enum Program<'a> {
    /// A script file, as given (relative to the process's cwd, or absolute).
    Script(&'a str),
    /// A Python module (`-m NAME`).
    Module(&'a str),
}

/// The script or module an interpreter's `cmdline` runs: the first
/// argument that is no option (nor an option's value), or `-m`'s module;
/// none when the program is given inline (`-c`, `-e`).
fn program_of(cmdline: &[String]) -> Option<Program<'_>> {
    /// Options whose value is the next argument, not the program.
    const TAKES_VALUE: [&str; 9] =
        ["-r", "--require", "--import", "--loader", "-W", "-X", "-I", "--env-file", "--title"];
    /// Options whose value is the program's text.
    const INLINE: [&str; 5] = ["-c", "-e", "--eval", "-p", "--print"];
    let mut args = cmdline.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-m" {
            return args.next().map(|module| Program::Module(module));
        }
        if let Some(module) = arg.strip_prefix("-m").filter(|m| !m.is_empty() && !arg.starts_with("--")) {
            return Some(Program::Module(module));
        }
        if INLINE.contains(&arg.as_str()) {
            return None;
        }
        if TAKES_VALUE.contains(&arg.as_str()) {
            args.next();
            continue;
        }
        if arg == "--" {
            return args.next().map(|script| Program::Script(script));
        }
        if !arg.starts_with('-') {
            return Some(Program::Script(arg));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn an_interpreters_program_is_read_from_its_command_line() {
        let program = |args: &[&str]| program_of(&strings(args)).map(|p| format!("{p:?}"));
        assert_eq!(program(&["node", "/opt/agent/cli.js", "--x"]).as_deref(), Some(r#"Script("/opt/agent/cli.js")"#));
        assert_eq!(program(&["node", "-r", "ts-node/register", "a.ts"]).as_deref(), Some(r#"Script("a.ts")"#));
        assert_eq!(program(&["python3", "-u", "-m", "aider", "--yes"]).as_deref(), Some(r#"Module("aider")"#));
        assert_eq!(program(&["python3", "-maider"]).as_deref(), Some(r#"Module("aider")"#));
        assert_eq!(program(&["python3", "-c", "import x"]), None);
        assert_eq!(program(&["-bash"]), None);
        assert_eq!(program(&["bash", "--", "run.sh"]).as_deref(), Some(r#"Script("run.sh")"#));
    }

    #[test]
    fn interpreters_are_known_by_name_and_version() {
        for exe in ["/usr/bin/node", "/usr/bin/python3.11", "/usr/bin/python3", "/bin/bash", "/usr/local/bin/pypy3"] {
            assert!(is_interpreter(exe), "{exe}");
        }
        for exe in ["/usr/bin/psql", "/usr/bin/pythonista", "/usr/bin/nodemon"] {
            assert!(!is_interpreter(exe), "{exe}");
        }
    }

    fn definition(name: &str, edit: impl FnOnce(&mut ActorDefinition)) -> ActorDefinition {
        let location = crate::source::SourceLocation { file: "t.toml".into(), line: 1, column: 1 };
        let mut definition = ActorDefinition {
            name: name.into(),
            executables: Vec::new(),
            scripts: Vec::new(),
            modules: Vec::new(),
            cgroups: Vec::new(),
            environment: Vec::new(),
            run_by_users: Vec::new(),
            run_by_groups: Vec::new(),
            taint_session: false,
            confine: false,
            hide: Vec::new(),
            description: None,
            location,
        };
        edit(&mut definition);
        definition
    }

    #[test]
    fn actors_are_recognised_in_a_real_process_tree() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("agent.sh");
        std::fs::write(&script, "sleep 30\ntrue\n").unwrap();
        let mut shell =
            std::process::Command::new("/bin/sh").arg(&script).env("AIRLOCK_ACTOR", "marker-7").spawn().unwrap();
        let children = format!("/proc/{0}/task/{0}/children", shell.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let sleeper = loop {
            let listed = std::fs::read_to_string(&children).unwrap_or_default();
            // Once it is sleep: a child just forked is the shell still.
            let pid = listed.split_whitespace().next().and_then(|pid| pid.parse::<u32>().ok());
            let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if let Some(pid) = pid.filter(|&pid| comm(pid).trim() == "sleep") {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "the script's sleep did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let process = ProcessInfo::of_live_process(sleeper, uid, gid, Path::new("/proc"), Path::new("/sys/fs/cgroup"));
        let recogniser = Recogniser::new("/nowhere/airlock-actors".into());
        let recognise =
            |definitions: &[ActorDefinition]| recogniser.recognise(definitions, &process, Path::new("/proc"));

        let by_script = definition("scripted", |d| d.scripts = vec!["*/agent.sh".into()]);
        let actor = recognise(std::slice::from_ref(&by_script)).expect("the script is recognised");
        assert_eq!(actor.matched_by, format!("script {}", script.display()));
        assert_eq!(actor.chain.len(), 2, "sleep, then the shell running the script: {:?}", actor.chain);
        assert!(actor.chain[0].starts_with(&format!("sleep[{sleeper}]")), "{:?}", actor.chain);
        let by_exe = definition("sleepy", |d| d.executables = vec!["*/sleep".into()]);
        assert_eq!(recognise(&[by_exe]).map(|a| (a.name, a.chain.len())), Some(("sleepy".into(), 1)));
        let by_marker = definition("marked", |d| d.environment = vec![("AIRLOCK_ACTOR".into(), "marker-7".into())]);
        assert_eq!(recognise(&[by_marker]).map(|a| a.matched_by), Some("environment AIRLOCK_ACTOR".into()));
        let elsewhere = definition("other", |d| {
            d.scripts = vec!["*/other.sh".into()];
            d.environment = vec![("AIRLOCK_ACTOR".into(), "someone-else".into())];
        });
        assert_eq!(recognise(&[elsewhere]), None);
        assert_eq!(recognise(&[]), None, "no actors defined: nothing is read");
        let gone = ProcessInfo { procfs: false, ..process.clone() };
        let unknown = recogniser.recognise(std::slice::from_ref(&by_script), &gone, Path::new("/proc"));
        assert_eq!(unknown.map(|a| a.name), Some(UNKNOWN.to_owned()), "fail closed");
        let _ = shell.kill();
        let _ = std::process::Command::new("kill").arg(sleeper.to_string()).status();
        let _ = shell.wait();
    }

    #[test]
    fn a_login_session_an_actor_ran_in_is_the_actors_when_policy_says_so() {
        let recogniser = Recogniser::new("/airlock-actors".into());
        let bot = definition("bot", |d| {
            d.cgroups = vec!["/bots/*".into()];
            d.taint_session = true;
        });
        let process = |cgroup: &str, session: u32| ProcessInfo {
            pid: 4000 + session,
            comm: "psql".into(),
            cgroup: Some(cgroup.into()),
            audit_session: Some(session),
            procfs: true,
            ..ProcessInfo::default()
        };
        let recognise = |p: &ProcessInfo| recogniser.recognise(std::slice::from_ref(&bot), p, Path::new("/proc"));
        assert_eq!(recognise(&process("/user.slice/a", 7)), None, "nothing ran in session 7 yet");
        assert_eq!(recognise(&process("/bots/one", 7)).map(|a| a.matched_by), Some("cgroup /bots/one".into()));
        let later = recognise(&process("/user.slice/tmux", 7)).expect("session 7 is tainted");
        assert_eq!(later.name, "bot");
        assert!(later.matched_by.starts_with("login session 7, where actor bot ran since "), "{}", later.matched_by);
        assert_eq!(recognise(&process("/user.slice/a", 8)), None, "another session is not");
        let untainting = definition("bot", |d| d.cgroups = vec!["/bots/*".into()]);
        let plain = Recogniser::new("/airlock-actors".into());
        assert!(
            plain.recognise(std::slice::from_ref(&untainting), &process("/bots/x", 9), Path::new("/proc")).is_some()
        );
        assert_eq!(plain.recognise(&[untainting], &process("/user.slice/a", 9), Path::new("/proc")), None);
    }

    #[test]
    fn only_airlocks_own_actor_cgroups_label_a_connection() {
        let recogniser = Recogniser::new("/ci.slice/airlock-actors".into());
        assert_eq!(recogniser.launched("/ci.slice/airlock-actors/coding-agent+1000+3"), Some("coding-agent"));
        assert_eq!(recogniser.launched("/ci.slice/airlock-actors/coding-agent+1000+3/nested"), None);
        assert_eq!(recogniser.launched("/user.slice/airlock-actors/coding-agent+1000+3"), None, "a user's own");
        assert_eq!(recogniser.launched("/ci.slice/airlock-actors-x/a+1+1"), None);
    }
}
