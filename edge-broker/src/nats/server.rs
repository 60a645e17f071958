//! The NATS server's state, shared by all its connections: settings, INFO, auth, hub keys,
//! metrics, the duplicate window, and the mapping of NATS subjects and messages onto the hub.
//!
//! Connections ([`super::connection`]) build on this file, and it imports none of them: the
//! accept loop that spawns connections is [`super::listen`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_log::{Destination, Log, Source};
use edge_proto::mqtt::QoS;
use edge_proto::nats::subject;
use edge_proto::nats::{HeaderMap, Info};
use parking_lot::{Mutex, RwLock};
use tokio_util::task::TaskTracker;

use super::dedup::DuplicateWindow;
use crate::config::NatsSection;
use crate::hub::{FanOut, Hub};
use crate::message::{Message, MessageProperties, Origin, now_ms};
use crate::metrics::front::{FrontMetrics, Protocol};
use crate::route::RouteTable;
use crate::router::Filter;

/// Hub keys of NATS subscriptions start here (MQTT sessions use small sequential keys).
pub const NATS_KEY_BASE: u64 = 1 << 62;

/// The shared state of the NATS front end.
#[derive(Debug)]
pub struct NatsServer {
    /// `[nats]` settings; a reload replaces them for connections made afterwards.
    settings: RwLock<Arc<NatsSection>>,
    /// Subscriptions of all protocols.
    pub hub: Arc<Hub>,
    /// The event log routed publishes go to.
    pub log: Log,
    /// Which publishes are stored, and where they go upstream.
    pub routes: Arc<RouteTable>,
    /// Counters.
    pub metrics: Arc<FrontMetrics>,
    /// `Nats-Msg-Id` duplicate window.
    pub dedup: Mutex<DuplicateWindow>,
    /// Server id announced in INFO.
    pub server_id: String,
    /// Server name announced in INFO (the node id).
    pub server_name: String,
    next_key: AtomicU64,
    /// The connections' tasks (the accept loop of [`super::listen`] spawns them here).
    pub(super) tasks: TaskTracker,
    /// The certificate clients must upgrade to; `None`: plain TCP (replaced by a reload).
    pub tls: crate::tls::AcceptorCell,
    /// Users, credentials and permissions (shared with MQTT).
    pub auth: Arc<crate::auth::Auth>,
    /// The bytes of large PUBs clients are still sending (`max_partial_packet_bytes_total`).
    pub input_pool: Arc<crate::input_pool::InputPool>,
    /// Output waiting in all connections' outboxes (what `max_pending_total` caps).
    pub pending_bytes: AtomicU64,
    /// Seats of logged-in clients and places of connections without CONNECT yet (sized at
    /// start: a reload does not change them).
    pub admission: Arc<crate::admission::Admission>,
}

impl NatsServer {
    /// Creates the server.
    pub fn new(
        settings: NatsSection,
        hub: Arc<Hub>,
        log: Log,
        routes: Arc<RouteTable>,
        node_id: &str,
        auth: Arc<crate::auth::Auth>,
    ) -> Arc<NatsServer> {
        let dedup = DuplicateWindow::new(settings.duplicate_window.0, settings.max_duplicate_ids);
        let metrics = Arc::new(FrontMetrics::new(Protocol::Nats));
        Arc::new(NatsServer {
            input_pool: crate::input_pool::InputPool::new(
                "nats.max_partial_packet_bytes_total",
                settings.max_partial_packet_bytes_total,
                Arc::clone(&metrics.partial_bytes),
            ),
            pending_bytes: AtomicU64::new(0),
            admission: crate::admission::Admission::new(crate::admission::AdmissionLimits::nats(
                &settings,
            )),
            server_id: format!("NEDGE{:X}{:X}", now_ms(), std::process::id()),
            server_name: node_id.to_owned(),
            settings: RwLock::new(Arc::new(settings)),
            hub,
            log,
            routes,
            metrics,
            dedup: Mutex::new(dedup),
            next_key: AtomicU64::new(NATS_KEY_BASE),
            tasks: TaskTracker::new(),
            tls: crate::tls::AcceptorCell::default(),
            auth,
        })
    }

    /// The current `[nats]` settings (a connection keeps the ones it started with).
    pub fn settings(&self) -> Arc<NatsSection> {
        Arc::clone(&self.settings.read())
    }

    /// Where a NATS publish by `client_id` on `subject` goes upstream; `None`: not stored. Its
    /// Kafka topic is the "stream" of JetStream-style PubAcks.
    pub fn destination(&self, subject: &str, client_id: &str) -> Option<Destination> {
        self.routes.decide(Source::Nats, subject, client_id)
    }

    /// A fresh hub key (connections and subscriptions), from [`NATS_KEY_BASE`] upward.
    pub fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether clients must present credentials (any credential configured, unless
    /// `nats.allow_anonymous = true`).
    pub fn auth_required(&self) -> bool {
        self.auth.nats_auth_required()
    }

    /// The INFO a new connection gets.
    pub fn info(
        &self,
        client_id: u64,
        peer: std::net::SocketAddr,
        local: Option<std::net::SocketAddr>,
    ) -> Info {
        let listen = local.unwrap_or(self.settings().listen);
        Info {
            server_id: self.server_id.clone(),
            server_name: self.server_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            go: Some("edge-broker (Rust)".to_owned()),
            proto: 1,
            host: listen.ip().to_string(),
            port: listen.port(),
            headers: true,
            max_payload: i64::try_from(self.settings().max_payload.bytes()).unwrap_or(i64::MAX),
            client_id: Some(client_id),
            client_ip: Some(peer.ip().to_string()),
            auth_required: self.auth_required(),
            ..Info::default()
        }
    }

    /// Publishes a message to local subscribers of every protocol.
    pub fn publish_local(&self, message: &Arc<Message>) -> FanOut {
        self.hub.publish(message)
    }
}

/// The hub filter for a NATS subscription subject, or `None` when the subject has no MQTT
/// equivalent. `>` (one or more tokens) becomes MQTT `+/#` (one level, then any).
pub fn hub_filter(nats_subject: &str) -> Option<Filter> {
    Filter::mqtt(&hub_filter_text(nats_subject)?).ok()
}

/// [`hub_filter`] as MQTT filter text (what topic permissions are checked against).
pub fn hub_filter_text(nats_subject: &str) -> Option<String> {
    let mqtt = subject::nats_subject_to_mqtt_filter(nats_subject).ok()?;
    Some(match mqtt.strip_suffix('#') {
        Some(prefix) => format!("{prefix}+/#"),
        None => mqtt,
    })
}

/// Builds the hub message for a NATS publish; `None` when the subject has no MQTT equivalent.
pub fn nats_message(
    nats_subject: &Arc<str>,
    reply: Option<&str>,
    headers: Option<&HeaderMap>,
    payload: bytes::Bytes,
    publisher: Option<u64>,
    qos: QoS,
) -> Option<Arc<Message>> {
    nats_message_at(
        nats_subject,
        reply,
        headers,
        payload,
        publisher,
        qos,
        now_ms(),
    )
}

/// [`nats_message`] received at `received_ms` (unix ms).
pub fn nats_message_at(
    nats_subject: &Arc<str>,
    reply: Option<&str>,
    headers: Option<&HeaderMap>,
    payload: bytes::Bytes,
    publisher: Option<u64>,
    qos: QoS,
    received_ms: u64,
) -> Option<Arc<Message>> {
    let topic = subject::nats_subject_to_mqtt_topic_shared(nats_subject).ok()?;
    // The mapping is a bijection: a NATS delivery may take the subject for the topic's image.
    debug_assert_eq!(
        subject::mqtt_topic_to_nats_subject(&topic).as_deref(),
        Ok(&**nats_subject)
    );
    let response_topic = reply.and_then(|r| subject::nats_subject_to_mqtt_topic(r).ok());
    Some(Arc::new(Message {
        topic,
        payload,
        qos,
        retain: false,
        properties: MessageProperties {
            response_topic,
            user_properties: headers
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            ..MessageProperties::default()
        },
        received_ms,
        origin: Origin::Nats,
        publisher,
        nats_subject: Some(Arc::clone(nats_subject)),
    }))
}

impl crate::reload::Reload for NatsServer {
    fn reload(&self, config: &crate::config::Config) {
        // Limits and credentials apply to connections made from now on; the listener, the
        // connection cap and the duplicate window are fixed at start.
        *self.settings.write() = Arc::new(config.nats.clone());
        let n = &config.nats;
        self.input_pool.set_limit(n.max_partial_packet_bytes_total);
        self.tls.reload(
            "NATS",
            n.tls_cert.as_deref(),
            n.tls_key.as_deref(),
            n.tls_client_ca.as_deref(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::filter::mqtt_levels;

    fn hits(sub: &str, subject: &str) -> bool {
        let topic = subject::nats_subject_to_mqtt_topic(subject).unwrap();
        hub_filter(sub).unwrap().matches(&mqtt_levels(&topic))
    }

    #[test]
    fn nats_wildcards_keep_their_meaning_in_the_hub() {
        assert!(hits("a.*", "a.b"));
        assert!(!hits("a.*", "a.b.c"));
        assert!(hits("a.>", "a.b"));
        assert!(hits("a.>", "a.b.c"));
        assert!(!hits("a.>", "a"), "NATS > needs at least one token");
        assert!(hits(">", "x"));
        assert!(hits("a.b//c", "a.b//c"), "escaped dots stay one level");
        assert!(!hits("a.b", "a.b//c"));
        assert!(hub_filter("a/b").is_none(), "no MQTT equivalent");
    }

    #[test]
    fn nats_messages_carry_mqtt_topics_headers_and_reply() {
        let mut h = HeaderMap::new();
        h.append("k", "v");
        let m = nats_message(
            &"a.b//c".into(),
            Some("_INBOX.x.1"),
            Some(&h),
            bytes::Bytes::new(),
            None,
            QoS::AtMostOnce,
        )
        .unwrap();
        assert_eq!(&*m.topic, "a/b.c");
        assert_eq!(m.properties.response_topic.as_deref(), Some("_INBOX/x/1"));
        assert_eq!(m.properties.user_properties, vec![("k".into(), "v".into())]);
        assert!(
            nats_message(
                &"a/b".into(),
                None,
                None,
                bytes::Bytes::new(),
                None,
                QoS::AtMostOnce
            )
            .is_none()
        );
    }
}
