//! `edge-broker log …`: look into a data directory offline or beside a running broker, and
//! re-queue dead letters.
//!
//! - `stat`: segments (base offset, records, bytes, format version), the offsets held, the
//!   cursors and how far behind they are, bytes against the budget, the dead-letter count, and
//!   whether a broker holds the directory (read from `/proc/locks`: no lock is taken).
//! - `dump --from OFFSET` / `tail -n N`: records with their source topic, client, destination
//!   (Kafka topic, key, partition), headers and payload (text, or hex), or `--json` lines.
//! - `dead-letters`: the records Kafka refused for good (`data_dir/dead-letter`, JSON lines
//!   written by the forwarder).
//! - `requeue`: appends dead letters to the log again, with the broker stopped (see
//!   [`requeue`]).
//!
//! Everything but `requeue` is read-only: files are opened for reading, the `LOCK` file is not
//! touched, and a broker running beside it is not disturbed.
//!
//! Rooms: [`segments`] reads segment files and cursors; [`dead_letters`] parses the
//! dead-letter file; [`requeue`] appends letters back; [`show`] turns records and letters into
//! text or JSON.

pub mod dead_letters;
pub mod requeue;
pub mod segments;
pub mod show;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use edge_bridge::dead_letter::DeadLetterSink;
use edge_log::Record;

use crate::cli::{LogCommand, LogTarget, PayloadArgs};
use crate::config::{ByteSize, Config, ConfigError};
use segments::{Segment, SegmentEnd, SegmentError};
use show::Payload;

/// Largest record body read when the config is not known (no `--config`).
const ANY_RECORD: u32 = 1 << 30;

/// Why a `log` subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Neither `--config` nor a data directory was given.
    #[error("which data directory? give --config FILE (its node.data_dir) or the directory")]
    NoTarget,
    /// The config does not load.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// Reading the log failed.
    #[error(transparent)]
    Segments(#[from] SegmentError),
    /// The requested offset is not held.
    #[error("offset {offset} is not in the log, which holds offsets {oldest}..{next}{why}")]
    OffsetNotHeld {
        /// What was asked for.
        offset: u64,
        /// The oldest offset held.
        oldest: u64,
        /// The next offset to be written.
        next: u64,
        /// Why, in words.
        why: &'static str,
    },
    /// The dead-letter file could not be read.
    #[error(transparent)]
    DeadLetters(#[from] dead_letters::DeadLetterError),
    /// Re-queueing failed.
    #[error(transparent)]
    Requeue(#[from] requeue::RequeueError),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

/// Runs `edge-broker log …`; prints the result (or the error) and returns the exit status.
pub fn main(config: Option<&Path>, command: LogCommand) -> ExitCode {
    match run(config, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edge-broker log: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Option<&Path>, command: LogCommand) -> Result<(), InspectError> {
    match command {
        LogCommand::Stat(target) => {
            let place = Place::find(config, &target)?;
            let stat = Stat::read(&place)?;
            let text = if target.json {
                format!("{}\n", stat.json())
            } else {
                stat.text()
            };
            print(&text)
        }
        LogCommand::Dump(args) => {
            let place = Place::find(config, &args.target)?;
            dump(&place, args.from, args.count, &args.target, &args.payload)
        }
        LogCommand::Tail(args) => {
            let place = Place::find(config, &args.target)?;
            let stat = Stat::read(&place)?;
            let count = args.count as u64;
            let from = stat.next.saturating_sub(count).max(stat.oldest);
            dump(&place, Some(from), args.count, &args.target, &args.payload)
        }
        LogCommand::DeadLetters(args) => {
            let place = Place::find(config, &args.target)?;
            let file = place.dead_letter_file()?;
            let found = dead_letters::read(&file)?;
            let payload = Payload::from(&args.payload);
            let mut out = String::new();
            if !args.target.json {
                out.push_str(&dead_letters::summary(&file, &found));
            }
            for letter in &found.letters {
                if args.target.json {
                    out.push_str(&show::letter_json(letter, &payload).to_string());
                    out.push('\n');
                } else {
                    out.push_str(&show::letter_text(letter, &payload));
                }
            }
            print(&out)
        }
        LogCommand::Requeue(args) => {
            let path = config.ok_or(InspectError::NoTarget)?;
            let config = load(path)?;
            let report = requeue::requeue(&config, &args.offsets, args.dry_run)?;
            print(&report.to_string())
        }
    }
}

fn print(text: &str) -> Result<(), InspectError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `edge-broker log dump | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(InspectError::Output),
    }
}

fn load(path: &Path) -> Result<Config, InspectError> {
    Config::load_with_env(Some(path)).map_err(|e| InspectError::Config(Box::new(e)))
}

/// The data directory to look at, and what the config says about it.
#[derive(Debug)]
pub struct Place {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where it came from, for messages.
    pub origin: String,
    /// The config, when one was given.
    pub config: Option<Config>,
}

impl Place {
    /// A data directory given on the command line wins over the config's.
    pub fn find(config: Option<&Path>, target: &LogTarget) -> Result<Place, InspectError> {
        let loaded = match config {
            Some(path) => Some(load(path)?),
            None => None,
        };
        let (data_dir, origin) = match (&target.data_dir, &loaded, config) {
            (Some(dir), _, _) => (dir.clone(), "command line".to_owned()),
            (None, Some(c), Some(path)) => (
                c.node.data_dir.clone(),
                format!("node.data_dir of {}", path.display()),
            ),
            _ => return Err(InspectError::NoTarget),
        };
        Ok(Place {
            data_dir,
            origin,
            config: loaded,
        })
    }

    /// The log directory inside the data directory.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    fn max_record(&self) -> u32 {
        self.config.as_ref().map_or(ANY_RECORD, |c| {
            u32::try_from(c.log.max_record_bytes.bytes()).unwrap_or(ANY_RECORD)
        })
    }

    /// The dead-letter file: the config's `kafka.dead_letter`, else `data_dir/dead-letter`.
    pub fn dead_letter_file(&self) -> Result<PathBuf, InspectError> {
        match self.config.as_ref().map(|c| c.forward_config().dead_letter) {
            Some(DeadLetterSink::File(path)) => Ok(path),
            Some(DeadLetterSink::Topic(topic)) => {
                Err(dead_letters::DeadLetterError::InKafka { topic }.into())
            }
            None => Ok(self.data_dir.join("dead-letter")),
        }
    }
}

/// What `log stat` reports.
#[derive(Debug)]
pub struct Stat {
    place_dir: PathBuf,
    origin: String,
    holder: Option<u32>,
    segments: Vec<(Segment, u64)>,
    tail: SegmentEnd,
    /// Oldest offset held.
    pub oldest: u64,
    /// Next offset the log writes.
    pub next: u64,
    bytes: u64,
    budget: Option<u64>,
    cursors: Vec<segments::CursorPosition>,
    dead_letters: Option<(PathBuf, usize)>,
}

impl Stat {
    /// Reads the segment headers, the tail segment and the cursors. Sealed segments are not
    /// read: offsets are dense, so a sealed segment holds `[base, next base)`.
    pub fn read(place: &Place) -> Result<Stat, InspectError> {
        let log_dir = place.log_dir();
        let list = segments::list(&log_dir)?;
        let last = list.len() - 1;
        let tail = segments::read(&list[last], place.max_record(), |_| {
            ControlFlow::Continue(())
        })?;
        let mut with_records = Vec::with_capacity(list.len());
        for (i, segment) in list.iter().enumerate() {
            let records = match list.get(i + 1) {
                Some(next) => next.base - segment.base,
                None => tail.records,
            };
            with_records.push((segment.clone(), records));
        }
        let dead_letters = place.dead_letter_file().ok().and_then(|file| {
            dead_letters::read(&file)
                .ok()
                .map(|f| (file, f.letters.len()))
        });
        Ok(Stat {
            place_dir: place.data_dir.clone(),
            origin: place.origin.clone(),
            holder: lock_holder(&place.data_dir.join("LOCK")),
            oldest: list[0].base,
            next: tail.next_offset,
            bytes: list.iter().map(|s| s.bytes).sum(),
            budget: place.config.as_ref().map(|c| c.log.max_bytes.bytes()),
            segments: with_records,
            tail,
            cursors: segments::cursors(&log_dir),
            dead_letters,
        })
    }

    /// The text report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, text: String| {
            out.push_str(&format!("{name:<11}{text}\n"));
        };
        row(
            "data dir",
            format!("{} ({})", self.place_dir.display(), self.origin),
        );
        row(
            "broker",
            match self.holder {
                Some(pid) => {
                    format!("running (pid {pid} holds LOCK): read beside it, nothing is changed")
                }
                None => "not running (nobody holds LOCK)".to_owned(),
            },
        );
        let budget = self.budget.map_or_else(String::new, |b| {
            format!(
                " of the {} budget ({:.1}%)",
                ByteSize(b).human(),
                100.0 * self.bytes as f64 / b as f64
            )
        });
        row(
            "log",
            format!(
                "{} segment(s), {} on disk{budget}",
                self.segments.len(),
                ByteSize(self.bytes).human()
            ),
        );
        row(
            "offsets",
            format!(
                "{}..{} held ({} record(s)); the next record gets offset {}",
                self.oldest,
                self.next,
                self.next - self.oldest,
                self.next
            ),
        );
        row(
            "segments",
            format!("{:<22} {:>10} {:>11}  version", "file", "records", "bytes"),
        );
        for (segment, records) in &self.segments {
            let name = segment
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let version = match (&segment.version, &segment.problem) {
                (Some(v), _) => v.to_string(),
                (None, Some(problem)) => format!("? ({problem})"),
                (None, None) => "?".to_owned(),
            };
            row(
                "",
                format!(
                    "{name:<22} {records:>10} {:>11}  {version}",
                    ByteSize(segment.bytes).human()
                ),
            );
        }
        if self.tail.incomplete_tail > 0 {
            row(
                "tail",
                format!(
                    "{} byte(s) after the last record are not a whole record (being written, or \
                     a torn write the broker cuts at its next start)",
                    self.tail.incomplete_tail
                ),
            );
        }
        if let Some((at, why)) = &self.tail.damage {
            row(
                "damage",
                format!("tail segment at byte {at}: {why}; the records after it are not counted"),
            );
        }
        if self.cursors.is_empty() {
            row(
                "cursors",
                "none (no forwarder has read this log: retention deletes the oldest segments only when the budget is full)"
                    .to_owned(),
            );
        }
        for (i, cursor) in self.cursors.iter().enumerate() {
            let text = match &cursor.committed {
                Ok(committed) => format!(
                    "{}: committed {committed}, {} record(s) behind{}",
                    cursor.name,
                    self.next.saturating_sub(*committed),
                    if cursor.name == edge_bridge::forward::CURSOR_NAME {
                        " (the Kafka forwarder)"
                    } else {
                        ""
                    }
                ),
                Err(why) => format!("{}: unreadable: {why}", cursor.name),
            };
            row(if i == 0 { "cursors" } else { "" }, text);
        }
        match &self.dead_letters {
            Some((file, n)) if *n > 0 => row(
                "dead",
                format!(
                    "{n} dead letter(s) in {} (`edge-broker log dead-letters`)",
                    file.display()
                ),
            ),
            _ => row("dead", "no dead letters".to_owned()),
        }
        out
    }

    /// The JSON report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "data_dir": self.place_dir,
            "broker_running": self.holder.is_some(),
            "lock_holder_pid": self.holder,
            "bytes": self.bytes,
            "budget_bytes": self.budget,
            "oldest_offset": self.oldest,
            "next_offset": self.next,
            "records": self.next - self.oldest,
            "segments": self.segments.iter().map(|(s, records)| serde_json::json!({
                "file": s.path,
                "base_offset": s.base,
                "records": records,
                "bytes": s.bytes,
                "version": s.version,
                "problem": s.problem,
            })).collect::<Vec<_>>(),
            "incomplete_tail_bytes": self.tail.incomplete_tail,
            "tail_damage": self.tail.damage.as_ref().map(|(at, why)| serde_json::json!({"at": at, "reason": why})),
            "cursors": self.cursors.iter().map(|c| match &c.committed {
                Ok(committed) => serde_json::json!({
                    "name": c.name, "committed": committed, "lag": self.next.saturating_sub(*committed),
                }),
                Err(why) => serde_json::json!({"name": c.name, "error": why}),
            }).collect::<Vec<_>>(),
            "dead_letters": self.dead_letters.as_ref().map(|(file, n)| serde_json::json!({"file": file, "count": n})),
        })
    }
}

/// Prints records from `from` (default: the oldest) on, at most `count` (0: all).
fn dump(
    place: &Place,
    from: Option<u64>,
    count: usize,
    target: &LogTarget,
    payload: &PayloadArgs,
) -> Result<(), InspectError> {
    let list = segments::list(&place.log_dir())?;
    let oldest = list[0].base;
    let from = from.unwrap_or(oldest);
    let start = list.iter().rposition(|s| s.base <= from);
    let Some(start) = start else {
        let next = Stat::read(place)?.next;
        return Err(InspectError::OffsetNotHeld {
            offset: from,
            oldest,
            next,
            why: ": older records were forwarded and deleted, or dropped when the log was full",
        });
    };
    let mut dumper = Dumper {
        from,
        json: target.json,
        payload: Payload::from(payload),
        limit: if count == 0 { usize::MAX } else { count },
        shown: 0,
        out: String::new(),
        failed: None,
    };
    let mut next = 0;
    for segment in &list[start..] {
        let end = segments::read(segment, place.max_record(), |r| dumper.visit(r))?;
        next = end.next_offset;
        if end.deleted {
            eprintln!(
                "edge-broker log: {} was deleted while reading (retention: its records reached \
                 Kafka); continuing with the next segment",
                segment.path.display()
            );
        }
        if let Some((at, why)) = &end.damage {
            eprintln!(
                "edge-broker log: {} is damaged at byte {at} ({why}): the rest of it is not shown",
                segment.path.display()
            );
        }
        if dumper.shown >= dumper.limit || dumper.failed.is_some() {
            break;
        }
    }
    if let Some(e) = dumper.failed {
        return Err(e);
    }
    if dumper.shown == 0 && from >= next {
        return Err(InspectError::OffsetNotHeld {
            offset: from,
            oldest,
            next,
            why: ": it has not been written yet",
        });
    }
    print(&dumper.out)
}

/// Renders records from an offset on, printing every MiB of output.
struct Dumper {
    from: u64,
    json: bool,
    payload: Payload,
    limit: usize,
    shown: usize,
    out: String,
    failed: Option<InspectError>,
}

impl Dumper {
    fn visit(&mut self, record: Record) -> ControlFlow<()> {
        if record.offset < self.from {
            return ControlFlow::Continue(());
        }
        if self.json {
            self.out
                .push_str(&show::record_json(&record, &self.payload).to_string());
            self.out.push('\n');
        } else {
            self.out
                .push_str(&show::record_text(&record, &self.payload));
        }
        self.shown += 1;
        if self.out.len() > 1 << 20 {
            if let Err(e) = print(&self.out) {
                self.failed = Some(e);
                return ControlFlow::Break(());
            }
            self.out.clear();
        }
        if self.shown >= self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// The pid holding an exclusive lock on `lock` (a running broker), from `/proc/locks`, without
/// taking any lock.
fn lock_holder(lock: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(lock).ok()?;
    let dev = meta.dev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF" ("->" marks a waiter).
        let i = fields.iter().position(|f| *f == "FLOCK" || *f == "POSIX")?;
        if fields.get(i - 1) == Some(&"->") || fields.get(i + 4) != Some(&id.as_str()) {
            return None;
        }
        fields.get(i + 3)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_data_dir_lock_is_seen_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lock_holder(&dir.path().join("LOCK")), None, "no file");
        let lock = crate::app::DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(
            lock_holder(&dir.path().join("LOCK")),
            Some(std::process::id())
        );
        drop(lock);
        assert_eq!(lock_holder(&dir.path().join("LOCK")), None);
    }
}
