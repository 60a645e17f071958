//! The connection's bounded output ([`Outbox`]) and the hub mailbox of each subscription
//! ([`SubMailbox`]), which encodes deliveries as MSG/HMSG into it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use edge_proto::mqtt::QoS;
use edge_proto::nats::{HeaderMap, ServerOp, encode_msg, subject};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use super::super::server::NatsServer;
use crate::hub::{Delivery, Mailbox};
use crate::metrics::front::DropReason;

/// What the connection and its subscriptions write to the client.
#[derive(Debug)]
pub struct Outbox {
    pub(super) state: Mutex<OutState>,
    pub(super) wake: Notify,
    pub(super) max_pending: usize,
    /// `buf` and `writing` as last charged (see [`Outbox::charge`]): read without the lock by
    /// the connection before each op it handles.
    pub(super) pending: AtomicUsize,
    /// `nats.max_pending_total`: output of all connections together.
    pub(super) max_pending_total: u64,
    /// Hub key of the connection (publisher id, for `echo: false`).
    pub(super) conn_key: u64,
    pub(super) server: Arc<NatsServer>,
}

#[derive(Debug, Default)]
pub(super) struct OutState {
    pub(super) buf: BytesMut,
    /// Bytes taken out of `buf` and not yet written to the socket.
    pub(super) writing: usize,
    /// What `buf` and `writing` were last charged to [`NatsServer::pending_bytes`].
    pub(super) charged: usize,
    pub(super) slow: bool,
    pub(super) closed: bool,
    pub(super) echo: bool,
    pub(super) headers: bool,
    /// Subscriptions that reached their UNSUB max and must leave the hub.
    pub(super) finished: Vec<String>,
}

impl Outbox {
    pub(super) fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock()
    }

    /// Brings this outbox's share of the server's pending output, and [`Outbox::pending`], up
    /// to date (under its lock): called after every change of `buf` or `writing`.
    pub(super) fn charge(&self, state: &mut OutState) {
        let now = state.buf.len() + state.writing;
        self.pending.store(now, Ordering::Relaxed);
        let total = &self.server.pending_bytes;
        if now >= state.charged {
            total.fetch_add((now - state.charged) as u64, Ordering::Relaxed);
        } else {
            total.fetch_sub((state.charged - now) as u64, Ordering::Relaxed);
        }
        state.charged = now;
    }

    /// Queues protocol output of the connection itself (not limited: it is small and paced
    /// by the client's own ops).
    pub(super) fn push_op(&self, op: &ServerOp) {
        let mut state = self.lock();
        op.encode(&mut state.buf);
        self.charge(&mut state);
        drop(state);
        self.wake.notify_one();
    }

    /// Bytes waiting to be written to the client (as of the last change: no lock taken, so a
    /// connection checks its output bound per op without contending with its subscriptions'
    /// deliveries).
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub(super) fn push_raw(&self, bytes: &[u8]) {
        let mut state = self.lock();
        state.buf.extend_from_slice(bytes);
        self.charge(&mut state);
        drop(state);
        self.wake.notify_one();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let charged = self.state.get_mut().charged;
        self.server
            .pending_bytes
            .fetch_sub(charged as u64, Ordering::Relaxed);
    }
}

thread_local! {
    /// The NATS subject of the message being delivered (see [`SubMailbox::deliver`]).
    static SUBJECT_SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// One subscription's mailbox in the hub: encodes deliveries as MSG/HMSG into the outbox.
#[derive(Debug)]
pub(super) struct SubMailbox {
    pub(super) outbox: Arc<Outbox>,
    pub(super) sid: String,
    /// UNSUB max messages (0 = unlimited).
    pub(super) max: AtomicU64,
    pub(super) delivered: AtomicU64,
}

impl Mailbox for SubMailbox {
    fn deliver(&self, delivery: Delivery) -> bool {
        let message = &delivery.message;
        let server = &self.outbox.server;
        let reply = || {
            message
                .properties
                .response_topic
                .as_deref()
                .and_then(|t| subject::mqtt_topic_to_nats_subject(t).ok())
        };
        let push = |subject: &str| {
            self.push_msg(
                subject,
                reply().as_deref(),
                &message.properties.user_properties,
                &message.payload,
                message.publisher,
            )
        };
        // Published over NATS: its own subject. Otherwise the topic is mapped into a
        // per-thread buffer: no allocation per delivery.
        if let Some(subject) = &message.nats_subject {
            return push(subject);
        }
        SUBJECT_SCRATCH.with_borrow_mut(|subject| {
            if subject::mqtt_topic_to_nats_subject_into(&message.topic, subject).is_err() {
                server.metrics.dropped(DropReason::UnmappableSubject);
                return false;
            }
            push(subject)
        })
    }
}

impl SubMailbox {
    /// Encodes one MSG/HMSG into the outbox, within the subscription's UNSUB max and the
    /// connection's output bound (beyond it the connection is a slow consumer).
    pub(super) fn push_msg(
        &self,
        subject: &str,
        reply: Option<&str>,
        user_properties: &[(String, String)],
        payload: &[u8],
        publisher: Option<u64>,
    ) -> bool {
        let server = &self.outbox.server;
        let mut state = self.outbox.lock();
        if state.closed {
            return false;
        }
        if !state.echo && publisher == Some(self.outbox.conn_key) {
            return true;
        }
        let max = self.max.load(Ordering::Relaxed);
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if max > 0 && n > max {
            return false;
        }
        let headers = (state.headers && !user_properties.is_empty()).then(|| {
            let mut h = HeaderMap::new();
            for (k, v) in user_properties {
                h.append(k.as_str(), v.as_str());
            }
            let mut b = BytesMut::new();
            h.encode(&mut b);
            b
        });
        let size = subject.len()
            + self.sid.len()
            + reply.map_or(0, str::len)
            + headers.as_ref().map_or(0, |h| h.len())
            + payload.len()
            + 48;
        if state.buf.len() + state.writing + size > self.outbox.max_pending {
            state.slow = true;
            drop(state);
            server.metrics.dropped(DropReason::SlowConsumer);
            self.outbox.wake.notify_one();
            return false;
        }
        if server.pending_bytes.load(Ordering::Relaxed) + size as u64
            > self.outbox.max_pending_total
        {
            // All connections together hold nats.max_pending_total: this message is dropped
            // for this subscriber (it is not to blame for the others).
            drop(state);
            server.metrics.dropped(DropReason::PendingBudget);
            return false;
        }
        encode_msg(
            &mut state.buf,
            subject,
            &self.sid,
            reply,
            headers.as_deref(),
            payload,
        );
        self.outbox.charge(&mut state);
        if max > 0 && n == max {
            state.finished.push(self.sid.clone());
        }
        drop(state);
        server.metrics.sent(QoS::AtMostOnce);
        self.outbox.wake.notify_one();
        true
    }
}
