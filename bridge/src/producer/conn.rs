//! One connection to one Kafka broker: TCP_NODELAY (no Nagle stalls between the length prefix
//! and the body, or between requests), TLS when configured, an ApiVersions handshake, each
//! request bounded by a timeout and a response-size cap.
//!
//! [`Connection::call`] has one request in flight (metadata, admin). [`Pipeline`] (for Produce)
//! keeps up to `max_in_flight` requests in flight: the caller writes them in order under its
//! own lock, a reader task hands the responses back in the same order (Kafka answers the
//! requests of one connection in the order they were sent). Any I/O error, timeout or bad frame
//! fails every request in flight and marks the pipeline broken; the caller reconnects. A
//! request times out `request_timeout` after its sending or the previous answer, whichever is
//! later; a broker's throttle time ([`Throttle`]) holds the next request back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use super::counted::{Counted, WireBytes};
use super::metadata::LostConnections;
use super::sasl::{self, Exchange, SaslContext};
use super::{ProduceError, codes};

/// Timeouts and caps of a connection, and TLS if the brokers speak it.
#[derive(Clone)]
pub(crate) struct ConnLimits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
    pub client_id: StrBytes,
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// SASL authentication after the ApiVersions handshake.
    pub sasl: Option<Arc<SaslContext>>,
    /// Counts established connections that were lost (cached metadata older than that is
    /// stale: the broker may have restarted empty).
    pub lost: LostConnections,
    /// Counts connection set-ups, and the failed ones by step, for `/metrics`.
    pub setups: Arc<ConnectionSetups>,
}

/// A step of setting up a connection to a broker ([`Connection::connect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep {
    /// The TCP connect (within the connect timeout).
    TcpConnect,
    /// The TLS handshake (within the connect timeout).
    TlsHandshake,
    /// The ApiVersions handshake (within the request timeout).
    ApiVersions,
    /// SASL authentication (each request within the request timeout).
    Sasl,
}

impl SetupStep {
    /// Every step, in the order they are taken.
    pub const ALL: [SetupStep; 4] = [
        SetupStep::TcpConnect,
        SetupStep::TlsHandshake,
        SetupStep::ApiVersions,
        SetupStep::Sasl,
    ];

    /// The label value (`tcp_connect`, `tls_handshake`, `api_versions`, `sasl`).
    pub fn as_str(self) -> &'static str {
        match self {
            SetupStep::TcpConnect => "tcp_connect",
            SetupStep::TlsHandshake => "tls_handshake",
            SetupStep::ApiVersions => "api_versions",
            SetupStep::Sasl => "sasl",
        }
    }
}

/// Connection set-ups of one producer (probes included), for `/metrics`: while the forwarder
/// tries to reach a Kafka that is slow or silent, before anything is forwarded or any request
/// outcome is told, these say which step fails and whether it runs out of time. And the bytes
/// its connections carried, each way.
#[derive(Debug, Default)]
pub struct ConnectionSetups {
    /// Set-ups that completed (TCP, TLS, ApiVersions, SASL).
    pub established: AtomicU64,
    /// Bytes written to and read from the connections' sockets (TLS records included).
    pub wire: Arc<WireBytes>,
    /// Failed set-ups by step ([`SetupStep::ALL`] order): \[step\]\[0\] ran out of time,
    /// \[step\]\[1\] failed otherwise (refused, reset, refused credentials).
    failed: [[AtomicU64; 2]; SetupStep::ALL.len()],
}

impl ConnectionSetups {
    /// Set-ups that failed at `step`, those that ran out of time (`timed_out`) or the others.
    pub fn failed(&self, step: SetupStep, timed_out: bool) -> u64 {
        self.failed[step as usize][usize::from(!timed_out)].load(Ordering::Relaxed)
    }

    fn count_failure(&self, step: SetupStep, error: &ProduceError) {
        let timed_out = matches!(error, ProduceError::Timeout { .. });
        self.failed[step as usize][usize::from(!timed_out)].fetch_add(1, Ordering::Relaxed);
    }
}

/// A byte stream to a broker: plain TCP or TLS over it.
pub(crate) trait BrokerStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> BrokerStream for T {}

/// The reading half of a pipelined broker connection.
type ReadHalf = tokio::io::ReadHalf<Box<dyn BrokerStream>>;
/// The writing half of a pipelined broker connection.
type WriteHalf = tokio::io::WriteHalf<Box<dyn BrokerStream>>;

pub(crate) struct Connection {
    stream: Box<dyn BrokerStream>,
    broker: String,
    limits: ConnLimits,
    correlation_id: i32,
    /// api key -> (min, max) version the broker supports.
    versions: HashMap<i16, (i16, i16)>,
    write_buf: BytesMut,
    /// When the SASL session must be renewed (KIP-368), if the broker set a lifetime.
    reauth_at: Option<Instant>,
    /// False once an I/O error, a timeout or a bad frame left the stream in an unknown state,
    /// or a renewal of the SASL session failed (Kafka closes a connection whose
    /// authentication failed).
    usable: bool,
}

/// One step of setting up a connection (TCP connect, TLS handshake) within the connect timeout.
async fn connect_step<T>(
    broker: &str,
    step: &'static str,
    limits: &ConnLimits,
    future: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, ProduceError> {
    tokio::time::timeout(limits.connect_timeout, future)
        .await
        .map_err(|_| ProduceError::Timeout {
            broker: broker.to_owned(),
            api: step,
            after: limits.connect_timeout,
        })?
        .map_err(|source| ProduceError::Connect {
            broker: broker.to_owned(),
            source,
        })
}

impl Connection {
    /// Connects, disables Nagle and learns the broker's API versions (and authenticates),
    /// each step bounded (see [`SetupStep`]); counted in [`ConnLimits::setups`].
    pub async fn connect(broker: &str, limits: &ConnLimits) -> Result<Self, ProduceError> {
        match Self::set_up(broker, limits).await {
            Ok(conn) => {
                limits.setups.established.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            Err((step, e)) => {
                limits.setups.count_failure(step, &e);
                Err(e)
            }
        }
    }

    /// [`Connection::connect`], saying which step failed.
    async fn set_up(broker: &str, limits: &ConnLimits) -> Result<Self, (SetupStep, ProduceError)> {
        use SetupStep::{ApiVersions, Sasl, TcpConnect, TlsHandshake};
        let at = |step| move |e| (step, e);
        let stream = connect_step(
            broker,
            "the TCP connect",
            limits,
            TcpStream::connect(broker),
        )
        .await
        .map_err(at(TcpConnect))?;
        stream
            .set_nodelay(true)
            .map_err(|source| ProduceError::Connect {
                broker: broker.to_owned(),
                source,
            })
            .map_err(at(TcpConnect))?;
        let stream = Counted::new(stream, Arc::clone(&limits.setups.wire));
        let stream: Box<dyn BrokerStream> = match &limits.tls {
            None => Box::new(stream),
            Some(tls) => {
                let name = super::tls::server_name(broker).map_err(at(TlsHandshake))?;
                let handshake = tls.connect(name, stream);
                let stream = connect_step(broker, "the TLS handshake", limits, handshake)
                    .await
                    .map_err(|e| match e {
                        ProduceError::Connect { broker, source } => {
                            ProduceError::TlsHandshake { broker, source }
                        }
                        e => e,
                    })
                    .map_err(at(TlsHandshake))?;
                Box::new(stream)
            }
        };
        let mut conn = Self {
            stream,
            broker: broker.to_owned(),
            limits: limits.clone(),
            correlation_id: 0,
            versions: HashMap::new(),
            write_buf: BytesMut::with_capacity(4096),
            reauth_at: None,
            usable: true,
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("edge-bridge"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp: ApiVersionsResponse = conn
            .call(ApiKey::ApiVersions, 3, &req)
            .await
            .map_err(at(ApiVersions))?;
        if resp.error_code == codes::UNSUPPORTED_VERSION {
            // Older brokers answer an unknown ApiVersions version with v0 and their range.
            resp = conn
                .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
                .await
                .map_err(at(ApiVersions))?;
        }
        if resp.error_code != 0 {
            return Err((
                ApiVersions,
                ProduceError::Protocol {
                    broker: conn.broker.clone(),
                    reason: format!("ApiVersions failed with error code {}", resp.error_code),
                },
            ));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(context) = limits.sasl.clone() {
            let lifetime = sasl::authenticate(&mut conn, &context)
                .await
                .map_err(at(Sasl))?;
            conn.reauth_at = lifetime.map(|l| Instant::now() + l);
        }
        Ok(conn)
    }

    /// Re-authenticates in place (KIP-368) once the SASL session is due. A failure leaves
    /// the connection unusable: the broker closes it (and would close it anyway when the
    /// session runs out), so the caller must connect afresh.
    async fn reauthenticate_if_due(&mut self) -> Result<(), ProduceError> {
        let (Some(at), Some(context)) = (self.reauth_at, self.limits.sasl.clone()) else {
            return Ok(());
        };
        if Instant::now() < at {
            return Ok(());
        }
        match sasl::authenticate(self, &context).await {
            Ok(lifetime) => {
                self.reauth_at = lifetime.map(|l| Instant::now() + l);
                Ok(())
            }
            Err(e) => {
                self.usable = false;
                Err(e)
            }
        }
    }

    /// False once the connection must be replaced (see [`Connection::call`]).
    pub fn usable(&self) -> bool {
        self.usable
    }

    /// Highest version of `api` both sides speak, at least `need` and at most `ours`.
    pub fn version(
        &self,
        api: ApiKey,
        name: &'static str,
        need: i16,
        ours: i16,
    ) -> Result<i16, ProduceError> {
        version_of(&self.versions, &self.broker, api, name, need, ours)
    }

    /// Sends one request and waits for its response, within the request timeout (renewing
    /// the SASL session first when it is due). After an error, [`Connection::usable`] says
    /// whether the connection can still be used.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ProduceError> {
        self.reauthenticate_if_due().await?;
        self.call_now(api, version, req).await
    }

    /// [`Connection::call`] without the SASL renewal check.
    async fn call_now<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ProduceError> {
        let after = self.limits.request_timeout;
        let result = match tokio::time::timeout(after, self.call_inner(api, version, req)).await {
            Ok(r) => r,
            Err(_) => Err(ProduceError::Timeout {
                broker: self.broker.clone(),
                api: api_name(api),
                after,
            }),
        };
        if result.as_ref().is_err_and(ProduceError::poisons_connection) {
            self.usable = false;
        }
        result
    }

    async fn call_inner<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ProduceError> {
        let correlation_id = encode_request(
            &mut self.write_buf,
            &self.limits.client_id,
            &mut self.correlation_id,
            api,
            version,
            req,
        )?;
        // One write of prefix + body: with TCP_NODELAY it leaves as soon as the kernel can.
        self.stream
            .write_all(&self.write_buf)
            .await
            .map_err(|source| self.io(source))?;

        let len = self
            .stream
            .read_u32()
            .await
            .map_err(|source| self.io(source))? as usize;
        if len > self.limits.max_response_bytes {
            return Err(ProduceError::ResponseTooLarge {
                broker: self.broker.clone(),
                bytes: len,
                max: self.limits.max_response_bytes,
            });
        }
        let mut body = BytesMut::zeroed(len);
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|source| self.io(source))?;
        decode_response(&self.broker, api, version, correlation_id, body.freeze())
    }

    fn io(&self, source: std::io::Error) -> ProduceError {
        ProduceError::Io {
            broker: self.broker.clone(),
            source,
        }
    }

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

impl Exchange for Connection {
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
        self.call_now(api, version, req).await
    }

    fn versions(&self) -> &HashMap<i16, (i16, i16)> {
        &self.versions
    }

    fn broker_name(&self) -> &str {
        &self.broker
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
        match read {
            Ok(0) => {
                let source = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection",
                );
                shared.lose(
                    &broker,
                    ProduceError::Io {
                        broker: broker.clone(),
                        source,
                    },
                );
                return;
            }
            Ok(_) => {}
            Err(source) => {
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
    /// holds [`PAYLOAD_MARK`]: the request is encoded around it and written with the payload
    /// in its place, from where it is (one vectored write), instead of being copied into the
    /// write buffer first.
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

    /// Writes `req` (with `payload` in place of its [`PAYLOAD_MARK`], if given).
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

/// Decodes a response frame of `api`/`version`, checking the correlation id.
pub(crate) fn decode_response<Resp: Decodable>(
    broker: &str,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Result<Resp, ProduceError> {
    let protocol = |reason: String| ProduceError::Protocol {
        broker: broker.to_owned(),
        reason,
    };
    let rh = ResponseHeader::decode(&mut body, api.response_header_version(version))
        .map_err(|e| protocol(format!("{} response header: {e:#}", api_name(api))))?;
    if rh.correlation_id != correlation_id {
        return Err(protocol(format!(
            "{} response has correlation id {}, expected {correlation_id}",
            api_name(api),
            rh.correlation_id
        )));
    }
    Resp::decode(&mut body, version)
        .map_err(|e| protocol(format!("{} v{version} response: {e:#}", api_name(api))))
}

/// Stands in for the payload of [`Pipeline::send`] while its request is encoded. Only
/// a few bytes of tagged fields follow the payload, so its place is the mark's last
/// occurrence, whatever an earlier field (a transactional id) holds.
pub(crate) const PAYLOAD_MARK: &[u8] = b"\xffedge-broker payload goes here\xff";

/// Turns a request frame encoded by [`encode_request`] with [`PAYLOAD_MARK`] as the value of
/// a bytes field into the frame for a `payload_len`-byte value there: `buf` keeps the bytes
/// before the value (the field's length and the frame's length prefix set for the payload),
/// the bytes after it are returned (a few: the tagged fields that close the structures it is
/// in). The field is BYTES (i32 length) or, in flexible versions, COMPACT_BYTES (unsigned
/// varint length + 1); the mark is the last one in the frame.
fn splice_payload(buf: &mut BytesMut, payload_len: usize) -> Result<Vec<u8>, String> {
    let mark = PAYLOAD_MARK.len();
    let at = buf
        .windows(mark)
        .rposition(|w| w == PAYLOAD_MARK)
        .ok_or("the payload's place is not marked")?;
    let tail = buf[at + mark..].to_vec();
    let compact_len = u8::try_from(mark + 1).map_err(|_| "mark too long")?;
    let (field_at, compact) = if at >= 1 && buf[at - 1] == compact_len {
        (at - 1, true)
    } else if at >= 4 && buf[at - 4..at] == (mark as u32).to_be_bytes() {
        (at - 4, false)
    } else {
        return Err("the payload's place is not a bytes field".into());
    };
    buf.truncate(field_at);
    if compact {
        let mut v = payload_len as u64 + 1;
        while v >= 0x80 {
            buf.extend_from_slice(&[(v as u8 & 0x7f) | 0x80]);
            v >>= 7;
        }
        buf.extend_from_slice(&[v as u8]);
    } else {
        let len = i32::try_from(payload_len).map_err(|_| "payload above 2 GiB")?;
        buf.extend_from_slice(&len.to_be_bytes());
    }
    let frame = buf.len() - 4 + payload_len + tail.len();
    let frame = u32::try_from(frame).map_err(|_| "request above 4 GiB")?;
    buf[..4].copy_from_slice(&frame.to_be_bytes());
    Ok(tail)
}

/// Encodes length prefix, header and body of a request into `buf` under the next correlation
/// id after `last_correlation_id` (advanced), and returns that id.
fn encode_request<Req: Encodable>(
    buf: &mut BytesMut,
    client_id: &StrBytes,
    last_correlation_id: &mut i32,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Result<i32, ProduceError> {
    *last_correlation_id = last_correlation_id.wrapping_add(1);
    let correlation_id = *last_correlation_id;
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(buf, api.request_header_version(version))
        .map_err(|e| encode_err(api, e))?;
    req.encode(buf, version).map_err(|e| encode_err(api, e))?;
    let len = u32::try_from(buf.len() - 4).map_err(|_| ProduceError::Encode {
        what: api_name(api),
        reason: "request above 4 GiB".into(),
    })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(correlation_id)
}

/// Highest version of `api` in `versions` (the broker's ranges), at least `need`, at most `ours`.
pub(crate) fn version_of(
    versions: &HashMap<i16, (i16, i16)>,
    broker: &str,
    api: ApiKey,
    name: &'static str,
    need: i16,
    ours: i16,
) -> Result<i16, ProduceError> {
    let (min, max) = versions.get(&(api as i16)).copied().unwrap_or((-1, -1));
    let v = ours.min(max);
    if v < need || v < min {
        return Err(ProduceError::UnsupportedVersion {
            broker: broker.to_owned(),
            api: name,
            need,
            min,
            max,
        });
    }
    Ok(v)
}

fn encode_err(api: ApiKey, e: impl std::fmt::Display) -> ProduceError {
    ProduceError::Encode {
        what: api_name(api),
        reason: format!("{e:#}"),
    }
}

/// A static name for the APIs the producer uses (for error messages).
pub(crate) fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{ProduceRequest, ResponseHeader};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A Produce request written around its record batch (`Pipeline::send` with a payload)
    /// is byte for byte the request with the batch in it, in every version we speak (BYTES
    /// up to v8, COMPACT_BYTES from v9), with and without a transactional id, for batch
    /// lengths whose varint takes one, two and three bytes.
    #[test]
    fn a_request_spliced_around_its_batch_is_the_whole_request() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{TopicName, TransactionalId};
        let request = |records: Bytes, txn: Option<&str>| {
            ProduceRequest::default()
                .with_transactional_id(
                    txn.map(|t| TransactionalId(StrBytes::from_string(t.into()))),
                )
                .with_acks(-1)
                .with_timeout_ms(7_500)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("sensor-temperature")))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(3)
                                .with_records(Some(records)),
                        ]),
                ])
        };
        let client_id = StrBytes::from_static_str("edge-broker-gw-01");
        for version in 3..=9 {
            for txn in [None, Some("edge-broker-gw-01")] {
                for len in [0usize, 1, 126, 127, 128, 300, 16_383, 16_384, 300_000] {
                    let batch: Bytes = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                    let (mut whole, mut spliced) = (BytesMut::new(), BytesMut::new());
                    let (mut c1, mut c2) = (41, 41);
                    let api = ApiKey::Produce;
                    encode_request(
                        &mut whole,
                        &client_id,
                        &mut c1,
                        api,
                        version,
                        &request(batch.clone(), txn),
                    )
                    .unwrap();
                    let marked = request(Bytes::from_static(PAYLOAD_MARK), txn);
                    encode_request(&mut spliced, &client_id, &mut c2, api, version, &marked)
                        .unwrap();
                    let tail = splice_payload(&mut spliced, batch.len()).unwrap();
                    let mut joined = spliced.to_vec();
                    joined.extend_from_slice(&batch);
                    joined.extend_from_slice(&tail);
                    assert_eq!(joined, whole.to_vec(), "v{version} {txn:?} {len} bytes");
                }
            }
        }
        let mut unmarked = BytesMut::from(&b"\0\0\0\x05hello"[..]);
        assert!(splice_payload(&mut unmarked, 10).is_err());
    }

    /// Reads one request frame from `s` and answers it: with the ApiVersions answer of a
    /// broker that speaks Produce v3..v9 at once if `handshake`, else with a bare header
    /// `gap` later. False once the peer is gone.
    async fn answer_one(s: &mut tokio::net::TcpStream, handshake: bool, gap: Duration) -> bool {
        let Ok(len) = s.read_u32().await else {
            return false;
        };
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body).await.unwrap();
        let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, 0)
            .unwrap();
        if handshake {
            ApiVersionsResponse::default()
                .with_api_keys(vec![
                    ApiVersion::default()
                        .with_api_key(ApiKey::Produce as i16)
                        .with_max_version(9),
                ])
                .encode(&mut out, 3)
                .unwrap();
        } else {
            tokio::time::sleep(gap).await;
        }
        s.write_u32(out.len() as u32).await.unwrap();
        s.write_all(&out).await.unwrap();
        true
    }

    /// A named fake: a live but slow broker. It answers the ApiVersions handshake at once, then
    /// every request in order, each `gap` after the answer before it, as Kafka does (one
    /// request of a connection is handled at a time). The answers are bare headers.
    async fn slow_broker(gap: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut handshake = true;
            while answer_one(&mut s, handshake, gap).await {
                handshake = false;
            }
        });
        addr
    }

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

    fn limits(request_timeout: Duration) -> ConnLimits {
        ConnLimits {
            connect_timeout: Duration::from_secs(5),
            request_timeout,
            max_response_bytes: 1 << 20,
            client_id: StrBytes::from_static_str("test"),
            tls: None,
            sasl: None,
            lost: LostConnections::default(),
            setups: Arc::default(),
        }
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

    /// Every set-up is counted for `/metrics`: established, or failed at its step, out of time
    /// or not.
    #[tokio::test]
    async fn connection_setups_are_counted_by_the_step_that_failed() {
        let limits = limits(Duration::from_millis(300));
        // Nothing listens: refused at the TCP connect.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = closed.local_addr().unwrap().to_string();
        drop(closed);
        let err = Connection::connect(&refused, &limits).await.err().unwrap();
        assert!(matches!(err, ProduceError::Connect { .. }), "{err}");
        // Accepted (by the kernel) and never answered: the handshake runs out of time.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let err = Connection::connect(&addr, &limits).await.err().unwrap();
        assert!(
            matches!(
                err,
                ProduceError::Timeout {
                    api: "ApiVersions",
                    ..
                }
            ),
            "{err}"
        );
        let addr = slow_broker(Duration::ZERO).await;
        Connection::connect(&addr, &limits).await.unwrap();
        let setups = &limits.setups;
        let failed: Vec<(&str, u64, u64)> = SetupStep::ALL
            .iter()
            .map(|&s| (s.as_str(), setups.failed(s, true), setups.failed(s, false)))
            .collect();
        assert_eq!(
            failed,
            [
                ("tcp_connect", 0, 1),
                ("tls_handshake", 0, 0),
                ("api_versions", 1, 0),
                ("sasl", 0, 0)
            ]
        );
        assert_eq!(setups.established.load(Ordering::Relaxed), 1);
        drop(silent);
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
