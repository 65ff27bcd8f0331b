//! Options as a program's own getopt reads them.
//!
//! `rm -fr`, `rm -r -f`, `rm --recursive --force` and `rm --rec --f` are one
//! command: for programs with a table here, options are read the way GNU
//! `getopt_long` reads them (clusters, arguments attached or separate, long
//! names and their unambiguous prefixes, options after operands until
//! `--`) and named by their long name. Other programs get a generic reading:
//! each letter of `-abc` and each `--name` is an option by that spelling.

use std::collections::BTreeSet;

use super::syntax::Arg;

/// Whether an option takes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arity {
    /// A flag.
    None,
    /// `-o ARG`, `-oARG`, `--opt ARG`, `--opt=ARG`.
    Required,
    /// Only attached: `--opt=ARG` (`-oARG`).
    Optional,
}

/// A program's options: short letters and long names, each naming the long
/// name the rules use.
pub(crate) struct Table {
    /// `(letter, name, arity)`.
    shorts: &'static [(u8, &'static str, Arity)],
    /// `(spelling, name, arity)`: aliases share a name.
    longs: &'static [(&'static str, &'static str, Arity)],
    /// Whether options stop at the first operand (git's global options) or
    /// go on after operands (GNU permutation).
    stop_at_operand: bool,
}

use Arity::{None as Flag, Optional, Required};

const RM: Table = Table {
    shorts: &[
        (b'f', "force", Flag),
        (b'i', "interactive", Flag),
        (b'I', "interactive-once", Flag),
        (b'r', "recursive", Flag),
        (b'R', "recursive", Flag),
        (b'd', "dir", Flag),
        (b'v', "verbose", Flag),
    ],
    longs: &[
        ("force", "force", Flag),
        ("interactive", "interactive", Optional),
        ("one-file-system", "one-file-system", Flag),
        ("no-preserve-root", "no-preserve-root", Flag),
        ("preserve-root", "preserve-root", Optional),
        ("recursive", "recursive", Flag),
        ("dir", "dir", Flag),
        ("verbose", "verbose", Flag),
        ("help", "help", Flag),
        ("version", "version", Flag),
    ],
    stop_at_operand: false,
};

const CHMOD: Table = Table {
    shorts: &[(b'c', "changes", Flag), (b'f', "silent", Flag), (b'v', "verbose", Flag), (b'R', "recursive", Flag)],
    longs: &[
        ("changes", "changes", Flag),
        ("no-preserve-root", "no-preserve-root", Flag),
        ("preserve-root", "preserve-root", Flag),
        ("quiet", "silent", Flag),
        ("silent", "silent", Flag),
        ("reference", "reference", Required),
        ("recursive", "recursive", Flag),
        ("verbose", "verbose", Flag),
        ("help", "help", Flag),
        ("version", "version", Flag),
    ],
    stop_at_operand: false,
};

const CHOWN: Table = Table {
    shorts: &[
        (b'c', "changes", Flag),
        (b'f', "silent", Flag),
        (b'v', "verbose", Flag),
        (b'h', "no-dereference", Flag),
        (b'H', "traverse-command-line", Flag),
        (b'L', "traverse-all", Flag),
        (b'P', "traverse-none", Flag),
        (b'R', "recursive", Flag),
    ],
    longs: &[
        ("changes", "changes", Flag),
        ("dereference", "dereference", Flag),
        ("no-dereference", "no-dereference", Flag),
        ("from", "from", Required),
        ("no-preserve-root", "no-preserve-root", Flag),
        ("preserve-root", "preserve-root", Flag),
        ("quiet", "silent", Flag),
        ("silent", "silent", Flag),
        ("reference", "reference", Required),
        ("recursive", "recursive", Flag),
        ("verbose", "verbose", Flag),
        ("help", "help", Flag),
        ("version", "version", Flag),
    ],
    stop_at_operand: false,
};

const CP: Table = Table {
    shorts: &[
        (b'a', "archive", Flag),
        (b'b', "backup", Flag),
        (b'd', "no-dereference", Flag),
        (b'f', "force", Flag),
        (b'i', "interactive", Flag),
        (b'H', "dereference-command-line", Flag),
        (b'l', "link", Flag),
        (b'L', "dereference", Flag),
        (b'n', "no-clobber", Flag),
        (b'P', "no-dereference", Flag),
        (b'p', "preserve", Flag),
        (b'r', "recursive", Flag),
        (b'R', "recursive", Flag),
        (b's', "symbolic-link", Flag),
        (b'S', "suffix", Required),
        (b't', "target-directory", Required),
        (b'T', "no-target-directory", Flag),
        (b'u', "update", Flag),
        (b'v', "verbose", Flag),
        (b'x', "one-file-system", Flag),
    ],
    longs: &[
        ("archive", "archive", Flag),
        ("backup", "backup", Optional),
        ("force", "force", Flag),
        ("interactive", "interactive", Flag),
        ("link", "link", Flag),
        ("dereference", "dereference", Flag),
        ("no-clobber", "no-clobber", Flag),
        ("no-dereference", "no-dereference", Flag),
        ("preserve", "preserve", Optional),
        ("recursive", "recursive", Flag),
        ("remove-destination", "remove-destination", Flag),
        ("symbolic-link", "symbolic-link", Flag),
        ("suffix", "suffix", Required),
        ("target-directory", "target-directory", Required),
        ("no-target-directory", "no-target-directory", Flag),
        ("update", "update", Optional),
        ("verbose", "verbose", Flag),
        ("one-file-system", "one-file-system", Flag),
    ],
    stop_at_operand: false,
};

const MV: Table = Table {
    shorts: &[
        (b'b', "backup", Flag),
        (b'f', "force", Flag),
        (b'i', "interactive", Flag),
        (b'n', "no-clobber", Flag),
        (b'S', "suffix", Required),
        (b't', "target-directory", Required),
        (b'T', "no-target-directory", Flag),
        (b'u', "update", Flag),
        (b'v', "verbose", Flag),
    ],
    longs: &[
        ("backup", "backup", Optional),
        ("force", "force", Flag),
        ("interactive", "interactive", Flag),
        ("no-clobber", "no-clobber", Flag),
        ("suffix", "suffix", Required),
        ("target-directory", "target-directory", Required),
        ("no-target-directory", "no-target-directory", Flag),
        ("update", "update", Optional),
        ("verbose", "verbose", Flag),
    ],
    stop_at_operand: false,
};

/// git's own options, before the subcommand.
const GIT: Table = Table {
    shorts: &[
        (b'C', "chdir", Required),
        (b'c', "config", Required),
        (b'p', "paginate", Flag),
        (b'P', "no-pager", Flag),
    ],
    longs: &[
        ("git-dir", "git-dir", Required),
        ("work-tree", "work-tree", Required),
        ("namespace", "namespace", Required),
        ("exec-path", "exec-path", Optional),
        ("config-env", "config-env", Required),
        ("no-pager", "no-pager", Flag),
        ("paginate", "paginate", Flag),
        ("bare", "bare", Flag),
        ("no-replace-objects", "no-replace-objects", Flag),
        ("literal-pathspecs", "literal-pathspecs", Flag),
    ],
    stop_at_operand: true,
};

const GIT_PUSH: Table = Table {
    shorts: &[
        (b'f', "force", Flag),
        (b'd', "delete", Flag),
        (b'n', "dry-run", Flag),
        (b'u', "set-upstream", Flag),
        (b'v', "verbose", Flag),
        (b'q', "quiet", Flag),
        (b'o', "push-option", Required),
    ],
    longs: &[
        ("force", "force", Flag),
        ("force-with-lease", "force-with-lease", Optional),
        ("force-if-includes", "force-if-includes", Flag),
        ("delete", "delete", Flag),
        ("mirror", "mirror", Flag),
        ("all", "all", Flag),
        ("tags", "tags", Flag),
        ("prune", "prune", Flag),
        ("dry-run", "dry-run", Flag),
        ("set-upstream", "set-upstream", Flag),
        ("no-verify", "no-verify", Flag),
        ("verbose", "verbose", Flag),
        ("quiet", "quiet", Flag),
        ("push-option", "push-option", Required),
        ("repo", "repo", Required),
        ("receive-pack", "receive-pack", Required),
    ],
    stop_at_operand: false,
};

const GIT_RESET: Table = Table {
    shorts: &[(b'q', "quiet", Flag), (b'p', "patch", Flag)],
    longs: &[
        ("hard", "hard", Flag),
        ("soft", "soft", Flag),
        ("mixed", "mixed", Flag),
        ("keep", "keep", Flag),
        ("merge", "merge", Flag),
        ("quiet", "quiet", Flag),
        ("patch", "patch", Flag),
        ("recurse-submodules", "recurse-submodules", Optional),
    ],
    stop_at_operand: false,
};

const GIT_CLEAN: Table = Table {
    shorts: &[
        (b'f', "force", Flag),
        (b'd', "directories", Flag),
        (b'x', "ignored-too", Flag),
        (b'X', "only-ignored", Flag),
        (b'n', "dry-run", Flag),
        (b'q', "quiet", Flag),
        (b'i', "interactive", Flag),
        (b'e', "exclude", Required),
    ],
    longs: &[
        ("force", "force", Flag),
        ("dry-run", "dry-run", Flag),
        ("quiet", "quiet", Flag),
        ("interactive", "interactive", Flag),
        ("exclude", "exclude", Required),
    ],
    stop_at_operand: false,
};

const GIT_BRANCH: Table = Table {
    shorts: &[
        (b'd', "delete", Flag),
        (b'f', "force", Flag),
        (b'm', "move", Flag),
        (b'c', "copy", Flag),
        (b'r', "remotes", Flag),
        (b'a', "all", Flag),
        (b'v', "verbose", Flag),
        (b'q', "quiet", Flag),
        (b't', "track", Flag),
        (b'u', "set-upstream-to", Required),
    ],
    longs: &[
        ("delete", "delete", Flag),
        ("force", "force", Flag),
        ("move", "move", Flag),
        ("copy", "copy", Flag),
        ("remotes", "remotes", Flag),
        ("all", "all", Flag),
        ("verbose", "verbose", Flag),
        ("quiet", "quiet", Flag),
        ("track", "track", Optional),
        ("set-upstream-to", "set-upstream-to", Required),
    ],
    stop_at_operand: false,
};

/// The table for `program` (and its subcommand, for git), if Airlock has one.
pub(crate) fn table(program: &str, subcommand: Option<&str>) -> Option<&'static Table> {
    match (program, subcommand) {
        ("rm", _) => Some(&RM),
        ("chmod", _) => Some(&CHMOD),
        ("chown" | "chgrp", _) => Some(&CHOWN),
        ("cp", _) => Some(&CP),
        ("mv", _) => Some(&MV),
        ("git", None) => Some(&GIT),
        ("git", Some("push")) => Some(&GIT_PUSH),
        ("git", Some("reset")) => Some(&GIT_RESET),
        ("git", Some("clean")) => Some(&GIT_CLEAN),
        ("git", Some("branch")) => Some(&GIT_BRANCH),
        _ => None,
    }
}

/// Short letters that stand for two names at once.
fn implied(program: &str, subcommand: Option<&str>, letter: u8) -> &'static [&'static str] {
    match (program, subcommand, letter) {
        // `git branch -D` is `--delete --force`, `-M` `--move --force`.
        ("git", Some("branch"), b'D') => &["delete", "force"],
        ("git", Some("branch"), b'M') => &["move", "force"],
        ("git", Some("branch"), b'C') => &["copy", "force"],
        _ => &[],
    }
}

/// A command's arguments read as options and operands.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Options by name (long names for programs with a table).
    pub options: BTreeSet<String>,
    /// Operands, in order.
    pub operands: Vec<Arg>,
    /// Index in the arguments just past the options, for tables that stop
    /// at the first operand (where the subcommand starts).
    pub rest: usize,
    /// Whether an argument known only at run time stands where an option may.
    pub unknown: bool,
}

/// Reads `args` as `program`'s getopt would.
pub(crate) fn parse(program: &str, subcommand: Option<&str>, args: &[Arg]) -> Parsed {
    let table = table(program, subcommand);
    let mut parsed = Parsed { rest: args.len(), ..Parsed::default() };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(text) = arg.literal() else {
            // `"$x"` may be `-rf`; after `--` or where an option takes it as
            // its argument it is not read here.
            if arg.may_be_option() {
                parsed.unknown = true;
            }
            parsed.operands.push(arg.clone());
            continue;
        };
        if text == "--" {
            parsed.operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            match table {
                None => {
                    parsed.options.insert(name.to_owned());
                }
                Some(table) => {
                    if let Some((canonical, arity)) = long_option(table, name) {
                        parsed.options.insert(canonical.to_owned());
                        if arity == Required && !attached {
                            i += 1;
                        }
                    }
                }
            }
            continue;
        }
        if text.len() > 1 && text.starts_with('-') {
            let letters = &text.as_bytes()[1..];
            for (at, &letter) in letters.iter().enumerate() {
                for name in implied(program, subcommand, letter) {
                    parsed.options.insert((*name).to_owned());
                }
                match table {
                    None => {
                        parsed.options.insert(char::from(letter).to_string());
                    }
                    Some(table) => {
                        let Some(&(_, name, arity)) = table.shorts.iter().find(|(l, ..)| *l == letter) else {
                            continue;
                        };
                        parsed.options.insert(name.to_owned());
                        if arity != Flag {
                            // The rest of the cluster is the argument, or the next word.
                            if at + 1 == letters.len() && arity == Required {
                                i += 1;
                            }
                            break;
                        }
                    }
                }
            }
            continue;
        }
        if table.is_some_and(|t| t.stop_at_operand) {
            parsed.rest = i - 1;
            parsed.operands.extend(args[i - 1..].iter().cloned());
            break;
        }
        parsed.operands.push(arg.clone());
    }
    parsed
}

/// The option a long spelling names: exact, or the one it is an
/// unambiguous prefix of, as getopt_long takes it.
fn long_option(table: &Table, spelled: &str) -> Option<(&'static str, Arity)> {
    if let Some(&(_, name, arity)) = table.longs.iter().find(|(s, ..)| *s == spelled) {
        return Some((name, arity));
    }
    if spelled.is_empty() {
        return None;
    }
    let mut candidates = table.longs.iter().filter(|(s, ..)| s.starts_with(spelled));
    let &(_, name, arity) = candidates.next()?;
    // Prefixes of aliases of one option are not ambiguous.
    candidates.all(|&(_, other, _)| other == name).then_some((name, arity))
}

/// The name a rule's option means for `program`: its long name, for a
/// table's short letter or long spelling; as written for other programs.
pub(crate) fn rule_option(program: &str, subcommand: Option<&str>, written: &str) -> Result<String, String> {
    let bare = written.trim_start_matches('-');
    let Some(table) = table(program, subcommand) else {
        return if bare.is_empty() { Err("an option name is empty".into()) } else { Ok(bare.to_owned()) };
    };
    if let [letter] = bare.as_bytes()
        && let Some(&(_, name, _)) = table.shorts.iter().find(|(l, ..)| l == letter)
    {
        return Ok(name.to_owned());
    }
    if let Some(&(_, name, _)) = table.longs.iter().find(|(s, ..)| *s == bare) {
        return Ok(name.to_owned());
    }
    let mut known: Vec<&str> = table.longs.iter().map(|(_, name, _)| *name).collect();
    known.dedup();
    let command = match subcommand {
        Some(sub) => format!("{program} {sub}"),
        None => program.to_owned(),
    };
    Err(format!("{command} has no option {written:?}; its options are: {}", known.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Arg> {
        words.iter().map(|w| Arg::plain(w)).collect()
    }

    fn options(program: &str, words: &[&str]) -> Vec<String> {
        parse(program, None, &args(words)).options.into_iter().collect()
    }

    #[test]
    fn every_spelling_of_rm_recursive_force_reads_the_same() {
        for spelling in [
            &["-rf", "/x"][..],
            &["-fr", "/x"],
            &["-r", "-f", "/x"],
            &["-R", "-f", "/x"],
            &["--recursive", "--force", "/x"],
            &["--rec", "--fo", "/x"],
            &["/x", "-r", "-f"],
        ] {
            assert_eq!(options("rm", spelling), ["force", "recursive"], "{spelling:?}");
        }
        assert_eq!(options("rm", &["-rfv"]), ["force", "recursive", "verbose"]);
        let after_dashes = parse("rm", None, &args(&["--", "-rf"]));
        assert!(after_dashes.options.is_empty());
        assert_eq!(after_dashes.operands, args(&["-rf"]));
    }

    #[test]
    fn option_arguments_are_not_read_as_options_or_operands() {
        let parsed = parse("cp", None, &args(&["-S", "-rf", "-t", "/dst", "a"]));
        assert_eq!(parsed.options.into_iter().collect::<Vec<_>>(), ["suffix", "target-directory"]);
        assert_eq!(parsed.operands, args(&["a"]));
        let attached = parse("cp", None, &args(&["-S.bak", "-r", "a", "b"]));
        assert_eq!(attached.options.into_iter().collect::<Vec<_>>(), ["recursive", "suffix"]);
    }

    #[test]
    fn ambiguous_long_prefixes_name_nothing() {
        assert_eq!(options("rm", &["--no"]), ["no-preserve-root"]);
        // chown has --no-dereference and --no-preserve-root.
        assert!(options("chown", &["--no"]).is_empty());
        // Aliases of one option are one option.
        assert_eq!(options("chmod", &["--s"]), ["silent"]);
    }

    #[test]
    fn git_reads_global_options_then_the_subcommand() {
        let global = parse("git", None, &args(&["-C", "/repo", "--no-pager", "push", "-f", "origin"]));
        assert_eq!(global.rest, 3);
        let push = parse("git", Some("push"), &args(&["-f", "origin"]));
        assert_eq!(push.options.into_iter().collect::<Vec<_>>(), ["force"]);
        let delete = parse("git", Some("branch"), &args(&["-D", "topic"]));
        assert_eq!(delete.options.into_iter().collect::<Vec<_>>(), ["delete", "force"]);
    }

    #[test]
    fn programs_without_a_table_get_letters_and_long_names() {
        assert_eq!(options("kill", &["-9", "1"]), ["9"]);
        assert_eq!(options("systemctl", &["--now", "-q", "stop", "x"]), ["now", "q"]);
    }

    #[test]
    fn rule_options_are_named_as_the_program_names_them() {
        assert_eq!(rule_option("rm", None, "r").unwrap(), "recursive");
        assert_eq!(rule_option("rm", None, "--force").unwrap(), "force");
        assert_eq!(rule_option("chmod", None, "quiet").unwrap(), "silent");
        assert!(rule_option("rm", None, "recurse").unwrap_err().contains("rm has no option \"recurse\""));
        assert_eq!(rule_option("kubectl", None, "force").unwrap(), "force");
    }
}
