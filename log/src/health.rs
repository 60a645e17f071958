//! [`LogHealth`]: whether the log takes appends now, for readiness and `/healthz`.

use std::fmt;

/// Whether the log takes appends now ([`crate::Log::health`]). Meant for the broker's
/// readiness and `/healthz`: `Ok` is ready; `Full` is not ready but heals by itself; `Failed`
/// needs a restart (and someone to look at the disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogHealth {
    /// Appends are stored.
    Ok,
    /// Appends cannot be stored right now: under `WhenFull::Block` they wait, under `Reject`
    /// they are refused (and never stored). Ends by itself when space returns.
    Full(Full),
    /// A write or fdatasync failed: every append is refused until the log is reopened. Records
    /// not yet durable never become durable.
    Failed {
        /// The first failure.
        cause: String,
    },
    /// The log was closed.
    Closed,
}

/// What is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    /// The disk budget (`max_bytes`) is used up and the policy may not delete what cursors
    /// still need: a commit (the uplink returning) frees it.
    Budget {
        /// Bytes the append that found it full needed.
        needed: u64,
    },
    /// The file system has no space (ENOSPC or quota): the writer cut back what it had
    /// partly written and retries; freeing disk space (or retention) ends it.
    Disk {
        /// The error, with the file.
        cause: String,
    },
}

impl LogHealth {
    /// Whether appends are stored now.
    pub fn is_ok(&self) -> bool {
        *self == LogHealth::Ok
    }
}

impl fmt::Display for LogHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogHealth::Ok => f.write_str("ok"),
            LogHealth::Full(Full::Budget { needed }) => write!(
                f,
                "full: the disk budget (max_bytes) is used up and cursors still need the data ({needed} more bytes wanted); waiting for the forwarder to commit"
            ),
            LogHealth::Full(Full::Disk { cause }) => {
                write!(f, "full: no space on the file system ({cause}); retrying")
            }
            LogHealth::Failed { cause } => write!(f, "failed, restart needed: {cause}"),
            LogHealth::Closed => f.write_str("closed"),
        }
    }
}
