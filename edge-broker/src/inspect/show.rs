//! Records and dead letters as text for people or JSON lines for tools.
//!
//! Payloads (and keys, header values) are shown as text when they are printable UTF-8, else
//! as hex (`--hex` forces hex), cut at `--max-payload` bytes. JSON carries the encoding used:
//! `"payload": "...", "payload_encoding": "utf8" | "hex"`.

use std::fmt::Write as _;

use edge_log::Record;
use serde_json::{Value, json};

use super::dead_letters::DeadLetter;
use crate::cli::PayloadArgs;

/// How payloads are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Always hex.
    pub hex: bool,
    /// Most bytes shown (`usize::MAX`: all).
    pub max: usize,
}

impl From<&PayloadArgs> for Payload {
    fn from(args: &PayloadArgs) -> Payload {
        Payload {
            hex: args.hex,
            max: if args.max_payload == 0 {
                usize::MAX
            } else {
                args.max_payload
            },
        }
    }
}

impl Payload {
    /// `(shown, encoding, bytes left out)`.
    pub fn render(&self, bytes: &[u8]) -> (String, &'static str, usize) {
        let cut = bytes.len().min(self.max);
        let left = bytes.len() - cut;
        if !self.hex
            && let Some(text) = printable(bytes, cut)
        {
            return (text, "utf8", bytes.len() - text_len(bytes, cut));
        }
        (hex(&bytes[..cut]), "hex", left)
    }
}

/// The text of `bytes` cut at a char boundary at or below `cut`, if it is printable UTF-8.
fn printable(bytes: &[u8], cut: usize) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return None;
    }
    Some(text[..text_len(bytes, cut)].to_owned())
}

fn text_len(bytes: &[u8], cut: usize) -> usize {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    let mut end = cut.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `2026-12-04T17:43:04.123Z` for unix milliseconds (UTC).
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = crate::message::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn shown(payload: &Payload, bytes: &[u8]) -> String {
    let (text, encoding, left) = payload.render(bytes);
    let more = if left > 0 {
        format!(" … ({left} more bytes)")
    } else {
        String::new()
    };
    match encoding {
        "utf8" => format!("{text:?}{more}"),
        _ => format!("hex {text}{more}"),
    }
}

/// A record as a few indented lines.
pub fn record_text(record: &Record, payload: &Payload) -> String {
    let mut out = format!(
        "offset {}  {}  {} {:?}  client {:?}\n",
        record.offset,
        timestamp(record.timestamp_ms),
        record.source.as_str(),
        record.topic,
        record.client_id
    );
    match &record.destination {
        Some(d) => {
            let key = d.key.as_ref().map_or_else(
                || "no key".to_owned(),
                |k| format!("key {}", shown(payload, k)),
            );
            let partition = d.partition.map_or_else(
                || "partition by key".to_owned(),
                |p| format!("partition {p}"),
            );
            let _ = writeln!(out, "  -> kafka {}, {key}, {partition}", d.topic);
        }
        None => out.push_str(
            "  -> routed when forwarded (written before destinations were stored: format 1)\n",
        ),
    }
    for h in &record.headers {
        let _ = writeln!(out, "  header {:?} = {}", h.key, shown(payload, &h.value));
    }
    let _ = writeln!(
        out,
        "  payload {} B: {}",
        record.payload.len(),
        shown(payload, &record.payload)
    );
    out
}

fn bytes_json(payload: &Payload, bytes: &[u8]) -> (Value, &'static str) {
    let (text, encoding, _) = payload.render(bytes);
    (Value::String(text), encoding)
}

/// A record as one JSON object.
pub fn record_json(record: &Record, payload: &Payload) -> Value {
    let all = Payload {
        hex: payload.hex,
        max: usize::MAX,
    };
    let destination = record.destination.as_ref().map(|d| {
        let key = d.key.as_ref().map(|k| {
            let (text, encoding) = bytes_json(&all, k);
            json!({"value": text, "encoding": encoding})
        });
        json!({"kafka_topic": &*d.topic, "key": key, "partition": d.partition})
    });
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|h| {
            let (value, encoding) = bytes_json(&all, &h.value);
            json!({"key": h.key, "value": value, "encoding": encoding})
        })
        .collect();
    let (body, encoding) = bytes_json(payload, &record.payload);
    json!({
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "time": timestamp(record.timestamp_ms),
        "source": record.source.as_str(),
        "topic": record.topic,
        "client_id": record.client_id,
        "destination": destination,
        "headers": headers,
        "payload_bytes": record.payload.len(),
        "payload": body,
        "payload_encoding": encoding,
    })
}

/// A dead letter as a few indented lines.
pub fn letter_text(letter: &DeadLetter, payload: &Payload) -> String {
    let mut out = format!(
        "offset {}  {}  {} {:?}  client {:?}\n  -> kafka {} partition {}: REFUSED: {}\n",
        letter.offset,
        timestamp(letter.timestamp_ms),
        letter.source,
        letter.topic,
        letter.client_id,
        letter.kafka_topic,
        letter.partition,
        letter.error
    );
    for (key, value) in &letter.headers {
        let _ = writeln!(out, "  header {key:?} = {}", shown(payload, value));
    }
    match &letter.payload {
        Some(body) => {
            let _ = writeln!(out, "  payload {} B: {}", body.len(), shown(payload, body));
        }
        None => out.push_str("  payload not kept\n"),
    }
    out
}

/// A dead letter as one JSON object (the payload decoded, shown like a record's).
pub fn letter_json(letter: &DeadLetter, payload: &Payload) -> Value {
    let (body, encoding) = match &letter.payload {
        Some(bytes) => {
            let (text, encoding) = bytes_json(payload, bytes);
            (text, Value::from(encoding))
        }
        None => (Value::Null, Value::Null),
    };
    json!({
        "node": letter.node,
        "offset": letter.offset,
        "timestamp_ms": letter.timestamp_ms,
        "time": timestamp(letter.timestamp_ms),
        "source": letter.source,
        "topic": letter.topic,
        "client_id": letter.client_id,
        "kafka_topic": letter.kafka_topic,
        "partition": letter.partition,
        "error": letter.error,
        "payload_bytes": letter.payload.as_ref().map(Vec::len),
        "payload": body,
        "payload_encoding": encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_text_when_printable_else_hex() {
        let p = Payload { hex: false, max: 4 };
        assert_eq!(p.render(b"abc"), ("abc".to_owned(), "utf8", 0));
        assert_eq!(p.render(b"abcdef"), ("abcd".to_owned(), "utf8", 2));
        assert_eq!(p.render("aéb".as_bytes()), ("aéb".to_owned(), "utf8", 0));
        assert_eq!(p.render("aaaé".as_bytes()), ("aaa".to_owned(), "utf8", 2));
        assert_eq!(p.render(b"\x00\x01\xff"), ("0001ff".to_owned(), "hex", 0));
        let forced = Payload { hex: true, max: 2 };
        assert_eq!(forced.render(b"abc"), ("6162".to_owned(), "hex", 1));
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
