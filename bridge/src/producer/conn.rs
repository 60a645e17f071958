//! One connection to one Kafka broker: TCP_NODELAY (no Nagle stalls between the length prefix
//! and the body, or between requests), an ApiVersions handshake, and strictly one request in
//! flight, each bounded by a timeout and a response-size cap.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ProduceError, codes};

/// Timeouts and caps of a connection, and TLS if the brokers speak it.
#[derive(Clone)]
pub(crate) struct ConnLimits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
    pub client_id: StrBytes,
    pub tls: Option<tokio_rustls::TlsConnector>,
}

/// A byte stream to a broker: plain TCP or TLS over it.
pub(crate) trait BrokerStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> BrokerStream for T {}

pub(crate) struct Connection {
    stream: Box<dyn BrokerStream>,
    broker: String,
    limits: ConnLimits,
    correlation_id: i32,
    /// api key -> (min, max) version the broker supports.
    versions: HashMap<i16, (i16, i16)>,
    write_buf: BytesMut,
}

impl Connection {
    /// Connects, disables Nagle and learns the broker's API versions.
    pub async fn connect(broker: &str, limits: &ConnLimits) -> Result<Self, ProduceError> {
        let stream = tokio::time::timeout(limits.connect_timeout, TcpStream::connect(broker))
            .await
            .map_err(|_| ProduceError::Timeout {
                broker: broker.to_owned(),
                api: "connect",
                after: limits.connect_timeout,
            })?
            .map_err(|source| ProduceError::Connect {
                broker: broker.to_owned(),
                source,
            })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ProduceError::Connect {
                broker: broker.to_owned(),
                source,
            })?;
        let stream: Box<dyn BrokerStream> = match &limits.tls {
            None => Box::new(stream),
            Some(tls) => {
                let name = super::tls::server_name(broker)?;
                let handshake = tls.connect(name, stream);
                let stream = tokio::time::timeout(limits.connect_timeout, handshake)
                    .await
                    .map_err(|_| ProduceError::Timeout {
                        broker: broker.to_owned(),
                        api: "TLS handshake",
                        after: limits.connect_timeout,
                    })?
                    .map_err(|source| ProduceError::Connect {
                        broker: broker.to_owned(),
                        source,
                    })?;
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
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("edge-bridge"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 3, &req).await?;
        if resp.error_code == codes::UNSUPPORTED_VERSION {
            // Older brokers answer an unknown ApiVersions version with v0 and their range.
            resp = conn
                .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
                .await?;
        }
        if resp.error_code != 0 {
            return Err(ProduceError::Protocol {
                broker: conn.broker.clone(),
                reason: format!("ApiVersions failed with error code {}", resp.error_code),
            });
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// Highest version of `api` both sides speak, at least `need` and at most `ours`.
    pub fn version(
        &self,
        api: ApiKey,
        name: &'static str,
        need: i16,
        ours: i16,
    ) -> Result<i16, ProduceError> {
        let (min, max) = self
            .versions
            .get(&(api as i16))
            .copied()
            .unwrap_or((-1, -1));
        let v = ours.min(max);
        if v < need || v < min {
            return Err(ProduceError::UnsupportedVersion {
                broker: self.broker.clone(),
                api: name,
                need,
                min,
                max,
            });
        }
        Ok(v)
    }

    /// Sends one request and waits for its response, within the request timeout.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ProduceError> {
        let after = self.limits.request_timeout;
        match tokio::time::timeout(after, self.call_inner(api, version, req)).await {
            Ok(r) => r,
            Err(_) => Err(ProduceError::Timeout {
                broker: self.broker.clone(),
                api: api_name(api),
                after,
            }),
        }
    }

    async fn call_inner<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ProduceError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.limits.client_id.clone()));
        self.write_buf.clear();
        self.write_buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut self.write_buf, api.request_header_version(version))
            .map_err(|e| encode_err(api, e))?;
        req.encode(&mut self.write_buf, version)
            .map_err(|e| encode_err(api, e))?;
        let len = u32::try_from(self.write_buf.len() - 4).map_err(|_| ProduceError::Encode {
            what: api_name(api),
            reason: "request above 4 GiB".into(),
        })?;
        self.write_buf[..4].copy_from_slice(&len.to_be_bytes());
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
        let mut body: Bytes = body.freeze();
        let protocol = |reason: String| ProduceError::Protocol {
            broker: self.broker.clone(),
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

    fn io(&self, source: std::io::Error) -> ProduceError {
        ProduceError::Io {
            broker: self.broker.clone(),
            source,
        }
    }
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
        _ => "request",
    }
}
