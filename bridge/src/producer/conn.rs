//! One connection to one Kafka broker: TCP_NODELAY (no Nagle stalls between the length prefix
//! and the body, or between requests), TLS when configured, an ApiVersions handshake, each
//! request bounded by a timeout and a response-size cap.
//!
//! [`Connection::call`] has one request in flight (metadata, admin). Each set-up is counted by
//! the step that failed ([`SetupStep`], [`ConnectionSetups`]). For Produce,
//! [`Connection::into_pipeline`] turns a set-up connection into a pipelined one (see
//! `pipeline`); the requests and responses on the wire are encoded and decoded in `frame`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::counted::{Counted, WireBytes};
use super::error::{ProduceError, codes};
use super::frame::{api_name, decode_response, encode_request, version_of};
use super::metadata::LostConnections;
use super::sasl::{self, Exchange, SaslContext};

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

pub(crate) struct Connection {
    pub(super) stream: Box<dyn BrokerStream>,
    pub(super) broker: String,
    pub(super) limits: ConnLimits,
    pub(super) correlation_id: i32,
    /// api key -> (min, max) version the broker supports.
    pub(super) versions: HashMap<i16, (i16, i16)>,
    pub(super) write_buf: BytesMut,
    /// When the SASL session must be renewed (KIP-368), if the broker set a lifetime.
    pub(super) reauth_at: Option<Instant>,
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

/// The fake brokers and [`tests::limits`] are shared with `pipeline`'s tests.
#[cfg(test)]
pub(super) mod tests {
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Reads one request frame from `s` and answers it: with the ApiVersions answer of a
    /// broker that speaks Produce v3..v9 at once if `handshake`, else with a bare header
    /// `gap` later. False once the peer is gone.
    pub(crate) async fn answer_one(
        s: &mut tokio::net::TcpStream,
        handshake: bool,
        gap: Duration,
    ) -> bool {
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
    pub(crate) async fn slow_broker(gap: Duration) -> String {
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

    pub(crate) fn limits(request_timeout: Duration) -> ConnLimits {
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
}
