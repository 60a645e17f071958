//! What a hostile device on the gateway's LAN can send, against the real binary: each test is
//! an attack that once crashed, locked out or exhausted the broker (SECURITY.md lists them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nats_support;

use std::time::Duration;

use edge_tests::broker::Broker;
use edge_tests::mqtt::scenario;

const STOP: Duration = Duration::from_secs(20);

/// One SUBSCRIBE to a filter of ~8,000 levels once overflowed the stack when the subscription
/// was removed (disconnect, unsubscribe, expiry) and, saved in the session file, at every
/// restart after. Now the default depth limit refuses it (SUBACK 0x8F, 3.1.1: 0x80); with the
/// limit raised the tree takes it, removes it and restarts with it saved, without recursing;
/// and a saved filter deeper than the limit of the next start is dropped, not fatal.
#[test]
fn a_very_deep_subscription_neither_crashes_nor_poisons_restarts() {
    let mut broker = Broker::start("");
    let out = scenario("deep_filter", broker.mqtt_addr(), &["7999", "persist"]);
    assert_eq!(out["v5"], "0x8f", "{out}");
    assert_eq!(out["v311"], "0x80", "{out}");
    assert!(broker.terminate(STOP).success());

    let permissive = "[mqtt]\nmax_topic_levels = 10000\n";
    let dir = broker.dir.clone();
    let mut broker = Broker::start_in(&dir, permissive);
    let out = scenario(
        "deep_filter",
        broker.mqtt_addr(),
        &["7999", "persist", "deep-saved"],
    );
    assert_eq!(out["v5"], "0x1", "{out}");
    assert_eq!(out["v311"], "0x1", "{out}");
    // The v5 session (with its deep filter) is saved at shutdown and restored at start.
    assert!(broker.terminate(STOP).success());
    let mut broker = Broker::start_in(&dir, permissive);
    broker.wait_for_line("restored persistent MQTT sessions", Duration::from_secs(1));
    scenario("deep_filter", broker.mqtt_addr(), &["10", "clean"]);
    assert!(broker.terminate(STOP).success());

    // Back on the default limit: the saved filter is too deep now; it is dropped and named.
    let mut broker = Broker::start_in(&dir, "");
    broker.wait_for_line(
        "saved subscription is not a valid filter",
        Duration::from_secs(1),
    );
    scenario("deep_filter", broker.mqtt_addr(), &["10", "clean"]);
    assert!(broker.terminate(STOP).success());
}

/// The same for NATS: a subject with more tokens than `nats.max_subject_tokens` is refused
/// with `-ERR 'Invalid Subject'`, the connection stays usable.
#[test]
fn a_very_deep_nats_subject_is_refused_and_the_connection_goes_on() {
    let mut broker = Broker::start("");
    let addr = broker.listen_addr("nats.listen");
    let deep = vec!["a"; 1500].join("."); // 3,000 bytes: within max_control_line
    let input = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB {deep} 1\r\nSUB ok.* 2\r\nPUB ok.x 2\r\nhi\r\nPING\r\n"
    );
    let (_, output, closed) =
        nats_support::raw_exchange(addr, input.as_bytes(), Duration::from_millis(500));
    assert!(output.contains("-ERR 'Invalid Subject'"), "{output}");
    assert!(output.contains("MSG ok.x 2 2\r\nhi\r\n"), "{output}");
    assert!(output.contains("PONG"), "{output}");
    assert!(!closed, "{output}");
    assert!(broker.terminate(STOP).success());
}
