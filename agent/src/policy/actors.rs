//! `[[actor]]`: what may be running behind a connection, as opposed to who
//! runs it — an AI coding agent, a bot, a script. A connection made by an
//! actor is held to the rules that name it (`actors = [...]` in access and
//! guardrail rules); rules that name no actor are for people themselves.
//!
//! ```toml
//! [[actor]]
//! name = "coding-agent"
//! executables = ["*/bin/aider"]         # the connecting process or an ancestor runs this (glob over the exe path)
//! scripts = ["*/node_modules/@anthropic-ai/claude-code/*"]  # an interpreter (node, python, ruby, perl, a shell…)
//!                                       # running a script at a matching path
//! modules = ["aider"]                   # `python -m aider`
//! cgroups = ["/system.slice/agent-*.service"]  # the connecting process's cgroup (globs)
//! environment = ["AIRLOCK_ACTOR=coding-agent"]  # set by a launching wrapper, in the process or an ancestor
//! run_by_groups = ["*"]                 # who may start commands as this actor with
//! run_by_users = []                     #   `airlock run --actor coding-agent -- COMMAND…`
//! taint_session = true                  # once it ran in a login session, every later connection
//!                                       # from that session is its (a tmux server started before…)
//! confine = true                        # its `airlock run`s cannot hand commands to the person's services
//! hide = ["~/.config/my-daemon/socket"] # with confine: more paths its runs do not see
//! ```
//!
//! Ancestry matching is the convenient form; `airlock run --actor` is the
//! strong one: the command runs in a cgroup of Airlock's that nothing in it
//! can leave, whatever it runs.

use serde::Deserialize;
use toml::Spanned;

use crate::source::SourceLocation;

/// Most actors a policy may define.
pub const MAX_ACTORS: usize = 64;

/// An actor, as policy recognises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorDefinition {
    /// Name rules use (`actors = [...]`) and records carry.
    pub name: String,
    /// Globs over the executable path of the connecting process or an ancestor.
    pub executables: Vec<String>,
    /// Globs over the script an interpreter in the ancestry runs.
    pub scripts: Vec<String>,
    /// Python modules (`python -m NAME`), globs.
    pub modules: Vec<String>,
    /// Globs over the connecting process's cgroup path.
    pub cgroups: Vec<String>,
    /// `NAME=VALUE` pairs, one of which the process or an ancestor has in its environment.
    pub environment: Vec<(String, String)>,
    /// Who may start commands as this actor (`airlock run --actor`), by user name.
    pub run_by_users: Vec<String>,
    /// … and by group.
    pub run_by_groups: Vec<String>,
    /// Once the actor ran in a login session (audit session), later
    /// connections from that session are the actor's too, whatever made
    /// them: what it handed to a process outside its tree (a tmux or
    /// screen server, a background job) stays its own.
    pub taint_session: bool,
    /// Its `airlock run`s are confined: they do not see the person's Unix
    /// sockets (tmux, user manager, D-Bus, ssh-agent, container runtime),
    /// reach no service on the host but protected targets (sshd), cannot
    /// trace or signal the person's other processes, and gain no privilege
    /// by exec (setuid `at`, `crontab`, `sudo`). See `actors::confine`.
    pub confine: bool,
    /// More paths a confined run does not see (absolute, or `~/…` in the
    /// person's home): sockets or directories of the person's own daemons.
    pub hide: Vec<String>,
    /// Free text from the policy file.
    pub description: Option<String>,
    /// Where its `[[actor]]` table starts.
    pub location: SourceLocation,
}

impl ActorDefinition {
    /// Whether the process tree is looked at, not only `airlock run`'s cgroups.
    pub fn matches_ancestry(&self) -> bool {
        !(self.executables.is_empty()
            && self.scripts.is_empty()
            && self.modules.is_empty()
            && self.cgroups.is_empty()
            && self.environment.is_empty())
    }
}

/// `[[actor]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActor {
    name: Spanned<String>,
    #[serde(default)]
    executables: Vec<String>,
    #[serde(default)]
    scripts: Vec<String>,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    cgroups: Vec<String>,
    #[serde(default)]
    environment: Vec<Spanned<String>>,
    #[serde(default)]
    run_by_users: Vec<String>,
    #[serde(default)]
    run_by_groups: Vec<String>,
    #[serde(default)]
    taint_session: bool,
    #[serde(default)]
    confine: bool,
    #[serde(default)]
    hide: Vec<Spanned<String>>,
    description: Option<String>,
}

/// Whether `name` may name an actor: what `airlock run`'s cgroup names can
/// carry unambiguously.
pub fn valid_actor_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// Checks one `[[actor]]`; problems go to `error` with their byte offset.
pub(super) fn actor(raw: RawActor, location: SourceLocation, error: &mut dyn FnMut(usize, String)) -> ActorDefinition {
    let name_at = raw.name.span().start;
    let name = raw.name.into_inner();
    if !valid_actor_name(&name) {
        let message = format!(
            "invalid actor name {name:?}: use lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 48 characters"
        );
        error(name_at, message);
    }
    let mut environment = Vec::with_capacity(raw.environment.len());
    for pair in raw.environment {
        match pair.get_ref().split_once('=') {
            Some((variable, value)) if !variable.is_empty() && !variable.contains('\0') && !value.contains('\0') => {
                environment.push((variable.to_owned(), value.to_owned()));
            }
            _ => error(pair.span().start, format!("environment entry {:?} must read NAME=VALUE", pair.get_ref())),
        }
    }
    for module in &raw.modules {
        if module.is_empty() || module.contains('/') {
            error(name_at, format!("module {module:?} must be a Python module name, like aider or pkg.cli"));
        }
    }
    for path in raw.executables.iter().chain(&raw.scripts) {
        if !path.starts_with('/') && !path.starts_with('*') {
            error(
                name_at,
                format!(
                    "{path:?} must be an absolute path, or start with * (executables and scripts are matched by full path)"
                ),
            );
        }
    }
    for cgroup in &raw.cgroups {
        if !cgroup.starts_with('/') && !cgroup.starts_with('*') {
            error(
                name_at,
                format!("cgroup {cgroup:?} must be a path from the cgroup2 root, like /system.slice/bot.service"),
            );
        }
    }
    for hidden in &raw.hide {
        let path = hidden.get_ref();
        let relative_parts = path.split('/').any(|part| part == ".." || part == ".");
        if !(path.starts_with('/') || path.starts_with("~/")) || relative_parts || path.contains('\0') {
            error(
                hidden.span().start,
                format!("hide {path:?} must be an absolute path or start with ~/, without . or .."),
            );
        }
    }
    if !raw.hide.is_empty() && !raw.confine {
        error(name_at, "hide only says what a confined actor's runs do not see: set confine = true".into());
    }
    let definition = ActorDefinition {
        name,
        executables: raw.executables,
        scripts: raw.scripts,
        modules: raw.modules,
        cgroups: raw.cgroups,
        environment,
        run_by_users: raw.run_by_users,
        run_by_groups: raw.run_by_groups,
        taint_session: raw.taint_session,
        confine: raw.confine,
        hide: raw.hide.into_iter().map(Spanned::into_inner).collect(),
        description: raw.description,
        location,
    };
    if !definition.matches_ancestry() && definition.run_by_users.is_empty() && definition.run_by_groups.is_empty() {
        error(
            name_at,
            "actor is never recognised: give executables, scripts, modules, cgroups or environment, or who may `airlock run` it (run_by_users, run_by_groups)".into(),
        );
    }
    definition
}

#[cfg(test)]
mod tests {
    use crate::{
        guardrails::{Classification, GuardAction, StatementClass},
        policy::{Decision, Policy, Subject},
    };

    const TARGET: &str =
        "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.1\"]\n";

    fn load(text: &str) -> Result<Policy, Vec<String>> {
        Policy::from_sources([(std::path::Path::new("a.toml"), text)])
            .map_err(|e| e.errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn actors_load_and_their_mistakes_are_reported_where_they_are() {
        let policy = load(&format!(
            "[[actor]]\nname = \"coding-agent\"\nscripts = [\"*/claude-code/cli.js\"]\nmodules = [\"aider\"]\n\
             environment = [\"AIRLOCK_ACTOR=coding-agent\"]\nrun_by_groups = [\"*\"]\n\n{TARGET}\
             [[target.access]]\naction = \"allow\"\nusers = [\"alice\"]\nactors = [\"coding-agent\"]\n"
        ))
        .unwrap();
        let actor = &policy.actors[0];
        assert_eq!(actor.environment, [("AIRLOCK_ACTOR".to_owned(), "coding-agent".to_owned())]);
        assert_eq!(policy.targets[0].access[0].actors, ["coding-agent"]);

        let errors = load(&format!(
            "[[actor]]\nname = \"Bad Name\"\nexecutables = [\"aider\"]\nenvironment = [\"NOVALUE\"]\n\n\
             [[actor]]\nname = \"idle\"\n\n{TARGET}[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\nactors = [\"ghost\"]\n"
        ))
        .unwrap_err();
        assert!(errors[0].starts_with("a.toml:2:8: invalid actor name"), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("\"aider\" must be an absolute path")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("a.toml:4:16: environment entry \"NOVALUE\"")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("a.toml:7:8: actor is never recognised")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("no [[actor]] named \"ghost\" is defined")), "{errors:?}");
        let confined = load(&format!(
            "[[actor]]\nname = \"a\"\nrun_by_users = [\"*\"]\nconfine = true\nhide = [\"~/.ssh/cm\", \"/srv/x.sock\"]\n{TARGET}"
        ))
        .unwrap();
        assert!(confined.actors[0].confine);
        assert_eq!(confined.actors[0].hide, ["~/.ssh/cm", "/srv/x.sock"]);
        let errors = load(&format!(
            "[[actor]]\nname = \"a\"\nrun_by_users = [\"*\"]\nhide = [\"relative.sock\", \"/a/../b\"]\n{TARGET}"
        ))
        .unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("a.toml:4:9: hide \"relative.sock\" must be an absolute")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("hide \"/a/../b\"")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("set confine = true")), "{errors:?}");
        let twice = "[[actor]]\nname = \"a\"\nmodules = [\"x\"]\n[[actor]]\nname = \"a\"\nmodules = [\"y\"]\n";
        assert!(load(&format!("{twice}{TARGET}")).unwrap_err()[0].contains("duplicate actor name \"a\""));
    }

    #[test]
    fn an_actor_gets_only_what_rules_naming_it_grant() {
        let policy = load(&format!(
            "[[actor]]\nname = \"coding-agent\"\nmodules = [\"aider\"]\n[[actor]]\nname = \"bot\"\nmodules = [\"bot\"]\n\n\
             {TARGET}[[target.access]]\naction = \"allow\"\nusers = [\"alice\"]\nactors = [\"coding-agent\"]\n\n\
             [[target.access]]\naction = \"allow\"\nusers = [\"alice\", \"bob\"]\n"
        ))
        .unwrap();
        let groups = Vec::new();
        let as_actor = |user, actor| Subject { actor, ..Subject::new(user, &groups) };
        assert_eq!(policy.decide(0, &as_actor("alice", None)), Decision::Allow { rule: 1 }, "alice herself");
        assert_eq!(policy.decide(0, &as_actor("alice", Some("coding-agent"))), Decision::Allow { rule: 0 });
        assert!(matches!(policy.decide(0, &as_actor("alice", Some("bot"))), Decision::Deny { .. }), "not granted");
        assert!(
            matches!(policy.decide(0, &as_actor("bob", Some("coding-agent"))), Decision::Deny { .. }),
            "bob's agent: the actor rule is alice's"
        );
        assert!(matches!(policy.decide(0, &as_actor("alice", Some("unknown"))), Decision::Deny { .. }));
    }

    #[test]
    fn command_and_request_rules_bind_actors_as_guardrails_do() {
        let policy = load(
            "[[actor]]\nname = \"coding-agent\"\nmodules = [\"aider\"]\n\n\
             [[target]]\nname = \"web\"\nprotocol = \"ssh\"\nport = 22\naddresses = [\"10.0.0.9\"]\n\
             [target.ssh]\n[[target.ssh.principal]]\nname = \"deploy\"\nusers = [\"*\"]\n\
             [[target.ssh.command]]\ncommand = \"rm\"\nactors = [\"coding-agent\"]\naction = \"deny\"\n\
             [[target.ssh.command]]\npattern = \"deploy *\"\naction = \"allow\"\n\
             [[target.ssh.command]]\npattern = \"deploy *\"\naction = \"deny\"\n\n\
             [[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.8\"]\n\
             [[target.https.rule]]\nmethods = [\"DELETE\"]\nactors = [\"*\"]\naction = \"deny\"\n",
        )
        .unwrap();
        let commands = &policy.targets[0].ssh.as_ref().unwrap().commands;
        let judge = |guard: &crate::command_guard::CommandGuard, line| {
            matches!(guard.judge(line, crate::command_guard::Source::Exec), crate::command_guard::Verdict::Allow)
        };
        let person = commands.for_actor(None);
        let agent = commands.for_actor(Some("coding-agent"));
        assert!(judge(&person, "rm -rf /tmp/x") && judge(&person, "deploy web"), "people: rm free, deploy allowed");
        assert!(!judge(&agent, "rm -rf /tmp/x"), "the agent's rm is denied");
        assert!(!judge(&agent, "deploy web"), "the allow is for people: the deny behind it binds the agent");
        let rule = &policy.targets[1].https.as_ref().unwrap().rules[0];
        assert!(crate::policy::guard_binds(&rule.actors, rule.action, Some("coding-agent")));
        assert!(!crate::policy::guard_binds(&rule.actors, rule.action, None));

        let ghost = "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.8\"]\n\
                     [[target.https.rule]]\nactors = [\"ghost\"]\naction = \"deny\"\n";
        let errors = load(ghost).unwrap_err();
        assert!(errors[0].contains("names actor \"ghost\", which no [[actor]] defines"), "{errors:?}");
    }

    #[test]
    fn restricting_guardrails_bind_actors_and_allowing_ones_must_name_them() {
        let policy = load(&format!(
            "[[actor]]\nname = \"coding-agent\"\nmodules = [\"aider\"]\n\n{TARGET}\
             [[target.guardrail]]\nclasses = [\"write\"]\nactors = [\"coding-agent\"]\naction = \"approve\"\n\n\
             [[target.guardrail]]\nclasses = [\"drop\"]\ngroups = [\"dba\"]\naction = \"allow\"\n\n\
             [[target.guardrail]]\nclasses = [\"drop\", \"truncate\"]\naction = \"deny\"\n\n\
             [target.approvals]\nusers = [\"bob\"]\n"
        ))
        .unwrap();
        let guardrails = policy.targets[0].guardrails.as_ref().unwrap();
        let dba = vec!["dba".to_owned()];
        let decide = |class, actor| {
            let classification = Classification { classes: [class].into(), ..Classification::default() };
            guardrails.decide(&classification, &Subject { actor, ..Subject::new("alice", &dba) }).action
        };
        assert_eq!(decide(StatementClass::Write, None), GuardAction::Allow);
        assert_eq!(decide(StatementClass::Write, Some("coding-agent")), GuardAction::Approve);
        assert_eq!(decide(StatementClass::Drop, None), GuardAction::Allow, "alice is a DBA");
        assert_eq!(decide(StatementClass::Drop, Some("coding-agent")), GuardAction::Deny, "her agent is not");
        assert_eq!(decide(StatementClass::Truncate, Some("coding-agent")), GuardAction::Deny);
    }
}
