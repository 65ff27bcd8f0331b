//! The agent's metrics, as Prometheus/OpenMetrics series.
//!
//! What the data path counts (sessions, statements, masked values,
//! approvals, credentials, audit writes) is recorded where it happens into
//! one process-wide set of series ([`global`]): counting is an atomic add
//! on a series found by its labels, and no record, no session and no
//! decision waits for metrics. What is a state rather than an event (live
//! sessions, pending approvals, the kernel's counters, the process's
//! memory, descriptors and CPU) is read when metrics are asked for
//! ([`Snapshot`], [`Metrics::render`]).
//!
//! Labels are names from policy (targets, masking rules), fixed sets
//! (protocols, statement classes, reasons) and never people, sessions or
//! values: the series stay few whatever the traffic.

pub mod process;

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

/// A target and its protocol.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
    protocol: String,
}

/// A refusal: its target (`-` when none is known) and a reason from a
/// fixed set (see [`Refusal`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    target: String,
    protocol: String,
    reason: &'static str,
}

/// A closed session and whether it ended in an error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    target: String,
    protocol: String,
    outcome: &'static str,
}

/// A screened statement: class and the action taken.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    target: String,
    class: &'static str,
    action: &'static str,
}

/// The detector or masking rule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MaskedLabels {
    by: String,
}

/// An approval request's end.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: String,
}

/// A credential event and where the credential comes from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    event: String,
    source: String,
}

/// One of the eBPF programs' counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KernelLabels {
    counter: &'static str,
}

/// Why a connection was refused, as the `reason` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No interception record: not redirected by Airlock's programs.
    NoRecord,
    /// The destination is no longer protected (policy reloaded).
    NotProtected,
    /// Nobody to attribute it to (no login, an expired one).
    NoIdentity,
    /// Policy denies it.
    Denied,
    /// An access window is waiting for approval.
    AwaitingApproval,
    /// The audit log could not record it.
    Unrecorded,
    /// The agent was out of file descriptors.
    OutOfDescriptors,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::NoRecord => "no_record",
            Self::NotProtected => "not_protected",
            Self::NoIdentity => "no_identity",
            Self::Denied => "denied",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Unrecorded => "unrecorded",
            Self::OutOfDescriptors => "out_of_descriptors",
        }
    }
}

/// What is read at the time metrics are asked for.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Live sessions per (target, protocol).
    pub live_sessions: Vec<(String, String, u64)>,
    /// Approval requests waiting for a decision.
    pub approvals_pending: u64,
    /// The eBPF programs' counters, by name (monotonic since the maps were made).
    pub kernel: Vec<(&'static str, u64)>,
    /// Programs attached now.
    pub programs_attached: u64,
    /// Whether the audit log can be written.
    pub audit_writable: bool,
    /// The agent process.
    pub process: process::ProcessStats,
}

/// Every series of the agent.
pub struct Metrics {
    registry: Registry,
    sessions_opened: Family<TargetLabels, Counter>,
    sessions_refused: Family<RefusedLabels, Counter>,
    sessions_closed: Family<ClosedLabels, Counter>,
    sessions_live: Family<TargetLabels, Gauge>,
    statements: Family<StatementLabels, Counter>,
    masked_values: Family<MaskedLabels, Counter>,
    approvals_pending: Gauge,
    approvals_decided: Family<VerdictLabels, Counter>,
    credentials: Family<CredentialLabels, Counter>,
    audit_records: Counter,
    audit_bytes: Counter,
    audit_write_seconds: Histogram,
    audit_write_errors: Counter,
    audit_writable: Gauge,
    kernel: Family<KernelLabels, Counter>,
    programs_attached: Gauge,
    resident_memory: Gauge,
    open_fds: Gauge,
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// What the kernel's counters and the CPU time were at the last render:
    /// they are counted up by the difference, so the series stay counters.
    last_read: Mutex<LastRead>,
}

#[derive(Default)]
struct LastRead {
    kernel: HashMap<&'static str, u64>,
    cpu_seconds: f64,
}

/// The agent's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let metrics = Self {
            registry: Registry::default(),
            sessions_opened: Family::default(),
            sessions_refused: Family::default(),
            sessions_closed: Family::default(),
            sessions_live: Family::default(),
            statements: Family::default(),
            masked_values: Family::default(),
            approvals_pending: Gauge::default(),
            approvals_decided: Family::default(),
            credentials: Family::default(),
            audit_records: Counter::default(),
            audit_bytes: Counter::default(),
            audit_write_seconds: Histogram::new(exponential_buckets(0.000_025, 2.0, 16)),
            audit_write_errors: Counter::default(),
            audit_writable: Gauge::default(),
            kernel: Family::default(),
            programs_attached: Gauge::default(),
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
            cpu_seconds: Counter::default(),
            last_read: Mutex::new(LastRead::default()),
        };
        let r = &mut registry;
        r.register("sessions_opened", "Sessions let through to a target", metrics.sessions_opened.clone());
        r.register("sessions_refused", "Connections refused, by reason", metrics.sessions_refused.clone());
        r.register("sessions_closed", "Sessions ended, by outcome", metrics.sessions_closed.clone());
        r.register("sessions_live", "Sessions open now", metrics.sessions_live.clone());
        r.register("statements", "Statements screened by guardrails, by class and action", metrics.statements.clone());
        r.register("masked_values", "Values masked, by detector or rule", metrics.masked_values.clone());
        r.register("approvals_pending", "Approval requests waiting for a decision", metrics.approvals_pending.clone());
        r.register("approvals_decided", "Approval requests ended, by verdict", metrics.approvals_decided.clone());
        r.register("credentials", "Credential events (created, dropped, rotated, …)", metrics.credentials.clone());
        r.register("audit_records", "Audit records written", metrics.audit_records.clone());
        r.register_with_unit("audit_written", "Audit log bytes written", Unit::Bytes, metrics.audit_bytes.clone());
        r.register_with_unit(
            "audit_write",
            "Time to append a batch of audit records",
            Unit::Seconds,
            metrics.audit_write_seconds.clone(),
        );
        r.register("audit_write_errors", "Audit appends that failed", metrics.audit_write_errors.clone());
        r.register("audit_writable", "1 when the audit log can be written", metrics.audit_writable.clone());
        r.register("kernel", "The eBPF programs' counters", metrics.kernel.clone());
        r.register("programs_attached", "eBPF programs attached now", metrics.programs_attached.clone());
        r.register_with_unit(
            "resident_memory",
            "The agent's resident memory",
            Unit::Bytes,
            metrics.resident_memory.clone(),
        );
        r.register("open_fds", "The agent's open file descriptors", metrics.open_fds.clone());
        r.register_with_unit("cpu", "CPU time the agent used", Unit::Seconds, metrics.cpu_seconds.clone());
        Self { registry, ..metrics }
    }

    /// A session was let through.
    pub fn session_opened(&self, target: &str, protocol: &str) {
        self.sessions_opened.get_or_create(&target_labels(target, protocol)).inc();
    }

    /// A connection was refused.
    pub fn session_refused(&self, target: &str, protocol: &str, why: Refusal) {
        let labels = RefusedLabels { target: target.to_owned(), protocol: protocol.to_owned(), reason: why.label() };
        self.sessions_refused.get_or_create(&labels).inc();
    }

    /// A session ended, in an error or not.
    pub fn session_closed(&self, target: &str, protocol: &str, failed: bool) {
        let outcome = if failed { "error" } else { "ok" };
        let labels = ClosedLabels { target: target.to_owned(), protocol: protocol.to_owned(), outcome };
        self.sessions_closed.get_or_create(&labels).inc();
    }

    /// Guardrails screened a statement of `class` and took `action`: on
    /// the statement path, so only the target's name is copied to look the
    /// series up.
    pub fn statement(&self, target: &str, class: &'static str, action: &'static str) {
        let labels = StatementLabels { target: target.to_owned(), class, action };
        self.statements.get_or_create(&labels).inc();
    }

    /// `count` values were masked by `by`.
    pub fn masked(&self, by: &str, count: u64) {
        self.masked_values.get_or_create(&MaskedLabels { by: by.to_owned() }).inc_by(count);
    }

    /// An approval request ended: `approved`, `denied` or `expired`.
    pub fn approval_decided(&self, verdict: &str) {
        self.approvals_decided.get_or_create(&VerdictLabels { verdict: verdict.to_owned() }).inc();
    }

    /// A credential event (`created`, `dropped`, `expired`, `rotated`, …)
    /// for a credential from `source` (`embedded`, `openbao`, `ssh_ca`).
    pub fn credential(&self, event: &str, source: &str) {
        let labels = CredentialLabels { event: event.to_owned(), source: source.to_owned() };
        self.credentials.get_or_create(&labels).inc();
    }

    /// A batch of `records` audit records, `bytes` long, was appended in
    /// `took`; or the append failed.
    pub fn audit_appended(&self, records: u64, bytes: u64, took: Duration, ok: bool) {
        self.audit_write_seconds.observe(took.as_secs_f64());
        if ok {
            self.audit_records.inc_by(records);
            self.audit_bytes.inc_by(bytes);
        } else {
            self.audit_write_errors.inc();
        }
    }

    /// The OpenMetrics text of every series, with `snapshot`'s states.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        {
            let mut last = self.last_read.lock().unwrap_or_else(|p| p.into_inner());
            self.sessions_live.clear();
            for (target, protocol, count) in &snapshot.live_sessions {
                self.sessions_live.get_or_create(&target_labels(target, protocol)).set(gauge(*count));
            }
            self.approvals_pending.set(gauge(snapshot.approvals_pending));
            for (name, value) in &snapshot.kernel {
                let before = last.kernel.insert(name, *value).unwrap_or(0);
                // The maps outlive the agent: a first read counts all of it.
                let counter = self.kernel.get_or_create(&KernelLabels { counter: name });
                counter.inc_by(value.saturating_sub(before));
            }
            self.programs_attached.set(gauge(snapshot.programs_attached));
            self.audit_writable.set(i64::from(snapshot.audit_writable));
            self.resident_memory.set(gauge(snapshot.process.resident_bytes));
            self.open_fds.set(gauge(snapshot.process.open_fds));
            let cpu = snapshot.process.cpu_seconds;
            self.cpu_seconds.inc_by((cpu - last.cpu_seconds).max(0.0));
            last.cpu_seconds = last.cpu_seconds.max(cpu);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn target_labels(target: &str, protocol: &str) -> TargetLabels {
    TargetLabels { target: target.to_owned(), protocol: protocol.to_owned() }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn events_and_states_render_as_openmetrics() {
        let metrics = Metrics::new();
        metrics.session_opened("pg", "postgres");
        metrics.session_opened("pg", "postgres");
        metrics.session_refused("-", "-", Refusal::NoRecord);
        metrics.session_closed("pg", "postgres", false);
        metrics.statement("pg", "drop", "approve");
        metrics.masked("email", 3);
        metrics.approval_decided("approved");
        metrics.credential("created", "embedded");
        metrics.audit_appended(4, 1000, Duration::from_micros(80), true);
        let snapshot = Snapshot {
            live_sessions: vec![("pg".into(), "postgres".into(), 1)],
            approvals_pending: 2,
            kernel: vec![("redirected", 10)],
            programs_attached: 5,
            audit_writable: true,
            process: process::ProcessStats { resident_bytes: 4096, open_fds: 12, cpu_seconds: 1.5 },
        };
        let text = metrics.render(&snapshot);
        for (series, value) in [
            ("airlock_sessions_opened_total{target=\"pg\",protocol=\"postgres\"}", "2"),
            ("airlock_sessions_refused_total{target=\"-\",protocol=\"-\",reason=\"no_record\"}", "1"),
            ("airlock_sessions_closed_total{target=\"pg\",protocol=\"postgres\",outcome=\"ok\"}", "1"),
            ("airlock_sessions_live{target=\"pg\",protocol=\"postgres\"}", "1"),
            ("airlock_statements_total{target=\"pg\",class=\"drop\",action=\"approve\"}", "1"),
            ("airlock_masked_values_total{by=\"email\"}", "3"),
            ("airlock_approvals_pending", "2"),
            ("airlock_approvals_decided_total{verdict=\"approved\"}", "1"),
            ("airlock_credentials_total{event=\"created\",source=\"embedded\"}", "1"),
            ("airlock_audit_records_total", "4"),
            ("airlock_audit_written_bytes_total", "1000"),
            ("airlock_audit_write_seconds_count", "1"),
            ("airlock_kernel_total{counter=\"redirected\"}", "10"),
            ("airlock_programs_attached", "5"),
            ("airlock_audit_writable", "1"),
            ("airlock_resident_memory_bytes", "4096"),
            ("airlock_open_fds", "12"),
            ("airlock_cpu_seconds_total", "1.5"),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // Kernel counters and CPU time count up by what changed; a session
        // that ended is no longer live.
        let later = Snapshot { kernel: vec![("redirected", 15)], live_sessions: vec![], ..snapshot };
        let text = metrics.render(&later);
        assert_eq!(sample(&text, "airlock_kernel_total{counter=\"redirected\"}"), Some("15"));
        assert_eq!(sample(&text, "airlock_cpu_seconds_total"), Some("1.5"));
        assert!(!text.contains("airlock_sessions_live{"), "{text}");
    }
}
