//! What `edge-broker check` prints for a valid configuration: what the broker will do with it,
//! at a glance — listeners, the log's budget and durability, the Kafka uplink, the memory its
//! limits allow at worst, every route —
//! and the warnings an operator must not miss (nothing stored, acknowledgements before fsync).

use std::fmt::Write as _;

use edge_bridge::dead_letter::DeadLetterSink;
use edge_log::{FsyncPolicy, WhenFull};

use super::{Config, LONG_FSYNC_INTERVAL};

/// The summary lines (the first is `<origin>: ok (...)`), without warnings.
pub fn summary(config: &Config, origin: &str) -> String {
    let mut out = format!(
        "{origin}: ok (node {}, data in {})\n",
        config.node.id,
        config.node.data_dir.display()
    );
    let row = |out: &mut String, name: &str, text: &str| {
        let _ = writeln!(out, "  {name:<9}{text}");
    };
    row(&mut out, "listen", &listeners(config));
    row(&mut out, "log", &log_line(config));
    row(&mut out, "kafka", &kafka_line(config));
    row(&mut out, "memory", &memory_line(config));
    let routes = &config.routes;
    if routes.is_empty() {
        row(
            &mut out,
            "routes",
            "none: publishes reach local subscribers only; nothing is stored or forwarded (add [[route]] entries)",
        );
    } else {
        row(
            &mut out,
            "routes",
            &format!("{} (tried in order, the first match wins):", routes.len()),
        );
        let filters: Vec<String> = routes
            .iter()
            .map(|r| match (&r.mqtt, &r.nats) {
                (Some(f), _) => format!("mqtt {f}"),
                (None, Some(p)) => format!("nats {p}"),
                (None, None) => String::new(),
            })
            .collect();
        let width = filters.iter().map(String::len).max().unwrap_or(0);
        for (i, (route, filter)) in routes.iter().zip(&filters).enumerate() {
            let mut line = format!(
                "    route[{}]  {filter:<width$} -> {}",
                i + 1,
                route.kafka_topic
            );
            match (&route.key, route.partition) {
                (_, Some(p)) => {
                    let _ = write!(line, ", partition {p}");
                }
                (Some(key), None) => {
                    let _ = write!(line, ", key {key}");
                }
                (None, None) => line.push_str(", no key"),
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Warnings about settings that give up part of the promise or do nothing useful.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = super::deprecations(config);
    if config.routes.is_empty() {
        warnings
            .push("no [[route]]: nothing is stored in the log or forwarded to Kafka".to_owned());
    }
    match config.log.fsync {
        FsyncPolicy::Never => warnings.push(
            "log.fsync = \"never\": devices are acknowledged before their events are on disk; a power cut can lose acknowledged events"
                .to_owned(),
        ),
        FsyncPolicy::Interval(interval) if interval > LONG_FSYNC_INTERVAL => warnings.push(format!(
            "log.fsync interval {interval:?}: devices are acknowledged up to that long before their events are on disk"
        )),
        _ => {}
    }
    if !config.metrics.enabled {
        warnings.push(
            "metrics.enabled = false: `edge-broker status` and Prometheus cannot see this broker"
                .to_owned(),
        );
    }
    warnings
}

fn listeners(config: &Config) -> String {
    let mut parts = Vec::new();
    if config.mqtt.enabled {
        parts.push(format!("mqtt {}", config.mqtt.listen));
        if let Some(tls) = config.mqtt.tls_listen {
            let mutual = if config.mqtt.tls_client_ca.is_some() {
                " (client certificates required)"
            } else {
                ""
            };
            parts.push(format!("mqtt+tls {tls}{mutual}"));
        }
        let path = &config.mqtt.ws_path;
        if let Some(ws) = config.mqtt.ws_listen {
            parts.push(format!("mqtt+ws ws://{ws}{path}"));
        }
        if let Some(wss) = config.mqtt.ws_tls_listen {
            parts.push(format!("mqtt+wss wss://{wss}{path}"));
        }
    }
    if config.nats.enabled {
        let tls = if config.nats.tls_cert.is_some() {
            " (TLS required)"
        } else {
            ""
        };
        parts.push(format!("nats {}{tls}", config.nats.listen));
    }
    if config.metrics.enabled {
        parts.push(format!("metrics http://{}/metrics", config.metrics.listen));
    }
    if parts.is_empty() {
        return "nothing (every listener is disabled)".to_owned();
    }
    parts.join(", ")
}

fn log_line(config: &Config) -> String {
    let log = &config.log;
    let fsync = match log.fsync {
        FsyncPolicy::Always => "fsync always: devices are acknowledged after fdatasync".to_owned(),
        FsyncPolicy::Interval(interval) => format!(
            "fsync every {interval:?}: devices are acknowledged after the periodic sync that covers their event (acks wait up to {interval:?} longer; fewer syncs, fewer flash writes)"
        ),
        FsyncPolicy::Never => {
            "fsync never: devices are acknowledged before their events are on disk".to_owned()
        }
    };
    let full = match log.when_full {
        WhenFull::Block => "block (stop reading from publishers, withhold acks)",
        WhenFull::DropOldest => "drop_oldest (delete the oldest unforwarded segment)",
        WhenFull::Reject => "reject (refuse new events)",
    };
    // What each sync writes besides the events (README, flash wear).
    let writes = match (log.sector_writes, log.preallocate) {
        (true, _) => "; sector writes (new bytes as whole 512-byte sectors, zeros ahead)",
        (false, true) => {
            "; zeros 1 MiB ahead while syncs are small (preallocate: no journal write per sync)"
        }
        (false, false) => {
            "; no zeros ahead (preallocate = false: each sync also commits the file system's journal)"
        }
    };
    format!(
        "{} budget in {} segments at {}; {fsync}{writes}; when full: {full}",
        log.max_bytes,
        log.segment_bytes,
        config.log_dir().display()
    )
}

/// The memory budget's worst case against the packaged unit's `MemoryMax`: what an operator
/// sizing a small gateway needs (the warnings name the largest rows when it does not fit).
fn memory_line(config: &Config) -> String {
    let total = super::budget::worst_case(config) >> 20;
    let max = super::budget::MEMORY_MAX >> 20;
    let fits = if total <= max { "within" } else { "above" };
    format!(
        "at worst {total} MiB with every limit reached at once, {fits} the packaged unit's MemoryMax={max}M (README, \"The memory budget\")"
    )
}

fn kafka_line(config: &Config) -> String {
    let k = &config.kafka;
    if !k.enabled {
        return "off (kafka.enabled = false): routed events stay in the log".to_owned();
    }
    let mut text = format!(
        "{} ({} compression, {}{})",
        k.brokers.join(", "),
        k.compression,
        if k.idempotent {
            "idempotent"
        } else {
            "not idempotent"
        },
        if k.tls { ", TLS" } else { "" }
    );
    if config.routes.is_empty() {
        text.push_str(": unused until a [[route]] exists");
        return text;
    }
    match config.forward_config().dead_letter {
        DeadLetterSink::File(path) => {
            let _ = write!(text, "; dead letters to {}", path.display());
        }
        DeadLetterSink::Topic(topic) => {
            let _ = write!(text, "; dead letters to Kafka topic {topic}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn summary_names_listeners_budget_routes_and_brokers() {
        let config = Config::parse(
            "[node]\nid = \"gw-7\"\ndata_dir = \"/d\"\n[log]\nmax_bytes = \"1GiB\"\n\
             [mqtt]\nlisten = \"0.0.0.0:1883\"\nws_listen = \"127.0.0.1:8083\"\n[kafka]\nbrokers = [\"k1:9092\"]\n\
             [[route]]\nmqtt = \"sensors/+/temperature\"\nkafka_topic = \"temp\"\nkey = \"{topic.2}\"\n\
             [[route]]\nnats = \"alarms.>\"\nkafka_topic = \"alarms\"\npartition = 0\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let text = summary(&config, "t.toml");
        for want in [
            "t.toml: ok (node gw-7, data in /d)",
            "mqtt 0.0.0.0:1883",
            "mqtt+ws ws://127.0.0.1:8083/mqtt",
            "nats 127.0.0.1:4222",
            "metrics http://127.0.0.1:9100/metrics",
            "1GiB budget in 64MiB segments at /d/log; fsync always",
            "zeros 1 MiB ahead while syncs are small (preallocate",
            "when full: block",
            "k1:9092 (lz4 compression, idempotent); dead letters to /d/dead-letter",
            "memory   at worst 741 MiB with every limit reached at once, within the packaged unit's MemoryMax=744M",
            "routes   2 (tried in order",
            "route[1]  mqtt sensors/+/temperature -> temp, key {topic.2}",
            "route[2]  nats alarms.>              -> alarms, partition 0",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(warnings(&config).is_empty());
    }

    #[test]
    fn the_log_line_says_what_a_sync_writes_besides_the_events() {
        for (log, want) in [
            ("", "; zeros 1 MiB ahead while syncs are small"),
            (
                "preallocate = false",
                "; no zeros ahead (preallocate = false",
            ),
            (
                "sector_writes = true",
                "; sector writes (new bytes as whole 512-byte sectors",
            ),
        ] {
            let config = Config::parse(&format!("[log]\n{log}\n"), Path::new("t.toml")).unwrap();
            let text = summary(&config, "t.toml");
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn no_routes_is_said_plainly() {
        let config = Config::parse("", Path::new("t.toml")).unwrap();
        let text = summary(&config, "t.toml");
        assert!(text.contains("nothing is stored or forwarded"), "{text}");
        assert!(text.contains("unused until a [[route]] exists"), "{text}");
        assert!(warnings(&config)[0].contains("no [[route]]"));
    }

    /// Limits beyond the unit are said in the summary too, not only in the warnings.
    #[test]
    fn memory_above_the_unit_is_said() {
        let config =
            Config::parse("[mqtt]\nmax_connections = 2000\n", Path::new("t.toml")).unwrap();
        let text = summary(&config, "t.toml");
        assert!(
            text.contains(
                "with every limit reached at once, above the packaged unit's MemoryMax=744M"
            ),
            "{text}"
        );
    }
}
