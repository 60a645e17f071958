//! The idempotent producer's state machine, as plain code without I/O: the producer session
//! (id and epoch from InitProducerId), the next sequence number of every partition, the
//! requests in flight per partition and the first one that failed. [`WireProducer`] keeps one
//! [`Sequencer`] under a lock and asks it, for every batch, whether it may be sent and with
//! which identity; the rules below are tested here, without a broker.
//!
//! Rules (the decisions and their reasons are in `bridge/README.md`, "Producer behaviour"):
//! - A batch is sent as a [`Attempt::First`] (pipelined behind the requests in flight) or as a
//!   [`Attempt::Resend`] of a failed one. After a failure, first sends to the partition are
//!   refused ([`Refusal::Blocked`]) until a resend; a resend waits until nothing is in flight
//!   (so every answer to the batches behind the failed one is in), then rewinds the partition's
//!   sequence to the failed batch's base sequence, so the resent records get the numbers they
//!   had (Kafka then writes them once).
//! - Sequence numbers are assigned when a batch is written ([`Sequencer::assign`]), so they
//!   follow the order of the writes; they wrap to 0 after `i32::MAX`, as in the Java client.
//! - The first failure of a partition with `OUT_OF_ORDER_SEQUENCE_NUMBER`,
//!   `DUPLICATE_SEQUENCE_NUMBER`, `UNKNOWN_PRODUCER_ID` or `INVALID_PRODUCER_EPOCH` ends the
//!   session: the broker lost or refuses our state. The next write waits for a new session
//!   (sequences from 0 on every partition). A duplicate is not taken as "written": Tansu
//!   restarted on durable storage answered it for batches it had lost. A failure behind an
//!   earlier one (a batch refused because its predecessor was not written) ends nothing, and
//!   neither does a failure of a batch written in an older session.
//! - Without a session (idempotence off, or refused by the cluster) identities are -1 and only
//!   one request may be in flight per connection ([`Sequencer::pipelined`]): nothing else keeps
//!   a later batch from overtaking a failed one.
//!
//! [`WireProducer`]: super::WireProducer

use std::collections::HashMap;

use super::batch::BatchIdentity;
use super::error::{ProduceError, codes};
use crate::topition::Topition;

/// The producer session batches are written under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// A session must be started (InitProducerId) before the next batch is written.
    Needed,
    /// Batches carry this producer id and epoch and per-partition sequence numbers.
    Active {
        /// Producer id from InitProducerId.
        producer_id: i64,
        /// Its epoch.
        epoch: i16,
    },
    /// No idempotence (off in the config, or refused by the cluster): identities are -1.
    Off,
}

/// How a batch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// In order behind the requests in flight; refused while the partition has a failure.
    First,
    /// Again after a failure: waits until nothing is in flight, lifts the block.
    Resend,
}

/// Why a batch may not be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The partition has a failed batch that must be resent first (or, for a resend, answers
    /// to earlier requests are still outstanding).
    Blocked,
    /// The session ended; start a new one, then assign again.
    NoSession,
}

/// A request begun with [`Sequencer::begin`]; hand it back to [`Sequencer::finish`] (or
/// [`Sequencer::abandon`] if its answer will never be known).
#[derive(Debug)]
pub struct Ticket {
    tp: Topition,
    /// Place in the partition's send order (1-based).
    index: u64,
}

impl Ticket {
    /// The partition the request goes to.
    pub fn topition(&self) -> &Topition {
        &self.tp
    }
}

/// The first failed batch of a partition, to resend from it.
#[derive(Debug, Clone, Copy)]
struct Failure {
    /// Its place in the partition's send order.
    index: u64,
    /// The identity it was written with (None if it failed before one was assigned).
    identity: Option<BatchIdentity>,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Sequence number of the next batch (in the current session).
    next_sequence: i32,
    /// Requests begun and not finished.
    in_flight: usize,
    /// Requests begun so far.
    started: u64,
    /// Set by a failure; first sends are refused until a resend.
    failed: Option<Failure>,
}

/// Producer session, sequence numbers and failures per partition (see the module docs).
#[derive(Debug)]
pub struct Sequencer {
    session: Session,
    partitions: HashMap<Topition, PartitionState>,
}

impl Sequencer {
    /// A sequencer that needs a session first (`idempotent`) or never uses one.
    pub fn new(idempotent: bool) -> Self {
        Self {
            session: if idempotent {
                Session::Needed
            } else {
                Session::Off
            },
            partitions: HashMap::new(),
        }
    }

    /// The current session.
    pub fn session(&self) -> Session {
        self.session
    }

    /// True if a session must be started before the next batch is written.
    pub fn needs_session(&self) -> bool {
        self.session == Session::Needed
    }

    /// Starts a session (InitProducerId answered): every partition's sequence restarts at 0.
    pub fn start_session(&mut self, producer_id: i64, epoch: i16) {
        self.session = Session::Active { producer_id, epoch };
        for state in self.partitions.values_mut() {
            state.next_sequence = 0;
        }
    }

    /// Starts the session of a new transaction epoch (exactly-once delivery, after
    /// InitProducerId with the transactional.id): every partition's sequence restarts at 0 and
    /// its failure is forgotten, since the aborted transaction's batches are resent as new
    /// ones from the committed position.
    pub fn restart_session(&mut self, producer_id: i64, epoch: i16) {
        self.session = Session::Active { producer_id, epoch };
        for state in self.partitions.values_mut() {
            state.next_sequence = 0;
            state.failed = None;
        }
    }

    /// The cluster refused InitProducerId (e.g. no IdempotentWrite ACL): go on without.
    pub fn go_without_sessions(&mut self) {
        self.session = Session::Off;
    }

    /// True if several requests may be in flight per connection: unless sessions are off (the
    /// broker's sequence checks are what keep a later batch from overtaking a failed one). A
    /// session that must be started again still counts: no batch is written before it is.
    pub fn pipelined(&self) -> bool {
        self.session != Session::Off
    }

    /// True if the partition has a failed batch not resent yet.
    pub fn is_blocked(&self, tp: &Topition) -> bool {
        self.partitions.get(tp).is_some_and(|s| s.failed.is_some())
    }

    /// Requests to the partition begun and not finished.
    pub fn in_flight(&self, tp: &Topition) -> usize {
        self.partitions.get(tp).map_or(0, |s| s.in_flight)
    }

    /// Begins a request to `tp`. A resend lifts the partition's block once nothing is in
    /// flight, rewinding its sequence to the failed batch (if written in this session).
    pub fn begin(&mut self, tp: &Topition, attempt: Attempt) -> Result<Ticket, Refusal> {
        let session = self.session;
        let state = self.partitions.entry(tp.clone()).or_default();
        if let Some(failure) = state.failed {
            if attempt == Attempt::First || state.in_flight > 0 {
                return Err(Refusal::Blocked);
            }
            state.failed = None;
            if let Some(identity) = failure.identity
                && same_session(session, identity)
            {
                state.next_sequence = identity.base_sequence;
            }
        }
        state.in_flight += 1;
        state.started += 1;
        Ok(Ticket {
            tp: tp.clone(),
            index: state.started,
        })
    }

    /// The identity of the batch of `count` records `ticket` is about to write; the
    /// partition's sequence moves past it. Called when the batch is written, in write order.
    pub fn assign(&mut self, ticket: &Ticket, count: usize) -> Result<BatchIdentity, Refusal> {
        let (producer_id, epoch) = match self.session {
            Session::Active { producer_id, epoch } => (producer_id, epoch),
            Session::Off => return Ok(BatchIdentity::default()),
            Session::Needed => return Err(Refusal::NoSession),
        };
        let state = self.partitions.entry(ticket.tp.clone()).or_default();
        if state.failed.is_some() {
            // A batch failed since this one began: it must not be written ahead of the resend.
            return Err(Refusal::Blocked);
        }
        let base_sequence = state.next_sequence;
        state.next_sequence = wrapping_sequence(base_sequence, count);
        Ok(BatchIdentity {
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            transactional: false,
        })
    }

    /// Ends `ticket`'s request: acknowledged (`Ok`) or failed with the identity it was
    /// written with, if any. Returns true if this was the partition's first failure.
    pub fn finish(
        &mut self,
        ticket: Ticket,
        outcome: Result<(), (&ProduceError, Option<BatchIdentity>)>,
    ) -> bool {
        let session = self.session;
        let Some(state) = self.partitions.get_mut(&ticket.tp) else {
            return false;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        let Err((error, identity)) = outcome else {
            return false;
        };
        let first = match state.failed {
            Some(f) if f.index <= ticket.index => false,
            _ => {
                state.failed = Some(Failure {
                    index: ticket.index,
                    identity,
                });
                true
            }
        };
        if first
            && ends_session(error)
            && identity.is_some_and(|identity| same_session(session, identity))
        {
            self.session = Session::Needed;
        }
        first
    }

    /// Sets the next sequence number of `tp` (tests: a resend with a chosen sequence).
    #[cfg(test)]
    pub(crate) fn set_next_sequence(&mut self, tp: &Topition, sequence: i32) {
        self.partitions.entry(tp.clone()).or_default().next_sequence = sequence;
    }

    /// Ends the session as a refused batch would (tests).
    #[cfg(test)]
    pub(crate) fn end_session(&mut self) {
        self.session = Session::Needed;
    }

    /// Ends `ticket`'s request without an answer (its future was dropped: shutdown).
    pub fn abandon(&mut self, ticket: Ticket) {
        if let Some(state) = self.partitions.get_mut(&ticket.tp) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

/// True if the broker lost or refuses the producer state `error` came with.
pub fn ends_session(error: &ProduceError) -> bool {
    matches!(
        error,
        ProduceError::Broker {
            code: codes::OUT_OF_ORDER_SEQUENCE_NUMBER
                | codes::DUPLICATE_SEQUENCE_NUMBER
                | codes::INVALID_PRODUCER_EPOCH
                | codes::UNKNOWN_PRODUCER_ID,
            ..
        }
    )
}

/// True if `identity` was written in `session`.
fn same_session(session: Session, identity: BatchIdentity) -> bool {
    session
        == Session::Active {
            producer_id: identity.producer_id,
            epoch: identity.producer_epoch,
        }
}

/// `base + count` in sequence space (0..=i32::MAX, wrapping).
fn wrapping_sequence(base: i32, count: usize) -> i32 {
    let count = (count as u64 % (i32::MAX as u64 + 1)) as i64;
    ((i64::from(base) + count) % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(code: i16) -> ProduceError {
        ProduceError::refused("Produce", "t", 0, code, None)
    }

    fn reset() -> ProduceError {
        ProduceError::Io {
            broker: "b".into(),
            source: std::io::ErrorKind::ConnectionReset.into(),
        }
    }

    fn active(id: i64) -> Sequencer {
        let mut s = Sequencer::new(true);
        assert!(s.needs_session());
        s.start_session(id, 0);
        s
    }

    /// Begins and assigns a first send of `n` records; returns the ticket and identity.
    fn write(s: &mut Sequencer, tp: &Topition, n: usize) -> (Ticket, BatchIdentity) {
        let t = s.begin(tp, Attempt::First).unwrap();
        let id = s.assign(&t, n).unwrap();
        (t, id)
    }

    #[test]
    fn sequences_advance_per_partition_in_write_order_and_wrap() {
        let (a, b) = (Topition::new("t", 0), Topition::new("t", 1));
        let mut s = active(7);
        let (ta, ia) = write(&mut s, &a, 3);
        let (tb, ib) = write(&mut s, &b, 5);
        let (ta2, ia2) = write(&mut s, &a, 2);
        assert_eq!(
            (ia.base_sequence, ia2.base_sequence, ib.base_sequence),
            (0, 3, 0)
        );
        assert_eq!((ia.producer_id, ia.producer_epoch), (7, 0));
        assert_eq!(s.in_flight(&a), 2);
        for t in [ta, tb, ta2] {
            assert!(!s.finish(t, Ok(())));
        }
        assert_eq!(s.in_flight(&a), 0);
        // Assigned in the order of the writes, not of `begin`.
        let (t1, t2) = (
            s.begin(&a, Attempt::First).unwrap(),
            s.begin(&a, Attempt::First).unwrap(),
        );
        assert_eq!(s.assign(&t2, 1).unwrap().base_sequence, 5);
        assert_eq!(s.assign(&t1, 1).unwrap().base_sequence, 6);
        assert_eq!(wrapping_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(wrapping_sequence(i32::MAX, 1), 0);
    }

    /// Request k fails (connection reset) while k+1 and k+2 are in flight; the broker refuses
    /// those with OUT_OF_ORDER_SEQUENCE_NUMBER. The session stays; nothing is sent first until
    /// the resend of k, which must wait for every answer and then gets k's sequence back.
    #[test]
    fn a_failure_with_later_requests_in_flight_blocks_until_k_is_resent_with_its_sequence() {
        let tp = Topition::new("t", 0);
        let mut s = active(1);
        let (k0, _) = write(&mut s, &tp, 10);
        assert!(!s.finish(k0, Ok(())));
        let (k, ik) = write(&mut s, &tp, 4);
        let (k1, ik1) = write(&mut s, &tp, 4);
        let (k2, ik2) = write(&mut s, &tp, 4);
        assert_eq!(
            (ik.base_sequence, ik1.base_sequence, ik2.base_sequence),
            (10, 14, 18)
        );

        assert!(s.finish(k, Err((&reset(), Some(ik)))), "the first failure");
        assert_eq!(s.begin(&tp, Attempt::First).unwrap_err(), Refusal::Blocked);
        assert_eq!(
            s.begin(&tp, Attempt::Resend).unwrap_err(),
            Refusal::Blocked,
            "k+1 and k+2 are still in flight"
        );
        let ooo = broker(codes::OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert!(!s.finish(k1, Err((&ooo, Some(ik1)))), "follows the failure");
        assert!(!s.finish(k2, Err((&ooo, Some(ik2)))));
        assert_eq!(
            s.session(),
            Session::Active {
                producer_id: 1,
                epoch: 0
            },
            "kept"
        );

        let resend = s.begin(&tp, Attempt::Resend).unwrap();
        assert_eq!(
            s.assign(&resend, 4).unwrap().base_sequence,
            10,
            "k's sequence"
        );
        let (again1, i1) = write(&mut s, &tp, 4);
        assert_eq!(i1.base_sequence, 14, "k+1 resent with its sequence");
        assert!(!s.finish(resend, Ok(())));
        assert!(!s.finish(again1, Ok(())));
        assert!(!s.is_blocked(&tp));
    }

    /// A batch that began before a failure is not written ahead of the resend.
    #[test]
    fn a_batch_begun_before_a_failure_is_refused_when_it_would_be_written() {
        let tp = Topition::new("t", 0);
        let mut s = active(1);
        let (k, ik) = write(&mut s, &tp, 1);
        let later = s.begin(&tp, Attempt::First).unwrap();
        s.finish(k, Err((&reset(), Some(ik))));
        assert_eq!(s.assign(&later, 1).unwrap_err(), Refusal::Blocked);
        s.finish(later, Err((&ProduceError::EmptyBatch, None)));
        let resend = s.begin(&tp, Attempt::Resend).unwrap();
        assert_eq!(s.assign(&resend, 1).unwrap().base_sequence, 0);
    }

    /// The first failure of a partition with one of these codes ends the session: the next
    /// write waits for a new one, and sequences restart at 0 everywhere.
    #[test]
    fn lost_or_refused_producer_state_starts_a_new_session() {
        for code in [
            codes::DUPLICATE_SEQUENCE_NUMBER,
            codes::OUT_OF_ORDER_SEQUENCE_NUMBER,
            codes::UNKNOWN_PRODUCER_ID,
            codes::INVALID_PRODUCER_EPOCH,
        ] {
            let (a, b) = (Topition::new("t", 0), Topition::new("t", 1));
            let mut s = active(1);
            let (tb, _) = write(&mut s, &b, 5);
            s.finish(tb, Ok(()));
            let (t, id) = write(&mut s, &a, 3);
            assert!(s.finish(t, Err((&broker(code), Some(id)))));
            assert!(s.needs_session(), "code {code}");
            let resend = s.begin(&a, Attempt::Resend).unwrap();
            assert_eq!(s.assign(&resend, 3).unwrap_err(), Refusal::NoSession);
            s.start_session(2, 0);
            let id = s.assign(&resend, 3).unwrap();
            assert_eq!((id.producer_id, id.base_sequence), (2, 0), "code {code}");
            s.finish(resend, Ok(()));
            let (_, ib) = write(&mut s, &b, 1);
            assert_eq!(
                (ib.producer_id, ib.base_sequence),
                (2, 0),
                "every partition restarts"
            );
        }
    }

    /// DUPLICATE_SEQUENCE_NUMBER is not counted as written (README: Tansu said so for batches
    /// it had lost); the resend goes out under the new session.
    #[test]
    fn a_duplicate_is_resent_under_a_new_session() {
        let tp = Topition::new("t", 0);
        let mut s = active(1);
        let (t, id) = write(&mut s, &tp, 2);
        assert!(s.finish(
            t,
            Err((&broker(codes::DUPLICATE_SEQUENCE_NUMBER), Some(id)))
        ));
        assert!(s.is_blocked(&tp));
        assert_eq!(s.begin(&tp, Attempt::First).unwrap_err(), Refusal::Blocked);
        s.start_session(9, 0);
        let resend = s.begin(&tp, Attempt::Resend).unwrap();
        let id = s.assign(&resend, 2).unwrap();
        assert_eq!((id.producer_id, id.base_sequence), (9, 0));
    }

    /// Sequence errors behind an earlier failure, and failures of batches written in an older
    /// session, do not end the current session.
    #[test]
    fn follower_failures_and_old_sessions_do_not_end_the_session() {
        let tp = Topition::new("t", 0);
        let mut s = active(1);
        let (k, ik) = write(&mut s, &tp, 1);
        let (k1, ik1) = write(&mut s, &tp, 1);
        s.finish(k, Err((&broker(codes::NOT_LEADER_OR_FOLLOWER), Some(ik))));
        s.finish(
            k1,
            Err((&broker(codes::OUT_OF_ORDER_SEQUENCE_NUMBER), Some(ik1))),
        );
        assert!(!s.needs_session(), "refused only because k was missing");

        let other = Topition::new("t", 1);
        let (old, iold) = write(&mut s, &other, 1);
        s.start_session(2, 0);
        assert!(s.finish(old, Err((&broker(codes::UNKNOWN_PRODUCER_ID), Some(iold)))));
        assert_eq!(
            s.session(),
            Session::Active {
                producer_id: 2,
                epoch: 0
            }
        );
        // The old identity does not rewind the new session's sequence.
        let resend = s.begin(&other, Attempt::Resend).unwrap();
        assert_eq!(s.assign(&resend, 1).unwrap().base_sequence, 0);
    }

    /// A failure before an identity was assigned (connect refused) blocks the partition but
    /// leaves the sequence where it was.
    #[test]
    fn a_failure_before_writing_blocks_without_rewinding() {
        let tp = Topition::new("t", 0);
        let mut s = active(1);
        let (t, _) = write(&mut s, &tp, 5);
        s.finish(t, Ok(()));
        let t = s.begin(&tp, Attempt::First).unwrap();
        let refused = ProduceError::Connect {
            broker: "b".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert!(s.finish(t, Err((&refused, None))));
        assert!(!s.needs_session());
        let resend = s.begin(&tp, Attempt::Resend).unwrap();
        assert_eq!(s.assign(&resend, 1).unwrap().base_sequence, 5);
    }

    /// Without a session: identities are -1 and only one request per connection.
    #[test]
    fn without_a_session_batches_carry_no_identity_and_are_not_pipelined() {
        let tp = Topition::new("t", 0);
        let mut s = Sequencer::new(false);
        assert!(!s.pipelined() && !s.needs_session());
        let (_, id) = write(&mut s, &tp, 3);
        assert_eq!(id, BatchIdentity::default());
        let mut refused = Sequencer::new(true);
        refused.go_without_sessions();
        assert_eq!(refused.session(), Session::Off);
        assert!(!refused.pipelined());
        assert!(active(1).pipelined());
        let mut restarting = active(1);
        restarting.end_session();
        assert!(
            restarting.pipelined(),
            "connections are not reopened for a new session"
        );
    }

    /// A request whose answer never comes (dropped at shutdown) frees its in-flight slot.
    #[test]
    fn an_abandoned_request_is_no_longer_in_flight() {
        let tp = Topition::new("t", 0);
        let mut s = active(1);
        let (t, id) = write(&mut s, &tp, 1);
        let (t2, _) = write(&mut s, &tp, 1);
        s.finish(t, Err((&reset(), Some(id))));
        assert_eq!(s.begin(&tp, Attempt::Resend).unwrap_err(), Refusal::Blocked);
        s.abandon(t2);
        assert!(s.begin(&tp, Attempt::Resend).is_ok());
    }
}
