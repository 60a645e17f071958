//! PUB/HPUB: what the subject allows ([`SubjectFacts`], the ACL), plain publishes delivered
//! at once, routed publishes queued for the log (with their dedup and stream checks).

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use edge_log::{RecordFields, Source};
use edge_proto::mqtt::QoS;
use edge_proto::nats::{HeaderMap, Pub, ServerError, encode_msg, peek_repeated_pub, subject};

use super::super::server::{nats_message, nats_message_at};
use super::facts::{Local, SubjectFacts};
use super::settle::{ack_json, error_json};
use super::state::{Connection, Exit, MsgId, Reply, ReplyBody, Written};
use crate::ingest::{self, Publisher};
use crate::message::now_ms;
use crate::metrics::front::{DropReason, inc};

/// Header naming a message id for duplicate detection (JetStream's).
pub(super) const MSG_ID: &str = "Nats-Msg-Id";
/// Header asking that the message lands in a given stream (JetStream's).
pub(super) const EXPECTED_STREAM: &str = "Nats-Expected-Stream";

impl Connection {
    pub(super) fn on_pub(&mut self, publish: Pub) -> Result<(), Exit> {
        self.received += 1;
        self.last_pub_replied = publish.reply.is_some();
        let headers_ok = self.connect.as_ref().is_some_and(|c| c.headers);
        if publish.headers.is_some() && !headers_ok {
            // nats-server closes without -ERR on HPUB from a client that did not ask for headers.
            return Err(Exit::Violation(
                "HPUB without headers in CONNECT".to_owned(),
            ));
        }
        // One test per PUB: the decoder hands out the same `Arc` while the subject repeats, and
        // what depends on the subject alone was decided for it already.
        let facts = match &mut self.subject_facts {
            Some(facts) if Arc::ptr_eq(&facts.subject, &publish.subject) => facts,
            facts => facts.insert(SubjectFacts::of(&publish.subject)),
        };
        let pedantic = self.connect.as_ref().is_some_and(|c| c.pedantic);
        let valid = facts.valid;
        if !valid && pedantic {
            self.outbox
                .push_raw(ServerError::InvalidPublishSubject.err_line().as_bytes());
            return Ok(());
        }
        // The ACL allowed this subject under rules no reload has replaced since: the same
        // answer again, for one atomic load. A refusal is never kept (it is counted each time).
        let checked = match &facts.reserved {
            Some(denied) => Err(denied.clone()),
            None if facts
                .permitted
                .is_some_and(|generation| self.permissions.is_current(generation)) =>
            {
                Ok(())
            }
            None => {
                let mut publisher = Publisher {
                    source: Source::Nats,
                    client_id: &self.client_id,
                    permissions: Some(&mut self.permissions),
                };
                let checked = ingest::check_permitted(&mut publisher, &publish.subject);
                facts.permitted = checked
                    .is_ok()
                    .then(|| self.permissions.checked_generation());
                checked
            }
        };
        if let Err(denied) = checked {
            // As nats-server for a subject outside the publish permissions: -ERR, no +OK, the
            // connection stays; nothing is stored or delivered.
            self.server.metrics.denied(&denied);
            tracing::debug!(client = %self.client_id, "publish denied: {denied}");
            self.outbox.push_raw(
                ServerError::PublishPermissionViolation(publish.subject.to_string())
                    .err_line()
                    .as_bytes(),
            );
            return Ok(());
        }
        let header_map = publish
            .headers
            .as_deref()
            .and_then(|h| HeaderMap::decode(h).ok());
        if valid && self.is_routed(&publish.subject) {
            self.routed_pub(publish, header_map);
        } else {
            // nats-server acknowledges (+OK) before it delivers.
            self.ok();
            self.plain_pub(&publish, header_map.as_ref());
        }
        Ok(())
    }

    /// Stores the PUB at the start of the read buffer without building it, if it is the
    /// common one: the last PUB's subject again, no reply, no headers, and that subject's facts
    /// (all current) say it is valid, allowed, routed, and wanted by no local subscriber. Then
    /// it is what [`Connection::on_pub`] would do with it (counted, encoded into the ingest
    /// queue as a quiet record, `+OK` if verbose) without the decoder's `Pub`: no reference
    /// count taken on its subject or on the read buffer. Returns whether it consumed one.
    pub(super) fn store_repeated_pub(&mut self) -> bool {
        if self.last_pub_replied {
            return false;
        }
        let Some(facts) = &self.subject_facts else {
            return false;
        };
        let current = self.connect.is_some()
            && self
                .last_subject
                .get()
                .is_some_and(|last| Arc::ptr_eq(last, &facts.subject))
            && facts.valid
            && facts.reserved.is_none()
            && facts
                .permitted
                .is_some_and(|generation| self.permissions.is_current(generation))
            && facts.local == Some((self.server.hub.generation(), Local::Nobody));
        let destination = match &facts.route {
            Some((generation, Some(destination)))
                if current && *generation == self.server.routes.generation() =>
            {
                destination
            }
            _ => return false,
        };
        let Some(found) = peek_repeated_pub(&self.inbuf, &self.limits, &self.last_subject) else {
            return false;
        };
        self.received += 1;
        if self.clock_stale {
            self.now_ms = now_ms();
            self.clock_stale = false;
        }
        let record = RecordFields {
            timestamp_ms: self.now_ms,
            source: Source::Nats,
            topic: &facts.subject,
            client_id: &self.client_id,
            destination,
            payload: &self.inbuf[found.payload],
        };
        let local = Written {
            message: None,
            remember: None,
        };
        self.ingest
            .push_routed_quiet(record, std::iter::empty(), local, None);
        self.inbuf.advance(found.len);
        self.ok();
        true
    }

    /// A publish that is not stored: deliver, and answer "no responders" if asked and nobody got it.
    /// Nothing is built for a subject nobody subscribes to (the answer kept per hub generation).
    pub(super) fn plain_pub(&mut self, publish: &Pub, headers: Option<&HeaderMap>) {
        let local = self.local_subscribers(&publish.subject);
        // The reply subject whole, in a buffer the connection reuses.
        self.reply_text.clear();
        if let Some(reply) = &publish.reply {
            reply.write_to(&mut self.reply_text);
        }
        let reply = publish.reply.as_ref().map(|_| self.reply_text.as_str());
        let delivered = match local {
            Local::Unmappable => {
                self.server.metrics.dropped(DropReason::UnmappableSubject);
                0
            }
            Local::Nobody => 0,
            Local::Someone => nats_message(
                &publish.subject,
                reply,
                headers,
                publish.payload.clone(),
                Some(self.conn_key),
                QoS::AtMostOnce,
            )
            .map_or(0, |message| self.server.publish_local(&message).delivered),
        };
        let wants_503 = self
            .connect
            .as_ref()
            .is_some_and(|c| c.no_responders && c.headers);
        if delivered == 0
            && wants_503
            && let Some(reply) = reply
        {
            self.no_responders(reply);
        }
    }

    /// nats-server's "no responders": an HMSG with status 503 to the requester's own
    /// subscriptions on the reply subject.
    pub(super) fn no_responders(&self, reply: &str) {
        let mut block = BytesMut::new();
        HeaderMap::with_status(503, None).encode(&mut block);
        let mut state = self.outbox.lock();
        for record in self.subs.values() {
            if subject::matches(&record.subject, reply) {
                encode_msg(
                    &mut state.buf,
                    reply,
                    &record.mailbox.sid,
                    None,
                    Some(&block),
                    &[],
                );
            }
        }
        self.outbox.charge(&mut state);
        drop(state);
        self.outbox.wake.notify_one();
    }

    /// Whether a publish on `subject` (the last PUB's, in [`SubjectFacts`]) is stored: where
    /// it goes upstream is then in the facts (kept while the route table stays the same:
    /// publishers tend to repeat the subject; the key may depend on the client id, so CONNECT
    /// forgets it). A routed PUB borrows the destination from there: no reference count is
    /// taken per PUB.
    pub(super) fn is_routed(&mut self, subject: &str) -> bool {
        let generation = self.server.routes.generation();
        // `on_pub` made the facts of this PUB's subject before it asks.
        let Some(facts) = &mut self.subject_facts else {
            return false;
        };
        match &facts.route {
            Some((g, destination)) if *g == generation => destination.is_some(),
            _ => {
                let destination = self.server.destination(subject, &self.client_id);
                let routed = destination.is_some();
                facts.route = Some((generation, destination));
                routed
            }
        }
    }

    /// Whether a publish on `subject` (the last PUB's) would reach a local subscriber (kept
    /// while the hub's subscriptions stay the same). Publishes nobody subscribes to are stored
    /// (if routed) or dropped without building a message for local delivery.
    pub(super) fn local_subscribers(&mut self, subject: &str) -> Local {
        let hub = &self.server.hub;
        let generation = hub.generation();
        if let Some(facts) = &self.subject_facts
            && let Some((g, local)) = facts.local
            && g == generation
        {
            return local;
        }
        let local = match subject::nats_subject_to_mqtt_topic(subject) {
            Err(_) => Local::Unmappable,
            Ok(topic) if hub.has_subscribers(&topic) => Local::Someone,
            Ok(_) => Local::Nobody,
        };
        if let Some(facts) = &mut self.subject_facts {
            facts.local = Some((generation, local));
        }
        local
    }

    /// A PUB [`Connection::is_routed`] found stored: checked against the dedup window and
    /// the expected stream, then encoded into the ingest queue.
    pub(super) fn routed_pub(&mut self, publish: Pub, headers: Option<HeaderMap>) {
        // Asked before the destination is borrowed from the facts (it updates them).
        let someone = self.local_subscribers(&publish.subject) == Local::Someone;
        // Where `is_routed` found it (nothing between changed the facts' route).
        let Some(SubjectFacts {
            route: Some((_, Some(destination))),
            ..
        }) = &self.subject_facts
        else {
            return;
        };
        // The stream is named by the destination; it is shared (an atomic increment) only
        // where an answer or a dedup entry keeps it: a core PUB takes none.
        let stream = &*destination.topic;
        let msg_id = headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID))
            .map(str::to_owned);
        if let Some(expected) = headers.as_ref().and_then(|h| h.get(EXPECTED_STREAM))
            && expected != stream
        {
            if let Some(reply) = publish.reply {
                let body = error_json(400, 10060, "expected stream does not match");
                self.give_reply(reply, body);
            }
            self.ok();
            return;
        }
        if let Some(id) = msg_id.as_deref() {
            let seen = self
                .server
                .dedup
                .lock()
                .get(stream, id, std::time::Instant::now());
            if let Some(seq) = seen {
                inc(&self.server.metrics.duplicates);
                if let Some(reply) = publish.reply {
                    let body = ack_json(stream, seq, true);
                    self.give_reply(reply, body);
                }
                self.ok();
                return;
            }
        }
        // Subscribers get the message without the reply subject: that reply belongs to the
        // durable acknowledgement.
        if self.clock_stale {
            self.now_ms = now_ms();
            self.clock_stale = false;
        }
        let message = if someone {
            nats_message_at(
                &publish.subject,
                None,
                headers.as_ref(),
                publish.payload.clone(),
                Some(self.conn_key),
                QoS::AtLeastOnce,
                self.now_ms,
            )
        } else {
            None
        };
        let (remember, reply) = match publish.reply {
            Some(subject) => (
                None,
                Some(Reply {
                    subject,
                    body: ReplyBody::PubAck {
                        stream: Arc::clone(&destination.topic),
                        msg_id,
                    },
                }),
            ),
            None => (
                msg_id.map(|id| {
                    Box::new(MsgId {
                        stream: Arc::clone(&destination.topic),
                        id,
                    })
                }),
                None,
            ),
        };
        // Encoded here, into the connection's batch: nothing of this PUB (its shared
        // subject, client id, payload) is handed to the log's writer thread.
        let record = RecordFields {
            timestamp_ms: self.now_ms,
            source: Source::Nats,
            topic: &publish.subject,
            client_id: &self.client_id,
            destination,
            payload: &publish.payload,
        };
        let headers = ingest::record::nats_headers(headers.as_ref());
        let local = Written { message, remember };
        if local.message.is_none() && local.remember.is_none() {
            // Nothing to deliver or remember once it is written: no event, only the count.
            self.ingest.push_routed_quiet(record, headers, local, reply);
        } else {
            self.ingest.push_routed(record, headers, local, reply);
        }
        self.ok();
    }
}
