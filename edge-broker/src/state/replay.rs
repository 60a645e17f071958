//! Loading the state at startup: the journal's generations (or the legacy snapshot files
//! when there is no journal yet) into a [`StateModel`]. Nothing here can stop a start: a
//! file that cannot be read is moved aside and reported, and loading goes on without it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use edge_log::Storage;

use super::file::{self, FileHeader, FormatError, FrameReader, HEADER_LEN};
use super::legacy;
use super::model::StateModel;
use super::record::Record;

/// A state file that could not be loaded and was moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it was.
    pub path: PathBuf,
    /// Where it is now (`None`: it could not even be renamed, see `why`).
    pub moved_to: Option<PathBuf>,
    /// Why it could not be loaded.
    pub why: String,
}

/// A torn tail cut from the newest generation (the writes a power cut interrupted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The file.
    pub path: PathBuf,
    /// Where the unreadable part starts.
    pub at: u64,
    /// Bytes after that point that were not used.
    pub bytes: u64,
    /// Why the frame there is unreadable.
    pub why: String,
}

/// What a load found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Generations replayed, oldest first.
    pub generations: Vec<u64>,
    /// Records applied.
    pub records: u64,
    /// The newest generation's torn tail, if any.
    pub torn: Option<TornTail>,
    /// Files moved aside.
    pub quarantined: Vec<Quarantined>,
    /// Legacy snapshot files present (loaded if there was no journal); to be renamed
    /// `*.migrated` once the state is in the journal.
    pub legacy_files: Vec<PathBuf>,
    /// Whether the state came from legacy files.
    pub migrated: bool,
    /// The first free generation number.
    pub next_generation: u64,
}

/// Loads the state saved in `dir`.
pub fn load(storage: &dyn Storage, dir: &Path) -> (StateModel, LoadReport) {
    let mut model = StateModel::new();
    let mut report = LoadReport {
        next_generation: 1,
        ..LoadReport::default()
    };
    let names = match storage.list(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), "cannot list the MQTT state directory: {e}; starting without saved sessions");
            return (model, report);
        }
    };
    let mut generations: Vec<u64> = Vec::new();
    for name in &names {
        let base = name.strip_suffix(".tmp").unwrap_or(name);
        if let Some(g) = file::parse_file_name(base) {
            report.next_generation = report.next_generation.max(g + 1);
            if base.len() == name.len() {
                generations.push(g);
            }
        }
        if name == legacy::SESSIONS_FILE || name == legacy::RETAINED_FILE {
            report.legacy_files.push(dir.join(name));
        }
    }
    generations.sort_unstable();
    if generations.is_empty() {
        load_legacy(storage, dir, &mut model, &mut report);
        return (model, report);
    }
    // The newest generation with a complete checkpoint is where replay starts.
    let mut start = None;
    let mut unreadable = Vec::new();
    for &g in generations.iter().rev() {
        match scan(storage, dir, g, None) {
            Ok(scanned) if scanned.checkpoint => {
                start = Some(g);
                break;
            }
            Ok(_) => {}
            Err(why) => unreadable.push((g, why)),
        }
    }
    for (g, why) in unreadable {
        quarantine(storage, &dir.join(file::file_name(g)), why, &mut report);
        generations.retain(|&x| x != g);
    }
    if generations.is_empty() {
        // No usable journal at all: legacy files (if any) are the best state there is.
        load_legacy(storage, dir, &mut model, &mut report);
        return (model, report);
    }
    let start = start.or_else(|| generations.first().copied());
    let newest = generations.last().copied();
    let mut previous_writer = None;
    for &g in generations.iter().filter(|&&g| Some(g) >= start) {
        let path = dir.join(file::file_name(g));
        let mut replay = Replay {
            model: &mut model,
            previous_writer,
            records: 0,
        };
        match scan(storage, dir, g, Some(&mut replay)) {
            Ok(scanned) => {
                report.records += replay.records;
                report.generations.push(g);
                previous_writer = scanned.incarnation;
                if let Some((at, bytes, why)) = scanned.damage {
                    if Some(g) == newest {
                        report.torn = Some(TornTail {
                            path,
                            at,
                            bytes,
                            why,
                        });
                    } else {
                        quarantine(
                            storage,
                            &path,
                            format!("damaged at byte {at} ({why}); its first {at} bytes were used"),
                            &mut report,
                        );
                    }
                }
            }
            Err(why) => quarantine(storage, &path, why, &mut report),
        }
    }
    (model, report)
}

/// What one pass over a generation file saw.
struct Scanned {
    checkpoint: bool,
    incarnation: Option<u64>,
    /// Position, bytes left and reason of the first unreadable frame.
    damage: Option<(u64, u64, String)>,
}

/// Applies records to the model while scanning.
struct Replay<'a> {
    model: &'a mut StateModel,
    previous_writer: Option<u64>,
    records: u64,
}

/// Reads generation `g`; with `replay`, applies its records. `Err`: the file as a whole is
/// unusable (unreadable or a bad header).
fn scan(
    storage: &dyn Storage,
    dir: &Path,
    g: u64,
    mut replay: Option<&mut Replay<'_>>,
) -> Result<Scanned, String> {
    let path = dir.join(file::file_name(g));
    let file = storage
        .open(&path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let len = file.size().map_err(|e| format!("cannot read it: {e}"))?;
    let mut header = [0u8; HEADER_LEN];
    let n = edge_log::storage::read_full_at(file.as_ref(), &mut header, 0)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let header = FileHeader::decode(&header[..n]).map_err(|e| e.to_string())?;
    if header.generation != g {
        return Err(FormatError::Generation {
            expected: g,
            found: header.generation,
        }
        .to_string());
    }
    if let Some(r) = replay.as_deref_mut() {
        r.model
            .begin_generation(r.previous_writer == Some(header.incarnation));
    }
    let mut scanned = Scanned {
        checkpoint: false,
        incarnation: Some(header.incarnation),
        damage: None,
    };
    let mut frames = FrameReader::new(file.as_ref(), HEADER_LEN as u64, len);
    loop {
        let (at, body) = match frames.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                let at = frames.position();
                scanned.damage = Some((at, len - at, e.to_string()));
                break;
            }
        };
        let records = match file::decode_records(at, body) {
            Ok(records) => records,
            Err(e) => {
                scanned.damage = Some((at, len - at, e.to_string()));
                break;
            }
        };
        for record in records {
            if record == Record::CheckpointDone {
                scanned.checkpoint = true;
            }
            if let Some(r) = replay.as_deref_mut() {
                r.records += 1;
                r.model.apply(record);
            }
        }
    }
    Ok(scanned)
}

fn load_legacy(storage: &dyn Storage, dir: &Path, model: &mut StateModel, report: &mut LoadReport) {
    let sessions = dir.join(legacy::SESSIONS_FILE);
    match legacy::load_sessions(storage, &sessions, model) {
        Ok(Some(count)) => {
            report.migrated = true;
            tracing::info!(count, file = %sessions.display(), "read persistent MQTT sessions of a previous release; migrating them to the state journal");
        }
        Ok(None) => {}
        Err(e) => {
            // Nothing half-read stays: a session file loads whole or not at all.
            model.sessions.clear();
            quarantine(storage, &sessions, e.to_string(), report);
        }
    }
    let retained = dir.join(legacy::RETAINED_FILE);
    match legacy::load_retained(storage, &retained, model) {
        Ok(Some(count)) => {
            report.migrated = true;
            tracing::info!(count, file = %retained.display(), "read retained messages of a previous release; migrating them to the state journal");
        }
        Ok(None) => {}
        Err(e) => {
            model.retained.clear();
            quarantine(storage, &retained, e.to_string(), report);
        }
    }
    let moved: Vec<&PathBuf> = report.quarantined.iter().map(|q| &q.path).collect();
    let remaining = report
        .legacy_files
        .iter()
        .filter(|p| !moved.contains(p))
        .cloned()
        .collect();
    report.legacy_files = remaining;
}

/// Moves a state file that cannot be loaded aside (`NAME.damaged-YYYYMMDDTHHMMSSZ`), logs it
/// and adds it to the report. Never deletes anything.
fn quarantine(storage: &dyn Storage, path: &Path, why: String, report: &mut LoadReport) {
    let moved_to = aside_name(storage, path, "damaged");
    let moved = moved_to
        .as_ref()
        .and_then(|to| match storage.rename(path, to) {
            Ok(()) => Some(to.clone()),
            Err(e) => {
                tracing::error!(file = %path.display(), "cannot move the unloadable state file aside: {e}");
                None
            }
        });
    if let Some(dir) = path.parent() {
        let _ = storage.sync_dir(dir);
    }
    match &moved {
        Some(to) => tracing::error!(
            file = %path.display(),
            moved_to = %to.display(),
            "MQTT state file cannot be loaded ({why}); moved aside, starting without it"
        ),
        None => tracing::error!(
            file = %path.display(),
            "MQTT state file cannot be loaded ({why}); starting without it"
        ),
    }
    report.quarantined.push(Quarantined {
        path: path.to_owned(),
        moved_to: moved,
        why,
    });
}

/// A free name beside `path`: `NAME.TAG-YYYYMMDDTHHMMSSZ`, with `-N` added if taken.
pub fn aside_name(storage: &dyn Storage, path: &Path, tag: &str) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stamp = utc_stamp(SystemTime::now());
    let taken = |p: &Path| storage.open(p).is_ok();
    let first = path.with_file_name(format!("{name}.{tag}-{stamp}"));
    if !taken(&first) {
        return Some(first);
    }
    (1..1000)
        .map(|n| path.with_file_name(format!("{name}.{tag}-{stamp}-{n}")))
        .find(|p| !taken(p))
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
fn utc_stamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::message::civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(utc_stamp(leap), "20000229T010203Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_796_428_799); // 2026-12-04T23:59:59Z
        assert_eq!(utc_stamp(later), "20261204T235959Z");
    }
}
