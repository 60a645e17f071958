//! What the client sends us: decoding input, inbound PUBLISH (aliases, permissions, QoS 2,
//! retained caps) into the ingest queue, local delivery once written, and the PUBACK/PUBREC
//! answers in arrival order.

use std::sync::Arc;

use edge_log::{AppendError, Destination, RecordFields, Source};
use edge_proto::mqtt::{
    self, DecodeError, MqttString, Packet, Properties, ProtocolVersion, PubAck, PubRec, Publish,
    QoS, ReasonCode, topic,
};
use tokio::time::Instant;

use super::facts::{Facts, MAX_TOPIC_BYTES};
use super::state::{Connection, Exit, Ingest, Local, Owed, READ_CHUNK};
use crate::hub::LocalRoute;
use crate::ingest::{self, Answer, Event, IngestLimits, IngestQueue, Outcome, Publisher};
use crate::input_pool::InputLease;
use crate::message::{Message, MessageProperties, Origin, now_ms};
use crate::metrics::front::{add, inc};
use crate::mqtt::pace::Pace;

/// What [`Connection::decide`] decided for a publish's topic.
struct Decided {
    /// The topic, shared with the connection's [`super::facts::TopicFacts`].
    topic: Arc<str>,
    /// Why it may not be published to.
    denied: Option<ingest::Denied>,
    /// Where it goes upstream (`None`: not stored).
    destination: Option<Destination>,
    /// A message must be made for local delivery or the retained store.
    local: bool,
    /// Where its messages go in the hub (none for a topic too long to keep).
    route: Option<Arc<LocalRoute>>,
}

impl Facts {
    /// What needs no configuration of a topic published to: `name` as a message's shared
    /// topic, whether it is reserved; a topic name that is not valid breaks the protocol.
    fn of(name: &MqttString) -> Result<Facts, Exit> {
        // `MqttString::as_str` checks its UTF-8 again on every call (~130 instructions for a
        // 20-byte topic): once, for a topic not kept.
        let topic: Arc<str> = name.as_str().into();
        if let Err(err) = topic::validate_name(&topic) {
            return Err(Exit::Violation(
                ReasonCode::TopicNameInvalid,
                format!("invalid topic {topic:?}: {err}"),
            ));
        }
        let reserved = ingest::check_reserved(Source::Mqtt, &topic).is_err();
        Ok(Facts::new(topic, reserved))
    }
}

/// Routed records an MQTT connection holds until written (and, if acknowledged, durable), and
/// their payload bytes. An MQTT connection keeps a whole `Message` per record for local
/// delivery when its topic has a subscriber, so it holds fewer than a NATS one; 1024 still
/// fill many group commits.
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

impl Connection {
    /// Decodes and handles buffered packets while nothing holds input back, hands the routed
    /// publishes to the log as one batch, and sends what is ready.
    pub(super) fn process_input(&mut self) -> Result<(), Exit> {
        let decoded = self.decode_input();
        if let Some(queue) = &mut self.ingest {
            queue.submit();
        }
        self.take_ingest()?;
        decoded
    }

    fn decode_input(&mut self) -> Result<(), Exit> {
        // The settings this connection started with (a reload affects later connections).
        let max_packet_in =
            u32::try_from(self.settings.max_packet_size.bytes()).unwrap_or(u32::MAX);
        // The clock is read once for the publishes of one buffer (at the first), as NATS does:
        // ~100 instructions a publish.
        let mut received_ms = None;
        // A large packet now whole is the first to be decoded: its lease goes with it, and it
        // moves the keep-alive clock, which its bytes did not.
        let mut arriving = self.large_input.take_whole(self.inbuf.len());
        if arriving.is_held() {
            self.last_read = Instant::now();
        }
        let pushed = self.records_pushed();
        while !self.ingest_holds_input() && !self.pacing() {
            // A subscriber acknowledges each QoS 1 delivery with these four bytes: taken
            // without the packet decoder (~300 instructions a delivery).
            if max_packet_in >= 4
                && let Some(packet_id) = bare_puback(&self.inbuf)
            {
                bytes::Buf::advance(&mut self.inbuf, 4);
                self.on_puback(packet_id);
                continue;
            }
            // Used where it was decoded (a PUBLISH by reference).
            let mut decoded = mqtt::decode(&mut self.inbuf, self.version, max_packet_in);
            let packet = match &mut decoded {
                Ok(Some(packet)) => packet,
                Ok(None) => return self.lease_awaited_packet(),
                Err(err) => return Err(decode_violation(err)),
            };
            // Their answers (SUBACK, UNSUBACK, PUBCOMP, PUBACK/PUBREC) tell the client a
            // state change happened: the output waits until it is durable.
            let answered = matches!(
                *packet,
                Packet::Subscribe(_)
                    | Packet::Unsubscribe(_)
                    | Packet::PubRel(_)
                    | Packet::Publish(_)
            );
            if let Packet::Publish(publish) = packet {
                self.on_publish(publish, &mut received_ms)?;
            } else {
                self.handle(std::mem::replace(packet, Packet::PingReq))?;
            }
            if answered {
                self.hold_output(self.server.session_commit(&self.session));
            }
            if arriving.is_held() {
                self.keep_arriving(std::mem::take(&mut arriving), pushed);
            }
        }
        if arriving.is_held() {
            // Input held back before it was decoded: the lease stays with its packet.
            self.large_input = arriving;
        }
        Ok(())
    }

    /// Routed records pushed so far (none before the ingest queue is made).
    fn records_pushed(&self) -> u64 {
        self.ingest.as_deref().map_or(0, Ingest::pushed)
    }

    /// The large packet just handled came with `lease`: its record keeps it until written if
    /// it became one ([`IngestQueue::keep_until_written`]); otherwise it is given back now.
    fn keep_arriving(&mut self, lease: InputLease, pushed: u64) {
        if let Some(queue) = self.ingest.as_deref_mut() {
            queue.keep_until_written(lease, pushed);
        }
    }

    /// Once decoding waits for the rest of a packet larger than a read: its lease from
    /// `mqtt.max_partial_packet_bytes_total`, taken before its bytes come, or the connection
    /// is refused ([`crate::input_pool`]).
    fn lease_awaited_packet(&mut self) -> Result<(), Exit> {
        let awaited = mqtt::awaited_packet_len(&self.inbuf);
        let pool = &self.server.input_pool;
        self.large_input
            .cover(pool, &mut self.inbuf, awaited, READ_CHUNK)
            .map_err(|refused| {
                inc(&self.server.metrics.partial_refused);
                Exit::Busy(refused.to_string())
            })
    }

    /// Whether the ingest queue (if made yet) holds input back.
    pub(super) fn ingest_holds_input(&self) -> bool {
        self.ingest.as_deref().is_some_and(Ingest::holds_input)
    }

    /// The ingest queue, made at the first publish: most of an idle client's life has none.
    fn ingest_queue(&mut self) -> &mut Ingest {
        self.ingest_for_records().0
    }

    /// The ingest queue ([`Connection::ingest_queue`]) and the client id its records carry,
    /// borrowed together: a record is encoded from borrowed fields, no reference taken.
    fn ingest_for_records(&mut self) -> (&mut Ingest, &str) {
        let (server, settings, version) = (&self.server, &self.settings, self.version);
        let queue = self.ingest.get_or_insert_with(|| {
            Box::new(
                IngestQueue::new(server.log.clone(), ingest_limits(settings, version))
                    .measure_acks(Arc::clone(&server.metrics.ack_latency)),
            )
        });
        (queue, &self.session.client_id)
    }

    /// A PUBLISH of the client; `received_ms`: when its buffer was taken (read at the
    /// buffer's first publish).
    pub(super) fn on_publish(
        &mut self,
        publish: &mut Publish,
        received_ms: &mut Option<u64>,
    ) -> Result<(), Exit> {
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
        // Topic aliases (MQTT 5 §3.3.2.3.4).
        if let Some(alias) = publish.properties.topic_alias {
            if alias == 0 || alias > self.settings.topic_alias_maximum {
                return Err(Exit::Violation(
                    ReasonCode::TopicAliasInvalid,
                    format!("topic alias {alias} is out of range"),
                ));
            }
            if publish.topic.is_empty() {
                match self.topics.as_ref().and_then(|a| a.inbound.get(&alias)) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => {
                        return Err(Exit::Violation(
                            ReasonCode::ProtocolError,
                            format!("unknown topic alias {alias}"),
                        ));
                    }
                }
            } else {
                let aliases = self.topics.get_or_insert_with(Box::default);
                aliases.inbound.insert(alias, publish.topic.clone());
            }
        }
        let Decided {
            topic: topic_name,
            denied,
            destination,
            local,
            route,
        } = self.decide(&publish.topic, publish.retain)?;
        let packet_id = publish.packet_id;
        if let Some(denied) = denied {
            // As Mosquitto: acknowledged (v5 with "Not authorized"), neither stored nor
            // delivered; the connection stays.
            self.server.metrics.denied(&denied);
            tracing::debug!(client_id = %self.session.client_id, "publish denied: {denied}");
            if let Some(id) = packet_id {
                self.owe(id, publish.qos, ReasonCode::NotAuthorized);
            }
            return Ok(());
        }
        if publish.qos == QoS::ExactlyOnce
            && let Some(id) = packet_id
        {
            let mut state = self.session.lock();
            if state.inbound_qos2().contains(&id) {
                // A resend of a QoS 2 publish we already took: acknowledge again, do not redeliver.
                drop(state);
                self.owe(id, QoS::ExactlyOnce, ReasonCode::Success);
                return Ok(());
            }
            if state.inbound_qos2().len() >= usize::from(self.settings.max_inflight) {
                return Err(Exit::Violation(
                    ReasonCode::ReceiveMaximumExceeded,
                    "too many QoS 2 publishes awaiting PUBREL".to_owned(),
                ));
            }
            state.inbound_qos2_mut().insert(id);
        }
        if publish.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            if let Some(id) = packet_id {
                self.owe(id, publish.qos, ReasonCode::PayloadFormatInvalid);
            }
            return Ok(());
        }
        let received_ms = *received_ms.get_or_insert_with(now_ms);
        if !local {
            // Not retained and nobody subscribes: no message for local delivery is made, and
            // nothing happens once it is written but the count.
            let owed =
                packet_id.map(|packet_id| self.owed(packet_id, publish.qos, ReasonCode::Success));
            match destination {
                Some(destination) => {
                    // Encoded here, into the connection's batch: nothing of this PUBLISH is
                    // handed to the log's writer thread.
                    let (queue, client_id) = self.ingest_for_records();
                    let record = RecordFields {
                        timestamp_ms: received_ms,
                        source: Source::Mqtt,
                        topic: &topic_name,
                        client_id,
                        destination: &destination,
                        payload: &publish.payload,
                    };
                    let headers = ingest::record::publish_user_properties(
                        &publish.properties.user_properties,
                    );
                    let local = Local::Quiet(Arc::clone(&topic_name));
                    queue.push_routed_quiet(record, headers, local, owed);
                }
                None => {
                    if let Some(owed) = owed {
                        self.ingest_queue().push_answer(owed);
                    }
                }
            }
            return Ok(());
        }
        let mut message = Message {
            topic: topic_name,
            payload: std::mem::take(&mut publish.payload),
            qos: publish.qos,
            retain: publish.retain,
            properties: message_properties(&publish.properties),
            received_ms,
            origin: Origin::Mqtt,
            publisher: Some(self.session.key),
            nats_subject: None,
        };
        if message.retain
            && !message.payload.is_empty()
            && let Err(limit) = self
                .server
                .admit_retained(&message.topic, crate::mqtt::retained::weight(&message))
        {
            // Over a retained cap: refused where an ack can say so (v5 QoS 1/2: 0x97 Quota
            // exceeded), otherwise delivered like any message but not retained.
            tracing::info!(client_id = %self.session.client_id, topic = %message.topic, "retained message over mqtt.{}", limit.key());
            if let (ProtocolVersion::V5, Some(id)) = (self.version, packet_id) {
                self.owe(id, publish.qos, ReasonCode::QuotaExceeded);
                return Ok(());
            }
            message.retain = false;
        }
        let message = Arc::new(message);
        let owed =
            packet_id.map(|packet_id| self.owed(packet_id, publish.qos, ReasonCode::Success));
        match destination {
            Some(destination) => {
                let (queue, client_id) = self.ingest_for_records();
                let record = RecordFields {
                    timestamp_ms: message.received_ms,
                    source: Source::Mqtt,
                    topic: &message.topic,
                    client_id,
                    destination: &destination,
                    payload: &message.payload,
                };
                let headers = ingest::record::user_properties(&message);
                let local = Local::Deliver(Arc::clone(&message), route);
                queue.push_routed(record, headers, local, owed);
            }
            None => {
                self.deliver_local(&message, route.as_deref());
                if let Some(owed) = owed {
                    self.ingest_queue().push_answer(owed);
                }
            }
        }
        Ok(())
    }

    /// What the publish on `name` is allowed and where it goes: from the connection's
    /// [`super::facts::TopicFacts`] when the topic is kept there and no reload or
    /// subscription change made an answer stale since, otherwise decided (and kept, but for a
    /// refusal). `local`: a message must be made for local delivery (it is `retain`ed, or the
    /// hub has a matching subscription); not decided for a denied publish.
    fn decide(&mut self, name: &MqttString, retain: bool) -> Result<Decided, Exit> {
        let Connection {
            server,
            session,
            permissions,
            topics,
            ..
        } = self;
        let mut uncached;
        let kept = name.len() <= MAX_TOPIC_BYTES;
        let facts = if kept {
            topics
                .get_or_insert_with(Box::default)
                .facts
                .get_or_insert_with(name.as_bytes(), || Facts::of(name))?
        } else {
            uncached = Facts::of(name)?;
            &mut uncached
        };
        let topic = Arc::clone(&facts.topic);
        // The ACL allowed this topic under rules no reload has replaced since: the same answer
        // again, for one atomic load. A refusal is never kept (it is counted each time).
        let checked = if facts.reserved {
            ingest::check_reserved(Source::Mqtt, &topic)
        } else if facts
            .permitted
            .is_some_and(|generation| permissions.is_current(generation))
        {
            Ok(())
        } else {
            let mut publisher = Publisher {
                source: Source::Mqtt,
                client_id: &session.client_id,
                permissions: Some(&mut *permissions),
            };
            let checked = ingest::check_permitted(&mut publisher, &topic);
            facts.permitted = checked.is_ok().then(|| permissions.checked_generation());
            checked
        };
        if let Err(denied) = checked {
            return Ok(Decided {
                topic,
                denied: Some(denied),
                destination: None,
                local: false,
                route: None,
            });
        }
        // Where it goes upstream, while the route table stays the same (the key may depend on
        // the client id: the table is the connection's); kept once the topic repeats.
        let generation = server.routes.generation();
        let destination = match &facts.route {
            Some((g, destination)) if *g == generation => destination.clone(),
            _ => {
                let destination = server.destination(&topic, &session.client_id);
                if !facts.fresh {
                    facts.route = Some((generation, destination.clone()));
                }
                destination
            }
        };
        facts.fresh = false;
        // Where its messages go in the hub (whether anyone subscribes, and whom), while the
        // hub's subscriptions stay the same. A topic too long to keep is not asked: the answer
        // would be thrown away, and the fan-out would walk the tree a second time; the message
        // is made and the fan-out decides.
        let route = kept.then(|| {
            let hub = &server.hub;
            match &facts.local {
                Some(route) if route.generation() == hub.generation() => Arc::clone(route),
                _ => {
                    let route = Arc::new(hub.local_route(&topic, Some(session.key)));
                    facts.local = Some(Arc::clone(&route));
                    route
                }
            }
        });
        let local = retain || route.as_ref().is_none_or(|route| route.anyone());
        Ok(Decided {
            topic,
            denied: None,
            destination,
            local,
            route,
        })
    }

    /// QoS 1/2 publishes of the client not yet acknowledged (PUBACK, or for QoS 2 PUBCOMP) as
    /// far as this side knows (never more than the client counts), besides a resend of
    /// `packet_id` if it is a QoS 2 publish already taken. PUBACKs and PUBRECs owed, plus QoS 2
    /// publishes whose PUBREC went out and whose PUBREL has not come.
    fn receive_inflight(&self, packet_id: u16) -> usize {
        let (qos2, resend) = {
            let state = self.session.lock();
            let set = state.inbound_qos2();
            (set.len(), usize::from(set.contains(&packet_id)))
        };
        let owed = self.ingest.as_deref().map_or(0, Ingest::answers_owed);
        let owed_elsewhere =
            owed.saturating_sub(usize::try_from(self.qos2_answers).unwrap_or(usize::MAX));
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
            qos == QoS::ExactlyOnce && self.session.lock().inbound_qos2().contains(&packet_id);
        self.qos2_answers = self.qos2_answers.saturating_add(u32::from(in_qos2_set));
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
    pub(super) fn take_ingest(&mut self) -> Result<(), Exit> {
        if let Some(queue) = self.ingest.as_deref_mut() {
            // One atomic add for the records nobody waited for, not one per record.
            add(&self.server.metrics.stored, queue.take_quiet_written());
        }
        while !self.pacing()
            && let Some(event) = self.ingest.as_deref_mut().and_then(Ingest::next_event)
        {
            match event {
                Event::Written { local, .. } => {
                    inc(&self.server.metrics.stored);
                    if let Local::Deliver(message, route) = &local {
                        self.deliver_local(message, route.as_deref());
                    }
                }
                Event::Refused {
                    local,
                    error,
                    answered,
                } => self.refused_publish(local.topic(), &error, answered)?,
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
    fn deliver_local(&mut self, message: &Arc<Message>, route: Option<&LocalRoute>) {
        let wait = self.settings.slow_subscriber_wait.0;
        let commit = if wait.is_zero() {
            self.server.publish_local_paced(message, None, route)
        } else {
            let metrics = &self.server.metrics;
            let pace = self
                .pace
                .get_or_insert_with(|| Box::new(Pace::new(true, Arc::clone(metrics))));
            let commit = self
                .server
                .publish_local_paced(message, pace.collect(), route);
            pace.arm();
            commit
        };
        self.hold_output(commit);
    }

    /// Whether deliveries of this client's publish wait for room: no input is taken.
    pub(super) fn pacing(&self) -> bool {
        self.pace.as_ref().is_some_and(|pace| pace.is_waiting())
    }

    /// A publish the log refused. MQTT 5 answers it (in order, with the log's reason); 3.1.1
    /// has no negative acknowledgement, so the connection closes and the device keeps the
    /// message and retries (a QoS 0 publish refused only because the log is full is dropped).
    fn refused_publish(
        &mut self,
        topic: &str,
        error: &AppendError,
        answered: bool,
    ) -> Result<(), Exit> {
        inc(&self.server.metrics.refused);
        tracing::warn!(client_id = %self.session.client_id, topic = %topic, "publish refused by the log: {error}");
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
        self.qos2_answers = self.qos2_answers.saturating_sub(u32::from(in_qos2_set));
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
                tracing::error!(client_id = %self.session.client_id, "publish not durable: {error}");
                if self.version == ProtocolVersion::V311 {
                    return Err(Exit::Violation(
                        ReasonCode::UnspecifiedError,
                        format!("log failed: {error}"),
                    ));
                }
                ReasonCode::UnspecifiedError
            }
        };
        if let Some(bare) = bare_answer(self.version, qos, packet_id, reason)
            && self.client_max_packet >= 4
        {
            if qos == QoS::ExactlyOnce && !reason.is_success() {
                // Not taken: a resend with this packet id is a new publish.
                self.session.lock().forget_inbound_qos2(packet_id);
            }
            // Nothing to say but the packet id: its four bytes, without a packet built,
            // encoded and dropped (~250 instructions a publish).
            self.outbuf.extend_from_slice(&bare);
            return Ok(());
        }
        let mut properties = Properties::default();
        if self.problem_info
            && let Some(why) = why
        {
            properties.reason_string = MqttString::try_from(why).ok();
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
                    self.session.lock().forget_inbound_qos2(packet_id);
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
}

/// The PUBACK or PUBREC answering a QoS 1 or 2 publish, when it says nothing but its packet
/// id: always in 3.1.1 (no reason code), on success in MQTT 5 (the reason code and the
/// properties are left out, spec 3.4.2.1). A refusal's reason string is only given with a
/// refusal's reason code, so a success has no properties.
fn bare_answer(
    version: ProtocolVersion,
    qos: QoS,
    packet_id: u16,
    reason: ReasonCode,
) -> Option<[u8; 4]> {
    let first = match qos {
        QoS::AtLeastOnce => 0x40,
        QoS::ExactlyOnce => 0x50,
        QoS::AtMostOnce => return None,
    };
    let bare = version == ProtocolVersion::V311 || reason == ReasonCode::Success;
    let [high, low] = packet_id.to_be_bytes();
    (bare && packet_id != 0).then_some([first, 0x02, high, low])
}

/// Maps a decode failure to the DISCONNECT the client gets.
pub(super) fn decode_violation(err: &DecodeError) -> Exit {
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
pub(super) fn message_properties(p: &Properties) -> MessageProperties {
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

/// The packet id of the PUBACK `buf` starts with, if it is a bare one: type 4 without flags,
/// remaining length 2 (in MQTT 5: reason Success, no properties), a non-zero id. What the
/// packet decoder makes of the same four bytes in either version; anything else is left to it.
fn bare_puback(buf: &[u8]) -> Option<u16> {
    match buf {
        [0x40, 0x02, hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])).filter(|id| *id != 0),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    /// The PUBACKs taken without the decoder are exactly the four-byte ones it decodes as a
    /// PUBACK with that id and nothing else to say, in both versions, for every packet id and
    /// every other first or second byte; everything else is left to it.
    #[test]
    fn a_bare_puback_is_what_the_decoder_decodes() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for first in 0..=255u8 {
                for second in [0u8, 1, 2, 3, 4] {
                    for id in [0u16, 1, 2, 255, 256, 40_000, u16::MAX] {
                        let [hi, lo] = id.to_be_bytes();
                        let bytes = [first, second, hi, lo];
                        let mut buf = BytesMut::from(&bytes[..]);
                        let decoded = mqtt::decode(&mut buf, version, 1 << 20);
                        let plain = matches!(
                            &decoded,
                            Ok(Some(Packet::PubAck(a))) if a.reason_code == ReasonCode::Success
                                && a.properties.is_empty()
                        ) && buf.is_empty();
                        let want = plain.then_some(id);
                        assert_eq!(bare_puback(&bytes), want, "{bytes:02x?} {version:?}");
                    }
                }
            }
        }
    }

    /// The four bytes sent for an answer that says nothing but its packet id are what the
    /// codec encodes for it; an answer with something to say is left to the codec.
    #[test]
    fn a_bare_answer_is_what_the_codec_encodes() {
        let reasons = [
            ReasonCode::Success,
            ReasonCode::NotAuthorized,
            ReasonCode::QuotaExceeded,
        ];
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                for reason in reasons {
                    for packet_id in [1, 0x1234, u16::MAX] {
                        let packet = match qos {
                            QoS::ExactlyOnce => Packet::PubRec(PubRec {
                                packet_id,
                                reason_code: reason,
                                properties: Properties::default(),
                            }),
                            _ => Packet::PubAck(PubAck {
                                packet_id,
                                reason_code: reason,
                                properties: Properties::default(),
                            }),
                        };
                        let mut encoded = BytesMut::new();
                        mqtt::encode(&packet, version, &mut encoded).unwrap();
                        let bare = bare_answer(version, qos, packet_id, reason);
                        let says_more =
                            version == ProtocolVersion::V5 && reason != ReasonCode::Success;
                        assert_eq!(bare.is_none(), says_more, "{version:?} {qos:?} {reason:?}");
                        if let Some(bare) = bare {
                            assert_eq!(&bare[..], &encoded[..], "{version:?} {qos:?} {reason:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(
            bare_answer(ProtocolVersion::V5, QoS::AtMostOnce, 1, ReasonCode::Success),
            None
        );
    }
}
