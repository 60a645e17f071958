//! The protocol-neutral application message that travels from a publisher to subscribers.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use edge_proto::mqtt::QoS;
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
    /// Topic in MQTT form (`a/b/c`); shared with the record a routed publish is stored as.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    #[serde(with = "qos_byte")]
    pub qos: QoS,
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
    /// The NATS subject it was published on, if it came from NATS: always `topic`'s image
    /// under the NATS ↔ MQTT mapping, kept so that a delivery to a NATS subscriber does not
    /// map the topic back. `None` for everything else (and after a restart: not stored).
    #[serde(skip)]
    pub nats_subject: Option<Arc<str>>,
}

/// Serde for a [`QoS`] as its one-byte value (0, 1 or 2), the form state files hold; any other
/// value is a decoding error (`#[serde(with = "crate::message::qos_byte")]`).
pub mod qos_byte {
    use edge_proto::mqtt::QoS;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the QoS as a `u8`.
    pub fn serialize<S: Serializer>(qos: &QoS, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(*qos as u8)
    }

    /// Reads a `u8` and refuses anything but 0, 1 and 2.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<QoS, D::Error> {
        let value = u8::deserialize(deserializer)?;
        QoS::from_u8(value).ok_or_else(|| D::Error::custom(format!("QoS {value} is not 0, 1 or 2")))
    }
}

/// The calendar date (year, month 1–12, day 1–31, proleptic Gregorian) of `days` since
/// 1970-01-01: Howard Hinnant's `civil_from_days`, for the UTC timestamps the broker prints and
/// names files by (no date crate for two call sites).
pub fn civil_from_days(days: u64) -> (i64, i64, i64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties {
                expiry_secs: expiry,
                ..Default::default()
            },
            received_ms: 10_000,
            origin: Origin::Mqtt,
            publisher: None,
            nats_subject: None,
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

    #[test]
    fn qos_is_stored_as_the_byte_it_always_was() {
        // State files written when `qos` was a `u8` must still read, and the reverse.
        #[derive(Serialize, Deserialize)]
        struct Old {
            qos: u8,
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct New {
            #[serde(with = "qos_byte")]
            qos: QoS,
        }
        for (byte, qos) in [
            (0, QoS::AtMostOnce),
            (1, QoS::AtLeastOnce),
            (2, QoS::ExactlyOnce),
        ] {
            let old = postcard::to_allocvec(&Old { qos: byte }).unwrap();
            assert_eq!(old, postcard::to_allocvec(&New { qos }).unwrap());
            assert_eq!(postcard::from_bytes::<New>(&old).unwrap(), New { qos });
        }
        let bad = postcard::to_allocvec(&Old { qos: 3 }).unwrap();
        assert!(postcard::from_bytes::<New>(&bad).is_err());
    }
}
