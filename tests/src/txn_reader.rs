//! A wire-level `read_committed` reader for brokers that do not give read_committed semantics
//! themselves: Tansu 0.6 never lists aborted transactions in its Fetch answers, so librdkafka
//! shows the records of aborted transactions to read_committed consumers
//! (`tests/tests/tansu_transactions.rs`).
//!
//! It computes what Kafka's protocol defines instead: it fetches every batch of a partition
//! with `isolation_level = read_uncommitted` (Fetch v4, uncompressed batches only — the tests
//! that use it forward with `compression = "none"`), reads the control batches (a control
//! record's key is `version i16 | type i16`, type 0 = abort, 1 = commit) and, per producer id,
//! keeps the records of a transaction when its commit marker comes and drops them when its
//! abort marker comes; records of a transaction with no marker yet (open) are left out, as a
//! read_committed consumer stops at the last stable offset. Non-transactional records are kept.
//! Checked against librdkafka where the two must agree (`exactly_once.rs`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::kafka::ReadRecord;

/// Fetch version used (topic names, isolation level, not flexible).
const FETCH_VERSION: i16 = 4;

/// What the reader found.
#[derive(Debug, Default)]
pub struct CommittedRead {
    /// The records read_committed defines, per partition in offset order.
    pub records: Vec<ReadRecord>,
    /// Records of aborted transactions (dropped).
    pub aborted: usize,
    /// Records of transactions with no marker yet (left out).
    pub open: usize,
    /// Commit markers seen.
    pub commits: usize,
    /// Abort markers seen.
    pub aborts: usize,
    /// Records of a transaction that got no marker of its own before the same producer id
    /// wrote with a later epoch (Kafka writes a marker to every partition of a transaction;
    /// Tansu 0.6 sometimes does not). Read as Kafka's algorithm reads them: the next marker
    /// of the producer id decides them.
    pub orphaned: usize,
}

/// A connection to `bootstrap` for [`all_records`].
fn connect(bootstrap: &str) -> TcpStream {
    let conn = TcpStream::connect(bootstrap).expect("connect to Kafka");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn
}

/// Every record of the partition up to its high watermark (read_uncommitted), control
/// records included, once each, in offset order (a Fetch may return a batch that begins
/// before the offset asked for; its records before it are skipped, as Kafka clients do).
fn all_records(conn: &mut TcpStream, topic: &str, partition: i32) -> Vec<Record> {
    let mut all = Vec::new();
    let mut offset = 0i64;
    let mut correlation = 0;
    // A busy broker may answer a Fetch with no records before its high watermark: asked again.
    let mut empty_answers = 0;
    let mut checked_end: Option<i64> = None;
    loop {
        correlation += 1;
        let (high_watermark, records) = fetch(conn, topic, partition, offset, correlation);
        let before = offset;
        for r in records {
            if r.offset >= offset {
                offset = r.offset + 1;
                all.push(r);
            }
        }
        if offset >= high_watermark {
            // The end as this answer saw it; a broker that is still catching up (Tansu caches
            // high watermarks) may know more a moment later: asked until two answers agree.
            if offset == before && checked_end == Some(high_watermark) {
                return all;
            }
            checked_end = Some(high_watermark);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        checked_end = None;
        if offset == before {
            empty_answers += 1;
            assert!(
                empty_answers < 200,
                "{topic}/{partition}: no records at offset {offset} below the high watermark {high_watermark}"
            );
            std::thread::sleep(Duration::from_millis(50));
        } else {
            empty_answers = 0;
        }
    }
}

/// Reads partitions `0..partitions` of `topic` from `bootstrap` (the broker that leads them)
/// to their high watermarks, and keeps what read_committed defines (see the module docs).
pub fn read_committed_by_markers(bootstrap: &str, topic: &str, partitions: i32) -> CommittedRead {
    let mut conn = connect(bootstrap);
    let mut out = CommittedRead::default();
    for partition in 0..partitions {
        let mut pending: HashMap<i64, Vec<Record>> = HashMap::new();
        let mut kept: Vec<Record> = Vec::new();
        for record in all_records(&mut conn, topic, partition) {
            if record.control {
                let kind = record
                    .key
                    .as_ref()
                    .filter(|k| k.len() >= 4)
                    .map(|k| i16::from_be_bytes([k[2], k[3]]))
                    .expect("a control record's key holds its type");
                let txn = pending.remove(&record.producer_id).unwrap_or_default();
                match kind {
                    0 => {
                        out.aborts += 1;
                        out.aborted += txn.len();
                    }
                    1 => {
                        out.commits += 1;
                        kept.extend(txn);
                    }
                    other => panic!("unknown control record type {other}"),
                }
            } else if record.transactional {
                let txn = pending.entry(record.producer_id).or_default();
                if txn
                    .last()
                    .is_some_and(|r| r.producer_epoch != record.producer_epoch)
                {
                    out.orphaned += txn.len();
                }
                txn.push(record);
            } else {
                kept.push(record);
            }
        }
        out.open += pending.values().map(Vec::len).sum::<usize>();
        kept.sort_by_key(|r| r.offset);
        out.records
            .extend(kept.into_iter().map(|r| read_record(partition, r)));
    }
    out
}

/// What partition `partition` of `topic` holds, for a test's failure report: runs of records
/// of one producer id and epoch, `offsets first..=last pid/epoch data|txn|commit|abort`.
pub fn describe_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<String> {
    let mut runs: Vec<(i64, i64, i64, i16, &str)> = Vec::new();
    for r in all_records(&mut connect(bootstrap), topic, partition) {
        let kind = if r.control {
            match r.key.as_ref().filter(|k| k.len() >= 4).map(|k| k[3]) {
                Some(0) => "abort",
                Some(1) => "commit",
                _ => "control?",
            }
        } else if r.transactional {
            "txn"
        } else {
            "data"
        };
        match runs.last_mut() {
            Some(run)
                if run.2 == r.producer_id
                    && run.3 == r.producer_epoch
                    && run.4 == kind
                    && run.1 + 1 == r.offset =>
            {
                run.1 = r.offset;
            }
            _ => runs.push((r.offset, r.offset, r.producer_id, r.producer_epoch, kind)),
        }
    }
    runs.into_iter()
        .map(|(a, b, pid, epoch, kind)| format!("offsets {a}..={b} {pid}/{epoch} {kind}"))
        .collect()
}

/// One Fetch (read_uncommitted) from `offset`: the high watermark and the records of every
/// batch returned, control records included.
fn fetch(
    conn: &mut TcpStream,
    topic: &str,
    partition: i32,
    offset: i64,
    correlation: i32,
) -> (i64, Vec<Record>) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_isolation_level(0)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(8 << 20),
                ]),
        ]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("txn-reader")));
    let mut body = BytesMut::new();
    header
        .encode(
            &mut body,
            ApiKey::Fetch.request_header_version(FETCH_VERSION),
        )
        .unwrap();
    req.encode(&mut body, FETCH_VERSION).unwrap();
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    conn.write_all(&frame).expect("send Fetch");
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).expect("Fetch answer");
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    conn.read_exact(&mut answer).expect("Fetch answer");
    let mut answer = Bytes::from(answer);
    let got = ResponseHeader::decode(
        &mut answer,
        ApiKey::Fetch.response_header_version(FETCH_VERSION),
    )
    .unwrap();
    assert_eq!(got.correlation_id, correlation);
    let resp = FetchResponse::decode(&mut answer, FETCH_VERSION).expect("decode Fetch answer");
    let p = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .expect("the Fetch answer names the partition");
    assert_eq!(p.error_code, 0, "Fetch of {topic}/{partition} refused");
    let mut records = Vec::new();
    if let Some(mut data) = p.records.clone() {
        while data.len() >= 61 {
            match RecordBatchDecoder::decode(&mut data) {
                Ok(set) => records.extend(set.records),
                // A batch cut short at the end of the answer: fetched again from its offset.
                Err(_) => break,
            }
        }
    }
    (p.high_watermark, records)
}

fn read_record(partition: i32, r: Record) -> ReadRecord {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    ReadRecord {
        partition,
        offset: r.offset,
        key: r.key.as_ref().map(text),
        value: r.value.as_ref().map(text),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_ref().map(text)))
            .collect(),
    }
}
