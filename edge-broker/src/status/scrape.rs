//! One look at a running broker: `GET /healthz`, `GET /readyz` and `GET /metrics` over plain HTTP/1.1 on its
//! metrics listener, and the Prometheus text parsed into samples.
//!
//! The client is as small as the server it talks to (`crate::metrics::http`): one request per
//! connection, `Connection: close`, answers capped in size and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest answer read (a broker's `/metrics` is a few KiB).
const MAX_RESPONSE_BYTES: u64 = 8 << 20;
/// How long a connect or a whole answer may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the broker could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Nothing listens there (connection refused) or it did not answer in time.
    #[error("no answer from {addr}: {source}")]
    Unreachable {
        /// The metrics address.
        addr: SocketAddr,
        /// The connect or read error.
        source: std::io::Error,
    },
    /// Something answered, but not like an edge-broker metrics endpoint.
    #[error("{addr}{path} did not answer like edge-broker's metrics endpoint: {reason}")]
    NotOurs {
        /// The metrics address.
        addr: SocketAddr,
        /// The path asked for.
        path: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
}

/// One Prometheus sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// `/healthz` and `/readyz`: ok, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Both 200 (or `/readyz` unknown to an older broker).
    Healthy,
    /// Alive (`/healthz` 200) but not storing publishes (`/readyz` 503: a full log, starting),
    /// with the reason the broker gave.
    NotReady(String),
    /// `/healthz` 503 (a restart is needed), with the reason the broker gave.
    Unhealthy(String),
}

/// One look at the broker.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// When the metrics were read.
    pub at: Instant,
    /// `/healthz` and `/readyz`.
    pub health: Health,
    /// Every sample of `/metrics`.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Asks the broker at `addr`.
    pub fn take(addr: SocketAddr) -> Result<Scrape, ScrapeError> {
        let (code, body) = get(addr, "/healthz")?;
        let health = match code {
            200 => match get(addr, "/readyz")? {
                (503, why) => Health::NotReady(why.trim().to_owned()),
                _ => Health::Healthy,
            },
            503 => Health::Unhealthy(body.trim().to_owned()),
            other => {
                return Err(ScrapeError::NotOurs {
                    addr,
                    path: "/healthz",
                    reason: format!("HTTP status {other}"),
                });
            }
        };
        let (code, body) = get(addr, "/metrics")?;
        if code != 200 {
            return Err(ScrapeError::NotOurs {
                addr,
                path: "/metrics",
                reason: format!("HTTP status {code}"),
            });
        }
        let samples = parse(&body);
        if !samples.iter().any(|s| s.name.starts_with("edge_")) {
            return Err(ScrapeError::NotOurs {
                addr,
                path: "/metrics",
                reason: "no edge_* metrics".to_owned(),
            });
        }
        Ok(Scrape {
            at: Instant::now(),
            health,
            samples,
        })
    }

    /// The value of `name` with every label in `labels` (others ignored), summed over the
    /// samples that match; `None` when the broker has no such metric.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.samples.iter().filter(|s| s.name == name) {
            if labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// The value of `name` (summed over its samples).
    pub fn value(&self, name: &str) -> Option<f64> {
        self.sum(name, &[])
    }

    /// `(label value, sample value)` of every sample of `name`, by the label `label`.
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            let key = s
                .labels
                .iter()
                .find(|(k, _)| k == label)
                .map_or_else(String::new, |(_, v)| v.clone());
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, value)) => *value += s.value,
                None => out.push((key, s.value)),
            }
        }
        out
    }

    /// The value of label `label` on the first sample of `name`.
    pub fn label(&self, name: &str, label: &str) -> Option<&str> {
        self.samples
            .iter()
            .find(|s| s.name == name)?
            .labels
            .iter()
            .find(|(k, _)| k == label)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr`: the status code and the body.
fn get(addr: SocketAddr, path: &'static str) -> Result<(u16, String), ScrapeError> {
    let unreachable = |source| ScrapeError::Unreachable { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
    let deadline = Instant::now() + TIMEOUT;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: edge-broker-status\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut response = Vec::new();
    let mut limited = (&mut stream).take(MAX_RESPONSE_BYTES);
    let mut chunk = [0u8; 16 << 10];
    loop {
        if Instant::now() > deadline {
            return Err(unreachable(std::io::ErrorKind::TimedOut.into()));
        }
        match limited.read(&mut chunk).map_err(unreachable)? {
            0 => break,
            n => response.extend_from_slice(&chunk[..n]),
        }
    }
    let not_ours = |reason: &str| ScrapeError::NotOurs {
        addr,
        path,
        reason: reason.to_owned(),
    };
    let text = String::from_utf8(response).map_err(|_| not_ours("the answer is not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| not_ours("no HTTP header"))?;
    let code = head
        .lines()
        .next()
        .and_then(|status| status.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| not_ours("no HTTP status line"))?;
    Ok((code, body.to_owned()))
}

/// Parses the Prometheus text exposition format (comments skipped, labels unescaped,
/// `+Inf`/`-Inf`/`NaN` values, an optional timestamp ignored). Lines that do not parse are
/// skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let after = after.strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_owned(), value));
            rest = &after[end + 1..];
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_parses_with_labels_escapes_and_specials() {
        let samples = parse(
            "# HELP a x\n# TYPE a gauge\na 1\nb{kind=\"x\",msg=\"say \\\"hi\\\"\\n\"} 2.5 1700000000\n\
             c{} +Inf\nbroken{ 1\nd -3e2\n",
        );
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(samples[0].value, 1.0);
        assert_eq!(
            samples[1].labels,
            vec![
                ("kind".to_owned(), "x".to_owned()),
                ("msg".to_owned(), "say \"hi\"\n".to_owned())
            ]
        );
        assert_eq!(samples[1].value, 2.5);
        assert!(samples[2].value.is_infinite());
        assert_eq!(samples[3].value, -300.0);
    }

    #[test]
    fn lookups_sum_over_unnamed_labels() {
        let scrape = Scrape {
            at: Instant::now(),
            health: Health::Healthy,
            samples: parse(
                "m{protocol=\"mqtt\",qos=\"0\"} 1\nm{protocol=\"mqtt\",qos=\"1\"} 2\nm{protocol=\"nats\"} 4\n",
            ),
        };
        assert_eq!(scrape.value("m"), Some(7.0));
        assert_eq!(scrape.sum("m", &[("protocol", "mqtt")]), Some(3.0));
        assert_eq!(scrape.value("missing"), None);
        assert_eq!(
            scrape.by_label("m", "protocol"),
            vec![("mqtt".to_owned(), 3.0), ("nats".to_owned(), 4.0)]
        );
    }
}
