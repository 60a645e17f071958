//! Who may connect and what they may touch: one identity model for MQTT and NATS.
//!
//! - [`password`]: Mosquitto's password file (`$7$` PBKDF2-SHA512, `$6$` SHA-512), read as it
//!   is; `edge-broker passwd` writes it.
//! - [`acl`]: Mosquitto's `acl_file` syntax and the effective rules of one client.
//! - [`failures`]: failed logins counted per source address; the delay that slows guessing.
//! - [`owners`]: which user owns an MQTT session (no takeover by another user).
//! - [`secret`]: passwords and tokens read from files, systemd credentials included.
//! - [`cert`]: the user name a client certificate stands for (`use_identity_as_username`).
//! - [`check`]: the security warnings of `edge-broker check` (and of the start-up log).
//!
//! [`Auth`] is shared by both front ends. A connection logs in once ([`Auth::login`]), gets an
//! [`Identity`] (user name, or none for anonymous clients, and client id) and checks every
//! publish and subscribe through its [`Permissions`]. Deliveries to a subscription go through
//! [`Auth::guard`], which re-checks the subscription after a reload and, for subscriptions a
//! `deny` rule overlaps, every message. NATS subjects are checked as the MQTT topics they map
//! to in the hub, so a topic denied to a user over MQTT is denied over NATS too.
//!
//! SIGHUP re-reads the password file, the ACL file and the NATS credentials; a file that does
//! not load keeps the previous ones and the error says why. Changed rules apply to existing
//! connections and subscriptions at their next publish, subscribe or delivery.

pub mod acl;
pub mod cert;
pub mod check;
pub mod failures;
pub mod owners;
pub mod password;
pub mod secret;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use ring::hmac;

use crate::config::Config;
use crate::hub::{Delivery, Mailbox, Offer, Room};
use acl::{Acl, AclError, RuleSet, SubscribeVerdict, VerdictCache};
use failures::LoginFailures;
use owners::SessionOwners;
use password::{PasswordFile, PasswordFileError, constant_time_eq};
use secret::SecretError;

/// The ACL user name of NATS clients that authenticate with `nats.token` / `nats.token_file`.
pub const TOKEN_USER: &str = "$token";
/// Above this many PBKDF2 iterations a verification runs on a blocking thread.
const INLINE_ITERATIONS: u32 = 1_000;

/// The front end a login or check comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 / 5.
    Mqtt,
    /// The NATS client protocol.
    Nats,
}

impl Protocol {
    fn index(self) -> usize {
        match self {
            Protocol::Mqtt => 0,
            Protocol::Nats => 1,
        }
    }

    /// The `protocol` label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Nats => "nats",
        }
    }
}

/// Why the auth files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthLoadError {
    /// `auth.password_file`.
    #[error(transparent)]
    Passwords(#[from] PasswordFileError),
    /// `auth.acl_file`.
    #[error(transparent)]
    Acl(#[from] AclError),
    /// A secret file (`nats.token_file`, `nats.users[].password_file`).
    #[error("{field}: {error}")]
    Secret {
        /// The config field naming the file.
        field: String,
        /// What is wrong.
        error: SecretError,
    },
}

impl AuthLoadError {
    /// The config field the error is about.
    pub fn field(&self) -> String {
        match self {
            AuthLoadError::Passwords(_) => "auth.password_file".to_owned(),
            AuthLoadError::Acl(_) => "auth.acl_file".to_owned(),
            AuthLoadError::Secret { field, .. } => field.clone(),
        }
    }
}

/// Why a login was refused (for the log; clients only learn "not authorized").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefusal {
    /// No credentials, and anonymous clients are not allowed.
    #[error("anonymous clients are not allowed")]
    Anonymous,
    /// The user name is not known.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The password does not match.
    #[error("wrong password for user {0:?}")]
    WrongPassword(String),
    /// The NATS token does not match (or none is configured).
    #[error("wrong token")]
    WrongToken,
    /// A user name was given, but nothing can verify it and anonymous clients are not allowed.
    #[error(
        "user {0:?} cannot be verified (no auth.password_file) and anonymous clients are not allowed"
    )]
    Unverifiable(String),
    /// Too many attempts from the source are already waiting for their turn.
    #[error("too many login attempts from this address are waiting; refused unchecked")]
    Throttled,
    /// `use_identity_as_username`, but the certificate names nobody.
    #[error("the client certificate has no CN or subject alternative name to use as user name")]
    NoCertificateIdentity,
}

/// What a client presents at CONNECT.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// A verified client certificate was presented (mutual TLS): the client is authenticated
    /// even without a user name.
    pub certificate: bool,
    /// `[mqtt] use_identity_as_username`: the certificate's identity is the user name
    /// (`Some(None)`: on, but the certificate has none).
    pub certificate_user: Option<Option<String>>,
    /// CONNECT user name.
    pub user: Option<String>,
    /// CONNECT password.
    pub password: Option<Vec<u8>>,
    /// NATS CONNECT `auth_token`.
    pub token: Option<String>,
}

/// A verified client certificate (mutual TLS) and the identity it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// CN, or the first DNS/e-mail/URI SAN ([`cert::identity`]).
    pub identity: Option<String>,
}

/// The credentials of an MQTT CONNECT (and the TLS client certificate, if any).
pub fn mqtt_credentials(
    connect: &edge_proto::mqtt::Connect,
    certificate: Option<PeerCertificate>,
    settings: &crate::config::MqttSection,
) -> Credentials {
    Credentials {
        certificate: certificate.is_some(),
        certificate_user: certificate
            .filter(|_| settings.use_identity_as_username)
            .map(|c| c.identity),
        user: connect.username.as_ref().map(|u| u.as_str().to_owned()),
        password: connect.password.as_ref().map(|p| p.to_vec()),
        token: None,
    }
}

/// Who a connection is, for permissions and session ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The authenticated user name; `None` for anonymous clients.
    pub user: Option<Arc<str>>,
    /// The MQTT client id, or the NATS connection name.
    pub client_id: Arc<str>,
}

/// What the files and `[auth]`/`[mqtt]`/`[nats]` settings say, loaded once per (re)load.
#[derive(Debug, Default)]
struct AuthState {
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
    mqtt_anonymous: bool,
    nats_anonymous: bool,
    nats_token: Option<String>,
    nats_users: Vec<(String, String)>,
}

impl AuthState {
    fn load(config: &Config) -> Result<AuthState, AuthLoadError> {
        let passwords = match &config.auth.password_file {
            Some(path) => Some(PasswordFile::load(path)?),
            None => None,
        };
        let acl = match &config.auth.acl_file {
            Some(path) => Some(Acl::load(path)?),
            None => None,
        };
        let secret = |field: String, path: &PathBuf| {
            secret::read(path).map_err(|error| AuthLoadError::Secret { field, error })
        };
        let nats = &config.nats;
        let nats_token = match (&nats.token, &nats.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(secret("nats.token_file".to_owned(), path)?),
            (None, None) => None,
        };
        let mut nats_users = Vec::with_capacity(nats.users.len());
        for (i, user) in nats.users.iter().enumerate() {
            let password = match (&user.password, &user.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(path)) => secret(format!("nats.users[{i}].password_file"), path)?,
                (None, None) => String::new(),
            };
            nats_users.push((user.user.clone(), password));
        }
        Ok(AuthState {
            mqtt_anonymous: config.mqtt_anonymous_allowed(),
            nats_anonymous: config.nats_anonymous_allowed(),
            passwords,
            acl,
            nats_token,
            nats_users,
        })
    }

    /// The effective rules of `identity`; `None` without an ACL (everything allowed).
    fn rules(&self, identity: &Identity) -> Option<Arc<RuleSet>> {
        self.acl
            .as_ref()
            .map(|acl| Arc::new(acl.rules_for(identity.user.as_deref(), &identity.client_id)))
    }
}

/// Counters of logins and permission checks, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Refused logins, by protocol.
    pub login_failures: [AtomicU64; 2],
    /// Publishes refused by the ACL, by protocol.
    pub denied_publishes: [AtomicU64; 2],
    /// Subscriptions refused by the ACL, by protocol.
    pub denied_subscriptions: [AtomicU64; 2],
    /// Messages not delivered to a subscription because the ACL does not let its owner read them.
    pub denied_deliveries: AtomicU64,
    /// MQTT connections refused because another user owns the session.
    pub session_takeovers_refused: AtomicU64,
    /// Reloads of the auth files that failed (the previous ones stayed).
    pub reload_failures: AtomicU64,
}

/// Authentication and permissions shared by the front ends (see the module docs).
pub struct Auth {
    state: RwLock<Arc<AuthState>>,
    generation: AtomicU64,
    failures: LoginFailures,
    /// user → HMAC(process key, password) of the last password that verified (cleared on
    /// reload; at most one entry per user of the password file).
    verified: Mutex<HashMap<String, hmac::Tag>>,
    verified_key: hmac::Key,
    /// Verified (and failed) for unknown users, so they take as long as a wrong password.
    dummy: password::PasswordHash,
    /// Who owns which MQTT session.
    pub owners: SessionOwners,
    /// Counters.
    pub metrics: AuthMetrics,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the files `config` names; session owners are kept at `owners` (memory only
    /// without one).
    pub fn new(config: &Config, owners: Option<PathBuf>) -> Result<Arc<Auth>, AuthLoadError> {
        let state = AuthState::load(config)?;
        let rng = ring::rand::SystemRandom::new();
        let verified_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            hmac::Key::new(hmac::HMAC_SHA256, &std::process::id().to_le_bytes())
        });
        let dummy = password::PasswordHash::new_pbkdf2(b"edge-broker: no such user").unwrap_or(
            password::PasswordHash::Sha512 {
                salt: Vec::new(),
                hash: vec![0; 64],
            },
        );
        Ok(Arc::new(Auth {
            dummy,
            state: RwLock::new(Arc::new(state)),
            generation: AtomicU64::new(1),
            failures: LoginFailures::new(
                config.auth.max_login_delay.0,
                config.auth.max_tracked_sources,
            ),
            verified: Mutex::new(HashMap::new()),
            verified_key,
            owners: owners.map_or_else(SessionOwners::in_memory, SessionOwners::open),
            metrics: AuthMetrics::default(),
        }))
    }

    fn state(&self) -> Arc<AuthState> {
        Arc::clone(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes on every reload: permissions computed earlier must be computed again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether NATS clients must authenticate (INFO `auth_required`).
    pub fn nats_auth_required(&self) -> bool {
        !self.state().nats_anonymous
    }

    /// Sources with recent failed logins.
    pub fn tracked_sources(&self) -> usize {
        self.failures.len()
    }

    /// Checks `credentials` from `peer`. A refusal is counted and answered only after the
    /// delay the source has earned (see [`failures`]); attempts from a source that failed
    /// recently are taken one at a time.
    pub async fn login(
        self: &Arc<Self>,
        protocol: Protocol,
        peer: IpAddr,
        credentials: Credentials,
    ) -> Result<Option<Arc<str>>, LoginRefusal> {
        let gate = self.failures.gate(peer, Instant::now());
        let _turn = match &gate {
            // Waiting for the turn is bounded: a source queuing many attempts gets them refused
            // unchecked instead of holding connection slots for ever.
            Some(gate) => match tokio::time::timeout(self.failures.max_wait(), gate.lock()).await {
                Ok(turn) => Some(turn),
                Err(_) => {
                    self.metrics.login_failures[protocol.index()].fetch_add(1, Ordering::Relaxed);
                    return Err(LoginRefusal::Throttled);
                }
            },
            None => None,
        };
        let state = self.state();
        let heavy = credentials
            .user
            .as_deref()
            .and_then(|u| state.passwords.as_ref()?.get(u))
            .is_some_and(|h| h.iterations() > INLINE_ITERATIONS);
        let outcome = if heavy {
            let auth = Arc::clone(self);
            let state = Arc::clone(&state);
            match tokio::task::spawn_blocking(move || auth.check(&state, protocol, &credentials))
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(LoginRefusal::Anonymous),
            }
        } else {
            self.check(&state, protocol, &credentials)
        };
        match outcome {
            Ok(user) => Ok(user.map(Arc::from)),
            Err(refusal) => {
                self.metrics.login_failures[protocol.index()].fetch_add(1, Ordering::Relaxed);
                let delay = self.failures.record(peer, Instant::now());
                tokio::time::sleep(delay).await;
                Err(refusal)
            }
        }
    }

    /// The login decision (see the README's table): the user name, `None` for anonymous.
    fn check(
        &self,
        state: &AuthState,
        protocol: Protocol,
        c: &Credentials,
    ) -> Result<Option<String>, LoginRefusal> {
        if let Some(identity) = &c.certificate_user {
            return identity
                .clone()
                .map(Some)
                .ok_or(LoginRefusal::NoCertificateIdentity);
        }
        let anonymous = match protocol {
            Protocol::Mqtt => state.mqtt_anonymous,
            Protocol::Nats => state.nats_anonymous,
        };
        if protocol == Protocol::Nats
            && let Some(token) = &c.token
        {
            return match &state.nats_token {
                Some(expected) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
                    Ok(Some(TOKEN_USER.to_owned()))
                }
                _ => Err(LoginRefusal::WrongToken),
            };
        }
        let Some(user) = &c.user else {
            return if anonymous || c.certificate {
                Ok(None)
            } else {
                Err(LoginRefusal::Anonymous)
            };
        };
        let password = c.password.as_deref().unwrap_or_default();
        if protocol == Protocol::Nats {
            // Every configured user is compared, so the time does not tell which names exist.
            let mut found = false;
            let mut matched = false;
            for (name, expected) in &state.nats_users {
                if name == user {
                    found = true;
                    matched |= constant_time_eq(expected.as_bytes(), password);
                }
            }
            if matched {
                return Ok(Some(user.clone()));
            }
            if found && state.passwords.as_ref().and_then(|p| p.get(user)).is_none() {
                return Err(LoginRefusal::WrongPassword(user.clone()));
            }
        }
        match &state.passwords {
            Some(file) => match file.get(user) {
                Some(hash) if self.verify_cached(user, hash, password) => Ok(Some(user.clone())),
                Some(_) => Err(LoginRefusal::WrongPassword(user.clone())),
                None => {
                    // As long as a wrong password takes: the time does not tell who exists.
                    let _ = self.dummy.verify(password);
                    Err(LoginRefusal::UnknownUser(user.clone()))
                }
            },
            None if protocol == Protocol::Nats && !state.nats_users.is_empty() => {
                Err(LoginRefusal::UnknownUser(user.clone()))
            }
            // Nothing can verify the name: it is not used as an identity.
            None if anonymous || c.certificate => Ok(None),
            None => Err(LoginRefusal::Unverifiable(user.clone())),
        }
    }

    /// Verifies `password` against `hash`, skipping PBKDF2 when the same password verified
    /// since the last reload (compared as an HMAC under a per-process random key, in constant
    /// time; a mismatch still runs the full verification, so timing tells nothing).
    fn verify_cached(&self, user: &str, hash: &password::PasswordHash, password: &[u8]) -> bool {
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned();
        if let Some(tag) = cached
            && hmac::verify(&self.verified_key, password, tag.as_ref()).is_ok()
        {
            return true;
        }
        if !hash.verify(password) {
            return false;
        }
        let tag = hmac::sign(&self.verified_key, password);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_owned(), tag);
        true
    }

    /// Whether `identity` may take the MQTT session of its client id (`exists`: a session with
    /// that id is there now); refusals are counted.
    pub fn claim_session(&self, identity: &Identity, exists: bool) -> bool {
        let ok = self
            .owners
            .claim(
                &identity.client_id,
                identity.user.as_deref(),
                exists,
                Instant::now(),
            )
            .is_ok();
        if !ok {
            self.metrics
                .session_takeovers_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The permissions of a connection.
    pub fn permissions(self: &Arc<Self>, protocol: Protocol, identity: Identity) -> Permissions {
        let state = self.state();
        Permissions {
            auth: Arc::clone(self),
            protocol,
            generation: self.generation(),
            rules: state.rules(&identity),
            identity,
            published: VerdictCache::default(),
        }
    }

    /// Wraps a subscription's mailbox so deliveries follow the ACL (see [`GuardedMailbox`]).
    /// `filter` is the subscription's MQTT filter (NATS subjects mapped).
    pub fn guard(
        self: &Arc<Self>,
        identity: Identity,
        filter: &str,
        inner: Arc<dyn Mailbox>,
    ) -> Arc<dyn Mailbox> {
        Arc::new(GuardedMailbox {
            inner,
            auth: Arc::clone(self),
            identity,
            filter: filter.into(),
            checked: AtomicU64::new(0),
            verdict: AtomicU8::new(VERDICT_GRANTED),
            rules: Mutex::new((None, VerdictCache::default())),
        })
    }

    /// Loads the files again; on failure keeps the previous ones and says why.
    pub fn reload_from(&self, config: &Config) {
        match AuthState::load(config) {
            Ok(state) => {
                let users = state.passwords.as_ref().map_or(0, PasswordFile::len);
                let rules = state.acl.as_ref().map_or(0, Acl::rule_count);
                *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
                self.verified
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                self.generation.fetch_add(1, Ordering::AcqRel);
                tracing::info!(
                    users,
                    acl_rules = rules,
                    "auth: users and permissions reloaded"
                );
            }
            Err(err) => {
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    field = %err.field(),
                    "auth: keeping the previous users and permissions: {err}"
                );
            }
        }
    }

    /// Saves the session owners (pruning those whose session is gone).
    pub fn save_owners(&self, session_exists: impl Fn(&str) -> bool) {
        if let Err(err) = self.owners.save(session_exists, Instant::now()) {
            tracing::error!("saving MQTT session owners failed: {err}");
        }
    }
}

impl crate::reload::Reload for Auth {
    fn reload(&self, config: &Config) {
        self.reload_from(config);
    }
}

/// What one connection may do, refreshed when the rules are reloaded.
#[derive(Debug)]
pub struct Permissions {
    auth: Arc<Auth>,
    protocol: Protocol,
    identity: Identity,
    generation: u64,
    /// `None`: no ACL, everything is allowed.
    rules: Option<Arc<RuleSet>>,
    /// Answers for recently published names (topics or subjects): devices repeat topics.
    published: VerdictCache,
}

impl Permissions {
    /// Who this is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn refresh(&mut self) {
        let generation = self.auth.generation();
        if generation != self.generation {
            self.generation = generation;
            self.rules = self.auth.state().rules(&self.identity);
            self.published.clear();
        }
    }

    /// The generation of the rules the last answer came from. A caller may keep an allowed
    /// publish for one name under this stamp, and must ask again once [`Self::is_current`]
    /// says no (a reload changed the rules, or may have).
    pub fn checked_generation(&self) -> u64 {
        self.generation
    }

    /// Whether no reload happened since the rules of `generation` were taken: an answer
    /// stamped with [`Self::checked_generation`] still holds. One atomic load.
    pub fn is_current(&self, generation: u64) -> bool {
        self.auth.generation() == generation
    }

    /// Whether no ACL rule applies to this identity under the current rules: then every
    /// subscription's guard ([`Auth::guard`]) lets every delivery through.
    pub fn unrestricted(&mut self) -> bool {
        self.refresh();
        self.rules.is_none()
    }

    /// Whether the client may publish to the MQTT topic `topic`; a refusal is counted.
    pub fn may_publish(&mut self, topic: &str) -> bool {
        self.may_publish_mapped(topic, |t| Some(t.to_owned()))
    }

    /// Whether the client may publish to `name`, checked as the MQTT topic `to_topic` maps it
    /// to (`None`: it has none, refused under an ACL). Answers for recent names are cached.
    pub fn may_publish_mapped(
        &mut self,
        name: &str,
        to_topic: impl FnOnce(&str) -> Option<String>,
    ) -> bool {
        self.refresh();
        let Some(rules) = &self.rules else {
            return true;
        };
        if let Some(allowed) = self.published.get(name) {
            return self.count_publish(allowed);
        }
        let allowed = to_topic(name).is_some_and(|topic| rules.may_publish(&topic));
        self.published.put(name, allowed);
        self.count_publish(allowed)
    }

    fn count_publish(&self, allowed: bool) -> bool {
        if !allowed {
            self.auth.metrics.denied_publishes[self.protocol.index()]
                .fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Whether (and how) the client may subscribe to the MQTT filter `filter`; a refusal is
    /// counted.
    pub fn subscribe(&mut self, filter: &str) -> SubscribeVerdict {
        self.refresh();
        let verdict = self
            .rules
            .as_ref()
            .map_or(SubscribeVerdict::Granted, |rules| rules.subscribe(filter));
        if verdict == SubscribeVerdict::Denied {
            self.auth.metrics.denied_subscriptions[self.protocol.index()]
                .fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// [`Auth::guard`] for this connection's identity.
    pub fn guard(&self, filter: &str, inner: Arc<dyn Mailbox>) -> Arc<dyn Mailbox> {
        self.auth.guard(self.identity.clone(), filter, inner)
    }
}

const VERDICT_GRANTED: u8 = 0;
const VERDICT_FILTERED: u8 = 1;
const VERDICT_DENIED: u8 = 2;

/// A subscription's mailbox behind the ACL: the subscription is checked again whenever the
/// rules were reloaded (a revoked one stops receiving), and a subscription that a `deny` rule
/// overlaps has each message checked as a read of its topic. A granted subscription costs one
/// atomic load per delivery.
#[derive(Debug)]
pub struct GuardedMailbox {
    inner: Arc<dyn Mailbox>,
    auth: Arc<Auth>,
    identity: Identity,
    filter: Box<str>,
    /// The generation the verdict is for (0: not checked yet).
    checked: AtomicU64,
    verdict: AtomicU8,
    /// The rules of the checked generation, and answers for recent topics (filtered verdict).
    rules: Mutex<(Option<Arc<RuleSet>>, VerdictCache)>,
}

impl GuardedMailbox {
    fn recheck(&self, generation: u64) {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        if self.checked.load(Ordering::Acquire) == generation {
            return;
        }
        let current = self.auth.state().rules(&self.identity);
        let verdict = match current.as_ref().map(|r| r.subscribe(&self.filter)) {
            None | Some(SubscribeVerdict::Granted) => VERDICT_GRANTED,
            Some(SubscribeVerdict::Filtered) => VERDICT_FILTERED,
            Some(SubscribeVerdict::Denied) => VERDICT_DENIED,
        };
        *rules = (current, VerdictCache::default());
        self.verdict.store(verdict, Ordering::Release);
        self.checked.store(generation, Ordering::Release);
    }
}

impl GuardedMailbox {
    /// Whether the ACL lets this subscription read `delivery`; a refusal is counted.
    fn allowed(&self, delivery: &Delivery) -> bool {
        let generation = self.auth.generation();
        if self.checked.load(Ordering::Acquire) != generation {
            self.recheck(generation);
        }
        let allowed = match self.verdict.load(Ordering::Acquire) {
            VERDICT_GRANTED => true,
            VERDICT_FILTERED => {
                let mut guard = self.rules.lock().unwrap_or_else(|p| p.into_inner());
                let (rules, cache) = &mut *guard;
                let topic: &str = &delivery.message.topic;
                match cache.get(topic) {
                    Some(allowed) => allowed,
                    None => {
                        let allowed = rules.as_ref().is_none_or(|r| r.may_read(topic));
                        cache.put(topic, allowed);
                        allowed
                    }
                }
            }
            _ => false,
        };
        if !allowed {
            self.auth
                .metrics
                .denied_deliveries
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl Mailbox for GuardedMailbox {
    fn deliver(&self, delivery: Delivery) -> bool {
        self.allowed(&delivery) && self.inner.deliver(delivery)
    }

    fn offer(&self, delivery: Delivery) -> Offer {
        if self.allowed(&delivery) {
            self.inner.offer(delivery)
        } else {
            Offer::Refused
        }
    }

    fn room(&self) -> Option<&Room> {
        self.inner.room()
    }
}

/// Renders the auth counters into `/metrics`.
pub fn render(text: &mut crate::metrics::PromText, auth: &Auth) {
    let m = &auth.metrics;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let by_protocol =
        |counters: &[AtomicU64; 2]| -> Vec<(&'static [(&'static str, &'static str)], u64)> {
            vec![
                (&[("protocol", "mqtt")][..], load(&counters[0])),
                (&[("protocol", "nats")][..], load(&counters[1])),
            ]
        };
    text.counter(
        "edge_auth_login_failures_total",
        "Logins refused (wrong or missing credentials), each answered after a delay.",
        &by_protocol(&m.login_failures),
    );
    text.counter(
        "edge_auth_denied_publishes_total",
        "Publishes refused by the ACL (not stored, not forwarded).",
        &by_protocol(&m.denied_publishes),
    );
    text.counter(
        "edge_auth_denied_subscriptions_total",
        "Subscriptions refused by the ACL.",
        &by_protocol(&m.denied_subscriptions),
    );
    text.counter(
        "edge_auth_denied_deliveries_total",
        "Messages withheld from a subscription whose owner may not read their topic.",
        &[(&[], load(&m.denied_deliveries))],
    );
    text.counter(
        "edge_auth_session_takeovers_refused_total",
        "MQTT connections refused because another user owns the session.",
        &[(&[], load(&m.session_takeovers_refused))],
    );
    text.counter(
        "edge_auth_reload_failures_total",
        "Reloads of the password/ACL files that failed (the previous ones stayed in force).",
        &[(&[], load(&m.reload_failures))],
    );
    text.gauge(
        "edge_auth_tracked_sources",
        "Source addresses with recent failed logins (bounded by auth.max_tracked_sources).",
        &[(&[], auth.tracked_sources() as f64)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn auth(extra: &str) -> (Arc<Auth>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        password::update_file(&passwd, "alice", b"pw").unwrap();
        let text = extra.replace("{passwd}", &passwd.display().to_string());
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        (Auth::new(&config, None).unwrap(), dir)
    }

    /// [`auth`] with a password file only, its path, and the config a reload reads it by.
    fn reloadable_auth() -> (Arc<Auth>, tempfile::TempDir, std::path::PathBuf, Config) {
        let (a, dir) = auth("[auth]\npassword_file = \"{passwd}\"\n");
        let passwd = dir.path().join("passwd");
        let config = Config::parse(
            &format!("[auth]\npassword_file = \"{}\"\n", passwd.display()),
            Path::new("t.toml"),
        )
        .unwrap();
        (a, dir, passwd, config)
    }

    fn creds(user: Option<&str>, password: Option<&str>) -> Credentials {
        Credentials {
            user: user.map(str::to_owned),
            password: password.map(|p| p.as_bytes().to_vec()),
            ..Credentials::default()
        }
    }

    fn check(
        a: &Auth,
        protocol: Protocol,
        c: &Credentials,
    ) -> Result<Option<String>, LoginRefusal> {
        a.check(&a.state(), protocol, c)
    }

    #[test]
    fn the_login_decisions() {
        let (a, _d) = auth("[auth]\npassword_file = \"{passwd}\"\n[nats]\ntoken = \"tok\"\n");
        let m = Protocol::Mqtt;
        assert_eq!(
            check(&a, m, &creds(Some("alice"), Some("pw"))),
            Ok(Some("alice".into()))
        );
        assert_eq!(
            check(&a, m, &creds(Some("alice"), Some("no"))),
            Err(LoginRefusal::WrongPassword("alice".into()))
        );
        assert_eq!(
            check(&a, m, &creds(Some("bob"), Some("pw"))),
            Err(LoginRefusal::UnknownUser("bob".into()))
        );
        assert_eq!(
            check(&a, m, &creds(None, None)),
            Err(LoginRefusal::Anonymous)
        );
        // A verified client certificate authenticates without a user name.
        let cert = Credentials {
            certificate: true,
            ..creds(None, None)
        };
        assert_eq!(check(&a, m, &cert), Ok(None));
        let named = Credentials {
            certificate_user: Some(Some("sensor-1".into())),
            ..cert.clone()
        };
        assert_eq!(check(&a, m, &named), Ok(Some("sensor-1".into())));
        // NATS: the same users, and the token.
        let n = Protocol::Nats;
        assert_eq!(
            check(&a, n, &creds(Some("alice"), Some("pw"))),
            Ok(Some("alice".into()))
        );
        let token = |t: &str| Credentials {
            token: Some(t.into()),
            ..Credentials::default()
        };
        assert_eq!(check(&a, n, &token("tok")), Ok(Some(TOKEN_USER.into())));
        assert_eq!(check(&a, n, &token("nope")), Err(LoginRefusal::WrongToken));
        assert!(a.nats_auth_required());
    }

    #[test]
    fn unverifiable_names_are_not_identities() {
        let (open, _d) = auth("");
        let m = Protocol::Mqtt;
        assert_eq!(check(&open, m, &creds(Some("admin"), Some("x"))), Ok(None));
        let (closed, _d) = auth("[mqtt]\nallow_anonymous = false\n");
        assert_eq!(
            check(&closed, m, &creds(Some("admin"), Some("x"))),
            Err(LoginRefusal::Unverifiable("admin".into()))
        );
    }

    #[test]
    fn an_answer_stamped_with_its_generation_is_current_until_a_reload_succeeds() {
        let (a, _dir, passwd, config) = reloadable_auth();
        let mut p = a.permissions(
            Protocol::Nats,
            Identity {
                user: Some("alice".into()),
                client_id: "c".into(),
            },
        );
        assert!(p.may_publish("a/b"));
        let stamp = p.checked_generation();
        assert!(p.is_current(stamp));
        a.reload_from(&config);
        assert!(
            !p.is_current(stamp),
            "a reload makes every kept answer stale"
        );
        assert!(p.may_publish("a/b"));
        let stamp = p.checked_generation();
        assert!(p.is_current(stamp), "asking again takes the new generation");
        std::fs::write(&passwd, "alice:plain\n").unwrap();
        a.reload_from(&config);
        assert!(p.is_current(stamp), "a failed reload changes no rules");
    }

    #[test]
    fn a_reload_that_fails_keeps_the_users() {
        let (a, _dir, passwd, config) = reloadable_auth();
        std::fs::write(&passwd, "alice:plain\n").unwrap();
        let generation = a.generation();
        a.reload_from(&config);
        assert_eq!(a.generation(), generation);
        assert_eq!(a.metrics.reload_failures.load(Ordering::Relaxed), 1);
        let m = Protocol::Mqtt;
        assert_eq!(
            check(&a, m, &creds(Some("alice"), Some("pw"))),
            Ok(Some("alice".into()))
        );
    }
}
