//! The credential section of a postgres target: `[target.credentials]`,
//! its roles, upstream TLS and OpenBao source.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::Loader;
use crate::{
    policy::model::{
        CredentialSource, Credentials, Network, OpenBaoAuth, Protocol, RoleGrant, Rotation, RotationPlan, UpstreamTls,
    },
    source::SourceFile,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    admin_file: Option<Spanned<String>>,
    openbao: Option<Spanned<RawOpenBao>>,
    ttl_seconds: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    tls_ca_file: Option<Spanned<String>>,
    tls_server_name: Option<String>,
    #[serde(default)]
    role: Vec<Spanned<RawRole>>,
    rotation: Option<Spanned<RawRotation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    enabled: Option<bool>,
    every: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    server: Option<Spanned<String>>,
    openbao_connection: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOpenBao {
    addr: Spanned<String>,
    token_file: Option<Spanned<String>>,
    jwt_auth: Option<RawJwtAuth>,
    #[serde(default = "default_mount")]
    mount: String,
    ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwtAuth {
    #[serde(default = "default_jwt_mount")]
    mount: String,
    role: String,
}

fn default_jwt_mount() -> String {
    "jwt".into()
}

fn default_mount() -> String {
    "database".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    openbao_role: Option<String>,
    name: Spanned<String>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// A created role lives this long unless the policy says otherwise.
const DEFAULT_TTL_SECONDS: u64 = 900;
/// Admin logins rotate this often unless the policy says otherwise.
const DEFAULT_ROTATE_EVERY: Duration = Duration::from_secs(30 * 86_400);
/// The old admin login keeps working this long after the switch.
const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(15 * 60);
/// Bounds of `every`: below a minute rotation is churn; above a year it
/// is no rotation.
const ROTATE_EVERY_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(366 * 86_400);
/// Longest grace: a week.
const MAX_ROTATION_GRACE: Duration = Duration::from_secs(7 * 86_400);

impl Loader {
    pub(super) fn credentials(
        &mut self,
        source: &SourceFile<'_>,
        raw: Spanned<RawCredentials>,
        protocol: Option<Protocol>,
        networks: &[Network],
        port: Option<u16>,
    ) -> Credentials {
        if protocol.is_some_and(|p| p != Protocol::Postgres) {
            let message = "just-in-time credentials are supported for postgres targets only".into();
            self.error(source, raw.span().start, message);
        }
        let start = raw.span().start;
        let raw = raw.into_inner();
        let absolute = |this: &mut Self, path: &Spanned<String>, what: &str| {
            let file = PathBuf::from(path.get_ref());
            if !file.is_absolute() {
                this.error(source, path.span().start, format!("{what} must be an absolute path"));
            }
            file
        };
        let credential_source = match (&raw.admin_file, &raw.openbao) {
            (Some(admin_file), None) => {
                CredentialSource::Embedded { admin_file: absolute(self, admin_file, "admin_file") }
            }
            (None, Some(bao)) => {
                let addr = bao.get_ref().addr.get_ref().clone();
                if let Err(error) = crate::http::Url::parse(&addr) {
                    self.error(source, bao.get_ref().addr.span().start, format!("openbao addr {addr:?}: {error}"));
                }
                let auth = match (&bao.get_ref().token_file, &bao.get_ref().jwt_auth) {
                    (Some(token_file), None) => {
                        OpenBaoAuth::TokenFile(absolute(self, token_file, "openbao token_file"))
                    }
                    (None, Some(jwt)) => OpenBaoAuth::Jwt { mount: jwt.mount.clone(), role: jwt.role.clone() },
                    _ => {
                        let message = "give the openbao table either token_file (Airlock's own token) or \
                                       jwt_auth = { role = \"…\" } (the person's ID token)";
                        self.error(source, bao.span().start, message.into());
                        OpenBaoAuth::TokenFile(PathBuf::new())
                    }
                };
                let ca_file = bao.get_ref().ca_file.as_ref().map(|ca| absolute(self, ca, "openbao ca_file"));
                CredentialSource::OpenBao { addr, auth, mount: bao.get_ref().mount.clone(), ca_file }
            }
            _ => {
                let message =
                    "give either admin_file (embedded engine) or an [target.credentials.openbao] table".into();
                self.error(source, start, message);
                CredentialSource::Embedded { admin_file: PathBuf::new() }
            }
        };
        let ttl = match raw.ttl_seconds {
            None => DEFAULT_TTL_SECONDS,
            Some(ttl) => match u64::try_from(*ttl.get_ref()) {
                Ok(seconds @ 10..=86_400) => seconds,
                _ => {
                    let message = format!("ttl_seconds {} must be between 10 and 86400", ttl.get_ref());
                    self.error(source, ttl.span().start, message);
                    DEFAULT_TTL_SECONDS
                }
            },
        };
        let tls = match raw.tls.as_ref().map(|t| t.get_ref().as_str()) {
            None | Some("prefer") => UpstreamTls::Prefer,
            Some("disable") => UpstreamTls::Disable,
            Some("require") => UpstreamTls::Require,
            Some("verify-full") => match &raw.tls_ca_file {
                Some(ca) if PathBuf::from(ca.get_ref()).is_absolute() => {
                    UpstreamTls::VerifyFull { ca_file: ca.get_ref().into(), server_name: raw.tls_server_name.clone() }
                }
                _ => {
                    let at = raw.tls.as_ref().map_or(0, |t| t.span().start);
                    self.error(source, at, "tls = \"verify-full\" needs tls_ca_file, an absolute path".into());
                    UpstreamTls::Require
                }
            },
            Some(other) => {
                let at = raw.tls.as_ref().map_or(0, |t| t.span().start);
                let message = format!("unknown tls mode {other:?} (expected disable, prefer, require or verify-full)");
                self.error(source, at, message);
                UpstreamTls::Prefer
            }
        };
        let mut roles = Vec::with_capacity(raw.role.len());
        for role in raw.role {
            let start = role.span().start;
            let role = role.into_inner();
            let name = role.name.get_ref();
            if name.is_empty() || name.contains('\0') {
                self.error(source, role.name.span().start, "role name must be a non-empty database user name".into());
            }
            if role.users.is_empty() && role.groups.is_empty() {
                self.error(source, start, format!("role {name:?} is open to nobody: give users, groups or both"));
            }
            roles.push(RoleGrant {
                name: role.name.into_inner(),
                grants: role.grants,
                users: role.users,
                groups: role.groups,
                openbao_role: role.openbao_role,
            });
        }
        let rotation = self.rotation(source, raw.rotation, &credential_source, networks, port);
        Credentials { source: credential_source, ttl: Duration::from_secs(ttl), roles, tls, rotation }
    }

    /// `[target.credentials.rotation]`. The embedded engine's admin login
    /// rotates by default, on the target's one server; OpenBao's root
    /// credential only when the connection to rotate is named.
    fn rotation(
        &mut self,
        source: &SourceFile<'_>,
        raw: Option<Spanned<RawRotation>>,
        credential_source: &CredentialSource,
        networks: &[Network],
        port: Option<u16>,
    ) -> RotationPlan {
        let explicit = raw.as_ref().map(|raw| raw.span().start);
        let raw = raw.map(Spanned::into_inner);
        let scheduled = raw.as_ref().and_then(|r| r.enabled) != Some(false);
        let duration = |this: &mut Self, value: Option<&Spanned<String>>, what: &str, default: Duration| {
            let Some(value) = value else { return default };
            match humantime::parse_duration(value.get_ref()) {
                Ok(duration) => duration,
                Err(error) => {
                    let message = format!("rotation {what} {:?}: {error} (e.g. \"30d\", \"15m\")", value.get_ref());
                    this.error(source, value.span().start, message);
                    default
                }
            }
        };
        let every = duration(self, raw.as_ref().and_then(|r| r.every.as_ref()), "every", DEFAULT_ROTATE_EVERY);
        let grace = duration(self, raw.as_ref().and_then(|r| r.grace.as_ref()), "grace", DEFAULT_ROTATION_GRACE);
        if let Some(at) = raw.as_ref().and_then(|r| r.every.as_ref()).map(|e| e.span().start)
            && !ROTATE_EVERY_RANGE.contains(&every)
        {
            self.error(source, at, "rotation every must be between 1m and 366d".into());
        }
        if let Some(at) = raw.as_ref().and_then(|r| r.grace.as_ref()).map(|g| g.span().start)
            && (grace > MAX_ROTATION_GRACE || grace >= every)
        {
            self.error(source, at, "rotation grace must be at most 7d and shorter than every".into());
        }
        let named_server = raw.as_ref().and_then(|r| r.server.as_ref()).and_then(|server| {
            let text = server.get_ref();
            let parsed = text
                .parse::<std::net::SocketAddr>()
                .ok()
                .or_else(|| Some(std::net::SocketAddr::new(text.parse().ok()?, port?)));
            if parsed.is_none() {
                self.error(
                    source,
                    server.span().start,
                    format!("rotation server {text:?} is not an IP address (or address:port)"),
                );
            }
            parsed
        });
        let connection = raw.as_ref().and_then(|r| r.openbao_connection.clone());
        match credential_source {
            CredentialSource::Embedded { .. } => {
                if let Some(connection) = &connection {
                    let message = "openbao_connection is for an [target.credentials.openbao] source".into();
                    self.error(source, connection.span().start, message);
                }
                let server = named_server.or_else(|| Some(std::net::SocketAddr::new(single_host(networks)?, port?)));
                match (server, explicit) {
                    (Some(server), _) => RotationPlan::Rotates(Rotation {
                        scheduled,
                        every,
                        grace,
                        server: Some(server),
                        openbao_connection: None,
                    }),
                    (None, Some(at)) => {
                        let message = "rotation needs the server the admin login lives on: the target's addresses \
                                       are networks, so give server = \"ADDRESS\""
                            .into();
                        self.error(source, at, message);
                        RotationPlan::Off(String::new())
                    }
                    (None, None) => RotationPlan::Off(
                        "the target's addresses are networks: name the admin login's server in \
                         [target.credentials.rotation] server"
                            .into(),
                    ),
                }
            }
            CredentialSource::OpenBao { auth, .. } => match connection {
                Some(connection) => {
                    if matches!(auth, OpenBaoAuth::Jwt { .. }) {
                        let message = "rotating OpenBao's root credential needs Airlock's own token (token_file), \
                                       not the person's (jwt_auth)"
                            .into();
                        self.error(source, connection.span().start, message);
                    }
                    RotationPlan::Rotates(Rotation {
                        scheduled,
                        every,
                        grace: Duration::ZERO,
                        server: None,
                        openbao_connection: Some(connection.into_inner()),
                    })
                }
                None => RotationPlan::Off(
                    "OpenBao holds this database's root credential: name its connection in \
                     [target.credentials.rotation] openbao_connection for Airlock to rotate it"
                        .into(),
                ),
            },
        }
    }
}

/// The one host the networks name (a /32 or /128), if that is all they name.
fn single_host(networks: &[Network]) -> Option<std::net::IpAddr> {
    match networks {
        [network] if network.prefix_len == 128 => {
            Some(network.addr.to_ipv4_mapped().map_or(std::net::IpAddr::V6(network.addr), std::net::IpAddr::V4))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::tests::{errors, load, target},
        *,
    };
    use crate::policy::model::{CredentialSource, OpenBaoAuth, Rotation, RotationPlan, UpstreamTls};

    #[test]
    fn openbao_source_and_its_checks() {
        let base = target("db", 5432, "[\"10.0.0.5\"]").replace("\"tcp\"", "\"postgres\"");
        let role =
            "\n\n[[target.credentials.role]]\nname = \"analyst\"\nopenbao_role = \"readonly\"\nusers = [\"*\"]\n";
        let good = format!(
            "{base}[target.credentials]\n\n[target.credentials.openbao]\naddr = \"http://127.0.0.1:8200\"\ntoken_file = \"/etc/airlock/bao-token\"{role}"
        );
        let credentials = load(&[("b.toml", &good)]).unwrap().targets[0].credentials.clone().unwrap();
        assert_eq!(
            credentials.source,
            CredentialSource::OpenBao {
                addr: "http://127.0.0.1:8200".into(),
                auth: OpenBaoAuth::TokenFile("/etc/airlock/bao-token".into()),
                mount: "database".into(),
                ca_file: None,
            }
        );
        let jwt = good.replace("token_file = \"/etc/airlock/bao-token\"", "jwt_auth = { role = \"airlock\" }");
        let credentials = load(&[("j.toml", &jwt)]).unwrap().targets[0].credentials.clone().unwrap();
        let CredentialSource::OpenBao { auth, .. } = credentials.source else { panic!("an openbao source") };
        assert_eq!(auth, OpenBaoAuth::Jwt { mount: "jwt".into(), role: "airlock".into() });
        let two = good.replace("token_file = ", "jwt_auth = { role = \"a\" }\ntoken_file = ");
        assert!(load(&[("t.toml", &two)]).unwrap_err().to_string().contains("either token_file"));
        assert_eq!(credentials.roles[0].openbao_role.as_deref(), Some("readonly"));
        let neither = format!("{base}[target.credentials]\nttl_seconds = 60{role}");
        assert!(load(&[("n.toml", &neither)]).unwrap_err().to_string().contains("give either admin_file"));
        let both = good.replace("[target.credentials]\n", "[target.credentials]\nadmin_file = \"/etc/a.toml\"\n");
        assert!(load(&[("x.toml", &both)]).unwrap_err().to_string().contains("give either admin_file"));
        let bad =
            good.replace("http://127.0.0.1:8200", "127.0.0.1:8200").replace("/etc/airlock/bao-token", "bao-token");
        let errors = load(&[("e.toml", &bad)]).unwrap_err().to_string();
        assert!(
            errors.contains("openbao addr \"127.0.0.1:8200\": unsupported URL")
                && errors.contains("token_file must be an absolute path"),
            "{errors}"
        );
        let off_host = good.replace("http://127.0.0.1:8200", "http://bao.internal:8200");
        let errors = load(&[("h.toml", &off_host)]).unwrap_err().to_string();
        assert!(errors.contains("plain http:// is spoken only to this host"), "{errors}");
    }

    #[test]
    fn rotation_schedules_and_their_checks() {
        let base = target("db", 5432, "[\"10.0.0.5\"]").replace("\"tcp\"", "\"postgres\"");
        let role = "\n[[target.credentials.role]]\nname = \"r\"\nusers = [\"*\"]\n";
        let embedded =
            |rotation: &str| format!("{base}[target.credentials]\nadmin_file = \"/etc/a.toml\"\n{rotation}{role}");
        let plan = |text: &str| load(&[("r.toml", text)]).map(|p| p.targets[0].credentials.clone().unwrap().rotation);
        let table = "[target.credentials.rotation]\n";
        assert_eq!(
            plan(&embedded(&format!("{table}every = \"7d\"\ngrace = \"5m\"\n"))).unwrap(),
            RotationPlan::Rotates(Rotation {
                scheduled: true,
                every: Duration::from_secs(7 * 86_400),
                grace: Duration::from_secs(300),
                server: Some("10.0.0.5:5432".parse().unwrap()),
                openbao_connection: None,
            })
        );
        let on_demand = plan(&embedded(&format!("{table}enabled = false\n"))).unwrap();
        assert!(matches!(on_demand, RotationPlan::Rotates(Rotation { scheduled: false, .. })));
        // A network has no one server: off by default, an error when asked for.
        let network = |rotation: &str| embedded(rotation).replace("10.0.0.5\"", "10.0.0.0/24\"");
        assert!(matches!(plan(&network("")).unwrap(), RotationPlan::Off(why) if why.contains("server")));
        let errors = plan(&network(table)).unwrap_err().to_string();
        assert!(errors.contains("rotation needs the server the admin login lives on"), "{errors}");
        let named = plan(&network(&format!("{table}server = \"10.0.0.7\"\n"))).unwrap();
        assert!(
            matches!(named, RotationPlan::Rotates(Rotation { server: Some(s), .. }) if s.to_string() == "10.0.0.7:5432")
        );
        let bad = plan(&embedded(&format!(
            "{table}every = \"sometimes\"\ngrace = \"8d\"\nserver = \"db.internal\"\nopenbao_connection = \"pg\"\n"
        )))
        .unwrap_err()
        .to_string();
        for expected in [
            "rotation every \"sometimes\": ",
            "rotation grace must be at most 7d and shorter than every",
            "rotation server \"db.internal\" is not an IP address",
            "openbao_connection is for an [target.credentials.openbao] source",
        ] {
            assert!(bad.contains(expected), "{expected} in {bad}");
        }
        let short = plan(&embedded(&format!("{table}every = \"30s\"\n"))).unwrap_err().to_string();
        assert!(short.contains("between 1m and 366d"), "{short}");
        // OpenBao: off unless the connection is named, and only with Airlock's own token.
        let bao = |rotation: &str| {
            format!(
                "{base}[target.credentials]\n{rotation}\n[target.credentials.openbao]\naddr = \"http://127.0.0.1:8200\"\ntoken_file = \"/etc/t\"\n{role}"
            )
        };
        assert!(matches!(plan(&bao("")).unwrap(), RotationPlan::Off(why) if why.contains("openbao_connection")));
        let named = plan(&bao(&format!("{table}openbao_connection = \"pg\"\n"))).unwrap();
        assert!(matches!(named, RotationPlan::Rotates(Rotation { openbao_connection: Some(c), .. }) if c == "pg"));
        let jwt = bao(&format!("{table}openbao_connection = \"pg\"\n"))
            .replace("token_file = \"/etc/t\"", "jwt_auth = { role = \"a\" }");
        assert!(plan(&jwt).unwrap_err().to_string().contains("needs Airlock's own token"));
    }

    #[test]
    fn upstream_tls_modes() {
        let base = target("db", 5432, "[\"10.0.0.5\"]").replace("\"tcp\"", "\"postgres\"");
        let with = |tls: &str| {
            format!(
                "{base}[target.credentials]\nadmin_file = \"/etc/a.toml\"\n{tls}\n\n[[target.credentials.role]]\nname = \"r\"\nusers = [\"*\"]\n"
            )
        };
        let mode = |tls: &str| {
            load(&[("t.toml", &with(tls))]).map(|p| p.targets[0].credentials.as_ref().map(|c| c.tls.clone()))
        };
        assert_eq!(mode("").unwrap(), Some(UpstreamTls::Prefer));
        assert_eq!(mode("tls = \"disable\"").unwrap(), Some(UpstreamTls::Disable));
        assert_eq!(mode("tls = \"require\"").unwrap(), Some(UpstreamTls::Require));
        assert_eq!(
            mode("tls = \"verify-full\"\ntls_ca_file = \"/etc/ca.pem\"\ntls_server_name = \"db.internal\"").unwrap(),
            Some(UpstreamTls::VerifyFull { ca_file: "/etc/ca.pem".into(), server_name: Some("db.internal".into()) })
        );
        let missing_ca = mode("tls = \"verify-full\"").unwrap_err().to_string();
        assert!(missing_ca.contains("needs tls_ca_file"), "{missing_ca}");
        let unknown = mode("tls = \"maybe\"").unwrap_err().to_string();
        assert!(unknown.contains("unknown tls mode \"maybe\""), "{unknown}");
    }

    #[test]
    fn credentials_load_and_are_checked() {
        let base = target("db", 5432, "[\"10.0.0.5\"]").replace("\"tcp\"", "\"postgres\"");
        let good = format!(
            "{base}[target.credentials]\nadmin_file = \"/etc/airlock/credentials/db.toml\"\n\n[[target.credentials.role]]\nname = \"readonly\"\ngrants = [\"pg_read_all_data\"]\ngroups = [\"dev\"]\n"
        );
        let policy = load(&[("c.toml", &good)]).unwrap();
        assert_eq!(
            policy.targets[0].credentials,
            Some(Credentials {
                source: CredentialSource::Embedded { admin_file: "/etc/airlock/credentials/db.toml".into() },
                ttl: Duration::from_secs(900),
                roles: vec![RoleGrant {
                    name: "readonly".into(),
                    grants: vec!["pg_read_all_data".into()],
                    users: vec![],
                    groups: vec!["dev".into()],
                    openbao_role: None,
                }],
                tls: UpstreamTls::Prefer,
                rotation: RotationPlan::Rotates(Rotation {
                    scheduled: true,
                    every: DEFAULT_ROTATE_EVERY,
                    grace: DEFAULT_ROTATION_GRACE,
                    server: Some("10.0.0.5:5432".parse().unwrap()),
                    openbao_connection: None,
                }),
            })
        );
        let ttl = good.replace("db.toml\"\n", "db.toml\"\nttl_seconds = 60\n");
        let ttl = load(&[("c.toml", &ttl)]).unwrap().targets[0].credentials.as_ref().map(|c| c.ttl);
        assert_eq!(ttl, Some(Duration::from_secs(60)));

        let bad = format!(
            "{}[target.credentials]\nadmin_file = \"db.toml\"\nttl_seconds = 5\n\n[[target.credentials.role]]\nname = \"\"\n",
            base.replace("\"postgres\"", "\"ssh\"")
        );
        assert_eq!(
            errors(&[("c.toml", &bad)]),
            [
                "c.toml:6:1: just-in-time credentials are supported for postgres targets only",
                "c.toml:7:14: admin_file must be an absolute path",
                "c.toml:8:15: ttl_seconds 5 must be between 10 and 86400",
                "c.toml:10:1: role \"\" is open to nobody: give users, groups or both",
                "c.toml:11:8: role name must be a non-empty database user name",
            ]
        );
    }
}
