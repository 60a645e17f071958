//! Freezes the on-disk formats of saved MQTT state:
//!
//! - `tests/data/state/00000000000000000001.journal`: state journal format version 1, with
//!   every record type. The current encoder must reproduce it byte for byte, and it must
//!   replay to the state spelled out below. Any format change fails here: add a version (and
//!   keep reading this one) instead of editing the sample.
//! - `tests/data/legacy/`: the snapshot files of the first release (see its README), which a
//!   first start migrates.
//!
//! Regenerate the journal sample (only for a deliberate new format version):
//! `EDGE_STATE_WRITE_SAMPLE=1 cargo test -p edge-broker --test state_format`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use edge_broker::hub::Delivery;
use edge_broker::message::{Message, MessageProperties, Origin};
use edge_broker::state::journal::Encoder;
use edge_broker::state::record::{Record, SessionImage, StoredDelivery, StoredSubscription};
use edge_broker::state::{Journal, replay};
use edge_log::testing::MemStorage;
use edge_log::{FsyncPolicy, StdStorage, Storage};
use edge_proto::mqtt::QoS;

const SAMPLE: &str = "tests/data/state/00000000000000000001.journal";
const LEGACY: &str = "tests/data/legacy";
const T0: u64 = 1_763_769_600_000;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn messages() -> [Arc<Message>; 3] {
    let full = Message {
        topic: "sensors/gw1/temperature".into(),
        payload: Bytes::from_static(b"{\"t\":21.5}"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: MessageProperties {
            payload_utf8: Some(true),
            expiry_secs: Some(3600),
            content_type: Some("application/json".into()),
            response_topic: Some("replies/7".into()),
            correlation_data: Some(Bytes::from_static(&[0, 255, 1])),
            user_properties: vec![("unit".into(), "celsius".into()), ("k".into(), "".into())],
        },
        received_ms: T0,
        origin: Origin::Mqtt,
        publisher: None,
        nats_subject: None,
    };
    let bare = Message {
        topic: "t/x".into(),
        payload: Bytes::from_static(&[0xde, 0xad]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: MessageProperties::default(),
        received_ms: T0 + 1,
        origin: Origin::Nats,
        publisher: None,
        nats_subject: None,
    };
    let retained = Message {
        topic: "status/gw1".into(),
        payload: Bytes::from_static(b"online"),
        retain: true,
        received_ms: T0 + 2,
        ..bare.clone()
    };
    [Arc::new(full), Arc::new(bare), Arc::new(retained)]
}

fn delivery(message: &Arc<Message>, qos: QoS) -> Delivery {
    Delivery {
        message: Arc::clone(message),
        qos,
        retain: false,
        subscription_ids: vec![7, 300],
    }
}

fn stored(enc: &mut Encoder<'_>, d: &Delivery) -> StoredDelivery {
    StoredDelivery::new(d, enc.message(&d.message))
}

const OPTIONS: StoredSubscription = StoredSubscription {
    qos: QoS::ExactlyOnce,
    no_local: true,
    retain_as_published: true,
    id: Some(7),
};

/// Writes the sample (every record type) with the current encoder; returns the file's bytes.
fn write_sample() -> Vec<u8> {
    let storage = MemStorage::new();
    let dir = PathBuf::from("/sample");
    let journal = Journal::create(
        Arc::clone(&storage) as Arc<dyn Storage>,
        &dir,
        FsyncPolicy::Always,
        1,
        0x0123_4567_89ab_cdef,
    )
    .unwrap();
    let [full, bare, retained] = messages();
    let (d_full, d_bare) = (
        delivery(&full, QoS::ExactlyOnce),
        delivery(&bare, QoS::AtLeastOnce),
    );
    journal.append(|enc| {
        let queue = vec![stored(enc, &d_bare)];
        let inflight = vec![(3, true, stored(enc, &d_full))];
        enc.record(&Record::SessionImage(SessionImage {
            sid: 1,
            client_id: "imaged".into(),
            expiry_secs: u32::MAX,
            disconnected_at_ms: Some(T0),
            subscriptions: vec![("$share/g/sensors/#".into(), OPTIONS)],
            queue,
            inflight,
            inbound_qos2: vec![4, 65535],
        }));
        let id = enc.message(&retained);
        enc.record(&Record::RetainSet { id });
    });
    // Flushes cut frames at fixed points (the writer thread otherwise takes them whenever).
    journal.flush_blocking().unwrap();
    journal.end_checkpoint();
    journal.flush_blocking().unwrap();
    journal.append(|enc| {
        let sid = 2;
        enc.record(&Record::SessionOpen {
            sid,
            client_id: "fresh".into(),
            expiry_secs: 60,
        });
        enc.record(&Record::Subscribe {
            sid,
            filter: "a/+".into(),
            options: OPTIONS,
        });
        enc.record(&Record::Subscribe {
            sid,
            filter: "b".into(),
            options: StoredSubscription {
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                id: None,
            },
        });
        enc.record(&Record::Unsubscribe {
            sid,
            filter: "a/+".into(),
        });
        let delivery = stored(enc, &d_full);
        enc.record(&Record::Enqueue { sid, delivery });
        let delivery = stored(enc, &d_bare);
        enc.record(&Record::EnqueueFront { sid, delivery });
        enc.record(&Record::Dequeue { sid });
        let deliveries = vec![stored(enc, &d_bare), stored(enc, &d_full)];
        enc.record(&Record::QueueImage { sid, deliveries });
        let delivery = stored(enc, &d_full);
        enc.record(&Record::InFlight {
            sid,
            packet_id: 9,
            released: false,
            delivery,
        });
        enc.record(&Record::Released { sid, packet_id: 9 });
        let delivery = stored(enc, &d_bare);
        enc.record(&Record::InFlight {
            sid,
            packet_id: 10,
            released: false,
            delivery,
        });
        enc.record(&Record::Completed { sid, packet_id: 10 });
        enc.record(&Record::InboundQos2 { sid, packet_id: 11 });
        enc.record(&Record::InboundQos2 { sid, packet_id: 12 });
        enc.record(&Record::InboundQos2Done { sid, packet_id: 11 });
        enc.record(&Record::Online {
            sid,
            expiry_secs: 90,
        });
        enc.record(&Record::Offline {
            sid,
            at_ms: T0 + 5,
            expiry_secs: 120,
        });
        enc.record(&Record::SessionOpen {
            sid: 3,
            client_id: "gone".into(),
            expiry_secs: 1,
        });
        enc.record(&Record::SessionEnd { sid: 3 });
        let id = enc.message(&retained);
        enc.record(&Record::RetainSet { id });
        enc.record(&Record::RetainClear {
            topic: "status/gw1".into(),
        });
        let id = enc.message(&full);
        enc.record(&Record::RetainSet { id });
    });
    journal.flush_blocking().unwrap();
    drop(journal);
    storage
        .contents(&dir.join("00000000000000000001.journal"))
        .unwrap()
}

#[test]
fn the_encoder_reproduces_the_checked_in_journal() {
    let bytes = write_sample();
    if std::env::var_os("EDGE_STATE_WRITE_SAMPLE").is_some() {
        std::fs::create_dir_all(data(SAMPLE).parent().unwrap()).unwrap();
        std::fs::write(data(SAMPLE), &bytes).unwrap();
    }
    let sample = std::fs::read(data(SAMPLE)).unwrap();
    assert_eq!(
        bytes, sample,
        "the journal format changed: add a version instead of editing {SAMPLE}"
    );
}

#[test]
fn the_checked_in_journal_replays_to_its_state() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        data(SAMPLE),
        dir.path().join("00000000000000000001.journal"),
    )
    .unwrap();
    let (model, report) = replay::load(&StdStorage, dir.path());
    assert_eq!(report.generations, vec![1]);
    assert!(
        report.torn.is_none() && report.quarantined.is_empty(),
        "{report:?}"
    );
    assert_eq!(model.skipped, 0);
    assert_eq!(report.next_generation, 2);
    let [full, bare, _] = messages();
    let summary = |d: &Delivery| {
        (
            (*d.message).clone(),
            d.qos,
            d.retain,
            d.subscription_ids.clone(),
        )
    };

    assert_eq!(
        model.sessions.keys().collect::<Vec<_>>(),
        ["fresh", "imaged"]
    );
    let imaged = &model.sessions["imaged"];
    assert_eq!(imaged.expiry_secs, u32::MAX);
    assert_eq!(imaged.disconnected_at_ms, Some(T0));
    let subs: Vec<_> = imaged.subscriptions.iter().collect();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].0, "$share/g/sensors/#");
    assert_eq!(*subs[0].1, OPTIONS);
    let queue: Vec<_> = imaged.queue.iter().map(summary).collect();
    assert_eq!(
        queue,
        vec![((*bare).clone(), QoS::AtLeastOnce, false, vec![7, 300])]
    );
    let (released, d) = &imaged.inflight[&3];
    assert!(*released);
    assert_eq!(
        summary(d),
        ((*full).clone(), QoS::ExactlyOnce, false, vec![7, 300])
    );
    assert_eq!(
        imaged.inbound_qos2.iter().copied().collect::<Vec<_>>(),
        vec![4, 65535]
    );
    assert!(
        Arc::ptr_eq(
            &imaged.inflight[&3].1.message,
            &model.retained["sensors/gw1/temperature"]
        ),
        "a message referenced twice is restored once"
    );

    let fresh = &model.sessions["fresh"];
    assert_eq!(
        (fresh.expiry_secs, fresh.disconnected_at_ms),
        (120, Some(T0 + 5))
    );
    assert_eq!(fresh.subscriptions.keys().collect::<Vec<_>>(), ["b"]);
    let queue: Vec<_> = fresh
        .queue
        .iter()
        .map(|d| d.message.topic.to_string())
        .collect();
    assert_eq!(queue, ["t/x", "sensors/gw1/temperature"]);
    assert_eq!(fresh.inflight.keys().collect::<Vec<_>>(), [&9]);
    assert!(fresh.inflight[&9].0);
    assert_eq!(fresh.inbound_qos2.iter().collect::<Vec<_>>(), [&12]);

    assert_eq!(
        model.retained.keys().collect::<Vec<_>>(),
        ["sensors/gw1/temperature"]
    );
    assert_eq!(*model.retained["sensors/gw1/temperature"], *full);
}

#[test]
fn the_first_release_snapshot_files_migrate_whole() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["sessions.bin", "retained.bin"] {
        std::fs::copy(data(LEGACY).join(name), dir.path().join(name)).unwrap();
    }
    let (model, report) = replay::load(&StdStorage, dir.path());
    assert!(
        report.migrated && report.quarantined.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.legacy_files.len(), 2);
    assert_eq!(
        model.sessions.keys().collect::<Vec<_>>(),
        ["legacy-311", "legacy-v5"]
    );
    let s311 = &model.sessions["legacy-311"];
    assert_eq!(s311.expiry_secs, u32::MAX);
    assert!(s311.disconnected_at_ms.is_some());
    assert_eq!(
        s311.subscriptions.keys().collect::<Vec<_>>(),
        ["legacy/#", "legacy0/#"]
    );
    let queued: Vec<_> = s311
        .queue
        .iter()
        .map(|d| (&*d.message.topic, d.message.payload.clone(), d.qos))
        .collect();
    assert_eq!(
        queued,
        (0..3)
            .map(|i| ("legacy/t", Bytes::from(format!("q{i}")), QoS::AtLeastOnce))
            .collect::<Vec<_>>()
    );
    let s5 = &model.sessions["legacy-v5"];
    assert_eq!(
        s5.subscriptions.keys().collect::<Vec<_>>(),
        ["$share/grp/legacy-shared/#", "legacy5/+"]
    );
    assert_eq!(s5.subscriptions["legacy5/+"].id, Some(7));
    let (released, inflight) = &s5.inflight[&1];
    assert!(!released);
    let p = &inflight.message.properties;
    assert_eq!(&inflight.message.payload[..], b"unacked");
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.correlation_data.as_deref(), Some(&[1u8, 2][..]));
    assert_eq!(p.user_properties, vec![("k".to_owned(), "v".to_owned())]);
    assert_eq!(inflight.subscription_ids, vec![7]);
    let queued: Vec<_> = s5
        .queue
        .iter()
        .map(|d| (d.message.payload.clone(), d.qos))
        .collect();
    assert_eq!(
        queued,
        vec![(Bytes::from_static(b"queued"), QoS::ExactlyOnce)]
    );
    let retained: Vec<_> = model
        .retained
        .values()
        .map(|m| {
            (
                &*m.topic,
                m.payload.clone(),
                m.properties.user_properties.clone(),
            )
        })
        .collect();
    assert_eq!(
        retained,
        vec![
            ("legacy-retained/a", Bytes::from_static(b"ra"), vec![]),
            (
                "legacy-retained/b",
                Bytes::from_static(b"rb"),
                vec![("rk".to_owned(), "rv".to_owned())]
            ),
        ]
    );
}
