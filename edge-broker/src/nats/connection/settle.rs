//! What comes back from the log for a connection: routed publishes reach local subscribers
//! once written, PONGs once the publishes before their PING are written, and PubAcks (or
//! errors) once durable, in the order the publishes came in.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use edge_log::AppendError;
use edge_proto::mqtt::QoS;
use edge_proto::nats::{ReplySubject, ServerOp, subject};

use super::super::server::nats_message_at;
use super::state::{Connection, MsgId, Reply, ReplyBody, ReplyRoute};
use crate::ingest::{Answer, Event, Outcome};
use crate::metrics::front::{DropReason, add, inc};

impl Connection {
    /// Queues a reply known now; it leaves after the replies before it.
    pub(super) fn give_reply(&mut self, subject: ReplySubject, body: Bytes) {
        self.ingest.push_answer(Reply {
            subject,
            body: ReplyBody::Given(body),
        });
    }

    /// Takes what the ingest queue has ready: routed publishes the log wrote reach local
    /// subscribers (refusals are counted), PONGs whose publishes are written go out, then the
    /// replies that are due, in order.
    pub(super) fn take_ingest(&mut self) {
        let server = Arc::clone(&self.server);
        let metrics = &server.metrics;
        let mut stored = self.ingest.take_quiet_written();
        while let Some(event) = self.ingest.next_event() {
            match event {
                Event::Written { local, offset } => {
                    stored += 1;
                    if let Some(message) = &local.message {
                        server.publish_local(message);
                    }
                    if let Some(msg_id) = &local.remember {
                        let MsgId { stream, id } = &**msg_id;
                        // Nobody waits; the id is remembered now so a resend is not stored twice.
                        server
                            .dedup
                            .lock()
                            .insert(stream, id, offset, std::time::Instant::now());
                    }
                }
                Event::Refused { error, .. } => {
                    inc(&metrics.refused);
                    tracing::warn!(client = %self.client_id, "publish refused by the log: {error}");
                }
            }
        }
        // One atomic add for what the log wrote since the last look, not one per record.
        add(&metrics.stored, stored);
        while self
            .pongs
            .front()
            .is_some_and(|&mark| self.ingest.written_through(mark))
        {
            self.pongs.pop_front();
            self.outbox.push_op(&ServerOp::Pong);
        }
        while let Some(answer) = self.ingest.next_answer() {
            self.send_reply(answer);
        }
    }

    /// Publishes a reply that is due on its reply subject.
    pub(super) fn send_reply(&mut self, answer: Answer<Reply>) {
        let Reply { subject, body } = answer.tag;
        let body = match (body, answer.outcome) {
            (ReplyBody::Given(body), _) => body,
            (ReplyBody::PubAck { stream, msg_id }, Outcome::Durable(seq)) => {
                inc(&self.server.metrics.acks);
                if let Some(id) = msg_id.as_deref() {
                    self.server
                        .dedup
                        .lock()
                        .insert(&stream, id, seq, std::time::Instant::now());
                }
                if self.ack_bodies.capacity() < ACK_BODY_ESTIMATE {
                    self.ack_bodies.reserve(ACK_BODY_ESTIMATE * 256);
                }
                write_ack_json(&mut self.ack_bodies, &stream, seq);
                // Encoded straight from the buffer into this connection's own subscriptions
                // when they are all it reaches (the room is written over by the next one);
                // otherwise split off for the hub: PubAck bodies share one allocation.
                let acks = std::mem::take(&mut self.ack_bodies);
                let direct = self.reply_to_own(&subject, &acks);
                self.ack_bodies = acks;
                if direct {
                    self.ack_bodies.clear();
                    return;
                }
                let body = self.ack_bodies.split().freeze();
                self.publish_reply(&subject.to_shared(), body);
                return;
            }
            (ReplyBody::PubAck { .. }, Outcome::Refused(error)) => {
                let code = if matches!(error, AppendError::TooLarge { .. }) {
                    400
                } else {
                    503
                };
                error_json(code, 10077, &error.to_string())
            }
            (ReplyBody::PubAck { .. }, Outcome::NotDurable(error)) => {
                // Written but never made durable (fsync failed): never acknowledge it.
                tracing::error!(client = %self.client_id, "publish not durable: {error}");
                inc(&self.server.metrics.refused);
                error_json(503, 10077, &error.to_string())
            }
            // A PubAck is settled by the log, never given.
            (ReplyBody::PubAck { .. }, Outcome::Given) => return,
        };
        if !self.reply_to_own(&subject, &body) {
            self.publish_reply(&subject.to_shared(), body);
        }
    }

    /// Publishes a reply through the hub.
    fn publish_reply(&self, subject: &Arc<str>, body: Bytes) {
        // Server-originated (no publisher): delivered even to a publisher with echo off.
        if let Some(message) = nats_message_at(
            subject,
            None,
            None,
            body,
            None,
            QoS::AtMostOnce,
            self.now_ms,
        ) {
            self.server.publish_local(&message);
        } else {
            self.server.metrics.dropped(DropReason::UnmappableSubject);
        }
    }
}

impl Connection {
    /// Delivers a reply straight into this connection's own subscriptions when they are all
    /// the hub would deliver it to ([`ReplyRoute`]), exactly as the hub would (the same
    /// encoding, UNSUB max and output bounds); false when the hub must carry it. Only for an
    /// identity no ACL rule applies to: a guarded subscription may have its deliveries checked.
    fn reply_to_own(&mut self, subject: &ReplySubject, body: &[u8]) -> bool {
        // A decoded reply comes split after its last `.` when its last token is short (no
        // search); otherwise the last `.` is found with a byte search.
        let (head, tail) = subject.parts();
        let (prefix, last) = if tail.is_empty() {
            match head.as_bytes().iter().rposition(|&b| b == b'.') {
                Some(dot) => head.split_at(dot + 1),
                None => return false,
            }
        } else {
            (head, tail)
        };
        if !subject::is_plain_token(last) || !self.permissions.unrestricted() {
            return false;
        }
        let generation = self.server.hub.generation();
        let kept = self
            .reply_route
            .as_ref()
            .is_some_and(|route| route.generation == generation && *route.prefix == *prefix);
        if !kept {
            self.reply_route = Some(self.route_replies(prefix, generation));
        }
        let Some(own) = self.reply_route.as_ref().and_then(|r| r.own.as_ref()) else {
            return false;
        };
        // The subject whole, in a buffer the connection reuses.
        self.reply_text.clear();
        self.reply_text.push_str(prefix);
        self.reply_text.push_str(last);
        for mailbox in own {
            // Server-originated (no publisher): delivered even to a publisher with echo off.
            mailbox.push_msg(&self.reply_text, None, &[], body, None);
        }
        true
    }

    /// Asks the hub where every reply under `prefix` (ending in `.`) goes, read under hub
    /// `generation` (taken before: a change since makes the answer stale, never wrong).
    fn route_replies(&self, prefix: &str, generation: u64) -> ReplyRoute {
        let own = subject::nats_subject_to_mqtt_topic(&prefix[..prefix.len() - 1])
            .ok()
            .and_then(|topic| {
                // More subscribers than this connection has subscriptions: not all its own
                // (and what is collected stays within its subscription limit).
                let mut keys = Vec::new();
                let mut others = false;
                let same = self.server.hub.reaches_any_last(&topic, |key, _| {
                    if keys.len() < self.subs.len() {
                        keys.push(key);
                    } else {
                        others = true;
                    }
                });
                if !same || others {
                    return None;
                }
                // The hub delivers once per subscriber, in subscriber order.
                keys.sort_unstable();
                keys.dedup();
                keys.iter()
                    .map(|&key| {
                        self.subs
                            .values()
                            .find(|r| r.key == key && r.login == self.logins)
                            .map(|r| Arc::clone(&r.mailbox))
                    })
                    .collect()
            });
        ReplyRoute {
            prefix: prefix.into(),
            generation,
            own,
        }
    }
}

/// A JetStream PubAck body. Stream names are Kafka topic names (`[A-Za-z0-9._-]`, validated
/// with the routes), so they need no JSON escaping.
pub(super) fn ack_json(stream: &str, seq: u64, duplicate: bool) -> Bytes {
    let dup = if duplicate { ",\"duplicate\":true" } else { "" };
    Bytes::from(format!("{{\"stream\":\"{stream}\",\"seq\":{seq}{dup}}}"))
}

/// Typical PubAck body length (`{"stream":"<name>","seq":<offset>}`) for reserving room.
pub(super) const ACK_BODY_ESTIMATE: usize = 48;

/// Writes `{"stream":"<stream>","seq":<seq>}` (the hot path: no formatting machinery).
pub(super) fn write_ack_json(out: &mut BytesMut, stream: &str, seq: u64) {
    out.extend_from_slice(b"{\"stream\":\"");
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b"}");
}

/// A JetStream API error body (nats clients raise it from `js.publish`).
pub(super) fn error_json(code: u16, err_code: u32, description: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "error": { "code": code, "err_code": err_code, "description": description }
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_ack_body_equals_the_formatted_one() {
        let mut out = BytesMut::new();
        for seq in [0, 7, 10, 99, 12345, u64::MAX] {
            write_ack_json(&mut out, "bench-x", seq);
            assert_eq!(out.split().freeze(), ack_json("bench-x", seq, false));
        }
    }

    #[test]
    fn ack_and_error_bodies_are_jetstream_shaped() {
        assert_eq!(
            &ack_json("edge", 5, false)[..],
            br#"{"stream":"edge","seq":5}"#
        );
        let dup: serde_json::Value = serde_json::from_slice(&ack_json("s", 1, true)).unwrap();
        assert_eq!(dup["duplicate"], true);
        let err: serde_json::Value =
            serde_json::from_slice(&error_json(503, 10077, "log full")).unwrap();
        assert_eq!(err["error"]["code"], 503);
        assert_eq!(err["error"]["description"], "log full");
    }
}
