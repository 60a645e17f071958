//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use edge_log::{FsyncPolicy, Header, LogConfig, NewRecord, Source, WhenFull};

pub fn rec(i: u64, payload_len: usize) -> NewRecord {
    NewRecord {
        timestamp_ms: 1_700_000_000_000 + i,
        source: if i.is_multiple_of(2) {
            Source::Mqtt
        } else {
            Source::Nats
        },
        topic: format!("sensors/{}/temperature", i % 7).into(),
        client_id: format!("dev-{}", i % 3).into(),
        destination: edge_log::Destination::topic("t"),
        headers: if i.is_multiple_of(3) {
            vec![Header {
                key: "unit".into(),
                value: Bytes::from(format!("c{i}")),
            }]
        } else {
            Vec::new()
        },
        payload: Bytes::from(
            (0..payload_len)
                .map(|j| (i as usize + j) as u8)
                .collect::<Vec<u8>>(),
        ),
    }
}

pub fn small_config(dir: impl Into<PathBuf>) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        max_bytes: 1 << 20,
        fsync: FsyncPolicy::Always,
        when_full: WhenFull::Block,
        max_record_bytes: 256,
        ..LogConfig::new(dir)
    }
}

pub fn same(r: &edge_log::Record, n: &NewRecord) -> bool {
    r.timestamp_ms == n.timestamp_ms
        && r.source == n.source
        && *r.topic == *n.topic
        && *r.client_id == *n.client_id
        && r.headers == n.headers
        && r.payload == n.payload
}
