//! The monitoring examples stay true: the Prometheus alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`, Debian package `prometheus`), and every metric
//! the rules and the Grafana dashboard query is one the real broker exports; a live scrape
//! passes `promtool check metrics` (the exposition format and Prometheus's naming lints).

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use edge_tests::broker::Broker;
use edge_tests::kafka::http_get;
use edge_tests::peers::{program, repo_root};

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

/// `edge_*` and `process_*` metric names in `text`, histogram series named by their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let found = text
        .match_indices("edge_")
        .chain(text.match_indices("process_"));
    for (i, _) in found {
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
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
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
                exported.contains(&name),
                "the {what} query {name}, which the broker does not export"
            );
        }
    }
}

/// A live scrape, after routed publishes went through fdatasync, passes `promtool check
/// metrics` without a lint, and carries the process metrics and the fsync histogram.
#[test]
fn a_live_scrape_passes_promtool_check_metrics() {
    let broker = Broker::start(
        "[kafka]\nenabled = false\n[[route]]\nmqtt = \"sensors/#\"\nkafka_topic = \"sensors\"\n",
    );
    let tcp = broker.mqtt_addr();
    for i in 0..3 {
        let status = Command::new(program("mosquitto_pub", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &tcp.port().to_string()])
            .args(["-q", "1", "-t", "sensors/a/t", "-m", &i.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let metrics = broker.listen_addr("metrics.listen");
    let text = http_get(metrics, "/metrics");
    let mut check = Command::new(program("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics:\n{said}");
    assert!(said.trim().is_empty(), "promtool lints:\n{said}");
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "edge_log_max_bytes",
    ] {
        assert!(
            text.contains(&format!("\n{family} ")),
            "{family} missing from /metrics"
        );
    }
    let syncs = edge_tests::kafka::metric(metrics, "edge_log_fsync_seconds_count").unwrap();
    assert!(
        syncs >= 1.0,
        "three durable publishes took no measured fdatasync"
    );
}
