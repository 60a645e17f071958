//! SASL authentication to Kafka brokers, over TLS or plain TCP (`SASL_SSL` / `SASL_PLAINTEXT`).
//!
//! Mechanisms: `PLAIN` (RFC 4616), `SCRAM-SHA-256` and `SCRAM-SHA-512` (RFC 5802 / 7677, the
//! server's signature is verified, so a broker that does not know the password cannot pass),
//! and `OAUTHBEARER` (RFC 7628 / KIP-255) with a token read from a file.
//!
//! Every connection runs SaslHandshake v1 and SaslAuthenticate (v0–v2) right after ApiVersions.
//! The secret file is read at every authentication, so a changed password or a renewed token is
//! used without a restart. When the broker announces a session lifetime (KIP-368,
//! `session_lifetime_ms` in SaslAuthenticate v1+) — or the OAUTHBEARER token expires earlier —
//! the connection re-authenticates in place at 85 % of it, before the broker would close it.
//!
//! [`SaslStatus`] tracks whether the upstream accepts our credentials: one ERROR line when
//! authentication starts failing (with the broker's reason), one INFO line when it works again,
//! nothing in between; `/metrics` shows it as `edge_kafka_upstream_authenticated`.
//!
//! Crypto is ring's (already linked for rustls): HMAC, PBKDF2, SHA-2 and the random nonce.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use ring::{digest, hmac, pbkdf2};

use super::error::ProduceError;

/// Highest SaslAuthenticate version we speak (v1 adds `session_lifetime_ms`, v2 is flexible).
const SASL_AUTHENTICATE_MAX: i16 = 2;
/// Highest SCRAM iteration count accepted from a broker (a huge one would stall the producer).
const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;
/// Share of the session lifetime after which a connection re-authenticates.
const REAUTH_AT: f64 = 0.85;

/// A SASL mechanism (`[kafka] sasl_mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `plain`: user name and password in the clear (use TLS).
    Plain,
    /// `scram-sha-256`.
    ScramSha256,
    /// `scram-sha-512`.
    ScramSha512,
    /// `oauthbearer`: a bearer token (JWT) from a file.
    OAuthBearer,
}

impl Mechanism {
    /// The mechanism's name on the wire.
    pub fn wire_name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// A mechanism name that is none of ours.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "unknown SASL mechanism {0:?}: expected \"plain\", \"scram-sha-256\", \"scram-sha-512\" or \"oauthbearer\""
)]
pub struct UnknownMechanism(pub String);

impl FromStr for Mechanism {
    type Err = UnknownMechanism;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(Mechanism::Plain),
            "scram-sha-256" => Ok(Mechanism::ScramSha256),
            "scram-sha-512" => Ok(Mechanism::ScramSha512),
            "oauthbearer" => Ok(Mechanism::OAuthBearer),
            other => Err(UnknownMechanism(other.to_owned())),
        }
    }
}

/// What to authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslSettings {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// User name (`PLAIN`, `SCRAM-*`).
    pub username: String,
    /// File holding the password (`PLAIN`, `SCRAM-*`) or the token (`OAUTHBEARER`).
    pub secret_file: PathBuf,
}

/// Whether the upstream accepts our credentials, shared with whoever renders `/metrics`.
#[derive(Debug, Default)]
pub struct SaslStatus {
    authenticated: AtomicBool,
    failing: Mutex<bool>,
    /// Failed authentications so far.
    pub failures: AtomicU64,
    /// Successful authentications (and re-authentications) so far.
    pub successes: AtomicU64,
}

impl SaslStatus {
    /// True once the last authentication succeeded.
    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    fn succeeded(&self, broker: &str, mechanism: Mechanism) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.authenticated.store(true, Ordering::Relaxed);
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if *failing {
            *failing = false;
            tracing::info!(
                %broker,
                mechanism = mechanism.wire_name(),
                "Kafka SASL authentication works again"
            );
        }
    }

    fn failed(&self, error: &ProduceError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.authenticated.store(false, Ordering::Relaxed);
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if !*failing {
            *failing = true;
            // The forwarder's uplink says it once, at ERROR, with what is kept (uplink.rs).
            tracing::debug!("{error}");
        }
    }
}

/// SASL settings and status of one producer.
#[derive(Debug)]
pub(crate) struct SaslContext {
    pub settings: SaslSettings,
    pub status: std::sync::Arc<SaslStatus>,
}

/// Something that can send one request and wait for its answer (a connection or a pipeline).
pub(crate) trait Exchange {
    /// Sends `req` as `api`/`version` and decodes the response.
    fn exchange<Req, Resp>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> impl std::future::Future<Output = Result<Resp, ProduceError>> + Send
    where
        Req: kafka_protocol::protocol::Encodable + Sync,
        Resp: kafka_protocol::protocol::Decodable;

    /// The broker's API version ranges (api key → min, max).
    fn versions(&self) -> &std::collections::HashMap<i16, (i16, i16)>;

    /// The broker address.
    fn broker_name(&self) -> &str;

    /// Highest version of `api` both sides speak, at least `need`, at most `ours`.
    fn api_version(
        &self,
        api: ApiKey,
        name: &'static str,
        need: i16,
        ours: i16,
    ) -> Result<i16, ProduceError> {
        super::frame::version_of(self.versions(), self.broker_name(), api, name, need, ours)
    }
}

/// Authenticates a connection; on success, returns when it must re-authenticate (if ever).
/// The outcome is recorded in the context's [`SaslStatus`].
pub(crate) async fn authenticate<E: Exchange + Send>(
    conn: &mut E,
    context: &SaslContext,
) -> Result<Option<Duration>, ProduceError> {
    let result = run(conn, &context.settings).await;
    match &result {
        Ok(_) => context
            .status
            .succeeded(conn.broker_name(), context.settings.mechanism),
        Err(e) => context.status.failed(e),
    }
    result
}

async fn run<E: Exchange + Send>(
    conn: &mut E,
    settings: &SaslSettings,
) -> Result<Option<Duration>, ProduceError> {
    let broker = conn.broker_name().to_owned();
    let mechanism = settings.mechanism;
    let fail = |reason: String| ProduceError::Authentication {
        broker: broker.clone(),
        mechanism: mechanism.wire_name(),
        reason,
    };
    let secret = read_secret(&settings.secret_file).map_err(&fail)?;
    let handshake_version = conn.api_version(ApiKey::SaslHandshake, "SaslHandshake", 1, 1)?;
    let handshake: SaslHandshakeResponse = conn
        .exchange(
            ApiKey::SaslHandshake,
            handshake_version,
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str(mechanism.wire_name())),
        )
        .await
        .map_err(|e| during(e, &fail))?;
    if handshake.error_code != 0 {
        let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(fail(format!(
            "the broker refused the mechanism (error code {}); it offers {offered:?}",
            handshake.error_code
        )));
    }
    let version = conn.api_version(
        ApiKey::SaslAuthenticate,
        "SaslAuthenticate",
        0,
        SASL_AUTHENTICATE_MAX,
    )?;
    let mut token_lifetime = None;
    let last = match mechanism {
        Mechanism::Plain => {
            let mut msg = Vec::with_capacity(settings.username.len() + secret.len() + 2);
            msg.push(0);
            msg.extend_from_slice(settings.username.as_bytes());
            msg.push(0);
            msg.extend_from_slice(secret.as_bytes());
            step(conn, version, msg)
                .await
                .map_err(|e| during(e, &fail))?
        }
        Mechanism::OAuthBearer => {
            token_lifetime = jwt_lifetime(&secret);
            let msg = format!("n,,\x01auth=Bearer {secret}\x01\x01");
            step(conn, version, msg.into_bytes())
                .await
                .map_err(|e| during(e, &fail))?
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let mut scram = Scram::new(mechanism, &settings.username).map_err(&fail)?;
            let first = step(conn, version, scram.client_first().into_bytes())
                .await
                .map_err(|e| during(e, &fail))?;
            check(&first, &fail)?;
            let server_first = String::from_utf8_lossy(&first.auth_bytes).into_owned();
            let client_final = scram
                .client_final(&server_first, secret.as_bytes())
                .map_err(&fail)?;
            let last = step(conn, version, client_final.into_bytes())
                .await
                .map_err(|e| during(e, &fail))?;
            check(&last, &fail)?;
            scram
                .verify_server_final(&String::from_utf8_lossy(&last.auth_bytes))
                .map_err(&fail)?;
            last
        }
    };
    check(&last, &fail)?;
    let broker_lifetime = u64::try_from(last.session_lifetime_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let lifetime = match (broker_lifetime, token_lifetime) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(lifetime.map(|l| l.mul_f64(REAUTH_AT)))
}

/// One SaslAuthenticate round trip.
async fn step<E: Exchange + Send>(
    conn: &mut E,
    version: i16,
    bytes: Vec<u8>,
) -> Result<SaslAuthenticateResponse, ProduceError> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
    conn.exchange(ApiKey::SaslAuthenticate, version, &req).await
}

/// A failure in the middle of the exchange: the broker closing the connection is how many
/// brokers say "no" (Tansu closes on an unknown mechanism), so it is an authentication error.
fn during(error: ProduceError, fail: &impl Fn(String) -> ProduceError) -> ProduceError {
    match error {
        ProduceError::Io { source, .. } => fail(format!(
            "the broker closed the connection during authentication ({source})"
        )),
        other => other,
    }
}

fn check(
    resp: &SaslAuthenticateResponse,
    fail: &impl Fn(String) -> ProduceError,
) -> Result<(), ProduceError> {
    if resp.error_code == 0 {
        return Ok(());
    }
    let message = resp.error_message.as_ref().map_or("", |m| m.as_str());
    Err(fail(format!(
        "{} (code {}){}",
        super::error::code_name(resp.error_code),
        resp.error_code,
        if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        }
    )))
}

impl SaslSettings {
    /// A fingerprint of the secret file as the next authentication would read it (its text, or
    /// why it cannot be read).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        read_secret(&self.secret_file).hash(&mut hasher);
        hasher.finish()
    }
}

/// Reads the password or token file (one trailing newline removed).
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > 64 << 10 {
        return Err(format!("{} is larger than 64 KiB", path.display()));
    }
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text)
}

/// Time left until a JWT's `exp` claim (none if it is not a JWT or has no `exp`).
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let json = B64URL.decode(payload.trim_end_matches('=')).ok()?;
    let json = std::str::from_utf8(&json).ok()?;
    let at = json.find("\"exp\"")? + 5;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let exp: u64 = digits.parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

/// The client side of one SCRAM exchange.
struct Scram {
    digest: &'static digest::Algorithm,
    hmac: hmac::Algorithm,
    pbkdf2: pbkdf2::Algorithm,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    fn new(mechanism: Mechanism, user: &str) -> Result<Scram, String> {
        let (digest, hmac, pbkdf2) = match mechanism {
            Mechanism::ScramSha512 => (
                &digest::SHA512,
                hmac::HMAC_SHA512,
                pbkdf2::PBKDF2_HMAC_SHA512,
            ),
            _ => (
                &digest::SHA256,
                hmac::HMAC_SHA256,
                pbkdf2::PBKDF2_HMAC_SHA256,
            ),
        };
        let mut raw = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| "no system randomness for the SCRAM nonce".to_owned())?;
        let nonce = B64.encode(raw);
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Ok(Scram {
            digest,
            hmac,
            pbkdf2,
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            server_signature: None,
        })
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server-first message with the proof.
    fn client_final(&mut self, server_first: &str, password: &[u8]) -> Result<String, String> {
        let attr = |name: char| {
            server_first
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        if let Some(error) = attr('e') {
            return Err(format!("the broker refused: {error}"));
        }
        let nonce = attr('r').ok_or("server-first message without a nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the broker's nonce does not extend ours".to_owned());
        }
        let salt = B64
            .decode(attr('s').ok_or("server-first message without a salt")?)
            .map_err(|_| "the broker's salt is not base64")?;
        let iterations: u32 = attr('i')
            .and_then(|i| i.parse().ok())
            .ok_or("server-first message without an iteration count")?;
        let iterations = std::num::NonZeroU32::new(iterations)
            .filter(|i| i.get() <= MAX_SCRAM_ITERATIONS)
            .ok_or_else(|| {
                format!("iteration count {iterations} outside 1..={MAX_SCRAM_ITERATIONS}")
            })?;
        let mut salted = vec![0u8; self.digest.output_len()];
        pbkdf2::derive(self.pbkdf2, iterations, &salt, password, &mut salted);
        let salted = hmac::Key::new(self.hmac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(self.digest, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(self.hmac, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.server_signature = Some(
            hmac::sign(
                &hmac::Key::new(self.hmac, server_key.as_ref()),
                auth_message.as_bytes(),
            )
            .as_ref()
            .to_vec(),
        );
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the broker proves it knows the password too.
    fn verify_server_final(&self, server_final: &str) -> Result<(), String> {
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(format!("the broker refused: {error}"));
        }
        let given = server_final
            .split(',')
            .find_map(|kv| kv.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or("server-final message without a verifier")?;
        let expected = self
            .server_signature
            .as_deref()
            .ok_or("server-final message before the proof")?;
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err("the broker's SCRAM signature is wrong: it does not know the password".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_parse() {
        for (text, mechanism) in [
            ("plain", Mechanism::Plain),
            ("scram-sha-256", Mechanism::ScramSha256),
            ("scram-sha-512", Mechanism::ScramSha512),
            ("oauthbearer", Mechanism::OAuthBearer),
        ] {
            assert_eq!(text.parse::<Mechanism>(), Ok(mechanism));
        }
        assert!("SCRAM".parse::<Mechanism>().is_err());
    }

    /// RFC 7677 section 3's SCRAM-SHA-256 example, with its fixed client nonce.
    #[test]
    fn scram_sha256_matches_rfc_7677() {
        let mut scram = Scram::new(Mechanism::ScramSha256, "user").unwrap();
        scram.nonce = "rOprNGfwEbeRWgbNEkqO".to_owned();
        scram.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".to_owned();
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = scram.client_final(server_first, b"pencil").unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(
            scram
                .verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
    }

    #[test]
    fn scram_refuses_a_nonce_that_is_not_ours_and_absurd_iterations() {
        let mut scram = Scram::new(Mechanism::ScramSha512, "u").unwrap();
        assert!(scram.client_final("r=other,s=AAAA,i=4096", b"p").is_err());
        let nonce = format!("{}x", scram.nonce);
        let huge = format!("r={nonce},s=AAAA,i=4000000000");
        assert!(
            scram
                .client_final(&huge, b"p")
                .unwrap_err()
                .contains("iteration")
        );
        assert!(
            scram
                .client_final("e=unknown-user", b"p")
                .unwrap_err()
                .contains("unknown-user")
        );
    }

    #[test]
    fn user_names_are_escaped() {
        let scram = Scram::new(Mechanism::ScramSha256, "a=b,c").unwrap();
        assert!(scram.client_first().starts_with("n,,n=a=3Db=2Cc,r="));
    }

    #[test]
    fn jwt_expiry_is_read_from_the_payload() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let payload = B64URL.encode(format!("{{\"sub\":\"gw\",\"exp\": {}}}", now + 600));
        let lifetime = jwt_lifetime(&format!("hdr.{payload}.sig")).unwrap();
        assert!(lifetime <= Duration::from_secs(600) && lifetime >= Duration::from_secs(590));
        assert_eq!(jwt_lifetime("not-a-jwt"), None);
    }
}
