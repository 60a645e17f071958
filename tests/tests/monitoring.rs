//! The monitoring examples stay true: the Prometheus alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`, Debian package `prometheus`), and every metric
//! the rules and the Grafana dashboard query is one the real broker exports (or one listed as
//! coming in a later build, and said so in the rules file).

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use edge_tests::broker::Broker;
use edge_tests::kafka::http_get;
use edge_tests::peers::{program, repo_root};

/// Metrics the examples use that a later build adds (fsync histogram, budget gauge, the
/// bridge's uplink state gauges).
const LATER: [&str; 3] = [
    "edge_log_fsync_seconds",
    "edge_log_max_bytes",
    "edge_kafka_uplink_state",
];

fn promtool(args: &[&str]) -> String {
    let output = Command::new(program("promtool", "prometheus"))
        .args(args)
        .current_dir(repo_root().join("examples/monitoring"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "edge-broker.rules.yml"]);
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "edge-broker.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(&["check", "config", "prometheus.yml"]);
    // Every alert has a unit test.
    let rules =
        std::fs::read_to_string(repo_root().join("examples/monitoring/edge-broker.rules.yml"))
            .unwrap();
    let tests =
        std::fs::read_to_string(repo_root().join("examples/monitoring/edge-broker.rules.test.yml"))
            .unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "alert {name} has no test in edge-broker.rules.test.yml"
            );
        }
    }
}

/// `edge_*` metric names in `text`, histogram series named by their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("edge_") {
        if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(family.to_owned());
    }
    names
}

#[test]
fn rules_and_dashboard_query_metrics_the_broker_exports() {
    // A broker with a forwarder (Kafka unreachable: its metrics exist all the same), MQTT and NATS.
    let broker = Broker::start(
        "[kafka]\nbrokers = [\"127.0.0.1:1\"]\n\
         [[route]]\nmqtt = \"sensors/#\"\nkafka_topic = \"sensors\"\n",
    );
    let exported: BTreeSet<String> = http_get(broker.listen_addr("metrics.listen"), "/metrics")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let dir = repo_root().join("examples/monitoring");
    let rules = std::fs::read_to_string(dir.join("edge-broker.rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = String::new();
    let mut ids = BTreeSet::new();
    for panel in json["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "duplicate panel id"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_i64().unwrap(), grid["w"].as_i64().unwrap());
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "panel outside the grid: {panel}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            !targets.is_empty(),
            "panel without a query: {}",
            panel["title"]
        );
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("$instance"),
                "not filtered by gateway: {expr}"
            );
            exprs.push_str(expr);
            exprs.push('\n');
        }
    }
    for (what, text) in [
        ("alert rules", rules.as_str()),
        ("dashboard", exprs.as_str()),
    ] {
        for name in metric_names(text) {
            assert!(
                exported.contains(&name) || LATER.contains(&name.as_str()),
                "the {what} query {name}, which the broker does not export"
            );
        }
    }
    for name in LATER {
        assert!(
            rules.contains(name),
            "edge-broker.rules.yml does not say that {name} comes later"
        );
    }
}
