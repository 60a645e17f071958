//! The protocol-neutral application message that travels from a publisher to subscribers.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which protocol a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// MQTT 3.1.1 or 5.
    Mqtt,
    /// NATS client protocol.
    Nats,
}

/// Metadata carried with a message (MQTT 5 PUBLISH properties; NATS headers map to user properties).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageProperties {
    /// Payload format indicator: `Some(true)` = UTF-8.
    pub payload_utf8: Option<bool>,
    /// Lifetime in seconds from `received_ms`.
    pub expiry_secs: Option<u32>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic for request/response.
    pub response_topic: Option<String>,
    /// Correlation data for request/response.
    pub correlation_data: Option<Bytes>,
    /// User properties (name, value), in order.
    pub user_properties: Vec<(String, String)>,
}

/// An application message, shared by reference between all its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Topic in MQTT form (`a/b/c`).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties.
    pub properties: MessageProperties,
    /// When the broker received it (unix milliseconds).
    pub received_ms: u64,
    /// Protocol it came in on.
    pub origin: Origin,
    /// Session or connection that published it (for MQTT's No Local), if any.
    #[serde(skip)]
    pub publisher: Option<u64>,
}

/// Current wall-clock time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Message {
    /// Seconds of lifetime left at `now_ms`: `None` without an expiry, `Some(0)` when expired.
    pub fn remaining_expiry(&self, now_ms: u64) -> Option<u32> {
        let expiry = self.properties.expiry_secs?;
        let elapsed = now_ms.saturating_sub(self.received_ms) / 1000;
        Some(u32::try_from(u64::from(expiry).saturating_sub(elapsed)).unwrap_or(0))
    }

    /// Whether the message has outlived its expiry interval.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        match self.properties.expiry_secs {
            Some(expiry) => now_ms.saturating_sub(self.received_ms) >= u64::from(expiry) * 1000,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(expiry: Option<u32>) -> Message {
        Message {
            topic: "a".into(),
            payload: Bytes::new(),
            qos: 1,
            retain: false,
            properties: MessageProperties {
                expiry_secs: expiry,
                ..Default::default()
            },
            received_ms: 10_000,
            origin: Origin::Mqtt,
            publisher: None,
        }
    }

    #[test]
    fn expiry_counts_down_from_reception() {
        let m = message(Some(5));
        assert_eq!(m.remaining_expiry(10_000), Some(5));
        assert_eq!(m.remaining_expiry(12_500), Some(3));
        assert!(!m.is_expired(14_999));
        assert!(m.is_expired(15_000));
        assert_eq!(message(None).remaining_expiry(99_999), None);
        assert!(!message(None).is_expired(u64::MAX));
    }
}
