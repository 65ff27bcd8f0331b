//! The masking layer: every message that carries data from the server to
//! the client passes through the session's [`Masker`] first.
//!
//! Rows are masked one DataRow at a time under the plan of their result
//! ([`shapes`](super::shapes) says which), COPY TO STDOUT data row by row,
//! error and notice fields and notification payloads as text. Column rules
//! go by the column's real `schema.table.column`, read from the catalog
//! ([`catalog`](super::catalog)), so an alias does not unmask a column.
//! Whatever cannot be masked for sure ends the session instead of reaching
//! the client: a row that does not fit its description, a result whose
//! columns cannot be named while column rules apply, binary COPY output.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde::Serialize;
use sqlparser::{
    ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopyTarget, Statement},
    dialect::PostgreSqlDialect,
    parser::Parser,
};

use super::{
    ProxyError,
    catalog::{Catalog, Login},
    codec::{FieldDescription, Frame, Frontend},
    shapes::{Columns, ResultShapes, Rows},
};
use crate::masking::{ColumnDesc, ColumnPlan, CopyFormat, MaskError, MaskOutcome, Masker};

/// What the proxy learns from the client's side that the masking layer needs.
#[derive(Default)]
pub struct ClientView {
    shapes: ResultShapes,
    /// COPY … TO STDOUT formats, in the order the statements were sent.
    copy_formats: VecDeque<Result<CopyFormat, String>>,
}

impl ClientView {
    /// Notes a frame the client sent.
    pub fn client_sent(&mut self, frame: &Frame) -> Result<(), ProxyError> {
        self.shapes.client_sent(frame).map_err(|error| ProxyError::Protocol { side: "client", error })?;
        if let Ok(Frontend::Query { sql } | Frontend::Parse { sql, .. }) = Frontend::parse(frame)
            && sql.windows(4).any(|w| w.eq_ignore_ascii_case(b"copy"))
        {
            // COPY's options are ASCII keywords in every client encoding.
            self.copy_formats.extend(copy_out_formats(&String::from_utf8_lossy(sql)));
        }
        Ok(())
    }
}

/// Masked values of one statement, for its audit record: never the values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MaskedCount {
    /// `schema.table.column`, the field name, or absent for messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Detector or rule.
    pub by: String,
    /// How many values.
    pub count: u64,
}

/// What masking makes of a server frame.
#[derive(Debug)]
pub enum Masked {
    /// Nothing to hide: it goes as it came.
    Unchanged,
    /// A message (error, notice, notification) to send instead.
    Message(Frame),
    /// A row (DataRow, CopyData) that may need masking: the relay passes
    /// it to [`MaskLayer::write_row`], which writes it where it goes.
    Row,
}

/// How the masking layer reads column names: the session's login, when
/// the target has just-in-time credentials.
pub struct CatalogAccess<'a> {
    /// The agent-wide cache.
    pub catalog: &'a Catalog,
    /// How to log in for a lookup.
    pub login: Login<'a>,
}

/// One session's masking of server messages.
pub struct MaskLayer<'a> {
    masker: Masker,
    catalog: Option<CatalogAccess<'a>>,
    plans: RecentPlans,
    plan: Option<ColumnPlan>,
    copy: Option<(CopyFormat, Option<ColumnPlan>)>,
    outcome: MaskOutcome,
    scratch: Vec<u8>,
}

impl<'a> MaskLayer<'a> {
    /// The layer for a session with this masker.
    pub fn new(masker: Masker, catalog: Option<CatalogAccess<'a>>) -> Self {
        Self {
            masker,
            catalog,
            plans: RecentPlans::default(),
            plan: None,
            copy: None,
            outcome: MaskOutcome::default(),
            scratch: Vec::new(),
        }
    }

    /// Notes a server frame: which result it belongs to. A result the
    /// layer has no plan for yet is returned: [`describe`](Self::describe)
    /// it before [`mask`](Self::mask)ing the frame. Rows, by the thousand,
    /// take this synchronous path only; a plan may need the catalog.
    pub fn observe(&mut self, frame: &Frame, view: &Mutex<ClientView>) -> Result<Option<Columns>, ProxyError> {
        // A row of a result already planned changes nothing in the view:
        // only the first row of an Execute does, and every result's end
        // clears the plan. Rows skip the lock.
        if frame.tag == b'D' && self.plan.is_some() {
            return Ok(None);
        }
        let mut view = view.lock().unwrap_or_else(|p| p.into_inner());
        match view.shapes.server_sent(frame).map_err(|error| ProxyError::Protocol { side: "server", error })? {
            Rows::CopyOut { binary, columns } => {
                let format = view.copy_formats.pop_front();
                self.start_copy(binary, columns, format)?;
            }
            Rows::Columns(columns) => return Ok(Some(columns)),
            Rows::Ended => {
                if let Some(mut plan) = self.plan.take() {
                    self.masker.count_rule_hits(&mut plan, &mut self.outcome);
                }
                if frame.tag != b'E' {
                    self.copy = None;
                }
            }
            Rows::Same => {}
        }
        Ok(None)
    }

    /// Plans the masking of a result with these columns.
    pub async fn describe(&mut self, columns: &Columns) -> Result<(), ProxyError> {
        let plan = match self.plans.get(columns) {
            Some(plan) => plan,
            None => {
                let plan = self.plan_for(columns).await?;
                self.plans.insert(columns, &plan);
                plan
            }
        };
        self.plan = Some(plan);
        Ok(())
    }

    /// What masking makes of one server frame, [`observe`](Self::observe)d
    /// first. Messages are masked here; rows are only sorted out, for
    /// [`write_row`](Self::write_row).
    pub fn mask(&mut self, frame: &Frame) -> Result<Masked, ProxyError> {
        let outcome = match frame.tag {
            b'D' => {
                let plan = self.plan.as_ref().ok_or_else(|| unmaskable("a row arrived before its description"))?;
                return Ok(if plan.is_active() { Masked::Row } else { Masked::Unchanged });
            }
            b'd' if self.copy.is_some() => return Ok(Masked::Row),
            b'E' | b'N' => {
                self.scratch.clear();
                self.masker.mask_error_fields(&frame.body, &mut self.scratch)
            }
            b'A' => {
                self.scratch.clear();
                self.masker.mask_notification(&frame.body, &mut self.scratch)
            }
            _ => return Ok(Masked::Unchanged),
        }
        .map_err(|error| unmaskable(&error.to_string()))?;
        if !outcome.changed() {
            return Ok(Masked::Unchanged);
        }
        self.outcome.merge(&outcome);
        // Messages are rare, and the statement's record reads them.
        Ok(Masked::Message(Frame { tag: frame.tag, body: Bytes::copy_from_slice(&self.scratch) }))
    }

    /// Masks a row [`mask`](Self::mask) answered [`Masked::Row`] for. If
    /// anything in it is masked, appends `prefix` (what precedes its body
    /// on the wire) and the new body to `out`, and returns true; else
    /// appends nothing.
    pub fn write_row(&mut self, frame: &Frame, prefix: &[u8], out: &mut Vec<u8>) -> Result<bool, ProxyError> {
        let changed = match (frame.tag, &mut self.plan, &self.copy) {
            // Rows, by the thousand: counts go straight into the result's.
            (b'D', Some(plan), _) => self.masker.mask_data_row_into(&frame.body, plan, prefix, out, &mut self.outcome),
            (b'd', _, Some((format, plan))) => {
                self.masker.mask_copy_data(&frame.body, format, plan.as_ref(), prefix, out).map(|outcome| {
                    self.outcome.merge(&outcome);
                    outcome.changed()
                })
            }
            _ => return Err(unmaskable("a row arrived outside a result")),
        };
        changed.map_err(|error| unmaskable(&error.to_string()))
    }

    /// What was masked since the last call, for the statement that just ended.
    pub fn take_counts(&mut self) -> Vec<MaskedCount> {
        if let Some(plan) = &mut self.plan {
            self.masker.count_rule_hits(plan, &mut self.outcome);
        }
        std::mem::take(&mut self.outcome)
            .hits
            .into_iter()
            .map(|hit| MaskedCount {
                column: hit.column.map(|c| c.to_string()),
                by: hit.reason.to_string(),
                count: hit.count,
            })
            .collect()
    }

    fn start_copy(
        &mut self,
        binary: bool,
        columns: usize,
        format: Option<Result<CopyFormat, String>>,
    ) -> Result<(), ProxyError> {
        if self.masker.has_column_rules() {
            return Err(unmaskable(
                "COPY TO STDOUT cannot be masked by column on this target; select the rows instead",
            ));
        }
        let format = match (binary, format) {
            (true, _) => return Err(unmaskable(&MaskError::CopyBinary.to_string())),
            (false, Some(Ok(format))) => format,
            (false, Some(Err(why))) => return Err(unmaskable(&why)),
            (false, None) => CopyFormat::text(),
        };
        self.copy = Some((format, Some(self.masker.anonymous_text_plan(columns))));
        Ok(())
    }

    async fn plan_for(&mut self, columns: &[FieldDescription]) -> Result<ColumnPlan, ProxyError> {
        let names = if self.masker.has_column_rules() { self.column_names(columns).await? } else { HashMap::new() };
        let descs: Vec<ColumnDesc<'_>> = columns
            .iter()
            .map(|field| ColumnDesc {
                field_name: &field.name,
                qualified: names.get(&(field.table_oid, field.column)).map(String::as_str),
                type_oid: field.type_oid,
                format: field.format,
            })
            .collect();
        Ok(self.masker.plan(&descs))
    }

    /// `schema.table.column` of every column that comes from a table. A
    /// column rule must see the real name; if it cannot be read, the
    /// result does not reach the client.
    async fn column_names(&self, columns: &[FieldDescription]) -> Result<HashMap<(u32, i16), String>, ProxyError> {
        let mut oids: Vec<u32> = columns.iter().map(|c| c.table_oid).filter(|oid| *oid != 0).collect();
        oids.sort_unstable();
        oids.dedup();
        if oids.is_empty() {
            return Ok(HashMap::new());
        }
        let Some(access) = &self.catalog else {
            return Err(unmaskable("column masking needs the catalog, which this target's login cannot read"));
        };
        let tables =
            access.catalog.tables(&access.login, &oids).await.map_err(|error| unmaskable(&error.to_string()))?;
        let mut names = HashMap::new();
        for column in columns.iter().filter(|c| c.table_oid != 0) {
            let qualified = tables
                .get(&column.table_oid)
                .and_then(|table| table.qualified(column.column))
                .ok_or_else(|| unmaskable("a result column's table is not in the catalog"))?;
            names.insert((column.table_oid, column.column), qualified);
        }
        Ok(names)
    }
}

/// Plans a session made lately, by their results' columns: an application
/// asks the same queries over and over, and a plan costs a catalog lookup
/// and a walk over the rules. A plan is kept for [`PLAN_TTL`], so a renamed
/// column is seen within that of the catalog's own
/// [`CACHE_TTL`](super::catalog::CACHE_TTL).
#[derive(Default)]
struct RecentPlans {
    /// Oldest first.
    plans: VecDeque<(Columns, Instant, ColumnPlan)>,
}

/// Plans kept per session.
const RECENT_PLANS: usize = 32;
/// How long a plan is reused: short next to the catalog's cache, long next
/// to the gaps between an application's repeated queries.
const PLAN_TTL: Duration = Duration::from_secs(10);

impl RecentPlans {
    /// A fresh copy of the plan for `columns`, if one was made lately.
    fn get(&self, columns: &Columns) -> Option<ColumnPlan> {
        // A prepared statement's portals share its columns: most lookups
        // end at the pointer.
        let same = |known: &Columns| Arc::ptr_eq(known, columns) || known == columns;
        let now = Instant::now();
        self.plans
            .iter()
            .rev()
            .find(|(known, made, _)| now.duration_since(*made) < PLAN_TTL && same(known))
            .map(|(_, _, plan)| plan.clone())
    }

    /// Keeps `plan` (before any row counted in it) for `columns`.
    fn insert(&mut self, columns: &Columns, plan: &ColumnPlan) {
        let now = Instant::now();
        self.plans.retain(|(known, made, _)| now.duration_since(*made) < PLAN_TTL && known != columns);
        if self.plans.len() == RECENT_PLANS {
            self.plans.pop_front();
        }
        self.plans.push_back((Arc::clone(columns), now, plan.clone()));
    }
}

fn unmaskable(why: &str) -> ProxyError {
    ProxyError::Unmaskable(why.to_owned())
}

/// Output formats of the COPY … TO STDOUT statements in `sql`, in order;
/// an error for options masking cannot honour.
fn copy_out_formats(sql: &str) -> Vec<Result<CopyFormat, String>> {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        // Unparseable COPY text: the server decides; defaults apply.
        return Vec::new();
    };
    statements
        .iter()
        .filter_map(|statement| match statement {
            Statement::Copy { to: true, target: CopyTarget::Stdout, options, legacy_options, .. } => {
                Some(copy_format(options, legacy_options))
            }
            _ => None,
        })
        .collect()
}

fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat, String> {
    let mut csv = false;
    let (mut delimiter, mut null, mut quote, mut escape) = (None, None, None, None);
    let byte = |c: char| u8::try_from(u32::from(c)).map_err(|_| format!("COPY option {c:?} is not a single byte"));
    for option in options {
        match option {
            CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                "csv" => csv = true,
                "text" => csv = false,
                "binary" => return Err(MaskError::CopyBinary.to_string()),
                other => return Err(format!("COPY format {other} cannot be masked")),
            },
            CopyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyOption::Null(text) => null = Some(text.as_bytes().to_vec()),
            CopyOption::Quote(c) => quote = Some(byte(*c)?),
            CopyOption::Escape(c) => escape = Some(byte(*c)?),
            _ => {}
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Binary => return Err(MaskError::CopyBinary.to_string()),
            CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyLegacyOption::Null(text) => null = Some(text.as_bytes().to_vec()),
            CopyLegacyOption::Csv(csv_options) => {
                csv = true;
                for option in csv_options {
                    match option {
                        CopyLegacyCsvOption::Quote(c) => quote = Some(byte(*c)?),
                        CopyLegacyCsvOption::Escape(c) => escape = Some(byte(*c)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(if csv {
        let quote = quote.unwrap_or(b'"');
        CopyFormat::Csv {
            delimiter: delimiter.unwrap_or(b','),
            quote,
            escape: escape.unwrap_or(quote),
            null: null.unwrap_or_default(),
        }
    } else {
        CopyFormat::Text { delimiter: delimiter.unwrap_or(b'\t'), null: null.unwrap_or_else(|| b"\\N".to_vec()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_plans_are_found_by_columns_and_the_oldest_go_first() {
        let columns = |name: &str| {
            let field = FieldDescription { name: name.into(), table_oid: 16384, column: 1, type_oid: 25, format: 0 };
            Arc::new(vec![field])
        };
        let mut recent = RecentPlans::default();
        let email = columns("email");
        assert!(recent.get(&email).is_none());
        let plan = ColumnPlan::default();
        recent.insert(&email, &plan);
        assert!(recent.get(&email).is_some(), "the same columns");
        assert!(recent.get(&columns("email")).is_some(), "equal columns, described again");
        assert!(recent.get(&columns("card")).is_none());
        recent.insert(&columns("email"), &plan);
        assert_eq!(recent.plans.len(), 1, "a new plan replaces the old");
        for n in 0..RECENT_PLANS {
            recent.insert(&columns(&format!("c{n}")), &plan);
        }
        assert_eq!(recent.plans.len(), RECENT_PLANS);
        assert!(recent.get(&email).is_none(), "the oldest went first");
        assert!(recent.get(&columns("c0")).is_some());
    }

    #[test]
    fn copy_formats_follow_the_statement() {
        assert_eq!(copy_out_formats("COPY t TO STDOUT"), [Ok(CopyFormat::text())]);
        assert_eq!(copy_out_formats("copy (select 1) to stdout with (format csv)"), [Ok(CopyFormat::csv())]);
        assert_eq!(
            copy_out_formats("COPY t TO STDOUT WITH (FORMAT csv, DELIMITER ';', NULL 'NA')"),
            [Ok(CopyFormat::Csv { delimiter: b';', quote: b'"', escape: b'"', null: b"NA".to_vec() })]
        );
        assert!(copy_out_formats("COPY t TO STDOUT (FORMAT binary)")[0].is_err());
        assert!(copy_out_formats("COPY t FROM STDIN").is_empty());
        assert!(copy_out_formats("select 'copy'").is_empty());
    }
}
