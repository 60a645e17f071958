//! The uplink as an operator sees it: its state (connecting, up, down, auth failed) derived
//! from the outcome of every request, kept in [`ForwardMetrics`] for `/metrics` and
//! `edge-broker status`, and an outage told in a few log lines instead of one per retry:
//!
//! - WARN (ERROR when authentication or authorization failed) once when the uplink goes down,
//!   with the reason;
//! - WARN every `outage_log_interval` while it is down: records and bytes buffered, the log's
//!   share of its budget, the oldest event's age, and the time until the log is full at the
//!   current ingest rate;
//! - INFO once when it is back, and once when the backlog it came back to is forwarded
//!   (records, duration, rate).
//!
//! Every failed attempt is logged at DEBUG only. [`Story`] decides which line is due, as
//! plain code (tested here); [`Uplink`] feeds it and writes the lines.
//!
//! [`UplinkState`] is defined in [`crate::metrics`], with the gauge that stores it, and
//! re-exported here.
//!
//! [`Uplink::pause`] is the forwarder's one retry wait: the next backoff delay, cut short when
//! a cheap probe (a new connection and its ApiVersions handshake) finds the cluster answering
//! again, so the replay starts within a probe interval of Kafka's return instead of up to
//! `retry_backoff_max` later. After a refusal (credentials, certificates, ACLs) the delays grow
//! to `auth_retry_backoff_max` instead, cut short when the local credentials change.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_log::Log;
use tokio_util::sync::CancellationToken;

use crate::backoff::{RetryBackoff, RetryWaits};
use crate::metrics::{ForwardMetrics, LastError, error_kind};
use crate::producer::{KafkaProducer, ProduceError};

// Defined with the gauge that stores it, in `metrics` (the uplink depends on it, not back).
pub use crate::metrics::UplinkState;

/// How often a paused retry probes the cluster early in an outage: librdkafka's first reconnect
/// backoff (`reconnect.backoff.ms`). On average the replay starts half of this after Kafka
/// accepts connections again (at 250 ms that was ~10% of a 1M-record drain on loopback). A failed
/// probe is one TCP connect: refused (a SYN and a reset, ~150 bytes on the wire) while the
/// network is up and Kafka is not, nothing sent while the link itself is down, and a probe that
/// hangs delays the next one (it is awaited, never stacked). Later in an outage the probes
/// spread out ([`probe_interval`]).
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The longest wait between two probes, however long the outage: Kafka's return is noticed
/// within a second (issue 17), and a day down costs 86,400 probes (~13 MB on a metered uplink
/// whose network is up while Kafka is not) instead of 864,000 (~130 MB) at [`PROBE_EVERY`].
pub const PROBE_EVERY_AT_MOST: Duration = Duration::from_secs(1);

/// Probes are a 60th of the outage so far apart (between [`PROBE_EVERY`] and
/// [`PROBE_EVERY_AT_MOST`]): the replay starts within about 2% of the outage's length after
/// Kafka returns. An outage of up to 6 s (a Kafka restart) is probed every 100 ms throughout.
pub const PROBE_SHARE_OF_OUTAGE: u32 = 60;

/// The wait before the next probe, `down` into an outage.
pub fn probe_interval(down: Duration) -> Duration {
    (down / PROBE_SHARE_OF_OUTAGE).clamp(PROBE_EVERY, PROBE_EVERY_AT_MOST)
}

/// What the log holds for Kafka when a line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Records not yet acknowledged by Kafka.
    pub records: u64,
    /// Their estimated bytes on disk.
    pub bytes: u64,
    /// Bytes in the log's segment files.
    pub log_bytes: u64,
    /// The log's budget (`[log] max_bytes`).
    pub budget: u64,
    /// Bytes written to the log since it was opened (grows with ingest).
    pub written: u64,
    /// Age of the oldest unforwarded event, seconds.
    pub oldest_age: f64,
    /// The forwarder's committed offset.
    pub committed: u64,
}

/// A line [`Story`] says is due.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// The uplink went down (or was refused).
    Down {
        /// Down or auth failed.
        state: UplinkState,
        /// Why (the error).
        reason: String,
        /// The backlog then.
        backlog: Backlog,
    },
    /// Still down: the periodic summary.
    StillDown {
        /// Down or auth failed.
        state: UplinkState,
        /// How long it has been down.
        since: Duration,
        /// The backlog now.
        backlog: Backlog,
        /// Ingest into the log since the last line, bytes per second.
        ingest_bytes_per_sec: f64,
        /// The last error.
        reason: String,
    },
    /// Up for the first time, nothing from before this start to replay.
    Up,
    /// Up again after an outage, or for the first time with a backlog to forward.
    Back {
        /// How long it was down (None: first connection).
        after: Option<Duration>,
        /// The backlog to replay.
        backlog: Backlog,
    },
    /// The backlog present when the uplink came back is forwarded.
    ReplayDone {
        /// Records forwarded since the uplink came back.
        records: u64,
        /// How long it took.
        took: Duration,
    },
}

impl Line {
    /// The text of the line.
    pub fn text(&self) -> String {
        match self {
            Line::Down {
                state,
                reason,
                backlog,
            } => format!(
                "Kafka uplink {}: {reason}; events are kept in the log ({} records not yet \
                 forwarded) and sent once it is back",
                if *state == UplinkState::AuthFailed {
                    "refused us"
                } else {
                    "down"
                },
                backlog.records
            ),
            Line::StillDown {
                state,
                since,
                backlog,
                ingest_bytes_per_sec,
                reason,
            } => {
                let full = if backlog.budget == 0 {
                    String::new()
                } else if *ingest_bytes_per_sec <= 0.0 {
                    ", no ingest".to_owned()
                } else {
                    let left = backlog.budget.saturating_sub(backlog.log_bytes) as f64;
                    format!(
                        ", full in ~{} at {}/s",
                        human_duration(Duration::from_secs_f64(
                            (left / ingest_bytes_per_sec).min(1e9)
                        )),
                        human_bytes(*ingest_bytes_per_sec as u64)
                    )
                };
                format!(
                    "Kafka uplink {} for {}: {} records (~{}) buffered, log at {}% of \
                     max_bytes{full}, oldest event {} old; last error: {reason}",
                    if *state == UplinkState::AuthFailed {
                        "refusing us"
                    } else {
                        "still down"
                    },
                    human_duration(*since),
                    backlog.records,
                    human_bytes(backlog.bytes),
                    percent(backlog.log_bytes, backlog.budget),
                    human_duration(Duration::from_secs_f64(backlog.oldest_age.max(0.0))),
                )
            }
            Line::Up => "Kafka uplink up".to_owned(),
            Line::Back { after, backlog } => match after {
                Some(after) => format!(
                    "Kafka uplink back after {}; replaying {} records",
                    human_duration(*after),
                    backlog.records
                ),
                None => format!(
                    "Kafka uplink up; forwarding a backlog of {} records",
                    backlog.records
                ),
            },
            Line::ReplayDone { records, took } => format!(
                "replay done: {records} records in {} ({:.0} records/s); forwarding live",
                human_duration(*took),
                *records as f64 / took.as_secs_f64().max(0.001)
            ),
        }
    }
}

/// The replay that started when the uplink came back.
#[derive(Debug, Clone, Copy)]
struct Replay {
    since: Instant,
    /// The committed offset then.
    from: u64,
    /// The log's durable end then: the replay is done when the cursor passes it.
    until: u64,
}

/// Decides which outage line is due (see the module docs). No I/O, no clock of its own.
#[derive(Debug)]
pub struct Story {
    state: UplinkState,
    /// When the uplink went down.
    down_since: Option<Instant>,
    /// When the last down or summary line was written, and the log's bytes written then.
    last_line: Option<(Instant, u64)>,
    reason: String,
    replay: Option<Replay>,
    interval: Duration,
    /// The forwarder started behind the log (a backlog from before this start).
    started_behind: bool,
    /// Times the uplink went down so far.
    downs: u64,
    /// Times it came up (or back) so far.
    ups: u64,
}

/// When a request was sent, as [`Story::mark`] counts the uplink's changes: an answer to a
/// request sent before the uplink went down (late, from the broker that then died) does not
/// say it is back, and a failure of one sent before it came back (late, from the outage: a
/// connection refused while the broker was away, a connection the restarting broker closed)
/// does not start a new outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    downs: u64,
    ups: u64,
}

impl Story {
    /// A story whose summaries come every `interval` while the uplink is down; the forwarder
    /// `started_behind` the log's durable end, or not.
    pub fn new(interval: Duration, started_behind: bool) -> Self {
        Self {
            state: UplinkState::Connecting,
            down_since: None,
            last_line: None,
            reason: String::new(),
            replay: None,
            interval,
            started_behind,
            downs: 0,
            ups: 0,
        }
    }

    /// The mark of a request sent now.
    pub fn mark(&self) -> Mark {
        Mark {
            downs: self.downs,
            ups: self.ups,
        }
    }

    /// The current state.
    pub fn state(&self) -> UplinkState {
        self.state
    }

    /// How long the uplink has been down at `now` (zero while it is not).
    pub fn down_for(&self, now: Instant) -> Duration {
        self.down_since
            .filter(|_| self.state.is_down())
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// A request sent at `sent` failed, leaving the uplink `state` (down or auth failed) for
    /// `reason`; nothing changes if the uplink came up since it was sent.
    pub fn failure(
        &mut self,
        now: Instant,
        sent: Mark,
        state: UplinkState,
        reason: &str,
        backlog: impl FnOnce() -> Backlog,
    ) -> Option<Line> {
        if sent.ups < self.ups {
            return None;
        }
        reason.clone_into(&mut self.reason);
        if self.state == state {
            return None;
        }
        let was_down = self.state.is_down();
        self.state = state;
        self.replay = None;
        if !was_down {
            self.down_since = Some(now);
            self.downs += 1;
        }
        let backlog = backlog();
        self.last_line = Some((now, backlog.written));
        Some(Line::Down {
            state,
            reason: reason.to_owned(),
            backlog,
        })
    }

    /// A request sent at `mark` was answered.
    pub fn success(
        &mut self,
        now: Instant,
        mark: Mark,
        backlog: impl FnOnce() -> Backlog,
    ) -> Option<Line> {
        if self.state == UplinkState::Up || mark.downs < self.downs {
            return None;
        }
        self.ups += 1;
        let after = match self.state {
            UplinkState::Connecting => None,
            _ => Some(
                self.down_since
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
            ),
        };
        self.state = UplinkState::Up;
        self.down_since = None;
        self.last_line = None;
        let backlog = backlog();
        // A replay: after an outage, or at the first connection with a backlog from before
        // this start (not the few records that came in while connecting).
        if after.is_none() && !self.started_behind {
            return Some(Line::Up);
        }
        self.replay = Some(Replay {
            since: now,
            from: backlog.committed,
            until: backlog.committed + backlog.records,
        });
        Some(Line::Back { after, backlog })
    }

    /// The forwarder committed up to `committed`: the replay is done once it passed the
    /// backlog the uplink came back to (records that came in meanwhile are counted too).
    pub fn committed(&mut self, now: Instant, committed: u64) -> Option<Line> {
        if self.replay.is_none_or(|r| committed < r.until) {
            return None;
        }
        let replay = self.replay.take()?;
        Some(Line::ReplayDone {
            records: committed.saturating_sub(replay.from),
            took: now.saturating_duration_since(replay.since),
        })
    }

    /// Time passed: the summary line if the uplink is down and one is due.
    pub fn tick(&mut self, now: Instant, backlog: impl FnOnce() -> Backlog) -> Option<Line> {
        if !self.state.is_down() {
            return None;
        }
        let (last, written) = self.last_line?;
        let elapsed = now.saturating_duration_since(last);
        if elapsed < self.interval {
            return None;
        }
        let backlog = backlog();
        self.last_line = Some((now, backlog.written));
        Some(Line::StillDown {
            state: self.state,
            since: self
                .down_since
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
            backlog,
            ingest_bytes_per_sec: backlog.written.saturating_sub(written) as f64
                / elapsed.as_secs_f64().max(0.001),
            reason: self.reason.clone(),
        })
    }
}

/// The uplink state shared by the forwarder's stages (cheap to clone).
#[derive(Clone)]
pub struct Uplink {
    inner: Arc<Shared>,
}

struct Shared {
    metrics: Arc<ForwardMetrics>,
    log: Log,
    story: parking_lot::Mutex<Story>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("state", &self.inner.metrics.uplink_state())
            .finish_non_exhaustive()
    }
}

impl Uplink {
    /// The uplink of a forwarder reading `log`, reporting into `metrics` (whose committed
    /// offset is the forwarder's at start), with a summary line every `interval` while down.
    pub fn new(log: Log, metrics: Arc<ForwardMetrics>, interval: Duration) -> Self {
        let behind = log.durable_end() > metrics.committed.load(Ordering::Relaxed);
        Self {
            inner: Arc::new(Shared {
                metrics,
                log,
                story: parking_lot::Mutex::new(Story::new(interval, behind)),
            }),
        }
    }

    /// The backlog now.
    fn backlog(&self) -> Backlog {
        let m = &self.inner.metrics;
        let stats = self.inner.log.stats();
        Backlog {
            records: m.lag_records(stats.durable_end),
            bytes: m.lag_bytes(stats.durable_end),
            log_bytes: stats.bytes,
            budget: self.inner.log.config().max_bytes,
            written: stats.bytes_written,
            oldest_age: m.oldest_age_seconds(stats.durable_end),
            committed: m.committed.load(Ordering::Relaxed),
        }
    }

    /// The mark of a request sent now (hand it to [`Uplink::succeeded`] with its answer).
    pub fn mark(&self) -> Mark {
        self.inner.story.lock().mark()
    }

    /// A request sent at `mark` was answered.
    pub fn succeeded(&self, mark: Mark) {
        if self.inner.metrics.uplink_state() == UplinkState::Up {
            return;
        }
        let (line, state) = {
            let mut story = self.inner.story.lock();
            let line = story.success(Instant::now(), mark, || self.backlog());
            (line, story.state())
        };
        self.inner.metrics.set_uplink_state(state);
        if let Some(line) = line {
            write(&line);
        }
    }

    /// A request failed: counted by kind, remembered as the last error, logged at DEBUG,
    /// and (if it says the uplink is down) told once per outage.
    pub fn failed(&self, error: &ProduceError) {
        if self.count(error) {
            let now = self.mark();
            self.down(error, now);
        }
    }

    /// The answers to a round of requests sent at `mark`: the uplink is up if any was
    /// answered, down if none was and one says so; every failure is counted.
    pub fn outcome(&self, mark: Mark, results: &[Result<i64, ProduceError>]) {
        let mut answered = false;
        let mut down = None;
        for result in results {
            match result {
                Ok(_) => answered = true,
                Err(e) => {
                    if self.count(e) && down.is_none() {
                        down = Some(e);
                    }
                }
            }
        }
        if answered {
            self.succeeded(mark);
        } else if let Some(e) = down {
            self.down(e, mark);
        }
    }

    /// Counts a failed request (by kind, as the last error, at DEBUG). True if it tells
    /// something about the uplink (see [`UplinkState::after`]).
    fn count(&self, error: &ProduceError) -> bool {
        if matches!(
            error,
            ProduceError::Blocked { .. } | ProduceError::NotSent { .. }
        ) {
            return false;
        }
        let kind = error_kind(error);
        let message = error.to_string();
        tracing::debug!(kind, error = %message, "Kafka request failed");
        let metrics = &self.inner.metrics;
        metrics.count_error(kind);
        *metrics.last_error.lock() = Some(LastError {
            kind,
            message,
            at_ms: unix_ms(),
        });
        UplinkState::after(error).is_some()
    }

    /// The uplink is down (or refusing us) because of `error`, from a request sent at `sent`.
    fn down(&self, error: &ProduceError, sent: Mark) {
        let Some(state) = UplinkState::after(error) else {
            return;
        };
        let (line, state) = {
            let mut story = self.inner.story.lock();
            let line = story.failure(Instant::now(), sent, state, &error.to_string(), || {
                self.backlog()
            });
            (line, story.state())
        };
        self.inner.metrics.set_uplink_state(state);
        if let Some(line) = line {
            write(&line);
        }
    }

    /// Exactly-once delivery stopped until a restart: `Fenced` by another producer with this
    /// gateway's transactional.id, or the transactional protocol refused (`AuthFailed`: ACLs,
    /// a broker without transactions); `reason` says what showed it. The state stays and the
    /// reason is the last error, for `/metrics` and `edge-broker status`.
    pub fn stopped(&self, state: UplinkState, reason: &str) {
        let metrics = &self.inner.metrics;
        let kind = if state == UplinkState::Fenced {
            "fenced"
        } else {
            "transaction"
        };
        metrics.count_error(kind);
        *metrics.last_error.lock() = Some(LastError {
            kind,
            message: reason.to_owned(),
            at_ms: unix_ms(),
        });
        {
            let mut story = self.inner.story.lock();
            let now = story.mark();
            let _ = story.failure(Instant::now(), now, state, reason, || self.backlog());
        }
        metrics.set_uplink_state(state);
    }

    /// The forwarder committed its cursor up to `committed`.
    pub fn committed(&self, committed: u64) {
        let line = self.inner.story.lock().committed(Instant::now(), committed);
        if let Some(line) = line {
            write(&line);
        }
    }

    /// Writes the summary line while the uplink is down, every interval, until `cancel`.
    pub async fn tell(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if !self.inner.metrics.uplink_state().is_down() {
                continue;
            }
            let line = self
                .inner
                .story
                .lock()
                .tick(Instant::now(), || self.backlog());
            if let Some(line) = line {
                write(&line);
            }
        }
    }

    /// Waits out `retry`'s next backoff delay, cut short when a probe finds the cluster
    /// answering again (only after a failure that means "unreachable", and not twice in a
    /// row, so a cluster that accepts connections but fails requests is not retried every
    /// probe interval). True if `cancel` fired.
    ///
    /// After a refusal (credentials, certificates, ACLs: nothing a retry fixes by itself) the
    /// delays grow to the longer `refused_max` instead, and the wait is cut short when the
    /// local credentials change ([`KafkaProducer::credentials`], read every
    /// [`CREDENTIALS_CHECKED_EVERY`]): an operator's fix is used at once, a fix on the cluster's
    /// side within `refused_max`.
    pub async fn pause<P: KafkaProducer>(
        &self,
        producer: &P,
        retry: &mut Retry,
        cancel: &CancellationToken,
    ) -> bool {
        let delay = retry.backoff.next_delay(retry.refused);
        let probe = retry.unreachable && !retry.cut_short;
        let down = self.inner.story.lock().down_for(Instant::now());
        let credentials = if retry.refused {
            producer.credentials()
        } else {
            None
        };
        retry.cut_short = tokio::select! {
            biased;
            _ = cancel.cancelled() => return true,
            _ = tokio::time::sleep(delay) => false,
            () = probe_until_answered(producer, down), if probe => true,
            () = credentials_changed(producer, credentials), if credentials.is_some() => {
                tracing::info!("the Kafka credentials changed; retrying now");
                true
            }
        };
        if retry.cut_short {
            tracing::debug!(?delay, "retry wait cut short");
        }
        false
    }
}

/// How often a wait after a refusal reads the local credentials to see whether they changed.
/// Reading a secret file once a second is cheap; the uplink is not touched.
pub const CREDENTIALS_CHECKED_EVERY: Duration = Duration::from_secs(1);

/// Returns once `producer`'s credentials differ from `before`.
async fn credentials_changed<P: KafkaProducer>(producer: &P, before: Option<u64>) {
    loop {
        tokio::time::sleep(CREDENTIALS_CHECKED_EVERY).await;
        if producer.credentials() != before {
            return;
        }
    }
}

/// Probes until one succeeds, [`probe_interval`] apart, the outage having lasted `down` when
/// called.
pub(crate) async fn probe_until_answered<P: KafkaProducer>(producer: &P, down: Duration) {
    let start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(probe_interval(down + start.elapsed())).await;
        if producer.probe().await.is_ok() {
            return;
        }
    }
}

/// Retry state of one retry loop: the backoff, and whether probing may cut its wait short.
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: RetryBackoff,
    /// The last failure meant "unreachable" (a probe can tell when that ends).
    unreachable: bool,
    /// The last failure was a refusal ([`ProduceError::is_auth_failure`]).
    refused: bool,
    /// The last wait was cut short by a probe or a change of credentials.
    cut_short: bool,
}

impl Retry {
    /// A retry loop waiting `waits`.
    pub fn new(waits: RetryWaits) -> Self {
        Self {
            backoff: RetryBackoff::new(waits),
            unreachable: false,
            refused: false,
            cut_short: false,
        }
    }

    /// Notes why the last attempt failed (None: not a Kafka error, e.g. a local file).
    pub fn failed(&mut self, error: Option<&ProduceError>) {
        self.unreachable = error.is_some_and(|e| {
            matches!(
                error_kind(e),
                "unreachable" | "connection_reset" | "timeout"
            )
        });
        self.refused = error.is_some_and(ProduceError::is_auth_failure);
    }

    /// The attempt succeeded: the next failure waits from the shortest delay again.
    pub fn succeeded(&mut self) {
        self.backoff.reset();
        self.cut_short = false;
    }
}

/// Writes `line` at its level.
fn write(line: &Line) {
    let text = line.text();
    match line {
        Line::Down {
            state: UplinkState::AuthFailed,
            ..
        }
        | Line::StillDown {
            state: UplinkState::AuthFailed,
            ..
        } => tracing::error!("{text}"),
        Line::Down { .. } | Line::StillDown { .. } => tracing::warn!("{text}"),
        Line::Up | Line::Back { .. } | Line::ReplayDone { .. } => tracing::info!("{text}"),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `part` as a whole percentage of `whole`.
fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        ((u128::from(part) * 100) / u128::from(whole)) as u64
    }
}

/// `950ms`, `8.2s`, `2m10s`, `1h40m`, `3d4h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 1 {
        format!("{}ms", d.as_millis())
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d{}h", s / 86_400, s % 86_400 / 3600)
    }
}

/// `512 B`, `3.1 KiB`, `12.0 MiB`, `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::codes;

    const SEC: Duration = Duration::from_secs(1);

    /// A cluster that answers probes from `back` on (virtual time), counting them.
    /// Its local credentials (see [`KafkaProducer::credentials`]) are `credentials`, which a
    /// test may change as an operator would.
    struct BackAt {
        back: tokio::time::Instant,
        probes: std::sync::atomic::AtomicUsize,
        credentials: Arc<std::sync::atomic::AtomicU64>,
    }

    impl BackAt {
        /// Back `after` from now.
        fn after(after: Duration) -> Self {
            Self {
                back: tokio::time::Instant::now() + after,
                probes: Default::default(),
                credentials: Default::default(),
            }
        }

        fn probes(&self) -> usize {
            self.probes.load(Ordering::SeqCst)
        }
    }

    impl KafkaProducer for BackAt {
        async fn send(
            &self,
            _tp: &crate::topition::Topition,
            _records: &[crate::producer::ProduceRecord],
            _encoded: Option<crate::producer::EncodedBatch>,
            _attempt: crate::producer::Attempt,
        ) -> crate::producer::ProduceAck {
            unreachable!("only probed")
        }

        async fn produce(
            &self,
            _tp: &crate::topition::Topition,
            _records: &[crate::producer::ProduceRecord],
        ) -> Result<i64, ProduceError> {
            unreachable!("only probed")
        }

        async fn partition_count(&self, _topic: &str) -> Result<i32, ProduceError> {
            unreachable!("only probed")
        }

        fn credentials(&self) -> Option<u64> {
            Some(self.credentials.load(Ordering::SeqCst))
        }

        async fn probe(&self) -> Result<(), ProduceError> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            if tokio::time::Instant::now() >= self.back {
                Ok(())
            } else {
                Err(ProduceError::Io {
                    broker: "127.0.0.1:9092".into(),
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                })
            }
        }
    }

    /// Issue 17: Kafka accepting connections again is noticed within librdkafka's first
    /// reconnect backoff (100 ms), not a quarter of a second later: in a drain of a million
    /// records on loopback (~1.2 s) the wait for the probe was the largest part of the time
    /// before the first produce. Paused clock: the probe that answers is the first one after
    /// Kafka is back.
    #[tokio::test(start_paused = true)]
    async fn kafka_back_is_noticed_within_100_ms() {
        let start = tokio::time::Instant::now();
        let kafka = BackAt::after(Duration::from_millis(1));
        probe_until_answered(&kafka, Duration::ZERO).await;
        let noticed = start.elapsed();
        assert!(
            noticed <= Duration::from_millis(100),
            "Kafka, back after 1 ms, noticed after {noticed:?}"
        );
        assert_eq!(kafka.probes(), 1);

        // Down for 2 s: one failed probe per interval, then the one that answers.
        let start = tokio::time::Instant::now();
        let kafka = BackAt::after(2 * SEC);
        probe_until_answered(&kafka, Duration::ZERO).await;
        let late = start.elapsed() - 2 * SEC;
        assert!(late <= Duration::from_millis(100), "noticed {late:?} late");
        assert_eq!(kafka.probes(), 20);
    }

    /// The time `uplink` waits after `retry` failed with `error`.
    async fn waited(
        uplink: &Uplink,
        producer: &BackAt,
        retry: &mut Retry,
        error: &ProduceError,
    ) -> Duration {
        let start = tokio::time::Instant::now();
        retry.failed(Some(error));
        let cancelled = uplink
            .pause(producer, retry, &CancellationToken::new())
            .await;
        assert!(!cancelled);
        start.elapsed()
    }

    /// A metered uplink while the cluster refuses us: every attempt is a connection and its
    /// handshake, and only a fix ends the refusal, so the waits grow to `refused_max` (not
    /// `max`); a changed password file is tried within a second whatever the wait; after a
    /// success other errors wait up to `max` again. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_retried_sparsely_and_a_changed_password_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(edge_log::LogConfig::new(dir.path())).unwrap();
        let uplink = Uplink::new(log, Arc::default(), 60 * SEC);
        let producer = BackAt::after(86_400 * SEC);
        let waits = RetryWaits {
            min: Duration::from_millis(100),
            max: 5 * SEC,
            refused_max: 60 * SEC,
        };
        let mut retry = Retry::new(waits);
        let refused =
            ProduceError::refused("Produce", "t", 0, codes::SASL_AUTHENTICATION_FAILED, None);
        let mut total = Duration::ZERO;
        let mut longest = Duration::ZERO;
        for _ in 0..14 {
            let w = waited(&uplink, &producer, &mut retry, &refused).await;
            assert!(w <= 60 * SEC, "{w:?}");
            total += w;
            longest = longest.max(w);
        }
        // 0.1 s doubling: 51.2 s by the 10th, then 60 s, each drawn from [half, whole].
        assert!(longest >= 30 * SEC, "longest wait {longest:?}");
        assert!(total >= 120 * SEC, "14 refused attempts in {total:?}");

        // The operator fixes the password file 3 s into a wait of 30 s or more.
        let credentials = Arc::clone(&producer.credentials);
        tokio::spawn(async move {
            tokio::time::sleep(3 * SEC).await;
            credentials.store(1, Ordering::SeqCst);
        });
        let w = waited(&uplink, &producer, &mut retry, &refused).await;
        assert!(
            (3 * SEC..=3 * SEC + CREDENTIALS_CHECKED_EVERY).contains(&w),
            "tried {w:?} after the wait began"
        );

        retry.succeeded();
        let busy = ProduceError::refused("Produce", "t", 0, codes::NOT_LEADER_OR_FOLLOWER, None);
        for _ in 0..10 {
            let w = waited(&uplink, &producer, &mut retry, &busy).await;
            assert!(w <= 5 * SEC, "{w:?}");
        }
    }

    /// Probes every 100 ms through a Kafka restart, then further apart: a 60th of the outage,
    /// at most a second.
    #[test]
    fn probes_spread_out_as_an_outage_lasts() {
        let ms = Duration::from_millis;
        for (down, every) in [
            (Duration::ZERO, ms(100)),
            (6 * SEC, ms(100)),
            (12 * SEC, ms(200)),
            (30 * SEC, ms(500)),
            (60 * SEC, SEC),
            (86_400 * SEC, SEC),
        ] {
            assert_eq!(probe_interval(down), every, "{down:?} into an outage");
        }
    }

    /// Issue 17, a metered uplink: an hour without Kafka (the network up, every probe
    /// refused) costs a few thousand probes, not the 36,000 of one every 100 ms, and Kafka's
    /// return is still noticed within a second. A wait that starts late in an outage probes
    /// at the outage's pace at once, not from 100 ms again. Paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_long_outage_is_probed_sparsely_and_its_end_within_a_second() {
        let start = tokio::time::Instant::now();
        let kafka = BackAt::after(3600 * SEC);
        probe_until_answered(&kafka, Duration::ZERO).await;
        let late = start.elapsed() - 3600 * SEC;
        assert!(late <= SEC, "noticed {late:?} late");
        let probes = kafka.probes();
        // 60 in the first 6 s, ~60·ln(10) ≈ 138 until a minute, then one a second.
        assert!((3600..3900).contains(&probes), "{probes} probes in an hour");

        let kafka = BackAt::after(10 * SEC);
        probe_until_answered(&kafka, 600 * SEC).await;
        assert_eq!(kafka.probes(), 10, "one a second");
    }

    #[test]
    fn the_outage_lasts_from_the_first_failure_until_an_answer() {
        let t0 = Instant::now();
        let mut story = Story::new(60 * SEC, false);
        assert_eq!(story.down_for(t0 + SEC), Duration::ZERO, "connecting");
        let sent = story.mark();
        let refused = "connection refused";
        story.failure(t0, sent, UplinkState::Down, refused, || backlog(0, 0));
        story.failure(t0 + SEC, sent, UplinkState::Down, refused, || backlog(0, 0));
        assert_eq!(
            story.down_for(t0 + 5 * SEC),
            5 * SEC,
            "from the first failure"
        );
        let sent = story.mark();
        story.success(t0 + 6 * SEC, sent, || backlog(0, 0));
        assert_eq!(story.down_for(t0 + 7 * SEC), Duration::ZERO, "up again");
    }

    fn backlog(records: u64, written: u64) -> Backlog {
        Backlog {
            records,
            bytes: records * 100,
            log_bytes: 1 << 20,
            budget: 10 << 20,
            written,
            oldest_age: 12.0,
            committed: 1000,
        }
    }

    /// 150 failed retries in 8 s (the demo's outage) make one down line, a summary every
    /// interval, one line when it is back and one when the replay is done.
    #[test]
    fn an_outage_is_told_in_a_few_lines_whatever_the_retries() {
        let t0 = Instant::now();
        let mut story = Story::new(2 * SEC, false);
        let mut lines = Vec::new();
        for i in 0..150u64 {
            let now = t0 + Duration::from_millis(i * 53);
            lines.extend(story.failure(
                now,
                story.mark(),
                UplinkState::Down,
                "connection refused",
                || backlog(i, i * 1000),
            ));
            lines.extend(story.tick(now, || backlog(i, i * 1000)));
        }
        let back = t0 + 8 * SEC;
        lines.extend(story.success(back, story.mark(), || backlog(400, 150_000)));
        lines.extend(story.success(back, story.mark(), || backlog(400, 150_000)));
        lines.extend(story.committed(back + SEC, 1399));
        lines.extend(story.committed(back + 2 * SEC, 1400));
        lines.extend(story.committed(back + 3 * SEC, 1500));
        let kinds: Vec<&str> = lines
            .iter()
            .map(|l| match l {
                Line::Down { .. } => "down",
                Line::StillDown { .. } => "still",
                Line::Up => "up",
                Line::Back { .. } => "back",
                Line::ReplayDone { .. } => "done",
            })
            .collect();
        assert_eq!(kinds, ["down", "still", "still", "still", "back", "done"]);
        let Line::StillDown {
            ingest_bytes_per_sec,
            since,
            ..
        } = &lines[1]
        else {
            unreachable!()
        };
        // 1000 bytes per failure, a failure every 53 ms.
        assert!(
            (18_000.0..=20_000.0).contains(ingest_bytes_per_sec),
            "{ingest_bytes_per_sec}"
        );
        assert!(*since >= 2 * SEC);
        assert_eq!(
            lines[5],
            Line::ReplayDone {
                records: 400,
                took: 2 * SEC
            }
        );
        assert!(
            lines[0].text().contains("connection refused"),
            "{}",
            lines[0].text()
        );
        assert!(
            lines[4]
                .text()
                .starts_with("Kafka uplink back after 8.0s; replaying 400")
        );
        assert_eq!(
            lines[5].text(),
            "replay done: 400 records in 2.0s (200 records/s); forwarding live"
        );
    }

    #[test]
    fn the_summary_says_what_is_buffered_and_when_the_log_is_full() {
        let line = Line::StillDown {
            state: UplinkState::Down,
            since: 130 * SEC,
            backlog: backlog(12_345, 0),
            ingest_bytes_per_sec: 1024.0,
            reason: "connecting to Kafka broker b:9092: Connection refused".into(),
        };
        assert_eq!(
            line.text(),
            "Kafka uplink still down for 2m10s: 12345 records (~1.2 MiB) buffered, log at 10% \
             of max_bytes, full in ~2h33m at 1.0 KiB/s, oldest event 12.0s old; last error: \
             connecting to Kafka broker b:9092: Connection refused"
        );
    }

    /// A refusal (TLS, SASL, ACL) is its own state; going from down to refused is told, but
    /// the outage keeps its start. The first connection is told in one line, with a replay
    /// only if the forwarder started behind the log.
    #[test]
    fn auth_failures_are_their_own_state_and_the_first_connection_tells_a_backlog() {
        let t0 = Instant::now();
        let mut story = Story::new(60 * SEC, false);
        assert_eq!(
            story.success(t0, story.mark(), || backlog(40, 0)),
            Some(Line::Up)
        );
        assert_eq!(story.committed(t0, 1040), None, "no replay to tell");
        let mut behind = Story::new(60 * SEC, true);
        assert!(matches!(
            behind.success(t0, behind.mark(), || backlog(50_000, 0)),
            Some(Line::Back { after: None, .. })
        ));
        assert!(matches!(
            behind.committed(t0 + SEC, 51_000),
            Some(Line::ReplayDone {
                records: 50_000,
                ..
            })
        ));
        assert!(
            story
                .failure(t0, story.mark(), UplinkState::Down, "refused", || backlog(
                    0, 0
                ))
                .is_some()
        );
        let refused = story.failure(
            t0 + SEC,
            story.mark(),
            UplinkState::AuthFailed,
            "bad certificate",
            || backlog(0, 0),
        );
        assert!(
            refused
                .unwrap()
                .text()
                .starts_with("Kafka uplink refused us: bad certificate")
        );
        assert_eq!(story.state(), UplinkState::AuthFailed);
        let Some(Line::Back { after, .. }) =
            story.success(t0 + 5 * SEC, story.mark(), || backlog(3, 0))
        else {
            panic!("back");
        };
        assert_eq!(after, Some(5 * SEC));
    }

    /// An answer to a request sent before the uplink went down (answered by the broker that
    /// then died, handled late) does not say it is back.
    #[test]
    fn late_answers_from_before_an_outage_do_not_end_it() {
        let t0 = Instant::now();
        let mut story = Story::new(60 * SEC, false);
        let before = story.mark();
        assert_eq!(story.success(t0, before, || backlog(0, 0)), Some(Line::Up));
        let sent = story.mark();
        assert!(
            story
                .failure(t0, story.mark(), UplinkState::Down, "refused", || backlog(
                    0, 0
                ))
                .is_some()
        );
        assert_eq!(story.success(t0 + SEC, sent, || backlog(0, 0)), None);
        assert_eq!(story.state(), UplinkState::Down);
        assert!(matches!(
            story.success(t0 + SEC, story.mark(), || backlog(0, 0)),
            Some(Line::Back { .. })
        ));
    }

    /// A failure of a request sent during the outage, handled after the uplink came back (a
    /// connection refused while the broker was away, or one the restarting broker closed),
    /// does not start a new outage: the uplink is told back once. One sent after it came back
    /// does.
    #[test]
    fn late_failures_from_an_outage_do_not_start_another() {
        let t0 = Instant::now();
        let mut story = Story::new(60 * SEC, false);
        assert_eq!(
            story.success(t0, story.mark(), || backlog(0, 0)),
            Some(Line::Up)
        );
        assert!(
            story
                .failure(t0, story.mark(), UplinkState::Down, "refused", || backlog(
                    0, 0
                ))
                .is_some()
        );
        let during = story.mark();
        assert!(matches!(
            story.success(t0 + SEC, story.mark(), || backlog(9, 0)),
            Some(Line::Back { .. })
        ));
        assert_eq!(
            story.failure(t0 + SEC, during, UplinkState::Down, "refused", || backlog(
                0, 0
            )),
            None
        );
        assert_eq!(story.state(), UplinkState::Up);
        let after = story.mark();
        assert!(
            story
                .failure(t0 + 2 * SEC, after, UplinkState::Down, "reset", || backlog(
                    0, 0
                ))
                .is_some()
        );
        assert_eq!(story.state(), UplinkState::Down);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(Duration::from_millis(950)), "950ms");
        assert_eq!(human_duration(Duration::from_millis(8_240)), "8.2s");
        assert_eq!(human_duration(130 * SEC), "2m10s");
        assert_eq!(human_duration(6000 * SEC), "1h40m");
        assert_eq!(human_duration(100_000 * SEC), "1d3h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(1, 0), 0);
    }
}
