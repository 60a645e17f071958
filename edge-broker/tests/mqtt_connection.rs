//! The MQTT connection state machine in process: the real server code over
//! `tokio::io::duplex`, edge-log on `MemStorage`, clients on edge-proto's codec. Ack order under
//! interleaved routed/unrouted QoS 0/1/2, backpressure from a full log, refusals, Receive
//! Maximum, session takeover, `$`-topics, wills and the shutdown drain.

// Test code: unwrap/expect are fine here (clippy.toml intent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::BytesMut;
use edge_log::WhenFull;
use edge_proto::mqtt::{
    self, MqttString, Packet, Properties, ProtocolVersion, PubAck, PubRel, QoS, ReasonCode, Will,
};
use support::{Broker, QUIET, publish, roomy_log, small_log};

const ROUTED: &str = "[[route]]\nmqtt = \"r/#\"\nkafka_topic = \"routed\"\nkey = \"{client_id}\"\n";

/// The packet id and reason of an acknowledgement (PUBACK or PUBREC).
fn ack(packet: &Packet) -> (&'static str, u16, ReasonCode) {
    match packet {
        Packet::PubAck(a) => ("PUBACK", a.packet_id, a.reason_code),
        Packet::PubRec(r) => ("PUBREC", r.packet_id, r.reason_code),
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
}

#[tokio::test]
async fn acks_leave_in_arrival_order_across_routed_and_unrouted_qos_0_1_2() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut sub = broker.mqtt_client(ProtocolVersion::V5);
    sub.connect("sub").await;
    sub.subscribe("#", QoS::AtMostOnce, 1).await;
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    client.connect("pub").await;
    // One write: the server decodes them from one buffer, the routed ones go to the log as one
    // batch, and every unrouted ack must still wait for the routed ones before it.
    client
        .send_all(&[
            publish("r/1", QoS::AtLeastOnce, Some(1), b"a"),
            publish("u/1", QoS::AtLeastOnce, Some(2), b"b"),
            publish("r/2", QoS::ExactlyOnce, Some(3), b"c"),
            publish("r/3", QoS::AtMostOnce, None, b"d"),
            publish("u/2", QoS::ExactlyOnce, Some(4), b"e"),
            publish("u/3", QoS::AtMostOnce, None, b"f"),
            publish("r/4", QoS::AtLeastOnce, Some(5), b"g"),
            publish("u/4", QoS::AtLeastOnce, Some(6), b"h"),
        ])
        .await;
    let mut acks = Vec::new();
    for _ in 0..6 {
        acks.push(ack(&client.recv().await));
    }
    assert_eq!(
        acks,
        [
            ("PUBACK", 1, ReasonCode::Success),
            ("PUBACK", 2, ReasonCode::Success),
            ("PUBREC", 3, ReasonCode::Success),
            ("PUBREC", 4, ReasonCode::Success),
            ("PUBACK", 5, ReasonCode::Success),
            ("PUBACK", 6, ReasonCode::Success),
        ]
    );
    // QoS 2 completes.
    client
        .send_all(&[
            Packet::PubRel(PubRel::new(3)),
            Packet::PubRel(PubRel::new(4)),
        ])
        .await;
    for id in [3, 4] {
        match client.recv().await {
            Packet::PubComp(c) => {
                assert_eq!((c.packet_id, c.reason_code), (id, ReasonCode::Success))
            }
            other => panic!("expected PUBCOMP {id}, got {other:?}"),
        }
    }
    // The routed ones are in the log in publish order, with the decision made at ingest.
    let records = broker.records();
    let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["r/1", "r/2", "r/3", "r/4"]);
    for record in &records {
        let destination = record.destination.as_ref().unwrap();
        assert_eq!(&*destination.topic, "routed");
        assert_eq!(destination.key.as_deref(), Some(&b"pub"[..]));
        assert_eq!(record.client_id, "pub");
    }
    // Every publish reached the local subscriber once.
    let mut delivered = Vec::new();
    for _ in 0..8 {
        match sub.recv().await {
            Packet::Publish(p) => delivered.push(p.topic.as_str().to_owned()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    delivered.sort();
    assert_eq!(
        delivered,
        ["r/1", "r/2", "r/3", "r/4", "u/1", "u/2", "u/3", "u/4"]
    );
}

#[tokio::test]
async fn a_full_log_stops_reading_the_publisher_and_withholds_its_acks_only() {
    let broker = Broker::start(ROUTED, small_log(WhenFull::Block));
    // A reader that has not caught up (the Kafka uplink is down): the budget fills.
    let mut uplink = broker.log.cursor("uplink").unwrap();
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    let mut connect = client.connect_packet("blocked");
    connect.keep_alive = 1;
    client.connect_with(connect).await;
    let mut acked = 0u16;
    let blocked_id = loop {
        let id = acked + 1;
        assert!(id < 100, "a 4 KiB log never filled");
        client
            .send(publish("r/t", QoS::AtLeastOnce, Some(id), &[b'x'; 300]))
            .await;
        match client.recv_within(QUIET).await {
            Some(packet) => {
                assert_eq!(ack(&packet), ("PUBACK", id, ReasonCode::Success));
                acked = id;
            }
            None => break id,
        }
    };
    assert!(
        acked > 3,
        "publishes were acknowledged until the log was full"
    );
    // The client is not read while the log holds it back: its PINGREQ waits...
    client.send(Packet::PingReq).await;
    // ... longer than one and a half keep-alive periods, without being cut off for it.
    assert!(client.recv_within(Duration::from_secs(2)).await.is_none());
    // Everybody else is served.
    let mut other = broker.mqtt_client(ProtocolVersion::V5);
    other.connect("other").await;
    other.send(Packet::PingReq).await;
    assert_eq!(other.recv().await, Packet::PingResp);
    // The uplink catches up: retention frees space, the held publish is stored and acked,
    // then the PINGREQ read after it is answered.
    let end = broker.log.durable_end();
    uplink.commit(end).await.unwrap();
    // (The PINGREQ is answered as soon as it is read; the PUBACK once the record is durable.)
    let mut answers = [client.recv().await, client.recv().await];
    answers.sort_by_key(|p| matches!(p, Packet::PingResp));
    assert_eq!(
        ack(&answers[0]),
        ("PUBACK", blocked_id, ReasonCode::Success)
    );
    assert_eq!(answers[1], Packet::PingResp);
    assert_eq!(
        broker.log.durable_end(),
        u64::from(blocked_id),
        "every acknowledged publish got its offset, the held one last"
    );
}

#[tokio::test]
async fn log_refusals_get_v5_reason_codes_and_close_v311() {
    let broker = Broker::start(ROUTED, small_log(WhenFull::Reject));
    let _uplink = broker.log.cursor("uplink").unwrap();
    let mut v5 = broker.mqtt_client(ProtocolVersion::V5);
    v5.connect("v5").await;
    // Larger than max_record_bytes (512): refused with a code PUBACK may carry (0x83; "Packet
    // too large" is a DISCONNECT code) and the log's reason; the connection goes on.
    v5.send(publish("r/big", QoS::AtLeastOnce, Some(1), &[b'x'; 600]))
        .await;
    match v5.recv().await {
        Packet::PubAck(a) => {
            assert_eq!(
                (a.packet_id, a.reason_code),
                (1, ReasonCode::ImplementationSpecificError)
            );
            let why = a.properties.into_set().reason_string.unwrap();
            assert!(why.as_str().contains("max_record_bytes"), "{why:?}");
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // Fill the log: Quota exceeded once it is full (QoS 2 too, and its id is free again).
    let mut id = 2;
    loop {
        assert!(id < 100, "a 4 KiB log never filled");
        v5.send(publish("r/t", QoS::AtLeastOnce, Some(id), &[b'x'; 300]))
            .await;
        let (_, got, reason) = ack(&v5.recv().await);
        assert_eq!(got, id);
        if reason == ReasonCode::QuotaExceeded {
            break;
        }
        assert_eq!(reason, ReasonCode::Success);
        id += 1;
    }
    v5.send(publish("r/t", QoS::ExactlyOnce, Some(id + 1), &[b'x'; 300]))
        .await;
    assert_eq!(
        ack(&v5.recv().await),
        ("PUBREC", id + 1, ReasonCode::QuotaExceeded)
    );
    v5.send(Packet::PubRel(PubRel::new(id + 1))).await;
    match v5.recv().await {
        Packet::PubComp(c) => assert_eq!(c.reason_code, ReasonCode::PacketIdentifierNotFound),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // 3.1.1 has no negative acknowledgement: the connection closes, nothing is acked.
    let mut v311 = broker.mqtt_client(ProtocolVersion::V311);
    v311.connect("v311").await;
    v311.send(publish("r/t", QoS::AtLeastOnce, Some(1), &[b'x'; 300]))
        .await;
    let before_close = v311.until_closed().await;
    assert!(before_close.is_empty(), "{before_close:?}");
    // A refused QoS 0 publish on a full log is dropped, the 3.1.1 connection stays.
    let mut q0 = broker.mqtt_client(ProtocolVersion::V311);
    q0.connect("q0").await;
    q0.send_all(&[
        publish("r/t", QoS::AtMostOnce, None, &[b'x'; 300]),
        Packet::PingReq,
    ])
    .await;
    assert_eq!(q0.recv().await, Packet::PingResp);
    let refused = broker
        .mqtt
        .metrics
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        refused, 5,
        "too large, 2 full (v5), 1 full (3.1.1 QoS 1), 1 QoS 0"
    );
}

#[tokio::test]
async fn receive_maximum_limits_deliveries_in_flight() {
    let broker = Broker::start("", roomy_log());
    let mut sub = broker.mqtt_client(ProtocolVersion::V5);
    let mut connect = sub.connect_packet("slow");
    connect.properties.receive_maximum = Some(2);
    sub.connect_with(connect).await;
    sub.subscribe("d/#", QoS::AtLeastOnce, 1).await;
    let mut publisher = broker.mqtt_client(ProtocolVersion::V5);
    publisher.connect("fast").await;
    for id in 1..=5 {
        publisher
            .send(publish(
                "d/x",
                QoS::AtLeastOnce,
                Some(id),
                &[b'0' + id as u8],
            ))
            .await;
        assert_eq!(ack(&publisher.recv().await).2, ReasonCode::Success);
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        match sub.recv().await {
            Packet::Publish(p) => ids.push(p.packet_id.unwrap()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    sub.expect_silence("a third delivery beyond Receive Maximum 2")
        .await;
    // Each PUBACK frees one slot.
    for (n, id) in ids.clone().into_iter().enumerate() {
        sub.send(Packet::PubAck(PubAck::new(id))).await;
        match sub.recv().await {
            Packet::Publish(p) => assert_eq!(p.payload[..], [b'3' + n as u8]),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_second_connection_takes_the_session_over() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut first = broker.mqtt_client(ProtocolVersion::V5);
    let mut connect = first.connect_packet("same");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(60);
    first.connect_with(connect.clone()).await;
    first.subscribe("t/#", QoS::AtLeastOnce, 1).await;
    // A routed publish the first connection made is stored and acknowledged.
    first
        .send(publish("r/x", QoS::AtLeastOnce, Some(7), b"kept"))
        .await;
    assert_eq!(ack(&first.recv().await), ("PUBACK", 7, ReasonCode::Success));
    let mut second = broker.mqtt_client(ProtocolVersion::V5);
    let ack2 = second.connect_with(connect).await;
    assert!(
        ack2.session_present,
        "the session (and its subscription) is resumed"
    );
    let last = first.until_closed().await;
    assert_only_disconnect(&last, ReasonCode::SessionTakenOver);
    // The subscription moved to the new connection.
    let mut publisher = broker.mqtt_client(ProtocolVersion::V311);
    publisher.connect("p").await;
    publisher
        .send(publish("t/1", QoS::AtMostOnce, None, b"hello"))
        .await;
    match second.recv().await {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"hello"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    assert_eq!(broker.records().len(), 1);
}

/// Takeover and shutdown reach an idle connection through its session's wake (no token per
/// connection): a clean start ends the old session and kicks its connection, whose will is
/// published (taken over is not a clean DISCONNECT).
#[tokio::test]
async fn a_clean_start_kicks_the_idle_old_connection_and_its_will_goes_out() {
    let broker = Broker::start("", roomy_log());
    let mut watcher = broker.mqtt_client(ProtocolVersion::V311);
    watcher.connect("watcher").await;
    watcher.subscribe("will/#", QoS::AtMostOnce, 1).await;
    let mut first = broker.mqtt_client(ProtocolVersion::V5);
    let mut connect = first.connect_packet("same");
    connect.will = Some(Will {
        topic: MqttString::try_from("will/same").unwrap(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    });
    first.connect_with(connect).await;
    first.expect_silence("idle").await;
    let mut second = broker.mqtt_client(ProtocolVersion::V5);
    let ack = second.connect("same").await;
    assert!(!ack.session_present);
    let last = first.until_closed().await;
    assert_only_disconnect(&last, ReasonCode::SessionTakenOver);
    match watcher.recv().await {
        Packet::Publish(p) => assert_eq!(p.topic.as_str(), "will/same"),
        other => panic!("expected the will, got {other:?}"),
    }
    // The new connection stays.
    second.send(Packet::PingReq).await;
    assert_eq!(second.recv().await, Packet::PingResp);
}

/// The shutdown reaches every idle connection (a flag and a wake per session): v5 clients are
/// told "server shutting down", v3.1.1 ones closed; none publishes its will.
#[tokio::test]
async fn shutdown_closes_every_idle_connection() {
    let broker = Broker::start("", roomy_log());
    let mut clients = Vec::new();
    for n in 0..20 {
        let version = if n % 2 == 0 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let mut client = broker.mqtt_client(version);
        let mut connect = client.connect_packet(&format!("idle-{n}"));
        connect.clean_start = n % 4 < 2;
        if version == ProtocolVersion::V5 && !connect.clean_start {
            connect.properties.session_expiry_interval = Some(60);
        }
        client.connect_with(connect).await;
        clients.push((version, client));
    }
    broker.shutdown.cancel();
    for (version, mut client) in clients {
        let last = client.until_closed().await;
        match version {
            ProtocolVersion::V5 => assert_only_disconnect(&last, ReasonCode::ServerShuttingDown),
            ProtocolVersion::V311 => assert!(last.is_empty(), "{last:?}"),
        }
    }
}

/// A client whose login completes while the broker stops (after the connections were told
/// to leave) leaves at its loop's first turn: it sees the flag, no wake needed.
#[tokio::test]
async fn a_client_that_logs_in_while_the_broker_stops_is_told_to_leave() {
    let broker = Broker::start("", roomy_log());
    broker.mqtt.stop_connections();
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    client.connect("late").await;
    let last = client.until_closed().await;
    assert_only_disconnect(&last, ReasonCode::ServerShuttingDown);
}

/// Keep alive on the connection's one timer, polled by the loop's keep-alive wait: a ping
/// moves the deadline (1.5 times the keep alive after the last read), silence past it ends
/// the connection with 0x8D.
#[tokio::test]
async fn keep_alive_moves_with_each_read_and_expires_in_silence() {
    let broker = Broker::start("", roomy_log());
    let mut client = keep_alive_2s(&broker, "ka").await;
    for _ in 0..2 {
        // 2 s + 2 s: past the first deadline only if the ping did not move it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        client.send(Packet::PingReq).await;
        assert_eq!(client.recv().await, Packet::PingResp);
    }
    let last = client.until_closed().await;
    assert_only_disconnect(&last, ReasonCode::KeepAliveTimeout);
}

/// A packet larger than one read holds a lease of `mqtt.max_partial_packet_bytes_total` while
/// it arrives. Its bytes do not move the keep-alive clock (MQTT-3.1.2-24 counts control
/// packets); the packet does once whole. Main moved it at every read, so a client sending a
/// byte of a large PUBLISH now and then kept its lease, and with it a share of every
/// device's large packets, for as long as it liked.
#[tokio::test]
async fn the_bytes_of_a_large_packet_do_not_keep_its_connection_alive() {
    let broker = Broker::start("", roomy_log());
    let mut client = keep_alive_2s(&broker, "trickle").await;
    let mut large = BytesMut::new();
    let packet = publish("big", QoS::AtMostOnce, None, &[b'x'; 64 << 10]);
    mqtt::encode(&packet, ProtocolVersion::V5, &mut large).unwrap();
    // Sent slowly but whole within the window: it counts like any packet.
    for part in large.chunks(large.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(client.send_raw(part).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.send(Packet::PingReq).await;
    assert_eq!(
        client.recv().await,
        Packet::PingResp,
        "3.5 s after the CONNECT"
    );
    // Trickled: 16 bytes every 250 ms would take minutes; the window ends 3 s after the ping.
    let started = tokio::time::Instant::now();
    for part in large.chunks(16) {
        if started.elapsed() > Duration::from_secs(8) || !client.send_raw(part).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last = client.until_closed().await;
    assert_only_disconnect(&last, ReasonCode::KeepAliveTimeout);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the trickle kept the connection for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn clients_may_not_publish_to_sys_or_share_topics() {
    // Routes on the `$`-topics themselves: a denied publish is not stored even so.
    let broker = Broker::start(
        "[[route]]\nmqtt = \"$SYS/#\"\nkafka_topic = \"sys\"\n\n\
         [[route]]\nmqtt = \"$foo/#\"\nkafka_topic = \"foo\"\n",
        roomy_log(),
    );
    let mut watcher = broker.mqtt_client(ProtocolVersion::V5);
    watcher.connect("watcher").await;
    watcher.subscribe("$SYS/#", QoS::AtMostOnce, 1).await;
    watcher.subscribe("$foo/#", QoS::AtMostOnce, 2).await;
    let mut v5 = broker.mqtt_client(ProtocolVersion::V5);
    v5.connect("v5").await;
    v5.send_all(&[
        publish("$SYS/broker/uptime", QoS::AtLeastOnce, Some(1), b"0"),
        publish("$SYS/x", QoS::ExactlyOnce, Some(2), b"0"),
        publish("$share/g/t", QoS::AtLeastOnce, Some(3), b"0"),
        publish("$SYS/y", QoS::AtMostOnce, None, b"0"),
        publish("$foo/bar", QoS::AtLeastOnce, Some(4), b"ok"),
    ])
    .await;
    let mut acks = Vec::new();
    for _ in 0..4 {
        acks.push(ack(&v5.recv().await));
    }
    assert_eq!(
        acks,
        [
            ("PUBACK", 1, ReasonCode::NotAuthorized),
            ("PUBREC", 2, ReasonCode::NotAuthorized),
            ("PUBACK", 3, ReasonCode::NotAuthorized),
            ("PUBACK", 4, ReasonCode::Success),
        ]
    );
    // 3.1.1 has no reason code: a plain acknowledgement, as Mosquitto; the connection stays.
    let mut v311 = broker.mqtt_client(ProtocolVersion::V311);
    v311.connect("v311").await;
    v311.send_all(&[
        publish("$SYS/x", QoS::AtLeastOnce, Some(9), b"0"),
        Packet::PingReq,
    ])
    .await;
    let mut answers = [v311.recv().await, v311.recv().await];
    answers.sort_by_key(|p| matches!(p, Packet::PingResp));
    assert_eq!(ack(&answers[0]), ("PUBACK", 9, ReasonCode::Success));
    assert_eq!(answers[1], Packet::PingResp);
    // Only the ordinary `$`-topic was delivered and stored.
    match watcher.recv().await {
        Packet::Publish(p) => assert_eq!(p.topic.as_str(), "$foo/bar"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    watcher.expect_silence("nothing published on $SYS").await;
    let topics: Vec<String> = broker
        .records()
        .into_iter()
        .map(|r| r.topic.to_string())
        .collect();
    assert_eq!(topics, ["$foo/bar"]);
    assert_eq!(broker.mqtt.metrics.denied_count(), 5);
}

#[tokio::test]
async fn wills_take_the_ingest_path_with_their_client_id() {
    let broker = Broker::start(
        "[[route]]\nmqtt = \"w/#\"\nkafka_topic = \"wills\"\nkey = \"{client_id}\"\n",
        roomy_log(),
    );
    let mut watcher = broker.mqtt_client(ProtocolVersion::V5);
    watcher.connect("watcher").await;
    watcher.subscribe("w/#", QoS::AtMostOnce, 1).await;
    watcher.subscribe("$SYS/#", QoS::AtMostOnce, 2).await;
    for (client_id, topic) in [("dev-7", "w/dev-7"), ("sneaky", "$SYS/fake")] {
        let mut client = broker.mqtt_client(ProtocolVersion::V311);
        let mut connect = client.connect_packet(client_id);
        connect.will = Some(Will {
            topic: MqttString::try_from(topic).unwrap(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        });
        client.connect_with(connect).await;
        drop(client); // the connection breaks: the will is published
    }
    match watcher.recv().await {
        Packet::Publish(p) => assert_eq!(p.topic.as_str(), "w/dev-7"),
        other => panic!("expected the will, got {other:?}"),
    }
    watcher
        .expect_silence("a will on $SYS is not published")
        .await;
    let records = broker.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].client_id, "dev-7");
    let key = records[0].destination.as_ref().unwrap().key.clone();
    assert_eq!(key.as_deref(), Some(&b"dev-7"[..]));
    assert_eq!(broker.mqtt.metrics.denied_count(), 1);
}

#[tokio::test]
async fn shutdown_sends_the_acks_that_become_durable_then_disconnects() {
    // Records become durable only at the next periodic sync: at shutdown, acks are owed.
    let log = edge_log::LogConfig {
        fsync: edge_log::FsyncPolicy::Interval(Duration::from_millis(300)),
        ..roomy_log()
    };
    let broker = Broker::start(ROUTED, log);
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    client.connect("c").await;
    let mut packets: Vec<Packet> = (1..=50)
        .map(|id| publish("r/s", QoS::AtLeastOnce, Some(id), b"x"))
        .collect();
    packets.push(Packet::PingReq);
    client.send_all(&packets).await;
    // The PINGREQ is answered at once: everything before it was read and handed to the log.
    assert_eq!(client.recv().await, Packet::PingResp);
    broker.shutdown.cancel();
    let packets = client.until_closed().await;
    let (last, acks) = packets.split_last().unwrap();
    assert!(
        matches!(last, Packet::Disconnect(d) if d.reason_code == ReasonCode::ServerShuttingDown),
        "{last:?}"
    );
    let ids: Vec<(&str, u16, ReasonCode)> = acks.iter().map(ack).collect();
    let expected: Vec<(&str, u16, ReasonCode)> = (1..=50)
        .map(|id| ("PUBACK", id, ReasonCode::Success))
        .collect();
    assert_eq!(
        ids, expected,
        "every ack that became durable in time, in order"
    );
    assert_eq!(broker.records().len(), 50);
}

/// An idle connection costs mostly its task, allocated at the size of the serve future's
/// largest state for the connection's whole life. Held by value, the connection (~700 bytes)
/// was in that state four times over (`run` and `finish` each took `self`), beside the
/// CONNECT handling's state: 3,888 bytes per MQTT and 2,896 per NATS connection in a debug
/// build. Boxed once, the connection and the transient login/handshake states no longer
/// size the task. (Debug builds lay futures out larger than release ones.) The serve loop's
/// `select!` holds every branch's future at once: one wait for the kick and the shutdown (the
/// kick token a child of the shutdown's) and the rarely active branches (pacing, the state
/// gate) boxed took the MQTT one from 1,744 to 1,040 bytes; the keep-alive timer kept in
/// the connection (boxed, made once) instead of a `Sleep` made in every turn, to 960 (the
/// same in a release build without LTO). Then the kick wait went (takeover and shutdown
/// wake the session's `wake`, whose wait the loop had anyway), and the largest state was
/// the CONNECT wait's, beside `serve`'s arguments (an `async fn` keeps them for its whole
/// life): arguments boxed 816, the CONNECT wait and login boxed (they last until CONNACK)
/// 504, the end (drain and flush deadlines) boxed 424, the loop's helpers (`read_some`, the
/// keep-alive wait, `rarely`, the ingest wait) poll functions instead of `async fn`s (which
/// keep their arguments twice) and the state gate borrowed instead of cloned 256. Then the
/// loop's `select!` (every branch's future at once: the read, the write, the keep-alive
/// wait, the rarely active ones) became one poll function over the connection, beside the
/// `wake` wait alone, and the loop moved into the task's own `async fn` (each level kept its
/// own copies of the pointers it was given): 128. tokio allocates a task at the future's
/// size (+ 8 for the task tracker's token) + ~112 bytes, rounded up to 128: 256 bytes, where
/// it was 384, and 1,152 or more before that. With parking (`mqtt::park`), a resumed
/// connection's task runs the loop again, and the loop as an `async fn` awaited by the
/// login's took the task's future to 144 bytes (a task of 384); the login is now a task of
/// its own that spawns the loop, whose future alone is the long-lived one.
#[test]
fn the_connection_task_does_not_hold_the_connection_by_value() {
    const TASK_FUTURE_MAX: usize = 2048;
    const MQTT_TASK_FUTURE_MAX: usize = 128;
    let broker = Broker::start("", roomy_log());
    let mqtt = broker.mqtt_serve_future_bytes();
    let nats = broker.nats_serve_future_bytes();
    eprintln!("serve futures: MQTT {mqtt} bytes, NATS {nats} bytes");
    assert!(
        mqtt <= MQTT_TASK_FUTURE_MAX,
        "MQTT serve future: {mqtt} bytes"
    );
    assert!(nats <= TASK_FUTURE_MAX, "NATS serve future: {nats} bytes");
}

/// What the plain MQTT listener spawns is the serve future alone: an `async` block around it
/// kept the stream, the peer address and the pending place it captured (~130 bytes) in
/// every connection's task for its whole life (now the login's task, until CONNACK).
#[tokio::test]
async fn the_plain_listeners_task_is_the_serve_future_alone() {
    let broker = Broker::start("", roomy_log());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, peer) = listener.accept().await.unwrap();
    let pending = broker.mqtt.admission.arrive(peer.ip()).unwrap();
    let task = broker
        .mqtt
        .serve_plain(stream, peer, pending, broker.shutdown.clone());
    let bytes = std::mem::size_of_val(&task);
    eprintln!("plain MQTT task future: {bytes} bytes");
    assert_eq!(bytes, broker.mqtt_login_future_bytes());
}

/// An MQTT 5 client logged in as `client_id` with a keep alive of 2 s: the broker's deadline
/// is 3 s after the last packet.
async fn keep_alive_2s(broker: &Broker, client_id: &str) -> support::MqttClient {
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    let mut connect = client.connect_packet(client_id);
    connect.keep_alive = 2;
    client.connect_with(connect).await;
    client
}

/// The packets a client got before the broker closed its connection are one DISCONNECT with
/// `reason`.
#[track_caller]
fn assert_only_disconnect(last: &[Packet], reason: ReasonCode) {
    assert!(
        matches!(last, [Packet::Disconnect(d)] if d.reason_code == reason),
        "{last:?}"
    );
}

/// Publishes `packets` (QoS 1, ids from `first_id`) and returns their acknowledgements' ids and
/// reasons, in order.
async fn acks_of(
    client: &mut support::MqttClient,
    packets: &[Packet],
) -> Vec<(&'static str, u16, ReasonCode)> {
    client.send_all(packets).await;
    let mut acks = Vec::new();
    for _ in packets {
        acks.push(ack(&client.recv().await));
    }
    acks
}

/// The stored records' topics and payloads, in log order.
fn stored(broker: &Broker) -> Vec<(String, String)> {
    broker
        .records()
        .into_iter()
        .map(|r| {
            (
                r.topic.to_string(),
                String::from_utf8(r.payload.to_vec()).unwrap(),
            )
        })
        .collect()
}

/// A publish repeating a topic reuses what the connection decided for it (the topic, its
/// route, whether anyone subscribes), yet a route table reload between two publishes on one
/// topic is seen by the second: one that adds a route stores it, one that takes the route
/// away stops storing it; topics beyond the connection's table and longer than it keeps are
/// routed as any.
#[tokio::test]
async fn a_repeated_topic_follows_route_reloads() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut client = broker.mqtt_client(ProtocolVersion::V311);
    client.connect("pub").await;
    let reload = |toml: &str| {
        let reloaded =
            edge_broker::config::Config::parse(toml, std::path::Path::new("reload.toml")).unwrap();
        broker
            .mqtt
            .routes
            .replace(reloaded.compile_routes().unwrap());
    };
    let acked = |id| vec![("PUBACK", id, ReasonCode::Success)];
    let one =
        |topic: &str, id, payload: &[u8]| [publish(topic, QoS::AtLeastOnce, Some(id), payload)];
    assert_eq!(acks_of(&mut client, &one("u/x", 1, b"1")).await, acked(1));
    assert_eq!(acks_of(&mut client, &one("r/x", 2, b"2")).await, acked(2));
    reload("[[route]]\nmqtt = \"u/#\"\nkafka_topic = \"u\"\nkey = \"{topic.2}\"\n");
    assert_eq!(acks_of(&mut client, &one("u/x", 3, b"3")).await, acked(3));
    assert_eq!(acks_of(&mut client, &one("r/x", 4, b"4")).await, acked(4));
    reload("");
    assert_eq!(acks_of(&mut client, &one("u/x", 5, b"5")).await, acked(5));
    reload(ROUTED);
    // More topics than a connection keeps, twice round, and one longer than it keeps.
    let long = format!("r/{}", "l".repeat(300));
    let mut round: Vec<String> = (0..20).map(|i| format!("r/t{i}")).collect();
    round.push(long.clone());
    let packets: Vec<Packet> = round
        .iter()
        .chain(&round)
        .zip(10u16..)
        .map(|(topic, id)| publish(topic, QoS::AtLeastOnce, Some(id), b"n"))
        .collect();
    let acks = acks_of(&mut client, &packets).await;
    assert!(acks.iter().all(|a| a.2 == ReasonCode::Success), "{acks:?}");
    let records = broker.records();
    let u = records.iter().find(|r| r.topic == "u/x").unwrap();
    let destination = u.destination.as_ref().unwrap();
    assert_eq!(
        (&*destination.topic, destination.key.as_deref()),
        ("u", Some(&b"x"[..]))
    );
    let mut expected: Vec<(String, String)> =
        vec![("r/x".into(), "2".into()), ("u/x".into(), "3".into())];
    expected.extend(round.iter().chain(&round).map(|t| (t.clone(), "n".into())));
    assert_eq!(stored(&broker), expected);
    assert!(
        records[2..]
            .iter()
            .all(|r| &*r.destination.as_ref().unwrap().topic == "routed")
    );
}

/// A routed or unrouted topic nobody subscribed to when it was first published is published
/// without a message for local delivery; a subscriber that comes after gets the next publish
/// on it, one that leaves gets no more, and a retained publish is still kept for later
/// subscribers. The stored count counts the quiet records too.
#[tokio::test]
async fn a_repeated_topic_reaches_a_subscriber_that_came_after_it_and_retains() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    client.connect("pub").await;
    let first = [
        publish("r/a", QoS::AtLeastOnce, Some(1), b"1"),
        publish("u/a", QoS::AtLeastOnce, Some(2), b"1"),
    ];
    assert_eq!(acks_of(&mut client, &first).await.len(), 2);
    let mut sub = broker.mqtt_client(ProtocolVersion::V5);
    sub.connect("sub").await;
    sub.subscribe("r/a", QoS::AtLeastOnce, 1).await;
    sub.subscribe("u/a", QoS::AtLeastOnce, 2).await;
    let second = [
        publish("r/a", QoS::AtLeastOnce, Some(3), b"2"),
        publish("u/a", QoS::AtLeastOnce, Some(4), b"2"),
    ];
    assert_eq!(acks_of(&mut client, &second).await.len(), 2);
    let mut got = Vec::new();
    for _ in 0..2 {
        match sub.recv().await {
            Packet::Publish(p) => {
                got.push((p.topic.as_str().to_owned(), p.payload.to_vec()));
                if let Some(id) = p.packet_id {
                    sub.send(Packet::PubAck(PubAck::new(id))).await;
                }
            }
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
    got.sort();
    assert_eq!(
        got,
        [("r/a".into(), b"2".to_vec()), ("u/a".into(), b"2".to_vec())]
    );
    // Gone: nothing more for it (its session ended with the clean connection).
    drop(sub);
    let mut other = broker.mqtt_client(ProtocolVersion::V5);
    other.connect("other").await;
    // A retained publish on a topic known to have no subscriber is kept for a later one.
    let mut retained = publish("r/a", QoS::AtLeastOnce, Some(5), b"kept");
    if let Packet::Publish(p) = &mut retained {
        p.retain = true;
    }
    let third = [publish("r/a", QoS::AtLeastOnce, Some(6), b"3"), retained];
    assert_eq!(acks_of(&mut client, &third).await.len(), 2);
    other.subscribe("r/#", QoS::AtMostOnce, 1).await;
    match other.recv().await {
        Packet::Publish(p) => {
            assert_eq!(
                (p.topic.as_str(), &p.payload[..], p.retain),
                ("r/a", &b"kept"[..], true)
            )
        }
        other => panic!("expected the retained message, got {other:?}"),
    }
    other.expect_silence("only the retained message").await;
    assert_eq!(
        stored(&broker),
        [
            ("r/a".to_owned(), "1".to_owned()),
            ("r/a".into(), "2".into()),
            ("r/a".into(), "3".into()),
            ("r/a".into(), "kept".into()),
        ]
    );
    assert_eq!(
        broker
            .mqtt
            .metrics
            .stored
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

/// An ACL reload that takes away a topic a connection published to (and kept as allowed)
/// refuses the next publish on it; one that gives it back allows it again. A refusal, and a
/// reserved topic, is refused and counted at every publish.
#[tokio::test]
async fn a_repeated_topic_follows_acl_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite r/#\n").unwrap();
    let toml = format!(
        "[auth]\nacl_file = {:?}\n{ROUTED}",
        acl.display().to_string()
    );
    let broker = Broker::start(&toml, roomy_log());
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    client.connect("pub").await;
    let allowed = [
        publish("r/a", QoS::AtLeastOnce, Some(1), b"1"),
        publish("r/a", QoS::AtLeastOnce, Some(2), b"2"),
    ];
    let reasons = |acks: Vec<(&str, u16, ReasonCode)>| -> Vec<ReasonCode> {
        acks.into_iter().map(|a| a.2).collect()
    };
    assert_eq!(
        reasons(acks_of(&mut client, &allowed).await),
        [ReasonCode::Success; 2]
    );
    std::fs::write(&acl, "topic readwrite other/#\n").unwrap();
    broker.mqtt.auth.reload_from(&broker.config);
    let denied = [
        publish("r/a", QoS::AtLeastOnce, Some(3), b"3"),
        publish("r/a", QoS::AtLeastOnce, Some(4), b"4"),
        publish("$SYS/x", QoS::AtLeastOnce, Some(5), b"5"),
        publish("$SYS/x", QoS::AtLeastOnce, Some(6), b"6"),
    ];
    assert_eq!(
        reasons(acks_of(&mut client, &denied).await),
        [ReasonCode::NotAuthorized; 4]
    );
    assert_eq!(broker.mqtt.metrics.denied_count(), 4);
    std::fs::write(&acl, "topic readwrite r/#\n").unwrap();
    broker.mqtt.auth.reload_from(&broker.config);
    let again = [publish("r/a", QoS::AtLeastOnce, Some(7), b"7")];
    assert_eq!(
        reasons(acks_of(&mut client, &again).await),
        [ReasonCode::Success]
    );
    assert_eq!(
        stored(&broker),
        [
            ("r/a".to_owned(), "1".to_owned()),
            ("r/a".into(), "2".into()),
            ("r/a".into(), "7".into()),
        ]
    );
}

/// Topic aliases still name the topic a publish goes to when the topic's facts are kept: an
/// alias set, used, and set again to another topic.
#[tokio::test]
async fn topic_aliases_name_kept_topics() {
    let broker = Broker::start(ROUTED, roomy_log());
    let mut sub = broker.mqtt_client(ProtocolVersion::V5);
    sub.connect("sub").await;
    sub.subscribe("u/#", QoS::AtMostOnce, 1).await;
    let mut client = broker.mqtt_client(ProtocolVersion::V5);
    client.connect("pub").await;
    let aliased = |topic: &str, alias: u16, id: u16, payload: &[u8]| {
        let mut packet = publish(topic, QoS::AtLeastOnce, Some(id), payload);
        if let Packet::Publish(p) = &mut packet {
            p.properties.topic_alias = Some(alias);
        }
        packet
    };
    let packets = [
        aliased("r/a", 1, 1, b"1"),
        aliased("", 1, 2, b"2"),
        aliased("u/b", 1, 3, b"3"),
        aliased("", 1, 4, b"4"),
        aliased("r/a", 2, 5, b"5"),
        aliased("", 2, 6, b"6"),
        aliased("", 1, 7, b"7"),
    ];
    let acks = acks_of(&mut client, &packets).await;
    assert!(acks.iter().all(|a| a.2 == ReasonCode::Success), "{acks:?}");
    assert_eq!(
        stored(&broker),
        [
            ("r/a".to_owned(), "1".to_owned()),
            ("r/a".into(), "2".into()),
            ("r/a".into(), "5".into()),
            ("r/a".into(), "6".into()),
        ]
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        match sub.recv().await {
            Packet::Publish(p) => got.push((p.topic.as_str().to_owned(), p.payload.to_vec())),
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        [
            ("u/b".to_owned(), b"3".to_vec()),
            ("u/b".into(), b"4".to_vec()),
            ("u/b".into(), b"7".to_vec()),
        ]
    );
}
