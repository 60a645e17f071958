//! The dead-letter file: one JSON object a line, written by the forwarder
//! (`edge_bridge::dead_letter`) for each record Kafka refused for good:
//! `{"node","offset","timestamp_ms","source","topic","client_id","kafka_topic","partition",
//! "error","headers":[[key,hex]..],"payload_bytes","payload_hex"}`.
//!
//! A line that does not parse is reported by number and kept as it is (never dropped).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Decodes lower- or upper-case hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Why dead letters cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The file exists but cannot be read.
    #[error("dead-letter file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Dead letters go to a Kafka topic, not a file.
    #[error(
        "dead letters go to the Kafka topic {topic} (kafka.dead_letter), not to a file: read them there"
    )]
    InKafka {
        /// The topic.
        topic: String,
    },
}

/// One dead-lettered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Gateway id.
    pub node: String,
    /// Its offset in the log it came from.
    pub offset: u64,
    /// Ingest time, unix ms.
    pub timestamp_ms: u64,
    /// `mqtt` or `nats`.
    pub source: String,
    /// MQTT topic or NATS subject.
    pub topic: String,
    /// Publishing client.
    pub client_id: String,
    /// Kafka topic it was sent to.
    pub kafka_topic: String,
    /// Partition it was sent to.
    pub partition: i32,
    /// Why Kafka refused it.
    pub error: String,
    /// MQTT 5 user properties / NATS headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload, when the letter kept it.
    pub payload: Option<Vec<u8>>,
    /// The line as written (kept verbatim when the letter stays).
    pub line: String,
}

/// The file as written.
#[derive(Debug, Deserialize)]
struct Line {
    node: String,
    offset: u64,
    timestamp_ms: u64,
    source: String,
    topic: String,
    client_id: String,
    kafka_topic: String,
    partition: i32,
    error: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    payload_hex: Option<String>,
}

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetters {
    /// The letters, in file order.
    pub letters: Vec<DeadLetter>,
    /// Lines that are not letters: (line number from 1, the line, why).
    pub unreadable: Vec<(usize, String, String)>,
    /// The file does not exist (no record was ever refused).
    pub missing: bool,
}

/// Reads the dead-letter file at `path` (a missing file holds no letters).
pub fn read(path: &Path) -> Result<DeadLetters, DeadLetterError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DeadLetters {
                missing: true,
                ..DeadLetters::default()
            });
        }
        Err(error) => {
            return Err(DeadLetterError::Io {
                path: path.to_owned(),
                error,
            });
        }
    };
    Ok(parse(&text))
}

/// Parses the file's text.
pub fn parse(text: &str) -> DeadLetters {
    let mut found = DeadLetters::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match letter(line) {
            Ok(letter) => found.letters.push(letter),
            Err(why) => found.unreadable.push((i + 1, line.to_owned(), why)),
        }
    }
    found
}

fn letter(line: &str) -> Result<DeadLetter, String> {
    let raw: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let headers = raw
        .headers
        .into_iter()
        .map(|(key, value)| {
            unhex(&value)
                .map(|v| (key.clone(), v))
                .ok_or_else(|| format!("header {key:?}: value is not hex"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let payload = match raw.payload_hex {
        Some(hex) => Some(unhex(&hex).ok_or("payload_hex is not hex")?),
        None => None,
    };
    Ok(DeadLetter {
        node: raw.node,
        offset: raw.offset,
        timestamp_ms: raw.timestamp_ms,
        source: raw.source,
        topic: raw.topic,
        client_id: raw.client_id,
        kafka_topic: raw.kafka_topic,
        partition: raw.partition,
        error: raw.error,
        headers,
        payload,
        line: line.to_owned(),
    })
}

/// The heading of `log dead-letters`.
pub fn summary(file: &Path, found: &DeadLetters) -> String {
    let mut out = if found.missing || found.letters.is_empty() && found.unreadable.is_empty() {
        format!(
            "no dead letters ({} {})\n",
            file.display(),
            if found.missing {
                "does not exist"
            } else {
                "is empty"
            }
        )
    } else {
        format!(
            "{} dead letter(s) in {}; after fixing the cause, `edge-broker log requeue` appends \
             them to the log again (broker stopped)\n",
            found.letters.len(),
            file.display()
        )
    };
    for (n, _, why) in &found.unreadable {
        out.push_str(&format!(
            "line {n}: not a dead letter ({why}); left as it is\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use edge_bridge::dead_letter::Letter;
    use edge_bridge::headers::{Header, Record, Source};

    #[test]
    fn hex_fields_decode_in_either_case_and_refuse_odd_or_bad_digits() {
        assert_eq!(unhex("0001fF"), Some(vec![0, 1, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn the_forwarders_lines_parse_back_and_other_lines_are_kept() {
        // A line exactly as the forwarder writes it.
        let record = Record {
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            source: Source::Mqtt,
            topic: "sensors/\"a\"".into(),
            client_id: "c".into(),
            destination: None,
            headers: vec![Header {
                key: "unit".into(),
                value: Bytes::from_static(b"C"),
            }],
            payload: Bytes::from_static(b"\xff\x00"),
        };
        let line = Letter {
            node: "gw",
            record: &record,
            kafka_topic: "t",
            partition: 3,
            error: "MESSAGE_TOO_LARGE".into(),
        }
        .to_json(true);
        let found = parse(&format!("{line}\nnot json\n\n"));
        assert_eq!(found.letters.len(), 1);
        let letter = &found.letters[0];
        assert_eq!(letter.offset, 7);
        assert_eq!(letter.topic, "sensors/\"a\"");
        assert_eq!(letter.headers, vec![("unit".to_owned(), b"C".to_vec())]);
        assert_eq!(letter.payload.as_deref(), Some(&b"\xff\x00"[..]));
        assert_eq!(letter.line, line);
        assert_eq!(found.unreadable.len(), 1);
        assert_eq!(found.unreadable[0].0, 2);
    }
}
