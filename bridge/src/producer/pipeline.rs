//! The pipelined connection Produce goes over: [`Pipeline`] keeps up to `max_in_flight`
//! requests in flight on one broker connection ([`Connection::into_pipeline`], after the
//! connection's set-up in `conn`).
//!
//! The caller writes the requests in order under its own lock, a reader task
//! ([`read_responses`]) hands the responses back in the same order (Kafka answers the requests
//! of one connection in the order they were sent). Any I/O error, timeout or bad frame fails
//! every request in flight and marks the pipeline broken; the caller reconnects. A request
//! times out `request_timeout` after its sending or the previous answer, whichever is later; a
//! broker's throttle time ([`Throttle`]) holds the next request back. The requests and
//! responses are encoded and decoded in `frame`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use super::conn::{BrokerStream, ConnLimits, Connection};
use super::error::ProduceError;
use super::frame::{api_name, decode_response, encode_request, splice_payload, version_of};
use super::metadata::LostConnections;
use super::sasl::{self, Exchange, SaslContext};

/// The reading half of a pipelined broker connection.
type ReadHalf = tokio::io::ReadHalf<Box<dyn BrokerStream>>;
/// The writing half of a pipelined broker connection.
type WriteHalf = tokio::io::WriteHalf<Box<dyn BrokerStream>>;

impl Connection {
    /// Turns this (handshaken) connection into a pipeline with up to `max_in_flight` requests
    /// in flight. Must be called within a tokio runtime (spawns the reader task).
    pub fn into_pipeline(self, max_in_flight: usize) -> Pipeline {
        let (read, write) = tokio::io::split(self.stream);
        let shared = Arc::new(Shared {
            pending: Mutex::new(VecDeque::new()),
            broken: AtomicBool::new(false),
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            lost: self.limits.lost.clone(),
        });
        let max_in_flight = max_in_flight.max(1);
        let reader = tokio::spawn(read_responses(
            read,
            Arc::clone(&shared),
            self.broker.clone(),
            self.limits.clone(),
        ));
        Pipeline {
            write,
            broker: self.broker,
            limits: self.limits,
            correlation_id: self.correlation_id,
            versions: self.versions,
            write_buf: self.write_buf,
            shared,
            reader,
            writing: false,
            reauth_at: self.reauth_at,
            max_in_flight,
            throttle: Throttle::default(),
        }
    }
}

/// A response frame (after the length prefix) or why none will come.
pub(crate) type Frame = Result<Bytes, ProduceError>;

struct Waiter {
    sent: Instant,
    tx: oneshot::Sender<Frame>,
    /// Released when the response (or the failure) is handed over.
    _permit: OwnedSemaphorePermit,
}

/// A broker's throttle of one connection (a quota, KIP-219): the broker answers at once with a
/// throttle time and reads nothing more from the connection until it is over, so the client
/// should not send before then either. Set from the answers ([`Throttle::hold`]), honoured by
/// [`Pipeline::send`].
#[derive(Clone, Default)]
pub(crate) struct Throttle(Arc<parking_lot::Mutex<ThrottleState>>);

#[derive(Default)]
struct ThrottleState {
    until: Option<Instant>,
    /// When a throttle of this connection was last reported in the log.
    logged: Option<Instant>,
}

/// A throttle is reported in the log at most this often per connection.
const THROTTLE_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Throttle {
    /// Holds the connection's next request back for `time` (at most `cap`). True if this
    /// should be reported (the first throttle in [`THROTTLE_LOG_INTERVAL`]).
    pub fn hold(&self, time: Duration, cap: Duration) -> bool {
        let now = Instant::now();
        let mut st = self.0.lock();
        let until = now + time.min(cap);
        st.until = Some(st.until.map_or(until, |u| u.max(until)));
        let report = st
            .logged
            .is_none_or(|at| now.duration_since(at) >= THROTTLE_LOG_INTERVAL);
        if report {
            st.logged = Some(now);
        }
        report
    }

    fn until(&self) -> Option<Instant> {
        self.0.lock().until
    }
}

struct Shared {
    pending: Mutex<VecDeque<Waiter>>,
    broken: AtomicBool,
    permits: Arc<Semaphore>,
    lost: LostConnections,
}

impl Shared {
    fn pending(&self) -> parking_lot::MutexGuard<'_, VecDeque<Waiter>> {
        self.pending.lock()
    }

    /// The connection broke under the producer (the broker closed it, an error, a timeout):
    /// remembered, so an error that follows without naming the broker (no leader known, in
    /// a cluster) can say which one went away; then [`Shared::fail_all`]. Not logged at INFO
    /// or above: the uplink says once that it is down, whatever the number of connections.
    fn lose(&self, broker: &str, error: ProduceError) {
        if !self.broken.load(Ordering::SeqCst) {
            tracing::debug!("Kafka connection lost: {error}");
            self.lost
                .describe(error.to_string(), std::time::Instant::now());
        }
        self.fail_all(broker, error);
    }

    /// Marks the pipeline broken (a lost connection, the first time) and fails every request
    /// in flight (the first with `first`, the others with a connection-reset error naming it:
    /// their outcome is unknown too).
    fn fail_all(&self, broker: &str, first: ProduceError) {
        if !self.broken.swap(true, Ordering::SeqCst) {
            self.lost.note();
        }
        self.permits.close();
        let waiters: Vec<Waiter> = self.pending().drain(..).collect();
        let reason = first.to_string();
        let mut first = Some(first);
        for w in waiters {
            let e = first.take().unwrap_or_else(|| ProduceError::Io {
                broker: broker.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    format!("an earlier request on the connection failed: {reason}"),
                ),
            });
            let _ = w.tx.send(Err(e));
        }
    }
}

/// Hands response frames to the waiters in order; fails them all on an error, a timeout of the
/// oldest request, or an oversized frame.
async fn read_responses(
    mut read: ReadHalf,
    shared: Arc<Shared>,
    broker: String,
    limits: ConnLimits,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // When the broker last handed over an answer (or the pipeline started).
    let mut answered = Instant::now();
    loop {
        // Hand over every complete frame in the buffer.
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > limits.max_response_bytes {
                shared.lose(
                    &broker,
                    ProduceError::ResponseTooLarge {
                        broker: broker.clone(),
                        bytes: len,
                        max: limits.max_response_bytes,
                    },
                );
                return;
            }
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            let mut frame = buf.split_to(4 + len);
            let body = frame.split_off(4).freeze();
            let Some(w) = shared.pending().pop_front() else {
                shared.lose(
                    &broker,
                    ProduceError::Protocol {
                        broker: broker.clone(),
                        reason: "response without a request in flight".into(),
                    },
                );
                return;
            };
            let _ = w.tx.send(Ok(body));
            answered = Instant::now();
        }
        // The oldest request in flight must be answered within the request timeout of being
        // sent or of the answer before it, whichever is later: a broker handles one request
        // of a connection at a time, so with k requests pipelined to a slow broker the last
        // waits k answers. Timing it from its sending would give up on a broker that is
        // answering, and the resends would be duplicates. With none in flight, look again a
        // second later.
        let deadline = shared
            .pending()
            .front()
            .map(|w| w.sent.max(answered) + limits.request_timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let read = tokio::select! {
            r = read.read_buf(&mut buf) => r,
            _ = tokio::time::sleep_until(deadline) => {
                // The deadline was taken before the sleep: a request sent meanwhile (to an
                // idle connection, whose deadline is the one-second look) has its own.
                let due = shared
                    .pending()
                    .front()
                    .map(|w| w.sent.max(answered) + limits.request_timeout);
                if due.is_none_or(|due| due > Instant::now()) {
                    continue;
                }
                shared.lose(&broker, ProduceError::Timeout {
                    broker: broker.clone(),
                    api: "Produce",
                    after: limits.request_timeout,
                });
                return;
            }
        };
        let source = match read {
            Ok(0) => std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            ),
            Ok(_) => continue,
            Err(source) => source,
        };
        shared.lose(
            &broker,
            ProduceError::Io {
                broker: broker.clone(),
                source,
            },
        );
        return;
    }
}

/// A connection with several requests in flight (see the module docs). The owner serialises
/// [`Pipeline::send`] calls (they write to the socket); responses come back through the
/// receivers they return.
pub(crate) struct Pipeline {
    write: WriteHalf,
    broker: String,
    limits: ConnLimits,
    correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
    write_buf: BytesMut,
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
    /// A write was started and not finished (its future was dropped): the stream is torn.
    writing: bool,
    /// When the SASL session must be renewed (KIP-368).
    reauth_at: Option<Instant>,
    /// The in-flight limit (all permits: nothing in flight).
    max_in_flight: usize,
    /// The broker's throttle of this connection.
    throttle: Throttle,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.reader.abort();
        self.shared.fail_all(
            &self.broker,
            ProduceError::Io {
                broker: self.broker.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "connection closed by the producer",
                ),
            },
        );
    }
}

impl Pipeline {
    /// False once an error, a timeout or a torn write made the connection unusable.
    pub fn usable(&self) -> bool {
        !self.writing && !self.shared.broken.load(Ordering::SeqCst)
    }

    /// See [`Connection::version`].
    pub fn version(
        &self,
        api: ApiKey,
        name: &'static str,
        need: i16,
        ours: i16,
    ) -> Result<i16, ProduceError> {
        version_of(&self.versions, &self.broker, api, name, need, ours)
    }

    /// Waits for a free in-flight slot (at most the request timeout), writes the request and
    /// returns the receiver of its response frame and the correlation id to check it against.
    /// When the SASL session is due, it is renewed first, once nothing is in flight.
    ///
    /// With a `payload`, `req`'s one large bytes field (a Produce request's record batch)
    /// holds [`PAYLOAD_MARK`](super::frame::PAYLOAD_MARK): the request is encoded around it
    /// and written with the payload in its place, from where it is (one vectored write),
    /// instead of being copied into the write buffer first.
    pub async fn send<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
        payload: Option<&Bytes>,
    ) -> Result<(oneshot::Receiver<Frame>, i32), ProduceError> {
        if let (Some(at), Some(context)) = (self.reauth_at, self.limits.sasl.clone())
            && Instant::now() >= at
        {
            self.reauthenticate(&context).await?;
        }
        self.send_parts(api, version, req, payload).await
    }

    /// Renews the SASL session in place (KIP-368): waits until no request is in flight, then
    /// runs the handshake through the pipeline. A failure breaks the pipeline (the caller
    /// reconnects and authenticates afresh).
    async fn reauthenticate(&mut self, context: &SaslContext) -> Result<(), ProduceError> {
        let after = self.limits.request_timeout;
        let others = u32::try_from(self.max_in_flight.saturating_sub(1)).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            after,
            Arc::clone(&self.shared.permits).acquire_many_owned(others),
        )
        .await;
        let _held = match drained {
            Ok(Ok(permits)) => permits,
            Ok(Err(_)) | Err(_) => {
                return Err(ProduceError::Timeout {
                    broker: self.broker.clone(),
                    api: "SaslAuthenticate",
                    after,
                });
            }
        };
        match sasl::authenticate(self, context).await {
            Ok(lifetime) => {
                self.reauth_at = lifetime.map(|l| Instant::now() + l);
                Ok(())
            }
            Err(e) => {
                self.shared.lose(
                    &self.broker,
                    ProduceError::Io {
                        broker: self.broker.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!("SASL re-authentication failed: {e}"),
                        ),
                    },
                );
                Err(e)
            }
        }
    }

    /// [`Pipeline::send`] without the SASL renewal check.
    async fn send_now<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<(oneshot::Receiver<Frame>, i32), ProduceError> {
        self.send_parts(api, version, req, None).await
    }

    /// Writes `req` (with `payload` in place of its
    /// [`PAYLOAD_MARK`](super::frame::PAYLOAD_MARK), if given).
    async fn send_parts<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
        payload: Option<&Bytes>,
    ) -> Result<(oneshot::Receiver<Frame>, i32), ProduceError> {
        let after = self.limits.request_timeout;
        let broken = || ProduceError::Io {
            broker: self.broker.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the connection failed earlier",
            ),
        };
        if !self.usable() {
            return Err(broken());
        }
        if let Some(until) = self.throttle.until() {
            // Throttled by the broker: it would not read the request before then anyway.
            tokio::time::sleep_until(until).await;
        }
        let permit =
            match tokio::time::timeout(after, Arc::clone(&self.shared.permits).acquire_owned())
                .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(broken()),
                Err(_) => {
                    return Err(ProduceError::Timeout {
                        broker: self.broker.clone(),
                        api: api_name(api),
                        after,
                    });
                }
            };
        let correlation_id = encode_request(
            &mut self.write_buf,
            &self.limits.client_id,
            &mut self.correlation_id,
            api,
            version,
            req,
        )?;
        let tail = match payload {
            Some(payload) => {
                splice_payload(&mut self.write_buf, payload.len()).map_err(|reason| {
                    ProduceError::Encode {
                        what: api_name(api),
                        reason,
                    }
                })?
            }
            None => Vec::new(),
        };
        let (tx, rx) = oneshot::channel();
        // Queued before the write, so the reader finds it however fast the answer comes.
        self.shared.pending().push_back(Waiter {
            sent: Instant::now(),
            tx,
            _permit: permit,
        });
        self.writing = true;
        let write = async {
            match payload {
                Some(payload) => {
                    let mut parts = bytes::Buf::chain(
                        bytes::Buf::chain(&self.write_buf[..], &payload[..]),
                        &tail[..],
                    );
                    self.write.write_all_buf(&mut parts).await
                }
                None => self.write.write_all(&self.write_buf).await,
            }
        };
        // Bounded too: a broker that stops reading while it keeps the connection open (a
        // black hole behind a live socket) would otherwise hold the write, the connection's
        // slot and the sender behind it for as long as it does.
        let written = tokio::time::timeout(after, write).await;
        let timed_out = || ProduceError::Timeout {
            broker: self.broker.clone(),
            api: api_name(api),
            after,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                let e = ProduceError::Io {
                    broker: self.broker.clone(),
                    source,
                };
                self.shared.lose(&self.broker, e);
                return Err(broken());
            }
            Err(_) => {
                self.shared.lose(&self.broker, timed_out());
                return Err(timed_out());
            }
        }
        self.writing = false;
        Ok((rx, correlation_id))
    }

    /// The broker address.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Requests this pipeline keeps in flight at most.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The connection's throttle, for whoever decodes the answers.
    pub fn throttle(&self) -> Throttle {
        self.throttle.clone()
    }
}

impl Exchange for Pipeline {
    async fn exchange<Req, Resp>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ProduceError>
    where
        Req: Encodable + Sync,
        Resp: Decodable,
    {
        let (rx, correlation_id) = self.send_now(api, version, req).await?;
        let after = self.limits.request_timeout;
        let frame = match tokio::time::timeout(after, rx).await {
            Ok(Ok(frame)) => frame?,
            Ok(Err(_)) => {
                return Err(ProduceError::Io {
                    broker: self.broker.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the connection failed during SASL re-authentication",
                    ),
                });
            }
            Err(_) => {
                return Err(ProduceError::Timeout {
                    broker: self.broker.clone(),
                    api: api_name(api),
                    after,
                });
            }
        };
        decode_response(&self.broker, api, version, correlation_id, frame)
    }

    fn versions(&self) -> &HashMap<i16, (i16, i16)> {
        &self.versions
    }

    fn broker_name(&self) -> &str {
        &self.broker
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::protocol::StrBytes;
    use tokio::net::TcpListener;

    use super::super::conn::tests::{answer_one, limits, slow_broker};
    use super::super::frame::PAYLOAD_MARK;
    use super::*;

    /// A named fake: a broker that answers the ApiVersions handshake, then reads nothing more
    /// and keeps the connection open (a black hole behind a live socket).
    async fn deaf_broker() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            answer_one(&mut s, true, Duration::ZERO).await;
            std::future::pending::<()>().await;
            drop(s);
        });
        addr
    }

    /// Five requests pipelined to a broker that answers one every 300 ms: the last is answered
    /// 1.5 s after it was sent, beyond the 1 s request timeout, but the broker never went 1 s
    /// without answering, so every request gets its answer (timing each from its sending
    /// failed the fourth and fifth, and their resends became duplicates).
    #[tokio::test]
    async fn a_slow_broker_that_keeps_answering_is_not_timed_out() {
        let addr = slow_broker(Duration::from_millis(300)).await;
        let conn = Connection::connect(&addr, &limits(Duration::from_secs(1)))
            .await
            .unwrap();
        let mut pipe = conn.into_pipeline(5);
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (rx, _) = pipe
                .send(ApiKey::Produce, 3, &ProduceRequest::default(), None)
                .await
                .unwrap();
            answers.push(rx);
        }
        for (i, rx) in answers.into_iter().enumerate() {
            let frame = rx.await.unwrap();
            assert!(frame.is_ok(), "request {i}: {:?}", frame.err());
        }
        assert!(pipe.usable());
    }

    /// A request sent to an idle connection just before the reader's once-a-second look is
    /// timed from its own sending (it was failed at that look, milliseconds after it left:
    /// a spurious timeout whose resend is a duplicate; throttled connections, idle for the
    /// throttle time, met it all the time).
    #[tokio::test]
    async fn a_request_to_an_idle_connection_gets_its_full_timeout() {
        let addr = slow_broker(Duration::from_millis(300)).await;
        let conn = Connection::connect(&addr, &limits(Duration::from_secs(2)))
            .await
            .unwrap();
        let mut pipe = conn.into_pipeline(5);
        // The reader looks at its idle connection a second after it started.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let (rx, _) = pipe
            .send(ApiKey::Produce, 3, &ProduceRequest::default(), None)
            .await
            .unwrap();
        let frame = rx.await.unwrap();
        assert!(frame.is_ok(), "{:?}", frame.err());
    }

    /// A throttle holds the connection's next request back (capped), and is reported once per
    /// interval, not once per answer.
    #[tokio::test]
    async fn a_throttle_holds_the_next_request_back_and_is_reported_once() {
        let addr = slow_broker(Duration::ZERO).await;
        let conn = Connection::connect(&addr, &limits(Duration::from_secs(2)))
            .await
            .unwrap();
        let mut pipe = conn.into_pipeline(5);
        let throttle = pipe.throttle();
        assert!(throttle.hold(Duration::from_millis(400), Duration::from_secs(2)));
        assert!(!throttle.hold(Duration::from_millis(300), Duration::from_secs(2)));
        // A hostile throttle time is capped.
        assert!(!throttle.hold(Duration::from_secs(86_400), Duration::from_millis(500)));
        let started = Instant::now();
        let (rx, _) = pipe
            .send(ApiKey::Produce, 3, &ProduceRequest::default(), None)
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(rx.await.unwrap().is_ok());
    }

    /// A broker that stops reading while it keeps the connection open: the write of a request
    /// larger than the socket buffers on both sides is given up on after the request timeout,
    /// and the connection is not used again. (The write had no deadline: a forwarder whose
    /// first Produce met such a broker waited, its sender and every batch behind it on the
    /// connection with it, for as long as the broker kept the socket open.) The 60 s bound
    /// only keeps a regression from hanging the suite.
    #[tokio::test]
    async fn a_request_the_broker_does_not_read_is_given_up_on() {
        use kafka_protocol::messages::TopicName;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let addr = deaf_broker().await;
        let conn = Connection::connect(&addr, &limits(Duration::from_millis(500)))
            .await
            .unwrap();
        let mut pipe = conn.into_pipeline(5);
        let request = ProduceRequest::default().with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_records(Some(Bytes::from_static(PAYLOAD_MARK))),
                ]),
        ]);
        let batch = Bytes::from(vec![0u8; 64 << 20]);
        let sent = tokio::time::timeout(
            Duration::from_secs(60),
            pipe.send(ApiKey::Produce, 3, &request, Some(&batch)),
        )
        .await
        .expect("the write of a request nobody reads never ended");
        assert!(
            matches!(sent, Err(ProduceError::Timeout { api: "Produce", .. })),
            "{:?}",
            sent.map(|(_, id)| id)
        );
        assert!(!pipe.usable());
    }

    /// The other side of it: a broker that stops answering is still given up on one request
    /// timeout after its last answer, failing every request in flight.
    #[tokio::test]
    async fn a_broker_that_stops_answering_is_timed_out() {
        let addr = slow_broker(Duration::from_secs(3600)).await;
        let conn = Connection::connect(&addr, &limits(Duration::from_millis(300)))
            .await
            .unwrap();
        let mut pipe = conn.into_pipeline(5);
        let started = Instant::now();
        let (rx, _) = pipe
            .send(ApiKey::Produce, 3, &ProduceRequest::default(), None)
            .await
            .unwrap();
        let frame = rx.await.unwrap();
        assert!(
            matches!(frame, Err(ProduceError::Timeout { .. })),
            "{frame:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!pipe.usable());
    }
}
