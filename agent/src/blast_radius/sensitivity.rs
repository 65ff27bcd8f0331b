//! Which table columns hold personal data or secrets, and whether masking
//! covers them.
//!
//! A column is sensitive when a masking column rule of the target names it
//! (the policy's author said so), or when its name suggests what the
//! built-in detectors find. The name heuristic splits the column name into
//! words at `_`, `-`, spaces and lower-to-upper case changes and looks for
//! these words (or the joined forms in brackets):
//!
//! | kind | words |
//! |---|---|
//! | email | `email`, `mail` (`emailaddress`, `e_mail`) |
//! | card | `card`, `pan`, `cc` (`ccnum`, `cardnumber`, `creditcard`) |
//! | ssn | `ssn`, `sin`, `nino` (`socialsecurity`) |
//! | iban | `iban`, `bic` (`accountnumber`, `bankaccount`) |
//! | phone | `phone`, `mobile`, `msisdn`, `tel` (`phonenumber`) |
//! | birth date | `dob` (`birthdate`, `dateofbirth`, `birthday`) |
//! | address | `address`, `street`, `postcode`, `zip` (`postalcode`) |
//! | ip address | `ip` (`ipaddress`), or a column of type `inet` |
//! | secret | `password`, `passwd`, `pwd`, `secret`, `token`, `salt` (`apikey`, `privatekey`, `secretkey`, `accesskey`) |
//!
//! The heuristic reads names and types only, never values: the report must
//! not read personal data to say where it is. It errs on the side of
//! calling a column sensitive.

use serde::Serialize;

use crate::masking::{Builtin, MaskingPolicy};

/// What a sensitive column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// E-mail addresses.
    Email,
    /// Payment card numbers.
    Card,
    /// Social security or national insurance numbers.
    Ssn,
    /// Bank account numbers.
    Iban,
    /// Phone numbers.
    Phone,
    /// Dates of birth.
    BirthDate,
    /// Postal addresses.
    Address,
    /// IP addresses.
    IpAddress,
    /// Passwords, tokens, keys.
    Secret,
    /// Named by a masking column rule, whatever it holds.
    MaskingRule,
}

impl DataKind {
    /// The built-in detectors that would find this kind in values.
    fn detectors(self) -> &'static [Builtin] {
        match self {
            Self::Email => &[Builtin::Email],
            Self::Card => &[Builtin::Card],
            Self::Ssn => &[Builtin::Ssn],
            Self::Iban => &[Builtin::Iban],
            Self::Phone => &[Builtin::Phone],
            Self::IpAddress => &[Builtin::Ipv4],
            Self::Secret => &[Builtin::ApiKey, Builtin::Jwt, Builtin::PrivateKey, Builtin::AwsKey],
            Self::BirthDate | Self::Address | Self::MaskingRule => &[],
        }
    }

    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Card => "card",
            Self::Ssn => "ssn",
            Self::Iban => "iban",
            Self::Phone => "phone",
            Self::BirthDate => "birth date",
            Self::Address => "address",
            Self::IpAddress => "ip address",
            Self::Secret => "secret",
            Self::MaskingRule => "masking rule",
        }
    }
}

/// How masking treats a sensitive column for sessions through Airlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// A column rule masks it for everyone (no exemptions, every connection).
    MaskedForEveryone,
    /// A column rule or a detector masks it, but some people or
    /// connections are exempt, or only a detector (which finds values by
    /// their shape, not every value) covers it.
    MaskedForSome,
    /// Nothing masks it.
    Unmasked,
}

/// A sensitive column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SensitiveColumn {
    /// Column name.
    pub column: String,
    /// What it holds.
    pub kind: DataKind,
    /// What masking does to it.
    pub coverage: Coverage,
}

/// The sensitive columns of `schema.table` among `columns` (name, type),
/// judged against the target's `masking` policy.
pub fn sensitive_columns(
    schema: &str,
    table: &str,
    columns: &[(String, String)],
    masking: Option<&MaskingPolicy>,
) -> Vec<SensitiveColumn> {
    columns
        .iter()
        .filter_map(|(column, type_name)| {
            let qualified = format!("{schema}.{table}.{column}");
            let rule = masking.and_then(|m| m.rules.iter().find(|rule| rule.columns.matches(Some(&qualified), column)));
            let kind = kind_by_name(column, type_name).or(rule.map(|_| DataKind::MaskingRule))?;
            let coverage = match (masking, rule) {
                (Some(policy), Some(rule)) => {
                    let everyone = rule.exempt.users.is_empty()
                        && rule.exempt.groups.is_empty()
                        && rule.actors.is_empty()
                        && policy.exempt.users.is_empty()
                        && policy.exempt.groups.is_empty();
                    if everyone { Coverage::MaskedForEveryone } else { Coverage::MaskedForSome }
                }
                (Some(policy), None) if kind.detectors().iter().any(|d| policy.detectors.contains(d)) => {
                    Coverage::MaskedForSome
                }
                _ => Coverage::Unmasked,
            };
            Some(SensitiveColumn { column: column.clone(), kind, coverage })
        })
        .collect()
}

/// What a column's name (or type) suggests it holds.
pub fn kind_by_name(column: &str, type_name: &str) -> Option<DataKind> {
    let words = words(column);
    let has = |candidates: &[&str]| words.iter().any(|w| candidates.contains(&w.as_str()));
    let joined: String = words.concat();
    let joined_has = |candidates: &[&str]| candidates.iter().any(|c| joined.contains(c));
    if has(&["password", "passwd", "pwd", "secret", "token", "apikey", "salt"])
        || joined_has(&["password", "apikey", "privatekey", "secretkey", "accesskey"])
    {
        return Some(DataKind::Secret);
    }
    if has(&["email", "mail"]) || joined_has(&["email"]) {
        return Some(DataKind::Email);
    }
    if has(&["card", "pan", "cc"]) || joined_has(&["ccnum", "cardnumber", "creditcard"]) {
        return Some(DataKind::Card);
    }
    if has(&["ssn", "sin", "nino"]) || joined_has(&["socialsecurity"]) {
        return Some(DataKind::Ssn);
    }
    if has(&["iban", "bic"]) || joined_has(&["accountnumber", "bankaccount"]) {
        return Some(DataKind::Iban);
    }
    if has(&["phone", "mobile", "msisdn", "tel"]) || joined_has(&["phonenumber"]) {
        return Some(DataKind::Phone);
    }
    if has(&["dob"]) || joined_has(&["birthdate", "dateofbirth", "birthday"]) {
        return Some(DataKind::BirthDate);
    }
    if has(&["address", "street", "postcode", "zip"]) || joined_has(&["postalcode"]) {
        return Some(DataKind::Address);
    }
    if has(&["ip"]) || joined_has(&["ipaddress"]) || type_name == "inet" {
        return Some(DataKind::IpAddress);
    }
    None
}

/// A column name's words, lower case: split at non-alphanumerics and where
/// lower case turns to upper (`creditCardNumber` → credit, card, number).
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        masking::policy::{ColumnMatcher, ColumnRule, Exemption},
        source::SourceLocation,
    };

    #[test]
    fn names_and_types_suggest_what_detectors_find() {
        let kind = |name: &str| kind_by_name(name, "text");
        assert_eq!(kind("email"), Some(DataKind::Email));
        assert_eq!(kind("contactEmailAddress"), Some(DataKind::Email));
        assert_eq!(kind("card_number"), Some(DataKind::Card));
        assert_eq!(kind("CreditCardNo"), Some(DataKind::Card));
        assert_eq!(kind("ssn"), Some(DataKind::Ssn));
        assert_eq!(kind("iban"), Some(DataKind::Iban));
        assert_eq!(kind("mobile_phone"), Some(DataKind::Phone));
        assert_eq!(kind("date_of_birth"), Some(DataKind::BirthDate));
        assert_eq!(kind("street"), Some(DataKind::Address));
        assert_eq!(kind("password_hash"), Some(DataKind::Secret));
        assert_eq!(kind("api_key"), Some(DataKind::Secret));
        assert_eq!(kind("refresh_token"), Some(DataKind::Secret));
        assert_eq!(kind_by_name("last_seen_from", "inet"), Some(DataKind::IpAddress));
        for plain in ["id", "total", "created_at", "description", "capacity", "tokenizer_version_x"] {
            assert_eq!(kind(plain), None, "{plain}");
        }
    }

    #[test]
    fn coverage_depends_on_rules_exemptions_and_detectors() {
        let at = SourceLocation { file: "p.toml".into(), line: 1, column: 1 };
        let rule = |column: &str, exempt: Exemption| ColumnRule {
            columns: ColumnMatcher::Column(column.into()),
            strategy: Default::default(),
            exempt,
            actors: vec![],
            location: at.clone(),
        };
        let policy = MaskingPolicy {
            detectors: vec![Builtin::Card],
            strategy: Default::default(),
            detector_rules: vec![],
            rules: vec![
                rule("crm.customers.email", Exemption::default()),
                rule("crm.customers.notes", Exemption { users: vec![], groups: vec!["support".into()] }),
            ],
            exempt: Exemption::default(),
            location: at.clone(),
        };
        let columns: Vec<(String, String)> =
            ["id", "email", "notes", "card", "phone"].iter().map(|c| (c.to_string(), "text".to_string())).collect();
        let found = sensitive_columns("crm", "customers", &columns, Some(&policy));
        let summary: Vec<(&str, DataKind, Coverage)> =
            found.iter().map(|c| (c.column.as_str(), c.kind, c.coverage)).collect();
        assert_eq!(
            summary,
            [
                ("email", DataKind::Email, Coverage::MaskedForEveryone),
                ("notes", DataKind::MaskingRule, Coverage::MaskedForSome),
                ("card", DataKind::Card, Coverage::MaskedForSome),
                ("phone", DataKind::Phone, Coverage::Unmasked),
            ]
        );
        let unmasked = sensitive_columns("crm", "customers", &columns, None);
        assert!(unmasked.iter().all(|c| c.coverage == Coverage::Unmasked));
        assert_eq!(unmasked.len(), 3, "without policy only names count");
    }
}
