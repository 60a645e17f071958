//! One MQTT client connection: CONNECT, the packet loop, durable acknowledgements, delivery to
//! the client, keep alive, and what happens when it ends (will, session detach).
//!
//! The loop never blocks on one thing: it reads only while the connection's ingest queue does
//! not hold input back (so a full log pushes back through TCP), and meanwhile keeps writing
//! deliveries and acknowledgements. Publishes go through [`crate::ingest`]: checked, routed,
//! stored in order, delivered locally once written; acknowledgements leave in the order the
//! publishes came in, routed ones once durable.
//!
//! Generic over the byte stream: [`serve`] takes the two halves of a plain TCP, TLS or (in
//! tests) in-memory connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use edge_log::{AppendError, Source};
use edge_proto::mqtt::{
    self, ConnAck, Connect, DecodeError, Disconnect, EncodeError, MqttString, Packet, Properties,
    ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, UnsubAck, Unsubscribe, topic,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pace::Pace;
use super::server::MqttServer;
use super::session::{Outbound, Session, SubscriptionRecord};
use crate::admission::{Pending, Seat};
use crate::hub::{Delivery, Mailbox, SubEntry};
use crate::ingest::{self, Answer, Event, IngestLimits, IngestQueue, Outcome, Publisher};
use crate::listener::{ReadBuffer, ReadHalf, WriteHalf, read_some};
use crate::message::{Message, MessageProperties, Origin, now_ms};
use crate::metrics::front::{DropReason, inc};
use crate::router::Filter;
use crate::state::Commit;

/// Stop reading a client (and moving its deliveries into its output) while this much output
/// waits for it: with 1,000 clients that do not read, 64 MiB of output at most.
const OUT_HIGH_WATER: usize = 64 << 10;
/// How long a shutdown waits for acknowledgements of records already on their way to disk.
const SHUTDOWN_ACK_DRAIN: Duration = Duration::from_secs(5);
/// Buffers of a new connection start this small: most gateway clients are idle most of the time.
const INITIAL_BUFFER: usize = 512;
/// A busy connection reads in chunks of at least this much.
const READ_CHUNK: usize = 8192;
/// How the read buffer is sized: [`INITIAL_BUFFER`] while quiet, [`READ_CHUNK`] in bursts.
const READ_BUFFER: ReadBuffer = ReadBuffer {
    initial: INITIAL_BUFFER,
    chunk: READ_CHUNK,
};
/// How long a closing connection may take to flush its last packets.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT; `with_will` for v5 reason 0x04.
    ClientDisconnect { with_will: bool },
    /// The socket closed or failed.
    Closed(String),
    /// Another connection took the session over.
    Kicked,
    /// The broker is shutting down.
    Shutdown,
    /// The client broke the protocol or a limit: DISCONNECT with this reason (v5), then close.
    Violation(ReasonCode, String),
}

/// A PUBACK or PUBREC owed to the client (QoS 1 or 2), in the ingest queue's answer order.
#[derive(Debug, Clone, Copy)]
struct Owed {
    packet_id: u16,
    qos: QoS,
    /// A QoS 2 publish counted in the session's `inbound_qos2` already (see
    /// [`Connection::receive_inflight`]).
    in_qos2_set: bool,
    /// The reason code when the answer is settled without the log ([`Outcome::Given`]).
    reason: ReasonCode,
}

/// The connection's ingest queue: a routed publish carries its message for local delivery.
type Ingest = IngestQueue<Arc<Message>, Owed>;

/// Routed records an MQTT connection holds until written (and, if acknowledged, durable), and
/// their payload bytes. An MQTT connection keeps a whole `Message` per record for local
/// delivery, so it holds fewer than a NATS one; 1024 still fill many group commits.
const MAX_RECORDS_IN_FLIGHT: usize = 1024;
const MAX_BYTES_IN_FLIGHT: usize = 1 << 20;

/// The ingest queue's bounds: at most Receive Maximum (`mqtt.max_inflight`) acknowledgements
/// owed, and the records in flight above. An MQTT 5 client is read one publish beyond, so that
/// a client that exceeds the Receive Maximum it was told is seen doing so (DISCONNECT 0x93)
/// rather than merely not read; 3.1.1 has no Receive Maximum: its publishes beyond wait.
fn ingest_limits(settings: &crate::config::MqttSection, version: ProtocolVersion) -> IngestLimits {
    let beyond = usize::from(version == ProtocolVersion::V5);
    IngestLimits {
        max_answers: usize::from(settings.max_inflight) + beyond,
        max_records: MAX_RECORDS_IN_FLIGHT,
        max_bytes: MAX_BYTES_IN_FLIGHT,
        batch_records: MAX_RECORDS_IN_FLIGHT,
        batch_bytes: MAX_BYTES_IN_FLIGHT,
    }
}

/// A connection's MQTT 5 topic aliases.
#[derive(Default)]
struct TopicAliases {
    /// Set by the client's PUBLISHes.
    inbound: HashMap<u16, MqttString>,
    /// Told to the client in our PUBLISHes, by topic.
    outbound: HashMap<String, u16>,
}

/// A will message waiting for the connection to end.
struct WillMessage {
    message: Message,
    delay_secs: u32,
}

/// Serves one client connection (plain TCP or TLS, already split) until it ends.
///
/// Until it has logged in, the connection holds only its `pending` place: it may buffer a
/// CONNECT of at most `mqtt.max_connect_size` and must send it within `mqtt.connect_timeout`;
/// a seat among `mqtt.max_connections` is taken once the login succeeded.
pub async fn serve(
    server: Arc<MqttServer>,
    (mut reader, mut writer): (ReadHalf, WriteHalf),
    peer: SocketAddr,
    pending: Pending,
    shutdown: CancellationToken,
    certificate: Option<crate::auth::PeerCertificate>,
) {
    // Taken when the CONNECT's first bytes are there (`read_connect`).
    let mut inbuf = BytesMut::new();
    let settings = server.settings();
    let max_connect = u32::try_from(settings.connect_size_limit()).unwrap_or(u32::MAX);
    let evicted = pending.eviction();
    let connect = tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = evicted.cancelled() => {
            tracing::debug!(%peer, "MQTT connection evicted before CONNECT: mqtt.max_pending_connections reached");
            return;
        }
        read = tokio::time::timeout(
            settings.connect_timeout.0,
            read_connect(&mut reader, &mut inbuf, max_connect),
        ) => match read {
            Ok(Ok(connect)) => connect,
            Ok(Err((why, unsupported_level))) => {
                if unsupported_level {
                    // MQTT 3.1.1 §3.1.2.2 [MQTT-3.1.2-2]: CONNACK 0x01 (unacceptable protocol
                    // level), in the 3.1.1 form every client version can read, then close.
                    let _ = writer.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                    let _ = writer.shutdown().await;
                }
                inc(&server.metrics.protocol_errors);
                if inbuf.is_empty() {
                    tracing::debug!(%peer, "MQTT connection closed without sending anything (a port probe?): {why}");
                } else {
                    tracing::info!(%peer, "MQTT connection closed before CONNECT completed: {why}");
                }
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "MQTT client sent no CONNECT within {:?}", settings.connect_timeout.0);
                return;
            }
        },
    };
    // Not kept for the connection's life: the task holds what lives across its awaits.
    drop((evicted, settings));
    // What was read beyond the CONNECT starts the session's input; the CONNECT's own room
    // (up to max_connect_size) is not kept for the connection's life.
    if inbuf.capacity() > INITIAL_BUFFER.max(inbuf.len() * 2) {
        inbuf = BytesMut::from(&inbuf[..]);
    }
    // The login's state (CONNECT, credentials, the CONNACK being built) is boxed: a task is
    // allocated at the size of its largest state, and this one lasts only until CONNACK.
    let accepted = Box::pin(Connection::accept(
        Arc::clone(&server),
        connect,
        (reader, writer),
        inbuf,
        Arrival {
            peer,
            pending,
            certificate,
        },
        shutdown,
    ))
    .await;
    let connection = match accepted {
        Ok(Some(connection)) => connection,
        Ok(None) => return,
        Err(err) => {
            tracing::info!(%peer, "MQTT connection failed during CONNECT: {err}");
            return;
        }
    };
    connection.run().await;
}

/// Who sent a CONNECT: its address, its pending place, its TLS certificate.
struct Arrival {
    peer: SocketAddr,
    pending: Pending,
    certificate: Option<crate::auth::PeerCertificate>,
}

/// Reads until a whole CONNECT is decoded. The error says why, and whether the client asked
/// for a protocol level this server does not speak (it is then owed a CONNACK 0x01).
async fn read_connect(
    reader: &mut ReadHalf,
    buf: &mut BytesMut,
    max_packet: u32,
) -> Result<Box<Connect>, (String, bool)> {
    loop {
        match mqtt::decode_connect(buf, max_packet) {
            Ok(Some(connect)) => return Ok(Box::new(connect)),
            Ok(None) => {}
            Err(err) => {
                let unsupported = matches!(err, DecodeError::UnsupportedProtocolVersion { .. });
                return Err((format!("invalid CONNECT: {err}"), unsupported));
            }
        }
        let (n, _) = read_some(reader, buf, &READ_BUFFER, false)
            .await
            .map_err(|e| (format!("read failed: {e}"), false))?;
        if n == 0 {
            return Err(("connection closed".to_owned(), false));
        }
    }
}

/// Sends a refusing CONNACK and closes.
async fn refuse(
    writer: &mut WriteHalf,
    version: ProtocolVersion,
    reason: ReasonCode,
    why: &str,
) -> std::io::Result<()> {
    let mut properties = Properties::default();
    if version == ProtocolVersion::V5 {
        properties.reason_string = MqttString::try_from(why).ok();
    }
    let packet = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: reason,
        properties,
    });
    let mut out = BytesMut::new();
    if mqtt::encode(&packet, version, &mut out).is_ok() {
        writer.write_all(&out).await?;
    }
    writer.shutdown().await
}

struct Connection {
    server: Arc<MqttServer>,
    /// The `[mqtt]` limits this connection started with (a reload affects later connections).
    settings: Arc<crate::config::MqttSection>,
    session: Arc<Session>,
    generation: u64,
    version: ProtocolVersion,
    client_id: Arc<str>,
    peer: SocketAddr,
    reader: ReadHalf,
    writer: WriteHalf,
    inbuf: BytesMut,
    /// The last read filled the buffer's room or was not small (see [`ReadBuffer`]).
    read_burst: bool,
    outbuf: BytesMut,
    max_packet_in: u32,
    client_max_packet: u32,
    client_receive_max: usize,
    client_alias_max: u16,
    problem_info: bool,
    /// Topic aliases (MQTT 5), made when the first one is used: two empty maps were 96 bytes
    /// in every connection.
    aliases: Option<Box<TopicAliases>>,
    keep_alive: Option<Duration>,
    last_read: Instant,
    read_paused: bool,
    /// The publishes on their way to the log and the acks owed (boxed: the connection future
    /// holds the connection several times over, ~900 bytes per idle client inline).
    /// Made at the first publish (an idle client, or one that only subscribes, has none).
    ingest: Option<Box<Ingest>>,
    /// What this client may publish and subscribe to.
    permissions: crate::auth::Permissions,
    will: Option<WillMessage>,
    connect_expiry: u32,
    /// State changes the output waits for: nothing more is written to the client until they
    /// are durable (acks of subscriptions, of publishes queued for persistent sessions).
    gate: Option<Commit>,
    /// Cancelled to take the session over, or (a child of `shutdown`) when the broker stops.
    kick: CancellationToken,
    shutdown: CancellationToken,
    /// This client's place among `mqtt.max_connections`, given back when the connection ends.
    _seat: Seat,
    /// PUBRECs owed for QoS 2 publishes in `inbound_qos2` (counted there already): see
    /// [`Connection::receive_inflight`].
    qos2_answers: usize,
    /// QoS 0 deliveries of this client's publish waiting for room in slower subscribers'
    /// queues (made at the first local delivery, and only if `slow_subscriber_wait` > 0):
    /// while they wait, no input is taken.
    pace: Option<Box<Pace>>,
}

impl Connection {
    /// Validates CONNECT, attaches the session and sends CONNACK. `Ok(None)`: refused.
    async fn accept(
        server: Arc<MqttServer>,
        connect: Box<Connect>,
        (reader, mut writer): (ReadHalf, WriteHalf),
        inbuf: BytesMut,
        arrival: Arrival,
        shutdown: CancellationToken,
    ) -> std::io::Result<Option<Box<Connection>>> {
        let Arrival {
            peer,
            pending,
            certificate,
        } = arrival;
        let version = connect.protocol_version;
        let settings = server.settings();
        let credentials = crate::auth::mqtt_credentials(&connect, certificate, &settings);
        let login = server
            .auth
            .login(crate::auth::Protocol::Mqtt, peer.ip(), credentials);
        let user = match login.await {
            Ok(user) => user,
            Err(why) => {
                tracing::info!(%peer, client_id = %connect.client_id, "refusing MQTT client: {why}");
                refuse(
                    &mut writer,
                    version,
                    ReasonCode::NotAuthorized,
                    "not authorized",
                )
                .await?;
                return Ok(None);
            }
        };
        let seat = match pending.seat() {
            Ok(seat) => seat,
            Err(refusal) => {
                tracing::warn!(%peer, "refusing MQTT client: mqtt.{}", refusal.key());
                refuse(
                    &mut writer,
                    version,
                    ReasonCode::ServerBusy,
                    "too many connections",
                )
                .await?;
                return Ok(None);
            }
        };
        if connect.properties.authentication_method.is_some() {
            refuse(
                &mut writer,
                version,
                ReasonCode::BadAuthenticationMethod,
                "enhanced authentication is not supported",
            )
            .await?;
            return Ok(None);
        }
        let mut client_id = connect.client_id.as_str().to_owned();
        if client_id.len() > settings.max_client_id_length {
            server.limits.refused(super::limits::Limit::ClientIdLength);
            let why = "client id longer than mqtt.max_client_id_length";
            refuse(
                &mut writer,
                version,
                ReasonCode::ClientIdentifierNotValid,
                why,
            )
            .await?;
            return Ok(None);
        }
        let mut assigned = false;
        if client_id.is_empty() {
            if version == ProtocolVersion::V311 && !connect.clean_start {
                refuse(
                    &mut writer,
                    version,
                    ReasonCode::ClientIdentifierNotValid,
                    "an empty client id needs a clean session",
                )
                .await?;
                return Ok(None);
            }
            client_id = server.assign_client_id();
            assigned = true;
        }

        let max_expiry = u32::try_from(settings.max_session_expiry.0.as_secs()).unwrap_or(u32::MAX);
        let requested_expiry = match version {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V311 => max_expiry,
        };
        let expiry = requested_expiry.min(max_expiry);

        let max_keep_alive = u16::try_from(settings.max_keepalive.0.as_secs()).unwrap_or(u16::MAX);
        let mut keep_alive = connect.keep_alive;
        let mut server_keep_alive = None;
        if version == ProtocolVersion::V5
            && max_keep_alive > 0
            && (keep_alive == 0 || keep_alive > max_keep_alive)
        {
            keep_alive = max_keep_alive;
            server_keep_alive = Some(max_keep_alive);
        }

        let identity = crate::auth::Identity {
            user,
            client_id: client_id.as_str().into(),
        };
        let exists = server.sessions.lock().contains_key(&client_id);
        let mut permissions = server
            .auth
            .permissions(crate::auth::Protocol::Mqtt, identity.clone());
        let will_denied = (connect.will.as_ref())
            .is_some_and(|will| !permissions.may_publish(will.topic.as_str()));
        if will_denied || !server.auth.claim_session(&identity, exists) {
            let why = if will_denied {
                "the will topic is not permitted"
            } else {
                "the client id belongs to another user's session"
            };
            tracing::info!(%peer, %client_id, user = ?identity.user, "refusing MQTT client: {why}");
            refuse(&mut writer, version, ReasonCode::NotAuthorized, why).await?;
            return Ok(None);
        }
        // A child of the shutdown: the serve loop waits on one token for both.
        let kick = shutdown.child_token();
        let attached = server.attach_session(&client_id, connect.clean_start, expiry, kick.clone());
        let Ok((session, session_present, generation)) = attached else {
            tracing::warn!(%peer, %client_id, "refusing a new MQTT session: mqtt.max_sessions reached");
            refuse(
                &mut writer,
                version,
                ReasonCode::QuotaExceeded,
                "too many sessions",
            )
            .await?;
            return Ok(None);
        };

        let will = connect.will.as_ref().map(|will| WillMessage {
            message: Message {
                topic: will.topic.as_str().to_owned(),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                properties: message_properties(&will.properties),
                received_ms: now_ms(),
                origin: Origin::Mqtt,
                publisher: Some(session.key),
            },
            delay_secs: will.properties.will_delay_interval.unwrap_or(0),
        });

        let mut properties = Properties::default();
        if version == ProtocolVersion::V5 {
            if assigned {
                properties.assigned_client_identifier =
                    MqttString::try_from(client_id.as_str()).ok();
            }
            if expiry != requested_expiry {
                properties.session_expiry_interval = Some(expiry);
            }
            properties.server_keep_alive = server_keep_alive;
            properties.receive_maximum = Some(settings.max_inflight);
            properties.maximum_packet_size = Some(settings.max_packet_size.bytes() as u32);
            properties.topic_alias_maximum = Some(settings.topic_alias_maximum);
            properties.retain_available = Some(true);
            properties.wildcard_subscription_available = Some(true);
            properties.subscription_identifiers_available = Some(true);
            properties.shared_subscription_available = Some(true);
            if connect.properties.request_response_information == Some(true) {
                properties.response_information =
                    MqttString::try_from(format!("edge/response/{client_id}")).ok();
            }
        }
        let connack = Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties,
        });
        // Boxed: the task's future then holds a pointer, not the connection (by value, an
        // `async fn` taking `self` keeps it twice, and `run` and `finish` nest).
        let mut connection = Box::new(Connection {
            server: Arc::clone(&server),
            settings: Arc::clone(&settings),
            session,
            generation,
            version,
            client_id: client_id.into(),
            peer,
            reader,
            writer,
            inbuf,
            read_burst: false,
            // Sized by what is written into it: an idle client's is CONNACK-sized (a few
            // bytes, not 512). Not given back when drained: a busy subscriber's small writes
            // would then allocate it again and again (see BENCHMARKS.md, Footprint).
            outbuf: BytesMut::new(),
            max_packet_in: settings.max_packet_size.bytes() as u32,
            client_max_packet: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
            client_receive_max: usize::from(
                connect
                    .properties
                    .receive_maximum
                    .unwrap_or(u16::MAX)
                    .min(settings.max_inflight_messages),
            ),
            client_alias_max: connect.properties.topic_alias_maximum.unwrap_or(0),
            problem_info: connect
                .properties
                .request_problem_information
                .unwrap_or(true),
            aliases: None,
            keep_alive: (keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            last_read: Instant::now(),
            read_paused: false,
            ingest: None,
            permissions,
            will,
            connect_expiry: expiry,
            gate: None,
            kick,
            shutdown,
            _seat: seat,
            qos2_answers: 0,
            pace: None,
        });
        connection.write(&connack);
        if session_present {
            connection.resend_inflight();
        }
        server.metrics.connected(1);
        tracing::debug!(
            peer = %connection.peer,
            client_id = %connection.client_id,
            version = ?version,
            session_present,
            "MQTT client connected"
        );
        Ok(Some(connection))
    }

    /// Encodes a packet into the output buffer, respecting the client's maximum packet size.
    fn write(&mut self, packet: &Packet) -> bool {
        match mqtt::encode_limited(
            packet,
            self.version,
            self.client_max_packet,
            &mut self.outbuf,
        ) {
            Ok(_) => true,
            Err(err) => {
                tracing::debug!(client_id = %self.client_id, "not sending {}: {err}", packet.packet_type());
                false
            }
        }
    }

    /// After a reconnect with a present session: PUBLISH again (DUP) or PUBREL what is in flight.
    fn resend_inflight(&mut self) {
        let session = Arc::clone(&self.session);
        let inflight: Vec<(u16, Outbound)> = session
            .lock()
            .inflight
            .iter()
            .map(|(id, out)| (*id, out.clone()))
            .collect();
        let now = now_ms();
        for (packet_id, out) in inflight {
            if out.released {
                self.write(&Packet::PubRel(PubRel::new(packet_id)));
            } else if out.delivery.message.is_expired(now) {
                // Sent before, unacknowledged, and expired while the client was away: not
                // sent again with a lifetime of 0 (as Mosquitto does; MQTT 5 §3.3.2.3.3).
                session.lock().inflight.remove(&packet_id);
                self.server.metrics.dropped(DropReason::Expired);
            } else {
                let (packet, alias) =
                    self.publish_packet(&out.delivery, Some(packet_id), true, now);
                if self.write(&packet) {
                    self.remember_alias(alias);
                } else {
                    // Too large for the client's new Maximum Packet Size: discarded (MQTT 5
                    // §3.1.2.11.4) rather than left in flight, where it would hold one of the
                    // client's Receive Maximum slots for ever.
                    session.lock().inflight.remove(&packet_id);
                    self.server.metrics.dropped(DropReason::TooLargeForClient);
                }
            }
        }
    }

    async fn run(mut self: Box<Self>) {
        let exit = self.serve_loop().await;
        self.finish(exit).await;
    }

    async fn serve_loop(&mut self) -> Exit {
        loop {
            if let Err(exit) = self.process_input() {
                return exit;
            }
            self.pump_outbound();
            // The log's backpressure: while the ingest queue holds input back (a submission
            // waits for log space, or this client's unanswered publishes reached their bound),
            // the socket is not read.
            let log_paused = self.ingest_holds_input() || self.pacing();
            let pacing = self.pacing();
            let can_read = !log_paused
                && self.outbuf.len() < OUT_HIGH_WATER
                && !(self.gate.is_some() && self.server.state_backlogged());
            // Keep alive measures the client, not the log's backpressure: while the broker does
            // not read because the client's publishes wait for the log, the timer stops, and
            // restarts on resuming. (A client that does not read its deliveries still times out.)
            if log_paused {
                self.read_paused = true;
            } else if self.read_paused {
                self.read_paused = false;
                self.last_read = Instant::now();
            }
            let keep_alive_deadline = self
                .keep_alive
                .filter(|_| !log_paused)
                .map(|ka| self.last_read + ka);
            let session = Arc::clone(&self.session);
            let gate = self.gate.clone();
            let pace = self.pace.as_deref();
            if can_read {
                if self.inbuf.is_empty() && !self.read_burst {
                    // Quiet and drained: wait for bytes without a buffer (most gateway clients,
                    // most of the time); `read_some` takes one when bytes are there.
                    self.inbuf = BytesMut::new();
                } else {
                    // A busy client (or a packet bigger than the buffer) reads in large steps
                    // rather than the 64 bytes a full BytesMut would add per read; a quiet one
                    // keeps a small buffer, and gives a burst's back.
                    READ_BUFFER.prepare(&mut self.inbuf, self.read_burst);
                }
            }
            tokio::select! {
                biased;
                // The kick token is a child of the shutdown's: one wait for both.
                _ = self.kick.cancelled() => {
                    return if self.shutdown.is_cancelled() { Exit::Shutdown } else { Exit::Kicked };
                }
                () = rarely(pace.filter(|_| pacing).map(|pace| Box::pin(pace.woken()))), if pacing => {
                    if let Some(pace) = &mut self.pace {
                        pace.settle();
                    }
                }
                () = ingest_progress(&mut self.ingest), if self.ingest.as_deref().is_some_and(Ingest::is_busy) && !pacing => {
                    if let Err(exit) = self.take_ingest() {
                        return exit;
                    }
                }
                durable = rarely(gate.as_ref().map(|gate| Box::pin(gate.durable()))), if gate.is_some() => {
                    if let Err(err) = durable {
                        return Exit::Violation(ReasonCode::UnspecifiedError, format!("session state not saved: {err}"));
                    }
                    self.gate = None;
                }
                written = self.writer.write_buf(&mut self.outbuf), if !self.outbuf.is_empty() && gate.is_none() => {
                    if let Err(err) = written {
                        return Exit::Closed(format!("write failed: {err}"));
                    }
                }
                read = read_some(&mut self.reader, &mut self.inbuf, &READ_BUFFER, self.read_burst), if can_read => match read {
                    Ok((0, _)) => return Exit::Closed("connection closed by client".to_owned()),
                    Ok((n, room)) => {
                        self.last_read = Instant::now();
                        self.read_burst = READ_BUFFER.is_burst(n, room);
                    }
                    Err(err) => return Exit::Closed(format!("read failed: {err}")),
                },
                _ = session.wake.notified() => {}
                _ = sleep_until_opt(keep_alive_deadline) => {
                    return Exit::Violation(ReasonCode::KeepAliveTimeout, "keep alive timeout".to_owned());
                }
            }
        }
    }

    /// Decodes and handles buffered packets while nothing holds input back, hands the routed
    /// publishes to the log as one batch, and sends what is ready.
    fn process_input(&mut self) -> Result<(), Exit> {
        let decoded = self.decode_input();
        if let Some(queue) = &mut self.ingest {
            queue.submit();
        }
        self.take_ingest()?;
        decoded
    }

    fn decode_input(&mut self) -> Result<(), Exit> {
        while !self.ingest_holds_input() && !self.pacing() {
            let packet = match mqtt::decode(&mut self.inbuf, self.version, self.max_packet_in) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(err) => return Err(decode_violation(&err)),
            };
            // Their answers (SUBACK, UNSUBACK, PUBCOMP, PUBACK/PUBREC) tell the client a
            // state change happened: the output waits until it is durable.
            let answered = matches!(
                packet,
                Packet::Subscribe(_)
                    | Packet::Unsubscribe(_)
                    | Packet::PubRel(_)
                    | Packet::Publish(_)
            );
            self.handle(packet)?;
            if answered {
                self.hold_output(self.server.session_commit(&self.session));
            }
        }
        Ok(())
    }

    /// Whether the ingest queue (if made yet) holds input back.
    fn ingest_holds_input(&self) -> bool {
        self.ingest.as_deref().is_some_and(Ingest::holds_input)
    }

    /// The ingest queue, made at the first publish: most of an idle client's life has none.
    fn ingest_queue(&mut self) -> &mut Ingest {
        let (server, settings, version) = (&self.server, &self.settings, self.version);
        self.ingest.get_or_insert_with(|| {
            Box::new(
                IngestQueue::new(server.log.clone(), ingest_limits(settings, version))
                    .measure_acks(Arc::clone(&server.metrics.ack_latency)),
            )
        })
    }

    /// Holds the output until `commit` (if any) is durable.
    fn hold_output(&mut self, commit: Option<Commit>) {
        if let Some(commit) = commit.filter(|c| !c.is_durable()) {
            self.gate = Some(match self.gate.take() {
                Some(gate) => gate.max(commit),
                None => commit,
            });
        }
    }

    fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(ack) => {
                let mut state = self.session.lock();
                if state
                    .inflight
                    .get(&ack.packet_id)
                    .is_some_and(|o| o.delivery.qos == QoS::AtLeastOnce)
                {
                    state.inflight.remove(&ack.packet_id);
                    drop(state);
                    self.session.room.made();
                }
                Ok(())
            }
            Packet::PubRec(rec) => self.on_pubrec(rec),
            Packet::PubRel(rel) => {
                let known = self.session.lock().inbound_qos2.remove(&rel.packet_id);
                let mut comp = PubComp::new(rel.packet_id);
                if !known {
                    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
                }
                self.write(&Packet::PubComp(comp));
                Ok(())
            }
            Packet::PubComp(comp) => {
                let mut state = self.session.lock();
                if state
                    .inflight
                    .get(&comp.packet_id)
                    .is_some_and(|o| o.released)
                {
                    state.inflight.remove(&comp.packet_id);
                    drop(state);
                    self.session.room.made();
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe),
            Packet::PingReq => {
                self.write(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(disconnect) => self.on_disconnect(disconnect),
            Packet::Connect(_) => Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "second CONNECT".to_owned(),
            )),
            Packet::Auth(_) => Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method".to_owned(),
            )),
            other => Err(Exit::Violation(
                ReasonCode::ProtocolError,
                format!("{} is not sent by clients", other.packet_type()),
            )),
        }
    }

    fn on_publish(&mut self, mut publish: Publish) -> Result<(), Exit> {
        self.server.metrics.received(publish.qos);
        if self.version == ProtocolVersion::V5
            && let Some(id) = publish.packet_id
            && self.receive_inflight(id) >= usize::from(self.settings.max_inflight)
        {
            // MQTT 5 §3.3.4 [MQTT-3.3.4-9]: more unacknowledged QoS 1/2 publishes than the
            // Receive Maximum the CONNACK announced.
            return Err(Exit::Violation(
                ReasonCode::ReceiveMaximumExceeded,
                format!(
                    "more than {} QoS 1/2 publishes unacknowledged (Receive Maximum)",
                    self.settings.max_inflight
                ),
            ));
        }
        let metrics = &self.server.metrics;
        // Topic aliases (MQTT 5 §3.3.2.3.4).
        if let Some(alias) = publish.properties.topic_alias {
            if alias == 0 || alias > self.settings.topic_alias_maximum {
                return Err(Exit::Violation(
                    ReasonCode::TopicAliasInvalid,
                    format!("topic alias {alias} is out of range"),
                ));
            }
            if publish.topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => {
                        return Err(Exit::Violation(
                            ReasonCode::ProtocolError,
                            format!("unknown topic alias {alias}"),
                        ));
                    }
                }
            } else {
                let aliases = self.aliases.get_or_insert_with(Box::default);
                aliases.inbound.insert(alias, publish.topic.clone());
            }
        }
        if let Err(err) = topic::validate_name(publish.topic.as_str()) {
            return Err(Exit::Violation(
                ReasonCode::TopicNameInvalid,
                format!("invalid topic {:?}: {err}", publish.topic.as_str()),
            ));
        }
        let packet_id = publish.packet_id;
        let mut publisher = Publisher {
            source: Source::Mqtt,
            client_id: &self.client_id,
            permissions: Some(&mut self.permissions),
        };
        if let Err(denied) = ingest::check_publish(&mut publisher, publish.topic.as_str()) {
            // As Mosquitto: acknowledged (v5 with "Not authorized"), neither stored nor
            // delivered; the connection stays.
            metrics.denied(&denied);
            tracing::debug!(client_id = %self.client_id, "publish denied: {denied}");
            if let Some(id) = packet_id {
                self.owe(id, publish.qos, ReasonCode::NotAuthorized);
            }
            return Ok(());
        }
        if publish.qos == QoS::ExactlyOnce
            && let Some(id) = packet_id
        {
            let mut state = self.session.lock();
            if state.inbound_qos2.contains(&id) {
                // A resend of a QoS 2 publish we already took: acknowledge again, do not redeliver.
                drop(state);
                self.owe(id, QoS::ExactlyOnce, ReasonCode::Success);
                return Ok(());
            }
            if state.inbound_qos2.len() >= usize::from(self.settings.max_inflight) {
                return Err(Exit::Violation(
                    ReasonCode::ReceiveMaximumExceeded,
                    "too many QoS 2 publishes awaiting PUBREL".to_owned(),
                ));
            }
            state.inbound_qos2.insert(id);
        }
        if publish.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            if let Some(id) = packet_id {
                self.owe(id, publish.qos, ReasonCode::PayloadFormatInvalid);
            }
            return Ok(());
        }
        let mut message = Message {
            topic: publish.topic.as_str().to_owned(),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: message_properties(&publish.properties),
            received_ms: now_ms(),
            origin: Origin::Mqtt,
            publisher: Some(self.session.key),
        };
        if message.retain
            && !message.payload.is_empty()
            && let Err(limit) = self
                .server
                .admit_retained(&message.topic, super::retained::weight(&message))
        {
            // Over a retained cap: refused where an ack can say so (v5 QoS 1/2: 0x97 Quota
            // exceeded), otherwise delivered like any message but not retained.
            tracing::info!(client_id = %self.client_id, topic = %message.topic, "retained message over mqtt.{}", limit.key());
            if let (ProtocolVersion::V5, Some(id)) = (self.version, packet_id) {
                self.owe(id, publish.qos, ReasonCode::QuotaExceeded);
                return Ok(());
            }
            message.retain = false;
        }
        let message = Arc::new(message);
        let owed =
            packet_id.map(|packet_id| self.owed(packet_id, publish.qos, ReasonCode::Success));
        match self.server.destination(&message.topic, &self.client_id) {
            Some(destination) => {
                let record =
                    ingest::record::mqtt(&message, Arc::clone(&self.client_id), destination);
                self.ingest_queue().push_routed(record, message, owed);
            }
            None => {
                self.deliver_local(&message);
                if let Some(owed) = owed {
                    self.ingest_queue().push_answer(owed);
                }
            }
        }
        Ok(())
    }

    /// QoS 1/2 publishes of the client not yet acknowledged (PUBACK, or for QoS 2 PUBCOMP) as
    /// far as this side knows (never more than the client counts), besides a resend of
    /// `packet_id` if it is a QoS 2 publish already taken. PUBACKs and PUBRECs owed, plus QoS 2
    /// publishes whose PUBREC went out and whose PUBREL has not come.
    fn receive_inflight(&self, packet_id: u16) -> usize {
        let (qos2, resend) = {
            let state = self.session.lock();
            let set = &state.inbound_qos2;
            (set.len(), usize::from(set.contains(&packet_id)))
        };
        let owed = self.ingest.as_deref().map_or(0, Ingest::answers_owed);
        let owed_elsewhere = owed.saturating_sub(self.qos2_answers);
        (owed_elsewhere + qos2).saturating_sub(resend)
    }

    /// Queues an acknowledgement settled now (it still waits for the ones before it).
    fn owe(&mut self, packet_id: u16, qos: QoS, reason: ReasonCode) {
        let owed = self.owed(packet_id, qos, reason);
        self.ingest_queue().push_answer(owed);
    }

    /// An acknowledgement about to be queued (counted for [`Connection::receive_inflight`]).
    fn owed(&mut self, packet_id: u16, qos: QoS, reason: ReasonCode) -> Owed {
        let in_qos2_set =
            qos == QoS::ExactlyOnce && self.session.lock().inbound_qos2.contains(&packet_id);
        self.qos2_answers += usize::from(in_qos2_set);
        Owed {
            packet_id,
            qos,
            in_qos2_set,
            reason,
        }
    }

    /// Takes what the ingest queue has ready: routed publishes the log wrote are delivered
    /// locally (refusals handled), then the acknowledgements that are due go out, in order.
    /// While deliveries wait for room ([`Connection::pacing`]), nothing more is taken: later
    /// deliveries must not overtake them, nor acknowledgements go out before them.
    fn take_ingest(&mut self) -> Result<(), Exit> {
        while !self.pacing()
            && let Some(event) = self.ingest.as_deref_mut().and_then(Ingest::next_event)
        {
            match event {
                Event::Written { local, .. } => {
                    inc(&self.server.metrics.stored);
                    self.deliver_local(&local);
                }
                Event::Refused {
                    local,
                    error,
                    answered,
                } => self.refused_publish(&local, &error, answered)?,
            }
        }
        while !self.pacing()
            && let Some(answer) = self.ingest.as_deref_mut().and_then(Ingest::next_answer)
        {
            self.send_answer(answer)?;
        }
        Ok(())
    }

    /// Delivers `message` to local subscribers; a QoS 0 delivery to a full subscriber queue
    /// waits in [`Connection::pace`] (up to `slow_subscriber_wait`) instead of being dropped.
    fn deliver_local(&mut self, message: &Arc<Message>) {
        let wait = self.settings.slow_subscriber_wait.0;
        let commit = if wait.is_zero() {
            self.server.publish_local(message)
        } else {
            let metrics = &self.server.metrics;
            let pace = self
                .pace
                .get_or_insert_with(|| Box::new(Pace::new(true, Arc::clone(metrics))));
            let commit = self.server.publish_local_paced(message, pace.collect());
            pace.arm();
            commit
        };
        self.hold_output(commit);
    }

    /// Whether deliveries of this client's publish wait for room: no input is taken.
    fn pacing(&self) -> bool {
        self.pace.as_ref().is_some_and(|pace| pace.is_waiting())
    }

    /// A publish the log refused. MQTT 5 answers it (in order, with the log's reason); 3.1.1
    /// has no negative acknowledgement, so the connection closes and the device keeps the
    /// message and retries (a QoS 0 publish refused only because the log is full is dropped).
    fn refused_publish(
        &mut self,
        message: &Message,
        error: &AppendError,
        answered: bool,
    ) -> Result<(), Exit> {
        inc(&self.server.metrics.refused);
        tracing::warn!(client_id = %self.client_id, topic = %message.topic, "publish refused by the log: {error}");
        match self.version {
            ProtocolVersion::V5 => Ok(()),
            ProtocolVersion::V311 if !answered && matches!(error, AppendError::Full { .. }) => {
                Ok(())
            }
            ProtocolVersion::V311 => Err(Exit::Violation(
                refusal_reason(error),
                format!("log refused the publish: {error}"),
            )),
        }
    }

    /// Sends the PUBACK or PUBREC of an answer that is due.
    fn send_answer(&mut self, answer: Answer<Owed>) -> Result<(), Exit> {
        let Owed {
            packet_id,
            qos,
            in_qos2_set,
            reason,
        } = answer.tag;
        self.qos2_answers = self.qos2_answers.saturating_sub(usize::from(in_qos2_set));
        let mut why = None;
        let reason = match answer.outcome {
            Outcome::Given => reason,
            Outcome::Durable(_) => ReasonCode::Success,
            Outcome::Refused(error) => {
                why = Some(error.to_string());
                refusal_reason(&error)
            }
            Outcome::NotDurable(error) => {
                // The record was written but never made durable (fsync failed): never ack it.
                inc(&self.server.metrics.refused);
                tracing::error!(client_id = %self.client_id, "publish not durable: {error}");
                if self.version == ProtocolVersion::V311 {
                    return Err(Exit::Violation(
                        ReasonCode::UnspecifiedError,
                        format!("log failed: {error}"),
                    ));
                }
                ReasonCode::UnspecifiedError
            }
        };
        let mut properties = Properties::default();
        if self.problem_info {
            properties.reason_string = why.and_then(|why| MqttString::try_from(why).ok());
        }
        match qos {
            QoS::AtLeastOnce => {
                self.write(&Packet::PubAck(PubAck {
                    packet_id,
                    reason_code: reason,
                    properties,
                }));
            }
            QoS::ExactlyOnce => {
                if !reason.is_success() {
                    // Not taken: a resend with this packet id is a new publish.
                    self.session.lock().inbound_qos2.remove(&packet_id);
                }
                self.write(&Packet::PubRec(PubRec {
                    packet_id,
                    reason_code: reason,
                    properties,
                }));
            }
            QoS::AtMostOnce => {}
        }
        Ok(())
    }

    fn on_pubrec(&mut self, rec: PubRec) -> Result<(), Exit> {
        let known = {
            let mut state = self.session.lock();
            match state.inflight.get(&rec.packet_id) {
                Some(out) if out.delivery.qos == QoS::ExactlyOnce => {
                    if rec.reason_code.is_success() {
                        state.inflight.release(rec.packet_id);
                    } else {
                        state.inflight.remove(&rec.packet_id);
                        return Ok(());
                    }
                    true
                }
                _ => false,
            }
        };
        let mut rel = PubRel::new(rec.packet_id);
        if !known {
            rel.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        self.write(&Packet::PubRel(rel));
        Ok(())
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Exit> {
        let id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let now = now_ms();
        for request in &subscribe.filters {
            let text = request.filter.as_str();
            let (group, filter_text) = match topic::parse_shared(text) {
                Ok(Some(shared)) => (Some(shared.group), shared.filter),
                Ok(None) => (None, text),
                Err(_) => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            if group.is_some() && request.options.no_local {
                return Err(Exit::Violation(
                    ReasonCode::ProtocolError,
                    "No Local on a shared subscription".to_owned(),
                ));
            }
            let filter = match (
                topic::validate_filter(filter_text),
                Filter::mqtt_within(filter_text, self.settings.max_topic_levels),
            ) {
                (Ok(()), Ok(filter)) => filter,
                _ => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            if self.permissions.subscribe(filter_text) == crate::auth::acl::SubscribeVerdict::Denied
            {
                codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            if self
                .server
                .admit_subscription(&self.session, text, &self.settings)
                .is_err()
            {
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let qos = request.options.qos;
            let mailbox = self
                .permissions
                .guard(filter_text, Arc::clone(&self.session) as Arc<dyn Mailbox>);
            let entry = SubEntry {
                qos,
                no_local: request.options.no_local,
                retain_as_published: request.options.retain_as_published,
                id,
                mailbox: Arc::clone(&mailbox),
            };
            let existed = self
                .server
                .hub
                .subscribe(&filter, group, self.session.key, entry);
            self.session.lock().subscriptions.insert(
                text.to_owned(),
                SubscriptionRecord {
                    qos,
                    no_local: request.options.no_local,
                    retain_as_published: request.options.retain_as_published,
                    id,
                },
            );
            codes.push(match request.options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            let send_retained = group.is_none()
                && match request.options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendAtSubscribeIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                for message in self.server.retained.matching(&filter, now) {
                    let delivery = Delivery {
                        qos: message.qos.min(qos),
                        message,
                        retain: true,
                        subscription_ids: id.into_iter().collect(),
                    };
                    retained.push((Arc::clone(&mailbox), delivery));
                }
            }
        }
        self.write(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes: codes,
            properties: Properties::default(),
        }));
        for (mailbox, delivery) in retained {
            mailbox.deliver(delivery);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Exit> {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for text in &unsubscribe.filters {
            let removed = self.server.unsubscribe_one(&self.session, text.as_str());
            codes.push(if removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        self.write(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            reason_codes: codes,
            properties: Properties::default(),
        }));
        Ok(())
    }

    fn on_disconnect(&mut self, disconnect: Disconnect) -> Result<(), Exit> {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.connect_expiry == 0 && expiry != 0 {
                return Err(Exit::Violation(
                    ReasonCode::ProtocolError,
                    "session expiry set on DISCONNECT after CONNECT had none".to_owned(),
                ));
            }
            let max =
                u32::try_from(self.settings.max_session_expiry.0.as_secs()).unwrap_or(u32::MAX);
            self.session.lock().expiry_secs = expiry.min(max);
        }
        Err(Exit::ClientDisconnect {
            with_will: disconnect.reason_code == ReasonCode::DisconnectWithWillMessage,
        })
    }

    /// Moves queued deliveries into the output, within the client's Receive Maximum.
    fn pump_outbound(&mut self) {
        let session = Arc::clone(&self.session);
        let now = now_ms();
        let mut state = session.lock();
        let queued = state.queue.len();
        while self.outbuf.len() < OUT_HIGH_WATER {
            let Some(front) = state.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && state.inflight.len() >= self.client_receive_max {
                break;
            }
            let Some(delivery) = state.queue.pop_front() else {
                break;
            };
            if delivery.message.is_expired(now) {
                self.server.metrics.dropped(DropReason::Expired);
                continue;
            }
            let packet_id = if delivery.qos != QoS::AtMostOnce {
                match state.next_packet_id() {
                    Some(id) => Some(id),
                    None => {
                        state.queue.push_front(delivery);
                        break;
                    }
                }
            } else {
                None
            };
            let (packet, alias) = self.publish_packet(&delivery, packet_id, false, now);
            match mqtt::encode_limited(
                &packet,
                self.version,
                self.client_max_packet,
                &mut self.outbuf,
            ) {
                Ok(_) => {
                    self.remember_alias(alias);
                    self.server.metrics.sent(delivery.qos);
                    if let Some(id) = packet_id {
                        state.inflight.insert(
                            id,
                            Outbound {
                                delivery,
                                released: false,
                            },
                        );
                    }
                }
                Err(EncodeError::PacketTooLarge { .. }) => {
                    // MQTT 5 §3.1.2.11.4: a message larger than the client accepts is discarded.
                    self.server.metrics.dropped(DropReason::TooLargeForClient);
                }
                Err(err) => {
                    tracing::warn!(client_id = %self.client_id, "cannot encode a delivery: {err}")
                }
            }
        }
        if state.queue.len() < queued {
            // Publishers waiting for room in this queue may offer again.
            drop(state);
            session.room.made();
        }
    }

    /// Records a topic alias once the PUBLISH that told the client about it is encoded.
    fn remember_alias(&mut self, alias: Option<(String, u16)>) {
        if let Some((topic, alias)) = alias {
            let aliases = self.aliases.get_or_insert_with(Box::default);
            aliases.outbound.insert(topic, alias);
        }
    }

    /// The PUBLISH for a delivery, and the new topic alias it sets (to remember only if the
    /// packet is actually sent: a packet dropped as too large for the client must not leave
    /// the client an alias it never learned).
    fn publish_packet(
        &self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: u64,
    ) -> (Packet, Option<(String, u16)>) {
        let mut new_alias = None;
        let message = &delivery.message;
        let mut properties = Properties::default();
        let mut topic = MqttString::try_from(message.topic.as_str()).unwrap_or_default();
        if self.version == ProtocolVersion::V5 {
            let p = &message.properties;
            properties.payload_format_indicator = p.payload_utf8;
            properties.message_expiry_interval = message.remaining_expiry(now);
            properties.content_type = p
                .content_type
                .as_deref()
                .and_then(|s| MqttString::try_from(s).ok());
            properties.response_topic = p
                .response_topic
                .as_deref()
                .and_then(|s| MqttString::try_from(s).ok());
            properties.correlation_data = p.correlation_data.clone();
            properties.user_properties = p
                .user_properties
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        MqttString::try_from(k.as_str()).ok()?,
                        MqttString::try_from(v.as_str()).ok()?,
                    ))
                })
                .collect();
            properties.subscription_identifiers = delivery.subscription_ids.clone();
            if self.client_alias_max > 0 {
                let outbound = self.aliases.as_ref().map(|a| &a.outbound);
                if let Some(&alias) = outbound.and_then(|o| o.get(&message.topic)) {
                    properties.topic_alias = Some(alias);
                    topic = MqttString::default();
                } else if let Ok(next) = u16::try_from(outbound.map_or(0, HashMap::len) + 1)
                    && next <= self.client_alias_max
                {
                    new_alias = Some((message.topic.clone(), next));
                    properties.topic_alias = Some(next);
                }
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic,
            packet_id,
            properties,
            payload: message.payload.clone(),
        });
        (packet, new_alias)
    }

    /// Waits (at most [`SHUTDOWN_ACK_DRAIN`]) until the ingest queue has `done`, delivering
    /// locally what the log wrote and sending the acknowledgements that become due.
    async fn drain_ingest(&mut self, done: fn(&Ingest) -> bool) {
        let drain = async {
            if let Some(queue) = &mut self.ingest {
                queue.submit();
            }
            loop {
                if self.take_ingest().is_err() {
                    return;
                }
                // No queue: the client never published, nothing is on its way.
                let Some(queue) = self.ingest.as_deref_mut() else {
                    return;
                };
                if done(queue) || !queue.is_busy() {
                    return;
                }
                queue.progress().await;
            }
        };
        let _ = tokio::time::timeout(SHUTDOWN_ACK_DRAIN, drain).await;
    }

    async fn finish(mut self: Box<Self>, exit: Exit) {
        // What waits for room is given up (dropped and counted); what the drain below
        // delivers does not wait (a pace made now would, so one that never waits is set).
        let metrics = &self.server.metrics;
        self.pace
            .get_or_insert_with(|| Box::new(Pace::new(false, Arc::clone(metrics))))
            .stop();
        match exit {
            // Shutdown: the acknowledgements whose records become durable in time go out, so
            // clients do not resend what is already safe.
            Exit::Shutdown => self.drain_ingest(Ingest::is_settled).await,
            Exit::Violation(..) => {}
            // The routed publishes already taken from the client (e.g. QoS 0 followed by
            // DISCONNECT) are stored and delivered locally like any other.
            _ => self.drain_ingest(Ingest::all_written).await,
        }
        if let Some(gate) = self.gate.take()
            && !matches!(
                tokio::time::timeout(CLOSE_FLUSH, gate.durable()).await,
                Ok(Ok(()))
            )
        {
            // Acknowledgements of changes that are not saved must not go out.
            self.outbuf.clear();
        }
        let reason = match &exit {
            Exit::Kicked => Some(ReasonCode::SessionTakenOver),
            Exit::Shutdown => Some(ReasonCode::ServerShuttingDown),
            Exit::Violation(reason, _) => Some(*reason),
            Exit::ClientDisconnect { .. } | Exit::Closed(_) => None,
        };
        if let Some(reason) = reason
            && self.version == ProtocolVersion::V5
        {
            let mut properties = Properties::default();
            if self.problem_info
                && let Exit::Violation(_, why) = &exit
            {
                properties.reason_string = MqttString::try_from(why.as_str()).ok();
            }
            self.write(&Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties,
            }));
        }
        crate::listener::flush_and_close(&mut self.writer, &mut self.outbuf, CLOSE_FLUSH).await;

        match &exit {
            Exit::Violation(reason, why) => {
                inc(&self.server.metrics.protocol_errors);
                tracing::info!(peer = %self.peer, client_id = %self.client_id, reason = reason.name(), "MQTT client disconnected: {why}");
            }
            Exit::Closed(why) => {
                tracing::debug!(peer = %self.peer, client_id = %self.client_id, "MQTT client gone: {why}")
            }
            other => {
                tracing::debug!(peer = %self.peer, client_id = %self.client_id, "MQTT client gone: {other:?}")
            }
        }

        let publish_will = match exit {
            Exit::ClientDisconnect { with_will } => with_will,
            Exit::Shutdown => false,
            Exit::Closed(_) | Exit::Kicked | Exit::Violation(..) => true,
        };
        if let Some(will) = self.will.take()
            && publish_will
        {
            self.server.schedule_will(
                &self.session,
                self.generation,
                will.message,
                will.delay_secs,
            );
        }
        // Acks never sent are simply owed: the client resends those publishes.
        self.server.detach_session(&self.session, self.generation);
        // Publishers waiting for room in this session offer again (and are refused if the
        // session is offline now).
        self.session.room.made();
        self.server.metrics.connected(-1);
    }
}

/// Maps a decode failure to the DISCONNECT the client gets.
fn decode_violation(err: &DecodeError) -> Exit {
    let reason = match err {
        // MQTT 5 §3.3.2.3.4: Topic Alias 0 is "Topic Alias invalid", not a generic protocol error.
        DecodeError::InvalidPropertyValue {
            id: mqtt::PropertyId::TopicAlias,
            ..
        } => ReasonCode::TopicAliasInvalid,
        other => other.reason_code(),
    };
    Exit::Violation(reason, err.to_string())
}

/// The message metadata kept from PUBLISH or Will properties.
fn message_properties(p: &Properties) -> MessageProperties {
    MessageProperties {
        payload_utf8: p.payload_format_indicator,
        expiry_secs: p.message_expiry_interval,
        content_type: p.content_type.as_ref().map(|s| s.as_str().to_owned()),
        response_topic: p.response_topic.as_ref().map(|s| s.as_str().to_owned()),
        correlation_data: p.correlation_data.clone(),
        user_properties: p
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
    }
}

/// The MQTT 5 reason code for a publish the log refused. Only codes a PUBACK / PUBREC may
/// carry (spec 3.4.2.1): a record over `log.max_record_bytes` is an implementation-specific
/// limit (0x83), not "Packet too large" (0x95, which PUBACK cannot carry).
fn refusal_reason(error: &AppendError) -> ReasonCode {
    match error {
        // The log's budget, or the disk, is full: a quota the device can wait out.
        AppendError::Full { .. } | AppendError::NoSpace { .. } => ReasonCode::QuotaExceeded,
        AppendError::TooLarge { .. } => ReasonCode::ImplementationSpecificError,
        AppendError::Storage { .. } | AppendError::Closed => ReasonCode::UnspecifiedError,
    }
}

/// Awaits `future` if there is one, else never. For the serve loop's rarely active branches
/// (pacing, the state gate): `select!` holds every branch's future at once, for every idle
/// connection; boxed, such a branch costs a pointer there instead of its size.
async fn rarely<F: std::future::Future>(future: Option<std::pin::Pin<Box<F>>>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Waits for the ingest queue's progress; never ready without a queue.
async fn ingest_progress(queue: &mut Option<Box<Ingest>>) {
    match queue {
        Some(queue) => queue.progress().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
