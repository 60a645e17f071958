//! A deliberately tiny HTTP/1.1 server for `GET /metrics`, `GET /healthz` (liveness: does the
//! broker need a restart?) and `GET /readyz` (readiness: does it take publishes now?).
//!
//! Scrapers send one small GET and read the answer; a full HTTP stack would cost more binary
//! size than everything here. Requests are capped at 8 KiB and 5 s, connections at 16.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the endpoints report; implemented by the running broker.
pub trait Observe: Send + Sync + 'static {
    /// The whole `/metrics` document in Prometheus text format.
    fn metrics_text(&self) -> String;
    /// Liveness: `Ok` unless the broker needs a restart (a failed or wedged log), else why
    /// (served as 503). What a restart cannot fix (a full disk) is not a liveness failure.
    fn health(&self) -> Result<(), String>;
    /// Readiness: `Ok` when the broker takes publishes now, else why not (served as 503):
    /// starting, shutting down, or the log not storing appends (full, failed).
    fn readiness(&self) -> Result<(), String>;
}

const MAX_REQUEST_BYTES: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

/// Serves requests on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, observe: Arc<dyn Observe>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("metrics listener: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections, closing");
            continue;
        };
        let observe = Arc::clone(&observe);
        tokio::spawn(async move {
            if let Err(err) = answer(stream, observe.as_ref()).await {
                tracing::debug!(%peer, "metrics request failed: {err}");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, observe: &dyn Observe) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let head_complete = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if request.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok::<bool, std::io::Error>(true);
            }
            if request.len() >= MAX_REQUEST_BYTES {
                return Ok(false);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            request.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    let response = if head_complete {
        respond(&request, observe)
    } else {
        Response::text(
            400,
            "Bad Request",
            "request head too large, incomplete or slow\n",
        )
    };
    stream.write_all(&response.into_bytes()).await?;
    stream.shutdown().await
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

fn respond(request: &[u8], observe: &dyn Observe) -> Response {
    let line = request
        .split(|&b| b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Response {
            status: 200,
            reason: "OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: observe.metrics_text(),
        },
        ("GET", "/healthz") => match observe.health() {
            Ok(()) => Response::text(200, "OK", "ok\n"),
            Err(why) => Response::text(503, "Service Unavailable", format!("{why}\n")),
        },
        ("GET", "/readyz") => match observe.readiness() {
            Ok(()) => Response::text(200, "OK", "ready\n"),
            Err(why) => Response::text(503, "Service Unavailable", format!("{why}\n")),
        },
        (_, "/metrics" | "/healthz" | "/readyz") => {
            Response::text(405, "Method Not Allowed", "use GET\n")
        }
        _ => Response::text(404, "Not Found", "try /metrics, /healthz or /readyz\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);
    impl Observe for Fixed {
        fn metrics_text(&self) -> String {
            "up 1\n".to_owned()
        }
        fn health(&self) -> Result<(), String> {
            if self.0 {
                Ok(())
            } else {
                Err("starting".to_owned())
            }
        }
        fn readiness(&self) -> Result<(), String> {
            self.health()
        }
    }

    async fn get(observe: Fixed, request: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::new(observe), shutdown.clone()));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        shutdown.cancel();
        server.await.unwrap();
        response
    }

    #[tokio::test]
    async fn metrics_and_health_answer() {
        let response = get(Fixed(true), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nup 1\n"), "{response}");
        let response = get(Fixed(true), b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        let response = get(Fixed(false), b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
        assert!(response.ends_with("starting\n"), "{response}");
    }

    #[tokio::test]
    async fn other_requests_are_refused() {
        let response = get(Fixed(true), b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 405 "), "{response}");
        let response = get(Fixed(true), b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
        let response = get(Fixed(true), &[b'a'; MAX_REQUEST_BYTES]).await;
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    }
}
