//! What an OpenBao token Airlock holds may do: `auth/token/lookup-self`.

use std::path::Path;

use serde_json::Value;

use super::impact::{Assessment, Rule};
use crate::credentials::openbao::{BaoToken, OpenBao};

/// A token's policies and lifetime, as OpenBao reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    /// Policies attached.
    pub policies: Vec<String>,
    /// Seconds left; 0: never expires.
    pub ttl_seconds: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
}

impl TokenFacts {
    /// Reads them from a lookup-self answer's `data`.
    pub fn from_lookup(data: &Value) -> Self {
        let policies = data["policies"]
            .as_array()
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Self {
            policies,
            ttl_seconds: data["ttl"].as_u64().unwrap_or(0),
            renewable: data["renewable"].as_bool().unwrap_or(false),
        }
    }

    /// The TTL column: how long a leaked copy would work.
    pub fn lifetime(&self) -> String {
        let renewal = if self.renewable { ", renewable" } else { ", not renewable" };
        match self.ttl_seconds {
            0 => format!("never expires{renewal}"),
            ttl => format!("{ttl} s left{renewal}"),
        }
    }

    /// Its impact: the root policy opens everything; a token that obtains
    /// other secrets opens what they open, which Airlock cannot see.
    pub fn assess(&self, issues_secrets: bool) -> Assessment {
        if self.policies.iter().any(|p| p == "root") {
            return Assessment::new(Rule::RootToken, "the root policy: everything OpenBao holds");
        }
        if issues_secrets {
            return Assessment::new(
                Rule::ScopeUnknown,
                format!("obtains credentials whose scope Airlock cannot see (policies {})", self.policies.join(", ")),
            );
        }
        Assessment::new(Rule::TokenPolicies, format!("limited to policies {}", self.policies.join(", ")))
    }
}

/// Looks the token in `token_file` up at `addr`.
pub async fn lookup(addr: &str, token_file: &Path, ca_file: Option<&Path>) -> Result<TokenFacts, String> {
    let client = OpenBao {
        addr: addr.to_owned(),
        token: BaoToken::File(token_file.to_owned()),
        mount: String::new(),
        ca_file: ca_file.map(Path::to_owned),
    };
    let answer = client.call_json("GET", "auth/token/lookup-self", None).await.map_err(|e| e.to_string())?;
    Ok(TokenFacts::from_lookup(&answer["data"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_answers_decide_lifetime_and_impact() {
        let root = TokenFacts::from_lookup(&serde_json::json!({"policies": ["root"], "ttl": 0, "renewable": false}));
        assert_eq!(root.lifetime(), "never expires, not renewable");
        assert_eq!(root.assess(false).rule, Rule::RootToken);
        let scoped = TokenFacts::from_lookup(
            &serde_json::json!({"policies": ["default", "db"], "ttl": 3600, "renewable": true}),
        );
        assert_eq!(scoped.lifetime(), "3600 s left, renewable");
        assert_eq!(scoped.assess(true).rule, Rule::ScopeUnknown);
        let found = scoped.assess(false);
        assert_eq!((found.rule, found.reason.as_str()), (Rule::TokenPolicies, "limited to policies default, db"));
    }
}
