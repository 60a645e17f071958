//! The NATS connection state machine in process: the real server code over `tokio::io::duplex`,
//! edge-log on `MemStorage`, a client on edge-proto's codec. PubAck order, PONG after routed
//! publishes, backpressure from a full log, refusals, slow consumers and `$SYS` subjects.

// Test code: unwrap/expect are fine here (clippy.toml intent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use edge_broker::metrics::DropReason;
use edge_log::WhenFull;
use edge_proto::mqtt::{Packet, ProtocolVersion, QoS};
use edge_proto::nats::{HeaderMap, ServerOp, encode_pub};
use support::{Broker, QUIET, roomy_log, small_log};

const ROUTED: &str = "[[route]]\nnats = \"r.>\"\nkafka_topic = \"stream\"\n";

/// `PUB`/`HPUB` bytes.
fn pub_op(subject: &str, reply: Option<&str>, headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let block = (!headers.is_empty()).then(|| {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, *v);
        }
        let mut block = BytesMut::new();
        map.encode(&mut block);
        block
    });
    let mut out = BytesMut::new();
    encode_pub(&mut out, subject, reply, block.as_deref(), payload);
    out.to_vec()
}

/// A reply delivered on `_INBOX.*`: (reply subject, JSON body).
fn reply(op: ServerOp) -> (String, serde_json::Value) {
    match op {
        ServerOp::Msg(m) => (m.subject, serde_json::from_slice(&m.payload).unwrap()),
        other => panic!("expected a reply MSG, got {other:?}"),
    }
}

#[tokio::test]
async fn replies_leave_in_publish_order_pubacks_after_durability() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut client = broker.nats_client();
    client.connect().await;
    client.send(b"SUB _INBOX.> 1\r\nPING\r\n").await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    let mut ops = Vec::new();
    ops.extend(pub_op("r.a", Some("_INBOX.1"), &[], b"a"));
    // Settled at once (wrong stream), but it leaves after the PubAck before it.
    ops.extend(pub_op(
        "r.b",
        Some("_INBOX.2"),
        &[("Nats-Expected-Stream", "other")],
        b"b",
    ));
    ops.extend(pub_op(
        "r.c",
        Some("_INBOX.3"),
        &[("Nats-Msg-Id", "m-3")],
        b"c",
    ));
    ops.extend(pub_op("u.d", None, &[], b"d"));
    ops.extend(pub_op(
        "r.e",
        Some("_INBOX.5"),
        &[("Nats-Msg-Id", "m-5")],
        b"e",
    ));
    client.send(&ops).await;
    let got: Vec<(String, serde_json::Value)> = [
        client.recv().await,
        client.recv().await,
        client.recv().await,
    ]
    .into_iter()
    .map(reply)
    .collect();
    assert_eq!(got[0].0, "_INBOX.1");
    assert_eq!(got[0].1, serde_json::json!({"stream": "stream", "seq": 0}));
    assert_eq!(got[1].0, "_INBOX.2");
    assert_eq!(got[1].1["error"]["code"], 400);
    assert_eq!(got[2].0, "_INBOX.3");
    assert_eq!(got[2].1, serde_json::json!({"stream": "stream", "seq": 1}));
    let (subject, body) = reply(client.recv().await);
    assert_eq!(subject, "_INBOX.5");
    assert_eq!(body["seq"], 2);
    // A resend once the original is durable is recognised, answered with the first seq.
    client
        .send(&pub_op(
            "r.e",
            Some("_INBOX.6"),
            &[("Nats-Msg-Id", "m-3")],
            b"e",
        ))
        .await;
    let (_, body) = reply(client.recv().await);
    assert_eq!(
        body,
        serde_json::json!({"stream": "stream", "seq": 1, "duplicate": true})
    );
    let topics: Vec<String> = broker
        .records()
        .into_iter()
        .map(|r| r.topic.to_string())
        .collect();
    assert_eq!(topics, ["r.a", "r.c", "r.e"]);
    assert_eq!(broker.nats.metrics.acks.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_pong_comes_once_the_routed_publishes_before_the_ping_are_written() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut client = broker.nats_client();
    client.connect().await;
    let mut ops = Vec::new();
    for i in 0..100 {
        ops.extend(pub_op("r.x", None, &[], format!("{i}").as_bytes()));
    }
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    // PONG means "everything before the PING is done": all 100 have their offsets.
    assert_eq!(broker.log.stats().next_offset, 100);
}

/// `received` and `stored` are counted once per read buffer (not per PUB): after the buffer is
/// processed (its PONG came back) they hold every PUB of it, routed or not.
#[tokio::test]
async fn received_and_stored_counts_are_whole_once_a_buffer_is_processed() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut client = broker.nats_client();
    client.connect().await;
    let metrics = &broker.nats.metrics;
    let mut ops = Vec::new();
    for i in 0..60 {
        let subject = if i % 3 == 0 { "plain.x" } else { "r.x" };
        ops.extend(pub_op(subject, None, &[], format!("{i}").as_bytes()));
    }
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    assert_eq!(metrics.received_total(), 60);
    assert_eq!(metrics.stored.load(Ordering::Relaxed), 40);
    // A second buffer adds to them.
    let mut ops = pub_op("r.y", None, &[], b"again");
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    assert_eq!(metrics.received_total(), 61);
    assert_eq!(metrics.stored.load(Ordering::Relaxed), 41);
}

#[tokio::test]
async fn a_full_log_stops_reading_the_publisher_until_there_is_room() {
    let broker = Broker::start(ROUTED, small_log(WhenFull::Block));
    let mut uplink = broker.log.cursor("uplink").unwrap();
    let mut client = broker.nats_client();
    client.connect().await;
    client.send(b"SUB _INBOX.> 1\r\n").await;
    let mut acked = 0;
    let held = loop {
        assert!(acked < 100, "a 4 KiB log never filled");
        let inbox = format!("_INBOX.{acked}");
        client
            .send(&pub_op("r.t", Some(&inbox), &[], &[b'x'; 300]))
            .await;
        match client.recv_within(QUIET).await {
            Some(op) => {
                let (subject, body) = reply(op);
                assert_eq!(subject, inbox);
                assert_eq!(body["seq"], acked);
                acked += 1;
            }
            None => break inbox,
        }
    };
    assert!(acked > 3);
    // Not read while the log holds it back: the PING waits.
    client.send(b"PING\r\n").await;
    client.expect_silence("a PONG while the log is full").await;
    // Others are served.
    let mut other = broker.nats_client();
    other.connect().await;
    // Room again: the held publish is stored and acknowledged, the PING answered.
    let end = broker.log.durable_end();
    uplink.commit(end).await.unwrap();
    let mut ops = [client.recv().await, client.recv().await];
    ops.sort_by_key(|op| matches!(op, ServerOp::Pong));
    let [ack, pong] = ops;
    assert_eq!(pong, ServerOp::Pong);
    let (subject, body) = reply(ack);
    assert_eq!((subject, body["seq"].as_u64()), (held, Some(acked)));
}

#[tokio::test]
async fn log_refusals_are_answered_in_order_with_jetstream_errors() {
    let broker = Broker::start(ROUTED, small_log(WhenFull::Reject));
    let _uplink = broker.log.cursor("uplink").unwrap();
    let mut client = broker.nats_client();
    client.connect().await;
    client.send(b"SUB _INBOX.> 1\r\n").await;
    let mut ops = Vec::new();
    ops.extend(pub_op("r.big", Some("_INBOX.big"), &[], &[b'x'; 600]));
    for i in 0..20 {
        ops.extend(pub_op(
            "r.t",
            Some(&format!("_INBOX.{i}")),
            &[],
            &[b'x'; 300],
        ));
    }
    client.send(&ops).await;
    let (subject, body) = reply(client.recv().await);
    assert_eq!(subject, "_INBOX.big");
    assert_eq!(body["error"]["code"], 400, "too large: {body}");
    let mut codes = Vec::new();
    for i in 0..20 {
        let (subject, body) = reply(client.recv().await);
        assert_eq!(subject, format!("_INBOX.{i}"), "in publish order");
        codes.push(body["error"]["code"].as_u64().unwrap_or(0));
    }
    let full_from = codes
        .iter()
        .position(|c| *c == 503)
        .expect("the log filled");
    assert!(full_from > 0);
    assert!(codes[full_from..].iter().all(|c| *c == 503), "{codes:?}");
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_a_slow_consumer() {
    let broker = Broker::start(
        "[nats]\nmax_payload = \"4KiB\"\nmax_pending = \"16KiB\"\n",
        roomy_log(),
    );
    let mut slow = broker.nats_client_buffered(1024);
    slow.connect().await;
    slow.send(b"SUB s.> 1\r\nPING\r\n").await;
    assert_eq!(slow.recv().await, ServerOp::Pong);
    let mut publisher = broker.nats_client();
    publisher.connect().await;
    let mut ops = Vec::new();
    for _ in 0..100 {
        ops.extend(pub_op("s.x", None, &[], &[b'x'; 1000]));
    }
    ops.extend(b"PING\r\n");
    publisher.send(&ops).await;
    assert_eq!(
        publisher.recv().await,
        ServerOp::Pong,
        "the publisher goes on"
    );
    let ops = slow.until_closed().await;
    assert_eq!(
        ops.last(),
        Some(&ServerOp::Err("Slow Consumer".into())),
        "{:?}",
        ops.len()
    );
    let metrics = &broker.nats.metrics;
    assert_eq!(metrics.slow_consumers.load(Ordering::Relaxed), 1);
    assert!(metrics.dropped_count(DropReason::SlowConsumer) > 0);
}

#[tokio::test]
async fn publishing_into_sys_is_a_permissions_violation() {
    let broker = Broker::start(
        "[[route]]\nnats = \"$SYS.>\"\nkafka_topic = \"sys\"\n",
        roomy_log(),
    );
    let mut watcher = broker.mqtt_client(ProtocolVersion::V5);
    watcher.connect("watcher").await;
    watcher.subscribe("$SYS/#", QoS::AtMostOnce, 1).await;
    let mut client = broker.nats_client();
    client.connect().await;
    client
        .send(b"SUB $SYS.> 1\r\nPUB $SYS.REQ.SERVER.PING 1\r\nx\r\nPUB $JS.API.INFO 1\r\nx\r\nPING\r\n")
        .await;
    assert_eq!(
        client.recv().await,
        ServerOp::Err("Permissions Violation for Publish to \"$SYS.REQ.SERVER.PING\"".into())
    );
    // The connection goes on; other `$`-subjects are ordinary.
    assert_eq!(client.recv().await, ServerOp::Pong);
    let msg: Option<Packet> = watcher.recv_within(QUIET).await;
    assert!(msg.is_none(), "nothing reached $SYS subscribers: {msg:?}");
    assert!(broker.records().is_empty());
    assert_eq!(broker.nats.metrics.denied_count(), 1);
}

/// A PUB repeating the last subject reuses what was decided for it (validity, the `$SYS` rule,
/// the route, local subscribers), yet a remembered refusal still refuses, and a new subscriber
/// or a route table reload between two PUBs of one subject is seen by the second.
#[tokio::test]
async fn a_repeated_subject_follows_refusals_subscriptions_and_route_reloads() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut client = broker.nats_client();
    client.connect().await;
    client
        .send(b"PUB $SYS.x 1\r\nx\r\nPUB $SYS.x 1\r\ny\r\nPING\r\n")
        .await;
    for _ in 0..2 {
        assert_eq!(
            client.recv().await,
            ServerOp::Err("Permissions Violation for Publish to \"$SYS.x\"".into())
        );
    }
    assert_eq!(client.recv().await, ServerOp::Pong);
    assert_eq!(broker.nats.metrics.denied_count(), 2);

    // Routed, nobody subscribes; then a subscriber appears and the repeat reaches it.
    let mut ops = pub_op("r.a", None, &[], b"1");
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    let mut subscriber = broker.nats_client();
    subscriber.connect().await;
    subscriber.send(b"SUB r.a 9\r\nPING\r\n").await;
    assert_eq!(subscriber.recv().await, ServerOp::Pong);
    let mut ops = pub_op("r.a", None, &[], b"2");
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    match subscriber.recv().await {
        ServerOp::Msg(m) => assert_eq!((m.subject.as_str(), &m.payload[..]), ("r.a", &b"2"[..])),
        other => panic!("expected the repeated publish, got {other:?}"),
    }

    // Not routed, then routed after a reload: the repeat is stored.
    let mut ops = pub_op("u.b", None, &[], b"3");
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    let reloaded = edge_broker::config::Config::parse(
        "[[route]]\nnats = \">\"\nkafka_topic = \"all\"\n",
        std::path::Path::new("reload.toml"),
    )
    .unwrap();
    broker
        .nats
        .routes
        .replace(reloaded.compile_routes().unwrap());
    let mut ops = pub_op("u.b", None, &[], b"4");
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    // The PONG says the three are written; the log shows them to readers once durable.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while broker.log.durable_end() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the three routed publishes become durable");
    let stored: Vec<(String, String)> = broker
        .records()
        .into_iter()
        .map(|r| {
            (
                r.topic.to_string(),
                String::from_utf8(r.payload.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [
            ("r.a".into(), "1".into()),
            ("r.a".into(), "2".into()),
            ("u.b".into(), "4".into())
        ]
    );
}

/// A plain publish (not routed) to a subject nobody subscribes to builds nothing, and that
/// answer is kept while the subject repeats: a subscriber that arrives gets the next repeat,
/// one that leaves gets no more, and a subject with no MQTT topic is counted as a drop on
/// every publish, not once.
#[tokio::test]
async fn a_repeated_plain_subject_follows_subscribers_and_counts_every_unmappable_drop() {
    let broker = Broker::start("", roomy_log());
    let mut client = broker.nats_client();
    client.connect().await;
    let mut ops = pub_op("p.a", None, &[], b"1");
    ops.extend(pub_op("p.a", None, &[], b"2"));
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);

    let mut subscriber = broker.nats_client();
    subscriber.connect().await;
    subscriber.send(b"SUB p.a 9\r\nPING\r\n").await;
    assert_eq!(subscriber.recv().await, ServerOp::Pong);
    let mut ops = pub_op("p.a", None, &[], b"3");
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    match subscriber.recv().await {
        ServerOp::Msg(m) => assert_eq!((m.subject.as_str(), &m.payload[..]), ("p.a", &b"3"[..])),
        other => panic!("expected the repeated publish, got {other:?}"),
    }

    subscriber.send(b"UNSUB 9\r\nPING\r\n").await;
    assert_eq!(subscriber.recv().await, ServerOp::Pong);
    let mut ops = pub_op("p.a", None, &[], b"4");
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    subscriber.send(b"PING\r\n").await;
    assert_eq!(
        subscriber.recv().await,
        ServerOp::Pong,
        "nothing after the UNSUB"
    );

    let mut ops = pub_op("a/b", None, &[], b"5");
    ops.extend(pub_op("a/b", None, &[], b"6"));
    ops.extend(b"PING\r\n");
    client.send(&ops).await;
    assert_eq!(client.recv().await, ServerOp::Pong);
    let metrics = &broker.nats.metrics;
    assert_eq!(metrics.dropped_count(DropReason::UnmappableSubject), 2);
}

/// A PubAck (on `sid`) and the reply subject it came on.
fn ack_on(op: ServerOp, sid: &str) -> (String, serde_json::Value) {
    match op {
        ServerOp::Msg(m) => {
            assert_eq!(m.sid, sid, "delivered on {m:?}");
            (m.subject, serde_json::from_slice(&m.payload).unwrap())
        }
        other => panic!("expected a PubAck MSG, got {other:?}"),
    }
}

/// A durable publish with reply subject `reply`, then a PING.
fn durable_pub(reply: &str, payload: &[u8]) -> Vec<u8> {
    let mut ops = pub_op("r.a", Some(reply), &[], payload);
    ops.extend(b"PING\r\n");
    ops
}

/// A JetStream-shaped publisher (replies on `_INBOX.p.*`, its own subscription) gets its
/// PubAcks without the hub walking its tree once the prefix repeats; whoever else subscribes
/// to a reply subject still gets every reply, exactly as through the hub: another NATS
/// client's `_INBOX.>`, an MQTT `_INBOX/#`, a queue group, a subscription naming one reply
/// subject, and the publisher's own second subscription; once they leave, they get no more.
#[tokio::test]
async fn every_subscriber_of_a_reply_subject_gets_the_puback_not_only_the_publisher() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut publisher = broker.nats_client();
    publisher.connect().await;
    publisher.send(b"SUB _INBOX.p.* 1\r\nPING\r\n").await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    // Two replies on the prefix: the second one repeats it.
    for (n, seq) in [(1, 0), (2, 1)] {
        publisher
            .send(&durable_pub(&format!("_INBOX.p.{n}"), b"x"))
            .await;
        assert_eq!(publisher.recv().await, ServerOp::Pong);
        let (subject, body) = ack_on(publisher.recv().await, "1");
        assert_eq!(subject, format!("_INBOX.p.{n}"));
        assert_eq!(body, serde_json::json!({"stream": "stream", "seq": seq}));
    }

    // Others subscribe to the replies: every one gets the next PubAck.
    let mut other = broker.nats_client();
    other.connect().await;
    other
        .send(b"SUB _INBOX.> 7\r\nSUB _INBOX.p.* workers 8\r\nPING\r\n")
        .await;
    assert_eq!(other.recv().await, ServerOp::Pong);
    let mut mqtt = broker.mqtt_client(ProtocolVersion::V5);
    mqtt.connect("inbox-watcher").await;
    mqtt.subscribe("_INBOX/#", QoS::AtMostOnce, 1).await;
    publisher.send(&durable_pub("_INBOX.p.3", b"x")).await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    let (subject, body) = ack_on(publisher.recv().await, "1");
    assert_eq!((subject.as_str(), &body["seq"]), ("_INBOX.p.3", &2.into()));
    let mut sids: Vec<String> = Vec::new();
    for _ in 0..2 {
        match other.recv().await {
            ServerOp::Msg(m) => {
                assert_eq!(m.subject, "_INBOX.p.3");
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["seq"],
                    2
                );
                sids.push(m.sid);
            }
            op => panic!("expected the PubAck, got {op:?}"),
        }
    }
    sids.sort();
    assert_eq!(sids, ["7", "8"], "the wildcard and the queue group");
    match mqtt.recv().await {
        Packet::Publish(p) => {
            assert_eq!(&*p.topic, "_INBOX/p/3");
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap()["seq"],
                2
            );
        }
        other => panic!("expected the PubAck on MQTT, got {other:?}"),
    }

    // They leave; a subscription naming one reply subject gets that one only, the
    // publisher's own second subscription every one (after its first, in subscription order).
    other
        .send(b"UNSUB 7\r\nUNSUB 8\r\nSUB _INBOX.p.5 9\r\nPING\r\n")
        .await;
    assert_eq!(other.recv().await, ServerOp::Pong);
    drop(mqtt);
    publisher.send(b"SUB _INBOX.> 2\r\nPING\r\n").await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    for n in [4, 5, 6] {
        publisher
            .send(&durable_pub(&format!("_INBOX.p.{n}"), b"x"))
            .await;
        assert_eq!(publisher.recv().await, ServerOp::Pong);
        for sid in ["1", "2"] {
            let (subject, _) = ack_on(publisher.recv().await, sid);
            assert_eq!(subject, format!("_INBOX.p.{n}"));
        }
    }
    let (subject, body) = ack_on(other.recv().await, "9");
    assert_eq!((subject.as_str(), &body["seq"]), ("_INBOX.p.5", &4.into()));
    other
        .expect_silence("only _INBOX.p.5 after the UNSUBs")
        .await;
    publisher.expect_silence("one copy per subscription").await;
}

/// Every PubAck reaches its reply subject exactly, however the decoder keeps it (a repeating
/// prefix shared and the last token inline, or whole): many in flight at once, the prefix
/// changing mid-stream and back, last tokens at and past the inline limit, a multi-level and
/// a long prefix; straight into the publisher's own subscription, then through the hub once
/// another client subscribes too.
#[tokio::test]
async fn each_puback_reaches_its_exact_reply_subject_while_the_prefix_changes() {
    let inline = "t".repeat(edge_proto::nats::ReplySubject::INLINE);
    let replies = [
        "_INBOX.a.1".to_owned(),
        "_INBOX.a.2".to_owned(),
        "_INBOX.b.1".to_owned(),
        "_INBOX.a.3".to_owned(),
        format!("_INBOX.a.{inline}"),
        format!("_INBOX.a.{inline}x"),
        "_INBOX.a.4".to_owned(),
        "_INBOX.a.x.5".to_owned(),
        "_INBOX.a.6".to_owned(),
        format!("_INBOX.{}.7", "p".repeat(60)),
        "_INBOX.a.7".to_owned(),
    ];
    let broker = Broker::start(ROUTED, roomy_log());
    let mut publisher = broker.nats_client();
    publisher.connect().await;
    publisher.send(b"SUB _INBOX.> 1\r\nPING\r\n").await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    let mut other = broker.nats_client();
    other.connect().await;
    let mut seq = 0;
    for round in ["alone", "with another subscriber"] {
        if round != "alone" {
            other.send(b"SUB _INBOX.> 7\r\nPING\r\n").await;
            assert_eq!(other.recv().await, ServerOp::Pong);
        }
        // All in one write: their replies are owed at the same time.
        let mut ops = Vec::new();
        for reply in &replies {
            ops.extend(pub_op("r.a", Some(reply), &[], b"x"));
        }
        ops.extend(b"PING\r\n");
        publisher.send(&ops).await;
        let mut got = Vec::new();
        while got.len() < replies.len() {
            match publisher.recv().await {
                ServerOp::Pong => {}
                op => {
                    let (subject, body) = ack_on(op, "1");
                    got.push((subject, body["seq"].as_u64().unwrap()));
                }
            }
        }
        let want: Vec<(String, u64)> = replies
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), seq + i as u64))
            .collect();
        assert_eq!(got, want, "{round}");
        if round != "alone" {
            for (reply, n) in &want {
                let (subject, body) = ack_on(other.recv().await, "7");
                assert_eq!((&subject, body["seq"].as_u64().unwrap()), (reply, *n));
            }
        }
        seq += replies.len() as u64;
    }
    other.expect_silence("one copy of each").await;
}

/// A reply subscription's UNSUB max counts the PubAcks delivered straight to it, and the
/// subscription leaves once it is reached; a publisher with echo off still gets its PubAcks
/// (they are the server's, not its own messages).
#[tokio::test]
async fn a_reply_subscriptions_unsub_max_counts_pubacks_and_echo_off_still_gets_them() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut publisher = broker.nats_client();
    assert!(matches!(publisher.recv().await, ServerOp::Info(_)));
    publisher
        .send(b"CONNECT {\"verbose\":false,\"echo\":false,\"headers\":true}\r\nSUB _INBOX.q.* 4\r\nUNSUB 4 2\r\nPING\r\n")
        .await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    for n in 1..=3 {
        publisher
            .send(&durable_pub(&format!("_INBOX.q.{n}"), b"x"))
            .await;
        assert_eq!(publisher.recv().await, ServerOp::Pong);
        if n <= 2 {
            let (subject, _) = ack_on(publisher.recv().await, "4");
            assert_eq!(subject, format!("_INBOX.q.{n}"));
        }
    }
    publisher.expect_silence("UNSUB max 2").await;
    // The subscription left the hub: a new one on the same prefix gets the next.
    publisher.send(b"SUB _INBOX.q.* 5\r\nPING\r\n").await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    publisher.send(&durable_pub("_INBOX.q.4", b"x")).await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    let (subject, body) = ack_on(publisher.recv().await, "5");
    assert_eq!((subject.as_str(), &body["seq"]), ("_INBOX.q.4", &3.into()));
    assert!(
        broker.nats.hub.len() == 1,
        "the finished subscription left the hub"
    );
}

/// Under an ACL a reply subscription's deliveries are still checked: one that overlaps a
/// `deny` rule does not get the PubAck of a reply subject it may not read, and gets the rest.
#[tokio::test]
async fn an_acl_still_filters_pubacks_on_a_reply_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite r/#\ntopic readwrite _INBOX/#\ntopic deny _INBOX/p/secret\n",
    )
    .unwrap();
    let toml = format!(
        "[auth]\nacl_file = {:?}\n{ROUTED}",
        acl.display().to_string()
    );
    let broker = Broker::start(&toml, roomy_log());
    let mut publisher = broker.nats_client();
    publisher.connect().await;
    publisher.send(b"SUB _INBOX.p.* 1\r\nPING\r\n").await;
    assert_eq!(publisher.recv().await, ServerOp::Pong);
    for reply in ["_INBOX.p.1", "_INBOX.p.2", "_INBOX.p.secret", "_INBOX.p.3"] {
        publisher.send(&durable_pub(reply, b"x")).await;
        assert_eq!(publisher.recv().await, ServerOp::Pong);
        if reply.ends_with("secret") {
            continue;
        }
        let (subject, _) = ack_on(publisher.recv().await, "1");
        assert_eq!(subject, reply);
    }
    publisher.expect_silence("the denied reply").await;
}
