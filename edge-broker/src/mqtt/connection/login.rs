//! CONNECT and login: reading the CONNECT (bounded, before a seat is taken), credentials,
//! the seat, client id rules, session attach or takeover, the will, and the CONNACK.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::BytesMut;
use edge_proto::mqtt::{
    self, ConnAck, Connect, DecodeError, MqttString, Packet, Properties, ProtocolVersion,
    ReasonCode,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::inbound::message_properties;
use super::state::{Connection, READ_BUFFER, WillMessage};
use crate::admission::Pending;
use crate::listener::{Stream, read_some};
use crate::message::{Message, Origin, now_ms};
use crate::mqtt::server::MqttServer;

/// Who sent a CONNECT: its address, its pending place, its TLS certificate.
pub(super) struct Arrival {
    pub(super) peer: SocketAddr,
    pub(super) pending: Pending,
    pub(super) certificate: Option<crate::auth::PeerCertificate>,
}

/// Reads until a whole CONNECT is decoded. The error says why, and whether the client asked
/// for a protocol level this server does not speak (it is then owed a CONNACK 0x01).
pub(super) async fn read_connect(
    reader: &mut Stream,
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
    writer: &mut Stream,
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

impl Connection {
    /// Validates CONNECT, attaches the session and sends CONNACK. `Ok(None)`: refused.
    pub(super) async fn accept(
        server: Arc<MqttServer>,
        connect: Box<Connect>,
        mut stream: Stream,
        inbuf: BytesMut,
        arrival: Arrival,
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
                    &mut stream,
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
                    &mut stream,
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
                &mut stream,
                version,
                ReasonCode::BadAuthenticationMethod,
                "enhanced authentication is not supported",
            )
            .await?;
            return Ok(None);
        }
        let mut client_id = connect.client_id.as_str().to_owned();
        if client_id.len() > settings.max_client_id_length {
            server
                .limits
                .refused(crate::mqtt::limits::Limit::ClientIdLength);
            let why = "client id longer than mqtt.max_client_id_length";
            refuse(
                &mut stream,
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
                    &mut stream,
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

        // One allocation for the identity, a new session (the registry's key too) and the
        // connection.
        let client_id: Arc<str> = client_id.into();
        let identity = crate::auth::Identity {
            user,
            client_id: Arc::clone(&client_id),
        };
        let exists = server.sessions.lock().contains_key(&*client_id);
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
            refuse(&mut stream, version, ReasonCode::NotAuthorized, why).await?;
            return Ok(None);
        }
        let attached = server.attach_session(&client_id, connect.clean_start, expiry);
        let Ok((session, session_present, generation)) = attached else {
            tracing::warn!(%peer, %client_id, "refusing a new MQTT session: mqtt.max_sessions reached");
            refuse(
                &mut stream,
                version,
                ReasonCode::QuotaExceeded,
                "too many sessions",
            )
            .await?;
            return Ok(None);
        };
        // A resumed session keeps the id it was made with: share that one.
        let client_id = Arc::clone(&session.client_id);

        let will = connect.will.as_ref().map(|will| {
            Box::new(WillMessage {
                message: Message {
                    topic: will.topic.as_str().into(),
                    payload: will.payload.clone(),
                    qos: will.qos,
                    retain: will.retain,
                    properties: message_properties(&will.properties),
                    received_ms: now_ms(),
                    origin: Origin::Mqtt,
                    publisher: Some(session.key),
                    nats_subject: None,
                },
                delay_secs: will.properties.will_delay_interval.unwrap_or(0),
            })
        });

        let mut properties = Properties::default();
        if version == ProtocolVersion::V5 {
            if assigned {
                properties.assigned_client_identifier = MqttString::try_from(&*client_id).ok();
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
            peer,
            stream,
            inbuf,
            read_burst: false,
            large_input: crate::input_pool::InputLease::default(),
            // Sized by what is written into it: an idle client's is CONNACK-sized (a few
            // bytes, not 512), and given back once written (`give_back_small`). A larger one
            // is kept when drained: a busy subscriber's writes would otherwise allocate it
            // again and again (see BENCHMARKS.md, Footprint).
            outbuf: BytesMut::new(),
            client_max_packet: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
            client_receive_max: connect
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(settings.max_inflight_messages),
            client_alias_max: connect.properties.topic_alias_maximum.unwrap_or(0),
            problem_info: connect
                .properties
                .request_problem_information
                .unwrap_or(true),
            topics: None,
            // 65,535 × 1,500 fits a u32.
            keep_alive_ms: NonZeroU32::new(u32::from(keep_alive) * 1500),
            last_read: Instant::now(),
            stirred_ms: 0,
            fresh: true,
            timer: None,
            read_paused: false,
            ingest: None,
            permissions,
            will,
            connect_expiry: expiry,
            gate: None,
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
            client_id = %connection.session.client_id,
            version = ?version,
            session_present,
            "MQTT client connected"
        );
        Ok(Some(connection))
    }
}
