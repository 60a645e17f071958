//! The caps on what clients can make the broker hold (sessions, subscriptions per client,
//! retained messages), and the count of what each one refused.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::PromText;

/// A cap named after its `[mqtt]` config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_sessions`.
    Sessions,
    /// `max_subscriptions_per_client`.
    Subscriptions,
    /// `max_subscription_bytes_per_client`.
    SubscriptionBytes,
    /// `max_retained`.
    Retained,
    /// `max_retained_bytes`.
    RetainedBytes,
    /// `max_client_id_length`.
    ClientIdLength,
}

impl Limit {
    const ALL: [Limit; 6] = [
        Limit::Sessions,
        Limit::Subscriptions,
        Limit::SubscriptionBytes,
        Limit::Retained,
        Limit::RetainedBytes,
        Limit::ClientIdLength,
    ];

    /// The config key (and metric label).
    pub fn key(self) -> &'static str {
        match self {
            Limit::Sessions => "max_sessions",
            Limit::Subscriptions => "max_subscriptions_per_client",
            Limit::SubscriptionBytes => "max_subscription_bytes_per_client",
            Limit::Retained => "max_retained",
            Limit::RetainedBytes => "max_retained_bytes",
            Limit::ClientIdLength => "max_client_id_length",
        }
    }
}

impl From<super::retained::RetainedLimit> for Limit {
    fn from(l: super::retained::RetainedLimit) -> Self {
        match l {
            super::retained::RetainedLimit::Count => Limit::Retained,
            super::retained::RetainedLimit::Bytes => Limit::RetainedBytes,
        }
    }
}

/// How often each cap refused something.
#[derive(Debug, Default)]
pub struct LimitCounters {
    refused: [AtomicU64; 6],
}

impl LimitCounters {
    /// Counts one refusal by `limit`.
    pub fn refused(&self, limit: Limit) {
        self.refused[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals by `limit` so far.
    pub fn count(&self, limit: Limit) -> u64 {
        self.refused[limit as usize].load(Ordering::Relaxed)
    }

    /// Renders `edge_mqtt_limit_refusals_total{limit}`.
    pub fn render(&self, text: &mut PromText) {
        let labels: Vec<[(&str, &str); 1]> =
            Limit::ALL.iter().map(|l| [("limit", l.key())]).collect();
        let samples: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(Limit::ALL)
            .map(|(l, limit)| (&l[..], self.count(limit)))
            .collect();
        text.counter(
            "edge_mqtt_limit_refusals_total",
            "Sessions, subscriptions and retained messages refused by a cap, by its [mqtt] key.",
            &samples,
        );
    }
}

/// Memory one level of a subscription filter takes in the subscription tree, as measured
/// (about 970 bytes per level of a filter no other subscription shares; `router::tree`
/// allocates a hash map and three entry sets per node). What
/// `max_subscription_bytes_per_client` charges per level, beside the filter's text; lower it
/// when the tree gets leaner.
pub const SUBSCRIPTION_LEVEL_BYTES: u64 = 1024;

/// The memory a subscription to `filter` is charged: its text and its levels in the tree.
pub fn subscription_cost(filter: &str) -> u64 {
    let levels = filter.bytes().filter(|&b| b == b'/').count() as u64 + 1;
    filter.len() as u64 + levels * SUBSCRIPTION_LEVEL_BYTES
}

/// Whether one more subscription costing `cost` fits a client holding `count` subscriptions
/// costing `held` (`Err`: the cap that refuses it).
pub fn admit_subscription(
    count: usize,
    held: u64,
    cost: u64,
    max_count: usize,
    max_bytes: u64,
) -> Result<(), Limit> {
    if count >= max_count {
        Err(Limit::Subscriptions)
    } else if held + cost > max_bytes {
        Err(Limit::SubscriptionBytes)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_costs_its_text_and_a_kibibyte_per_level() {
        assert_eq!(subscription_cost("#"), 1 + 1024);
        assert_eq!(subscription_cost("a/b/c"), 5 + 3 * 1024);
        assert_eq!(subscription_cost("$share/g/a/+"), 12 + 4 * 1024);
    }

    #[test]
    fn subscriptions_are_capped_by_count_and_bytes() {
        assert_eq!(admit_subscription(1, 10, 5, 2, 15), Ok(()));
        assert_eq!(
            admit_subscription(2, 10, 5, 2, 100),
            Err(Limit::Subscriptions)
        );
        assert_eq!(
            admit_subscription(1, 10, 6, 2, 15),
            Err(Limit::SubscriptionBytes)
        );
    }

    #[test]
    fn refusals_render_under_their_config_key() {
        let counters = LimitCounters::default();
        counters.refused(Limit::RetainedBytes);
        counters.refused(Limit::RetainedBytes);
        let mut text = PromText::new();
        counters.render(&mut text);
        let out = text.finish();
        assert!(out.contains("edge_mqtt_limit_refusals_total{limit=\"max_retained_bytes\"} 2\n"));
        assert!(out.contains("edge_mqtt_limit_refusals_total{limit=\"max_sessions\"} 0\n"));
    }
}
