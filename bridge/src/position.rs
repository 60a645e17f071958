//! Where the forwarder resumes under exactly-once delivery: its local log cursor, or the
//! position it committed to Kafka inside its last transaction (`producer::txn`), whichever is
//! right.
//!
//! Each transaction commits, with its records, the next log offset to forward as the offset of
//! the forwarder's consumer group, with the log's identity as the offset metadata
//! (`edge-log=<16 hex digits>`). The group's name carries the identity too
//! ([`LogIdentity::group`]): Tansu 0.6 keeps the offset of a TxnOffsetCommit but answers
//! OffsetFetch with empty metadata, so a position without metadata is taken as the group's.
//! The identity is random, made with the log and kept in its directory
//! ([`LogIdentity::load_or_create`]): a wiped data directory gets a new one. The local cursor is committed after the transaction, so a
//! crash between the two leaves Kafka ahead: the records in between are in Kafka, committed,
//! and must not be sent again. The rules, in order:
//!
//! 1. No position in Kafka (first start, or Kafka expired the group's offsets): the cursor.
//! 2. A position whose metadata names another log (the data directory was replaced, or the
//!    group belongs to a gateway that had this node id before): ignored; the cursor. Taking it would skip records
//!    of this log that never reached Kafka.
//! 3. A position beyond the log's durable end: impossible for this log (a twin with a copy of
//!    this data directory forwarded further: a cloned SD card), so ignored; the cursor.
//! 4. A position behind the cursor (Kafka lost committed data or offsets): the cursor: what the
//!    cursor passed was acknowledged once; sending it again would only duplicate it.
//! 5. Otherwise the position (≥ cursor): it skips exactly what Kafka committed after the last
//!    local commit.
//!
//! When in doubt the rules resend rather than skip, except rule 4, where Kafka itself says it
//! no longer has what it acknowledged (as in at-least-once mode).

use std::fmt;
use std::io::Write;
use std::path::Path;

use thiserror::Error;

/// The identity of one data directory's log: random, created with it, never changed. Kafka's
/// position is trusted only for the log it was committed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogIdentity(pub u64);

/// Prefix of the offset metadata that carries a [`LogIdentity`].
const METADATA_PREFIX: &str = "edge-log=";

/// The file in the log's directory that holds its identity (edge-log ignores names it does
/// not know).
pub const IDENTITY_FILE: &str = "edge-bridge.identity";

/// The log identity could not be kept.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// Writing the identity file failed.
    #[error("writing the log identity {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No random number for a new identity.
    #[error("no random number for the log identity")]
    Random,
}

impl LogIdentity {
    /// The identity of the log in `dir`: read from [`IDENTITY_FILE`], or made (random) and
    /// written crash-safely (temp file, fsync, rename, directory fsync) when there is none. A
    /// file that does not parse is replaced with a new identity and a WARN line: the position
    /// in Kafka is then ignored and the log resent from the cursor (duplicates, never a loss).
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => match Self::from_metadata(text.trim()) {
                Some(id) => return Ok(id),
                None => tracing::warn!(
                    path = %path.display(),
                    "the log identity file does not parse; making a new identity (the position in Kafka is ignored once)"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %path.display(), error = %e,
                "the log identity file cannot be read; making a new identity"
            ),
        }
        let mut bytes = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| IdentityError::Random)?;
        let id = LogIdentity(u64::from_be_bytes(bytes));
        let write = |path: &Path| -> std::io::Result<()> {
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", id.metadata())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write(&path).map_err(|source| IdentityError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok(id)
    }

    /// The consumer group the position of this log is committed to, for gateway `node_id`.
    pub fn group(self, node_id: &str) -> String {
        format!("edge-bridge.{node_id}.{:016x}", self.0)
    }

    /// The offset-commit metadata naming this log.
    pub fn metadata(self) -> String {
        format!("{METADATA_PREFIX}{:016x}", self.0)
    }

    /// The identity named by offset-commit metadata, if it names one.
    pub fn from_metadata(metadata: &str) -> Option<Self> {
        let hex = metadata.strip_prefix(METADATA_PREFIX)?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(LogIdentity)
    }
}

/// The position the forwarder's group has committed in Kafka (OffsetFetch, read_committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    /// The committed offset: the next log offset to forward.
    pub next: u64,
    /// The offset metadata (should name the log).
    pub metadata: Option<String>,
}

/// Where to resume, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The local cursor; Kafka has no position (rule 1) or agrees.
    Cursor {
        /// Next log offset to forward.
        at: u64,
    },
    /// Kafka's position, ahead of the cursor: the transactions committed after the last local
    /// commit are skipped (rule 5).
    Kafka {
        /// Next log offset to forward.
        at: u64,
        /// Records Kafka holds that the cursor had not passed.
        skipped: u64,
    },
    /// The cursor: Kafka's position names another log, or none (rule 2).
    OtherLog {
        /// Next log offset to forward.
        at: u64,
        /// The metadata Kafka had.
        metadata: Option<String>,
    },
    /// The cursor: Kafka's position lies beyond this log's durable end (rule 3).
    BeyondLog {
        /// Next log offset to forward.
        at: u64,
        /// Kafka's position.
        kafka: u64,
        /// The log's durable end.
        durable_end: u64,
    },
    /// The cursor: Kafka's position is behind it (rule 4).
    KafkaBehind {
        /// Next log offset to forward.
        at: u64,
        /// Kafka's position.
        kafka: u64,
    },
}

impl Resume {
    /// The next log offset to forward.
    pub fn at(&self) -> u64 {
        match self {
            Resume::Cursor { at }
            | Resume::Kafka { at, .. }
            | Resume::OtherLog { at, .. }
            | Resume::BeyondLog { at, .. }
            | Resume::KafkaBehind { at, .. } => *at,
        }
    }

    /// True when the case deserves a warning in the log (Kafka and the cursor disagree in a
    /// way that should not happen in normal operation).
    pub fn is_suspicious(&self) -> bool {
        matches!(
            self,
            Resume::OtherLog { .. } | Resume::BeyondLog { .. } | Resume::KafkaBehind { .. }
        )
    }
}

impl fmt::Display for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resume::Cursor { at } => write!(f, "resuming at the local cursor, offset {at}"),
            Resume::Kafka { at, skipped } => write!(
                f,
                "resuming at offset {at}, the position committed in Kafka: {skipped} records were committed there after the last local commit"
            ),
            Resume::OtherLog { at, metadata } => write!(
                f,
                "the position in Kafka belongs to another log ({metadata:?}: data directory replaced, or another gateway had this node id); resuming at the local cursor, offset {at}"
            ),
            Resume::BeyondLog {
                at,
                kafka,
                durable_end,
            } => write!(
                f,
                "the position in Kafka ({kafka}) is beyond this log's end ({durable_end}): a copy of this data directory forwarded further (cloned SD card?); resuming at the local cursor, offset {at}"
            ),
            Resume::KafkaBehind { at, kafka } => write!(
                f,
                "the position in Kafka ({kafka}) is behind the local cursor: Kafka lost committed offsets or data; resuming at the local cursor, offset {at}"
            ),
        }
    }
}

/// Decides where to resume from the local cursor (`cursor`, the next offset it has not
/// forwarded), the log's durable end, what Kafka has, and this log's identity.
pub fn resume(
    cursor: u64,
    durable_end: u64,
    kafka: Option<&KafkaPosition>,
    ours: LogIdentity,
) -> Resume {
    let Some(kafka) = kafka else {
        return Resume::Cursor { at: cursor };
    };
    // No metadata: the broker does not keep it (Tansu 0.6); the group's name names the log.
    let named = match kafka.metadata.as_deref() {
        None | Some("") => Some(ours),
        Some(m) => LogIdentity::from_metadata(m),
    };
    if named != Some(ours) {
        return Resume::OtherLog {
            at: cursor,
            metadata: kafka.metadata.clone(),
        };
    }
    if kafka.next > durable_end {
        return Resume::BeyondLog {
            at: cursor,
            kafka: kafka.next,
            durable_end,
        };
    }
    if kafka.next < cursor {
        return Resume::KafkaBehind {
            at: cursor,
            kafka: kafka.next,
        };
    }
    if kafka.next == cursor {
        return Resume::Cursor { at: cursor };
    }
    Resume::Kafka {
        at: kafka.next,
        skipped: kafka.next - cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: LogIdentity = LogIdentity(0x00c0_ffee_0000_0001);

    fn kafka(next: u64, log: Option<LogIdentity>) -> KafkaPosition {
        KafkaPosition {
            next,
            metadata: log.map(LogIdentity::metadata),
        }
    }

    #[test]
    fn metadata_names_the_log_and_nothing_else_parses() {
        assert_eq!(OURS.metadata(), "edge-log=00c0ffee00000001");
        assert_eq!(LogIdentity::from_metadata(&OURS.metadata()), Some(OURS));
        for bad in [
            "",
            "edge-log=",
            "edge-log=xyz",
            "edge-log=00c0ffee0000000",
            "log=00c0ffee00000001",
            "edge-log=00c0ffee000000011",
        ] {
            assert_eq!(LogIdentity::from_metadata(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_crash_between_the_kafka_commit_and_the_local_one_skips_what_kafka_committed() {
        let r = resume(100, 500, Some(&kafka(180, Some(OURS))), OURS);
        assert_eq!(
            r,
            Resume::Kafka {
                at: 180,
                skipped: 80
            }
        );
        assert!(!r.is_suspicious());
        assert_eq!(
            resume(100, 500, Some(&kafka(100, Some(OURS))), OURS),
            Resume::Cursor { at: 100 }
        );
        // Up to the durable end exactly (everything was forwarded).
        assert_eq!(
            resume(100, 500, Some(&kafka(500, Some(OURS))), OURS).at(),
            500
        );
    }

    #[test]
    fn a_position_without_metadata_is_the_groups() {
        // Tansu 0.6 drops TxnOffsetCommit metadata; the group's name carries the identity.
        for metadata in [None, Some(String::new())] {
            let k = KafkaPosition { next: 30, metadata };
            assert_eq!(
                resume(10, 50, Some(&k), OURS),
                Resume::Kafka {
                    at: 30,
                    skipped: 20
                }
            );
        }
        assert_eq!(OURS.group("gw-1"), "edge-bridge.gw-1.00c0ffee00000001");
    }

    #[test]
    fn the_identity_is_kept_in_the_log_dir_and_a_bad_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let a = LogIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(LogIdentity::load_or_create(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(LogIdentity::load_or_create(other.path()).unwrap(), a);
        std::fs::write(dir.path().join(IDENTITY_FILE), "garbage").unwrap();
        let b = LogIdentity::load_or_create(dir.path()).unwrap();
        assert_ne!(b, a);
        assert_eq!(LogIdentity::load_or_create(dir.path()).unwrap(), b);
    }

    #[test]
    fn without_a_kafka_position_the_cursor_decides() {
        assert_eq!(resume(42, 50, None, OURS), Resume::Cursor { at: 42 });
    }

    #[test]
    fn a_position_of_another_log_is_never_taken() {
        let other = LogIdentity(7);
        for k in [kafka(1_000, Some(other)), kafka(20, Some(other))] {
            let r = resume(10, 2_000, Some(&k), OURS);
            assert_eq!(r.at(), 10, "{r}");
            assert!(matches!(r, Resume::OtherLog { .. }) && r.is_suspicious());
        }
        let odd = KafkaPosition {
            next: 30,
            metadata: Some("written by something else".into()),
        };
        assert!(matches!(
            resume(10, 50, Some(&odd), OURS),
            Resume::OtherLog { at: 10, .. }
        ));
    }

    #[test]
    fn a_position_beyond_the_log_or_behind_the_cursor_resumes_at_the_cursor() {
        let r = resume(10, 50, Some(&kafka(60, Some(OURS))), OURS);
        assert_eq!(
            r,
            Resume::BeyondLog {
                at: 10,
                kafka: 60,
                durable_end: 50
            }
        );
        assert!(r.to_string().contains("cloned"));
        let r = resume(40, 50, Some(&kafka(30, Some(OURS))), OURS);
        assert_eq!(r, Resume::KafkaBehind { at: 40, kafka: 30 });
        assert!(r.is_suspicious());
    }
}
