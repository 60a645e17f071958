//! [`SessionLog`]: where a persistent session's changes go (the state journal, and the
//! session's key in it), and the journal position just past its latest record, from which
//! [`SessionLog::commit`] makes a ticket for everything the session recorded so far.
//!
//! Invariant: that position only moves forward, so a ticket taken after a record covers it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hub::Delivery;
use crate::state::journal::Encoder;
use crate::state::record::{Record, StoredDelivery};
use crate::state::{Commit, Journal};

/// Where a persistent session's changes go: the journal, and the session's key in it.
///
/// One pointer: a session keeps five copies (itself and each recorded collection), and most
/// sessions (clean ones) have none.
#[derive(Debug, Clone)]
pub struct SessionLog(Arc<SessionLogInner>);

#[derive(Debug)]
struct SessionLogInner {
    journal: Arc<Journal>,
    sid: u64,
    /// Journal position just past this session's latest record.
    last: AtomicU64,
}

impl SessionLog {
    /// Records of session `sid` go to `journal`.
    pub fn new(journal: Arc<Journal>, sid: u64) -> SessionLog {
        SessionLog(Arc::new(SessionLogInner {
            journal,
            sid,
            last: AtomicU64::new(0),
        }))
    }

    /// The session's key in the journal.
    pub fn sid(&self) -> u64 {
        self.0.sid
    }

    /// Appends records made by `f` (given the encoder and this session's key).
    pub fn record(&self, f: impl FnOnce(&mut Encoder<'_>, u64)) {
        let SessionLogInner { journal, sid, last } = &*self.0;
        let position = journal.append(|enc| f(enc, *sid));
        last.fetch_max(position, Ordering::AcqRel);
    }

    /// A ticket for this session's records so far (`None` if it has none).
    pub fn commit(&self) -> Option<Commit> {
        let last = self.0.last.load(Ordering::Acquire);
        (last > 0).then(|| self.0.journal.commit_at(last))
    }

    pub(super) fn delivery(&self, which: fn(u64, StoredDelivery) -> Record, delivery: &Delivery) {
        self.record(|enc, sid| {
            let stored = StoredDelivery::new(delivery, enc.message(&delivery.message));
            enc.record(&which(sid, stored));
        });
    }
}
