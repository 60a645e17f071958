//! Where records Kafka refuses for good go, so one poison record cannot stall the stream:
//! a JSON-lines file (default `data_dir/dead-letter`) or a Kafka topic.
//!
//! File lines are self-contained and fsynced before the cursor moves past the record:
//! `{"node":..,"offset":N,"timestamp_ms":N,"source":"mqtt","topic":..,"client_id":..,
//! "kafka_topic":..,"partition":N,"error":..,"headers":[[key,hex]..],"payload_hex":..}`.
//! A dead-letter topic gets the same JSON without the payload (it was too large or invalid
//! for Kafka in the first place), with the record's `edge-*` headers.

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use thiserror::Error;

use crate::headers::{EDGE_NODE, EDGE_OFFSET, EDGE_SOURCE, EDGE_TOPIC, Record, RecordHeader};
use crate::producer::{KafkaProducer, ProduceError, ProduceRecord};
use crate::topition::Topition;

/// Where dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSink {
    /// Append JSON lines to this file (created with its directory if missing).
    File(PathBuf),
    /// Produce a JSON description to this Kafka topic (partition 0).
    Topic(String),
}

/// A dead letter could not be written.
#[derive(Debug, Error)]
pub enum DeadLetterError {
    /// Writing or syncing the dead-letter file failed.
    #[error("dead-letter file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The blocking task writing the file failed.
    #[error("dead-letter file {path}: writer task failed: {reason}")]
    Task {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The dead-letter topic did not take them.
    #[error("dead-letter topic {topic}: {source}")]
    Topic {
        /// The topic.
        topic: String,
        /// Kafka's error.
        source: ProduceError,
    },
}

/// A record Kafka refused for good (the forwarder writes it to the sink).
#[derive(Debug)]
pub struct DeadLetter {
    /// Where it was to go.
    pub tp: Topition,
    /// Its log offset.
    pub offset: u64,
    /// Why Kafka refused it.
    pub error: ProduceError,
}

/// Writes `letters` (about `records`, found by offset) to `sink`: appended to the file and
/// fdatasynced, or produced to the topic and acknowledged. One attempt; the caller retries.
pub async fn write<P: KafkaProducer>(
    sink: &DeadLetterSink,
    node: &str,
    producer: &P,
    records: &[Record],
    letters: &[DeadLetter],
) -> Result<(), DeadLetterError> {
    let letters: Vec<Letter<'_>> = letters
        .iter()
        .filter_map(|dl| {
            let i = records
                .binary_search_by_key(&dl.offset, |r| r.offset)
                .ok()?;
            Some(Letter {
                node,
                record: &records[i],
                kafka_topic: dl.tp.topic(),
                partition: dl.tp.partition(),
                error: dl.error.to_string(),
            })
        })
        .collect();
    match sink {
        DeadLetterSink::File(path) => {
            let lines: Vec<String> = letters.iter().map(|l| l.to_json(true)).collect();
            let file = path.clone();
            tokio::task::spawn_blocking(move || append_file(&file, &lines))
                .await
                .map_err(|e| DeadLetterError::Task {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
        }
        DeadLetterSink::Topic(topic) => {
            let batch: Vec<ProduceRecord> = letters.iter().map(Letter::to_produce_record).collect();
            producer
                .produce(&Topition::new(topic.as_str(), 0), &batch)
                .await
                .map(drop)
                .map_err(|source| DeadLetterError::Topic {
                    topic: topic.clone(),
                    source,
                })
        }
    }
}

/// One dead-lettered record and why.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    /// Gateway id.
    pub node: &'a str,
    /// The record as read from the log.
    pub record: &'a Record,
    /// Kafka topic it was routed to.
    pub kafka_topic: &'a str,
    /// Partition it was routed to.
    pub partition: i32,
    /// Kafka's (or our producer's) reason.
    pub error: String,
}

impl Letter<'_> {
    /// The JSON line for this letter (no trailing newline).
    pub fn to_json(&self, with_payload: bool) -> String {
        let r = self.record;
        let mut s = String::with_capacity(256 + r.payload.len() * 2);
        s.push_str("{\"node\":");
        json_str(&mut s, self.node);
        s.push_str(&format!(
            ",\"offset\":{},\"timestamp_ms\":{},\"source\":\"{}\",\"topic\":",
            r.offset,
            r.timestamp_ms,
            r.source.as_str()
        ));
        json_str(&mut s, &r.topic);
        s.push_str(",\"client_id\":");
        json_str(&mut s, &r.client_id);
        s.push_str(",\"kafka_topic\":");
        json_str(&mut s, self.kafka_topic);
        s.push_str(&format!(",\"partition\":{},\"error\":", self.partition));
        json_str(&mut s, &self.error);
        s.push_str(",\"headers\":[");
        for (i, h) in r.headers.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            json_str(&mut s, &h.key);
            s.push_str(",\"");
            hex(&mut s, &h.value);
            s.push_str("\"]");
        }
        s.push(']');
        s.push_str(&format!(",\"payload_bytes\":{}", r.payload.len()));
        if with_payload {
            s.push_str(",\"payload_hex\":\"");
            hex(&mut s, &r.payload);
            s.push('"');
        }
        s.push('}');
        s
    }

    /// The record produced to a dead-letter topic.
    pub fn to_produce_record(&self) -> ProduceRecord {
        let r = self.record;
        let h = |k: &'static str, v: Bytes| RecordHeader::new(Bytes::from_static(k.as_bytes()), v);
        ProduceRecord {
            key: None,
            value: Some(Bytes::from(self.to_json(false))),
            edge: None,
            headers: vec![
                h(EDGE_NODE, Bytes::from(self.node.to_owned())),
                h(EDGE_OFFSET, Bytes::from(r.offset.to_string())),
                h(
                    EDGE_SOURCE,
                    Bytes::from_static(r.source.as_str().as_bytes()),
                ),
                h(EDGE_TOPIC, Bytes::from(r.topic.clone())),
            ],
            timestamp_ms: i64::try_from(r.timestamp_ms).unwrap_or(i64::MAX),
        }
    }
}

/// Appends `lines` to the dead-letter file and fdatasyncs it (blocking; call from a blocking
/// task).
pub fn append_file(path: &std::path::Path, lines: &[String]) -> Result<(), DeadLetterError> {
    let io = |source| DeadLetterError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let mut buf = String::new();
    for line in lines {
        buf.push_str(line);
        buf.push('\n');
    }
    file.write_all(buf.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{Header, Source};

    #[test]
    fn letters_are_one_json_line_each_and_the_file_is_appended() {
        let record = Record {
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            source: Source::Mqtt,
            topic: "sensors/\"a\"\n".into(),
            client_id: "c".into(),
            destination: None,
            headers: vec![Header {
                key: "unit".into(),
                value: Bytes::from_static(b"\x01C"),
            }],
            payload: Bytes::from_static(b"\xff\x00"),
        };
        let letter = Letter {
            node: "gw",
            record: &record,
            kafka_topic: "t",
            partition: 3,
            error: "MESSAGE_TOO_LARGE".into(),
        };
        let line = letter.to_json(true);
        assert_eq!(
            line,
            "{\"node\":\"gw\",\"offset\":7,\"timestamp_ms\":1700000000000,\"source\":\"mqtt\",\
             \"topic\":\"sensors/\\\"a\\\"\\n\",\"client_id\":\"c\",\"kafka_topic\":\"t\",\
             \"partition\":3,\"error\":\"MESSAGE_TOO_LARGE\",\"headers\":[[\"unit\",\"0143\"]],\
             \"payload_bytes\":2,\"payload_hex\":\"ff00\"}"
        );
        assert!(!letter.to_json(false).contains("payload_hex"));
        let dir = std::env::temp_dir().join(format!("edge-dl-{}", std::process::id()));
        let path = dir.join("sub/dead-letter");
        append_file(&path, std::slice::from_ref(&line)).unwrap();
        append_file(&path, std::slice::from_ref(&line)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let _ = std::fs::remove_dir_all(dir);
        let p = letter.to_produce_record();
        assert_eq!(p.headers[1].value, Bytes::from_static(b"7"));
    }
}
