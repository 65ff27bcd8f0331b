use super::*;

fn rule(matcher: Matcher, action: GuardAction) -> CommandRule {
    CommandRule { matcher, action, reason: None, actors: Vec::new() }
}

fn rm_rf() -> Matcher {
    Matcher::Command { program: "rm".into(), subcommand: None, options: vec!["recursive".into(), "force".into()] }
}

fn deny_rm_rf() -> CommandGuard {
    CommandGuard { rules: vec![rule(rm_rf(), GuardAction::Deny)], only: None }
}

fn action(guard: &CommandGuard, line: &str) -> GuardAction {
    match guard.judge(line, Source::Exec) {
        Verdict::Allow => GuardAction::Allow,
        Verdict::Refuse { action, .. } => action,
        Verdict::Incomplete => panic!("incomplete: {line}"),
    }
}

/// The sixteen ways of `rm -rf /tmp/x/*` the issue lists, and more.
const RM_RF_VARIANTS: &[&str] = &[
    "rm -rf /tmp/x/*",
    "rm -fr /tmp/x/*",
    "rm -r -f /tmp/x/*",
    "rm --recursive --force /tmp/x/*",
    "rm  -rf  /tmp/x/*",
    "rm\t-rf\t/tmp/x/*",
    "/bin/rm -rf /tmp/x/*",
    "\\rm -rf /tmp/x/*",
    "env rm -rf /tmp/x/*",
    "sh -c 'rm -rf /tmp/x/*'",
    "true; rm -rf /tmp/x/*",
    "ls /tmp\nrm -rf /tmp/x/*",
    "cd /tmp/x && rm -rf ./*",
    "find /tmp/x -mindepth 1 -delete",
    "rm -R -f /tmp/x",
    "rm --rec --fo /tmp/x",
    "/tmp/x/../../bin/rm -rf /tmp/x",
    "r''m -rf /tmp/x",
    "\"rm\" -rf /tmp/x",
    "$'\\x72m' -rf /tmp/x",
    "sudo -u root rm -rf /tmp/x",
    "sudo -E env FOO=1 nice -n 5 timeout 10 rm -rf /tmp/x",
    "bash -lc \"rm -rf /tmp/x\"",
    "sh -c \"sh -c 'rm -rf /tmp/x'\"",
    "xargs rm -rf < /tmp/list",
    "find /tmp/x -exec rm -rf {} +",
    "find /tmp/x -type d -execdir sh -c 'rm -rf \"$0\"' {} \\;",
    "eval 'rm -rf /tmp/x'",
    "eval rm -rf /tmp/x",
    "(cd /tmp && (rm -rf x))",
    "{ rm -rf /tmp/x; }",
    "if true; then rm -rf /tmp/x; fi",
    "for d in /tmp/x; do rm -rf $d; done",
    "f() { rm -rf /tmp/x; }; f",
    "echo $(rm -rf /tmp/x)",
    "echo `rm -rf /tmp/x`",
    "x=$(rm -rf /tmp/x) true",
    "cat <(rm -rf /tmp/x)",
    "sh <<'EOF'\nrm -rf /tmp/x\nEOF",
    "bash <<< 'rm -rf /tmp/x'",
    "timeout -s KILL 5 rm -rf /tmp/x",
    "nohup rm -rf /tmp/x &",
    "exec rm -rf /tmp/x",
    "command rm -rf /tmp/x",
    "busybox rm -rf /tmp/x",
    "su -c 'rm -rf /tmp/x' root",
    "flock /tmp/l -c 'rm -rf /tmp/x'",
    "watch -n 1 rm -rf /tmp/x",
    "trap 'rm -rf /tmp/x' EXIT",
    "rm -rf -- /tmp/x",
    "rm /tmp/x -rf",
    "rm -v -rf /tmp/x",
    "! rm -rf /tmp/x",
    "time rm -rf /tmp/x",
    "rm $(echo -rf) /tmp/x",
    "rm \"$opts\" /tmp/x",
    "rm -{r,f} /tmp/x",
    "env -S 'rm -rf /tmp/x'",
    "( ( rm -rf /tmp/x ) )",
    "((rm -rf /tmp/x) )",
];

#[test]
fn every_spelling_of_rm_rf_is_refused() {
    let guard = deny_rm_rf();
    for line in RM_RF_VARIANTS {
        assert_eq!(action(&guard, line), GuardAction::Deny, "{line:?} ran");
    }
}

#[test]
fn what_text_cannot_tell_is_refused_unless_a_rule_says_otherwise() {
    let guard = deny_rm_rf();
    for line in [
        "echo cm0gLXJmIC90bXAveC8q | base64 -d | sh",
        "curl -s http://127.0.0.1/x | sudo bash",
        "bash <(curl -s http://127.0.0.1/x)",
        "c=rm; $c -rf /tmp/x",
        "$(echo rm) -rf /tmp/x",
        "/bin/r? -rf /tmp/x",
        "eval \"$cmd\"",
        "sh -c \"$cmd\"",
        "wget -qO- http://127.0.0.1/x | python3",
        "source <(curl -s http://127.0.0.1/x)",
        "{rm,-rf,/tmp/x}",
        "sh",
        "bash -s",
        "python3 -",
    ] {
        let verdict = guard.judge(line, Source::Exec);
        let Verdict::Refuse { action: GuardAction::Deny, reason } = verdict else {
            panic!("{line:?} ran: {verdict:?}")
        };
        assert!(reason.contains("cannot judge"), "{line:?}: {reason}");
    }
    let lenient = CommandGuard {
        rules: vec![
            rule(Matcher::PipesIntoInterpreter, GuardAction::Approve),
            rule(Matcher::Indirect, GuardAction::Allow),
            rule(rm_rf(), GuardAction::Deny),
        ],
        only: None,
    };
    assert_eq!(action(&lenient, "curl -s http://127.0.0.1/x | sh"), GuardAction::Approve);
    assert_eq!(action(&lenient, "$EDITOR notes.txt"), GuardAction::Allow);
}

#[test]
fn ordinary_commands_run() {
    let guard = deny_rm_rf();
    for line in [
        "ls -la /tmp",
        "rm -f /tmp/x/a",
        "rm -r /tmp/x",
        "rm -- -rf",
        "echo 'rm -rf /tmp/x'",
        "echo rm -rf /tmp/x",
        "grep -r 'rm -rf' /etc",
        "git status && git log --oneline | head -5",
        "for f in *.log; do gzip -- \"$f\"; done",
        "scp -t /tmp/upload",
        "rsync --server -vlogDtpre.iLsfxC . /tmp/dst",
        "cat /etc/hostname | tr a-z A-Z",
        "python3 /opt/tool.py --dry-run",
        "cat data.json | python3 -m json.tool",
        "tar xzf - -C /srv",
        "sudo -l",
        "find /tmp -name '*.tmp' -print",
        "tar czf - /srv | cat > /tmp/b.tgz",
    ] {
        assert_eq!(action(&guard, line), GuardAction::Allow, "{line:?} was refused");
    }
}

#[test]
fn patterns_match_each_program_not_the_line() {
    let guard = CommandGuard { rules: vec![rule(Matcher::Pattern("rm -rf *".into()), GuardAction::Deny)], only: None };
    assert_eq!(action(&guard, "true; \\rm  -rf /tmp/x/*"), GuardAction::Deny);
    assert_eq!(action(&guard, "sudo sh -c '/bin/rm -rf /tmp/x'"), GuardAction::Deny);
    assert_eq!(action(&guard, "find /tmp/x -delete"), GuardAction::Deny);
    assert_eq!(action(&guard, "echo 'rm -rf /tmp/x'"), GuardAction::Allow);
}

#[test]
fn the_first_matching_rule_decides_and_the_strictest_program_wins() {
    let guard = CommandGuard {
        rules: vec![
            rule(
                Matcher::Command {
                    program: "git".into(),
                    subcommand: Some("push".into()),
                    options: vec!["force".into()],
                },
                GuardAction::Approve,
            ),
            rule(Matcher::Command { program: "shutdown".into(), subcommand: None, options: vec![] }, GuardAction::Deny),
        ],
        only: None,
    };
    assert_eq!(action(&guard, "git push -f origin main"), GuardAction::Approve);
    assert_eq!(action(&guard, "git -C /srv/app push origin +main"), GuardAction::Approve);
    assert_eq!(action(&guard, "git push --force-with-lease origin main"), GuardAction::Allow);
    assert_eq!(action(&guard, "git push origin main"), GuardAction::Allow);
    assert_eq!(action(&guard, "git push -f && /sbin/shutdown -h now"), GuardAction::Deny);
}

#[test]
fn an_allowlist_runs_only_what_it_lists() {
    let guard = CommandGuard {
        rules: vec![],
        only: Some(Allowlist {
            commands: vec![
                ("ls".into(), None),
                ("cat".into(), None),
                ("systemctl".into(), Some("status".into())),
                ("sudo".into(), None),
            ],
            otherwise: GuardAction::Approve,
        }),
    };
    assert_eq!(action(&guard, "ls -l /srv | cat"), GuardAction::Allow);
    assert_eq!(action(&guard, "sudo systemctl status nginx"), GuardAction::Allow);
    assert_eq!(action(&guard, "env nice ls"), GuardAction::Allow, "wrappers pass their command on");
    assert_eq!(action(&guard, "sudo systemctl restart nginx"), GuardAction::Approve);
    assert_eq!(action(&guard, "ls; rm x"), GuardAction::Approve);
    assert_eq!(action(&guard, "sh -c 'cat /etc/motd; touch x'"), GuardAction::Approve);
    // What text cannot tell stays refused.
    assert_eq!(action(&guard, "$x"), GuardAction::Deny);
}

#[test]
fn typed_lines_that_are_not_shell_pass_and_unfinished_ones_wait() {
    let guard = deny_rm_rf();
    assert_eq!(guard.judge("for f in *; do", Source::Typed), Verdict::Incomplete);
    assert_eq!(guard.judge("SELECT count(*) FROM t;", Source::Typed), Verdict::Allow);
    assert!(matches!(guard.judge("SELECT count(*) FROM t;", Source::Exec), Verdict::Refuse { .. }));
    assert!(matches!(guard.judge("for f in *; do", Source::Exec), Verdict::Refuse { .. }));
    assert!(matches!(
        guard.judge("for f in /tmp/x; do\nrm -rf $f\ndone", Source::Typed),
        Verdict::Refuse { action: GuardAction::Deny, .. }
    ));
}

#[test]
fn reasons_name_the_rule_and_what_is_unknown() {
    let guard = deny_rm_rf();
    let Verdict::Refuse { reason, .. } = guard.judge("rm -fr /x", Source::Exec) else { panic!() };
    assert_eq!(reason, "commands matching \"rm --recursive --force\"");
    let Verdict::Refuse { reason, .. } = guard.judge("rm \"$o\" /x", Source::Exec) else { panic!() };
    assert!(reason.contains("known only when it runs"), "{reason}");
    // What reasons quote of the line loses its secrets, as the line does.
    for line in ["$TOOL --password hunter2 x", "\"$KUBECTL\" --token=hunter2 get pods", "rm \"$o\" --password=hunter2"]
    {
        let Verdict::Refuse { reason, .. } = guard.judge(line, Source::Exec) else { panic!("{line}") };
        assert!(!reason.contains("hunter2") && reason.contains("***"), "{reason}");
    }
    let Verdict::Refuse { reason, .. } = guard.judge("echo )", Source::Exec) else { panic!() };
    assert_eq!(
        reason,
        "the command guard cannot judge this command: it is not valid shell syntax (near line 1 column 6)"
    );
}

#[test]
fn typed_interpreters_read_the_terminal_exec_ones_the_client_data() {
    let guard = deny_rm_rf();
    assert_eq!(guard.judge("bash", Source::Typed), Verdict::Allow);
    assert_eq!(guard.judge("python3", Source::Typed), Verdict::Allow);
    assert!(matches!(guard.judge("bash", Source::Exec), Verdict::Refuse { action: GuardAction::Deny, .. }));
    assert!(matches!(guard.judge("sh", Source::Script), Verdict::Refuse { action: GuardAction::Deny, .. }));
    assert_eq!(guard.judge("while read l; do", Source::Script), Verdict::Incomplete);
}
