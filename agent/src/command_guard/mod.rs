//! The command guard: what SSH exec requests and typed command lines may run.
//!
//! A command line is parsed as bash parses it ([`syntax`]), and every
//! program it would run is judged ([`invocation`]): each simple command of
//! every list, pipeline, subshell, function body and substitution, by
//! argv\[0\]'s basename, with options read as the program's getopt reads
//! them ([`options`]), through programs that run programs (`env`, `sudo`,
//! `xargs`, `timeout`, `sh -c`, `find -exec`, `eval`, …).
//!
//! Each program gets the action of the first rule that matches it (or,
//! with an allowlist, `otherwise` when it is not listed); what the text
//! leaves to run time — a program named by an expansion, an interpreter fed
//! from a pipe — gets the action of a rule for it, else is refused; text that
//! cannot be parsed is refused. The line gets the strictest action.
//!
//! What the guard is not: it reads text, not what runs. A script on the
//! target, a program copied under another name, code in another language
//! (`python -c`), or data turned into commands at run time in ways the text
//! does not show are outside what it claims; docs/threat-model.md says so.

mod invocation;
mod options;
mod syntax;

pub use self::{
    invocation::{Analysis, Finding, Invocation, Role, analyse},
    syntax::Unparsed,
};
use crate::{glob, guardrails::GuardAction};

/// A target's command rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandGuard {
    /// Rules in file order; for each program, the first that matches decides.
    pub rules: Vec<CommandRule>,
    /// When set, only these programs may run.
    pub only: Option<Allowlist>,
}

/// What happens to programs a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRule {
    /// What the rule matches.
    pub matcher: Matcher,
    /// Allow, hold for approval, or refuse.
    pub action: GuardAction,
    /// Told to the person refused or waiting.
    pub reason: Option<String>,
    /// Actors the rule is for (see [`crate::policy::guard_binds`]).
    pub actors: Vec<String>,
}

/// What a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matcher {
    /// A glob (`*` any text) over a program and its arguments, one space
    /// apart, quoting removed (`rm -rf *`).
    Pattern(String),
    /// A program (and subcommand) with at least these options, by name as
    /// the program reads them: `rm` with `recursive` and `force` matches
    /// `rm -fr`, `rm -r -f`, `/bin/rm --recursive --force`, `find -delete`.
    Command {
        /// argv\[0\]'s basename.
        program: String,
        /// `git push`: the subcommand; for programs without a table, any operand.
        subcommand: Option<String>,
        /// Option names, all of which must be given.
        options: Vec<String>,
    },
    /// A shell or interpreter running a program read from a pipe.
    PipesIntoInterpreter,
    /// A program named only at run time (`$c`, `eval "$x"`).
    Indirect,
}

/// An allowlist: only these programs run; others get `otherwise`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowlist {
    /// `(program, subcommand)`: `git status` is `("git", Some("status"))`.
    pub commands: Vec<(String, Option<String>)>,
    /// What happens to programs not listed: approve or deny.
    pub otherwise: GuardAction,
}

/// Where a command line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An exec request: run by the login shell as it stands, its input
    /// sent by the client.
    Exec,
    /// A line of a shell's input without a terminal (`ssh -T host < script`).
    Script,
    /// A line typed into an interactive session: into the shell, or into
    /// whatever program reads the terminal (psql, a password prompt).
    Typed,
}

/// The guard's decision on a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may run.
    Allow,
    /// Typed, it is unfinished shell syntax: the shell will ask for more.
    Incomplete,
    /// Held for approval or refused, and why.
    Refuse {
        /// [`GuardAction::Approve`] or [`GuardAction::Deny`].
        action: GuardAction,
        /// Told to the person and recorded.
        reason: String,
    },
}

impl CommandGuard {
    /// The guard for sessions made by `actor` (none: a person's own): the
    /// rules that bind it, the allowlist as it is.
    pub fn for_actor(&self, actor: Option<&str>) -> Self {
        let binding = |rule: &&CommandRule| crate::policy::guard_binds(&rule.actors, rule.action, actor);
        Self { rules: self.rules.iter().filter(binding).cloned().collect(), only: self.only.clone() }
    }

    /// Whether the target has any command rule (else nothing is judged).
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty() || self.only.is_some()
    }

    /// Judges a command line.
    pub fn judge(&self, line: &str, source: Source) -> Verdict {
        let analysis = match analyse(line, source != Source::Typed) {
            Ok(analysis) => analysis,
            Err(Unparsed::Incomplete) if source != Source::Exec => return Verdict::Incomplete,
            // Typed lines go to whatever reads the terminal, often not a
            // shell (SQL in psql, a password): what does not parse passes.
            Err(_) if source == Source::Typed => return Verdict::Allow,
            Err(unparsed) => {
                let reason = format!("the command guard cannot judge this command: {unparsed}");
                return Verdict::Refuse { action: GuardAction::Deny, reason };
            }
        };
        let mut strictest: Option<(GuardAction, String)> = None;
        let mut consider = |action: GuardAction, reason: String| {
            if action > strictest.as_ref().map_or(GuardAction::Allow, |(a, _)| *a) {
                strictest = Some((action, reason));
            }
        };
        for invocation in &analysis.invocations {
            if let Some((action, reason)) = self.program_action(invocation) {
                consider(action, reason);
            }
        }
        for finding in &analysis.findings {
            let (action, reason) = self.finding_action(finding);
            consider(action, reason);
        }
        match strictest {
            None => Verdict::Allow,
            Some((action, reason)) => Verdict::Refuse { action, reason },
        }
    }

    fn program_action(&self, invocation: &Invocation) -> Option<(GuardAction, String)> {
        for rule in &self.rules {
            let (matched, described) = match &rule.matcher {
                Matcher::Pattern(pattern) => {
                    (glob::matches(pattern, &invocation.text), format!("commands matching \"{pattern}\""))
                }
                Matcher::Command { program, subcommand, options } => {
                    let (matched, maybe) = command_matches(invocation, program, subcommand.as_deref(), options);
                    let mut described = describe_command(program, subcommand.as_deref(), options);
                    if maybe {
                        described.push_str(&format!(
                            " (\"{}\" has arguments known only when it runs, which may be those options)",
                            quoted(&invocation.text)
                        ));
                    }
                    (matched, described)
                }
                Matcher::PipesIntoInterpreter | Matcher::Indirect => continue,
            };
            if matched {
                return Some((rule.action, rule.reason.clone().unwrap_or(described)));
            }
        }
        let only = self.only.as_ref()?;
        // Wrappers that only pass their command on, and what a program does
        // (find -delete), are judged through the program listed.
        if invocation.role != Role::Direct || only.allows(invocation) {
            return None;
        }
        let reason = format!("\"{}\" is not among the commands this target runs", invocation.program);
        Some((only.otherwise, reason))
    }

    fn finding_action(&self, finding: &Finding) -> (GuardAction, String) {
        let (wanted, reason) = match finding {
            Finding::Indirect(text) => (
                Matcher::Indirect,
                format!(
                    "\"{}\" runs a program named only when it runs, which the command guard cannot judge",
                    quoted(text)
                ),
            ),
            Finding::InterpreterReadsPipe(text) => (
                Matcher::PipesIntoInterpreter,
                format!("\"{}\" runs a program read from a pipe, which the command guard cannot judge", quoted(text)),
            ),
        };
        match self.rules.iter().find(|rule| rule.matcher == wanted) {
            Some(rule) => (rule.action, rule.reason.clone().unwrap_or(reason)),
            None => (GuardAction::Deny, reason),
        }
    }
}

/// Part of a command line quoted in a reason, which is recorded and shown
/// to approvers: its secrets removed first (inside quotes, the redactor
/// would read the part as one word and find no flag in it).
fn quoted(text: &str) -> String {
    crate::redact::shell(text)
}

impl Allowlist {
    fn allows(&self, invocation: &Invocation) -> bool {
        self.commands.iter().any(|(program, subcommand)| {
            *program == invocation.program && subcommand.as_deref().is_none_or(|sub| has_subcommand(invocation, sub))
        })
    }
}

/// Whether `invocation` is `program [subcommand]` with `options`, and
/// whether only because its options cannot all be known.
fn command_matches(
    invocation: &Invocation,
    program: &str,
    subcommand: Option<&str>,
    options: &[String],
) -> (bool, bool) {
    if invocation.program != program || !subcommand.is_none_or(|sub| has_subcommand(invocation, sub)) {
        return (false, false);
    }
    if options.iter().all(|o| invocation.options.contains(o)) {
        return (true, false);
    }
    // Fail closed: `rm "$flags" x` may be `rm -rf x`.
    (invocation.options_unknown, invocation.options_unknown)
}

fn has_subcommand(invocation: &Invocation, sub: &str) -> bool {
    match &invocation.subcommand {
        Some(known) => known == sub,
        None => invocation.operands.iter().any(|o| o == sub),
    }
}

fn describe_command(program: &str, subcommand: Option<&str>, options: &[String]) -> String {
    let mut text = format!("commands matching \"{program}");
    if let Some(sub) = subcommand {
        text.push(' ');
        text.push_str(sub);
    }
    for option in options {
        text.push_str(if option.len() == 1 { " -" } else { " --" });
        text.push_str(option);
    }
    text.push('"');
    text
}

/// The name a rule's option means for `program`, or why it names none.
pub fn rule_option(program: &str, subcommand: Option<&str>, written: &str) -> Result<String, String> {
    options::rule_option(program, subcommand, written)
}

#[cfg(test)]
mod tests;
