//! MQTT over WebSockets (MQTT 5 §6, MQTT 3.1.1 §6): the HTTP upgrade on a configured path with
//! the `mqtt` subprotocol, then a byte pipe, so the MQTT connection code serves a WebSocket
//! client through the same [`Stream`] as a TCP or TLS one.
//!
//! The WebSocket side is [`tokio_tungstenite`] (handshake and framing only; TLS, when the
//! listener has it, is underneath, from [`crate::listener::tls_with_peer`]). A [`pump`] copies
//! binary messages into an in-memory pipe towards the connection and the connection's bytes
//! back out as binary messages; MQTT packets may span or share messages (§6.0.0), so nothing
//! here parses MQTT.
//!
//! Bounds, before and after login: the upgrade request is read within the listener's
//! `connect_timeout` and at most 64 KiB (tungstenite's own cap), one message (and frame) at most
//! `max_packet_size` plus a little framing slack, the pipe at most [`PIPE_BYTES`] each way, and
//! the socket buffers are small ([`READ_BUFFER`]); the connection behind it applies every
//! MQTT limit as for TCP.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::listener::Stream;

/// Bytes the pipe between the WebSocket and the MQTT connection holds each way: the
/// connection's backpressure reaches the socket through it.
pub const PIPE_BYTES: usize = 16 << 10;
/// The socket read buffer of a WebSocket connection (tungstenite's default is 128 KiB, too
/// much for a gateway with a thousand idle clients).
pub const READ_BUFFER: usize = 4 << 10;
/// What the WebSocket frame header and a few MQTT packet headers may add to `max_packet_size`.
const FRAMING_SLACK: usize = 64;
/// How long the outgoing side may take to send its last bytes and the Close frame after the
/// client stopped sending.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Subprotocols accepted, preferred first: `mqtt` (MQTT 3.1.1 and 5) and `mqttv3.1`, which
/// older Paho JavaScript clients still offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why a WebSocket connection did not get to MQTT.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// No complete upgrade within the deadline.
    #[error("no WebSocket upgrade within {0:?}")]
    TimedOut(Duration),
    /// The upgrade was refused (wrong path, not a WebSocket request, no MQTT subprotocol) or
    /// failed.
    #[error("WebSocket upgrade failed: {0}")]
    Handshake(#[from] tungstenite::Error),
}

/// What a WebSocket listener accepts.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The only path upgraded (`mqtt.ws_path`); others get 404.
    pub path: String,
    /// Largest MQTT packet a client may send (`mqtt.max_packet_size`).
    pub max_packet: usize,
    /// Time to complete the upgrade (`mqtt.connect_timeout`).
    pub deadline: Duration,
}

impl WsSettings {
    fn config(&self) -> WebSocketConfig {
        let max_message = self.max_packet.saturating_add(FRAMING_SLACK);
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            // Every message goes out at once (the pipe already batches the connection's bytes).
            .write_buffer_size(0)
            .max_write_buffer_size(PIPE_BYTES * 4)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
    }
}

/// An upgraded WebSocket connection, ready to be served as MQTT.
pub struct Upgraded {
    socket: WebSocketStream<Stream>,
}

/// Runs the HTTP upgrade on `stream` (plain TCP or TLS) within the deadline.
// The callback's error type is tungstenite's (an HTTP response), not ours to shrink.
#[allow(clippy::result_large_err)]
pub async fn upgrade(stream: Stream, settings: &WsSettings) -> Result<Upgraded, WsError> {
    let path = settings.path.clone();
    let callback = move |request: &Request, response: Response| answer(&path, request, response);
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(settings.config()));
    let socket = tokio::time::timeout(settings.deadline, handshake)
        .await
        .map_err(|_| WsError::TimedOut(settings.deadline))??;
    Ok(Upgraded { socket })
}

/// Checks the upgrade request: the configured path, and the `mqtt` subprotocol echoed back
/// when the client offers subprotocols (a browser drops a connection whose answer lacks the
/// one it asked for). A client that offers none is served (some gateways' clients do not).
#[allow(clippy::result_large_err)] // tungstenite's callback type
fn answer(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("MQTT is served at {path}\n"),
        ));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if offered.is_empty() {
        return Ok(response);
    }
    let Some(chosen) = SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
    else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol must be \"mqtt\"\n".to_owned(),
        ));
    };
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    Ok(response)
}

fn refusal(status: StatusCode, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response
}

impl Upgraded {
    /// The byte-stream halves an MQTT connection is served over, and the pump that must run
    /// beside it (it ends when either side closes).
    pub fn into_stream(self) -> (Stream, impl Future<Output = ()> + Send) {
        let (connection_side, pump_side) = tokio::io::duplex(PIPE_BYTES);
        (Box::new(connection_side), pump(self.socket, pump_side))
    }
}

/// Copies binary messages from the client into `pipe`, and what the connection writes into
/// `pipe` back to the client as binary messages, until either side closes. A text message
/// closes the connection (MQTT 5 §6.0.0-1: "the Server MUST close the connection").
async fn pump<S>(socket: WebSocketStream<S>, pipe: tokio::io::DuplexStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let (mut sink, mut stream) = socket.split();
    let (mut from_connection, mut to_connection) = tokio::io::split(pipe);
    let inbound = async move {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Binary(bytes)) => {
                    if to_connection.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Text(_)) => {
                    tracing::debug!(
                        "WebSocket client sent a text message: closing (MQTT takes binary messages)"
                    );
                    break;
                }
                Ok(Message::Close(_)) => break,
                // Pings are answered by tungstenite while it reads.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(err) => {
                    tracing::debug!("WebSocket connection ended: {err}");
                    break;
                }
            }
        }
        // The connection reads end-of-stream and closes its side.
        let _ = to_connection.shutdown().await;
    };
    let outbound = async move {
        let mut buf = BytesMut::with_capacity(PIPE_BYTES);
        loop {
            buf.reserve(PIPE_BYTES);
            match from_connection.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let message = Message::Binary(buf.split().freeze());
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::pin!(outbound);
    tokio::select! {
        _ = &mut outbound => {}
        _ = inbound => {
            let _ = tokio::time::timeout(CLOSE_DEADLINE, &mut outbound).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, protocols: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(p) = protocols {
            builder = builder.header("Sec-WebSocket-Protocol", p);
        }
        builder.body(()).unwrap()
    }

    fn chosen(response: &Response) -> Option<&str> {
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn the_mqtt_subprotocol_is_chosen_on_the_configured_path() {
        let ok = answer(
            "/mqtt",
            &request("/mqtt", Some("mqtt")),
            Response::default(),
        )
        .unwrap();
        assert_eq!(chosen(&ok), Some("mqtt"));
        let old = answer(
            "/mqtt",
            &request("/mqtt", Some("chat, mqttv3.1")),
            Response::default(),
        )
        .unwrap();
        assert_eq!(chosen(&old), Some("mqttv3.1"));
        let none = answer("/mqtt", &request("/mqtt", None), Response::default()).unwrap();
        assert_eq!(chosen(&none), None);
    }

    #[test]
    fn another_path_or_subprotocol_is_refused() {
        let wrong_path =
            answer("/mqtt", &request("/ws", Some("mqtt")), Response::default()).unwrap_err();
        assert_eq!(wrong_path.status(), StatusCode::NOT_FOUND);
        let wrong_protocol = answer(
            "/mqtt",
            &request("/mqtt", Some("chat")),
            Response::default(),
        )
        .unwrap_err();
        assert_eq!(wrong_protocol.status(), StatusCode::BAD_REQUEST);
    }

    /// A client over an in-memory socket: bytes in binary messages reach the connection side
    /// whole whatever the message boundaries, the connection's bytes come back as binary
    /// messages, and a text message ends the connection.
    #[tokio::test]
    async fn bytes_cross_in_both_directions_and_text_closes() {
        let (client_io, server_io) = tokio::io::duplex(64 << 10);
        let settings = WsSettings {
            path: "/mqtt".to_owned(),
            max_packet: 1 << 20,
            deadline: Duration::from_secs(5),
        };
        let server = tokio::spawn(async move {
            let upgraded = upgrade(Box::new(server_io), &settings).await.unwrap();
            let (mut stream, pump) = upgraded.into_stream();
            let connection = async move {
                let mut got = vec![0u8; 6];
                stream.read_exact(&mut got).await.unwrap();
                stream.write_all(b"pong!").await.unwrap();
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await.unwrap();
                (got, rest)
            };
            tokio::join!(connection, pump).0
        });
        let request = Request::builder()
            .uri("ws://localhost/mqtt")
            .header("Host", "localhost")
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Protocol", "mqtt")
            .body(())
            .unwrap();
        let (mut client, response) = tokio_tungstenite::client_async(request, client_io)
            .await
            .unwrap();
        assert_eq!(chosen(&response.map(|_| ())), Some("mqtt"));
        client.send(Message::binary(&b"pi"[..])).await.unwrap();
        client.send(Message::binary(&b"ng!!"[..])).await.unwrap();
        let reply = client.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::binary(&b"pong!"[..]));
        client.send(Message::text("not mqtt")).await.unwrap();
        let (got, rest) = server.await.unwrap();
        assert_eq!(got, b"ping!!");
        assert!(rest.is_empty(), "a text message ends the stream: {rest:?}");
    }
}
