//! What `edge-broker status` shows, computed from two looks at the broker (for the rates) and
//! rendered as a few aligned lines.
//!
//! Metric names read (all optional; a missing one leaves its part out or falls back):
//! - log: `edge_log_{bytes,segments,records,oldest_offset,next_offset,durable_end_offset}`,
//!   `edge_log_dropped_records_total`, `edge_log_corrupt_records_total`, and the budget from
//!   `edge_log_max_bytes` when the broker exports it (else the config's `log.max_bytes`);
//! - uplink: `edge_kafka_uplink_state{state}` and
//!   `edge_kafka_uplink_state_changed_timestamp_seconds` when present, else
//!   `edge_kafka_upstream_up`; `edge_kafka_replay_in_progress`;
//!   `edge_kafka_wire_bytes_total{direction}` (what the uplink carried) when present;
//! - backlog: `edge_kafka_lag_records`, `edge_kafka_lag_bytes`,
//!   `edge_kafka_oldest_unforwarded_age_seconds`;
//! - rates: `edge_log_next_offset` (ingest into the log), `edge_messages_received_total`
//!   (publishes), `edge_kafka_committed_offset` (forwarded and committed);
//! - clients: `edge_connections{protocol}`;
//! - errors: `edge_kafka_last_error_info{kind,error}` and
//!   `edge_kafka_last_error_timestamp_seconds` when present, `edge_kafka_errors_total{kind}`,
//!   `edge_kafka_dead_letters_total`, `edge_publishes_refused_total`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::scrape::{Health, Scrape};
use crate::config::ByteSize;

/// Everything one status screen says.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Where the broker was asked.
    pub addr: SocketAddr,
    /// `node` label of `edge_build_info`.
    pub node: String,
    /// `version` label of `edge_build_info`.
    pub version: String,
    /// `/healthz`.
    pub health: Health,
    /// The Kafka uplink, if the broker forwards.
    pub uplink: Option<Uplink>,
    /// The log on disk.
    pub log: LogView,
    /// Rates between the two looks, if there were two.
    pub rates: Option<Rates>,
    /// Open connections by protocol.
    pub connections: Vec<(String, f64)>,
    /// Failures.
    pub errors: Errors,
}

/// The Kafka uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    /// `up`, `down`, `connecting`, `auth_failed`.
    pub state: String,
    /// Seconds in that state, when the broker says.
    pub for_secs: Option<f64>,
    /// A backlog is being drained in full batches.
    pub replaying: bool,
    /// Records not yet acknowledged by Kafka.
    pub backlog_records: f64,
    /// Their bytes (estimated by the broker).
    pub backlog_bytes: f64,
    /// Age of the oldest of them, seconds.
    pub oldest_age_secs: f64,
    /// Bytes the uplink carried since start (sent, received), when the broker says.
    pub wire: Option<(f64, f64)>,
}

/// The log on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LogView {
    /// Segment bytes.
    pub bytes: f64,
    /// The disk budget, if known.
    pub budget: Option<f64>,
    /// Segment files.
    pub segments: f64,
    /// Records held.
    pub records: f64,
    /// Oldest offset held.
    pub oldest: f64,
    /// Next offset.
    pub next: f64,
    /// Records deleted unforwarded (log full, drop_oldest).
    pub dropped: f64,
    /// Corrupt records skipped.
    pub corrupt: f64,
}

/// Rates between two looks.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Seconds between the looks.
    pub window: f64,
    /// Records appended to the log per second.
    pub ingest: f64,
    /// Publishes received per second (routed or not).
    pub received: f64,
    /// Records forwarded (committed) per second, if the broker forwards.
    pub forward: Option<f64>,
    /// Bytes the uplink carried per second, both ways, when the broker says.
    pub wire: Option<f64>,
}

/// Failures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Errors {
    /// The last failed Kafka request (kind, message, seconds ago), when the broker says.
    pub last: Option<(String, String, Option<f64>)>,
    /// Kafka errors by kind that grew between the looks.
    pub recent: Vec<(String, f64)>,
    /// Kafka errors by kind since start (non-zero only).
    pub totals: Vec<(String, f64)>,
    /// Records dead-lettered since start.
    pub dead_letters: Option<f64>,
    /// Publishes the log refused since start.
    pub refused: Option<f64>,
}

impl View {
    /// The view of `now`, with rates against `before` when given; `budget` is the config's
    /// `log.max_bytes`, used when the broker does not export its own.
    pub fn new(
        addr: SocketAddr,
        before: Option<&Scrape>,
        now: &Scrape,
        budget: Option<u64>,
    ) -> View {
        let get = |name: &str| now.value(name).unwrap_or(0.0);
        let uplink = uplink(now);
        let rates = before.map(|before| {
            let window = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
            let rate = |name: &str| {
                match (now.value(name), before.value(name)) {
                    (Some(b), Some(a)) => (b - a).max(0.0),
                    _ => 0.0,
                }
            } / window;
            Rates {
                window,
                ingest: rate("edge_log_next_offset"),
                received: rate("edge_messages_received_total"),
                forward: uplink
                    .is_some()
                    .then(|| rate("edge_kafka_committed_offset")),
                wire: wire(now)
                    .zip(wire(before))
                    .map(|((s, r), (s0, r0))| (s + r - s0 - r0).max(0.0) / window),
            }
        });
        let kinds_now = now.by_label("edge_kafka_errors_total", "kind");
        let recent = match before {
            Some(before) => {
                let kinds_before = before.by_label("edge_kafka_errors_total", "kind");
                kinds_now
                    .iter()
                    .filter_map(|(kind, n)| {
                        let old = kinds_before
                            .iter()
                            .find(|(k, _)| k == kind)
                            .map_or(0.0, |(_, v)| *v);
                        (n - old > 0.0).then(|| (kind.clone(), n - old))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let last = now
            .samples
            .iter()
            .find(|s| s.name == "edge_kafka_last_error_info")
            .map(|s| {
                let label = |name: &str| {
                    s.labels
                        .iter()
                        .find(|(k, _)| k == name)
                        .map_or_else(String::new, |(_, v)| v.clone())
                };
                let ago = now
                    .value("edge_kafka_last_error_timestamp_seconds")
                    .map(|at| (unix_now() - at).max(0.0));
                (label("kind"), label("error"), ago)
            });
        View {
            addr,
            node: now
                .label("edge_build_info", "node")
                .unwrap_or("?")
                .to_owned(),
            version: now
                .label("edge_build_info", "version")
                .unwrap_or("?")
                .to_owned(),
            health: now.health.clone(),
            uplink,
            log: LogView {
                bytes: get("edge_log_bytes"),
                budget: now
                    .value("edge_log_max_bytes")
                    .or(budget.map(|b| b as f64).filter(|b| *b > 0.0)),
                segments: get("edge_log_segments"),
                records: get("edge_log_records"),
                oldest: get("edge_log_oldest_offset"),
                next: get("edge_log_next_offset"),
                dropped: get("edge_log_dropped_records_total"),
                corrupt: get("edge_log_corrupt_records_total"),
            },
            rates,
            connections: now.by_label("edge_connections", "protocol"),
            errors: Errors {
                last,
                recent,
                totals: kinds_now.into_iter().filter(|(_, n)| *n > 0.0).collect(),
                dead_letters: now.value("edge_kafka_dead_letters_total"),
                refused: now.value("edge_publishes_refused_total"),
            },
        }
    }

    /// True when the broker is healthy and, if it forwards, its uplink is up.
    pub fn is_good(&self) -> bool {
        self.health == Health::Healthy && self.uplink.as_ref().is_none_or(|u| u.state == "up")
    }

    /// The screen: one line per concern.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let health = match &self.health {
            Health::Healthy => "healthy".to_owned(),
            Health::NotReady(why) => format!("NOT READY: {why}"),
            Health::Unhealthy(why) => format!("UNHEALTHY: {why}"),
        };
        let _ = writeln!(
            out,
            "edge-broker {} (node {}) at http://{}/metrics: {health}",
            self.version, self.node, self.addr
        );
        let mut row = |name: &str, text: String| {
            let _ = writeln!(out, "  {name:<9}{text}");
        };
        row("uplink", self.uplink_line());
        if let Some(up) = &self.uplink {
            row(
                "backlog",
                format!(
                    "{} record(s), {}, oldest {}",
                    count(up.backlog_records),
                    bytes(up.backlog_bytes),
                    if up.backlog_records > 0.0 {
                        format!("{} old", duration(up.oldest_age_secs))
                    } else {
                        "-".to_owned()
                    }
                ),
            );
        }
        row("log", self.log_line());
        row("rates", self.rates_line());
        if let Some(drain) = self.drain_line() {
            row("drain", drain);
        }
        let clients = if self.connections.is_empty() {
            "none (no front end serves)".to_owned()
        } else {
            self.connections
                .iter()
                .map(|(p, n)| format!("{p} {}", count(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        row("clients", clients);
        row("errors", self.errors_line());
        out
    }

    fn uplink_line(&self) -> String {
        let Some(up) = &self.uplink else {
            return "no Kafka forwarder (no [[route]], or kafka.enabled = false)".to_owned();
        };
        let state = match up.state.as_str() {
            "up" => "up".to_owned(),
            "auth_failed" => "AUTH FAILED (certificate, credentials or ACLs refused)".to_owned(),
            other => other.to_ascii_uppercase(),
        };
        let mut text = state;
        if let Some(secs) = up.for_secs {
            let _ = write!(text, " for {}", duration(secs));
        }
        if up.replaying {
            text.push_str(", replaying the backlog");
        }
        if let Some((sent, received)) = up.wire {
            let _ = write!(
                text,
                "; {} sent, {} received since start",
                bytes(sent),
                bytes(received)
            );
        }
        text
    }

    fn log_line(&self) -> String {
        let log = &self.log;
        let mut text = format!(
            "{} record(s) in {} segment(s), offsets {}..{}; {} on disk",
            count(log.records),
            count(log.segments),
            count(log.oldest),
            count(log.next),
            bytes(log.bytes)
        );
        if let Some(budget) = log.budget {
            let _ = write!(
                text,
                " of {} ({:.1}% of the budget)",
                bytes(budget),
                100.0 * log.bytes / budget
            );
        }
        if log.dropped > 0.0 {
            let _ = write!(
                text,
                "; {} DROPPED unforwarded (log full)",
                count(log.dropped)
            );
        }
        if log.corrupt > 0.0 {
            let _ = write!(text, "; {} corrupt skipped", count(log.corrupt));
        }
        text
    }

    fn rates_line(&self) -> String {
        let Some(r) = &self.rates else {
            return "- (one look only)".to_owned();
        };
        let mut text = format!(
            "ingest {} rec/s into the log ({} msg/s received)",
            rate(r.ingest),
            rate(r.received)
        );
        if let Some(forward) = r.forward {
            let _ = write!(text, ", forward {} rec/s to Kafka", rate(forward));
        }
        if let Some(wire) = r.wire {
            let _ = write!(text, " (uplink {}/s)", bytes(wire));
        }
        let _ = write!(text, ", over {:.1}s", r.window);
        text
    }

    /// Time to drain the backlog, or to fill the budget when it grows.
    fn drain_line(&self) -> Option<String> {
        let up = self.uplink.as_ref()?;
        let r = self.rates.as_ref()?;
        let forward = r.forward?;
        if up.backlog_records <= 0.0 {
            return Some("caught up".to_owned());
        }
        let net = forward - r.ingest;
        if net > 0.0 {
            return Some(format!(
                "ETA {} at the current rates",
                duration(up.backlog_records / net)
            ));
        }
        let mut text = if up.state == "up" {
            "not shrinking at the current rates".to_owned()
        } else {
            "not draining while the uplink is down".to_owned()
        };
        let growth = -net;
        let log = &self.log;
        if let Some(budget) = log.budget
            && growth > 0.0
            && log.records > 0.0
        {
            let per_record = log.bytes / log.records;
            let left = (budget - log.bytes).max(0.0);
            let _ = write!(
                text,
                "; the budget is full in {} at +{} rec/s",
                duration(left / (growth * per_record)),
                rate(growth)
            );
        }
        Some(text)
    }

    fn errors_line(&self) -> String {
        let e = &self.errors;
        let mut parts = Vec::new();
        match (&e.last, e.recent.is_empty()) {
            (Some((kind, message, ago)), _) => {
                let ago = ago.map_or_else(String::new, |s| format!(", {} ago", duration(s)));
                parts.push(format!("last: {kind}: {message}{ago}"));
            }
            (None, false) => parts.push(format!(
                "now: {}",
                e.recent
                    .iter()
                    .map(|(k, n)| format!("{k} x{}", count(*n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (None, true) => {}
        }
        if !e.totals.is_empty() {
            parts.push(format!(
                "Kafka since start: {}",
                e.totals
                    .iter()
                    .map(|(k, n)| format!("{k} {}", count(*n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(n) = e.dead_letters.filter(|n| *n > 0.0) {
            parts.push(format!(
                "{} dead letter(s) (`edge-broker log dead-letters`)",
                count(n)
            ));
        }
        if let Some(n) = e.refused.filter(|n| *n > 0.0) {
            parts.push(format!("{} publish(es) refused by the log", count(n)));
        }
        if parts.is_empty() {
            return "none".to_owned();
        }
        parts.join("; ")
    }
}

/// The uplink from the bridge's state gauges, or from `edge_kafka_upstream_up`.
fn uplink(now: &Scrape) -> Option<Uplink> {
    let states = now.by_label("edge_kafka_uplink_state", "state");
    let state = match states.iter().find(|(_, v)| *v >= 1.0) {
        Some((state, _)) => state.clone(),
        None => match now.value("edge_kafka_upstream_up")? {
            v if v >= 1.0 => "up".to_owned(),
            _ => "down".to_owned(),
        },
    };
    let for_secs = now
        .value("edge_kafka_uplink_state_changed_timestamp_seconds")
        .filter(|at| *at > 0.0)
        .map(|at| (unix_now() - at).max(0.0));
    Some(Uplink {
        state,
        for_secs,
        replaying: now
            .value("edge_kafka_replay_in_progress")
            .is_some_and(|v| v >= 1.0),
        backlog_records: now.value("edge_kafka_lag_records").unwrap_or(0.0),
        backlog_bytes: now.value("edge_kafka_lag_bytes").unwrap_or(0.0),
        oldest_age_secs: now
            .value("edge_kafka_oldest_unforwarded_age_seconds")
            .unwrap_or(0.0),
        wire: wire(now),
    })
}

/// `edge_kafka_wire_bytes_total`: (sent, received), if the broker exports it.
fn wire(look: &Scrape) -> Option<(f64, f64)> {
    let directions = look.by_label("edge_kafka_wire_bytes_total", "direction");
    let get = |d: &str| directions.iter().find(|(k, _)| k == d).map(|(_, v)| *v);
    get("sent").zip(get("received"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A whole count with thousands separators.
fn count(n: f64) -> String {
    let n = n.max(0.0).round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: f64) -> String {
    ByteSize(n.max(0.0).round() as u64).human()
}

/// A per-second rate: one decimal below 100, whole above.
fn rate(per_sec: f64) -> String {
    if per_sec >= 100.0 {
        count(per_sec)
    } else {
        format!("{per_sec:.1}")
    }
}

/// `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "a long time".to_owned();
    }
    let d = Duration::from_secs_f64(secs.max(0.0));
    let s = d.as_secs();
    match s {
        0 => "<1s".to_owned(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::scrape::parse;
    use std::time::Instant;

    /// A named fake: two looks 2 s apart at a broker whose uplink is down.
    fn looks(extra_before: &str, extra_now: &str) -> (Scrape, Scrape) {
        let base = "edge_build_info{version=\"0.1.0\",node=\"gw-1\"} 1\n\
                    edge_log_bytes 1048576\nedge_log_segments 2\nedge_log_records 1000\n\
                    edge_log_oldest_offset 0\nedge_connections{protocol=\"mqtt\"} 3\n\
                    edge_connections{protocol=\"nats\"} 1\n";
        let at = Instant::now();
        let before = Scrape {
            at,
            health: Health::Healthy,
            samples: parse(&format!("{base}{extra_before}")),
        };
        let now = Scrape {
            at: at + Duration::from_secs(2),
            health: Health::Healthy,
            samples: parse(&format!("{base}{extra_now}")),
        };
        (before, now)
    }

    #[test]
    fn a_down_uplink_shows_backlog_growth_time_to_full_and_the_errors_now() {
        let (before, now) = looks(
            "edge_log_next_offset 980\nedge_kafka_committed_offset 500\n\
             edge_kafka_upstream_up 0\nedge_kafka_errors_total{kind=\"unreachable\"} 10\n",
            "edge_log_next_offset 1000\nedge_kafka_committed_offset 500\n\
             edge_kafka_upstream_up 0\nedge_kafka_lag_records 500\nedge_kafka_lag_bytes 524288\n\
             edge_kafka_oldest_unforwarded_age_seconds 192\n\
             edge_kafka_errors_total{kind=\"unreachable\"} 14\n",
        );
        let addr = "127.0.0.1:9100".parse().unwrap();
        let view = View::new(addr, Some(&before), &now, Some(2 << 30));
        assert!(!view.is_good());
        let text = view.render();
        for want in [
            "edge-broker 0.1.0 (node gw-1) at http://127.0.0.1:9100/metrics: healthy",
            "uplink   DOWN",
            "backlog  500 record(s), 512.0 KiB, oldest 3m 12s old",
            "1.0 MiB on disk of 2.0 GiB (0.0% of the budget)",
            "ingest 10.0 rec/s into the log",
            "forward 0.0 rec/s to Kafka",
            "not draining while the uplink is down; the budget is full in",
            "clients  mqtt 3, nats 1",
            "now: unreachable x4; Kafka since start: unreachable 14",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn a_broker_that_does_not_store_publishes_is_not_good_and_says_why() {
        let (before, mut now) = looks("", "");
        now.health = Health::NotReady("the log does not store publishes now: full".to_owned());
        let view = View::new("127.0.0.1:9100".parse().unwrap(), Some(&before), &now, None);
        assert!(!view.is_good());
        assert!(
            view.render()
                .contains("metrics: NOT READY: the log does not store publishes now: full"),
            "{}",
            view.render()
        );
    }

    #[test]
    fn a_draining_backlog_has_an_eta_and_the_bridge_state_gauges_win() {
        let (before, now) = looks(
            "edge_log_next_offset 1000\nedge_kafka_committed_offset 100\n\
             edge_kafka_wire_bytes_total{direction=\"sent\"} 0\n\
             edge_kafka_wire_bytes_total{direction=\"received\"} 0\n",
            "edge_log_next_offset 1010\nedge_kafka_committed_offset 310\nedge_kafka_upstream_up 0\n\
             edge_kafka_wire_bytes_total{direction=\"sent\"} 1048576\n\
             edge_kafka_wire_bytes_total{direction=\"received\"} 65536\n\
             edge_kafka_uplink_state{state=\"connecting\"} 0\nedge_kafka_uplink_state{state=\"up\"} 1\n\
             edge_kafka_replay_in_progress 1\nedge_kafka_lag_records 700\n\
             edge_kafka_last_error_info{kind=\"unreachable\",error=\"connection refused\"} 1\n",
        );
        let view = View::new("127.0.0.1:9100".parse().unwrap(), Some(&before), &now, None);
        assert!(view.is_good(), "{view:?}");
        let text = view.render();
        for want in [
            "uplink   up, replaying the backlog; 1.0 MiB sent, 64.0 KiB received since start",
            "forward 105 rec/s to Kafka (uplink 544.0 KiB/s)",
            "ETA 7s at the current rates",
            "last: unreachable: connection refused",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn without_a_forwarder_or_a_second_look() {
        let (_, now) = looks("", "");
        let text = View::new("127.0.0.1:9100".parse().unwrap(), None, &now, None).render();
        assert!(text.contains("no Kafka forwarder"), "{text}");
        assert!(text.contains("rates    - (one look only)"), "{text}");
        assert!(!text.contains("drain"), "{text}");
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(count(12.0), "12");
        assert_eq!(duration(192.0), "3m 12s");
        assert_eq!(duration(0.4), "<1s");
        assert_eq!(duration(7322.0), "2h 2m");
        assert_eq!(duration(90_000.0), "1d 1h");
    }
}
