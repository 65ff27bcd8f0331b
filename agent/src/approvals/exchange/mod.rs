//! Approvals across hosts, through OpenBao (`[approvals] backend =
//! "openbao"` in airlock.toml): an approver decides from their own
//! machine what waits on another, with no Airlock server to run.
//!
//! Layout, in a KV v2 mount (default `airlock`):
//!
//! ```text
//! requests/HOST/ID    RequestDocument   written by HOST's agent, with HOST's own token
//! decisions/HOST/ID   DecisionDocument  written by an approver's agent, with the approver's token
//! ```
//!
//! Why KV v2: every write to a path is kept as a version, so a decision
//! written over (by someone who may write the path but is not the
//! approver) never hides another: the requesting host checks each version.
//! OpenBao's policies say who may write where, listing metadata finds a
//! host's decisions in one call, and it is the engine Airlock already uses.
//!
//! Writing is not proof. A decision is signed with the approver's own key
//! in the transit engine (`airlock-approver-ENTITY`, usable only by that
//! OpenBao entity by policy, see `signed`). The requesting host reads that
//! key's public half, and the entity's alias (who it is) and groups (the
//! IdP's groups as OpenBao maps them to external groups) with its own
//! token, and only then hands the decision to [`super::Approvals`], which
//! checks it under this host's policy like any other (never one's own). No
//! bearer credential of the approver's is ever written where others read.

pub mod signed;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use self::signed::{DecisionDocument, RequestDocument};
use super::{ApprovalRequest, Approvals};
use crate::{
    credentials::openbao::{BaoToken, OpenBao},
    identity::{Identity, IdentitySource},
};

/// `[approvals]` in airlock.toml.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Where requests and decisions meet.
    #[serde(default)]
    pub backend: Backend,
    /// OpenBao's address (`https://bao.internal:8200`).
    pub address: Option<String>,
    /// PEM file of the CA that signs OpenBao's certificate; system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Root-only file holding this host's OpenBao token.
    pub token_file: Option<PathBuf>,
    /// KV v2 mount of requests and decisions (default `airlock`).
    pub mount: Option<String>,
    /// Transit mount of approvers' keys (default `transit`).
    pub transit_mount: Option<String>,
    /// JWT auth mount approvers log in at with their ID token (default `jwt`).
    pub jwt_auth_mount: Option<String>,
    /// Its role (default `airlock-approver`).
    pub jwt_role: Option<String>,
    /// This host's name in requests (default: the hostname).
    pub host: Option<String>,
    /// How often this host looks for decisions, in milliseconds (default 250).
    pub poll_ms: Option<u64>,
}

/// Where approvals are exchanged.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// On this host only (`airlock approve` here).
    #[default]
    Local,
    /// Through OpenBao, across hosts.
    Openbao,
}

const NEEDS_ADDRESS_AND_TOKEN: &str = "[approvals] backend = \"openbao\" needs address and token_file";

impl ApprovalsConfig {
    /// Checks that an OpenBao backend says where and with what token.
    pub fn validate(&self) -> Result<(), String> {
        if self.backend == Backend::Openbao {
            if self.address.is_none() || self.token_file.is_none() {
                return Err(NEEDS_ADDRESS_AND_TOKEN.into());
            }
            if self.poll_ms == Some(0) {
                return Err("[approvals] poll_ms must be > 0".into());
            }
            if let Some(host) = &self.host
                && !valid_segment(host)
            {
                return Err(format!("[approvals] host {host:?}: use letters, digits, '.', '_' and '-'"));
            }
        }
        Ok(())
    }
}

/// Whether `text` is safe as one path segment in OpenBao.
fn valid_segment(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !text.starts_with('.')
}

/// What [`Approvals`] tells the exchange.
#[derive(Debug)]
pub enum ExchangeEvent {
    /// A request was filed: publish it.
    Filed(Box<RequestDocument>),
    /// A request was decided, expired or withdrawn: take it down.
    Ended(String),
}

/// Whether OpenBao answered lately, for `airlock status`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ExchangeHealth {
    /// This host's name in requests.
    pub host: String,
    /// OpenBao's address.
    pub address: String,
    /// The last call failed with this, since then (RFC 3339); `None`: it answers.
    pub unreachable: Option<(String, String)>,
    /// Requests filed here that are not published yet.
    pub unpublished: usize,
}

/// The exchange: this host's side of it.
pub struct Exchange {
    host: String,
    bao: OpenBao,
    mount: String,
    transit: String,
    jwt_mount: String,
    jwt_role: String,
    poll: Duration,
    health: Arc<Mutex<ExchangeHealth>>,
    /// Decision versions already looked at, by request id.
    checked: Mutex<HashMap<String, u64>>,
}

impl Exchange {
    /// The exchange `config` describes (an OpenBao backend).
    pub fn new(config: &ApprovalsConfig) -> Result<Self, String> {
        config.validate()?;
        let (Some(address), Some(token_file)) = (&config.address, &config.token_file) else {
            return Err(NEEDS_ADDRESS_AND_TOKEN.into());
        };
        let host = match &config.host {
            Some(host) => host.clone(),
            None => nix::unistd::gethostname()
                .map_err(|e| format!("reading the hostname: {e}"))?
                .to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
                .collect(),
        };
        let mount = config.mount.clone().unwrap_or_else(|| "airlock".into());
        let bao = OpenBao {
            addr: address.clone(),
            token: BaoToken::File(token_file.clone()),
            mount: mount.clone(),
            ca_file: config.ca_file.clone(),
        };
        Ok(Self {
            health: Arc::new(Mutex::new(ExchangeHealth {
                host: host.clone(),
                address: address.clone(),
                ..Default::default()
            })),
            host,
            bao,
            mount,
            transit: config.transit_mount.clone().unwrap_or_else(|| "transit".into()),
            jwt_mount: config.jwt_auth_mount.clone().unwrap_or_else(|| "jwt".into()),
            jwt_role: config.jwt_role.clone().unwrap_or_else(|| "airlock-approver".into()),
            poll: Duration::from_millis(config.poll_ms.unwrap_or(250)),
            checked: Mutex::default(),
        })
    }

    /// This host's name in requests.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether OpenBao answered lately.
    pub fn health(&self) -> ExchangeHealth {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The same, shared: what [`Approvals`] tells waiting clients.
    pub fn health_handle(&self) -> Arc<Mutex<ExchangeHealth>> {
        Arc::clone(&self.health)
    }

    fn noted<T>(&self, result: Result<T, String>) -> Result<T, String> {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) if health.unreachable.is_some() => {
                tracing::info!(address = %health.address, "OpenBao answers again: approvals across hosts resume");
                health.unreachable = None;
            }
            Err(error) if health.unreachable.is_none() => {
                tracing::warn!(%error, "OpenBao unreachable: requests wait (and expire) until it answers");
                let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                health.unreachable = Some((error.clone(), since));
            }
            _ => {}
        }
        result
    }

    fn data_path(&self, path: &str) -> String {
        format!("{}/data/{path}", self.mount)
    }

    fn metadata_path(&self, path: &str) -> String {
        format!("{}/metadata/{path}", self.mount)
    }

    /// Publishes a request filed here.
    pub async fn publish(&self, document: &RequestDocument) -> Result<(), String> {
        let path = self.data_path(&format!("requests/{}/{}", self.host, document.request.id));
        let body = json!({ "data": document });
        let result = self.bao.call_json("POST", &path, Some(&body)).await.map(drop).map_err(|e| e.to_string());
        self.noted(result)
    }

    /// Takes down request `id` of this host and its decisions.
    pub async fn retire(&self, id: &str) -> Result<(), String> {
        self.checked.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        for kind in ["requests", "decisions"] {
            let path = self.metadata_path(&format!("{kind}/{}/{id}", self.host));
            let result = self.bao.call_json("DELETE", &path, None).await.map(drop).map_err(|e| e.to_string());
            self.noted(result)?;
        }
        Ok(())
    }

    /// Names under a KV directory; none when it does not exist.
    async fn list(&self, directory: &str) -> Result<Vec<String>, String> {
        let path = format!("{}?list=true", self.metadata_path(directory));
        Ok(self.read_or_missing(&path).await?.map_or_else(Vec::new, |answer| {
            answer["data"]["keys"]
                .as_array()
                .map(|keys| keys.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        }))
    }

    /// GET `path` with this host's token; `None` when it is not there
    /// (taken down, or a version someone deleted), which is no outage.
    async fn read_or_missing(&self, path: &str) -> Result<Option<Value>, String> {
        match self.bao.call_json("GET", path, None).await {
            Ok(answer) => self.noted(Ok(Some(answer))),
            Err(error) if error.to_string().contains("HTTP 404") => self.noted(Ok(None)),
            Err(error) => self.noted(Err(error.to_string())),
        }
    }

    /// Decisions written for `pending` requests of this host since last
    /// looked, every version of each (oldest first).
    pub async fn new_decisions(&self, pending: &[String]) -> Result<Vec<DecisionDocument>, String> {
        let listed = self.list(&format!("decisions/{}/", self.host)).await?;
        let mut found = Vec::new();
        for id in pending.iter().filter(|id| listed.contains(id)) {
            let path = format!("decisions/{}/{id}", self.host);
            let Some(metadata) = self.read_or_missing(&self.metadata_path(&path)).await? else { continue };
            let current = metadata["data"]["current_version"].as_u64().unwrap_or(0);
            let seen = self.checked.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied().unwrap_or(0);
            for version in seen + 1..=current {
                let read = self.read_or_missing(&format!("{}?version={version}", self.data_path(&path))).await?;
                // A version someone deleted hides nothing: the others are read.
                let Some(answer) = read else { continue };
                match serde_json::from_value::<DecisionDocument>(answer["data"]["data"].clone()) {
                    Ok(decision) => found.push(decision),
                    Err(error) => {
                        tracing::warn!(request = %id, version, %error, "unreadable decision document ignored")
                    }
                }
            }
            self.checked.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), current);
        }
        Ok(found)
    }

    /// Checks that `decision` is `request`'s and signed by the approver it
    /// names, and says who that is: their OpenBao entity's alias at the JWT
    /// mount, and the entity's groups. Any doubt is an error.
    pub async fn verify(&self, decision: &DecisionDocument, request: &ApprovalRequest) -> Result<Identity, String> {
        if decision.version != 1 || decision.host != self.host || decision.request != request.id {
            return Err("it is for another request".into());
        }
        if decision.request_sha256 != signed::request_digest(request) {
            return Err("it decides a request that differs from the one waiting".into());
        }
        if !valid_segment(&decision.entity_id) {
            return Err("it names no valid OpenBao entity".into());
        }
        let version = signed::signature_version(&decision.signature).map_err(|e| e.to_string())?;
        let key_path = format!("{}/keys/{}", self.transit, signed::key_name(&decision.entity_id));
        let key = self.bao.call_json("GET", &key_path, None).await.map_err(|e| format!("the approver's key: {e}"))?;
        if key["data"]["type"].as_str() != Some("ed25519") {
            return Err("the approver's key is not an ed25519 key".into());
        }
        let public = key["data"]["keys"][version.to_string()]["public_key"]
            .as_str()
            .ok_or_else(|| signed::SignatureError::NoKey(version).to_string())?;
        signed::verify(public, &decision.signature, &decision.message()).map_err(|e| e.to_string())?;

        // Whose key it is: the entity's alias at the approvers' JWT mount.
        let entity = self
            .bao
            .call_json("GET", &format!("identity/entity/id/{}", decision.entity_id), None)
            .await
            .map_err(|e| format!("the approver's OpenBao entity: {e}"))?;
        let mount_path = format!("auth/{}/", self.jwt_mount);
        let alias = entity["data"]["aliases"]
            .as_array()
            .and_then(|aliases| aliases.iter().find(|a| a["mount_path"].as_str() == Some(mount_path.as_str())))
            .and_then(|alias| alias["name"].as_str())
            .ok_or_else(|| format!("the signing entity has no alias at {mount_path}"))?;
        if alias != decision.approver {
            return Err(format!("it was signed by {alias}, not by {}", decision.approver));
        }
        let mut groups = Vec::new();
        for id in entity["data"]["group_ids"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let group = self
                .bao
                .call_json("GET", &format!("identity/group/id/{id}"), None)
                .await
                .map_err(|e| format!("the approver's OpenBao group {id}: {e}"))?;
            groups.extend(group["data"]["name"].as_str().map(str::to_owned));
        }
        groups.sort();
        groups.dedup();
        Ok(Identity {
            source: IdentitySource::Oidc,
            subject: format!("openbao:{}", decision.entity_id),
            user: decision.approver.clone(),
            email: None,
            uid: u32::MAX,
            groups,
            token: None,
            actor: None,
        })
    }

    /// Open requests of every host (this one's too), as published.
    pub async fn open_requests(&self) -> Result<Vec<RequestDocument>, String> {
        let mut found = Vec::new();
        let hosts = self.list("requests/").await?;
        for host in hosts.iter().filter_map(|h| h.strip_suffix('/')) {
            for id in self.list(&format!("requests/{host}/")).await? {
                found.extend(self.open_request(host, &id).await?);
            }
        }
        Ok(found)
    }

    /// Request `id` of `host`, if it is still open (taken down, or never
    /// published: `None`, not an outage).
    pub async fn open_request(&self, host: &str, id: &str) -> Result<Option<RequestDocument>, String> {
        if !valid_segment(host) || !valid_segment(id) {
            return Ok(None);
        }
        let answer = self.read_or_missing(&self.data_path(&format!("requests/{host}/{id}"))).await?;
        Ok(answer.and_then(|answer| serde_json::from_value(answer["data"]["data"].clone()).ok()))
    }

    /// Writes `approver`'s decision on `request` (of another host), signed
    /// with their own transit key, using their own OpenBao token from JWT
    /// auth with their ID token `id_token`.
    pub async fn decide(
        &self,
        request: &RequestDocument,
        approver: &Identity,
        id_token: &crate::secret::Secret,
        approve: bool,
        reason: Option<String>,
    ) -> Result<(), String> {
        let anonymous = OpenBao { token: BaoToken::Anonymous, ..self.bao.clone() };
        let (person, entity_id) = anonymous
            .login_jwt(&self.jwt_mount, &self.jwt_role, id_token)
            .await
            .map_err(|e| format!("logging in to OpenBao as {}: {e}", approver.user))?;
        let outcome = async {
            let key = signed::key_name(&entity_id);
            let key_path = format!("{}/keys/{key}", self.transit);
            if person.call_json("GET", &key_path, None).await.is_err() {
                person
                    .call_json("POST", &key_path, Some(&json!({ "type": "ed25519" })))
                    .await
                    .map_err(|e| format!("making your signing key: {e}"))?;
            }
            let mut decision = DecisionDocument {
                version: 1,
                host: request.host.clone(),
                request: request.request.id.clone(),
                request_sha256: signed::request_digest(&request.request),
                approve,
                reason,
                approver: approver.user.clone(),
                entity_id: entity_id.clone(),
                decided_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                signature: String::new(),
            };
            let input = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, decision.message());
            let signed = person
                .call_json("POST", &format!("{}/sign/{key}", self.transit), Some(&json!({ "input": input })))
                .await
                .map_err(|e| format!("signing the decision: {e}"))?;
            decision.signature =
                signed["data"]["signature"].as_str().ok_or("transit returned no signature")?.to_owned();
            let path = self.data_path(&format!("decisions/{}/{}", request.host, request.request.id));
            person
                .call_json("POST", &path, Some(&json!({ "data": decision })))
                .await
                .map_err(|e| format!("writing the decision: {e}"))?;
            Ok(())
        }
        .await;
        // The token was for this decision only.
        let _ = person.call_json("POST", "auth/token/revoke-self", None).await;
        outcome
    }

    /// Runs this host's side: publishes what is filed, takes down what
    /// ended, and hands verified decisions to `approvals`. Requests that
    /// could not be published are tried again at each round.
    /// `on_decided` sees each decision taken (to end sessions when an
    /// access window it opened closes).
    pub async fn run(
        self: Arc<Self>,
        approvals: Arc<Approvals>,
        mut events: mpsc::UnboundedReceiver<ExchangeEvent>,
        on_decided: Box<dyn Fn(&super::Decided) + Send>,
    ) {
        let mut unpublished: Vec<RequestDocument> = Vec::new();
        let mut unretired: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(ExchangeEvent::Filed(document)) => unpublished.push(*document),
                    Some(ExchangeEvent::Ended(id)) => {
                        unpublished.retain(|d| d.request.id != id);
                        unretired.push(id);
                    }
                    None => return,
                },
                _ = tick.tick() => {}
            }
            // Publish and retire in order; stop at the first failure (OpenBao is away).
            while let Some(document) = unpublished.first() {
                if self.publish(document).await.is_err() {
                    break;
                }
                unpublished.remove(0);
            }
            while let Some(id) = unretired.first() {
                if self.retire(id).await.is_err() {
                    break;
                }
                unretired.remove(0);
            }
            self.health.lock().unwrap_or_else(|p| p.into_inner()).unpublished = unpublished.len();
            let pending = approvals.pending_requests();
            if pending.is_empty() {
                continue;
            }
            let ids: Vec<String> = pending.iter().map(|r| r.id.clone()).collect();
            let Ok(decisions) = self.new_decisions(&ids).await else { continue };
            for decision in decisions {
                let Some(request) = pending.iter().find(|r| r.id == decision.request) else { continue };
                let verified = self.verify(&decision, request).await;
                match verified {
                    Ok(approver) => {
                        match approvals.decide_as(
                            &request.id,
                            &approver,
                            decision.approve,
                            decision.reason.clone(),
                            true,
                        ) {
                            Ok(decided) => {
                                tracing::info!(request = %request.id, approver = %approver.user, "decision from another host taken");
                                on_decided(&decided);
                            }
                            Err(error) => {
                                approvals.refuse_remote(request, &decision.approver, &error.to_string());
                            }
                        }
                    }
                    Err(why) => approvals.refuse_remote(request, &decision.approver, &why),
                }
            }
        }
    }
}
