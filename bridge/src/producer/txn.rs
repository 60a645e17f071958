//! Kafka transactions for exactly-once forwarding: the transaction state machine, apart from
//! the wire. [`TxnSession`] runs the protocol over a [`TxnBroker`] (the transport: one request
//! to the right coordinator, one reply) and decides, per step and per error, what to do.
//!
//! One transaction carries one or more chunks of the log and, inside it, the forwarder's
//! position (next log offset) committed to its consumer group with `TxnOffsetCommit`, so the
//! records and the position become visible together or not at all (bridge/README.md,
//! "Exactly once"):
//!
//! ```text
//!            init()                        add_partitions()               commit(position)
//! Uninitialised ─────▶ Ready ─────────────────────────────▶ InTransaction ─────────────────▶ Ready
//!   FindCoordinator(txn)      AddPartitionsToTxn (new partitions)      [AddOffsetsToTxn], FindCoordinator(group),
//!   InitProducerId            (the caller then produces the batches)   TxnOffsetCommit, EndTxn(commit)
//!                             add_offsets(): AddOffsetsToTxn, early (while the first batches are in flight)
//!
//! any step ── abortable error ──▶ NeedsAbort ── abort() ──▶ Ready   (the caller resends from the
//! any step ── fenced ───────────▶ Fenced (stops for good)            committed position)
//! any step ── fatal ────────────▶ Failed (stops; configuration or authorisation)
//! ```
//!
//! Per step and error code, [`react`] says what happens (the table the unit tests walk):
//! - coordinator gone (`NOT_COORDINATOR`, `COORDINATOR_NOT_AVAILABLE`): find it again, retry;
//! - busy (`COORDINATOR_LOAD_IN_PROGRESS`, `CONCURRENT_TRANSACTIONS`, unknown topic, no answer
//!   at all): back off, retry the same step — `EndTxn(commit)` is retried as a commit, never
//!   turned into an abort, since its outcome may already be a commit;
//! - fenced (`PRODUCER_FENCED`, `INVALID_PRODUCER_EPOCH`): Kafka also bumps the epoch when it
//!   aborts a transaction that outlived `transaction.timeout.ms`, so the session first tries to
//!   recover (KIP-588: InitProducerId with its own producer id and epoch). Granted: the
//!   transaction was aborted, [`TxnError::Abortable`]. Refused: another producer with this
//!   transactional.id exists (a second gateway with the same node id, e.g. a cloned SD card),
//!   [`TxnError::Fenced`], and the session refuses everything from then on. A broker without
//!   KIP-588 (Tansu 0.6 answers UNKNOWN_SERVER_ERROR) cannot tell the two apart; the session
//!   then stops as fenced, the safe side: two writers are worse than a stopped one;
//! - abortable (`INVALID_TXN_STATE`, `UNKNOWN_PRODUCER_ID`, `OUT_OF_ORDER_SEQUENCE_NUMBER` in
//!   a Produce, `TRANSACTION_ABORTABLE`, ...): [`TxnError::Abortable`]; the caller calls
//!   [`TxnSession::abort`] and resends from the committed position;
//! - anything else (authorisation, an invalid transaction timeout, no transactions at all):
//!   [`TxnError::Fatal`], naming the step and the code.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::client::ProducerIdentity;
use super::error::{ProduceError, code_name, codes};
use crate::backoff::{RetryBackoff, RetryWaits};

/// Which coordinator a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CoordinatorKind {
    /// The transaction coordinator of the transactional.id.
    Transaction,
    /// The group coordinator of the forwarder's consumer group (its position).
    Group,
}

/// A topic-partition written in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// The forwarder's position committed in a transaction: the next log offset to forward, and
/// the metadata that says which log it belongs to (see `crate::position`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnPosition {
    /// Next log offset to forward once this transaction is committed.
    pub next: u64,
    /// Offset-commit metadata (the log's identity).
    pub metadata: String,
}

/// One request of the transactional protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRequest {
    /// FindCoordinator for the transactional.id or the group.
    FindCoordinator(CoordinatorKind),
    /// InitProducerId; `recover` carries the current identity (KIP-588: bump my epoch if it
    /// is still the latest) or None for a fresh start (fences any older instance).
    InitProducerId {
        /// The identity to recover, if any.
        recover: Option<ProducerIdentity>,
        /// The transaction timeout the broker enforces (`TxnConfig::transaction_timeout`).
        transaction_timeout: Duration,
    },
    /// AddPartitionsToTxn.
    AddPartitions {
        /// Producer id and epoch.
        identity: ProducerIdentity,
        /// Partitions not in the transaction yet.
        partitions: Vec<TopicPartition>,
    },
    /// AddOffsetsToTxn for the forwarder's group.
    AddOffsets {
        /// Producer id and epoch.
        identity: ProducerIdentity,
    },
    /// TxnOffsetCommit of the position, to the group coordinator.
    CommitOffsets {
        /// Producer id and epoch.
        identity: ProducerIdentity,
        /// The position.
        position: TxnPosition,
    },
    /// EndTxn.
    EndTxn {
        /// Producer id and epoch.
        identity: ProducerIdentity,
        /// Commit (true) or abort.
        commit: bool,
    },
}

/// What a request came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnReply {
    /// Done.
    Ok,
    /// InitProducerId's answer.
    Initialised(ProducerIdentity),
    /// The broker's error code (for per-partition answers, the first failed partition's).
    Refused(i16),
    /// No answer (timeout, connection lost): the outcome is unknown.
    Lost(String),
    /// The connection was refused (SASL credentials, TLS certificates): nothing was sent.
    /// Retried, at the refusal's longer backoff.
    Unauthenticated(String),
}

/// The transport of the transactional protocol: sends `request` to the coordinator it belongs
/// to (as last found with `FindCoordinator`) and returns the reply. Implemented by the wire
/// producer; tests use a named fake.
pub trait TxnBroker: Send + Sync {
    /// Sends one request and waits for its reply.
    fn call(&self, request: TxnRequest) -> impl Future<Output = TxnReply> + Send;

    /// The position the forwarder's group committed (OffsetFetch, stable offsets only);
    /// Ok(None) if none.
    fn fetch_position(
        &self,
    ) -> impl Future<Output = Result<Option<crate::position::KafkaPosition>, ProduceError>> + Send;
}

/// The transport of a forwarder without transactions (at-least-once delivery): it has no
/// value, so it is never called.
#[derive(Debug)]
pub enum AtLeastOnce {}

impl TxnBroker for AtLeastOnce {
    async fn call(&self, _request: TxnRequest) -> TxnReply {
        match *self {}
    }

    async fn fetch_position(&self) -> Result<Option<crate::position::KafkaPosition>, ProduceError> {
        match *self {}
    }
}

/// The step a reply answers, for [`react`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// FindCoordinator.
    FindCoordinator,
    /// InitProducerId at start or after an abort (fences older instances).
    Init,
    /// InitProducerId recovering the current identity after a fence-like error.
    Recover,
    /// AddPartitionsToTxn.
    AddPartitions,
    /// AddOffsetsToTxn.
    AddOffsets,
    /// TxnOffsetCommit.
    CommitOffsets,
    /// EndTxn(commit).
    Commit,
    /// EndTxn(abort).
    Abort,
    /// A Produce inside the transaction (classified for the caller, see
    /// [`TxnSession::produce_failed`]).
    Produce,
}

/// What to do about a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The step is done.
    Done,
    /// Back off and send the same request again.
    Retry,
    /// Find the coordinator again, then retry.
    Rediscover(CoordinatorKind),
    /// Fence-like: try to recover the identity (KIP-588) to tell a timed-out transaction from
    /// another instance.
    Recover,
    /// Another instance has the transactional.id: stop for good.
    Fenced,
    /// The transaction cannot go on: abort it and resend from the committed position.
    Abortable,
    /// Nothing retrying can fix.
    Fatal,
}

impl Step {
    /// The coordinator this step's request goes to.
    pub fn coordinator(self) -> CoordinatorKind {
        match self {
            Step::CommitOffsets => CoordinatorKind::Group,
            _ => CoordinatorKind::Transaction,
        }
    }
}

/// The reaction to `reply` at `step` (see the module docs).
pub fn react(step: Step, reply: &TxnReply) -> Reaction {
    use codes::*;
    let code = match reply {
        TxnReply::Ok | TxnReply::Initialised(_) => return Reaction::Done,
        TxnReply::Lost(_) => {
            // Outcome unknown: every step here is safe to repeat (EndTxn(commit) is
            // idempotent); a Produce is resent by the caller's delivery.
            return match step {
                Step::FindCoordinator | Step::Produce => Reaction::Retry,
                _ => Reaction::Rediscover(step.coordinator()),
            };
        }
        TxnReply::Refused(code) => *code,
        TxnReply::Unauthenticated(_) => return Reaction::Retry,
    };
    match (step, code) {
        (Step::Abort, INVALID_TXN_STATE) => Reaction::Done, // nothing open to abort
        (_, NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE) => {
            if step == Step::FindCoordinator {
                Reaction::Retry
            } else {
                Reaction::Rediscover(step.coordinator())
            }
        }
        (_, COORDINATOR_LOAD_IN_PROGRESS | CONCURRENT_TRANSACTIONS | REQUEST_TIMED_OUT) => {
            Reaction::Retry
        }
        (Step::AddPartitions | Step::CommitOffsets | Step::Produce, UNKNOWN_TOPIC_OR_PARTITION) => {
            Reaction::Retry
        }
        (Step::AddPartitions | Step::AddOffsets, OPERATION_NOT_ATTEMPTED) => Reaction::Retry,
        (Step::Recover, PRODUCER_FENCED | INVALID_PRODUCER_EPOCH) => Reaction::Fenced,
        // No KIP-588 on this broker: a timed-out transaction and a second instance look alike.
        (
            Step::Recover,
            UNKNOWN_SERVER_ERROR | UNSUPPORTED_VERSION | INVALID_PRODUCER_ID_MAPPING,
        ) => Reaction::Fenced,
        (Step::Init, PRODUCER_FENCED | INVALID_PRODUCER_EPOCH) => Reaction::Retry,
        (_, PRODUCER_FENCED | INVALID_PRODUCER_EPOCH) => Reaction::Recover,
        (
            Step::AddPartitions
            | Step::AddOffsets
            | Step::CommitOffsets
            | Step::Commit
            | Step::Produce,
            INVALID_TXN_STATE
            | UNKNOWN_PRODUCER_ID
            | INVALID_PRODUCER_ID_MAPPING
            | TRANSACTIONAL_ID_NOT_FOUND
            | TRANSACTION_ABORTABLE,
        ) => Reaction::Abortable,
        (Step::Produce, OUT_OF_ORDER_SEQUENCE_NUMBER) => Reaction::Abortable,
        // A Produce's other errors (leader moved, too large, ...) are the delivery's business.
        (Step::Produce, _) => Reaction::Retry,
        _ => Reaction::Fatal,
    }
}

/// Why a transaction step did not go through.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxnError {
    /// Another producer with this transactional.id took over; this one stops for good.
    #[error(
        "fenced: another producer uses transactional.id {transactional_id:?} (a second gateway with the same node id, e.g. a cloned SD card?); this one stops forwarding ({reason})"
    )]
    Fenced {
        /// The transactional.id.
        transactional_id: String,
        /// What showed it.
        reason: String,
    },
    /// The transaction cannot complete: call [`TxnSession::abort`], then resend from the
    /// committed position.
    #[error("transaction must be aborted at {step:?}: {reason}")]
    Abortable {
        /// The step that failed.
        step: Step,
        /// Why.
        reason: String,
    },
    /// Configuration, authorisation or a broker without transactions.
    #[error("transactions refused at {step:?}: {name} (code {code}){hint}")]
    Fatal {
        /// The step that failed.
        step: Step,
        /// Kafka error code.
        code: i16,
        /// Kafka's name for it.
        name: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The session is not in a state for this call (a bug in the caller).
    #[error("transaction call {call} in state {state:?}")]
    State {
        /// The call.
        call: &'static str,
        /// The state it met.
        state: TxnState,
    },
    /// Cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// No producer id yet.
    Uninitialised,
    /// A producer id, no transaction open.
    Ready,
    /// A transaction is open.
    InTransaction,
    /// A step failed in a way that needs [`TxnSession::abort`].
    NeedsAbort,
    /// Fenced by another instance: every call refuses.
    Fenced,
    /// Stopped by a fatal error: every call refuses.
    Failed,
}

/// Settings of a [`TxnSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// The transactional.id (derived from the node id).
    pub transactional_id: String,
    /// How long the broker lets a transaction stay open before aborting it. Longer than
    /// an uplink flap costs nothing (the transaction goes on); shorter costs an abort and a
    /// resend. It also bounds how long a gateway that died mid-transaction holds
    /// read_committed consumers of its partitions (on Kafka; Tansu 0.6 never times out).
    pub transaction_timeout: Duration,
    /// The waits between a step's tries (longer after the cluster refused our connection).
    pub waits: RetryWaits,
}

/// The transaction state machine over a [`TxnBroker`].
#[derive(Debug)]
pub struct TxnSession<B> {
    broker: B,
    config: TxnConfig,
    state: TxnState,
    identity: Option<ProducerIdentity>,
    /// Coordinators found and not lost since.
    known: BTreeSet<CoordinatorKind>,
    /// Partitions added to the open transaction.
    added: BTreeSet<TopicPartition>,
    /// AddOffsetsToTxn done in the open transaction.
    offsets_added: bool,
    /// False once the broker refused a KIP-588 recovery (Tansu 0.6).
    recovery_supported: bool,
}

/// What a KIP-588 recovery came to.
enum Recovery {
    /// A new epoch; whatever was open is aborted.
    Recovered,
    /// Refused as fenced: another instance has the transactional.id.
    Refused(String),
    /// The broker does not do it (Tansu 0.6: UNKNOWN_SERVER_ERROR).
    Unsupported(String),
}

/// How one request ended, inside the session.
enum Ended {
    Reply(TxnReply),
    Recover(String),
    Error(TxnError),
}

impl<B: TxnBroker> TxnSession<B> {
    /// A session that has not talked to the broker yet.
    pub fn new(broker: B, config: TxnConfig) -> Self {
        Self {
            broker,
            config,
            state: TxnState::Uninitialised,
            identity: None,
            known: BTreeSet::new(),
            added: BTreeSet::new(),
            offsets_added: false,
            recovery_supported: true,
        }
    }

    /// Where the session is.
    pub fn state(&self) -> TxnState {
        self.state
    }

    /// The producer id and epoch in use (for the batches of the transaction).
    pub fn identity(&self) -> Option<ProducerIdentity> {
        self.identity
    }

    /// The transport.
    pub fn broker(&self) -> &B {
        &self.broker
    }

    /// Gets a producer id for the transactional.id: fences any older instance and aborts a
    /// transaction it left open (a crash mid-transaction). Also used again by [`abort`]
    /// on brokers without KIP-588.
    ///
    /// [`abort`]: TxnSession::abort
    pub async fn init(&mut self, cancel: &CancellationToken) -> Result<ProducerIdentity, TxnError> {
        self.refuse_if_stopped("init")?;
        let request = TxnRequest::InitProducerId {
            recover: None,
            transaction_timeout: self.config.transaction_timeout,
        };
        match self.run(Step::Init, request, cancel).await {
            Ended::Reply(TxnReply::Initialised(identity)) => Ok(self.ready(identity)),
            Ended::Reply(other) => Err(self.fail(Step::Init, &other)),
            // `react` never asks an Init to recover or abort.
            Ended::Recover(_) => Err(self.unexpected("init")),
            Ended::Error(e) => Err(e),
        }
    }

    /// Adds `partitions` (those not in it yet) to the transaction, opening it if none is open.
    /// The caller produces the batches after this returns.
    pub async fn add_partitions(
        &mut self,
        partitions: &[TopicPartition],
        cancel: &CancellationToken,
    ) -> Result<(), TxnError> {
        self.expect(
            &[TxnState::Ready, TxnState::InTransaction],
            "add_partitions",
        )?;
        let new: Vec<TopicPartition> = partitions
            .iter()
            .filter(|p| !self.added.contains(p))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let identity = self.current()?;
        let request = TxnRequest::AddPartitions {
            identity,
            partitions: new.clone(),
        };
        self.step(Step::AddPartitions, request, cancel).await?;
        self.added.extend(new);
        self.state = TxnState::InTransaction;
        Ok(())
    }

    /// Commits the open transaction (or opens and commits one holding only the position):
    /// AddOffsetsToTxn, TxnOffsetCommit of `position`, EndTxn(commit). When this returns Ok
    /// the records and the position are committed together.
    pub async fn commit(
        &mut self,
        position: TxnPosition,
        cancel: &CancellationToken,
    ) -> Result<(), TxnError> {
        self.expect(&[TxnState::Ready, TxnState::InTransaction], "commit")?;
        self.add_offsets(cancel).await?;
        let identity = self.current()?;
        let request = TxnRequest::CommitOffsets { identity, position };
        self.step(Step::CommitOffsets, request, cancel).await?;
        let request = TxnRequest::EndTxn {
            identity,
            commit: true,
        };
        self.step(Step::Commit, request, cancel).await?;
        self.added.clear();
        self.offsets_added = false;
        self.state = TxnState::Ready;
        Ok(())
    }

    /// Adds the forwarder's group to the transaction (AddOffsetsToTxn), opening it if none is
    /// open; nothing to do if it is in already. The forwarder calls it while the transaction's
    /// first produce requests are in flight, so that [`TxnSession::commit`] is left with
    /// TxnOffsetCommit and EndTxn.
    pub async fn add_offsets(&mut self, cancel: &CancellationToken) -> Result<(), TxnError> {
        self.expect(&[TxnState::Ready, TxnState::InTransaction], "add_offsets")?;
        if self.offsets_added {
            return Ok(());
        }
        let identity = self.current()?;
        self.step(
            Step::AddOffsets,
            TxnRequest::AddOffsets { identity },
            cancel,
        )
        .await?;
        self.offsets_added = true;
        self.state = TxnState::InTransaction;
        Ok(())
    }

    /// Classifies an error code a Produce inside the transaction met: Ok(()) when the
    /// delivery should retry it as usual (leader moved, too large, ...); the transaction's
    /// end otherwise. Fence-like errors are checked with a recovery first.
    pub async fn produce_failed(
        &mut self,
        code: i16,
        cancel: &CancellationToken,
    ) -> Result<(), TxnError> {
        match react(Step::Produce, &TxnReply::Refused(code)) {
            Reaction::Recover => Err(self
                .recover(format!("Produce: {}", code_name(code)), cancel)
                .await),
            Reaction::Abortable => {
                self.state = TxnState::NeedsAbort;
                Err(TxnError::Abortable {
                    step: Step::Produce,
                    reason: code_name(code),
                })
            }
            _ => Ok(()),
        }
    }

    /// Aborts the open transaction (if any) and starts a new epoch, after which the caller
    /// resends from the committed position. With KIP-588 one InitProducerId with the current
    /// identity does it (the coordinator aborts what is open); without (Tansu 0.6), EndTxn
    /// (abort) and a fresh InitProducerId. Nothing to do when no transaction is open (after a
    /// recovery that already ended it).
    pub async fn abort(&mut self, cancel: &CancellationToken) -> Result<(), TxnError> {
        self.refuse_if_stopped("abort")?;
        let Some(identity) = self.identity else {
            return self.init(cancel).await.map(|_| ());
        };
        if self.state == TxnState::Ready && self.added.is_empty() && !self.offsets_added {
            return Ok(());
        }
        if self.recovery_supported {
            match self.recover_identity(identity, cancel).await? {
                Recovery::Recovered => return Ok(()),
                Recovery::Refused(r) => {
                    return Err(self.fenced(format!("aborting: recovery refused: {r}")));
                }
                Recovery::Unsupported(_) => {}
            }
        }
        let request = TxnRequest::EndTxn {
            identity,
            commit: false,
        };
        self.step(Step::Abort, request, cancel).await?;
        self.added.clear();
        self.offsets_added = false;
        self.init(cancel).await.map(|_| ())
    }

    /// After a fence-like error: a KIP-588 recovery tells a transaction the broker aborted
    /// (Abortable; the session continues with a new epoch and nothing open) from another
    /// instance (Fenced).
    async fn recover(&mut self, reason: String, cancel: &CancellationToken) -> TxnError {
        let identity = match self.identity {
            Some(identity) if self.recovery_supported => identity,
            _ => {
                return self.fenced(format!(
                    "{reason}; this broker cannot tell a timed-out transaction from another instance (no KIP-588)"
                ));
            }
        };
        match self.recover_identity(identity, cancel).await {
            Ok(Recovery::Recovered) => TxnError::Abortable {
                step: Step::Recover,
                reason: format!(
                    "{reason}: the broker ended the transaction (e.g. it outlived the transaction timeout)"
                ),
            },
            Ok(Recovery::Refused(r)) => self.fenced(format!("{reason}; recovery refused: {r}")),
            Ok(Recovery::Unsupported(r)) => self.fenced(format!(
                "{reason}; recovery refused ({r}): this broker cannot tell a timed-out transaction from another instance"
            )),
            Err(e) => e,
        }
    }

    /// InitProducerId with the current identity (KIP-588).
    async fn recover_identity(
        &mut self,
        identity: ProducerIdentity,
        cancel: &CancellationToken,
    ) -> Result<Recovery, TxnError> {
        let request = TxnRequest::InitProducerId {
            recover: Some(identity),
            transaction_timeout: self.config.transaction_timeout,
        };
        match self.run(Step::Recover, request, cancel).await {
            Ended::Reply(TxnReply::Initialised(new)) => {
                self.ready(new);
                Ok(Recovery::Recovered)
            }
            Ended::Reply(TxnReply::Refused(code))
                if matches!(
                    code,
                    codes::UNKNOWN_SERVER_ERROR
                        | codes::UNSUPPORTED_VERSION
                        | codes::INVALID_PRODUCER_ID_MAPPING
                ) =>
            {
                self.recovery_supported = false;
                tracing::warn!(code = %code_name(code), "the Kafka broker does not recover a producer epoch (KIP-588); a fence-like error will stop forwarding");
                Ok(Recovery::Unsupported(code_name(code)))
            }
            Ended::Reply(TxnReply::Refused(code)) => Ok(Recovery::Refused(code_name(code))),
            Ended::Reply(other) => Err(self.fail(Step::Recover, &other)),
            Ended::Recover(_) => Err(self.unexpected("recover")),
            Ended::Error(e) => Err(e),
        }
    }

    /// Runs a step that answers Ok: fence-like errors go through `recover`.
    async fn step(
        &mut self,
        step: Step,
        request: TxnRequest,
        cancel: &CancellationToken,
    ) -> Result<(), TxnError> {
        match self.run(step, request, cancel).await {
            Ended::Reply(_) => Ok(()),
            Ended::Recover(reason) => Err(self.recover(reason, cancel).await),
            Ended::Error(e) => Err(e),
        }
    }

    /// Sends `request` until its step is done or must end: retries (with backoff), finds
    /// coordinators again, and returns the reply, a recovery to try, or the error.
    async fn run(&mut self, step: Step, request: TxnRequest, cancel: &CancellationToken) -> Ended {
        let mut waits = RetryBackoff::new(self.config.waits);
        loop {
            let kind = step.coordinator();
            if !self.known.contains(&kind)
                && let Err(e) = self.find(kind, cancel).await
            {
                return Ended::Error(e);
            }
            let sent = std::time::Instant::now();
            let reply = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ended::Error(TxnError::Cancelled),
                r = self.broker.call(request.clone()) => r,
            };
            let what = describe(&reply);
            tracing::trace!(?step, reply = %what, us = sent.elapsed().as_micros(), "Kafka transaction step answered");
            match react(step, &reply) {
                Reaction::Done => return Ended::Reply(reply),
                Reaction::Retry => {}
                Reaction::Rediscover(kind) => {
                    self.known.remove(&kind);
                }
                Reaction::Recover => return Ended::Recover(format!("{step:?}: {what}")),
                // Only a recovery is answered so; `recover_identity` says what it means.
                Reaction::Fenced => return Ended::Reply(reply),
                Reaction::Abortable => {
                    self.state = TxnState::NeedsAbort;
                    return Ended::Error(TxnError::Abortable { step, reason: what });
                }
                Reaction::Fatal => return Ended::Error(self.fail(step, &reply)),
            }
            let delay = waits.next_delay(matches!(reply, TxnReply::Unauthenticated(_)));
            tracing::warn!(?step, reply = %what, ?delay, "Kafka transaction step failed; retrying");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ended::Error(TxnError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// FindCoordinator until found (or fatal / cancelled).
    async fn find(
        &mut self,
        kind: CoordinatorKind,
        cancel: &CancellationToken,
    ) -> Result<(), TxnError> {
        let mut waits = RetryBackoff::new(self.config.waits);
        loop {
            let reply = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(TxnError::Cancelled),
                r = self.broker.call(TxnRequest::FindCoordinator(kind)) => r,
            };
            match react(Step::FindCoordinator, &reply) {
                Reaction::Done => {
                    self.known.insert(kind);
                    return Ok(());
                }
                Reaction::Fatal => return Err(self.fail(Step::FindCoordinator, &reply)),
                _ => {}
            }
            let delay = waits.next_delay(matches!(reply, TxnReply::Unauthenticated(_)));
            tracing::warn!(?kind, reply = %describe(&reply), ?delay, "Kafka coordinator not found; retrying");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(TxnError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn ready(&mut self, identity: ProducerIdentity) -> ProducerIdentity {
        self.identity = Some(identity);
        self.state = TxnState::Ready;
        self.added.clear();
        self.offsets_added = false;
        identity
    }

    fn current(&self) -> Result<ProducerIdentity, TxnError> {
        self.identity.ok_or(TxnError::State {
            call: "identity",
            state: self.state,
        })
    }

    fn refuse_if_stopped(&self, call: &'static str) -> Result<(), TxnError> {
        match self.state {
            TxnState::Fenced => Err(TxnError::Fenced {
                transactional_id: self.config.transactional_id.clone(),
                reason: format!("{call} refused: fenced earlier"),
            }),
            TxnState::Failed => Err(TxnError::State {
                call,
                state: self.state,
            }),
            _ => Ok(()),
        }
    }

    fn expect(&self, states: &[TxnState], call: &'static str) -> Result<(), TxnError> {
        self.refuse_if_stopped(call)?;
        if states.contains(&self.state) {
            Ok(())
        } else if self.state == TxnState::NeedsAbort {
            Err(TxnError::Abortable {
                step: Step::Abort,
                reason: format!("{call} before the failed transaction was aborted"),
            })
        } else {
            Err(TxnError::State {
                call,
                state: self.state,
            })
        }
    }

    fn fenced(&mut self, reason: String) -> TxnError {
        self.state = TxnState::Fenced;
        tracing::error!(transactional_id = %self.config.transactional_id, %reason, "fenced by another producer with the same transactional.id; Kafka forwarding stops");
        TxnError::Fenced {
            transactional_id: self.config.transactional_id.clone(),
            reason,
        }
    }

    fn fail(&mut self, step: Step, reply: &TxnReply) -> TxnError {
        self.state = TxnState::Failed;
        let code = match reply {
            TxnReply::Refused(code) => *code,
            _ => codes::UNKNOWN_SERVER_ERROR,
        };
        let hint = match code {
            codes::UNSUPPORTED_VERSION => {
                "; the broker has no transactions: use kafka.delivery = \"at_least_once\""
            }
            codes::INVALID_TRANSACTION_TIMEOUT => {
                "; kafka.transaction_timeout is above the broker's transaction.max.timeout.ms"
            }
            codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            | codes::GROUP_AUTHORIZATION_FAILED
            | codes::TOPIC_AUTHORIZATION_FAILED => {
                "; grant the gateway's principal the transactional.id, group and topic ACLs"
            }
            _ => "",
        };
        TxnError::Fatal {
            step,
            code,
            name: code_name(code),
            hint,
        }
    }

    fn unexpected(&mut self, call: &'static str) -> TxnError {
        let state = self.state;
        self.state = TxnState::Failed;
        TxnError::State { call, state }
    }
}

/// A reply for the log.
fn describe(reply: &TxnReply) -> String {
    match reply {
        TxnReply::Ok => "ok".into(),
        TxnReply::Initialised(i) => format!("producer {} epoch {}", i.producer_id, i.epoch),
        TxnReply::Refused(code) => format!("{} (code {code})", code_name(*code)),
        TxnReply::Lost(why) => format!("no answer: {why}"),
        TxnReply::Unauthenticated(why) => format!("refused us: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use super::*;

    /// A named fake transaction and group coordinator: answers each request with the next
    /// scripted reply for its step, or by default as a healthy Kafka would (FindCoordinator
    /// and the other steps Ok, InitProducerId a new epoch of producer 7, a recovery the next
    /// epoch of the identity it was given). Records every request.
    #[derive(Default)]
    struct ScriptedCoordinator {
        script: Mutex<HashMap<StepKey, VecDeque<TxnReply>>>,
        calls: Mutex<Vec<TxnRequest>>,
        epoch: Mutex<i16>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum StepKey {
        Find,
        Init,
        Recover,
        AddPartitions,
        AddOffsets,
        CommitOffsets,
        Commit,
        Abort,
    }

    fn key(request: &TxnRequest) -> StepKey {
        match request {
            TxnRequest::FindCoordinator(_) => StepKey::Find,
            TxnRequest::InitProducerId { recover: None, .. } => StepKey::Init,
            TxnRequest::InitProducerId {
                recover: Some(_), ..
            } => StepKey::Recover,
            TxnRequest::AddPartitions { .. } => StepKey::AddPartitions,
            TxnRequest::AddOffsets { .. } => StepKey::AddOffsets,
            TxnRequest::CommitOffsets { .. } => StepKey::CommitOffsets,
            TxnRequest::EndTxn { commit: true, .. } => StepKey::Commit,
            TxnRequest::EndTxn { commit: false, .. } => StepKey::Abort,
        }
    }

    impl ScriptedCoordinator {
        fn script(&self, step: StepKey, replies: impl IntoIterator<Item = TxnReply>) {
            self.script
                .lock()
                .unwrap()
                .entry(step)
                .or_default()
                .extend(replies);
        }

        fn calls(&self) -> Vec<TxnRequest> {
            self.calls.lock().unwrap().clone()
        }

        fn keys(&self) -> Vec<StepKey> {
            self.calls().iter().map(key).collect()
        }

        fn count(&self, step: StepKey) -> usize {
            self.keys().iter().filter(|k| **k == step).count()
        }
    }

    impl TxnBroker for &ScriptedCoordinator {
        async fn call(&self, request: TxnRequest) -> TxnReply {
            self.calls.lock().unwrap().push(request.clone());
            let step = key(&request);
            if let Some(reply) = self
                .script
                .lock()
                .unwrap()
                .get_mut(&step)
                .and_then(VecDeque::pop_front)
            {
                return reply;
            }
            match request {
                TxnRequest::InitProducerId { recover: None, .. } => {
                    let mut epoch = self.epoch.lock().unwrap();
                    let e = *epoch;
                    *epoch += 1;
                    TxnReply::Initialised(ProducerIdentity {
                        producer_id: 7,
                        epoch: e,
                    })
                }
                TxnRequest::InitProducerId {
                    recover: Some(current),
                    ..
                } => TxnReply::Initialised(ProducerIdentity {
                    producer_id: current.producer_id,
                    epoch: current.epoch + 1,
                }),
                _ => TxnReply::Ok,
            }
        }

        async fn fetch_position(
            &self,
        ) -> Result<Option<crate::position::KafkaPosition>, ProduceError> {
            Ok(None)
        }
    }

    fn session(broker: &ScriptedCoordinator) -> TxnSession<&ScriptedCoordinator> {
        TxnSession::new(
            broker,
            TxnConfig {
                transactional_id: "edge-bridge.gw-01".into(),
                transaction_timeout: Duration::from_secs(60),
                waits: RetryWaits {
                    min: Duration::from_millis(10),
                    max: Duration::from_millis(100),
                    refused_max: Duration::from_secs(60),
                },
            },
        )
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    fn position(next: u64) -> TxnPosition {
        TxnPosition {
            next,
            metadata: "edge-log=1".into(),
        }
    }

    /// init, add two partitions, commit position 100.
    async fn one_transaction(s: &mut TxnSession<&ScriptedCoordinator>) -> Result<(), TxnError> {
        let cancel = CancellationToken::new();
        if s.state() == TxnState::Uninitialised {
            s.init(&cancel).await?;
        }
        s.add_partitions(&[tp("t", 0), tp("t", 1)], &cancel).await?;
        s.commit(position(100), &cancel).await
    }

    /// A refused connection (credentials, certificates) is retried at the refusal's longer
    /// backoff (here up to 60 s): each try is a handshake on the uplink and only a fix ends it.
    /// A lost answer keeps the short one (here up to 100 ms). Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_retried_at_the_refusals_backoff() {
        let cancel = CancellationToken::new();
        let mut took = Vec::new();
        for reply in [
            TxnReply::Unauthenticated("SASL refused".into()),
            TxnReply::Lost("connection reset".into()),
        ] {
            let broker = ScriptedCoordinator::default();
            broker.script(StepKey::Find, std::iter::repeat_n(reply, 8));
            let mut s = session(&broker);
            let start = tokio::time::Instant::now();
            s.init(&cancel).await.unwrap();
            assert_eq!(broker.count(StepKey::Find), 9);
            took.push(start.elapsed());
        }
        // 10 ms doubling, each wait drawn from [half, whole]: at least 1.27 s to 1.28 s refused;
        // at most 0.55 s lost (10, 20, 40, 80, then 100 ms).
        assert!(
            took[0] >= Duration::from_millis(1270),
            "refused: {:?}",
            took[0]
        );
        assert!(took[1] <= Duration::from_millis(550), "lost: {:?}", took[1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transaction_commits_the_records_and_the_position_together() {
        let broker = ScriptedCoordinator::default();
        let mut s = session(&broker);
        let cancel = CancellationToken::new();
        let identity = s.init(&cancel).await.unwrap();
        s.add_partitions(&[tp("t", 1), tp("t", 0), tp("t", 1)], &cancel)
            .await
            .unwrap();
        // A partition already in the transaction is not added again.
        s.add_partitions(&[tp("t", 0)], &cancel).await.unwrap();
        assert_eq!(s.state(), TxnState::InTransaction);
        s.commit(position(100), &cancel).await.unwrap();
        assert_eq!(s.state(), TxnState::Ready);
        assert_eq!(
            broker.calls(),
            [
                TxnRequest::FindCoordinator(CoordinatorKind::Transaction),
                TxnRequest::InitProducerId {
                    recover: None,
                    transaction_timeout: Duration::from_secs(60),
                },
                TxnRequest::AddPartitions {
                    identity,
                    partitions: vec![tp("t", 0), tp("t", 1)],
                },
                TxnRequest::AddOffsets { identity },
                TxnRequest::FindCoordinator(CoordinatorKind::Group),
                TxnRequest::CommitOffsets {
                    identity,
                    position: position(100),
                },
                TxnRequest::EndTxn {
                    identity,
                    commit: true,
                },
            ]
        );
        // The next transaction adds its partitions again; coordinators are remembered.
        one_transaction(&mut s).await.unwrap();
        assert_eq!(broker.count(StepKey::Find), 2);
        assert_eq!(broker.count(StepKey::AddPartitions), 2);
    }

    /// AddOffsetsToTxn sent early (with the first batches in flight) happens once per
    /// transaction, and the commit is then TxnOffsetCommit and EndTxn only; an error on the
    /// early step gets the same reaction as on the commit path.
    #[tokio::test(start_paused = true)]
    async fn offsets_added_early_leave_the_commit_two_round_trips() {
        let broker = ScriptedCoordinator::default();
        let mut s = session(&broker);
        let cancel = CancellationToken::new();
        s.init(&cancel).await.unwrap();
        for _ in 0..2 {
            s.add_partitions(&[tp("t", 0)], &cancel).await.unwrap();
            s.add_offsets(&cancel).await.unwrap();
            s.add_offsets(&cancel).await.unwrap();
            let before = broker.keys().len();
            s.commit(position(100), &cancel).await.unwrap();
            let commit: Vec<StepKey> = broker.keys()[before..]
                .iter()
                .copied()
                .filter(|k| *k != StepKey::Find)
                .collect();
            assert_eq!(commit, [StepKey::CommitOffsets, StepKey::Commit]);
        }
        assert_eq!(broker.count(StepKey::AddOffsets), 2, "once per transaction");
        // Refused early: the transaction is aborted and the next one adds its offsets again.
        broker.script(
            StepKey::AddOffsets,
            [TxnReply::Refused(codes::INVALID_TXN_STATE)],
        );
        s.add_partitions(&[tp("t", 0)], &cancel).await.unwrap();
        assert!(matches!(
            s.add_offsets(&cancel).await,
            Err(TxnError::Abortable {
                step: Step::AddOffsets,
                ..
            })
        ));
        assert_eq!(s.state(), TxnState::NeedsAbort);
        s.abort(&cancel).await.unwrap();
        one_transaction(&mut s).await.unwrap();
        assert_eq!(broker.count(StepKey::AddOffsets), 4);
    }

    /// What a step ended with, for the table.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        /// Retried and committed; the step was sent twice.
        Retried,
        /// The coordinator was found again before the step was retried; committed.
        Rediscovered,
        /// Fence-like: recovered (KIP-588), the transaction must be resent.
        RecoveredAbortable,
        /// Abortable; the session waits for `abort`.
        Abortable,
        /// Fatal; the session stops.
        Fatal,
    }

    /// Every step meets every error once: the reaction is the one the module docs promise.
    #[tokio::test(start_paused = true)]
    async fn every_error_at_every_step_gets_its_reaction() {
        use Expect::*;
        use codes::*;
        let lost = || TxnReply::Lost("connection reset".into());
        let steps = [
            StepKey::Init,
            StepKey::AddPartitions,
            StepKey::AddOffsets,
            StepKey::CommitOffsets,
            StepKey::Commit,
        ];
        let cases: Vec<(TxnReply, [Expect; 5])> = vec![
            //                                   Init          AddPartitions  AddOffsets     CommitOffsets  Commit
            (
                TxnReply::Refused(NOT_COORDINATOR),
                [
                    Rediscovered,
                    Rediscovered,
                    Rediscovered,
                    Rediscovered,
                    Rediscovered,
                ],
            ),
            (
                TxnReply::Refused(COORDINATOR_NOT_AVAILABLE),
                [Rediscovered; 5],
            ),
            (lost(), [Rediscovered; 5]),
            (
                TxnReply::Refused(COORDINATOR_LOAD_IN_PROGRESS),
                [Retried; 5],
            ),
            (TxnReply::Refused(CONCURRENT_TRANSACTIONS), [Retried; 5]),
            (TxnReply::Refused(REQUEST_TIMED_OUT), [Retried; 5]),
            (
                TxnReply::Refused(UNKNOWN_TOPIC_OR_PARTITION),
                [Fatal, Retried, Fatal, Retried, Fatal],
            ),
            (
                TxnReply::Refused(OPERATION_NOT_ATTEMPTED),
                [Fatal, Retried, Retried, Fatal, Fatal],
            ),
            (
                TxnReply::Refused(PRODUCER_FENCED),
                [
                    Retried,
                    RecoveredAbortable,
                    RecoveredAbortable,
                    RecoveredAbortable,
                    RecoveredAbortable,
                ],
            ),
            (
                TxnReply::Refused(INVALID_PRODUCER_EPOCH),
                [
                    Retried,
                    RecoveredAbortable,
                    RecoveredAbortable,
                    RecoveredAbortable,
                    RecoveredAbortable,
                ],
            ),
            (
                TxnReply::Refused(INVALID_TXN_STATE),
                [Fatal, Abortable, Abortable, Abortable, Abortable],
            ),
            (
                TxnReply::Refused(UNKNOWN_PRODUCER_ID),
                [Fatal, Abortable, Abortable, Abortable, Abortable],
            ),
            (
                TxnReply::Refused(TRANSACTIONAL_ID_NOT_FOUND),
                [Fatal, Abortable, Abortable, Abortable, Abortable],
            ),
            (
                TxnReply::Refused(TRANSACTION_ABORTABLE),
                [Fatal, Abortable, Abortable, Abortable, Abortable],
            ),
            (
                TxnReply::Refused(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
                [Fatal; 5],
            ),
            (TxnReply::Refused(GROUP_AUTHORIZATION_FAILED), [Fatal; 5]),
            (TxnReply::Refused(TOPIC_AUTHORIZATION_FAILED), [Fatal; 5]),
            (TxnReply::Refused(INVALID_TRANSACTION_TIMEOUT), [Fatal; 5]),
            (TxnReply::Refused(UNSUPPORTED_VERSION), [Fatal; 5]),
            (TxnReply::Refused(UNKNOWN_SERVER_ERROR), [Fatal; 5]),
        ];
        for (reply, expects) in cases {
            for (step, expect) in steps.iter().zip(expects) {
                let broker = ScriptedCoordinator::default();
                broker.script(*step, [reply.clone()]);
                let mut s = session(&broker);
                let result = one_transaction(&mut s).await;
                let case = format!(
                    "{reply:?} at {step:?}: {result:?}, calls {:?}",
                    broker.keys()
                );
                match expect {
                    Retried | Rediscovered => {
                        assert_eq!(result, Ok(()), "{case}");
                        assert_eq!(s.state(), TxnState::Ready, "{case}");
                        assert_eq!(broker.count(*step), 2, "{case}");
                        let keys = broker.keys();
                        let second = keys.iter().rposition(|k| k == step).unwrap();
                        let found_again = keys[..second]
                            .iter()
                            .rev()
                            .take_while(|k| *k != step)
                            .any(|k| *k == StepKey::Find);
                        assert_eq!(found_again, expect == Rediscovered, "{case}");
                        assert_eq!(broker.count(StepKey::Abort), 0, "{case}");
                    }
                    RecoveredAbortable => {
                        assert!(
                            matches!(
                                result,
                                Err(TxnError::Abortable {
                                    step: Step::Recover,
                                    ..
                                })
                            ),
                            "{case}"
                        );
                        assert_eq!(broker.count(StepKey::Recover), 1, "{case}");
                        assert_eq!(s.state(), TxnState::Ready, "{case}");
                        assert_eq!(s.identity().map(|i| i.epoch), Some(1), "{case}");
                    }
                    Abortable => {
                        assert!(matches!(result, Err(TxnError::Abortable { .. })), "{case}");
                        assert_eq!(s.state(), TxnState::NeedsAbort, "{case}");
                    }
                    Fatal => {
                        assert!(matches!(result, Err(TxnError::Fatal { .. })), "{case}");
                        assert_eq!(s.state(), TxnState::Failed, "{case}");
                        // A stopped session sends nothing more.
                        let sent = broker.calls().len();
                        assert!(one_transaction(&mut s).await.is_err(), "{case}");
                        assert_eq!(broker.calls().len(), sent, "{case}");
                    }
                }
            }
        }
    }

    /// Two gateways with one node id: the other one's InitProducerId bumped the epoch, our
    /// next step is refused, the recovery is refused as fenced too: this one stops, says why,
    /// and sends nothing more whatever it is asked.
    #[tokio::test(start_paused = true)]
    async fn a_second_gateway_with_the_node_id_fences_this_one_and_it_stops() {
        let broker = ScriptedCoordinator::default();
        broker.script(
            StepKey::AddPartitions,
            [TxnReply::Refused(codes::PRODUCER_FENCED)],
        );
        broker.script(
            StepKey::Recover,
            [TxnReply::Refused(codes::PRODUCER_FENCED)],
        );
        let mut s = session(&broker);
        let err = one_transaction(&mut s).await.unwrap_err();
        assert!(matches!(err, TxnError::Fenced { .. }), "{err}");
        assert!(err.to_string().contains("edge-bridge.gw-01"), "{err}");
        assert!(err.to_string().contains("same node id"), "{err}");
        assert_eq!(s.state(), TxnState::Fenced);
        let sent = broker.calls().len();
        let cancel = CancellationToken::new();
        assert!(matches!(
            s.init(&cancel).await,
            Err(TxnError::Fenced { .. })
        ));
        assert!(matches!(
            s.abort(&cancel).await,
            Err(TxnError::Fenced { .. })
        ));
        assert!(matches!(
            s.add_partitions(&[tp("t", 0)], &cancel).await,
            Err(TxnError::Fenced { .. })
        ));
        assert!(matches!(
            s.commit(position(1), &cancel).await,
            Err(TxnError::Fenced { .. })
        ));
        assert_eq!(broker.calls().len(), sent, "nothing more was sent");
    }

    /// Tansu 0.6 answers a KIP-588 recovery with UNKNOWN_SERVER_ERROR: a fence-like error then
    /// stops the session (a timed-out transaction and a second gateway look alike; Tansu
    /// never times transactions out anyway).
    #[tokio::test(start_paused = true)]
    async fn without_kip588_a_fence_like_error_stops_the_session() {
        let broker = ScriptedCoordinator::default();
        broker.script(
            StepKey::CommitOffsets,
            [TxnReply::Refused(codes::INVALID_PRODUCER_EPOCH)],
        );
        broker.script(
            StepKey::Recover,
            [TxnReply::Refused(codes::UNKNOWN_SERVER_ERROR)],
        );
        let mut s = session(&broker);
        let err = one_transaction(&mut s).await.unwrap_err();
        assert!(matches!(err, TxnError::Fenced { .. }), "{err}");
        assert!(err.to_string().contains("cannot tell"), "{err}");
        assert_eq!(s.state(), TxnState::Fenced);
    }

    /// After an abortable error, `abort` starts a new epoch with one recovery (the coordinator
    /// aborts what was open); the next transaction goes through under it.
    #[tokio::test(start_paused = true)]
    async fn abort_recovers_a_new_epoch_and_the_next_transaction_goes_through() {
        let broker = ScriptedCoordinator::default();
        broker.script(
            StepKey::AddPartitions,
            [TxnReply::Refused(codes::INVALID_TXN_STATE)],
        );
        let mut s = session(&broker);
        assert!(matches!(
            one_transaction(&mut s).await,
            Err(TxnError::Abortable {
                step: Step::AddPartitions,
                ..
            })
        ));
        // Nothing else goes until it is aborted.
        let cancel = CancellationToken::new();
        assert!(matches!(
            s.add_partitions(&[tp("t", 0)], &cancel).await,
            Err(TxnError::Abortable { .. })
        ));
        s.abort(&cancel).await.unwrap();
        assert_eq!(s.state(), TxnState::Ready);
        assert_eq!(s.identity().map(|i| i.epoch), Some(1));
        assert_eq!(broker.count(StepKey::Recover), 1);
        assert_eq!(broker.count(StepKey::Abort), 0);
        one_transaction(&mut s).await.unwrap();
        let last_add = broker
            .calls()
            .into_iter()
            .rev()
            .find(|c| key(c) == StepKey::AddPartitions)
            .unwrap();
        assert!(matches!(
            last_add,
            TxnRequest::AddPartitions { identity, .. } if identity.epoch == 1
        ));
    }

    /// Without KIP-588 (Tansu 0.6), `abort` ends the transaction with EndTxn(abort) and starts
    /// a new epoch with a fresh InitProducerId; later aborts do not try the recovery again.
    #[tokio::test(start_paused = true)]
    async fn without_kip588_abort_ends_the_transaction_and_starts_a_new_epoch() {
        let broker = ScriptedCoordinator::default();
        broker.script(
            StepKey::AddPartitions,
            [
                TxnReply::Refused(codes::UNKNOWN_PRODUCER_ID),
                TxnReply::Refused(codes::UNKNOWN_PRODUCER_ID),
            ],
        );
        broker.script(
            StepKey::Recover,
            [TxnReply::Refused(codes::UNKNOWN_SERVER_ERROR)],
        );
        let mut s = session(&broker);
        let cancel = CancellationToken::new();
        assert!(one_transaction(&mut s).await.is_err());
        s.abort(&cancel).await.unwrap();
        assert_eq!(broker.count(StepKey::Recover), 1);
        assert_eq!(broker.count(StepKey::Abort), 1);
        assert_eq!(broker.count(StepKey::Init), 2);
        assert_eq!(s.state(), TxnState::Ready);
        assert!(one_transaction(&mut s).await.is_err());
        s.abort(&cancel).await.unwrap();
        assert_eq!(broker.count(StepKey::Recover), 1, "not tried again");
        assert_eq!(broker.count(StepKey::Abort), 2);
        one_transaction(&mut s).await.unwrap();
    }

    /// An EndTxn(commit) whose answer is lost may have committed: it is sent again as a
    /// commit (after finding the coordinator again), never turned into an abort.
    #[tokio::test(start_paused = true)]
    async fn a_commit_whose_answer_is_lost_is_retried_as_a_commit() {
        let broker = ScriptedCoordinator::default();
        let lost = || TxnReply::Lost("timeout".into());
        broker.script(
            StepKey::Commit,
            [lost(), TxnReply::Refused(codes::NOT_COORDINATOR), lost()],
        );
        let mut s = session(&broker);
        one_transaction(&mut s).await.unwrap();
        assert_eq!(broker.count(StepKey::Commit), 4);
        assert_eq!(broker.count(StepKey::Abort), 0);
        // Transaction coordinator found at init and again after each of the three failures.
        assert_eq!(
            broker
                .calls()
                .iter()
                .filter(|c| **c == TxnRequest::FindCoordinator(CoordinatorKind::Transaction))
                .count(),
            4
        );
    }

    /// A coordinator that keeps failing is retried with backoff until it answers; the delays
    /// grow to the cap (no spinning).
    #[tokio::test(start_paused = true)]
    async fn a_busy_coordinator_is_retried_with_growing_delays() {
        let broker = ScriptedCoordinator::default();
        broker.script(
            StepKey::Commit,
            std::iter::repeat_n(TxnReply::Refused(codes::CONCURRENT_TRANSACTIONS), 20),
        );
        let mut s = session(&broker);
        let started = tokio::time::Instant::now();
        one_transaction(&mut s).await.unwrap();
        assert_eq!(broker.count(StepKey::Commit), 21);
        // 20 delays between 5 ms and 100 ms, doubling from 10 ms: at least ~0.9 s.
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
    }

    /// Errors a Produce meets inside a transaction: the delivery's own (leader moved) are
    /// retried as usual; sequence trouble aborts; a fence-like one is checked by a recovery.
    #[tokio::test(start_paused = true)]
    async fn produce_errors_inside_a_transaction() {
        let broker = ScriptedCoordinator::default();
        let mut s = session(&broker);
        let cancel = CancellationToken::new();
        s.init(&cancel).await.unwrap();
        s.add_partitions(&[tp("t", 0)], &cancel).await.unwrap();
        assert_eq!(
            s.produce_failed(6, &cancel).await,
            Ok(()),
            "NOT_LEADER_OR_FOLLOWER"
        );
        assert_eq!(
            s.produce_failed(10, &cancel).await,
            Ok(()),
            "MESSAGE_TOO_LARGE"
        );
        assert!(matches!(
            s.produce_failed(codes::OUT_OF_ORDER_SEQUENCE_NUMBER, &cancel)
                .await,
            Err(TxnError::Abortable {
                step: Step::Produce,
                ..
            })
        ));
        assert_eq!(s.state(), TxnState::NeedsAbort);
        s.abort(&cancel).await.unwrap();
        s.add_partitions(&[tp("t", 0)], &cancel).await.unwrap();
        broker.script(
            StepKey::Recover,
            [TxnReply::Refused(codes::PRODUCER_FENCED)],
        );
        assert!(matches!(
            s.produce_failed(codes::INVALID_PRODUCER_EPOCH, &cancel)
                .await,
            Err(TxnError::Fenced { .. })
        ));
    }

    /// Shutdown interrupts a step that is retrying; calls out of order are refused.
    #[tokio::test(start_paused = true)]
    async fn cancel_interrupts_a_retrying_step_and_calls_out_of_order_are_refused() {
        let broker = ScriptedCoordinator::default();
        let mut s = session(&broker);
        let cancel = CancellationToken::new();
        assert!(matches!(
            s.commit(position(1), &cancel).await,
            Err(TxnError::State { .. })
        ));
        s.init(&cancel).await.unwrap();
        broker.script(
            StepKey::AddPartitions,
            std::iter::repeat_n(TxnReply::Lost("down".into()), 1000),
        );
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            canceller.cancel();
        });
        assert_eq!(
            s.add_partitions(&[tp("t", 0)], &cancel).await,
            Err(TxnError::Cancelled)
        );
    }
}
