//! The syncer thread: runs the fdatasync that makes written records durable, while the writer
//! goes on writing the next batch (group commit, pipelined). The writer hands it a target (a
//! segment, a length, the offset end written up to that length); targets coalesce while a sync
//! runs, so one fdatasync covers every batch written meanwhile. Durability is published in
//! target order, only after the sync that covers it; a failed sync is sticky: nothing later is
//! synced or published. The writer, which watches [`Syncer::failure`], then cuts back what will
//! never be durable and only then fails the ledger, so no waiter hears "refused" about a record
//! still on disk.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::error::LogError;
use crate::ledger::Ledger;
use crate::segment::Segment;

/// Everything below `end` is in `seg` below `len` (or in older, synced segments).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The segment to sync.
    pub seg: Arc<Segment>,
    /// Bytes of it written when the target was set.
    pub len: u64,
    /// One past the last offset written when the target was set.
    pub end: u64,
}

#[derive(Debug, Default)]
struct State {
    /// The next sync to run (a newer target replaces an older one not yet started).
    pending: Option<Target>,
    /// A sync is running.
    busy: bool,
    /// One past the last offset a finished sync covered.
    synced_end: u64,
    /// The first failed sync (sticky).
    failed: Option<String>,
    /// Take no new target; exit when idle.
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    ledger: Arc<Ledger>,
    state: Mutex<State>,
    cv: Condvar,
}

/// Handle to the syncer thread (owned by the writer).
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the syncer; everything below `synced_end` is durable already.
    pub fn spawn(ledger: Arc<Ledger>, synced_end: u64) -> Result<Syncer, LogError> {
        let shared = Arc::new(Shared {
            ledger,
            state: Mutex::new(State {
                synced_end,
                ..State::default()
            }),
            cv: Condvar::new(),
        });
        let run = shared.clone();
        let handle = std::thread::Builder::new()
            .name("edge-log-syncer".into())
            .spawn(move || run.run())
            .map_err(|e| LogError::Writer {
                reason: format!("cannot start the syncer thread: {e}"),
            })?;
        Ok(Syncer {
            shared,
            handle: Some(handle),
        })
    }

    /// Asks for everything below `target.end` to be made durable. Returns at once.
    pub fn request(&self, target: Target) {
        let mut st = self.shared.state.lock();
        if st.failed.is_some() || st.stop {
            return;
        }
        st.pending = Some(target);
        self.shared.cv.notify_all();
    }

    /// Waits until everything below `end` is durable; the sticky failure otherwise.
    pub fn wait(&self, end: u64) -> Result<(), String> {
        let mut st = self.shared.state.lock();
        loop {
            if st.synced_end >= end {
                return Ok(());
            }
            if let Some(cause) = &st.failed {
                return Err(cause.clone());
            }
            if st.pending.is_none() && !st.busy {
                return Err(format!(
                    "no sync requested up to offset {end} (synced up to {})",
                    st.synced_end
                ));
            }
            self.shared.cv.wait(&mut st);
        }
    }

    /// Whether a sync is pending or running, and the sticky failure if one failed (read
    /// together: an idle syncer without a failure cannot fail before the next request).
    pub fn status(&self) -> (bool, Option<String>) {
        let st = self.shared.state.lock();
        (st.pending.is_some() || st.busy, st.failed.clone())
    }

    /// The sticky failure, if a sync failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.state.lock().failed.clone()
    }

    /// Stops taking targets: drops the one not started and waits for a running sync to end
    /// (its outcome is published before this returns). The writer calls it before it fails.
    pub fn abandon(&self) {
        let mut st = self.shared.state.lock();
        st.stop = true;
        st.pending = None;
        while st.busy {
            self.shared.cv.wait(&mut st);
        }
        self.shared.cv.notify_all();
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.abandon();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    fn run(&self) {
        loop {
            let target = {
                let mut st = self.state.lock();
                while st.pending.is_none() && !st.stop {
                    self.cv.wait(&mut st);
                }
                let Some(target) = st.pending.take() else {
                    return;
                };
                st.busy = true;
                target
            };
            let start = Instant::now();
            let outcome = target.seg.file.sync_data();
            let took = start.elapsed();
            let mut st = self.state.lock();
            st.busy = false;
            match outcome {
                Ok(()) => {
                    self.ledger.record_fsync(took);
                    target.seg.set_synced(target.len);
                    st.synced_end = st.synced_end.max(target.end);
                    self.ledger.publish_durable(target.end);
                }
                Err(e) => {
                    let cause = format!("fdatasync {} failed: {e}", target.seg.path.display());
                    st.failed = Some(cause);
                    st.pending = None;
                }
            }
            self.cv.notify_all();
        }
    }
}
