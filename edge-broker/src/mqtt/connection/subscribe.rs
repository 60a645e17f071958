//! SUBSCRIBE and UNSUBSCRIBE: filters, permissions, caps, the hub, retained messages.

use std::sync::Arc;

use edge_proto::mqtt::{
    Packet, Properties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
    topic,
};

use super::state::{Connection, Exit};
use crate::hub::{Delivery, Mailbox, SubEntry};
use crate::message::now_ms;
use crate::mqtt::session::SubscriptionRecord;
use crate::router::Filter;

impl Connection {
    pub(super) fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Exit> {
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

    pub(super) fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Exit> {
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
}
