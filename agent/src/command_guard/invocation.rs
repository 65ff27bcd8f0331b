//! What a command line runs: each simple command as an [`Invocation`]
//! (program by basename, options as its getopt reads them), with the
//! programs that run other programs looked through: `env`, `sudo`,
//! `xargs`, `nice`, `timeout`, `sh -c '…'`, `find -exec`, `eval` and the like.
//!
//! What text cannot tell is reported as a [`Finding`] rather than guessed:
//! a program named by an expansion (`$c -rf /`), an interpreter reading its
//! program from a pipe (`… | base64 -d | sh`).

use std::collections::BTreeSet;

use super::{
    options,
    syntax::{self, Arg, Simple, Stdin, Unparsed},
};

/// How deep programs that run programs are followed (`sudo sh -c 'env …'`).
const MAX_DEPTH: usize = 8;

/// A program the text runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// argv\[0\]'s basename (`/bin/rm`, `\rm` and `rm` are all `rm`).
    pub program: String,
    /// For programs with subcommands Airlock reads (git): the subcommand.
    pub subcommand: Option<String>,
    /// Options by name (long names for programs Airlock has a table for).
    pub options: BTreeSet<String>,
    /// Whether an argument known only at run time may add options.
    pub options_unknown: bool,
    /// Operands as written.
    pub operands: Vec<String>,
    /// Program and arguments, one space apart, quoting removed: what
    /// patterns are matched against and messages show.
    pub text: String,
    /// How the text runs it.
    pub role: Role,
}

/// How a program comes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Named in the text.
    Direct,
    /// Named in the text, and runs the program after it with the same
    /// rights (`env`, `nice`, `timeout`, `xargs`, `sh -c`, …).
    Wrapper,
    /// Not run, but what another program does: `find -delete` is judged
    /// as `rm -rf` of what it finds.
    Derived,
}

/// What the text leaves to run time, and so cannot be judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The program is named by an expansion, a glob or data (`$c`, `eval "$x"`,
    /// `sh -c "$cmd"`, `bash <<< "$x"`).
    Indirect(String),
    /// A shell or interpreter runs a program read from a pipe
    /// (`curl … | sh`, `bash <(curl …)`).
    InterpreterReadsPipe(String),
}

/// Everything a command line runs, as far as its text tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analysis {
    /// Programs it runs, in the order they appear.
    pub invocations: Vec<Invocation>,
    /// What it leaves to run time.
    pub findings: Vec<Finding>,
}

/// Reads a command line. `input_is_data`: whether what its programs read
/// on standard input is data sent by the client (an exec request's channel)
/// rather than a person at a terminal; an interpreter reading it runs a
/// program the guard never sees (`ssh host sh < script`).
pub fn analyse(text: &str, input_is_data: bool) -> Result<Analysis, Unparsed> {
    let mut analysis = Analysis::default();
    let stdin = if input_is_data { Stdin::Pipe } else { Stdin::Inherited };
    analysis.text(text, &stdin, 0)?;
    Ok(analysis)
}

/// POSIX-like shells whose `-c` strings and scripts on stdin are read here.
fn is_shell(program: &str) -> bool {
    matches!(program, "sh" | "bash" | "dash" | "ash" | "ksh" | "mksh" | "pdksh" | "zsh" | "rbash" | "posh" | "yash")
}

/// Shells with a syntax of their own, and interpreters: what they run is
/// a program in another language, which the guard does not read.
fn is_interpreter(program: &str) -> bool {
    let versioned =
        |stem: &str| program.strip_prefix(stem).is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    matches!(program, "fish" | "csh" | "tcsh" | "nu" | "xonsh" | "pwsh" | "node" | "nodejs" | "tclsh" | "Rscript")
        || ["python", "perl", "ruby", "php", "lua", "luajit"].into_iter().any(versioned)
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn join(args: &[Arg]) -> String {
    args.iter().map(Arg::text).collect::<Vec<_>>().join(" ")
}

impl Analysis {
    /// Every program `text` runs. Its depth is bounded where programs run
    /// programs ([`Analysis::inner`]), the only way back here.
    fn text(&mut self, text: &str, stdin: &Stdin, depth: usize) -> Result<(), Unparsed> {
        for Simple { words, stdin } in syntax::parse(text, stdin)? {
            self.words(&words, &stdin, depth)?;
        }
        Ok(())
    }

    /// Text given to a shell as its program (`sh -c TEXT`, `eval TEXT`):
    /// read when the text spells it out.
    fn script(&mut self, script: &[Arg], whole: &[Arg], stdin: &Stdin, depth: usize) -> Result<(), Unparsed> {
        match script.iter().map(Arg::exact).collect::<Option<Vec<_>>>() {
            Some(parts) => self.text(&parts.join(" "), stdin, depth + 1),
            None => {
                self.findings.push(Finding::Indirect(join(whole)));
                Ok(())
            }
        }
    }

    fn words(&mut self, words: &[Arg], stdin: &Stdin, depth: usize) -> Result<(), Unparsed> {
        let Some((argv0, args)) = words.split_first() else { return Ok(()) };
        let Some(path) = argv0.exact() else {
            self.findings.push(Finding::Indirect(join(words)));
            return Ok(());
        };
        let program = basename(path).to_owned();
        let role = if wraps(&program) { Role::Wrapper } else { Role::Direct };
        self.invocation(&program, args, role);
        self.inner(&program, args, words, stdin, depth)
    }

    fn invocation(&mut self, program: &str, args: &[Arg], role: Role) {
        let mut parsed = options::parse(program, None, args);
        let mut subcommand = None;
        if program == "git" {
            // Global options, the subcommand, then its own options.
            if let Some(sub) = args.get(parsed.rest).and_then(Arg::exact) {
                let rest = &args[parsed.rest + 1..];
                parsed = options::parse(program, Some(sub), rest);
                if sub == "push" && parsed.operands.iter().any(|o| o.literal().is_some_and(|t| t.starts_with('+'))) {
                    // `git push origin +main` forces as --force does.
                    parsed.options.insert("force".into());
                }
                subcommand = Some(sub.to_owned());
            }
        }
        let mut text = program.to_owned();
        for arg in args {
            text.push(' ');
            text.push_str(arg.text());
        }
        self.invocations.push(Invocation {
            program: program.to_owned(),
            subcommand,
            options: parsed.options,
            options_unknown: parsed.unknown,
            operands: parsed.operands.iter().map(|o| o.text().to_owned()).collect(),
            text,
            role,
        });
    }

    /// The programs `program` runs, given its arguments.
    fn inner(
        &mut self,
        program: &str,
        args: &[Arg],
        words: &[Arg],
        stdin: &Stdin,
        depth: usize,
    ) -> Result<(), Unparsed> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(Unparsed::TooComplex("programs that run programs nested over 8 deep"));
        }
        let follow = |this: &mut Self, command: Option<&[Arg]>| match command {
            Some(command) => this.words(command, stdin, depth),
            None => Ok(()),
        };
        match program {
            "env" => {
                let (at, split) = env_command(args);
                if let Some(split) = split {
                    let mut script = vec![split];
                    script.extend(args[at..].iter().cloned());
                    return self.script(&script, words, stdin, depth);
                }
                follow(self, Some(&args[at..]))
            }
            "su" => self.su(args, words, stdin, depth),
            "runuser" if !args.iter().any(|a| matches!(a.exact(), Some("-u" | "--user"))) => {
                self.su(args, words, stdin, depth)
            }
            "sudo" | "doas" | "pkexec" | "nice" | "nohup" | "exec" | "builtin" | "time" | "stdbuf" | "setsid"
            | "ionice" | "runuser" | "command" | "busybox" => {
                let Some(at) = wrapper_command(program, args) else { return Ok(()) };
                follow(self, at.map(|at| &args[at..]))
            }
            "timeout" | "chroot" | "taskset" | "chrt" => {
                // A positional argument (duration, root, mask, priority), then the command.
                let with_value: &[&str] = match program {
                    "timeout" => &["k", "s", "kill-after", "signal"],
                    "chroot" => &["userspec", "groups"],
                    "chrt" => &["T", "P", "D", "sched-runtime", "sched-period", "sched-deadline"],
                    _ => &[],
                };
                if program != "timeout" && args.iter().any(|a| matches!(a.exact(), Some("-p" | "--pid"))) {
                    return Ok(());
                }
                let Some(at) = skip_options(args, with_value) else { return Ok(()) };
                follow(self, args.get(at + 1..))
            }
            "flock" => {
                if let Some(command) = option_value(args, &["c", "command"]) {
                    return self.script(&[command], words, stdin, depth);
                }
                let Some(at) = skip_options(args, &["w", "E", "timeout", "conflict-exit-code"]) else { return Ok(()) };
                follow(self, args.get(at + 1..))
            }
            "watch" => {
                let Some(at) = skip_options(args, &["n", "interval", "q", "equexit"]) else { return Ok(()) };
                if args.iter().any(|a| matches!(a.exact(), Some("-x" | "--exec"))) {
                    return follow(self, Some(&args[at..]));
                }
                self.script(&args[at..], words, stdin, depth)
            }
            "xargs" => {
                let with_value = [
                    "a",
                    "E",
                    "d",
                    "I",
                    "L",
                    "n",
                    "P",
                    "s",
                    "arg-file",
                    "delimiter",
                    "max-args",
                    "max-procs",
                    "max-chars",
                ];
                let mut command = match skip_options(args, &with_value) {
                    Some(at) => args[at..].to_vec(),
                    None => vec![Arg::plain("echo")],
                };
                // What xargs reads becomes arguments, options perhaps.
                command.push(Arg::dynamic("{xargs input}"));
                self.words(&command, &Stdin::Inherited, depth)
            }
            "eval" => self.script(args, words, stdin, depth),
            "trap" => match args.first().and_then(Arg::exact) {
                Some(first) if !first.starts_with('-') && args.len() > 1 => {
                    self.script(&args[..1], words, stdin, depth)
                }
                _ if args.first().is_some_and(|a| a.exact().is_none()) => self.script(&args[..1], words, stdin, depth),
                _ => Ok(()),
            },
            "find" => self.find(args, stdin, depth),
            "source" | "." => {
                if let Some(script) = args.first()
                    && (script.is_process_substitution()
                        || (matches!(script.exact(), Some("/dev/stdin" | "-")) && *stdin == Stdin::Pipe))
                {
                    self.findings.push(Finding::InterpreterReadsPipe(join(words)));
                }
                Ok(())
            }
            shell if is_shell(shell) => self.shell(args, words, stdin, depth),
            interpreter if is_interpreter(interpreter) => {
                // Code on the command line (-c, -e) is another language: not read.
                let inline = args.iter().any(|a| {
                    a.exact().is_some_and(|t| {
                        t.starts_with('-') && !t.starts_with("--") && t[1..].contains(['c', 'e', 'E', 'm'])
                    })
                });
                let script = args.iter().find(|a| a.exact().is_none_or(|t| !t.starts_with('-') || t == "-"));
                let from_pipe = match script {
                    Some(script) => {
                        script.is_process_substitution() || (script.exact() == Some("-") && *stdin == Stdin::Pipe)
                    }
                    None => !inline && *stdin == Stdin::Pipe,
                };
                if from_pipe {
                    self.findings.push(Finding::InterpreterReadsPipe(join(words)));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `sh [options] [-c TEXT | SCRIPT | (stdin)]`.
    fn shell(&mut self, args: &[Arg], words: &[Arg], stdin: &Stdin, depth: usize) -> Result<(), Unparsed> {
        let mut command_mode = false;
        let mut reads_stdin = false;
        let mut i = 0;
        while i < args.len() {
            let Some(text) = args[i].literal() else { break };
            if text == "--" || text == "-" {
                i += 1;
                break;
            }
            if text.starts_with("--") {
                i += if matches!(text, "--rcfile" | "--init-file") { 2 } else { 1 };
                continue;
            }
            if !(text.starts_with('-') || text.starts_with('+')) || text.len() < 2 {
                break;
            }
            let letters = &text[1..];
            command_mode |= letters.contains('c');
            reads_stdin |= letters.contains('s');
            // -o and -O take the next word.
            i += if letters.ends_with(['o', 'O']) { 2 } else { 1 };
        }
        let operand = args.get(i);
        if command_mode {
            return match operand {
                Some(script) => self.script(std::slice::from_ref(script), words, stdin, depth),
                None => Ok(()),
            };
        }
        match operand {
            Some(script) if !reads_stdin => {
                // A script file on the target is not read; a pipe's is not known.
                if script.is_process_substitution() || script.exact().is_none() {
                    self.findings.push(Finding::InterpreterReadsPipe(join(words)));
                }
                Ok(())
            }
            _ => match stdin {
                Stdin::Inherited => Ok(()),
                Stdin::Pipe => {
                    self.findings.push(Finding::InterpreterReadsPipe(join(words)));
                    Ok(())
                }
                Stdin::Text(text) => self.text(text, &Stdin::Inherited, depth + 1),
                Stdin::DynamicText => {
                    self.findings.push(Finding::Indirect(join(words)));
                    Ok(())
                }
            },
        }
    }

    /// `su [options] [user] [-c TEXT]`: without `-c`, a login shell.
    fn su(&mut self, args: &[Arg], words: &[Arg], stdin: &Stdin, depth: usize) -> Result<(), Unparsed> {
        match option_value(args, &["c", "command", "session-command"]) {
            Some(command) => self.script(&[command], words, stdin, depth),
            None => Ok(()),
        }
    }

    /// `find PATHS EXPRESSION`: `-exec`/`-execdir`/`-ok`/`-okdir` run their
    /// command; `-delete` removes what matches, judged as `rm -rf PATHS`.
    fn find(&mut self, args: &[Arg], stdin: &Stdin, depth: usize) -> Result<(), Unparsed> {
        let paths: Vec<&Arg> = args
            .iter()
            .take_while(|a| a.literal().is_none_or(|t| !(t.starts_with('-') || t == "(" || t == "!")))
            .collect();
        let mut i = paths.len();
        while i < args.len() {
            match args[i].literal() {
                Some("-delete") => {
                    let mut text = String::from("rm -rf");
                    for path in &paths {
                        text.push(' ');
                        text.push_str(path.text());
                    }
                    self.invocations.push(Invocation {
                        program: "rm".into(),
                        subcommand: None,
                        options: ["recursive", "force"].map(String::from).into(),
                        options_unknown: false,
                        operands: paths.iter().map(|p| p.text().to_owned()).collect(),
                        text,
                        role: Role::Derived,
                    });
                }
                Some("-exec" | "-execdir" | "-ok" | "-okdir") => {
                    let start = i + 1;
                    let end = args[start..]
                        .iter()
                        .position(|a| matches!(a.literal(), Some(";" | "+")))
                        .map_or(args.len(), |n| start + n);
                    self.words(&args[start..end], stdin, depth + 1)?;
                    i = end;
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }
}

/// Programs whose work is to run the program after them.
fn wraps(program: &str) -> bool {
    matches!(
        program,
        "env"
            | "nice"
            | "nohup"
            | "exec"
            | "builtin"
            | "command"
            | "time"
            | "stdbuf"
            | "setsid"
            | "ionice"
            | "timeout"
            | "taskset"
            | "chrt"
            | "flock"
            | "watch"
            | "xargs"
            | "eval"
            | "trap"
            | "busybox"
    ) || is_shell(program)
}

/// Index of the first argument that is not an option (nor an option's
/// value); `None` when there is none. `with_value` names the short letters
/// and long names that take the next word.
fn skip_options(args: &[Arg], with_value: &[&str]) -> Option<usize> {
    let mut i = 0;
    while i < args.len() {
        // A word known only at run time where a command may start: the
        // command starts there (and is judged as indirect).
        let text = args[i].literal()?;
        if text == "--" {
            return (i + 1 < args.len()).then_some(i + 1);
        }
        if let Some(long) = text.strip_prefix("--") {
            i += if !long.contains('=') && with_value.contains(&long) { 2 } else { 1 };
            continue;
        }
        if text.len() < 2 || !text.starts_with('-') {
            return Some(i);
        }
        // A cluster: the first letter taking a value takes the rest, or the next word.
        let letters = &text[1..];
        let takes = letters.char_indices().find(|(_, c)| with_value.contains(&&*c.encode_utf8(&mut [0; 4])));
        i += match takes {
            Some((at, c)) if at + c.len_utf8() == letters.len() => 2,
            _ => 1,
        };
    }
    None
}

/// The value of an option among `names` (`-c X`, `-cX`, `--command=X`, `--command X`).
fn option_value(args: &[Arg], names: &[&str]) -> Option<Arg> {
    for (i, arg) in args.iter().enumerate() {
        let text = arg.literal().unwrap_or_default();
        if text == "--" {
            return None;
        }
        if let Some(long) = text.strip_prefix("--") {
            match long.split_once('=') {
                // Attached, the value is known when the whole word is.
                Some((name, value)) if names.contains(&name) => {
                    return Some(if arg.exact().is_some() { Arg::plain(value) } else { arg.clone() });
                }
                _ if names.contains(&long) => return args.get(i + 1).cloned(),
                _ => {}
            }
        } else if let Some(letters) = text.strip_prefix('-')
            && let Some(first) = letters.chars().next()
            && names.iter().any(|n| n.len() == 1 && n.starts_with(first))
        {
            return match &letters[first.len_utf8()..] {
                "" => args.get(i + 1).cloned(),
                value if arg.exact().is_some() => Some(Arg::plain(value)),
                _ => Some(arg.clone()),
            };
        }
    }
    None
}

/// Where `env`'s command starts (past options and NAME=VALUE), and the
/// string of `-S`/`--split-string`, which env splits into the command.
fn env_command(args: &[Arg]) -> (usize, Option<Arg>) {
    let mut i = 0;
    while i < args.len() {
        let Some(text) = args[i].literal() else { break };
        if text == "--" {
            return (i + 1, None);
        }
        if text == "-S" || text == "--split-string" {
            return (i + 2, args.get(i + 1).cloned());
        }
        if let Some(split) = text.strip_prefix("--split-string=").or_else(|| text.strip_prefix("-S")) {
            return (i + 1, Some(Arg::plain(split)));
        }
        if matches!(text, "-u" | "-C" | "--unset" | "--chdir") {
            i += 2;
        } else if text.starts_with('-') || text.split_once('=').is_some_and(|(name, _)| !name.is_empty()) {
            i += 1;
        } else {
            break;
        }
    }
    (i, None)
}

/// Where a wrapper's command starts: `Some(None)` when it runs none
/// (`sudo -l`, `command -v`), `None` when nothing follows.
fn wrapper_command(program: &str, args: &[Arg]) -> Option<Option<usize>> {
    let with_value: &[&str] = match program {
        "sudo" => &[
            "u",
            "g",
            "p",
            "C",
            "D",
            "r",
            "t",
            "T",
            "U",
            "R",
            "h",
            "user",
            "group",
            "prompt",
            "close-from",
            "chdir",
            "role",
            "type",
            "command-timeout",
            "other-user",
            "chroot",
            "host",
        ],
        "doas" => &["u", "C"],
        "nice" => &["n", "adjustment"],
        "exec" => &["a"],
        "time" => &["f", "o", "format", "output"],
        "stdbuf" => &["i", "o", "e", "input", "output", "error"],
        "ionice" => &["c", "n", "class", "classdata"],
        "runuser" => &["u", "g", "G", "s", "w", "user", "group", "supp-group", "shell", "whitelist-environment"],
        _ => &[],
    };
    let no_command = match program {
        "sudo" => &["-l", "-v", "-k", "-K", "-V", "-e", "--list", "--validate", "--edit"][..],
        "command" => &["-v", "-V"],
        "ionice" => &["-p", "--pid"],
        _ => &[],
    };
    if args.iter().any(|a| a.exact().is_some_and(|t| no_command.contains(&t))) {
        return Some(None);
    }
    if program == "busybox" {
        return (!args.is_empty()).then_some(Some(0));
    }
    let mut at = skip_options(args, with_value)?;
    if program == "sudo" {
        // NAME=VALUE settings before the command.
        while args.get(at).and_then(Arg::exact).is_some_and(|t| t.split_once('=').is_some_and(|(n, _)| !n.is_empty())) {
            at += 1;
        }
        if at >= args.len() {
            return None;
        }
    }
    Some(Some(at))
}
