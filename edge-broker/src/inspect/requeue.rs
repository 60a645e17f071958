//! `edge-broker log requeue`: appends dead letters to the log again once the cause is fixed
//! (a Kafka topic created, `kafka.max_request_bytes` raised, a route corrected), so the
//! forwarder sends them like any other record.
//!
//! **Offline, with the broker stopped**, rather than republished through a running broker:
//! - the letter goes back exactly as it was acknowledged — protocol, topic, client id, headers
//!   and payload bytes — without a round trip through MQTT or NATS (which would need
//!   credentials, limits and a client id of their own, and would lose the source protocol);
//! - it is routed by the config's `[[route]]` entries as they are now, so a corrected route
//!   applies; a letter no route takes stays in the dead-letter file;
//! - the data directory's `LOCK` guarantees nobody else writes the log meanwhile: with the
//!   broker running, requeue refuses and says to stop it first.
//!
//! Each re-queued record keeps its original ingest time and gets the header
//! `edge-requeued-from` = its original offset, next to the new `edge-offset` the forwarder adds,
//! so consumers can tell it from the first attempt. Steps: take `LOCK`; open the log (the
//! broker's recovery); append the letters and wait until they are durable; close the log; then
//! keep the old file as `dead-letter.requeued-<unix seconds>` and write the letters that were
//! not re-queued (and unreadable lines, verbatim) to a new dead-letter file (temporary file,
//! fsync, rename, fsync of the directory). A crash between the append and the renames leaves
//! the letters in both places: a second requeue would append them again, as duplicates that
//! carry the same `edge-requeued-from`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use edge_log::{Header, Log, NewRecord, Source};

use super::Place;
use super::dead_letters::{self, DeadLetter, DeadLetterError};
use crate::app::{DataDirLock, RunError};
use crate::config::Config;

/// Header naming the offset a re-queued record had when it was dead-lettered.
pub const REQUEUED_FROM: &str = "edge-requeued-from";

/// How long one append may wait for room in the log (nothing frees room with the broker down).
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the letters could not be re-queued.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// The broker (or another requeue) holds the data directory.
    #[error(
        "the broker is running (it holds {lock}): stop it first (systemctl stop edge-broker), \
         re-queue, then start it again"
    )]
    BrokerRunning {
        /// The lock file.
        lock: PathBuf,
    },
    /// The data directory cannot be locked.
    #[error("{0}")]
    DataDir(Box<RunError>),
    /// The dead-letter file cannot be read.
    #[error(transparent)]
    Read(#[from] DeadLetterError),
    /// The log cannot be opened.
    #[error("cannot open the log in {path}: {error}")]
    Open {
        /// The log directory.
        path: PathBuf,
        /// What went wrong.
        error: edge_log::LogError,
    },
    /// An append failed or found no room.
    #[error(
        "appending the letter of offset {offset}: {reason}; nothing of this run is lost: the dead-letter file is unchanged"
    )]
    Append {
        /// The letter's original offset.
        offset: u64,
        /// What went wrong.
        reason: String,
    },
    /// The dead-letter file could not be replaced after the append.
    #[error(
        "the letters are in the log, but {path} could not be replaced ({error}): remove the \
         re-queued lines by hand, or a later requeue appends them twice"
    )]
    Replace {
        /// The dead-letter file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// No tokio runtime.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The task opening the log failed.
    #[error("opening the log failed: {0}")]
    Task(String),
}

/// What a requeue did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The dead-letter file.
    pub file: PathBuf,
    /// Nothing was changed.
    pub dry_run: bool,
    /// (original offset, new offset, Kafka topic) of each re-queued letter.
    pub requeued: Vec<(u64, Option<u64>, String)>,
    /// (original offset, why) of each letter left in the file.
    pub kept: Vec<(u64, String)>,
    /// Lines left as they are because they are not letters.
    pub unreadable: usize,
    /// Where the old file was kept.
    pub old_file: Option<PathBuf>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.requeued.is_empty() && self.kept.is_empty() {
            return writeln!(f, "no dead letters to re-queue in {}", self.file.display());
        }
        for (old, new, topic) in &self.requeued {
            match new {
                Some(new) => {
                    writeln!(f, "re-queued offset {old} as offset {new} -> kafka {topic}")?
                }
                None => writeln!(f, "would re-queue offset {old} -> kafka {topic}")?,
            }
        }
        for (old, why) in &self.kept {
            writeln!(f, "kept offset {old} in the dead-letter file: {why}")?;
        }
        if self.unreadable > 0 {
            writeln!(f, "kept {} unreadable line(s) as they are", self.unreadable)?;
        }
        if self.dry_run {
            return writeln!(f, "dry run: nothing changed");
        }
        if let Some(old) = &self.old_file {
            writeln!(
                f,
                "{} re-queued; the broker forwards them when it starts. The old file is kept as {}",
                self.requeued.len(),
                old.display()
            )?;
        }
        Ok(())
    }
}

/// Re-queues the dead letters of `config` (only those of `offsets` when given).
pub fn requeue(config: &Config, offsets: &[u64], dry_run: bool) -> Result<Report, RequeueError> {
    let place = Place {
        data_dir: config.node.data_dir.clone(),
        origin: String::new(),
        config: Some(config.clone()),
    };
    let file = place.dead_letter_file().map_err(|e| match e {
        super::InspectError::DeadLetters(e) => RequeueError::Read(e),
        other => RequeueError::Read(DeadLetterError::Io {
            path: PathBuf::new(),
            error: std::io::Error::other(other.to_string()),
        }),
    })?;
    // Lock first: with the broker running, not even the file is read twice over.
    let lock = if dry_run {
        None
    } else {
        Some(
            DataDirLock::acquire(&config.node.data_dir).map_err(|e| match e {
                RunError::DataDirInUse { lock, .. } => RequeueError::BrokerRunning { lock },
                other => RequeueError::DataDir(Box::new(other)),
            })?,
        )
    };
    let found = dead_letters::read(&file)?;
    let routes = config.compile_routes().map_err(|e| RequeueError::Append {
        offset: 0,
        reason: e.to_string(),
    })?;
    let mut report = Report {
        file: file.clone(),
        dry_run,
        unreadable: found.unreadable.len(),
        ..Report::default()
    };
    let mut chosen: Vec<(&DeadLetter, NewRecord)> = Vec::new();
    let mut keep: Vec<&str> = Vec::new();
    for letter in &found.letters {
        if !offsets.is_empty() && !offsets.contains(&letter.offset) {
            keep.push(&letter.line);
            continue;
        }
        match record_of(letter, &routes, &config.node.id) {
            Ok(record) => chosen.push((letter, record)),
            Err(why) => {
                report.kept.push((letter.offset, why));
                keep.push(&letter.line);
            }
        }
    }
    keep.extend(found.unreadable.iter().map(|(_, line, _)| line.as_str()));
    if dry_run || chosen.is_empty() {
        report.requeued = chosen
            .iter()
            .map(|(l, r)| (l.offset, None, r.destination.topic.to_string()))
            .collect();
        return Ok(report);
    }
    let new_offsets = append(config, &chosen)?;
    report.requeued = chosen
        .iter()
        .zip(new_offsets)
        .map(|((l, r), new)| (l.offset, Some(new), r.destination.topic.to_string()))
        .collect();
    report.old_file = Some(replace(&file, &keep)?);
    drop(lock);
    Ok(report)
}

/// The record a letter becomes: routed by today's routes, its original offset in a header.
fn record_of(
    letter: &DeadLetter,
    routes: &crate::route::Routes,
    node_id: &str,
) -> Result<NewRecord, String> {
    let source = match letter.source.as_str() {
        "mqtt" => Source::Mqtt,
        "nats" => Source::Nats,
        other => return Err(format!("unknown source {other:?}")),
    };
    let Some(payload) = &letter.payload else {
        return Err("the letter has no payload (payload_hex)".to_owned());
    };
    let destination = routes
        .decide(source, &letter.topic, &letter.client_id, node_id)
        .ok_or_else(|| {
            format!(
                "no [[route]] takes {} {:?} now",
                letter.source, letter.topic
            )
        })?;
    let mut headers: Vec<Header> = letter
        .headers
        .iter()
        .filter(|(key, _)| key != REQUEUED_FROM)
        .map(|(key, value)| Header {
            key: key.clone(),
            value: Bytes::from(value.clone()),
        })
        .collect();
    headers.push(Header {
        key: REQUEUED_FROM.to_owned(),
        value: Bytes::from(letter.offset.to_string()),
    });
    Ok(NewRecord {
        timestamp_ms: letter.timestamp_ms,
        source,
        topic: letter.topic.as_str().into(),
        client_id: Arc::from(letter.client_id.as_str()),
        destination,
        headers,
        payload: Bytes::from(payload.clone()),
    })
}

/// Appends the records in order, waits until they are durable, closes the log; their offsets.
fn append(config: &Config, chosen: &[(&DeadLetter, NewRecord)]) -> Result<Vec<u64>, RequeueError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RequeueError::Runtime)?;
    runtime.block_on(async {
        let log_config = config.log_config();
        let path = log_config.dir.clone();
        let (log, _report) = tokio::task::spawn_blocking(move || Log::open(log_config))
            .await
            .map_err(|e| RequeueError::Task(e.to_string()))?
            .map_err(|error| RequeueError::Open {
                path: path.clone(),
                error,
            })?;
        let mut offsets = Vec::with_capacity(chosen.len());
        let mut failure = None;
        for (letter, record) in chosen {
            let failed = |reason: String| RequeueError::Append {
                offset: letter.offset,
                reason,
            };
            let appended =
                match tokio::time::timeout(APPEND_TIMEOUT, log.append(record.clone())).await {
                    Ok(Ok(appended)) => appended,
                    Ok(Err(e)) => {
                        failure = Some(failed(e.to_string()));
                        break;
                    }
                    Err(_) => {
                        failure = Some(failed(format!(
                            "no room in the log within {APPEND_TIMEOUT:?} (log.max_bytes reached): \
                         start the broker to forward the backlog first"
                        )));
                        break;
                    }
                };
            match appended.durable().await {
                Ok(offset) => offsets.push(offset),
                Err(e) => {
                    failure = Some(failed(e.to_string()));
                    break;
                }
            }
        }
        let closed = log.close().await;
        if let Some(failure) = failure {
            return Err(failure);
        }
        closed.map_err(|error| RequeueError::Open { path, error })?;
        Ok(offsets)
    })
}

/// Keeps the old file as `<file>.requeued-<unix seconds>` and writes `keep` to a new `<file>`
/// (none when empty), crash-safely. Returns the old file's new name.
fn replace(file: &Path, keep: &[&str]) -> Result<PathBuf, RequeueError> {
    let failed = |error| RequeueError::Replace {
        path: file.to_owned(),
        error,
    };
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut old = file.as_os_str().to_owned();
    old.push(format!(".requeued-{secs}"));
    let old = PathBuf::from(old);
    let dir = file.parent().unwrap_or(Path::new("."));
    if !keep.is_empty() {
        let mut tmp = file.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut out = std::fs::File::create(&tmp).map_err(failed)?;
        for line in keep {
            writeln!(out, "{line}").map_err(failed)?;
        }
        out.sync_all().map_err(failed)?;
        std::fs::rename(file, &old).map_err(failed)?;
        std::fs::rename(&tmp, file).map_err(failed)?;
    } else {
        std::fs::rename(file, &old).map_err(failed)?;
    }
    std::fs::File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .and_then(|d| d.sync_all())
    .map_err(failed)?;
    Ok(old)
}
