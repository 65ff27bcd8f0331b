//! `airlock blast-radius`: what an attacker would gain with each secret
//! Airlock holds or issues, before an incident asks.
//!
//! [`inventory`] lists the secrets from configuration and policy (admin
//! logins, just-in-time role templates, OpenBao tokens, injected HTTP
//! credentials, the SSH and TLS CAs); [`postgres`] reads what a login can
//! do on the live server (membership closure, attributes, table
//! privileges); [`sensitivity`] finds personal data and secrets among the
//! tables' columns; [`impact`] turns that into high, medium or low by
//! documented rules; [`report`] prints it. A scope that cannot be read
//! makes a row saying why, never a failed report.

pub mod impact;
pub mod inventory;
pub mod postgres;
pub mod report;
pub mod sensitivity;
pub mod summary;
pub mod token;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf};

use self::{
    impact::{Assessment, Impact, Rule},
    inventory::{Entry, Probe},
    postgres::Holder,
    report::{PostgresDetail, Report, Row},
};
use crate::{config::Config, credentials::ReadOnlyAdminSession, policy::Policy};

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum BlastRadiusError {
    /// `--target` names no target of the policy.
    #[error("no target named {0:?} in the policy")]
    NoSuchTarget(String),
}

/// The report for every secret of `policy` (only `target`'s when given).
pub async fn report(config: &Config, policy: &Policy, target: Option<&str>) -> Result<Report, BlastRadiusError> {
    if let Some(name) = target
        && !policy.targets.iter().any(|t| t.name == name)
    {
        return Err(BlastRadiusError::NoSuchTarget(name.to_owned()));
    }
    let mut servers = Servers::default();
    let mut rows = Vec::new();
    for entry in inventory::collect(config, policy, target) {
        let masking = entry
            .target
            .as_deref()
            .and_then(|name| policy.targets.iter().find(|t| t.name == name))
            .and_then(|t| t.masking.as_ref());
        rows.push(probe(entry, masking, &mut servers).await);
    }
    Ok(Report { rows })
}

/// Admin connections, one per (admin file, server), shared by its rows.
#[derive(Default)]
struct Servers {
    sessions: HashMap<(PathBuf, SocketAddr), Result<ReadOnlyAdminSession, String>>,
}

async fn probe(entry: Entry, masking: Option<&crate::masking::MaskingPolicy>, servers: &mut Servers) -> Row {
    let Entry { target, kind, secret, grants_access_to, ttl_rotation, who_may_obtain, probe } = entry;
    let row = Row {
        target,
        kind,
        secret,
        grants_access_to,
        scope: String::new(),
        ttl_rotation,
        who_may_obtain,
        leak_impact: Impact::High,
        impact_rule: Rule::ScopeUnknown,
        impact_reason: String::new(),
        unknown: None,
        postgres: None,
    };
    let unknown = |mut row: Row, why: String| {
        row.impact_reason = "the scope could not be read: treated as high (fail closed)".into();
        row.unknown = Some(why);
        row
    };
    match probe {
        Probe::Known { scope, assessment } => report::assessed(Row { scope, ..row }, assessment),
        Probe::OpenBaoToken { addr, token_file, ca_file, issues_secrets } => {
            match token::lookup(&addr, &token_file, ca_file.as_deref()).await {
                Ok(facts) => {
                    let row = Row {
                        scope: format!("policies {}", facts.policies.join(", ")),
                        ttl_rotation: format!("{}; {}", facts.lifetime(), row.ttl_rotation),
                        ..row
                    };
                    report::assessed(row, facts.assess(issues_secrets))
                }
                Err(why) => unknown(row, format!("OpenBao lookup-self failed: {why}")),
            }
        }
        Probe::Postgres { admin_file, server, tls, member_of } => {
            let server = match server {
                Ok(server) => server,
                Err(why) => return unknown(row, why),
            };
            let session = match servers.sessions.entry((admin_file.clone(), server)) {
                std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(postgres::connect(&admin_file, server, &tls).await.map_err(|e| e.to_string()))
                }
            };
            let session = match session {
                Ok(session) => session,
                Err(why) => return unknown(row, why.clone()),
            };
            let holder = match &member_of {
                Some(roles) => Holder::MemberOf(roles),
                None => Holder::Admin,
            };
            match postgres::read(session, holder).await {
                Ok(scope) => {
                    let tables = impact::judge_tables(&scope, masking);
                    let assessment: Assessment = impact::assess_postgres(&scope, &tables);
                    let detail = PostgresDetail::new(scope, tables);
                    let row = Row { scope: detail.summary(), postgres: Some(detail), ..row };
                    report::assessed(row, assessment)
                }
                Err(why) => unknown(row, why.to_string()),
            }
        }
    }
}
