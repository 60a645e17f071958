//! The `$SYS` tree: Mosquitto's common `$SYS/broker/...` topics and our own `$SYS/edge/...`,
//! published every `mqtt.sys_interval` as retained messages, as Mosquitto does (only topics
//! whose value changed are published again; the first round publishes all).
//!
//! - `$SYS/broker/version`, `$SYS/broker/uptime` (`"N seconds"`).
//! - `$SYS/broker/clients/connected`, `.../disconnected` (persistent sessions offline),
//!   `.../total` (both).
//! - `$SYS/broker/messages/received`, `.../sent` and the same under `publish/messages/`: MQTT
//!   PUBLISH packets (Mosquitto's `messages/*` count every packet type; we count publishes).
//! - `$SYS/broker/load/{messages,publish}/{received,sent}/{1min,5min,15min}` and
//!   `$SYS/broker/load/connections/...`:
//!   Mosquitto's load averages: the per-minute rate over the last interval, smoothed
//!   exponentially with a 1, 5 or 15 minute time constant, like Unix load averages.
//! - `$SYS/edge/backlog/records`, `.../bytes`, `.../oldest_age_seconds` (what the uplink has not
//!   yet delivered), `.../budget_percent` (log bytes of `log.max_bytes`), `.../uplink`
//!   (`connecting`, `up`, `down`, `auth_failed`; `disabled` without forwarding).
//!
//! Clients cannot publish into `$SYS` ([`crate::ingest::check`]); who may read it is the ACL's
//! business (`topic read $SYS/#`), enforced at delivery like any topic. `$SYS` messages are not
//! written to the state journal: they are regenerated at start (Mosquitto does not persist them
//! either), so they cost no flash wear.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_proto::mqtt::QoS;

use crate::message::{Message, MessageProperties, Origin, now_ms};

/// The topic prefix every `$SYS` message has (and the retained store does not journal).
pub const PREFIX: &str = "$SYS/";

/// What the uplink still has to deliver, as the `$SYS/edge/backlog/...` topics show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Records not yet acknowledged upstream.
    pub records: u64,
    /// Their bytes (estimated from the mean record size).
    pub bytes: u64,
    /// Age of the oldest of them (0 when caught up).
    pub oldest_age_seconds: f64,
    /// Log bytes on disk as a percentage of `log.max_bytes`.
    pub budget_percent: f64,
    /// The uplink's state (`disabled` without forwarding).
    pub uplink: &'static str,
}

/// Where the `$SYS/edge/backlog/...` values come from (the log and the forwarder, in `app`).
pub type BacklogSource = Box<dyn Fn() -> Backlog + Send + Sync>;

/// One reading of the counters the `$SYS/broker` topics show.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Clients connected now.
    pub connected: u64,
    /// Persistent sessions whose client is not connected.
    pub disconnected: u64,
    /// PUBLISH packets received since start.
    pub received: u64,
    /// PUBLISH packets sent since start.
    pub sent: u64,
    /// Connections accepted since start.
    pub connections: u64,
}

/// Mosquitto's load average of a counter: the per-minute rate over the last interval,
/// smoothed with time constants of 1, 5 and 15 minutes.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    averages: [f64; 3],
}

/// The load averages' time constants and topic suffixes.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

impl Load {
    /// Folds in `delta` events over `seconds` (Mosquitto's `calc_load`).
    fn update(&mut self, delta: u64, seconds: f64) {
        if seconds <= 0.0 {
            return;
        }
        let rate = delta as f64 * 60.0 / seconds;
        for (average, (constant, _)) in self.averages.iter_mut().zip(WINDOWS) {
            let exponent = exp_of_negative(-seconds / constant);
            *average = rate + exponent * (*average - rate);
        }
    }
}

/// e^x for x ≤ 0 (0 below -745, where e^x is smaller than the smallest f64), within 1 ulp of
/// `f64::exp`.
///
/// Ours because `f64::exp` is libm's `exp`: with it the broker loads libm.so, ~0.5 MB of
/// every gateway's idle RSS, for this one call (tokio's `pow` is the other, see
/// `cross/build.sh`). x = k·ln 2 + r with |r| ≤ ln 2 / 2; e^r by its Taylor series to the
/// 13th power (the first one left out is below 2^-60 of the sum); 2^k from its exponent bits.
fn exp_of_negative(x: f64) -> f64 {
    if x.is_nan() || x > 0.0 {
        return f64::NAN;
    }
    if x < -745.0 {
        return 0.0;
    }
    // ln 2 in two parts (fdlibm's): k·LN2_HI is exact for the k here, so r keeps its bits.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-01
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10
    let k = (x / std::f64::consts::LN_2).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Horner's form, smallest terms first: 1 + r(1 + r/2(1 + r/3(…(1 + r/13)))).
    let mut sum = 1.0;
    for n in (1..=13).rev() {
        sum = 1.0 + r / f64::from(n) * sum;
    }
    // k ≥ -1075; a subnormal 2^k is reached in two steps, each a normal power of two.
    let k = k as i32;
    let half = k / 2;
    sum * power_of_two(half) * power_of_two(k - half)
}

/// 2^k for -1022 ≤ k ≤ 0, exactly.
fn power_of_two(k: i32) -> f64 {
    f64::from_bits(u64::from((k + 1023).unsigned_abs()) << 52)
}

/// The state of the `$SYS` publisher between rounds.
#[derive(Debug)]
pub struct SysTree {
    started: Instant,
    previous: Option<(Instant, Reading)>,
    loads: [Load; 3],
    published: HashMap<String, String>,
}

impl SysTree {
    /// A tree for a broker started at `started`.
    pub fn new(started: Instant) -> SysTree {
        SysTree {
            started,
            previous: None,
            loads: [Load::default(); 3],
            published: HashMap::new(),
        }
    }

    /// The topics and payloads to publish for a reading at `now`: every one on the first
    /// round, then only those whose value changed.
    pub fn round(
        &mut self,
        now: Instant,
        reading: Reading,
        backlog: Option<Backlog>,
    ) -> Vec<(String, String)> {
        if let Some((then, before)) = self.previous {
            let seconds = now.saturating_duration_since(then).as_secs_f64();
            let deltas = [
                reading.received.saturating_sub(before.received),
                reading.sent.saturating_sub(before.sent),
                reading.connections.saturating_sub(before.connections),
            ];
            for (load, delta) in self.loads.iter_mut().zip(deltas) {
                load.update(delta, seconds);
            }
        }
        self.previous = Some((now, reading));
        let mut values: Vec<(String, String)> = vec![
            (
                "$SYS/broker/version".to_owned(),
                format!("edge-broker version {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime".to_owned(),
                format!(
                    "{} seconds",
                    now.saturating_duration_since(self.started).as_secs()
                ),
            ),
        ];
        let counters = [
            ("clients/connected", reading.connected),
            ("clients/disconnected", reading.disconnected),
            ("clients/total", reading.connected + reading.disconnected),
            ("messages/received", reading.received),
            ("messages/sent", reading.sent),
            ("publish/messages/received", reading.received),
            ("publish/messages/sent", reading.sent),
        ];
        for (name, value) in counters {
            values.push((format!("$SYS/broker/{name}"), value.to_string()));
        }
        // Received, sent, connections: publishes are the only messages counted, so the
        // `messages` and `publish` loads are the same.
        let loads = [
            ("messages/received", 0),
            ("publish/received", 0),
            ("messages/sent", 1),
            ("publish/sent", 1),
            ("connections", 2),
        ];
        for (name, at) in loads {
            for (average, (_, window)) in self.loads[at].averages.iter().zip(WINDOWS) {
                values.push((
                    format!("$SYS/broker/load/{name}/{window}"),
                    format!("{average:.2}"),
                ));
            }
        }
        if let Some(b) = backlog {
            values.push((
                "$SYS/edge/backlog/records".to_owned(),
                b.records.to_string(),
            ));
            values.push(("$SYS/edge/backlog/bytes".to_owned(), b.bytes.to_string()));
            values.push((
                "$SYS/edge/backlog/oldest_age_seconds".to_owned(),
                format!("{:.0}", b.oldest_age_seconds),
            ));
            values.push((
                "$SYS/edge/backlog/budget_percent".to_owned(),
                format!("{:.1}", b.budget_percent),
            ));
            values.push(("$SYS/edge/backlog/uplink".to_owned(), b.uplink.to_owned()));
        }
        values.retain(|(topic, payload)| {
            if self.published.get(topic) == Some(payload) {
                return false;
            }
            self.published.insert(topic.clone(), payload.clone());
            true
        });
        values
    }
}

/// A retained `$SYS` message, QoS 0 and without an expiry (Mosquitto 2 gives them 60 s, so an
/// unchanged value vanishes for new subscribers a minute later; ours stays until replaced).
pub fn message(topic: String, payload: String) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from(payload),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: MessageProperties {
            payload_utf8: Some(true),
            ..MessageProperties::default()
        },
        received_ms: now_ms(),
        origin: Origin::Mqtt,
        publisher: None,
        nats_subject: None,
    })
}

/// `mqtt.sys_interval` as the publisher's period (`None`: disabled).
pub fn period(interval: Duration) -> Option<Duration> {
    (!interval.is_zero()).then_some(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(round: &'a [(String, String)], topic: &str) -> Option<&'a str> {
        round
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, p)| p.as_str())
    }

    #[test]
    fn the_first_round_publishes_everything_then_only_changes() {
        let start = Instant::now();
        let mut tree = SysTree::new(start);
        let reading = Reading {
            connected: 2,
            disconnected: 1,
            received: 10,
            sent: 4,
            connections: 3,
        };
        let first = tree.round(start + Duration::from_secs(5), reading, None);
        assert_eq!(value(&first, "$SYS/broker/uptime"), Some("5 seconds"));
        assert_eq!(value(&first, "$SYS/broker/clients/total"), Some("3"));
        assert_eq!(value(&first, "$SYS/broker/messages/received"), Some("10"));
        assert_eq!(
            value(&first, "$SYS/broker/load/messages/received/1min"),
            Some("0.00")
        );
        assert!(value(&first, "$SYS/broker/version").is_some_and(|v| v.starts_with("edge-broker")));
        assert!(value(&first, "$SYS/edge/backlog/records").is_none());

        let second = tree.round(start + Duration::from_secs(5), reading, None);
        assert!(second.is_empty(), "nothing changed: {second:?}");
    }

    /// Mosquitto's load: 60 messages in one minute is a rate of 60/min; the 1-minute average
    /// moves 1 - e^-1 of the way there, the 15-minute one 1 - e^-(1/15).
    #[test]
    fn load_averages_follow_mosquittos_formula() {
        let start = Instant::now();
        let mut tree = SysTree::new(start);
        tree.round(start, Reading::default(), None);
        let after = Reading {
            received: 60,
            ..Reading::default()
        };
        let round = tree.round(start + Duration::from_secs(60), after, None);
        let one = 60.0 * (1.0 - (-1.0f64).exp());
        let fifteen = 60.0 * (1.0 - (-1.0f64 / 15.0).exp());
        assert_eq!(
            value(&round, "$SYS/broker/load/messages/received/1min"),
            Some(format!("{one:.2}").as_str())
        );
        assert_eq!(
            value(&round, "$SYS/broker/load/messages/received/15min"),
            Some(format!("{fifteen:.2}").as_str())
        );
        assert!(value(&round, "$SYS/broker/load/messages/sent/1min").is_none());
    }

    /// Within 1 ulp of libm's `exp` from 0 down to where e^x leaves the normal range, and
    /// 0 past the subnormals.
    #[test]
    fn exp_of_negative_matches_libm() {
        let mut x = 0.0f64;
        while x > -708.0 {
            let (ours, libm) = (exp_of_negative(x), x.exp());
            let ulp = f64::from_bits(libm.to_bits() + 1) - libm;
            assert!((ours - libm).abs() <= ulp, "e^{x}: {ours} vs {libm}");
            x -= 0.0137;
        }
        for x in [-1.0, -1.0 / 15.0, -10.0 / 60.0, -10.0 / 900.0] {
            assert!((exp_of_negative(x) - x.exp()).abs() <= 2.0 * f64::EPSILON * x.exp());
        }
        assert_eq!(exp_of_negative(0.0), 1.0);
        assert!(exp_of_negative(-740.0) > 0.0 && exp_of_negative(-740.0) < 1e-320);
        assert_eq!(exp_of_negative(-746.0), 0.0);
        assert_eq!(exp_of_negative(f64::NEG_INFINITY), 0.0);
        assert!(exp_of_negative(1.0).is_nan() && exp_of_negative(f64::NAN).is_nan());
    }

    #[test]
    fn backlog_topics_say_what_the_uplink_still_owes() {
        let mut tree = SysTree::new(Instant::now());
        let backlog = Backlog {
            records: 1200,
            bytes: 96_000,
            oldest_age_seconds: 42.4,
            budget_percent: 12.34,
            uplink: "down",
        };
        let round = tree.round(Instant::now(), Reading::default(), Some(backlog));
        assert_eq!(value(&round, "$SYS/edge/backlog/records"), Some("1200"));
        assert_eq!(value(&round, "$SYS/edge/backlog/bytes"), Some("96000"));
        assert_eq!(
            value(&round, "$SYS/edge/backlog/oldest_age_seconds"),
            Some("42")
        );
        assert_eq!(
            value(&round, "$SYS/edge/backlog/budget_percent"),
            Some("12.3")
        );
        assert_eq!(value(&round, "$SYS/edge/backlog/uplink"), Some("down"));
    }
}
