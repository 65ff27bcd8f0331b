//! The guardrail layer: every Query and Parse the client sends is
//! classified and allowed, refused, or held for a human's approval.
//!
//! A refused statement is not dropped from the stream: it is replaced by a
//! statement that fails to parse on the server, named by a token only this
//! session knows, and the server's syntax error is rewritten on the way back
//! into Airlock's refusal. The server so stays the one source of protocol
//! state: a refusal inside a transaction aborts it as any error would, an
//! extended-protocol refusal skips to the next Sync, and the client's
//! pipeline stays in step without Airlock forging ReadyForQuery.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use bytes::{BufMut as _, BytesMut};
use serde_json::json;

use super::{
    codec::{Backend, ErrorFields, Frame, Frontend},
    reading::Reading,
};
use crate::{
    approvals::{Approvals, NewRequest},
    audit::{AuditLog, Event},
    daemon::sessions::LiveSession,
    guardrails::{
        Classification, Classifier, Effect, GuardAction, Guardrails, Limited, StatementClass, Verdict, classify,
        parser::Lexing,
    },
    redact,
};

/// SQLSTATE of a refusal: insufficient_privilege, what clients and ORMs
/// already treat as "not allowed".
const REFUSED_SQLSTATE: &str = "42501";

/// What to send upstream for a client frame.
#[derive(Debug)]
pub enum Screened {
    /// The frame as the client sent it.
    Forward,
    /// A stand-in that fails on the server; its error is rewritten into a refusal.
    Replace(Frame),
}

/// A statement held for approval: the caller tells the client, then waits.
pub struct Hold {
    /// Tell the client this at once (a NoticeResponse).
    pub notice: Frame,
    waiter: crate::approvals::Waiter,
    frame: Frame,
}

/// What a verdict comes to for one frame.
pub enum Decision {
    /// Decided now.
    Done(Screened),
    /// Waits for a person: see [`Guard::settle`].
    Held(Box<Hold>),
}

/// The outcome of screening one frame.
pub enum Screening {
    /// Decided now.
    Done(Screened),
    /// Waits for a person: see [`Guard::settle`].
    Held(Box<Hold>),
    /// A write allowed within an effect limit: the relay runs it in a
    /// savepoint to measure it (see [`super::effect`]), and asks
    /// [`Guard::over_limit`] if it goes over.
    Measure(Box<Measure>),
}

impl From<Decision> for Screening {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Done(screened) => Self::Done(screened),
            Decision::Held(hold) => Self::Held(hold),
        }
    }
}

/// A write to measure before it is kept.
#[derive(Clone)]
pub struct Measure {
    /// Its limit, and what happens over it.
    pub limited: Limited,
    /// The write.
    pub effect: Effect,
    /// Its text as decoded, for an approval request.
    sql: String,
}

/// What a session's guardrails need from the agent.
pub struct GuardContext<'a> {
    /// The target's rules.
    pub guardrails: &'a Guardrails,
    /// Agent-wide classification cache.
    pub classifier: &'a Classifier,
    /// Agent-wide pending approval requests.
    pub approvals: &'a Approvals,
    /// The session's just-in-time login, once made: approval requests
    /// show what it can do.
    pub blast_radius: std::sync::OnceLock<crate::blast_radius::summary::Query>,
}

/// One session's guardrail layer.
pub struct Guard<'a> {
    context: &'a GuardContext<'a>,
    session: &'a LiveSession,
    audit: &'a AuditLog,
    /// Lowercase: identifiers in the server's message may be folded.
    token: String,
    next: AtomicU32,
    refusals: Mutex<HashMap<u32, ErrorFields>>,
    deferred: Mutex<Deferred>,
}

/// Limited writes prepared with the extended protocol, measured each time
/// they run: by statement name, and by the portals bound to them.
#[derive(Default)]
struct Deferred {
    statements: HashMap<Vec<u8>, Arc<Measure>>,
    portals: HashMap<Vec<u8>, Arc<Measure>>,
}

impl Deferred {
    /// Notes a Parse; `measure` when it prepares a limited write.
    fn parsed(&mut self, name: &[u8], measure: Option<Measure>) {
        match measure {
            // The server keeps the first statement of a name (a second
            // Parse of it fails), so the first limited one stays.
            Some(measure) if name.is_empty() => drop(self.statements.insert(Vec::new(), Arc::new(measure))),
            Some(measure) => drop(self.statements.entry(name.to_vec()).or_insert_with(|| Arc::new(measure))),
            // An unnamed Parse drops the unnamed statement, whatever becomes of it.
            None if name.is_empty() => drop(self.statements.remove(name)),
            None => {}
        }
    }

    /// Notes a Bind: the portal runs what the statement prepared. A
    /// portal that fails to bind ends with its transaction, which the
    /// failure aborts.
    fn bound(&mut self, portal: &[u8], statement: &[u8]) {
        match self.statements.get(statement) {
            Some(measure) => drop(self.portals.insert(portal.to_vec(), Arc::clone(measure))),
            None => drop(self.portals.remove(portal)),
        }
    }

    /// Notes a Close of a statement (`S`) or portal (`P`).
    fn closed(&mut self, body: &[u8]) {
        let name = body.get(1..).and_then(|rest| rest.split(|&b| b == 0).next()).unwrap_or_default();
        match body.first() {
            Some(b'S') => drop(self.statements.remove(name)),
            Some(b'P') => drop(self.portals.remove(name)),
            _ => {}
        }
    }
}

impl<'a> Guard<'a> {
    /// The layer for `session`.
    pub fn new(context: &'a GuardContext<'a>, session: &'a LiveSession, audit: &'a AuditLog) -> Self {
        let mut nonce = [0u8; 8];
        // Without entropy the token is still unique per session id; it only
        // has to be unlikely to occur in a real server error.
        let _ = getrandom::fill(&mut nonce);
        let token = format!("airlock_refused_{}_", crate::hex::encode(&nonce));
        Self {
            context,
            session,
            audit,
            token,
            next: AtomicU32::new(1),
            refusals: Mutex::new(HashMap::new()),
            deferred: Mutex::new(Deferred::default()),
        }
    }

    /// Screens a frame the client sent, reading its text as `reading` says
    /// the server will; also says whether running it may change how the
    /// session's later text is read.
    pub fn screen(&self, frame: &Frame, reading: Reading) -> (Screening, bool) {
        let (raw, statement) = match Frontend::parse(frame) {
            Ok(Frontend::Query { sql }) => (sql, None),
            Ok(Frontend::Parse { statement, sql }) => (sql, Some(statement)),
            Ok(Frontend::FunctionCall) => {
                let c = Classification::unparsed(
                    "a FunctionCall message calls a server function by its number, which Airlock cannot inspect".into(),
                );
                return (self.decide(frame, "<FunctionCall message>", None, &c), true);
            }
            Ok(Frontend::Bind { portal, statement }) => {
                self.deferred().bound(portal, statement);
                return (Screening::Done(Screened::Forward), false);
            }
            Ok(Frontend::Execute { portal }) => {
                let measure = self.deferred().portals.get(portal).map(|measure| Box::new((**measure).clone()));
                return (measure.map_or(Screening::Done(Screened::Forward), Screening::Measure), false);
            }
            Ok(Frontend::Other) if frame.tag == b'C' => {
                self.deferred().closed(&frame.body);
                return (Screening::Done(Screened::Forward), false);
            }
            Ok(_) => return (Screening::Done(Screened::Forward), false),
            // A Query or Parse that does not frame is not forwarded unread.
            Err(error) if matches!(frame.tag, b'Q' | b'P') => {
                let c = Classification::unparsed(format!("malformed message: {error}"));
                return (self.decide(frame, "<malformed message>", None, &c), true);
            }
            // Other messages carry no SQL; the server refuses a malformed one.
            Err(_) => return (Screening::Done(Screened::Forward), false),
        };
        let (text, classification) = match reading.encoding.decode(raw) {
            Ok(text) => {
                let classification = self.classify(&text, reading);
                (text, classification)
            }
            Err(error) => (String::from_utf8_lossy(raw), Arc::new(Classification::unparsed(error.to_string()))),
        };
        let may_change = classification.may_change_lexing;
        (self.decide(frame, &text, statement, &classification), may_change)
    }

    fn deferred(&self) -> std::sync::MutexGuard<'_, Deferred> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Classifies decoded text. While an earlier statement may still change
    /// how text is read, text with a backslash is read both ways and does
    /// the worst of both, and non-ASCII text, whose decoding may be
    /// changing, is not read at all.
    fn classify(&self, text: &str, reading: Reading) -> Arc<Classification> {
        let classifier = self.context.classifier;
        if !reading.unsettled {
            return classifier.classify(text, reading.lexing);
        }
        if !text.is_ascii() {
            return Arc::new(Classification::unparsed(
                "non-ASCII text sent while an earlier statement that may change client_encoding was still \
                 running; send it once that statement has finished"
                    .into(),
            ));
        }
        let standard = classifier.classify(text, Lexing { backslash_escapes: false });
        if !text.contains('\\') {
            return standard;
        }
        let mut both = (*standard).clone();
        both.merge((*classifier.classify(text, Lexing { backslash_escapes: true })).clone());
        Arc::new(both)
    }

    /// Screens a message too large to hold: only its kind is known.
    pub fn screen_large(&self, tag: u8, len: usize) -> Option<Frame> {
        if !matches!(tag, b'Q' | b'P') {
            return None;
        }
        let classification = classify::too_large(len);
        let sql = format!("<{len}-byte statement, too large to inspect>");
        match self.decide(&Frame { tag, body: Default::default() }, &sql, Some(b""), &classification) {
            Screening::Done(Screened::Forward) => None,
            Screening::Done(Screened::Replace(frame)) => Some(frame),
            // A message too large to hold cannot wait for a person either.
            // Its text is not held, so it cannot be measured either.
            Screening::Measure(measure) => Some(self.refuse(tag, b"", &sql, &measure.limited.unmeasurable(), None)),
            Screening::Held(hold) => {
                self.context.approvals.withdraw(&hold.waiter.request.id);
                let verdict = Verdict::new(
                    GuardAction::Deny,
                    StatementClass::Unparsed,
                    "statements too large to inspect cannot be held for approval".into(),
                );
                Some(self.refuse(tag, b"", &sql, &verdict, None))
            }
        }
    }

    fn decide(&self, frame: &Frame, sql: &str, statement: Option<&[u8]>, c: &Classification) -> Screening {
        if let (b'P', Some(name)) = (frame.tag, statement) {
            self.deferred().parsed(name, None);
        }
        if c.is_empty() {
            return Screening::Done(Screened::Forward);
        }
        let mut verdict = self.context.guardrails.decide(c, &self.session.identity.as_subject());
        let measure = match (verdict.limited.take(), &c.effect) {
            (Some(limited), Some(effect)) => Measure { limited, effect: effect.clone(), sql: sql.to_owned() },
            (Some(limited), None) => return self.act(frame, sql, statement, limited.unmeasurable()).into(),
            (None, _) => return self.act(frame, sql, statement, verdict).into(),
        };
        match (frame.tag, statement) {
            (b'Q', _) => Screening::Measure(Box::new(measure)),
            // A prepared write is measured each time it runs, at Execute.
            (b'P', Some(name)) => {
                self.deferred().parsed(name, Some(measure));
                Screening::Done(Screened::Forward)
            }
            _ => self.act(frame, sql, statement, measure.limited.unmeasurable()).into(),
        }
    }

    /// A measured write went over its limit (and was rolled back): `why`.
    pub fn over_limit(&self, frame: &Frame, measure: Measure, why: &str) -> Decision {
        let verdict = measure.limited.exceeded(why);
        self.act(frame, &measure.sql, None, verdict)
    }

    /// A limited write that cannot be measured where it stands: `why`.
    pub fn unmeasured(&self, frame: &Frame, measure: Measure, why: &str) -> Decision {
        let verdict = measure.limited.cannot_measure(why);
        self.act(frame, &measure.sql, None, verdict)
    }

    /// Carries out a verdict on a frame.
    fn act(&self, frame: &Frame, sql: &str, statement: Option<&[u8]>, verdict: Verdict) -> Decision {
        let identity = &self.session.identity;
        crate::metrics::global().statement(&self.session.target.name, verdict.class.as_str(), verdict.action.as_str());
        match verdict.action {
            GuardAction::Allow => Decision::Done(Screened::Forward),
            GuardAction::Deny => Decision::Done(Screened::Replace(self.refuse(
                frame.tag,
                statement.unwrap_or_default(),
                sql,
                &verdict,
                None,
            ))),
            GuardAction::Approve => {
                let Some(policy) = &self.context.guardrails.approvals else {
                    // The loader insists on approvers; fail closed all the same.
                    let replacement = self.refuse(frame.tag, statement.unwrap_or_default(), sql, &verdict, None);
                    return Decision::Done(Screened::Replace(replacement));
                };
                let shown = redact::sql(sql);
                let filed = self.context.approvals.request(NewRequest {
                    session: &self.session.id,
                    identity,
                    target: &self.session.target,
                    statement: &shown,
                    reason: &verdict.reason,
                    policy,
                    blast_radius: self.context.blast_radius.get(),
                });
                let waiter = match filed {
                    Ok(waiter) => waiter,
                    Err(error) => {
                        tracing::error!(%error, session = %self.session.id, "approval request not recorded");
                        let unrecorded = Verdict {
                            reason: "the approval request could not be recorded in the audit log".into(),
                            ..verdict.clone()
                        };
                        let replacement = self.refuse(frame.tag, statement.unwrap_or_default(), sql, &unrecorded, None);
                        return Decision::Done(Screened::Replace(replacement));
                    }
                };
                let id = &waiter.request.id;
                let message = format!("airlock: waiting for approval of request {id}: {}", verdict.reason);
                let command = self.context.approvals.decide_command(&waiter.request);
                let hint = format!("{} can approve it with: {command}", waiter.request.approvers);
                let notice = ErrorFields::new("NOTICE", "01000", &message, Some(&hint)).to_notice_frame();
                Decision::Held(Box::new(Hold { notice, waiter, frame: frame.clone() }))
            }
        }
    }

    /// Waits for the decision on a held statement and says what to send.
    pub async fn settle(&self, hold: Hold) -> Screened {
        let Hold { waiter, frame, .. } = hold;
        let id = waiter.request.id.clone();
        let Some(refusal) = self.context.approvals.refusal(waiter).await else { return Screened::Forward };
        let (sql, statement): (&[u8], &[u8]) = match Frontend::parse(&frame) {
            Ok(Frontend::Parse { statement, sql }) => (sql, statement),
            Ok(Frontend::Query { sql }) => (sql, b""),
            _ => (b"", b""),
        };
        let verdict = Verdict::new(GuardAction::Deny, StatementClass::Unparsed, refusal);
        // The request holds the statement as it was read; the refusal's
        // record names it by request, its text only for the reader.
        let sql = String::from_utf8_lossy(sql);
        Screened::Replace(self.refuse(frame.tag, statement, &sql, &verdict, Some(&id)))
    }

    /// Records the refusal and builds the stand-in frame.
    fn refuse(&self, tag: u8, statement: &[u8], sql: &str, verdict: &Verdict, request: Option<&str>) -> Frame {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let hint = match request {
            Some(_) => None,
            None => Some(format!(
                "Target {} does not allow this here; ask its owners if you need it.",
                self.session.target.name
            )),
        };
        let error =
            ErrorFields::new("ERROR", REFUSED_SQLSTATE, &format!("airlock: {}", verdict.reason), hint.as_deref());
        self.refusals.lock().unwrap_or_else(|p| p.into_inner()).insert(id, error);
        let recorded = self.audit.append(Event {
            kind: "postgres.statement_refused",
            session: Some(&self.session.id),
            identity: Some(&self.session.identity),
            process: None,
            target: Some(&self.session.target),
            detail: json!({
                "sql": redact::sql(sql),
                "class": verdict.class,
                "reason": verdict.reason,
                "request": request,
            }),
        });
        if let Err(error) = recorded {
            // The statement is refused either way; the session's own records
            // will fail on the same log and end it.
            tracing::error!(%error, session = %self.session.id, "refusal not recorded");
        }
        let stand_in = format!("{}{id}", self.token);
        let mut body = BytesMut::new();
        // In the extended protocol the stand-in is a Parse: its error skips
        // the rest to the client's Sync, as the refused message's would.
        // An Execute's stand-in prepares under a name of its own, which the
        // failure leaves unused.
        let extended = match tag {
            b'P' => Some(statement),
            b'E' => Some(stand_in.as_bytes()),
            _ => None,
        };
        if let Some(name) = extended {
            body.put_slice(name);
            body.put_u8(0);
            body.put_slice(stand_in.as_bytes());
            body.put_u8(0);
            body.put_u16(0);
        } else {
            body.put_slice(stand_in.as_bytes());
            body.put_u8(0);
        }
        Frame { tag: if extended.is_some() { b'P' } else { b'Q' }, body: body.freeze() }
    }

    /// The client-facing refusal for a server error caused by a stand-in;
    /// `None` for every other frame.
    pub fn rewrite_error(&self, frame: &Frame) -> Option<Frame> {
        if frame.tag != b'E' {
            return None;
        }
        let Ok(Backend::Error(fields)) = Backend::parse(frame) else { return None };
        let message = fields.get(b'M')?.to_ascii_lowercase();
        let at = message.find(&self.token)? + self.token.len();
        let digits: String = message[at..].chars().take_while(char::is_ascii_digit).collect();
        let id: u32 = digits.parse().ok()?;
        let refusal = self.refusals.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)?;
        Some(refusal.to_error_frame())
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::Arc, time::Duration};

    use super::*;
    use crate::{
        audit::TargetRef,
        guardrails::{ApprovalPolicy, GuardRule},
        identity::Identity,
        process::ProcessInfo,
        proxy::postgres::encoding::ClientEncoding,
        source::SourceLocation,
    };

    fn session() -> LiveSession {
        LiveSession {
            id: "s-1".into(),
            identity: Identity::unix("alice", 1001, vec!["dev".into()]),
            process: ProcessInfo::default(),
            target: TargetRef {
                name: "prod-db".into(),
                protocol: "postgres".into(),
                addr: "10.0.0.5".into(),
                port: 5432,
            },
            started: std::time::SystemTime::now(),
            bytes: Default::default(),
            ending: Default::default(),
        }
    }

    fn guardrails() -> Guardrails {
        let location = SourceLocation { file: PathBuf::from("p.toml"), line: 3, column: 1 };
        Guardrails {
            rules: vec![
                GuardRule {
                    classes: vec![StatementClass::Drop],
                    tables: vec![],
                    users: vec![],
                    groups: vec![],
                    actors: vec![],
                    action: GuardAction::Approve,
                    reason: Some("drops need a DBA".into()),
                    limit: None,
                    location: location.clone(),
                },
                GuardRule {
                    classes: vec![StatementClass::DeleteWithoutWhere],
                    tables: vec![],
                    users: vec![],
                    groups: vec![],
                    actors: vec![],
                    action: GuardAction::Deny,
                    reason: None,
                    limit: None,
                    location,
                },
            ],
            approvals: Some(ApprovalPolicy {
                users: vec![],
                groups: vec!["dba".into()],
                timeout: Duration::from_secs(30),
                webhook: None,
                session_access: None,
                launcher_approves: false,
            }),
        }
    }

    /// What a guard borrows: an audit log in a directory of its own,
    /// approvals, the rules, a session.
    struct Fixture {
        _dir: tempfile::TempDir,
        audit: Arc<AuditLog>,
        approvals: Approvals,
        rules: Guardrails,
        classifier: Classifier,
        session: LiveSession,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let audit = Arc::new(AuditLog::open(dir.path()).unwrap());
            let approvals = Approvals::new(Arc::clone(&audit));
            Self {
                _dir: dir,
                audit,
                approvals,
                rules: guardrails(),
                classifier: Classifier::default(),
                session: session(),
            }
        }

        fn context(&self) -> GuardContext<'_> {
            GuardContext {
                guardrails: &self.rules,
                classifier: &self.classifier,
                approvals: &self.approvals,
                blast_radius: Default::default(),
            }
        }
    }

    fn settled() -> Reading {
        Reading { encoding: ClientEncoding::Utf8, lexing: Lexing::default(), unsettled: false }
    }

    fn screen(guard: &Guard<'_>, frame: &Frame) -> Screening {
        guard.screen(frame, settled()).0
    }

    fn query(sql: &str) -> Frame {
        let mut body = BytesMut::new();
        body.put_slice(sql.as_bytes());
        body.put_u8(0);
        Frame { tag: b'Q', body: body.freeze() }
    }

    fn server_error_for(stand_in: &Frame) -> Frame {
        let Ok(Frontend::Query { sql }) = Frontend::parse(stand_in) else { panic!("not a query") };
        let sql = String::from_utf8_lossy(sql);
        ErrorFields::new("ERROR", "42601", &format!("syntax error at or near \"{sql}\""), None).to_error_frame()
    }

    #[tokio::test]
    async fn refusals_reach_the_client_as_their_own_error() {
        let fixture = Fixture::new();
        let context = fixture.context();
        let guard = Guard::new(&context, &fixture.session, &fixture.audit);

        assert!(matches!(screen(&guard, &query("SELECT 1")), Screening::Done(Screened::Forward)));
        let Screening::Done(Screened::Replace(stand_in)) = screen(&guard, &query("DELETE FROM customers")) else {
            panic!("not refused")
        };
        assert!(!String::from_utf8_lossy(&stand_in.body).contains("customers"));
        let rewritten = guard.rewrite_error(&server_error_for(&stand_in)).expect("rewritten");
        let Ok(Backend::Error(fields)) = Backend::parse(&rewritten) else { panic!("not an error") };
        assert_eq!(fields.get(b'C'), Some(REFUSED_SQLSTATE));
        assert_eq!(fields.get(b'S'), Some("ERROR"));
        assert!(
            fields.get(b'M').unwrap().contains("delete_without_where statements are refused by policy (p.toml:3:1)")
        );
        // Only once, and only for this session's token.
        assert!(guard.rewrite_error(&server_error_for(&stand_in)).is_none());
        let other = ErrorFields::new("ERROR", "42601", "syntax error at or near \"airlock_refused_x_1\"", None);
        assert!(guard.rewrite_error(&other.to_error_frame()).is_none());

        let log = std::fs::read_to_string(fixture.audit.path()).unwrap();
        assert!(log.contains("\"kind\":\"postgres.statement_refused\"") && log.contains("DELETE FROM customers"));
    }

    #[tokio::test]
    async fn held_statements_run_once_approved_and_are_refused_when_denied() {
        let fixture = Fixture::new();
        let context = fixture.context();
        let guard = Guard::new(&context, &fixture.session, &fixture.audit);
        let dba = Identity::unix("bob", 1002, vec!["dba".into()]);

        for approve in [true, false] {
            let Screening::Held(hold) = screen(&guard, &query("DROP TABLE customers")) else { panic!("not held") };
            let Ok(Backend::Other) = Backend::parse(&hold.notice) else { panic!("notice expected") };
            let notice = String::from_utf8_lossy(&hold.notice.body).into_owned();
            let id = hold.waiter.request.id.clone();
            assert!(notice.contains(&format!("airlock approve {id}")) && notice.contains("group dba"), "{notice}");
            fixture.approvals.decide(&id, &dba, approve, Some("ok".into())).unwrap();
            match (approve, guard.settle(*hold).await) {
                (true, Screened::Forward) => {}
                (false, Screened::Replace(stand_in)) => {
                    let rewritten = guard.rewrite_error(&server_error_for(&stand_in)).unwrap();
                    assert!(String::from_utf8_lossy(&rewritten.body).contains("was denied by bob: ok"));
                }
                (approve, other) => panic!("approve={approve}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn text_is_read_as_the_server_will_read_it() {
        let fixture = Fixture::new();
        let context = fixture.context();
        let guard = Guard::new(&context, &fixture.session, &fixture.audit);
        let refused = |screening: Screening| matches!(screening, Screening::Done(Screened::Replace(_)));
        let held = |screening: Screening| match screening {
            Screening::Held(hold) => {
                fixture.approvals.withdraw(&hold.waiter.request.id);
                true
            }
            _ => false,
        };
        let raw = |bytes: &[u8]| {
            let mut body = BytesMut::from(bytes);
            body.put_u8(0);
            Frame { tag: b'Q', body: body.freeze() }
        };
        let evasion = query(r"SELECT 'x\''; DROP TABLE t; -- '");
        let off = Reading { lexing: Lexing { backslash_escapes: true }, ..settled() };
        assert!(held(guard.screen(&evasion, off).0));
        // While a SET may still be on its way, both readings count.
        let unsettled = Reading { unsettled: true, ..settled() };
        assert!(held(guard.screen(&evasion, unsettled).0));
        assert!(matches!(guard.screen(&evasion, settled()).0, Screening::Done(Screened::Forward)));
        assert!(refused(guard.screen(&query("SELECT 'é'"), unsettled).0), "non-ASCII while unsettled");
        // Bytes decode per client_encoding; what does not decode is refused.
        let latin1 = Reading { encoding: ClientEncoding::Latin1, ..settled() };
        assert!(held(guard.screen(&raw(b"DROP TABLE t /* \xe9 */"), latin1).0));
        assert!(refused(guard.screen(&raw(b"SELECT 1 /* \xe9 */"), settled()).0));
        // A Query that does not frame, and a call by function number, are refused.
        let unterminated = Frame { tag: b'Q', body: bytes::Bytes::from_static(b"DROP TABLE t") };
        assert!(refused(guard.screen(&unterminated, settled()).0));
        let call = Frame { tag: b'F', body: bytes::Bytes::from_static(&[0, 0, 4, 210, 0, 0, 0, 0, 0, 0]) };
        let (screening, may_change) = guard.screen(&call, settled());
        assert!(refused(screening) && may_change);
        let log = std::fs::read_to_string(fixture.audit.path()).unwrap();
        assert!(log.contains("DROP TABLE t /* é */"), "recorded as decoded");
    }

    #[test]
    fn large_statements_are_unparsed() {
        let fixture = Fixture::new();
        let context = fixture.context();
        let guard = Guard::new(&context, &fixture.session, &fixture.audit);
        let stand_in = guard.screen_large(b'Q', 20 << 20).expect("refused");
        assert_eq!(stand_in.tag, b'Q');
        assert!(guard.screen_large(b'd', 20 << 20).is_none(), "COPY data is not a statement");
    }
}
