//! edge-log: a segmented, crash-safe append-only event log.
