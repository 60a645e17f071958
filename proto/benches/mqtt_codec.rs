//! MQTT codec micro-benchmark: decode and encode of typical packets, printed as a table.
//! Run: `cargo bench -p edge-proto --bench mqtt_codec`. No assertions on timings.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use edge_proto::mqtt::*;

fn t(s: &'static str) -> MqttString {
    MqttString::from_static(s).unwrap_or_default()
}

fn publish(payload: usize, props: bool) -> Packet {
    let properties = if props {
        PropertySet {
            user_properties: vec![(t("site"), t("gw-01")), (t("unit"), t("C"))],
            content_type: Some(t("application/json")),
            message_expiry_interval: Some(3600),
            ..PropertySet::default()
        }
        .into()
    } else {
        Properties::default()
    };
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: t("sensors/gw-01/temperature"),
        packet_id: Some(42),
        properties,
        payload: Bytes::from(vec![0x5A; payload]),
    })
}

/// Runs `f` repeatedly for about `budget` and returns (iterations, ns per iteration).
fn measure(budget: Duration, mut f: impl FnMut()) -> (u64, f64) {
    for _ in 0..1000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    (n, start.elapsed().as_nanos() as f64 / n as f64)
}

fn main() {
    let budget = Duration::from_millis(400);
    let cases: Vec<(&str, ProtocolVersion, Packet)> = vec![
        ("PUBLISH q1 64B", ProtocolVersion::V311, publish(64, false)),
        ("PUBLISH q1 64B", ProtocolVersion::V5, publish(64, false)),
        (
            "PUBLISH q1 64B +4 props",
            ProtocolVersion::V5,
            publish(64, true),
        ),
        (
            "PUBLISH q1 4KiB +4 props",
            ProtocolVersion::V5,
            publish(4096, true),
        ),
        (
            "PUBACK",
            ProtocolVersion::V5,
            Packet::PubAck(PubAck::new(42)),
        ),
        (
            "SUBSCRIBE 2 filters",
            ProtocolVersion::V5,
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![
                    SubscribeFilter {
                        filter: t("sensors/+/temperature"),
                        options: SubscriptionOptions::default(),
                    },
                    SubscribeFilter {
                        filter: t("$share/g/alerts/#"),
                        options: SubscriptionOptions::default(),
                    },
                ],
                properties: PropertySet {
                    subscription_identifiers: vec![7],
                    ..PropertySet::default()
                }
                .into(),
            }),
        ),
    ];
    println!(
        "| packet | version | bytes | decode ns/op | decode MB/s | encode ns/op | encode MB/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut scratch = BytesMut::with_capacity(8192);
    for (name, v, p) in cases {
        scratch.clear();
        let len = encode(&p, v, &mut scratch).unwrap_or(0);
        let wire = scratch.split().freeze();
        // Decode: copy the frame into a reused buffer as a socket read would, then decode.
        let mut buf = BytesMut::with_capacity(8192);
        let (_, dec_ns) = measure(budget, || {
            buf.extend_from_slice(&wire);
            let p = decode(&mut buf, v, 1 << 20);
            black_box(&p);
            drop(p);
            buf.reserve(wire.len());
        });
        let (_, enc_ns) = measure(budget, || {
            scratch.clear();
            let n = encode(black_box(&p), v, &mut scratch);
            black_box(n).ok();
        });
        let mbs = |ns: f64| len as f64 / ns * 1e9 / 1e6;
        println!(
            "| {name} | {v:?} | {len} | {dec_ns:.0} | {:.0} | {enc_ns:.0} | {:.0} |",
            mbs(dec_ns),
            mbs(enc_ns)
        );
    }
}
