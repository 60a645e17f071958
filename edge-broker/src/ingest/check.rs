//! The permission check between decoding a publish and ingesting it: every MQTT PUBLISH, MQTT
//! will and NATS PUB/HPUB passes [`check_publish`] before it is routed, stored or delivered.
//!
//! Two rules, in order:
//! 1. the one that needs no configuration: clients may not publish into the server's `$SYS`
//!    tree or to a `$share` name (edge-proto's `topic::client_may_publish`, what Mosquitto 2
//!    refuses);
//! 2. the client's permissions from `[auth] acl_file` ([`crate::auth::Permissions`]), checked
//!    on the MQTT topic a NATS subject maps to, so that both protocols share one decision.
//!
//! A will's topic is checked against the ACL when the CONNECT carrying it is accepted (the
//! client is refused there), so a will passes with `permissions: None`.

use crate::auth::Permissions;
use edge_log::Source;
use edge_proto::mqtt::topic;
use edge_proto::nats::subject;

/// Who is publishing.
#[derive(Debug)]
pub struct Publisher<'a> {
    /// The protocol the publish came in on.
    pub source: Source,
    /// The client id (MQTT) or connection name (NATS).
    pub client_id: &'a str,
    /// What the client may publish to (`None`: no ACL check, e.g. a will checked at CONNECT).
    pub permissions: Option<&'a mut Permissions>,
}

/// Why a publish was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The topic is the server's (`$SYS/...`) or a shared-subscription name (`$share/...`).
    #[error("publishing to {topic:?} is not allowed: {first_level} topics belong to the server")]
    ReservedTopic {
        /// The topic or subject as published.
        topic: String,
        /// Its first level.
        first_level: String,
    },
    /// `[auth] acl_file` gives this client no write access to the topic.
    #[error("publishing to {topic:?} is not allowed by the ACL")]
    NotPermitted {
        /// The topic or subject as published.
        topic: String,
    },
}

impl Denied {
    /// The `reason` label of `edge_publishes_denied_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Denied::ReservedTopic { .. } => "reserved_topic",
            Denied::NotPermitted { .. } => "not_permitted",
        }
    }
}

/// Whether `publisher` may publish on `topic` (an MQTT topic name or a NATS subject, as
/// published: `$SYS.x` over NATS is the MQTT topic `$SYS/x`).
pub fn check_publish(publisher: &mut Publisher<'_>, topic: &str) -> Result<(), Denied> {
    check_reserved(publisher.source, topic)?;
    check_permitted(publisher, topic)
}

/// Rule 1 alone: whether a client of `source` may publish on `topic` at all (`$SYS`,
/// `$share`). It depends on nothing but the name, so a session may remember the answer for a
/// name it sees again; rule 2 ([`check_permitted`]) must still be asked every time.
pub fn check_reserved(source: Source, topic: &str) -> Result<(), Denied> {
    let separator = match source {
        Source::Mqtt => b'/',
        Source::Nats => b'.',
    };
    let first_level = topic::before(topic, separator);
    if !topic::client_may_publish(first_level) {
        return Err(Denied::ReservedTopic {
            topic: topic.to_owned(),
            first_level: first_level.to_owned(),
        });
    }
    Ok(())
}

/// Rule 2 alone: the client's `[auth]` permissions (their answers are cached per name by
/// [`Permissions`], which also follows ACL reloads).
pub fn check_permitted(publisher: &mut Publisher<'_>, topic: &str) -> Result<(), Denied> {
    let permitted = match (publisher.source, publisher.permissions.as_deref_mut()) {
        (_, None) => true,
        (Source::Mqtt, Some(permissions)) => permissions.may_publish(topic),
        (Source::Nats, Some(permissions)) => {
            permissions.may_publish_mapped(topic, |s| subject::nats_subject_to_mqtt_topic(s).ok())
        }
    };
    if !permitted {
        return Err(Denied::NotPermitted {
            topic: topic.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: Source, topic: &str) -> Result<(), Denied> {
        check_publish(
            &mut Publisher {
                source,
                client_id: "c",
                permissions: None,
            },
            topic,
        )
    }

    #[test]
    fn sys_and_share_are_refused_in_both_protocols() {
        for (source, topic) in [
            (Source::Mqtt, "$SYS/broker/load"),
            (Source::Mqtt, "$SYS"),
            (Source::Mqtt, "$share/g/t"),
            (Source::Nats, "$SYS.REQ.SERVER.PING"),
            (Source::Nats, "$share.g.t"),
        ] {
            let denied = check(source, topic).unwrap_err();
            assert_eq!(denied.metric_reason(), "reserved_topic");
            assert!(denied.to_string().contains(topic), "{denied}");
        }
    }

    #[test]
    fn other_topics_pass_dollar_ones_included() {
        for (source, topic) in [
            (Source::Mqtt, "sensors/1/t"),
            (Source::Mqtt, "$foo/bar"),
            (Source::Mqtt, "$SYSTEM/x"),
            (Source::Mqtt, "a/$SYS"),
            (Source::Nats, "$JS.API.STREAM.INFO.x"),
            (Source::Nats, "sensors.$SYS"),
            // An MQTT topic whose first level merely contains a dot is not `$SYS`.
            (Source::Mqtt, "$SYS.x/y"),
        ] {
            assert_eq!(check(source, topic), Ok(()), "{topic}");
        }
    }
}
