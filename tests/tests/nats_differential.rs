//! Differential runs: the same client input against edge-broker and the real nats-server
//! (Debian's 2.9.10), asserting the same observable result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nats_support;

use std::time::Duration;

use edge_tests::broker::Broker;
use nats_support::{NatsServer, nats_url, raw_exchange, scenario};

/// Raw protocol inputs whose replies and close behaviour must match byte for byte.
const CASES: &[&[u8]] = &[
    b"CONNECT {\"verbose\":false}\r\nSUB foo..bar 1\r\nPING\r\n",
    b"CONNECT {\"verbose\":false}\r\nPUB foo 3\r\nabcd\r\n",
    b"CONNECT {\"verbose\":false}\r\nHPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
    b"FOO\r\n",
    b"CONNECT {\"verbose\":false}\r\nPUB foo 2000000\r\n",
    b"CONNECT {\"verbose\":false,\"pedantic\":true}\r\nPUB foo.* 1\r\nx\r\nPING\r\n",
    b"CONNECT {}\r\nSUB a 1\r\nPUB a 1\r\nx\r\nUNSUB 1\r\nPING\r\n",
    b"CONNECT {\"verbose\":false,\"protocol\":2}\r\n",
    b"CONNECT {\"verbose\":false}\r\nSUB a.> 1\r\nSUB a.*.c 2\r\nPUB a.b.c 2\r\nhi\r\nPING\r\n",
    b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\nUNSUB 1 2\r\nPUB a 1\r\n1\r\nPUB a 1\r\n2\r\nPUB a 1\r\n3\r\nPING\r\n",
    // Headers travel through the hub as ordered key/value pairs (an empty block or a status
    // line would not survive: a documented deviation), so the block here has one entry.
    b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB h 9\r\nHPUB h 18 20\r\nNATS/1.0\r\nA: 1\r\n\r\nhi\r\nPING\r\n",
    b"CONNECT {\"verbose\":false,\"echo\":false}\r\nSUB e 1\r\nPUB e 1\r\nx\r\nPING\r\n",
];

#[test]
fn protocol_errors_and_replies_match_nats_server() {
    let reference = NatsServer::start(false);
    let mut broker = Broker::start("");
    let ours = broker.listen_addr("nats.listen");
    let quiet = Duration::from_millis(500);
    for case in CASES {
        let (_, want, want_closed) = raw_exchange(reference.addr, case, quiet);
        let (info, got, got_closed) = raw_exchange(ours, case, quiet);
        assert!(info.starts_with("INFO {"), "{info}");
        let input = String::from_utf8_lossy(case);
        assert_eq!(got, want, "different reply to {input:?}");
        assert_eq!(
            got_closed, want_closed,
            "different close behaviour for {input:?}"
        );
    }
    assert!(broker.terminate(Duration::from_secs(25)).success());
}

#[test]
fn nats_py_observes_the_same_delivery_as_with_nats_server() {
    let reference = NatsServer::start(false);
    let mut broker = Broker::start("");
    for url in [reference.url(), nats_url(&broker)] {
        let got = scenario(&["pubsub", "--url", &url]);
        assert_eq!(
            got["gt"],
            serde_json::json!(["a.b", "a.b.c", "a.c"]),
            "{url}: {got}"
        );
        assert_eq!(got["no_responders"], true, "{url}: {got}");
        let got = scenario(&["queue", "--url", &url, "--messages", "60"]);
        assert_eq!(got["workers_total"], 60, "{url}: {got}");
        assert_eq!(got["plain"], 60, "{url}: {got}");
        assert_eq!(got["limited"], 3, "{url}: {got}");
    }
    assert!(broker.terminate(Duration::from_secs(25)).success());
}
