//! SUB/UNSUB: the connection's subscriptions and the hub entries they make (each with its own
//! key and [`SubMailbox`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_proto::mqtt::QoS;
use edge_proto::nats::{ServerError, Sub, Unsub};

use super::outbox::SubMailbox;
use super::state::{Connection, SubRecord};
use crate::auth::acl::SubscribeVerdict;
use crate::hub::{Mailbox, SubEntry};
use crate::metrics::front::DropReason;
use crate::router::Filter;

impl Connection {
    pub(super) fn on_sub(&mut self, sub: Sub) {
        if self.subs.contains_key(&sub.sid) {
            self.ok();
            return;
        }
        if self.subs.len() >= self.settings.max_subscriptions {
            self.outbox
                .push_raw(ServerError::MaxSubscriptionsExceeded.err_line().as_bytes());
            return;
        }
        if sub.subject.bytes().filter(|&b| b == b'.').count() >= self.settings.max_subject_tokens {
            self.outbox
                .push_raw(ServerError::InvalidSubject.err_line().as_bytes());
            return;
        }
        // Permissions are checked on the MQTT filter the subject maps to.
        let filter_text = super::super::server::hub_filter_text(&sub.subject);
        if let Some(text) = &filter_text
            && self.permissions.subscribe(text) == SubscribeVerdict::Denied
        {
            let err = ServerError::SubscribePermissionViolation(sub.subject.clone());
            self.outbox.push_raw(err.err_line().as_bytes());
            return;
        }
        let filter = filter_text
            .as_deref()
            .and_then(|text| Filter::mqtt(text).ok().map(|f| (f, text)));
        let key = self.server.next_key();
        let mailbox = Arc::new(SubMailbox {
            outbox: Arc::clone(&self.outbox),
            sid: sub.sid.clone(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        match &filter {
            Some((filter, text)) => {
                self.server.hub.subscribe(
                    filter,
                    sub.queue_group.as_deref(),
                    key,
                    SubEntry {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        id: None,
                        mailbox: self
                            .permissions
                            .guard(text, Arc::clone(&mailbox) as Arc<dyn Mailbox>),
                    },
                );
            }
            None => {
                self.server.metrics.dropped(DropReason::UnmappableSubject);
                tracing::debug!(subject = %sub.subject, "NATS subscription has no MQTT equivalent; it receives nothing");
            }
        }
        self.subs.insert(
            sub.sid,
            SubRecord {
                key,
                subject: sub.subject,
                filter: filter.map(|(filter, _)| filter),
                group: sub.queue_group,
                mailbox,
                login: self.logins,
            },
        );
        self.ok();
    }

    pub(super) fn on_unsub(&mut self, unsub: Unsub) {
        if let Some(record) = self.subs.get(&unsub.sid) {
            match unsub.max_msgs {
                Some(max) if record.mailbox.delivered.load(Ordering::Relaxed) < max => {
                    record.mailbox.max.store(max, Ordering::Relaxed);
                }
                _ => self.remove_sub(&unsub.sid),
            }
        }
        self.ok();
    }

    pub(super) fn remove_sub(&mut self, sid: &str) {
        if let Some(record) = self.subs.remove(sid)
            && let Some(filter) = &record.filter
        {
            self.server
                .hub
                .unsubscribe(filter, record.group.as_deref(), record.key);
        }
    }
}
